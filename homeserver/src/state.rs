//! Shared state of the running server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parley_client_api::RateLimitClass;
use parley_schema::Store;

use crate::accounts::tokens::TokenKeys;
use crate::config::Config;
use crate::delivery::notifier::Notifier;
use crate::delivery::wire_forms::WireForms;
use crate::federation::client::FederationClient;
use crate::federation::fills::GapFiller;
use crate::federation::outbox::Outbox;
use crate::ratelimit::{RateLimited, RateLimiter};

/// A readiness verdict (`Err` holds the reason) and when it was reached.
pub type ReadinessVerdict = (std::time::Instant, Result<(), String>);

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub tokens: Arc<TokenKeys>,
    pub notifier: Arc<Notifier>,
    /// Recent messages' client wire forms, shared by the WebSockets that send them.
    pub wire_forms: Arc<WireForms>,
    /// Connections waiting for ephemeral messages.
    pub ephemerals: Arc<crate::delivery::ephemeral::Ephemerals>,
    /// How far devices said they received, not yet written.
    pub received: Arc<crate::delivery::received::ReceivedPositions>,
    /// The drain on shutdown, and the open WebSockets.
    pub drain: Arc<crate::drain::Drain>,
    /// The last readiness check and when it ran: `/_parley/ready` reuses it for a second and
    /// runs one check at a time, so polling it costs the database at most one query a second.
    pub readiness: Arc<tokio::sync::Mutex<Option<ReadinessVerdict>>>,
    /// Signed requests to other servers.
    pub fed: Arc<FederationClient>,
    /// Durable delivery to other servers.
    pub outbox: Arc<Outbox>,
    /// Running gap fills of groups whose hub is elsewhere.
    pub gaps: Arc<GapFiller>,
    /// The media repository's files and running transfers.
    pub media: Arc<crate::media::files::MediaRepo>,
    /// Spacing of the hub's `member_devices_changed` notices.
    pub device_notices: Arc<crate::hub::notice_gate::DeviceNoticeGate>,
    /// Password hashing, a bounded number at a time.
    pub passwords: Arc<crate::accounts::passwords::Passwords>,
    limiters: Arc<HashMap<RateLimitClass, RateLimiter<String>>>,
    federation_limiter: Arc<RateLimiter<String>>,
    /// Inbound federation requests per client address, before authentication.
    federation_address_limiter: Arc<RateLimiter<IpAddr>>,
    /// Key fetches caused by unauthenticated requests, per client address.
    key_fetch_limiter: Arc<RateLimiter<IpAddr>>,
    /// Login attempts per account.
    login_account_limiter: Arc<RateLimiter<String>>,
    /// Refreshes per refresh token.
    refresh_token_limiter: Arc<RateLimiter<[u8; 32]>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<crate::client_address::Cidr>>,
}

impl AppState {
    /// Builds the state from loaded parts.
    pub fn new(
        config: Config,
        store: Store,
        tokens: TokenKeys,
        fed: Arc<FederationClient>,
    ) -> AppState {
        let rl = &config.rate_limits;
        let limiters = HashMap::from([
            (RateLimitClass::Login, RateLimiter::new(rl.login)),
            (RateLimitClass::Register, RateLimiter::new(rl.register)),
            (RateLimitClass::KeyUpload, RateLimiter::new(rl.key_upload)),
            (RateLimitClass::KeyClaim, RateLimiter::new(rl.key_claim)),
            (
                RateLimitClass::GroupCreate,
                RateLimiter::new(rl.group_create),
            ),
            (RateLimitClass::Send, RateLimiter::new(rl.send)),
            (RateLimitClass::Refresh, RateLimiter::new(rl.refresh)),
            (
                RateLimitClass::DeviceLookup,
                RateLimiter::new(rl.device_lookup),
            ),
            (RateLimitClass::Admin, RateLimiter::new(rl.admin)),
            (
                RateLimitClass::MediaUpload,
                RateLimiter::new(rl.media_upload),
            ),
            (
                RateLimitClass::MediaDownload,
                RateLimiter::new(rl.media_download),
            ),
        ]);
        let fed_config = &config.federation;
        let outbox = Outbox::new(
            store.clone(),
            fed.clone(),
            crate::federation::outbox::OutboxConfig {
                max_backoff_ms: fed_config.max_backoff_ms,
                warn_len: fed_config.outbox_warn_len,
                max_txn_bytes: fed_config.max_txn_bytes,
                max_age_ms: fed_config.outbox_max_age_ms,
                lease_ms: fed_config.outbox_lease_ms.clamp(1000, 3_600_000) as i64,
            },
        );
        AppState {
            federation_limiter: Arc::new(RateLimiter::new(config.rate_limits.federation)),
            federation_address_limiter: Arc::new(RateLimiter::new(
                config.rate_limits.federation_per_address,
            )),
            key_fetch_limiter: Arc::new(RateLimiter::new(config.rate_limits.key_fetch_per_address)),
            login_account_limiter: Arc::new(RateLimiter::new(config.rate_limits.login_account)),
            refresh_token_limiter: Arc::new(RateLimiter::new(config.rate_limits.refresh_token)),
            trusted_proxies: Arc::new(
                config
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| crate::client_address::Cidr::parse(p))
                    .collect(),
            ),
            fed,
            outbox,
            gaps: Arc::new(GapFiller::default()),
            passwords: Arc::new(crate::accounts::passwords::Passwords::for_this_machine()),
            device_notices: Arc::default(),
            media: Arc::new(crate::media::files::MediaRepo::new(&config)),
            limiters: Arc::new(limiters),
            notifier: Arc::new(Notifier::default()),
            wire_forms: Arc::new(WireForms::default()),
            received: Arc::default(),
            ephemerals: Arc::default(),
            drain: Arc::new(crate::drain::Drain::default()),
            readiness: Arc::default(),
            config: Arc::new(config),
            store,
            tokens: Arc::new(tokens),
        }
    }

    /// Takes a token from an origin server's federation bucket, or refuses with 429.
    pub fn check_federation_rate(&self, origin: &str) -> Result<(), RateLimited> {
        self.federation_limiter
            .check(&origin.to_owned())
            .map_err(|retry_after_ms| {
                crate::metrics::rate_limited("federation_origin");
                RateLimited { retry_after_ms }
            })
    }

    /// Takes a token from a client address's pre-authentication federation bucket, or
    /// refuses with 429.
    pub fn check_federation_address_rate(&self, ip: IpAddr) -> Result<(), RateLimited> {
        self.federation_address_limiter
            .check(&crate::client_address::address_bucket(ip))
            .map_err(|retry_after_ms| rate_limited("federation_address", retry_after_ms))
    }

    /// Takes a token from a client address's key-fetch budget; `Err(retry_after_ms)` when
    /// it is spent.
    pub fn take_key_fetch(&self, ip: IpAddr) -> Result<(), u64> {
        self.key_fetch_limiter
            .check(&crate::client_address::address_bucket(ip))
            .inspect_err(|_| crate::metrics::rate_limited("key_fetch"))
    }

    /// Takes a token from an account's login bucket, or refuses with 429.
    pub fn check_login_account_rate(&self, user_id: &str) -> Result<(), RateLimited> {
        self.login_account_limiter
            .check(&user_id.to_owned())
            .map_err(|retry_after_ms| rate_limited("login_account", retry_after_ms))
    }

    /// Takes a token from a refresh token's bucket (keyed by its hash), or refuses with 429.
    pub fn check_refresh_token_rate(&self, token_hash: [u8; 32]) -> Result<(), RateLimited> {
        self.refresh_token_limiter
            .check(&token_hash)
            .map_err(|retry_after_ms| rate_limited("refresh_token", retry_after_ms))
    }

    /// Takes a token from `key`'s bucket of `class` (a client IP or a user id), or refuses
    /// with 429.
    pub fn check_rate(&self, class: RateLimitClass, key: String) -> Result<(), RateLimited> {
        let Some(limiter) = self.limiters.get(&class) else {
            return Ok(());
        };
        limiter
            .check(&key)
            .map_err(|retry_after_ms| rate_limited(class.as_str(), retry_after_ms))
    }
}

/// Counts a refusal by the rate limit `limit`, and makes it.
fn rate_limited(limit: &'static str, retry_after_ms: u64) -> RateLimited {
    crate::metrics::rate_limited(limit);
    RateLimited { retry_after_ms }
}
