//! A cache of other servers' verified keys, with the refetch rule of docs/protocol.md#key-documents.
//!
//! Pure bookkeeping (no I/O, no clock: every call takes `now_ms`). Keys are kept until their
//! [`VerifiedServerKeys::cache_until_ts`] (at most 7 days). A lookup that misses — unknown
//! server, stale entry, or a key id the cached document does not list — asks for a fetch,
//! at most once per [`REFETCH_INTERVAL_MS`] per origin; in between it answers
//! [`CacheLookup::Unavailable`], which the server turns into 401 `P_UNAUTHORIZED`.
//!
//! Typical use (the cache behind a mutex, the fetch outside it):
//!
//! ```text
//! match cache.lookup(origin, key_id, now) {
//!     Found(key) => verify with key,
//!     Unavailable => 401,
//!     Fetch => { cache.record_fetch_attempt(origin, now);
//!                GET https://origin/_parley/key/v1/server → verify_key_document(body, origin, now)
//!                → cache.insert(keys); look up again (a second miss is Unavailable) }
//! }
//! ```

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::auth::KeyLookup;
use crate::keys::VerifiedServerKeys;
use crate::signing_key::KeyId;

/// Minimum time between two key fetches for one origin (one minute).
pub const REFETCH_INTERVAL_MS: u64 = 60_000;

/// The answer of [`KeyCache::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// The current key, from a fresh cached document.
    Found(VerifyingKey),
    /// Not cached (or stale, or unknown key id): fetch the origin's key document now.
    Fetch,
    /// Not cached, and a fetch for this origin was tried less than a minute ago.
    Unavailable,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    keys: Option<VerifiedServerKeys>,
    last_fetch_ms: Option<u64>,
}

/// A server name as the cache keys it: DNS names compare without regard to case.
fn normalized(server_name: &str) -> String {
    server_name.to_ascii_lowercase()
}

/// Servers a cache holds by default before it evicts ([`KeyCache::with_max_servers`]).
pub const DEFAULT_MAX_SERVERS: usize = 10_000;

/// Verified keys of remote servers, by server name. Its size is bounded: past
/// `max_servers` entries it drops stale ones, then failed fetches, then any.
#[derive(Debug, Clone)]
pub struct KeyCache {
    servers: HashMap<String, Entry>,
    max_servers: usize,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_max_servers(DEFAULT_MAX_SERVERS)
    }
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache holding at most `max_servers` servers (at least 1).
    pub fn with_max_servers(max_servers: usize) -> Self {
        KeyCache {
            servers: HashMap::new(),
            max_servers: max_servers.max(1),
        }
    }

    /// Servers currently held (fresh, stale or only a recent failed fetch).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Makes room for one more server, keeping `keep`: stale entries go first, then entries
    /// with no keys (failed fetches), then arbitrary ones.
    fn make_room(&mut self, keep: &str, now_ms: u64) {
        if self.servers.len() < self.max_servers || self.servers.contains_key(keep) {
            return;
        }
        self.purge_stale(now_ms);
        if self.servers.len() >= self.max_servers {
            self.servers
                .retain(|name, e| name == keep || e.keys.is_some());
        }
        while self.servers.len() >= self.max_servers {
            let Some(victim) = self.servers.keys().find(|n| *n != keep).cloned() else {
                break;
            };
            self.servers.remove(&victim);
        }
    }

    /// The cached current key `key_id` of `origin`, if fresh at `now_ms` (never fetches).
    pub fn get(&self, origin: &str, key_id: &KeyId, now_ms: u64) -> Option<VerifyingKey> {
        let keys = self.servers.get(&normalized(origin))?.keys.as_ref()?;
        if !keys.is_fresh(now_ms) {
            return None;
        }
        keys.verify_key(key_id).copied()
    }

    /// Looks up `origin`'s current key `key_id`, saying whether a fetch is due on a miss.
    pub fn lookup(&self, origin: &str, key_id: &KeyId, now_ms: u64) -> CacheLookup {
        if let Some(key) = self.get(origin, key_id, now_ms) {
            return CacheLookup::Found(key);
        }
        let last = self
            .servers
            .get(&normalized(origin))
            .and_then(|e| e.last_fetch_ms);
        match last {
            Some(t) if now_ms.saturating_sub(t) < REFETCH_INTERVAL_MS => CacheLookup::Unavailable,
            _ => CacheLookup::Fetch,
        }
    }

    /// Notes that a fetch for `origin` starts at `now_ms` (successful or not, it counts).
    pub fn record_fetch_attempt(&mut self, origin: &str, now_ms: u64) {
        let origin = normalized(origin);
        self.make_room(&origin, now_ms);
        self.servers.entry(origin).or_default().last_fetch_ms = Some(now_ms);
    }

    /// Stores keys from a document that passed [`crate::keys::verify_key_document`],
    /// replacing what was cached for that server.
    pub fn insert(&mut self, keys: VerifiedServerKeys) {
        let server_name = normalized(&keys.server_name);
        let now = self
            .servers
            .get(&server_name)
            .and_then(|e| e.last_fetch_ms)
            .unwrap_or(0);
        self.make_room(&server_name, now);
        self.servers.entry(server_name).or_default().keys = Some(keys);
    }

    /// Drops entries whose keys are stale at `now_ms` and whose last fetch is over a minute old.
    pub fn purge_stale(&mut self, now_ms: u64) {
        self.servers.retain(|_, e| {
            e.keys.as_ref().is_some_and(|k| k.is_fresh(now_ms))
                || e.last_fetch_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) < REFETCH_INTERVAL_MS)
        });
    }

    /// A [`KeyLookup`] over the cache's fresh keys at `now_ms`, for
    /// [`crate::auth::authenticate_request`].
    pub fn at(&self, now_ms: u64) -> impl KeyLookup + '_ {
        move |origin: &str, key_id: &KeyId| self.get(origin, key_id, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{verify_key_document, ServerKeyDocument, ServerSigningKey};

    const NOW: u64 = 1_700_000_000_000;
    const HOUR: u64 = 60 * 60 * 1000;

    fn verified(
        server: &str,
        version: &str,
        valid_for: u64,
    ) -> (VerifiedServerKeys, ServerSigningKey) {
        let k = ServerSigningKey::from_seed(KeyId::from_version(version).unwrap(), &[4; 32]);
        let doc =
            ServerKeyDocument::build(server, &k, Default::default(), NOW + valid_for).unwrap();
        let v = verify_key_document(&serde_json::to_vec(&doc).unwrap(), server, NOW).unwrap();
        (v, k)
    }

    #[test]
    fn unknown_origin_asks_for_a_fetch_then_waits_a_minute() {
        let mut c = KeyCache::new();
        let id = KeyId::from_version("k").unwrap();
        assert_eq!(c.lookup("a.example", &id, NOW), CacheLookup::Fetch);
        c.record_fetch_attempt("a.example", NOW);
        assert_eq!(
            c.lookup("a.example", &id, NOW + 59_999),
            CacheLookup::Unavailable
        );
        assert_eq!(c.lookup("a.example", &id, NOW + 60_000), CacheLookup::Fetch);
        assert_eq!(
            c.lookup("b.example", &id, NOW + 1),
            CacheLookup::Fetch,
            "per origin"
        );
    }

    #[test]
    fn fresh_cached_key_is_found_without_fetching() {
        let mut c = KeyCache::new();
        let (v, k) = verified("a.example", "k", HOUR);
        c.insert(v);
        assert_eq!(
            c.lookup("a.example", k.key_id(), NOW),
            CacheLookup::Found(k.verifying_key())
        );
        assert_eq!(
            c.at(NOW).verify_key("a.example", k.key_id()),
            Some(k.verifying_key())
        );
        assert_eq!(c.at(NOW).verify_key("b.example", k.key_id()), None);
    }

    #[test]
    fn unknown_key_id_of_a_cached_server_triggers_a_rate_limited_refetch() {
        let mut c = KeyCache::new();
        c.insert(verified("a.example", "k", HOUR).0);
        let other = KeyId::from_version("rotated").unwrap();
        assert_eq!(c.lookup("a.example", &other, NOW), CacheLookup::Fetch);
        c.record_fetch_attempt("a.example", NOW);
        assert_eq!(
            c.lookup("a.example", &other, NOW + 1000),
            CacheLookup::Unavailable
        );
    }

    #[test]
    fn keys_expire_at_their_cache_time() {
        let mut c = KeyCache::new();
        let (v, k) = verified("a.example", "k", HOUR);
        c.insert(v);
        assert!(c.get("a.example", k.key_id(), NOW + HOUR - 1).is_some());
        assert!(c.get("a.example", k.key_id(), NOW + HOUR).is_none());
        assert_eq!(
            c.lookup("a.example", k.key_id(), NOW + HOUR),
            CacheLookup::Fetch
        );
        c.purge_stale(NOW + HOUR);
        assert!(c.servers.is_empty());
    }

    #[test]
    fn server_names_are_looked_up_without_regard_to_case() {
        let mut c = KeyCache::new();
        let (v, k) = verified("a.example", "k", HOUR);
        c.insert(v);
        assert_eq!(
            c.lookup("A.Example", k.key_id(), NOW),
            CacheLookup::Found(k.verifying_key())
        );
        c.record_fetch_attempt("B.EXAMPLE", NOW);
        assert_eq!(
            c.lookup("b.example", k.key_id(), NOW + 1),
            CacheLookup::Unavailable
        );
    }

    #[test]
    fn a_flood_of_failed_fetches_is_bounded_and_keeps_fresh_keys() {
        let mut c = KeyCache::with_max_servers(100);
        let (v, k) = verified("good.example", "k", HOUR);
        c.insert(v);
        let id = KeyId::from_version("k").unwrap();
        for i in 0..10_000 {
            let origin = format!("o{i}.example");
            assert_eq!(c.lookup(&origin, &id, NOW), CacheLookup::Fetch);
            c.record_fetch_attempt(&origin, NOW);
            // The failure just recorded is remembered (negative cache).
            assert_eq!(c.lookup(&origin, &id, NOW + 1), CacheLookup::Unavailable);
            assert!(c.len() <= 100);
        }
        assert_eq!(
            c.lookup("good.example", k.key_id(), NOW),
            CacheLookup::Found(k.verifying_key())
        );
    }
}
