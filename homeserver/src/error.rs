//! The homeserver's one error type, what services fail with: each variant has its protocol
//! `errcode` (docs/protocol.md#errors); [`crate::api::errors`] turns it into an HTTP answer.

use parley_client_api::ErrCode;
use serde_json::{json, Map, Value};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    BadJson(String),
    #[error("missing access token")]
    MissingToken,
    #[error("unknown or expired access token")]
    UnknownToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("unrecognized request path")]
    UnrecognizedPath,
    #[error("method not allowed on this path")]
    UnrecognizedMethod,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too many requests")]
    LimitExceeded { retry_after_ms: u64 },
    /// The client did not send its whole body in time.
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("user id is already taken")]
    UserInUse,
    #[error("{0}")]
    InvalidUsername(String),
    /// A password shorter than the configured minimum.
    #[error("{0}")]
    WeakPassword(String),
    #[error("key package {index} is invalid: {reason}")]
    InvalidKeyPackage { index: usize, reason: String },
    #[error("a different signature key is already bound to this device")]
    SignatureKeyMismatch,
    #[error("invalid MLS message: {0}")]
    InvalidMessage(String),
    #[error("the sending device is not a member of this group")]
    NotMember,
    /// A relayed event for a group in which no device of this server is a member.
    #[error("no device of this server is a member of this group")]
    NoLocalMember,
    #[error("the group is at epoch {current_epoch}")]
    StaleEpoch { current_epoch: u64 },
    #[error("{0}")]
    UnreachableServer(String),
    /// Another server's verdict on a submission for our client, rebuilt from known fields.
    #[error("{}", body.get("error").and_then(|e| e.as_str()).unwrap_or("remote error"))]
    Relayed { status: u16, body: Value },
    /// A federation request failed authentication or was malformed.
    #[error("{0}")]
    Federation(#[from] parley_federation::Error),
    #[error("storage failure")]
    Store(#[from] parley_schema::StoreError),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// The protocol error code.
    pub fn errcode(&self) -> ErrCode {
        match self {
            Error::NotJson(_) => ErrCode::NotJson,
            Error::BadJson(_) => ErrCode::BadJson,
            Error::MissingToken => ErrCode::MissingToken,
            Error::UnknownToken => ErrCode::UnknownToken,
            Error::Forbidden(_) => ErrCode::Forbidden,
            Error::NotFound(_) => ErrCode::NotFound,
            Error::UnrecognizedPath | Error::UnrecognizedMethod => ErrCode::Unrecognized,
            Error::TooLarge { .. } => ErrCode::TooLarge,
            Error::Timeout => ErrCode::Timeout,
            Error::LimitExceeded { .. } => ErrCode::LimitExceeded,
            Error::UserInUse => ErrCode::UserInUse,
            Error::InvalidUsername(_) => ErrCode::InvalidUsername,
            Error::WeakPassword(_) => ErrCode::WeakPassword,
            Error::InvalidKeyPackage { .. } => ErrCode::InvalidKeyPackage,
            Error::SignatureKeyMismatch => ErrCode::SignatureKeyMismatch,
            Error::InvalidMessage(_) => ErrCode::InvalidMessage,
            Error::NotMember | Error::NoLocalMember => ErrCode::NotMember,
            Error::StaleEpoch { .. } => ErrCode::StaleEpoch,
            Error::UnreachableServer(_) | Error::Relayed { .. } => ErrCode::UnreachableServer,
            Error::Federation(e) => ErrCode::parse(e.errcode()).unwrap_or(ErrCode::Unknown),
            Error::Store(_) | Error::Internal(_) => ErrCode::Unknown,
        }
    }

    /// The fields an error body carries besides `errcode` and `error`.
    pub fn extra_fields(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            Error::LimitExceeded { retry_after_ms } => {
                extra.insert("retry_after_ms".into(), json!(retry_after_ms));
            }
            Error::InvalidKeyPackage { index, .. } => {
                extra.insert("index".into(), json!(index));
            }
            Error::StaleEpoch { current_epoch } => {
                extra.insert("current_epoch".into(), json!(current_epoch));
            }
            _ => {}
        }
        extra
    }
}

impl From<crate::ratelimit::RateLimited> for Error {
    fn from(e: crate::ratelimit::RateLimited) -> Self {
        Error::LimitExceeded {
            retry_after_ms: e.retry_after_ms,
        }
    }
}

impl From<crate::ids::NotAGroupId> for Error {
    fn from(e: crate::ids::NotAGroupId) -> Self {
        Error::NotFound(e.to_string())
    }
}

impl From<crate::ids::BadTxnId> for Error {
    fn from(e: crate::ids::BadTxnId) -> Self {
        Error::BadJson(e.to_string())
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, Error>;
