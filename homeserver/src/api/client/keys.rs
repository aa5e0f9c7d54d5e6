//! Key endpoints: signature-key binding, device lists, key-package upload, count and claim.
//! The rules live in [`crate::keys`].

use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::keys::{
    BindSignatureKey, BindSignatureKeyRequest, ClaimKeys, ClaimKeysRequest, ClaimKeysResponse,
    KeyCount, KeyCountResponse, UploadKeys, UploadKeysRequest, UserDevices, UserDevicesResponse,
};
use parley_client_api::params::{DevicePath, UserPath};

use crate::accounts::Authed;
use crate::api::errors::ApiResult;
use crate::api::route::Routes;
use crate::keys;
use crate::state::AppState;

/// The key endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<BindSignatureKey, _, _>(bind_signature_key)
        .serve::<UserDevices, _, _>(user_devices)
        .serve::<UploadKeys, _, _>(upload)
        .serve::<KeyCount, _, _>(count)
        .serve::<ClaimKeys, _, _>(claim)
}

async fn bind_signature_key(
    state: AppState,
    auth: Authed,
    path: DevicePath,
    req: BindSignatureKeyRequest,
) -> ApiResult<Empty> {
    keys::bind_signature_key(&state, &auth.device(), &path.device_id, req).await?;
    Ok(Empty {})
}

async fn user_devices(
    state: AppState,
    _: Authed,
    path: UserPath,
    _: NoQuery,
) -> ApiResult<UserDevicesResponse> {
    Ok(keys::user_devices(&state, &path.user_id).await?)
}

async fn upload(
    state: AppState,
    auth: Authed,
    _: (),
    req: UploadKeysRequest,
) -> ApiResult<KeyCountResponse> {
    Ok(keys::upload(&state, &auth.device(), req).await?)
}

async fn count(state: AppState, auth: Authed, _: (), _: NoQuery) -> ApiResult<KeyCountResponse> {
    Ok(keys::key_count(&state, &auth.user_id, &auth.device_id)
        .await
        .map_err(keys::KeysError::from)?)
}

async fn claim(
    state: AppState,
    _: Authed,
    _: (),
    req: ClaimKeysRequest,
) -> ApiResult<ClaimKeysResponse> {
    Ok(keys::claim(&state, req).await?)
}
