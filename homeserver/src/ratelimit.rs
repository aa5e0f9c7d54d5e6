//! Token-bucket rate limiting keyed by client (address or user) and endpoint class.
//!
//! A limiter's memory is bounded: its buckets are spread over shards, each holding at most
//! its share of `max_keys`; a full shard first drops its idle (full) buckets, then any, so a
//! flood of new addresses costs a bounded map and only ever one shard's scan under a lock.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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

/// A request refused by a rate limit (or a saturated resource): retry no sooner than
/// `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests")]
pub struct RateLimited {
    /// Milliseconds before a retry may succeed.
    pub retry_after_ms: u64,
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
    pub fn held(&self) -> usize {
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
                assert!(rl.held() <= 6_400, "{} keys held", rl.held());
            }
        }
        assert!(rl.held() <= 6_400, "{} keys held", rl.held());
    }
}
