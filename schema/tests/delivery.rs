//! Key-package directory and hub log, against both SQLite and PostgreSQL.

use parley_schema::{
    testing, Accepted, Appended, BindOutcome, CommitToApply, GroupMessage, Member, MessageToAppend,
    NewDevice, NewKeyPackage, Refused, RemoteMessage, RemoteStored, Session, Store, TailRead, User,
};

async fn add_user(store: &Store, name: &str, devices: &[&str]) {
    let user_id = format!("@{name}:t.example");
    let user = User {
        user_id: user_id.clone(),
        localpart: name.into(),
        password_hash: "x".into(),
        created_ts: 0,
    };
    for (i, d) in devices.iter().enumerate() {
        let device = NewDevice {
            user_id: user_id.clone(),
            device_id: d.to_string(),
            display_name: None,
            created_ts: 0,
            last_seen_ts: 0,
        };
        let session = Session {
            session_id: format!("{name}-{d}"),
            user_id: user_id.clone(),
            device_id: d.to_string(),
            created_ts: 0,
        };
        let hash = format!("{name}-{d}").into_bytes();
        if i == 0 {
            store
                .accounts()
                .create_user_with_session(&user, &device, &session, &hash, 1)
                .await
                .unwrap();
        } else {
            store
                .accounts()
                .create_session(Some(&device), &session, &hash, 1)
                .await
                .unwrap();
        }
    }
}

fn kp(tag: &str, not_after_ms: i64) -> NewKeyPackage {
    NewKeyPackage {
        kp_ref: tag.as_bytes().to_vec(),
        data: format!("data-{tag}").into_bytes(),
        not_after_ms,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signature_key_binds_once() {
    for (store, _d) in testing::stores().await {
        add_user(&store, "a", &["D"]).await;
        assert_eq!(
            store
                .keys()
                .bind_signature_key("@a:t.example", "D", &[1; 32])
                .await
                .unwrap(),
            BindOutcome::Bound
        );
        assert_eq!(
            store
                .keys()
                .bind_signature_key("@a:t.example", "D", &[1; 32])
                .await
                .unwrap(),
            BindOutcome::AlreadyBound
        );
        assert_eq!(
            store
                .keys()
                .bind_signature_key("@a:t.example", "D", &[2; 32])
                .await
                .unwrap(),
            BindOutcome::Mismatch
        );
        assert_eq!(
            store
                .keys()
                .bind_signature_key("@a:t.example", "X", &[2; 32])
                .await
                .unwrap(),
            BindOutcome::NoDevice
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_consume_once_then_serve_the_last_resort_and_skip_expired() {
    for (store, _d) in testing::stores().await {
        add_user(&store, "a", &["D"]).await;
        let (u, d) = ("@a:t.example", "D");
        let n = store
            .keys()
            .store_key_packages(
                u,
                d,
                &[kp("1", 1000), kp("2", 1000), kp("old", 50)],
                Some(&kp("lr", 1000)),
                100,
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            store.keys().key_package_count(u, d, 100).await.unwrap(),
            (2, true)
        );
        let first = store
            .keys()
            .claim_key_package(u, d, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.data.as_slice(), first.last_resort),
            (&b"data-1"[..], false)
        );
        let second = store
            .keys()
            .claim_key_package(u, d, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.data, b"data-2");
        for _ in 0..2 {
            let lr = store
                .keys()
                .claim_key_package(u, d, 100)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (lr.data.as_slice(), lr.last_resort),
                (&b"data-lr"[..], true)
            );
        }
        assert_eq!(
            store.keys().key_package_count(u, d, 100).await.unwrap(),
            (0, true)
        );
        // A new last resort replaces the old one.
        store
            .keys()
            .store_key_packages(u, d, &[], Some(&kp("lr2", 1000)), 100)
            .await
            .unwrap();
        assert_eq!(
            store
                .keys()
                .claim_key_package(u, d, 100)
                .await
                .unwrap()
                .unwrap()
                .data,
            b"data-lr2"
        );
        // Past its lifetime nothing is served.
        assert_eq!(
            store.keys().claim_key_package(u, d, 2000).await.unwrap(),
            None
        );
        assert_eq!(
            store.keys().purge_expired_key_packages(2000).await.unwrap(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_never_hand_out_a_package_twice() {
    for (store, _d) in testing::stores().await {
        add_user(&store, "a", &["D"]).await;
        let pkgs: Vec<_> = (0..20).map(|i| kp(&format!("k{i}"), 1000)).collect();
        store
            .keys()
            .store_key_packages("@a:t.example", "D", &pkgs, None, 0)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.keys()
                    .claim_key_package("@a:t.example", "D", 0)
                    .await
                    .unwrap()
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            if let Some(c) = t.await.unwrap() {
                got.push(c.data);
            }
        }
        assert_eq!(got.len(), 20, "{:?}", store.backend());
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            20,
            "a package was handed out twice on {:?}",
            store.backend()
        );
    }
}

fn commit(
    group: &str,
    epoch: i64,
    sender: &str,
    added: Vec<Member>,
    removed: Vec<(String, String)>,
) -> CommitToApply {
    let welcome_recipients = added
        .iter()
        .map(|m| (m.user_id.clone(), m.device_id.clone()))
        .collect::<Vec<_>>();
    CommitToApply {
        disappear_after_ms: None,
        roles: None,
        join_rules: None,
        group_id: group.into(),
        epoch,
        sender_user: sender.into(),
        sender_device: "D".into(),
        message: format!("commit-{epoch}").into_bytes(),
        adds_json: "[]".into(),
        removes_json: "[]".into(),
        removed,
        welcome: (!welcome_recipients.is_empty()).then(|| b"welcome".to_vec()),
        welcome_recipients,
        added,
        group_info: Some(b"gi".to_vec()),
        ts: 5,
        outbox: vec![],
    }
}

fn member(u: &str, leaf: u32) -> Member {
    Member {
        user_id: u.into(),
        device_id: "D".into(),
        leaf_index: leaf,
    }
}

/// A message at `epoch`, checked against the roster of that same epoch.
fn app(group: &str, sender: &str, epoch: i64, txn: Option<&str>) -> MessageToAppend {
    app_at(group, sender, epoch, epoch, txn)
}

/// A message at `epoch`, checked against the roster of `roster_epoch`.
fn app_at(
    group: &str,
    sender: &str,
    epoch: i64,
    roster_epoch: i64,
    txn: Option<&str>,
) -> MessageToAppend {
    MessageToAppend {
        expires_ts: None,
        group_id: group.into(),
        sender_user: sender.into(),
        sender_device: "D".into(),
        kind: "application".into(),
        epoch,
        message: b"ct".to_vec(),
        ts: 6,
        max_past_epochs: 1,
        txn_id: txn.map(str::to_owned),
        roster_epoch,
        outbox: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_commit_per_epoch_wins_and_rosters_follow_commits() {
    for (store, _d) in testing::stores().await {
        let (a, b, c) = ("@a:t.example", "@b:t.example", "@c:t.example");
        store
            .hub_log()
            .create_group("!g1:t.example", a, "D", 1)
            .await
            .unwrap();
        assert_eq!(
            store.hub_log().roster("!g1:t.example").await.unwrap(),
            [member(a, 0)]
        );

        let accepted = store
            .hub_log()
            .apply_commit(commit("!g1:t.example", 0, a, vec![member(b, 1)], vec![]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((accepted.seq, accepted.epoch), (1, 1));
        // A second commit for epoch 0 loses.
        let lost = store
            .hub_log()
            .apply_commit(commit("!g1:t.example", 0, a, vec![member(c, 1)], vec![]))
            .await
            .unwrap();
        assert_eq!(lost, Err(Refused::StaleEpoch(1)));
        let future = store
            .hub_log()
            .apply_commit(commit("!g1:t.example", 5, a, vec![], vec![]))
            .await
            .unwrap();
        assert_eq!(future, Err(Refused::FutureEpoch(1)));
        assert_eq!(
            store.hub_log().roster("!g1:t.example").await.unwrap(),
            [member(a, 0), member(b, 1)]
        );

        // b sees the message after its join but not the commit that added it; it has a welcome.
        let m1 = store
            .hub_log()
            .append_message(app("!g1:t.example", a, 1, Some("t1")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m1.seq(), 2);
        let again = store
            .hub_log()
            .append_message(app("!g1:t.example", a, 1, Some("t1")))
            .await;
        assert!(
            matches!(again, Ok(Ok(Appended::Replayed { seq: 2 }))),
            "a used txn_id is a replay of the first send: {again:?}"
        );
        assert_eq!(
            store.hub_log().txn_seq(a, "D", "t1").await.unwrap(),
            Some(2),
            "the first result stays"
        );
        let (msgs, welcomes, next) = store.stream().device_events(b, "D", 0, 100).await.unwrap();
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(welcomes.len(), 1);
        let (msgs_a, _, _) = store.stream().device_events(a, "D", 0, 100).await.unwrap();
        assert_eq!(msgs_a.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);

        // Remove b: it receives its removal commit, nothing after.
        store
            .hub_log()
            .apply_commit(commit(
                "!g1:t.example",
                1,
                a,
                vec![],
                vec![(b.into(), "D".into())],
            ))
            .await
            .unwrap()
            .unwrap();
        store
            .hub_log()
            .append_message(app("!g1:t.example", a, 2, None))
            .await
            .unwrap()
            .unwrap();
        let (msgs, _, next2) = store
            .stream()
            .device_events(b, "D", next, 100)
            .await
            .unwrap();
        assert_eq!(
            msgs.iter()
                .map(|m| (m.seq, m.kind.as_str()))
                .collect::<Vec<_>>(),
            [(3, "commit")]
        );
        assert!(next2 > next);
        assert_eq!(store.stream().device_groups(b, "D").await.unwrap().len(), 0);
        assert_eq!(
            store.stream().device_groups(a, "D").await.unwrap()[0].epoch,
            2
        );

        // Application messages: one epoch back is fine, two is stale, ahead is refused.
        assert!(store
            .hub_log()
            .append_message(app_at("!g1:t.example", a, 1, 2, None))
            .await
            .unwrap()
            .is_ok());
        assert_eq!(
            store
                .hub_log()
                .append_message(app_at("!g1:t.example", a, 0, 2, None))
                .await
                .unwrap(),
            Err(Refused::StaleEpoch(2))
        );
        assert_eq!(
            store
                .hub_log()
                .append_message(app_at("!g1:t.example", a, 3, 2, None))
                .await
                .unwrap(),
            Err(Refused::FutureEpoch(2))
        );
        // Checked against the roster of an epoch the group has left: refused, nothing written.
        assert_eq!(
            store
                .hub_log()
                .append_message(app_at("!g1:t.example", a, 1, 1, Some("late")))
                .await
                .unwrap(),
            Err(Refused::RosterChanged)
        );
        assert_eq!(store.hub_log().txn_seq(a, "D", "late").await.unwrap(), None);
        let log: Vec<i64> = store
            .hub_log()
            .group_messages_since("!g1:t.example", 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(log, [1, 2, 3, 4, 5], "gap-free seq");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_of_used_txn_ids_amid_new_sends_leave_the_seqs_gap_free() {
    for (store, _d) in testing::stores().await {
        let a = "@a:t.example";
        store
            .hub_log()
            .create_group("!g:t.example", a, "D", 1)
            .await
            .unwrap();
        let first = store
            .hub_log()
            .append_message(app("!g:t.example", a, 0, Some("t0")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.seq(), 1);
        // Retries of t0 and new sends at once: on SQLite they share group commits.
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let txn = if i % 2 == 0 {
                    "t0".to_owned()
                } else {
                    format!("n{i}")
                };
                store
                    .hub_log()
                    .append_message(app("!g:t.example", a, 0, Some(&txn)))
                    .await
            }));
        }
        let mut seqs = vec![1];
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(Ok(Appended::New(accepted))) => {
                    assert_eq!(i % 2, 1, "a retry of t0 was appended again");
                    seqs.push(accepted.seq);
                }
                Ok(Ok(Appended::Replayed { seq })) => {
                    assert_eq!(i % 2, 0, "a new txn_id was taken for a replay");
                    assert_eq!(seq, 1, "a replay answers the first send's seq");
                }
                other => panic!("unexpected: {other:?}"),
            }
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
        let stored = store
            .hub_log()
            .group_messages_since("!g:t.example", 0, 100)
            .await
            .unwrap();
        assert_eq!(
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=13).collect::<Vec<_>>()
        );
        assert_eq!(
            store.hub_log().txn_seq(a, "D", "t0").await.unwrap(),
            Some(1)
        );
        let next = store
            .hub_log()
            .append_message(app("!g:t.example", a, 0, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.seq(), 14, "the next send follows on without a gap");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_txn_id_is_replayed_with_the_first_seq_whatever_it_carries_and_writes_nothing() {
    for (store, _d) in testing::stores().await {
        let a = "@a:t.example";
        store
            .hub_log()
            .create_group("!g:t.example", a, "D", 1)
            .await
            .unwrap();
        store
            .hub_log()
            .create_group("!h:t.example", a, "D", 1)
            .await
            .unwrap();
        let mut first = app("!g:t.example", a, 0, Some("t1"));
        first.outbox = vec!["b.example".into()];
        let first = store
            .hub_log()
            .append_message(first)
            .await
            .unwrap()
            .unwrap();
        let Appended::New(accepted) = first else {
            panic!("a new txn_id was not appended: {first:?}")
        };
        assert_eq!(accepted.seq, 1);
        let position = store.stream().stream_position().await.unwrap();

        // The same txn_id with another body, and in another group: the first send's seq.
        let mut retry = app("!g:t.example", a, 0, Some("t1"));
        retry.message = b"something else".to_vec();
        retry.outbox = vec!["b.example".into()];
        for again in [retry, app("!h:t.example", a, 0, Some("t1"))] {
            assert_eq!(
                store.hub_log().append_message(again).await.unwrap(),
                Ok(Appended::Replayed { seq: 1 }),
                "{:?}",
                store.backend()
            );
        }
        // Nothing was written: no message, no position, no outbox row.
        assert_eq!(store.stream().stream_position().await.unwrap(), position);
        assert_eq!(
            store
                .hub_log()
                .group_messages_since("!g:t.example", 0, 10)
                .await
                .unwrap()
                .iter()
                .map(|m| m.message.clone())
                .collect::<Vec<_>>(),
            [b"ct".to_vec()]
        );
        assert!(store
            .hub_log()
            .group_messages_since("!h:t.example", 0, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.outbox().outbox_len("b.example").await.unwrap(), 1);
        // The seqs the replays took were given back; another device's t1 is its own.
        let next = store
            .hub_log()
            .append_message(app("!g:t.example", a, 0, Some("t2")))
            .await
            .unwrap();
        assert_eq!(next.map(|n| n.seq()), Ok(2));
        let mut other_device = app("!g:t.example", a, 0, Some("t1"));
        other_device.sender_device = "E".into();
        assert!(matches!(
            store.hub_log().append_message(other_device).await.unwrap(),
            Ok(Appended::New(Accepted { seq: 3, .. }))
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commits_for_one_epoch_have_exactly_one_winner() {
    for (store, _d) in testing::stores().await {
        store
            .hub_log()
            .create_group("!race:t.example", "@a:t.example", "D", 1)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = store.clone();
            let mut c = commit("!race:t.example", 0, "@a:t.example", vec![], vec![]);
            c.message = format!("c{i}").into_bytes();
            tasks.push(tokio::spawn(async move {
                s.hub_log().apply_commit(c).await.unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(Refused::StaleEpoch(1)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(wins, 1, "{:?}", store.backend());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pages_by_limit_without_skipping_and_deleted_welcomes_stay_gone() {
    for (store, _d) in testing::stores().await {
        let (a, b) = ("@a:t.example", "@b:t.example");
        store
            .hub_log()
            .create_group("!p:t.example", a, "D", 1)
            .await
            .unwrap();
        store
            .hub_log()
            .apply_commit(commit("!p:t.example", 0, a, vec![member(b, 1)], vec![]))
            .await
            .unwrap()
            .unwrap();
        for _ in 0..5 {
            store
                .hub_log()
                .append_message(app("!p:t.example", a, 1, None))
                .await
                .unwrap()
                .unwrap();
        }
        let mut since = 0;
        let mut seen = Vec::new();
        loop {
            let (msgs, _, next) = store
                .stream()
                .device_events(b, "D", since, 2)
                .await
                .unwrap();
            if msgs.is_empty() {
                break;
            }
            seen.extend(msgs.iter().map(|m| m.seq));
            since = next;
        }
        assert_eq!(seen, [2, 3, 4, 5, 6]);
        let (_, welcomes, _) = store.stream().device_events(b, "D", 0, 10).await.unwrap();
        assert!(store
            .stream()
            .delete_welcome(b, "D", welcomes[0].id)
            .await
            .unwrap());
        assert!(!store
            .stream()
            .delete_welcome(a, "D", welcomes[0].id)
            .await
            .unwrap());
        let (_, welcomes, _) = store.stream().device_events(b, "D", 0, 10).await.unwrap();
        assert!(welcomes.is_empty());
    }
}

fn relayed(group_id: &str, seq: i64, kind: &str, local_adds: &[(&str, &str)]) -> RemoteMessage {
    RemoteMessage {
        message: GroupMessage {
            expires_ts: None,
            group_id: group_id.into(),
            seq,
            stream_pos: 0,
            sender_user: "@h:hub.example".into(),
            sender_device: "H".into(),
            kind: kind.into(),
            epoch: 1,
            message: vec![seq as u8],
            adds: None,
            removes: None,
            ts: seq,
        },
        local_adds: local_adds
            .iter()
            .map(|(u, d)| (u.to_string(), d.to_string()))
            .collect(),
        local_removes: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_messages_are_stored_only_in_seq_order_and_a_later_one_reports_the_gap() {
    for (store, _d) in testing::stores().await {
        let g = "!f:hub.example";
        // An unknown group starts only at a commit adding one of our devices: anything else is
        // refused, not stored.
        for (seq, kind) in [(1, "application"), (5, "application"), (3, "commit")] {
            assert_eq!(
                store
                    .federation()
                    .store_remote_message(relayed(g, seq, kind, &[]))
                    .await
                    .unwrap(),
                RemoteStored::NoLocalMember
            );
        }
        assert!(store.hub_log().group(g).await.unwrap().is_none());
        let base = relayed(g, 4, "commit", &[("@me:t.example", "D")]);
        assert_eq!(
            store.federation().store_remote_message(base).await.unwrap(),
            RemoteStored::Stored
        );
        // Ahead of a gap: not stored, and the last gap-free seq is reported.
        assert_eq!(
            store
                .federation()
                .store_remote_message(relayed(g, 7, "application", &[]))
                .await
                .unwrap(),
            RemoteStored::Gap { last_seq: 4 }
        );
        for seq in [5, 6, 7] {
            assert_eq!(
                store
                    .federation()
                    .store_remote_message(relayed(g, seq, "application", &[]))
                    .await
                    .unwrap(),
                RemoteStored::Stored
            );
        }
        assert_eq!(
            store
                .federation()
                .store_remote_message(relayed(g, 6, "application", &[]))
                .await
                .unwrap(),
            RemoteStored::Duplicate
        );
        assert_eq!(store.hub_log().group(g).await.unwrap().unwrap().last_seq, 7);
        // The device sees them in seq order, once.
        let (messages, _, _) = store
            .stream()
            .device_events("@me:t.example", "D", 0, 100)
            .await
            .unwrap();
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(
            store
                .federation()
                .followed_groups("t.example")
                .await
                .unwrap(),
            [(g.to_owned(), 7)]
        );
        assert!(store
            .federation()
            .followed_groups("hub.example")
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_of_relayed_messages_never_store_out_of_order() {
    for (store, _d) in testing::stores().await {
        let g = "!cf:hub.example";
        store
            .federation()
            .store_remote_message(relayed(g, 1, "commit", &[("@me:t.example", "D")]))
            .await
            .unwrap();
        // Several fills racing over the same range, each in order: every seq stored once.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 2..=30 {
                    s.federation()
                        .store_remote_message(relayed(g, seq, "application", &[]))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = store
            .hub_log()
            .group_messages_since(g, 0, 100)
            .await
            .unwrap();
        let seqs: Vec<i64> = log.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
        let mut by_pos = log.clone();
        by_pos.sort_by_key(|m| m.stream_pos);
        assert_eq!(by_pos, log, "stream positions follow seqs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_tail_has_every_committed_position_and_agrees_with_the_database() {
    for (store, _d) in testing::stores().await {
        let tail = store.tail().expect("both backends keep a tail");
        let (a, b) = ("@a:t.example", "@b:t.example");
        store
            .hub_log()
            .create_group("!t:t.example", a, "D", 1)
            .await
            .unwrap();
        store
            .hub_log()
            .create_group("!u:t.example", b, "D", 1)
            .await
            .unwrap();
        store
            .hub_log()
            .apply_commit(commit("!t:t.example", 0, a, vec![member(b, 1)], vec![]))
            .await
            .unwrap()
            .unwrap();
        let start = store.stream().stream_position().await.unwrap();
        // Concurrent sends (committed together) and refused ones interleave.
        let mut tasks = Vec::new();
        for i in 0..30 {
            let s = store.clone();
            let (group, epoch) = if i % 3 == 0 {
                ("!u:t.example", 0)
            } else {
                ("!t:t.example", 1)
            };
            let sender = if i % 3 == 0 { b } else { a };
            let txn = format!("x{}", i % 25); // five reuse a txn_id and are refused
            tasks.push(tokio::spawn(async move {
                s.hub_log()
                    .append_message(app(group, sender, epoch, Some(&txn)))
                    .await
            }));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        assert_eq!(tail.last(), store.stream().stream_position().await.unwrap());
        for (user, after) in [(a, 0), (b, 0), (b, start)] {
            let (db, _, _, groups) = store
                .stream()
                .device_events_and_groups(user, "D", after, 1000)
                .await
                .unwrap();
            let groups = groups.into_iter().collect();
            // From a position after the last change concerning the device, the tail answers.
            let TailRead::Messages { messages, next } = tail.read(user, "D", &groups, start, 1000)
            else {
                panic!("the tail could not answer for {user} from {start}")
            };
            let from_db: Vec<i64> = db
                .iter()
                .filter(|m| m.stream_pos > start && m.kind == "application")
                .map(|m| m.stream_pos)
                .collect();
            let from_tail: Vec<i64> = messages.iter().map(|m| m.stream_pos).collect();
            assert_eq!(from_tail, from_db, "{user} after {after}");
            assert_eq!(next, tail.last());
        }
        // Reading across the commit that added b sends b to the database.
        let groups = ["!t:t.example".to_owned()].into_iter().collect();
        assert!(matches!(
            tail.read(b, "D", &groups, 0, 1000),
            TailRead::Reread
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_adding_a_hundred_devices_stores_its_welcome_once_until_the_last_deletes_it() {
    for (store, _d) in testing::stores().await {
        let a = "@a:t.example";
        store
            .hub_log()
            .create_group("!w:t.example", a, "D", 1)
            .await
            .unwrap();
        let added: Vec<Member> = (0..100)
            .map(|i| member(&format!("@u{i}:t.example"), i + 1))
            .collect();
        store
            .hub_log()
            .apply_commit(commit("!w:t.example", 0, a, added, vec![]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.stream().welcome_bodies_stored().await.unwrap(),
            (1, 7)
        );
        let mut ids = Vec::new();
        for i in 0..100 {
            let user = format!("@u{i}:t.example");
            let (_, welcomes, _) = store
                .stream()
                .device_events(&user, "D", 0, 10)
                .await
                .unwrap();
            assert_eq!(welcomes.len(), 1, "{user} has its welcome");
            assert_eq!(welcomes[0].welcome, b"welcome");
            ids.push((user, welcomes[0].id));
        }
        let (last, others) = ids.split_last().unwrap();
        for (user, id) in others {
            assert!(store.stream().delete_welcome(user, "D", *id).await.unwrap());
        }
        assert_eq!(
            store.stream().welcome_bodies_stored().await.unwrap(),
            (1, 7)
        );
        assert!(store
            .stream()
            .delete_welcome(&last.0, "D", last.1)
            .await
            .unwrap());
        assert_eq!(
            store.stream().welcome_bodies_stored().await.unwrap(),
            (0, 0)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_welcome_is_stored_once_for_existing_devices_and_a_replayed_event_not_again() {
    for (store, _d) in testing::stores().await {
        add_user(&store, "me", &["D", "E"]).await;
        let sender = member("@h:hub.example", 0);
        let g = "!rw:hub.example";
        let listed: Vec<(String, String)> = (0..300)
            .map(|i| ("@ghost:t.example".to_owned(), format!("G{i}")))
            .chain([
                ("@me:t.example".into(), "D".into()),
                ("@me:t.example".into(), "E".into()),
            ])
            .collect();
        let queued = store
            .federation()
            .store_remote_welcome("hub.example", "ev1", g, &sender, &[7; 1000], &listed, 1)
            .await
            .unwrap();
        assert_eq!(
            queued,
            [
                ("@me:t.example".to_owned(), "D".to_owned()),
                ("@me:t.example".to_owned(), "E".to_owned())
            ]
        );
        assert_eq!(
            store.stream().welcome_bodies_stored().await.unwrap(),
            (1, 1000)
        );
        // The same event again (another transaction): nothing more.
        let again = store
            .federation()
            .store_remote_welcome("hub.example", "ev1", g, &sender, &[7; 1000], &listed, 1)
            .await
            .unwrap();
        assert!(again.is_empty());
        // No existing recipient: nothing stored.
        let none = store
            .federation()
            .store_remote_welcome(
                "hub.example",
                "ev2",
                g,
                &sender,
                &[7; 1000],
                &listed[..300],
                1,
            )
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(
            store.stream().welcome_bodies_stored().await.unwrap(),
            (1, 1000)
        );
        let (_, welcomes, _) = store
            .stream()
            .device_events("@me:t.example", "D", 0, 10)
            .await
            .unwrap();
        assert_eq!(welcomes.len(), 1);
        assert_eq!(welcomes[0].welcome, vec![7; 1000]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbound_transaction_is_claimed_once_answered_once_and_a_stale_claim_taken_over() {
    use parley_schema::InboundClaim;
    for (store, _d) in testing::stores().await {
        let (o, t) = ("hub.example", "t1");
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, t, 1_000)
                .await
                .unwrap(),
            InboundClaim::Claimed
        );
        // A concurrent copy waits.
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, t, 2_000)
                .await
                .unwrap(),
            InboundClaim::InFlight
        );
        assert_eq!(
            store.federation().inbound_transaction(o, t).await.unwrap(),
            None
        );
        store
            .federation()
            .record_inbound_transaction(o, t, "{\"results\":{}}", 3_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, t, 4_000)
                .await
                .unwrap(),
            InboundClaim::Answered("{\"results\":{}}".into())
        );
        // A claim whose process died is taken over once it is stale; a released one at once.
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, "t2", 0)
                .await
                .unwrap(),
            InboundClaim::Claimed
        );
        let later = parley_schema::federation::INBOUND_CLAIM_STALE_MS + 1;
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, "t2", later)
                .await
                .unwrap(),
            InboundClaim::Claimed
        );
        store
            .federation()
            .release_inbound_transaction(o, "t2")
            .await
            .unwrap();
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction(o, "t2", later + 1)
                .await
                .unwrap(),
            InboundClaim::Claimed
        );
        // Concurrent claims of a new id: exactly one wins.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.federation()
                    .claim_inbound_transaction(o, "t3", 10 + i)
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = 0;
        for task in tasks {
            if task.await.unwrap() == InboundClaim::Claimed {
                claimed += 1;
            }
        }
        assert_eq!(claimed, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_without_group_info_keeps_the_latest_one() {
    for (store, _d) in testing::stores().await {
        let a = "@a:t.example";
        store
            .hub_log()
            .create_group("!gi:t.example", a, "D", 1)
            .await
            .unwrap();
        store
            .hub_log()
            .apply_commit(commit("!gi:t.example", 0, a, vec![], vec![]))
            .await
            .unwrap()
            .unwrap();
        let mut bare = commit("!gi:t.example", 1, a, vec![], vec![]);
        bare.group_info = None;
        store.hub_log().apply_commit(bare).await.unwrap().unwrap();
        let group = store
            .hub_log()
            .group("!gi:t.example")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((group.epoch, group.group_info), (2, Some(b"gi".to_vec())));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn welcomes_are_read_a_bounded_number_at_a_time_and_none_is_skipped() {
    for (store, _d) in testing::stores().await {
        let (a, b) = ("@a:t.example", "@b:t.example");
        for i in 0..20 {
            let g = format!("!w{i}:t.example");
            store.hub_log().create_group(&g, a, "D", 1).await.unwrap();
            store
                .hub_log()
                .apply_commit(commit(&g, 0, a, vec![member(b, 1)], vec![]))
                .await
                .unwrap()
                .unwrap();
        }
        let (_, first, next) = store.stream().device_events(b, "D", 0, 500).await.unwrap();
        assert_eq!(first.len() as i64, parley_schema::stream::WELCOMES_PER_READ);
        let (_, rest, _) = store
            .stream()
            .device_events(b, "D", next, 500)
            .await
            .unwrap();
        let mut groups: Vec<String> = first
            .iter()
            .chain(&rest)
            .map(|w| w.group_id.clone())
            .collect();
        groups.sort();
        groups.dedup();
        assert_eq!(groups.len(), 20);
    }
}
