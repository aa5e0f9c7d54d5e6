//! Errors as HTTP answers: the one place a service's [`Error`] becomes a status and a body
//! `{errcode, error, …}`. Statuses are the protocol's ([`parley_client_api::ErrCode::http_status`]), except a
//! known path with the wrong method (405), another server's verdict passed on (its status),
//! and a federation authentication failure (the federation crate's status).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::Error;

/// The HTTP status of `error`.
pub fn status(error: &Error) -> StatusCode {
    let code = match error {
        Error::UnrecognizedMethod => 405,
        Error::Relayed { status, .. } => *status,
        Error::Federation(e) => e.http_status(),
        other => other.errcode().http_status(),
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        if let Error::Relayed { body, .. } = &self {
            return (status, axum::Json(body.clone())).into_response();
        }
        match &self {
            Error::Store(e) => tracing::error!(error = %e, "storage failure"),
            Error::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        let mut body = self.extra_fields();
        body.insert("errcode".into(), json!(self.errcode().as_str()));
        body.insert("error".into(), json!(self.to_string()));
        (status, axum::Json(Value::Object(body))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_client_api::ErrCode;

    #[test]
    fn statuses_are_the_protocols_with_three_exceptions() {
        assert_eq!(status(&Error::StaleEpoch { current_epoch: 3 }), 409);
        assert_eq!(status(&Error::NoLocalMember), 403);
        assert_eq!(status(&Error::Timeout), 408);
        assert_eq!(status(&Error::Internal("x".into())), 500);
        assert_eq!(status(&Error::UnrecognizedPath), 404);
        assert_eq!(status(&Error::UnrecognizedMethod), 405);
        let relayed = Error::Relayed {
            status: 429,
            body: json!({}),
        };
        assert_eq!(status(&relayed), 429);
        assert_eq!(ErrCode::Unknown.http_status(), 500);
    }
}
