//! Account endpoints: register, login, refresh, logout, whoami, devices. The rules live in
//! [`crate::accounts`].

use axum::extract::State;
use axum::{Json, Router};
use parley_client_api::accounts::{
    DeleteDevice, DevicesResponse, ListDevices, Login, LoginRequest, Logout, Refresh,
    RefreshRequest, Register, RegisterRequest, SessionResponse, WhoAmI, WhoAmIResponse,
};
use parley_client_api::endpoint::Empty;

use crate::accounts::{self, Authed};
use crate::api::extract::{route, ApiJson, ApiPath as Path};
use crate::error::ApiResult;
use crate::state::AppState;

/// The account endpoints.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new();
    let r = route::<Register, _, _>(r, state, register);
    let r = route::<Login, _, _>(r, state, login);
    let r = route::<Refresh, _, _>(r, state, refresh);
    let r = route::<Logout, _, _>(r, state, logout);
    let r = route::<WhoAmI, _, _>(r, state, whoami);
    let r = route::<ListDevices, _, _>(r, state, list_devices);
    route::<DeleteDevice, _, _>(r, state, delete_device)
}

async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Json<SessionResponse>> {
    accounts::register(&state, req).await.map(Json)
}

async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<SessionResponse>> {
    accounts::login(&state, req).await.map(Json)
}

async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<SessionResponse>> {
    accounts::refresh(&state, req).await.map(Json)
}

async fn logout(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(_): ApiJson<Empty>,
) -> ApiResult<Json<Empty>> {
    accounts::logout(&state, &auth).await?;
    Ok(Json(Empty {}))
}

async fn whoami(auth: Authed) -> Json<WhoAmIResponse> {
    Json(accounts::whoami(auth))
}

async fn list_devices(
    State(state): State<AppState>,
    auth: Authed,
) -> ApiResult<Json<DevicesResponse>> {
    accounts::list_devices(&state, &auth).await.map(Json)
}

async fn delete_device(
    State(state): State<AppState>,
    auth: Authed,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Empty>> {
    accounts::delete_device(&state, &auth, &device_id).await?;
    Ok(Json(Empty {}))
}
