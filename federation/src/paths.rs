//! The federation endpoints (DESIGN §3.2): method, path template and authentication.
//!
//! Path templates use `{name}` placeholders (axum's syntax); [`fill`] builds a concrete,
//! percent-encoded path. That exact string (plus any query) is the `uri` a request is
//! signed over, so build it once and send it as is.

/// Prefix of the authenticated server–server API.
pub const FEDERATION_PREFIX: &str = "/_parley/federation/v1";

macro_rules! fed {
    ($p:literal) => {
        concat!("/_parley/federation/v1", $p)
    };
}

/// HTTP method of a federation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
}

impl Method {
    /// The method's name on the wire (what the request signature covers).
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }

    /// Whether requests carry a JSON body (and so a signed `content`).
    pub const fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put)
    }
}

/// One federation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Full path template.
    pub path: &'static str,
    /// Whether requests carry an `X-Parley` signature (all but the key and well-known ones).
    pub signed: bool,
}

/// `GET /_parley/key/v1/server`: the server's self-signed key document (no auth).
pub const SERVER_KEYS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/_parley/key/v1/server",
    signed: false,
};

/// `GET /.well-known/parley/server`: optional delegation `{"server": "host:port"}` (no auth).
pub const WELL_KNOWN: Endpoint = Endpoint {
    method: Method::Get,
    path: crate::destination::WELL_KNOWN_PATH,
    signed: false,
};

/// `PUT /send/{txn_id}`: a transaction of events ([`crate::transactions`]).
pub const SEND_TRANSACTION: Endpoint = Endpoint {
    method: Method::Put,
    path: fed!("/send/{txn_id}"),
    signed: true,
};

/// `POST /keys/claim`: claim key packages of this server's users (client API shapes).
pub const KEYS_CLAIM: Endpoint = Endpoint {
    method: Method::Post,
    path: fed!("/keys/claim"),
    signed: true,
};

/// `GET /users/{user_id}/devices`: a local user's devices (client API shape).
pub const USER_DEVICES: Endpoint = Endpoint {
    method: Method::Get,
    path: fed!("/users/{user_id}/devices"),
    signed: true,
};

/// `POST /groups/{group_id}/commit`: a follower submits a commit bundle to the hub.
pub const GROUP_COMMIT: Endpoint = Endpoint {
    method: Method::Post,
    path: fed!("/groups/{group_id}/commit"),
    signed: true,
};

/// `PUT /groups/{group_id}/send/{txn_id}`: a follower submits an application message to the hub.
pub const GROUP_SEND: Endpoint = Endpoint {
    method: Method::Put,
    path: fed!("/groups/{group_id}/send/{txn_id}"),
    signed: true,
};

/// `GET /groups/{group_id}/messages?since=SEQ`: catch-up from the hub, members' servers only.
pub const GROUP_MESSAGES: Endpoint = Endpoint {
    method: Method::Get,
    path: fed!("/groups/{group_id}/messages"),
    signed: true,
};

/// Every federation endpoint.
pub const ALL: [Endpoint; 8] = [
    SERVER_KEYS,
    WELL_KNOWN,
    SEND_TRANSACTION,
    KEYS_CLAIM,
    USER_DEVICES,
    GROUP_COMMIT,
    GROUP_SEND,
    GROUP_MESSAGES,
];

impl Endpoint {
    /// The concrete path with `params` filled in order ([`fill`]).
    pub fn path_with(&self, params: &[&str]) -> Option<String> {
        fill(self.path, params)
    }
}

/// Fills `{name}` placeholders of `template` with `params` in order, percent-encoding every
/// byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`).
///
/// Returns `None` when the number of parameters does not match the template.
pub fn fill(template: &str, params: &[&str]) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    let mut params = params.iter();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        percent_encode_into(&mut out, params.next()?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    params.next().is_none().then_some(out)
}

fn percent_encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_live_under_the_documented_prefixes() {
        for e in ALL {
            assert!(
                e.path.starts_with(FEDERATION_PREFIX) == e.signed,
                "{} signed={} ",
                e.path,
                e.signed
            );
        }
        assert_eq!(
            SEND_TRANSACTION.path,
            "/_parley/federation/v1/send/{txn_id}"
        );
        assert_eq!(WELL_KNOWN.path, "/.well-known/parley/server");
    }

    #[test]
    fn fill_percent_encodes_ids() {
        assert_eq!(
            USER_DEVICES.path_with(&["@bob:b.example:8448"]).unwrap(),
            "/_parley/federation/v1/users/%40bob%3Ab.example%3A8448/devices"
        );
        assert_eq!(
            GROUP_SEND
                .path_with(&["!Ab_9-x:a.example", "t.1~"])
                .unwrap(),
            "/_parley/federation/v1/groups/%21Ab_9-x%3Aa.example/send/t.1~"
        );
        assert_eq!(fill("/a/{x}", &["é/"]).unwrap(), "/a/%C3%A9%2F");
    }

    #[test]
    fn fill_refuses_wrong_parameter_count() {
        assert_eq!(fill("/a/{x}", &[]), None);
        assert_eq!(fill("/a/{x}", &["1", "2"]), None);
        assert_eq!(fill("/a", &[]).as_deref(), Some("/a"));
    }

    #[test]
    fn only_post_and_put_carry_bodies() {
        assert!(KEYS_CLAIM.method.has_body() && SEND_TRANSACTION.method.has_body());
        assert!(!USER_DEVICES.method.has_body());
        assert_eq!(GROUP_COMMIT.method.as_str(), "POST");
    }
}
