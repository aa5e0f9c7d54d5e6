//! Fork recovery across two servers (docs/protocol.md#fork-recovery): bob on b restores his
//! device's MLS state from an old export, so his state of alice's group (hosted on a) is
//! behind the group and can never catch up; the next message tells his client, which reports
//! it; the hub writes a `member_forked` notice; alice's client re-adds bob's device with a
//! fresh key package; bob joins again from the Welcome and reads every message sent after
//! that point, from alice and from carol. Real servers, native clients.

mod common;

use common::{federated_pair, Db};
use parley_mls::{DeviceRef, Engine};
use parley_sytest::device::Device;

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:a.example";

on_both_backends!(
    a_device_restored_from_an_old_export_is_readded_and_loses_nothing_after_recovery,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut carol = Device::register(&a, "carol").await.unwrap();
        for d in [&mut alice, &mut bob, &mut carol] {
            d.know(&[ALICE, BOB, CAROL]);
        }
        let group = alice.create_group_with_roles().await.unwrap();
        alice.add(&group, &[BOB, CAROL]).await.unwrap();
        for d in [&mut bob, &mut carol] {
            d.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
                .await
                .unwrap();
        }
        let old = bob.engine.export_state().unwrap();

        // The group moves on; bob follows, then his device is restored from the old export
        // (its stream position stays current: the commits are never delivered again).
        alice.self_update(&group).await.unwrap();
        alice.send_text(&group, "before the restore").await.unwrap();
        bob.sync_until(20, "the message", |d| {
            d.texts(&group).iter().any(|t| t == "before the restore")
        })
        .await
        .unwrap();
        bob.engine = Engine::import_state(&old).unwrap();
        assert!(bob.engine.epoch(&group).unwrap() < alice.engine.epoch(&group).unwrap());

        // The next message is of an epoch bob never reached: his client reports the fork.
        alice.send_text(&group, "unreadable for bob").await.unwrap();
        bob.sync_until(20, "the fork", |d| d.forked.contains(&group))
            .await
            .unwrap();

        // The hub asks the members; alice re-adds bob's device.
        let bob_device = DeviceRef::new(BOB, &bob.device_id).unwrap();
        alice
            .sync_until(20, "the member_forked notice", |d| {
                d.notices.iter().any(|(g, n)| {
                    g == &group
                        && n["type"] == "member_forked"
                        && n["device_id"] == bob_device.device_id.as_str()
                })
            })
            .await
            .unwrap();
        alice.readd_forked(&group, &bob_device).await.unwrap();
        bob.sync_until(20, "the re-add", |d| !d.forked.contains(&group))
            .await
            .unwrap();
        assert_eq!(
            bob.engine.epoch_authenticator(&group).unwrap(),
            alice.engine.epoch_authenticator(&group).unwrap()
        );

        // Nothing sent after the recovery point is lost.
        carol
            .sync_until(20, "the re-add", |d| {
                d.engine.epoch(&group).ok() == alice.engine.epoch(&group).ok()
            })
            .await
            .unwrap();
        alice.send_text(&group, "after recovery 1").await.unwrap();
        carol.send_text(&group, "after recovery 2").await.unwrap();
        alice.send_text(&group, "after recovery 3").await.unwrap();
        bob.sync_until(20, "every message after recovery", |d| {
            d.texts(&group).iter().any(|t| t == "after recovery 3")
        })
        .await
        .unwrap();
        let texts = bob.texts(&group);
        let after: Vec<&String> = texts.iter().filter(|t| t.starts_with("after")).collect();
        assert_eq!(
            after,
            ["after recovery 1", "after recovery 2", "after recovery 3"]
        );
        bob.send_text(&group, "bob is back").await.unwrap();
        alice
            .sync_until(20, "bob's message", |d| {
                d.texts(&group).iter().any(|t| t == "bob is back")
            })
            .await
            .unwrap();
    }
);
