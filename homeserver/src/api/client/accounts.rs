//! Account endpoints: register, login, refresh, logout, whoami, devices. The rules live in
//! [`crate::accounts`].

use parley_client_api::accounts::{
    DeleteDevice, DevicesResponse, ListDevices, Login, LoginChallenge, LoginChallengeRequest,
    LoginChallengeResponse, LoginRequest, Logout, Refresh, RefreshRequest, Register,
    RegisterRequest, SessionResponse, WhoAmI, WhoAmIResponse,
};
use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::params::DevicePath;

use crate::accounts::{self, Authed};
use crate::api::errors::ApiResult;
use crate::api::route::Routes;
use crate::state::AppState;

/// The account endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<Register, _, _>(register)
        .serve::<Login, _, _>(login)
        .serve::<LoginChallenge, _, _>(login_challenge)
        .serve::<Refresh, _, _>(refresh)
        .serve::<Logout, _, _>(logout)
        .serve::<WhoAmI, _, _>(whoami)
        .serve::<ListDevices, _, _>(list_devices)
        .serve::<DeleteDevice, _, _>(delete_device)
}

async fn register(
    state: AppState,
    _: (),
    _: (),
    req: RegisterRequest,
) -> ApiResult<SessionResponse> {
    Ok(accounts::register(&state, req).await?)
}

async fn login(state: AppState, _: (), _: (), req: LoginRequest) -> ApiResult<SessionResponse> {
    Ok(accounts::login(&state, req).await?)
}

async fn login_challenge(
    state: AppState,
    _: (),
    _: (),
    req: LoginChallengeRequest,
) -> ApiResult<LoginChallengeResponse> {
    Ok(accounts::challenge::issue(&state, req).await?)
}

async fn refresh(state: AppState, _: (), _: (), req: RefreshRequest) -> ApiResult<SessionResponse> {
    Ok(accounts::refresh(&state, req).await?)
}

async fn logout(state: AppState, auth: Authed, _: (), _: Empty) -> ApiResult<Empty> {
    accounts::logout(&state, &auth).await?;
    Ok(Empty {})
}

async fn whoami(_: AppState, auth: Authed, _: (), _: NoQuery) -> ApiResult<WhoAmIResponse> {
    Ok(accounts::whoami(auth))
}

async fn list_devices(
    state: AppState,
    auth: Authed,
    _: (),
    _: NoQuery,
) -> ApiResult<DevicesResponse> {
    Ok(accounts::list_devices(&state, &auth).await?)
}

async fn delete_device(
    state: AppState,
    auth: Authed,
    path: DevicePath,
    _: NoQuery,
) -> ApiResult<Empty> {
    accounts::delete_device(&state, &auth, &path.device_id).await?;
    Ok(Empty {})
}
