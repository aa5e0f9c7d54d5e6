//! Server names and how to reach them (docs/protocol.md#destination-resolution).
//!
//! Resolving server name `S` (no HTTP here — the caller performs the one fetch):
//!
//! 1. an entry of the resolver map (`server_name → host:port`, for tests) wins outright;
//! 2. `S` with an explicit port, or an IP literal (as in Matrix): connect to it (port 8448
//!    when an IP literal has none);
//! 3. otherwise fetch `https://S/.well-known/parley/server`; if it answers
//!    `{"server": "host[:port]"}` with a valid server name, connect to that host (port 8448
//!    when it has none; TLS name and `Host` are the delegated host);
//! 4. otherwise (no answer, error, bad JSON, invalid name) connect to `S:8448`.
//!
//! HTTPS always, unless `allow_insecure_http` (tests on loopback), which uses `http://` for
//! the well-known fetch and the connection. The `destination` of signed requests stays `S`
//! whatever the delegation.
//!
//! [`Resolver::start`] returns either the [`Destination`] or the [`WellKnownRequest`] to
//! perform; [`Resolver::finish`] takes the well-known body (or `None` on any failure).
//! [`Resolver::resolve_with`] runs both with a synchronous fetch function.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The federation port used when none is given: 8448.
pub const DEFAULT_PORT: u16 = 8448;

/// The delegation document's path.
pub const WELL_KNOWN_PATH: &str = "/.well-known/parley/server";

/// A parsed server name: `hostname [":" port]` where hostname is a DNS name, a dotted IPv4
/// address or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName {
    host: String,
    port: Option<u16>,
}

impl ServerName {
    /// Parses and validates a server name (DNS names: `[A-Za-z0-9.-]`, at most 255 bytes).
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = || Error::InvalidServerName(name.to_owned());
        let (host, port) = if let Some(rest) = name.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(invalid)?;
            let ip = &rest[..end];
            ip.parse::<Ipv6Addr>().map_err(|_| invalid())?;
            let after = &rest[end + 1..];
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(invalid)?),
            };
            (&name[..end + 2], port)
        } else {
            match name.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (name, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(invalid)?),
        };
        let valid_dns = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !host.starts_with('[') && !valid_dns {
            return Err(invalid());
        }
        Ok(ServerName {
            host: host.to_owned(),
            port,
        })
    }

    /// The host part as written (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the host is an IPv4 or IPv6 literal.
    pub fn is_ip_literal(&self) -> bool {
        self.ip().is_some()
    }

    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            None => self.host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        }
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared,
/// unspecified, documentation, multicast or broadcast (for IPv6 also unique-local, and an
/// IPv4-mapped address by its IPv4 part).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xFE) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xFE00) == 0xFC00
                || (first & 0xFFC0) == 0xFE80
                || first == 0x2001 && v6.segments()[1] == 0x0DB8)
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

/// The server-name part of a user id `@localpart:server_name` (split at the first `:`).
pub fn server_name_of_user_id(user_id: &str) -> Option<&str> {
    user_id
        .strip_prefix('@')?
        .split_once(':')
        .map(|(_, server)| server)
        .filter(|s| !s.is_empty())
}

/// The body of `GET /.well-known/parley/server`: `{"server": "host[:port]"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WellKnownServer {
    /// Where federation traffic for this server name goes.
    pub server: String,
}

/// URL scheme of a federation connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// TLS (the default and the only choice outside tests).
    Https,
    /// Plain HTTP, only with `allow_insecure_http`.
    Http,
}

impl Scheme {
    /// `"https"` or `"http"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// Where and how to connect for a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The server name asked for: the `destination` of signed requests.
    pub server_name: String,
    /// `https`, or `http` in insecure test mode.
    pub scheme: Scheme,
    /// Host to connect to; also the TLS server name and `Host` header (IPv6 in brackets).
    pub host: String,
    /// Port to connect to.
    pub port: u16,
}

impl Destination {
    /// `host:port`, as used in URLs and the `Host` header.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `scheme://host:port` followed by `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            path_and_query
        )
    }

    /// The host for TLS certificate checks (IPv6 without brackets).
    pub fn tls_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// The well-known fetch [`Resolver::start`] asks the caller to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnownRequest {
    /// The server name being resolved.
    pub server_name: String,
    /// The URL to `GET`, e.g. `https://b.example/.well-known/parley/server`.
    pub url: String,
}

/// The outcome of [`Resolver::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Connect here.
    Resolved(Destination),
    /// Fetch this well-known URL, then call [`Resolver::finish`].
    NeedWellKnown(WellKnownRequest),
}

/// Resolves server names; holds the test override map, the insecure-HTTP switch and the
/// destination policy.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<String, (String, u16)>,
    allow_insecure_http: bool,
    allow_ip_literals: bool,
    allow_private_addresses: bool,
}

impl Resolver {
    /// A resolver using HTTPS, or plain HTTP when `allow_insecure_http` (tests only). It
    /// refuses IP-literal server names and non-public IP-literal targets until allowed with
    /// [`Resolver::allow`]; entries of the override map are always allowed.
    pub fn new(allow_insecure_http: bool) -> Self {
        Resolver {
            overrides: HashMap::new(),
            allow_insecure_http,
            allow_ip_literals: false,
            allow_private_addresses: false,
        }
    }

    /// Allows IP-literal server names, and targets that are not public addresses.
    pub fn allow(&mut self, ip_literals: bool, private_addresses: bool) {
        self.allow_ip_literals = ip_literals;
        self.allow_private_addresses = private_addresses;
    }

    /// Refuses a host that is a non-public IP literal, unless private addresses are allowed.
    fn check_target(&self, host: &ServerName) -> Result<()> {
        match host.ip() {
            Some(ip) if !self.allow_private_addresses && !is_public_ip(ip) => Err(
                Error::ForbiddenDestination(format!("{} is not a public address", host.host())),
            ),
            _ => Ok(()),
        }
    }

    /// Routes `server_name` to `host_port` (`host:port`) without any lookup.
    pub fn insert_override(&mut self, server_name: &str, host_port: &str) -> Result<()> {
        let target = ServerName::parse(host_port)?;
        let port = target
            .port()
            .ok_or_else(|| Error::InvalidServerName(host_port.to_owned()))?;
        self.overrides.insert(
            server_name.to_ascii_lowercase(),
            (target.host().to_owned(), port),
        );
        Ok(())
    }

    fn scheme(&self) -> Scheme {
        if self.allow_insecure_http {
            Scheme::Http
        } else {
            Scheme::Https
        }
    }

    fn destination(&self, server_name: &str, host: &str, port: u16) -> Destination {
        Destination {
            server_name: server_name.to_owned(),
            scheme: self.scheme(),
            host: host.to_owned(),
            port,
        }
    }

    /// First step: the destination, or the well-known fetch to do first.
    pub fn start(&self, server_name: &str) -> Result<Resolution> {
        if let Some((host, port)) = self.overrides.get(&server_name.to_ascii_lowercase()) {
            return Ok(Resolution::Resolved(self.destination(
                server_name,
                host,
                *port,
            )));
        }
        let name = ServerName::parse(server_name)?;
        if name.is_ip_literal() && !self.allow_ip_literals {
            return Err(Error::ForbiddenDestination(format!(
                "{server_name} is an IP literal"
            )));
        }
        self.check_target(&name)?;
        if let Some(port) = name.port() {
            return Ok(Resolution::Resolved(self.destination(
                server_name,
                name.host(),
                port,
            )));
        }
        if name.is_ip_literal() {
            return Ok(Resolution::Resolved(self.destination(
                server_name,
                name.host(),
                DEFAULT_PORT,
            )));
        }
        Ok(Resolution::NeedWellKnown(WellKnownRequest {
            server_name: server_name.to_owned(),
            url: format!(
                "{}://{}{WELL_KNOWN_PATH}",
                self.scheme().as_str(),
                name.host()
            ),
        }))
    }

    /// Second step: `well_known_body` is the body of a 200 answer, `None` on any failure.
    pub fn finish(
        &self,
        request: &WellKnownRequest,
        well_known_body: Option<&[u8]>,
    ) -> Result<Destination> {
        let name = ServerName::parse(&request.server_name)?;
        let delegated = well_known_body
            .and_then(|b| serde_json::from_slice::<WellKnownServer>(b).ok())
            .and_then(|w| ServerName::parse(&w.server).ok());
        if let Some(d) = &delegated {
            self.check_target(d)?;
        }
        Ok(match delegated {
            Some(d) => self.destination(
                &request.server_name,
                d.host(),
                d.port().unwrap_or(DEFAULT_PORT),
            ),
            None => self.destination(&request.server_name, name.host(), DEFAULT_PORT),
        })
    }

    /// Both steps, with `fetch` performing the well-known `GET` (returning the 200 body).
    pub fn resolve_with(
        &self,
        server_name: &str,
        fetch: impl FnOnce(&WellKnownRequest) -> Option<Vec<u8>>,
    ) -> Result<Destination> {
        match self.start(server_name)? {
            Resolution::Resolved(d) => Ok(d),
            Resolution::NeedWellKnown(req) => {
                let body = fetch(&req);
                self.finish(&req, body.as_deref())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_fetch(_: &WellKnownRequest) -> Option<Vec<u8>> {
        panic!("must not fetch well-known")
    }

    #[test]
    fn server_names_parse_per_the_grammar() {
        let n = ServerName::parse("b.example:8449").unwrap();
        assert_eq!((n.host(), n.port()), ("b.example", Some(8449)));
        assert_eq!(ServerName::parse("localhost").unwrap().port(), None);
        let v6 = ServerName::parse("[::1]:80").unwrap();
        assert_eq!(
            (v6.host(), v6.port(), v6.is_ip_literal()),
            ("[::1]", Some(80), true)
        );
        assert!(ServerName::parse("1.2.3.4").unwrap().is_ip_literal());
        assert_eq!(
            ServerName::parse("[1234:5678::abcd]").unwrap().to_string(),
            "[1234:5678::abcd]"
        );
        for bad in [
            "",
            ":80",
            "a.example:",
            "a.example:0",
            "a.example:65536",
            "a.example:123456",
            "a b",
            "a_b.example",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "a.example:80:80",
            "é.example",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn explicit_port_connects_directly_without_well_known() {
        let d = Resolver::new(false)
            .resolve_with("b.example:8449", no_fetch)
            .unwrap();
        assert_eq!(
            d.url("/_parley/key/v1/server"),
            "https://b.example:8449/_parley/key/v1/server"
        );
        assert_eq!(d.server_name, "b.example:8449");
    }

    #[test]
    fn ip_literal_without_port_uses_8448_without_well_known() {
        let mut r = Resolver::new(false);
        r.allow(true, true);
        let d = r.resolve_with("[::1]", no_fetch).unwrap();
        assert_eq!(
            (d.authority().as_str(), d.tls_name()),
            ("[::1]:8448", "::1")
        );
    }

    #[test]
    fn ip_literal_names_and_private_targets_are_refused_unless_allowed() {
        let mut r = Resolver::new(false);
        for name in ["127.0.0.1:8448", "[::1]", "93.184.216.34"] {
            assert!(
                matches!(r.start(name), Err(Error::ForbiddenDestination(_))),
                "{name}"
            );
        }
        // A public name delegating to a private address is refused too.
        for target in ["10.0.0.5:8448", "127.0.0.1", "[fe80::1]:443", "169.254.1.1"] {
            let body = format!(r#"{{"server":"{target}"}}"#);
            assert!(
                matches!(
                    r.resolve_with("b.example", |_| Some(body.clone().into_bytes())),
                    Err(Error::ForbiddenDestination(_))
                ),
                "{target}"
            );
        }
        // IP literals allowed: public ones only, until private addresses are allowed too.
        r.allow(true, false);
        assert!(r.start("93.184.216.34:8448").is_ok());
        assert!(r.start("192.168.1.1:8448").is_err());
        r.allow(true, true);
        assert!(r.start("192.168.1.1:8448").is_ok());
        // An override is configuration: always allowed, whatever the name's case.
        let mut r = Resolver::new(false);
        r.insert_override("c.example", "127.0.0.1:9000").unwrap();
        assert!(r.start("c.example").is_ok());
        assert!(r.start("C.Example").is_ok());
    }

    #[test]
    fn public_addresses_are_told_from_internal_ones() {
        for ip in ["8.8.8.8", "2a00:1450::1", "93.184.216.34"] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn name_without_port_asks_well_known_first() {
        let r = Resolver::new(false);
        match r.start("b.example").unwrap() {
            Resolution::NeedWellKnown(req) => {
                assert_eq!(req.url, "https://b.example/.well-known/parley/server")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn well_known_delegation_is_followed() {
        let r = Resolver::new(false);
        let d = r
            .resolve_with("b.example", |_| {
                Some(br#"{"server":"fed.b.example:443"}"#.to_vec())
            })
            .unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.server_name.as_str()),
            ("fed.b.example", 443, "b.example")
        );
        let d = r
            .resolve_with("b.example", |_| {
                Some(br#"{"server":"fed.b.example"}"#.to_vec())
            })
            .unwrap();
        assert_eq!(d.authority(), "fed.b.example:8448");
    }

    #[test]
    fn missing_or_bad_well_known_falls_back_to_port_8448() {
        let r = Resolver::new(false);
        for body in [
            None,
            Some(&b"nope"[..]),
            Some(br#"{"server": 5}"#),
            Some(br#"{"server": "bad host"}"#),
        ] {
            let d = r
                .resolve_with("b.example", |_| body.map(<[u8]>::to_vec))
                .unwrap();
            assert_eq!(d.url("/x"), "https://b.example:8448/x", "{body:?}");
        }
    }

    #[test]
    fn insecure_mode_uses_plain_http_everywhere() {
        let r = Resolver::new(true);
        let d = r.resolve_with("b.example", |req| {
            assert_eq!(req.url, "http://b.example/.well-known/parley/server");
            None
        });
        assert_eq!(d.unwrap().scheme, Scheme::Http);
    }

    #[test]
    fn resolver_map_overrides_everything() {
        let mut r = Resolver::new(true);
        r.insert_override("b.example", "127.0.0.1:18448").unwrap();
        let d = r.resolve_with("b.example", no_fetch).unwrap();
        assert_eq!(d.url("/x"), "http://127.0.0.1:18448/x");
        assert_eq!(d.server_name, "b.example");
        assert!(
            r.insert_override("c.example", "127.0.0.1").is_err(),
            "port required"
        );
    }

    #[test]
    fn invalid_server_name_is_refused() {
        assert!(matches!(
            Resolver::new(false).start("bad name"),
            Err(Error::InvalidServerName(_))
        ));
    }

    #[test]
    fn user_id_server_name_keeps_the_port() {
        assert_eq!(
            server_name_of_user_id("@bob:b.example:8448"),
            Some("b.example:8448")
        );
        assert_eq!(server_name_of_user_id("bob:b.example"), None);
        assert_eq!(server_name_of_user_id("@bob:"), None);
    }
}
