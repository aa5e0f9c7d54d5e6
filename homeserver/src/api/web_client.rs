//! Serves the built web client at `/` with a strict Content-Security-Policy; everything under
//! `/_parley` that no endpoint matched stays a 404 `P_UNRECOGNIZED`.
//!
//! Which directory: `PARLEY_WEB_CLIENT_DIR`, else the config's `web_client_dir`, else the first
//! of `web-client/dist` in the working directory, `web-client/` next to the executable (an
//! installed layout) and `web-client/dist` two levels above it (`target/release/parley` in a
//! checkout) that holds an `index.html` — so `parley` finds it wherever it is started from.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::api::errors::RequestError;
use crate::config::Config;
use crate::state::AppState;

/// The variable naming the web client's directory; like the other `PARLEY_*` variables it
/// overrides the config file.
pub const WEB_CLIENT_DIR_ENV: &str = "PARLEY_WEB_CLIENT_DIR";

/// No inline scripts or styles; WASM may be compiled; the client may talk to any homeserver.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self' http: https: ws: wss:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The router's fallback: a web-client file, or 404 `P_UNRECOGNIZED`.
pub async fn web_client_or_unknown(State(state): State<AppState>, req: Request) -> Response {
    let Some(dir) = web_client_dir(&state.config).map(|(dir, _)| dir) else {
        return RequestError::UnrecognizedPath.into_response();
    };
    let is_api =
        req.uri().path().starts_with("/_parley") || req.uri().path().starts_with("/.well-known");
    // Checked on every request: a configured directory may be built after start-up.
    if is_api || !(req.method() == Method::GET || req.method() == Method::HEAD) || !dir.is_dir() {
        return RequestError::UnrecognizedPath.into_response();
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
            add_page_headers(&mut response);
            response
        }
        _ => RequestError::UnrecognizedPath.into_response(),
    }
}

/// The headers of every page this server serves: the strict CSP, no sniffing, no referrer,
/// no framing.
pub fn add_page_headers(response: &mut Response) {
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
}

/// The directory served at `/` and where it came from (for the start-up log), if any.
pub fn web_client_dir(config: &Config) -> Option<(&Path, &'static str)> {
    // The variable and the search depend on the process only, so each is done once; the
    // config's value is per server (tests run several in one process).
    static FROM_ENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    static FOUND: OnceLock<Option<(PathBuf, &'static str)>> = OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| {
        std::env::var_os(WEB_CLIENT_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(dir) = from_env {
        return Some((dir, WEB_CLIENT_DIR_ENV));
    }
    if let Some(dir) = &config.web_client_dir {
        return Some((dir, "web_client_dir"));
    }
    FOUND
        .get_or_init(|| {
            let cwd = std::env::current_dir().ok();
            let exe = std::env::current_exe().ok();
            find_web_client(cwd.as_deref(), exe.as_deref())
        })
        .as_ref()
        .map(|(dir, how)| (dir.as_path(), *how))
}

/// The first default location holding an `index.html`, canonical (the log shows where it
/// really is), with how it was found.
fn find_web_client(cwd: Option<&Path>, exe: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    let exe_dir = exe.and_then(Path::parent);
    let candidates = [
        (cwd.map(|d| d.join("web-client/dist")), "working directory"),
        (
            exe_dir.map(|d| d.join("web-client")),
            "next to the executable",
        ),
        (
            exe_dir.map(|d| d.join("../../web-client/dist")),
            "checkout of the executable",
        ),
    ];
    candidates
        .into_iter()
        .filter_map(|(dir, how)| Some((dir?, how)))
        .find(|(dir, _)| dir.join("index.html").is_file())
        .map(|(dir, how)| (std::fs::canonicalize(&dir).unwrap_or(dir), how))
}

/// Logs which web client `/` serves, once at start-up: a newcomer sees at once whether the
/// page will load and from where.
pub fn log_web_client_dir(config: &Config) {
    match web_client_dir(config) {
        Some((dir, source)) if dir.is_dir() => {
            tracing::info!(dir = %dir.display(), source, "serving the web client at /");
        }
        Some((dir, source)) => {
            tracing::warn!(dir = %dir.display(), source, "the web client directory does not exist (yet): / answers 404 until it does");
        }
        None => tracing::info!(
            "no web client found (web-client/dist in the working directory, web-client/ next to the executable, or web-client/dist two levels above it): / answers 404; build it with web-client/build.sh and restart, or set web_client_dir or {WEB_CLIENT_DIR_ENV}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_client(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
    }

    #[test]
    fn the_working_directory_comes_first_then_the_executable() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let (cwd, checkout) = (root.join("cwd"), root.join("checkout"));
        let exe = checkout.join("target/release/parley");
        std::fs::create_dir_all(&cwd).unwrap();
        // `..` is resolved through the executable's directory, which exists in real life.
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        assert_eq!(find_web_client(Some(&cwd), Some(&exe)), None);
        web_client(&checkout.join("web-client/dist"));
        assert_eq!(
            find_web_client(Some(&cwd), Some(&exe)),
            Some((
                checkout.join("web-client/dist"),
                "checkout of the executable"
            ))
        );
        web_client(&checkout.join("target/release/web-client"));
        assert_eq!(
            find_web_client(Some(&cwd), Some(&exe)),
            Some((
                checkout.join("target/release/web-client"),
                "next to the executable"
            ))
        );
        web_client(&cwd.join("web-client/dist"));
        assert_eq!(
            find_web_client(Some(&cwd), Some(&exe)),
            Some((cwd.join("web-client/dist"), "working directory"))
        );
        assert_eq!(find_web_client(None, None), None);
    }

    #[test]
    fn a_directory_without_index_html_is_not_a_web_client() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("web-client/dist")).unwrap();
        assert_eq!(find_web_client(Some(root.path()), None), None);
    }
}
