//! Group roles in the engine (docs/protocol.md#group-roles): the roles extension in the group
//! context, and the check every commit passes before it is merged or sent, with the same rule
//! the hub applies ([`parley_client_api::roles::check_commit`]).

use std::collections::BTreeSet;

use openmls::prelude::{
    Extension, ExtensionType, Extensions, GroupContext, LeafNodeIndex, MlsGroup, ProposalType,
    RequiredCapabilitiesExtension, Sender, StagedCommit, UnknownExtension,
};
use parley_client_api::roles::{check_commit, CommitByUsers, GroupRoles, RemovedDevice};

pub use parley_client_api::roles::ROLES_EXTENSION_TYPE;

use crate::device_ref::DeviceRef;
use crate::error::{MlsError, Result};

/// The roles a group context holds, `None` without roles.
pub(crate) fn roles_of(extensions: &Extensions<GroupContext>) -> Result<Option<GroupRoles>> {
    extensions
        .unknown(ROLES_EXTENSION_TYPE)
        .map(|e| GroupRoles::decode(&e.0))
        .transpose()
        .map_err(|e| MlsError::InvalidMessage(e.to_string()))
}

/// The group-context extensions of `current` with `roles` in place of its roles, and the
/// roles extension type required of every member (openmls requires every non-default
/// extension of the context to be in `required_capabilities`).
pub(crate) fn with_roles(
    current: &Extensions<GroupContext>,
    roles: &GroupRoles,
) -> Result<Extensions<GroupContext>> {
    let roles_type = ExtensionType::Unknown(ROLES_EXTENSION_TYPE);
    let mut list: Vec<Extension> = current
        .iter()
        .filter(|e| {
            !matches!(e.extension_type(), ExtensionType::RequiredCapabilities)
                && e.extension_type() != roles_type
        })
        .cloned()
        .collect();
    let mut required = current
        .required_capabilities()
        .map(|r| {
            (
                r.extension_types().to_vec(),
                r.proposal_types().to_vec(),
                r.credential_types().to_vec(),
            )
        })
        .unwrap_or_default();
    if !required.0.contains(&roles_type) {
        required.0.push(roles_type);
    }
    list.push(Extension::RequiredCapabilities(
        RequiredCapabilitiesExtension::new(&required.0, &required.1, &required.2),
    ));
    list.push(Extension::Unknown(
        ROLES_EXTENSION_TYPE,
        UnknownExtension(roles.encode()),
    ));
    Extensions::from_vec(list).map_err(|e| MlsError::Mls(format!("{e:?}")))
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
