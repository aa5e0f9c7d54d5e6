//! Disappearing messages across two servers (docs/protocol.md#disappearing-messages): alice
//! (admin, on a) sets a 2 s timer; carol (a) and dave (b), online, get the message at once;
//! bob (b) syncs only after it expired and never gets it, while he gets everything after it;
//! the ciphertext is wiped on both servers; a member who is no admin cannot set the timer.
//! Real servers, native clients.

mod common;

use std::time::{Duration, Instant};

use common::{federated_pair, Db};
use parley_schema::{Store, StoreConfig};
use parley_sytest::device::Device;

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:a.example";
const DAVE: &str = "@dave:b.example";

/// Polls until the stored ciphertext of `group`'s message `seq` is wiped, for at most 10 s.
async fn wait_wiped(store: &Store, group: &str, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = store.federation().group_message(group, seq).await.unwrap();
        let row = row.expect("the row stays: the log is gap-free");
        assert!(row.expires_ts.is_some());
        if row.message.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "seq {seq} was not wiped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends!(
    an_expired_message_is_never_delivered_and_its_ciphertext_is_wiped_on_both_servers,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "[retention]\nexpiry_sweep_ms = 200\n").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut carol = Device::register(&a, "carol").await.unwrap();
        let mut dave = Device::register(&b, "dave").await.unwrap();
        for d in [&mut alice, &mut bob, &mut carol, &mut dave] {
            d.know(&[ALICE, BOB, CAROL, DAVE]);
        }
        let group = alice.create_group_with_roles().await.unwrap();
        alice.add(&group, &[BOB, CAROL, DAVE]).await.unwrap();
        for d in [&mut bob, &mut carol, &mut dave] {
            d.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
                .await
                .unwrap();
        }

        // Carol is no admin: her engine refuses to set the timer.
        assert!(carol.engine.set_disappearing(&group, Some(2000)).is_err());
        let on = alice.engine.set_disappearing(&group, Some(2000)).unwrap();
        alice.submit(&group, on).await.unwrap();
        for d in [&mut bob, &mut carol, &mut dave] {
            d.sync_until(20, "the timer", |d| {
                d.engine.disappearing_after_ms(&group).ok().flatten() == Some(2000)
            })
            .await
            .unwrap();
        }

        // Online members get the message before it expires.
        let sent = Instant::now();
        let seq = alice.send_text(&group, "vanishing").await.unwrap() as i64;
        for d in [&mut carol, &mut dave] {
            d.sync_until(20, "the message", |d| {
                d.texts(&group).iter().any(|t| t == "vanishing")
            })
            .await
            .unwrap();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "too slow to show delivery before expiry"
        );

        // Bob comes back after it expired: never delivered, from his own server (b).
        tokio::time::sleep(Duration::from_millis(2500).saturating_sub(sent.elapsed())).await;
        let off = alice.engine.set_disappearing(&group, None).unwrap();
        alice.submit(&group, off).await.unwrap();
        alice.send_text(&group, "stays").await.unwrap();
        bob.sync_until(20, "the message after", |d| {
            d.texts(&group).iter().any(|t| t == "stays")
        })
        .await
        .unwrap();
        assert!(!bob.texts(&group).iter().any(|t| t == "vanishing"));
        assert_eq!(bob.engine.disappearing_after_ms(&group).unwrap(), None);

        // The ciphertext is wiped on the hub and on the member server; the rows stay.
        for server in [&a, &b] {
            let store = Store::connect(&server.database, &StoreConfig::default())
                .await
                .unwrap();
            wait_wiped(&store, &group, seq).await;
        }
        // Carol, who has it, syncing again gets nothing back.
        carol.sync_all().await.unwrap();
        assert_eq!(
            carol
                .texts(&group)
                .iter()
                .filter(|t| *t == "vanishing")
                .count(),
            1
        );
    }
);

/// The member server (b) is down while a message expires; when it is back, the hub's queue
/// delivers the message to it: b keeps the row (its log stays gap-free) but not the
/// ciphertext, and never hands the message to bob. Sweeps are an hour apart here, so the
/// wiping is b's own on arrival.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_expired_before_reaching_a_member_server_is_stored_without_ciphertext() {
    let (a, mut b) = federated_pair(Db::Sqlite, "[retention]\nexpiry_sweep_ms = 3600000\n").await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    for d in [&mut alice, &mut bob] {
        d.know(&[ALICE, BOB]);
    }
    let group = alice.create_group_with_roles().await.unwrap();
    alice.add(&group, &[BOB]).await.unwrap();
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await
        .unwrap();
    let on = alice.engine.set_disappearing(&group, Some(1000)).unwrap();
    alice.submit(&group, on).await.unwrap();
    bob.sync_until(20, "the timer", |d| {
        d.engine.disappearing_after_ms(&group).ok().flatten() == Some(1000)
    })
    .await
    .unwrap();

    assert!(b.stop());
    let seq = alice.send_text(&group, "expired in transit").await.unwrap() as i64;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.start_again();
    alice.send_text(&group, "fresh").await.unwrap();
    bob.sync_until(20, "the fresh message", |d| {
        d.texts(&group).iter().any(|t| t == "fresh")
    })
    .await
    .unwrap();
    assert!(!bob.texts(&group).iter().any(|t| t == "expired in transit"));
    let store = Store::connect(&b.database, &StoreConfig::default())
        .await
        .unwrap();
    let row = store
        .federation()
        .group_message(&group, seq)
        .await
        .unwrap()
        .expect("the row is stored");
    assert!(row.message.is_empty(), "b kept the ciphertext");
}
