//! Prometheus metrics (docs/operations.md#metrics): the series, recorded through the
//! `metrics` facade, and their text rendering for `GET /_parley/metrics`.
//!
//! The recorder is process-wide and installed once; a process without it (a unit test)
//! records nothing, and renders nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by endpoint (its declared name), method and status.
pub const HTTP_REQUESTS: &str = "parley_http_requests_total";
/// Request latency by endpoint, in seconds.
pub const HTTP_DURATION: &str = "parley_http_request_duration_seconds";
/// Messages (application messages, proposals and commits) accepted by this hub.
pub const MESSAGES_ACCEPTED: &str = "parley_messages_accepted_total";
/// Messages handed to devices, by transport (`websocket`, `sync`).
pub const MESSAGES_DELIVERED: &str = "parley_messages_delivered_total";
/// WebSockets open now.
pub const WEBSOCKETS_OPEN: &str = "parley_websockets_open";
/// Long-polls waiting now.
pub const LONG_POLLS_WAITING: &str = "parley_long_polls_waiting";
/// Requests refused for a missing or unknown access token.
pub const AUTH_FAILURES: &str = "parley_auth_failures_total";
/// Requests refused by a rate limit, by limit.
pub const RATE_LIMITED: &str = "parley_rate_limited_total";
/// Commits and messages refused because the sender is not in the group's roster.
pub const ROSTER_DENIALS: &str = "parley_roster_denials_total";
/// Events queued for other servers, by destination (read at each scrape).
pub const OUTBOX_DEPTH: &str = "parley_outbox_depth";

/// Age of the oldest queued event, by destination, in seconds (read at each scrape).
pub const OUTBOX_OLDEST_AGE: &str = "parley_outbox_oldest_event_age_seconds";
/// Failed federation sends that will be retried, by destination.
pub const FEDERATION_RETRIES: &str = "parley_federation_retries_total";
/// Inbound federation requests refused, by reason.
pub const FEDERATION_REFUSED: &str = "parley_federation_refused_total";
/// Unclaimed, unexpired key packages held for local devices (last-resort ones apart; read
/// at each scrape).
pub const KEY_PACKAGE_STOCK: &str = "parley_key_packages_stock";
/// Local devices that have no unexpired key package left besides a last-resort one (read at
/// each scrape).
pub const DEVICES_WITHOUT_KEY_PACKAGES: &str = "parley_devices_without_key_packages";
/// Messages deleted by message retention.
pub const MESSAGES_PRUNED: &str = "parley_messages_pruned_total";
/// Expired disappearing messages whose ciphertext was wiped.
pub const MESSAGES_EXPIRED: &str = "parley_messages_expired_total";
/// Messages of followed groups this server never stored because their hub had deleted them
/// (skipped in a gap fill).
pub const FOLLOWER_SKIPPED: &str = "parley_follower_skipped_messages_total";
/// Media bytes stored, by `source` (`upload`, `remote`).
pub const MEDIA_STORED_BYTES: &str = "parley_media_stored_bytes_total";
/// Media bytes served to clients and servers.
pub const MEDIA_SERVED_BYTES: &str = "parley_media_served_bytes_total";
/// Fetches of other servers' media, by `result` (`fetched`, `not_found`, `failed`).
pub const MEDIA_REMOTE_FETCHES: &str = "parley_media_remote_fetches_total";

/// Latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Group-commit batch sizes (writes per database transaction).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it). `None` if another
/// recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(parley_schema::metrics::COMMIT_BATCH_SIZE.into()),
                        &BATCH_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .ok()?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Records one answered request.
pub fn request(endpoint: &'static str, method: &'static str, status: u16, took: Duration) {
    metrics::counter!(HTTP_REQUESTS, "endpoint" => endpoint, "method" => method, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// Records a request refused for a missing or unknown token.
pub fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// Records a request refused by the rate limit `limit`.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Records a failed federation send to `destination` that will be retried.
pub fn federation_retry(destination: &str) {
    metrics::counter!(FEDERATION_RETRIES, "destination" => destination.to_owned()).increment(1);
}

/// An inbound federation request refused, by reason.
pub fn federation_refused(reason: &'static str) {
    metrics::counter!(FEDERATION_REFUSED, "reason" => reason).increment(1);
}

/// Records a submission refused because its sender is not in the roster.
pub fn roster_denial() {
    metrics::counter!(ROSTER_DENIALS).increment(1);
}

/// Records a message accepted by this hub.
pub fn message_accepted(kind: &'static str) {
    metrics::counter!(MESSAGES_ACCEPTED, "kind" => kind).increment(1);
}

/// Records messages handed to a device.
pub fn delivered(transport: &'static str, count: usize) {
    metrics::counter!(MESSAGES_DELIVERED, "transport" => transport).increment(count as u64);
}

/// Records messages deleted by message retention.
pub fn messages_pruned(count: usize) {
    metrics::counter!(MESSAGES_PRUNED).increment(count as u64);
}

/// Records expired messages wiped by the expiry sweep.
pub fn messages_expired(count: usize) {
    metrics::counter!(MESSAGES_EXPIRED).increment(count as u64);
}

/// Records messages of a followed group skipped because the hub had deleted them.
pub fn follower_skipped(count: i64) {
    metrics::counter!(FOLLOWER_SKIPPED).increment(count.max(0) as u64);
}

/// Records media bytes stored, from an upload or another server.
pub fn media_stored(source: &'static str, bytes: u64) {
    metrics::counter!(MEDIA_STORED_BYTES, "source" => source).increment(bytes);
}

/// Records media bytes about to be served.
pub fn media_served(bytes: u64) {
    metrics::counter!(MEDIA_SERVED_BYTES).increment(bytes);
}

/// Records a fetch of another server's media.
pub fn media_remote_fetch(result: &'static str) {
    metrics::counter!(MEDIA_REMOTE_FETCHES, "result" => result).increment(1);
}

/// Counts a long-poll as waiting while the guard lives.
pub struct LongPoll(());

impl LongPoll {
    /// A long-poll starts waiting.
    pub fn waiting() -> LongPoll {
        metrics::gauge!(LONG_POLLS_WAITING).increment(1.0);
        LongPoll(())
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        metrics::gauge!(LONG_POLLS_WAITING).decrement(1.0);
    }
}
