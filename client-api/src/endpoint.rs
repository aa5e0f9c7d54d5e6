//! The shape of an endpoint declaration, shared by server routing and the typed client.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

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
}

/// One endpoint: method, path template, authentication, rate-limit class and wire types.
///
/// `PATH` uses `{name}` placeholders (axum's syntax); clients fill them in order.
pub trait Endpoint {
    /// HTTP method.
    const METHOD: Method;
    /// Full path template, e.g. `/_parley/client/v1/devices/{device_id}`.
    const PATH: &'static str;
    /// Authentication the endpoint requires.
    const AUTH: Auth;
    /// Rate-limit bucket.
    const RATE_LIMIT: RateLimitClass;
    /// Request body (POST/PUT) or query parameters (GET/DELETE).
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// Successful response body.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// The empty object `{}`: a request or response with nothing to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Declares an endpoint type in one line.
#[macro_export]
macro_rules! endpoint {
    ($(#[$meta:meta])* $name:ident, $method:ident, $path:expr, $auth:ident, $limit:ident, $req:ty => $resp:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::endpoint::Endpoint for $name {
            const METHOD: $crate::endpoint::Method = $crate::endpoint::Method::$method;
            const PATH: &'static str = $path;
            const AUTH: $crate::endpoint::Auth = $crate::endpoint::Auth::$auth;
            const RATE_LIMIT: $crate::endpoint::RateLimitClass = $crate::endpoint::RateLimitClass::$limit;
            type Request = $req;
            type Response = $resp;
        }
    };
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
