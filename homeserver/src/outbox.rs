//! The durable outbox sender: one task per destination delivers queued events in order, in
//! `PUT /send/{txn_id}` batches of at most 100, retrying with capped exponential backoff and
//! jitter. Queued rows survive restarts; a sender starts for every destination at start-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_schema::{GroupMessage, OutboxRow, Store};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::fed_client::{FedError, FederationClient};
use crate::state::now_ms;
use crate::sync::message_event;

/// Events per transaction (DESIGN §3.2).
const BATCH: i64 = 100;
/// First retry delay.
const MIN_BACKOFF_MS: u64 = 500;
/// Least time between two counts of a destination's queue (for the long-queue warning).
const LEN_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Wakes and runs the per-destination senders.
pub struct Outbox {
    store: Store,
    client: Arc<FederationClient>,
    max_backoff_ms: u64,
    warn_len: i64,
    senders: Mutex<HashMap<String, Arc<Sender>>>,
}

/// A running per-destination sender.
#[derive(Default)]
struct Sender {
    notify: Notify,
    /// Set while waiting out a backoff: new events then wait too; only contact from the
    /// destination cuts the wait short.
    backing_off: std::sync::atomic::AtomicBool,
}

impl Outbox {
    /// An outbox over `store`, sending with `client`.
    pub fn new(
        store: Store,
        client: Arc<FederationClient>,
        max_backoff_ms: u64,
        warn_len: i64,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            store,
            client,
            max_backoff_ms,
            warn_len,
            senders: Mutex::new(HashMap::new()),
        })
    }

    /// Starts senders for every destination with queued events (after a restart).
    pub async fn resume(self: &Arc<Self>) {
        match self.store.outbox_destinations().await {
            Ok(destinations) => {
                for d in destinations {
                    self.wake(&d);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
    }

    /// New events for `destination`: starts its sender, or wakes it when idle.
    pub fn wake(self: &Arc<Self>, destination: &str) {
        self.poke(destination, false);
    }

    /// `destination` contacted us, so it is up: retry now, cutting a backoff short.
    pub fn contacted(self: &Arc<Self>, destination: &str) {
        self.poke(destination, true);
    }

    fn poke(self: &Arc<Self>, destination: &str, cut_backoff: bool) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = senders.get(destination) {
            if cut_backoff
                || !sender
                    .backing_off
                    .load(std::sync::atomic::Ordering::Acquire)
            {
                sender.notify.notify_one();
            }
            return;
        }
        if cut_backoff {
            return; // nothing queued for it
        }
        let sender = Arc::new(Sender::default());
        senders.insert(destination.to_owned(), sender.clone());
        let this = self.clone();
        let destination = destination.to_owned();
        tokio::spawn(async move { this.run(destination, sender).await });
    }

    async fn run(self: Arc<Self>, destination: String, sender: Arc<Sender>) {
        let notify = &sender.notify;
        let mut backoff_ms = 0u64;
        let mut last_len_check: Option<std::time::Instant> = None;
        loop {
            let batch = match self.store.outbox_batch(&destination, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, %destination, "cannot read the outbox");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                backoff_ms = 0;
                // Idle: wait for new events (or look again now and then).
                let _ = tokio::time::timeout(Duration::from_secs(60), notify.notified()).await;
                continue;
            }
            // Counting is O(queue length): do it only when a full batch says the queue may be
            // long, and at most every LEN_CHECK_EVERY, so draining a backlog stays linear.
            if batch.len() as i64 == BATCH
                && last_len_check.is_none_or(|t| t.elapsed() >= LEN_CHECK_EVERY)
            {
                last_len_check = Some(std::time::Instant::now());
                if let Ok(len) = self.store.outbox_len(&destination).await {
                    if len > self.warn_len {
                        tracing::warn!(%destination, queued = len, "federation outbox is long: the server may be down");
                    }
                }
            }
            match self.send_batch(&destination, &batch).await {
                Ok(()) => {
                    backoff_ms = 0;
                    let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                    if let Err(e) = self.store.delete_outbox(&ids).await {
                        tracing::error!(error = %e, %destination, "cannot clear delivered events");
                    }
                }
                Err(e) => {
                    backoff_ms = (backoff_ms * 2)
                        .clamp(MIN_BACKOFF_MS, self.max_backoff_ms.max(MIN_BACKOFF_MS));
                    let jitter = rand::thread_rng().gen_range(0..=backoff_ms / 4);
                    tracing::warn!(%destination, error = %e, retry_in_ms = backoff_ms + jitter, "federation send failed");
                    sender
                        .backing_off
                        .store(true, std::sync::atomic::Ordering::Release);
                    let _ = tokio::time::timeout(
                        Duration::from_millis(backoff_ms + jitter),
                        notify.notified(),
                    )
                    .await;
                    sender
                        .backing_off
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
    }

    async fn send_batch(&self, destination: &str, batch: &[OutboxRow]) -> Result<(), FedError> {
        let messages = self.batch_messages(batch).await;
        let mut events = Vec::with_capacity(batch.len());
        for row in batch {
            if let Some(event) = self.event_of(row, &messages) {
                events.push(event);
            }
        }
        // The same rows always make the same transaction id, so a retry after a lost answer
        // is deduplicated by the receiver.
        let (first, last) = (batch[0].id, batch[batch.len() - 1].id);
        let txn_id = format!("o{first}-{last}");
        let body = json!({"origin": self.client_origin(), "origin_ts": now_ms(), "events": events});
        let path = format!("/_parley/federation/v1/send/{txn_id}");
        let answer = self
            .client
            .request(reqwest::Method::PUT, destination, &path, Some(&body))
            .await?;
        if let Some(results) = answer.get("results").and_then(Value::as_object) {
            for (event_id, result) in results {
                if result.get("errcode").is_some() {
                    tracing::warn!(%destination, %event_id, result = %result, "remote server refused an event");
                }
            }
        }
        Ok(())
    }

    fn client_origin(&self) -> String {
        self.client.server_name().to_owned()
    }

    /// The group messages a batch carries, read with one query per group (a batch usually
    /// holds a run of consecutive seqs of few groups) rather than one per row.
    async fn batch_messages(&self, batch: &[OutboxRow]) -> HashMap<(String, i64), GroupMessage> {
        let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
        for row in batch.iter().filter(|r| r.kind == "message") {
            if let Some(seq) = row.seq {
                let range = ranges.entry(row.group_id.as_str()).or_insert((seq, seq));
                range.0 = range.0.min(seq);
                range.1 = range.1.max(seq);
            }
        }
        let mut messages = HashMap::new();
        for (group_id, (first, last)) in ranges {
            if last - first >= 2 * BATCH {
                // Sparse (the destination left and rejoined the group): read row by row rather
                // than the whole range in between.
                for seq in batch
                    .iter()
                    .filter(|r| r.kind == "message" && r.group_id == group_id)
                    .filter_map(|r| r.seq)
                {
                    if let Ok(Some(m)) = self.store.group_message(group_id, seq).await {
                        messages.insert((m.group_id.clone(), m.seq), m);
                    }
                }
                continue;
            }
            match self
                .store
                .group_messages_since(group_id, first - 1, last - first + 1)
                .await
            {
                Ok(found) => {
                    messages.extend(found.into_iter().map(|m| ((m.group_id.clone(), m.seq), m)))
                }
                Err(e) => tracing::error!(error = %e, %group_id, "cannot read queued messages"),
            }
        }
        messages
    }

    fn event_of(
        &self,
        row: &OutboxRow,
        messages: &HashMap<(String, i64), GroupMessage>,
    ) -> Option<Value> {
        let event_id = format!("e{}", row.id);
        match row.kind.as_str() {
            "message" => {
                let seq = row.seq?;
                let message = messages.get(&(row.group_id.clone(), seq))?.clone();
                let mut event = serde_json::to_value(message_event(&message)).ok()?;
                let obj = event.as_object_mut()?;
                obj.insert("event_id".into(), json!(event_id));
                obj.insert("type".into(), json!("message"));
                obj.insert("group_id".into(), json!(row.group_id));
                Some(event)
            }
            "welcome" => {
                let meta: Value = serde_json::from_str(row.recipients.as_deref()?).ok()?;
                Some(json!({
                    "event_id": event_id,
                    "type": "welcome",
                    "group_id": row.group_id,
                    "sender": meta.get("sender")?,
                    "recipients": meta.get("recipients")?,
                    "welcome": STANDARD.encode(row.payload.as_deref()?),
                }))
            }
            "device_list_update" => {
                let body: Value = serde_json::from_str(row.recipients.as_deref()?).ok()?;
                Some(json!({
                    "event_id": event_id,
                    "type": "device_list_update",
                    "user_id": body.get("user_id")?,
                    "devices": body.get("devices")?,
                }))
            }
            other => {
                tracing::error!(kind = other, "unknown outbox row kind");
                None
            }
        }
    }
}
