//! A fake remote homeserver inside the suite: it speaks federation with its own ed25519 key,
//! so tests can send crafted signed requests to the server under test and observe what that
//! server sends out.
//!
//! It serves `GET /_parley/key/v1/server` (a self-signed document), answers transactions
//! (`200 {results}`, or `500` to the first N when told to), key claims and device lists for
//! the devices a test gives it, and records every request it receives together with the
//! verdict on its `X-Parley` signature, checked with the key fetched from the server under
//! test ([`FakeRemote::target`]).
//!
//! The server under test reaches it through `[federation] resolve` (see
//! [`FakeRemote::federation_config`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parley_client_api::client::b64;
use parley_federation::auth::{authenticate_request, sign_request};
use parley_federation::keys::{
    verify_key_document, KeyId, ServerKeyDocument, ServerSigningKey, VerifiedServerKeys,
};
use serde_json::{json, Value};

use crate::check::{send, Reply};
use crate::device::now_ms;

/// The fake's server name.
pub const FAKE_NAME: &str = "fake.test";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PUT`, …
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
    /// `None` for the unsigned key document; otherwise the verified origin, or why the
    /// signature did not verify.
    pub auth: Option<Result<String, String>>,
    /// The status the fake answered.
    pub status: u16,
}

impl Recorded {
    /// Whether this is a transaction (`PUT /send/{txn_id}`).
    pub fn is_transaction(&self) -> bool {
        self.method == "PUT" && self.uri.starts_with("/_parley/federation/v1/send/")
    }

    /// The events of a transaction (empty otherwise).
    pub fn events(&self) -> Vec<Value> {
        self.body
            .as_ref()
            .and_then(|b| b.get("events"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

/// A device the fake serves key packages for.
#[derive(Debug, Clone)]
pub struct FakeDevice {
    /// Raw 32-byte Ed25519 MLS signature key.
    pub signature_key: Vec<u8>,
    /// Packages handed out once each, in order.
    pub key_packages: VecDeque<Vec<u8>>,
}

struct Shared {
    key: ServerSigningKey,
    target: Mutex<Option<(String, String)>>,
    target_keys: Mutex<Option<VerifiedServerKeys>>,
    requests: Mutex<Vec<Recorded>>,
    fail_transactions: AtomicUsize,
    max_transaction_bytes: AtomicUsize,
    users: Mutex<BTreeMap<String, BTreeMap<String, FakeDevice>>>,
    http: reqwest::Client,
}

/// A running fake remote server; stops when dropped.
pub struct FakeRemote {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeRemote {
    /// Starts the fake on a free loopback port.
    pub async fn start(http: reqwest::Client) -> anyhow::Result<FakeRemote> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            key: ServerSigningKey::generate(KeyId::generate()),
            target: Mutex::new(None),
            target_keys: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            fail_transactions: AtomicUsize::new(0),
            max_transaction_bytes: AtomicUsize::new(0),
            users: Mutex::new(BTreeMap::new()),
            http,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = {
            let shared = shared.clone();
            axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let shared = shared.clone();
                    async move { handle(shared, method, uri, headers, body).await }
                },
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeRemote {
            shared,
            port,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `fake.test`.
    pub fn name(&self) -> &'static str {
        FAKE_NAME
    }

    /// The fake's signing key.
    pub fn key(&self) -> &ServerSigningKey {
        &self.shared.key
    }

    /// The config snippet that lets a server under test reach the fake (and `peers`) over
    /// plain HTTP on loopback, retrying quickly.
    pub fn federation_config(&self, peers: &[(&str, u16)]) -> String {
        federation_config(&[&[(FAKE_NAME, self.port)], peers].concat())
    }

    /// The server under test: its name (the destination the fake signs for, and the origin
    /// it expects) and base URL (where its key document is fetched).
    pub fn target(&self, server_name: &str, base_url: &str) {
        *lock(&self.shared.target) = Some((server_name.to_owned(), base_url.to_owned()));
        *lock(&self.shared.target_keys) = None;
    }

    /// Answers 500 to the next `n` transactions.
    pub fn fail_next_transactions(&self, n: usize) {
        self.shared.fail_transactions.store(n, Ordering::SeqCst);
    }

    /// Answers 413 `P_TOO_LARGE` to transactions whose body exceeds `bytes` (0: no limit).
    pub fn refuse_transactions_over(&self, bytes: usize) {
        self.shared
            .max_transaction_bytes
            .store(bytes, Ordering::SeqCst);
    }

    /// Serves `user_id`'s device: its signature key, and packages for claims.
    pub fn add_device(&self, user_id: &str, device_id: &str, device: FakeDevice) {
        lock(&self.shared.users)
            .entry(user_id.to_owned())
            .or_default()
            .insert(device_id.to_owned(), device);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Waits up to `secs` seconds until `done` holds for the recorded requests.
    pub async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> anyhow::Result<Vec<Recorded>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return Ok(requests);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the fake remote server did not receive {what} within {secs} s; it got: {}",
                    summary(&requests)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `Authorization` header of a request signed by the fake as `fake.test`.
    pub fn sign(
        &self,
        destination: &str,
        method: &str,
        uri: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<String> {
        sign_request(&self.shared.key, FAKE_NAME, destination, method, uri, body)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))
    }

    /// Sends a request signed by the fake to `base_url` (the server called `destination`).
    pub async fn send_signed(
        &self,
        base_url: &str,
        destination: &str,
        method: reqwest::Method,
        uri: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let header = self.sign(destination, method.as_str(), uri, body)?;
        let mut request = self
            .shared
            .http
            .request(method, format!("{base_url}{uri}"))
            .header("authorization", header);
        if let Some(body) = body {
            request = request.json(body);
        }
        send(request).await
    }

    /// Stops serving: new connections are refused afterwards.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeRemote {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `[federation]` settings reaching `peers` (`name → loopback port`) over plain HTTP.
pub fn federation_config(peers: &[(&str, u16)]) -> String {
    let resolve: Vec<String> = peers
        .iter()
        .map(|(name, port)| format!("\"{name}\" = \"127.0.0.1:{port}\""))
        .collect();
    format!(
        "[federation]\nallow_insecure_http = true\nmax_backoff_ms = 1000\nresolve = {{ {} }}\n",
        resolve.join(", ")
    )
}

/// One line per request, for failure messages.
pub fn summary(requests: &[Recorded]) -> String {
    if requests.is_empty() {
        return "nothing".into();
    }
    requests
        .iter()
        .map(|r| format!("{} {} → {}", r.method, r.uri, r.status))
        .collect::<Vec<_>>()
        .join("; ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(status: StatusCode, errcode: &str, text: &str) -> (StatusCode, Value) {
    (status, json!({"errcode": errcode, "error": text}))
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let uri_text = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let (auth, (status, answer)) =
        if method == Method::GET && uri.path() == "/_parley/key/v1/server" {
            let doc = ServerKeyDocument::build(
                FAKE_NAME,
                &shared.key,
                BTreeMap::new(),
                now_ms() + 24 * 3600 * 1000,
            )
            .and_then(|d| d.to_json_object());
            let answer = match doc {
                Ok(obj) => (StatusCode::OK, Value::Object(obj)),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "P_UNKNOWN",
                    &e.to_string(),
                ),
            };
            (None, answer)
        } else {
            let verdict = verify(&shared, method.as_str(), &uri_text, &headers, &body).await;
            let cap = shared.max_transaction_bytes.load(Ordering::SeqCst);
            let answer = match &verdict {
                Err(e) => error(StatusCode::UNAUTHORIZED, "P_UNAUTHORIZED", e),
                Ok(_) if cap > 0 && body.len() > cap && uri.path().contains("/send/") => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "P_TOO_LARGE",
                    "the fake was told to refuse transactions this large",
                ),
                Ok(_) => route(&shared, &method, uri.path(), json_body.as_ref()),
            };
            (Some(verdict), answer)
        };
    lock(&shared.requests).push(Recorded {
        method: method.as_str().to_owned(),
        uri: uri_text,
        body: json_body,
        auth,
        status: status.as_u16(),
    });
    (status, axum::Json(answer)).into_response()
}

/// Checks the request's `X-Parley` signature with the server under test's current key.
async fn verify(
    shared: &Shared,
    method: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let target = lock(&shared.target).clone();
    let (name, url) = target.ok_or("the fake does not know the server under test")?;
    let header = headers.get("authorization").map(|v| v.as_bytes().to_vec());
    let body = (!body.is_empty()).then_some(body);
    for attempt in 0..2 {
        let cached = lock(&shared.target_keys).clone();
        let keys = match cached {
            Some(k) if attempt == 0 => k,
            _ => {
                let fetched = fetch_keys(shared, &name, &url).await?;
                *lock(&shared.target_keys) = Some(fetched.clone());
                fetched
            }
        };
        match authenticate_request(method, uri, body, header.as_deref(), FAKE_NAME, &keys) {
            Ok(a) if a.origin == name => return Ok(a.origin),
            Ok(a) => return Err(format!("signed by {} instead of {name}", a.origin)),
            Err(parley_federation::Error::UnknownKey { .. }) if attempt == 0 => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("unknown key".into())
}

async fn fetch_keys(shared: &Shared, name: &str, url: &str) -> Result<VerifiedServerKeys, String> {
    let bytes = shared
        .http
        .get(format!("{url}/_parley/key/v1/server"))
        .send()
        .await
        .map_err(|e| format!("fetching the key document: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("reading the key document: {e}"))?;
    verify_key_document(&bytes, name, now_ms()).map_err(|e| format!("key document: {e}"))
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    const PREFIX: &str = "/_parley/federation/v1";
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error(StatusCode::NOT_FOUND, "P_UNRECOGNIZED", "unknown path");
    };
    if *method == Method::PUT && rest.starts_with("/send/") {
        let failing = shared
            .fail_transactions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "P_UNKNOWN",
                "the fake was told to fail this transaction",
            );
        }
        let mut results = serde_json::Map::new();
        for event in body
            .and_then(|b| b.get("events"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = event.get("event_id").and_then(Value::as_str) {
                results.insert(id.to_owned(), json!({}));
            }
        }
        return (StatusCode::OK, json!({ "results": results }));
    }
    if *method == Method::POST && rest == "/keys/claim" {
        let mut packages = serde_json::Map::new();
        let mut failures = serde_json::Map::new();
        let mut users = lock(&shared.users);
        for user in body
            .and_then(|b| b.get("user_ids"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            match users.get_mut(user) {
                None => {
                    failures.insert(
                        user.to_owned(),
                        json!({"errcode": "P_NOT_FOUND", "error": "no such user"}),
                    );
                }
                Some(devices) => {
                    let mut mine = serde_json::Map::new();
                    for (device_id, device) in devices.iter_mut() {
                        match device.key_packages.pop_front() {
                            Some(kp) => {
                                mine.insert(device_id.clone(), json!(b64(&kp)));
                            }
                            None => {
                                failures.insert(
                                    format!("{user}/{device_id}"),
                                    json!({"errcode": "P_KEY_PACKAGES_EXHAUSTED", "error": "none left"}),
                                );
                            }
                        }
                    }
                    packages.insert(user.to_owned(), Value::Object(mine));
                }
            }
        }
        return (
            StatusCode::OK,
            json!({"key_packages": packages, "failures": failures}),
        );
    }
    if *method == Method::GET {
        if let Some(user) = rest
            .strip_prefix("/users/")
            .and_then(|r| r.strip_suffix("/devices"))
        {
            let user = percent_decode(user);
            let users = lock(&shared.users);
            return match users.get(&user) {
                Some(devices) => {
                    let list: Vec<Value> = devices
                        .iter()
                        .map(|(id, d)| json!({"device_id": id, "signature_key": b64(&d.signature_key)}))
                        .collect();
                    (StatusCode::OK, json!({"user_id": user, "devices": list}))
                }
                None => error(StatusCode::NOT_FOUND, "P_NOT_FOUND", "no such user"),
            };
        }
    }
    error(
        StatusCode::NOT_FOUND,
        "P_UNRECOGNIZED",
        "the fake does not serve this",
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
