//! The retention jobs run on the server's own schedule: with a 1 s interval, expired key
//! packages, old `txn_id`s and old inbound transaction answers disappear from the database of a
//! running `parley serve` without anything asking for it; what is still valid stays.

mod common;

use std::time::{Duration, Instant};

use common::{federated_pair, make_admin, Db, TestServer};
use parley_client_api::admin::{RetentionResponse, RunRetention, RunRetentionRequest};
use parley_mls::EngineConfig;
use parley_schema::{RetainedRows, Store, StoreConfig};
use parley_sytest::device::{now_ms, Device, PASSWORD};

/// Retention every second; `txn_id`s and inbound transactions kept for 5 s.
const RETENTION: &str = "[retention]\ninterval_ms = 1000\ntransactions_ms = 5000\n";

/// Registers `name` on `server` with packages that expire `lifetime_secs` from now (two
/// ordinary ones and a last resort).
async fn register_short_lived(server: &TestServer, name: &str, lifetime_secs: u64) -> Device {
    let mut client = server.client();
    let s = client.register(name, PASSWORD).await.expect("register");
    let config = EngineConfig {
        key_package_lifetime_secs: lifetime_secs,
        ..EngineConfig::default()
    };
    // The set-up checks the upload answered two packages and a last resort.
    Device::setup_configured(client, s.user_id, s.device_id, 2, true, config)
        .await
        .expect("short-lived device")
}

/// Polls `store` until `done` holds for its rows, for at most `secs` seconds; the last rows.
async fn rows_until(
    store: &Store,
    secs: u64,
    done: impl Fn(&RetainedRows) -> bool,
) -> RetainedRows {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let rows = store.retention().retained_rows().await.expect("count rows");
        if done(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

on_both_backends!(
    expired_key_packages_and_old_transactions_are_purged_by_the_server_on_its_own_schedule,
    |db: Db| async move {
        let (a, b) = federated_pair(db, RETENTION).await;
        // The test reads the servers' databases while they run (SQLite allows a second
        // process; nothing here writes).
        let store_a = Store::connect(&a.database, &StoreConfig::default())
            .await
            .expect("open a's database");
        let store_b = Store::connect(&b.database, &StoreConfig::default())
            .await
            .expect("open b's database");
        // Alice's three packages expire in 5 s; carol's (the default 30 days) do not.
        let carol = Device::register(&a, "carol").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut alice = register_short_lived(&a, "alice", 5).await;
        for d in [&mut alice, &mut bob] {
            d.know(&["@alice:a.example", "@bob:b.example"]);
        }
        // A group on a with bob on b: a's send records a txn_id, b answers a's transactions.
        let group = alice.create_group().await.unwrap();
        alice
            .add(&group, &["@bob:b.example"])
            .await
            .expect("add bob");
        let out = alice
            .engine
            .encrypt(&group, b"remembered for a while", now_ms())
            .expect("encrypt");
        let first = alice
            .client
            .send(&group, &out.msg_id, &out.message)
            .await
            .expect("send");
        let again = alice
            .client
            .send(&group, &out.msg_id, &out.message)
            .await
            .expect("retry");
        assert_eq!(
            again, first,
            "a retry within the retention gets the first seq"
        );
        let before_a = store_a
            .retention()
            .retained_rows()
            .await
            .expect("count rows");
        assert_eq!(
            (before_a.key_packages, before_a.transaction_ids),
            (3 + 6, 1),
            "alice's 3 short-lived packages, carol's 6, one txn_id: {before_a:?}"
        );
        for _ in 0..150 {
            bob.sync(200).await.unwrap();
            if bob.texts(&group).len() == 1 {
                break;
            }
        }
        assert_eq!(bob.texts(&group), ["remembered for a while"]);
        let before_b = store_b
            .retention()
            .retained_rows()
            .await
            .expect("count rows");
        assert!(
            before_b.inbound_transactions >= 1,
            "b answered no transaction: {before_b:?}"
        );

        // Nothing but the servers' own jobs removes them.
        let after_a = rows_until(&store_a, 20, |r| {
            r.key_packages == 6 && r.transaction_ids == 0
        })
        .await;
        assert_eq!(
            (after_a.key_packages, after_a.transaction_ids),
            (6, 0),
            "expired packages or the old txn_id still stored on a: {after_a:?}"
        );
        let after_b = rows_until(&store_b, 20, |r| r.inbound_transactions == 0).await;
        assert_eq!(
            after_b.inbound_transactions, 0,
            "old inbound transactions still stored on b: {after_b:?}"
        );
        // Carol's valid packages were kept, and the forgotten txn_id is a new send now.
        let carol_count = carol.client.key_count().await.expect("count");
        assert_eq!((carol_count.count, carol_count.last_resort), (5, true));
        let later = alice
            .client
            .send(&group, &out.msg_id, &out.message)
            .await
            .expect("send with a forgotten txn_id");
        assert_eq!(later, first + 1, "a forgotten txn_id is a new send");
        store_a.close();
        store_b.close();
    }
);

/// A client of `server`'s admin `root` (registered, then made admin by the CLI).
async fn admin_of(server: &TestServer) -> parley_client_api::Client {
    let mut client = server.client();
    let s = client
        .register("root", PASSWORD)
        .await
        .expect("register root");
    let out = make_admin(server, &s.user_id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    client
}

/// A server on `db` with its database open and its admin's client.
async fn served_with_admin(db: Db, name: &str) -> (TestServer, Store, parley_client_api::Client) {
    let server = TestServer::start(db, name, "").await;
    let store = Store::connect(&server.database, &StoreConfig::default())
        .await
        .expect("open the database");
    let admin = admin_of(&server).await;
    (server, store, admin)
}

/// Runs retention on demand until it deletes something (what a device said is applied
/// asynchronously), for at most 10 s; how many it deleted.
async fn retention_until_some(admin: &parley_client_api::Client, ms: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deleted = run_retention(admin, ms).await.messages;
        if deleted > 0 || Instant::now() > deadline {
            return deleted;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs retention on demand, deleting delivered messages older than `ms`.
async fn run_retention(admin: &parley_client_api::Client, ms: u64) -> RetentionResponse {
    let req = RunRetentionRequest {
        messages_older_than_ms: Some(ms),
    };
    admin
        .call::<RunRetention>(&(), &req)
        .await
        .expect("run retention")
}

/// Messages stored for `group` in `store`, by seq.
async fn stored_seqs(store: &Store, group: &str) -> Vec<i64> {
    store
        .hub_log()
        .group_messages_since(group, 0, 10_000)
        .await
        .expect("read the log")
        .into_iter()
        .map(|m| m.seq)
        .collect()
}

on_both_backends!(
    delivered_messages_are_deleted_on_demand_once_every_member_device_said_it_received_them,
    |db: Db| async move {
        let (server, store, admin) = served_with_admin(db, "keep.example").await;
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        let mut carol = Device::register(&server, "carol").await.unwrap();
        let everyone = [
            "@alice:keep.example",
            "@bob:keep.example",
            "@carol:keep.example",
        ];
        for d in [&mut alice, &mut bob, &mut carol] {
            d.know(&everyone);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &["@bob:keep.example"]).await.unwrap();
        alice.add(&group, &["@carol:keep.example"]).await.unwrap();
        for i in 0..20 {
            alice.send_text(&group, &format!("m{i}")).await.unwrap();
        }
        alice.sync_all().await.unwrap();
        bob.sync_all().await.unwrap();
        assert_eq!(bob.texts(&group).len(), 20);
        assert_eq!(stored_seqs(&store, &group).await.len(), 22);

        // Carol has not synced: only the commits before she joined may go.
        let first = run_retention(&admin, 0).await;
        assert_eq!(first.messages, 2, "{first:?}");
        assert_eq!(
            stored_seqs(&store, &group).await,
            (3..=22).collect::<Vec<_>>()
        );

        // Carol receives everything (her last sync's `since` says so): the rest goes.
        carol.sync_all().await.unwrap();
        assert_eq!(carol.texts(&group).len(), 20);
        let second = run_retention(&admin, 0).await;
        assert_eq!(second.messages, 20, "{second:?}");
        assert!(stored_seqs(&store, &group).await.is_empty());

        // A period not yet reached deletes nothing new, and the group goes on.
        alice.send_text(&group, "after").await.unwrap();
        bob.sync_until(10, "the message after the prune", |d| {
            d.texts(&group).len() == 21
        })
        .await
        .unwrap();
        assert_eq!(run_retention(&admin, 3_600_000).await.messages, 0);
        assert_eq!(stored_seqs(&store, &group).await, vec![23]);
        store.close();
    }
);

on_both_backends!(
    a_websocket_received_frame_counts_and_one_beyond_what_the_socket_sent_counts_only_that_far,
    |db: Db| async move {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (server, store, admin) = served_with_admin(db, "ws.example").await;
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&["@alice:ws.example", "@bob:ws.example"]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &["@bob:ws.example"]).await.unwrap();
        bob.sync_all().await.unwrap(); // joins; his `since` is past the commit
        for i in 0..3 {
            alice.send_text(&group, &format!("m{i}")).await.unwrap();
        }
        alice.sync_all().await.unwrap();
        let ws_url = format!(
            "{}/_parley/client/v1/ws",
            server.base_url.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let auth = serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
        ws.send(Message::Text(auth.to_string().into()))
            .await
            .unwrap();
        let mut tokens = Vec::new();
        while tokens.len() < 3 {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("a frame");
            if let Message::Text(t) = frame {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "message" {
                    tokens.push(v["next_batch"].as_str().unwrap().to_owned());
                }
            }
        }
        // Nothing said yet for the three: only the commit goes.
        assert_eq!(run_retention(&admin, 0).await.messages, 1);
        // Received up to the first; then a token far past anything sent counts as the last
        // one the socket sent.
        let ack =
            |token: &str| Message::Text(serde_json::json!({"received": token}).to_string().into());
        ws.send(ack(&tokens[0])).await.unwrap();
        let deleted = retention_until_some(&admin, 0).await;
        assert_eq!(deleted, 1, "the first message goes once received");
        // A token far past anything sent counts only as far as the socket had sent...
        ws.send(ack("s999999999")).await.unwrap();
        let deleted = retention_until_some(&admin, 0).await;
        assert_eq!(deleted, 2, "the other two pushed messages");
        // ... so a message pushed later is not acknowledged by it.
        let later = alice.send_text(&group, "later").await.unwrap() as i64;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("the later message pushed")
                .expect("open")
                .expect("a frame");
            if matches!(&frame, Message::Text(t) if t.as_str().contains("\"message\"")) {
                break;
            }
        }
        alice.sync_all().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(run_retention(&admin, 0).await.messages, 0);
        assert_eq!(stored_seqs(&store, &group).await, vec![later]);
        store.close();
    }
);

/// Server b's SQLite files, copied while it is stopped.
fn copy_database(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("parley.db") {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_server_restored_from_an_old_backup_skips_what_its_hub_deleted_and_stores_on() {
    let (a, mut b) = federated_pair(Db::Sqlite, "").await;
    let admin = admin_of(&a).await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    for d in [&mut alice, &mut bob] {
        d.know(&["@alice:a.example", "@bob:b.example"]);
    }
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:b.example"]).await.unwrap();
    alice.send_text(&group, "before the backup").await.unwrap();
    bob.sync_until(20, "the first message", |d| d.texts(&group).len() == 1)
        .await
        .unwrap();

    // b's backup, taken stopped; then b goes on and receives five more.
    assert!(b.stop(), "b stops cleanly");
    let backup = tempfile::tempdir().unwrap();
    copy_database(b.data_dir(), backup.path());
    b.start_again();
    for i in 0..5 {
        alice
            .send_text(&group, &format!("after {i}"))
            .await
            .unwrap();
    }
    bob.sync_until(20, "five more", |d| d.texts(&group).len() == 6)
        .await
        .unwrap();
    alice.sync_all().await.unwrap();

    // The hub's copy of everything delivered goes (b was sent all of it; alice received it).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut deleted = 0;
    while deleted < 7 && Instant::now() < deadline {
        deleted += run_retention(&admin, 0).await.messages;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(deleted, 7, "the commit and six messages");

    // b is restored from its backup: seqs 3..=7 are gone everywhere. It catches up past them,
    // and stores the next message.
    assert!(b.stop());
    copy_database(backup.path(), b.data_dir());
    let _ = std::fs::remove_file(b.data_dir().join("parley.db-wal"));
    b.start_again();
    let last = alice.send_text(&group, "after the restore").await.unwrap() as i64;
    let store_b = Store::connect(&b.database, &StoreConfig::default())
        .await
        .expect("open b's database");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seqs = Vec::new();
    while Instant::now() < deadline {
        seqs = stored_seqs(&store_b, &group).await;
        if seqs.last() == Some(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seqs,
        vec![1, 2, last],
        "b kept what it had, skipped the deleted, stored the new"
    );
    store_b.close();
}
