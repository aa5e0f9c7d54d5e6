//! HTTP plumbing below the typed routes: reading a body within its limit and time, the JSON
//! body rules, the client's address, and the answer for a wrong method.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::errors::RequestError;
use crate::state::AppState;

/// Answer for a known path with the wrong method: 405 `P_UNRECOGNIZED`.
pub async fn wrong_method() -> RequestError {
    RequestError::UnrecognizedMethod
}

/// Reads a request body of at most `limit` bytes (413 past it, refused unread when the
/// declared `Content-Length` says so) within `limits.body_read_timeout_ms` (408 `P_TIMEOUT`
/// past it: a client trickling its body holds no connection for long).
pub async fn read_body(
    req: Request,
    limit: usize,
    state: &AppState,
) -> Result<axum::body::Bytes, RequestError> {
    let declared_too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64);
    if declared_too_large {
        return Err(RequestError::TooLarge { limit });
    }
    let timeout = Duration::from_millis(state.config.limits.body_read_timeout_ms);
    match tokio::time::timeout(timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(RequestError::TooLarge { limit }),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// Parses a body by the rules of docs/protocol.md#wire-details: not JSON → `P_NOT_JSON`, wrong shape → `P_BAD_JSON`.
pub fn parse_json_body<T: DeserializeOwned>(
    bytes: &[u8],
    content_type_is_json: bool,
) -> Result<T, RequestError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if !content_type_is_json && bytes != b"{}" {
        return Err(RequestError::NotJson(
            "Content-Type must be application/json".into(),
        ));
    }
    // Anything but an object is refused first (serde would read a struct from an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => RequestError::BadJson("request body must be a JSON object".into()),
            Err(syntax) => RequestError::NotJson(syntax.to_string()),
        });
    }
    // One pass into `T`; only a failure is looked at again, to tell bad JSON from JSON of the
    // wrong shape.
    serde_json::from_slice(bytes).map_err(|e| {
        let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => value,
            Err(syntax) => return RequestError::NotJson(syntax.to_string()),
        };
        if value.is_object() {
            RequestError::BadJson(e.to_string())
        } else {
            RequestError::BadJson("request body must be a JSON object".into())
        }
    })
}

/// The client's IP address (the TCP peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client's address: the TCP peer recorded in the request's extensions, or what a
    /// trusted proxy says in `X-Forwarded-For`.
    pub fn of(
        state: &AppState,
        headers: &HeaderMap,
        extensions: &axum::http::Extensions,
    ) -> Result<IpAddr, RequestError> {
        let peer = extensions
            .get::<ConnectInfo<crate::connections::PeerAddr>>()
            .map(|ci| ci.0 .0.ip())
            .ok_or_else(|| RequestError::Internal("no peer address on request".into()))?;
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(crate::client_address::client_address(
            peer,
            forwarded,
            &state.trusted_proxies,
        ))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = RequestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, RequestError> {
        ClientIp::of(state, &parts.headers, &parts.extensions).map(ClientIp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Shape {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn body_rules_distinguish_not_json_from_bad_json() {
        assert!(parse_json_body::<Shape>(b"{\"name\":\"x\"}", true).is_ok());
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":", true),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":\"x\"}", false),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":5}", true),
            Err(RequestError::BadJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"[1]", true),
            Err(RequestError::BadJson(_))
        ));
        // serde reads a struct from an array too; the protocol wants an object.
        assert!(matches!(
            parse_json_body::<Shape>(b" [\"x\"]", true),
            Err(RequestError::BadJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":\"x\"} trailing", true),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"", true),
            Err(RequestError::BadJson(_))
        ));
    }
}
