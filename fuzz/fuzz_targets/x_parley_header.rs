//! `Authorization: X-Parley …` parsing and request verification (federation/src/auth.rs).
//!
//! Input layout (so seeds stay readable; see corpus/x_parley_header/):
//!
//! ```text
//! METHOD SP URI LF
//! HEADER-VALUE LF
//! BODY…
//! ```
//!
//! With fewer than two LFs the whole input is the header value (method `PUT`, a fixed URI, no
//! body). The receiving server is `b.example`; it knows one key, `ed25519:fuzz` of
//! `a.example`, derived from a fixed seed (the seed generator signs with the same key).
//!
//! Checked: parsing, `authenticate_request` (the whole inbound check) and the split path the
//! homeserver runs (`parse_bytes`, `check_destination`, `parse_body`, `verify_request`) never
//! panic; a parsed header re-encodes to a header that parses to the same value; the two
//! paths agree; and a request signed with `sign_request` for the parsed origin, destination,
//! method, URI and body always authenticates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_federation::auth::{
    authenticate_request, check_destination, parse_body, sign_request, verify_request, XParleyAuth,
};
use parley_federation::keys::{KeyId, ServerSigningKey};

const OUR_NAME: &str = "b.example";
const ORIGIN: &str = "a.example";
const DEFAULT_URI: &str = "/_parley/federation/v1/send/t1";

fn split(data: &[u8]) -> (String, String, &[u8], Option<&[u8]>) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(request_line), Some(header), Some(body)) => {
            let line = String::from_utf8_lossy(request_line);
            let (method, uri) = line.split_once(' ').unwrap_or((&line, ""));
            (method.to_owned(), uri.to_owned(), header, Some(body))
        }
        _ => ("PUT".to_owned(), DEFAULT_URI.to_owned(), data, None),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = ServerSigningKey::from_seed(KeyId::new("ed25519:fuzz").unwrap(), &[7; 32]);
    let verifying = key.verifying_key();
    let lookup =
        |origin: &str, id: &KeyId| (origin == ORIGIN && id == key.key_id()).then_some(verifying);
    let (method, uri, header, body) = split(data);

    // The one-call check.
    let one_call = authenticate_request(&method, &uri, body, Some(header), OUR_NAME, &lookup);
    let _ = authenticate_request(&method, &uri, body, None, OUR_NAME, &lookup);

    // The homeserver's split path (fed_api.rs).
    let parsed = XParleyAuth::parse_bytes(header);
    let content = parse_body(body);
    if let Ok(auth) = &parsed {
        let reparsed = XParleyAuth::parse(&auth.to_header_value())
            .expect("a re-encoded header does not parse");
        assert_eq!(&reparsed, auth, "header re-encoding changed it");
        let _ = auth.key_id.version();

        if let Ok(content) = &content {
            let split_ok = check_destination(auth, OUR_NAME).is_ok()
                && lookup(&auth.origin, &auth.key_id).is_some_and(|k| {
                    verify_request(auth, &method, &uri, content.as_ref(), &k).is_ok()
                });
            assert_eq!(
                split_ok,
                one_call.is_ok(),
                "authenticate_request and the split path disagree"
            );

            // Whatever the parsed request names, signing it makes it verify.
            let signed = sign_request(
                &key,
                &auth.origin,
                &auth.destination,
                &method,
                &uri,
                content.as_ref(),
            )
            .expect("sign_request fails on a parsed request");
            let any_origin = |_: &str, id: &KeyId| (id == key.key_id()).then_some(verifying);
            let verified = authenticate_request(
                &method,
                &uri,
                body,
                Some(signed.as_bytes()),
                &auth.destination,
                &any_origin,
            )
            .expect("a request signed by sign_request does not authenticate");
            assert_eq!(verified.origin, auth.origin);
            assert_eq!(&verified.body, content);
        }
    } else {
        assert!(one_call.is_err(), "authenticated with an unparsable header");
    }
    if let Ok(ok) = &one_call {
        assert_eq!(ok.origin, ORIGIN);
    }
});
