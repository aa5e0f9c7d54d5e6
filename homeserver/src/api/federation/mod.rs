//! The federation API (`/_parley/federation/v1`) and the key document: thin handlers over
//! [`crate::federation`], [`crate::keys`] and [`crate::hub`]; [`auth`] checks the origin
//! server's signature.

pub mod auth;

use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::groups::{CommitResponse, DeviceRef, SendResponse};
use parley_client_api::keys::{ClaimKeysRequest, ClaimKeysResponse, UserDevicesResponse};
use parley_client_api::params::{GroupPath, GroupTxnPath, TxnPath, UserPath};
use parley_client_api::sync::EphemeralEvent;
use parley_federation::endpoints::{
    CatchUp, CatchUpPage, CatchUpQuery, ClaimKeys, FetchMedia, FollowerCommit,
    FollowerCommitRequest, FollowerEphemeral, FollowerJoinInfo, FollowerJoinInfoRequest,
    FollowerSend, FollowerSendRequest, RelayEphemeral, SendTransaction, ServerKeys, UserDevices,
};
use parley_federation::keys::ServerKeyDocument;
use parley_federation::transactions::{Transaction, TransactionResponse};
use serde_json::Value;

use crate::api::errors::{event_refusal, ApiResult, RequestError};
use crate::api::route::{Origin, Routes};
use crate::clock::now_ms;
use crate::ids::{same_server, server_of};
use crate::state::AppState;

/// How long our key document may be cached by others.
const KEY_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// The federation endpoints and the key document.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<ServerKeys, _, _>(server_keys)
        .serve::<SendTransaction, _, _>(send_transaction)
        .serve::<ClaimKeys, _, _>(claim_keys)
        .serve::<UserDevices, _, _>(user_devices)
        .serve::<FollowerCommit, _, _>(follower_commit)
        .serve::<FollowerJoinInfo, _, _>(follower_join_info)
        .serve::<parley_federation::endpoints::FollowerForked, _, _>(follower_forked)
        .serve::<FollowerSend, _, _>(follower_send)
        .serve::<FollowerEphemeral, _, _>(follower_ephemeral)
        .serve::<RelayEphemeral, _, _>(relay_ephemeral)
        .serve::<CatchUp, _, _>(catch_up)
        .serve_bytes::<FetchMedia, _, _>(fetch_media)
}

async fn fetch_media(
    state: AppState,
    _: Origin,
    path: parley_federation::endpoints::MediaIdPath,
    req: crate::api::route::RawRequest,
) -> ApiResult<axum::response::Response> {
    Ok(crate::media::serve_to_server(&state, &path.media_id, &req.headers).await?)
}

async fn server_keys(state: AppState, _: (), _: (), _: NoQuery) -> ApiResult<Value> {
    let doc = ServerKeyDocument::build(
        &state.config.server_name,
        state.fed.signing_key(),
        crate::signing_keys::load_old_keys(&state.config.data_dir)
            .map_err(|e| RequestError::Internal(e.to_string()))?,
        now_ms() + KEY_VALIDITY_MS,
    )?;
    Ok(Value::Object(doc.to_json_object()?))
}

async fn send_transaction(
    state: AppState,
    origin: Origin,
    path: TxnPath,
    txn: Transaction,
) -> ApiResult<TransactionResponse> {
    Ok(crate::federation::inbound::receive_transaction(
        &state,
        &origin.0,
        &path.txn_id,
        txn,
        event_refusal,
    )
    .await?)
}

async fn claim_keys(
    state: AppState,
    _: Origin,
    _: (),
    req: ClaimKeysRequest,
) -> ApiResult<ClaimKeysResponse> {
    Ok(crate::keys::claim_local(&state, req.user_ids)
        .await
        .map_err(crate::keys::KeysError::from)?)
}

async fn user_devices(
    state: AppState,
    _: Origin,
    path: UserPath,
    _: NoQuery,
) -> ApiResult<UserDevicesResponse> {
    Ok(crate::keys::local_user_devices(&state, &path.user_id).await?)
}

/// A follower's submitting device must be a user of the requesting server.
fn check_sender(origin: &Origin, sender: &DeviceRef) -> Result<(), RequestError> {
    if !same_server(server_of(&sender.user_id), &origin.0) {
        return Err(RequestError::SenderNotFromOrigin);
    }
    Ok(())
}

async fn follower_commit(
    state: AppState,
    origin: Origin,
    path: GroupPath,
    req: FollowerCommitRequest,
) -> ApiResult<CommitResponse> {
    check_sender(&origin, &req.sender)?;
    Ok(crate::hub::follower_commit(&state, &req.sender, &path.group_id, req.commit).await?)
}

async fn follower_forked(
    state: AppState,
    origin: Origin,
    path: GroupPath,
    req: parley_federation::endpoints::FollowerForkedRequest,
) -> ApiResult<parley_client_api::endpoint::Empty> {
    check_sender(&origin, &req.sender)?;
    crate::hub::fork::follower_forked(&state, &req.sender, &path.group_id).await?;
    Ok(parley_client_api::endpoint::Empty {})
}

async fn follower_join_info(
    state: AppState,
    origin: Origin,
    path: GroupPath,
    req: FollowerJoinInfoRequest,
) -> ApiResult<parley_client_api::join::JoinInfoResponse> {
    if !same_server(server_of(&req.user_id), &origin.0) {
        return Err(RequestError::SenderNotFromOrigin.into());
    }
    Ok(
        crate::hub::join::follower_join_info(&state, &req.user_id, &path.group_id, &req.code)
            .await?,
    )
}

async fn follower_send(
    state: AppState,
    origin: Origin,
    path: GroupTxnPath,
    req: FollowerSendRequest,
) -> ApiResult<SendResponse> {
    check_sender(&origin, &req.sender)?;
    Ok(
        crate::hub::follower_send(&state, &req.sender, &path.group_id, &path.txn_id, req.send)
            .await?,
    )
}

async fn follower_ephemeral(
    state: AppState,
    origin: Origin,
    path: GroupTxnPath,
    req: FollowerSendRequest,
) -> ApiResult<Empty> {
    check_sender(&origin, &req.sender)?;
    crate::hub::ephemeral::follower_ephemeral(&state, &req.sender, &path.group_id, req.send)
        .await?;
    Ok(Empty {})
}

async fn relay_ephemeral(
    state: AppState,
    origin: Origin,
    _: TxnPath,
    event: EphemeralEvent,
) -> ApiResult<Empty> {
    crate::hub::ephemeral::relayed_ephemeral(&state, &origin.0, event).await?;
    Ok(Empty {})
}

async fn catch_up(
    state: AppState,
    origin: Origin,
    path: GroupPath,
    query: CatchUpQuery,
) -> ApiResult<CatchUpPage> {
    Ok(crate::federation::catch_up::page(&state, &origin.0, &path.group_id, query.since).await?)
}
