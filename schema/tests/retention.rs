//! Retention: old `txn_id`s and inbound transaction answers are pruned page by page, recent
//! ones kept; delivered messages are deleted as a prefix of each log, never past what a
//! current device received, the queue still sends or a commit may reference; against both
//! SQLite and PostgreSQL.

use parley_schema::{
    testing, Appended, CommitToApply, GroupMessage, InboundClaim, Member, MessageToAppend,
    NewDevice, RemoteMessage, RemoteStored, RetainedRows, Session, Store, User,
};

const GROUP: &str = "!retained:t.example";

/// A message of `sender` (device `D`) accepted at `ts` with `txn_id`.
fn message(sender: &str, txn_id: &str, ts: i64) -> MessageToAppend {
    MessageToAppend {
        expires_ts: None,
        group_id: GROUP.into(),
        sender_user: sender.into(),
        sender_device: "D".into(),
        kind: "application".into(),
        epoch: 1,
        message: b"ct".to_vec(),
        ts,
        max_past_epochs: 1,
        txn_id: Some(txn_id.into()),
        roster_epoch: 1,
        outbox: vec![],
    }
}

/// `GROUP` at epoch 1 with `a` and `b`.
async fn group_of(store: &Store, a: &str, b: &str) {
    store
        .hub_log()
        .create_group(GROUP, a, "D", 1)
        .await
        .unwrap();
    let add_b = CommitToApply {
        disappear_after_ms: None,
        roles: None,
        join_rules: None,
        group_id: GROUP.into(),
        epoch: 0,
        sender_user: a.into(),
        sender_device: "D".into(),
        message: b"commit".to_vec(),
        adds_json: "[]".into(),
        removes_json: "[]".into(),
        removed: vec![],
        welcome: Some(b"welcome".to_vec()),
        welcome_recipients: vec![(b.into(), "D".into())],
        added: vec![Member {
            user_id: b.into(),
            device_id: "D".into(),
            leaf_index: 1,
        }],
        group_info: None,
        ts: 1,
        outbox: vec![],
    };
    store.hub_log().apply_commit(add_b).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_ids_of_messages_accepted_before_the_cutoff_are_pruned_across_pages_and_later_ones_kept(
) {
    for (store, _dir) in testing::stores().await {
        let (a, b) = ("@a:t.example", "@b:t.example");
        group_of(&store, a, b).await;
        // More old ones than a page, from two senders, around the new ones in key order.
        let old: Vec<(&str, String)> = (0..520)
            .map(|i| (a, format!("old-{i:03}")))
            .chain((0..30).map(|i| (b, format!("old-{i:03}"))))
            .collect();
        let new: Vec<(&str, String)> = [(a, "new-1"), (a, "zzz"), (b, "aaa"), (b, "new-2")]
            .into_iter()
            .map(|(u, t)| (u, t.to_owned()))
            .collect();
        for (sender, txn) in &old {
            store
                .hub_log()
                .append_message(message(sender, txn, 1_000))
                .await
                .unwrap()
                .unwrap();
        }
        for (sender, txn) in &new {
            store
                .hub_log()
                .append_message(message(sender, txn, 5_000))
                .await
                .unwrap()
                .unwrap();
        }
        let rows = store.retention().retained_rows().await.unwrap();
        assert_eq!(rows.transaction_ids, 554);

        assert_eq!(
            store
                .retention()
                .prune_transaction_ids(5_000)
                .await
                .unwrap(),
            550
        );
        for (sender, txn) in &old {
            assert_eq!(
                store.hub_log().txn_seq(sender, "D", txn).await.unwrap(),
                None,
                "{txn}"
            );
        }
        for (sender, txn) in &new {
            assert!(
                store
                    .hub_log()
                    .txn_seq(sender, "D", txn)
                    .await
                    .unwrap()
                    .is_some(),
                "{txn}"
            );
        }
        // A pruned txn_id is free again: the same one is a new send.
        let again = store
            .hub_log()
            .append_message(message(a, "old-000", 6_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.seq(), 556);
        assert_eq!(
            store
                .retention()
                .prune_transaction_ids(5_000)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .retention()
                .retained_rows()
                .await
                .unwrap()
                .transaction_ids,
            5
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_transactions_received_before_the_cutoff_are_pruned_across_pages_and_later_ones_and_live_claims_kept(
) {
    const CUTOFF: i64 = 10_000_000;
    for (store, _dir) in testing::stores().await {
        for i in 0..510 {
            let origin = if i % 2 == 0 { "a.example" } else { "b.example" };
            store
                .federation()
                .record_inbound_transaction(origin, &format!("t{i:03}"), "{}", 1_000_000)
                .await
                .unwrap();
        }
        for (origin, txn) in [("a.example", "new"), ("b.example", "0")] {
            store
                .federation()
                .record_inbound_transaction(origin, txn, "{}", CUTOFF)
                .await
                .unwrap();
        }
        // Claims not answered: one being applied (older than the cutoff, not stale), one
        // whose process died long ago.
        store
            .federation()
            .claim_inbound_transaction("a.example", "live", CUTOFF - 1_000)
            .await
            .unwrap();
        store
            .federation()
            .claim_inbound_transaction("a.example", "dead", 1_000_000)
            .await
            .unwrap();
        assert_eq!(
            store.retention().retained_rows().await.unwrap(),
            RetainedRows {
                key_packages: 0,
                transaction_ids: 0,
                inbound_transactions: 514,
                group_messages: 0,
            }
        );
        assert_eq!(
            store
                .retention()
                .prune_inbound_transactions(CUTOFF)
                .await
                .unwrap(),
            511
        );
        assert_eq!(
            store
                .federation()
                .inbound_transaction("a.example", "t000")
                .await
                .unwrap(),
            None
        );
        for (origin, txn) in [("a.example", "new"), ("b.example", "0")] {
            assert!(store
                .federation()
                .inbound_transaction(origin, txn)
                .await
                .unwrap()
                .is_some());
        }
        assert_eq!(
            store
                .federation()
                .claim_inbound_transaction("a.example", "live", CUTOFF)
                .await
                .unwrap(),
            InboundClaim::InFlight,
            "the live claim was pruned"
        );
        assert_eq!(
            store
                .retention()
                .prune_inbound_transactions(CUTOFF)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .retention()
                .retained_rows()
                .await
                .unwrap()
                .inbound_transactions,
            3
        );
    }
}

/// Users `@name:t.example` with device `D` each.
async fn add_users(store: &Store, names: &[&str]) {
    for name in names {
        let user_id = format!("@{name}:t.example");
        let user = User {
            user_id: user_id.clone(),
            localpart: (*name).into(),
            password_hash: "x".into(),
            created_ts: 0,
        };
        let device = NewDevice {
            user_id: user_id.clone(),
            device_id: "D".into(),
            display_name: None,
            created_ts: 0,
            last_seen_ts: 0,
        };
        let session = Session {
            session_id: format!("{name}-D"),
            user_id,
            device_id: "D".into(),
            created_ts: 0,
        };
        store
            .accounts()
            .create_user_with_session(&user, &device, &session, name.as_bytes(), 1)
            .await
            .unwrap();
    }
}

/// Appends a message of `@a` accepted at `ts`; its stream position.
async fn append(store: &Store, txn_id: &str, kind: &str, ts: i64, outbox: Vec<String>) -> i64 {
    let mut m = message("@a:t.example", txn_id, ts);
    m.kind = kind.into();
    m.outbox = outbox;
    match store.hub_log().append_message(m).await.unwrap().unwrap() {
        Appended::New(accepted) => accepted.stream_pos,
        other => panic!("not appended: {other:?}"),
    }
}

/// The seqs of `GROUP` still stored.
async fn seqs(store: &Store) -> Vec<i64> {
    store
        .hub_log()
        .group_messages_since(GROUP, 0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.seq)
        .collect()
}

async fn received(store: &Store, name: &str, pos: i64) {
    store
        .retention()
        .record_received(vec![(format!("@{name}:t.example"), "D".into(), pos)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn old_messages_go_as_a_prefix_only_up_to_what_every_current_device_received() {
    for (store, _dir) in testing::stores().await {
        add_users(&store, &["a", "b"]).await;
        group_of(&store, "@a:t.example", "@b:t.example").await; // seq 1: the commit adding b
        let mut pos = vec![0];
        for i in 0..10 {
            pos.push(append(&store, &format!("old-{i}"), "application", 1_000, vec![]).await);
        }
        for i in 0..2 {
            pos.push(append(&store, &format!("new-{i}"), "application", 9_000, vec![]).await);
        }
        // pos[k] is the position of seq k + 1.
        assert_eq!(seqs(&store).await, (1..=13).collect::<Vec<_>>());
        let before_rows = store.retention().retained_rows().await.unwrap();
        assert_eq!(before_rows.group_messages, 13);

        // Nobody said anything: nothing goes.
        let none = store.retention().prune_messages(5_000).await.unwrap();
        assert_eq!(none.messages, 0);

        // a has everything old, b up to seq 6: seqs 2..=6 go (b joined at seq 1's position,
        // which it does not need), seq 7 on stay for b.
        received(&store, "a", pos[10]).await;
        received(&store, "b", pos[5]).await;
        let first = store.retention().prune_messages(5_000).await.unwrap();
        assert_eq!((first.messages, first.groups), (6, 1));
        assert_eq!(seqs(&store).await, (7..=13).collect::<Vec<_>>());
        assert_eq!(store.hub_log().pruned_seq(GROUP).await.unwrap(), Some(6));

        // A position never moves back, and one past the head counts as the head.
        received(&store, "b", pos[2]).await;
        received(&store, "b", i64::MAX).await;
        // Now the age bounds it: the two young ones stay.
        let second = store.retention().prune_messages(5_000).await.unwrap();
        assert_eq!(second.messages, 5);
        assert_eq!(seqs(&store).await, vec![12, 13]);
        assert_eq!(store.hub_log().pruned_seq(GROUP).await.unwrap(), Some(11));

        // The txn_ids of deleted messages are forgotten by the next txn prune, whatever its
        // cutoff; those of kept messages stay.
        assert_eq!(
            store.retention().prune_transaction_ids(0).await.unwrap(),
            10
        );
        assert!(store
            .hub_log()
            .txn_seq("@a:t.example", "D", "new-0")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store
                .retention()
                .retained_rows()
                .await
                .unwrap()
                .group_messages,
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_still_queued_for_another_server_or_an_open_proposal_stops_the_prefix() {
    for (store, _dir) in testing::stores().await {
        add_users(&store, &["a", "b"]).await;
        group_of(&store, "@a:t.example", "@b:t.example").await;
        append(&store, "m2", "application", 1_000, vec![]).await;
        append(
            &store,
            "m3",
            "application",
            1_000,
            vec!["far.example".into()],
        )
        .await;
        append(&store, "m4", "proposal", 1_000, vec![]).await; // epoch 1: the current one
        let last = append(&store, "m5", "application", 1_000, vec![]).await;
        for name in ["a", "b"] {
            received(&store, name, last).await;
        }
        let pruned = store.retention().prune_messages(i64::MAX).await.unwrap();
        assert_eq!(pruned.messages, 2, "seq 3 waits in the queue");
        assert_eq!(seqs(&store).await, vec![3, 4, 5]);

        // Sent: the queue no longer holds it, and the proposal a commit may still reference
        // stops the prefix.
        let rows = store
            .outbox()
            .outbox_batch("far.example", 10)
            .await
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        store.outbox().delete_outbox(&ids).await.unwrap();
        let pruned = store.retention().prune_messages(i64::MAX).await.unwrap();
        assert_eq!(pruned.messages, 1);
        assert_eq!(seqs(&store).await, vec![4, 5]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_device_no_longer_holds_messages_back() {
    for (store, _dir) in testing::stores().await {
        add_users(&store, &["a", "b"]).await;
        group_of(&store, "@a:t.example", "@b:t.example").await;
        let last = append(&store, "m2", "application", 1_000, vec![]).await;
        received(&store, "a", last).await;
        // b needs nothing up to the commit that added it, but seq 2.
        assert_eq!(
            store
                .retention()
                .prune_messages(5_000)
                .await
                .unwrap()
                .messages,
            1
        );
        assert_eq!(seqs(&store).await, vec![2]);
        assert!(store
            .accounts()
            .delete_device("@b:t.example", "D")
            .await
            .unwrap());
        assert_eq!(
            store
                .retention()
                .prune_messages(5_000)
                .await
                .unwrap()
                .messages,
            1
        );
        assert!(seqs(&store).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_group_skips_over_what_its_hub_deleted_and_stores_on_from_there() {
    for (store, _dir) in testing::stores().await {
        let g = "!pruned:hub.example";
        let relayed = |seq: i64, kind: &str, adds: Vec<(String, String)>| RemoteMessage {
            message: GroupMessage {
                expires_ts: None,
                group_id: g.into(),
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
            local_adds: adds,
            local_removes: vec![],
        };
        let me = vec![("@me:t.example".to_owned(), "D".to_owned())];
        assert_eq!(
            store
                .federation()
                .store_remote_message(relayed(2, "commit", me))
                .await
                .unwrap(),
            RemoteStored::Stored
        );
        assert_eq!(
            store
                .federation()
                .store_remote_message(relayed(9, "application", vec![]))
                .await
                .unwrap(),
            RemoteStored::Gap { last_seq: 2 }
        );
        // The hub says it deleted up to 8: skipping there makes 9 the successor.
        assert!(store.federation().skip_pruned(g, 8).await.unwrap());
        assert!(
            !store.federation().skip_pruned(g, 5).await.unwrap(),
            "never back"
        );
        assert_eq!(
            store
                .federation()
                .store_remote_message(relayed(9, "application", vec![]))
                .await
                .unwrap(),
            RemoteStored::Stored
        );
        assert_eq!(store.hub_log().group(g).await.unwrap().unwrap().last_seq, 9);
    }
}
