//! Federation state: inbound transaction answers, and what a member server stores of groups
//! whose hub is elsewhere (the outbox is [`crate::outbox`]).

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::fixed_sql::FixedSql;
use crate::hub_log::{GroupMessage, Member};
use crate::schema::{group_messages, groups, inbound_transactions, memberships, welcomes};
use crate::tail::TailEvent;
use crate::{with_conn, Store, StoreError, StoreResult};

/// A group message received from the group's hub, for this server's devices.
#[derive(Debug, Clone)]
pub struct RemoteMessage {
    pub message: GroupMessage,
    /// This server's devices the commit adds (they get the Welcome, not this commit).
    pub local_adds: Vec<(String, String)>,
    /// This server's devices the commit removes (they get this commit, nothing after).
    pub local_removes: Vec<(String, String)>,
}

/// How long an unanswered claim on an inbound transaction holds off a copy of it.
pub const INBOUND_CLAIM_STALE_MS: i64 = 120_000;

/// The state of an inbound transaction when a copy of it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundClaim {
    /// This copy is the one to apply.
    Claimed,
    /// Already applied: the first answer.
    Answered(String),
    /// Another copy is being applied right now.
    InFlight,
}

/// What became of a message relayed by a remote hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStored {
    /// Stored as the group's next message; its devices should be woken.
    Stored,
    /// Already stored (a replay, or a page overlapping what arrived meanwhile).
    Duplicate,
    /// Not stored: messages after `last_seq` are missing and must be fetched first.
    Gap { last_seq: i64 },
    /// Refused: no device of this server is a current member of the group, and the message
    /// is not a commit adding one. Nothing was stored.
    NoLocalMember,
}

/// What this server keeps of other servers: inbound transactions, followed groups' logs and remote device lists ([`Store::federation`]).
#[derive(Debug, Clone, Copy)]
pub struct Federation<'s> {
    store: &'s Store,
}

impl Store {
    /// What this server keeps of other servers: inbound transactions, followed groups' logs and remote device lists.
    pub fn federation(&self) -> Federation<'_> {
        Federation { store: self }
    }
}

impl Federation<'_> {
    /// One message of a group's log.
    pub async fn group_message(
        &self,
        group_id: &str,
        seq: i64,
    ) -> StoreResult<Option<GroupMessage>> {
        with_conn!(self.store, read, |conn| {
            Ok(group_messages::table
                .find((group_id, seq))
                .select(GroupMessage::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// The first answer given to an inbound transaction (`None` while none was recorded).
    pub async fn inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
    ) -> StoreResult<Option<String>> {
        with_conn!(self.store, read, |conn| {
            let response: Option<String> = inbound_transactions::table
                .find((origin, txn_id))
                .select(inbound_transactions::response)
                .first(conn)
                .await
                .optional()?;
            Ok(response.filter(|r| !r.is_empty()))
        })
    }

    /// Claims inbound transaction `(origin, txn_id)` before it is applied, so that two
    /// concurrent copies are applied once. A claim left unanswered for
    /// [`INBOUND_CLAIM_STALE_MS`] (its process died) may be taken over.
    pub async fn claim_inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
        now_ms: i64,
    ) -> StoreResult<InboundClaim> {
        let (origin, txn_id) = (origin.to_owned(), txn_id.to_owned());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let inserted = diesel::insert_into(inbound_transactions::table)
                    .values((
                        inbound_transactions::origin.eq(&origin),
                        inbound_transactions::txn_id.eq(&txn_id),
                        inbound_transactions::response.eq(""),
                        inbound_transactions::received_ts.eq(now_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await?;
                if inserted == 1 {
                    return Ok(InboundClaim::Claimed);
                }
                let (response, received): (String, i64) = inbound_transactions::table
                    .find((&origin, &txn_id))
                    .select((
                        inbound_transactions::response,
                        inbound_transactions::received_ts,
                    ))
                    .first(c)
                    .await?;
                if !response.is_empty() {
                    return Ok(InboundClaim::Answered(response));
                }
                if now_ms - received < INBOUND_CLAIM_STALE_MS {
                    return Ok(InboundClaim::InFlight);
                }
                let taken = diesel::update(
                    inbound_transactions::table
                        .find((&origin, &txn_id))
                        .filter(inbound_transactions::response.eq(""))
                        .filter(inbound_transactions::received_ts.eq(received)),
                )
                .set(inbound_transactions::received_ts.eq(now_ms))
                .execute(c)
                .await?;
                Ok(if taken == 1 {
                    InboundClaim::Claimed
                } else {
                    InboundClaim::InFlight
                })
            })
            .await
        })
    }

    /// Records the answer to a claimed inbound transaction.
    pub async fn record_inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (origin, txn_id, response) =
            (origin.to_owned(), txn_id.to_owned(), response.to_owned());
        with_conn!(self.store, write, |conn| {
            diesel::insert_into(inbound_transactions::table)
                .values((
                    inbound_transactions::origin.eq(&origin),
                    inbound_transactions::txn_id.eq(&txn_id),
                    inbound_transactions::response.eq(&response),
                    inbound_transactions::received_ts.eq(now_ms),
                ))
                .on_conflict((inbound_transactions::origin, inbound_transactions::txn_id))
                .do_update()
                .set((
                    inbound_transactions::response.eq(&response),
                    inbound_transactions::received_ts.eq(now_ms),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Gives up a claim whose transaction could not be answered (it may be sent again).
    pub async fn release_inbound_transaction(&self, origin: &str, txn_id: &str) -> StoreResult<()> {
        let (origin, txn_id) = (origin.to_owned(), txn_id.to_owned());
        with_conn!(self.store, write, |conn| {
            diesel::delete(
                inbound_transactions::table
                    .find((&origin, &txn_id))
                    .filter(inbound_transactions::response.eq("")),
            )
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    /// Moves a followed group's last stored seq on to `through` when its hub deleted its log
    /// up to there ([`crate::retention`]): those messages cannot be fetched any more, and the
    /// next one the hub holds becomes the successor. Returns whether it moved.
    pub async fn skip_pruned(&self, group_id: &str, through: i64) -> StoreResult<bool> {
        let group_id = group_id.to_owned();
        with_conn!(self.store, write, |conn| {
            Ok(diesel::update(
                groups::table
                    .find(&group_id)
                    .filter(groups::last_seq.lt(through)),
            )
            .set(groups::last_seq.eq(through))
            .execute(conn)
            .await?
                == 1)
        })
    }

    /// Stores a message relayed by a remote hub, in the group's order, and updates local
    /// memberships. The group's `last_seq` is the last seq stored without a gap; only its
    /// successor is stored (a compare-and-set on `last_seq`, so concurrent writers — a gap
    /// fill and an incoming transaction, or two processes — cannot interleave out of order).
    /// An older seq is [`RemoteStored::Duplicate`]; a later one is [`RemoteStored::Gap`] and
    /// is not stored (the caller fetches the missing range from the hub, this one included).
    ///
    /// A group this server has not heard of starts at seq 1, or at a commit that adds one of
    /// this server's devices (the hub sends a server a group's messages from the commit that
    /// adds its first device); anything else is a gap from 0.
    pub async fn store_remote_message(&self, remote: RemoteMessage) -> StoreResult<RemoteStored> {
        self.store_remote_messages(vec![remote])
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Pool("no result for a stored message".into())))
    }

    /// [`Federation::store_remote_message`] for several messages in order, in one write (one commit
    /// for a whole inbound transaction on SQLite); each message succeeds or fails alone.
    pub async fn store_remote_messages(
        &self,
        remotes: Vec<RemoteMessage>,
    ) -> StoreResult<Vec<StoreResult<RemoteStored>>> {
        type Stored = Vec<StoreResult<(RemoteStored, Option<(i64, TailEvent)>)>>;
        // Stored messages took consecutive positions, in order.
        let publish = self.store.publish_after(|results: &mut Stored| {
            let mut events = results
                .iter_mut()
                .filter_map(|r| r.as_mut().ok().and_then(|(_, e)| e.take()))
                .peekable();
            let first = events.peek().map_or(0, |(pos, _)| *pos);
            (first, events.map(|(_, e)| e).collect())
        });
        let stored: Stored = with_conn!(self.store, write, after = publish, |conn| {
            let mut results = Vec::with_capacity(remotes.len());
            for remote in remotes {
                results.push(
                    conn.transaction::<_, StoreError, _>(async move |c| {
                        let m = &remote.message;
                        // Only groups with a current device of ours cost us storage.
                        let adds_ours = m.kind == "commit" && !remote.local_adds.is_empty();
                        if !adds_ours {
                            let has_member: bool = diesel::select(diesel::dsl::exists(
                                memberships::table
                                    .filter(memberships::group_id.eq(&m.group_id))
                                    .filter(memberships::left_pos.is_null()),
                            ))
                            .get_result(c)
                            .await?;
                            if !has_member {
                                return Ok((RemoteStored::NoLocalMember, None));
                            }
                        }
                        let epoch_after = if m.kind == "commit" {
                            m.epoch + 1
                        } else {
                            m.epoch
                        };
                        // Compare-and-set: only the successor of the last stored seq advances it. On
                        // PostgreSQL the row lock makes a concurrent writer re-check after we commit.
                        let mut advanced = FixedSql::new(
                            diesel::update(
                                groups::table
                                    .find(&m.group_id)
                                    .filter(groups::last_seq.eq(m.seq - 1)),
                            )
                            .set((groups::last_seq.eq(m.seq), groups::epoch.eq(epoch_after))),
                        )
                        .execute(c)
                        .await?
                            == 1;
                        if !advanced {
                            let last: Option<i64> = groups::table
                                .find(&m.group_id)
                                .select(groups::last_seq)
                                .first(c)
                                .await
                                .optional()?;
                            match last {
                                Some(last) if m.seq <= last => {
                                    return Ok((RemoteStored::Duplicate, None))
                                }
                                Some(last) => {
                                    return Ok((RemoteStored::Gap { last_seq: last }, None))
                                }
                                None => {
                                    let base = m.seq == 1
                                        || (m.kind == "commit" && !remote.local_adds.is_empty());
                                    if !base {
                                        return Ok((RemoteStored::Gap { last_seq: 0 }, None));
                                    }
                                    advanced = diesel::insert_into(groups::table)
                                        .values((
                                            groups::group_id.eq(&m.group_id),
                                            groups::epoch.eq(epoch_after),
                                            groups::last_seq.eq(m.seq),
                                            groups::created_ts.eq(m.ts),
                                        ))
                                        .on_conflict(groups::group_id)
                                        .do_nothing()
                                        .execute(c)
                                        .await?
                                        == 1;
                                    if !advanced {
                                        // Created concurrently: the caller retries against that row.
                                        return Ok((RemoteStored::Gap { last_seq: 0 }, None));
                                    }
                                }
                            }
                        }
                        let pos = take_positions!(c, 1);
                        let stored = GroupMessage {
                            stream_pos: pos,
                            ..remote.message
                        };
                        diesel::insert_into(group_messages::table)
                            .values(&stored)
                            .execute(c)
                            .await?;
                        leave_group!(c, &stored.group_id, &remote.local_removes, pos);
                        join_group!(
                            c,
                            &stored.group_id,
                            remote.local_adds.iter().map(|(u, d)| (u, d, -1i64)),
                            pos
                        );
                        let event = if stored.kind == "commit" {
                            let mut devices = remote.local_adds;
                            devices.extend(remote.local_removes);
                            TailEvent::Change {
                                group_id: Some(stored.group_id),
                                devices,
                            }
                        } else {
                            TailEvent::Message(std::sync::Arc::new(stored))
                        };
                        Ok((RemoteStored::Stored, Some((pos, event))))
                    })
                    .await,
                );
            }
            Ok(results)
        })?;
        Ok(stored
            .into_iter()
            .map(|r| r.map(|(outcome, _)| outcome))
            .collect())
    }

    /// Groups whose hub is another server and which have a current member device of this
    /// server, with the last seq stored for each (what a start-up catch-up asks the hub for).
    pub async fn followed_groups(&self, our_server: &str) -> StoreResult<Vec<(String, i64)>> {
        with_conn!(self.store, read, |conn| {
            let rows: Vec<(String, i64)> = groups::table
                .inner_join(memberships::table.on(memberships::group_id.eq(groups::group_id)))
                .filter(memberships::left_pos.is_null())
                .select((groups::group_id, groups::last_seq))
                .distinct()
                .order(groups::group_id.asc())
                .load(conn)
                .await?;
            Ok(rows
                .into_iter()
                .filter(|(g, _)| g.split_once(':').is_some_and(|(_, hub)| hub != our_server))
                .collect())
        })
    }

    /// Every membership a group has had, current and past: `(user_id, left_pos)`.
    pub async fn group_membership_history(
        &self,
        group_id: &str,
    ) -> StoreResult<Vec<(String, Option<i64>)>> {
        with_conn!(self.store, read, |conn| {
            Ok(memberships::table
                .filter(memberships::group_id.eq(group_id))
                .select((memberships::user_id, memberships::left_pos))
                .load(conn)
                .await?)
        })
    }

    /// The seq of the group message at stream position `pos`, if there is one.
    pub async fn seq_at_position(&self, group_id: &str, pos: i64) -> StoreResult<Option<i64>> {
        with_conn!(self.store, read, |conn| {
            Ok(group_messages::table
                .filter(group_messages::group_id.eq(group_id))
                .filter(group_messages::stream_pos.eq(pos))
                .select(group_messages::seq)
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Queues a Welcome relayed by a remote hub (event `event_id` of `origin`) for this
    /// server's `recipients`: the bytes are stored once, with one row per recipient that is an
    /// existing device of this server (others are dropped). Returns the devices it was queued
    /// for: empty when none exists, or when the event was already stored (a replay).
    #[allow(clippy::too_many_arguments)]
    pub async fn store_remote_welcome(
        &self,
        origin: &str,
        event_id: &str,
        group_id: &str,
        sender: &Member,
        welcome: &[u8],
        recipients: &[(String, String)],
        ts: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        use crate::schema::{devices, welcome_bodies};
        let (origin, event_id, group_id, sender, welcome, recipients) = (
            origin.to_owned(),
            event_id.to_owned(),
            group_id.to_owned(),
            sender.clone(),
            welcome.to_vec(),
            recipients.to_vec(),
        );
        // One position per recipient, consecutive from the first.
        let tail_group = group_id.clone();
        let publish =
            self.store
                .publish_after(
                    move |stored: &mut (Option<i64>, Vec<(String, String)>)| match stored.0 {
                        Some(first) => (
                            first,
                            stored
                                .1
                                .iter()
                                .map(|device| TailEvent::Change {
                                    group_id: Some(tail_group.clone()),
                                    devices: vec![device.clone()],
                                })
                                .collect(),
                        ),
                        None => (0, Vec::new()),
                    },
                );
        let stored = with_conn!(self.store, write, after = publish, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let users: Vec<&String> = recipients.iter().map(|(u, _)| u).collect();
                let existing: std::collections::HashSet<(String, String)> = devices::table
                    .filter(devices::user_id.eq_any(users))
                    .select((devices::user_id, devices::device_id))
                    .load::<(String, String)>(c)
                    .await?
                    .into_iter()
                    .collect();
                let kept: Vec<(String, String)> = recipients
                    .into_iter()
                    .filter(|d| existing.contains(d))
                    .collect();
                if kept.is_empty() {
                    return Ok((None, kept));
                }
                let body_id: Option<i64> = diesel::insert_into(welcome_bodies::table)
                    .values((
                        welcome_bodies::welcome.eq(&welcome),
                        welcome_bodies::origin.eq(&origin),
                        welcome_bodies::event_id.eq(&event_id),
                    ))
                    .on_conflict_do_nothing()
                    .returning(welcome_bodies::id)
                    .get_result(c)
                    .await
                    .optional()?;
                let Some(body_id) = body_id else {
                    return Ok((None, Vec::new()));
                };
                let first = take_positions!(c, kept.len() as i64);
                for (i, (user_id, device_id)) in kept.iter().enumerate() {
                    diesel::insert_into(welcomes::table)
                        .values((
                            welcomes::stream_pos.eq(first + i as i64),
                            welcomes::user_id.eq(user_id),
                            welcomes::device_id.eq(device_id),
                            welcomes::group_id.eq(&group_id),
                            welcomes::sender_user.eq(&sender.user_id),
                            welcomes::sender_device.eq(&sender.device_id),
                            welcomes::body_id.eq(body_id),
                            welcomes::ts.eq(ts),
                        ))
                        .execute(c)
                        .await?;
                }
                Ok((Some(first), kept))
            })
            .await
        })?;
        Ok(stored.1)
    }
}

impl Federation<'_> {
    /// A remote user's cached device keys and when the list was last refreshed.
    pub async fn remote_device_list(
        &self,
        user_id: &str,
    ) -> StoreResult<Option<(i64, Vec<(String, Vec<u8>)>)>> {
        use crate::schema::{remote_device_lists, remote_devices};
        with_conn!(self.store, read, |conn| {
            let updated: Option<i64> = remote_device_lists::table
                .find(user_id)
                .select(remote_device_lists::updated_ts)
                .first(conn)
                .await
                .optional()?;
            let Some(updated) = updated else {
                return Ok(None);
            };
            let devices: Vec<(String, Vec<u8>)> = remote_devices::table
                .filter(remote_devices::user_id.eq(user_id))
                .order(remote_devices::device_id.asc())
                .select((remote_devices::device_id, remote_devices::signature_key))
                .load(conn)
                .await?;
            Ok(Some((updated, devices)))
        })
    }

    /// Replaces a remote user's cached device list.
    pub async fn set_remote_device_list(
        &self,
        user_id: &str,
        devices: &[(String, Vec<u8>)],
        now_ms: i64,
    ) -> StoreResult<()> {
        use crate::schema::{remote_device_lists, remote_devices};
        let (user_id, devices) = (user_id.to_owned(), devices.to_vec());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                diesel::delete(remote_devices::table.filter(remote_devices::user_id.eq(&user_id)))
                    .execute(c)
                    .await?;
                for (device_id, key) in &devices {
                    diesel::insert_into(remote_devices::table)
                        .values((
                            remote_devices::user_id.eq(&user_id),
                            remote_devices::device_id.eq(device_id),
                            remote_devices::signature_key.eq(key),
                            remote_devices::updated_ts.eq(now_ms),
                        ))
                        .execute(c)
                        .await?;
                }
                diesel::delete(remote_device_lists::table.find(&user_id))
                    .execute(c)
                    .await?;
                diesel::insert_into(remote_device_lists::table)
                    .values((
                        remote_device_lists::user_id.eq(&user_id),
                        remote_device_lists::updated_ts.eq(now_ms),
                    ))
                    .execute(c)
                    .await?;
                Ok(())
            })
            .await
        })
    }

    /// Servers that share a group with any device of `user_id`: every member's server for
    /// groups this server is the hub of (`our_server`), the hub for the others.
    pub async fn servers_sharing_groups(
        &self,
        user_id: &str,
        our_server: &str,
    ) -> StoreResult<Vec<String>> {
        with_conn!(self.store, read, |conn| {
            let group_ids: Vec<String> = memberships::table
                .filter(memberships::user_id.eq(user_id))
                .filter(memberships::left_pos.is_null())
                .select(memberships::group_id)
                .distinct()
                .load(conn)
                .await?;
            let members: Vec<(String, String)> = memberships::table
                .filter(memberships::group_id.eq_any(&group_ids))
                .filter(memberships::left_pos.is_null())
                .select((memberships::group_id, memberships::user_id))
                .load(conn)
                .await?;
            let server_of = |id: &str| {
                id.split_once(':')
                    .map(|(_, s)| s.to_owned())
                    .unwrap_or_default()
            };
            let mut servers: Vec<String> = group_ids
                .iter()
                .map(|g| server_of(g))
                .chain(members.iter().map(|(_, u)| server_of(u)))
                .filter(|s| !s.is_empty() && s != our_server)
                .collect();
            servers.sort();
            servers.dedup();
            Ok(servers)
        })
    }
}
