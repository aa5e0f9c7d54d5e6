//! Serves the built web client at `/` with a strict Content-Security-Policy; everything under
//! `/_parley` that no endpoint matched stays a 404 `P_UNRECOGNIZED`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::Error;
use crate::state::AppState;

/// No inline scripts or styles; WASM may be compiled; the client may talk to any homeserver.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self' http: https: ws: wss:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The router's fallback: a web-client file, or 404 `P_UNRECOGNIZED`.
pub async fn web_client_or_unknown(State(state): State<AppState>, req: Request) -> Response {
    let dir = &state.config.web_client_dir;
    let is_api =
        req.uri().path().starts_with("/_parley") || req.uri().path().starts_with("/.well-known");
    if is_api || !(req.method() == Method::GET || req.method() == Method::HEAD) || !dir.is_dir() {
        return Error::UnrecognizedPath.into_response();
    }
    let served = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .oneshot(req)
        .await;
    match served {
        Ok(response)
            if response.status() == StatusCode::OK
                || response.status() == StatusCode::NOT_MODIFIED =>
        {
            let mut response = response.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }
        _ => Error::UnrecognizedPath.into_response(),
    }
}
