//! HTTP plumbing shared by every endpoint: typed routing from the endpoint declarations,
//! the JSON body extractor, authentication, client IPs and the fallbacks.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use parley_client_api::{Endpoint, Method, RateLimitClass};
use serde::de::DeserializeOwned;

use crate::accounts::session::{bearer_token, check_session};
use crate::accounts::tokens::Claims;
use crate::accounts::{authenticate, Authed};
use crate::error::Error;
use crate::state::AppState;

/// Adds endpoint `E` to `router`, routed by its declared method and path, with its declared
/// rate limit applied before the handler runs.
pub fn route<E, H, T>(router: Router<AppState>, state: &AppState, handler: H) -> Router<AppState>
where
    E: Endpoint,
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let mut method_router: MethodRouter<AppState> = match E::METHOD {
        Method::Get => get(handler),
        Method::Post => post(handler),
        Method::Put => put(handler),
        Method::Delete => delete(handler),
    };
    let limit = BodyLimit(state.config.body_limit(E::PATH));
    method_router = method_router.layer(axum::Extension(limit));
    if E::RATE_LIMIT != RateLimitClass::None {
        let class = E::RATE_LIMIT;
        method_router = method_router.route_layer(middleware::from_fn_with_state(
            state.clone(),
            move |state: axum::extract::State<AppState>,
                  ip: ClientIp,
                  mut req: Request,
                  next: Next| async move {
                let (key, claims) = rate_key(class, &state, req.headers(), ip.0);
                state.check_rate(class, key)?;
                if let Some(claims) = claims {
                    // The handler's authentication reuses the verified token.
                    req.extensions_mut().insert(VerifiedToken(claims));
                }
                Ok::<Response, Error>(next.run(req).await)
            },
        ));
    }
    router.route(E::PATH, method_router)
}

/// Whom a request is counted against: the client IP for login and registration, the user
/// (from a validly signed token; the handler still checks the session) for everything else.
/// Also returns the token's verified claims, if any.
fn rate_key(
    class: RateLimitClass,
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
) -> (String, Option<Claims>) {
    let ip = crate::client_address::address_bucket(ip);
    if matches!(
        class,
        RateLimitClass::Login | RateLimitClass::Register | RateLimitClass::Refresh
    ) {
        return (format!("ip:{ip}"), None);
    }
    let claims = bearer_token(headers)
        .ok()
        .and_then(|t| state.tokens.verify(t));
    match claims {
        Some(claims) => (format!("user:{}", claims.sub), Some(claims)),
        None => (format!("ip:{ip}"), None),
    }
}

/// Claims of the request's access token, verified by the rate limiter before the handler.
#[derive(Debug, Clone)]
struct VerifiedToken(Claims);

/// Answer for a known path with the wrong method: 405 `P_UNRECOGNIZED`.
pub async fn wrong_method() -> Error {
    Error::UnrecognizedMethod
}

/// The largest body an endpoint accepts, attached to its route.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON request body: `Content-Type: application/json`, at most the configured size,
/// parsed into `T`. An empty body reads as `{}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(state.config.limits.max_request_bytes, |l| l.0);
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        let bytes = read_body(req, limit, state).await?;
        parse_json_body(&bytes, is_json).map(ApiJson)
    }
}

/// Reads a request body of at most `limit` bytes (413 past it, refused unread when the
/// declared `Content-Length` says so) within `limits.body_read_timeout_ms` (408 `P_TIMEOUT`
/// past it: a client trickling its body holds no connection for long).
pub async fn read_body(
    req: Request,
    limit: usize,
    state: &AppState,
) -> Result<axum::body::Bytes, Error> {
    let declared_too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64);
    if declared_too_large {
        return Err(Error::TooLarge { limit });
    }
    let timeout = Duration::from_millis(state.config.limits.body_read_timeout_ms);
    match tokio::time::timeout(timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(Error::TooLarge { limit }),
        Err(_) => Err(Error::Timeout),
    }
}

/// Parses a body by the rules of DESIGN §3.4: not JSON → `P_NOT_JSON`, wrong shape → `P_BAD_JSON`.
pub fn parse_json_body<T: DeserializeOwned>(
    bytes: &[u8],
    content_type_is_json: bool,
) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if !content_type_is_json && bytes != b"{}" {
        return Err(Error::NotJson(
            "Content-Type must be application/json".into(),
        ));
    }
    // Anything but an object is refused first (serde would read a struct from an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => Error::BadJson("request body must be a JSON object".into()),
            Err(syntax) => Error::NotJson(syntax.to_string()),
        });
    }
    // One pass into `T`; only a failure is looked at again, to tell bad JSON from JSON of the
    // wrong shape.
    serde_json::from_slice(bytes).map_err(|e| {
        let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => value,
            Err(syntax) => return Error::NotJson(syntax.to_string()),
        };
        if value.is_object() {
            Error::BadJson(e.to_string())
        } else {
            Error::BadJson("request body must be a JSON object".into())
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
    ) -> Result<IpAddr, Error> {
        let peer = extensions
            .get::<ConnectInfo<crate::connections::PeerAddr>>()
            .map(|ci| ci.0 .0.ip())
            .ok_or_else(|| Error::Internal("no peer address on request".into()))?;
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(crate::client_address::client_address(
            peer,
            forwarded,
            &state.trusted_proxies,
        ))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        ClientIp::of(state, &parts.headers, &parts.extensions).map(ClientIp)
    }
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let result = match parts.extensions.get::<VerifiedToken>() {
            Some(VerifiedToken(claims)) => check_session(claims, state).await,
            None => authenticate(&parts.headers, state).await,
        };
        if matches!(result, Err(Error::MissingToken | Error::UnknownToken)) {
            state
                .metrics
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
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
            Err(Error::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":\"x\"}", false),
            Err(Error::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":5}", true),
            Err(Error::BadJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"[1]", true),
            Err(Error::BadJson(_))
        ));
        // serde reads a struct from an array too; the protocol wants an object.
        assert!(matches!(
            parse_json_body::<Shape>(b" [\"x\"]", true),
            Err(Error::BadJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"{\"name\":\"x\"} trailing", true),
            Err(Error::NotJson(_))
        ));
        assert!(matches!(
            parse_json_body::<Shape>(b"", true),
            Err(Error::BadJson(_))
        ));
    }
}

/// Query parameters parsed into `T`; a malformed query is 400 `P_BAD_JSON`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| Error::BadJson(format!("query string: {e}")))
    }
}

/// Path parameters parsed into `T`; a parameter that does not percent-decode to UTF-8 (or
/// has the wrong shape) is 400 `P_BAD_JSON` instead of axum's plain-text rejection.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Error::BadJson(format!("path: {}", e.body_text())))
    }
}
