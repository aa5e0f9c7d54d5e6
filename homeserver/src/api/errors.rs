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
use crate::admin::AdminError;
use crate::delivery::error::DeliveryError;
use crate::federation::error::FederationError;
use crate::federation::remote_errors::RemoteError;
use crate::hub::error::HubError;
use crate::keys::KeysError;
use crate::media::MediaError;
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
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Media(#[from] MediaError),
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
    /// A path parameter naming a resource (group, user, device) outside its id's grammar:
    /// nothing can have that name.
    #[error("{0}")]
    NotFoundInPath(String),
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
    /// An admin endpoint called with the token of a user who is not an admin.
    #[error("this endpoint is for server admins")]
    NotAdmin,
    /// A metrics scrape without the configured bearer token.
    #[error("a valid metrics bearer token is required")]
    MetricsUnauthorized,
    /// The server cannot serve now (the readiness check): draining, the database does not
    /// answer, or migrations are pending.
    #[error("{0}")]
    NotReady(String),
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
            RequestError::NotFoundInPath(_) => ErrCode::NotFound,
            RequestError::NotReady(_) => ErrCode::NotReady,
            RequestError::MetricsUnauthorized => ErrCode::Unauthorized,
            RequestError::TooLarge { .. } => ErrCode::TooLarge,
            RequestError::Timeout => ErrCode::Timeout,
            RequestError::LimitExceeded { .. } => ErrCode::LimitExceeded,
            RequestError::FederationDisabled
            | RequestError::OriginNotAllowed(_)
            | RequestError::OriginMismatch
            | RequestError::SenderNotFromOrigin
            | RequestError::NotAdmin => ErrCode::Forbidden,
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
            | AccountError::InvalidChallenge
            | AccountError::NotYourDevice => ErrCode::Forbidden,
            AccountError::InvalidUsername(_) => ErrCode::InvalidUsername,
            AccountError::WeakPassword { .. } => ErrCode::WeakPassword,
            AccountError::PasswordLength { .. }
            | AccountError::BadLoginField(_)
            | AccountError::PasswordTooLong { .. }
            | AccountError::DeviceNameTooLong { .. } => ErrCode::BadJson,
            AccountError::UserInUse => ErrCode::UserInUse,
            AccountError::UserDeactivated => ErrCode::UserDeactivated,
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
            HubError::NoSuchGroup | HubError::NotTheHub => ErrCode::NotFound,
            HubError::InvalidMessage(_) => ErrCode::InvalidMessage,
            HubError::TooLarge { .. } => ErrCode::TooLarge,
            HubError::FederationNotAllowed(_) => ErrCode::Forbidden,
            HubError::NotMember => ErrCode::NotMember,
            HubError::NotAdmin(_) => ErrCode::NotAdmin,
            HubError::JoinRefused(_) => ErrCode::JoinRefused,
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

impl OnTheWire for AdminError {
    fn errcode(&self) -> ErrCode {
        match self {
            AdminError::NotFound(_) => ErrCode::NotFound,
            AdminError::NotOnYourself(_) => ErrCode::Forbidden,
            AdminError::BadRequest(_) => ErrCode::BadJson,
            AdminError::Account(e) => e.errcode(),
            AdminError::Store(_) => ErrCode::Unknown,
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            AdminError::Account(e) => e.extra_fields(),
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            AdminError::Account(e) => e.log_fault(),
            AdminError::Store(e) => log_store(e),
            _ => {}
        }
    }
}

impl OnTheWire for MediaError {
    fn errcode(&self) -> ErrCode {
        match self {
            MediaError::TooLarge { .. } => ErrCode::TooLarge,
            MediaError::QuotaExceeded { .. } => ErrCode::QuotaExceeded,
            MediaError::TooManyUploads => ErrCode::LimitExceeded,
            MediaError::Timeout => ErrCode::Timeout,
            MediaError::NotFound => ErrCode::NotFound,
            MediaError::RangeNotSatisfiable { .. } => ErrCode::RangeNotSatisfiable,
            MediaError::Remote(e) => e.errcode(),
            MediaError::Store(_) | MediaError::Io(_) => ErrCode::Unknown,
        }
    }

    fn status(&self) -> u16 {
        match self {
            MediaError::Remote(e) => e.status(),
            other => other.errcode().http_status(),
        }
    }

    fn extra_fields(&self) -> Map<String, Value> {
        match self {
            // Uploads finish in seconds; a client retries after one.
            MediaError::TooManyUploads => retry_after(1000),
            MediaError::RangeNotSatisfiable { size } => {
                Map::from_iter([("size".to_owned(), json!(size))])
            }
            _ => Map::new(),
        }
    }

    fn log_fault(&self) {
        match self {
            MediaError::Store(e) => log_store(e),
            MediaError::Io(detail) => log_internal(detail),
            _ => {}
        }
    }

    fn relayed_body(&self) -> Option<&Value> {
        match self {
            MediaError::Remote(e) => e.relayed_body(),
            _ => None,
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
            ApiError::Admin(e) => e,
            ApiError::Media(e) => e,
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

    /// Every variant of every error with the errcode docs/protocol.md#errcodes gives it, its
    /// status, its `error` text and its extra fields. The exhaustive `match`es (no `_ =>`) of
    /// [`OnTheWire::errcode`] are the real guard: a new variant does not compile until it has
    /// an errcode. This table checks each is the documented one; add a new variant here too.
    #[test]
    fn every_error_variant_answers_its_documented_errcode() {
        use crate::ids::NotAGroupId;
        let store = || StoreError::Pool("down".into());
        let fed = || parley_federation::Error::MissingAuthorization;
        let fed_text = fed().to_string();
        let bad_txn = || parley_federation::Error::InvalidTxnId;
        let bad_txn_text = bad_txn().to_string();
        let none = || json!({});
        #[rustfmt::skip]
        let table: Vec<(ApiError, &str, u16, &str, Value)> = vec![
            // The API's own failures.
            (RequestError::NotJson("x".into()).into(), "P_NOT_JSON", 400, "request body is not JSON: x", none()),
            (RequestError::BadJson("x".into()).into(), "P_BAD_JSON", 400, "x", none()),
            (RequestError::UnrecognizedPath.into(), "P_UNRECOGNIZED", 404, "unrecognized request path", none()),
            (RequestError::NotFoundInPath("x".into()).into(), "P_NOT_FOUND", 404, "x", none()),
            (RequestError::NotReady("x".into()).into(), "P_NOT_READY", 503, "x", none()),
            (RequestError::MetricsUnauthorized.into(), "P_UNAUTHORIZED", 401, "a valid metrics bearer token is required", none()),
            (RequestError::UnrecognizedMethod.into(), "P_UNRECOGNIZED", 405, "method not allowed on this path", none()),
            (RequestError::TooLarge { limit: 9 }.into(), "P_TOO_LARGE", 413, "request body is larger than 9 bytes", none()),
            (RequestError::Timeout.into(), "P_TIMEOUT", 408, "the request body did not arrive in time", none()),
            (RequestError::LimitExceeded { retry_after_ms: 7 }.into(), "P_LIMIT_EXCEEDED", 429, "too many requests", json!({"retry_after_ms": 7})),
            (RequestError::FederationDisabled.into(), "P_FORBIDDEN", 403, "federation is disabled on this server", none()),
            (RequestError::OriginNotAllowed("b.example".into()).into(), "P_FORBIDDEN", 403, "b.example may not federate with this server", none()),
            (RequestError::OriginMismatch.into(), "P_FORBIDDEN", 403, "body origin differs from the signed origin", none()),
            (RequestError::SenderNotFromOrigin.into(), "P_FORBIDDEN", 403, "the sender's server is not the requesting server", none()),
            (RequestError::FederationRequest(fed()).into(), "P_UNAUTHORIZED", 401, &fed_text, none()),
            (RequestError::Internal("detail".into()).into(), "P_UNKNOWN", 500, "internal error", none()),
            // Accounts.
            (AccountError::RegistrationClosed.into(), "P_FORBIDDEN", 403, "registration is closed", none()),
            (AccountError::RegistrationTokenRequired.into(), "P_FORBIDDEN", 403, "a valid registration_token is required", none()),
            (AccountError::InvalidUsername("x".into()).into(), "P_INVALID_USERNAME", 400, "x", none()),
            (AccountError::WeakPassword { min: 8 }.into(), "P_WEAK_PASSWORD", 400, "password must have at least 8 characters", none()),
            (AccountError::PasswordLength { max: 1024 }.into(), "P_BAD_JSON", 400, "password must be 1..=1024 bytes", none()),
            (AccountError::PasswordTooLong { max: 1024 }.into(), "P_BAD_JSON", 400, "password is longer than 1024 bytes", none()),
            (AccountError::DeviceNameTooLong { max: 256 }.into(), "P_BAD_JSON", 400, "device_name is longer than 256 bytes", none()),
            (AccountError::UserInUse.into(), "P_USER_IN_USE", 409, "user id is already taken", none()),
            (AccountError::InvalidCredentials.into(), "P_FORBIDDEN", 403, "invalid username or password", none()),
            (AccountError::InvalidChallenge.into(), "P_FORBIDDEN", 403, "invalid or expired challenge, or a signature that does not verify", none()),
            (AccountError::BadLoginField("challenge is not base64".into()).into(), "P_BAD_JSON", 400, "challenge is not base64", none()),
            (AccountError::NotYourDevice.into(), "P_FORBIDDEN", 403, "device_id is not one of this user's devices", none()),
            (AccountError::NoSuchDevice.into(), "P_NOT_FOUND", 404, "no such device", none()),
            (AccountError::MissingToken.into(), "P_MISSING_TOKEN", 401, "missing access token", none()),
            (AccountError::UnknownToken.into(), "P_UNKNOWN_TOKEN", 401, "unknown or expired access token", none()),
            (AccountError::RateLimited { retry_after_ms: 5 }.into(), "P_LIMIT_EXCEEDED", 429, "too many requests", json!({"retry_after_ms": 5})),
            (AccountError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            (AccountError::Internal("detail".into()).into(), "P_UNKNOWN", 500, "internal error", none()),
            // Keys.
            (KeysError::NotOwnDevice.into(), "P_FORBIDDEN", 403, "a device binds only its own signature key", none()),
            (KeysError::BadSignatureKey.into(), "P_BAD_JSON", 400, "signature_key must be standard base64 of 32 bytes", none()),
            (KeysError::SignatureKeyMismatch.into(), "P_SIGNATURE_KEY_MISMATCH", 409, "a different signature key is already bound to this device", none()),
            (KeysError::DeviceGone.into(), "P_UNKNOWN_TOKEN", 401, "unknown or expired access token", none()),
            (KeysError::NoSuchUser.into(), "P_NOT_FOUND", 404, "no such user", none()),
            (KeysError::TooManyKeyPackages { limit: 100 }.into(), "P_TOO_LARGE", 413, "request body is larger than 100 bytes", none()),
            (KeysError::InvalidKeyPackage { index: 2, reason: "expired".into() }.into(), "P_INVALID_KEY_PACKAGE", 400, "key package 2 is invalid: expired", json!({"index": 2})),
            (KeysError::TooManyUsers { max: 100 }.into(), "P_BAD_JSON", 400, "at most 100 user_ids per claim", none()),
            (KeysError::WrongUserAnswered("b.example".into()).into(), "P_UNREACHABLE_SERVER", 502, "b.example answered for another user", none()),
            (KeysError::Remote(RemoteError::Unreachable("b.example is down".into())).into(), "P_UNREACHABLE_SERVER", 502, "b.example is down", none()),
            (KeysError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            // Hub.
            (HubError::NoSuchGroup.into(), "P_NOT_FOUND", 404, "no such group at this hub", none()),
            (HubError::NotTheHub.into(), "P_NOT_FOUND", 404, "this server is not the group's hub", none()),
            (HubError::InvalidMessage("x".into()).into(), "P_INVALID_MESSAGE", 400, "invalid MLS message: x", none()),
            (HubError::TooLarge { limit: 3 }.into(), "P_TOO_LARGE", 413, "request body is larger than 3 bytes", none()),
            (HubError::FederationNotAllowed("c.example".into()).into(), "P_FORBIDDEN", 403, "federation with c.example is not allowed", none()),
            (HubError::NotMember.into(), "P_NOT_MEMBER", 403, "the sending device is not a member of this group", none()),
            (HubError::NotAdmin(parley_client_api::roles::RoleError::ChangesSettings).into(), "P_NOT_ADMIN", 403, "only an admin may change the group's roles or settings", none()),
            (HubError::StaleEpoch { current_epoch: 7 }.into(), "P_STALE_EPOCH", 409, "the group is at epoch 7", json!({"current_epoch": 7})),
            (HubError::Remote(RemoteError::Unreachable("b.example answered 500".into())).into(), "P_UNREACHABLE_SERVER", 502, "b.example answered 500", none()),
            (HubError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            (HubError::Internal("detail".into()).into(), "P_UNKNOWN", 500, "internal error", none()),
            // Delivery.
            (DeliveryError::BadSince.into(), "P_BAD_JSON", 400, "since is not a token this server issued", none()),
            (DeliveryError::SessionEnded.into(), "P_UNKNOWN_TOKEN", 401, "unknown or expired access token", none()),
            (DeliveryError::NoAuthFrame.into(), "P_MISSING_TOKEN", 401, "missing access token", none()),
            (DeliveryError::Auth(AccountError::UnknownToken).into(), "P_UNKNOWN_TOKEN", 401, "unknown or expired access token", none()),
            (DeliveryError::NoSuchWelcome.into(), "P_NOT_FOUND", 404, "no such welcome", none()),
            (DeliveryError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            // Federation.
            (FederationError::BadTransaction(bad_txn()).into(), "P_BAD_JSON", 400, &bad_txn_text, none()),
            (FederationError::TransactionInFlight { retry_after_ms: 1000 }.into(), "P_LIMIT_EXCEEDED", 429, "too many requests", json!({"retry_after_ms": 1000})),
            (FederationError::BadField("ts is out of range".into()).into(), "P_BAD_JSON", 400, "ts is out of range", none()),
            (FederationError::InvalidMessage("welcome is not base64".into()).into(), "P_INVALID_MESSAGE", 400, "invalid MLS message: welcome is not base64", none()),
            (FederationError::TooLarge { limit: 5 }.into(), "P_TOO_LARGE", 413, "request body is larger than 5 bytes", none()),
            (FederationError::NotAGroupId(NotAGroupId).into(), "P_NOT_FOUND", 404, "not a group id", none()),
            (FederationError::NoSuchGroup.into(), "P_NOT_FOUND", 404, "no such group at this hub", none()),
            (FederationError::MessageNotFromHub.into(), "P_FORBIDDEN", 403, "only the group's hub relays its messages", none()),
            (FederationError::WelcomeNotFromHub.into(), "P_FORBIDDEN", 403, "only the group's hub relays its welcomes", none()),
            (FederationError::NotTheUsersServer.into(), "P_FORBIDDEN", 403, "a server may only update its own users' devices", none()),
            (FederationError::NoMemberOnServer.into(), "P_FORBIDDEN", 403, "the requesting server has no member in this group", none()),
            (FederationError::NoLocalMember.into(), "P_NOT_MEMBER", 403, "no device of this server is a member of this group", none()),
            (FederationError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            (FederationError::Internal("detail".into()).into(), "P_UNKNOWN", 500, "internal error", none()),
            // Media.
            (MediaError::TooLarge { limit: 9 }.into(), "P_TOO_LARGE", 413, "media is larger than 9 bytes", none()),
            (MediaError::QuotaExceeded { quota: 10, used: 8 }.into(), "P_QUOTA_EXCEEDED", 413, "the upload would exceed the media quota of 10 bytes (8 used)", none()),
            (MediaError::TooManyUploads.into(), "P_LIMIT_EXCEEDED", 429, "too many uploads at once", json!({"retry_after_ms": 1000})),
            (MediaError::Timeout.into(), "P_TIMEOUT", 408, "the upload did not arrive in time", none()),
            (MediaError::NotFound.into(), "P_NOT_FOUND", 404, "no such media", none()),
            (MediaError::RangeNotSatisfiable { size: 5 }.into(), "P_RANGE_NOT_SATISFIABLE", 416, "range not satisfiable: the media has 5 bytes", json!({"size": 5})),
            (MediaError::Remote(RemoteError::Unreachable("b.example is down".into())).into(), "P_UNREACHABLE_SERVER", 502, "b.example is down", none()),
            (MediaError::Store(store()).into(), "P_UNKNOWN", 500, "storage failure", none()),
            (MediaError::Io("disk".into()).into(), "P_UNKNOWN", 500, "internal error", none()),
        ];
        for (error, errcode, code, text, extra) in table {
            let described = format!("{error:?}");
            assert_eq!(error.errcode().as_str(), errcode, "{described}");
            assert_eq!(status(&error), code, "{described}");
            assert_eq!(error.to_string(), text, "{described}");
            assert_eq!(Value::Object(error.extra_fields()), extra, "{described}");
        }
        // Another server's verdict is answered with its own status and the body rebuilt from it.
        let verdict =
            json!({"errcode": "P_STALE_EPOCH", "error": "b.example: moved", "current_epoch": 4});
        let relayed: ApiError = HubError::Remote(RemoteError::Verdict {
            status: 409,
            body: verdict.clone(),
        })
        .into();
        assert_eq!(status(&relayed), 409);
        assert_eq!(relayed.wire().relayed_body(), Some(&verdict));
        assert_eq!(relayed.to_string(), "b.example: moved");
    }
}
