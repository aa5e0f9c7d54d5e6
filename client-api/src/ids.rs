//! Identifiers (docs/protocol.md#identifiers): server names, user ids, device ids.

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
}
