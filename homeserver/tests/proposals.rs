//! Standalone proposals end to end through the hub (issue 18 item 7): each of Add, Update and
//! Remove is proposed by one member with `PUT /send`, relayed by the hub like any message,
//! and committed by reference (the commit lists the proposal's hash, not its content) by
//! another member, on another server where it applies. Real servers, native MLS clients.

mod common;

use common::{assert_api_error, federated_pair, Db};
use parley_mls::Event;
use parley_sytest::device::{bundle_request, Device};

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:a.example";

/// Sends a proposal as `device`; its seq.
async fn propose(device: &mut Device, group: &str, txn: &str, proposal: &[u8]) -> u64 {
    device
        .client
        .send(group, txn, proposal)
        .await
        .unwrap_or_else(|e| panic!("{} could not send its proposal: {e}", device.user_id))
}

/// Syncs `device` until its engine holds the group's proposals and commits so far.
async fn catch_up(device: &mut Device) -> Vec<Event> {
    device.sync_all().await.unwrap()
}

on_both_backends!(
    add_update_and_remove_proposals_are_committed_by_reference_by_another_member,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut carol = Device::register(&a, "carol").await.unwrap();
        for d in [&mut alice, &mut bob, &mut carol] {
            d.know(&[ALICE, BOB, CAROL]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &[BOB]).await.unwrap();
        bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();

        // 1. Bob (on b) proposes adding carol; alice commits it by reference.
        let carol_kp = bob.claim(&[CAROL]).await.unwrap().remove(0);
        bob.learn(&[CAROL]).await.unwrap();
        let add = bob
            .engine
            .propose_add(&group, &carol_kp, &bob.keys)
            .unwrap();
        propose(&mut bob, &group, "propose-add", &add).await;
        // A member checks an Add's credential against the published keys before storing it.
        alice.learn(&[CAROL]).await.unwrap();
        alice
            .sync_until(20, "bob's Add proposal", |d| {
                d.engine.pending_proposal_count(&group).unwrap_or(0) == 1
            })
            .await
            .unwrap();
        let bundle = alice.engine.commit_pending_proposals(&group).unwrap();
        assert_eq!(bundle.adds.len(), 1, "the commit adds carol by reference");
        assert!(bundle.welcome.is_some());
        alice.submit(&group, bundle).await.unwrap();
        carol
            .sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
        let epoch = alice.engine.epoch(&group).unwrap();
        bob.sync_until(20, "the commit of his proposal", |d| {
            d.engine.epoch(&group).unwrap_or(0) == epoch
        })
        .await
        .unwrap();
        bob.send_text(&group, "welcome, carol").await.unwrap();
        carol
            .sync_until(20, "bob's text", |d| {
                d.texts(&group).contains(&"welcome, carol".to_owned())
            })
            .await
            .unwrap();
        catch_up(&mut alice).await;

        // 2. Carol proposes an update of her leaf; bob (on b) commits it.
        let epoch_before = bob.engine.epoch(&group).unwrap();
        let update = carol.engine.propose_update(&group).unwrap();
        propose(&mut carol, &group, "propose-update", &update).await;
        bob.sync_until(20, "carol's Update proposal", |d| {
            d.engine.pending_proposal_count(&group).unwrap_or(0) == 1
        })
        .await
        .unwrap();
        let bundle = bob.engine.commit_pending_proposals(&group).unwrap();
        bob.submit(&group, bundle).await.unwrap();
        assert_eq!(bob.engine.epoch(&group).unwrap(), epoch_before + 1);
        let events = catch_up(&mut carol).await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::CommitApplied { .. })),
            "carol merged the commit of her update: {events:?}"
        );
        catch_up(&mut alice).await;
        carol.send_text(&group, "fresh keys").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.sync_until(20, "carol's text", |d| {
                d.texts(&group).contains(&"fresh keys".to_owned())
            })
            .await
            .unwrap();
        }

        // 3. Alice proposes removing bob; carol commits it; bob learns he was removed.
        let (_, stale) = bob.encrypt(&group, "from the past").unwrap();
        let remove = alice.engine.propose_remove(&group, &bob_ref(&bob)).unwrap();
        propose(&mut alice, &group, "propose-remove", &remove).await;
        carol
            .sync_until(20, "alice's Remove proposal", |d| {
                d.engine.pending_proposal_count(&group).unwrap_or(0) == 1
            })
            .await
            .unwrap();
        let bundle = carol.engine.commit_pending_proposals(&group).unwrap();
        assert_eq!(bundle.removes.len(), 1);
        carol.submit(&group, bundle).await.unwrap();
        bob.sync_until(20, "his removal", |d| {
            !d.engine.is_active(&group).unwrap_or(true)
        })
        .await
        .unwrap();
        catch_up(&mut alice).await;
        alice.send_text(&group, "just us").await.unwrap();
        carol
            .sync_until(20, "alice's text", |d| {
                d.texts(&group).contains(&"just us".to_owned())
            })
            .await
            .unwrap();
        assert_api_error(
            bob.client.send(&group, "late", &stale).await,
            403,
            "P_NOT_MEMBER",
        );
    }
);

on_both_backends!(
    a_commit_referencing_a_proposal_the_hub_never_accepted_is_refused,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&[ALICE, BOB]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &[BOB]).await.unwrap();
        bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
        // Alice keeps her Remove proposal to herself and commits it by reference.
        alice.engine.propose_remove(&group, &bob_ref(&bob)).unwrap();
        let bundle = alice.engine.commit_pending_proposals(&group).unwrap();
        let request = bundle_request(&bundle);
        assert_api_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        );
        alice.engine.discard_pending_commit(&group).unwrap();
        // The group goes on at its epoch: alice still reads bob.
        bob.send_text(&group, "still here").await.unwrap();
        alice
            .sync_until(20, "bob's text", |d| {
                d.texts(&group).contains(&"still here".to_owned())
            })
            .await
            .unwrap();
    }
);

fn bob_ref(bob: &Device) -> parley_mls::DeviceRef {
    parley_mls::DeviceRef::new(&bob.user_id, &bob.device_id).unwrap()
}
