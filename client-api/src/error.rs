//! Error codes and the error body every failed request carries (docs/protocol.md#errors).

use serde::{Deserialize, Serialize};

/// The `errcode` values of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrCode {
    BadJson,
    NotJson,
    MissingToken,
    UnknownToken,
    Forbidden,
    NotFound,
    Unrecognized,
    TooLarge,
    LimitExceeded,
    UserInUse,
    InvalidUsername,
    /// A password shorter than the server's minimum (400).
    WeakPassword,
    InvalidKeyPackage,
    SignatureKeyMismatch,
    KeyPackagesExhausted,
    InvalidMessage,
    NotMember,
    StaleEpoch,
    UnreachableServer,
    Unauthorized,
    /// The request's body did not arrive in time (408).
    Timeout,
    /// The server failed; nothing the client did caused it.
    Unknown,
    /// The server runs but cannot serve yet: its database does not answer, or migrations
    /// are pending (503, from the readiness check).
    NotReady,
    /// The account was deactivated by an admin (403).
    UserDeactivated,
    /// An upload would take the user past their media quota (413).
    QuotaExceeded,
    /// A `Range` that starts past the end of the media (416).
    RangeNotSatisfiable,
    /// A commit only a group admin may make, from a member who is not one (403,
    /// docs/protocol.md#group-roles).
    NotAdmin,
    /// A join by link refused: the group is not joinable, the link's code is not the current
    /// one, or the user is banned (403, docs/protocol.md#join-links).
    JoinRefused,
}

impl ErrCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrCode; 28] = [
        ErrCode::BadJson,
        ErrCode::NotJson,
        ErrCode::MissingToken,
        ErrCode::UnknownToken,
        ErrCode::Forbidden,
        ErrCode::NotFound,
        ErrCode::Unrecognized,
        ErrCode::TooLarge,
        ErrCode::LimitExceeded,
        ErrCode::UserInUse,
        ErrCode::InvalidUsername,
        ErrCode::WeakPassword,
        ErrCode::InvalidKeyPackage,
        ErrCode::SignatureKeyMismatch,
        ErrCode::KeyPackagesExhausted,
        ErrCode::InvalidMessage,
        ErrCode::NotMember,
        ErrCode::StaleEpoch,
        ErrCode::UnreachableServer,
        ErrCode::Unauthorized,
        ErrCode::Timeout,
        ErrCode::Unknown,
        ErrCode::NotReady,
        ErrCode::UserDeactivated,
        ErrCode::QuotaExceeded,
        ErrCode::RangeNotSatisfiable,
        ErrCode::NotAdmin,
        ErrCode::JoinRefused,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrCode::BadJson => "P_BAD_JSON",
            ErrCode::NotJson => "P_NOT_JSON",
            ErrCode::MissingToken => "P_MISSING_TOKEN",
            ErrCode::UnknownToken => "P_UNKNOWN_TOKEN",
            ErrCode::Forbidden => "P_FORBIDDEN",
            ErrCode::NotFound => "P_NOT_FOUND",
            ErrCode::Unrecognized => "P_UNRECOGNIZED",
            ErrCode::TooLarge => "P_TOO_LARGE",
            ErrCode::LimitExceeded => "P_LIMIT_EXCEEDED",
            ErrCode::UserInUse => "P_USER_IN_USE",
            ErrCode::InvalidUsername => "P_INVALID_USERNAME",
            ErrCode::WeakPassword => "P_WEAK_PASSWORD",
            ErrCode::InvalidKeyPackage => "P_INVALID_KEY_PACKAGE",
            ErrCode::SignatureKeyMismatch => "P_SIGNATURE_KEY_MISMATCH",
            ErrCode::KeyPackagesExhausted => "P_KEY_PACKAGES_EXHAUSTED",
            ErrCode::InvalidMessage => "P_INVALID_MESSAGE",
            ErrCode::NotMember => "P_NOT_MEMBER",
            ErrCode::StaleEpoch => "P_STALE_EPOCH",
            ErrCode::UnreachableServer => "P_UNREACHABLE_SERVER",
            ErrCode::Unauthorized => "P_UNAUTHORIZED",
            ErrCode::Timeout => "P_TIMEOUT",
            ErrCode::Unknown => "P_UNKNOWN",
            ErrCode::NotReady => "P_NOT_READY",
            ErrCode::UserDeactivated => "P_USER_DEACTIVATED",
            ErrCode::QuotaExceeded => "P_QUOTA_EXCEEDED",
            ErrCode::RangeNotSatisfiable => "P_RANGE_NOT_SATISFIABLE",
            ErrCode::NotAdmin => "P_NOT_ADMIN",
            ErrCode::JoinRefused => "P_JOIN_REFUSED",
        }
    }

    /// The HTTP status the code travels with (`P_UNRECOGNIZED` is 404 for an unknown path,
    /// 405 for a known path with the wrong method; 404 here).
    pub const fn http_status(self) -> u16 {
        match self {
            ErrCode::BadJson
            | ErrCode::NotJson
            | ErrCode::InvalidUsername
            | ErrCode::WeakPassword
            | ErrCode::InvalidKeyPackage
            | ErrCode::InvalidMessage => 400,
            ErrCode::MissingToken | ErrCode::UnknownToken | ErrCode::Unauthorized => 401,
            ErrCode::Forbidden
            | ErrCode::NotMember
            | ErrCode::UserDeactivated
            | ErrCode::NotAdmin
            | ErrCode::JoinRefused => 403,
            ErrCode::NotFound | ErrCode::Unrecognized => 404,
            ErrCode::Timeout => 408,
            ErrCode::UserInUse
            | ErrCode::SignatureKeyMismatch
            | ErrCode::StaleEpoch
            | ErrCode::KeyPackagesExhausted => 409,
            ErrCode::TooLarge | ErrCode::QuotaExceeded => 413,
            ErrCode::RangeNotSatisfiable => 416,
            ErrCode::LimitExceeded => 429,
            ErrCode::Unknown => 500,
            ErrCode::UnreachableServer => 502,
            ErrCode::NotReady => 503,
        }
    }

    /// Parses a wire code.
    pub fn parse(s: &str) -> Option<ErrCode> {
        ErrCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"errcode": "P_…", "error": "…", …extra fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `P_FORBIDDEN`.
    pub errcode: String,
    /// Human-readable explanation.
    pub error: String,
    /// Extra top-level fields (`retry_after_ms`, `current_epoch`, `index`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ErrorBody {
    /// The parsed code, if it is one this crate knows.
    pub fn code(&self) -> Option<ErrCode> {
        ErrCode::parse(&self.errcode)
    }

    /// An integer extra field such as `retry_after_ms`.
    pub fn extra_u64(&self, name: &str) -> Option<u64> {
        self.extra.get(name).and_then(|v| v.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for code in ErrCode::ALL {
            assert_eq!(ErrCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrCode::parse("P_NOPE"), None);
    }

    #[test]
    fn extra_fields_sit_at_the_top_level() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"errcode":"P_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":250}"#,
        )
        .unwrap();
        assert_eq!(body.code(), Some(ErrCode::LimitExceeded));
        assert_eq!(body.extra_u64("retry_after_ms"), Some(250));
        let back = serde_json::to_value(&body).unwrap();
        assert_eq!(back["retry_after_ms"], 250);
    }
}
