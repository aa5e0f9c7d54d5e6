//! An application message or proposal at the hub: checked against its MLS framing and the
//! roster of its epoch, then appended with a per-device `txn_id` (a reused one answers the
//! first result).

use parley_client_api::groups::{DeviceRef, SendRequest, SendResponse};
use parley_client_api::ids::{GroupId, TxnId};
use parley_schema::{Appended, EpochRoster, MessageToAppend, Refused};

use super::error::HubError;
use super::roster::{remote_servers, sends_as_member};
use super::{decode, invalid, refusal};
use crate::clock::now_ms;
use crate::mls_check::{self, ContentKind};
use crate::state::AppState;

/// The hub's handling of an application message or proposal from `sender`.
pub async fn hub_send(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &GroupId,
    txn_id: &TxnId,
    req: SendRequest,
) -> Result<SendResponse, HubError> {
    let (group_id, txn_id) = (group_id.as_str(), txn_id.as_str());
    match accept_send(state, sender, group_id, txn_id, req).await {
        // A retry that passes the checks again is answered by the append itself
        // (`Appended::Replayed`), in the same round trip.
        Ok(sent) => Ok(sent),
        Err(HubError::Store(e)) => Err(HubError::Store(e)),
        // A reused txn_id returns the first result, whatever the new body; so a refusal stands
        // only for a new txn_id. A retry refused before its append (a new body, or a roster or
        // epoch that moved on since the first send) looks the first result up here.
        Err(refused) => match state
            .store
            .hub_log()
            .txn_seq(&sender.user_id, &sender.device_id, txn_id)
            .await?
        {
            Some(seq) => Ok(SendResponse {
                seq: seq.max(0) as u64,
            }),
            None => Err(refused),
        },
    }
}

/// Checks and appends a send whose txn_id may be new.
async fn accept_send(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    txn_id: &str,
    req: SendRequest,
) -> Result<SendResponse, HubError> {
    // An unknown group is refused before the message is looked at (docs/protocol.md#wire-details).
    let mut roster = epoch_roster_or_404(state, group_id).await?;
    let message = decode("message", &req.message)?;
    if message.len() as u64 > state.config.limits.max_message_bytes {
        return Err(HubError::TooLarge {
            limit: state.config.limits.max_message_bytes as usize,
        });
    }
    let info = mls_check::inspect_message(&message).map_err(invalid)?;
    let content = info
        .framed()
        .map(|f| f.content_type)
        .ok_or_else(|| invalid("not a group message"))?;
    let kind = match content {
        ContentKind::Application => ContentKind::Application,
        ContentKind::Proposal => ContentKind::Proposal,
        ContentKind::Commit => return Err(invalid("commits go to /commit")),
    };
    let framed = mls_check::check_envelope(&info, group_id.as_bytes(), kind).map_err(invalid)?;
    if kind == ContentKind::Proposal {
        // Every commit of the epoch looks at them all: their number is bounded.
        let max = state.config.limits.max_proposals_per_epoch;
        let held = state
            .store
            .hub_log()
            .group_proposal_count(group_id, framed.epoch as i64)
            .await?;
        if held >= max as i64 {
            return Err(HubError::TooLarge { limit: max });
        }
    }
    // The roster is checked as of an epoch, and the append refuses if a commit has moved the
    // group on since: then check again against the new roster.
    for _ in 0..8 {
        let checked = CheckedSend {
            sender,
            group_id,
            txn_id,
            kind,
            framed,
        };
        match append_checked(state, checked, &roster, &message).await? {
            Ok(sent) => return Ok(sent),
            Err(Refused::RosterChanged) => {
                // The cached roster may be what is stale (another process committed).
                state.store.hub_log().forget_cached_roster(group_id);
                roster = epoch_roster_or_404(state, group_id).await?
            }
            Err(refused) => return Err(refusal(refused)),
        }
    }
    Err(refusal(Refused::RosterChanged))
}

async fn epoch_roster_or_404(
    state: &AppState,
    group_id: &str,
) -> Result<std::sync::Arc<EpochRoster>, HubError> {
    state
        .store
        .hub_log()
        .epoch_roster(group_id)
        .await?
        .ok_or(HubError::NoSuchGroup)
}

/// A send whose MLS framing has been checked, before the roster check.
struct CheckedSend<'a> {
    sender: &'a DeviceRef,
    group_id: &'a str,
    txn_id: &'a str,
    kind: ContentKind,
    framed: &'a mls_check::FramedInfo,
}

/// Checks a send against one epoch's roster and appends it.
async fn append_checked(
    state: &AppState,
    send: CheckedSend<'_>,
    roster: &EpochRoster,
    message: &[u8],
) -> Result<Result<SendResponse, Refused>, HubError> {
    let CheckedSend {
        sender: auth,
        group_id,
        txn_id,
        kind,
        framed,
    } = send;
    let current = roster.epoch.max(0) as u64;
    if framed.epoch > current {
        return Err(HubError::InvalidMessage(format!(
            "message is for epoch {} but the group is at {current}",
            framed.epoch
        )));
    }
    let members = &roster.members;
    if !sends_as_member(members, auth, framed, current, kind) {
        crate::metrics::roster_denial();
        return Err(HubError::NotMember);
    }
    let max_past = if kind == ContentKind::Proposal {
        0
    } else {
        state.config.limits.max_past_epochs as i64
    };
    let remote = remote_servers(state, members);
    let ts = now_ms() as i64;
    // An application message of a group with a timer expires that long after it was accepted.
    let expires_ts = roster
        .disappear_after_ms
        .filter(|_| kind == ContentKind::Application)
        .map(|ms| ts.saturating_add(ms));
    let to_append = MessageToAppend {
        expires_ts,
        group_id: group_id.to_owned(),
        sender_user: auth.user_id.clone(),
        sender_device: auth.device_id.clone(),
        kind: kind.as_str().to_owned(),
        epoch: framed.epoch as i64,
        message: message.to_vec(),
        ts,
        max_past_epochs: max_past,
        txn_id: Some(txn_id.to_owned()),
        roster_epoch: roster.epoch,
        outbox: remote.clone(),
    };
    let accepted = match state.store.hub_log().append_message(to_append).await? {
        Ok(Appended::New(accepted)) => accepted,
        // Nothing was written: nobody to wake.
        Ok(Appended::Replayed { seq }) => {
            return Ok(Ok(SendResponse {
                seq: seq.max(0) as u64,
            }))
        }
        Err(refused) => return Ok(Err(refused)),
    };
    crate::metrics::message_accepted(match kind {
        ContentKind::Proposal => "proposal",
        _ => "application",
    });
    state.notifier.notify_at(
        members
            .iter()
            .map(|m| (m.user_id.as_str(), m.device_id.as_str())),
        accepted.stream_pos,
    );
    for d in remote {
        state.outbox.wake(&d);
    }
    Ok(Ok(SendResponse {
        seq: accepted.seq.max(0) as u64,
    }))
}
