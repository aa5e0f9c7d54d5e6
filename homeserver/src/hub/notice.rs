//! Notices: entries the hub itself writes into a group's log, not MLS messages. Members'
//! clients read them (`kind: "notice"`, the `message` a base64 JSON object) and act on them;
//! see docs/protocol.md#notices.
//!
//! `member_deactivated` is written when an admin deactivates a local user: the user's devices
//! can no longer commit their own removal, so the notice asks the other members to (any one
//! of them may; the others' commits then lose the race with 409 and find nothing to do).

use parley_client_api::groups::DeviceRef;
use parley_client_api::ids::UserId;
use parley_schema::{Appended, MessageToAppend, StoreError};
use serde::{Deserialize, Serialize};

use super::roster::remote_servers;
use crate::clock::now_ms;
use crate::ids::remote_hub;
use crate::state::AppState;

/// The body of a notice, by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// The account of `user_id` was deactivated: commit the removal of `devices`.
    MemberDeactivated {
        user_id: String,
        devices: Vec<DeviceRef>,
    },
}

/// Writes a `member_deactivated` notice into every group hosted here whose roster holds a
/// device of `user_id`; returns those groups. A group whose roster moves on meanwhile is
/// tried again, a few times.
pub async fn member_deactivated(
    state: &AppState,
    user_id: &UserId,
) -> Result<Vec<String>, StoreError> {
    let memberships = state
        .store
        .hub_log()
        .user_memberships(user_id.as_str())
        .await?;
    let mut by_group: Vec<(String, Vec<DeviceRef>)> = Vec::new();
    for (group_id, device_id) in memberships {
        let device = DeviceRef {
            user_id: user_id.to_string(),
            device_id,
        };
        match by_group.last_mut() {
            Some((g, devices)) if *g == group_id => devices.push(device),
            _ => by_group.push((group_id, vec![device])),
        }
    }
    let own = &state.config.server_name;
    let mut notified = Vec::new();
    for (group_id, devices) in by_group {
        let hosted_here = parley_client_api::ids::GroupId::parse(&group_id)
            .map(|g| remote_hub(own, &g).is_none())
            .unwrap_or(false);
        if !hosted_here {
            continue;
        }
        if append_notice(state, &group_id, user_id, devices).await? {
            notified.push(group_id);
        }
    }
    Ok(notified)
}

/// Appends one notice; false if the group is gone.
async fn append_notice(
    state: &AppState,
    group_id: &str,
    user_id: &UserId,
    devices: Vec<DeviceRef>,
) -> Result<bool, StoreError> {
    let Some(first) = devices.first().map(|d| d.device_id.clone()) else {
        return Ok(false);
    };
    let notice = Notice::MemberDeactivated {
        user_id: user_id.to_string(),
        devices,
    };
    let body = serde_json::to_vec(&notice).unwrap_or_default();
    let now = now_ms() as i64;
    for _ in 0..8 {
        let Some(roster) = state.store.hub_log().epoch_roster(group_id).await? else {
            return Ok(false);
        };
        let remote = remote_servers(state, &roster.members);
        let append = MessageToAppend {
            group_id: group_id.to_owned(),
            // Logged under one of the removed devices, so clients can tell whom it concerns;
            // the txn_id makes a retried deactivation write it once.
            sender_user: user_id.to_string(),
            sender_device: first.clone(),
            kind: "notice".into(),
            epoch: roster.epoch,
            message: body.clone(),
            ts: now,
            max_past_epochs: 0,
            txn_id: Some(format!("notice.deactivated.{now}")),
            roster_epoch: roster.epoch,
            outbox: remote.clone(),
        };
        match state.store.hub_log().append_message(append).await? {
            Ok(Appended::New(accepted)) => {
                state.notifier.notify_at(
                    roster
                        .members
                        .iter()
                        .map(|m| (m.user_id.as_str(), m.device_id.as_str())),
                    accepted.stream_pos,
                );
                for d in remote {
                    state.outbox.wake(&d);
                }
                tracing::info!(%group_id, user_id = %user_id, "member_deactivated notice written");
                return Ok(true);
            }
            Ok(Appended::Replayed { .. }) => return Ok(true),
            // The roster moved on under us: read it again.
            Err(_) => continue,
        }
    }
    tracing::warn!(%group_id, "could not write a notice: the group kept changing");
    Ok(false)
}
