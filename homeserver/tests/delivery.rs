//! The delivery service end to end: native `parley-mls` clients against a real `parley serve`,
//! on SQLite and PostgreSQL.

mod common;

use common::{assert_api_error, Db, TestServer};
use parley_client_api::client::b64;
use parley_client_api::groups::DeviceRef as WireDevice;
use parley_mls::Event;
use parley_sytest::device::{bundle_request, now_ms, Device};

const NAME: &str = "hub.example";

fn user(name: &str) -> String {
    format!("@{name}:{NAME}")
}

on_both_backends!(
    three_users_with_two_devices_each_converse_through_adds_removes_and_updates,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let (a, b, c) = (user("alice"), user("bob"), user("carol"));
        let mut alice1 = Device::register(&server, "alice").await.unwrap();
        let mut alice2 = Device::login(&server, "alice").await.unwrap();
        let mut bob1 = Device::register(&server, "bob").await.unwrap();
        let mut bob2 = Device::login(&server, "bob").await.unwrap();
        let mut carol1 = Device::register(&server, "carol").await.unwrap();
        let mut carol2 = Device::login(&server, "carol").await.unwrap();
        for d in [
            &mut alice1,
            &mut alice2,
            &mut bob1,
            &mut bob2,
            &mut carol1,
            &mut carol2,
        ] {
            d.know(&[&a, &b, &c]);
        }

        let group = alice1.create_group().await.unwrap();
        let r = alice1.add(&group, &[&a, &b]).await.unwrap();
        assert_eq!((r.epoch, r.seq), (1, 1));
        for d in [&mut alice2, &mut bob1, &mut bob2] {
            d.sync_all().await.unwrap();
        }
        alice1.send_text(&group, "hello from alice").await.unwrap();
        bob2.send_text(&group, "hi, bob here").await.unwrap();
        let r = bob1.add(&group, &[&c]).await.unwrap();
        assert_eq!(r.epoch, 2);
        for d in [
            &mut alice1,
            &mut alice2,
            &mut bob1,
            &mut bob2,
            &mut carol1,
            &mut carol2,
        ] {
            d.sync_all().await.unwrap();
        }
        carol2.send_text(&group, "carol joined").await.unwrap();
        for d in [&mut alice1, &mut alice2, &mut bob1, &mut bob2, &mut carol1] {
            d.sync_all().await.unwrap();
        }
        assert_eq!(
            alice2.texts(&group),
            ["hello from alice", "hi, bob here", "carol joined"]
        );
        assert_eq!(
            bob1.texts(&group),
            ["hello from alice", "hi, bob here", "carol joined"]
        );
        assert_eq!(alice1.texts(&group), ["hi, bob here", "carol joined"]);
        assert_eq!(carol1.texts(&group), ["carol joined"]);

        // Self-update: the leaf keys change and everyone follows.
        let before = carol1.engine.members(&group).unwrap();
        carol1.self_update(&group).await.unwrap();
        for d in [&mut alice1, &mut alice2, &mut bob1, &mut bob2, &mut carol2] {
            d.sync_all().await.unwrap();
        }
        assert_eq!(alice1.engine.epoch(&group).unwrap(), 3);
        assert_eq!(
            carol2.engine.epoch_authenticator(&group).unwrap(),
            bob2.engine.epoch_authenticator(&group).unwrap()
        );
        assert!(!before.is_empty());

        // Remove bob's second device; it learns of its removal and gets nothing after.
        alice1.remove(&group, &[bob2.me()]).await.unwrap();
        let events = bob2.sync_all().await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::RemovedFromGroup { .. })),
            "{events:?}"
        );
        alice2.sync_all().await.unwrap();
        alice2.send_text(&group, "after bob2 left").await.unwrap();
        for d in [&mut alice1, &mut bob1, &mut carol1, &mut carol2] {
            d.sync_all().await.unwrap();
        }
        bob2.sync_all().await.unwrap();
        assert!(!bob2.texts(&group).contains(&"after bob2 left".to_string()));
        assert!(carol1
            .texts(&group)
            .contains(&"after bob2 left".to_string()));
        let listed = alice1.client.groups().await.unwrap().groups;
        assert_eq!(listed[0].members.len(), 5);
        assert!(bob2.client.groups().await.unwrap().groups.is_empty());

        // Leave: carol2 proposes her removal, alice commits it by reference.
        let proposal = carol2.engine.leave_group(&group).unwrap();
        carol2
            .client
            .send(&group, "leave-1", &proposal)
            .await
            .unwrap();
        alice1.sync_all().await.unwrap();
        let bundle = alice1.engine.commit_pending_proposals(&group).unwrap();
        assert_eq!(bundle.removes.len(), 1);
        alice1.submit(&group, bundle).await.unwrap();
        for d in [&mut alice2, &mut bob1, &mut carol1, &mut carol2] {
            d.sync_all().await.unwrap();
        }
        assert_eq!(
            alice1.client.groups().await.unwrap().groups[0]
                .members
                .len(),
            4
        );
    }
);

on_both_backends!(
    offline_device_catches_up_in_order_by_sync_and_websocket,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let (a, b) = (user("alice"), user("bob"));
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&[&a, &b]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &[&b]).await.unwrap();
        bob.sync_all().await.unwrap();
        let resume = bob.since.clone();
        for i in 0..30 {
            alice.send_text(&group, &format!("m{i}")).await.unwrap();
        }
        bob.sync_all().await.unwrap();
        let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
        assert_eq!(bob.texts(&group), expected);

        // Re-syncing from an older token returns the same events again.
        let again = bob.client.sync(resume.as_deref(), 0).await.unwrap();
        assert_eq!(again.groups[&group].messages.len(), 30);
        let seqs: Vec<u64> = again.groups[&group]
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

        // A long-poll wakes when a message arrives.
        let since = bob.since.clone();
        let waiter = {
            let client = bob.client.clone();
            tokio::spawn(async move { client.sync(since.as_deref(), 10_000).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        alice.send_text(&group, "wake up").await.unwrap();
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(woke.groups[&group].messages.len(), 1);

        // WebSocket: authenticate in the first frame, get the backlog, then live pushes.
        let ws_url = format!(
            "{}/_parley/client/v1/ws",
            server.base_url.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        use futures::{SinkExt, StreamExt};
        let auth = serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            auth.to_string().into(),
        ))
        .await
        .unwrap();
        let mut frames = Vec::new();
        alice.send_text(&group, "pushed").await.unwrap();
        while frames
            .iter()
            .filter(|f: &&serde_json::Value| f["type"] == "message")
            .count()
            < 2
            || !frames
                .iter()
                .any(|f: &serde_json::Value| f["type"] == "key_packages")
        {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                frames.push(serde_json::from_str(t.as_str()).unwrap());
            }
        }
        let messages: Vec<&serde_json::Value> =
            frames.iter().filter(|f| f["type"] == "message").collect();
        assert_eq!(messages[0]["group_id"], group.as_str());
        assert!(frames.iter().any(|f| f["type"] == "key_packages"));
        let last_token = messages[1]["next_batch"].as_str().unwrap().to_owned();
        // Decrypt the pushed frames like a client would.
        for f in &messages {
            let m: parley_client_api::sync::MessageEvent =
                serde_json::from_value((*f).clone()).unwrap();
            bob.process(&group, &m).unwrap();
        }
        assert_eq!(bob.texts(&group).last().map(String::as_str), Some("pushed"));
        // Reconnecting with the last token resumes without repeats.
        drop(ws);
        let resumed = bob.client.sync(Some(&last_token), 0).await.unwrap();
        assert!(resumed.groups.is_empty(), "{resumed:?}");

        // A revoked session's socket is closed.
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let auth = serde_json::json!({"access_token": bob.client.access_token().unwrap()});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            auth.to_string().into(),
        ))
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        bob.client.logout().await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(Ok(frame)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = &frame {
                    if t.as_str().contains("P_UNKNOWN_TOKEN") {
                        return true;
                    }
                }
            }
            true
        })
        .await;
        assert!(
            closed.unwrap_or(false),
            "socket of a revoked session stayed open"
        );
    }
);

on_both_backends!(
    twenty_concurrent_commits_for_one_epoch_have_one_winner_and_losers_retry,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let names: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
        let users: Vec<String> = names.iter().map(|n| user(n)).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let mut devices = Vec::new();
        for n in &names {
            let mut device = Device::register(&server, n).await.unwrap();
            device.know(&refs);
            devices.push(device);
        }
        let group = devices[0].create_group().await.unwrap();
        devices[0].add(&group, &refs[1..]).await.unwrap();
        for d in devices.iter_mut().skip(1) {
            d.sync_all().await.unwrap();
        }
        // Everyone commits a self-update for epoch 1 at once.
        let mut bundles = Vec::new();
        for d in devices.iter_mut() {
            bundles.push(bundle_request(&d.engine.self_update(&group).unwrap()));
        }
        let mut tasks = Vec::new();
        for (d, b) in devices.iter().zip(bundles) {
            let client = d.client.clone();
            let group = group.clone();
            tasks.push(tokio::spawn(async move { client.commit(&group, &b).await }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for (i, r) in results.into_iter().enumerate() {
            if i == winners[0] {
                devices[i].engine.confirm_pending_commit(&group).unwrap();
            } else {
                let body = assert_api_error(r, 409, "P_STALE_EPOCH");
                assert_eq!(body.extra_u64("current_epoch"), Some(2));
                devices[i].engine.discard_pending_commit(&group).unwrap();
            }
        }
        // Losers process the winner, then retry successfully one after another.
        for d in devices.iter_mut() {
            d.sync_all().await.unwrap();
        }
        for i in 0..3 {
            let idx = (winners[0] + 1 + i) % devices.len();
            for d in devices.iter_mut() {
                d.sync_all().await.unwrap();
            }
            devices[idx].self_update(&group).await.unwrap();
        }
        for d in devices.iter_mut() {
            d.sync_all().await.unwrap();
        }
        let auth0 = devices[0].engine.epoch_authenticator(&group).unwrap();
        assert!(devices
            .iter()
            .all(|d| d.engine.epoch_authenticator(&group).unwrap() == auth0));
        assert_eq!(devices[0].engine.epoch(&group).unwrap(), 5);
    }
);

on_both_backends!(
    key_packages_run_out_into_the_last_resort_and_bad_uploads_name_their_index,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let b = user("bob");
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        assert_eq!(bob.client.key_count().await.unwrap().count, 5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let claimed = alice.client.claim_keys(&[&b]).await.unwrap();
            assert!(
                seen.insert(claimed.key_packages[&b][&bob.device_id].clone()),
                "handed out twice"
            );
        }
        let count = bob.client.key_count().await.unwrap();
        assert_eq!((count.count, count.last_resort), (0, true));
        let lr1 =
            alice.client.claim_keys(&[&b]).await.unwrap().key_packages[&b][&bob.device_id].clone();
        let lr2 =
            alice.client.claim_keys(&[&b]).await.unwrap().key_packages[&b][&bob.device_id].clone();
        assert_eq!(lr1, lr2, "the last resort is never consumed");
        // Sync reports the count so clients replenish.
        assert_eq!(
            bob.client.sync(None, 0).await.unwrap().key_packages.count,
            0
        );

        // Failures name the most specific thing.
        let claimed = alice
            .client
            .claim_keys(&[&user("nobody"), "@x:elsewhere.example", "junk"])
            .await
            .unwrap();
        assert_eq!(claimed.failures[&user("nobody")].errcode, "P_NOT_FOUND");
        assert_eq!(
            claimed.failures["elsewhere.example"].errcode,
            "P_UNREACHABLE_SERVER"
        );

        // An invalid package among valid ones: nothing is stored, the index is named.
        let good = bob.engine.generate_key_packages(2).unwrap();
        let mut bad = good[1].clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let body = assert_api_error(
            bob.client.upload_keys(&[good[0].clone(), bad], None).await,
            400,
            "P_INVALID_KEY_PACKAGE",
        );
        assert_eq!(body.extra_u64("index"), Some(1));
        assert_eq!(bob.client.key_count().await.unwrap().count, 0);
        // A package of another device is refused too.
        let foreign = alice.engine.generate_key_packages(1).unwrap().remove(0);
        let body = assert_api_error(
            bob.client.upload_keys(&[foreign], None).await,
            400,
            "P_INVALID_KEY_PACKAGE",
        );
        assert_eq!(body.extra_u64("index"), Some(0));
        // Bad base64, and a bad last resort whose index is the number of packages.
        let raw = parley_client_api::keys::UploadKeysRequest {
            key_packages: vec!["%%%".into()],
            last_resort: None,
        };
        let r = bob
            .client
            .call::<parley_client_api::keys::UploadKeys>(&(), &raw)
            .await;
        assert_eq!(
            assert_api_error(r, 400, "P_INVALID_KEY_PACKAGE").extra_u64("index"),
            Some(0)
        );
        let r = bob.client.upload_keys(&good, Some(&good[0])).await;
        assert_eq!(
            assert_api_error(r, 400, "P_INVALID_KEY_PACKAGE").extra_u64("index"),
            Some(2)
        );
        // Signature keys bind once.
        bob.client
            .bind_signature_key(&bob.device_id, &bob.engine.signature_public_key())
            .await
            .unwrap();
        assert_api_error(
            bob.client
                .bind_signature_key(&bob.device_id, &[7u8; 32])
                .await,
            409,
            "P_SIGNATURE_KEY_MISMATCH",
        );
        let _ = &mut bob;
    }
);

on_both_backends!(
    non_members_mismatched_envelopes_and_retries_are_handled_by_the_rules,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let (a, b) = (user("alice"), user("bob"));
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        let mut mallory = Device::register(&server, "mallory").await.unwrap();
        for d in [&mut alice, &mut bob, &mut mallory] {
            d.know(&[&a, &b]);
        }
        let group = alice.create_group().await.unwrap();
        let other_group = alice.create_group().await.unwrap();
        alice.add(&group, &[&b]).await.unwrap();
        bob.sync_all().await.unwrap();

        // A non-member cannot send into the group (its own group's message, wrong path: 400;
        // a message for this group it cannot have made is also refused).
        let mallory_group = mallory.create_group().await.unwrap();
        let out = mallory
            .engine
            .encrypt(&mallory_group, b"spam", now_ms())
            .unwrap();
        assert_api_error(
            mallory.client.send(&group, "m1", &out.message).await,
            400,
            "P_INVALID_MESSAGE",
        );
        let out = bob.engine.encrypt(&group, b"bob's", now_ms()).unwrap();
        assert_api_error(
            mallory.client.send(&group, "m2", &out.message).await,
            403,
            "P_NOT_MEMBER",
        );

        // Group id of the message disagrees with the path.
        assert_api_error(
            alice.client.send(&other_group, "x1", &out.message).await,
            400,
            "P_INVALID_MESSAGE",
        );
        // Declared adds that disagree with the commit.
        alice.learn(&[&user("mallory")]).await.unwrap();
        let kp = alice
            .client
            .claim_keys(&[&user("mallory")])
            .await
            .unwrap()
            .key_packages[&user("mallory")][&mallory.device_id]
            .clone();
        let bundle = alice
            .engine
            .add_members(
                &group,
                &[parley_client_api::client::unb64(&kp).unwrap()],
                &alice.keys,
            )
            .unwrap();
        let mut request = bundle_request(&bundle);
        request.adds = vec![WireDevice {
            user_id: b.clone(),
            device_id: bob.device_id.clone(),
        }];
        assert_api_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        );
        request.adds = bundle_request(&bundle).adds;
        request.welcome = None;
        assert_api_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        );
        request.welcome = Some("not base64!".into());
        assert_api_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        );
        // A commit sent by someone else's token is not theirs to submit.
        assert_api_error(
            bob.client.commit(&group, &bundle_request(&bundle)).await,
            403,
            "P_NOT_MEMBER",
        );
        alice.engine.discard_pending_commit(&group).unwrap();

        // txn_id retry: same seq, delivered once, whatever the new body.
        let out = alice.engine.encrypt(&group, b"once", now_ms()).unwrap();
        let s1 = alice
            .client
            .send(&group, "txn-1", &out.message)
            .await
            .unwrap();
        let s2 = alice
            .client
            .send(&group, "txn-1", &out.message)
            .await
            .unwrap();
        let s3 = alice
            .client
            .send(&group, "txn-1", b"other body")
            .await
            .unwrap();
        assert_eq!((s1, s2), (s1, s3));
        bob.sync_all().await.unwrap();
        assert_eq!(bob.texts(&group), ["once"]);
        assert_api_error(
            alice.client.send(&group, "bad/txn", &out.message).await,
            400,
            "P_BAD_JSON",
        );
        assert_api_error(
            alice
                .client
                .send("!nope:hub.example", "t", &out.message)
                .await,
            404,
            "P_NOT_FOUND",
        );
    }
);

on_both_backends!(
    restart_mid_conversation_loses_nothing_and_keeps_order,
    |db: Db| async move {
        let mut server = TestServer::start(db, NAME, common::RELAXED_LIMITS).await;
        let (a, b) = (user("alice"), user("bob"));
        let mut alice = Device::register(&server, "alice").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&[&a, &b]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &[&b]).await.unwrap();
        for i in 0..10 {
            alice
                .send_text(&group, &format!("before {i}"))
                .await
                .unwrap();
        }
        server.restart();
        for i in 0..10 {
            alice
                .send_text(&group, &format!("after {i}"))
                .await
                .unwrap();
        }
        bob.sync_all().await.unwrap();
        let expected: Vec<String> = (0..10)
            .map(|i| format!("before {i}"))
            .chain((0..10).map(|i| format!("after {i}")))
            .collect();
        assert_eq!(bob.texts(&group), expected);
        let _ = b64(b"");
    }
);
