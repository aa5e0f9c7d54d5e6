//! Health, readiness and the drain on shutdown, against a real server process.

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn get(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}{path}", server.base_url))
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_503_while_the_database_refuses_connections_and_200_again_after() {
    let server = TestServer::start(Db::Postgres, "health.example", "").await;
    assert_eq!(get(&server, "/_parley/health").await.0, 200);
    assert_eq!(
        get(&server, "/_parley/ready").await,
        (200, serde_json::json!({"status": "ok"}))
    );

    parley_schema::testing::set_postgres_database_reachable(&server.database, false).await;
    // A verdict is reused for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get(&server, "/_parley/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errcode"], "P_NOT_READY");
    assert_eq!(body["error"], "the database does not answer");
    // The process itself is healthy.
    assert_eq!(get(&server, "/_parley/health").await.0, 200);

    parley_schema::testing::set_postgres_database_reachable(&server.database, true).await;
    let mut ready = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if get(&server, "/_parley/ready").await.0 == 200 {
            ready = true;
            break;
        }
    }
    assert!(ready, "ready did not come back with the database");
}

async fn drain(db: Db) {
    let mut server = TestServer::start(db, "drain.example", "").await;
    let mut client = server.client();
    client
        .register("drained", "correct horse battery")
        .await
        .unwrap();
    let token = client.access_token().unwrap().to_owned();

    // A WebSocket, past its first frames.
    let ws_url = format!(
        "{}/_parley/client/v1/ws",
        server.base_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(Message::Text(
        serde_json::json!({"access_token": token})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(first, Ok(Some(Ok(Message::Text(_))))), "{first:?}");

    // A long-poll that would wait 25 s.
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let answer = client.sync(None, 25_000).await;
        (answer.is_ok(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = tokio::task::spawn_blocking(move || {
        let clean = server.stop();
        (clean, server)
    });

    // The socket is closed with the reconnect hint.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame within 5 s")
    .expect("a close frame with a code");
    assert_eq!(u16::from(closed.code), 1012);

    // The long-poll was answered at once, not after its 25 s.
    let (answered, waited) = poll.await.unwrap();
    assert!(answered, "the long-poll failed");
    assert!(
        waited < Duration::from_secs(10),
        "the long-poll waited {waited:?}"
    );

    let (clean, _server) = stop.await.unwrap();
    assert!(clean, "the server did not exit cleanly after draining");
}

on_both_backends!(
    sigterm_closes_sockets_with_a_reconnect_hint_answers_long_polls_and_exits_cleanly,
    drain
);

async fn scrape(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}/_parley/metrics", server.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_configured_token_and_count_requests_messages_and_database_commits() {
    const TOKEN: &str = "scraper-token-0123456789";
    let server = TestServer::start(
        Db::Sqlite,
        "metrics.example",
        &format!("[metrics]\nbearer_token = \"{TOKEN}\"\n"),
    )
    .await;
    let (status, body) = scrape(&server, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("P_UNAUTHORIZED"));
    assert_eq!(
        scrape(&server, Some("scraper-token-wrong-9876")).await.0,
        401
    );

    let mut alice = parley_sytest::device::Device::register(&server, "alice")
        .await
        .unwrap();
    let group = alice.create_group().await.unwrap();
    alice.send_text(&group, "counted").await.unwrap();
    assert_eq!(get(&server, "/_parley/client/versions").await.0, 200);
    // A federation request without a signature is refused, and counted by reason.
    let unsigned = get(
        &server,
        "/_parley/federation/v1/users/@alice:metrics.example/devices",
    )
    .await;
    assert_eq!(unsigned.0, 401, "{}", unsigned.1);

    let (status, text) = scrape(&server, Some(TOKEN)).await;
    assert_eq!(status, 200);
    for expected in [
        r#"parley_http_requests_total{endpoint="GetVersions",method="GET",status="200"} 1"#,
        r#"parley_http_request_duration_seconds_bucket{endpoint="SendMessage",le="+Inf"} 1"#,
        r#"parley_messages_accepted_total{kind="application"} 1"#,
        r#"parley_auth_failures_total{reason="metrics_token"} 2"#,
        "parley_websockets_open 0",
        "parley_db_commit_batch_size_bucket",
        "parley_db_commit_duration_seconds_bucket",
        "parley_db_pool_wait_seconds_bucket",
        // Alice's device uploaded 5 key packages (and a last resort, not counted).
        "parley_key_packages_stock 5",
        "parley_devices_without_key_packages 0",
        r#"parley_federation_refused_total{reason="missing_authorization"} 1"#,
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_configured_there_are_no_metrics() {
    let server = TestServer::start(Db::Sqlite, "nometrics.example", "").await;
    let (status, body) = scrape(&server, Some("anything-at-all-here")).await;
    assert_eq!(status, 404, "{body}");
}
