//! The hub (DESIGN §3.3): groups registered here, ordered by this server. Commits and
//! messages are checked against the MLS message itself, then appended to the group's
//! gap-free log and delivered to every roster device.

use std::collections::HashMap;

use axum::extract::State;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::endpoint::Empty;
use parley_client_api::groups::{
    CommitRequest, CommitResponse, CreateGroup, CreateGroupResponse, DeviceRef, GroupSummary,
    ListGroups, ListGroupsResponse, SendMessage, SendRequest, SendResponse, SubmitCommit,
};
use parley_schema::{
    CommitToApply, EpochRoster, Group, Member, MessageToAppend, OutboxItem, Refused,
};

use crate::error::{ApiResult, Error};
use crate::http::{route, ApiJson, ApiPath as Path, Authed};
use crate::mls_check::{self, ContentKind, MessageSender, Roster, StoredProposal};
use crate::state::{now_ms, AppState};
use crate::tokens::random_id;

const GROUP_ID_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// The group endpoints.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new();
    let r = route::<CreateGroup, _, _>(r, state, create_group);
    let r = route::<ListGroups, _, _>(r, state, list_groups);
    let r = route::<SubmitCommit, _, _>(r, state, submit_commit);
    route::<SendMessage, _, _>(r, state, send_message)
}

/// `@user:server/DEVICE`, the MLS credential identity of a device (DESIGN §2).
fn identity(user_id: &str, device_id: &str) -> String {
    format!("{user_id}/{device_id}")
}

/// Splits a credential identity at its last `/`.
fn split_identity(identity: &str) -> Option<(&str, &str)> {
    identity.rsplit_once('/')
}

fn roster_of(members: &[Member]) -> Roster {
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

async fn create_group(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(_): ApiJson<Empty>,
) -> ApiResult<Json<CreateGroupResponse>> {
    let group_id = format!(
        "!{}:{}",
        random_id(22, GROUP_ID_ALPHABET),
        state.config.server_name
    );
    state
        .store
        .create_group(&group_id, &auth.user_id, &auth.device_id, now_ms() as i64)
        .await?;
    tracing::info!(%group_id, user_id = %auth.user_id, "group created");
    Ok(Json(CreateGroupResponse { group_id }))
}

async fn list_groups(
    State(state): State<AppState>,
    auth: Authed,
) -> ApiResult<Json<ListGroupsResponse>> {
    let mut groups = Vec::new();
    for group in state
        .store
        .device_groups(&auth.user_id, &auth.device_id)
        .await?
    {
        let members = state.store.roster(&group.group_id).await?;
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
    Ok(Json(ListGroupsResponse { groups }))
}

async fn group_or_404(state: &AppState, group_id: &str) -> ApiResult<Group> {
    state
        .store
        .group(group_id)
        .await?
        .ok_or_else(|| Error::NotFound("no such group at this hub".into()))
}

fn decode(field: &str, b64: &str) -> ApiResult<Vec<u8>> {
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| Error::InvalidMessage(format!("{field} is not standard base64")))
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::InvalidMessage(e.to_string())
}

/// The protocol error for a write the store refused at commit time.
fn refusal(refused: Refused) -> Error {
    match refused {
        Refused::StaleEpoch(e) => Error::StaleEpoch {
            current_epoch: e.max(0) as u64,
        },
        Refused::FutureEpoch(_) => invalid("the message's epoch is ahead of the group"),
        Refused::NoGroup => Error::NotFound("no such group at this hub".into()),
        // Only after retries: a commit landed between every check and its append.
        Refused::RosterChanged => Error::Internal("the group's roster kept changing".into()),
    }
}

async fn submit_commit(
    State(state): State<AppState>,
    auth: Authed,
    Path(group_id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> ApiResult<Json<CommitResponse>> {
    let sender = DeviceRef {
        user_id: auth.user_id,
        device_id: auth.device_id,
    };
    match hub_of(&state, &group_id)? {
        None => hub_commit(&state, &sender, &group_id, req).await.map(Json),
        Some(hub) => {
            let body = follower_body(&req, &sender)?;
            let path = fed_path(&["groups", &group_id, "commit"]);
            let answer = relay(&state, reqwest::Method::POST, &hub, &path, &body).await?;
            serde_json::from_value(answer)
                .map(Json)
                .map_err(|e| Error::UnreachableServer(format!("{hub}: {e}")))
        }
    }
}

/// The hub server of a group when it is another server; `None` when we are the hub.
pub fn hub_of(state: &AppState, group_id: &str) -> ApiResult<Option<String>> {
    let hub = group_id
        .strip_prefix('!')
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, server)| server)
        .filter(|s| parley_client_api::ids::is_valid_server_name(s))
        .ok_or_else(|| Error::NotFound("not a group id".into()))?;
    Ok((!same_server(hub, &state.config.server_name)).then(|| hub.to_owned()))
}

/// A federation path from raw segments, each percent-encoded.
pub fn fed_path(segments: &[&str]) -> String {
    let mut path = String::from("/_parley/federation/v1");
    for s in segments {
        path.push('/');
        path.push_str(&parley_client_api::endpoint::fill_path("{x}", &[s]).unwrap_or_default());
    }
    path
}

/// The client body plus `sender`, as a follower submits it to the hub.
fn follower_body<T: serde::Serialize>(req: &T, sender: &DeviceRef) -> ApiResult<serde_json::Value> {
    let mut body = serde_json::to_value(req).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "sender".into(),
            serde_json::to_value(sender).map_err(|e| Error::Internal(e.to_string()))?,
        );
    }
    Ok(body)
}

/// Sends a follower submission to the hub and hands its answer back unchanged.
async fn relay(
    state: &AppState,
    method: reqwest::Method,
    hub: &str,
    path: &str,
    body: &serde_json::Value,
) -> ApiResult<serde_json::Value> {
    state
        .fed
        .request(method, hub, path, Some(body))
        .await
        .map_err(Error::from)
}

/// The hub's handling of a commit bundle from `sender` (a local device or, via federation,
/// a device of the requesting server), DESIGN §3.3 and §3.4's order of refusals.
pub async fn hub_commit(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    req: CommitRequest,
) -> ApiResult<CommitResponse> {
    let (state, group_id) = (state.clone(), group_id.to_owned());
    let auth = sender;
    let group = group_or_404(&state, &group_id).await?;
    // 1. Malformed bundle.
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
    if total as u64 > state.config.limits.max_bundle_bytes {
        return Err(Error::TooLarge {
            limit: state.config.limits.max_bundle_bytes as usize,
        });
    }
    let info = mls_check::inspect_message(&commit).map_err(invalid)?;
    // 2. Group id, content type and wire format from the message itself.
    let framed = mls_check::check_envelope(&info, group_id.as_bytes(), ContentKind::Commit)
        .map_err(invalid)?;
    let commit_info = framed
        .commit
        .as_ref()
        .ok_or_else(|| invalid("commit body missing"))?;
    let welcome_info = welcome
        .as_deref()
        .map(mls_check::inspect_welcome)
        .transpose()
        .map_err(invalid)?;
    if let Some(gi) = group_info.as_deref() {
        let summary = mls_check::inspect_group_info(gi).map_err(invalid)?;
        mls_check::check_group_info(&summary, framed).map_err(invalid)?;
    }
    // 3. An epoch in the future.
    let current = group.epoch.max(0) as u64;
    if framed.epoch > current {
        return Err(Error::InvalidMessage(format!(
            "commit is for epoch {} but the group is at {current}",
            framed.epoch
        )));
    }
    let MessageSender::Member(committer_leaf) = framed.sender else {
        return Err(invalid("commit sender is not a member"));
    };
    // 4. Declared adds/removes against what the commit does.
    let members = state.store.roster(&group_id).await?;
    let roster = roster_of(&members);
    let stored = if commit_info.proposal_refs.is_empty() || framed.epoch != current {
        HashMap::new()
    } else {
        stored_proposals(&state, &group_id, framed.epoch).await?
    };
    let is_current = framed.epoch == current;
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
    let declared_adds: Vec<String> = req
        .adds
        .iter()
        .map(|d| identity(&d.user_id, &d.device_id))
        .collect();
    let declared_removes: Vec<String> = req
        .removes
        .iter()
        .map(|d| identity(&d.user_id, &d.device_id))
        .collect();
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
        if delta.adds.is_empty() != welcome.is_none() {
            return Err(invalid(
                "a welcome is required exactly when the commit adds members",
            ));
        }
        if let Some(w) = &welcome_info {
            mls_check::check_welcome(w, &delta.adds).map_err(invalid)?;
        }
        // Before any device list is fetched from an invitee's server.
        check_adds_policy(&state, &members, &added_identities)?;
        for add in &delta.adds {
            check_added_device(&state, &add.identity, &add.signature_key).await?;
        }
    } else if commit_info.proposal_refs.is_empty() {
        let (mut a, mut d) = (added_identities.clone(), declared_adds.clone());
        a.sort();
        d.sort();
        if a != d {
            return Err(invalid("declared adds do not match the commit"));
        }
    }
    // 5. Sender in the roster, at the leaf the commit names.
    let sender_identity = identity(&auth.user_id, &auth.device_id);
    let in_roster = members
        .iter()
        .any(|m| m.user_id == auth.user_id && m.device_id == auth.device_id);
    if !in_roster
        || (is_current && roster.identity_at(committer_leaf) != Some(sender_identity.as_str()))
    {
        state
            .metrics
            .roster_denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Error::NotMember);
    }
    // 6. Stale epoch.
    if framed.epoch < current {
        return Err(Error::StaleEpoch {
            current_epoch: current,
        });
    }
    let mut next_roster = roster.clone();
    let placed = next_roster.apply_commit(&delta.removes, &added_identities);
    let removed: Vec<(String, String)> = delta
        .removes
        .iter()
        .filter_map(|leaf| roster.identity_at(*leaf))
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
        .filter(|m| is_local(&state, &m.user_id))
        .map(|m| (m.user_id.clone(), m.device_id.clone()))
        .collect();
    // Every other server with a member before or after the commit gets it; invitees'
    // servers also get the Welcome for their devices.
    let mut destinations: Vec<String> = members
        .iter()
        .map(|m| server_of(&m.user_id))
        .chain(added.iter().map(|m| server_of(&m.user_id)))
        .filter(|s| !same_server(s, &state.config.server_name))
        .map(str::to_owned)
        .collect();
    destinations.sort();
    destinations.dedup();
    let mut outbox: Vec<OutboxItem> = destinations
        .iter()
        .map(|d| OutboxItem::message(d))
        .collect();
    if let Some(w) = &welcome {
        for d in &destinations {
            let recipients: Vec<DeviceRef> = added
                .iter()
                .filter(|m| same_server(server_of(&m.user_id), d))
                .map(|m| DeviceRef {
                    user_id: m.user_id.clone(),
                    device_id: m.device_id.clone(),
                })
                .collect();
            if !recipients.is_empty() {
                let meta = serde_json::json!({"sender": auth, "recipients": recipients});
                outbox.push(OutboxItem {
                    destination: d.clone(),
                    kind: "welcome".into(),
                    payload: Some(w.clone()),
                    recipients: Some(meta.to_string()),
                });
            }
        }
    }
    let to_apply = CommitToApply {
        group_id: group_id.clone(),
        epoch: framed.epoch as i64,
        sender_user: auth.user_id.clone(),
        sender_device: auth.device_id.clone(),
        message: commit,
        adds_json: serde_json::to_string(&req.adds).map_err(|e| Error::Internal(e.to_string()))?,
        removes_json: serde_json::to_string(&req.removes)
            .map_err(|e| Error::Internal(e.to_string()))?,
        removed,
        added,
        welcome,
        welcome_recipients: welcome_recipients.clone(),
        group_info,
        ts: now_ms() as i64,
        outbox,
    };
    let accepted = state.store.apply_commit(to_apply).await?.map_err(refusal)?;
    tracing::info!(%group_id, epoch = accepted.epoch, seq = accepted.seq, "commit accepted");
    state.notifier.notify_all(
        members
            .iter()
            .map(|m| (m.user_id.as_str(), m.device_id.as_str())),
    );
    state.notifier.notify_all(
        welcome_recipients
            .iter()
            .map(|(u, d)| (u.as_str(), d.as_str())),
    );
    for d in &destinations {
        state.outbox.wake(d);
    }
    Ok(CommitResponse {
        epoch: accepted.epoch.max(0) as u64,
        seq: accepted.seq.max(0) as u64,
    })
}

/// Proposals accepted in this epoch, by proposal reference, for commits that reference them.
async fn stored_proposals(
    state: &AppState,
    group_id: &str,
    epoch: u64,
) -> ApiResult<HashMap<Vec<u8>, StoredProposal>> {
    let mut map = HashMap::new();
    for m in state.store.group_proposals(group_id, epoch as i64).await? {
        if let Ok(info) = mls_check::inspect_message(&m.message) {
            if let Some((r, p)) = info.framed().and_then(|f| f.stored_proposal()) {
                map.insert(r, p);
            }
        }
    }
    Ok(map)
}

/// Whether two server names are the same server (DNS names: case does not matter).
pub fn same_server(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The server name of a user id (after the first `:`).
pub fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map_or("", |(_, s)| s)
}

/// Other servers with devices in `members`.
fn remote_servers(state: &AppState, members: &[Member]) -> Vec<String> {
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

fn is_local(state: &AppState, user_id: &str) -> bool {
    user_id.rsplit_once(':').is_some_and(|_| {
        parley_client_api::ids::UserId::parse(user_id)
            .is_ok_and(|u| same_server(u.server_name(), &state.config.server_name))
    })
}

/// The hub's bounds on who a commit may add: at most `limits.max_adds_per_commit` devices
/// (413), only servers the federation ACL allows (403), and a group spanning at most
/// `limits.max_servers_per_group` servers (413).
fn check_adds_policy(state: &AppState, members: &[Member], adds: &[String]) -> ApiResult<()> {
    let limits = &state.config.limits;
    if adds.len() > limits.max_adds_per_commit {
        return Err(Error::TooLarge {
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
        if !state.config.federation.enabled || !state.config.federation.allows(server) {
            return Err(Error::Forbidden(format!(
                "federation with {server} is not allowed"
            )));
        }
        servers.insert(server);
    }
    if servers.len() > limits.max_servers_per_group {
        return Err(Error::TooLarge {
            limit: limits.max_servers_per_group,
        });
    }
    Ok(())
}

/// An added device of this server must exist with the signature key its leaf carries.
async fn check_added_device(
    state: &AppState,
    identity: &str,
    signature_key: &[u8],
) -> ApiResult<()> {
    let (user_id, device_id) = split_identity(identity)
        .ok_or_else(|| invalid(format!("credential identity {identity:?} is malformed")))?;
    if parley_client_api::ids::UserId::parse(user_id).is_err() {
        return Err(invalid(format!(
            "credential identity {identity:?} is malformed"
        )));
    }
    if !is_local(state, user_id) {
        return Ok(());
    }
    let device = state.store.device(user_id, device_id).await?;
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

/// Whether `txn_id` has the grammar of DESIGN §3.4.
/// 400 `P_BAD_JSON` for a txn_id outside its grammar.
fn check_txn_id(txn_id: &str) -> ApiResult<()> {
    if valid_txn_id(txn_id) {
        Ok(())
    } else {
        Err(Error::BadJson(
            "txn_id must be 1-64 characters of [A-Za-z0-9._~-]".into(),
        ))
    }
}

fn valid_txn_id(txn_id: &str) -> bool {
    (1..=64).contains(&txn_id.len())
        && txn_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

async fn send_message(
    State(state): State<AppState>,
    auth: Authed,
    Path((group_id, txn_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<SendRequest>,
) -> ApiResult<Json<SendResponse>> {
    let sender = DeviceRef {
        user_id: auth.user_id,
        device_id: auth.device_id,
    };
    match hub_of(&state, &group_id)? {
        None => hub_send(&state, &sender, &group_id, &txn_id, req)
            .await
            .map(Json),
        Some(hub) => {
            check_txn_id(&txn_id)?;
            let body = follower_body(&req, &sender)?;
            let path = fed_path(&["groups", &group_id, "send", &txn_id]);
            let answer = relay(&state, reqwest::Method::PUT, &hub, &path, &body).await?;
            serde_json::from_value(answer)
                .map(Json)
                .map_err(|e| Error::UnreachableServer(format!("{hub}: {e}")))
        }
    }
}

/// The hub's handling of an application message or proposal from `sender`.
pub async fn hub_send(
    state: &AppState,
    sender: &DeviceRef,
    group_id: &str,
    txn_id: &str,
    req: SendRequest,
) -> ApiResult<SendResponse> {
    check_txn_id(txn_id)?;
    match accept_send(state, sender, group_id, txn_id, req).await {
        Ok(sent) => Ok(sent),
        Err(Error::Store(e)) if !matches!(e, parley_schema::StoreError::Conflict) => {
            Err(Error::Store(e))
        }
        // A reused txn_id returns the first result, whatever the new body; so a refusal
        // stands only for a new txn_id. (The append refuses a used txn_id with a conflict
        // before it changes anything; other refusals come earlier and never look it up.)
        Err(refused) => match state
            .store
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
) -> ApiResult<SendResponse> {
    // An unknown group is refused before the message is looked at (DESIGN §3.4).
    let mut roster = epoch_roster_or_404(state, group_id).await?;
    let message = decode("message", &req.message)?;
    if message.len() as u64 > state.config.limits.max_message_bytes {
        return Err(Error::TooLarge {
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
            .group_proposal_count(group_id, framed.epoch as i64)
            .await?;
        if held >= max as i64 {
            return Err(Error::TooLarge { limit: max });
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
            Err(Refused::RosterChanged) => roster = epoch_roster_or_404(state, group_id).await?,
            Err(refused) => return Err(refusal(refused)),
        }
    }
    Err(refusal(Refused::RosterChanged))
}

async fn epoch_roster_or_404(
    state: &AppState,
    group_id: &str,
) -> ApiResult<std::sync::Arc<EpochRoster>> {
    state
        .store
        .epoch_roster(group_id)
        .await?
        .ok_or_else(|| Error::NotFound("no such group at this hub".into()))
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
) -> ApiResult<Result<SendResponse, Refused>> {
    let CheckedSend {
        sender: auth,
        group_id,
        txn_id,
        kind,
        framed,
    } = send;
    let current = roster.epoch.max(0) as u64;
    if framed.epoch > current {
        return Err(Error::InvalidMessage(format!(
            "message is for epoch {} but the group is at {current}",
            framed.epoch
        )));
    }
    let members = &roster.members;
    let me = members
        .iter()
        .find(|m| m.user_id == auth.user_id && m.device_id == auth.device_id);
    let leaf_ok = match (me, framed.sender) {
        (Some(m), MessageSender::Member(leaf)) => m.leaf_index == leaf || framed.epoch < current,
        (Some(_), _) => kind == ContentKind::Application,
        (None, _) => false,
    };
    if !leaf_ok {
        state
            .metrics
            .roster_denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Error::NotMember);
    }
    let max_past = if kind == ContentKind::Proposal {
        0
    } else {
        state.config.limits.max_past_epochs as i64
    };
    let remote = remote_servers(state, members);
    let to_append = MessageToAppend {
        group_id: group_id.to_owned(),
        sender_user: auth.user_id.clone(),
        sender_device: auth.device_id.clone(),
        kind: kind.as_str().to_owned(),
        epoch: framed.epoch as i64,
        message: message.to_vec(),
        ts: now_ms() as i64,
        max_past_epochs: max_past,
        txn_id: Some(txn_id.to_owned()),
        roster_epoch: roster.epoch,
        outbox: remote.iter().map(|d| OutboxItem::message(d)).collect(),
    };
    let accepted = match state.store.append_message(to_append).await? {
        Ok(accepted) => accepted,
        Err(refused) => return Ok(Err(refused)),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_split_at_the_last_slash_so_ports_survive() {
        assert_eq!(
            split_identity("@a:h.example:8448/DEV"),
            Some(("@a:h.example:8448", "DEV"))
        );
    }

    #[test]
    fn txn_id_grammar() {
        assert!(valid_txn_id("a.B_c~d-9"));
        assert!(!valid_txn_id(""));
        assert!(!valid_txn_id(&"a".repeat(65)));
        assert!(!valid_txn_id("a/b"));
    }

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
