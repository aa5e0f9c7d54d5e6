//! The store's single writer under concurrent load, on both backends: what a reader sees while
//! sends are committed in batches, and (PostgreSQL) a writer whose connection dies mid-batch.

use std::collections::HashSet;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use parley_schema::{testing, Appended, MessageToAppend, Store, StoreConfig};

const READER: &str = "@reader:w.example";
const GROUPS: [&str; 3] = ["!a:w.example", "!b:w.example", "!c:w.example"];

/// A store with three groups whose only member is the reader's device `D`.
async fn store_with_groups(url: &str) -> Store {
    let store = Store::connect(url, &StoreConfig::default()).await.unwrap();
    for g in GROUPS {
        store
            .hub_log()
            .create_group(g, READER, "D", 1)
            .await
            .unwrap();
    }
    store
}

fn send(group: &str, sender: usize, n: usize) -> MessageToAppend {
    MessageToAppend {
        expires_ts: None,
        group_id: group.into(),
        sender_user: format!("@s{sender}:w.example"),
        sender_device: "D".into(),
        kind: "application".into(),
        epoch: 0,
        message: format!("{sender}/{n}").into_bytes(),
        ts: 7,
        max_past_epochs: 1,
        // Every tenth send reuses the one before's txn_id: a replay amid new sends.
        txn_id: Some(format!("t{}", n - usize::from(n % 10 == 9))),
        roster_epoch: 0,
        outbox: vec![],
    }
}

/// 16 senders append 40 messages each over three groups while a reader pages through the
/// device's events; returns the positions the reader saw, in the order it saw them, and
/// those of every acknowledged new append.
async fn read_while_sending(store: &Store) -> (Vec<i64>, HashSet<i64>) {
    let start = store.stream().stream_position().await.unwrap();
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..40 {
                    let group = GROUPS[(s + n) % GROUPS.len()];
                    if let Ok(Appended::New(a)) = store
                        .hub_log()
                        .append_message(send(group, s, n))
                        .await
                        .unwrap()
                    {
                        acknowledged.push(a.stream_pos);
                    }
                }
                acknowledged
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut since = start;
            let mut quiet = 0;
            // Pages of 7 cut through batches; stop once nothing new came for a while after
            // the senders are done (the caller checks the count).
            while quiet < 50 {
                let (messages, _, next) = store
                    .stream()
                    .device_events(READER, "D", since, 7)
                    .await
                    .unwrap();
                if messages.is_empty() {
                    quiet += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                } else {
                    quiet = 0;
                }
                seen.extend(messages.iter().map(|m| m.stream_pos));
                assert!(
                    next >= since,
                    "the since token went back: {since} -> {next}"
                );
                since = next;
            }
            seen
        })
    };
    let mut acknowledged = HashSet::new();
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    (reader.await.unwrap(), acknowledged)
}

async fn check_reader_sees_every_position_once_in_order(store: &Store) {
    let (seen, acknowledged) = read_while_sending(store).await;
    // 16 × 40 sends, of which each sender's every tenth replays the one before.
    assert_eq!(acknowledged.len(), 16 * 36);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions became visible out of order"
    );
    let seen_set: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        seen_set, acknowledged,
        "the reader skipped or invented positions"
    );
    // A re-sync from the start replays the same events.
    let (again, _, _) = store
        .stream()
        .device_events(READER, "D", 0, 10_000)
        .await
        .unwrap();
    let again: Vec<i64> = again
        .iter()
        .filter(|m| m.kind == "application")
        .map(|m| m.stream_pos)
        .collect();
    assert_eq!(again, seen);
    // Seqs stay gap-free per group.
    for g in GROUPS {
        let seqs: Vec<i64> = store
            .hub_log()
            .group_messages_since(g, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{g}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_during_concurrent_sends_sees_every_position_once_and_in_order_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_groups(&testing::sqlite_url(dir.path())).await;
    check_reader_sees_every_position_once_in_order(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_during_concurrent_sends_sees_every_position_once_and_in_order_on_postgres() {
    let store = store_with_groups(&testing::fresh_postgres_url().await).await;
    check_reader_sees_every_position_once_in_order(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_writer_killed_mid_batch_loses_no_acknowledged_send_and_reconnects() {
    let url = testing::fresh_postgres_url().await;
    let store = store_with_groups(&url).await;
    let killer = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
            let mut killed = 0;
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                // Every other session of this database: the writer's (mid-batch under this
                // load) and the readers'.
                killed += diesel::sql_query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .execute(&mut admin)
                .await
                .unwrap();
            }
            killed
        })
    };
    let senders: Vec<_> = (0..8)
        .map(|s| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut acknowledged, mut failed) = (Vec::new(), 0);
                for n in 0..150 {
                    let mut msg = send(GROUPS[s % GROUPS.len()], s, n);
                    msg.txn_id = Some(format!("k{n}"));
                    match store.hub_log().append_message(msg).await {
                        Ok(Ok(Appended::New(a))) => acknowledged.push((a.seq, a.stream_pos)),
                        Ok(other) => panic!("unexpected outcome {other:?}"),
                        Err(_) => failed += 1,
                    }
                }
                (acknowledged, failed)
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for s in senders {
        let (a, f) = s.await.unwrap();
        acknowledged.extend(a);
        failed += f;
    }
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no session was killed");
    assert!(failed > 0, "no send failed: the writer was never hit");
    // The writer reconnected: a send now succeeds.
    let late = store
        .hub_log()
        .append_message(send(GROUPS[0], 99, 0))
        .await
        .expect("the writer reconnects")
        .unwrap();
    assert!(matches!(late, Appended::New(_)));
    // Every acknowledged send is stored, and seqs are gap-free.
    let mut stored = HashSet::new();
    for g in GROUPS {
        let messages = store
            .hub_log()
            .group_messages_since(g, 0, 100_000)
            .await
            .unwrap();
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{g}");
        stored.extend(messages.iter().map(|m| m.stream_pos));
    }
    for (_, pos) in &acknowledged {
        assert!(stored.contains(pos), "acknowledged position {pos} was lost");
    }
    eprintln!(
        "{} acknowledged, {failed} failed, {killed} sessions killed",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_postgres_database_racing_on_the_same_txn_ids_store_each_once() {
    // Two stores stand for two server processes: each has its own writer.
    let url = testing::fresh_postgres_url().await;
    let first = store_with_groups(&url).await;
    let second = Store::connect(&url, &StoreConfig::default()).await.unwrap();
    let tasks: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .flat_map(|store| {
            (0..6).map(move |t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for n in 0..40 {
                        // Every task of both stores sends the same 40 txn_ids of one device.
                        let mut msg = send(GROUPS[0], 0, n);
                        msg.txn_id = Some(format!("shared{n}"));
                        msg.message = format!("{t}/{n}").into_bytes();
                        outcomes.push((n, store.hub_log().append_message(msg).await));
                    }
                    outcomes
                })
            })
        })
        .collect();
    let mut new_per_txn = std::collections::HashMap::<usize, Vec<i64>>::new();
    let (mut replays, mut lost_races) = (0, 0);
    for task in tasks {
        for (n, outcome) in task.await.unwrap() {
            match outcome {
                Ok(Ok(Appended::New(a))) => new_per_txn.entry(n).or_default().push(a.seq),
                Ok(Ok(Appended::Replayed { .. })) => replays += 1,
                Ok(Err(refused)) => panic!("refused: {refused:?}"),
                // A race lost between the two stores fails the whole statement.
                Err(_) => lost_races += 1,
            }
        }
    }
    eprintln!("{replays} replays, {lost_races} sends failed on a lost race");
    assert!(replays > 0);
    for (n, seqs) in &new_per_txn {
        assert_eq!(
            seqs.len(),
            1,
            "txn_id shared{n} was appended {} times",
            seqs.len()
        );
    }
    let stored = first
        .hub_log()
        .group_messages_since(GROUPS[0], 0, 10_000)
        .await
        .unwrap();
    let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        stored.len(),
        new_per_txn.len(),
        "a message without its claim"
    );
    let positions: Vec<i64> = stored.iter().map(|m| m.stream_pos).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
}
