//! `/sync`: a device's events after its `since` token, waiting up to `timeout_ms` for some.

use std::collections::BTreeMap;
use std::time::Duration;

use parley_client_api::keys::KeyCountResponse;
use parley_client_api::sync::{GroupEvents, SyncRequest, SyncResponse};
use parley_schema::{GroupMessage, Welcome};

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
    let mut seen = *wake.borrow_and_update();
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (mut messages, mut welcomes, mut next) = state
            .store
            .stream()
            .device_events(&auth.user_id, &auth.device_id, since, SYNC_LIMIT)
            .await?;
        trim_to_budget(
            &mut messages,
            &mut welcomes,
            &mut next,
            MAX_BATCH_BYTES,
            |m| (m.stream_pos, m.message.len()),
        );
        let now = tokio::time::Instant::now();
        if !messages.is_empty() || !welcomes.is_empty() || now >= deadline {
            crate::metrics::delivered("sync", messages.len());
            let key_packages = key_count(state, &auth.user_id, &auth.device_id).await?;
            return Ok(build_sync(messages, welcomes, next, key_packages));
        }
        // A drain ends the wait as the deadline would: one last read, then answer.
        let _waiting = crate::metrics::LongPoll::waiting();
        let woken = tokio::select! {
            woken = tokio::time::timeout_at(deadline, wake.changed()) => woken.is_ok(),
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
