//! Notices: entries the hub itself writes into a group's log, not MLS messages. Members'
//! clients read them (`kind: "notice"`, the `message` a base64 JSON object) and act on them;
//! see docs/protocol.md#notices.
//!
//! `member_deactivated` is written when an admin deactivates a local user: the user's devices
//! can no longer commit their own removal, so the notice asks the other members to (any one
//! of them may; the others' commits then lose the race with 409 and find nothing to do).
//!
//! `member_devices_changed` is written when a member's device list stops matching the
//! group's roster (a new device bound its key, a device was deleted): any member's client
//! adds the new devices and removes the deleted ones, so a user's new device joins their
//! groups even while their other devices are offline. The notice is a hint: clients act on
//! the device list they fetch themselves. [`DeviceNoticeGate`] writes at most one per group
//! and user per [`DEVICE_NOTICE_INTERVAL`], re-checking once the interval has passed, so a
//! server that changes a user's devices in a loop cannot fill a group's log.

use parley_client_api::groups::DeviceRef;
use parley_client_api::ids::UserId;
use parley_schema::{Appended, MessageToAppend, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

use super::notice_gate::Admission;
pub use super::notice_gate::{DeviceNoticeGate, DEVICE_NOTICE_INTERVAL};

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
    /// The devices `user_id`'s server lists no longer match the group: commit the addition of
    /// `added` (listed, not in the group) and the removal of `removed` (in the group, no
    /// longer listed), each checked against the list the client fetches itself.
    MemberDevicesChanged {
        user_id: String,
        added: Vec<DeviceRef>,
        removed: Vec<DeviceRef>,
    },
    /// The device `user_id`/`device_id` lost the group's state (a fork): commit its removal
    /// and re-addition with a fresh key package of that device.
    MemberForked { user_id: String, device_id: String },
}

/// Most devices one notice names in `added` or in `removed`; a client acting on a notice
/// takes the whole current list anyway.
pub const MAX_NOTICE_DEVICES: usize = 32;

/// The devices of `user_id` in the roster of each group hosted here, by group.
async fn hosted_memberships(
    state: &AppState,
    user_id: &UserId,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let memberships = state
        .store
        .hub_log()
        .user_memberships(user_id.as_str())
        .await?;
    let mut by_group: Vec<(String, Vec<String>)> = Vec::new();
    for (group_id, device_id) in memberships {
        match by_group.last_mut() {
            Some((g, devices)) if *g == group_id => devices.push(device_id),
            _ => by_group.push((group_id, vec![device_id])),
        }
    }
    let own = &state.config.server_name;
    by_group.retain(|(group_id, _)| {
        parley_client_api::ids::GroupId::parse(group_id)
            .map(|g| remote_hub(own, &g).is_none())
            .unwrap_or(false)
    });
    Ok(by_group)
}

fn device_refs(user_id: &UserId, devices: impl IntoIterator<Item = String>) -> Vec<DeviceRef> {
    devices
        .into_iter()
        .map(|device_id| DeviceRef {
            user_id: user_id.to_string(),
            device_id,
        })
        .collect()
}

/// Writes a `member_deactivated` notice into every group hosted here whose roster holds a
/// device of `user_id`; returns those groups. A group whose roster moves on meanwhile is
/// tried again, a few times.
pub async fn member_deactivated(
    state: &AppState,
    user_id: &UserId,
) -> Result<Vec<String>, StoreError> {
    let mut notified = Vec::new();
    for (group_id, devices) in hosted_memberships(state, user_id).await? {
        let Some(sender) = devices.first().cloned() else {
            continue;
        };
        let notice = Notice::MemberDeactivated {
            user_id: user_id.to_string(),
            devices: device_refs(user_id, devices),
        };
        // A txn_id is remembered per sender device across groups: the group is part of it.
        let txn_id = format!(
            "notice.deactivated.{}.{}",
            now_ms(),
            hex_prefix(&Sha256::digest(group_id.as_bytes())[..8])
        );
        if append_notice(state, &group_id, user_id, &sender, &notice, txn_id).await? {
            notified.push(group_id);
        }
    }
    Ok(notified)
}

/// The device ids `user_id`'s server lists now: this server's own record for a local user,
/// the cached list for another server's.
async fn listed_devices(state: &AppState, user_id: &UserId) -> Result<Vec<String>, StoreError> {
    if crate::ids::same_server(user_id.server_name(), &state.config.server_name) {
        return Ok(state
            .store
            .accounts()
            .devices(user_id.as_str())
            .await?
            .into_iter()
            .filter(|d| d.signature_key.is_some())
            .map(|d| d.device_id)
            .collect());
    }
    Ok(state
        .store
        .federation()
        .remote_device_list(user_id.as_str())
        .await?
        .map(|(_, devices)| devices.into_iter().map(|(d, _)| d).collect())
        .unwrap_or_default())
}

/// Writes a `member_devices_changed` notice into every group hosted here whose roster holds
/// a device of `user_id` and differs from the user's listed devices; returns those groups.
/// An empty list is left to `member_deactivated`. A group noticed less than
/// [`DEVICE_NOTICE_INTERVAL`] ago is looked at again once the interval has passed.
pub async fn member_devices_changed(
    state: &AppState,
    user_id: &UserId,
) -> Result<Vec<String>, StoreError> {
    let listed = listed_devices(state, user_id).await?;
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let listed_set: HashSet<&String> = listed.iter().collect();
    let mut notified = Vec::new();
    let mut later: Option<std::time::Duration> = None;
    for (group_id, in_roster) in hosted_memberships(state, user_id).await? {
        let Some(sender) = in_roster.first().cloned() else {
            continue;
        };
        let in_group: HashSet<&String> = in_roster.iter().collect();
        let mut added: Vec<String> = listed
            .iter()
            .filter(|d| !in_group.contains(d))
            .cloned()
            .collect();
        let mut removed: Vec<String> = in_roster
            .iter()
            .filter(|d| !listed_set.contains(d))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            continue;
        }
        match state
            .device_notices
            .admit(&group_id, user_id.as_str(), std::time::Instant::now())
        {
            Admission::Now => {}
            Admission::Later(wait) => {
                later = Some(later.map_or(wait, |w| w.max(wait)));
                continue;
            }
        }
        added.sort();
        removed.sort();
        added.truncate(MAX_NOTICE_DEVICES);
        removed.truncate(MAX_NOTICE_DEVICES);
        // The same difference noticed again (a retried update, a re-check) is written once.
        // A txn_id is remembered per sender device across groups: the group is part of it.
        let mut digest = Sha256::new();
        digest.update(group_id.as_bytes());
        digest.update([0]);
        for d in added.iter().chain([&String::new()]).chain(removed.iter()) {
            digest.update(d.as_bytes());
            digest.update([0]);
        }
        let txn_id = format!("notice.devices.{}", hex_prefix(&digest.finalize()[..12]));
        let notice = Notice::MemberDevicesChanged {
            user_id: user_id.to_string(),
            added: device_refs(user_id, added),
            removed: device_refs(user_id, removed),
        };
        if append_notice(state, &group_id, user_id, &sender, &notice, txn_id).await? {
            notified.push(group_id);
        }
    }
    if let Some(wait) = later {
        if state.device_notices.schedule_recheck(user_id.as_str()) {
            tokio::spawn(recheck(state.clone(), user_id.clone(), wait));
        }
    }
    Ok(notified)
}

/// Looks at `user_id`'s groups again after `wait` (boxed: it runs `member_devices_changed`,
/// which may schedule another).
fn recheck(
    state: AppState,
    user_id: UserId,
    wait: std::time::Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        tokio::time::sleep(wait).await;
        state.device_notices.recheck_started(user_id.as_str());
        if let Err(e) = member_devices_changed(&state, &user_id).await {
            tracing::warn!(user_id = %user_id, error = %e, "device list notice re-check failed");
        }
    })
}

/// Writes a `member_forked` notice for `device_id` of `user_id` into `group_id`, at most
/// once per device and `epoch` (its `txn_id` says which); false if the group is gone.
pub async fn member_forked(
    state: &AppState,
    group_id: &str,
    user_id: &UserId,
    device_id: &str,
    epoch: i64,
) -> Result<bool, StoreError> {
    let mut digest = Sha256::new();
    for part in [group_id, user_id.as_str(), device_id] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    digest.update(epoch.to_be_bytes());
    let txn_id = format!("notice.forked.{}", hex_prefix(&digest.finalize()[..12]));
    let notice = Notice::MemberForked {
        user_id: user_id.to_string(),
        device_id: device_id.to_owned(),
    };
    append_notice(state, group_id, user_id, device_id, &notice, txn_id).await
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends one notice, logged under `sender` (a device of `user_id` in the roster, so
/// clients can tell whom it concerns); `txn_id` makes a retry write it once. False if the
/// group is gone.
async fn append_notice(
    state: &AppState,
    group_id: &str,
    user_id: &UserId,
    sender: &str,
    notice: &Notice,
    txn_id: String,
) -> Result<bool, StoreError> {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    let now = now_ms() as i64;
    for _ in 0..8 {
        let Some(roster) = state.store.hub_log().epoch_roster(group_id).await? else {
            return Ok(false);
        };
        let remote = remote_servers(state, &roster.members);
        let append = MessageToAppend {
            expires_ts: None,
            group_id: group_id.to_owned(),
            sender_user: user_id.to_string(),
            sender_device: sender.to_owned(),
            kind: "notice".into(),
            epoch: roster.epoch,
            message: body.clone(),
            ts: now,
            max_past_epochs: 0,
            txn_id: Some(txn_id.clone()),
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
                tracing::info!(%group_id, user_id = %user_id, kind = notice.kind(), "notice written");
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

impl Notice {
    /// The notice's `type`, for logs.
    fn kind(&self) -> &'static str {
        match self {
            Notice::MemberDeactivated { .. } => "member_deactivated",
            Notice::MemberDevicesChanged { .. } => "member_devices_changed",
            Notice::MemberForked { .. } => "member_forked",
        }
    }
}
