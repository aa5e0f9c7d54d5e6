//! Retention: forgetting what is kept only for a while. Used client `txn_id`s and the answers
//! to inbound federation transactions are remembered so that retries are answered alike; past
//! a retention period they are pruned. Expired key packages are purged by
//! [`crate::keys::KeyDirectory::purge_expired_key_packages`]. Delivered messages past the
//! message retention period are deleted, a prefix of each group's log at a time, never one
//! that a current member device has not said it received, that the federation queue still
//! has to send, or that a commit may still reference (a proposal of the current epoch).
//!
//! Pruning reads a page of keys on a reader connection and deletes them in one small write, so
//! that the SQLite writer never runs one long delete while sends wait behind it. Pages follow
//! the primary key (keyset pagination), so a pass reads each row once.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::federation::INBOUND_CLAIM_STALE_MS;
use crate::schema::{
    devices, group_messages, groups, inbound_transactions, key_packages, memberships, outbox,
    stream_position, transaction_ids,
};
use crate::{with_conn, Store, StoreError, StoreResult};

// A `txn_id` is as old as the message it sent: its row names the message by (group, seq), and
// the message's `ts` is when the hub accepted it, in the same transaction.
diesel::allow_tables_to_appear_in_same_query!(transaction_ids, group_messages);
// A member device's received position bounds what may be deleted of its groups' logs.
diesel::allow_tables_to_appear_in_same_query!(memberships, devices);

/// Rows read per page, and deleted per write, when pruning.
pub const PRUNE_PAGE: i64 = 500;

/// Row counts of the tables retention prunes (for operators and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetainedRows {
    /// Key packages, expired ones included.
    pub key_packages: i64,
    /// Used client `txn_id`s.
    pub transaction_ids: i64,
    /// Remembered answers to inbound federation transactions.
    pub inbound_transactions: i64,
    /// Messages of groups' logs (hosted and followed).
    pub group_messages: i64,
}

/// What one pass of message retention deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrunedMessages {
    /// Messages deleted.
    pub messages: usize,
    /// Groups whose log lost a prefix.
    pub groups: usize,
}

/// Devices' received positions written per write when recording them.
const RECEIVED_PER_WRITE: usize = 500;

/// Pruning of old records ([`Store::retention`]).
#[derive(Debug, Clone, Copy)]
pub struct Retention<'s> {
    store: &'s Store,
}

impl Store {
    /// Pruning of old records.
    pub fn retention(&self) -> Retention<'_> {
        Retention { store: self }
    }
}

impl Retention<'_> {
    /// Forgets the `txn_id`s whose message was accepted before `before_ms`, or was deleted by
    /// message retention; returns how many. A retry with a forgotten `txn_id` is a new send.
    pub async fn prune_transaction_ids(&self, before_ms: i64) -> StoreResult<usize> {
        let mut after = (String::new(), String::new(), String::new());
        let mut pruned = 0;
        loop {
            let (u, d, t) = after.clone();
            let page: Vec<(String, String, String)> = with_conn!(self.store, read, |conn| {
                let query = transaction_ids::table
                    .left_join(
                        group_messages::table.on(group_messages::group_id
                            .eq(transaction_ids::group_id)
                            .and(group_messages::seq.eq(transaction_ids::seq))),
                    )
                    // (user_id, device_id, txn_id) > (u, d, t), written so that the key's
                    // index serves the range.
                    .filter(transaction_ids::user_id.ge(&u))
                    .filter(
                        transaction_ids::user_id
                            .gt(&u)
                            .or(transaction_ids::device_id.gt(&d))
                            .or(transaction_ids::device_id
                                .eq(&d)
                                .and(transaction_ids::txn_id.gt(&t))),
                    )
                    // Old, or its message is gone (deleted by message retention).
                    .filter(
                        group_messages::ts
                            .nullable()
                            .lt(before_ms)
                            .or(group_messages::seq.nullable().is_null()),
                    )
                    .order((
                        transaction_ids::user_id.asc(),
                        transaction_ids::device_id.asc(),
                        transaction_ids::txn_id.asc(),
                    ))
                    .limit(PRUNE_PAGE)
                    .select((
                        transaction_ids::user_id,
                        transaction_ids::device_id,
                        transaction_ids::txn_id,
                    ));
                Ok::<_, StoreError>(query.load(conn).await?)
            })?;
            let Some(last) = page.last().cloned() else {
                return Ok(pruned);
            };
            let full = page.len() as i64 == PRUNE_PAGE;
            pruned += with_conn!(self.store, write, |conn| {
                let mut deleted = 0;
                for (user_id, device_id, txn_id) in &page {
                    deleted +=
                        diesel::delete(transaction_ids::table.find((user_id, device_id, txn_id)))
                            .execute(conn)
                            .await?;
                }
                Ok(deleted)
            })?;
            if !full {
                return Ok(pruned);
            }
            after = last;
        }
    }

    /// Forgets the answers to inbound federation transactions received before `before_ms`;
    /// returns how many. A replay of a forgotten transaction is applied again (its events
    /// are deduplicated on their own). A claim not answered yet is kept until it is stale as
    /// well ([`INBOUND_CLAIM_STALE_MS`] older still), so that a short retention never lets a
    /// second copy in while the first is being applied.
    pub async fn prune_inbound_transactions(&self, before_ms: i64) -> StoreResult<usize> {
        let stale_claims_before = before_ms.saturating_sub(INBOUND_CLAIM_STALE_MS);
        let mut after = (String::new(), String::new());
        let mut pruned = 0;
        loop {
            let (o, t) = after.clone();
            let page: Vec<(String, String)> = with_conn!(self.store, read, |conn| {
                let query = inbound_transactions::table
                    .filter(inbound_transactions::origin.ge(&o))
                    .filter(
                        inbound_transactions::origin
                            .gt(&o)
                            .or(inbound_transactions::txn_id.gt(&t)),
                    )
                    .filter(inbound_transactions::received_ts.lt(before_ms))
                    .filter(
                        inbound_transactions::response
                            .ne("")
                            .or(inbound_transactions::received_ts.lt(stale_claims_before)),
                    )
                    .order((
                        inbound_transactions::origin.asc(),
                        inbound_transactions::txn_id.asc(),
                    ))
                    .limit(PRUNE_PAGE)
                    .select((inbound_transactions::origin, inbound_transactions::txn_id));
                Ok::<_, StoreError>(query.load(conn).await?)
            })?;
            let Some(last) = page.last().cloned() else {
                return Ok(pruned);
            };
            let full = page.len() as i64 == PRUNE_PAGE;
            pruned += with_conn!(self.store, write, |conn| {
                let mut deleted = 0;
                for (origin, txn_id) in &page {
                    deleted += diesel::delete(inbound_transactions::table.find((origin, txn_id)))
                        .execute(conn)
                        .await?;
                }
                Ok(deleted)
            })?;
            if !full {
                return Ok(pruned);
            }
            after = last;
        }
    }

    /// How many rows the tables retention prunes hold now.
    pub async fn retained_rows(&self) -> StoreResult<RetainedRows> {
        with_conn!(self.store, read, |conn| {
            Ok(RetainedRows {
                key_packages: key_packages::table.count().get_result(conn).await?,
                transaction_ids: transaction_ids::table.count().get_result(conn).await?,
                inbound_transactions: inbound_transactions::table.count().get_result(conn).await?,
                group_messages: group_messages::table.count().get_result(conn).await?,
            })
        })
    }

    /// Records that devices received their events up to stream positions `(user, device,
    /// pos)` (each clamped to the stream's head; a position never moves back); returns how
    /// many devices moved on. Message retention never deletes past a current member's position.
    pub async fn record_received(
        &self,
        positions: Vec<(String, String, i64)>,
    ) -> StoreResult<usize> {
        let mut moved = 0;
        for chunk in positions.chunks(RECEIVED_PER_WRITE) {
            let chunk = chunk.to_vec();
            moved += with_conn!(self.store, write, |conn| {
                let head: i64 = stream_position::table
                    .find(1)
                    .select(stream_position::pos)
                    .first(conn)
                    .await?;
                let mut moved = 0;
                for (user_id, device_id, pos) in &chunk {
                    let pos = (*pos).min(head);
                    moved += diesel::update(
                        devices::table
                            .find((user_id, device_id))
                            .filter(devices::received_pos.lt(pos)),
                    )
                    .set(devices::received_pos.eq(pos))
                    .execute(conn)
                    .await?;
                }
                Ok(moved)
            })?;
        }
        Ok(moved)
    }

    /// Wipes the ciphertext of the messages that expired after `after_ms` and at or before
    /// `now_ms` (docs/protocol.md#disappearing-messages): the rows stay, without their
    /// `message`, so that every log stays gap-free for member servers; no device is handed an
    /// expired message anyway. [`PRUNE_PAGE`] rows per write; returns how many were wiped.
    pub async fn wipe_expired(&self, after_ms: i64, now_ms: i64) -> StoreResult<usize> {
        // The copies kept in memory for delivery go too (whatever `after_ms`: they are few).
        if let Some(tail) = self.store.tail() {
            tail.wipe_expired(now_ms);
        }
        let mut wiped = 0;
        loop {
            let page: Vec<(String, i64)> = with_conn!(self.store, read, |conn| {
                Ok::<_, StoreError>(
                    group_messages::table
                        .filter(group_messages::expires_ts.gt(after_ms))
                        .filter(group_messages::expires_ts.le(now_ms))
                        .filter(group_messages::message.ne(Vec::<u8>::new()))
                        .select((group_messages::group_id, group_messages::seq))
                        .limit(PRUNE_PAGE)
                        .load(conn)
                        .await?,
                )
            })?;
            let full = page.len() as i64 == PRUNE_PAGE;
            if page.is_empty() {
                return Ok(wiped);
            }
            wiped += with_conn!(self.store, write, |conn| {
                let mut n = 0;
                for (group_id, seq) in &page {
                    n += diesel::update(group_messages::table.find((group_id, seq)))
                        .set(group_messages::message.eq(Vec::<u8>::new()))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, StoreError>(n)
            })?;
            if !full {
                return Ok(wiped);
            }
        }
    }

    /// Deletes, group by group, the prefix of each log that every party is done with: messages
    /// accepted before `before_ms`, at or before the received position of every current member
    /// device of this server, not waiting in the federation queue, and before the first
    /// proposal of the group's current epoch. Records the prefix as the group's `pruned_seq`.
    pub async fn prune_messages(&self, before_ms: i64) -> StoreResult<PrunedMessages> {
        // Messages the queue still has to send, by group (new rows after this read are for
        // newer messages, which are past any prefix cut below).
        let queued: Vec<(Option<String>, Option<i64>)> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                outbox::table
                    .filter(outbox::group_id.is_not_null())
                    .group_by(outbox::group_id)
                    .select((outbox::group_id, diesel::dsl::min(outbox::seq)))
                    .load(conn)
                    .await?,
            )
        })?;
        let queued: std::collections::HashMap<String, i64> = queued
            .into_iter()
            .filter_map(|(g, s)| Some((g?, s?)))
            .collect();
        let mut done = PrunedMessages::default();
        let mut after = String::new();
        loop {
            let from = after.clone();
            let page: Vec<(String, i64, i64, i64)> = with_conn!(self.store, read, |conn| {
                Ok::<_, StoreError>(
                    groups::table
                        .filter(groups::group_id.gt(&from))
                        .order(groups::group_id.asc())
                        .limit(PRUNE_PAGE)
                        .select((
                            groups::group_id,
                            groups::epoch,
                            groups::last_seq,
                            groups::pruned_seq,
                        ))
                        .load(conn)
                        .await?,
                )
            })?;
            let Some(last) = page.last().map(|g| g.0.clone()) else {
                return Ok(done);
            };
            let full = page.len() as i64 == PRUNE_PAGE;
            for (group_id, epoch, last_seq, pruned_seq) in page {
                let limit = self
                    .prunable_through(&group_id, epoch, last_seq, before_ms)
                    .await?
                    .min(queued.get(&group_id).map_or(i64::MAX, |s| s - 1));
                if limit <= pruned_seq {
                    continue;
                }
                let deleted = self.delete_prefix(&group_id, pruned_seq, limit).await?;
                done.messages += deleted;
                done.groups += 1;
            }
            if !full {
                return Ok(done);
            }
            after = last;
        }
    }

    /// The last seq of `group_id` that may be deleted, as far as its age, its local member
    /// devices and its current epoch's proposals say (the queue is checked by the caller).
    async fn prunable_through(
        &self,
        group_id: &str,
        epoch: i64,
        last_seq: i64,
        before_ms: i64,
    ) -> StoreResult<i64> {
        let group_id = group_id.to_owned();
        with_conn!(self.store, read, |conn| {
            // Each current (or not yet caught-up) member device of this server has received
            // up to the later of its received position and the position it joined at.
            let members: Vec<(i64, i64, Option<i64>)> = memberships::table
                .inner_join(
                    devices::table.on(devices::user_id
                        .eq(memberships::user_id)
                        .and(devices::device_id.eq(memberships::device_id))),
                )
                .filter(memberships::group_id.eq(&group_id))
                .select((
                    devices::received_pos,
                    memberships::joined_pos,
                    memberships::left_pos,
                ))
                .load(conn)
                .await?;
            let received = members
                .into_iter()
                .filter_map(|(received, joined, left)| {
                    let reached = received.max(joined);
                    // A device that left and received up to its removal needs nothing more.
                    match left {
                        Some(left) if left <= reached => None,
                        _ => Some(reached),
                    }
                })
                .min();
            let first_seq_where = |seq: Option<i64>| seq.map_or(last_seq, |s| s - 1);
            let mut limit = last_seq;
            if let Some(received) = received {
                let unreceived: Option<i64> = group_messages::table
                    .filter(group_messages::group_id.eq(&group_id))
                    .filter(group_messages::stream_pos.gt(received))
                    .select(diesel::dsl::min(group_messages::seq))
                    .first(conn)
                    .await?;
                limit = limit.min(first_seq_where(unreceived));
            }
            let young: Option<i64> = group_messages::table
                .filter(group_messages::group_id.eq(&group_id))
                .filter(group_messages::ts.ge(before_ms))
                .select(diesel::dsl::min(group_messages::seq))
                .first(conn)
                .await?;
            limit = limit.min(first_seq_where(young));
            let open_proposal: Option<i64> = group_messages::table
                .filter(group_messages::group_id.eq(&group_id))
                .filter(group_messages::kind.eq("proposal"))
                .filter(group_messages::epoch.ge(epoch))
                .select(diesel::dsl::min(group_messages::seq))
                .first(conn)
                .await?;
            Ok::<_, StoreError>(limit.min(first_seq_where(open_proposal)))
        })
    }

    /// Deletes `group_id`'s messages with seq in `(from, through]`, [`PRUNE_PAGE`] seqs per
    /// write, each write also advancing the group's `pruned_seq`; returns how many went.
    async fn delete_prefix(&self, group_id: &str, from: i64, through: i64) -> StoreResult<usize> {
        let mut deleted = 0;
        let mut low = from;
        while low < through {
            let high = low.saturating_add(PRUNE_PAGE).min(through);
            let group_id = group_id.to_owned();
            deleted += with_conn!(self.store, write, |conn| {
                let gone = diesel::delete(
                    group_messages::table
                        .filter(group_messages::group_id.eq(&group_id))
                        .filter(group_messages::seq.gt(low))
                        .filter(group_messages::seq.le(high)),
                )
                .execute(conn)
                .await?;
                diesel::update(
                    groups::table
                        .find(&group_id)
                        .filter(groups::pruned_seq.lt(high)),
                )
                .set(groups::pruned_seq.eq(high))
                .execute(conn)
                .await?;
                Ok(gone)
            })?;
            low = high;
        }
        Ok(deleted)
    }
}
