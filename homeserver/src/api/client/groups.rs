//! Group endpoints: create, list, commit, send. The rules live in [`crate::hub`].

use axum::extract::State;
use axum::{Json, Router};
use parley_client_api::endpoint::Empty;
use parley_client_api::groups::{
    CommitRequest, CommitResponse, CreateGroup, CreateGroupResponse, ListGroups,
    ListGroupsResponse, SendMessage, SendRequest, SendResponse, SubmitCommit,
};

use crate::accounts::Authed;
use crate::api::extract::{route, ApiJson, ApiPath as Path};
use crate::error::ApiResult;
use crate::hub;
use crate::state::AppState;

/// The group endpoints.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new();
    let r = route::<CreateGroup, _, _>(r, state, create_group);
    let r = route::<ListGroups, _, _>(r, state, list_groups);
    let r = route::<SubmitCommit, _, _>(r, state, submit_commit);
    route::<SendMessage, _, _>(r, state, send_message)
}

async fn create_group(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(_): ApiJson<Empty>,
) -> ApiResult<Json<CreateGroupResponse>> {
    hub::create_group(&state, &auth.device()).await.map(Json)
}

async fn list_groups(
    State(state): State<AppState>,
    auth: Authed,
) -> ApiResult<Json<ListGroupsResponse>> {
    hub::list_groups(&state, &auth.device()).await.map(Json)
}

async fn submit_commit(
    State(state): State<AppState>,
    auth: Authed,
    Path(group_id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> ApiResult<Json<CommitResponse>> {
    hub::submit_commit(&state, &auth.device(), &group_id, req)
        .await
        .map(Json)
}

async fn send_message(
    State(state): State<AppState>,
    auth: Authed,
    Path((group_id, txn_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<SendRequest>,
) -> ApiResult<Json<SendResponse>> {
    hub::submit_send(&state, &auth.device(), &group_id, &txn_id, req)
        .await
        .map(Json)
}
