//! The HTTP API: the client API (`/_parley/client/v1`, [`client`]), the federation API
//! (`/_parley/federation/v1` and the key document, [`federation`]), the admin API
//! (`/_parley/admin/v1`, [`admin`]), and the web client for
//! every other path. Handlers are thin: they parse, authenticate and call a service.

pub mod admin;
pub mod client;
pub mod docs;
pub mod errors;
pub mod extract;
pub mod federation;
pub mod health;
pub mod route;
pub mod web_client;

use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Every endpoint of both APIs, recorded with its declaration.
pub fn routes() -> route::Routes {
    client::routes()
        .merge(federation::routes())
        .merge(docs::routes())
        .merge(health::routes())
        .merge(admin::routes())
}

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    routes()
        .into_router()
        .fallback(crate::api::web_client::web_client_or_unknown)
        .method_not_allowed_fallback(extract::wrong_method)
        // Spans carry method and path only: never headers (tokens) or query strings.
        // Clients authenticate with bearer tokens, never cookies, so any origin may call the
        // API: a web client served by one homeserver can talk to another.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods(tower_http::cors::Any)
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                    axum::http::header::RANGE,
                ])
                .expose_headers([axum::http::header::CONTENT_RANGE]),
        )
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}
