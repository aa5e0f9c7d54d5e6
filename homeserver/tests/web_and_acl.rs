//! The web client is served with a strict CSP; the federation ACL refuses both ways.

mod common;

use common::device::Device;
use common::{federation_toml, free_port, Db, TestServer};

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

on_both_backends!(denied_server_is_refused_both_ways, |db: Db| async move {
    let (pa, pb) = (free_port(), free_port());
    let peers = federation_toml(&[("a.example", pa), ("b.example", pb)]);
    let a_config = peers.replace("[federation]\n", "[federation]\ndeny = [\"b.*\"]\n");
    let a = TestServer::start_at(db, "a.example", &a_config, &format!("127.0.0.1:{pa}")).await;
    let b = TestServer::start_at(db, "b.example", &peers, &format!("127.0.0.1:{pb}")).await;
    let alice = Device::register(&a, "alice").await;
    let bob = Device::register(&b, "bob").await;
    // Outbound from a: refused before any request is made.
    let claimed = alice.client.claim_keys(&["@bob:b.example"]).await.unwrap();
    assert_eq!(claimed.failures["b.example"].errcode, "P_FORBIDDEN");
    // Inbound to a from b: a answers 403, which b reports.
    let claimed = bob.client.claim_keys(&["@alice:a.example"]).await.unwrap();
    assert_eq!(claimed.failures["a.example"].errcode, "P_FORBIDDEN");
});
