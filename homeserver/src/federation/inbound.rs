//! Transactions from other servers' hubs: each event applied on its own (group messages in
//! runs, stored together and in order), with a per-event result; a transaction id is claimed
//! before anything is applied, so a retried transaction gets the first answer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::keys::UserDevicesResponse;
use parley_client_api::ErrorBody;
use parley_federation::transactions::{
    parse_event, EventPayload, EventResult, Transaction, TransactionResponse,
};
use parley_schema::{InboundClaim, Member, RemoteMessage};
use serde_json::Value;

use super::error::FederationError;
use super::follower::{store_all_or_fill, store_or_fill};
use super::relayed::{is_ours, keep_existing_local_adds, remote_message};
use crate::clock::now_ms;
use crate::ids::{hub_of, same_server, server_of};
use crate::state::AppState;
use parley_client_api::ids::{TxnId, UserId};

/// How a refused event reads in the answer (`errcode`, `error`): the API layer's mapping of
/// [`FederationError`], handed in by the handler.
pub type Describe = fn(&FederationError) -> ErrorBody;

/// Applies transaction `txn_id` from `origin` and returns its answer, each refused event
/// spelled as `describe` says.
pub async fn receive_transaction(
    state: &AppState,
    origin: &str,
    txn_id: &TxnId,
    txn: Transaction,
    describe: Describe,
) -> Result<TransactionResponse, FederationError> {
    let txn_id = txn_id.as_str();
    // Claimed before anything is applied: a concurrent copy waits and then gets our answer.
    match state
        .store
        .federation()
        .claim_inbound_transaction(origin, txn_id, now_ms() as i64)
        .await?
    {
        InboundClaim::Claimed => {}
        InboundClaim::Answered(previous) => {
            return serde_json::from_str(&previous)
                .map_err(|e| FederationError::Internal(e.to_string()));
        }
        InboundClaim::InFlight => {
            return Err(FederationError::TransactionInFlight {
                retry_after_ms: 1000,
            })
        }
    }
    // Applied in a task of its own: a sender that disconnects (or dies) mid-transaction
    // cannot cancel it between the claim and the recorded answer, which would leave the claim
    // to expire before a resend is answered. The work was admitted by the origin's limits
    // already; detaching it only keeps it from being cut in half.
    let task = tokio::spawn({
        let (state, origin, txn_id) = (state.clone(), origin.to_owned(), txn_id.to_owned());
        async move { apply_claimed(&state, &origin, &txn_id, txn, describe).await }
    });
    match task.await {
        Ok(answer) => answer,
        Err(e) => {
            let _ = state
                .store
                .federation()
                .release_inbound_transaction(origin, txn_id)
                .await;
            Err(FederationError::Internal(format!(
                "applying the transaction failed: {e}"
            )))
        }
    }
}

/// Applies a claimed transaction and records its answer (or releases the claim).
async fn apply_claimed(
    state: &AppState,
    origin: &str,
    txn_id: &str,
    txn: Transaction,
    describe: Describe,
) -> Result<TransactionResponse, FederationError> {
    if let Err(e) = txn.validate() {
        let _ = state
            .store
            .federation()
            .release_inbound_transaction(origin, txn_id)
            .await;
        return Err(e.into());
    }
    let mut response = TransactionResponse::default();
    // Consecutive group messages are stored together (one write, in order); any other event
    // first stores the run before it, so events still take effect in the order sent.
    let mut run: Vec<(String, RemoteMessage)> = Vec::new();
    for raw in &txn.events {
        let event_id = raw
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let result = match parse_event(raw) {
            Ok(event) => match event.payload {
                EventPayload::Message(m) => match relayed_message(state, origin, m) {
                    Ok(mut remote) => match keep_existing_local_adds(state, &mut remote).await {
                        Ok(()) => {
                            run.push((event_id, remote));
                            continue;
                        }
                        Err(e) => refused(describe, &e),
                    },
                    Err(e) => refused(describe, &e),
                },
                other => {
                    store_run(state, origin, &mut run, &mut response, describe).await;
                    match apply_event(state, origin, &event_id, other).await {
                        Ok(()) => EventResult::Accepted {},
                        Err(e) => refused(describe, &e),
                    }
                }
            },
            Err(e) => EventResult::refused(&e),
        };
        response.results.insert(event_id, result);
    }
    store_run(state, origin, &mut run, &mut response, describe).await;
    let answer =
        serde_json::to_string(&response).map_err(|e| FederationError::Internal(e.to_string()))?;
    if let Err(e) = state
        .store
        .federation()
        .record_inbound_transaction(origin, txn_id, &answer, now_ms() as i64)
        .await
    {
        // Let a copy be applied again (each event is idempotent) rather than wait it out.
        let _ = state
            .store
            .federation()
            .release_inbound_transaction(origin, txn_id)
            .await;
        return Err(e.into());
    }
    Ok(response)
}

/// The per-event result of a refused event.
fn refused(describe: Describe, e: &FederationError) -> EventResult {
    let ErrorBody { errcode, error, .. } = describe(e);
    EventResult::Refused { errcode, error }
}

/// A group message relayed by `origin`, checked: only a group's hub relays its messages.
fn relayed_message(
    state: &AppState,
    origin: &str,
    m: parley_federation::transactions::GroupMessage,
) -> Result<RemoteMessage, FederationError> {
    if hub_of(&state.config.server_name, &m.group_id)?.as_deref() != Some(origin) {
        return Err(FederationError::MessageNotFromHub);
    }
    remote_message(state, m)
}

/// Stores a run of checked messages from one transaction and records each one's result.
async fn store_run(
    state: &AppState,
    origin: &str,
    run: &mut Vec<(String, RemoteMessage)>,
    response: &mut TransactionResponse,
    describe: Describe,
) {
    if run.is_empty() {
        return;
    }
    let (ids, remotes): (Vec<String>, Vec<RemoteMessage>) = std::mem::take(run).into_iter().unzip();
    match store_all_or_fill(state, origin, remotes).await {
        Ok(results) => {
            for (id, result) in ids.into_iter().zip(results) {
                let result = match result {
                    Ok(()) => EventResult::Accepted {},
                    Err(e) => refused(describe, &e),
                };
                response.results.insert(id, result);
            }
        }
        Err(e) => {
            for id in ids {
                response.results.insert(id, refused(describe, &e));
            }
        }
    }
}

/// Applies one event of a transaction from `origin`.
async fn apply_event(
    state: &AppState,
    origin: &str,
    event_id: &str,
    payload: EventPayload,
) -> Result<(), FederationError> {
    match payload {
        EventPayload::Message(m) => {
            let group_id = m.group_id.clone();
            let mut remote = relayed_message(state, origin, m)?;
            keep_existing_local_adds(state, &mut remote).await?;
            store_or_fill(state, origin, &group_id, remote).await
        }
        EventPayload::Welcome(w) => {
            if hub_of(&state.config.server_name, &w.group_id)?.as_deref() != Some(origin) {
                return Err(FederationError::WelcomeNotFromHub);
            }
            let recipients = welcome_recipients(state, &w.recipients)?;
            let welcome = STANDARD
                .decode(w.welcome.as_bytes())
                .map_err(|_| FederationError::InvalidMessage("welcome is not base64".into()))?;
            let limit = state.config.limits.max_bundle_bytes;
            if welcome.len() as u64 > limit {
                return Err(FederationError::TooLarge {
                    limit: limit as usize,
                });
            }
            crate::mls_check::inspect_welcome(&welcome)
                .map_err(|e| FederationError::InvalidMessage(format!("welcome: {e}")))?;
            let sender = Member {
                user_id: w.sender.user_id.clone(),
                device_id: w.sender.device_id.clone(),
                leaf_index: 0,
            };
            // Stored once, for the recipients that are devices of ours.
            let queued = state
                .store
                .federation()
                .store_remote_welcome(
                    origin,
                    event_id,
                    &w.group_id,
                    &sender,
                    &welcome,
                    &recipients,
                    now_ms() as i64,
                )
                .await?;
            state
                .notifier
                .notify_all(queued.iter().map(|(u, d)| (u.as_str(), d.as_str())));
            Ok(())
        }
        EventPayload::DeviceListUpdate(update) => {
            // A server speaks only for its own users.
            if !same_server(server_of(&update.user_id), origin) {
                return Err(FederationError::NotTheUsersServer);
            }
            let list = UserDevicesResponse {
                user_id: update.user_id.clone(),
                devices: update
                    .devices
                    .iter()
                    .map(|d| parley_client_api::keys::DeviceKey {
                        device_id: d.device_id.clone(),
                        signature_key: d.signature_key.clone(),
                    })
                    .collect(),
            };
            super::device_lists::cache_remote_devices(state, &list).await?;
            // No device left (a deactivation, or every device deleted): the groups hosted here
            // that still list some of them ask their members to commit the removal, as the
            // user's own server does for its groups.
            // Otherwise the groups whose roster no longer matches the list ask their members
            // to add the new devices and remove the deleted ones.
            if let Ok(user_id) = UserId::parse(&list.user_id) {
                if list.devices.is_empty() {
                    let groups = crate::hub::notice::member_deactivated(state, &user_id).await?;
                    if !groups.is_empty() {
                        tracing::info!(user_id = %user_id, origin = %origin, groups = groups.len(), "a remote user has no device left: members asked to remove theirs");
                    }
                } else {
                    crate::hub::notice::member_devices_changed(state, &user_id).await?;
                }
            }
            Ok(())
        }
    }
}

/// A relayed Welcome's recipients on this server, each once; more than
/// `federation.max_welcome_recipients` listed is 413 `P_TOO_LARGE`.
fn welcome_recipients(
    state: &AppState,
    listed: &[parley_federation::transactions::UserDevice],
) -> Result<Vec<(String, String)>, FederationError> {
    let cap = state.config.federation.max_welcome_recipients;
    if listed.len() > cap {
        return Err(FederationError::TooLarge { limit: cap });
    }
    let mut seen = std::collections::HashSet::with_capacity(listed.len());
    Ok(listed
        .iter()
        .filter(|d| is_ours(state, &d.user_id))
        .map(|d| (d.user_id.clone(), d.device_id.clone()))
        .filter(|d| seen.insert(d.clone()))
        .collect())
}
