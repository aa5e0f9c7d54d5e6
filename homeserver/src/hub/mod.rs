//! The hub: groups registered here, ordered by this server. Commits and messages are checked
//! against the MLS message itself, then appended to the group's gap-free log and delivered to
//! every roster device. A device of this server submitting to a group whose hub is another
//! server goes through [`relay`].

mod commit;
mod disappearing;
pub mod ephemeral;
pub mod error;
pub mod fork;
pub mod join;
pub mod notice;
pub mod notice_gate;
mod relay;
mod roles;
mod roster;
mod send;

pub use commit::hub_commit;
pub use send::hub_send;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::groups::{
    CommitRequest, CommitResponse, CreateGroupRequest, CreateGroupResponse, DeviceRef,
    GroupSummary, ListGroupsResponse, SendRequest, SendResponse,
};
use parley_client_api::ids::{GroupId, TxnId};
use parley_client_api::params::GroupTxnPath;
use parley_schema::{Group, Refused};

use crate::clock::now_ms;
use crate::ids::{random_id, remote_hub};
use crate::state::AppState;
use error::HubError;

/// Characters of the random part of a group id.
const GROUP_ID_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Registers a new group here with `creator` as its only member, at epoch 0; with roles, the
/// creator's user is its first admin.
pub async fn create_group(
    state: &AppState,
    creator: &DeviceRef,
    req: &CreateGroupRequest,
) -> Result<CreateGroupResponse, HubError> {
    let roles = req.roles.then(|| {
        let roles = parley_client_api::roles::GroupRoles::new([creator.user_id.as_str()]);
        String::from_utf8_lossy(&roles.encode()).into_owned()
    });
    let group_id = format!(
        "!{}:{}",
        random_id(22, GROUP_ID_ALPHABET),
        state.config.server_name
    );
    state
        .store
        .hub_log()
        .create_group_with_roles(
            &group_id,
            &creator.user_id,
            &creator.device_id,
            roles.as_deref(),
            now_ms() as i64,
        )
        .await?;
    tracing::info!(%group_id, user_id = %creator.user_id, roles = req.roles, "group created");
    Ok(CreateGroupResponse { group_id })
}

/// The groups `device` is a member of, with their epochs and rosters.
pub async fn list_groups(
    state: &AppState,
    device: &DeviceRef,
) -> Result<ListGroupsResponse, HubError> {
    let mut groups = Vec::new();
    for group in state
        .store
        .stream()
        .device_groups(&device.user_id, &device.device_id)
        .await?
    {
        let members = state.store.hub_log().roster(&group.group_id).await?;
        groups.push(GroupSummary {
            group_id: group.group_id,
            epoch: group.epoch.max(0) as u64,
            members: members
                .into_iter()
                .map(|m| DeviceRef {
                    user_id: m.user_id,
                    device_id: m.device_id,
                })
                .collect(),
        });
    }
    Ok(ListGroupsResponse { groups })
}

/// A commit from a device of this server: applied here when we are the group's hub,
/// otherwise submitted to the hub and its verdict handed back.
pub async fn submit_commit(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    req: CommitRequest,
) -> Result<CommitResponse, HubError> {
    match remote_hub(&state.config.server_name, group_id) {
        None => hub_commit(state, sender, group_id.as_str(), req).await,
        Some(hub) => relay::commit(state, hub, group_id, req, sender).await,
    }
}

/// An application message or proposal from a device of this server, like [`submit_commit`].
pub async fn submit_send(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    txn_id: &TxnId,
    mut req: SendRequest,
) -> Result<SendResponse, HubError> {
    // The media the message names are the sender's server's business only.
    let media = std::mem::take(&mut req.media);
    if media.len() > parley_client_api::groups::MAX_MEDIA_PER_MESSAGE {
        return Err(HubError::TooLarge {
            limit: parley_client_api::groups::MAX_MEDIA_PER_MESSAGE,
        });
    }
    let sent = match remote_hub(&state.config.server_name, group_id) {
        None => hub_send(state, sender, group_id, txn_id, req).await?,
        Some(hub) => {
            let path = GroupTxnPath {
                group_id: group_id.clone(),
                txn_id: txn_id.clone(),
            };
            relay::send(state, hub, path, req, sender).await?
        }
    };
    if let Err(e) = crate::media::reference(state, &sender.user_id, &media).await {
        // The message is sent; the media stay unreferenced and go at the next retention
        // run past their period, which the client learns of only then. Logged.
        tracing::warn!(error = %e, "recording the media a message names failed");
    }
    Ok(sent)
}

/// A commit a follower server submits for its device `sender` (404 unless we are the hub).
pub async fn follower_commit(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    req: CommitRequest,
) -> Result<CommitResponse, HubError> {
    if remote_hub(&state.config.server_name, group_id).is_some() {
        return Err(HubError::NotTheHub);
    }
    hub_commit(state, sender, group_id.as_str(), req).await
}

/// A message a follower server submits for its device `sender` (404 unless we are the hub).
pub async fn follower_send(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    txn_id: &TxnId,
    req: SendRequest,
) -> Result<SendResponse, HubError> {
    if remote_hub(&state.config.server_name, group_id).is_some() {
        return Err(HubError::NotTheHub);
    }
    hub_send(state, sender, group_id, txn_id, req).await
}

/// The group registered at this hub; 404 otherwise.
async fn group_or_404(state: &AppState, group_id: &str) -> Result<Group, HubError> {
    state
        .store
        .hub_log()
        .group(group_id)
        .await?
        .ok_or(HubError::NoSuchGroup)
}

/// Standard base64 of an MLS field; 400 `P_INVALID_MESSAGE` otherwise.
fn decode(field: &str, b64: &str) -> Result<Vec<u8>, HubError> {
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| HubError::InvalidMessage(format!("{field} is not standard base64")))
}

/// 400 `P_INVALID_MESSAGE` with `e` as its text.
fn invalid(e: impl std::fmt::Display) -> HubError {
    HubError::InvalidMessage(e.to_string())
}

/// The protocol error for a write the store refused at commit time.
fn refusal(refused: Refused) -> HubError {
    match refused {
        Refused::StaleEpoch(e) => HubError::StaleEpoch {
            current_epoch: e.max(0) as u64,
        },
        Refused::FutureEpoch(_) => invalid("the message's epoch is ahead of the group"),
        Refused::NoGroup => HubError::NoSuchGroup,
        // Only after retries: a commit landed between every check and its append.
        Refused::RosterChanged => HubError::Internal("the group's roster kept changing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::roster::roster_of;
    use parley_schema::Member;

    #[test]
    fn roster_rebuilds_blank_leaves_from_members() {
        let members = vec![
            Member {
                user_id: "@a:x".into(),
                device_id: "A".into(),
                leaf_index: 0,
            },
            Member {
                user_id: "@c:x".into(),
                device_id: "C".into(),
                leaf_index: 2,
            },
        ];
        let roster = roster_of(&members);
        assert_eq!(roster.identity_at(1), None);
        assert_eq!(roster.identity_at(2), Some("@c:x/C"));
    }
}
