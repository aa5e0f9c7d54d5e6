//! Group endpoints: create, list, commit, send. The rules live in [`crate::hub`].

use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::groups::{
    CommitRequest, CommitResponse, CreateGroup, CreateGroupRequest, CreateGroupResponse,
    ListGroups, ListGroupsResponse, SendEphemeral, SendMessage, SendRequest, SendResponse,
    SubmitCommit,
};
use parley_client_api::join::{GroupJoinInfo, JoinInfoRequest, JoinInfoResponse};
use parley_client_api::params::{GroupPath, GroupTxnPath};

use crate::accounts::Authed;
use crate::api::errors::ApiResult;
use crate::api::route::Routes;
use crate::hub;
use crate::state::AppState;

/// The group endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<CreateGroup, _, _>(create_group)
        .serve::<ListGroups, _, _>(list_groups)
        .serve::<SubmitCommit, _, _>(submit_commit)
        .serve::<GroupJoinInfo, _, _>(join_info)
        .serve::<parley_client_api::groups::GroupForked, _, _>(forked)
        .serve::<SendMessage, _, _>(send_message)
        .serve::<SendEphemeral, _, _>(send_ephemeral)
}

async fn send_ephemeral(
    state: AppState,
    auth: Authed,
    path: GroupTxnPath,
    req: SendRequest,
) -> ApiResult<Empty> {
    hub::ephemeral::submit_ephemeral(&state, &auth.device(), &path.group_id, &path.txn_id, req)
        .await?;
    Ok(Empty {})
}

async fn create_group(
    state: AppState,
    auth: Authed,
    _: (),
    req: CreateGroupRequest,
) -> ApiResult<CreateGroupResponse> {
    Ok(hub::create_group(&state, &auth.device(), &req).await?)
}

async fn list_groups(
    state: AppState,
    auth: Authed,
    _: (),
    _: NoQuery,
) -> ApiResult<ListGroupsResponse> {
    Ok(hub::list_groups(&state, &auth.device()).await?)
}

async fn submit_commit(
    state: AppState,
    auth: Authed,
    path: GroupPath,
    req: CommitRequest,
) -> ApiResult<CommitResponse> {
    Ok(hub::submit_commit(&state, &auth.device(), &path.group_id, req).await?)
}

async fn forked(
    state: AppState,
    auth: Authed,
    path: GroupPath,
    _: parley_client_api::endpoint::Empty,
) -> ApiResult<parley_client_api::endpoint::Empty> {
    hub::fork::submit_forked(&state, &auth.device(), &path.group_id).await?;
    Ok(parley_client_api::endpoint::Empty {})
}

async fn join_info(
    state: AppState,
    auth: Authed,
    path: GroupPath,
    req: JoinInfoRequest,
) -> ApiResult<JoinInfoResponse> {
    Ok(
        hub::join::submit_join_info(&state, &auth.device().user_id, &path.group_id, &req.code)
            .await?,
    )
}

async fn send_message(
    state: AppState,
    auth: Authed,
    path: GroupTxnPath,
    req: SendRequest,
) -> ApiResult<SendResponse> {
    Ok(hub::submit_send(&state, &auth.device(), &path.group_id, &path.txn_id, req).await?)
}
