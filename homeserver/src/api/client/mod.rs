//! The client–server API, `/_parley/client/v1`: one module per concept.

pub mod accounts;
pub mod groups;
pub mod keys;
pub mod media;
pub mod sync;

use parley_client_api::endpoint::NoQuery;
use parley_client_api::versions::{GetVersions, Limits, VersionsResponse};

use crate::api::errors::ApiResult;
use crate::api::route::Routes;
use crate::state::AppState;

/// Every client endpoint.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<GetVersions, _, _>(versions)
        .merge(accounts::routes())
        .merge(keys::routes())
        .merge(groups::routes())
        .merge(sync::routes())
        .merge(media::routes())
}

async fn versions(state: AppState, _: (), _: (), _: NoQuery) -> ApiResult<VersionsResponse> {
    let limits = &state.config.limits;
    Ok(VersionsResponse {
        versions: vec!["v1".into()],
        server_name: state.config.server_name.clone(),
        limits: Limits {
            max_past_epochs: limits.max_past_epochs,
            max_message_bytes: limits.max_message_bytes,
            max_bundle_bytes: limits.max_bundle_bytes,
            max_key_package_lifetime_ms: limits.max_key_package_lifetime_ms,
            max_upload_bytes: limits.max_upload_bytes,
        },
    })
}
