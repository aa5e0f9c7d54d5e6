//! Fork recovery at the hub (docs/protocol.md#fork-recovery): a member device that lost the
//! group's state (another member's fork check differs from its own, or it is stuck at an epoch
//! the group left) asks to be re-added; the hub writes a `member_forked` notice naming it, and
//! a member's client commits the device's removal and re-addition with a fresh key package.
//! The device then joins again from the Welcome, replacing its state.

use parley_client_api::groups::DeviceRef;
use parley_client_api::ids::{GroupId, UserId};

use super::error::HubError;
use crate::ids::remote_hub;
use crate::state::AppState;

/// A fork report of this server's `device`: handled here when we are the group's hub,
/// otherwise handed to the hub.
pub async fn submit_forked(
    state: &AppState,
    device: &DeviceRef,
    group_id: &GroupId,
) -> Result<(), HubError> {
    match remote_hub(&state.config.server_name, group_id) {
        None => forked(state, device, group_id.as_str()).await,
        Some(hub) => super::relay::forked(state, hub, group_id, device).await,
    }
}

/// A fork report a follower server makes for its `device` (404 unless we are the hub).
pub async fn follower_forked(
    state: &AppState,
    device: &DeviceRef,
    group_id: &GroupId,
) -> Result<(), HubError> {
    if remote_hub(&state.config.server_name, group_id).is_some() {
        return Err(HubError::NotTheHub);
    }
    forked(state, device, group_id.as_str()).await
}

/// Writes the `member_forked` notice for `device`, a member of the group's current roster
/// (403 `P_NOT_MEMBER` otherwise): once per device and epoch, however often it asks.
async fn forked(state: &AppState, device: &DeviceRef, group_id: &str) -> Result<(), HubError> {
    let roster = state
        .store
        .hub_log()
        .epoch_roster(group_id)
        .await?
        .ok_or(HubError::NoSuchGroup)?;
    let member = roster
        .members
        .iter()
        .any(|m| m.user_id == device.user_id && m.device_id == device.device_id);
    if !member {
        return Err(HubError::NotMember);
    }
    let user_id = UserId::parse(&device.user_id).map_err(|e| HubError::Internal(e.to_string()))?;
    super::notice::member_forked(state, group_id, &user_id, &device.device_id, roster.epoch)
        .await?;
    Ok(())
}
