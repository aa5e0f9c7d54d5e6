//! Request authentication: the `Authorization: X-Parley …` header (docs/protocol.md#request-signing).
//!
//! # Header
//!
//! ```text
//! Authorization: X-Parley origin="a.example",destination="b.example",key="ed25519:ID",sig="<unpadded base64>"
//! ```
//!
//! [`XParleyAuth::to_header_value`] writes exactly that (values quoted, no spaces). The parser
//! ([`XParleyAuth::parse`]) follows RFC 9110 §11 as Matrix's `X-Matrix` does: the scheme is
//! case-insensitive and followed by one or more spaces; parameters are comma-separated with
//! optional spaces/tabs around commas and `=`; names are case-insensitive and in any order;
//! values are quoted strings (with `\` escapes) or bare tokens (colons allowed, so
//! `origin=a.example:8448` parses); unknown parameters are ignored. All four of `origin`,
//! `destination`, `key`, `sig` are required, each at most once.
//!
//! # Signed object
//!
//! `sig` is the Ed25519 signature over the canonical JSON of
//!
//! ```text
//! {"method": "PUT", "uri": "/_parley/federation/v1/send/t1", "origin": "a.example",
//!  "destination": "b.example", "content": {…}}
//! ```
//!
//! `method` is the HTTP method as sent; `uri` is the request target exactly as on the wire
//! (path and query, percent-encoding as sent); `content` is the JSON body and is present
//! exactly when the request has one (an empty body counts as none).
//!
//! # Verifying
//!
//! [`authenticate_request`] does every check in one call when the origin's keys are at hand.
//! A server that fetches keys asynchronously splits it: [`XParleyAuth::parse`] and
//! [`check_destination`], [`parse_body`], fetch the key named by
//! [`XParleyAuth::key_id`], then [`verify_request`].

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};

use crate::keys::VerifiedServerKeys;
use crate::signing_key::{KeyId, ServerSigningKey};
use crate::{b64, canonical_json, destination, signatures, Error, Result};

/// The authorization scheme name.
pub const SCHEME: &str = "X-Parley";

/// A parsed `X-Parley` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XParleyAuth {
    /// The server that signed the request.
    pub origin: String,
    /// The server the request is for.
    pub destination: String,
    /// The origin's key that made `signature`.
    pub key_id: KeyId,
    /// The Ed25519 signature over the request's signed object.
    pub signature: Signature,
}

impl XParleyAuth {
    /// Parses an `Authorization` header value (see the module docs for the grammar).
    pub fn parse(header_value: &str) -> Result<Self> {
        parse_header(header_value)
    }

    /// Parses an `Authorization` header value given as raw bytes (must be UTF-8).
    pub fn parse_bytes(header_value: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(header_value)
            .map_err(|_| Error::MalformedAuthorization("header is not UTF-8"))?;
        Self::parse(text)
    }

    /// The header value: `X-Parley origin="…",destination="…",key="…",sig="…"`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{SCHEME} origin={},destination={},key={},sig={}",
            quote(&self.origin),
            quote(&self.destination),
            quote(self.key_id.as_str()),
            quote(&b64::encode(self.signature.to_bytes())),
        )
    }
}

/// The canonical JSON bytes a request signature covers.
pub fn signed_request_bytes(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<Vec<u8>> {
    let mut object = Map::new();
    object.insert("method".into(), Value::from(method));
    object.insert("uri".into(), Value::from(uri));
    object.insert("origin".into(), Value::from(origin));
    object.insert("destination".into(), Value::from(destination));
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    canonical_json::to_vec(&Value::Object(object))
}

/// Signs an outbound request and returns its `Authorization` header value.
///
/// `content` is the JSON object sent as body (`None` for requests without a body); send
/// exactly that value (any serialisation of it: the receiver re-canonicalises).
pub fn sign_request(
    key: &ServerSigningKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String> {
    if content.is_some_and(|c| !c.is_object()) {
        return Err(Error::BadJson(
            "a federation body must be a JSON object".into(),
        ));
    }
    let message = signed_request_bytes(method, uri, origin, destination, content)?;
    let auth = XParleyAuth {
        origin: origin.to_owned(),
        destination: destination.to_owned(),
        key_id: key.key_id().clone(),
        signature: key.sign(&message),
    };
    Ok(auth.to_header_value())
}

/// Checks that the request is addressed to this server (`our_server_name`).
pub fn check_destination(auth: &XParleyAuth, our_server_name: &str) -> Result<()> {
    if auth.destination.eq_ignore_ascii_case(our_server_name) {
        Ok(())
    } else {
        Err(Error::WrongDestination {
            found: auth.destination.clone(),
        })
    }
}

/// Parses a request body strictly: `None` or empty → no content; otherwise a JSON object
/// under the canonical rules ([`Error::NotJson`] / [`Error::BadJson`] / number errors).
pub fn parse_body(body: Option<&[u8]>) -> Result<Option<Value>> {
    match body {
        None | Some([]) => Ok(None),
        Some(bytes) => Ok(Some(Value::Object(canonical_json::object_from_slice(
            bytes,
        )?))),
    }
}

/// Verifies the header's signature over the request with the origin's `key`.
///
/// Does not check the destination (see [`check_destination`]).
pub fn verify_request(
    auth: &XParleyAuth,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    key: &VerifyingKey,
) -> Result<()> {
    let message = signed_request_bytes(method, uri, &auth.origin, &auth.destination, content)?;
    signatures::verify_bytes(key, &message, &auth.signature)
}

/// Where [`authenticate_request`] finds the origin's current verify keys.
pub trait KeyLookup {
    /// The current key `key_id` of server `origin`, if known.
    fn verify_key(&self, origin: &str, key_id: &KeyId) -> Option<VerifyingKey>;
}

impl<F: Fn(&str, &KeyId) -> Option<VerifyingKey>> KeyLookup for F {
    fn verify_key(&self, origin: &str, key_id: &KeyId) -> Option<VerifyingKey> {
        self(origin, key_id)
    }
}

impl KeyLookup for VerifiedServerKeys {
    fn verify_key(&self, origin: &str, key_id: &KeyId) -> Option<VerifyingKey> {
        if origin != self.server_name {
            return None;
        }
        VerifiedServerKeys::verify_key(self, key_id).copied()
    }
}

/// An authenticated inbound request.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// The origin server: what handlers trust as the sender's server.
    pub origin: String,
    /// The key that signed the request.
    pub key_id: KeyId,
    /// The parsed body (a JSON object), when the request had one.
    pub body: Option<Value>,
}

/// Authenticates an inbound federation request in one call.
///
/// Checks, in order: header present ([`Error::MissingAuthorization`]); header well formed
/// ([`Error::MalformedAuthorization`]); `destination == our_server_name`
/// ([`Error::WrongDestination`]); body, when present, a JSON object under the canonical rules
/// ([`Error::NotJson`], [`Error::BadJson`], number errors: 400); the origin's key known to
/// `keys` ([`Error::UnknownKey`]); signature valid ([`Error::BadSignature`]).
pub fn authenticate_request(
    method: &str,
    uri: &str,
    body: Option<&[u8]>,
    authorization: Option<&[u8]>,
    our_server_name: &str,
    keys: &impl KeyLookup,
) -> Result<Authenticated> {
    let header = authorization.ok_or(Error::MissingAuthorization)?;
    let auth = XParleyAuth::parse_bytes(header)?;
    check_destination(&auth, our_server_name)?;
    let content = parse_body(body)?;
    let key = keys
        .verify_key(&auth.origin, &auth.key_id)
        .ok_or_else(|| Error::UnknownKey {
            origin: auth.origin.clone(),
            key_id: auth.key_id.to_string(),
        })?;
    verify_request(&auth, method, uri, content.as_ref(), &key)?;
    Ok(Authenticated {
        origin: auth.origin,
        key_id: auth.key_id,
        body: content,
    })
}

// ------------------------------------------------------------------------------------------
// Header grammar
// ------------------------------------------------------------------------------------------

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A cursor over the header bytes.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.i += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &[u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A quoted string (cursor on the opening quote), unescaped.
    fn quoted(&mut self) -> Result<Vec<u8>> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(Error::MalformedAuthorization("unterminated quoted value")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => {
                            return Err(Error::MalformedAuthorization("bad escape in quoted value"))
                        }
                    }
                }
                Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    out.push(c);
                    self.i += 1;
                }
                Some(_) => return Err(Error::MalformedAuthorization("control character in value")),
            }
        }
    }
}

fn parse_header(value: &str) -> Result<XParleyAuth> {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    c.skip_ows();
    let scheme = c.take_while(is_tchar);
    if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) {
        return Err(Error::MalformedAuthorization("scheme is not X-Parley"));
    }
    if c.take_while(|b| b == b' ').is_empty() {
        return Err(Error::MalformedAuthorization("no space after the scheme"));
    }

    let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
    loop {
        c.skip_ows();
        match c.peek() {
            None => break,
            // Empty list elements are allowed by RFC 9110's list syntax.
            Some(b',') => {
                c.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.take_while(is_tchar).to_ascii_lowercase();
        if name.is_empty() {
            return Err(Error::MalformedAuthorization("expected a parameter name"));
        }
        c.skip_ows();
        if c.peek() != Some(b'=') {
            return Err(Error::MalformedAuthorization(
                "expected `=` after a parameter name",
            ));
        }
        c.i += 1;
        c.skip_ows();
        let raw = match c.peek() {
            Some(b'"') => c.quoted()?,
            // Bare token; colons (and base64's `/` and `=`) tolerated as Matrix servers do.
            _ => c
                .take_while(|b| b.is_ascii_graphic() && b != b',' && b != b'"')
                .to_vec(),
        };
        if raw.is_empty() {
            return Err(Error::MalformedAuthorization("empty parameter value"));
        }
        let text = String::from_utf8(raw)
            .map_err(|_| Error::MalformedAuthorization("parameter value is not UTF-8"))?;
        let slot = match name.as_slice() {
            b"origin" => &mut origin,
            b"destination" => &mut destination,
            b"key" => &mut key,
            b"sig" => &mut sig,
            _ => &mut None,
        };
        if slot.replace(text).is_some() {
            return Err(Error::MalformedAuthorization("parameter given twice"));
        }
        c.skip_ows();
        match c.peek() {
            None => break,
            Some(b',') => c.i += 1,
            Some(_) => {
                return Err(Error::MalformedAuthorization(
                    "expected `,` between parameters",
                ))
            }
        }
    }

    let origin = origin.ok_or(Error::MalformedAuthorization("missing origin"))?;
    let destination = destination.ok_or(Error::MalformedAuthorization("missing destination"))?;
    let key = key.ok_or(Error::MalformedAuthorization("missing key"))?;
    let sig = sig.ok_or(Error::MalformedAuthorization("missing sig"))?;
    destination::ServerName::parse(&origin)
        .map_err(|_| Error::MalformedAuthorization("origin is not a server name"))?;
    destination::ServerName::parse(&destination)
        .map_err(|_| Error::MalformedAuthorization("destination is not a server name"))?;
    let key_id = KeyId::new(key).map_err(|_| Error::MalformedAuthorization("invalid key id"))?;
    let signature = signatures::decode_signature(&sig)
        .map_err(|_| Error::MalformedAuthorization("sig is not a base64 ed25519 signature"))?;
    Ok(XParleyAuth {
        origin,
        destination,
        key_id,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URI: &str = "/_parley/federation/v1/send/t1";

    fn key() -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::new("ed25519:a_1").unwrap(), &[1; 32])
    }

    fn lookup(k: &ServerSigningKey) -> impl KeyLookup + '_ {
        move |origin: &str, id: &KeyId| {
            (origin == "a.example" && id == k.key_id()).then(|| k.verifying_key())
        }
    }

    fn body() -> Value {
        json!({"origin": "a.example", "origin_ts": 5, "events": []})
    }

    fn signed_put(k: &ServerSigningKey) -> String {
        sign_request(k, "a.example", "b.example", "PUT", URI, Some(&body())).unwrap()
    }

    /// Authenticates, as b.example, a PUT of `raw` to [`URI`] carrying `header`.
    fn receive_put(raw: &[u8], header: &str, keys: &impl KeyLookup) -> Result<Authenticated> {
        authenticate_request(
            "PUT",
            URI,
            Some(raw),
            Some(header.as_bytes()),
            "b.example",
            keys,
        )
    }

    #[test]
    fn header_has_the_documented_format() {
        let h = signed_put(&key());
        let rest = h
            .strip_prefix(
                r#"X-Parley origin="a.example",destination="b.example",key="ed25519:a_1",sig=""#,
            )
            .unwrap();
        let sig = rest.strip_suffix('"').unwrap();
        assert_eq!(sig.len(), 86, "64 bytes, unpadded base64");
        assert!(!sig.contains('='));
    }

    #[test]
    fn signed_request_is_authenticated_with_its_origin_and_body() {
        let k = key();
        let h = signed_put(&k);
        let raw = serde_json::to_vec_pretty(&body()).unwrap();
        let a = receive_put(&raw, &h, &lookup(&k)).unwrap();
        assert_eq!(a.origin, "a.example");
        assert_eq!(a.key_id, *k.key_id());
        assert_eq!(a.body, Some(body()));
    }

    #[test]
    fn signed_get_without_body_is_authenticated() {
        let k = key();
        let uri = "/_parley/federation/v1/users/%40bob%3Ab.example/devices";
        let h = sign_request(&k, "a.example", "b.example", "GET", uri, None).unwrap();
        let a = authenticate_request(
            "GET",
            uri,
            None,
            Some(h.as_bytes()),
            "b.example",
            &lookup(&k),
        )
        .unwrap();
        assert_eq!(a.body, None);
        // An empty body is the same as none.
        authenticate_request(
            "GET",
            uri,
            Some(b""),
            Some(h.as_bytes()),
            "b.example",
            &lookup(&k),
        )
        .unwrap();
    }

    #[test]
    fn signature_over_tampered_body_is_refused() {
        let k = key();
        let h = signed_put(&k);
        let tampered = br#"{"origin":"a.example","origin_ts":6,"events":[]}"#;
        let r = receive_put(tampered, &h, &lookup(&k));
        assert!(matches!(r, Err(Error::BadSignature)));
    }

    #[test]
    fn body_added_to_a_request_signed_without_one_is_refused() {
        let k = key();
        let h = sign_request(&k, "a.example", "b.example", "PUT", URI, None).unwrap();
        let r = receive_put(b"{}", &h, &lookup(&k));
        assert!(matches!(r, Err(Error::BadSignature)));
    }

    #[test]
    fn signature_over_another_uri_or_method_is_refused() {
        let k = key();
        let h = signed_put(&k);
        let raw = serde_json::to_vec(&body()).unwrap();
        for (m, u) in [
            ("PUT", "/_parley/federation/v1/send/t2"),
            ("POST", URI),
            ("PUT", "/_parley/federation/v1/send/t1?x=1"),
        ] {
            let r = authenticate_request(
                m,
                u,
                Some(&raw),
                Some(h.as_bytes()),
                "b.example",
                &lookup(&k),
            );
            assert!(matches!(r, Err(Error::BadSignature)), "{m} {u}");
        }
    }

    #[test]
    fn the_destination_is_compared_without_regard_to_case() {
        let k = key();
        let h = signed_put(&k);
        let raw = serde_json::to_vec(&body()).unwrap();
        let r = authenticate_request(
            "PUT",
            URI,
            Some(&raw),
            Some(h.as_bytes()),
            "B.Example",
            &lookup(&k),
        );
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn request_replayed_to_another_destination_is_refused() {
        let k = key();
        let h = signed_put(&k);
        let raw = serde_json::to_vec(&body()).unwrap();
        let r = authenticate_request(
            "PUT",
            URI,
            Some(&raw),
            Some(h.as_bytes()),
            "c.example",
            &lookup(&k),
        );
        assert!(matches!(r, Err(Error::WrongDestination { .. })));
        // Rewriting the destination in the header breaks the signature.
        let forged = h.replace("b.example", "c.example");
        let r = authenticate_request(
            "PUT",
            URI,
            Some(&raw),
            Some(forged.as_bytes()),
            "c.example",
            &lookup(&k),
        );
        assert!(matches!(r, Err(Error::BadSignature)));
    }

    #[test]
    fn request_claiming_another_origin_is_refused() {
        let k = key();
        let forged = signed_put(&k).replace("origin=\"a.example\"", "origin=\"evil.example\"");
        let raw = serde_json::to_vec(&body()).unwrap();
        let any_key = |_: &str, _: &KeyId| Some(k.verifying_key());
        let r = receive_put(&raw, &forged, &any_key);
        assert!(matches!(r, Err(Error::BadSignature)));
    }

    #[test]
    fn signature_by_another_key_is_refused() {
        let k = key();
        let impostor = ServerSigningKey::from_seed(k.key_id().clone(), &[2; 32]);
        let h = signed_put(&impostor);
        let raw = serde_json::to_vec(&body()).unwrap();
        let r = receive_put(&raw, &h, &lookup(&k));
        assert!(matches!(r, Err(Error::BadSignature)));
    }

    #[test]
    fn unknown_key_is_refused_as_unauthorized() {
        let k = key();
        let h = signed_put(&k);
        let raw = serde_json::to_vec(&body()).unwrap();
        let none = |_: &str, _: &KeyId| None;
        let r = receive_put(&raw, &h, &none);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::UnknownKey { .. }));
        assert_eq!((e.http_status(), e.errcode()), (401, "P_UNAUTHORIZED"));
    }

    #[test]
    fn missing_header_is_refused() {
        let r = authenticate_request(
            "GET",
            URI,
            None,
            None,
            "b.example",
            &|_: &str, _: &KeyId| None,
        );
        assert!(matches!(r, Err(Error::MissingAuthorization)));
    }

    #[test]
    fn body_that_is_not_a_json_object_is_refused_before_key_lookup() {
        let k = key();
        let h = signed_put(&k);
        type Check = fn(&Error) -> bool;
        let cases: [(&[u8], Check); 3] = [
            (b"not json", |e| matches!(e, Error::NotJson(_))),
            (b"[1,2]", |e| matches!(e, Error::BadJson(_))),
            (br#"{"a": 1.5}"#, |e| matches!(e, Error::NonIntegerNumber)),
        ];
        for (raw, expected) in cases {
            let e = receive_put(raw, &h, &lookup(&k)).unwrap_err();
            assert!(expected(&e), "{e:?}");
            assert_eq!(e.http_status(), 400);
        }
    }

    #[test]
    fn keys_of_a_verified_document_serve_as_lookup_for_their_server_only() {
        let k = key();
        let doc =
            crate::keys::ServerKeyDocument::build("a.example", &k, Default::default(), 1 << 50)
                .unwrap();
        let verified =
            crate::keys::verify_key_document(&serde_json::to_vec(&doc).unwrap(), "a.example", 0)
                .unwrap();
        assert_eq!(
            KeyLookup::verify_key(&verified, "a.example", k.key_id()),
            Some(k.verifying_key())
        );
        assert_eq!(
            KeyLookup::verify_key(&verified, "c.example", k.key_id()),
            None
        );
    }

    // Header parsing.

    fn sig() -> String {
        b64::encode([0u8; 64])
    }

    #[test]
    fn parse_tolerates_spaces_case_order_and_unquoted_values() {
        let s = sig();
        let h = format!("x-parley   SIG={s} , key = \"ed25519:a_1\",\tDestination=b.example:8448 ,origin=\"a.example\" ,extra=\"ignored\"");
        let a = XParleyAuth::parse(&h).unwrap();
        assert_eq!(a.origin, "a.example");
        assert_eq!(a.destination, "b.example:8448");
        assert_eq!(a.key_id.as_str(), "ed25519:a_1");
    }

    #[test]
    fn parse_unescapes_quoted_values_and_accepts_padded_sig() {
        let h = format!(
            r#"X-Parley origin="a\.example",destination="b.example",key="ed25519:a_1",sig="{}==""#,
            sig()
        );
        let a = XParleyAuth::parse(&h).unwrap();
        assert_eq!(a.origin, "a.example");
    }

    #[test]
    fn parse_round_trips_the_built_header() {
        let h = signed_put(&key());
        assert_eq!(XParleyAuth::parse(&h).unwrap().to_header_value(), h);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = sig();
        let ok =
            format!(r#"origin="a.example",destination="b.example",key="ed25519:a_1",sig="{s}""#);
        let cases = vec![
            String::new(),
            format!("Bearer {ok}"),
            format!("X-Matrix {ok}"),
            format!("X-Parley{ok}"),
            "X-Parley ".to_owned(),
            format!(r#"X-Parley destination="b.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin="a.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin="a.example",destination="b.example",sig="{s}""#),
            r#"X-Parley origin="a.example",destination="b.example",key="ed25519:a_1""#.to_owned(),
            format!(r#"X-Parley {ok},origin="c.example""#),
            format!(r#"X-Parley origin="a.example" destination="b.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin="a.example,destination="b.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin=,destination="b.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin="a example",destination="b.example",key="ed25519:a_1",sig="{s}""#),
            format!(r#"X-Parley origin="a.example",destination="b.example",key="rsa:1",sig="{s}""#),
            r#"X-Parley origin="a.example",destination="b.example",key="ed25519:a_1",sig="AAAA""#.to_owned(),
            format!("X-Parley origin=\"a.exa\u{1}mple\",destination=\"b.example\",key=\"ed25519:a_1\",sig=\"{s}\""),
            format!(r#"X-Parley ="a.example",destination="b.example",key="ed25519:a_1",sig="{s}""#),
        ];
        for h in cases {
            assert!(
                matches!(
                    XParleyAuth::parse(&h),
                    Err(Error::MalformedAuthorization(_))
                ),
                "{h:?}"
            );
        }
        assert!(matches!(
            XParleyAuth::parse_bytes(b"X-Parley \xff"),
            Err(Error::MalformedAuthorization(_))
        ));
    }

    #[test]
    fn signed_object_has_content_exactly_when_there_is_a_body() {
        let without = signed_request_bytes("GET", "/x", "a", "b", None).unwrap();
        assert_eq!(
            without,
            br#"{"destination":"b","method":"GET","origin":"a","uri":"/x"}"#
        );
        let with = signed_request_bytes("PUT", "/x", "a", "b", Some(&json!({"k": 1}))).unwrap();
        assert_eq!(
            with,
            br#"{"content":{"k":1},"destination":"b","method":"PUT","origin":"a","uri":"/x"}"#
        );
    }

    #[test]
    fn signing_a_non_object_body_is_refused() {
        let r = sign_request(
            &key(),
            "a.example",
            "b.example",
            "PUT",
            URI,
            Some(&json!([1])),
        );
        assert!(matches!(r, Err(Error::BadJson(_))));
    }
}
