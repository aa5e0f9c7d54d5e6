//! The suite must not pass vacuously: against a fake server that answers `200 {}` to
//! everything, every test that runs fails, and the exit status says so.

use std::process::Command;

use axum::response::IntoResponse;

/// Starts the fake on a free port; its base URL.
async fn start_yes_man() -> String {
    async fn yes() -> impl IntoResponse {
        ([("content-type", "application/json")], "{}")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(yes))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

/// Runs sytest with `args`; (exit success, stdout lines).
async fn sytest(args: Vec<String>) -> (bool, Vec<String>) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sytest"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (
        output.status.success(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

fn count(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_test_that_runs_fails_against_a_server_that_says_yes_to_everything() {
    let url = start_yes_man().await;
    let (success, lines) = sytest(vec![
        "--server".into(),
        url.clone(),
        "--server".into(),
        url,
        "--jobs".into(),
        "4".into(),
    ])
    .await;
    let report = lines.join("\n");
    assert!(!success, "exit status must be non-zero:\n{report}");
    assert_eq!(
        count(&lines, "ok "),
        0,
        "a test passed vacuously:\n{report}"
    );
    let failed = count(&lines, "FAIL ");
    let skipped = count(&lines, "skip ");
    assert!(failed >= 25, "only {failed} tests failed:\n{report}");
    for name in [
        "versions/versions_lists_v1_and_limits_without_a_token",
        "hygiene/unknown_paths_are_404_unrecognized_on_every_prefix",
        "hygiene/body_that_is_not_json_is_400_not_json",
        "accounts/register_returns_a_session_that_whoami_confirms",
        "tokens/missing_token_is_401_missing_token",
        "tokens/token_signed_by_another_server_is_unknown",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("FAIL {name}: "))),
            "{name} did not fail:\n{report}"
        );
    }
    // Tests needing their own configuration or a restart are skipped, with a reason.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("skip restart/restart_keeps_accounts_and_tokens: ")),
        "{report}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("0 passed, {failed} failed, {skipped} skipped").as_str()),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_fast_stops_after_the_first_failure() {
    let url = start_yes_man().await;
    let (success, lines) = sytest(vec![
        "--server".into(),
        url,
        "--jobs".into(),
        "1".into(),
        "--fail-fast".into(),
        "--filter".into(),
        "accounts".into(),
    ])
    .await;
    assert!(!success);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("FAIL accounts/"), "{lines:?}");
    assert_eq!(lines[1], "0 passed, 1 failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_filter_select_by_glob() {
    let (success, all) = sytest(vec!["--list".into()]).await;
    assert!(success);
    assert!(all.len() >= 25, "{all:?}");
    let (_, tokens) = sytest(vec![
        "--list".into(),
        "--filter".into(),
        "tokens/*refresh*".into(),
    ])
    .await;
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|l| l.starts_with("tokens/") && l.contains("refresh")),
        "{tokens:?}"
    );
    let (_, group) = sytest(vec!["--list".into(), "--filter".into(), "versions".into()]).await;
    assert!(
        !group.is_empty() && group.iter().all(|l| l.starts_with("versions/")),
        "{group:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_a_url_is_a_usage_error() {
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_sytest"))
            .args(["--db", "postgres", "--parley", "/bin/true"])
            .env_remove("PARLEY_TEST_POSTGRES_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// A proxy in front of a real `parley` that remembers each token's last good `whoami` and
/// answers with it when the server says the token is dead: a server that caches sessions.
async fn start_caching_proxy(upstream: String) -> String {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        http: reqwest::Client,
        cache: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    }

    async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let path = parts.uri.path_and_query().unwrap().to_string();
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
        let mut upstream = proxy
            .http
            .request(method, format!("{}{}", proxy.upstream, path))
            .body(body.to_vec());
        for name in ["authorization", "content-type"] {
            if let Some(v) = parts.headers.get(name) {
                upstream = upstream.header(name, v.to_str().unwrap());
            }
        }
        let answer = upstream.send().await.unwrap();
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.unwrap().to_vec();
        let token = parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, bytes) = match (path.ends_with("/whoami"), token) {
            (true, Some(token)) => {
                let mut cache = proxy.cache.lock().unwrap();
                match (status, cache.get(&token)) {
                    (200, _) => {
                        cache.insert(token, bytes.clone());
                        (status, bytes)
                    }
                    (401, Some(cached)) => (200, cached.clone()),
                    _ => (status, bytes),
                }
            }
            _ => (status, bytes),
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap()
    }

    let proxy = Proxy {
        upstream,
        http: reqwest::Client::new(),
        cache: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// Starts this repository's parley (next to sytest) with generous rate limits, if built.
fn start_parley(dir: &std::path::Path) -> Option<(std::process::Child, String)> {
    use std::io::BufRead;
    let parley = std::path::Path::new(env!("CARGO_BIN_EXE_sytest"))
        .parent()?
        .join("parley");
    if !parley.is_file() {
        return None;
    }
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[log]\nlevel = \"warn\"\n[rate_limits]\nlogin = { per_second = 1000.0, burst = 1000 }\nregister = { per_second = 1000.0, burst = 1000 }\n",
    )
    .unwrap();
    let mut child = Command::new(parley)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--server-name", "proxied.test", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("parley listening on ").map(str::to_owned))
        .expect("parley did not start");
    std::thread::spawn(move || lines.for_each(drop));
    Some((child, url))
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_tests_fail_against_a_server_that_caches_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut parley, url)) = start_parley(dir.path()) else {
        eprintln!("parley is not built next to sytest; build parley-homeserver to run this test");
        return;
    };
    let proxy = start_caching_proxy(url).await;
    let (success, lines) = sytest(vec![
        "--server".into(),
        proxy,
        "--filter".into(),
        "tokens".into(),
        "--filter".into(),
        "accounts".into(),
    ])
    .await;
    let _ = parley.kill();
    let _ = parley.wait();
    let report = lines.join("\n");
    assert!(!success, "{report}");
    for name in [
        "tokens/logout_revokes_the_access_token_at_once",
        "tokens/deleted_devices_tokens_are_revoked",
        "tokens/reused_refresh_token_is_unknown_and_revokes_the_session",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("FAIL {name}: "))),
            "{name} did not fail:\n{report}"
        );
    }
    // What the proxy leaves intact still passes: the failures are specific.
    for name in [
        "tokens/missing_token_is_401_missing_token",
        "tokens/garbage_token_is_401_unknown_token",
        "tokens/refresh_rotates_both_tokens",
        "accounts/register_returns_a_session_that_whoami_confirms",
        "accounts/login_with_wrong_password_is_403_forbidden",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("ok   {name} ("))),
            "{name} did not pass:\n{report}"
        );
    }
    assert_eq!(count(&lines, "FAIL "), 3, "{report}");
}
