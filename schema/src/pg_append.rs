//! Appends of messages on PostgreSQL, for all the sends waiting in a writer batch at once.
//!
//! One send on its own costs a statement per step (take the group's next seq, claim the
//! `txn_id`, take a stream position, insert the message, queue it for other servers), and
//! PostgreSQL's cost per statement dominates. The writer therefore hands the appends that
//! queue together to [`run`], which takes the same steps once for all of them: it locks and
//! reads the groups and the used `txn_id`s, decides each message in submission order exactly
//! as the SQLite statements do, then writes every row with one statement per table.
//!
//! Outcomes are those of the one-message append in `groups.rs`:
//! - a `txn_id` the device already used (before, or earlier in the same batch) appends
//!   nothing and answers the first send's seq;
//! - the group must still be at the roster's epoch, and the message's epoch in its window;
//! - otherwise the message takes the group's next seq and the next stream position, and is
//!   queued for each other member server.

use std::collections::HashMap;

use diesel::sql_types::{Array, BigInt, Binary, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;

use crate::append::{Accepted, AppendResult, Appended, MessageToAppend, Refused};
use crate::fixed_sql::FixedSql;
use crate::rows::GroupMessage;
use crate::tail::TailMessage;
use crate::writer::{finishing, Finish};
use crate::{StoreError, StoreResult};

/// The store's hook run once an append's batch has committed (or failed to).
pub(crate) type AfterAppend = Box<dyn FnOnce(Option<&mut AppendResult>) + Send>;

/// Columns of the `txn_id`s claimed: user, device, txn_id, group, seq.
#[derive(Default)]
struct Claims {
    users: Vec<String>,
    devices: Vec<String>,
    txn_ids: Vec<String>,
    groups: Vec<String>,
    seqs: Vec<i64>,
}

/// A send waiting in the PostgreSQL writer's queue.
pub(crate) struct PendingAppend {
    pub(crate) msg: MessageToAppend,
    /// The store's after-commit hook (publishes to the stream tail).
    pub(crate) after: AfterAppend,
    pub(crate) done: tokio::sync::oneshot::Sender<StoreResult<AppendResult>>,
}

/// Appends `group` in order and says, for each, whether it succeeded and what to do once the
/// batch has committed. A storage error fails them all (the writer then rolls the batch back).
pub(crate) fn run(
    conn: &mut AsyncPgConnection,
    group: Vec<PendingAppend>,
) -> BoxFuture<'_, Vec<(bool, Finish)>> {
    Box::pin(async move {
        let (msgs, answers): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|p| (p.msg, (p.after, p.done)))
            .unzip();
        match append_all(conn, msgs).await {
            Ok(results) => results
                .into_iter()
                .zip(answers)
                .map(|(result, (after, done))| finishing(Ok(result), after, done))
                .collect(),
            Err(e) => {
                let reason = e.to_string();
                let mut first = Some(e);
                answers
                    .into_iter()
                    .map(|(after, done)| {
                        let error = first
                            .take()
                            .unwrap_or_else(|| StoreError::Pool(reason.clone()));
                        finishing::<AppendResult, _>(Err(error), after, done)
                    })
                    .collect()
            }
        }
    })
}

#[derive(diesel::QueryableByName)]
struct GroupRow {
    #[diesel(sql_type = Text)]
    group_id: String,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

#[derive(diesel::QueryableByName)]
struct UsedTxn {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    device_id: String,
    #[diesel(sql_type = Text)]
    txn_id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

#[derive(diesel::QueryableByName)]
struct Position {
    #[diesel(sql_type = BigInt)]
    pos: i64,
}

/// A device's `txn_id`.
type TxnKey = (String, String, String);

fn txn_key(msg: &MessageToAppend) -> Option<TxnKey> {
    msg.txn_id.as_ref().map(|t| {
        (
            msg.sender_user.clone(),
            msg.sender_device.clone(),
            t.clone(),
        )
    })
}

/// What was decided for one message before anything is written.
enum Decision {
    Done(Result<Appended, Refused>),
    /// Accepted with this seq; its stream position is assigned once all are counted.
    Append {
        seq: i64,
    },
}

async fn append_all(
    conn: &mut AsyncPgConnection,
    msgs: Vec<MessageToAppend>,
) -> StoreResult<Vec<AppendResult>> {
    // The groups, locked until commit: another process appending to them waits, so the seqs
    // decided here stay this batch's.
    let mut group_ids: Vec<&str> = msgs.iter().map(|m| m.group_id.as_str()).collect();
    group_ids.sort_unstable();
    group_ids.dedup();
    let rows: Vec<GroupRow> = FixedSql::new(
        diesel::sql_query(
            "SELECT group_id, epoch, last_seq FROM groups WHERE group_id = ANY($1) \
             ORDER BY group_id FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&group_ids),
    )
    .load(conn)
    .await?;
    let mut groups: HashMap<String, (i64, i64)> = rows
        .into_iter()
        .map(|g| (g.group_id, (g.epoch, g.last_seq)))
        .collect();

    let keys: Vec<TxnKey> = msgs.iter().filter_map(txn_key).collect();
    let mut used: HashMap<TxnKey, i64> = HashMap::new();
    if !keys.is_empty() {
        let users: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let devices: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let txns: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
        let found: Vec<UsedTxn> = FixedSql::new(
            diesel::sql_query(
                // One primary-key look-up per key: the LIMIT keeps the planner from pulling
                // the subquery up into a join, which it would hash over the whole table
                // (once per batch) because it guesses 100 keys for any array.
                "SELECT k.u AS user_id, k.d AS device_id, k.x AS txn_id, t.seq \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(u, d, x) \
                 CROSS JOIN LATERAL (SELECT seq FROM transaction_ids \
                     WHERE user_id = k.u AND device_id = k.d AND txn_id = k.x LIMIT 1) AS t",
            )
            .bind::<Array<Text>, _>(&users)
            .bind::<Array<Text>, _>(&devices)
            .bind::<Array<Text>, _>(&txns),
        )
        .load(conn)
        .await?;
        used.extend(
            found
                .into_iter()
                .map(|t| ((t.user_id, t.device_id, t.txn_id), t.seq)),
        );
    }

    // Each message in order, as the one-message append decides it.
    let mut decisions = Vec::with_capacity(msgs.len());
    for msg in &msgs {
        let key = txn_key(msg);
        if let Some(seq) = key.as_ref().and_then(|k| used.get(k)) {
            decisions.push(Decision::Done(Ok(Appended::Replayed { seq: *seq })));
            continue;
        }
        let lowest = msg.roster_epoch - msg.max_past_epochs;
        let in_window = (lowest..=msg.roster_epoch).contains(&msg.epoch);
        let decision = match groups.get_mut(&msg.group_id) {
            None => Decision::Done(Err(Refused::NoGroup)),
            Some((epoch, last_seq)) if *epoch == msg.roster_epoch && in_window => {
                *last_seq += 1;
                if let Some(key) = key {
                    used.insert(key, *last_seq);
                }
                Decision::Append { seq: *last_seq }
            }
            Some((e, _)) if *e != msg.roster_epoch => Decision::Done(Err(Refused::RosterChanged)),
            Some((e, _)) if msg.epoch > *e => Decision::Done(Err(Refused::FutureEpoch(*e))),
            Some((e, _)) => Decision::Done(Err(Refused::StaleEpoch(*e))),
        };
        decisions.push(decision);
    }
    let appended = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Append { .. }))
        .count() as i64;
    if appended == 0 {
        return Ok(decisions
            .into_iter()
            .map(|d| match d {
                Decision::Done(outcome) => outcome.map(|a| (a, None)),
                Decision::Append { .. } => unreachable!("none appended"),
            })
            .collect());
    }

    // Positions for all of them at once; the row lock orders this batch against any other
    // writer's.
    let last: Position = FixedSql::new(
        diesel::sql_query("UPDATE stream_position SET pos = pos + $1 WHERE id = 1 RETURNING pos")
            .bind::<BigInt, _>(appended),
    )
    .get_result(conn)
    .await?;
    let mut next_pos = last.pos - appended + 1;

    let mut stored = Vec::with_capacity(appended as usize);
    let mut results = Vec::with_capacity(msgs.len());
    let mut outbox: (Vec<String>, Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
    let mut claims = Claims::default();
    for (msg, decision) in msgs.into_iter().zip(decisions) {
        let seq = match decision {
            Decision::Done(outcome) => {
                results.push(Some(outcome));
                continue;
            }
            Decision::Append { seq } => seq,
        };
        let stream_pos = next_pos;
        next_pos += 1;
        for destination in msg.outbox {
            outbox.0.push(destination);
            outbox.1.push(msg.group_id.clone());
            outbox.2.push(seq);
            outbox.3.push(msg.ts);
        }
        if let Some(txn_id) = msg.txn_id {
            claims.users.push(msg.sender_user.clone());
            claims.devices.push(msg.sender_device.clone());
            claims.txn_ids.push(txn_id);
            claims.groups.push(msg.group_id.clone());
            claims.seqs.push(seq);
        }
        results.push(None);
        stored.push((
            GroupMessage {
                group_id: msg.group_id,
                seq,
                stream_pos,
                sender_user: msg.sender_user,
                sender_device: msg.sender_device,
                kind: msg.kind,
                epoch: msg.epoch,
                message: msg.message,
                adds: None,
                removes: None,
                ts: msg.ts,
            },
            msg.roster_epoch,
        ));
    }

    {
        let column = |f: fn(&GroupMessage) -> &str| -> Vec<&str> {
            stored.iter().map(|(m, _)| f(m)).collect()
        };
        let bodies: Vec<&[u8]> = stored.iter().map(|(m, _)| m.message.as_slice()).collect();
        let seqs: Vec<i64> = stored.iter().map(|(m, _)| m.seq).collect();
        let positions: Vec<i64> = stored.iter().map(|(m, _)| m.stream_pos).collect();
        let epochs: Vec<i64> = stored.iter().map(|(m, _)| m.epoch).collect();
        let times: Vec<i64> = stored.iter().map(|(m, _)| m.ts).collect();
        FixedSql::new(
            diesel::sql_query(
                "INSERT INTO group_messages \
                 (group_id, seq, stream_pos, sender_user, sender_device, kind, epoch, message, ts) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], \
                 $5::text[], $6::text[], $7::int8[], $8::bytea[], $9::int8[])",
            )
            .bind::<Array<Text>, _>(column(|m| &m.group_id))
            .bind::<Array<BigInt>, _>(&seqs)
            .bind::<Array<BigInt>, _>(&positions)
            .bind::<Array<Text>, _>(column(|m| &m.sender_user))
            .bind::<Array<Text>, _>(column(|m| &m.sender_device))
            .bind::<Array<Text>, _>(column(|m| &m.kind))
            .bind::<Array<BigInt>, _>(&epochs)
            .bind::<Array<Binary>, _>(&bodies)
            .bind::<Array<BigInt>, _>(&times),
        )
        .execute(conn)
        .await?;
    }
    if !claims.users.is_empty() {
        let claimed = FixedSql::new(
            diesel::sql_query(
                "INSERT INTO transaction_ids (user_id, device_id, txn_id, group_id, seq) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                 ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
            )
            .bind::<Array<Text>, _>(&claims.users)
            .bind::<Array<Text>, _>(&claims.devices)
            .bind::<Array<Text>, _>(&claims.txn_ids)
            .bind::<Array<Text>, _>(&claims.groups)
            .bind::<Array<BigInt>, _>(&claims.seqs),
        )
        .execute(conn)
        .await?;
        if claimed != claims.users.len() {
            // Another process claimed one of the txn_ids since it was looked up. Failing rolls
            // the batch back; the retry finds the first send's seq.
            return Err(StoreError::Conflict);
        }
    }
    // The groups' new last seqs: the highest taken in each.
    let mut last_seqs: HashMap<&str, i64> = HashMap::new();
    for (m, _) in &stored {
        last_seqs.insert(m.group_id.as_str(), m.seq);
    }
    let (seq_groups, seq_values): (Vec<&str>, Vec<i64>) = last_seqs.into_iter().unzip();
    FixedSql::new(
        diesel::sql_query(
            // `= ANY($1)`: found by primary key, whatever the planner guesses of the join.
            "UPDATE groups SET last_seq = v.seq \
             FROM unnest($1::text[], $2::int8[]) AS v(group_id, seq) \
             WHERE groups.group_id = ANY($1) AND groups.group_id = v.group_id",
        )
        .bind::<Array<Text>, _>(&seq_groups)
        .bind::<Array<BigInt>, _>(&seq_values),
    )
    .execute(conn)
    .await?;
    if !outbox.0.is_empty() {
        FixedSql::new(
            diesel::sql_query(
                "INSERT INTO outbox (destination, kind, group_id, seq, created_ts) \
                 SELECT d, 'message', g, s, t \
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS v(d, g, s, t)",
            )
            .bind::<Array<Text>, _>(&outbox.0)
            .bind::<Array<Text>, _>(&outbox.1)
            .bind::<Array<BigInt>, _>(&outbox.2)
            .bind::<Array<BigInt>, _>(&outbox.3),
        )
        .execute(conn)
        .await?;
    }

    let mut stored = stored.into_iter();
    Ok(results
        .into_iter()
        .map(|decided| match decided {
            Some(outcome) => outcome.map(|a| (a, None)),
            None => {
                let Some((message, roster_epoch)) = stored.next() else {
                    unreachable!("one stored row per accepted message")
                };
                let accepted = Accepted {
                    seq: message.seq,
                    stream_pos: message.stream_pos,
                    epoch: roster_epoch,
                };
                Ok((
                    Appended::New(accepted),
                    Some(std::sync::Arc::new(TailMessage::new(message))),
                ))
            }
        })
        .collect())
}
