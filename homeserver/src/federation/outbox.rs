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
use parley_client_api::ids::TxnId;
use parley_client_api::params::TxnPath;
use parley_federation::endpoints::SendTransaction;
use parley_federation::transactions::{
    DeviceKey, DeviceListUpdate, Event, EventPayload, GroupMessage as MessageEvent, MessageKind,
    Transaction, UserDevice, WelcomeEvent, MAX_EVENTS,
};
use parley_schema::cluster::{Cluster, Signal};
use parley_schema::{GroupMessage, OutboundDevice, OutboundEvent, OutboxRow, Store};
use rand::Rng;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::federation::client::{FedError, FederationClient};

/// Events per transaction (docs/protocol.md#outbox): as many as a receiver takes.
const BATCH: i64 = MAX_EVENTS as i64;
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
    /// How long a claim on a destination lasts (several processes).
    pub lease_ms: i64,
}

/// How often, at most, a sender whose destination another process holds looks again.
const LEASE_RETRY: Duration = Duration::from_secs(5);

/// Wakes and runs the per-destination senders.
pub struct Outbox {
    store: Store,
    client: Arc<FederationClient>,
    config: OutboxConfig,
    /// The other processes on the same database: a destination is sent to by the one
    /// holding its lease (`outbox:<destination>`), told of new events by signals.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    senders: Mutex<HashMap<String, Arc<Sender>>>,
    /// Events dropped because they were refused on their own or too old.
    dropped: AtomicU64,
    /// Set on a graceful stop: no lease is taken any more.
    stopping: std::sync::atomic::AtomicBool,
}

/// A running per-destination sender.
#[derive(Default)]
struct Sender {
    notify: Notify,
    /// Set while waiting out a backoff: new events then wait too; only contact from the
    /// destination cuts the wait short.
    backing_off: std::sync::atomic::AtomicBool,
    /// Failed attempts since the last success.
    failures: AtomicU64,
}

/// How one destination's sender is doing (for the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStatus {
    /// A sender runs for the destination in this process.
    pub sending: bool,
    /// It waits out a backoff.
    pub backing_off: bool,
    /// Failed attempts since its last success.
    pub consecutive_failures: u64,
}

/// The `retry_after_ms` of a 429 answer (0 when it names none).
fn retry_after_ms(e: &FedError) -> u64 {
    match e {
        FedError::Refused { body, .. } => body
            .get("retry_after_ms")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        _ => 0,
    }
}

/// How a batch failed.
enum SendFailure {
    /// Worth retrying later: unreachable, or refused for a reason that may pass.
    Transient(FedError),
    /// The receiver answered 429 with `retry_after_ms` (clamped here): retried after that
    /// wait, without growing the backoff, so a busy receiver does not push the next attempt
    /// out by minutes.
    Busy(FedError, u64),
    /// The batch cannot go as it is (the receiver answered 400 or 413, or no transaction could
    /// be built of it here): retrying it unchanged cannot help.
    Rejected {
        /// Why, for the log.
        error: String,
        /// A 413: the receiver takes fewer bytes than our budget.
        too_large: bool,
    },
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
            cluster: std::sync::OnceLock::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Joins the other processes on the same database: destinations are sent to by one
    /// process at a time, and new events queued anywhere wake the one that sends.
    pub fn join_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let mut signals = cluster.subscribe();
        if self.cluster.set(cluster).is_err() {
            return;
        }
        let outbox = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let signal = signals.recv().await;
                let Some(outbox) = outbox.upgrade() else {
                    return;
                };
                match signal {
                    Ok(Signal::Outbox { d, r: true }) => outbox.retry_here(&d),
                    Ok(Signal::Outbox { d, r: false }) => outbox.poke(&d, false),
                    Ok(Signal::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        outbox.resume().await
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Tells the other processes (if any are there) about `destination`.
    fn tell(&self, destination: &str, retry: bool) {
        if let Some(cluster) = self.cluster.get().filter(|c| retry || c.has_peers()) {
            cluster.send(Signal::Outbox {
                d: destination.to_owned(),
                r: retry,
            });
        }
    }

    /// Whether this process may send to `destination` now: alone on its database, or holding
    /// the destination's lease (taken or renewed here; `held_until` remembers until when).
    async fn hold(&self, destination: &str, held_until: &mut i64) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return true;
        };
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        let now = now_ms() as i64;
        // A sender's lease lasts `lease_ms` and is renewed at half of it while it sends; a
        // process that dies hands the destination over within `lease_ms`.
        let lease_ms = self.config.lease_ms;
        if *held_until - now > lease_ms / 2 {
            return true;
        }
        let name = format!("outbox:{destination}");
        let holder = cluster.id().to_string();
        match self
            .store
            .leases()
            .take(&name, &holder, now, now + lease_ms)
            .await
        {
            Ok(true) => {
                *held_until = now + lease_ms;
                true
            }
            Ok(false) => {
                *held_until = 0;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, %destination, "cannot take the outbox lease");
                *held_until = 0;
                false
            }
        }
    }

    /// Gives up the lease of `destination`, if this process holds it.
    async fn release(&self, destination: &str) {
        if let Some(cluster) = self.cluster.get() {
            let name = format!("outbox:{destination}");
            let holder = cluster.id().to_string();
            if let Err(e) = self.store.leases().release(&name, &holder).await {
                tracing::warn!(error = %e, %destination, "cannot release the outbox lease");
            }
        }
    }

    /// A graceful stop: takes no lease any more and gives up those held, so the server's
    /// next process (a restart, another process of the cluster) sends to those destinations
    /// at once instead of after `lease_ms`.
    pub async fn release_all(&self) {
        self.stopping.store(true, Ordering::Release);
        let destinations: Vec<String> = self
            .senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for destination in destinations {
            self.release(&destination).await;
        }
    }

    /// Events dropped since start (refused alone, or too old).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts senders for every destination with queued events (after a restart).
    pub async fn resume(self: &Arc<Self>) {
        match self.store.outbox().outbox_destinations().await {
            Ok(destinations) => {
                for d in destinations {
                    self.wake(&d);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
    }

    /// New events for `destination`: starts its sender, or wakes it when idle (here, and in
    /// whichever process holds the destination).
    pub fn wake(self: &Arc<Self>, destination: &str) {
        self.poke(destination, false);
        self.tell(destination, false);
    }

    /// How the sender of `destination` is doing.
    pub fn status(&self, destination: &str) -> SenderStatus {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        match senders.get(destination) {
            Some(s) => SenderStatus {
                sending: true,
                backing_off: s.backing_off.load(Ordering::Acquire),
                consecutive_failures: s.failures.load(Ordering::Relaxed),
            },
            None => SenderStatus::default(),
        }
    }

    /// An operator asks to retry `destination` now: its backoff and its remembered connection
    /// failure are cut short, and a sender starts if none runs.
    pub fn retry_now(self: &Arc<Self>, destination: &str) {
        self.retry_here(destination);
        self.tell(destination, true);
    }

    /// [`Outbox::retry_now`] in this process only.
    fn retry_here(self: &Arc<Self>, destination: &str) {
        self.client.forget_failure(destination);
        self.poke(destination, true);
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
        self.release(destination).await;
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
        match self.store.outbox().outbox_batch(destination, 1).await {
            Ok(rows) if rows.is_empty() => {}
            _ => self.wake(destination),
        }
    }

    async fn run(self: Arc<Self>, destination: String, sender: Arc<Sender>) {
        let notify = &sender.notify;
        let mut backoff_ms = 0u64;
        let mut last_len_check: Option<std::time::Instant> = None;
        let mut budget = self.config.max_txn_bytes.max(1);
        // Until when this process holds the destination's lease (several processes).
        let mut held_until = 0i64;
        // A batch to send again exactly as it was (same rows, same transaction id).
        let mut again: Option<Vec<OutboxRow>> = None;
        loop {
            let rows = match again.take() {
                Some(rows) => rows,
                None => match self.store.outbox().outbox_batch(&destination, BATCH).await {
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
            if !self.hold(&destination, &mut held_until).await {
                // Another process sends to this destination; look again later (or when told).
                again = None;
                let wait = LEASE_RETRY.min(Duration::from_millis(self.config.lease_ms as u64 / 2));
                let _ = tokio::time::timeout(wait, notify.notified()).await;
                continue;
            }
            // Counting is O(queue length): do it only when a full batch says the queue may be
            // long, and at most every LEN_CHECK_EVERY, so draining a backlog stays linear.
            if rows.len() as i64 == BATCH
                && last_len_check.is_none_or(|t| t.elapsed() >= LEN_CHECK_EVERY)
            {
                last_len_check = Some(std::time::Instant::now());
                if let Ok(len) = self.store.outbox().outbox_len(&destination).await {
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
            let (batch, events) = fit(rows, events, budget);
            match self.send_batch(&destination, &batch, &events).await {
                Ok(()) => {
                    backoff_ms = 0;
                    sender.failures.store(0, Ordering::Relaxed);
                    self.forget(&destination, &batch).await;
                }
                Err(SendFailure::Rejected { error, too_large }) if batch.len() > 1 => {
                    // Halve until the refused event stands alone.
                    tracing::info!(%destination, events = batch.len(), %error, "transaction refused: splitting it");
                    if too_large {
                        budget = (budget / 2).max(1);
                    }
                    let half = batch.len() / 2;
                    again = Some(batch.into_iter().take(half).collect());
                }
                Err(SendFailure::Rejected { error, .. }) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%destination, row = batch[0].id, kind = kind_of(&batch[0]), %error, dropped_total = self.dropped(), "remote server refused an event: dropped");
                    self.forget(&destination, &batch).await;
                }
                Err(SendFailure::Busy(e, wait_ms)) => {
                    sender.failures.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::federation_retry(&destination);
                    tracing::info!(%destination, error = %e, retry_in_ms = wait_ms, "receiver busy");
                    again = Some(batch);
                    self.wait(&sender, wait_ms).await;
                }
                Err(SendFailure::Transient(e)) => {
                    sender.failures.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::federation_retry(&destination);
                    let oldest = batch[0].created_ts;
                    let cutoff = now_ms().saturating_sub(self.config.max_age_ms) as i64;
                    if oldest < cutoff {
                        match self
                            .store
                            .outbox()
                            .drop_outbox_before(&destination, cutoff)
                            .await
                        {
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
        self.wait(sender, *backoff_ms + jitter).await;
    }

    /// Waits `ms` (cut short only by contact from the destination).
    async fn wait(&self, sender: &Sender, ms: u64) {
        sender.backing_off.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_millis(ms), sender.notify.notified()).await;
        sender.backing_off.store(false, Ordering::Release);
    }

    /// Deletes sent (or dropped) rows; a failure leaves them to be sent again, which the
    /// receiver deduplicates.
    async fn forget(&self, destination: &str, batch: &[OutboxRow]) {
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        if let Err(e) = self.store.outbox().delete_outbox(&ids).await {
            tracing::error!(error = %e, %destination, "cannot clear delivered events");
        }
    }

    /// Sends one transaction of `batch`'s `events`.
    async fn send_batch(
        &self,
        destination: &str,
        batch: &[OutboxRow],
        events: &[Event],
    ) -> Result<(), SendFailure> {
        // The same rows always make the same transaction id, so a retry after a lost answer
        // is deduplicated by the receiver.
        let (first, last) = (batch[0].id, batch[batch.len() - 1].id);
        let txn_id = format!("o{first}-{last}");
        let unbuildable = |e: &dyn std::fmt::Display| SendFailure::Rejected {
            error: format!("cannot build the transaction: {e}"),
            too_large: false,
        };
        let txn = Transaction::new(self.client.server_name(), now_ms(), events)
            .map_err(|e| unbuildable(&e))?;
        let path = TxnPath {
            txn_id: TxnId::parse(&txn_id).map_err(|e| unbuildable(&e))?,
        };
        let answer = match self
            .client
            .call::<SendTransaction>(destination, &path, &txn)
            .await
        {
            Ok(answer) => Some(answer),
            // Accepted, with an answer we cannot read: nothing to report per event.
            Err(FedError::BadAnswer { .. }) => None,
            Err(e @ FedError::Refused { status, .. }) if status == 400 || status == 413 => {
                return Err(SendFailure::Rejected {
                    error: e.to_string(),
                    too_large: status == 413,
                });
            }
            Err(e @ FedError::Refused { status: 429, .. }) => {
                let wait = retry_after_ms(&e).clamp(
                    MIN_BACKOFF_MS,
                    self.config.max_backoff_ms.max(MIN_BACKOFF_MS),
                );
                return Err(SendFailure::Busy(e, wait));
            }
            Err(other) => return Err(SendFailure::Transient(other)),
        };
        for (event_id, result) in answer.iter().flat_map(|a| &a.results) {
            if !result.is_accepted() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%destination, %event_id, ?result, "remote server refused an event");
            }
        }
        Ok(())
    }

    /// Each row's event, in order: `None` for a row whose message no longer exists (it is
    /// dropped). A failed read is an error: nothing is sent or deleted.
    async fn events_of(
        &self,
        rows: &[OutboxRow],
    ) -> Result<Vec<Option<Event>>, parley_schema::StoreError> {
        let messages = self.batch_messages(rows).await?;
        Ok(rows.iter().map(|row| event_of(row, &messages)).collect())
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
                    if let Some(m) = self.store.federation().group_message(group_id, seq).await? {
                        messages.insert((m.group_id.clone(), m.seq), m);
                    }
                }
                continue;
            }
            let found = self
                .store
                .hub_log()
                .group_messages_since(group_id, first - 1, last - first + 1)
                .await?;
            messages.extend(found.into_iter().map(|m| ((m.group_id.clone(), m.seq), m)));
        }
        Ok(messages)
    }
}

/// The federation event of a queued row (docs/protocol.md#event-types), its `event_id` made of
/// the row's id: `None` for a row whose message is no longer in `messages` (the log) or that
/// does not read as an event (it is dropped).
fn event_of(row: &OutboxRow, messages: &HashMap<(String, i64), GroupMessage>) -> Option<Event> {
    let payload = match &row.event {
        Ok(OutboundEvent::Message { group_id, seq }) => {
            EventPayload::Message(message_event(messages.get(&(group_id.clone(), *seq))?)?)
        }
        Ok(OutboundEvent::Welcome { group_id, welcome }) => EventPayload::Welcome(WelcomeEvent {
            group_id: group_id.clone(),
            sender: user_device(&welcome.sender),
            welcome: STANDARD.encode(&welcome.message),
            recipients: welcome.recipients.iter().map(user_device).collect(),
        }),
        Ok(OutboundEvent::DeviceListUpdate { user_id, devices }) => {
            EventPayload::DeviceListUpdate(DeviceListUpdate {
                user_id: user_id.clone(),
                devices: devices
                    .iter()
                    .map(|d| DeviceKey {
                        device_id: d.device_id.clone(),
                        signature_key: d.signature_key.clone(),
                    })
                    .collect(),
            })
        }
        Err(unreadable) => {
            tracing::error!(row = row.id, error = %unreadable, "unreadable outbox row");
            return None;
        }
    };
    Some(Event {
        event_id: format!("e{}", row.id),
        payload,
    })
}

/// A message of the hub's log as a `message` event carries it: its group and the message
/// object of docs/protocol.md#event-objects. `None` for a kind the protocol does not know.
fn message_event(m: &GroupMessage) -> Option<MessageEvent> {
    let Some(kind) = MessageKind::parse(&m.kind) else {
        tracing::error!(kind = %m.kind, group_id = %m.group_id, seq = m.seq, "logged message of unknown kind");
        return None;
    };
    // A commit's adds and removes are stored as the JSON its sender declared; like /sync,
    // leave out what does not read as a device list.
    let devices = |json: &Option<String>| {
        json.as_deref()
            .and_then(|s| serde_json::from_str::<Vec<UserDevice>>(s).ok())
    };
    Some(MessageEvent {
        group_id: m.group_id.clone(),
        seq: m.seq.max(0) as u64,
        sender: UserDevice {
            user_id: m.sender_user.clone(),
            device_id: m.sender_device.clone(),
        },
        kind,
        epoch: m.epoch.max(0) as u64,
        message: STANDARD.encode(&m.message),
        ts: m.ts.max(0) as u64,
        adds: devices(&m.adds),
        removes: devices(&m.removes),
        expires_ts: m.expires_ts.map(|e| e.max(0) as u64),
    })
}

fn user_device(d: &OutboundDevice) -> UserDevice {
    UserDevice {
        user_id: d.user_id.clone(),
        device_id: d.device_id.clone(),
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

/// The leading rows whose events fit in `budget` bytes of JSON (at least one row), with those
/// events. Rows without an event ride along (they are deleted with the batch).
fn fit(
    rows: Vec<OutboxRow>,
    events: Vec<Option<Event>>,
    budget: usize,
) -> (Vec<OutboxRow>, Vec<Event>) {
    let mut used = 0usize;
    let mut batch = Vec::new();
    let mut kept = Vec::new();
    for (row, event) in rows.into_iter().zip(events) {
        // Its bytes and a separating comma.
        let size = event.as_ref().map_or(0, |e| json_len(e) + 1);
        if !batch.is_empty() && used + size > budget {
            break;
        }
        used += size;
        if event.is_none() {
            tracing::warn!(
                row = row.id,
                kind = kind_of(&row),
                "queued event has no message any more, or cannot be read: dropped"
            );
        }
        batch.push(row);
        kept.extend(event);
    }
    (batch, kept)
}

/// The length of `event` as JSON, counted as it is written rather than built (0 if it
/// cannot be written, which the transaction then reports).
fn json_len(event: &Event) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, event) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(id: i64, event: OutboundEvent) -> OutboxRow {
        OutboxRow {
            id,
            destination: "b.example".into(),
            event: Ok(event),
            created_ts: 0,
        }
    }

    fn message_row(id: i64) -> OutboxRow {
        row(
            id,
            OutboundEvent::Message {
                group_id: "!g:a.example".into(),
                seq: id,
            },
        )
    }

    fn logged(seq: i64, kind: &str, adds: Option<&str>, removes: Option<&str>) -> GroupMessage {
        GroupMessage {
            expires_ts: None,
            group_id: "!g:a.example".into(),
            seq,
            stream_pos: 40 + seq,
            sender_user: "@alice:a.example".into(),
            sender_device: "QWERTYUIOP".into(),
            kind: kind.into(),
            epoch: 3,
            message: vec![0, 1, 2],
            adds: adds.map(str::to_owned),
            removes: removes.map(str::to_owned),
            ts: 1_700_000_000_000,
        }
    }

    #[test]
    fn batches_are_cut_by_bytes_and_always_carry_one_event() {
        let big = |id: i64| {
            let mut m = logged(id, "application", None, None);
            m.message = vec![7; 300];
            message_event(&m).map(|payload| Event {
                event_id: format!("e{id}"),
                payload: EventPayload::Message(payload),
            })
        };
        let one = big(1).as_ref().map_or(0, json_len) + 1;
        let budget = 2 * one + one / 2;
        let rows: Vec<OutboxRow> = (1..=5).map(message_row).collect();
        let events = vec![big(1), big(2), big(3), None, big(5)];
        let (batch, kept) = fit(rows.clone(), events.clone(), budget);
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(kept.len(), 2);
        // One event larger than the budget still goes alone (the receiver decides).
        let (batch, kept) = fit(rows.clone(), events.clone(), 10);
        assert_eq!((batch.len(), kept.len()), (1, 1));
        // A missing message rides along without an event.
        let (batch, kept) = fit(rows, events, 100_000);
        assert_eq!((batch.len(), kept.len()), (5, 4));
        assert_eq!(
            json_len(&kept[0]),
            serde_json::to_vec(&kept[0]).unwrap().len()
        );
    }

    #[test]
    fn queued_rows_become_the_documented_federation_events() {
        let bob = r#"[{"user_id":"@bob:b.example","device_id":"ABCDEFGHIJ"}]"#;
        let messages: HashMap<(String, i64), GroupMessage> = [
            logged(5, "commit", Some(bob), Some("[]")),
            logged(6, "application", None, None),
        ]
        .into_iter()
        .map(|m| ((m.group_id.clone(), m.seq), m))
        .collect();
        let alice = OutboundDevice {
            user_id: "@alice:a.example".into(),
            device_id: "QWERTYUIOP".into(),
        };
        let rows = [
            message_row(5),
            message_row(6),
            row(
                13,
                OutboundEvent::Welcome {
                    group_id: "!g:a.example".into(),
                    welcome: parley_schema::OutboundWelcome {
                        sender: alice.clone(),
                        recipients: vec![OutboundDevice {
                            user_id: "@bob:b.example".into(),
                            device_id: "ABCDEFGHIJ".into(),
                        }],
                        message: vec![9, 9],
                    },
                },
            ),
            row(
                14,
                OutboundEvent::DeviceListUpdate {
                    user_id: alice.user_id.clone(),
                    devices: vec![parley_schema::OutboundDeviceKey {
                        device_id: alice.device_id.clone(),
                        signature_key: "AAAA".into(),
                    }],
                },
            ),
        ];
        let events: Vec<Event> = rows
            .iter()
            .map(|r| event_of(r, &messages).unwrap())
            .collect();
        let sender = json!({"user_id": "@alice:a.example", "device_id": "QWERTYUIOP"});
        let txn = Transaction::new("a.example", 1, &events).unwrap();
        assert_eq!(
            txn.events,
            [
                json!({"event_id": "e5", "type": "message", "group_id": "!g:a.example", "seq": 5,
                    "sender": sender, "kind": "commit", "epoch": 3, "message": "AAEC",
                    "ts": 1_700_000_000_000u64,
                    "adds": [{"user_id": "@bob:b.example", "device_id": "ABCDEFGHIJ"}],
                    "removes": []}),
                json!({"event_id": "e6", "type": "message", "group_id": "!g:a.example", "seq": 6,
                    "sender": sender, "kind": "application", "epoch": 3, "message": "AAEC",
                    "ts": 1_700_000_000_000u64}),
                json!({"event_id": "e13", "type": "welcome", "group_id": "!g:a.example",
                    "sender": sender, "welcome": "CQk=",
                    "recipients": [{"user_id": "@bob:b.example", "device_id": "ABCDEFGHIJ"}]}),
                json!({"event_id": "e14", "type": "device_list_update",
                    "user_id": "@alice:a.example",
                    "devices": [{"device_id": "QWERTYUIOP", "signature_key": "AAAA"}]}),
            ]
        );
        // A message no longer in the log, and a row that does not read, have no event.
        assert_eq!(event_of(&message_row(7), &messages), None);
        let unreadable = OutboxRow {
            event: Err(parley_schema::UnreadableRow {
                kind: "welcome".into(),
                reason: "recipients is missing".into(),
            }),
            ..message_row(8)
        };
        assert_eq!(event_of(&unreadable, &messages), None);
    }
}
