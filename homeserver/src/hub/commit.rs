//! A commit bundle at the hub, in four steps: check the bundle (its bytes and MLS framing),
//! resolve the roster change it makes (and whether its sender may make it), plan the fan-out
//! (who gets the commit and the Welcome), and apply it (one store transaction, then wake-ups).
//! Refusals come in the protocol's order: malformed, wrong group or content, future epoch,
//! declared membership not matching the commit, sender not in the roster, stale epoch, a
//! change only an admin may make.

use std::collections::HashMap;

use parley_client_api::groups::{CommitRequest, CommitResponse, DeviceRef};
use parley_schema::{CommitToApply, Group, Member, OutboundDevice, OutboundWelcome, OutboxItem};

use super::disappearing::context_disappearing;
use super::error::HubError;
use super::join::{check_external_commit, context_join_rules};
use super::roles::check_commit_roles;
use super::roster::{check_added_device, check_adds_policy, roster_of};
use super::{decode, group_or_404, invalid, refusal};
use crate::clock::now_ms;
use crate::ids::{identity, is_local, same_server, server_of, split_identity};
use crate::mls_check::{
    self, CommitDelta, CommitInfo, ContentKind, FramedInfo, MessageInfo, MessageSender, Roster,
    StoredProposal, WelcomeInfo,
};
use crate::state::AppState;

/// The hub's handling of a commit bundle from `sender` (a local device or, via federation,
/// a device of the requesting server).
pub async fn hub_commit(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    req: CommitRequest,
) -> Result<CommitResponse, HubError> {
    let group = group_or_404(state, group_id).await?;
    let bundle = Bundle::decode(state, &req)?;
    let info = mls_check::inspect_message(&bundle.commit).map_err(invalid)?;
    let checked = check_bundle(&bundle, &info, group_id, group.epoch.max(0) as u64)?;
    let change = match checked.committer_leaf {
        Some(committer_leaf) => {
            let mut change = resolve_change(
                state,
                sender,
                group_id,
                &req,
                &bundle,
                &checked,
                committer_leaf,
            )
            .await?;
            // 7. Roles: what only an admin may do.
            change.roles = check_commit_roles(
                group.roles.as_deref(),
                &change.members,
                &change.roster,
                sender,
                &change.delta,
            )?;
            change.join_rules = context_join_rules(&change.delta)?;
            change.disappear_after_ms = context_disappearing(&change.delta)?;
            change
        }
        None => resolve_external_join(state, sender, &group, &req, &bundle, &checked).await?,
    };
    let plan = plan_fan_out(state, sender, &change, bundle.welcome.as_deref());
    apply(
        state,
        sender,
        group_id,
        &req,
        bundle,
        checked.framed.epoch,
        change,
        plan,
    )
    .await
}

/// The decoded bytes of a bundle.
struct Bundle {
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    group_info: Option<Vec<u8>>,
}

impl Bundle {
    /// 1. Malformed bundle: bad base64, or more than `limits.max_bundle_bytes` in all.
    fn decode(state: &AppState, req: &CommitRequest) -> Result<Bundle, HubError> {
        let commit = decode("commit", &req.commit)?;
        let welcome = req
            .welcome
            .as_deref()
            .map(|w| decode("welcome", w))
            .transpose()?;
        let group_info = req
            .group_info
            .as_deref()
            .map(|g| decode("group_info", g))
            .transpose()?;
        let total = commit.len()
            + welcome.as_ref().map_or(0, Vec::len)
            + group_info.as_ref().map_or(0, Vec::len);
        let limit = state.config.limits.max_bundle_bytes;
        if total as u64 > limit {
            return Err(HubError::TooLarge {
                limit: limit as usize,
            });
        }
        Ok(Bundle {
            commit,
            welcome,
            group_info,
        })
    }
}

/// What the framing of a bundle says, once checked.
struct CheckedBundle<'a> {
    framed: &'a FramedInfo,
    commit: &'a CommitInfo,
    welcome: Option<WelcomeInfo>,
    /// The committer's leaf; `None` for an external commit (a new member joining).
    committer_leaf: Option<u32>,
    current_epoch: u64,
}

/// 2–3. Group id, content type and wire format from the message itself; the Welcome and
/// GroupInfo parse and agree with the commit; the epoch is not in the future.
fn check_bundle<'a>(
    bundle: &Bundle,
    info: &'a MessageInfo,
    group_id: &str,
    current_epoch: u64,
) -> Result<CheckedBundle<'a>, HubError> {
    let framed = mls_check::check_envelope(info, group_id.as_bytes(), ContentKind::Commit)
        .map_err(invalid)?;
    let commit = framed
        .commit
        .as_ref()
        .ok_or_else(|| invalid("commit body missing"))?;
    let welcome = bundle
        .welcome
        .as_deref()
        .map(mls_check::inspect_welcome)
        .transpose()
        .map_err(invalid)?;
    if let Some(gi) = bundle.group_info.as_deref() {
        let summary = mls_check::inspect_group_info(gi).map_err(invalid)?;
        mls_check::check_group_info(&summary, framed).map_err(invalid)?;
    }
    if framed.epoch > current_epoch {
        return Err(HubError::InvalidMessage(format!(
            "commit is for epoch {} but the group is at {current_epoch}",
            framed.epoch
        )));
    }
    let committer_leaf = match framed.sender {
        MessageSender::Member(leaf) => Some(leaf),
        MessageSender::NewMemberCommit => None,
        _ => return Err(invalid("commit sender is not a member")),
    };
    Ok(CheckedBundle {
        framed,
        commit,
        welcome,
        committer_leaf,
        current_epoch,
    })
}

/// The roster before the commit and the change the commit makes to it.
struct RosterChange {
    members: Vec<Member>,
    roster: Roster,
    delta: CommitDelta,
    added_identities: Vec<String>,
    /// The roles to store, when the commit changes the group context.
    roles: Option<Option<String>>,
    /// The join rules to store, when the commit changes the group context.
    join_rules: Option<Option<String>>,
    /// The disappearing-messages timer to store, when the commit changes the group context.
    disappear_after_ms: Option<Option<i64>>,
}

impl RosterChange {
    fn new(members: Vec<Member>, roster: Roster, delta: CommitDelta) -> Self {
        RosterChange {
            added_identities: delta.add_identities(),
            members,
            roster,
            delta,
            roles: None,
            join_rules: None,
            disappear_after_ms: None,
        }
    }
}

/// The identities `@user:server/DEVICE` of a bundle's declared `adds` or `removes`.
fn declared(list: &[DeviceRef]) -> Vec<String> {
    list.iter()
        .map(|d| identity(&d.user_id, &d.device_id))
        .collect()
}

/// 4–6. The commit's adds and removes, resolved against the proposals stored this epoch and
/// checked against what the client declared and the hub's policy; then the sender's place in
/// the roster; then a stale epoch.
async fn resolve_change(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    req: &CommitRequest,
    bundle: &Bundle,
    checked: &CheckedBundle<'_>,
    committer_leaf: u32,
) -> Result<RosterChange, HubError> {
    let (framed, commit_info) = (checked.framed, checked.commit);
    let members = state.store.hub_log().roster(group_id).await?;
    let roster = roster_of(&members);
    let is_current = framed.epoch == checked.current_epoch;
    let stored = if commit_info.proposal_refs.is_empty() || !is_current {
        HashMap::new()
    } else {
        stored_proposals(state, group_id, framed.epoch).await?
    };
    let delta = if is_current {
        commit_info
            .resolve(committer_leaf, |r| stored.get(r).cloned())
            .map_err(invalid)?
    } else {
        // A stale commit's referenced proposals and removed leaves belong to an older roster:
        // check what can be checked (its adds), then refuse it as stale below.
        commit_info
            .resolve(committer_leaf, |_| None)
            .unwrap_or_default()
    };
    let (declared_adds, declared_removes) = (declared(&req.adds), declared(&req.removes));
    let added_identities = delta.add_identities();
    if is_current {
        roster
            .check_declared(
                &delta.removes,
                &added_identities,
                &declared_removes,
                &declared_adds,
            )
            .map_err(invalid)?;
        if delta.adds.is_empty() != bundle.welcome.is_none() {
            return Err(invalid(
                "a welcome is required exactly when the commit adds members",
            ));
        }
        if let Some(w) = &checked.welcome {
            mls_check::check_welcome(w, &delta.adds).map_err(invalid)?;
        }
        // Before any device list is fetched from an invitee's server.
        check_adds_policy(state, &members, &added_identities)?;
        for add in &delta.adds {
            check_added_device(state, &add.identity, &add.signature_key).await?;
        }
    } else if commit_info.proposal_refs.is_empty() {
        let (mut a, mut d) = (added_identities.clone(), declared_adds);
        a.sort();
        d.sort();
        if a != d {
            return Err(invalid("declared adds do not match the commit"));
        }
    }
    // 5. Sender in the roster, at the leaf the commit names.
    let sender_identity = identity(&sender.user_id, &sender.device_id);
    let in_roster = members
        .iter()
        .any(|m| m.user_id == sender.user_id && m.device_id == sender.device_id);
    if !in_roster
        || (is_current && roster.identity_at(committer_leaf) != Some(sender_identity.as_str()))
    {
        crate::metrics::roster_denial();
        return Err(HubError::NotMember);
    }
    // 6. Stale epoch.
    if !is_current {
        return Err(HubError::StaleEpoch {
            current_epoch: checked.current_epoch,
        });
    }
    Ok(RosterChange::new(members, roster, delta))
}

/// 4–6 for an external commit (docs/protocol.md#join-links): the join rules admit the
/// joiner with the commit's code, the commit does only what a join may, the joiner is not a
/// member already (other than the earlier leaf it removes), then a stale epoch.
async fn resolve_external_join(
    state: &AppState,
    sender: &DeviceRef,
    group: &Group,
    req: &CommitRequest,
    bundle: &Bundle,
    checked: &CheckedBundle<'_>,
) -> Result<RosterChange, HubError> {
    let members = state.store.hub_log().roster(&group.group_id).await?;
    let roster = roster_of(&members);
    if bundle.welcome.is_some() {
        return Err(invalid("an external commit has no Welcome"));
    }
    let delta = check_external_commit(group, &roster, sender, checked.framed, checked.commit)?;
    if checked.framed.epoch != checked.current_epoch {
        return Err(HubError::StaleEpoch {
            current_epoch: checked.current_epoch,
        });
    }
    roster
        .check_declared(
            &delta.removes,
            &delta.add_identities(),
            &declared(&req.removes),
            &declared(&req.adds),
        )
        .map_err(invalid)?;
    check_adds_policy(state, &members, &delta.add_identities())?;
    for add in &delta.adds {
        check_added_device(state, &add.identity, &add.signature_key).await?;
    }
    Ok(RosterChange::new(members, roster, delta))
}

/// Proposals accepted in this epoch, by proposal reference, for commits that reference them.
async fn stored_proposals(
    state: &AppState,
    group_id: &str,
    epoch: u64,
) -> Result<HashMap<Vec<u8>, StoredProposal>, HubError> {
    let mut map = HashMap::new();
    for m in state
        .store
        .hub_log()
        .group_proposals(group_id, epoch as i64)
        .await?
    {
        if let Ok(info) = mls_check::inspect_message(&m.message) {
            if let Some((r, p)) = info.framed().and_then(|f| f.stored_proposal()) {
                map.insert(r, p);
            }
        }
    }
    Ok(map)
}

/// Who the commit reaches: the devices it removes and adds, the local invitees' Welcomes,
/// and the other servers with a member before or after it.
struct FanOut {
    removed: Vec<(String, String)>,
    added: Vec<Member>,
    welcome_recipients: Vec<(String, String)>,
    destinations: Vec<String>,
    outbox: Vec<OutboxItem>,
}

fn plan_fan_out(
    state: &AppState,
    sender: &DeviceRef,
    change: &RosterChange,
    welcome: Option<&[u8]>,
) -> FanOut {
    let ours = state.config.server_name.as_str();
    let mut next_roster = change.roster.clone();
    let placed = next_roster.apply_commit(&change.delta.removes, &change.added_identities);
    let removed: Vec<(String, String)> = change
        .delta
        .removes
        .iter()
        .filter_map(|leaf| change.roster.identity_at(*leaf))
        .filter_map(split_identity)
        .map(|(u, d)| (u.to_owned(), d.to_owned()))
        .collect();
    let added: Vec<Member> = placed
        .iter()
        .filter_map(|(ident, leaf)| {
            split_identity(ident).map(|(u, d)| Member {
                user_id: u.to_owned(),
                device_id: d.to_owned(),
                leaf_index: *leaf,
            })
        })
        .collect();
    let welcome_recipients: Vec<(String, String)> = added
        .iter()
        .filter(|m| is_local(ours, &m.user_id))
        .map(|m| (m.user_id.clone(), m.device_id.clone()))
        .collect();
    // Every other server with a member before or after the commit gets it; invitees'
    // servers also get the Welcome for their devices.
    let mut destinations: Vec<String> = change
        .members
        .iter()
        .map(|m| server_of(&m.user_id))
        .chain(added.iter().map(|m| server_of(&m.user_id)))
        .filter(|s| !same_server(s, ours))
        .map(str::to_owned)
        .collect();
    destinations.sort();
    destinations.dedup();
    let mut outbox: Vec<OutboxItem> = destinations
        .iter()
        .map(|d| OutboxItem::message(d))
        .collect();
    if let Some(w) = welcome {
        for d in &destinations {
            let recipients: Vec<OutboundDevice> = added
                .iter()
                .filter(|m| same_server(server_of(&m.user_id), d))
                .map(|m| OutboundDevice {
                    user_id: m.user_id.clone(),
                    device_id: m.device_id.clone(),
                })
                .collect();
            if !recipients.is_empty() {
                let welcome = OutboundWelcome {
                    sender: OutboundDevice {
                        user_id: sender.user_id.clone(),
                        device_id: sender.device_id.clone(),
                    },
                    recipients,
                    message: w.to_vec(),
                };
                outbox.push(OutboxItem::welcome(d, welcome));
            }
        }
    }
    FanOut {
        removed,
        added,
        welcome_recipients,
        destinations,
        outbox,
    }
}

/// Appends the commit (the store refuses it if another took the epoch first), then wakes the
/// group's devices, the invitees and the outbox senders.
#[allow(clippy::too_many_arguments)]
async fn apply(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    req: &CommitRequest,
    bundle: Bundle,
    epoch: u64,
    change: RosterChange,
    plan: FanOut,
) -> Result<CommitResponse, HubError> {
    let internal = |e: serde_json::Error| HubError::Internal(e.to_string());
    let to_apply = CommitToApply {
        group_id: group_id.to_owned(),
        epoch: epoch as i64,
        sender_user: sender.user_id.clone(),
        sender_device: sender.device_id.clone(),
        message: bundle.commit,
        adds_json: serde_json::to_string(&req.adds).map_err(internal)?,
        removes_json: serde_json::to_string(&req.removes).map_err(internal)?,
        removed: plan.removed,
        added: plan.added,
        welcome: bundle.welcome,
        welcome_recipients: plan.welcome_recipients.clone(),
        group_info: bundle.group_info,
        roles: change.roles.clone(),
        join_rules: change.join_rules.clone(),
        disappear_after_ms: change.disappear_after_ms,
        ts: now_ms() as i64,
        outbox: plan.outbox,
    };
    let accepted = state
        .store
        .hub_log()
        .apply_commit(to_apply)
        .await?
        .map_err(refusal)?;
    tracing::info!(%group_id, epoch = accepted.epoch, seq = accepted.seq, "commit accepted");
    state.notifier.notify_all(
        change
            .members
            .iter()
            .map(|m| (m.user_id.as_str(), m.device_id.as_str())),
    );
    state.notifier.notify_all(
        plan.welcome_recipients
            .iter()
            .map(|(u, d)| (u.as_str(), d.as_str())),
    );
    for d in &plan.destinations {
        state.outbox.wake(d);
    }
    crate::metrics::message_accepted("commit");
    Ok(CommitResponse {
        epoch: accepted.epoch.max(0) as u64,
        seq: accepted.seq.max(0) as u64,
    })
}
