//! `/sync`: a device's events after its `since` token, waiting up to `timeout_ms` for some.

use std::collections::BTreeMap;
use std::time::Duration;

use parley_client_api::keys::KeyCountResponse;
use std::sync::Arc;

use parley_client_api::sync::{EphemeralEvent, GroupEvents, SyncRequest, SyncResponse};
use parley_schema::{GroupMessage, Welcome};

use super::ephemeral::EphemeralInbox;
use super::error::DeliveryError;
use super::events::{message_event, welcome_event};
use super::{batch_token, parse_since, trim_to_budget, MAX_BATCH_BYTES, SYNC_LIMIT};
use crate::accounts::Authed;
use crate::keys::key_count;
use crate::state::AppState;

/// Longest long-poll wait.
const MAX_TIMEOUT_MS: u64 = 30_000;

/// The device's next batch of events, after waiting for one if none is ready.
pub async fn sync(
    state: &AppState,
    auth: &Authed,
    req: SyncRequest,
) -> Result<SyncResponse, DeliveryError> {
    let since = parse_since(req.since.as_deref())?;
    // Asking for what follows `since` says everything up to it arrived.
    state.received.note(&auth.user_id, &auth.device_id, since);
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(0).min(MAX_TIMEOUT_MS));
    // Subscribe before reading so an event committed in between still wakes us.
    let mut wake = state.notifier.subscribe(&auth.user_id, &auth.device_id);
    // Ephemeral messages sent while this request waits are news too (and only then).
    let mut inbox = (timeout > Duration::ZERO)
        .then(|| state.ephemerals.subscribe(&auth.user_id, &auth.device_id));
    let mut seen = *wake.borrow_and_update();
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (mut messages, mut welcomes, mut next) = state
            .store
            .stream()
            .device_events(&auth.user_id, &auth.device_id, since, SYNC_LIMIT)
            .await?;
        // An expired message is never delivered: the position moves past it.
        let expired = skip_expired(&mut messages);
        trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            MAX_BATCH_BYTES,
            |m| (m.stream_pos, m.message.len()),
        );
        let now = tokio::time::Instant::now();
        let ephemeral = drain(&mut inbox);
        if !messages.is_empty()
            || !welcomes.is_empty()
            || !ephemeral.is_empty()
            || (expired && next > since)
            || now >= deadline
        {
            crate::metrics::delivered("sync", messages.len());
            let key_packages = key_count(state, &auth.user_id, &auth.device_id).await?;
            let mut answer = build_sync(messages, welcomes, next, key_packages);
            answer.ephemeral = ephemeral;
            return Ok(answer);
        }
        // Caught up and about to wait: receipts kept while the device was away are news.
        if inbox.is_some() {
            let kept = state.ephemerals.take_kept(&auth.user_id, &auth.device_id);
            if !kept.is_empty() {
                let key_packages = key_count(state, &auth.user_id, &auth.device_id).await?;
                let mut answer = build_sync(Vec::new(), Vec::new(), since, key_packages);
                answer.ephemeral = kept.iter().map(|e| (**e).clone()).collect();
                return Ok(answer);
            }
        }
        // A drain ends the wait as the deadline would: one last read, then answer.
        let _waiting = crate::metrics::LongPoll::waiting();
        let woken = tokio::select! {
            woken = tokio::time::timeout_at(deadline, wake.changed()) => woken.is_ok(),
            // An ephemeral message: answer with it (the loop reads it again from the inbox).
            Some(first) = next_ephemeral(&mut inbox) => {
                let key_packages = key_count(state, &auth.user_id, &auth.device_id).await?;
                let mut answer = build_sync(Vec::new(), Vec::new(), since, key_packages);
                answer.ephemeral = std::iter::once((*first).clone()).chain(drain(&mut inbox)).collect();
                return Ok(answer);
            }
            _ = state.drain.started() => false,
        };
        if !woken {
            deadline = deadline.min(tokio::time::Instant::now());
            continue; // deadline: one last read, then answer
        }
        let current = *wake.borrow_and_update();
        let changed = current.since(&seen);
        seen = current;
        if changed.sessions
            && state
                .store
                .accounts()
                .session(&auth.session_id)
                .await?
                .is_none()
        {
            return Err(DeliveryError::SessionEnded);
        }
        if changed.keys && !changed.events {
            // A new key-package count is news for a long-poll too.
            let (messages, welcomes, next) = (Vec::new(), Vec::new(), since);
            let key_packages = key_count(state, &auth.user_id, &auth.device_id).await?;
            return Ok(build_sync(messages, welcomes, next, key_packages));
        }
    }
}

/// The ephemeral messages waiting in `inbox`, without waiting.
fn drain(inbox: &mut Option<EphemeralInbox>) -> Vec<EphemeralEvent> {
    let mut out = Vec::new();
    if let Some(inbox) = inbox {
        while let Ok(event) = inbox.messages.try_recv() {
            out.push((*event).clone());
        }
    }
    out
}

/// The next ephemeral message of `inbox`; never, without one.
async fn next_ephemeral(inbox: &mut Option<EphemeralInbox>) -> Option<Arc<EphemeralEvent>> {
    match inbox {
        Some(inbox) => inbox.messages.recv().await,
        None => std::future::pending().await,
    }
}

/// Groups a batch of events into a sync answer.
fn build_sync(
    messages: Vec<GroupMessage>,
    welcomes: Vec<Welcome>,
    next: i64,
    key_packages: KeyCountResponse,
) -> SyncResponse {
    let mut groups: BTreeMap<String, GroupEvents> = BTreeMap::new();
    for m in messages {
        let group_id = m.group_id.clone();
        groups
            .entry(group_id)
            .or_default()
            .messages
            .push(message_event(&m));
    }
    SyncResponse {
        next_batch: batch_token(next),
        welcomes: welcomes.into_iter().map(welcome_event).collect(),
        groups,
        key_packages,
        ephemeral: Vec::new(),
    }
}

/// Acknowledges (deletes) one of the device's Welcomes.
pub async fn delete_welcome(
    state: &AppState,
    auth: &Authed,
    id: &str,
) -> Result<(), DeliveryError> {
    let id: i64 = id.parse().map_err(|_| DeliveryError::NoSuchWelcome)?;
    if !state
        .store
        .stream()
        .delete_welcome(&auth.user_id, &auth.device_id, id)
        .await?
    {
        return Err(DeliveryError::NoSuchWelcome);
    }
    Ok(())
}

/// Drops the messages that have expired (docs/protocol.md#disappearing-messages) from a batch
/// read for a device; whether there were any.
pub(crate) fn skip_expired<M: std::borrow::Borrow<parley_schema::GroupMessage>>(
    messages: &mut Vec<M>,
) -> bool {
    let now = crate::clock::now_ms() as i64;
    let before = messages.len();
    messages.retain(|m| !m.borrow().expired_at(now));
    messages.len() != before
}
