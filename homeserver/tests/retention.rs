//! The retention jobs run on the server's own schedule: with a 1 s interval, expired key
//! packages, old `txn_id`s and old inbound transaction answers disappear from the database of a
//! running `parley serve` without anything asking for it; what is still valid stays.

mod common;

use std::time::{Duration, Instant};

use common::{federation_toml, free_port, Db, TestServer};
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
        let (pa, pb) = (free_port(), free_port());
        let config = format!(
            "{}\n{RETENTION}",
            federation_toml(&[("a.example", pa), ("b.example", pb)])
        );
        let a = TestServer::start_at(db, "a.example", &config, &format!("127.0.0.1:{pa}")).await;
        let b = TestServer::start_at(db, "b.example", &config, &format!("127.0.0.1:{pb}")).await;
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
