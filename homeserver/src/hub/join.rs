//! Join links at the hub (docs/protocol.md#join-links): the GroupInfo handed to a user who
//! holds a group's join link, and the rules an external commit must meet: the join rules the
//! hub tracks from accepted commits admit the joiner with the code in the commit's
//! authenticated data, the joining leaf is the submitting device's, and the commit carries
//! nothing but its ExternalInit and the removal of the joiner's own earlier leaf.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::groups::DeviceRef;
use parley_client_api::ids::GroupId;
use parley_client_api::join::{JoinAad, JoinError, JoinInfoResponse, JoinRules};
use parley_schema::Group;

use super::error::HubError;
use super::{group_or_404, invalid};
use crate::ids::{identity, remote_hub};
use crate::mls_check::{
    self, AddedMember, CommitDelta, CommitInfo, CommittedProposal, FramedInfo, ProposalEffect,
    Roster,
};
use crate::state::AppState;

/// RFC 9420 proposal type of ExternalInit.
const EXTERNAL_INIT: u16 = 6;
/// RFC 9420 proposal type of PreSharedKey.
const PRE_SHARED_KEY: u16 = 4;

/// The group's join rules as the hub tracks them (a group without them has none).
fn rules_of(group: &Group) -> Result<JoinRules, HubError> {
    group
        .join_rules
        .as_deref()
        .map(|json| JoinRules::decode(json.as_bytes()))
        .transpose()
        .map_err(|e| HubError::Internal(format!("stored join rules: {e}")))
        .map(Option::unwrap_or_default)
}

/// A join-info request of this server's `user_id`: answered here when we are the group's
/// hub, otherwise asked of the hub and its verdict handed back.
pub async fn submit_join_info(
    state: &AppState,
    user_id: &str,
    group_id: &GroupId,
    code: &str,
) -> Result<JoinInfoResponse, HubError> {
    match remote_hub(&state.config.server_name, group_id) {
        None => join_info(state, user_id, group_id.as_str(), code).await,
        Some(hub) => super::relay::join_info(state, hub, group_id, code, user_id).await,
    }
}

/// A join-info request a follower server makes for its `user_id` (404 unless we are the hub).
pub async fn follower_join_info(
    state: &AppState,
    user_id: &str,
    group_id: &GroupId,
    code: &str,
) -> Result<JoinInfoResponse, HubError> {
    if remote_hub(&state.config.server_name, group_id).is_some() {
        return Err(HubError::NotTheHub);
    }
    join_info(state, user_id, group_id.as_str(), code).await
}

/// The GroupInfo of the group's current epoch for `user_id` (of this server or, through
/// federation, of the requesting one) holding `code`: 403 `P_JOIN_REFUSED` when the join
/// rules refuse them, 404 when there is no such group or no current GroupInfo yet.
async fn join_info(
    state: &AppState,
    user_id: &str,
    group_id: &str,
    code: &str,
) -> Result<JoinInfoResponse, HubError> {
    let group = group_or_404(state, group_id).await?;
    rules_of(&group)?
        .admits(user_id, code)
        .map_err(HubError::JoinRefused)?;
    let current = group.epoch.max(0) as u64;
    let group_info = group
        .group_info
        .filter(|gi| mls_check::inspect_group_info(gi).is_ok_and(|s| s.epoch == current))
        .ok_or(HubError::NoSuchGroup)?;
    tracing::info!(%group_id, %user_id, epoch = current, "group info handed out for a join");
    Ok(JoinInfoResponse {
        group_info: STANDARD.encode(group_info),
        epoch: current,
    })
}

/// Checks an external commit by `sender` against the group's join rules and the roster
/// before it (`roster`), and returns the change it makes: the joiner added, its own earlier
/// leaf removed if the commit does so.
pub(super) fn check_external_commit(
    group: &Group,
    roster: &Roster,
    sender: &DeviceRef,
    framed: &FramedInfo,
    commit: &CommitInfo,
) -> Result<CommitDelta, HubError> {
    let joiner = identity(&sender.user_id, &sender.device_id);
    let leaf = commit
        .path_leaf
        .as_ref()
        .ok_or_else(|| invalid("an external commit needs an update path"))?;
    if leaf.identity.as_deref() != Some(joiner.as_str()) {
        return Err(invalid(
            "the external commit's new leaf is not the submitting device",
        ));
    }
    let code = JoinAad::decode(&framed.authenticated_data)
        .map_err(|e| invalid(format!("external commit AAD: {e}")))?
        .join_code;
    rules_of(group)?
        .admits(&sender.user_id, &code)
        .map_err(HubError::JoinRefused)?;
    let mut delta = CommitDelta::default();
    let mut external_inits = 0;
    for p in &commit.proposals {
        match p {
            CommittedProposal::Inline(ProposalEffect::Other {
                proposal_type: EXTERNAL_INIT,
            }) => external_inits += 1,
            CommittedProposal::Inline(ProposalEffect::Other {
                proposal_type: PRE_SHARED_KEY,
            }) => delta.other_proposal_types.push(PRE_SHARED_KEY),
            CommittedProposal::Inline(ProposalEffect::Remove { leaf })
                if roster.identity_at(*leaf) == Some(joiner.as_str()) =>
            {
                delta.removes.push(*leaf);
                delta.remove_proposers.push(*leaf);
            }
            _ => {
                return Err(HubError::JoinRefused(JoinError::Malformed(
                    "an external commit may carry only its ExternalInit and the removal of \
                     the joiner's own earlier leaf"
                        .into(),
                )))
            }
        }
    }
    if external_inits != 1 {
        return Err(invalid("an external commit needs exactly one ExternalInit"));
    }
    delta.adds.push(AddedMember {
        identity: joiner,
        signature_key: leaf.signature_key.clone(),
        key_package_ref: Vec::new(),
    });
    Ok(delta)
}

/// The join rules a member's commit sets when it changes the group context (`Some(None)`:
/// none any more), checked like every member does; 400 for a malformed body.
pub(super) fn context_join_rules(delta: &CommitDelta) -> Result<Option<Option<String>>, HubError> {
    let Some(change) = &delta.context else {
        return Ok(None);
    };
    let rules = change
        .join_rules
        .as_deref()
        .map(JoinRules::decode)
        .transpose()
        .map_err(invalid)?;
    Ok(Some(rules.map(|r| {
        String::from_utf8_lossy(&r.encode()).into_owned()
    })))
}
