//! Join links across two servers (docs/protocol.md#join-links): dave on b joins alice's group
//! on a by external commit with the link alice opened, and everyone (bob on b, carol on a)
//! merges it; the hub refuses with 403 `P_JOIN_REFUSED` a wrong or rotated code, a closed
//! group and a banned user, both when the GroupInfo is asked for and when a commit is
//! submitted; the join rules it tracks survive its restart. Real servers, native clients.

mod common;

use common::{assert_api_error, federated_pair, Db};
use parley_client_api::groups::CommitRequest;
use parley_client_api::join::JoinLink;
use parley_sytest::device::{bundle_request, Device};

const ALICE: &str = "@alice:a.example";
const BOB: &str = "@bob:b.example";
const CAROL: &str = "@carol:a.example";
const DAVE: &str = "@dave:b.example";
const ERIN: &str = "@erin:a.example";

/// `link` with its code replaced by `code`.
fn with_code(link: &str, code: &str) -> String {
    let mut parsed = JoinLink::parse(link).unwrap();
    parsed.code = code.to_owned();
    parsed.format()
}

on_both_backends!(
    a_user_of_another_server_joins_by_link_and_refused_joins_change_nothing,
    |db: Db| async move {
        let (mut a, b) = federated_pair(db, "").await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        let mut carol = Device::register(&a, "carol").await.unwrap();
        let mut dave = Device::register(&b, "dave").await.unwrap();
        let mut erin = Device::register(&a, "erin").await.unwrap();
        for d in [&mut alice, &mut bob, &mut carol, &mut dave, &mut erin] {
            d.know(&[ALICE, BOB, CAROL, DAVE, ERIN]);
        }
        let group = alice.create_group_with_roles().await.unwrap();
        alice.add(&group, &[BOB, CAROL]).await.unwrap();
        for d in [&mut bob, &mut carol] {
            d.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
                .await
                .unwrap();
        }

        // Not joinable yet: the hub refuses the GroupInfo to any code.
        let guess = format!("parley:{group}?code=AAAAAAAAAAAAAAAAAAAAAA");
        assert_api_error(
            dave.try_join_by_link(&guess).await.unwrap(),
            403,
            "P_JOIN_REFUSED",
        );

        // Bob (no admin) cannot open it; alice can.
        assert!(bob.engine.open_join_link(&group).is_err());
        let link = alice.open_join_link(&group).await.unwrap();
        assert_api_error(
            dave.try_join_by_link(&guess).await.unwrap(),
            403,
            "P_JOIN_REFUSED",
        );

        // Dave, on b, joins through his own server; every member merges the external commit.
        let joined = dave.join_by_link(&link).await.unwrap();
        assert_eq!(joined, group);
        let epoch = dave.engine.epoch(&group).unwrap();
        for d in [&mut alice, &mut bob, &mut carol] {
            d.sync_until(20, "dave's join", |d| {
                d.engine.epoch(&group).unwrap_or(0) == epoch
            })
            .await
            .unwrap();
            assert_eq!(d.engine.members(&group).unwrap().len(), 4);
        }
        dave.send_text(&group, "hi, I came by link").await.unwrap();
        carol
            .sync_until(20, "dave's text", |d| {
                d.texts(&group).contains(&"hi, I came by link".to_owned())
            })
            .await
            .unwrap();

        // Rotation: the old link stops working at the hub, before any MLS is built.
        let rotated = alice.open_join_link(&group).await.unwrap();
        assert_ne!(rotated, link);
        assert_api_error(
            erin.try_join_by_link(&link).await.unwrap(),
            403,
            "P_JOIN_REFUSED",
        );

        // A commit with the old code in its AAD, built from the current GroupInfo, is refused
        // too (a client that skips the join-info check).
        let current = JoinLink::parse(&rotated).unwrap();
        let info = erin.client.join_info(&group, &current.code).await.unwrap();
        let gi = parley_client_api::client::unb64(&info.group_info).unwrap();
        erin.learn(&[ALICE, BOB, CAROL, DAVE]).await.unwrap();
        let old_code = JoinLink::parse(&link).unwrap().code;
        let (_, forged) = erin
            .engine
            .join_by_link(&group, &gi, &old_code, &erin.keys.clone())
            .unwrap();
        let request: CommitRequest = bundle_request(&forged);
        assert_api_error(
            erin.client.commit(&group, &request).await,
            403,
            "P_JOIN_REFUSED",
        );
        erin.engine.forget_group(&group).unwrap();

        // Banned, then closed: refused both ways; the hub keeps the rules across a restart.
        let ban = alice.engine.set_banned(&group, ERIN, true).unwrap();
        alice.submit(&group, ban).await.unwrap();
        a.restart();
        assert_api_error(
            erin.try_join_by_link(&rotated).await.unwrap(),
            403,
            "P_JOIN_REFUSED",
        );
        let close = alice.engine.close_join_link(&group).unwrap();
        alice.submit(&group, close).await.unwrap();
        let mut frank = Device::register(&b, "frank").await.unwrap();
        frank.know(&[ALICE, BOB, CAROL, DAVE]);
        assert_api_error(
            frank.try_join_by_link(&rotated).await.unwrap(),
            403,
            "P_JOIN_REFUSED",
        );
        assert_eq!(
            with_code(&rotated, &current.code),
            rotated,
            "link text round-trips"
        );

        // Nothing the refused joins sent reached the group: everyone is at alice's epoch.
        let epoch = alice.engine.epoch(&group).unwrap();
        for d in [&mut bob, &mut carol, &mut dave] {
            d.sync_until(20, "the close", |d| {
                d.engine.epoch(&group).unwrap_or(0) == epoch
            })
            .await
            .unwrap();
            assert_eq!(d.engine.members(&group).unwrap().len(), 4);
            assert_eq!(d.engine.join_link(&group).unwrap(), None);
        }
    }
);
