//! Appends of messages on PostgreSQL, for all the sends waiting in a writer batch at once.
//!
//! One send on its own costs a statement per step (take the group's next seq, claim the
//! `txn_id`, take a stream position, insert the message, queue it for other servers), and
//! PostgreSQL's cost per statement dominates. The writer therefore hands the appends that
//! queue together to [`run`], which takes the same steps once for all of them, in one
//! statement ([`APPEND_BATCH`]): it locks the groups, looks up the used `txn_id`s, decides each
//! message as the SQLite statements do, and writes every row. A batch of nothing but appends
//! runs that statement without a transaction around it: it is atomic by itself.
//!
//! Outcomes are those of the one-message append in `hub_log.rs`:
//! - a `txn_id` the device already used (before, or earlier in the same batch) appends
//!   nothing and answers the first send's seq;
//! - the group must still be at the roster's epoch, and the message's epoch in its window;
//! - otherwise the message takes the group's next seq and the next stream position, and is
//!   queued for each other member server.

use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::BoxFuture;

use crate::append::{Accepted, AppendResult, Appended, MessageToAppend, Refused};
use crate::fixed_sql::FixedSql;
use crate::rows::GroupMessage;
use crate::writer::{finishing, Finish};
use crate::{StoreError, StoreResult};

/// The store's hook run once an append's batch has committed (or failed to).
pub(crate) type AfterAppend = Box<dyn FnOnce(Option<&mut AppendResult>) + Send>;

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

/// The whole batch in one statement. Inputs are parallel arrays, one element per message in
/// submission order (`n`, from 1): `$1` group, `$2` roster epoch, `$3` in its epoch window,
/// `$4` txn_id (NULL: none), `$5` sender user, `$6` sender device, `$7` kind, `$8` epoch,
/// `$9` message, `$10` ts, `$13` expires_ts (NULL: none); `$11`/`$12` the outbox rows (message
/// `n`, destination).
///
/// A message is *eligible* if its group exists at its roster epoch, its epoch is in the
/// window, and its txn_id was never used. Then, in submission order as the one-message append
/// decides: a txn_id used by an earlier eligible message of the batch replays it; an eligible
/// message is appended; the others are refused. The data-modifying parts all see the same
/// snapshot, and work only from the rows computed before them.
const APPEND_BATCH: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::bool[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::int8[], $9::bytea[], $10::int8[], $13::int8[])
        WITH ORDINALITY AS i(group_id, roster_epoch, in_window, txn_id, sender_user,
            sender_device, kind, epoch, message, ts, expires_ts, n)
),
locked AS MATERIALIZED (
    -- Locked until commit, in one order: another writer appending to them waits.
    SELECT group_id, epoch, last_seq FROM groups
    WHERE group_id = ANY($1) ORDER BY group_id FOR UPDATE
),
prior AS (
    -- One primary-key look-up per message: the LIMIT keeps the planner from making this a
    -- join, which it would hash over the whole table (it guesses 100 rows for any array).
    SELECT i.n, t.seq FROM input i CROSS JOIN LATERAL (
        SELECT seq FROM transaction_ids
        WHERE user_id = i.sender_user AND device_id = i.sender_device AND txn_id = i.txn_id
        LIMIT 1) t
),
judged AS (
    SELECT i.*, l.epoch AS current_epoch, l.last_seq, p.seq AS prior_seq,
        (l.group_id IS NOT NULL AND l.epoch = i.roster_epoch AND i.in_window
            AND p.seq IS NULL) AS eligible
    FROM input i
    LEFT JOIN locked l ON l.group_id = i.group_id
    LEFT JOIN prior p ON p.n = i.n
),
firsts AS (
    SELECT j.*, CASE WHEN j.txn_id IS NOT NULL THEN
        min(j.n) FILTER (WHERE j.eligible)
            OVER (PARTITION BY j.sender_user, j.sender_device, j.txn_id) END AS first_n
    FROM judged j
),
taken AS (
    SELECT f.*,
        f.last_seq + row_number() OVER (PARTITION BY f.group_id ORDER BY f.n) AS seq,
        row_number() OVER (ORDER BY f.n) AS rank
    FROM firsts f
    WHERE f.eligible AND (f.txn_id IS NULL OR f.first_n = f.n)
),
position AS (
    UPDATE stream_position SET pos = pos + (SELECT count(*) FROM taken) WHERE id = 1
    RETURNING pos
),
appended AS (
    SELECT t.*, p.pos - (SELECT count(*) FROM taken) + t.rank AS stream_pos
    FROM taken t, position p
),
messages AS (
    INSERT INTO group_messages
        (group_id, seq, stream_pos, sender_user, sender_device, kind, epoch, message, ts,
            expires_ts)
    SELECT group_id, seq, stream_pos, sender_user, sender_device, kind, epoch, message, ts,
        expires_ts
    FROM appended
),
claims AS (
    INSERT INTO transaction_ids (user_id, device_id, txn_id, group_id, seq)
    SELECT sender_user, sender_device, txn_id, group_id, seq FROM appended
    WHERE txn_id IS NOT NULL
    ON CONFLICT (user_id, device_id, txn_id) DO NOTHING
    RETURNING 1
),
last_seqs AS (
    UPDATE groups g SET last_seq = m.seq
    FROM (SELECT group_id, max(seq) AS seq FROM appended GROUP BY group_id) m
    WHERE g.group_id = ANY($1) AND g.group_id = m.group_id
),
queued AS (
    INSERT INTO outbox (destination, kind, group_id, seq, created_ts)
    SELECT o.destination, 'message', a.group_id, a.seq, a.ts
    FROM unnest($11::int8[], $12::text[]) AS o(n, destination)
    JOIN appended a ON a.n = o.n
)
SELECT f.n, a.seq, a.stream_pos, f.prior_seq, r.seq AS replayed_seq, f.current_epoch,
    -- Fails the statement (division by zero), so that nothing of it stands, if another
    -- writer of the database claimed one of the txn_ids after this statement's snapshot:
    -- its message would otherwise be stored without its claim. The retry finds the first
    -- send's seq.
    1 / ((SELECT count(*) FROM claims) = (SELECT count(*) FROM appended WHERE txn_id IS NOT NULL))::int
        AS claims_complete
FROM firsts f
LEFT JOIN appended a ON a.n = f.n
LEFT JOIN appended r ON r.n = f.first_n AND f.first_n < f.n
ORDER BY f.n";

/// What the statement says of one message.
#[derive(diesel::QueryableByName)]
struct Outcome {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    stream_pos: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    prior_seq: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    replayed_seq: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    current_epoch: Option<i64>,
    /// Always 1: the statement fails instead (see [`APPEND_BATCH`]). Selected so that the
    /// guard is evaluated, and checked so that a rewrite that loses it is caught.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    claims_complete: i32,
}

async fn append_all(
    conn: &mut AsyncPgConnection,
    msgs: Vec<MessageToAppend>,
) -> StoreResult<Vec<AppendResult>> {
    let in_window: Vec<bool> = msgs
        .iter()
        .map(|m| (m.roster_epoch - m.max_past_epochs..=m.roster_epoch).contains(&m.epoch))
        .collect();
    let column = |f: fn(&MessageToAppend) -> &str| -> Vec<&str> { msgs.iter().map(f).collect() };
    let numbers = |f: fn(&MessageToAppend) -> i64| -> Vec<i64> { msgs.iter().map(f).collect() };
    let txn_ids: Vec<Option<&str>> = msgs.iter().map(|m| m.txn_id.as_deref()).collect();
    let bodies: Vec<&[u8]> = msgs.iter().map(|m| m.message.as_slice()).collect();
    let expiries: Vec<Option<i64>> = msgs.iter().map(|m| m.expires_ts).collect();
    let (mut outbox_of, mut outbox_to): (Vec<i64>, Vec<&str>) = (Vec::new(), Vec::new());
    for (i, m) in msgs.iter().enumerate() {
        for destination in &m.outbox {
            outbox_of.push(i as i64 + 1);
            outbox_to.push(destination);
        }
    }
    let outcomes: Vec<Outcome> = FixedSql::new(
        diesel::sql_query(APPEND_BATCH)
            .bind::<Array<Text>, _>(column(|m| &m.group_id))
            .bind::<Array<BigInt>, _>(numbers(|m| m.roster_epoch))
            .bind::<Array<Bool>, _>(&in_window)
            .bind::<Array<Nullable<Text>>, _>(&txn_ids)
            .bind::<Array<Text>, _>(column(|m| &m.sender_user))
            .bind::<Array<Text>, _>(column(|m| &m.sender_device))
            .bind::<Array<Text>, _>(column(|m| &m.kind))
            .bind::<Array<BigInt>, _>(numbers(|m| m.epoch))
            .bind::<Array<Binary>, _>(&bodies)
            .bind::<Array<BigInt>, _>(numbers(|m| m.ts))
            .bind::<Array<BigInt>, _>(&outbox_of)
            .bind::<Array<Text>, _>(&outbox_to)
            .bind::<Array<Nullable<BigInt>>, _>(&expiries),
    )
    .load(conn)
    .await?;
    drop((bodies, txn_ids, outbox_to));
    if outcomes.len() != msgs.len()
        || outcomes
            .iter()
            .zip(1..)
            .any(|(o, n)| o.n != n || o.claims_complete != 1)
    {
        return Err(StoreError::Pool(format!(
            "the batch append answered {} rows for {} messages",
            outcomes.len(),
            msgs.len()
        )));
    }
    Ok(msgs
        .into_iter()
        .zip(outcomes)
        .map(|(msg, o)| {
            if let Some(seq) = o.prior_seq.or(o.replayed_seq) {
                return Ok((Appended::Replayed { seq }, None));
            }
            let (Some(seq), Some(stream_pos)) = (o.seq, o.stream_pos) else {
                return Err(match o.current_epoch {
                    None => Refused::NoGroup,
                    Some(e) if e != msg.roster_epoch => Refused::RosterChanged,
                    Some(e) if msg.epoch > e => Refused::FutureEpoch(e),
                    Some(e) => Refused::StaleEpoch(e),
                });
            };
            let accepted = Accepted {
                seq,
                stream_pos,
                epoch: msg.roster_epoch,
            };
            let stored = GroupMessage {
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
                expires_ts: msg.expires_ts,
            };
            Ok((Appended::New(accepted), Some(std::sync::Arc::new(stored))))
        })
        .collect())
}
