//! Typed routing: an endpoint's declaration ([`Endpoint`]) decides its method, path,
//! authentication, rate limit and body limit, and the router accepts only a handler taking
//! the declared path parameters, request and caller and returning the declared response —
//! a mismatch does not compile.
//!
//! Every request goes through the same steps, in the protocol's order: for a client endpoint
//! the rate limit, the access token, the path parameters, then the body (or query); for a
//! federation endpoint the path parameters, then the signature (which covers the body).

use std::future::Future;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use parley_client_api::endpoint::{auth, AuthScheme};
use parley_client_api::ids::IdError;
use parley_client_api::{Endpoint, EndpointInfo, Method, RateLimitClass};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::{ApiError, ApiResult, RequestError};
use super::extract::{parse_json_body, read_body, ClientIp};
use super::federation::auth::Federated;
use crate::accounts::error::AccountError;
use crate::accounts::session::{bearer_token, check_session};
use crate::accounts::{authenticate, Authed};
use crate::state::AppState;

/// A router that records the declaration of every endpoint it serves.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<EndpointInfo>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Serves endpoint `E` with `handler`.
    pub fn serve<E, F, Fut>(mut self, handler: F) -> Routes
    where
        E: Endpoint,
        E::Auth: Authenticate,
        F: Fn(AppState, <E::Auth as Authenticate>::Caller, E::Path, E::Request) -> Fut
            + Clone
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = ApiResult<E::Response>> + Send + 'static,
    {
        let serve = move |State(state): State<AppState>, req: Request| {
            let handler = handler.clone();
            let started = std::time::Instant::now();
            let answered = async move {
                let declared = Declared {
                    rate: E::RATE_LIMIT,
                    body_limit: state.config.body_limit(E::BODY_LIMIT),
                    has_body: E::METHOD.has_body(),
                    has_path_params: E::PATH.contains('{'),
                };
                let accepted =
                    <E::Auth as Authenticate>::accept::<E::Path>(req, &state, declared).await?;
                let request: E::Request = if E::METHOD.has_body() {
                    accepted.body.parse()?
                } else {
                    parse_query(accepted.query.as_deref())?
                };
                let response = handler(state, accepted.caller, accepted.path, request).await?;
                Ok::<_, ApiError>(Json(response))
            };
            async move {
                let answer = answered.await;
                let status = match &answer {
                    Ok(_) => 200,
                    Err(e) => super::errors::status(e).as_u16(),
                };
                crate::metrics::request(
                    EndpointInfo::of::<E>().name,
                    E::METHOD.as_str(),
                    status,
                    started.elapsed(),
                );
                answer
            }
        };
        self.router = self.router.route(E::PATH, method_router(E::METHOD, serve));
        self.table.push(EndpointInfo::of::<E>());
        self
    }

    /// Serves endpoint `E`, whose body or answer is raw bytes (media), with `handler`: it
    /// gets the request's headers and unread body past the same rate limit, authentication
    /// and path checks as every endpoint, and answers with a response of its own making.
    pub fn serve_bytes<E, F, Fut>(mut self, handler: F) -> Routes
    where
        E: Endpoint,
        E::Auth: AuthenticateUnread,
        F: Fn(AppState, <E::Auth as Authenticate>::Caller, E::Path, RawRequest) -> Fut
            + Clone
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = ApiResult<axum::response::Response>> + Send + 'static,
    {
        let serve = move |State(state): State<AppState>, req: Request| {
            let handler = handler.clone();
            let started = std::time::Instant::now();
            async move {
                let declared = Declared {
                    rate: E::RATE_LIMIT,
                    body_limit: state.config.body_limit(E::BODY_LIMIT),
                    has_body: E::METHOD.has_body(),
                    has_path_params: E::PATH.contains('{'),
                };
                let headers = req.headers().clone();
                let answer = match <E::Auth as AuthenticateUnread>::accept_unread::<E::Path>(
                    req, &state, declared,
                )
                .await
                {
                    Ok((caller, path, body)) => {
                        handler(state, caller, path, RawRequest { headers, body }).await
                    }
                    Err(e) => Err(e),
                };
                let response = match answer {
                    Ok(response) => response,
                    Err(e) => axum::response::IntoResponse::into_response(e),
                };
                crate::metrics::request(
                    EndpointInfo::of::<E>().name,
                    E::METHOD.as_str(),
                    response.status().as_u16(),
                    started.elapsed(),
                );
                response
            }
        };
        self.router = self.router.route(E::PATH, method_router(E::METHOD, serve));
        self.table.push(EndpointInfo::of::<E>());
        self
    }

    /// Serves endpoint `E` with a handler that is not JSON in, JSON out (the WebSocket
    /// upgrade): the declaration still documents it.
    pub fn serve_raw<E: Endpoint>(mut self, method_router: MethodRouter<AppState>) -> Routes {
        self.router = self.router.route(E::PATH, method_router);
        self.table.push(EndpointInfo::of::<E>());
        self
    }

    /// Both sets of routes.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The declarations served, in the order added.
    pub fn table(&self) -> &[EndpointInfo] {
        &self.table
    }

    /// The axum router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

fn method_router<H, T>(method: Method, handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    match method {
        Method::Get => get(handler),
        Method::Post => post(handler),
        Method::Put => put(handler),
        Method::Delete => delete(handler),
    }
}

/// A request whose body the handler reads itself (media).
pub struct RawRequest {
    /// The request's headers (`Content-Length`, `Range`).
    pub headers: HeaderMap,
    /// The body, unread.
    pub body: axum::body::Body,
}

/// Authentication for endpoints whose handler reads the body itself ([`Routes::serve_bytes`]).
pub trait AuthenticateUnread: Authenticate {
    /// Rate-limits and authenticates the request and parses its path, leaving the body
    /// unread.
    fn accept_unread<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> impl Future<Output = Result<(Self::Caller, P, axum::body::Body), ApiError>> + Send;
}

impl AuthenticateUnread for auth::AccessToken {
    async fn accept_unread<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<(Authed, P, axum::body::Body), ApiError> {
        let (mut parts, body) = req.into_parts();
        let caller = client_caller(state, declared, &parts).await?;
        let path = path_params(&mut parts, declared.has_path_params).await?;
        Ok((caller, path, body))
    }
}

impl AuthenticateUnread for auth::ServerSignature {
    /// The signature covers the body, so it is read (within the federation limit) and
    /// verified; the handler gets an empty one. Meant for GETs.
    async fn accept_unread<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<(Origin, P, axum::body::Body), ApiError> {
        let accepted = Self::accept::<P>(req, state, declared).await?;
        Ok((accepted.caller, accepted.path, axum::body::Body::empty()))
    }
}

/// A request past authentication, with its path parameters and unparsed request.
pub struct Accepted<C, P> {
    /// Who is calling.
    pub caller: C,
    /// The path parameters.
    pub path: P,
    /// The query string.
    pub query: Option<String>,
    /// The body, read but not parsed.
    pub body: Body,
}

/// A request body, read within its limit.
pub enum Body {
    /// A client body, and whether it declared `Content-Type: application/json`.
    Client {
        bytes: axum::body::Bytes,
        is_json: bool,
    },
    /// A federation body, already parsed strictly (the signature covers it).
    Signed(Option<Value>),
    /// No body (GET and DELETE).
    None,
}

impl Body {
    /// The body as `T`: `P_NOT_JSON` for what is not JSON, `P_BAD_JSON` for the wrong shape.
    fn parse<T: DeserializeOwned>(self) -> Result<T, RequestError> {
        match self {
            Body::Client { bytes, is_json } => parse_json_body(&bytes, is_json),
            Body::Signed(body) => {
                serde_json::from_value(body.unwrap_or_else(|| Value::Object(Default::default())))
                    .map_err(|e| RequestError::BadJson(e.to_string()))
            }
            Body::None => parse_json_body(b"", true),
        }
    }
}

/// What the declaration says about reading a request.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// Rate-limit bucket.
    pub rate: RateLimitClass,
    /// Largest body, in bytes.
    pub body_limit: usize,
    /// Whether the request travels as a body (otherwise as the query).
    pub has_body: bool,
    /// Whether the path has `{name}` parameters.
    pub has_path_params: bool,
}

/// How a request authenticates under a scheme, and what the handler is told of the caller.
pub trait Authenticate: AuthScheme {
    /// The authenticated caller handed to the handler.
    type Caller: Send + 'static;

    /// Rate-limits, authenticates and reads the request, in the protocol's order.
    fn accept<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> impl Future<Output = Result<Accepted<Self::Caller, P>, ApiError>> + Send;
}

impl Authenticate for auth::Public {
    type Caller = ();

    async fn accept<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<Accepted<(), P>, ApiError> {
        let (mut parts, body) = req.into_parts();
        check_client_rate(state, declared.rate, &parts)?;
        let path = path_params(&mut parts, declared.has_path_params).await?;
        let (query, body) = read_client_body(parts, body, state, declared).await?;
        Ok(Accepted {
            caller: (),
            path,
            query,
            body,
        })
    }
}

impl Authenticate for auth::AccessToken {
    type Caller = Authed;

    async fn accept<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<Accepted<Authed, P>, ApiError> {
        let (mut parts, body) = req.into_parts();
        let caller = client_caller(state, declared, &parts).await?;
        let path = path_params(&mut parts, declared.has_path_params).await?;
        let (query, body) = read_client_body(parts, body, state, declared).await?;
        Ok(Accepted {
            caller,
            path,
            query,
            body,
        })
    }
}

/// The client a request's access token names, past the endpoint's rate limit.
async fn client_caller(
    state: &AppState,
    declared: Declared,
    parts: &Parts,
) -> Result<Authed, ApiError> {
    let verified = check_client_rate(state, declared.rate, parts)?;
    let result = match verified {
        // The rate limiter has verified the token already.
        Some(claims) => check_session(&claims, state).await,
        None => authenticate(&parts.headers, state).await,
    };
    match &result {
        Err(AccountError::MissingToken) => crate::metrics::auth_failure("missing_token"),
        Err(AccountError::UnknownToken) => crate::metrics::auth_failure("unknown_token"),
        _ => {}
    }
    Ok(result?)
}

/// An admin calling the admin API: an access token whose user has the admin flag.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Authed);

impl Authenticate for auth::AdminToken {
    type Caller = AdminCaller;

    async fn accept<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<Accepted<AdminCaller, P>, ApiError> {
        let accepted = auth::AccessToken::accept::<P>(req, state, declared).await?;
        // The flag is read from the database on every request, so that withdrawing it (from
        // any process) counts at once; admin requests are few.
        let is_admin = state
            .store
            .admin()
            .is_active_admin(&accepted.caller.user_id)
            .await
            .map_err(AccountError::from)?;
        if !is_admin {
            crate::metrics::auth_failure("not_admin");
            return Err(RequestError::NotAdmin.into());
        }
        Ok(Accepted {
            caller: AdminCaller(accepted.caller),
            path: accepted.path,
            query: accepted.query,
            body: accepted.body,
        })
    }
}

/// A verified federation request's origin server (lower case).
#[derive(Debug, Clone)]
pub struct Origin(pub String);

impl Authenticate for auth::ServerSignature {
    type Caller = Origin;

    async fn accept<P: DeserializeOwned + Send>(
        req: Request,
        state: &AppState,
        declared: Declared,
    ) -> Result<Accepted<Origin, P>, ApiError> {
        // Federation answers a malformed path before it looks at the signature; the signature
        // check applies the per-address and per-origin budgets and the federation body limit.
        let (mut parts, body) = req.into_parts();
        let path = path_params(&mut parts, declared.has_path_params).await?;
        let query = parts.uri.query().map(str::to_owned);
        let fed = Federated::authenticate(Request::from_parts(parts, body), state).await?;
        Ok(Accepted {
            caller: Origin(fed.origin),
            path,
            query,
            body: Body::Signed(fed.body),
        })
    }
}

/// Applies a client endpoint's rate limit: by client address for login, registration and
/// refresh, by user (from a validly signed token; the session is checked after) otherwise.
/// Returns the token's verified claims, if it looked at them.
fn check_client_rate(
    state: &AppState,
    class: RateLimitClass,
    parts: &Parts,
) -> Result<Option<crate::accounts::tokens::Claims>, RequestError> {
    if class == RateLimitClass::None {
        return Ok(None);
    }
    let ip = ClientIp::of(state, &parts.headers, &parts.extensions)?;
    let (key, claims) = rate_key(class, state, &parts.headers, ip);
    state.check_rate(class, key)?;
    Ok(claims)
}

/// Whom a request is counted against.
fn rate_key(
    class: RateLimitClass,
    state: &AppState,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> (String, Option<crate::accounts::tokens::Claims>) {
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

/// The path parameters as `P`, their ids parsed. One that does not percent-decode to UTF-8 is
/// 400 `P_BAD_JSON`; so is a `txn_id` outside its grammar (the client's key, not a resource);
/// any other id outside its grammar names nothing: 404 `P_NOT_FOUND`.
async fn path_params<P: DeserializeOwned + Send>(
    parts: &mut Parts,
    has_params: bool,
) -> Result<P, RequestError> {
    if !has_params {
        return serde_json::from_value(Value::Null)
            .map_err(|e| RequestError::Internal(e.to_string()));
    }
    let raw = axum::extract::RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|e| RequestError::BadJson(format!("path: {}", e.body_text())))?;
    let mut fields = serde_json::Map::new();
    for (name, value) in &raw {
        parley_client_api::params::check(name, value).map_err(|e| match e {
            IdError::BadTxnId => RequestError::BadJson(e.to_string()),
            _ => RequestError::NotFoundInPath(e.to_string()),
        })?;
        fields.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| RequestError::BadJson(format!("path: {e}")))
}

/// The query string and, for a method with a body, the body read within `limit`.
async fn read_client_body(
    parts: Parts,
    body: axum::body::Body,
    state: &AppState,
    declared: Declared,
) -> Result<(Option<String>, Body), RequestError> {
    let query = parts.uri.query().map(str::to_owned);
    if !declared.has_body {
        return Ok((query, Body::None));
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let bytes = read_body(Request::from_parts(parts, body), declared.body_limit, state).await?;
    Ok((query, Body::Client { bytes, is_json }))
}

/// Query parameters as `T`; a malformed query is 400 `P_BAD_JSON`.
fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, RequestError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| RequestError::BadJson(format!("query string: {e}")))
}
