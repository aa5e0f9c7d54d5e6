//! Two `parley serve` processes of one server on one PostgreSQL database: either accepts any
//! request, and what one changes the other sees (docs/operations.md#scaling).

mod common;

use std::time::{Duration, Instant};

use common::{assert_api_error, Db, TestServer};
use parley_client_api::Client;
use parley_sytest::device::{Device, PASSWORD};

/// Two processes of `name` on one fresh PostgreSQL database.
async fn two_processes(name: &str) -> (TestServer, TestServer) {
    let a = TestServer::start(Db::Postgres, name, common::RELAXED_LIMITS).await;
    let b = a.sibling();
    // Each process says it is there every 2 s; wake-ups go to the other once it has.
    tokio::time::sleep(parley_schema::cluster::HEARTBEAT + Duration::from_millis(500)).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_on_one_process_is_woken_by_a_message_accepted_on_the_other() {
    let (a, b) = two_processes("two.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:two.example"]);
    bob.know(&["@alice:two.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:two.example"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |_| true).await.unwrap();
    bob.sync_all().await.unwrap();

    // Bob long-polls process B for up to 20 s; Alice sends through process A.
    let since = bob.since.clone();
    let client = bob.client.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let answer = client.sync(since.as_deref(), 20_000).await.unwrap();
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send_text(&group, "across processes").await.unwrap();
    let (answer, waited) = poll.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "the long-poll was not woken: it waited {waited:?}"
    );
    bob.apply(answer).await.unwrap();
    assert_eq!(bob.texts(&group), ["across processes"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_process_refuses_the_token_on_the_other() {
    let (a, b) = two_processes("logout.example").await;
    let mut on_a = a.client();
    let session = on_a.register("carol", PASSWORD).await.unwrap();
    let mut on_b = Client::new(b.base_url.clone());
    on_b.set_access_token(Some(session.access_token.clone()));
    // B has read (and cached) the session.
    on_b.whoami().await.unwrap();
    on_a.logout().await.unwrap();
    // At once: while another process serves the database, sessions are read from it.
    assert_api_error(on_b.whoami().await, 401, "P_UNKNOWN_TOKEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_committed_on_one_process_is_enforced_by_the_other() {
    let (a, b) = two_processes("roster.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:roster.example"]);
    bob.know(&["@alice:roster.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:roster.example"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |_| true).await.unwrap();
    bob.sync_all().await.unwrap();
    // B checks (and caches) the roster with Bob in it.
    bob.send_text(&group, "hello").await.unwrap();
    alice.sync_all().await.unwrap();
    alice.remove(&group, &[bob.me()]).await.unwrap();
    // At once: B refuses Bob, whatever it had cached.
    let (_, message) = bob.encrypt(&group, "after removal").unwrap();
    let refused = bob.client.send(&group, "after-removal", &message).await;
    assert_api_error(refused, 403, "P_NOT_MEMBER");
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_through_both_processes_get_one_gap_free_order() {
    let (a, b) = two_processes("order.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:order.example"]);
    bob.know(&["@alice:order.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:order.example"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |_| true).await.unwrap();
    bob.sync_all().await.unwrap();
    // Each round, Alice (through A) and Bob (through B) send at the same time; each one's own
    // messages stay in the order they were encrypted, as MLS wants.
    let mut seqs = Vec::new();
    for i in 0..40 {
        let (_, a_msg) = alice.encrypt(&group, &format!("a{i}")).unwrap();
        let (_, b_msg) = bob.encrypt(&group, &format!("b{i}")).unwrap();
        let (ta, tb) = (format!("ta{i}"), format!("tb{i}"));
        let (x, y) = tokio::join!(
            alice.client.send(&group, &ta, &a_msg),
            bob.client.send(&group, &tb, &b_msg)
        );
        seqs.extend([x.unwrap(), y.unwrap()]);
    }
    seqs.sort_unstable();
    let first = seqs[0];
    let expected: Vec<u64> = (first..first + 80).collect();
    assert_eq!(seqs, expected, "seqs are not one gap-free order");
    // Each device reads them all, from either process.
    alice.sync_all().await.unwrap();
    bob.sync_all().await.unwrap();
    assert_eq!(alice.texts(&group).len(), 40);
    assert_eq!(bob.texts(&group).len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_queued_by_both_processes_reach_another_server_once_and_in_order() {
    let (pa, pb) = (common::free_port(), common::free_port());
    let config = common::federation_toml(&[("a.example", pa), ("b.example", pb)]);
    let a1 = TestServer::start_at(
        Db::Postgres,
        "a.example",
        &config,
        &format!("127.0.0.1:{pa}"),
    )
    .await;
    let a2 = a1.sibling();
    let b =
        TestServer::start_at(Db::Sqlite, "b.example", &config, &format!("127.0.0.1:{pb}")).await;
    tokio::time::sleep(parley_schema::cluster::HEARTBEAT + Duration::from_millis(500)).await;
    let mut alice = Device::register(&a1, "alice").await.unwrap();
    let mut carol = Device::register(&a2, "carol").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    let (al, ca, bo) = ("@alice:a.example", "@carol:a.example", "@bob:b.example");
    alice.know(&[ca, bo]);
    carol.know(&[al, bo]);
    bob.know(&[al, ca]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &[ca, bo]).await.unwrap();
    carol
        .sync_until(10, "the Welcome", |d| d.engine.group_ids().len() == 1)
        .await
        .unwrap();
    bob.sync_until(30, "the Welcome", |d| d.engine.group_ids().len() == 1)
        .await
        .unwrap();
    // Alice's messages are queued for b.example by process A1, Carol's by A2.
    let mut expected = Vec::new();
    for i in 0..10 {
        alice.send_text(&group, &format!("a{i}")).await.unwrap();
        carol.send_text(&group, &format!("c{i}")).await.unwrap();
        expected.extend([format!("a{i}"), format!("c{i}")]);
    }
    bob.sync_until(30, "every message", |d| d.texts(&group).len() >= 20)
        .await
        .unwrap();
    // In the hub's order, each once (Bob's engine refuses a replayed message).
    assert_eq!(bob.texts(&group), expected);
    bob.sync_all().await.unwrap();
    assert_eq!(bob.texts(&group).len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_sent_through_one_process_arrives_on_a_websocket_held_by_the_other() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (a, b) = two_processes("ws.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:ws.example"]);
    bob.know(&["@alice:ws.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:ws.example"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |_| true).await.unwrap();
    bob.sync_all().await.unwrap();
    let ws_url = format!(
        "{}/_parley/client/v1/ws",
        b.base_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let auth =
        serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send_text(&group, "pushed across").await.unwrap();
    let message = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame from B within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame {
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "message" {
                break f;
            }
        }
    };
    let m: parley_client_api::sync::MessageEvent = serde_json::from_value(message).unwrap();
    bob.process(&group, &m).unwrap();
    assert_eq!(bob.texts(&group), ["pushed across"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_twenty_commits_for_one_epoch_through_both_processes_exactly_one_is_accepted() {
    let (a, b) = two_processes("epoch.example").await;
    let mut members = Vec::new();
    for i in 0..20 {
        let server = if i % 2 == 0 { &a } else { &b };
        members.push(Device::register(server, &format!("m{i}")).await.unwrap());
    }
    let ids: Vec<String> = (1..20).map(|i| format!("@m{i}:epoch.example")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let group = members[0].create_group().await.unwrap();
    members[0].know(&refs);
    members[0].add(&group, &refs).await.unwrap();
    let everyone: Vec<String> = (0..20).map(|i| format!("@m{i}:epoch.example")).collect();
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    for m in members.iter_mut().skip(1) {
        m.know(&everyone);
        m.sync_until(10, "the Welcome", |d| d.engine.group_ids().len() == 1)
            .await
            .unwrap();
    }
    // Every member commits a self-update for the same epoch, all at once.
    let mut racing = Vec::new();
    for m in members.iter_mut() {
        let bundle = m.engine.self_update(&group).unwrap();
        let request = parley_sytest::device::bundle_request(&bundle);
        let (client, group) = (m.client.clone(), group.clone());
        racing.push(tokio::spawn(async move {
            client.commit(&group, &request).await
        }));
    }
    let mut accepted = 0;
    for r in racing {
        match r.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e.errcode(), Some("P_STALE_EPOCH"), "{e:?}"),
        }
    }
    assert_eq!(accepted, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_queued_by_both_processes_arrive_once_and_in_order_though_one_is_killed() {
    let (pa, pb) = (common::free_port(), common::free_port());
    // A dead process's claim on a destination lapses after 2 s.
    let config = common::federation_toml(&[("a.example", pa), ("b.example", pb)])
        + "outbox_lease_ms = 2000\n";
    let mut a1 = TestServer::start_at(
        Db::Postgres,
        "a.example",
        &config,
        &format!("127.0.0.1:{pa}"),
    )
    .await;
    let a2 = a1.sibling();
    let mut b =
        TestServer::start_at(Db::Sqlite, "b.example", &config, &format!("127.0.0.1:{pb}")).await;
    tokio::time::sleep(parley_schema::cluster::HEARTBEAT + Duration::from_millis(500)).await;
    let mut alice = Device::register(&a1, "alice").await.unwrap();
    let mut carol = Device::register(&a2, "carol").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    let (al, ca, bo) = ("@alice:a.example", "@carol:a.example", "@bob:b.example");
    alice.know(&[ca, bo]);
    carol.know(&[al, bo]);
    bob.know(&[al, ca]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &[ca, bo]).await.unwrap();
    carol
        .sync_until(10, "the Welcome", |d| d.engine.group_ids().len() == 1)
        .await
        .unwrap();
    bob.sync_until(30, "the Welcome", |d| d.engine.group_ids().len() == 1)
        .await
        .unwrap();

    // b.example goes down; both processes queue events for it, and keep retrying.
    assert!(b.stop());
    let mut expected = Vec::new();
    for i in 0..10 {
        alice.send_text(&group, &format!("a{i}")).await.unwrap();
        carol.send_text(&group, &format!("c{i}")).await.unwrap();
        expected.extend([format!("a{i}"), format!("c{i}")]);
    }
    // A1 crashes while holding or waiting for the destination, and comes back later.
    a1.kill();
    b.start_again();
    tokio::time::sleep(Duration::from_secs(1)).await;
    a1.start_again();
    for i in 10..15 {
        carol.send_text(&group, &format!("c{i}")).await.unwrap();
        expected.push(format!("c{i}"));
    }
    bob.sync_until(60, "every message", |d| d.texts(&group).len() >= 25)
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    // Each once (Bob's engine refuses a replay), in the hub's order.
    assert_eq!(bob.texts(&group), expected);
}

/// Collects the seqs of `want` message frames of `group` from a WebSocket of `base_url`
/// opened for `token` from `since`.
async fn socket_seqs(
    base_url: String,
    token: String,
    since: Option<String>,
    group: String,
    want: usize,
) -> Vec<u64> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws_url = format!(
        "{}/_parley/client/v1/ws",
        base_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let auth = serde_json::json!({"access_token": token, "since": since});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < want {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} messages within 20 s", seqs.len()))
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame {
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "message" && f["group_id"] == group.as_str() {
                seqs.push(f["seq"].as_u64().unwrap());
            }
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_on_both_processes_get_every_message_of_concurrent_senders_once_in_seq_order() {
    let (a, b) = two_processes("fill.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    let mut carol = Device::register(&a, "carol").await.unwrap();
    let everyone = [
        "@alice:fill.example",
        "@bob:fill.example",
        "@carol:fill.example",
    ];
    for d in [&mut alice, &mut bob, &mut carol] {
        d.know(&everyone);
    }
    let group = alice.create_group().await.unwrap();
    alice
        .add(&group, &["@bob:fill.example", "@carol:fill.example"])
        .await
        .unwrap();
    for d in [&mut bob, &mut carol] {
        d.sync_until(10, "the Welcome", |d| d.engine.group_ids().len() == 1)
            .await
            .unwrap();
        d.sync_all().await.unwrap();
    }
    // Carol holds a socket on each process while Alice (through A) and Bob (through B) send.
    let token = carol.client.access_token().unwrap().to_owned();
    let sockets: Vec<_> = [a.base_url.clone(), b.base_url.clone()]
        .into_iter()
        .map(|url| {
            tokio::spawn(socket_seqs(
                url,
                token.clone(),
                carol.since.clone(),
                group.clone(),
                120,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..60 {
        let (_, a_msg) = alice.encrypt(&group, &format!("a{i}")).unwrap();
        let (_, b_msg) = bob.encrypt(&group, &format!("b{i}")).unwrap();
        let (ta, tb) = (format!("ta{i}"), format!("tb{i}"));
        let (x, y) = tokio::join!(
            alice.client.send(&group, &ta, &a_msg),
            bob.client.send(&group, &tb, &b_msg)
        );
        x.unwrap();
        y.unwrap();
    }
    for socket in sockets {
        let seqs = socket.await.unwrap();
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + 120).collect::<Vec<u64>>(),
            "a socket missed, repeated or reordered messages"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ephemeral_message_sent_through_one_process_reaches_a_websocket_held_by_the_other() {
    use base64::Engine;
    use futures::{SinkExt, StreamExt};
    use parley_client_api::groups::{SendEphemeral, SendRequest};
    use parley_client_api::params::GroupTxnPath;
    use tokio_tungstenite::tungstenite::Message;
    let (a, b) = two_processes("eph.example").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    alice.know(&["@bob:eph.example"]);
    bob.know(&["@alice:eph.example"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:eph.example"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    let ws_url = format!(
        "{}/_parley/client/v1/ws",
        b.base_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let auth =
        serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (txn, bytes) = alice.encrypt(&group, "typing").unwrap();
    let message = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let path = GroupTxnPath {
        group_id: group.parse().unwrap(),
        txn_id: txn.parse().unwrap(),
    };
    alice
        .client
        .call::<SendEphemeral>(&path, &SendRequest::new(message.clone()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no ephemeral frame from B within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame {
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "ephemeral" {
                assert_eq!(f["message"], message.as_str());
                break;
            }
        }
    }
}
