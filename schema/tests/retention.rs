//! Retention: old `txn_id`s and inbound transaction answers are pruned page by page, recent
//! ones kept, against both SQLite and PostgreSQL.

use parley_schema::{
    testing, CommitToApply, InboundClaim, Member, MessageToAppend, RetainedRows, Store,
};

const GROUP: &str = "!retained:t.example";

/// A message of `sender` (device `D`) accepted at `ts` with `txn_id`.
fn message(sender: &str, txn_id: &str, ts: i64) -> MessageToAppend {
    MessageToAppend {
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
