//! Device identity: the user/device id rules (and so [`DeviceRef`]'s checked constructors), the
//! MLS BasicCredential and the Ed25519 signature key.

use openmls::prelude::{BasicCredential, Credential, CredentialWithKey};
use openmls_basic_credential::SignatureKeyPair;
use sha2::{Digest, Sha256};

use crate::ciphersuite::CIPHERSUITE;
use crate::device_ref::DeviceRef;
use crate::error::{mls, MlsError, Result};
use crate::provider::EngineProvider;

/// Longest allowed user id in bytes (docs/protocol.md#identifiers).
const MAX_USER_ID_BYTES: usize = 255;
/// Longest allowed device id in bytes.
const MAX_DEVICE_ID_BYTES: usize = 64;

/// Checked constructors: every id is validated (docs/protocol.md#identifiers).
impl DeviceRef {
    /// Builds a device reference after checking both ids.
    pub fn new(user_id: &str, device_id: &str) -> Result<Self> {
        validate_user_id(user_id)?;
        validate_device_id(device_id)?;
        Ok(Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
        })
    }

    /// Parses a credential identity `@localpart:server/DEVICEID` (split at the last `/`).
    pub fn parse(identity: &str) -> Result<Self> {
        let (user, device) = identity
            .rsplit_once('/')
            .ok_or_else(|| MlsError::InvalidIdentifier(format!("no device in {identity:?}")))?;
        Self::new(user, device)
    }

    /// Parses the identity of an MLS credential (must be a BasicCredential).
    pub fn from_credential(credential: &Credential) -> Result<Self> {
        let basic = BasicCredential::try_from(credential.clone())
            .map_err(|_| MlsError::InvalidIdentifier("not a basic credential".into()))?;
        let text = std::str::from_utf8(basic.identity())
            .map_err(|_| MlsError::InvalidIdentifier("identity is not UTF-8".into()))?;
        Self::parse(text)
    }
}

/// Checks a user id `@localpart:server_name` (localpart `[a-z0-9._=-]+`, at most 255 bytes).
pub fn validate_user_id(user_id: &str) -> Result<()> {
    let bad = |why: &str| MlsError::InvalidIdentifier(format!("user id {user_id:?}: {why}"));
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(bad("longer than 255 bytes"));
    }
    let rest = user_id
        .strip_prefix('@')
        .ok_or_else(|| bad("must start with @"))?;
    let (local, server) = rest.split_once(':').ok_or_else(|| bad("missing :server"))?;
    if local.is_empty()
        || !local
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-'))
    {
        return Err(bad("localpart must be [a-z0-9._=-]+"));
    }
    validate_server_name(server).map_err(|_| bad("bad server name"))
}

/// Checks a server name: a DNS name or IP literal with an optional `:port`.
pub fn validate_server_name(server: &str) -> Result<()> {
    let bad = || MlsError::InvalidIdentifier(format!("server name {server:?}"));
    let (host, port) = if let Some(after) = server.strip_prefix('[') {
        let (v6, tail) = after.split_once(']').ok_or_else(bad)?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        (v6, tail.strip_prefix(':'))
    } else {
        match server.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (server, None),
        }
    };
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    if !server.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad());
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || p.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

/// Checks a device id: 1–64 characters of `[A-Za-z0-9._~-]`.
pub fn validate_device_id(device_id: &str) -> Result<()> {
    if device_id.is_empty()
        || device_id.len() > MAX_DEVICE_ID_BYTES
        || !device_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(MlsError::InvalidIdentifier(format!(
            "device id {device_id:?}"
        )));
    }
    Ok(())
}

/// Fingerprint of a device signature key: SHA-256 of the raw key, upper-case hex in groups of 4.
pub fn fingerprint(signature_key: &[u8]) -> String {
    let digest = Sha256::digest(signature_key);
    let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// This device's identity: its reference, credential and signature key pair.
pub(crate) struct Identity {
    pub(crate) device: DeviceRef,
    pub(crate) signer: SignatureKeyPair,
}

impl Identity {
    /// Generates a fresh Ed25519 key pair for `device` and stores it in the provider.
    pub(crate) fn generate(device: DeviceRef, provider: &EngineProvider) -> Result<Self> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        signer.store(provider.storage_ref()).map_err(mls)?;
        Ok(Self { device, signer })
    }

    /// Loads the key pair with `public_key` from the provider's storage.
    pub(crate) fn load(
        device: DeviceRef,
        public_key: &[u8],
        provider: &EngineProvider,
    ) -> Result<Self> {
        let signer = SignatureKeyPair::read(
            provider.storage_ref(),
            public_key,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| MlsError::InvalidState("signature key pair missing".into()))?;
        Ok(Self { device, signer })
    }

    /// The MLS credential with this device's signature key.
    pub(crate) fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.device.identity().into_bytes()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    /// Raw 32-byte Ed25519 public key.
    pub(crate) fn public_key(&self) -> &[u8] {
        self.signer.public()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_identity_splits_at_last_slash_and_keeps_port() {
        let d = DeviceRef::parse("@alice:localhost:8448/ABCDEFGHIJ").unwrap();
        assert_eq!(d.user_id, "@alice:localhost:8448");
        assert_eq!(d.device_id, "ABCDEFGHIJ");
        assert_eq!(d.server_name(), "localhost:8448");
        assert_eq!(d.identity(), "@alice:localhost:8448/ABCDEFGHIJ");
    }

    #[test]
    fn malformed_identities_are_refused() {
        for bad in [
            "alice:example.org/DEV",
            "@Alice:example.org/DEV",
            "@alice/DEV",
            "@alice:example.org",
            "@alice:example.org/",
            "@alice:exa mple.org/DEV",
            "@alice:example.org:99999/DEV",
            "@:example.org/DEV",
        ] {
            assert!(DeviceRef::parse(bad).is_err(), "{bad} accepted");
        }
        let long = format!("@{}:example.org/DEV", "a".repeat(250));
        assert!(DeviceRef::parse(&long).is_err());
    }

    #[test]
    fn fingerprint_is_grouped_sha256_hex() {
        let f = fingerprint(&[0u8; 32]);
        assert_eq!(f.len(), 64 + 15);
        assert!(f.starts_with("66687AAD"[..4].to_string().as_str()));
    }
}
