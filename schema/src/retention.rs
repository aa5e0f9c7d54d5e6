//! Retention: forgetting what is kept only for a while. Used client `txn_id`s and the answers
//! to inbound federation transactions are remembered so that retries are answered alike; past
//! a retention period they are pruned. Expired key packages are purged by
//! [`crate::keys::KeyDirectory::purge_expired_key_packages`].
//!
//! Pruning reads a page of keys on a reader connection and deletes them in one small write, so
//! that the SQLite writer never runs one long delete while sends wait behind it. Pages follow
//! the primary key (keyset pagination), so a pass reads each row once.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::federation::INBOUND_CLAIM_STALE_MS;
use crate::schema::{group_messages, inbound_transactions, key_packages, transaction_ids};
use crate::{with_conn, Store, StoreError, StoreResult};

// A `txn_id` is as old as the message it sent: its row names the message by (group, seq), and
// the message's `ts` is when the hub accepted it, in the same transaction.
diesel::allow_tables_to_appear_in_same_query!(transaction_ids, group_messages);

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
}

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
    /// Forgets the `txn_id`s whose message was accepted before `before_ms`; returns how many.
    /// A retry with a forgotten `txn_id` is a new send.
    pub async fn prune_transaction_ids(&self, before_ms: i64) -> StoreResult<usize> {
        let mut after = (String::new(), String::new(), String::new());
        let mut pruned = 0;
        loop {
            let (u, d, t) = after.clone();
            let page: Vec<(String, String, String)> = with_conn!(self.store, read, |conn| {
                let query = transaction_ids::table
                    .inner_join(
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
                    .filter(group_messages::ts.lt(before_ms))
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
            })
        })
    }
}
