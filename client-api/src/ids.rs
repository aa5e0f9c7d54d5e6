//! Identifiers (docs/protocol.md#identifiers): server names, user ids, device ids, group
//! ids, transaction ids, sequence numbers and epochs — one type and one parser each, shared
//! by every crate.

use std::fmt;

/// Longest user id in bytes.
pub const MAX_USER_ID_BYTES: usize = 255;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("localpart must be non-empty and use only a-z 0-9 . _ = -")]
    BadLocalpart,
    #[error("server name must be a DNS name or IP literal with an optional port")]
    BadServerName,
    #[error("user id must look like @localpart:server_name")]
    BadUserId,
    #[error("user id is longer than 255 bytes")]
    TooLong,
    #[error("device id must be 1-64 characters of A-Z a-z 0-9 _ -")]
    BadDeviceId,
    #[error("group id must look like !opaque:hub_server")]
    BadGroupId,
    #[error("txn_id must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")]
    BadTxnId,
    #[error("media id must be 1-64 characters of A-Z a-z 0-9 _ -")]
    BadMediaId,
}

/// Whether `s` is a valid localpart: `[a-z0-9._=-]+`.
pub fn is_valid_localpart(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-'))
}

/// Whether `s` is a valid server name: a DNS name, IPv4 address or `[IPv6]`, with an optional port.
pub fn is_valid_server_name(s: &str) -> bool {
    let (host, port) = match s.rfind(':') {
        Some(i)
            if !s.ends_with(']') && !s[..i].contains(':')
                || s.starts_with('[') && s[..i].ends_with(']') =>
        {
            (&s[..i], Some(&s[i + 1..]))
        }
        _ => (s, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if port.parse::<u32>().map_or(true, |p| p > 65535) {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A validated user id `@localpart:server_name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: String,
    colon: usize,
}

impl UserId {
    /// Parses and validates a full user id.
    pub fn parse(s: &str) -> Result<UserId, IdError> {
        if s.len() > MAX_USER_ID_BYTES {
            return Err(IdError::TooLong);
        }
        let rest = s.strip_prefix('@').ok_or(IdError::BadUserId)?;
        let colon = rest.find(':').ok_or(IdError::BadUserId)?;
        let (local, server) = (&rest[..colon], &rest[colon + 1..]);
        if !is_valid_localpart(local) {
            return Err(IdError::BadLocalpart);
        }
        if !is_valid_server_name(server) {
            return Err(IdError::BadServerName);
        }
        Ok(UserId {
            full: s.to_owned(),
            colon: colon + 1,
        })
    }

    /// Builds `@localpart:server_name` from its parts, validating both.
    pub fn new(localpart: &str, server_name: &str) -> Result<UserId, IdError> {
        if !is_valid_localpart(localpart) {
            return Err(IdError::BadLocalpart);
        }
        UserId::parse(&format!("@{localpart}:{server_name}"))
    }

    /// The part between `@` and the first `:`.
    pub fn localpart(&self) -> &str {
        &self.full[1..self.colon]
    }

    /// The server name after the first `:`.
    pub fn server_name(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Whether `s` looks like a device id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_device_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A server name, normalised: DNS names compare without regard to case, so the canonical
/// spelling is lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    /// Parses and normalises (lower-cases) a server name.
    pub fn parse(s: &str) -> Result<ServerName, IdError> {
        if !is_valid_server_name(s) {
            return Err(IdError::BadServerName);
        }
        Ok(ServerName(s.to_ascii_lowercase()))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` (any spelling) names this server.
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses a device id.
    pub fn parse(s: &str) -> Result<DeviceId, IdError> {
        if is_valid_device_id(s) {
            Ok(DeviceId(s.to_owned()))
        } else {
            Err(IdError::BadDeviceId)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group id `!opaque:hub_server`: the server after the first `:` is the group's hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    full: String,
    colon: usize,
}

impl GroupId {
    /// Parses a group id.
    pub fn parse(s: &str) -> Result<GroupId, IdError> {
        let rest = s.strip_prefix('!').ok_or(IdError::BadGroupId)?;
        let colon = rest.find(':').ok_or(IdError::BadGroupId)?;
        if colon == 0 || s.len() > MAX_USER_ID_BYTES {
            return Err(IdError::BadGroupId);
        }
        if !is_valid_server_name(&rest[colon + 1..]) {
            return Err(IdError::BadServerName);
        }
        Ok(GroupId {
            full: s.to_owned(),
            colon: colon + 1,
        })
    }

    /// The hub's server name, as spelled in the id.
    pub fn hub(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Longest transaction id.
pub const MAX_TXN_ID_LEN: usize = 64;

/// A transaction id (a device's idempotency key, or a federation transaction's id):
/// 1–64 characters of `[A-Za-z0-9._~-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(String);

impl TxnId {
    /// Parses a transaction id.
    pub fn parse(s: &str) -> Result<TxnId, IdError> {
        let ok = (1..=MAX_TXN_ID_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if ok {
            Ok(TxnId(s.to_owned()))
        } else {
            Err(IdError::BadTxnId)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serde and JSON Schema for an id type: a JSON string, parsed on the way in (a string outside
/// the grammar is refused with [`IdError`]'s text).
macro_rules! string_id {
    ($ty:ident, $description:expr) => {
        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<$ty, IdError> {
                $ty::parse(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "description": $description})
            }
        }
    };
}

string_id!(UserId, "A user id, `@localpart:server_name`.");
string_id!(
    ServerName,
    "A server name: a DNS name or IP literal, with an optional port."
);
string_id!(DeviceId, "A device id: 1-64 characters of `[A-Za-z0-9_-]`.");
string_id!(GroupId, "A group id, `!opaque:hub_server`.");
string_id!(
    TxnId,
    "A transaction id: 1-64 characters of `[A-Za-z0-9._~-]`."
);

/// A message's place in its group's log at the hub: from 1, gap-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub u64);

/// An MLS epoch of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_split_at_the_first_colon_so_ports_survive() {
        let u = UserId::parse("@alice:localhost:8448").unwrap();
        assert_eq!(u.localpart(), "alice");
        assert_eq!(u.server_name(), "localhost:8448");
    }

    #[test]
    fn bad_user_ids_are_refused() {
        assert_eq!(UserId::parse("alice:x.org"), Err(IdError::BadUserId));
        assert_eq!(UserId::parse("@Alice:x.org"), Err(IdError::BadLocalpart));
        assert_eq!(UserId::parse("@alice:"), Err(IdError::BadServerName));
        assert_eq!(
            UserId::parse("@alice:x.org:99999"),
            Err(IdError::BadServerName)
        );
        let long = format!("@{}:x.org", "a".repeat(250));
        assert_eq!(UserId::parse(&long), Err(IdError::TooLong));
    }

    #[test]
    fn server_names_accept_dns_ipv4_and_bracketed_ipv6() {
        for ok in [
            "example.org",
            "localhost:8008",
            "127.0.0.1:1",
            "[::1]:8448",
            "[::1]",
        ] {
            assert!(is_valid_server_name(ok), "{ok}");
        }
        for bad in ["", "a..b", "exa mple", "::1", "[::1", "x:", "x:abc", "-:"] {
            assert!(!is_valid_server_name(bad), "{bad}");
        }
    }

    #[test]
    fn localparts_follow_the_grammar() {
        assert!(is_valid_localpart("a.b_c=d-9"));
        assert!(!is_valid_localpart("Bad Name!"));
        assert!(!is_valid_localpart(""));
    }

    #[test]
    fn server_names_normalise_to_lower_case() {
        let name = ServerName::parse("Chat.Example.ORG:8448").unwrap();
        assert_eq!(name.as_str(), "chat.example.org:8448");
        assert!(name.is("CHAT.example.org:8448"));
        assert_eq!(ServerName::parse("a..b"), Err(IdError::BadServerName));
    }

    #[test]
    fn group_ids_name_their_hub_after_the_first_colon() {
        let g = GroupId::parse("!Ab_9-x:hub.example:8448").unwrap();
        assert_eq!(g.hub(), "hub.example:8448");
        assert_eq!(GroupId::parse("x:hub.example"), Err(IdError::BadGroupId));
        assert_eq!(GroupId::parse("!:hub.example"), Err(IdError::BadGroupId));
        assert_eq!(GroupId::parse("!x:"), Err(IdError::BadServerName));
    }

    #[test]
    fn txn_and_device_ids_follow_their_grammars() {
        assert!(TxnId::parse("a.B_c~d-9").is_ok());
        assert_eq!(TxnId::parse(""), Err(IdError::BadTxnId));
        assert_eq!(TxnId::parse(&"a".repeat(65)), Err(IdError::BadTxnId));
        assert_eq!(TxnId::parse("a/b"), Err(IdError::BadTxnId));
        assert!(DeviceId::parse("ABCDEF").is_ok());
        assert_eq!(DeviceId::parse("a.b"), Err(IdError::BadDeviceId));
    }
}
