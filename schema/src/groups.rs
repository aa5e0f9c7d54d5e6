//! The hub's state: groups, rosters (memberships), the ordered message log, welcomes, and the
//! idempotency record of application-message transactions.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::schema::{
    group_messages, groups, memberships, outbox, stream_position, transaction_ids, welcomes,
};
use crate::{with_conn, Store, StoreError, StoreResult};

/// Queues federation events in the current transaction: `message` items carry the seq just
/// taken; `welcome` items carry their payload and recipients.
macro_rules! queue_outbox {
    ($c:expr, $items:expr, $group_id:expr, $seq:expr, $ts:expr) => {
        for item in $items {
            diesel::insert_into(outbox::table)
                .values((
                    outbox::destination.eq(&item.destination),
                    outbox::kind.eq(&item.kind),
                    outbox::group_id.eq($group_id),
                    outbox::seq.eq(if item.kind == "message" {
                        Some($seq)
                    } else {
                        None
                    }),
                    outbox::payload.eq(&item.payload),
                    outbox::recipients.eq(&item.recipients),
                    outbox::created_ts.eq($ts),
                ))
                .execute($c)
                .await?;
        }
    };
}

/// An event for another server, queued with the message that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Server name to deliver to.
    pub destination: String,
    /// `message` (the accepted message itself) or `welcome`.
    pub kind: String,
    /// Welcome bytes, for `welcome`.
    pub payload: Option<Vec<u8>>,
    /// JSON list of `{user_id, device_id}` on the destination, for `welcome`.
    pub recipients: Option<String>,
}

impl OutboxItem {
    /// The accepted message itself, for `destination`.
    pub fn message(destination: &str) -> OutboxItem {
        OutboxItem {
            destination: destination.to_owned(),
            kind: "message".into(),
            payload: None,
            recipients: None,
        }
    }
}

/// Takes `n` new stream positions inside the current transaction and returns the first.
/// The row update serialises writers on PostgreSQL, so positions commit in order.
macro_rules! take_positions {
    ($c:expr, $n:expr) => {{
        let last: i64 = diesel::update(stream_position::table.find(1))
            .set(stream_position::pos.eq(stream_position::pos + $n))
            .returning(stream_position::pos)
            .get_result($c)
            .await?;
        last - $n + 1
    }};
}

/// A group as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = groups)]
pub struct Group {
    pub group_id: String,
    /// Current MLS epoch.
    pub epoch: i64,
    /// Seq of the last accepted message (0 when none).
    pub last_seq: i64,
    /// Latest GroupInfo sent with a commit.
    pub group_info: Option<Vec<u8>>,
    pub created_ts: i64,
}

/// A roster device and its leaf index in the ratchet tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub user_id: String,
    pub device_id: String,
    pub leaf_index: u32,
}

/// An accepted message of a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = group_messages)]
pub struct GroupMessage {
    pub group_id: String,
    pub seq: i64,
    pub stream_pos: i64,
    pub sender_user: String,
    pub sender_device: String,
    /// `commit`, `proposal` or `application`.
    pub kind: String,
    /// The MLS message's own epoch.
    pub epoch: i64,
    pub message: Vec<u8>,
    /// For commits: the declared adds, as JSON.
    pub adds: Option<String>,
    /// For commits: the declared removes, as JSON.
    pub removes: Option<String>,
    pub ts: i64,
}

/// A Welcome waiting for one device.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = welcomes)]
pub struct Welcome {
    pub id: i64,
    pub stream_pos: i64,
    pub user_id: String,
    pub device_id: String,
    pub group_id: String,
    pub sender_user: String,
    pub sender_device: String,
    pub welcome: Vec<u8>,
    pub ts: i64,
}

/// A commit the hub has checked and now applies.
#[derive(Debug, Clone)]
pub struct CommitToApply {
    pub group_id: String,
    /// The commit's MLS epoch, which must still be the group's current epoch.
    pub epoch: i64,
    pub sender_user: String,
    pub sender_device: String,
    pub message: Vec<u8>,
    /// Declared adds/removes as JSON, delivered with the commit.
    pub adds_json: String,
    pub removes_json: String,
    /// Devices leaving the roster.
    pub removed: Vec<(String, String)>,
    /// Devices joining, with the leaf each takes.
    pub added: Vec<Member>,
    /// The Welcome for the added devices of this server, one copy each.
    pub welcome: Option<Vec<u8>>,
    /// Added devices of this server that receive the Welcome.
    pub welcome_recipients: Vec<(String, String)>,
    pub group_info: Option<Vec<u8>>,
    pub ts: i64,
    /// Events for other servers (member servers, invitees' servers).
    pub outbox: Vec<OutboxItem>,
}

/// The log position a commit or message got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub seq: i64,
    pub stream_pos: i64,
    /// The group's epoch after acceptance.
    pub epoch: i64,
}

/// Why the hub refused a message at write time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such group.
    NoGroup,
    /// Another commit won this epoch, or the message is too old; the current epoch.
    StaleEpoch(i64),
    /// The message's epoch is ahead of the group's.
    FutureEpoch(i64),
}

/// A non-commit message the hub appends.
#[derive(Debug, Clone)]
pub struct MessageToAppend {
    pub group_id: String,
    pub sender_user: String,
    pub sender_device: String,
    /// `application` or `proposal`.
    pub kind: String,
    pub epoch: i64,
    pub message: Vec<u8>,
    pub ts: i64,
    /// Oldest acceptable epoch is `current − max_past_epochs` (proposals: current only).
    pub max_past_epochs: i64,
    /// Idempotency key (`txn_id`) of the sending device.
    pub txn_id: Option<String>,
    /// Events for other servers with members in the group.
    pub outbox: Vec<OutboxItem>,
}

impl Store {
    /// Registers a group with its creator's device as the only member (leaf 0, epoch 0).
    pub async fn create_group(
        &self,
        group_id: &str,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (group_id, user_id, device_id) = (
            group_id.to_owned(),
            user_id.to_owned(),
            device_id.to_owned(),
        );
        with_conn!(self, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let pos = take_positions!(c, 1);
                diesel::insert_into(groups::table)
                    .values((
                        groups::group_id.eq(&group_id),
                        groups::epoch.eq(0i64),
                        groups::last_seq.eq(0i64),
                        groups::created_ts.eq(now_ms),
                    ))
                    .execute(c)
                    .await?;
                diesel::insert_into(memberships::table)
                    .values((
                        memberships::group_id.eq(&group_id),
                        memberships::user_id.eq(&user_id),
                        memberships::device_id.eq(&device_id),
                        memberships::leaf_index.eq(0i64),
                        memberships::joined_pos.eq(pos),
                    ))
                    .execute(c)
                    .await?;
                Ok(())
            })
            .await
        })
    }

    /// One group.
    pub async fn group(&self, group_id: &str) -> StoreResult<Option<Group>> {
        with_conn!(self, read, |conn| {
            Ok(groups::table
                .find(group_id)
                .select(Group::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// The current roster of a group, by leaf index.
    pub async fn roster(&self, group_id: &str) -> StoreResult<Vec<Member>> {
        with_conn!(self, read, |conn| {
            let rows: Vec<(String, String, i64)> = memberships::table
                .filter(memberships::group_id.eq(group_id))
                .filter(memberships::left_pos.is_null())
                .order(memberships::leaf_index.asc())
                .select((
                    memberships::user_id,
                    memberships::device_id,
                    memberships::leaf_index,
                ))
                .load(conn)
                .await?;
            Ok(rows.into_iter().map(to_member).collect())
        })
    }

    /// The groups a device is currently a member of.
    pub async fn device_groups(&self, user_id: &str, device_id: &str) -> StoreResult<Vec<Group>> {
        with_conn!(self, read, |conn| {
            Ok(groups::table
                .inner_join(memberships::table.on(memberships::group_id.eq(groups::group_id)))
                .filter(memberships::user_id.eq(user_id))
                .filter(memberships::device_id.eq(device_id))
                .filter(memberships::left_pos.is_null())
                .order(groups::group_id.asc())
                .select(Group::as_select())
                .load(conn)
                .await?)
        })
    }

    /// Applies a checked commit: exactly one commit per epoch wins (compare-and-set on the
    /// epoch), the roster changes, and the Welcome is queued, all in one transaction.
    pub async fn apply_commit(
        &self,
        commit: CommitToApply,
    ) -> StoreResult<Result<Accepted, Refused>> {
        with_conn!(self, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let next_epoch = commit.epoch + 1;
                let won = diesel::update(
                    groups::table
                        .find(&commit.group_id)
                        .filter(groups::epoch.eq(commit.epoch)),
                )
                .set((
                    groups::epoch.eq(next_epoch),
                    groups::last_seq.eq(groups::last_seq + 1),
                    groups::group_info.eq(&commit.group_info),
                ))
                .returning(groups::last_seq)
                .get_result::<i64>(c)
                .await
                .optional()?;
                let Some(seq) = won else {
                    let current: Option<i64> = groups::table
                        .find(&commit.group_id)
                        .select(groups::epoch)
                        .first(c)
                        .await
                        .optional()?;
                    return Ok(Err(match current {
                        None => Refused::NoGroup,
                        Some(e) if e < commit.epoch => Refused::FutureEpoch(e),
                        Some(e) => Refused::StaleEpoch(e),
                    }));
                };
                let n_welcomes = if commit.welcome.is_some() {
                    commit.welcome_recipients.len() as i64
                } else {
                    0
                };
                let pos = take_positions!(c, 1 + n_welcomes);
                diesel::insert_into(group_messages::table)
                    .values((
                        group_messages::group_id.eq(&commit.group_id),
                        group_messages::seq.eq(seq),
                        group_messages::stream_pos.eq(pos),
                        group_messages::sender_user.eq(&commit.sender_user),
                        group_messages::sender_device.eq(&commit.sender_device),
                        group_messages::kind.eq("commit"),
                        group_messages::epoch.eq(commit.epoch),
                        group_messages::message.eq(&commit.message),
                        group_messages::adds.eq(Some(&commit.adds_json)),
                        group_messages::removes.eq(Some(&commit.removes_json)),
                        group_messages::ts.eq(commit.ts),
                    ))
                    .execute(c)
                    .await?;
                for (user_id, device_id) in &commit.removed {
                    diesel::update(
                        memberships::table
                            .filter(memberships::group_id.eq(&commit.group_id))
                            .filter(memberships::user_id.eq(user_id))
                            .filter(memberships::device_id.eq(device_id))
                            .filter(memberships::left_pos.is_null()),
                    )
                    .set(memberships::left_pos.eq(Some(pos)))
                    .execute(c)
                    .await?;
                }
                for m in &commit.added {
                    diesel::insert_into(memberships::table)
                        .values((
                            memberships::group_id.eq(&commit.group_id),
                            memberships::user_id.eq(&m.user_id),
                            memberships::device_id.eq(&m.device_id),
                            memberships::leaf_index.eq(i64::from(m.leaf_index)),
                            memberships::joined_pos.eq(pos),
                        ))
                        .execute(c)
                        .await?;
                }
                if let Some(welcome) = &commit.welcome {
                    for (i, (user_id, device_id)) in commit.welcome_recipients.iter().enumerate() {
                        diesel::insert_into(welcomes::table)
                            .values((
                                welcomes::stream_pos.eq(pos + 1 + i as i64),
                                welcomes::user_id.eq(user_id),
                                welcomes::device_id.eq(device_id),
                                welcomes::group_id.eq(&commit.group_id),
                                welcomes::sender_user.eq(&commit.sender_user),
                                welcomes::sender_device.eq(&commit.sender_device),
                                welcomes::welcome.eq(welcome),
                                welcomes::ts.eq(commit.ts),
                            ))
                            .execute(c)
                            .await?;
                    }
                }
                queue_outbox!(c, &commit.outbox, &commit.group_id, seq, commit.ts);
                Ok(Ok(Accepted {
                    seq,
                    stream_pos: pos,
                    epoch: next_epoch,
                }))
            })
            .await
        })
    }

    /// Appends an application message or proposal, checking its epoch against the group's at
    /// write time; a repeated `txn_id` of the same device returns the first result.
    pub async fn append_message(
        &self,
        msg: MessageToAppend,
    ) -> StoreResult<Result<Accepted, Refused>> {
        with_conn!(self, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                if let Some(txn_id) = &msg.txn_id {
                    let previous: Option<(String, i64)> = transaction_ids::table
                        .find((&msg.sender_user, &msg.sender_device, txn_id))
                        .select((transaction_ids::group_id, transaction_ids::seq))
                        .first(c)
                        .await
                        .optional()?;
                    if let Some((group_id, seq)) = previous {
                        let found: Option<(i64, i64)> = group_messages::table
                            .find((&group_id, seq))
                            .select((group_messages::stream_pos, group_messages::epoch))
                            .first(c)
                            .await
                            .optional()?;
                        let (stream_pos, epoch) = found.unwrap_or((0, 0));
                        return Ok(Ok(Accepted {
                            seq,
                            stream_pos,
                            epoch,
                        }));
                    }
                }
                let current: Option<i64> = groups::table
                    .find(&msg.group_id)
                    .select(groups::epoch)
                    .first(c)
                    .await
                    .optional()?;
                let Some(current) = current else {
                    return Ok(Err(Refused::NoGroup));
                };
                if msg.epoch > current {
                    return Ok(Err(Refused::FutureEpoch(current)));
                }
                if msg.epoch < current - msg.max_past_epochs {
                    return Ok(Err(Refused::StaleEpoch(current)));
                }
                let seq: i64 = diesel::update(groups::table.find(&msg.group_id))
                    .set(groups::last_seq.eq(groups::last_seq + 1))
                    .returning(groups::last_seq)
                    .get_result(c)
                    .await?;
                let pos = take_positions!(c, 1);
                diesel::insert_into(group_messages::table)
                    .values((
                        group_messages::group_id.eq(&msg.group_id),
                        group_messages::seq.eq(seq),
                        group_messages::stream_pos.eq(pos),
                        group_messages::sender_user.eq(&msg.sender_user),
                        group_messages::sender_device.eq(&msg.sender_device),
                        group_messages::kind.eq(&msg.kind),
                        group_messages::epoch.eq(msg.epoch),
                        group_messages::message.eq(&msg.message),
                        group_messages::ts.eq(msg.ts),
                    ))
                    .execute(c)
                    .await?;
                if let Some(txn_id) = &msg.txn_id {
                    diesel::insert_into(transaction_ids::table)
                        .values((
                            transaction_ids::user_id.eq(&msg.sender_user),
                            transaction_ids::device_id.eq(&msg.sender_device),
                            transaction_ids::txn_id.eq(txn_id),
                            transaction_ids::group_id.eq(&msg.group_id),
                            transaction_ids::seq.eq(seq),
                        ))
                        .execute(c)
                        .await?;
                }
                queue_outbox!(c, &msg.outbox, &msg.group_id, seq, msg.ts);
                Ok(Ok(Accepted {
                    seq,
                    stream_pos: pos,
                    epoch: current,
                }))
            })
            .await
        })
    }

    /// The latest stream position: every event a device can receive is at or below it.
    pub async fn stream_position(&self) -> StoreResult<i64> {
        with_conn!(self, read, |conn| {
            Ok(stream_position::table
                .find(1)
                .select(stream_position::pos)
                .first(conn)
                .await?)
        })
    }

    /// Events for one device after position `since` (at most `limit` of each kind), in stream
    /// order, and the position to resume from.
    pub async fn device_events(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
        limit: i64,
    ) -> StoreResult<(Vec<GroupMessage>, Vec<Welcome>, i64)> {
        with_conn!(self, read, |conn| {
            // Read the head first: anything committed later has a larger position.
            let head: i64 = stream_position::table
                .find(1)
                .select(stream_position::pos)
                .first(conn)
                .await?;
            let messages: Vec<GroupMessage> = group_messages::table
                .inner_join(
                    memberships::table.on(memberships::group_id.eq(group_messages::group_id)),
                )
                .filter(memberships::user_id.eq(user_id))
                .filter(memberships::device_id.eq(device_id))
                .filter(group_messages::stream_pos.gt(since))
                .filter(group_messages::stream_pos.le(head))
                .filter(group_messages::stream_pos.gt(memberships::joined_pos))
                .filter(
                    memberships::left_pos
                        .is_null()
                        .or(group_messages::stream_pos.le(memberships::left_pos.assume_not_null())),
                )
                .order(group_messages::stream_pos.asc())
                .limit(limit)
                .select(GroupMessage::as_select())
                .load(conn)
                .await?;
            let welcomes: Vec<Welcome> = welcomes::table
                .filter(welcomes::user_id.eq(user_id))
                .filter(welcomes::device_id.eq(device_id))
                .filter(welcomes::stream_pos.gt(since))
                .filter(welcomes::stream_pos.le(head))
                .order(welcomes::stream_pos.asc())
                .limit(limit)
                .select(Welcome::as_select())
                .load(conn)
                .await?;
            // When a kind hit its limit, resume right after the earlier of the two cut-offs so
            // nothing of the other kind is skipped.
            let mut next = head;
            if messages.len() as i64 == limit {
                next = next.min(messages.last().map_or(head, |m| m.stream_pos));
            }
            if welcomes.len() as i64 == limit {
                next = next.min(welcomes.last().map_or(head, |w| w.stream_pos));
            }
            let messages = messages
                .into_iter()
                .filter(|m| m.stream_pos <= next)
                .collect();
            let welcomes = welcomes
                .into_iter()
                .filter(|w| w.stream_pos <= next)
                .collect();
            Ok((messages, welcomes, next))
        })
    }

    /// Deletes a device's welcome; returns whether it existed.
    pub async fn delete_welcome(
        &self,
        user_id: &str,
        device_id: &str,
        id: i64,
    ) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self, write, |conn| {
            let n = diesel::delete(
                welcomes::table
                    .find(id)
                    .filter(welcomes::user_id.eq(&user_id))
                    .filter(welcomes::device_id.eq(&device_id)),
            )
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// A group's messages after `since_seq`, in order (for catch-up).
    pub async fn group_messages_since(
        &self,
        group_id: &str,
        since_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessage>> {
        with_conn!(self, read, |conn| {
            Ok(group_messages::table
                .filter(group_messages::group_id.eq(group_id))
                .filter(group_messages::seq.gt(since_seq))
                .order(group_messages::seq.asc())
                .limit(limit)
                .select(GroupMessage::as_select())
                .load(conn)
                .await?)
        })
    }
}

fn to_member((user_id, device_id, leaf): (String, String, i64)) -> Member {
    Member {
        user_id,
        device_id,
        leaf_index: u32::try_from(leaf).unwrap_or(u32::MAX),
    }
}

impl Store {
    /// The seq a device's earlier send with this `txn_id` got, if any.
    pub async fn txn_seq(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<i64>> {
        with_conn!(self, read, |conn| {
            Ok(transaction_ids::table
                .find((user_id, device_id, txn_id))
                .select(transaction_ids::seq)
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// The proposals accepted in one epoch of a group (a commit may reference them).
    pub async fn group_proposals(
        &self,
        group_id: &str,
        epoch: i64,
    ) -> StoreResult<Vec<GroupMessage>> {
        with_conn!(self, read, |conn| {
            Ok(group_messages::table
                .filter(group_messages::group_id.eq(group_id))
                .filter(group_messages::kind.eq("proposal"))
                .filter(group_messages::epoch.eq(epoch))
                .order(group_messages::seq.asc())
                .select(GroupMessage::as_select())
                .load(conn)
                .await?)
        })
    }
}
