//! Group roles across two servers (docs/protocol.md#group-roles): the hub on a refuses a
//! non-admin's removal submitted through b with 403 `P_NOT_ADMIN`, the non-admin's engine
//! refuses to build it, and the roles an admin's commit sets are tracked by the hub (across
//! its restart) and every engine. Real servers, native MLS clients.

mod common;

use common::{assert_api_error, federated_pair, Db};
use parley_client_api::groups::DeviceRef as WireDevice;
use parley_mls::{DeviceRef, MlsError};
use parley_sytest::device::{bundle_request, Device};

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:a.example";

fn wire(d: &Device) -> WireDevice {
    WireDevice {
        user_id: d.user_id.clone(),
        device_id: d.device_id.clone(),
    }
}

fn device_ref(d: &Device) -> DeviceRef {
    DeviceRef::new(&d.user_id, &d.device_id).unwrap()
}

/// Alice's group (made by `create`) with bob (on b) and carol (on a) joined.
async fn alice_bob_and_carol(
    alice: &mut Device,
    bob: &mut Device,
    carol: &mut Device,
    roles_in_engines: bool,
) -> String {
    let group = if roles_in_engines {
        alice.create_group_with_roles().await.unwrap()
    } else {
        alice.create_group_with_roles_at_hub().await.unwrap()
    };
    alice.add(&group, &[BOB, CAROL]).await.unwrap();
    for d in [bob, carol] {
        d.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
    }
    group
}

on_both_backends!(
    a_non_admins_removal_through_another_server_is_refused_and_a_promoted_member_may_remove,
    |db: Db| async move {
        let (mut a, b) = federated_pair(db, "").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut carol = Device::register(&a, "carol").await.unwrap();
        for d in [&mut alice, &mut bob, &mut carol] {
            d.know(&[ALICE, BOB, CAROL]);
        }

        // A client that ignores roles (its group context has none): the hub alone refuses.
        let unguarded = alice_bob_and_carol(&mut alice, &mut bob, &mut carol, false).await;
        let removal = bob
            .engine
            .remove_members(&unguarded, &[device_ref(&carol)])
            .unwrap();
        let refused = assert_api_error(
            bob.client
                .commit(&unguarded, &bundle_request(&removal))
                .await,
            403,
            "P_NOT_ADMIN",
        );
        assert!(refused.error.contains(CAROL), "{}", refused.error);
        bob.engine.discard_pending_commit(&unguarded).unwrap();

        // With roles in every engine, bob's engine refuses to build it at all.
        let group = alice_bob_and_carol(&mut alice, &mut bob, &mut carol, true).await;
        for d in [&alice, &bob, &carol] {
            assert_eq!(
                d.engine.roles(&group).unwrap().unwrap().admins,
                [ALICE.to_owned()]
            );
        }
        assert!(matches!(
            bob.engine.remove_members(&group, &[device_ref(&carol)]),
            Err(MlsError::NotAdmin(_))
        ));

        // Promoted, bob removes carol; the hub tracked the promotion, across its restart.
        alice.set_admins(&group, &[ALICE, BOB]).await.unwrap();
        let epoch = alice.engine.epoch(&group).unwrap();
        bob.sync_until(20, "his promotion", |d| {
            d.engine.epoch(&group).unwrap_or(0) == epoch
        })
        .await
        .unwrap();
        a.restart();
        bob.remove(&group, &[wire(&carol)]).await.unwrap();
        carol
            .sync_until(20, "her removal", |d| {
                !d.engine.is_active(&group).unwrap_or(true)
            })
            .await
            .unwrap();
        alice.sync_all().await.unwrap();
        bob.send_text(&group, "just us").await.unwrap();
        alice
            .sync_until(20, "bob's text", |d| {
                d.texts(&group).contains(&"just us".to_owned())
            })
            .await
            .unwrap();
    }
);
