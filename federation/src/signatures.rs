//! Signed JSON objects (Matrix's "Signing JSON", used by key documents).
//!
//! An object is signed over the canonical JSON of the object **without** its `signatures` and
//! `unsigned` members; the unpadded-base64 signature goes to
//! `signatures.<signer>.<key_id>`. `unsigned` and other signers' signatures are left alone.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};

use crate::signing_key::{KeyId, ServerSigningKey};
use crate::{b64, canonical_json, Error, Result};

/// The bytes a signature over `object` covers: canonical JSON without `signatures`/`unsigned`.
pub fn signed_bytes(object: &Map<String, Value>) -> Result<Vec<u8>> {
    let mut stripped = object.clone();
    stripped.remove("signatures");
    stripped.remove("unsigned");
    canonical_json::to_vec(&Value::Object(stripped))
}

/// Signs `object` as `signer` with `key`, adding `signatures.<signer>.<key_id>`.
pub fn sign_json(
    object: &mut Map<String, Value>,
    signer: &str,
    key: &ServerSigningKey,
) -> Result<()> {
    let signature = key.sign(&signed_bytes(object)?);
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| Error::BadJson("`signatures` is not an object".into()))?;
    let by_signer = signatures
        .entry(signer)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| Error::BadJson("`signatures.<signer>` is not an object".into()))?;
    by_signer.insert(
        key.key_id().to_string(),
        Value::String(b64::encode(signature.to_bytes())),
    );
    Ok(())
}

/// Decodes an unpadded-base64 Ed25519 signature.
pub fn decode_signature(text: &str) -> Result<Signature> {
    let bytes: [u8; 64] =
        b64::decode_array(text).map_err(|_| Error::InvalidEd25519("signature"))?;
    Ok(Signature::from_bytes(&bytes))
}

/// Verifies `signature` over `message` with `key` (strict Ed25519: no malleable signatures,
/// no weak keys).
pub fn verify_bytes(key: &VerifyingKey, message: &[u8], signature: &Signature) -> Result<()> {
    key.verify_strict(message, signature)
        .map_err(|_| Error::BadSignature)
}

/// Checks that `object` carries a valid `signatures.<signer>.<key_id>` made with `key`.
///
/// A missing signature is [`Error::BadSignature`] too.
pub fn verify_json(
    object: &Map<String, Value>,
    signer: &str,
    key_id: &KeyId,
    key: &VerifyingKey,
) -> Result<()> {
    let text = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id.as_str()))
        .and_then(Value::as_str)
        .ok_or(Error::BadSignature)?;
    let signature = decode_signature(text).map_err(|_| Error::BadSignature)?;
    verify_bytes(key, &signed_bytes(object)?, &signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::new("ed25519:1").unwrap(), &[7; 32])
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn signed_json_verifies_and_ignores_unsigned() {
        let k = key();
        let mut o = obj(json!({"name": "example.org", "unsigned": {"age_ts": 1}}));
        sign_json(&mut o, "example.org", &k).unwrap();
        o.insert("unsigned".into(), json!({"age_ts": 99}));
        verify_json(&o, "example.org", k.key_id(), &k.verifying_key()).unwrap();
    }

    #[test]
    fn signature_over_tampered_object_is_refused() {
        let k = key();
        let mut o = obj(json!({"name": "example.org"}));
        sign_json(&mut o, "example.org", &k).unwrap();
        o.insert("name".into(), json!("evil.org"));
        assert!(matches!(
            verify_json(&o, "example.org", k.key_id(), &k.verifying_key()),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn signature_by_another_signer_name_is_not_found() {
        let k = key();
        let mut o = obj(json!({"a": 1}));
        sign_json(&mut o, "a.example", &k).unwrap();
        assert!(verify_json(&o, "b.example", k.key_id(), &k.verifying_key()).is_err());
    }

    #[test]
    fn existing_signatures_are_kept_when_signing_again() {
        let k1 = key();
        let k2 = ServerSigningKey::from_seed(KeyId::new("ed25519:2").unwrap(), &[8; 32]);
        let mut o = obj(json!({"a": 1}));
        sign_json(&mut o, "a.example", &k1).unwrap();
        sign_json(&mut o, "b.example", &k2).unwrap();
        verify_json(&o, "a.example", k1.key_id(), &k1.verifying_key()).unwrap();
        verify_json(&o, "b.example", k2.key_id(), &k2.verifying_key()).unwrap();
    }
}
