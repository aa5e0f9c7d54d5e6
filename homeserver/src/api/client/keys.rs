//! Key endpoints: signature-key binding, device lists, key-package upload, count and claim.
//! The rules live in [`crate::keys`].

use axum::extract::State;
use axum::{Json, Router};
use parley_client_api::endpoint::Empty;
use parley_client_api::keys::{
    BindSignatureKey, BindSignatureKeyRequest, ClaimKeys, ClaimKeysRequest, ClaimKeysResponse,
    KeyCount, KeyCountResponse, UploadKeys, UploadKeysRequest, UserDevices, UserDevicesResponse,
};

use crate::accounts::Authed;
use crate::api::extract::{route, ApiJson, ApiPath as Path};
use crate::error::ApiResult;
use crate::keys;
use crate::state::AppState;

/// The key endpoints.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new();
    let r = route::<BindSignatureKey, _, _>(r, state, bind_signature_key);
    let r = route::<UserDevices, _, _>(r, state, user_devices);
    let r = route::<UploadKeys, _, _>(r, state, upload);
    let r = route::<KeyCount, _, _>(r, state, count);
    route::<ClaimKeys, _, _>(r, state, claim)
}

async fn bind_signature_key(
    State(state): State<AppState>,
    auth: Authed,
    Path(device_id): Path<String>,
    ApiJson(req): ApiJson<BindSignatureKeyRequest>,
) -> ApiResult<Json<Empty>> {
    keys::bind_signature_key(&state, &auth.device(), &device_id, req).await?;
    Ok(Json(Empty {}))
}

async fn user_devices(
    State(state): State<AppState>,
    _auth: Authed,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserDevicesResponse>> {
    keys::user_devices(&state, &user_id).await.map(Json)
}

async fn upload(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(req): ApiJson<UploadKeysRequest>,
) -> ApiResult<Json<KeyCountResponse>> {
    keys::upload(&state, &auth.device(), req).await.map(Json)
}

async fn count(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<KeyCountResponse>> {
    keys::key_count(&state, &auth.user_id, &auth.device_id)
        .await
        .map(Json)
}

async fn claim(
    State(state): State<AppState>,
    _auth: Authed,
    ApiJson(req): ApiJson<ClaimKeysRequest>,
) -> ApiResult<Json<ClaimKeysResponse>> {
    keys::claim(&state, req).await.map(Json)
}
