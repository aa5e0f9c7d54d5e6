//! Inbound federation (DESIGN §3.2): the key document, and the signed endpoints other
//! servers call — transactions from hubs, key claims and device lists for their clients, and
//! follower submissions to groups this server is the hub of.

use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::groups::{
    CommitRequest, CommitResponse, DeviceRef, SendRequest, SendResponse,
};
use parley_client_api::keys::{ClaimKeysRequest, ClaimKeysResponse, UserDevicesResponse};
use parley_federation::auth::{check_destination, parse_body, verify_request, XParleyAuth};
use parley_federation::keys::ServerKeyDocument;
use parley_federation::transactions::{
    parse_event, EventPayload, EventResult, Transaction, TransactionResponse,
};
use parley_schema::{GroupMessage, InboundClaim, Member, RemoteMessage};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::{ApiResult, Error};
use crate::fed_client::KeyAnswer;
use crate::http::ApiPath as Path;
use crate::hub::{hub_commit, hub_of, hub_send, same_server, server_of};
use crate::state::{now_ms, AppState};
use crate::sync::message_event;

/// How long our key document may be cached by others.
const KEY_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// The federation router.
pub fn router(_state: &AppState) -> Router<AppState> {
    use axum::routing::{get, post, put};
    Router::new()
        .route("/_parley/key/v1/server", get(server_keys))
        .route(
            "/_parley/federation/v1/send/{txn_id}",
            put(send_transaction),
        )
        .route("/_parley/federation/v1/keys/claim", post(claim_keys))
        .route(
            "/_parley/federation/v1/users/{user_id}/devices",
            get(user_devices),
        )
        .route(
            "/_parley/federation/v1/groups/{group_id}/commit",
            post(follower_commit),
        )
        .route(
            "/_parley/federation/v1/groups/{group_id}/send/{txn_id}",
            put(follower_send),
        )
        .route(
            "/_parley/federation/v1/groups/{group_id}/messages",
            get(group_messages),
        )
}

async fn server_keys(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let doc = ServerKeyDocument::build(
        &state.config.server_name,
        state.fed.signing_key(),
        crate::signing_keys::load_old_keys(&state.config.data_dir)
            .map_err(|e| Error::Internal(e.to_string()))?,
        now_ms() + KEY_VALIDITY_MS,
    )?;
    Ok(Json(Value::Object(doc.to_json_object()?)))
}

/// An authenticated federation request: the origin server and its JSON body, if any.
pub struct Federated {
    pub origin: String,
    pub body: Option<Value>,
}

impl Federated {
    /// The body as `T` (400 `P_BAD_JSON` otherwise).
    fn parse<T: DeserializeOwned>(&self) -> ApiResult<T> {
        let body = self.body.clone().unwrap_or_else(|| json!({}));
        serde_json::from_value(body).map_err(|e| Error::BadJson(e.to_string()))
    }
}

impl FromRequest<AppState> for Federated {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        if !state.config.federation.enabled {
            return Err(Error::Forbidden(
                "federation is disabled on this server".into(),
            ));
        }
        let method = req.method().as_str().to_owned();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let ip = crate::http::ClientIp::of(state, req.headers(), req.extensions())?;
        // Everything that costs little comes first: the header, the destination, the ACL and
        // the client address's budget, before the body is read or any key fetched.
        let auth = XParleyAuth::parse_bytes(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .ok_or(parley_federation::Error::MissingAuthorization)?,
        )?;
        check_destination(&auth, &state.config.server_name)?;
        if !state.config.federation.allows(&auth.origin) {
            return Err(Error::Forbidden(format!(
                "{} may not federate with this server",
                auth.origin
            )));
        }
        state.check_federation_address_rate(ip)?;
        let limit = state.config.federation.max_request_bytes;
        let bytes = crate::http::read_body(req, limit, state).await?;
        let body = parse_body((!bytes.is_empty()).then_some(&bytes[..]))?;
        let key = match state
            .fed
            .verifying_key(&auth.origin, &auth.key_id, || state.take_key_fetch(ip))
            .await
        {
            KeyAnswer::Found(key) => key,
            KeyAnswer::Throttled { retry_after_ms } => {
                return Err(Error::LimitExceeded { retry_after_ms })
            }
            KeyAnswer::Unavailable => {
                return Err(parley_federation::Error::UnknownKey {
                    origin: auth.origin.clone(),
                    key_id: auth.key_id.as_str().to_owned(),
                }
                .into())
            }
        };
        verify_request(&auth, &method, &uri, body.as_ref(), &key)?;
        // Normalised once: every later comparison, bucket and key uses the lower-case name.
        let origin = auth.origin.to_ascii_lowercase();
        // Counted only once the origin is proven, so nobody can spend another server's budget.
        state.check_federation_rate(&origin)?;
        // A server that contacts us is up: deliver what we hold for it now.
        state.outbox.contacted(&origin);
        if let Some(claimed) = body
            .as_ref()
            .and_then(|b| b.get("origin"))
            .and_then(Value::as_str)
        {
            if claimed != auth.origin {
                return Err(Error::Forbidden(
                    "body origin differs from the signed origin".into(),
                ));
            }
        }
        Ok(Federated { origin, body })
    }
}

async fn send_transaction(
    State(state): State<AppState>,
    Path(txn_id): Path<String>,
    fed: Federated,
) -> ApiResult<Json<Value>> {
    parley_federation::transactions::validate_txn_id(&txn_id)?;
    // Claimed before anything is applied: a concurrent copy waits and then gets our answer.
    match state
        .store
        .claim_inbound_transaction(&fed.origin, &txn_id, now_ms() as i64)
        .await?
    {
        InboundClaim::Claimed => {}
        InboundClaim::Answered(previous) => {
            let answer: Value =
                serde_json::from_str(&previous).map_err(|e| Error::Internal(e.to_string()))?;
            return Ok(Json(answer));
        }
        InboundClaim::InFlight => {
            return Err(Error::LimitExceeded {
                retry_after_ms: 1000,
            })
        }
    }
    let txn = match Transaction::from_body(fed.body.clone().unwrap_or(Value::Null))
        .and_then(|t| t.validate().map(|()| t))
    {
        Ok(txn) => txn,
        Err(e) => {
            let _ = state
                .store
                .release_inbound_transaction(&fed.origin, &txn_id)
                .await;
            return Err(e.into());
        }
    };
    let mut response = TransactionResponse::default();
    // Consecutive group messages are stored together (one write, in order); any other event
    // first stores the run before it, so events still take effect in the order sent.
    let mut run: Vec<(String, RemoteMessage)> = Vec::new();
    for raw in &txn.events {
        let event_id = raw
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let result = match parse_event(raw) {
            Ok(event) => match event.payload {
                EventPayload::Message(m) => match relayed_message(&state, &fed.origin, m) {
                    Ok(mut remote) => match keep_existing_local_adds(&state, &mut remote).await {
                        Ok(()) => {
                            run.push((event_id, remote));
                            continue;
                        }
                        Err(e) => refused(&e),
                    },
                    Err(e) => refused(&e),
                },
                other => {
                    store_run(&state, &fed.origin, &mut run, &mut response).await;
                    match apply_event(&state, &fed.origin, &event_id, other).await {
                        Ok(()) => EventResult::Accepted {},
                        Err(e) => refused(&e),
                    }
                }
            },
            Err(e) => EventResult::refused(&e),
        };
        response.results.insert(event_id, result);
    }
    store_run(&state, &fed.origin, &mut run, &mut response).await;
    let answer = serde_json::to_value(&response).map_err(|e| Error::Internal(e.to_string()))?;
    if let Err(e) = state
        .store
        .record_inbound_transaction(&fed.origin, &txn_id, &answer.to_string(), now_ms() as i64)
        .await
    {
        // Let a copy be applied again (each event is idempotent) rather than wait it out.
        let _ = state
            .store
            .release_inbound_transaction(&fed.origin, &txn_id)
            .await;
        return Err(e.into());
    }
    Ok(Json(answer))
}

fn refused(e: &Error) -> EventResult {
    EventResult::Refused {
        errcode: e.errcode().as_str().to_owned(),
        error: e.to_string(),
    }
}

fn is_ours(state: &AppState, user_id: &str) -> bool {
    same_server(server_of(user_id), &state.config.server_name)
}

/// A relayed message as this server stores it (400 `P_INVALID_MESSAGE` / `P_BAD_JSON` for
/// values no hub could have produced).
pub fn remote_message(
    state: &AppState,
    m: parley_federation::transactions::GroupMessage,
) -> ApiResult<RemoteMessage> {
    use parley_federation::transactions::{MessageKind, UserDevice};
    let seq = i64::try_from(m.seq)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| Error::BadJson("seq must be a positive integer".into()))?;
    let epoch = i64::try_from(m.epoch)
        .ok()
        .filter(|e| *e < i64::MAX)
        .ok_or_else(|| Error::BadJson("epoch is out of range".into()))?;
    let ts = i64::try_from(m.ts).map_err(|_| Error::BadJson("ts is out of range".into()))?;
    let message = STANDARD
        .decode(m.message.as_bytes())
        .map_err(|_| Error::InvalidMessage("message is not base64".into()))?;
    // The client API's limits hold for what other hubs relay, too.
    let limits = &state.config.limits;
    let limit = match m.kind {
        MessageKind::Commit => limits.max_bundle_bytes,
        MessageKind::Proposal | MessageKind::Application => limits.max_message_bytes,
    };
    if message.len() as u64 > limit {
        return Err(Error::TooLarge {
            limit: limit as usize,
        });
    }
    let local = |list: &Option<Vec<UserDevice>>| -> Vec<(String, String)> {
        list.iter()
            .flatten()
            .filter(|d| is_ours(state, &d.user_id))
            .map(|d| (d.user_id.clone(), d.device_id.clone()))
            .collect()
    };
    let wire = |list: &Option<Vec<UserDevice>>| -> ApiResult<Option<String>> {
        list.as_ref()
            .map(|l| {
                let refs: Vec<DeviceRef> = l
                    .iter()
                    .map(|d| DeviceRef {
                        user_id: d.user_id.clone(),
                        device_id: d.device_id.clone(),
                    })
                    .collect();
                serde_json::to_string(&refs).map_err(|e| Error::Internal(e.to_string()))
            })
            .transpose()
    };
    let kind = match m.kind {
        MessageKind::Commit => "commit",
        MessageKind::Proposal => "proposal",
        MessageKind::Application => "application",
    };
    Ok(RemoteMessage {
        local_adds: local(&m.adds),
        local_removes: local(&m.removes),
        message: GroupMessage {
            group_id: m.group_id,
            seq,
            stream_pos: 0,
            sender_user: m.sender.user_id,
            sender_device: m.sender.device_id,
            kind: kind.to_owned(),
            epoch,
            message,
            adds: wire(&m.adds)?,
            removes: wire(&m.removes)?,
            ts,
        },
    })
}

/// Drops from a relayed commit's local adds the devices that do not exist here: a hub cannot
/// make us keep a group for a device we never had.
pub async fn keep_existing_local_adds(
    state: &AppState,
    remote: &mut RemoteMessage,
) -> ApiResult<()> {
    let mut kept = Vec::with_capacity(remote.local_adds.len());
    for (user_id, device_id) in std::mem::take(&mut remote.local_adds) {
        if state.store.device(&user_id, &device_id).await?.is_some() {
            kept.push((user_id, device_id));
        }
    }
    remote.local_adds = kept;
    Ok(())
}

/// A group message relayed by `origin`, checked: only a group's hub relays its messages.
fn relayed_message(
    state: &AppState,
    origin: &str,
    m: parley_federation::transactions::GroupMessage,
) -> ApiResult<RemoteMessage> {
    if hub_of(state, &m.group_id)?.as_deref() != Some(origin) {
        return Err(Error::Forbidden(
            "only the group's hub relays its messages".into(),
        ));
    }
    remote_message(state, m)
}

/// Stores a run of checked messages from one transaction and records each one's result.
async fn store_run(
    state: &AppState,
    origin: &str,
    run: &mut Vec<(String, RemoteMessage)>,
    response: &mut TransactionResponse,
) {
    if run.is_empty() {
        return;
    }
    let (ids, remotes): (Vec<String>, Vec<RemoteMessage>) = std::mem::take(run).into_iter().unzip();
    match crate::gapfill::store_all_or_fill(state, origin, remotes).await {
        Ok(results) => {
            for (id, result) in ids.into_iter().zip(results) {
                let result = match result {
                    Ok(()) => EventResult::Accepted {},
                    Err(e) => refused(&e),
                };
                response.results.insert(id, result);
            }
        }
        Err(e) => {
            for id in ids {
                response.results.insert(id, refused(&e));
            }
        }
    }
}

/// Applies one event of a transaction from `origin`.
async fn apply_event(
    state: &AppState,
    origin: &str,
    event_id: &str,
    payload: EventPayload,
) -> ApiResult<()> {
    match payload {
        EventPayload::Message(m) => {
            let group_id = m.group_id.clone();
            let mut remote = relayed_message(state, origin, m)?;
            keep_existing_local_adds(state, &mut remote).await?;
            crate::gapfill::store_or_fill(state, origin, &group_id, remote).await
        }
        EventPayload::Welcome(w) => {
            if hub_of(state, &w.group_id)?.as_deref() != Some(origin) {
                return Err(Error::Forbidden(
                    "only the group's hub relays its welcomes".into(),
                ));
            }
            let recipients = welcome_recipients(state, &w.recipients)?;
            let welcome = STANDARD
                .decode(w.welcome.as_bytes())
                .map_err(|_| Error::InvalidMessage("welcome is not base64".into()))?;
            let limit = state.config.limits.max_bundle_bytes;
            if welcome.len() as u64 > limit {
                return Err(Error::TooLarge {
                    limit: limit as usize,
                });
            }
            crate::mls_check::inspect_welcome(&welcome)
                .map_err(|e| Error::InvalidMessage(format!("welcome: {e}")))?;
            let sender = Member {
                user_id: w.sender.user_id.clone(),
                device_id: w.sender.device_id.clone(),
                leaf_index: 0,
            };
            // Stored once, for the recipients that are devices of ours.
            let queued = state
                .store
                .store_remote_welcome(
                    origin,
                    event_id,
                    &w.group_id,
                    &sender,
                    &welcome,
                    &recipients,
                    now_ms() as i64,
                )
                .await?;
            state
                .notifier
                .notify_all(queued.iter().map(|(u, d)| (u.as_str(), d.as_str())));
            Ok(())
        }
        EventPayload::DeviceListUpdate(update) => {
            // A server speaks only for its own users.
            if !same_server(server_of(&update.user_id), origin) {
                return Err(Error::Forbidden(
                    "a server may only update its own users' devices".into(),
                ));
            }
            let list = UserDevicesResponse {
                user_id: update.user_id.clone(),
                devices: update
                    .devices
                    .iter()
                    .map(|d| parley_client_api::keys::DeviceKey {
                        device_id: d.device_id.clone(),
                        signature_key: d.signature_key.clone(),
                    })
                    .collect(),
            };
            crate::keys::cache_remote_devices(state.clone(), &list).await
        }
    }
}

/// A relayed Welcome's recipients on this server, each once; more than
/// `federation.max_welcome_recipients` listed is 413 `P_TOO_LARGE`.
fn welcome_recipients(
    state: &AppState,
    listed: &[parley_federation::transactions::UserDevice],
) -> ApiResult<Vec<(String, String)>> {
    let cap = state.config.federation.max_welcome_recipients;
    if listed.len() > cap {
        return Err(Error::TooLarge { limit: cap });
    }
    let mut seen = std::collections::HashSet::with_capacity(listed.len());
    Ok(listed
        .iter()
        .filter(|d| is_ours(state, &d.user_id))
        .map(|d| (d.user_id.clone(), d.device_id.clone()))
        .filter(|d| seen.insert(d.clone()))
        .collect())
}

async fn claim_keys(
    State(state): State<AppState>,
    fed: Federated,
) -> ApiResult<Json<ClaimKeysResponse>> {
    let req: ClaimKeysRequest = fed.parse()?;
    Ok(Json(crate::keys::claim_local(&state, req.user_ids).await?))
}

async fn user_devices(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _fed: Federated,
) -> ApiResult<Json<UserDevicesResponse>> {
    Ok(Json(
        crate::keys::local_user_devices(&state, &user_id).await?,
    ))
}

/// A follower's submission: the client body plus the submitting device.
fn sender_of(state: &AppState, fed: &Federated) -> ApiResult<DeviceRef> {
    let sender: DeviceRef = fed
        .body
        .as_ref()
        .and_then(|b| b.get("sender"))
        .cloned()
        .ok_or_else(|| Error::BadJson("sender is required".into()))
        .and_then(|s| serde_json::from_value(s).map_err(|e| Error::BadJson(e.to_string())))?;
    if !same_server(server_of(&sender.user_id), &fed.origin) {
        return Err(Error::Forbidden(
            "the sender's server is not the requesting server".into(),
        ));
    }
    let _ = state;
    Ok(sender)
}

async fn follower_commit(
    State(state): State<AppState>,
    Path(group_id): Path<String>,
    fed: Federated,
) -> ApiResult<Json<CommitResponse>> {
    let sender = sender_of(&state, &fed)?;
    if hub_of(&state, &group_id)?.is_some() {
        return Err(Error::NotFound("this server is not the group's hub".into()));
    }
    let req: CommitRequest = fed.parse()?;
    Ok(Json(hub_commit(&state, &sender, &group_id, req).await?))
}

async fn follower_send(
    State(state): State<AppState>,
    Path((group_id, txn_id)): Path<(String, String)>,
    fed: Federated,
) -> ApiResult<Json<SendResponse>> {
    let sender = sender_of(&state, &fed)?;
    if hub_of(&state, &group_id)?.is_some() {
        return Err(Error::NotFound("this server is not the group's hub".into()));
    }
    let req: SendRequest = fed.parse()?;
    Ok(Json(
        hub_send(&state, &sender, &group_id, &txn_id, req).await?,
    ))
}

#[derive(serde::Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    since: u64,
}

/// Messages per catch-up page.
pub const CATCH_UP_PAGE: i64 = 100;
/// MLS bytes per catch-up page (one message always goes): a page may be short before the end,
/// so a requester reads until a page is empty.
pub const CATCH_UP_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Catch-up from the hub (`GET /groups/{group_id}/messages?since=SEQ`), for servers with
/// devices in the group: up to [`CATCH_UP_PAGE`] messages and [`CATCH_UP_PAGE_BYTES`] with
/// seq > `since`, in order; an empty page is the end. A
/// server whose devices have all left gets messages up to the commit that removed the last of
/// them (it must deliver that commit), nothing after; a server that never had a member is
/// refused (403).
async fn group_messages(
    State(state): State<AppState>,
    Path(group_id): Path<String>,
    uri: axum::http::Uri,
    fed: Federated,
) -> ApiResult<Json<Value>> {
    // Parsed only once the request is authenticated.
    let query: MessagesQuery = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| Error::BadJson(format!("query string: {e}")))?;
    if hub_of(&state, &group_id)?.is_some() || state.store.group(&group_id).await?.is_none() {
        return Err(Error::NotFound("no such group at this hub".into()));
    }
    let since =
        i64::try_from(query.since).map_err(|_| Error::BadJson("since is out of range".into()))?;
    let history = state.store.group_membership_history(&group_id).await?;
    let theirs: Vec<Option<i64>> = history
        .into_iter()
        .filter(|(user_id, _)| same_server(server_of(user_id), &fed.origin))
        .map(|(_, left_pos)| left_pos)
        .collect();
    if theirs.is_empty() {
        return Err(Error::Forbidden(
            "the requesting server has no member in this group".into(),
        ));
    }
    // No current member: the last message it may see is the commit removing its last device.
    let until = if theirs.iter().any(Option::is_none) {
        None
    } else {
        let last_left = theirs.iter().flatten().copied().max().unwrap_or(0);
        Some(
            state
                .store
                .seq_at_position(&group_id, last_left)
                .await?
                .unwrap_or(0),
        )
    };
    let messages = state
        .store
        .group_messages_since(&group_id, since, CATCH_UP_PAGE)
        .await?;
    // A page carries at most CATCH_UP_PAGE_BYTES of MLS data (at least one message).
    let mut bytes = 0usize;
    let messages: Vec<_> = messages
        .into_iter()
        .filter(|m| until.is_none_or(|u| m.seq <= u))
        .take_while(|m| {
            let first = bytes == 0;
            bytes += m.message.len().max(1);
            first || bytes <= CATCH_UP_PAGE_BYTES
        })
        .map(|m| message_event(&m))
        .collect();
    tracing::debug!(%group_id, origin = %fed.origin, since, count = messages.len(), "catch-up served");
    Ok(Json(json!({ "group_id": group_id, "messages": messages })))
}
