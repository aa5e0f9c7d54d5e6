//! The shape of an endpoint declaration, shared by server routing and the typed client.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ErrCode;

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// Whether the request type travels as a JSON body (otherwise as the query string).
    pub const fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put)
    }

    /// The method's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credentials needed.
    None,
    /// `Authorization: Bearer <access token>`.
    AccessToken,
    /// An access token of a user with the admin flag (403 `P_FORBIDDEN` for others).
    AdminToken,
    /// `Authorization: X-Parley …`, signed by the origin server (federation).
    ServerSignature,
}

/// An endpoint's authentication as a type, so that a server's router can demand, at compile
/// time, a handler taking the caller the scheme yields.
pub trait AuthScheme: Send + Sync + 'static {
    /// The scheme's value.
    const KIND: Auth;
}

/// The authentication schemes as types (see [`AuthScheme`]).
pub mod auth {
    use super::{Auth, AuthScheme};

    /// No credentials.
    #[derive(Debug, Clone, Copy)]
    pub struct Public;
    /// A bearer access token.
    #[derive(Debug, Clone, Copy)]
    pub struct AccessToken;
    /// A request signed by another server.
    #[derive(Debug, Clone, Copy)]
    pub struct ServerSignature;
    /// A bearer access token of an admin user.
    #[derive(Debug, Clone, Copy)]
    pub struct AdminToken;

    impl AuthScheme for Public {
        const KIND: Auth = Auth::None;
    }
    impl AuthScheme for AccessToken {
        const KIND: Auth = Auth::AccessToken;
    }
    impl AuthScheme for ServerSignature {
        const KIND: Auth = Auth::ServerSignature;
    }
    impl AuthScheme for AdminToken {
        const KIND: Auth = Auth::AdminToken;
    }
}

/// Which rate-limit bucket an endpoint draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitClass {
    /// Not rate limited.
    None,
    /// Login attempts, per client IP.
    Login,
    /// Account registration, per client IP.
    Register,
    /// Key-package uploads, per user.
    KeyUpload,
    /// Key-package claims, per user.
    KeyClaim,
    /// Group creation, per user.
    GroupCreate,
    /// Commits, proposals and application messages, per user.
    Send,
    /// Token refreshes, per client address (and per refresh token in the handler).
    Refresh,
    /// Device-list lookups (`GET /users/{id}/devices`), per user.
    DeviceLookup,
    /// Federation requests: per client address before authentication, per origin server after.
    Federation,
    /// Admin API requests, per admin user.
    Admin,
    /// Media uploads, per user.
    MediaUpload,
    /// Media downloads, per user.
    MediaDownload,
}

impl RateLimitClass {
    /// The name the documentation and the config use.
    pub const fn as_str(self) -> &'static str {
        match self {
            RateLimitClass::None => "none",
            RateLimitClass::Login => "login",
            RateLimitClass::Register => "register",
            RateLimitClass::KeyUpload => "key_upload",
            RateLimitClass::KeyClaim => "key_claim",
            RateLimitClass::GroupCreate => "group_create",
            RateLimitClass::Send => "send",
            RateLimitClass::Refresh => "refresh",
            RateLimitClass::DeviceLookup => "device_lookup",
            RateLimitClass::Federation => "federation",
            RateLimitClass::Admin => "admin",
            RateLimitClass::MediaUpload => "media_upload",
            RateLimitClass::MediaDownload => "media_download",
        }
    }
}

/// The largest body an endpoint accepts, named; a server turns it into bytes from its
/// configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `limits.max_request_bytes`.
    Default,
    /// One base64 MLS message of `limits.max_message_bytes`, plus the JSON around it.
    Message,
    /// A base64 commit bundle of `limits.max_bundle_bytes`, plus the JSON around it.
    Bundle,
    /// `limits.max_key_packages_per_upload` base64 key packages and a last-resort one.
    KeyUpload,
    /// `federation.max_request_bytes`.
    Federation,
    /// A media upload's raw bytes, streamed to disk: `limits.max_upload_bytes`.
    Media,
}

impl BodyLimit {
    /// The name the documentation uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            BodyLimit::Default => "limits.max_request_bytes",
            BodyLimit::Message => "limits.max_message_bytes (base64) + limits.max_request_bytes",
            BodyLimit::Bundle => "limits.max_bundle_bytes (base64) + limits.max_request_bytes",
            BodyLimit::KeyUpload => {
                "(limits.max_key_packages_per_upload + 1) key packages (base64) + limits.max_request_bytes"
            }
            BodyLimit::Federation => "federation.max_request_bytes",
            BodyLimit::Media => "limits.max_upload_bytes (application/octet-stream)",
        }
    }
}

/// Wire types of requests, responses and path parameters.
pub trait Wire: Serialize + DeserializeOwned + JsonSchema + Send + 'static {}
impl<T: Serialize + DeserializeOwned + JsonSchema + Send + 'static> Wire for T {}

/// One endpoint, declared once: method, path with typed parameters, authentication, rate
/// limit, body limit, the errcodes it answers with (beyond those every endpoint of its kind
/// may answer), and its wire types.
///
/// `PATH` uses `{name}` placeholders (axum's syntax), one per field of [`Endpoint::Path`].
pub trait Endpoint: 'static {
    /// HTTP method.
    const METHOD: Method;
    /// Full path template, e.g. `/_parley/client/v1/devices/{device_id}`.
    const PATH: &'static str;
    /// Authentication the endpoint requires, as a type.
    type Auth: AuthScheme;
    /// Authentication the endpoint requires.
    const AUTH: Auth = <Self::Auth as AuthScheme>::KIND;
    /// Rate-limit bucket.
    const RATE_LIMIT: RateLimitClass;
    /// Largest body.
    const BODY_LIMIT: BodyLimit;
    /// Errcodes specific to this endpoint.
    const ERRCODES: &'static [ErrCode];
    /// What the endpoint does (its doc comment).
    const DOC: &'static str;
    /// Path parameters: a struct whose fields are the template's `{name}`s, or `()`.
    type Path: Wire;
    /// Request body (POST/PUT) or query parameters (GET/DELETE).
    type Request: Wire;
    /// Successful response body.
    type Response: Wire;
}

/// The empty object `{}`: a request or response with nothing to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The query of a GET or DELETE that takes none: any parameters are ignored, as HTTP caches
/// and proxies may add some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoQuery {}

/// Declares an endpoint type:
///
/// ```ignore
/// endpoint! {
///     /// What it does.
///     Name: Post "/_parley/client/v1/…/{param}",
///     auth AccessToken, rate Send, body Bundle, path ParamStruct,
///     Request => Response, errors [InvalidMessage, NotFound]
/// }
/// ```
#[macro_export]
macro_rules! endpoint {
    (
        $(#[doc = $doc:literal])*
        $name:ident: $method:ident $path:literal,
        auth $auth:ident, rate $limit:ident, body $body:ident, path $params:ty,
        $req:ty => $resp:ty, errors [$($err:ident),* $(,)?]
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::endpoint::Endpoint for $name {
            const METHOD: $crate::endpoint::Method = $crate::endpoint::Method::$method;
            const PATH: &'static str = $path;
            type Auth = $crate::endpoint::auth::$auth;
            const RATE_LIMIT: $crate::endpoint::RateLimitClass =
                $crate::endpoint::RateLimitClass::$limit;
            const BODY_LIMIT: $crate::endpoint::BodyLimit = $crate::endpoint::BodyLimit::$body;
            const ERRCODES: &'static [$crate::ErrCode] = &[$($crate::ErrCode::$err),*];
            const DOC: &'static str = concat!($($doc, "\n"),*);
            type Path = $params;
            type Request = $req;
            type Response = $resp;
        }
    };
}

/// An endpoint's declaration as a value: what documentation and route tables list.
#[derive(Clone, Copy)]
pub struct EndpointInfo {
    /// The declaring type's name.
    pub name: &'static str,
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: &'static str,
    /// Authentication.
    pub auth: Auth,
    /// Rate-limit bucket.
    pub rate_limit: RateLimitClass,
    /// Largest body.
    pub body_limit: BodyLimit,
    /// Endpoint-specific errcodes.
    pub errcodes: &'static [ErrCode],
    /// Doc comment.
    pub doc: &'static str,
    /// Schema of the path parameters.
    pub path_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Schema of the request (body or query).
    pub request_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Schema of the response body.
    pub response_schema: fn(&mut SchemaGenerator) -> Schema,
}

impl EndpointInfo {
    /// The declaration of `E`.
    pub fn of<E: Endpoint>() -> EndpointInfo {
        let name = std::any::type_name::<E>();
        EndpointInfo {
            name: name.rsplit("::").next().unwrap_or(name),
            method: E::METHOD,
            path: E::PATH,
            auth: E::AUTH,
            rate_limit: E::RATE_LIMIT,
            body_limit: E::BODY_LIMIT,
            errcodes: E::ERRCODES,
            doc: E::DOC,
            path_schema: |g| g.subschema_for::<E::Path>(),
            request_schema: |g| g.subschema_for::<E::Request>(),
            response_schema: |g| g.subschema_for::<E::Response>(),
        }
    }

    /// The `{name}` placeholders of the path, in order.
    pub fn path_params(&self) -> Vec<&'static str> {
        path_params(self.path)
    }
}

impl std::fmt::Debug for EndpointInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.name, self.method.as_str(), self.path)
    }
}

/// The `{name}` placeholders of a path template, in order.
pub fn path_params(template: &'static str) -> Vec<&'static str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// The concrete path of `E` for `params`: each placeholder filled, percent-encoded, with the
/// field of the same name.
pub fn path_of<E: Endpoint>(params: &E::Path) -> Option<String> {
    let value = serde_json::to_value(params).ok()?;
    let names = path_params(E::PATH);
    let mut values = Vec::with_capacity(names.len());
    for name in &names {
        values.push(value.get(name)?.as_str()?.to_owned());
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    fill_path(E::PATH, &refs)
}

/// Fills `{name}` placeholders of `template` with `params` in order, percent-encoding each.
///
/// Returns `None` when the number of parameters does not match the template.
pub fn fill_path(template: &str, params: &[&str]) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    let mut params = params.iter();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let value = params.next()?;
        out.extend(percent_encoding::utf8_percent_encode(value, PATH_SEGMENT));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    if params.next().is_some() {
        return None;
    }
    Some(out)
}

/// Characters escaped in a path segment: everything but RFC 3986 unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_path_percent_encodes_user_ids() {
        let p = fill_path("/a/users/{user_id}/devices", &["@bob:b.example:8448"]).unwrap();
        assert_eq!(p, "/a/users/%40bob%3Ab.example%3A8448/devices");
    }

    #[test]
    fn fill_path_refuses_wrong_parameter_count() {
        assert_eq!(fill_path("/a/{x}", &[]), None);
        assert_eq!(fill_path("/a/{x}", &["1", "2"]), None);
        assert_eq!(fill_path("/a", &[]).as_deref(), Some("/a"));
    }
}
