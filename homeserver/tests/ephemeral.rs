//! Ephemeral messages (typing notices, read receipts) against real servers: handed to the
//! member devices connected at the time, over WebSocket and long-poll and across federation,
//! never stored, never returned by a later `/sync`, and costing the database no write.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{assert_api_error, federated_pair, Db, TestServer};
use futures::{SinkExt, StreamExt};
use parley_client_api::groups::{SendEphemeral, SendRequest};
use parley_client_api::params::GroupTxnPath;
use parley_schema::{Store, StoreConfig};
use parley_sytest::device::Device;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `device`'s WebSocket on `server`, from its current token, once the backlog has been sent.
async fn socket(server: &TestServer, device: &Device) -> Socket {
    let url = format!(
        "{}/_parley/client/v1/ws",
        server.base_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let auth = serde_json::json!({"access_token": device.client.access_token().unwrap(), "since": device.since});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    // The key-package frame follows the backlog.
    next_frame(&mut ws, "key_packages").await;
    ws
}

/// The next frame of `kind` within 10 s.
async fn next_frame(ws: &mut Socket, kind: &str) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} frame within 10 s"))
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = frame {
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == kind {
                return f;
            }
        }
    }
}

/// `device` sends `text` as an ephemeral message; the base64 MLS message it sent.
async fn send_ephemeral(
    device: &mut Device,
    group: &str,
    text: &str,
) -> Result<String, parley_client_api::ClientError> {
    send_ephemeral_keeping(device, group, text, false).await
}

/// [`send_ephemeral`], as a read receipt the servers keep for absent devices when
/// `keep_latest`.
async fn send_ephemeral_keeping(
    device: &mut Device,
    group: &str,
    text: &str,
    keep_latest: bool,
) -> Result<String, parley_client_api::ClientError> {
    let (txn, bytes) = device.encrypt(group, text).unwrap();
    let message = STANDARD.encode(&bytes);
    let path = GroupTxnPath {
        group_id: group.parse().unwrap(),
        txn_id: txn.parse().unwrap(),
    };
    let mut request = SendRequest::new(message.clone());
    request.keep_latest = keep_latest;
    device
        .client
        .call::<SendEphemeral>(&path, &request)
        .await
        .map(|_| message)
}

/// The database's count of stored messages and the stream's head, as a device sees it.
async fn stored(store: &Store, device: &mut Device) -> (i64, String) {
    let rows = store.retention().retained_rows().await.unwrap();
    let head = device.client.sync(None, 0).await.unwrap().next_batch;
    (rows.group_messages, head)
}

on_both_backends!(
    an_ephemeral_message_reaches_connected_members_only_and_is_never_stored,
    |db: Db| async move {
        let server = TestServer::start(db, "eph.example", "").await;
        let store = Store::connect(&server.database, &StoreConfig::default())
            .await
            .unwrap();
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        let mut carol = Device::register(&server, "carol").await.unwrap();
        let mut dave = Device::register(&server, "dave").await.unwrap();
        let everyone = [
            "@alice:eph.example",
            "@bob:eph.example",
            "@carol:eph.example",
        ];
        for d in [&mut alice, &mut bob, &mut carol] {
            d.know(&everyone);
        }
        let group = alice.create_group().await.unwrap();
        alice
            .add(&group, &["@bob:eph.example", "@carol:eph.example"])
            .await
            .unwrap();
        for d in [&mut bob, &mut carol] {
            d.sync_all().await.unwrap();
        }
        let before = stored(&store, &mut bob).await;
        let mut bob_ws = socket(&server, &bob).await;

        // Bob is connected: his socket gets it at once, with its sender.
        let sent = send_ephemeral(&mut alice, &group, "typing").await.unwrap();
        let frame = next_frame(&mut bob_ws, "ephemeral").await;
        assert_eq!(frame["group_id"], group.as_str());
        assert_eq!(frame["message"], sent.as_str());
        assert_eq!(frame["sender"]["user_id"], "@alice:eph.example");
        assert!(frame.get("next_batch").is_none(), "no stream position");

        // Carol was not connected: a sync from her token (or from the start) never shows it.
        let later = carol.client.sync(carol.since.as_deref(), 0).await.unwrap();
        assert!(later.ephemeral.is_empty() && later.groups.is_empty());
        let from_start = carol.client.sync(None, 0).await.unwrap();
        assert!(from_start.ephemeral.is_empty());

        // A long-poll waiting at the time gets it, and answers at once.
        let waiting = {
            let client = carol.client.clone();
            let since = carol.since.clone();
            tokio::spawn(async move { client.sync(since.as_deref(), 20_000).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let sent = send_ephemeral(&mut alice, &group, "still typing")
            .await
            .unwrap();
        let answer = waiting.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(answer.ephemeral.len(), 1);
        assert_eq!(answer.ephemeral[0].message, sent);
        assert_eq!(
            answer.next_batch,
            carol.since.clone().unwrap(),
            "the stream did not move"
        );

        // Nothing was stored and the stream did not move.
        assert_eq!(stored(&store, &mut bob).await, before);

        // Refusals: not a member, too large, not base64, a proposal.
        dave.know(&everyone);
        let path = GroupTxnPath {
            group_id: group.parse().unwrap(),
            txn_id: "t1".parse().unwrap(),
        };
        let big = SendRequest::new(STANDARD.encode(vec![0u8; 4096]));
        assert_api_error(
            alice.client.call::<SendEphemeral>(&path, &big).await,
            413,
            "P_TOO_LARGE",
        );
        let bad = SendRequest::new("not base64!".into());
        assert_api_error(
            alice.client.call::<SendEphemeral>(&path, &bad).await,
            400,
            "P_INVALID_MESSAGE",
        );
        let (_, stolen) = alice.encrypt(&group, "from someone else").unwrap();
        let forged = SendRequest::new(STANDARD.encode(&stolen));
        assert_api_error(
            dave.client.call::<SendEphemeral>(&path, &forged).await,
            403,
            "P_NOT_MEMBER",
        );
        assert_eq!(stored(&store, &mut bob).await, before);
        store.close();
    }
);

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_messages_cross_federation_both_ways_without_the_outbox() {
    let (a, b) = federated_pair(Db::Sqlite, "").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:b.example"]);
    bob.know(&["@alice:a.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:b.example"]).await.unwrap();
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    alice.sync_all().await.unwrap();
    let store_a = Store::connect(&a.database, &StoreConfig::default())
        .await
        .unwrap();
    let store_b = Store::connect(&b.database, &StoreConfig::default())
        .await
        .unwrap();
    let rows = |s: &Store| {
        let s = s.clone();
        async move {
            let r = s.retention().retained_rows().await.unwrap();
            let queued: i64 = s
                .outbox()
                .queues()
                .await
                .unwrap()
                .iter()
                .map(|q| q.queued)
                .sum();
            (r.group_messages, queued)
        }
    };
    let (before_a, before_b) = (rows(&store_a).await, rows(&store_b).await);
    let mut bob_ws = socket(&b, &bob).await;
    let mut alice_ws = socket(&a, &alice).await;

    // From the hub's server to the member server's device.
    let sent = send_ephemeral(&mut alice, &group, "typing on a")
        .await
        .unwrap();
    let frame = next_frame(&mut bob_ws, "ephemeral").await;
    assert_eq!(frame["message"], sent.as_str());
    // From the member server, through the hub, to the hub's device.
    let sent = send_ephemeral(&mut bob, &group, "typing on b")
        .await
        .unwrap();
    let frame = next_frame(&mut alice_ws, "ephemeral").await;
    assert_eq!(frame["message"], sent.as_str());
    assert_eq!(frame["sender"]["user_id"], "@bob:b.example");
    // Neither server stored or queued anything.
    assert_eq!(
        (rows(&store_a).await, rows(&store_b).await),
        (before_a, before_b)
    );
    store_a.close();
    store_b.close();
}

/// Database commits so far (each one fsync'd), from the server's metrics.
async fn commits(server: &TestServer, token: &str) -> f64 {
    let body = reqwest::Client::new()
        .get(format!("{}/_parley/metrics", server.base_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("parley_db_commit_batch_size_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_notices_sent_ephemerally_cost_no_database_commit_where_messages_cost_one_each() {
    const TOKEN: &str = "ephemeral-metrics-token-0123";
    const N: usize = 100;
    let server = TestServer::start(
        Db::Sqlite,
        "fsync.example",
        &format!("[metrics]\nbearer_token = \"{TOKEN}\"\n"),
    )
    .await;
    let mut alice = Device::register(&server, "alice").await.unwrap();
    let mut bob = Device::register(&server, "bob").await.unwrap();
    alice.know(&["@bob:fsync.example"]);
    bob.know(&["@alice:fsync.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:fsync.example"]).await.unwrap();
    bob.sync_all().await.unwrap();
    let _bob_ws = socket(&server, &bob).await;

    let start = commits(&server, TOKEN).await;
    for i in 0..N {
        send_ephemeral(&mut alice, &group, &format!("typing {i}"))
            .await
            .unwrap();
    }
    let after_ephemeral = commits(&server, TOKEN).await;
    for i in 0..N {
        alice
            .send_text(&group, &format!("message {i}"))
            .await
            .unwrap();
    }
    let after_messages = commits(&server, TOKEN).await;
    let per_ephemeral = (after_ephemeral - start) / N as f64;
    let per_message = (after_messages - after_ephemeral) / N as f64;
    println!(
        "database commits per notice: stored send {per_message:.2}, ephemeral {per_ephemeral:.2} ({N} each, sent one after another)"
    );
    // A background write (received positions, every 5 s) may fall in the window.
    assert!(after_ephemeral - start <= 2.0, "{per_ephemeral}");
    assert!(per_message >= 0.9, "{per_message}");
}

/// `device` sends `text` ephemerally as a read receipt the servers keep for absent devices.
async fn send_kept_receipt(device: &mut Device, group: &str, text: &str) -> String {
    send_ephemeral_keeping(device, group, text, true)
        .await
        .unwrap()
}

/// Decrypts an ephemeral message as `device`'s engine would a delivered one; its text.
fn decrypt_ephemeral(device: &mut Device, group: &str, event: &serde_json::Value) -> String {
    let m: parley_client_api::sync::MessageEvent = serde_json::from_value(serde_json::json!({
        "seq": 0, "sender": event["sender"], "kind": "application", "epoch": event["epoch"],
        "message": event["message"], "ts": event["ts"],
    }))
    .unwrap();
    let events = device.process(group, &m).unwrap();
    match events.as_slice() {
        [parley_mls::Event::ApplicationMessage { plaintext, .. }] => {
            String::from_utf8(plaintext.clone()).unwrap()
        }
        other => panic!("not one application message: {other:?}"),
    }
}

on_both_backends!(
    a_kept_read_receipt_reaches_an_absent_device_once_after_its_backlog_and_only_the_latest,
    |db: Db| async move {
        let server = TestServer::start(db, "keep.example", "").await;
        let store = Store::connect(&server.database, &StoreConfig::default())
            .await
            .unwrap();
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        alice.know(&["@bob:keep.example"]);
        bob.know(&["@alice:keep.example"]);
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &["@bob:keep.example"]).await.unwrap();
        bob.sync_all().await.unwrap();

        // Bob is away: alice writes more than an MLS receiver keeps skipped keys for, then
        // reads and sends three receipts.
        for i in 0..12 {
            alice.send_text(&group, &format!("t{i}")).await.unwrap();
        }
        let before = stored(&store, &mut alice).await;
        for i in 1..=3 {
            send_kept_receipt(&mut alice, &group, &format!("read {i}")).await;
        }
        assert_eq!(
            stored(&store, &mut alice).await,
            before,
            "receipts are not stored"
        );

        // Bob connects: his backlog first, then only the latest receipt, marked as kept.
        let url = format!(
            "{}/_parley/client/v1/ws",
            server.base_url.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let auth = serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
        ws.send(Message::Text(auth.to_string().into()))
            .await
            .unwrap();
        let mut kinds = Vec::new();
        let receipt = loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("open")
                .expect("a frame");
            let Message::Text(t) = frame else { continue };
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "ephemeral" {
                break f;
            }
            kinds.push(f["type"].as_str().unwrap_or_default().to_owned());
        };
        assert_eq!(
            kinds.iter().filter(|k| *k == "message").count(),
            12,
            "{kinds:?}"
        );
        assert_eq!(receipt["latest"], true);
        assert!(
            tokio::time::timeout(
                Duration::from_millis(1500),
                next_frame(&mut ws, "ephemeral")
            )
            .await
            .is_err(),
            "only the latest receipt is kept"
        );
        // Decryptable once the backlog is processed, as a client processes frames in order.
        bob.sync_all().await.unwrap();
        assert_eq!(bob.texts(&group).len(), 12);
        assert_eq!(decrypt_ephemeral(&mut bob, &group, &receipt), "read 3");
        drop(ws);

        // Taken once: a new connection gets nothing more.
        let mut again = socket(&server, &bob).await;
        assert!(tokio::time::timeout(
            Duration::from_millis(1000),
            next_frame(&mut again, "ephemeral")
        )
        .await
        .is_err());
        drop(again);
        tokio::time::sleep(Duration::from_millis(200)).await;

        // The long-poll path: a receipt kept while bob was away answers his next wait at once.
        let sent = send_kept_receipt(&mut alice, &group, "read 4").await;
        let started = std::time::Instant::now();
        let answer = bob.client.sync(bob.since.as_deref(), 20_000).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(answer.ephemeral.len(), 1);
        assert_eq!(answer.ephemeral[0].message, sent);
        assert!(answer.ephemeral[0].latest);
        assert_eq!(stored(&store, &mut alice).await, before);
        store.close();
    }
);
