//! The crate's one error type, and how a server answers each error.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// A server maps an error to its answer with [`Error::http_status`] and [`Error::errcode`]:
/// authentication failures are 401 `P_UNAUTHORIZED`, malformed bodies 400 `P_NOT_JSON` /
/// `P_BAD_JSON`. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- JSON -------------------------------------------------------------------------
    /// The bytes are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// A number is not an integer (e.g. `1.5`); canonical JSON has integers only.
    #[error("canonical JSON allows integers only, found a non-integer number")]
    NonIntegerNumber,
    /// An integer outside ±(2^53−1).
    #[error("integer outside the canonical JSON range ±(2^53-1)")]
    IntegerOutOfRange,
    /// An object names the same key twice.
    #[error("duplicate object key {0:?}")]
    DuplicateKey(String),
    /// JSON of the wrong shape (a missing or mistyped field, not an object, …).
    #[error("bad JSON: {0}")]
    BadJson(String),

    /// A server this server will not connect to: an IP-literal name, or an address that is
    /// not public (loopback, private, link-local…), unless configured.
    #[error("not a permitted federation destination: {0}")]
    ForbiddenDestination(String),

    // --- base64 -----------------------------------------------------------------------
    /// A base64 value does not decode.
    #[error("invalid base64")]
    Base64,

    // --- keys -------------------------------------------------------------------------
    /// A key id is not `ed25519:` followed by `[A-Za-z0-9_]+`.
    #[error("invalid key id {0:?}: expected ed25519:[A-Za-z0-9_]+")]
    InvalidKeyId(String),
    /// Bytes that should be an Ed25519 public key or signature are not one.
    #[error("invalid ed25519 {0}")]
    InvalidEd25519(&'static str),
    /// The signing-key file exists but is not in the documented format.
    #[error("signing key file {path}: {reason}")]
    InvalidKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: &'static str,
    },
    /// Reading or writing the signing-key file failed.
    #[error("signing key file {path}: {source}")]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    // --- key documents ----------------------------------------------------------------
    /// A key document names another server than the one asked.
    #[error("key document is for {found:?}, not for the server asked ({expected:?})")]
    KeyDocumentServerMismatch {
        /// The server we asked.
        expected: String,
        /// The `server_name` in the answer.
        found: String,
    },
    /// A key document carries no signature by its server with one of its own verify keys.
    #[error("key document is not self-signed with one of its verify keys")]
    KeyDocumentUnsigned,
    /// A key document's `valid_until_ts` has passed.
    #[error("key document expired")]
    KeyDocumentExpired,

    // --- request authentication (all 401 P_UNAUTHORIZED) ---------------------------------
    /// No `Authorization` header.
    #[error("missing X-Parley authorization")]
    MissingAuthorization,
    /// The `Authorization` header is not a well-formed `X-Parley` header.
    #[error("malformed X-Parley authorization: {0}")]
    MalformedAuthorization(&'static str),
    /// The request is addressed to another server.
    #[error("request is for destination {found:?}, not for this server")]
    WrongDestination {
        /// The `destination` the request names.
        found: String,
    },
    /// The origin's key is unknown and could not be fetched.
    #[error("unknown key {key_id} for origin {origin:?}")]
    UnknownKey {
        /// The claimed origin.
        origin: String,
        /// The key id it signed with.
        key_id: String,
    },
    /// A signature does not verify.
    #[error("signature does not verify")]
    BadSignature,

    // --- transactions and destinations ---------------------------------------------------
    /// A `txn_id` outside `[A-Za-z0-9._~-]{1,64}`.
    #[error("invalid txn_id")]
    InvalidTxnId,
    /// A transaction with more than [`crate::transactions::MAX_EVENTS`] events.
    #[error("transaction has {0} events, more than the limit")]
    TooManyEvents(usize),
    /// A string that is not a server name (`host[:port]`).
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
}

impl Error {
    /// The HTTP status and `errcode` a server answers this error with (docs/protocol.md#errors).
    fn answer(&self) -> (u16, &'static str) {
        match self {
            Error::MissingAuthorization
            | Error::MalformedAuthorization(_)
            | Error::WrongDestination { .. }
            | Error::UnknownKey { .. }
            | Error::BadSignature => (401, "P_UNAUTHORIZED"),
            Error::NotJson(_) => (400, "P_NOT_JSON"),
            Error::InvalidKeyFile { .. } | Error::KeyFileIo { .. } => (500, "P_UNKNOWN"),
            Error::KeyDocumentServerMismatch { .. }
            | Error::KeyDocumentUnsigned
            | Error::KeyDocumentExpired => (502, "P_UNREACHABLE_SERVER"),
            Error::NonIntegerNumber
            | Error::IntegerOutOfRange
            | Error::DuplicateKey(_)
            | Error::BadJson(_)
            | Error::Base64
            | Error::InvalidKeyId(_)
            | Error::InvalidEd25519(_)
            | Error::InvalidTxnId
            | Error::TooManyEvents(_)
            | Error::InvalidServerName(_) => (400, "P_BAD_JSON"),
            Error::ForbiddenDestination(_) => (403, "P_FORBIDDEN"),
        }
    }

    /// The HTTP status a server answers this error with.
    pub fn http_status(&self) -> u16 {
        self.answer().0
    }

    /// The `errcode` a server answers this error with (docs/protocol.md#errors).
    pub fn errcode(&self) -> &'static str {
        self.answer().1
    }

    /// Whether this is a request-authentication failure (401 `P_UNAUTHORIZED`).
    pub fn is_unauthorized(&self) -> bool {
        self.http_status() == 401
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_failures_map_to_401_unauthorized() {
        for e in [
            Error::MissingAuthorization,
            Error::MalformedAuthorization("x"),
            Error::WrongDestination { found: "c".into() },
            Error::UnknownKey {
                origin: "a".into(),
                key_id: "ed25519:k".into(),
            },
            Error::BadSignature,
        ] {
            assert_eq!(e.http_status(), 401, "{e}");
            assert_eq!(e.errcode(), "P_UNAUTHORIZED");
            assert!(e.is_unauthorized());
        }
    }

    #[test]
    fn body_errors_map_to_400_not_json_or_bad_json() {
        assert_eq!(Error::NotJson("eof".into()).errcode(), "P_NOT_JSON");
        assert_eq!(Error::NonIntegerNumber.errcode(), "P_BAD_JSON");
        assert_eq!(Error::NonIntegerNumber.http_status(), 400);
        assert!(!Error::BadJson("x".into()).is_unauthorized());
    }
}
