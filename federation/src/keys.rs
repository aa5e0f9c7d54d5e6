//! The server key document (docs/protocol.md#server-server-api).
//!
//! - [`ServerKeyDocument`]: the self-signed answer of `GET /_parley/key/v1/server`.
//! - [`verify_key_document`]: checks a document fetched from another server and yields the
//!   [`VerifiedServerKeys`] to cache.
//!
//! The signing key itself (key ids, the Ed25519 key and its file) is in [`crate::signing_key`];
//! its items are re-exported here, where they have always been named.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use crate::signing_key::{
    decode_verifying_key, encode_verifying_key, key_file_path, KeyId, ServerSigningKey, ED25519,
    KEY_FILE_NAME,
};
use crate::{canonical_json, signatures, Error, Result};

/// Receivers cache a key document at most this long (7 days), whatever its `valid_until_ts`.
pub const MAX_KEY_CACHE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

// ------------------------------------------------------------------------------------------
// The key document
// ------------------------------------------------------------------------------------------

/// `serde(with = …)` adapter: a [`VerifyingKey`] as unpadded base64.
mod verifying_key_b64 {
    use super::*;

    pub fn serialize<S: Serializer>(key: &VerifyingKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_verifying_key(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VerifyingKey, D::Error> {
        decode_verifying_key(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A current verify key in a key document: `{"key": "<unpadded base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyKey {
    /// The Ed25519 public key.
    #[serde(with = "verifying_key_b64")]
    pub key: VerifyingKey,
}

/// A retired verify key: `{"key": "<unpadded base64>", "expired_ts": <ms>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldVerifyKey {
    /// The Ed25519 public key.
    #[serde(with = "verifying_key_b64")]
    pub key: VerifyingKey,
    /// When the key stopped being used (ms since the Unix epoch).
    pub expired_ts: u64,
}

/// The answer of `GET /_parley/key/v1/server`, self-signed by the server.
///
/// `signatures` is `{server_name: {key_id: unpadded base64 signature}}` over the canonical
/// JSON of the object without `signatures` and `unsigned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeyDocument {
    /// The server the keys belong to.
    pub server_name: String,
    /// Keys that sign requests now.
    pub verify_keys: BTreeMap<KeyId, VerifyKey>,
    /// Keys used in the past.
    #[serde(default)]
    pub old_verify_keys: BTreeMap<KeyId, OldVerifyKey>,
    /// Until when (ms since the Unix epoch) the answer may be cached (receivers cap at 7 days).
    pub valid_until_ts: u64,
    /// The self-signature(s).
    #[serde(default)]
    pub signatures: BTreeMap<String, BTreeMap<String, String>>,
}

impl ServerKeyDocument {
    /// Builds and self-signs the document of `server_name` with `key` as its current key.
    pub fn build(
        server_name: &str,
        key: &ServerSigningKey,
        old_verify_keys: BTreeMap<KeyId, OldVerifyKey>,
        valid_until_ts: u64,
    ) -> Result<Self> {
        let mut doc = ServerKeyDocument {
            server_name: server_name.to_owned(),
            verify_keys: BTreeMap::from([(
                key.key_id().clone(),
                VerifyKey {
                    key: key.verifying_key(),
                },
            )]),
            old_verify_keys,
            valid_until_ts,
            signatures: BTreeMap::new(),
        };
        let mut object = doc.to_json_object()?;
        signatures::sign_json(&mut object, server_name, key)?;
        doc = serde_json::from_value(Value::Object(object))
            .map_err(|e| Error::BadJson(e.to_string()))?;
        Ok(doc)
    }

    /// The document as a JSON object (what the endpoint answers).
    pub fn to_json_object(&self) -> Result<Map<String, Value>> {
        match serde_json::to_value(self).map_err(|e| Error::BadJson(e.to_string()))? {
            Value::Object(map) => Ok(map),
            _ => Err(Error::BadJson("key document is not an object".into())),
        }
    }
}

/// The keys of a remote server, taken from a key document that passed
/// [`verify_key_document`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedServerKeys {
    /// The server they belong to (the one asked).
    pub server_name: String,
    /// Current keys: the only ones requests are verified with.
    pub verify_keys: BTreeMap<KeyId, VerifyingKey>,
    /// Retired keys with their `expired_ts`.
    pub old_verify_keys: BTreeMap<KeyId, (VerifyingKey, u64)>,
    /// The document's own `valid_until_ts`.
    pub valid_until_ts: u64,
    /// Until when to cache: `min(valid_until_ts, fetched_at + 7 days)`.
    pub cache_until_ts: u64,
}

impl VerifiedServerKeys {
    /// The current key with this id, if any (old keys are never returned here).
    pub fn verify_key(&self, key_id: &KeyId) -> Option<&VerifyingKey> {
        self.verify_keys.get(key_id)
    }

    /// Whether the cached keys may still be used at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.cache_until_ts
    }
}

/// Verifies a key document fetched from `requested_server` at `now_ms` (body bytes).
///
/// See [`verify_key_document_object`] for the checks.
pub fn verify_key_document(
    body: &[u8],
    requested_server: &str,
    now_ms: u64,
) -> Result<VerifiedServerKeys> {
    verify_key_document_object(
        &canonical_json::object_from_slice(body)?,
        requested_server,
        now_ms,
    )
}

/// Verifies a parsed key document fetched from `requested_server` at `now_ms`.
///
/// - `server_name` must equal `requested_server` exactly: a key for server X is never taken
///   from another server's answer;
/// - `valid_until_ts` must be in the future;
/// - every signature by `server_name` made with one of the document's own `ed25519`
///   `verify_keys` must verify, and there must be at least one;
/// - key ids of other algorithms are ignored; malformed `ed25519` entries are refused.
///
/// The signature covers the document as received (unknown fields included) without
/// `signatures` and `unsigned`.
pub fn verify_key_document_object(
    doc: &Map<String, Value>,
    requested_server: &str,
    now_ms: u64,
) -> Result<VerifiedServerKeys> {
    let server_name = doc
        .get("server_name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadJson("key document without server_name".into()))?;
    // Server names are DNS names: compared without regard to case.
    if !server_name.eq_ignore_ascii_case(requested_server) {
        return Err(Error::KeyDocumentServerMismatch {
            expected: requested_server.to_owned(),
            found: server_name.to_owned(),
        });
    }
    let valid_until_ts = doc
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::BadJson("key document without valid_until_ts".into()))?;
    if valid_until_ts <= now_ms {
        return Err(Error::KeyDocumentExpired);
    }

    let mut verify_keys = BTreeMap::new();
    for (id, entry) in ed25519_entries(doc, "verify_keys")? {
        verify_keys.insert(id, entry_key(entry)?);
    }
    let mut old_verify_keys = BTreeMap::new();
    for (id, entry) in ed25519_entries(doc, "old_verify_keys")? {
        let expired_ts = entry
            .get("expired_ts")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::BadJson("old verify key without expired_ts".into()))?;
        old_verify_keys.insert(id, (entry_key(entry)?, expired_ts));
    }

    let own_signatures = doc
        .get("signatures")
        .and_then(|s| s.get(server_name))
        .and_then(Value::as_object)
        .ok_or(Error::KeyDocumentUnsigned)?;
    let mut verified = 0;
    for key_id in own_signatures.keys() {
        let Ok(key_id) = KeyId::new(key_id.as_str()) else {
            continue;
        };
        if let Some(key) = verify_keys.get(&key_id) {
            signatures::verify_json(doc, server_name, &key_id, key)?;
            verified += 1;
        }
    }
    if verified == 0 {
        return Err(Error::KeyDocumentUnsigned);
    }

    Ok(VerifiedServerKeys {
        server_name: server_name.to_owned(),
        verify_keys,
        old_verify_keys,
        valid_until_ts,
        cache_until_ts: valid_until_ts.min(now_ms.saturating_add(MAX_KEY_CACHE_MS)),
    })
}

/// The `ed25519:` entries of the object member `field` (absent = none).
fn ed25519_entries<'a>(
    doc: &'a Map<String, Value>,
    field: &str,
) -> Result<Vec<(KeyId, &'a Map<String, Value>)>> {
    let Some(value) = doc.get(field) else {
        return Ok(Vec::new());
    };
    let map = value
        .as_object()
        .ok_or_else(|| Error::BadJson(format!("{field} is not an object")))?;
    let mut out = Vec::new();
    for (id, entry) in map {
        if !id.starts_with("ed25519:") {
            continue;
        }
        let entry = entry
            .as_object()
            .ok_or_else(|| Error::BadJson(format!("{field}.{id} is not an object")))?;
        out.push((KeyId::new(id.as_str())?, entry));
    }
    Ok(out)
}

fn entry_key(entry: &Map<String, Value>) -> Result<VerifyingKey> {
    let text = entry
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadJson("verify key without key".into()))?;
    decode_verifying_key(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::from_version(version).unwrap(), &[seed; 32])
    }

    fn doc_json(doc: &ServerKeyDocument) -> Vec<u8> {
        serde_json::to_vec(doc).unwrap()
    }

    #[test]
    fn built_key_document_has_the_wire_shape_and_verifies() {
        let k = key("a_1", 1);
        let old = key("a_0", 2);
        let olds = BTreeMap::from([(
            old.key_id().clone(),
            OldVerifyKey {
                key: old.verifying_key(),
                expired_ts: NOW - DAY,
            },
        )]);
        let doc = ServerKeyDocument::build("a.example", &k, olds, NOW + DAY).unwrap();
        let v: Value = serde_json::from_slice(&doc_json(&doc)).unwrap();
        assert_eq!(v["server_name"], "a.example");
        assert_eq!(
            v["verify_keys"]["ed25519:a_1"]["key"],
            k.public_key_base64()
        );
        assert_eq!(v["old_verify_keys"]["ed25519:a_0"]["expired_ts"], NOW - DAY);
        assert_eq!(v["valid_until_ts"], NOW + DAY);
        assert!(v["signatures"]["a.example"]["ed25519:a_1"].is_string());

        let verified = verify_key_document(&doc_json(&doc), "a.example", NOW).unwrap();
        assert_eq!(verified.verify_key(k.key_id()), Some(&k.verifying_key()));
        assert_eq!(
            verified.verify_key(old.key_id()),
            None,
            "old keys never verify requests"
        );
        assert_eq!(
            verified.old_verify_keys[old.key_id()],
            (old.verifying_key(), NOW - DAY)
        );
        assert_eq!(verified.cache_until_ts, NOW + DAY);
    }

    #[test]
    fn key_document_from_another_server_is_refused() {
        // b.example answers with its own (valid) document when asked for a.example's keys.
        let doc = ServerKeyDocument::build("b.example", &key("b", 1), BTreeMap::new(), NOW + DAY)
            .unwrap();
        assert!(matches!(
            verify_key_document(&doc_json(&doc), "a.example", NOW),
            Err(Error::KeyDocumentServerMismatch { .. })
        ));
    }

    #[test]
    fn key_document_with_tampered_key_is_refused() {
        let doc = ServerKeyDocument::build("a.example", &key("a_1", 1), BTreeMap::new(), NOW + DAY)
            .unwrap();
        let mut v = doc.to_json_object().unwrap();
        v["valid_until_ts"] = json!(NOW + 300 * DAY);
        let body = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            verify_key_document(&body, "a.example", NOW),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn key_document_signed_by_a_key_it_does_not_list_is_refused() {
        let k = key("a_1", 1);
        let mut doc =
            ServerKeyDocument::build("a.example", &k, BTreeMap::new(), NOW + DAY).unwrap();
        // Swap the listed key for an attacker's key, keeping the original signature.
        doc.verify_keys.insert(
            k.key_id().clone(),
            VerifyKey {
                key: key("a_1", 5).verifying_key(),
            },
        );
        assert!(verify_key_document(&doc_json(&doc), "a.example", NOW).is_err());
        // A document with no signature by its server at all.
        doc.signatures.clear();
        assert!(matches!(
            verify_key_document(&doc_json(&doc), "a.example", NOW),
            Err(Error::KeyDocumentUnsigned)
        ));
    }

    #[test]
    fn key_document_signed_under_another_servers_name_is_refused() {
        let k = key("a_1", 1);
        let mut obj = ServerKeyDocument::build("a.example", &k, BTreeMap::new(), NOW + DAY)
            .unwrap()
            .to_json_object()
            .unwrap();
        let sigs = obj["signatures"]["a.example"].clone();
        obj.insert("signatures".into(), json!({ "c.example": sigs }));
        assert!(matches!(
            verify_key_document_object(&obj, "a.example", NOW),
            Err(Error::KeyDocumentUnsigned)
        ));
    }

    #[test]
    fn expired_key_document_is_refused() {
        let doc =
            ServerKeyDocument::build("a.example", &key("a_1", 1), BTreeMap::new(), NOW).unwrap();
        assert!(matches!(
            verify_key_document(&doc_json(&doc), "a.example", NOW),
            Err(Error::KeyDocumentExpired)
        ));
    }

    #[test]
    fn key_document_cache_time_is_capped_at_seven_days() {
        let doc = ServerKeyDocument::build(
            "a.example",
            &key("a_1", 1),
            BTreeMap::new(),
            NOW + 365 * DAY,
        )
        .unwrap();
        let verified = verify_key_document(&doc_json(&doc), "a.example", NOW).unwrap();
        assert_eq!(verified.valid_until_ts, NOW + 365 * DAY);
        assert_eq!(verified.cache_until_ts, NOW + 7 * DAY);
        assert!(verified.is_fresh(NOW + 7 * DAY - 1));
        assert!(!verified.is_fresh(NOW + 7 * DAY));
    }

    #[test]
    fn key_document_with_unknown_fields_and_algorithms_still_verifies() {
        let k = key("a_1", 1);
        let mut obj = json!({
            "server_name": "a.example",
            "verify_keys": {"ed25519:a_1": {"key": k.public_key_base64()}, "future:1": {"x": 1}},
            "valid_until_ts": NOW + DAY,
            "extra": {"signed": true},
        })
        .as_object()
        .unwrap()
        .clone();
        signatures::sign_json(&mut obj, "a.example", &k).unwrap();
        obj.insert("unsigned".into(), json!({"added": "later"}));
        let verified = verify_key_document_object(&obj, "a.example", NOW).unwrap();
        assert_eq!(verified.verify_keys.len(), 1);
        assert!(verified.old_verify_keys.is_empty());
    }

    #[test]
    fn key_document_with_malformed_ed25519_key_is_refused() {
        let k = key("a_1", 1);
        let mut obj = json!({
            "server_name": "a.example",
            "verify_keys": {"ed25519:a_1": {"key": "not base64!"}},
            "valid_until_ts": NOW + DAY,
        })
        .as_object()
        .unwrap()
        .clone();
        signatures::sign_json(&mut obj, "a.example", &k).unwrap();
        assert!(matches!(
            verify_key_document_object(&obj, "a.example", NOW),
            Err(Error::InvalidEd25519(_))
        ));
    }
}
