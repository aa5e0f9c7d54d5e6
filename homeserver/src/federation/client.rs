//! Outbound federation: resolving servers, signing requests with this server's key, and
//! fetching (and caching) other servers' keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use parley_client_api::endpoint::path_of;
use parley_client_api::{Endpoint, Method};
use parley_federation::auth::sign_request;
use parley_federation::destination::{Resolution, Resolver};
use parley_federation::key_cache::{CacheLookup, KeyCache};
use parley_federation::keys::{verify_key_document, KeyId, ServerSigningKey};
use serde_json::Value;

use crate::clock::now_ms;
use crate::config::FederationConfig;
use crate::federation::acl::ServerAcl;

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// The server could not be reached or did not answer in time.
    #[error("{server} is unreachable: {detail}")]
    Unreachable { server: String, detail: String },
    /// It answered with an error.
    #[error("{server} answered {status}: {body}")]
    Refused {
        server: String,
        status: u16,
        body: Value,
    },
    /// Federation with that server is disabled or not allowed.
    #[error("federation with {0} is not allowed")]
    NotAllowed(String),
    /// It answered 200 with something that is not the endpoint's response.
    #[error("{server} answered with a malformed body: {detail}")]
    BadAnswer { server: String, detail: String },
}

/// Signs and sends requests to other servers.
pub struct FederationClient {
    http: reqwest::Client,
    key: Arc<ServerSigningKey>,
    server_name: String,
    resolver: Resolver,
    enabled: bool,
    /// The server ACL in force (config and runtime rules).
    acl: Arc<ServerAcl>,
    keys: Mutex<KeyCache>,
    fetch_gates: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bounds the key fetches running at once, whoever caused them.
    fetches_in_flight: tokio::sync::Semaphore,
    /// Servers that could not be connected to, until when requests to them fail at once.
    recent_failures: Mutex<std::collections::HashMap<String, u64>>,
}

/// DNS resolution that keeps public addresses only: a name pointing at loopback, private or
/// link-local space does not make this server connect there.
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> = found
                .filter(|a| parley_federation::destination::is_public_ip(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outcome of [`FederationClient::verifying_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The origin's current key.
    Found(VerifyingKey),
    /// Not known, and not fetchable now (failed or refused fetch in the last minute).
    Unavailable,
    /// A fetch is needed but the requester's budget or the in-flight cap is spent.
    Throttled { retry_after_ms: u64 },
}

/// How long a server that could not be connected to is not tried again for clients'
/// requests (device lists, key claims, submissions): they fail at once meanwhile.
const FAILURE_MEMORY_MS: u64 = 10_000;
/// Servers remembered as unreachable at most.
const MAX_REMEMBERED_FAILURES: usize = 10_000;

/// Largest key document or `.well-known` answer read from another server.
pub const MAX_KEY_RESPONSE_BYTES: usize = 64 * 1024;

/// Largest answer to any other federation request read from another server.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// `destination` could not be reached, or gave no usable answer.
fn unreachable(destination: &str, detail: String) -> FedError {
    FedError::Unreachable {
        server: destination.to_owned(),
        detail,
    }
}

/// Another server's answer other than 200: a 5xx (but 502, which passes another server's
/// unreachability on) means it failed; anything else is its verdict.
fn verdict(destination: &str, status: u16, body: Value) -> FedError {
    if status >= 500 && status != 502 {
        unreachable(destination, format!("status {status}"))
    } else {
        FedError::Refused {
            server: destination.to_owned(),
            status,
            body,
        }
    }
}

/// Reads a response body of at most `limit` bytes; `None` past it or on a read error.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

impl FederationClient {
    /// A client signing as `server_name` with `key`.
    pub fn new(
        config: &FederationConfig,
        server_name: &str,
        key: Arc<ServerSigningKey>,
    ) -> anyhow::Result<FederationClient> {
        let mut resolver = Resolver::new(config.allow_insecure_http);
        resolver.allow(config.allow_ip_literals, config.allow_private_addresses);
        for (name, target) in &config.resolve {
            resolver
                .insert_override(name, target)
                .map_err(|e| anyhow::anyhow!("federation.resolve.{name}: {e}"))?;
        }
        let mut builder = reqwest::Client::builder();
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", ca_file.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(FederationClient {
            http,
            key,
            server_name: server_name.to_owned(),
            resolver,
            enabled: config.enabled,
            acl: Arc::new(ServerAcl::new(config)),
            keys: Mutex::new(KeyCache::new()),
            fetch_gates: Mutex::new(Default::default()),
            fetches_in_flight: tokio::sync::Semaphore::new(config.max_key_fetches_in_flight.max(1)),
            recent_failures: Mutex::new(Default::default()),
        })
    }

    /// The server ACL in force, both ways.
    pub fn acl(&self) -> &Arc<ServerAcl> {
        &self.acl
    }

    /// This server's name (the `origin` of its requests).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// This server's signing key.
    pub fn signing_key(&self) -> &ServerSigningKey {
        &self.key
    }

    async fn base_url(
        &self,
        destination: &str,
    ) -> Result<parley_federation::destination::Destination, FedError> {
        let refused = |e: parley_federation::Error| match e {
            parley_federation::Error::ForbiddenDestination(_) => {
                FedError::NotAllowed(destination.to_owned())
            }
            other => FedError::Unreachable {
                server: destination.to_owned(),
                detail: other.to_string(),
            },
        };
        match self.resolver.start(destination).map_err(refused)? {
            Resolution::Resolved(d) => Ok(d),
            Resolution::NeedWellKnown(req) => {
                let body = match self.http.get(&req.url).send().await {
                    Ok(r) if r.status().is_success() => {
                        read_capped(r, MAX_KEY_RESPONSE_BYTES).await
                    }
                    _ => None,
                };
                self.resolver.finish(&req, body.as_deref()).map_err(refused)
            }
        }
    }

    /// Calls federation endpoint `E` on `destination`: the path built from its declaration,
    /// the request as its body or query, the answer read as its response.
    pub async fn call<E: Endpoint>(
        &self,
        destination: &str,
        params: &E::Path,
        request: &E::Request,
    ) -> Result<E::Response, FedError> {
        let bad = |detail: String| FedError::BadAnswer {
            server: destination.to_owned(),
            detail,
        };
        let mut uri =
            path_of::<E>(params).ok_or_else(|| bad(format!("path parameters of {}", E::PATH)))?;
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let body = if E::METHOD.has_body() {
            Some(serde_json::to_value(request).map_err(|e| bad(e.to_string()))?)
        } else {
            let query = serde_urlencoded::to_string(request).map_err(|e| bad(e.to_string()))?;
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query);
            }
            None
        };
        let answer = self
            .request(method, destination, &uri, body.as_ref())
            .await?;
        serde_json::from_value(answer).map_err(|e| bad(e.to_string()))
    }

    /// Sends a signed request and returns the JSON answer of a 200.
    pub async fn request(
        &self,
        method: reqwest::Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FedError> {
        let response = self
            .send_signed(method, destination, path_and_query, body, None)
            .await?;
        let status = response.status().as_u16();
        let bytes = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .ok_or_else(|| unreachable(destination, "answer unreadable or too large".into()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 {
            Ok(value)
        } else {
            Err(verdict(destination, status, value))
        }
    }

    /// Asks another server for its media (`FetchMedia`): the response of a 200, its body
    /// unread, or the refusal. An answer announcing more than `limit` bytes is refused here;
    /// the caller bounds what it reads of one that announces nothing.
    pub async fn open_media(
        &self,
        destination: &str,
        media_id: &str,
        limit: u64,
        timeout: Duration,
    ) -> Result<reqwest::Response, FedError> {
        let path = path_of::<parley_federation::endpoints::FetchMedia>(
            &parley_federation::endpoints::MediaIdPath {
                media_id: media_id.to_owned(),
            },
        )
        .ok_or_else(|| FedError::BadAnswer {
            server: destination.to_owned(),
            detail: "media id".into(),
        })?;
        let response = self
            .send_signed(
                reqwest::Method::GET,
                destination,
                &path,
                None,
                Some(timeout),
            )
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = read_capped(response, MAX_KEY_RESPONSE_BYTES)
                .await
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            return Err(verdict(destination, status, body));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(FedError::BadAnswer {
                server: destination.to_owned(),
                detail: format!("media larger than {limit} bytes"),
            });
        }
        Ok(response)
    }

    /// Signs and sends a request, within `timeout` if given (else the client's 30 s), and
    /// returns the response unread.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        destination: &str,
        path_and_query: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, FedError> {
        if !self.enabled || destination == self.server_name || !self.acl.allows(destination) {
            return Err(FedError::NotAllowed(destination.to_owned()));
        }
        if self.failed_recently(destination) {
            return Err(unreachable(
                destination,
                "could not be reached a moment ago".into(),
            ));
        }
        let target = self.base_url(destination).await?;
        let header = sign_request(
            &self.key,
            &self.server_name,
            destination,
            method.as_str(),
            path_and_query,
            body,
        )
        .map_err(|e| unreachable(destination, e.to_string()))?;
        let mut request = self
            .http
            .request(method, target.url(path_and_query))
            .header("authorization", header);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(r) => Ok(r),
            Err(e) => {
                if e.is_connect() || e.is_timeout() {
                    self.note_failure(destination);
                }
                Err(unreachable(destination, e.without_url().to_string()))
            }
        }
    }

    /// Whether `destination` could not be connected to within [`FAILURE_MEMORY_MS`].
    fn failed_recently(&self, destination: &str) -> bool {
        let failures = self
            .recent_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures
            .get(destination)
            .is_some_and(|until| *until > now_ms())
    }

    /// Remembers that `destination` could not be connected to (bounded map).
    fn note_failure(&self, destination: &str) {
        let now = now_ms();
        let mut failures = self
            .recent_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_REMEMBERED_FAILURES {
            failures.retain(|_, until| *until > now);
            if failures.len() >= MAX_REMEMBERED_FAILURES {
                failures.clear();
            }
        }
        failures.insert(destination.to_owned(), now + FAILURE_MEMORY_MS);
    }

    /// `destination` contacted us: it is reachable again.
    pub fn forget_failure(&self, destination: &str) {
        self.recent_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(destination);
    }

    /// The current verify key `key_id` of `origin`, fetching its key document when it is not
    /// cached (at most once a minute per origin; a failed fetch is remembered for that minute).
    /// Only the origin's own answer is believed. A fetch is made only if `may_fetch` allows
    /// it (the requester's per-address budget) and fewer than `max_key_fetches_in_flight` run.
    pub async fn verifying_key(
        &self,
        origin: &str,
        key_id: &KeyId,
        may_fetch: impl FnOnce() -> Result<(), u64>,
    ) -> KeyAnswer {
        let cached = |now| {
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lookup(origin, key_id, now)
        };
        match cached(now_ms()) {
            CacheLookup::Found(key) => return KeyAnswer::Found(key),
            CacheLookup::Unavailable => return KeyAnswer::Unavailable,
            CacheLookup::Fetch => {}
        }
        if let Err(retry_after_ms) = may_fetch() {
            return KeyAnswer::Throttled { retry_after_ms };
        }
        // One fetch per origin at a time: concurrent first requests wait for its result
        // instead of being refused while it is in flight.
        let gate = {
            let mut gates = self.fetch_gates.lock().unwrap_or_else(|p| p.into_inner());
            gates.entry(origin.to_owned()).or_default().clone()
        };
        let answer = {
            let _guard = gate.lock().await;
            self.fetch_key(origin, key_id).await
        };
        // The gate map holds only origins with a fetch under way.
        {
            let mut gates = self.fetch_gates.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&gate) <= 2 {
                gates.remove(origin);
            }
        }
        answer
    }

    /// Fetches `origin`'s key document unless a fetch just happened (called under its gate).
    async fn fetch_key(&self, origin: &str, key_id: &KeyId) -> KeyAnswer {
        let now = now_ms();
        match self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(origin, key_id, now)
        {
            CacheLookup::Found(key) => return KeyAnswer::Found(key),
            CacheLookup::Unavailable => return KeyAnswer::Unavailable,
            CacheLookup::Fetch => {}
        }
        let Ok(_slot) = self.fetches_in_flight.try_acquire() else {
            return KeyAnswer::Throttled {
                retry_after_ms: 1000,
            };
        };
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_fetch_attempt(origin, now);
        let Some(body) = self.get_key_document(origin).await else {
            return KeyAnswer::Unavailable;
        };
        let verified = match verify_key_document(&body, origin, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "refused a server key document");
                return KeyAnswer::Unavailable;
            }
        };
        let key = verified.verify_keys.get(key_id).copied();
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(verified);
        key.map_or(KeyAnswer::Unavailable, KeyAnswer::Found)
    }

    /// The body of `origin`'s key document response, if it answered 200 within the size cap.
    async fn get_key_document(&self, origin: &str) -> Option<Vec<u8>> {
        let target = self.base_url(origin).await.ok()?;
        let response = self
            .http
            .get(target.url(<parley_federation::endpoints::ServerKeys as Endpoint>::PATH))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        read_capped(response, MAX_KEY_RESPONSE_BYTES).await
    }
}
