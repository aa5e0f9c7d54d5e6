//! The hub's view of a group's members: the MLS roster rebuilt from stored members, and the
//! bounds on who a commit may add.

use parley_schema::Member;

use super::error::HubError;
use super::invalid;
use crate::ids::{identity, is_local, same_server, server_of, split_identity};
use crate::mls_check::Roster;
use crate::state::AppState;

/// Whether `sender` may send a message of `kind` framed as `framed` in a group at epoch
/// `current` whose members are `members`: it is one of them and, as of the current epoch,
/// at the leaf the message names (an older epoch's leaves are not kept; a non-member sender
/// framing suits application messages only).
pub(super) fn sends_as_member(
    members: &[Member],
    sender: &parley_client_api::groups::DeviceRef,
    framed: &crate::mls_check::FramedInfo,
    current: u64,
    kind: crate::mls_check::ContentKind,
) -> bool {
    use crate::mls_check::{ContentKind, MessageSender};
    let me = members
        .iter()
        .find(|m| m.user_id == sender.user_id && m.device_id == sender.device_id);
    match (me, framed.sender) {
        (Some(m), MessageSender::Member(leaf)) => m.leaf_index == leaf || framed.epoch < current,
        (Some(_), _) => kind == ContentKind::Application,
        (None, _) => false,
    }
}

/// The roster of `members`, with blank leaves where nobody sits.
pub(super) fn roster_of(members: &[Member]) -> Roster {
    let len = members
        .iter()
        .map(|m| m.leaf_index as usize + 1)
        .max()
        .unwrap_or(0);
    let mut leaves = vec![None; len];
    for m in members {
        leaves[m.leaf_index as usize] = Some(identity(&m.user_id, &m.device_id));
    }
    Roster::from_leaves(leaves)
}

/// Other servers with devices in `members`.
pub(super) fn remote_servers(state: &AppState, members: &[Member]) -> Vec<String> {
    let mut servers: Vec<String> = members
        .iter()
        .map(|m| server_of(&m.user_id))
        .filter(|s| !same_server(s, &state.config.server_name))
        .map(str::to_owned)
        .collect();
    servers.sort();
    servers.dedup();
    servers
}

/// The hub's bounds on who a commit may add: at most `limits.max_adds_per_commit` devices
/// (413), only servers the federation ACL allows (403), and a group spanning at most
/// `limits.max_servers_per_group` servers (413).
pub(super) fn check_adds_policy(
    state: &AppState,
    members: &[Member],
    adds: &[String],
) -> Result<(), HubError> {
    let limits = &state.config.limits;
    if adds.len() > limits.max_adds_per_commit {
        return Err(HubError::TooLarge {
            limit: limits.max_adds_per_commit,
        });
    }
    let ours = state.config.server_name.as_str();
    let mut servers: std::collections::BTreeSet<&str> = members
        .iter()
        .map(|m| server_of(&m.user_id))
        .filter(|s| *s != ours)
        .collect();
    for add in adds {
        let user = split_identity(add).map_or("", |(u, _)| u);
        let server = server_of(user);
        if same_server(server, ours) {
            continue;
        }
        if !state.config.federation.enabled || !state.fed.acl().allows(server) {
            return Err(HubError::FederationNotAllowed(server.to_owned()));
        }
        servers.insert(server);
    }
    if servers.len() > limits.max_servers_per_group {
        return Err(HubError::TooLarge {
            limit: limits.max_servers_per_group,
        });
    }
    Ok(())
}

/// An added device of this server must exist with the signature key its leaf carries.
pub(super) async fn check_added_device(
    state: &AppState,
    identity: &str,
    signature_key: &[u8],
) -> Result<(), HubError> {
    let (user_id, device_id) = split_identity(identity)
        .ok_or_else(|| invalid(format!("credential identity {identity:?} is malformed")))?;
    if parley_client_api::ids::UserId::parse(user_id).is_err() {
        return Err(invalid(format!(
            "credential identity {identity:?} is malformed"
        )));
    }
    if !is_local(&state.config.server_name, user_id) {
        return Ok(());
    }
    let device = state.store.accounts().device(user_id, device_id).await?;
    match device.and_then(|d| d.signature_key) {
        Some(key) if key == signature_key => Ok(()),
        Some(_) => Err(invalid(format!(
            "{identity}: leaf signature key is not the device's bound key"
        ))),
        None => Err(invalid(format!(
            "{identity}: no such device with a bound signature key"
        ))),
    }
}
