//! Delivery endpoints: `/sync`, `/ws` and Welcome acknowledgement. The rules live in
//! [`crate::delivery`].

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::params::WelcomePath;
use parley_client_api::sync::{DeleteWelcome, Sync, SyncRequest, SyncResponse, WebSocket};

use crate::accounts::{authenticate, Authed};
use crate::api::errors::{delivery_refusal, ApiError, ApiResult};
use crate::api::route::Routes;
use crate::delivery;
use crate::delivery::websocket::{run_socket, MAX_CLIENT_FRAME_BYTES};
use crate::state::AppState;

/// The delivery endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<Sync, _, _>(sync)
        .serve::<DeleteWelcome, _, _>(delete_welcome)
        .serve_raw::<WebSocket>(axum::routing::get(websocket))
}

async fn sync(state: AppState, auth: Authed, _: (), req: SyncRequest) -> ApiResult<SyncResponse> {
    Ok(delivery::sync::sync(&state, &auth, req).await?)
}

async fn delete_welcome(
    state: AppState,
    auth: Authed,
    path: WelcomePath,
    _: NoQuery,
) -> ApiResult<Empty> {
    delivery::sync::delete_welcome(&state, &auth, &path.id).await?;
    Ok(Empty {})
}

/// `GET /ws`: authenticates with an `Authorization` header (native clients) or a first
/// `{"access_token", "since"}` frame (browsers), then pushes events as they happen.
async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_auth = if headers.contains_key(axum::http::header::AUTHORIZATION) {
        match authenticate(&headers, &state).await {
            Ok(auth) => Some(auth),
            Err(e) => return axum::response::IntoResponse::into_response(ApiError::from(e)),
        }
    } else {
        None
    };
    upgrade
        // Small buffers: tungstenite's 128 KiB defaults dominated an idle connection's memory.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        // Clients send only the auth frame (a token and a `since`), and pings: nothing
        // larger is read, before authentication or after.
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            if let Err(e) = run_socket(state, socket, header_auth, delivery_refusal).await {
                tracing::debug!(error = %e, "websocket closed");
            }
        })
}
