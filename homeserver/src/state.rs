//! Shared state of the running server.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parley_client_api::RateLimitClass;
use parley_schema::Store;

use crate::config::Config;
use crate::error::Error;
use crate::ratelimit::RateLimiter;
use crate::tokens::TokenKeys;

/// Counters kept for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests refused for a missing or bad access token.
    pub auth_failures: AtomicU64,
    /// Requests refused by a rate limit.
    pub rate_limited: AtomicU64,
}

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub tokens: Arc<TokenKeys>,
    pub metrics: Arc<Metrics>,
    login_limiter: Arc<RateLimiter<IpAddr>>,
    register_limiter: Arc<RateLimiter<IpAddr>>,
}

impl AppState {
    /// Builds the state from loaded parts.
    pub fn new(config: Config, store: Store, tokens: TokenKeys) -> AppState {
        AppState {
            login_limiter: Arc::new(RateLimiter::new(config.rate_limits.login)),
            register_limiter: Arc::new(RateLimiter::new(config.rate_limits.register)),
            config: Arc::new(config),
            store,
            tokens: Arc::new(tokens),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Takes a token from the IP's bucket of `class`, or refuses with 429.
    pub fn check_ip_rate(&self, class: RateLimitClass, ip: IpAddr) -> Result<(), Error> {
        let limiter = match class {
            RateLimitClass::None => return Ok(()),
            RateLimitClass::Login => &self.login_limiter,
            RateLimitClass::Register => &self.register_limiter,
        };
        limiter.check(&ip).map_err(|retry_after_ms| {
            self.metrics
                .rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Error::LimitExceeded { retry_after_ms }
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
