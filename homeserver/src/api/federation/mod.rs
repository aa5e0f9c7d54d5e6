//! The federation API (`/_parley/federation/v1`) and the key document: thin handlers over
//! [`crate::federation`], [`crate::keys`] and [`crate::hub`], behind [`auth::Federated`].

pub mod auth;

use axum::extract::State;
use axum::{Json, Router};
use parley_client_api::groups::{
    CommitRequest, CommitResponse, DeviceRef, SendRequest, SendResponse,
};
use parley_client_api::keys::{ClaimKeysRequest, ClaimKeysResponse, UserDevicesResponse};
use parley_federation::keys::ServerKeyDocument;
use serde_json::Value;

use crate::api::extract::ApiPath as Path;
use crate::clock::now_ms;
use crate::error::{ApiResult, Error};
use crate::ids::{same_server, server_of};
use crate::state::AppState;
use auth::Federated;

/// How long our key document may be cached by others.
const KEY_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// The federation router.
pub fn router() -> Router<AppState> {
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

async fn send_transaction(
    State(state): State<AppState>,
    Path(txn_id): Path<String>,
    fed: Federated,
) -> ApiResult<Json<Value>> {
    crate::federation::inbound::receive_transaction(&state, &fed.origin, &txn_id, fed.body)
        .await
        .map(Json)
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
fn sender_of(fed: &Federated) -> ApiResult<DeviceRef> {
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
    Ok(sender)
}

async fn follower_commit(
    State(state): State<AppState>,
    Path(group_id): Path<String>,
    fed: Federated,
) -> ApiResult<Json<CommitResponse>> {
    let sender = sender_of(&fed)?;
    let req: CommitRequest = fed.parse()?;
    crate::hub::follower_commit(&state, &sender, &group_id, req)
        .await
        .map(Json)
}

async fn follower_send(
    State(state): State<AppState>,
    Path((group_id, txn_id)): Path<(String, String)>,
    fed: Federated,
) -> ApiResult<Json<SendResponse>> {
    let sender = sender_of(&fed)?;
    let req: SendRequest = fed.parse()?;
    crate::hub::follower_send(&state, &sender, &group_id, &txn_id, req)
        .await
        .map(Json)
}

#[derive(serde::Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    since: u64,
}

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
    crate::federation::catch_up::page(&state, &fed.origin, &group_id, query.since)
        .await
        .map(Json)
}
