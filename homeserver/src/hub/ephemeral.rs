//! Ephemeral messages (typing notices, read receipts) at the hub: checked like an application
//! message (framing, epoch window, the sender in the roster), then handed to the member
//! devices connected at the time, here and on the other member servers, which get it in one
//! signed request each, not queued and not retried. Nothing is stored, nothing takes a seq
//! or a stream position, and no write reaches the database (docs/protocol.md#ephemeral).

use parley_client_api::endpoint::Empty;
use parley_client_api::groups::{DeviceRef, SendRequest};
use parley_client_api::ids::{GroupId, TxnId};
use parley_client_api::params::{GroupTxnPath, TxnPath};
use parley_client_api::sync::EphemeralEvent;
use parley_federation::endpoints::{FollowerEphemeral, FollowerSendRequest, RelayEphemeral};

use super::error::HubError;
use super::roster::{remote_servers, sends_as_member};
use super::{decode, invalid};
use crate::delivery::ephemeral::MAX_EPHEMERAL_BYTES;
use crate::federation::remote_errors::RemoteError;
use crate::ids::{is_local, random_id, remote_hub};
use crate::mls_check::{self, ContentKind};
use crate::state::AppState;

/// How long the hub waits for a member server to take an ephemeral message.
const RELAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An ephemeral message from a device of this server: handled here when this server is the
/// group's hub, else submitted to the hub.
pub async fn submit_ephemeral(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    txn_id: &TxnId,
    req: SendRequest,
) -> Result<(), HubError> {
    match remote_hub(&state.config.server_name, group_id) {
        None => hub_ephemeral(state, sender, group_id.as_str(), req).await,
        Some(hub) => {
            let path = GroupTxnPath {
                group_id: group_id.clone(),
                txn_id: txn_id.clone(),
            };
            let request = FollowerSendRequest {
                send: req,
                sender: sender.clone(),
            };
            state
                .fed
                .call::<FollowerEphemeral>(hub, &path, &request)
                .await
                .map_err(RemoteError::from)?;
            Ok(())
        }
    }
}

/// An ephemeral message a member server submits for its device (404 unless we are the hub).
pub async fn follower_ephemeral(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    req: SendRequest,
) -> Result<(), HubError> {
    if remote_hub(&state.config.server_name, group_id).is_some() {
        return Err(HubError::NotTheHub);
    }
    hub_ephemeral(state, sender, group_id.as_str(), req).await
}

/// Checks an ephemeral message at the hub and hands it on.
async fn hub_ephemeral(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    req: SendRequest,
) -> Result<(), HubError> {
    let (message_b64, latest) = (req.message, req.keep_latest);
    let roster = state
        .store
        .hub_log()
        .epoch_roster(group_id)
        .await?
        .ok_or(HubError::NoSuchGroup)?;
    let message = decode("message", &message_b64)?;
    if message.len() > MAX_EPHEMERAL_BYTES {
        return Err(HubError::TooLarge {
            limit: MAX_EPHEMERAL_BYTES,
        });
    }
    let info = mls_check::inspect_message(&message).map_err(invalid)?;
    match info.framed().map(|f| f.content_type) {
        Some(ContentKind::Application) => {}
        _ => return Err(invalid("only application messages can be ephemeral")),
    }
    let framed = mls_check::check_envelope(&info, group_id.as_bytes(), ContentKind::Application)
        .map_err(invalid)?;
    let current = roster.epoch.max(0) as u64;
    let oldest = current.saturating_sub(state.config.limits.max_past_epochs);
    if framed.epoch > current || framed.epoch < oldest {
        return Err(HubError::InvalidMessage(format!(
            "message is for epoch {} but the group is at {current}",
            framed.epoch
        )));
    }
    if !sends_as_member(
        &roster.members,
        sender,
        framed,
        current,
        ContentKind::Application,
    ) {
        crate::metrics::roster_denial();
        return Err(HubError::NotMember);
    }
    let event = EphemeralEvent {
        group_id: group_id.to_owned(),
        sender: sender.clone(),
        epoch: framed.epoch,
        message: message_b64,
        ts: crate::clock::now_ms(),
        latest,
    };
    for destination in remote_servers(state, &roster.members) {
        relay(state, destination, event.clone());
    }
    let own = &state.config.server_name;
    let local: Vec<(String, String)> = roster
        .members
        .iter()
        .filter(|m| is_local(own, &m.user_id))
        .filter(|m| m.user_id != sender.user_id || m.device_id != sender.device_id)
        .map(|m| (m.user_id.clone(), m.device_id.clone()))
        .collect();
    state.ephemerals.deliver(event, local);
    Ok(())
}

/// Sends `event` to `destination` once, in the background: a server that is down misses it.
fn relay(state: &AppState, destination: String, event: EphemeralEvent) {
    let fed = state.fed.clone();
    tokio::spawn(async move {
        let Ok(txn_id) = TxnId::parse(&random_id(16, b"abcdefghijklmnopqrstuvwxyz0123456789"))
        else {
            return;
        };
        let path = TxnPath { txn_id };
        let sent = tokio::time::timeout(
            RELAY_TIMEOUT,
            fed.call::<RelayEphemeral>(&destination, &path, &event),
        )
        .await;
        if !matches!(sent, Ok(Ok(Empty {}))) {
            tracing::debug!(%destination, "ephemeral message not relayed (not retried)");
        }
    });
}

/// What a member server does with an ephemeral message its hub relayed: hands it to its own
/// member devices connected now (not the sender). Only the group's hub may relay one.
pub async fn relayed_ephemeral(
    state: &AppState,
    origin: &str,
    event: EphemeralEvent,
) -> Result<(), HubError> {
    let group = GroupId::parse(&event.group_id).map_err(|_| HubError::NoSuchGroup)?;
    match remote_hub(&state.config.server_name, &group) {
        Some(hub) if crate::ids::same_server(hub, origin) => {}
        _ => return Err(HubError::NotTheHub),
    }
    // Its size, as the hub bounds it (base64: 4 characters per 3 bytes).
    if event.message.len() > MAX_EPHEMERAL_BYTES.div_ceil(3) * 4 {
        return Err(HubError::TooLarge {
            limit: MAX_EPHEMERAL_BYTES,
        });
    }
    let local: Vec<(String, String)> = state
        .store
        .hub_log()
        .roster(group.as_str())
        .await?
        .into_iter()
        .filter(|m| is_local(&state.config.server_name, &m.user_id))
        .filter(|m| m.user_id != event.sender.user_id || m.device_id != event.sender.device_id)
        .map(|m| (m.user_id, m.device_id))
        .collect();
    state.ephemerals.deliver(event, local);
    Ok(())
}
