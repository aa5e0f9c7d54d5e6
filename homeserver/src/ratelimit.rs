//! Token-bucket rate limiting keyed by client (IP or user) and endpoint class.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Buckets above this count trigger a sweep of full (idle) buckets.
const SWEEP_THRESHOLD: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A set of token buckets, one per key, all with the same rate.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate.burst` requests at once, refilled at `rate.per_second`.
    pub fn new(rate: RateLimit) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(retry_after_ms)` when the bucket is empty.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.rate.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SWEEP_THRESHOLD {
            let per_second = self.rate.per_second;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * per_second < burst
            });
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
}
