//! Group roles at the hub (docs/protocol.md#group-roles): a commit is judged by the roles of
//! the epoch it was made in, with the same rule every client applies before merging it
//! ([`parley_client_api::roles::check_commit`]); the roles it sets are tracked from there.

use std::collections::BTreeSet;

use parley_client_api::groups::DeviceRef;
use parley_client_api::roles::{check_commit, CommitByUsers, GroupRoles, RemovedDevice};
use parley_schema::Member;

use super::error::HubError;
use super::invalid;
use crate::ids::split_identity;
use crate::mls_check::{CommitDelta, Roster};

/// Checks a commit of `committer` against the group's `current` roles (canonical JSON, `None`
/// without roles); `members` and `roster` are the group's before it. Returns the roles to
/// store when the commit changes the group context (`Some(None)`: it has none any more).
pub(super) fn check_commit_roles(
    current: Option<&str>,
    members: &[Member],
    roster: &Roster,
    committer: &DeviceRef,
    delta: &CommitDelta,
) -> Result<Option<Option<String>>, HubError> {
    let current = current
        .map(|json| GroupRoles::decode(json.as_bytes()))
        .transpose()
        .map_err(|e| HubError::Internal(format!("stored roles: {e}")))?;
    let new_roles = match &delta.context {
        None => None,
        Some(change) => Some(
            change
                .roles
                .as_deref()
                .map(GroupRoles::decode)
                .transpose()
                .map_err(invalid)?,
        ),
    };
    let user_at = |leaf: u32| roster.identity_at(leaf).and_then(split_identity);
    let added: Vec<&str> = delta
        .adds
        .iter()
        .filter_map(|a| split_identity(&a.identity).map(|(u, _)| u))
        .collect();
    let removed: Vec<RemovedDevice<'_>> = delta
        .removes
        .iter()
        .zip(&delta.remove_proposers)
        .filter_map(|(leaf, proposer)| {
            Some(RemovedDevice {
                user: user_at(*leaf)?.0,
                proposer: user_at(*proposer)?.0,
            })
        })
        .collect();
    let commit = CommitByUsers {
        committer: &committer.user_id,
        members_before: members.iter().map(|m| m.user_id.as_str()).collect(),
        added: added.clone(),
        removed,
        changes_context: delta.context.is_some(),
    };
    let removed_leaves: BTreeSet<u32> = delta.removes.iter().copied().collect();
    let leaves_group = |user: &str| {
        !added.contains(&user)
            && !members
                .iter()
                .any(|m| m.user_id == user && !removed_leaves.contains(&m.leaf_index))
    };
    check_commit(current.as_ref(), &commit, leaves_group).map_err(HubError::NotAdmin)?;
    Ok(new_roles.map(|roles| roles.map(|r| String::from_utf8_lossy(&r.encode()).into_owned())))
}
