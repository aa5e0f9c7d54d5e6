//! The client–server API, `/_parley/client/v1`: one module per concept.

pub mod accounts;
pub mod groups;
pub mod keys;
pub mod sync;

use axum::extract::State;
use axum::{Json, Router};
use parley_client_api::endpoint::Empty;
use parley_client_api::versions::{GetVersions, Limits, VersionsResponse};

use crate::api::extract::{route, ApiQuery};
use crate::state::AppState;

/// Every client endpoint.
pub fn router(state: &AppState) -> Router<AppState> {
    let r = route::<GetVersions, _, _>(Router::new(), state, versions);
    r.merge(accounts::router(state))
        .merge(keys::router(state))
        .merge(groups::router(state))
        .merge(sync::router(state))
}

async fn versions(State(state): State<AppState>, _: ApiQuery<Empty>) -> Json<VersionsResponse> {
    let limits = &state.config.limits;
    Json(VersionsResponse {
        versions: vec!["v1".into()],
        server_name: state.config.server_name.clone(),
        limits: Limits {
            max_past_epochs: limits.max_past_epochs,
            max_message_bytes: limits.max_message_bytes,
            max_bundle_bytes: limits.max_bundle_bytes,
            max_key_package_lifetime_ms: limits.max_key_package_lifetime_ms,
        },
    })
}
