//! Errors as HTTP answers: the one place where a failure — the API's own ([`RequestError`]) or
//! a service's ([`AccountError`], [`KeysError`], [`HubError`], [`DeliveryError`],
//! [`FederationError`]) — gets its errcode, its status and the fields beside them in a body
//! `{errcode, error, …}` (docs/protocol.md#errors). Services never see this module: they fail
//! with their own types, and the API turns those into answers here.
//!
//! Statuses are the protocol's ([`ErrCode::http_status`]), except a known path with the wrong
//! method (405), another server's verdict passed on (its status), and a federation request or
//! transaction the federation crate refuses (that crate's status).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parley_client_api::{ErrCode, ErrorBody};
use parley_schema::StoreError;
use serde_json::{json, Map, Value};

use crate::accounts::error::AccountError;
use crate::delivery::error::DeliveryError;
use crate::federation::error::FederationError;
use crate::federation::remote_errors::RemoteError;
use crate::hub::error::HubError;
use crate::keys::KeysError;
use crate::ratelimit::RateLimited;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Everything a request can fail with: the API's own failures, or a service's.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Accounts(#[from] AccountError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Federation(#[from] FederationError),
}

/// What a request fails with before (or besides) any service: routing, the body, rate limits,
/// the authentication of federation requests.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// JSON of the wrong shape, or a bad query string or path parameter.
    #[error("{0}")]
    BadJson(String),
    #[error("unrecognized request path")]
    UnrecognizedPath,
    /// A known path with the wrong method.
    #[error("method not allowed on this path")]
    UnrecognizedMethod,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The client did not send its whole body in time.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// A rate limit of the endpoint's class, the origin server's or the client address's.
    #[error("too many requests")]
    LimitExceeded { retry_after_ms: u64 },
    #[error("federation is disabled on this server")]
    FederationDisabled,
    /// The federation ACL refuses the origin server.
    #[error("{0} may not federate with this server")]
    OriginNotAllowed(String),
    /// A federation body whose `origin` is not the server that signed it.
    #[error("body origin differs from the signed origin")]
    OriginMismatch,
    /// A follower submission for a device of another server than the requesting one.
    #[error("the sender's server is not the requesting server")]
    SenderNotFromOrigin,
    /// A federation request failed authentication or was malformed (the federation crate's
    /// verdict, with its errcode and status).
    #[error("{0}")]
    FederationRequest(#[from] parley_federation::Error),
    /// This server failed; the text goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<RateLimited> for RequestError {
    fn from(e: RateLimited) -> Self {
        RequestError::LimitExceeded {
            retry_after_ms: e.retry_after_ms,
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        RequestError::from(e).into()
    }
}

impl From<parley_federation::Error> for ApiError {
    fn from(e: parley_federation::Error) -> Self {
        RequestError::from(e).into()
    }
}

/// How a failure reads on the wire. Each impl below gives `errcode` as one `match` over all
/// the variants, without a `_ =>` arm: a variant added to a service error does not compile
/// until it is given its errcode here (the table test below then checks the codes).
trait OnTheWire: std::fmt::Display {
    /// The protocol's error code.
    fn errcode(&self) -> ErrCode;

    /// The HTTP status: the errcode's, unless said otherwise.
    fn status(&self) -> u16 {
        self.errcode().http_status()
    }

    /// The fields the body carries besides `errcode` and `error`.
    fn extra_fields(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Logs a failure of this server (its detail never reaches the client).
    fn log_fault(&self) {}

    /// Another server's verdict, answered with the body rebuilt from it.
    fn relayed_body(&self) -> Option<&Value> {
        None
    }
}

fn retry_after(retry_after_ms: u64) -> Map<String, Value> {
    Map::from_iter([("retry_after_ms".to_owned(), json!(retry_after_ms))])
}

fn log_store(e: &StoreError) {
    tracing::error!(error = %e, "storage failure");
}

fn log_internal(detail: &str) {
    tracing::error!(error = %detail, "internal error");
}

impl OnTheWire for RequestError {
    fn errcode(&self) -> ErrCode {
        match self {
            RequestError::NotJson(_) => ErrCode::NotJson,
            RequestError::BadJson(_) => ErrCode::BadJson,
            RequestError::UnrecognizedPath | RequestError::UnrecognizedMethod => {
                ErrCode::Unrecognized
            }
            RequestError::TooLarge { .. } => ErrCode::TooLarge,
            RequestError::Timeout => ErrCode::Timeout,
            RequestError::LimitExceeded { .. } => ErrCode::LimitExceeded,
            RequestError::FederationDisabled
            | RequestError::OriginNotAllowed(_)
            | RequestError::OriginMismatch
            | RequestError::SenderNotFromOrigin => ErrCode::Forbidden,
            RequestError::FederationRequest(e) => {
                ErrCode::parse(e.errcode()).unwrap_or(ErrCode::Unknown)
            }
            RequestError::Internal(_) => ErrCode::Unknown,
        }
    }

    fn status(&self) -> u16 {
        match self {
            RequestError::UnrecognizedMethod => 405,
            RequestError::FederationRequest(e) => e.http_status(),
            other => other.errcode().http_status(),
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            RequestError::LimitExceeded { retry_after_ms } => retry_after(*retry_after_ms),
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        if let RequestError::Internal(detail) = self {
            log_internal(detail);
        }
    }
}

impl OnTheWire for AccountError {
    fn errcode(&self) -> ErrCode {
        match self {
            AccountError::RegistrationClosed
            | AccountError::RegistrationTokenRequired
            | AccountError::InvalidCredentials
            | AccountError::NotYourDevice => ErrCode::Forbidden,
            AccountError::InvalidUsername(_) => ErrCode::InvalidUsername,
            AccountError::WeakPassword { .. } => ErrCode::WeakPassword,
            AccountError::PasswordLength { .. }
            | AccountError::PasswordTooLong { .. }
            | AccountError::DeviceNameTooLong { .. } => ErrCode::BadJson,
            AccountError::UserInUse => ErrCode::UserInUse,
            AccountError::NoSuchDevice => ErrCode::NotFound,
            AccountError::MissingToken => ErrCode::MissingToken,
            AccountError::UnknownToken => ErrCode::UnknownToken,
            AccountError::RateLimited { .. } => ErrCode::LimitExceeded,
            AccountError::Store(_) | AccountError::Internal(_) => ErrCode::Unknown,
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            AccountError::RateLimited { retry_after_ms } => retry_after(*retry_after_ms),
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            AccountError::Store(e) => log_store(e),
            AccountError::Internal(detail) => log_internal(detail),
            _ => {}
        }
    }
}

impl OnTheWire for RemoteError {
    fn errcode(&self) -> ErrCode {
        match self {
            RemoteError::Unreachable(_) | RemoteError::Verdict { .. } => ErrCode::UnreachableServer,
        }
    }

    fn status(&self) -> u16 {
        match self {
            RemoteError::Verdict { status, .. } => *status,
            RemoteError::Unreachable(_) => self.errcode().http_status(),
        }
    }

    fn relayed_body(&self) -> Option<&Value> {
        match self {
            RemoteError::Verdict { body, .. } => Some(body),
            RemoteError::Unreachable(_) => None,
        }
    }
}

impl OnTheWire for KeysError {
    fn errcode(&self) -> ErrCode {
        match self {
            KeysError::NotOwnDevice => ErrCode::Forbidden,
            KeysError::BadSignatureKey | KeysError::TooManyUsers { .. } => ErrCode::BadJson,
            KeysError::SignatureKeyMismatch => ErrCode::SignatureKeyMismatch,
            KeysError::DeviceGone => ErrCode::UnknownToken,
            KeysError::NoSuchUser => ErrCode::NotFound,
            KeysError::TooManyKeyPackages { .. } => ErrCode::TooLarge,
            KeysError::InvalidKeyPackage { .. } => ErrCode::InvalidKeyPackage,
            KeysError::WrongUserAnswered(_) => ErrCode::UnreachableServer,
            KeysError::Remote(e) => e.errcode(),
            KeysError::Store(_) => ErrCode::Unknown,
        }
    }

    fn status(&self) -> u16 {
        match self {
            KeysError::Remote(e) => e.status(),
            other => other.errcode().http_status(),
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            KeysError::InvalidKeyPackage { index, .. } => {
                Map::from_iter([("index".to_owned(), json!(index))])
            }
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        if let KeysError::Store(e) = self {
            log_store(e);
        }
    }

    fn relayed_body(&self) -> Option<&Value> {
        match self {
            KeysError::Remote(e) => e.relayed_body(),
            _ => None,
        }
    }
}

impl OnTheWire for HubError {
    fn errcode(&self) -> ErrCode {
        match self {
            HubError::NotAGroupId(_) | HubError::NoSuchGroup | HubError::NotTheHub => {
                ErrCode::NotFound
            }
            HubError::BadTxnId(_) => ErrCode::BadJson,
            HubError::InvalidMessage(_) => ErrCode::InvalidMessage,
            HubError::TooLarge { .. } => ErrCode::TooLarge,
            HubError::FederationNotAllowed(_) => ErrCode::Forbidden,
            HubError::NotMember => ErrCode::NotMember,
            HubError::StaleEpoch { .. } => ErrCode::StaleEpoch,
            HubError::Remote(e) => e.errcode(),
            HubError::Store(_) | HubError::Internal(_) => ErrCode::Unknown,
        }
    }

    fn status(&self) -> u16 {
        match self {
            HubError::Remote(e) => e.status(),
            other => other.errcode().http_status(),
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            HubError::StaleEpoch { current_epoch } => {
                Map::from_iter([("current_epoch".to_owned(), json!(current_epoch))])
            }
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            HubError::Store(e) => log_store(e),
            HubError::Internal(detail) => log_internal(detail),
            _ => {}
        }
    }

    fn relayed_body(&self) -> Option<&Value> {
        match self {
            HubError::Remote(e) => e.relayed_body(),
            _ => None,
        }
    }
}

impl OnTheWire for DeliveryError {
    fn errcode(&self) -> ErrCode {
        match self {
            DeliveryError::BadSince => ErrCode::BadJson,
            DeliveryError::SessionEnded => ErrCode::UnknownToken,
            DeliveryError::NoAuthFrame => ErrCode::MissingToken,
            DeliveryError::Auth(e) => e.errcode(),
            DeliveryError::NoSuchWelcome => ErrCode::NotFound,
            DeliveryError::Store(_) => ErrCode::Unknown,
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            DeliveryError::Auth(e) => e.extra_fields(),
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            DeliveryError::Auth(e) => e.log_fault(),
            DeliveryError::Store(e) => log_store(e),
            _ => {}
        }
    }
}

impl OnTheWire for FederationError {
    fn errcode(&self) -> ErrCode {
        match self {
            FederationError::BadTransaction(e) => {
                ErrCode::parse(e.errcode()).unwrap_or(ErrCode::Unknown)
            }
            FederationError::TransactionInFlight { .. } => ErrCode::LimitExceeded,
            FederationError::BadField(_) => ErrCode::BadJson,
            FederationError::InvalidMessage(_) => ErrCode::InvalidMessage,
            FederationError::TooLarge { .. } => ErrCode::TooLarge,
            FederationError::NotAGroupId(_) | FederationError::NoSuchGroup => ErrCode::NotFound,
            FederationError::MessageNotFromHub
            | FederationError::WelcomeNotFromHub
            | FederationError::NotTheUsersServer
            | FederationError::NoMemberOnServer => ErrCode::Forbidden,
            FederationError::NoLocalMember => ErrCode::NotMember,
            FederationError::Store(_) | FederationError::Internal(_) => ErrCode::Unknown,
        }
    }

    fn status(&self) -> u16 {
        match self {
            FederationError::BadTransaction(e) => e.http_status(),
            other => other.errcode().http_status(),
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            FederationError::TransactionInFlight { retry_after_ms } => retry_after(*retry_after_ms),
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            FederationError::Store(e) => log_store(e),
            FederationError::Internal(detail) => log_internal(detail),
            _ => {}
        }
    }
}

impl ApiError {
    /// The failure inside, as it reads on the wire.
    fn wire(&self) -> &dyn OnTheWire {
        match self {
            ApiError::Request(e) => e,
            ApiError::Accounts(e) => e,
            ApiError::Keys(e) => e,
            ApiError::Hub(e) => e,
            ApiError::Delivery(e) => e,
            ApiError::Federation(e) => e,
        }
    }

    /// The protocol's error code.
    pub fn errcode(&self) -> ErrCode {
        self.wire().errcode()
    }

    /// The fields the body carries besides `errcode` and `error`.
    pub fn extra_fields(&self) -> Map<String, Value> {
        self.wire().extra_fields()
    }
}

/// The HTTP status of `error`.
pub fn status(error: &ApiError) -> StatusCode {
    StatusCode::from_u16(error.wire().status()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// `{errcode, error, …}` of a failure.
fn body_of(e: &dyn OnTheWire) -> ErrorBody {
    ErrorBody {
        errcode: e.errcode().as_str().to_owned(),
        error: e.to_string(),
        extra: e.extra_fields(),
    }
}

/// A delivery refusal as a WebSocket `error` frame spells it (handed to
/// [`crate::delivery::websocket::run_socket`]).
pub fn delivery_refusal(e: &DeliveryError) -> ErrorBody {
    body_of(e)
}

/// A refused event of a federation transaction, as its result spells it (handed to
/// [`crate::federation::inbound::receive_transaction`]).
pub fn event_refusal(e: &FederationError) -> ErrorBody {
    body_of(e)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(&self);
        let wire = self.wire();
        if let Some(body) = wire.relayed_body() {
            return (status, axum::Json(body.clone())).into_response();
        }
        wire.log_fault();
        let mut body = wire.extra_fields();
        body.insert("errcode".into(), json!(wire.errcode().as_str()));
        body.insert("error".into(), json!(wire.to_string()));
        (status, axum::Json(Value::Object(body))).into_response()
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_protocols_with_three_exceptions() {
        let hub = |e: HubError| status(&e.into());
        assert_eq!(hub(HubError::StaleEpoch { current_epoch: 3 }), 409);
        assert_eq!(status(&FederationError::NoLocalMember.into()), 403);
        assert_eq!(status(&RequestError::Timeout.into()), 408);
        assert_eq!(status(&RequestError::Internal("x".into()).into()), 500);
        assert_eq!(status(&RequestError::UnrecognizedPath.into()), 404);
        assert_eq!(status(&RequestError::UnrecognizedMethod.into()), 405);
        let relayed = RemoteError::Verdict {
            status: 429,
            body: json!({}),
        };
        assert_eq!(hub(relayed.into()), 429);
        assert_eq!(ErrCode::Unknown.http_status(), 500);
    }
}
