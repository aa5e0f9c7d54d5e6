//! The homeserver's one error type, mapped once to HTTP status and `errcode` (docs/protocol.md#errors).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
        self.parts().1
    }

    /// Status, code and extra top-level fields of this error.
    fn parts(&self) -> (StatusCode, ErrCode, Map<String, Value>) {
        let mut extra = Map::new();
        let (status, code) = match self {
            Error::NotJson(_) => (StatusCode::BAD_REQUEST, ErrCode::NotJson),
            Error::BadJson(_) => (StatusCode::BAD_REQUEST, ErrCode::BadJson),
            Error::MissingToken => (StatusCode::UNAUTHORIZED, ErrCode::MissingToken),
            Error::UnknownToken => (StatusCode::UNAUTHORIZED, ErrCode::UnknownToken),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, ErrCode::Forbidden),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, ErrCode::NotFound),
            Error::UnrecognizedPath => (StatusCode::NOT_FOUND, ErrCode::Unrecognized),
            Error::UnrecognizedMethod => (StatusCode::METHOD_NOT_ALLOWED, ErrCode::Unrecognized),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrCode::TooLarge),
            Error::Timeout => (StatusCode::REQUEST_TIMEOUT, ErrCode::Timeout),
            Error::LimitExceeded { retry_after_ms } => {
                extra.insert("retry_after_ms".into(), json!(retry_after_ms));
                (StatusCode::TOO_MANY_REQUESTS, ErrCode::LimitExceeded)
            }
            Error::UserInUse => (StatusCode::CONFLICT, ErrCode::UserInUse),
            Error::InvalidUsername(_) => (StatusCode::BAD_REQUEST, ErrCode::InvalidUsername),
            Error::WeakPassword(_) => (StatusCode::BAD_REQUEST, ErrCode::WeakPassword),
            Error::InvalidKeyPackage { index, .. } => {
                extra.insert("index".into(), json!(index));
                (StatusCode::BAD_REQUEST, ErrCode::InvalidKeyPackage)
            }
            Error::SignatureKeyMismatch => (StatusCode::CONFLICT, ErrCode::SignatureKeyMismatch),
            Error::InvalidMessage(_) => (StatusCode::BAD_REQUEST, ErrCode::InvalidMessage),
            Error::NotMember | Error::NoLocalMember => (StatusCode::FORBIDDEN, ErrCode::NotMember),
            Error::StaleEpoch { current_epoch } => {
                extra.insert("current_epoch".into(), json!(current_epoch));
                (StatusCode::CONFLICT, ErrCode::StaleEpoch)
            }
            Error::UnreachableServer(_) => (StatusCode::BAD_GATEWAY, ErrCode::UnreachableServer),
            Error::Relayed { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                ErrCode::UnreachableServer,
            ),
            Error::Federation(e) => (
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                ErrCode::parse(e.errcode()).unwrap_or(ErrCode::Unknown),
            ),
            Error::Store(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrCode::Unknown)
            }
        };
        (status, code, extra)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Relayed { status, body } = &self {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            return (status, axum::Json(body.clone())).into_response();
        }
        let (status, code, mut body) = self.parts();
        match &self {
            Error::Store(e) => tracing::error!(error = %e, "storage failure"),
            Error::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        body.insert("errcode".into(), json!(code.as_str()));
        body.insert("error".into(), json!(self.to_string()));
        (status, axum::Json(Value::Object(body))).into_response()
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, Error>;
