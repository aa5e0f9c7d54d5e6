//! Token-bucket rate limiting keyed by client (address or user) and endpoint class, and the
//! client address itself: the TCP peer, or behind a trusted proxy the address it forwards,
//! with IPv6 clients bucketed by /64 (one subscriber's whole allocation).
//!
//! A limiter's memory is bounded: its buckets are spread over shards, each holding at most
//! its share of `max_keys`; a full shard first drops its idle (full) buckets, then any, so a
//! flood of new addresses costs a bounded map and only ever one shard's scan under a lock.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Shards of a limiter's map.
const SHARDS: usize = 64;
/// Keys a limiter holds by default, over all its shards.
pub const DEFAULT_MAX_KEYS: usize = 262_144;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A set of token buckets, one per key, all with the same rate.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: RateLimit,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    max_per_shard: usize,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate.burst` requests at once, refilled at `rate.per_second`.
    pub fn new(rate: RateLimit) -> Self {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter holding at most about `max_keys` buckets.
    pub fn with_max_keys(rate: RateLimit, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_per_shard: (max_keys / SHARDS).max(1),
        }
    }

    /// Takes one token for `key`; `Err(retry_after_ms)` when the bucket is empty.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Buckets held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.rate.burst);
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_per_shard && !buckets.contains_key(key) {
            let per_second = self.rate.per_second;
            // Idle buckets are full again: forgetting them changes nothing.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= self.max_per_shard {
                // Still full: make room (those clients start over with a full bucket).
                let excess = buckets.len() + 1 - self.max_per_shard * 9 / 10;
                let victims: Vec<K> = buckets.keys().take(excess).cloned().collect();
                for k in victims {
                    buckets.remove(&k);
                }
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = (1.0 - bucket.tokens) / self.rate.per_second;
            Err((wait_s * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

/// The key a client address is counted under: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4 address), IPv6 by its /64.
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a single address (a full-length prefix).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (
                a.trim().parse::<IpAddr>().ok()?,
                Some(p.trim().parse::<u8>().ok()?),
            ),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // A malformed entry: trust nothing to its left.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_is_allowed_then_refused_with_a_retry_time_then_refilled() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check_at(&"ip", t0).unwrap();
        }
        let retry = rl.check_at(&"ip", t0).unwrap_err();
        assert_eq!(retry, 500);
        // Other keys have their own bucket.
        rl.check_at(&"other", t0).unwrap();
        rl.check_at(&"ip", t0 + Duration::from_millis(500)).unwrap();
        assert!(rl.check_at(&"ip", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn a_flood_of_new_keys_keeps_the_limiter_bounded_and_busy_keys_limited() {
        let rl = RateLimiter::with_max_keys(
            RateLimit {
                per_second: 0.001,
                burst: 2,
            },
            6_400,
        );
        let t0 = Instant::now();
        rl.check_at(&0u64, t0).unwrap();
        rl.check_at(&0u64, t0).unwrap();
        for k in 1..100_000u64 {
            let _ = rl.check_at(&k, t0);
            if k % 10_000 == 0 {
                assert!(rl.len() <= 6_400, "{} keys held", rl.len());
            }
        }
        assert!(rl.len() <= 6_400, "{} keys held", rl.len());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(a), address_bucket(b));
        assert_ne!(address_bucket(a), address_bucket(c));
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            address_bucket(mapped),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("::1").unwrap(),
        ];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "198.51.100.7".parse().unwrap();
        // From a trusted proxy: the right-most untrusted hop.
        assert_eq!(
            client_address(proxy, Some("203.0.113.5, 10.9.9.9"), &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        // A client cannot pick its address by sending the header itself.
        assert_eq!(
            client_address(outsider, Some("1.2.3.4"), &trusted),
            outsider
        );
        // Spoofed left-hand entries are ignored.
        assert_eq!(
            client_address(proxy, Some("1.2.3.4, 203.0.113.5"), &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(proxy, None, &trusted), proxy);
        assert_eq!(client_address(proxy, Some("garbage"), &trusted), proxy);
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("::1/129").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
