//! The hub's state: groups, rosters (memberships), the ordered message log, welcomes, and the
//! idempotency record of application-message transactions.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::append::AppendResult;
pub use crate::append::{Accepted, Appended, MessageToAppend, Refused};
use crate::db::Pools;
use crate::outbox::{queue_outbox, OutboxItem};
use crate::pg_append::PendingAppend;
pub use crate::rows::{EpochRoster, GroupMessage, Member};
use crate::schema::{
    group_messages, groups, memberships, transaction_ids, welcome_bodies, welcomes,
};
use crate::sqlite_conn::SqliteConn;
use crate::tail::TailEvent;
use crate::{with_conn, Store, StoreError, StoreResult};

/// Names of the append's statements (see [`FixedSql`]), one each.
mod statement_names {
    use crate::fixed_sql::CacheKey;

    pub(crate) struct TakeSeq;
    pub(crate) struct ClaimTxn;
    pub(crate) struct GiveBackSeq;
    pub(crate) struct TakePosition;
    pub(crate) struct InsertAppended;

    impl CacheKey for TakeSeq {}
    impl CacheKey for ClaimTxn {}
    impl CacheKey for GiveBackSeq {}
    impl CacheKey for TakePosition {}
    impl CacheKey for InsertAppended {}
}

/// The statements of [`HubLog::append_message`] on SQLite's synchronous writer connection.
/// PostgreSQL runs the same steps as one statement ([`pg_append`]). Evaluates to the `AppendResult`.
macro_rules! append_message_statements {
    ($c:expr, $msg:ident) => {{
        let lowest = $msg.roster_epoch - $msg.max_past_epochs;
        let in_window = (lowest..=$msg.roster_epoch).contains(&$msg.epoch);
        // One statement checks that the group is still at the roster's epoch and takes
        // the next seq.
        let taken: Option<i64> = if in_window {
            FixedSql::<_, statement_names::TakeSeq>::named(
                diesel::update(
                    groups::table
                        .find(&$msg.group_id)
                        .filter(groups::epoch.eq($msg.roster_epoch)),
                )
                .set(groups::last_seq.eq(groups::last_seq + 1))
                .returning(groups::last_seq),
            )
            .get_result($c)
            .optional()?
        } else {
            None
        };
        let Some(seq) = taken else {
            let current: Option<i64> = groups::table
                .find(&$msg.group_id)
                .select(groups::epoch)
                .first($c)
                .optional()?;
            return Ok(Err(match current {
                None => Refused::NoGroup,
                Some(e) if e != $msg.roster_epoch => Refused::RosterChanged,
                Some(e) if $msg.epoch > e => Refused::FutureEpoch(e),
                Some(e) => Refused::StaleEpoch(e),
            }));
        };
        if let Some(txn_id) = &$msg.txn_id {
            // The txn_id is claimed by the insert that records it. On a used one the upsert's
            // no-op update hands back the first send's row instead (also when a concurrent retry
            // on PostgreSQL got there first: the upsert waits for it, then finds its row, and
            // its row lock keeps a concurrent prune from deleting it before we answer). One
            // statement instead of a lookup and an insert, and none more for a replay.
            let (first_group, first_seq): (String, i64) =
                FixedSql::<_, statement_names::ClaimTxn>::named(
                    diesel::insert_into(transaction_ids::table)
                        .values((
                            transaction_ids::user_id.eq(&$msg.sender_user),
                            transaction_ids::device_id.eq(&$msg.sender_device),
                            transaction_ids::txn_id.eq(txn_id),
                            transaction_ids::group_id.eq(&$msg.group_id),
                            transaction_ids::seq.eq(seq),
                        ))
                        .on_conflict((
                            transaction_ids::user_id,
                            transaction_ids::device_id,
                            transaction_ids::txn_id,
                        ))
                        .do_update()
                        .set(transaction_ids::seq.eq(transaction_ids::seq))
                        .returning((transaction_ids::group_id, transaction_ids::seq)),
                )
                .get_result($c)
                ?;
            // Only the row just inserted names the seq just taken: a group's next seq is above
            // every seq recorded for it, and another group's row names that other group.
            if first_seq != seq || first_group != $msg.group_id {
                // A replay: give back the seq just taken, so the log stays gap-free.
                FixedSql::<_, statement_names::GiveBackSeq>::named(
                    diesel::update(groups::table.find(&$msg.group_id))
                        .set(groups::last_seq.eq(groups::last_seq - 1)),
                )
                .execute($c)
                ?;
                return Ok(Ok((Appended::Replayed { seq: first_seq }, None)));
            }
        }
        let pos: i64 = FixedSql::<_, statement_names::TakePosition>::named(
            diesel::update(stream_position::table.find(1))
                .set(stream_position::pos.eq(stream_position::pos + 1))
                .returning(stream_position::pos),
        )
        .get_result($c)
        ?;
        let stored = GroupMessage {
            group_id: $msg.group_id,
            seq,
            stream_pos: pos,
            sender_user: $msg.sender_user,
            sender_device: $msg.sender_device,
            kind: $msg.kind,
            epoch: $msg.epoch,
            message: $msg.message,
            adds: None,
            removes: None,
            ts: $msg.ts,
            expires_ts: $msg.expires_ts,
        };
        // Its SQL is fixed: every column is a bind (NULL included), never `DEFAULT`, which
        // the derived insert would make of a `None`.
        FixedSql::<_, statement_names::InsertAppended>::named(
            diesel::insert_into(group_messages::table).values((
                group_messages::group_id.eq(&stored.group_id),
                group_messages::seq.eq(stored.seq),
                group_messages::stream_pos.eq(stored.stream_pos),
                group_messages::sender_user.eq(&stored.sender_user),
                group_messages::sender_device.eq(&stored.sender_device),
                group_messages::kind.eq(&stored.kind),
                group_messages::epoch.eq(stored.epoch),
                group_messages::message.eq(&stored.message),
                group_messages::adds.eq(&stored.adds),
                group_messages::removes.eq(&stored.removes),
                group_messages::ts.eq(stored.ts),
                group_messages::expires_ts.eq(stored.expires_ts),
            )),
        )
        .execute($c)
        ?;
        queue_outbox!(@messages $c, &$msg.outbox, &stored.group_id, seq, stored.ts;);
        let accepted = Accepted {
            seq,
            stream_pos: pos,
            epoch: $msg.roster_epoch,
        };
        Ok(Ok((
            Appended::New(accepted),
            Some(std::sync::Arc::new(stored)),
        )))
    }};
}

diesel::define_sql_function! {
    /// SQL `COALESCE` over two nullable blobs.
    #[sql_name = "COALESCE"]
    fn coalesce_binary(
        first: diesel::sql_types::Nullable<diesel::sql_types::Binary>,
        second: diesel::sql_types::Nullable<diesel::sql_types::Binary>,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Binary>;
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
    /// The admins the group's roles extension names, as its canonical JSON; `None` for a
    /// group without roles.
    pub roles: Option<String>,
    /// The group's join rules (canonical JSON); `None` when it has none.
    pub join_rules: Option<String>,
    /// The group's disappearing-messages timer (ms); `None` when messages stay.
    pub disappear_after_ms: Option<i64>,
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
    /// The Welcome for the added devices of this server, stored once for all of them.
    pub welcome: Option<Vec<u8>>,
    /// Added devices of this server that receive the Welcome.
    pub welcome_recipients: Vec<(String, String)>,
    pub group_info: Option<Vec<u8>>,
    /// `Some` when the commit changes the group context: the roles it now has (canonical
    /// JSON, `None` when it has none any more).
    pub roles: Option<Option<String>>,
    /// `Some` when the commit changes the group context: the join rules it now has.
    pub join_rules: Option<Option<String>>,
    /// `Some` when the commit changes the group context: the disappearing-messages timer it
    /// now has.
    pub disappear_after_ms: Option<Option<i64>>,
    pub ts: i64,
    /// Events for other servers (member servers, invitees' servers).
    pub outbox: Vec<OutboxItem>,
}

/// The hub's log: groups, rosters, commits, appended messages, proposals and the `txn_id` record ([`Store::hub_log`]).
#[derive(Debug, Clone, Copy)]
pub struct HubLog<'s> {
    store: &'s Store,
}

impl Store {
    /// The hub's log: groups, rosters, commits, appended messages, proposals and the `txn_id` record.
    pub fn hub_log(&self) -> HubLog<'_> {
        HubLog { store: self }
    }
}

impl HubLog<'_> {
    /// Registers a group with its creator's device as the only member (leaf 0, epoch 0).
    pub async fn create_group(
        &self,
        group_id: &str,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        self.create_group_with_roles(group_id, user_id, device_id, None, now_ms)
            .await
    }

    /// Like [`HubLog::create_group`], with the group's initial roles (canonical JSON).
    pub async fn create_group_with_roles(
        &self,
        group_id: &str,
        user_id: &str,
        device_id: &str,
        roles: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (group_id, user_id, device_id) = (
            group_id.to_owned(),
            user_id.to_owned(),
            device_id.to_owned(),
        );
        let roles = roles.map(str::to_owned);
        let change = TailEvent::Change {
            group_id: Some(group_id.clone()),
            devices: vec![(user_id.clone(), device_id.clone())],
        };
        let after = self
            .store
            .publish_after(move |pos: &mut i64| (*pos, vec![change]));
        with_conn!(self.store, write, after = after, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let pos = take_positions!(c, 1);
                diesel::insert_into(groups::table)
                    .values((
                        groups::group_id.eq(&group_id),
                        groups::epoch.eq(0i64),
                        groups::last_seq.eq(0i64),
                        groups::created_ts.eq(now_ms),
                        groups::roles.eq(&roles),
                    ))
                    .execute(c)
                    .await?;
                join_group!(c, &group_id, [(&user_id, &device_id, 0i64)], pos);
                Ok(pos)
            })
            .await
        })
        .map(drop)
    }

    /// One group.
    pub async fn group(&self, group_id: &str) -> StoreResult<Option<Group>> {
        with_conn!(self.store, read, |conn| {
            Ok(groups::table
                .find(group_id)
                .select(Group::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// The groups whose current roster holds a device of `user_id`, with those devices:
    /// `(group_id, device_id)` pairs in group order.
    pub async fn user_memberships(&self, user_id: &str) -> StoreResult<Vec<(String, String)>> {
        with_conn!(self.store, read, |conn| {
            Ok(memberships::table
                .filter(memberships::user_id.eq(user_id))
                .filter(memberships::left_pos.is_null())
                .order((memberships::group_id.asc(), memberships::device_id.asc()))
                .select((memberships::group_id, memberships::device_id))
                .load(conn)
                .await?)
        })
    }

    /// Drops this process's cached roster of a group: the next read goes to the database
    /// (after an append refused because the group moved on, perhaps through another process).
    pub fn forget_cached_roster(&self, group_id: &str) {
        self.store.memory.rosters.invalidate(group_id);
    }

    /// The current roster of a group, by leaf index.
    pub async fn roster(&self, group_id: &str) -> StoreResult<Vec<Member>> {
        with_conn!(self.store, read, |conn| {
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

    /// A group's epoch and the roster of that epoch; `None` for an unknown group. Served from
    /// memory once read: commits invalidate it, and an append checked against it is refused
    /// if the epoch has moved on ([`MessageToAppend::roster_epoch`]).
    pub async fn epoch_roster(
        &self,
        group_id: &str,
    ) -> StoreResult<Option<std::sync::Arc<EpochRoster>>> {
        let generation = match self.store.memory.rosters.get(group_id) {
            Ok(roster) => return Ok(Some(roster)),
            Err(generation) => generation,
        };
        let Some(group) = self.group(group_id).await? else {
            return Ok(None);
        };
        let members = self.roster(group_id).await?;
        let roster = std::sync::Arc::new(EpochRoster {
            epoch: group.epoch,
            members,
            disappear_after_ms: group.disappear_after_ms,
        });
        // Roster and epoch were read apart: keep them only if they still belong together.
        let again = self.group(group_id).await?;
        if again.is_some_and(|g| g.epoch == group.epoch) {
            self.store
                .memory
                .rosters
                .fill(generation, group_id.to_owned(), roster.clone());
        }
        Ok(Some(roster))
    }

    /// Applies a checked commit: exactly one commit per epoch wins (compare-and-set on the
    /// epoch), the roster changes, and the Welcome is queued, all in one transaction.
    pub async fn apply_commit(
        &self,
        commit: CommitToApply,
    ) -> StoreResult<Result<Accepted, Refused>> {
        // The commit's position, then one per Welcome: each concerns the group's devices and
        // the devices it adds or removes.
        let mut concerned: Vec<(String, String)> = commit.removed.clone();
        concerned.extend(
            commit
                .added
                .iter()
                .map(|m| (m.user_id.clone(), m.device_id.clone())),
        );
        let positions = 1 + if commit.welcome.is_some() {
            commit.welcome_recipients.len()
        } else {
            0
        };
        let change = TailEvent::Change {
            group_id: Some(commit.group_id.clone()),
            devices: concerned,
        };
        let group_id = commit.group_id.clone();
        let roster_changed = self.store.roster_changed();
        let publish = self
            .store
            .publish_after(move |r: &mut Result<Accepted, Refused>| match r {
                Ok(accepted) => (accepted.stream_pos, vec![change; positions]),
                Err(_) => (0, Vec::new()),
            });
        let after = move |r: Option<&mut Result<Accepted, Refused>>| {
            roster_changed(&group_id);
            publish(r);
        };
        with_conn!(self.store, write, after = after, |conn| {
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
                    // A commit without a GroupInfo keeps the latest one.
                    groups::group_info.eq(coalesce_binary(&commit.group_info, groups::group_info)),
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
                if let Some(roles) = &commit.roles {
                    diesel::update(groups::table.find(&commit.group_id))
                        .set(groups::roles.eq(roles))
                        .execute(c)
                        .await?;
                }
                if let Some(join_rules) = &commit.join_rules {
                    diesel::update(groups::table.find(&commit.group_id))
                        .set(groups::join_rules.eq(join_rules))
                        .execute(c)
                        .await?;
                }
                if let Some(timer) = commit.disappear_after_ms {
                    diesel::update(groups::table.find(&commit.group_id))
                        .set(groups::disappear_after_ms.eq(timer))
                        .execute(c)
                        .await?;
                }
                let n_welcomes = if commit.welcome.is_some() {
                    commit.welcome_recipients.len() as i64
                } else {
                    0
                };
                let pos = take_positions!(c, 1 + n_welcomes);
                let logged = GroupMessage {
                    group_id: commit.group_id.clone(),
                    seq,
                    stream_pos: pos,
                    sender_user: commit.sender_user.clone(),
                    sender_device: commit.sender_device.clone(),
                    kind: "commit".into(),
                    epoch: commit.epoch,
                    message: commit.message,
                    adds: Some(commit.adds_json),
                    removes: Some(commit.removes_json),
                    ts: commit.ts,
                    expires_ts: None,
                };
                diesel::insert_into(group_messages::table)
                    .values(&logged)
                    .execute(c)
                    .await?;
                leave_group!(c, &commit.group_id, &commit.removed, pos);
                join_group!(
                    c,
                    &commit.group_id,
                    commit.added.iter().map(|m| (
                        &m.user_id,
                        &m.device_id,
                        i64::from(m.leaf_index)
                    )),
                    pos
                );
                if let Some(welcome) = &commit.welcome {
                    let body_id: i64 = diesel::insert_into(welcome_bodies::table)
                        .values(welcome_bodies::welcome.eq(welcome))
                        .returning(welcome_bodies::id)
                        .get_result(c)
                        .await?;
                    for (i, (user_id, device_id)) in commit.welcome_recipients.iter().enumerate() {
                        diesel::insert_into(welcomes::table)
                            .values((
                                welcomes::stream_pos.eq(pos + 1 + i as i64),
                                welcomes::user_id.eq(user_id),
                                welcomes::device_id.eq(device_id),
                                welcomes::group_id.eq(&commit.group_id),
                                welcomes::sender_user.eq(&commit.sender_user),
                                welcomes::sender_device.eq(&commit.sender_device),
                                welcomes::body_id.eq(body_id),
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
    /// write time. A `txn_id` the device already used is [`Appended::Replayed`] with the seq
    /// of its first send, and nothing is written.
    pub async fn append_message(
        &self,
        msg: MessageToAppend,
    ) -> StoreResult<Result<Appended, Refused>> {
        let publish = self.store.publish_after(|r: &mut AppendResult| match r {
            Ok((Appended::New(accepted), message)) => (
                accepted.stream_pos,
                message.take().map(TailEvent::Message).into_iter().collect(),
            ),
            Ok((Appended::Replayed { .. }, _)) | Err(_) => (0, Vec::new()),
        });
        // Every refusal comes before the first change, and a replay gives back the seq it
        // took, so only a storage error can fail it midway: no savepoint needed.
        let appended: AppendResult = match &*self.store.pools {
            // The hottest write runs on the writer's connection directly (synchronous diesel):
            // its statements are looked up in the statement cache by type instead of having
            // their SQL and binds rebuilt and copied for the async wrapper.
            Pools::Sqlite { writer, .. } => {
                writer
                    .run_unguarded(
                        move |c: &mut SqliteConn| {
                            Box::pin(async move {
                                c.spawn_blocking(move |c| Ok(sqlite_sync::append_message(c, msg)))
                                    .await?
                            })
                        },
                        publish,
                    )
                    .await?
            }
            // PostgreSQL appends the messages waiting together in one go (`pg_append`).
            Pools::Postgres { writer, .. } => {
                writer
                    .run_grouped(|done| PendingAppend {
                        msg,
                        after: Box::new(publish),
                        done,
                    })
                    .await?
            }
        };
        Ok(appended.map(|(appended, _)| appended))
    }

    /// The last seq of `group_id` that message retention deleted (every message up to it is
    /// gone; 0 when none), or `None` for an unknown group.
    pub async fn pruned_seq(&self, group_id: &str) -> StoreResult<Option<i64>> {
        with_conn!(self.store, read, |conn| {
            Ok(groups::table
                .find(group_id)
                .select(groups::pruned_seq)
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// A group's messages after `since_seq`, in order (for catch-up).
    pub async fn group_messages_since(
        &self,
        group_id: &str,
        since_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<GroupMessage>> {
        with_conn!(self.store, read, |conn| {
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

impl HubLog<'_> {
    /// The seq a device's earlier send with this `txn_id` got, if any (for a retry refused
    /// before its append: an append answers a used `txn_id` itself, [`Appended::Replayed`]).
    pub async fn txn_seq(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> StoreResult<Option<i64>> {
        with_conn!(self.store, read, |conn| {
            Ok(transaction_ids::table
                .find((user_id, device_id, txn_id))
                .select(transaction_ids::seq)
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// How many proposals were accepted for `group_id` at `epoch`.
    pub async fn group_proposal_count(&self, group_id: &str, epoch: i64) -> StoreResult<i64> {
        with_conn!(self.store, read, |conn| {
            Ok(group_messages::table
                .filter(group_messages::group_id.eq(group_id))
                .filter(group_messages::kind.eq("proposal"))
                .filter(group_messages::epoch.eq(epoch))
                .count()
                .get_result(conn)
                .await?)
        })
    }

    /// The proposals accepted in one epoch of a group (a commit may reference them).
    pub async fn group_proposals(
        &self,
        group_id: &str,
        epoch: i64,
    ) -> StoreResult<Vec<GroupMessage>> {
        with_conn!(self.store, read, |conn| {
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

/// The append on SQLite's writer connection, used synchronously (see [`HubLog::append_message`]).
mod sqlite_sync {
    use diesel::prelude::*;

    use super::{
        statement_names, Accepted, AppendResult, Appended, GroupMessage, MessageToAppend, Refused,
    };
    use crate::fixed_sql::FixedSql;
    use crate::outbox::queue_outbox;
    use crate::schema::{group_messages, groups, stream_position, transaction_ids};
    use crate::StoreResult;

    pub(super) fn append_message(
        c: &mut diesel::SqliteConnection,
        msg: MessageToAppend,
    ) -> StoreResult<AppendResult> {
        append_message_statements!(c, msg)
    }
}

impl Store {
    /// Forgets a group's cached roster (after a write that changes it).
    fn roster_changed(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let memory = self.memory.clone();
        move |group_id: &str| memory.roster_changed(group_id)
    }

    /// An `after` hook that publishes to the tail what `events` makes of a committed result:
    /// the first position and the events from it on.
    pub(crate) fn publish_after<R>(
        &self,
        events: impl FnOnce(&mut R) -> (i64, Vec<TailEvent>) + Send + 'static,
    ) -> impl FnOnce(Option<&mut R>) + Send + 'static {
        let tail = self.memory.tail.clone();
        move |committed: Option<&mut R>| {
            if let (Some(tail), Some(result)) = (tail, committed) {
                let (first, events) = events(result);
                tail.publish(first, events);
            }
        }
    }
}
