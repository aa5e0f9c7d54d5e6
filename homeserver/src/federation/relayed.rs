//! A group message relayed by its hub (in a transaction or a catch-up page), as this server
//! stores it: checked against the client API's limits, with the adds and removes that concern
//! this server's devices picked out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::groups::DeviceRef;
use parley_schema::{GroupMessage, RemoteMessage};

use super::error::FederationError;
use crate::ids::{same_server, server_of};
use crate::state::AppState;

/// Whether `user_id` is a user of this server.
pub fn is_ours(state: &AppState, user_id: &str) -> bool {
    same_server(server_of(user_id), &state.config.server_name)
}

/// A relayed message as this server stores it (400 `P_INVALID_MESSAGE` / `P_BAD_JSON` for
/// values no hub could have produced).
pub fn remote_message(
    state: &AppState,
    m: parley_federation::transactions::GroupMessage,
) -> Result<RemoteMessage, FederationError> {
    use parley_federation::transactions::{MessageKind, UserDevice};
    let seq = i64::try_from(m.seq)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| FederationError::BadField("seq must be a positive integer".into()))?;
    let epoch = i64::try_from(m.epoch)
        .ok()
        .filter(|e| *e < i64::MAX)
        .ok_or_else(|| FederationError::BadField("epoch is out of range".into()))?;
    let ts =
        i64::try_from(m.ts).map_err(|_| FederationError::BadField("ts is out of range".into()))?;
    let message = STANDARD
        .decode(m.message.as_bytes())
        .map_err(|_| FederationError::InvalidMessage("message is not base64".into()))?;
    // The client API's limits hold for what other hubs relay, too.
    let limits = &state.config.limits;
    let limit = match m.kind {
        MessageKind::Commit => limits.max_bundle_bytes,
        MessageKind::Proposal | MessageKind::Application | MessageKind::Notice => {
            limits.max_message_bytes
        }
    };
    if message.len() as u64 > limit {
        return Err(FederationError::TooLarge {
            limit: limit as usize,
        });
    }
    let local = |list: &Option<Vec<UserDevice>>| -> Vec<(String, String)> {
        list.iter()
            .flatten()
            .filter(|d| is_ours(state, &d.user_id))
            .map(|d| (d.user_id.clone(), d.device_id.clone()))
            .collect()
    };
    let wire = |list: &Option<Vec<UserDevice>>| -> Result<Option<String>, FederationError> {
        list.as_ref()
            .map(|l| {
                let refs: Vec<DeviceRef> = l
                    .iter()
                    .map(|d| DeviceRef {
                        user_id: d.user_id.clone(),
                        device_id: d.device_id.clone(),
                    })
                    .collect();
                serde_json::to_string(&refs).map_err(|e| FederationError::Internal(e.to_string()))
            })
            .transpose()
    };
    let kind = m.kind.as_str();
    // Only application messages expire, whatever a hub says.
    let expires_ts = m
        .expires_ts
        .filter(|_| kind == "application")
        .map(|e| i64::try_from(e).unwrap_or(i64::MAX));
    // One that expired before it got here is never delivered: its ciphertext is not kept
    // either (the row keeps the log gap-free).
    let message = if expires_ts.is_some_and(|e| e <= crate::clock::now_ms() as i64) {
        Vec::new()
    } else {
        message
    };
    Ok(RemoteMessage {
        local_adds: local(&m.adds),
        local_removes: local(&m.removes),
        message: GroupMessage {
            group_id: m.group_id,
            seq,
            stream_pos: 0,
            sender_user: m.sender.user_id,
            sender_device: m.sender.device_id,
            kind: kind.to_owned(),
            epoch,
            message,
            adds: wire(&m.adds)?,
            removes: wire(&m.removes)?,
            ts,
            expires_ts,
        },
    })
}

/// Drops from a relayed commit's local adds the devices that do not exist here: a hub cannot
/// make us keep a group for a device we never had.
pub async fn keep_existing_local_adds(
    state: &AppState,
    remote: &mut RemoteMessage,
) -> Result<(), FederationError> {
    let mut kept = Vec::with_capacity(remote.local_adds.len());
    for (user_id, device_id) in std::mem::take(&mut remote.local_adds) {
        if state
            .store
            .accounts()
            .device(&user_id, &device_id)
            .await?
            .is_some()
        {
            kept.push((user_id, device_id));
        }
    }
    remote.local_adds = kept;
    Ok(())
}
