//! Uploaded key packages (docs/protocol.md#wire-details "Keys"): parsed, signatures verified with openmls, then
//! Parley's policy (ciphersuite, lifetime, credential identity, bound signature key,
//! last-resort extension).

use openmls::prelude::tls_codec::{
    Deserialize as TlsDeserializeTrait, Serialize as TlsSerializeTrait,
};
use openmls::prelude::{
    ExtensionType, KeyPackage, KeyPackageIn, KeyPackageVerifyError, MlsMessageBodyIn, MlsMessageIn,
    MlsMessageOut, ProtocolVersion,
};
use openmls::treesync::errors::LifetimeError;

use super::{basic_identity, crypto, WireFormatKind, CIPHERSUITE};

/// How far a key package's `not_before` may lie after the server's clock (clock skew), in ms.
pub const NOT_BEFORE_SKEW_MS: u64 = 5 * 60 * 1000;

/// Slack added to `max_key_package_lifetime_ms` when checking `not_after − not_before` (docs/protocol.md#wire-details).
pub const LIFETIME_SLACK_MS: u64 = 60 * 60 * 1000;

/// Why an uploaded key package was refused (all map to 400 `P_INVALID_KEY_PACKAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPackageError {
    /// The bytes are neither a TLS-serialised `MLSMessage` key package nor a bare `KeyPackage`.
    #[error("not a TLS-serialised key package: {0}")]
    Malformed(String),
    /// The bytes are an `MLSMessage`, but of another wire format.
    #[error("the MLS message is a {0:?}, not a key package")]
    NotAKeyPackage(WireFormatKind),
    /// The ciphersuite is not MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
    #[error(
        "unsupported ciphersuite 0x{0:04x}; only MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (0x0001) is accepted"
    )]
    UnsupportedCiphersuite(u16),
    /// The key package or leaf node signature does not verify.
    #[error("the key package signature is invalid")]
    InvalidSignature,
    /// openmls refused the package for another structural reason.
    #[error("the key package is invalid: {0}")]
    Invalid(String),
    /// `not_after` is not in the future.
    #[error("the key package expired (not_after {not_after_ms} ms, now {now_ms} ms)")]
    Expired {
        /// The package's `not_after`, ms since the Unix epoch.
        not_after_ms: u64,
        /// The server's clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// `not_before` is more than the allowed skew after now.
    #[error("the key package is not valid yet (not_before {not_before_ms} ms, now {now_ms} ms)")]
    NotYetValid {
        /// The package's `not_before`, ms since the Unix epoch.
        not_before_ms: u64,
        /// The server's clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// `not_after − not_before` exceeds the configured maximum plus one hour.
    #[error(
        "the key package lifetime of {lifetime_ms} ms exceeds the maximum of {max_lifetime_ms} ms (plus one hour)"
    )]
    LifetimeTooLong {
        /// `not_after − not_before` in ms.
        lifetime_ms: u64,
        /// The configured `max_key_package_lifetime_ms`.
        max_lifetime_ms: u64,
    },
    /// The leaf credential is not a BasicCredential.
    #[error("the credential is not a basic credential")]
    NotBasicCredential,
    /// The credential identity is not this device's `@user:server/DEVICE`.
    #[error("the credential identity {found:?} is not this device ({expected:?})")]
    IdentityMismatch {
        /// The uploading device's identity.
        expected: String,
        /// The identity in the package (lossy UTF-8).
        found: String,
    },
    /// The leaf signature key is not the key bound to the device.
    #[error("the leaf signature key is not the signature key bound to this device")]
    SignatureKeyMismatch,
    /// A last-resort upload without the last_resort extension.
    #[error("the last-resort key package does not carry the last_resort extension (0x000A)")]
    MissingLastResortExtension,
    /// A last-resort package whose leaf capabilities do not list 0x000A.
    #[error("the last-resort key package's leaf capabilities do not list the last_resort extension (0x000A)")]
    LastResortNotInCapabilities,
    /// An ordinary package carrying the last_resort extension.
    #[error("an ordinary key package must not carry the last_resort extension (0x000A)")]
    UnexpectedLastResort,
}

/// A key package that passed [`validate_key_package`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKeyPackage {
    /// The KeyPackageRef (RFC 9420 §5.2) bytes: unique per package, for de-duplication.
    pub hash_ref: Vec<u8>,
    /// `not_before`, ms since the Unix epoch.
    pub not_before_ms: u64,
    /// `not_after`, ms since the Unix epoch (purge the package after this).
    pub not_after_ms: u64,
    /// Whether the package carries the last_resort extension.
    pub is_last_resort: bool,
    /// The credential identity (`@user:server/DEVICE`).
    pub identity: String,
    /// The package as a TLS-serialised `MLSMessage` (normalised if uploaded bare): store and serve this.
    pub message: Vec<u8>,
}

/// Validates one uploaded key package for device `expected_identity` whose bound Ed25519 key is
/// `bound_signature_key` (raw 32 bytes). `now_ms` is the server clock; `max_lifetime_ms` is
/// `max_key_package_lifetime_ms`; `require_last_resort` is true for the upload's `last_resort`.
///
/// Accepts an `MLSMessage` (wire format `mls_key_package`) or a bare `KeyPackage`. Checks, in
/// order: parses; ciphersuite; signatures and structure (openmls `KeyPackageIn::validate`, which
/// also refuses a package expired or not yet valid by the system clock); lifetime against
/// `now_ms`; BasicCredential identity; signature key; last-resort extension.
pub fn validate_key_package(
    bytes: &[u8],
    expected_identity: &str,
    bound_signature_key: &[u8],
    now_ms: u64,
    max_lifetime_ms: u64,
    require_last_resort: bool,
) -> Result<ValidKeyPackage, KeyPackageError> {
    let kp_in = parse_key_package_in(bytes)?;

    // Look at the ciphersuite before openmls tries to verify with it.
    let suite = key_package_ciphersuite(&kp_in)?;
    if suite != u16::from(CIPHERSUITE) {
        return Err(KeyPackageError::UnsupportedCiphersuite(suite));
    }

    let kp = kp_in
        .validate(crypto(), ProtocolVersion::Mls10)
        .map_err(|e| map_verify_error(e, now_ms))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(KeyPackageError::UnsupportedCiphersuite(u16::from(
            kp.ciphersuite(),
        )));
    }

    let lifetime = kp.life_time();
    let not_before_ms = lifetime.not_before().saturating_mul(1000);
    let not_after_ms = lifetime.not_after().saturating_mul(1000);
    if not_after_ms <= now_ms {
        return Err(KeyPackageError::Expired {
            not_after_ms,
            now_ms,
        });
    }
    if not_before_ms > now_ms.saturating_add(NOT_BEFORE_SKEW_MS) {
        return Err(KeyPackageError::NotYetValid {
            not_before_ms,
            now_ms,
        });
    }
    let lifetime_ms = not_after_ms.saturating_sub(not_before_ms);
    if lifetime_ms > max_lifetime_ms.saturating_add(LIFETIME_SLACK_MS) {
        return Err(KeyPackageError::LifetimeTooLong {
            lifetime_ms,
            max_lifetime_ms,
        });
    }

    let leaf = kp.leaf_node();
    let identity_bytes =
        basic_identity(leaf.credential()).ok_or(KeyPackageError::NotBasicCredential)?;
    if identity_bytes != expected_identity.as_bytes() {
        return Err(KeyPackageError::IdentityMismatch {
            expected: expected_identity.to_owned(),
            found: String::from_utf8_lossy(&identity_bytes).into_owned(),
        });
    }
    if leaf.signature_key().as_slice() != bound_signature_key {
        return Err(KeyPackageError::SignatureKeyMismatch);
    }

    let is_last_resort = kp.last_resort();
    if require_last_resort {
        if !is_last_resort {
            return Err(KeyPackageError::MissingLastResortExtension);
        }
        if !leaf
            .capabilities()
            .extensions()
            .contains(&ExtensionType::LastResort)
        {
            return Err(KeyPackageError::LastResortNotInCapabilities);
        }
    } else if is_last_resort {
        return Err(KeyPackageError::UnexpectedLastResort);
    }

    let hash_ref = kp
        .hash_ref(crypto())
        .map_err(|e| KeyPackageError::Invalid(e.to_string()))?
        .as_slice()
        .to_vec();
    let message = serialize_key_package(kp)?;
    Ok(ValidKeyPackage {
        hash_ref,
        not_before_ms,
        not_after_ms,
        is_last_resort,
        identity: expected_identity.to_owned(),
        message,
    })
}

/// Parses an `MLSMessage` key package, falling back to a bare `KeyPackage`.
fn parse_key_package_in(bytes: &[u8]) -> Result<KeyPackageIn, KeyPackageError> {
    match MlsMessageIn::tls_deserialize_exact(bytes) {
        Ok(msg) => {
            let kind = WireFormatKind::of(&msg);
            match msg.extract() {
                MlsMessageBodyIn::KeyPackage(kp) => Ok(kp),
                _ => Err(KeyPackageError::NotAKeyPackage(kind)),
            }
        }
        Err(mls_error) => {
            // An MLSMessage starts with version 1 and wire format 5 (key package); a bare
            // KeyPackage with version 1 and a ciphersuite. Report the error of what it looks like.
            if bytes.get(..4) == Some(&[0, 1, 0, 5][..]) {
                return Err(KeyPackageError::Malformed(mls_error.to_string()));
            }
            KeyPackageIn::tls_deserialize_exact(bytes)
                .map_err(|e| KeyPackageError::Malformed(e.to_string()))
        }
    }
}

/// Reads the ciphersuite of an unverified key package (`KeyPackageTBS`: version u16, suite u16).
fn key_package_ciphersuite(kp: &KeyPackageIn) -> Result<u16, KeyPackageError> {
    let bytes = kp
        .tls_serialize_detached()
        .map_err(|e| KeyPackageError::Malformed(e.to_string()))?;
    match bytes.get(2..4) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(KeyPackageError::Malformed("key package too short".into())),
    }
}

fn map_verify_error(e: KeyPackageVerifyError, now_ms: u64) -> KeyPackageError {
    match e {
        KeyPackageVerifyError::InvalidSignature
        | KeyPackageVerifyError::InvalidLeafNodeSignature => KeyPackageError::InvalidSignature,
        KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { not_after, .. }) => {
            KeyPackageError::Expired {
                not_after_ms: not_after.saturating_mul(1000),
                now_ms,
            }
        }
        KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { not_before, .. }) => {
            KeyPackageError::NotYetValid {
                not_before_ms: not_before.saturating_mul(1000),
                now_ms,
            }
        }
        other => KeyPackageError::Invalid(other.to_string()),
    }
}

fn serialize_key_package(kp: KeyPackage) -> Result<Vec<u8>, KeyPackageError> {
    MlsMessageOut::from(kp)
        .tls_serialize_detached()
        .map_err(|e| KeyPackageError::Invalid(e.to_string()))
}
