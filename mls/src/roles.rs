//! Group roles in the engine (docs/protocol.md#group-roles): the roles extension in the group
//! context, and the check every commit passes before it is merged or sent, with the same rule
//! the hub applies ([`parley_client_api::roles::check_commit`]).

use std::collections::BTreeSet;

use openmls::prelude::{
    Extensions, GroupContext, LeafNodeIndex, MlsGroup, ProposalType, Sender, StagedCommit,
};
use parley_client_api::roles::{check_commit, CommitByUsers, GroupRoles, RemovedDevice};

pub use parley_client_api::roles::ROLES_EXTENSION_TYPE;

use crate::context::{extension_body, with_extension};
use crate::device_ref::DeviceRef;
use crate::error::{MlsError, Result};

/// The roles a group context holds, `None` without roles.
pub(crate) fn roles_of(extensions: &Extensions<GroupContext>) -> Result<Option<GroupRoles>> {
    extension_body(extensions, ROLES_EXTENSION_TYPE)
        .map(GroupRoles::decode)
        .transpose()
        .map_err(|e| MlsError::InvalidMessage(e.to_string()))
}

/// The group-context extensions of `current` with `roles` in place of its roles.
pub(crate) fn with_roles(
    current: &Extensions<GroupContext>,
    roles: &GroupRoles,
) -> Result<Extensions<GroupContext>> {
    with_extension(current, ROLES_EXTENSION_TYPE, Some(roles.encode()))
}

/// Refuses `staged`, a commit by the member at `committer` in `group` (before merging), when
/// the group's roles do not allow its committer to make it.
pub(crate) fn check_staged_commit(
    group: &MlsGroup,
    staged: &StagedCommit,
    committer: LeafNodeIndex,
) -> Result<()> {
    let Some(roles) = roles_of(group.extensions())? else {
        return Ok(());
    };
    let user_at = |leaf: LeafNodeIndex| -> Result<String> {
        let member = group
            .member_at(leaf)
            .ok_or_else(|| MlsError::InvalidMessage(format!("no member at leaf {}", leaf.u32())))?;
        Ok(DeviceRef::from_credential(&member.credential)?.user_id)
    };
    let mut devices: Vec<(LeafNodeIndex, String)> = Vec::new();
    for m in group.members() {
        devices.push((m.index, DeviceRef::from_credential(&m.credential)?.user_id));
    }
    let committer_user = user_at(committer)?;
    let mut added = Vec::new();
    for add in staged.add_proposals() {
        let leaf = add.add_proposal().key_package().leaf_node();
        added.push(DeviceRef::from_credential(leaf.credential())?.user_id);
    }
    let mut removed = Vec::new();
    let mut removed_leaves = BTreeSet::new();
    for remove in staged.remove_proposals() {
        let leaf = remove.remove_proposal().removed();
        let proposer = match remove.sender() {
            Sender::Member(p) => user_at(*p)?,
            _ => return Err(MlsError::InvalidMessage("non-member removal".into())),
        };
        removed_leaves.insert(leaf);
        removed.push((user_at(leaf)?, proposer));
    }
    let changes_context = staged
        .queued_proposals()
        .any(|p| p.proposal().proposal_type() == ProposalType::GroupContextExtensions);
    let commit = CommitByUsers {
        committer: &committer_user,
        members_before: devices.iter().map(|(_, u)| u.as_str()).collect(),
        added: added.iter().map(String::as_str).collect(),
        removed: removed
            .iter()
            .map(|(user, proposer)| RemovedDevice { user, proposer })
            .collect(),
        changes_context,
    };
    let leaves_group = |user: &str| {
        !added.iter().any(|a| a == user)
            && !devices
                .iter()
                .any(|(leaf, u)| u == user && !removed_leaves.contains(leaf))
    };
    check_commit(Some(&roles), &commit, leaves_group).map_err(|e| MlsError::NotAdmin(e.to_string()))
}
