//! The durable outbox sender: one task per destination delivers queued events in order, in
//! `PUT /send/{txn_id}` batches of at most 100 events and `max_txn_bytes` bytes, retrying
//! with capped exponential backoff and jitter. Queued rows survive restarts; a sender starts
//! for every destination at start-up and exits after a while with nothing to send.
//!
//! A failed batch is resent as it was, under the same transaction id, so the receiver's
//! idempotency applies. A 413 halves the batch (down to one event) and the destination's
//! byte budget; an event refused on its own (a 400 or 413 for a batch of one) is dropped with
//! a log line and counted, so it never blocks the events behind it. Events of a destination
//! unreachable for longer than `outbox_max_age_ms` are dropped: its devices recover through
//! the hubs' catch-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_schema::{GroupMessage, OutboundEvent, OutboxRow, Store};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::delivery::events::message_event;
use crate::federation::client::{FedError, FederationClient};

/// Events per transaction (docs/protocol.md#outbox).
const BATCH: i64 = 100;
/// First retry delay.
const MIN_BACKOFF_MS: u64 = 500;
/// Least time between two counts of a destination's queue (for the long-queue warning).
const LEN_CHECK_EVERY: Duration = Duration::from_secs(30);
/// A sender with nothing to send for this long exits (a new event starts another).
const IDLE_EXIT: Duration = Duration::from_secs(300);

/// Settings of the outbox senders.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// Longest wait between retries.
    pub max_backoff_ms: u64,
    /// Queue length above which a warning is logged.
    pub warn_len: i64,
    /// Largest transaction body sent (well under receivers' caps).
    pub max_txn_bytes: usize,
    /// Events older than this for a failing destination are dropped.
    pub max_age_ms: u64,
}

/// Wakes and runs the per-destination senders.
pub struct Outbox {
    store: Store,
    client: Arc<FederationClient>,
    config: OutboxConfig,
    senders: Mutex<HashMap<String, Arc<Sender>>>,
    /// Events dropped because they were refused on their own or too old.
    dropped: AtomicU64,
}

/// A running per-destination sender.
#[derive(Default)]
struct Sender {
    notify: Notify,
    /// Set while waiting out a backoff: new events then wait too; only contact from the
    /// destination cuts the wait short.
    backing_off: std::sync::atomic::AtomicBool,
}

/// How a batch failed.
enum SendFailure {
    /// Worth retrying later: unreachable, busy, or refused for a reason that may pass.
    Transient(FedError),
    /// The receiver refused the batch itself (400, 413): retrying it unchanged cannot help.
    Rejected(FedError),
}

impl Outbox {
    /// An outbox over `store`, sending with `client`.
    pub fn new(store: Store, client: Arc<FederationClient>, config: OutboxConfig) -> Arc<Outbox> {
        Arc::new(Outbox {
            store,
            client,
            config,
            senders: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        })
    }

    /// Events dropped since start (refused alone, or too old).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
        self.client.forget_failure(destination);
        self.poke(destination, true);
    }

    fn poke(self: &Arc<Self>, destination: &str, cut_backoff: bool) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = senders.get(destination) {
            if cut_backoff || !sender.backing_off.load(Ordering::Acquire) {
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

    /// Retires an idle sender; events that arrive meanwhile start a new one.
    async fn retire(self: &Arc<Self>, destination: &str, sender: &Arc<Sender>) {
        {
            let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
            if senders
                .get(destination)
                .is_some_and(|s| Arc::ptr_eq(s, sender))
            {
                senders.remove(destination);
            }
        }
        // An event queued between our last look and the removal finds no sender: look again.
        match self.store.outbox_batch(destination, 1).await {
            Ok(rows) if rows.is_empty() => {}
            _ => self.wake(destination),
        }
    }

    async fn run(self: Arc<Self>, destination: String, sender: Arc<Sender>) {
        let notify = &sender.notify;
        let mut backoff_ms = 0u64;
        let mut last_len_check: Option<std::time::Instant> = None;
        let mut budget = self.config.max_txn_bytes.max(1);
        // A batch to send again exactly as it was (same rows, same transaction id).
        let mut again: Option<Vec<OutboxRow>> = None;
        loop {
            let rows = match again.take() {
                Some(rows) => rows,
                None => match self.store.outbox_batch(&destination, BATCH).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!(error = %e, %destination, "cannot read the outbox");
                        self.back_off(&sender, &mut backoff_ms).await;
                        continue;
                    }
                },
            };
            if rows.is_empty() {
                backoff_ms = 0;
                // Idle: wait for new events, and exit after a long quiet spell.
                if tokio::time::timeout(IDLE_EXIT, notify.notified())
                    .await
                    .is_err()
                {
                    self.retire(&destination, &sender).await;
                    return;
                }
                continue;
            }
            // Counting is O(queue length): do it only when a full batch says the queue may be
            // long, and at most every LEN_CHECK_EVERY, so draining a backlog stays linear.
            if rows.len() as i64 == BATCH
                && last_len_check.is_none_or(|t| t.elapsed() >= LEN_CHECK_EVERY)
            {
                last_len_check = Some(std::time::Instant::now());
                if let Ok(len) = self.store.outbox_len(&destination).await {
                    if len > self.config.warn_len {
                        tracing::warn!(%destination, queued = len, "federation outbox is long: the server may be down");
                    }
                }
            }
            let events = match self.events_of(&rows).await {
                Ok(events) => events,
                Err(e) => {
                    // Nothing is deleted on a failed read: the rows are read again.
                    tracing::error!(error = %e, %destination, "cannot read queued messages");
                    self.back_off(&sender, &mut backoff_ms).await;
                    continue;
                }
            };
            let (batch, bodies) = fit(rows, events, budget);
            match self.send_batch(&destination, &batch, bodies).await {
                Ok(()) => {
                    backoff_ms = 0;
                    self.forget(&destination, &batch).await;
                }
                Err(SendFailure::Rejected(e)) if batch.len() > 1 => {
                    // Halve until the refused event stands alone.
                    tracing::info!(%destination, events = batch.len(), error = %e, "transaction refused: splitting it");
                    if matches!(e, FedError::Refused { status: 413, .. }) {
                        budget = (budget / 2).max(1);
                    }
                    let half = batch.len() / 2;
                    again = Some(batch.into_iter().take(half).collect());
                }
                Err(SendFailure::Rejected(e)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%destination, row = batch[0].id, kind = kind_of(&batch[0]), error = %e, dropped_total = self.dropped(), "remote server refused an event: dropped");
                    self.forget(&destination, &batch).await;
                }
                Err(SendFailure::Transient(e)) => {
                    let oldest = batch[0].created_ts;
                    let cutoff = now_ms().saturating_sub(self.config.max_age_ms) as i64;
                    if oldest < cutoff {
                        match self.store.drop_outbox_before(&destination, cutoff).await {
                            Ok(n) => {
                                self.dropped.fetch_add(n as u64, Ordering::Relaxed);
                                tracing::warn!(%destination, dropped = n, error = %e, "server unreachable for too long: dropped its old events (it catches up from the hubs)");
                            }
                            Err(e) => {
                                tracing::error!(error = %e, %destination, "cannot drop old events")
                            }
                        }
                    } else {
                        tracing::warn!(%destination, error = %e, "federation send failed");
                        again = Some(batch);
                    }
                    self.back_off(&sender, &mut backoff_ms).await;
                }
            }
        }
    }

    /// Waits out the next backoff step (cut short only by contact from the destination).
    async fn back_off(&self, sender: &Sender, backoff_ms: &mut u64) {
        *backoff_ms = (*backoff_ms * 2).clamp(
            MIN_BACKOFF_MS,
            self.config.max_backoff_ms.max(MIN_BACKOFF_MS),
        );
        let jitter = rand::thread_rng().gen_range(0..=*backoff_ms / 4);
        tracing::debug!(retry_in_ms = *backoff_ms + jitter, "outbox backing off");
        sender.backing_off.store(true, Ordering::Release);
        let _ = tokio::time::timeout(
            Duration::from_millis(*backoff_ms + jitter),
            sender.notify.notified(),
        )
        .await;
        sender.backing_off.store(false, Ordering::Release);
    }

    /// Deletes sent (or dropped) rows; a failure leaves them to be sent again, which the
    /// receiver deduplicates.
    async fn forget(&self, destination: &str, batch: &[OutboxRow]) {
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        if let Err(e) = self.store.delete_outbox(&ids).await {
            tracing::error!(error = %e, %destination, "cannot clear delivered events");
        }
    }

    /// Sends one transaction of `batch`'s events (`bodies`, serialised).
    async fn send_batch(
        &self,
        destination: &str,
        batch: &[OutboxRow],
        bodies: Vec<Value>,
    ) -> Result<(), SendFailure> {
        // The same rows always make the same transaction id, so a retry after a lost answer
        // is deduplicated by the receiver.
        let (first, last) = (batch[0].id, batch[batch.len() - 1].id);
        let txn_id = format!("o{first}-{last}");
        let body = json!({"origin": self.client_origin(), "origin_ts": now_ms(), "events": bodies});
        let path = format!("/_parley/federation/v1/send/{txn_id}");
        let answer = self
            .client
            .request(reqwest::Method::PUT, destination, &path, Some(&body))
            .await
            .map_err(|e| match e {
                FedError::Refused { status, .. } if status == 400 || status == 413 => {
                    SendFailure::Rejected(e)
                }
                other => SendFailure::Transient(other),
            })?;
        if let Some(results) = answer.get("results").and_then(Value::as_object) {
            for (event_id, result) in results {
                if result.get("errcode").is_some() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%destination, %event_id, result = %result, "remote server refused an event");
                }
            }
        }
        Ok(())
    }

    fn client_origin(&self) -> String {
        self.client.server_name().to_owned()
    }

    /// Each row's event, in order: `None` for a row whose message no longer exists (it is
    /// dropped). A failed read is an error: nothing is sent or deleted.
    async fn events_of(
        &self,
        rows: &[OutboxRow],
    ) -> Result<Vec<Option<Value>>, parley_schema::StoreError> {
        let messages = self.batch_messages(rows).await?;
        Ok(rows
            .iter()
            .map(|row| self.event_of(row, &messages))
            .collect())
    }

    /// The group messages a batch carries, read with one query per group (a batch usually
    /// holds a run of consecutive seqs of few groups) rather than one per row.
    async fn batch_messages(
        &self,
        batch: &[OutboxRow],
    ) -> Result<HashMap<(String, i64), GroupMessage>, parley_schema::StoreError> {
        let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
        for (group_id, seq) in batch.iter().filter_map(queued_message) {
            let range = ranges.entry(group_id).or_insert((seq, seq));
            range.0 = range.0.min(seq);
            range.1 = range.1.max(seq);
        }
        let mut messages = HashMap::new();
        for (group_id, (first, last)) in ranges {
            if last - first >= 2 * BATCH {
                // Sparse (the destination left and rejoined the group): read row by row rather
                // than the whole range in between.
                for seq in batch
                    .iter()
                    .filter_map(queued_message)
                    .filter(|(g, _)| *g == group_id)
                    .map(|(_, seq)| seq)
                {
                    if let Some(m) = self.store.group_message(group_id, seq).await? {
                        messages.insert((m.group_id.clone(), m.seq), m);
                    }
                }
                continue;
            }
            let found = self
                .store
                .group_messages_since(group_id, first - 1, last - first + 1)
                .await?;
            messages.extend(found.into_iter().map(|m| ((m.group_id.clone(), m.seq), m)));
        }
        Ok(messages)
    }

    fn event_of(
        &self,
        row: &OutboxRow,
        messages: &HashMap<(String, i64), GroupMessage>,
    ) -> Option<Value> {
        let event_id = format!("e{}", row.id);
        match &row.event {
            Ok(OutboundEvent::Message { group_id, seq }) => {
                let message = messages.get(&(group_id.clone(), *seq))?.clone();
                let mut event = serde_json::to_value(message_event(&message)).ok()?;
                let obj = event.as_object_mut()?;
                obj.insert("event_id".into(), json!(event_id));
                obj.insert("type".into(), json!("message"));
                obj.insert("group_id".into(), json!(group_id));
                Some(event)
            }
            Ok(OutboundEvent::Welcome { group_id, welcome }) => Some(json!({
                "event_id": event_id,
                "type": "welcome",
                "group_id": group_id,
                "sender": welcome.sender,
                "recipients": welcome.recipients,
                "welcome": STANDARD.encode(&welcome.message),
            })),
            Ok(OutboundEvent::DeviceListUpdate { user_id, devices }) => Some(json!({
                "event_id": event_id,
                "type": "device_list_update",
                "user_id": user_id,
                "devices": devices,
            })),
            Err(unreadable) => {
                tracing::error!(row = row.id, error = %unreadable, "unreadable outbox row");
                None
            }
        }
    }
}

/// The group and seq of a row carrying a group message.
fn queued_message(row: &OutboxRow) -> Option<(&str, i64)> {
    match &row.event {
        Ok(OutboundEvent::Message { group_id, seq }) => Some((group_id.as_str(), *seq)),
        _ => None,
    }
}

/// The kind of event a row carries, for log lines.
fn kind_of(row: &OutboxRow) -> &str {
    match &row.event {
        Ok(event) => event.kind(),
        Err(unreadable) => &unreadable.kind,
    }
}

/// The leading rows whose events fit in `budget` bytes (at least one row), with those events.
/// Rows whose event no longer exists ride along (they are deleted with the batch).
fn fit(
    rows: Vec<OutboxRow>,
    events: Vec<Option<Value>>,
    budget: usize,
) -> (Vec<OutboxRow>, Vec<Value>) {
    let mut used = 0usize;
    let mut batch = Vec::new();
    let mut bodies = Vec::new();
    for (row, event) in rows.into_iter().zip(events) {
        let size = event
            .as_ref()
            .map_or(0, |e| serde_json::to_vec(e).map_or(0, |b| b.len() + 1));
        if !batch.is_empty() && used + size > budget {
            break;
        }
        used += size;
        if event.is_none() {
            tracing::warn!(
                row = row.id,
                kind = kind_of(&row),
                "queued event has no message any more: dropped"
            );
        }
        batch.push(row);
        bodies.extend(event);
    }
    (batch, bodies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> OutboxRow {
        OutboxRow {
            id,
            destination: "b.example".into(),
            event: Ok(OutboundEvent::Message {
                group_id: "!g:a.example".into(),
                seq: id,
            }),
            created_ts: 0,
        }
    }

    #[test]
    fn batches_are_cut_by_bytes_and_always_carry_one_event() {
        let big = |n: usize| Some(json!({"message": "x".repeat(n)}));
        let rows: Vec<OutboxRow> = (1..=5).map(row).collect();
        let events = vec![big(400), big(400), big(400), None, big(400)];
        let (batch, bodies) = fit(rows.clone(), events.clone(), 1000);
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(bodies.len(), 2);
        // One event larger than the budget still goes alone (the receiver decides).
        let (batch, bodies) = fit(rows.clone(), events.clone(), 10);
        assert_eq!((batch.len(), bodies.len()), (1, 1));
        // A missing message rides along without a body.
        let (batch, bodies) = fit(rows, events, 100_000);
        assert_eq!((batch.len(), bodies.len()), (5, 4));
    }
}
