//! The web client is served with a strict CSP, and found wherever `parley` is started from;
//! the federation ACL refuses both ways.

mod common;

use std::path::{Path, PathBuf};

use common::{federation_toml, free_port, Db, Launch, TestServer};
use parley_sytest::device::Device;

#[tokio::test(flavor = "multi_thread")]
async fn web_client_is_served_with_csp_and_api_paths_stay_unrecognized() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>Parley</title>",
    )
    .unwrap();
    std::fs::write(web.path().join("app.wasm"), b"\0asm").unwrap();
    let config = format!("web_client_dir = {:?}", web.path().display().to_string());
    let server = TestServer::start(Db::Sqlite, "web.example", &config).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("Parley"));
    let wasm = http
        .get(format!("{}/app.wasm", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    for path in ["/missing.js", "/_parley/client/v1/nope", "/_parley/nope"] {
        let r = http
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["errcode"],
            "P_UNRECOGNIZED"
        );
    }
}

/// The web client's sources (`web-client/app`), which `web-client/build.sh` copies into `dist/`.
fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client/app")
}

/// A web client as built into `dir`: the app's files (without the wasm, not needed here).
fn built_web_client(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(app_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

/// This build's `parley` placed at `exe` (a hard link when possible: it is large).
fn place_binary(exe: &Path) {
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let built = env!("CARGO_BIN_EXE_parley");
    if std::fs::hard_link(built, exe).is_err() {
        std::fs::copy(built, exe).unwrap();
    }
}

/// Starts `parley` as `launch` says, with no `web_client_dir` in its config, and checks that
/// `/` is the app's index.html, `/favicon.ico` its icon, and the log names `expected_dir`.
async fn serves_the_web_client_from(launch: Launch, expected_dir: &Path) {
    let server =
        TestServer::start_launched(Db::Sqlite, "web.example", "", launch, "parley=info").await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let index = std::fs::read_to_string(app_dir().join("index.html")).unwrap();
    assert_eq!(page.text().await.unwrap(), index);
    assert!(index.contains(r#"<link rel="icon" href="favicon.svg""#));
    for (path, content_type) in [
        ("favicon.ico", "image/x-icon"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let icon = http
            .get(format!("{}/{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(icon.status().as_u16(), 200, "{path}");
        assert_eq!(icon.headers()["content-type"], content_type, "{path}");
        // Same origin, as the CSP's img-src 'self' requires.
        assert!(icon.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("img-src 'self' data:"));
        let bytes = icon.bytes().await.unwrap();
        assert_eq!(
            bytes,
            std::fs::read(app_dir().join(path)).unwrap(),
            "{path}"
        );
    }
    let log = std::fs::read_to_string(server.log_path().unwrap()).unwrap();
    let expected = std::fs::canonicalize(expected_dir).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("serving the web client at /")
                && l.contains(&expected.display().to_string())),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_client_is_found_wherever_parley_is_started_from() {
    let root = tempfile::tempdir().unwrap();
    // An install: bin/parley with bin/web-client/, started from `/`.
    let install = root.path().join("install");
    place_binary(&install.join("bin/parley"));
    built_web_client(&install.join("bin/web-client"));
    let launch = Launch {
        exe: Some(install.join("bin/parley")),
        cwd: Some("/".into()),
        ..Launch::default()
    };
    serves_the_web_client_from(launch, &install.join("bin/web-client")).await;

    // A checkout: target/release/parley and web-client/dist/, started from `/`.
    let checkout = root.path().join("checkout");
    place_binary(&checkout.join("target/release/parley"));
    built_web_client(&checkout.join("web-client/dist"));
    let launch = Launch {
        exe: Some(checkout.join("target/release/parley")),
        cwd: Some("/".into()),
        ..Launch::default()
    };
    serves_the_web_client_from(launch, &checkout.join("web-client/dist")).await;

    // The working directory's web-client/dist comes before the checkout's.
    let cwd = root.path().join("cwd");
    built_web_client(&cwd.join("web-client/dist"));
    let launch = Launch {
        exe: Some(checkout.join("target/release/parley")),
        cwd: Some(cwd.clone()),
        ..Launch::default()
    };
    serves_the_web_client_from(launch, &cwd.join("web-client/dist")).await;

    // PARLEY_WEB_CLIENT_DIR comes before all of them.
    let chosen = root.path().join("chosen");
    built_web_client(&chosen);
    let launch = Launch {
        exe: Some(checkout.join("target/release/parley")),
        cwd: Some(cwd),
        env: vec![("PARLEY_WEB_CLIENT_DIR".into(), chosen.display().to_string())],
    };
    serves_the_web_client_from(launch, &chosen).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_web_client_the_root_is_unrecognized_and_the_log_says_so() {
    let root = tempfile::tempdir().unwrap();
    let exe = root.path().join("bin/parley");
    place_binary(&exe);
    let launch = Launch {
        exe: Some(exe),
        cwd: Some(root.path().to_owned()),
        ..Launch::default()
    };
    let server =
        TestServer::start_launched(Db::Sqlite, "web.example", "", launch, "parley=info").await;
    let r = reqwest::get(format!("{}/favicon.ico", server.base_url))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let log = std::fs::read_to_string(server.log_path().unwrap()).unwrap();
    assert!(log.contains("no web client found"), "{log}");
}

on_both_backends!(denied_server_is_refused_both_ways, |db: Db| async move {
    let (pa, pb) = (free_port(), free_port());
    let peers = federation_toml(&[("a.example", pa), ("b.example", pb)]);
    let a_config = peers.replace("[federation]\n", "[federation]\ndeny = [\"b.*\"]\n");
    let a = TestServer::start_at(db, "a.example", &a_config, &format!("127.0.0.1:{pa}")).await;
    let b = TestServer::start_at(db, "b.example", &peers, &format!("127.0.0.1:{pb}")).await;
    let alice = Device::register(&a, "alice").await.unwrap();
    let bob = Device::register(&b, "bob").await.unwrap();
    // Outbound from a: refused before any request is made.
    let claimed = alice.client.claim_keys(&["@bob:b.example"]).await.unwrap();
    assert_eq!(claimed.failures["b.example"].errcode, "P_FORBIDDEN");
    // Inbound to a from b: a answers 403, which b reports.
    let claimed = bob.client.claim_keys(&["@alice:a.example"]).await.unwrap();
    assert_eq!(claimed.failures["a.example"].errcode, "P_FORBIDDEN");
});
