//! Gap fill on member (follower) servers: a group's messages are stored and delivered in the
//! hub's seq order, exactly once, even when some never arrived (a hub's outbox row lost, this
//! server's database restored from a backup, an ACL that blocked the hub for a while).
//!
//! A relayed message whose seq is not the successor of the last one stored is not stored: it
//! starts (or re-arms) a fill of that group, which pages through the hub's
//! `GET /groups/{group_id}/messages?since=SEQ` from the last stored seq and stores every page
//! in order — the message that revealed the gap included, since the hub has it too. Devices
//! therefore never see a seq before the ones below it. One fill runs per group at a time; a gap
//! noticed while it runs makes it look again when done. A fill that cannot reach the hub retries
//! with capped exponential backoff; one the hub refuses (403/404, or a page that is not the
//! group's gap-free log) gives up, and the next message of the group starts another. At
//! start-up every followed group with a current member device is caught up once, which also
//! covers a fill interrupted by a restart.

use std::sync::Arc;
use std::time::Duration;

use parley_client_api::ids::GroupId;
use parley_client_api::params::GroupPath;
use parley_client_api::sync::MessageEvent;
use parley_federation::endpoints::{CatchUp, CatchUpQuery};
use parley_federation::transactions::{GroupMessage, MessageKind};
use parley_schema::{RemoteMessage, RemoteStored};

use super::client::FedError;
use super::error::FederationError;
use super::relayed::{keep_existing_local_adds, remote_message};
use crate::clock::now_ms;
use crate::ids::hub_of;
use crate::state::AppState;

/// First retry delay of a fill that could not reach the hub.
const MIN_RETRY_MS: u64 = 500;
/// How long the start-up catch-up waits for one group before starting the next.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// Attempts before a fill gives up until the group's next message or the next start.
const MAX_ATTEMPTS: u32 = 20;

/// Why a fill stopped short.
#[derive(Debug)]
enum FillError {
    /// Worth retrying: the hub was unreachable, or our store failed.
    Transient(String),
    /// Retrying will not help until something changes (refused, or a broken page).
    Permanent(String),
}

impl From<FedError> for FillError {
    fn from(e: FedError) -> Self {
        match &e {
            FedError::Refused { status, .. } if *status != 429 => {
                FillError::Permanent(e.to_string())
            }
            FedError::NotAllowed(_) | FedError::BadAnswer { .. } => {
                FillError::Permanent(e.to_string())
            }
            _ => FillError::Transient(e.to_string()),
        }
    }
}

impl From<parley_schema::StoreError> for FillError {
    fn from(e: parley_schema::StoreError) -> Self {
        FillError::Transient(e.to_string())
    }
}

/// Stores a message relayed by `hub` if it is the group's next one and wakes its devices;
/// otherwise starts a fill from the hub (which fetches this message too). Duplicates are
/// ignored. Either way the event is accepted: the hub's log is the source of truth.
pub async fn store_or_fill(
    state: &AppState,
    hub: &str,
    group_id: &str,
    remote: RemoteMessage,
) -> Result<(), FederationError> {
    let seq = remote.message.seq;
    let removed = remote.local_removes.clone();
    match state
        .store
        .federation()
        .store_remote_message(remote)
        .await?
    {
        RemoteStored::Stored => notify(state, group_id, &removed).await,
        RemoteStored::Duplicate => Ok(()),
        RemoteStored::NoLocalMember => Err(FederationError::NoLocalMember),
        RemoteStored::Gap { last_seq } => {
            tracing::info!(%group_id, %hub, last_seq, seq, "gap in a followed group: filling from the hub");
            request_fill(state, hub, group_id);
            Ok(())
        }
    }
}

/// A stored message's group, seq and the local devices it removes.
type MessageKey = (String, i64, Vec<(String, String)>);

/// [`store_or_fill`] for a run of messages from one inbound transaction: stored in one write,
/// in order, each accepted or refused alone; each group's devices are woken once.
pub async fn store_all_or_fill(
    state: &AppState,
    hub: &str,
    remotes: Vec<RemoteMessage>,
) -> Result<Vec<Result<(), FederationError>>, FederationError> {
    let keys: Vec<MessageKey> = remotes
        .iter()
        .map(|r| {
            let m = &r.message;
            (m.group_id.clone(), m.seq, r.local_removes.clone())
        })
        .collect();
    let results = state
        .store
        .federation()
        .store_remote_messages(remotes)
        .await?;
    let mut stored_groups = std::collections::BTreeSet::new();
    let mut removed = Vec::new();
    let mut answers = Vec::with_capacity(results.len());
    for ((group_id, seq, local_removes), result) in keys.into_iter().zip(results) {
        answers.push(match result {
            Ok(RemoteStored::Stored) => {
                removed.extend(local_removes);
                stored_groups.insert(group_id);
                Ok(())
            }
            Ok(RemoteStored::Duplicate) => Ok(()),
            Ok(RemoteStored::NoLocalMember) => Err(FederationError::NoLocalMember),
            Ok(RemoteStored::Gap { last_seq }) => {
                tracing::info!(%group_id, %hub, last_seq, seq, "gap in a followed group: filling from the hub");
                request_fill(state, hub, &group_id);
                Ok(())
            }
            Err(e) => Err(e.into()),
        });
    }
    for group_id in &stored_groups {
        // Stored is stored: a failed wake-up is caught by the devices' next read.
        if let Err(e) = notify(state, group_id, &removed).await {
            tracing::warn!(%group_id, error = %e, "cannot wake the group's devices");
        }
    }
    Ok(answers)
}

/// Wakes the group's local devices (and those a commit just removed).
async fn notify(
    state: &AppState,
    group_id: &str,
    removed: &[(String, String)],
) -> Result<(), FederationError> {
    let members = state.store.hub_log().roster(group_id).await?;
    state.notifier.notify_all(
        members
            .iter()
            .map(|m| (m.user_id.as_str(), m.device_id.as_str())),
    );
    state
        .notifier
        .notify_all(removed.iter().map(|(u, d)| (u.as_str(), d.as_str())));
    Ok(())
}

/// Starts a fill of `group_id` from `hub`, or asks the running one to look again.
pub fn request_fill(state: &AppState, hub: &str, group_id: &str) {
    let Some(flag) = state.gaps.start(group_id) else {
        return; // the running fill looks again
    };
    let (state, hub, group_id) = (state.clone(), hub.to_owned(), group_id.to_owned());
    tokio::spawn(async move { run_fill(state, hub, group_id, flag).await });
}

/// Catches up every followed group once (at start-up), one group after another.
pub async fn catch_up_all(state: AppState) {
    let groups = match state
        .store
        .federation()
        .followed_groups(&state.config.server_name)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot list followed groups for catch-up");
            return;
        }
    };
    for (group_id, _) in groups {
        let Ok(Some(hub)) = hub_of(&state.config.server_name, &group_id) else {
            continue;
        };
        request_fill(&state, &hub, &group_id);
        // One at a time: wait for this group's fill before starting the next, but not behind
        // a hub that is down (its fill keeps retrying on its own).
        let give_up = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while tokio::time::Instant::now() < give_up && state.gaps.is_running(&group_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn run_fill(
    state: AppState,
    hub: String,
    group_id: String,
    again: Arc<std::sync::atomic::AtomicBool>,
) {
    let max_backoff = state.config.federation.max_backoff_ms.max(MIN_RETRY_MS);
    let mut attempts = 0u32;
    let mut backoff = 0u64;
    let lease = FillLease::new(&state, &group_id);
    loop {
        again.store(false, std::sync::atomic::Ordering::Release);
        if !lease.take(&state).await {
            // Another process fills this group (its wake-ups reach our devices too); a request
            // to look again is that process's to serve.
            while !state.gaps.finish(&group_id, &again) {}
            return;
        }
        match fill(&state, &hub, &group_id).await {
            Ok(stored) => {
                attempts = 0;
                backoff = 0;
                if stored > 0 {
                    tracing::info!(%group_id, %hub, stored, "gap filled");
                }
            }
            Err(FillError::Permanent(e)) => {
                tracing::warn!(%group_id, %hub, error = %e, "gap fill refused: waiting for the group's next message");
            }
            Err(FillError::Transient(e)) => {
                attempts += 1;
                if attempts < MAX_ATTEMPTS {
                    backoff = (backoff * 2).clamp(MIN_RETRY_MS, max_backoff);
                    tracing::warn!(%group_id, %hub, error = %e, attempt = attempts, retry_in_ms = backoff, "gap fill failed");
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                    continue;
                }
                tracing::error!(%group_id, %hub, error = %e, "gap fill gave up: waiting for the group's next message");
            }
        }
        if state.gaps.finish(&group_id, &again) {
            lease.release(&state).await;
            return;
        }
    }
}

/// How long a process may fill a group before another may take over (renewed each round).
const FILL_LEASE_MS: i64 = 60_000;

/// The lease `fill:<group_id>`: with several processes on one database, one fills a group at
/// a time (the fill is idempotent; the lease saves the others the work).
struct FillLease {
    name: String,
    holder: Option<String>,
}

impl FillLease {
    fn new(state: &AppState, group_id: &str) -> FillLease {
        FillLease {
            name: format!("fill:{group_id}"),
            holder: state.store.cluster().map(|c| c.id().to_string()),
        }
    }

    /// Takes or renews the lease; true alone on the database.
    async fn take(&self, state: &AppState) -> bool {
        let Some(holder) = &self.holder else {
            return true;
        };
        let now = now_ms() as i64;
        match state
            .store
            .leases()
            .take(&self.name, holder, now, now + FILL_LEASE_MS)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                // Filling twice is harmless; not filling is not.
                tracing::warn!(error = %e, lease = %self.name, "cannot take the fill lease; filling anyway");
                true
            }
        }
    }

    async fn release(&self, state: &AppState) {
        if let Some(holder) = &self.holder {
            if let Err(e) = state.store.leases().release(&self.name, holder).await {
                tracing::warn!(error = %e, lease = %self.name, "cannot release the fill lease");
            }
        }
    }
}

/// Pages through the hub's log from the last stored seq until an empty page; returns how many
/// messages were stored.
async fn fill(state: &AppState, hub: &str, group_id: &str) -> Result<usize, FillError> {
    let mut stored = 0usize;
    loop {
        let since = state
            .store
            .hub_log()
            .group(group_id)
            .await?
            .map_or(0, |g| g.last_seq.max(0));
        let path = GroupPath {
            group_id: GroupId::parse(group_id)
                .map_err(|e| FillError::Permanent(format!("stored group id: {e}")))?,
        };
        let query = CatchUpQuery {
            since: since as u64,
        };
        let answer = state.fed.call::<CatchUp>(hub, &path, &query).await?;
        if answer.group_id != group_id {
            return Err(FillError::Permanent(
                "the catch-up page is for another group".into(),
            ));
        }
        // The hub deleted its log past our last seq (messages every server had been sent):
        // what it no longer holds is skipped, the rest stored from there.
        if let Some(pruned) = answer.pruned_through.filter(|p| *p > since) {
            if state
                .store
                .federation()
                .skip_pruned(group_id, pruned)
                .await?
            {
                tracing::warn!(%group_id, %hub, from_seq = since, to_seq = pruned, "the hub deleted messages this server never stored: skipped");
                crate::metrics::follower_skipped(pruned - since);
            }
        }
        let page = answer.messages;
        // A page may be cut by bytes before the end: only an empty one ends the fill.
        let full = !page.is_empty();
        let mut woken = Vec::new();
        for event in page {
            let mut remote = page_message(state, group_id, event).map_err(|e| {
                FillError::Permanent(format!("catch-up page holds a bad message: {e}"))
            })?;
            keep_existing_local_adds(state, &mut remote)
                .await
                .map_err(|e| FillError::Transient(e.to_string()))?;
            let seq = remote.message.seq;
            let removed = remote.local_removes.clone();
            match state
                .store
                .federation()
                .store_remote_message(remote)
                .await?
            {
                RemoteStored::Stored => {
                    stored += 1;
                    woken.extend(removed);
                }
                // Before the commit that adds our first device: not ours to keep.
                RemoteStored::Duplicate | RemoteStored::NoLocalMember => {}
                RemoteStored::Gap { last_seq } => {
                    notify(state, group_id, &woken).await.ok();
                    return Err(FillError::Permanent(format!(
                        "the hub's page skips from seq {last_seq} to {seq}"
                    )));
                }
            }
        }
        // Wake devices after each page, so a long fill delivers as it goes.
        notify(state, group_id, &woken)
            .await
            .map_err(|e| FillError::Transient(e.to_string()))?;
        let now = state
            .store
            .hub_log()
            .group(group_id)
            .await?
            .map_or(0, |g| g.last_seq.max(0));
        if !full {
            return Ok(stored);
        }
        if now <= since {
            return Err(FillError::Permanent(
                "a full catch-up page made no progress".into(),
            ));
        }
    }
}

/// One message of a catch-up page, checked as a transaction's message event would be.
fn page_message(
    state: &AppState,
    group_id: &str,
    event: MessageEvent,
) -> Result<RemoteMessage, FederationError> {
    let kind = MessageKind::parse(&event.kind).ok_or_else(|| {
        FederationError::BadField(format!("unknown message kind {:?}", event.kind))
    })?;
    let message = GroupMessage {
        expires_ts: event.expires_ts,
        group_id: group_id.to_owned(),
        seq: event.seq,
        sender: event.sender,
        kind,
        epoch: event.epoch,
        message: event.message,
        ts: event.ts,
        adds: event.adds,
        removes: event.removes,
    };
    remote_message(state, message)
}
