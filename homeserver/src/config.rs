//! Configuration: a TOML file, overridden by `PARLEY_*` environment variables and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration of one homeserver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This server's name: the domain part of its user ids.
    pub server_name: String,
    /// Address the HTTP listener binds.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and generated keys.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; defaults to `sqlite://<data_dir>/parley.db`.
    pub database: Option<String>,
    /// Connections in the database pool.
    pub database_max_connections: usize,
    /// Logging.
    pub log: LogConfig,
    /// Who may register.
    pub registration: RegistrationConfig,
    /// Token lifetimes.
    pub auth: AuthConfig,
    /// Size limits and protocol limits.
    pub limits: LimitsConfig,
    /// Rate limits per client IP.
    pub rate_limits: RateLimitsConfig,
    /// Server-to-server federation.
    pub federation: FederationConfig,
    /// Background jobs that purge expired and old rows.
    pub retention: RetentionConfig,
    /// Directory of the built web client, served at `/`; unset: found by [`crate::api::web_client`].
    pub web_client_dir: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key (PEM) instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Threads of the async runtime; unset: one per core.
    pub worker_threads: Option<usize>,
    /// The media repository.
    pub media: MediaConfig,
}

/// The media repository ([`crate::media`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Directory of the media files; unset: `media` in the data dir. Processes sharing one
    /// PostgreSQL database must share this directory too (a network or cluster filesystem).
    pub store_path: Option<PathBuf>,
    /// Bytes of media one user may hold on this server (413 `P_QUOTA_EXCEEDED` past it).
    pub user_quota_bytes: u64,
    /// Bytes of other servers' media cached here; past it the least recently read go.
    pub remote_cache_bytes: u64,
    /// Uploads one user may run at once (429 past it).
    pub max_concurrent_uploads_per_user: usize,
    /// Remote fetches running at once on this process (a download waits for a slot).
    pub max_concurrent_remote_fetches: usize,
    /// Longest an upload or a remote fetch may take, in milliseconds.
    pub transfer_timeout_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            store_path: None,
            user_quota_bytes: 1024 * 1024 * 1024,
            remote_cache_bytes: 4 * 1024 * 1024 * 1024,
            max_concurrent_uploads_per_user: 2,
            max_concurrent_remote_fetches: 8,
            transfer_timeout_ms: 30 * 60 * 1000,
        }
    }
}

/// `GET /_parley/metrics` ([`crate::metrics`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The bearer token a scraper sends (at least 16 characters); unset: the endpoint answers
    /// 404 and no metrics are exposed.
    pub bearer_token: Option<String>,
}

/// The server's own certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Federation settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Whether this server talks to other servers at all.
    pub enabled: bool,
    /// Use plain `http://` to reach other servers (tests on loopback only).
    pub allow_insecure_http: bool,
    /// `server_name → host:port` overrides of the normal resolution (tests, split DNS).
    pub resolve: std::collections::BTreeMap<String, String>,
    /// Federate with servers named by an IP literal (`203.0.113.7:8448`), both ways.
    pub allow_ip_literals: bool,
    /// Connect to loopback, private and link-local addresses (a name resolving there, or an
    /// IP literal). `resolve` entries are always allowed.
    pub allow_private_addresses: bool,
    /// Largest inbound federation body, in bytes.
    pub max_request_bytes: usize,
    /// Longest wait between retries to an unreachable server, in milliseconds.
    pub max_backoff_ms: u64,
    /// Queued events per destination above which a warning is logged.
    pub outbox_warn_len: i64,
    /// Largest transaction this server sends, in bytes (well under receivers' body caps).
    pub max_txn_bytes: usize,
    /// Events for a server that has been failing this long are dropped (its devices catch
    /// up from the hubs), in milliseconds.
    pub outbox_max_age_ms: u64,
    /// With several processes on one PostgreSQL database: how long a process's claim on
    /// sending to a destination lasts without renewal, so how soon another takes over when it
    /// dies, in milliseconds.
    pub outbox_lease_ms: u64,
    /// If not empty, only servers matching one of these globs (`*` wildcard) may federate.
    pub allow: Vec<String>,
    /// Servers matching one of these globs may not federate (checked after `allow`).
    pub deny: Vec<String>,
    /// PEM file of extra CA certificates trusted for other servers (besides the built-in roots).
    pub ca_file: Option<PathBuf>,
    /// Most recipients a relayed Welcome may list (a group's plausible size).
    pub max_welcome_recipients: usize,
    /// Key-document fetches running at once, whoever caused them.
    pub max_key_fetches_in_flight: usize,
}

impl FederationConfig {
    /// Whether the ACL lets this server federate with `server_name`, both ways. Globs match
    /// the host (ports are ignored on both sides); IP-literal names need `allow_ip_literals`.
    pub fn allows(&self, server_name: &str) -> bool {
        self.allows_with(&[], &[], server_name)
    }

    /// [`FederationConfig::allows`] with more rules (those added at runtime): a server is
    /// allowed when neither list of allow rules has an entry or one matches, and no deny rule
    /// of either list matches.
    pub fn allows_with(&self, allow: &[String], deny: &[String], server_name: &str) -> bool {
        let Ok(name) = parley_federation::destination::ServerName::parse(server_name) else {
            return false;
        };
        if name.is_ip_literal() && !self.allow_ip_literals {
            return false;
        }
        let host = name.host();
        let matches =
            |patterns: &[String]| patterns.iter().any(|p| glob_match(strip_port(p), host));
        let no_allow_rules = self.allow.is_empty() && allow.is_empty();
        (no_allow_rules || matches(&self.allow) || matches(allow))
            && !matches(&self.deny)
            && !matches(deny)
    }
}

/// A glob without its `:port` suffix, if it has one (`localhost:*` → `localhost`).
fn strip_port(pattern: &str) -> &str {
    match pattern.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.ends_with(']')
                && port.bytes().all(|b| b.is_ascii_digit() || b == b'*') =>
        {
            host
        }
        Some((host, port))
            if host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit() || b == b'*') =>
        {
            host
        }
        _ => pattern,
    }
}

/// `*` matches any run of characters (including none); everything else matches itself,
/// case-insensitively (server names are DNS names).
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == n;
    }
    let mut rest = n.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            enabled: true,
            allow_insecure_http: false,
            resolve: Default::default(),
            allow_ip_literals: false,
            allow_private_addresses: false,
            max_request_bytes: 4 * 1024 * 1024,
            max_backoff_ms: 3_600_000,
            outbox_warn_len: 10_000,
            max_txn_bytes: 1024 * 1024,
            outbox_max_age_ms: 3 * 24 * 3600 * 1000,
            outbox_lease_ms: 30_000,
            allow: Vec::new(),
            deny: Vec::new(),
            ca_file: None,
            max_welcome_recipients: 1000,
            max_key_fetches_in_flight: 16,
        }
    }
}

/// The retention jobs ([`crate::retention`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the jobs run (the first time at start-up), in milliseconds.
    pub interval_ms: u64,
    /// How long a used client `txn_id` and the answer to an inbound federation transaction
    /// are remembered, in milliseconds; a retry after that is treated as new.
    pub transactions_ms: u64,
    /// How long messages are kept, in milliseconds; older ones are deleted once every current
    /// member device has received them and no other server still waits for them. Unset (the
    /// default): messages are kept for ever.
    pub messages_ms: Option<u64>,
    /// How long an upload no sent message named is kept, in milliseconds.
    pub unreferenced_media_ms: u64,
    /// How long uploads are kept, named or not, in milliseconds; unset (the default): for
    /// ever.
    pub media_ms: Option<u64>,
    /// How long another server's media stays cached here after it was last read, in
    /// milliseconds.
    pub remote_media_ms: u64,
    /// How often the ciphertext of expired disappearing messages is wiped, in milliseconds
    /// (they are never delivered once expired, whatever this says).
    pub expiry_sweep_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_ms: 3_600_000,
            transactions_ms: 7 * 24 * 3_600_000,
            messages_ms: None,
            unreferenced_media_ms: 24 * 3_600_000,
            media_ms: None,
            remote_media_ms: 7 * 24 * 3_600_000,
            expiry_sweep_ms: 60_000,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `parley=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Registration policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// `open`, `closed` or `token`.
    pub mode: RegistrationMode,
    /// Tokens accepted in `token` mode.
    pub tokens: Vec<String>,
    /// Shortest password accepted at registration, in characters.
    pub min_password_length: usize,
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Open,
    Closed,
    Token,
}

/// Token lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an access token (JWT), in milliseconds.
    pub access_token_ttl_ms: u64,
    /// Lifetime of a refresh token, in milliseconds.
    pub refresh_token_ttl_ms: u64,
    /// A rotated-out refresh token presented again within this many milliseconds, while its
    /// successor is unused, gets that same successor (a retry after a lost answer) instead of
    /// revoking the device. 0 (the default) keeps the protocol's rule: reuse revokes.
    pub refresh_retry_grace_ms: u64,
    /// How long a passwordless-login challenge is accepted, in milliseconds.
    pub login_challenge_ttl_ms: u64,
}

/// Size and protocol limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest JSON body of account endpoints, in bytes.
    pub max_request_bytes: usize,
    /// Most key packages in one upload.
    pub max_key_packages_per_upload: usize,
    /// Most unclaimed key packages a device may hold (an upload past it is 413).
    pub max_key_packages_per_device: u64,
    /// Most devices one commit may add (413 past it).
    pub max_adds_per_commit: usize,
    /// Most other servers a group hosted here may have members on (413 past it).
    pub max_servers_per_group: usize,
    /// Most proposals a group hosted here accepts in one epoch (413 past it, until a commit).
    pub max_proposals_per_epoch: usize,
    /// How many epochs back an application message is still accepted.
    pub max_past_epochs: u64,
    /// Largest decoded MLS message, in bytes.
    pub max_message_bytes: u64,
    /// Largest decoded commit + welcome + group info, in bytes.
    pub max_bundle_bytes: u64,
    /// Longest accepted key-package lifetime, in milliseconds.
    pub max_key_package_lifetime_ms: u64,
    /// A connection that has not sent a request's complete headers within this is closed.
    pub header_read_timeout_ms: u64,
    /// A request whose body has not fully arrived within this is refused (408 `P_TIMEOUT`).
    pub body_read_timeout_ms: u64,
    /// Connections open at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Largest media upload (and largest media fetched from another server), in bytes.
    pub max_upload_bytes: u64,
}

/// Rate limits, each a token bucket per client IP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Login and refresh attempts.
    pub login: RateLimit,
    /// Registrations.
    pub register: RateLimit,
    /// Key-package uploads, per user.
    pub key_upload: RateLimit,
    /// Key-package claims, per user.
    pub key_claim: RateLimit,
    /// Group creation, per user.
    pub group_create: RateLimit,
    /// Commits, proposals and application messages, per user.
    pub send: RateLimit,
    /// Token refreshes, per client address.
    pub refresh: RateLimit,
    /// Token refreshes, per refresh token (a client retrying one refresh).
    pub refresh_token: RateLimit,
    /// Login attempts, per account (besides per address).
    pub login_account: RateLimit,
    /// Device-list lookups, per user.
    pub device_lookup: RateLimit,
    /// Admin API requests, per admin user.
    pub admin: RateLimit,
    /// Media uploads, per user.
    pub media_upload: RateLimit,
    /// Media downloads, per user.
    pub media_download: RateLimit,
    /// Inbound federation requests, per origin server (counted once authenticated).
    pub federation: RateLimit,
    /// Inbound federation requests per client address, counted before the body is read or
    /// any key fetched.
    pub federation_per_address: RateLimit,
    /// Key-document fetches that unauthenticated requests from one client address may cause.
    pub key_fetch_per_address: RateLimit,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost:8008".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("./data"),
            database: None,
            database_max_connections: 8,
            log: LogConfig::default(),
            registration: RegistrationConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            federation: FederationConfig::default(),
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
            worker_threads: None,
            media: MediaConfig::default(),
            web_client_dir: None,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            mode: RegistrationMode::Open,
            tokens: Vec::new(),
            min_password_length: 8,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_ms: 15 * 60 * 1000,
            refresh_token_ttl_ms: 30 * 24 * 3600 * 1000,
            refresh_retry_grace_ms: 0,
            login_challenge_ttl_ms: 120_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 64 * 1024,
            max_key_packages_per_upload: 100,
            max_key_packages_per_device: 200,
            max_adds_per_commit: 1000,
            max_servers_per_group: 100,
            max_proposals_per_epoch: 100,
            max_past_epochs: 5,
            max_message_bytes: 64 * 1024,
            max_bundle_bytes: 1024 * 1024,
            max_key_package_lifetime_ms: 90 * 24 * 3600 * 1000,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            max_connections: 10_000,
            max_upload_bytes: 100 * 1024 * 1024,
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            login: RateLimit {
                per_second: 0.5,
                burst: 10,
            },
            register: RateLimit {
                per_second: 0.1,
                burst: 5,
            },
            key_upload: RateLimit {
                per_second: 1.0,
                burst: 20,
            },
            key_claim: RateLimit {
                per_second: 10.0,
                burst: 50,
            },
            group_create: RateLimit {
                per_second: 1.0,
                burst: 20,
            },
            send: RateLimit {
                per_second: 200.0,
                burst: 1000,
            },
            refresh: RateLimit {
                per_second: 1.0,
                burst: 30,
            },
            refresh_token: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
            login_account: RateLimit {
                per_second: 0.2,
                burst: 20,
            },
            device_lookup: RateLimit {
                per_second: 20.0,
                burst: 200,
            },
            admin: RateLimit {
                per_second: 10.0,
                burst: 100,
            },
            media_upload: RateLimit {
                per_second: 1.0,
                burst: 30,
            },
            media_download: RateLimit {
                per_second: 20.0,
                burst: 200,
            },
            federation: RateLimit {
                per_second: 500.0,
                burst: 2000,
            },
            federation_per_address: RateLimit {
                per_second: 500.0,
                burst: 2000,
            },
            // 10 at once, then one a second: at most 20 in any 10 s.
            key_fetch_per_address: RateLimit {
                per_second: 1.0,
                burst: 10,
            },
        }
    }
}

impl Config {
    /// Reads a TOML file; a missing file is an error, unknown keys too.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The database URL, defaulting to SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("parley.db").display()),
        }
    }

    /// The largest body of an endpoint declaring `limit`: room for the base64 of the MLS bytes
    /// it may carry (bounded by the decoded limits) plus JSON overhead.
    pub fn body_limit(&self, limit: parley_client_api::BodyLimit) -> usize {
        use parley_client_api::BodyLimit;
        let base64 = |bytes: u64| (bytes as usize).div_ceil(3) * 4;
        let overhead = self.limits.max_request_bytes;
        let l = &self.limits;
        match limit {
            BodyLimit::Default => l.max_request_bytes,
            BodyLimit::Bundle => base64(l.max_bundle_bytes) + overhead,
            BodyLimit::Message => base64(l.max_message_bytes) + overhead,
            BodyLimit::KeyUpload => {
                (l.max_key_packages_per_upload + 1) * base64(l.max_message_bytes.min(16 * 1024))
                    + overhead
            }
            BodyLimit::Federation => self.federation.max_request_bytes,
            BodyLimit::Media => usize::try_from(l.max_upload_bytes).unwrap_or(usize::MAX),
        }
    }

    /// Checks values that TOML types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self
            .metrics
            .bearer_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            anyhow::bail!("metrics.bearer_token must be at least 16 characters");
        }
        if self.server_name.bytes().any(|b| b.is_ascii_uppercase()) {
            anyhow::bail!(
                "server_name {:?} must be lower case (server names compare without regard to case; the configured one is the canonical spelling)",
                self.server_name
            );
        }
        if !parley_client_api::ids::is_valid_server_name(&self.server_name) {
            anyhow::bail!(
                "server_name {:?} is not a valid server name",
                self.server_name
            );
        }
        for (name, rl) in [
            ("login", self.rate_limits.login),
            ("register", self.rate_limits.register),
        ] {
            if !(rl.per_second > 0.0 && rl.per_second.is_finite()) || rl.burst == 0 {
                anyhow::bail!("rate_limits.{name}: per_second must be > 0 and burst ≥ 1");
            }
        }
        for proxy in &self.trusted_proxies {
            if crate::client_address::Cidr::parse(proxy).is_none() {
                anyhow::bail!("trusted_proxies: {proxy:?} is not an address or CIDR");
            }
        }
        if self.auth.access_token_ttl_ms == 0 || self.auth.refresh_token_ttl_ms == 0 {
            anyhow::bail!("auth token lifetimes must be > 0");
        }
        if self.retention.interval_ms == 0
            || self.retention.expiry_sweep_ms == 0
            || self.retention.transactions_ms == 0
            || self.retention.messages_ms == Some(0)
            || self.auth.login_challenge_ttl_ms == 0
        {
            anyhow::bail!(
                "retention.interval_ms, retention.expiry_sweep_ms, retention.transactions_ms, retention.messages_ms and auth.login_challenge_ttl_ms must be > 0"
            );
        }
        Ok(())
    }
}

/// The commented default configuration printed by `parley generate-config`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Parley homeserver configuration.
# Every value here is the default; flags (`parley serve --help`) and PARLEY_* environment
# variables override this file.

# The domain of this server's user ids (@alice:<server_name>). A DNS name, optional port.
server_name = "localhost:8008"

# Address the HTTP listener binds.
listen = "127.0.0.1:8008"

# Directory for the SQLite database and the keys the server generates (JWT signing key).
# Created if missing. Keep it private: it holds secrets.
data_dir = "./data"

# Database URL: sqlite://PATH (embedded default: sqlite://<data_dir>/parley.db)
# or postgres://user:password@host:port/dbname for production and several processes.
# database = "postgres://parley@127.0.0.1/parley"

# Connections in the database pool (SQLite: reader connections; there is one writer).
database_max_connections = 8

# The built web client (web-client/build.sh), served at /. PARLEY_WEB_CLIENT_DIR overrides it.
# Unset, the first of these holding an index.html: web-client/dist in the working directory,
# web-client/ next to the parley executable, web-client/dist two levels above it
# (target/release/parley in a checkout). The start-up log names the directory served.
# web_client_dir = "/usr/share/parley/web-client"

# Serve HTTPS directly (otherwise plain HTTP, e.g. behind a TLS-terminating proxy).
# tls = { cert_file = "/etc/parley/fullchain.pem", key_file = "/etc/parley/privkey.pem" }

# Reverse proxies (addresses or CIDRs, e.g. "10.0.0.0/8") whose X-Forwarded-For header names
# the client. From any other peer the header is ignored. Rate limits count IPv6 clients by /64.
trusted_proxies = []
# Threads of the async runtime (unset: one per core), e.g. 1 for several processes on one
# machine.
# worker_threads = 1

[metrics]
# Prometheus metrics at GET /_parley/metrics, for a scraper sending this bearer token (at
# least 16 characters). Unset: the endpoint answers 404.
# bearer_token = "a long random string"

[log]
# A tracing filter; RUST_LOG overrides it.
level = "info"
# "text" or "json".
format = "text"

[registration]
# "open": anyone may register; "closed": nobody; "token": only with one of `tokens` or a
# token an admin made (POST /_parley/admin/v1/registration_tokens).
mode = "open"
tokens = []
# Shorter passwords are refused at registration (400 P_WEAK_PASSWORD).
min_password_length = 8

[auth]
# Access tokens (JWTs) are short-lived; clients renew them with their refresh token.
access_token_ttl_ms = 900000        # 15 minutes
refresh_token_ttl_ms = 2592000000   # 30 days
# A client retrying a refresh whose answer it lost: within this window, while the new refresh
# token is unused, the old one gets the same new one again instead of revoking the device.
# 0 keeps the protocol's rule (any reuse revokes). A few seconds suits flaky mobile networks.
refresh_retry_grace_ms = 0
# A passwordless-login challenge (POST /login/challenge) is accepted for this long.
login_challenge_ttl_ms = 120000

[limits]
# Largest JSON body of account endpoints. Bodies carrying MLS messages may be as large as
# base64 of max_bundle_bytes (commits) or 100 key packages (uploads).
max_request_bytes = 65536
# Most key packages in one upload (413 P_TOO_LARGE beyond).
max_key_packages_per_upload = 100
# Most unclaimed key packages one device may hold (413 P_TOO_LARGE for an upload past it,
# nothing of it stored).
max_key_packages_per_device = 200
# Groups this server is the hub of: devices one commit may add, and other servers the group
# may span (413 P_TOO_LARGE past either). Adds on servers the federation ACL refuses are 403.
max_adds_per_commit = 1000
max_servers_per_group = 100
# Proposals a group accepts in one epoch (413 P_TOO_LARGE past it until the next commit).
max_proposals_per_epoch = 100
# Protocol limits announced in GET /_parley/client/versions.
max_past_epochs = 5
max_message_bytes = 65536
max_bundle_bytes = 1048576
max_key_package_lifetime_ms = 7776000000   # 90 days
# Slow clients: a connection without a request's complete headers within this is closed; a
# body not fully arrived within body_read_timeout_ms is refused (408 P_TIMEOUT).
header_read_timeout_ms = 30000
body_read_timeout_ms = 60000
# Connections open at once; more wait in the kernel's listen backlog. Keep it below the
# process's file-descriptor limit (ulimit -n).
max_connections = 10000
# Largest media upload (413 P_TOO_LARGE), and largest media fetched from another server.
max_upload_bytes = 104857600     # 100 MiB

[rate_limits]
# Token buckets per client IP: `burst` requests at once, refilled at `per_second`.
login = { per_second = 0.5, burst = 10 }
register = { per_second = 0.1, burst = 5 }
# Per user: key-package uploads and claims, group creation, and sends (commits, proposals,
# application messages).
key_upload = { per_second = 1.0, burst = 20 }
key_claim = { per_second = 10.0, burst = 50 }
group_create = { per_second = 1.0, burst = 20 }
send = { per_second = 200.0, burst = 1000 }
# Token refreshes per client address, and per refresh token; login attempts per account
# (besides login per address above); device-list lookups per user.
refresh = { per_second = 1.0, burst = 30 }
refresh_token = { per_second = 0.2, burst = 5 }
login_account = { per_second = 0.2, burst = 20 }
device_lookup = { per_second = 20.0, burst = 200 }
# Per admin user: admin API requests.
admin = { per_second = 10.0, burst = 100 }
# Per user: media uploads and downloads.
media_upload = { per_second = 1.0, burst = 30 }
media_download = { per_second = 20.0, burst = 200 }
# Per origin server: inbound federation requests (once their signature is verified).
federation = { per_second = 500.0, burst = 2000 }
# Per client address, before a federation request's body is read or its signature checked:
# the requests, and the key-document fetches they may cause (10 at once, then one a second:
# at most 20 fetches in any 10 s from one address, whatever origins the requests name).
federation_per_address = { per_second = 500.0, burst = 2000 }
key_fetch_per_address = { per_second = 1.0, burst = 10 }

[retention]
# Background jobs: purge expired key packages, and forget used client txn_ids and answers to
# inbound federation transactions once they are older than `transactions_ms`. They run at
# start-up and then every `interval_ms`.
interval_ms = 3600000               # 1 hour
transactions_ms = 604800000         # 7 days: a retry after that is a new send
# Delete messages older than this once every current member device has received them and no
# other server waits for them. Unset: keep messages for ever.
# messages_ms = 2592000000          # 30 days
# Media: uploads no sent message named are deleted after `unreferenced_media_ms`; every
# upload after `media_ms` if set (unset: kept for ever); other servers' media cached here
# once unread for `remote_media_ms`.
unreferenced_media_ms = 86400000    # 24 hours
# media_ms = 31536000000            # 365 days
remote_media_ms = 604800000         # 7 days
# Disappearing messages: an expired message is never delivered; its ciphertext is wiped by a
# sweep every `expiry_sweep_ms`.
expiry_sweep_ms = 60000             # 1 minute

[media]
# Directory of the media files; unset: `media` in the data dir. Several processes on one
# PostgreSQL database must share it (a network or cluster filesystem).
# store_path = "/var/lib/parley/media"
# Bytes of media one user may hold (413 P_QUOTA_EXCEEDED past it).
user_quota_bytes = 1073741824       # 1 GiB
# Bytes of other servers' media cached here; past it the least recently read go.
remote_cache_bytes = 4294967296     # 4 GiB
# Uploads one user may run at once (429), remote fetches at once on this process.
max_concurrent_uploads_per_user = 2
max_concurrent_remote_fetches = 8
# Longest an upload or a remote fetch may take (408 / 502 past it).
transfer_timeout_ms = 1800000       # 30 minutes

[federation]
enabled = true
# Plain http:// to other servers: only for tests on loopback.
allow_insecure_http = false
# server_name = "host:port" overrides of normal resolution (.well-known, then :8448).
resolve = {}
# Servers named by an IP literal are refused both ways unless allowed; connections to
# loopback, private and link-local addresses (by IP literal, delegation or DNS) too. Entries
# of `resolve` are configuration and always allowed.
allow_ip_literals = false
allow_private_addresses = false
max_request_bytes = 4194304
# Retries to an unreachable server back off exponentially (with jitter) up to this.
max_backoff_ms = 3600000
# A warning is logged when this many events wait for one server.
outbox_warn_len = 10000
# Largest transaction sent to another server (a bigger event goes alone); a 413 halves it.
max_txn_bytes = 1048576
# Events for a server that has been failing for this long are dropped; its devices catch up
# from the hubs when it returns.
outbox_max_age_ms = 259200000   # 3 days
# Several processes on one PostgreSQL database: one sends to a destination at a time; if it
# dies, another takes over after this long (milliseconds).
outbox_lease_ms = 30000
# Server ACL, applied to inbound and outbound federation (403 P_FORBIDDEN). Globs with `*`.
# An empty allow list allows everyone not denied.
allow = []
deny = []
# Extra CA certificates (PEM) trusted for other servers, besides the built-in web roots.
# ca_file = "/etc/parley/federation-ca.pem"
# Most recipients a relayed Welcome may list (413 P_TOO_LARGE beyond). It is stored once, for
# the listed devices that exist on this server.
max_welcome_recipients = 1000
# Key-document fetches running at once (a request needing one more is 429 P_LIMIT_EXCEEDED).
max_key_fetches_in_flight = 16
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_parses_to_the_defaults() {
        let parsed = Config::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        let default = Config::default();
        assert_eq!(parsed.server_name, default.server_name);
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(
            parsed.limits.max_request_bytes,
            default.limits.max_request_bytes
        );
        assert_eq!(
            parsed.auth.access_token_ttl_ms,
            default.auth.access_token_ttl_ms
        );
        assert_eq!(
            parsed.auth.refresh_token_ttl_ms,
            default.auth.refresh_token_ttl_ms
        );
        assert_eq!(
            parsed.limits.max_key_package_lifetime_ms,
            default.limits.max_key_package_lifetime_ms
        );
        assert_eq!(
            parsed.rate_limits.login.burst,
            default.rate_limits.login.burst
        );
        assert_eq!(parsed.retention.interval_ms, default.retention.interval_ms);
        assert_eq!(
            parsed.retention.transactions_ms,
            default.retention.transactions_ms
        );
        parsed.validate().unwrap();
    }

    #[test]
    fn federation_acl_globs_allow_and_deny() {
        let mut f = FederationConfig::default();
        assert!(f.allows("anything.example"));
        f.deny = vec!["*.evil.example".into()];
        assert!(!f.allows("x.evil.example"));
        assert!(f.allows("evil.example.org"));
        f.allow = vec!["*.example".into(), "localhost:*".into()];
        assert!(f.allows("a.example"));
        assert!(f.allows("localhost:8448"));
        assert!(!f.allows("a.example.org"));
        assert!(!f.allows("X.EVIL.example"));
        // Ports are ignored on both sides.
        assert!(f.allows("a.example:8449"));
        f.deny = vec!["bad.example:8448".into()];
        assert!(!f.allows("bad.example:9999"));
    }

    #[test]
    fn ip_literal_names_need_their_own_setting() {
        let mut f = FederationConfig::default();
        assert!(!f.allows("203.0.113.7:8448"));
        assert!(!f.allows("[2001:db8::1]:8448"));
        f.allow_ip_literals = true;
        assert!(f.allows("203.0.113.7:8448"));
        f.deny = vec!["203.0.113.*".into()];
        assert!(!f.allows("203.0.113.7:8448"));
        assert!(!f.allows("not a name"));
    }

    #[test]
    fn an_upper_case_server_name_is_refused() {
        let c = Config::from_toml("server_name = \"Chat.Example\"").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("server_name = \"chat.example\"").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("sever_name = \"typo.example\"").is_err());
    }

    #[test]
    fn retention_periods_of_zero_are_invalid() {
        let c = Config::from_toml("[retention]\ninterval_ms = 0").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[retention]\ntransactions_ms = 0").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[retention]\nmessages_ms = 0").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[retention]\nmessages_ms = 86400000").unwrap();
        c.validate().unwrap();
        assert_eq!(c.retention.messages_ms, Some(86_400_000));
        let c =
            Config::from_toml("[retention]\ninterval_ms = 1000\ntransactions_ms = 2000").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn token_mode_without_config_tokens_is_valid_as_admins_make_them() {
        let c = Config::from_toml("[registration]\nmode = \"token\"").unwrap();
        c.validate().unwrap();
    }
}
