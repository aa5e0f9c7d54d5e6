//! The delivery stream: every event a device can receive has a position in one stream; a
//! device reads its events after the position it has seen, from the database or, for recent
//! ones, from the in-memory [`crate::tail`].

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::hub_log::{Group, GroupMessage};
use crate::schema::{
    group_messages, groups, memberships, stream_position, welcome_bodies, welcomes,
};
use crate::{with_conn, Store, StoreError, StoreResult};

/// Welcomes read for one device at a time: each may be up to `max_bundle_bytes`, so a read
/// holds at most this many of them in memory.
pub const WELCOMES_PER_READ: i64 = 16;

/// Events for one device after position `$since` (at most `$limit` messages and
/// [`WELCOMES_PER_READ`] Welcomes), in stream order, and the position to resume from; on
/// either backend's connection.
macro_rules! device_events {
    ($c:expr, $user_id:expr, $device_id:expr, $since:expr, $limit:expr) => {{
        // Read the head first: anything committed later has a larger position.
        let head: i64 = stream_position::table
            .find(1)
            .select(stream_position::pos)
            .first($c)
            .await?;
        let messages: Vec<GroupMessage> = group_messages::table
            .inner_join(memberships::table.on(memberships::group_id.eq(group_messages::group_id)))
            .filter(memberships::user_id.eq($user_id))
            .filter(memberships::device_id.eq($device_id))
            .filter(group_messages::stream_pos.gt($since))
            .filter(group_messages::stream_pos.le(head))
            .filter(group_messages::stream_pos.gt(memberships::joined_pos))
            .filter(
                memberships::left_pos
                    .is_null()
                    .or(group_messages::stream_pos.le(memberships::left_pos.assume_not_null())),
            )
            .order(group_messages::stream_pos.asc())
            .limit($limit)
            .select(GroupMessage::as_select())
            .load($c)
            .await?;
        let welcomes: Vec<Welcome> = welcomes::table
            .inner_join(welcome_bodies::table)
            .filter(welcomes::user_id.eq($user_id))
            .filter(welcomes::device_id.eq($device_id))
            .filter(welcomes::stream_pos.gt($since))
            .filter(welcomes::stream_pos.le(head))
            .order(welcomes::stream_pos.asc())
            .limit(($limit as i64).min(WELCOMES_PER_READ))
            .select(Welcome::as_select())
            .load($c)
            .await?;
        // When a kind hit its limit, resume right after the earlier of the two cut-offs so
        // nothing of the other kind is skipped.
        let mut next = head;
        if messages.len() as i64 == $limit {
            next = next.min(messages.last().map_or(head, |m| m.stream_pos));
        }
        if welcomes.len() as i64 == ($limit as i64).min(WELCOMES_PER_READ) {
            next = next.min(welcomes.last().map_or(head, |w| w.stream_pos));
        }
        let messages: Vec<GroupMessage> = messages
            .into_iter()
            .filter(|m| m.stream_pos <= next)
            .collect();
        let welcomes: Vec<Welcome> = welcomes
            .into_iter()
            .filter(|w| w.stream_pos <= next)
            .collect();
        (messages, welcomes, next)
    }};
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
    /// The Welcome's bytes, stored once in `welcome_bodies` for all its recipients.
    #[diesel(select_expression = welcome_bodies::welcome)]
    #[diesel(select_expression_type = welcome_bodies::welcome)]
    pub welcome: Vec<u8>,
    pub ts: i64,
}

/// The delivery stream: devices' events by position, and their Welcomes ([`Store::stream`]).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryStream<'s> {
    store: &'s Store,
}

impl Store {
    /// The delivery stream: devices' events by position, and their Welcomes.
    pub fn stream(&self) -> DeliveryStream<'_> {
        DeliveryStream { store: self }
    }
}

/// Positions one fill of the tail reads at most.
const FILL_POSITIONS: i64 = 2_048;

impl DeliveryStream<'_> {
    /// Fills the hole other processes' positions left in the stream tail
    /// ([`crate::tail::TailRead::Behind`]) with one read of those positions, once for every
    /// reader of this process: concurrent callers wait for the fill in progress and find the
    /// hole gone (or what remains of it).
    pub async fn fill_tail(&self) -> StoreResult<()> {
        let Some(tail) = self.store.tail() else {
            return Ok(());
        };
        let _filling = tail.fill_lock.lock().await;
        let Some((after, committed)) = tail.hole() else {
            return Ok(());
        };
        let through = committed.min(after + FILL_POSITIONS);
        // No transaction: every position up to `through` is committed (positions are taken
        // under a row lock held to the commit), so two plain reads see all of them, and save
        // the two round trips of a BEGIN and a COMMIT on each hole.
        let (messages, welcomes) = with_conn!(self.store, read, |conn| {
            let messages: Vec<GroupMessage> = group_messages::table
                .filter(group_messages::stream_pos.gt(after))
                .filter(group_messages::stream_pos.le(through))
                .select(GroupMessage::as_select())
                .load(conn)
                .await?;
            let welcomes: Vec<(i64, String, String, String)> = welcomes::table
                .filter(welcomes::stream_pos.gt(after))
                .filter(welcomes::stream_pos.le(through))
                .select((
                    welcomes::stream_pos,
                    welcomes::group_id,
                    welcomes::user_id,
                    welcomes::device_id,
                ))
                .load(conn)
                .await?;
            Ok::<_, StoreError>((messages, welcomes))
        })?;
        tail.fill(after, tail_events(after, through, messages, welcomes));
        Ok(())
    }

    /// The latest stream position: every event a device can receive is at or below it.
    pub async fn stream_position(&self) -> StoreResult<i64> {
        with_conn!(self.store, read, |conn| {
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
        with_conn!(self.store, read, |conn| {
            Ok(device_events!(conn, user_id, device_id, since, limit))
        })
    }

    /// [`DeliveryStream::device_events`], and the groups the device is a member of at the position
    /// returned, read together from one snapshot (what a WebSocket needs to go on from the
    /// stream tail).
    pub async fn device_events_and_groups(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
        limit: i64,
    ) -> StoreResult<(Vec<GroupMessage>, Vec<Welcome>, i64, Vec<String>)> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self.store, read, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let (messages, welcomes, next) =
                    device_events!(c, &user_id, &device_id, since, limit);
                // Memberships are as of the snapshot's head; a cut-off below it (a full page)
                // only means the next read starts from the database again.
                let groups: Vec<String> = memberships::table
                    .filter(memberships::user_id.eq(&user_id))
                    .filter(memberships::device_id.eq(&device_id))
                    .filter(memberships::left_pos.is_null())
                    .select(memberships::group_id)
                    .load(c)
                    .await?;
                Ok((messages, welcomes, next, groups))
            })
            .await
        })
    }

    /// Welcome bodies stored and their total bytes (each body is shared by its recipients).
    pub async fn welcome_bodies_stored(&self) -> StoreResult<(i64, i64)> {
        with_conn!(self.store, read, |conn| {
            let lengths: Vec<Vec<u8>> = welcome_bodies::table
                .select(welcome_bodies::welcome)
                .load(conn)
                .await?;
            Ok((
                lengths.len() as i64,
                lengths.iter().map(|b| b.len() as i64).sum(),
            ))
        })
    }

    /// Deletes a device's welcome (its bytes go with the last recipient); returns whether it
    /// existed.
    pub async fn delete_welcome(
        &self,
        user_id: &str,
        device_id: &str,
        id: i64,
    ) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let body_id: Option<i64> = diesel::delete(
                    welcomes::table
                        .find(id)
                        .filter(welcomes::user_id.eq(&user_id))
                        .filter(welcomes::device_id.eq(&device_id)),
                )
                .returning(welcomes::body_id)
                .get_result(c)
                .await
                .optional()?;
                let Some(body_id) = body_id else {
                    return Ok(false);
                };
                // The bytes go with their last recipient.
                diesel::delete(welcome_bodies::table.find(body_id).filter(diesel::dsl::not(
                    diesel::dsl::exists(welcomes::table.filter(welcomes::body_id.eq(body_id))),
                )))
                .execute(c)
                .await?;
                Ok(true)
            })
            .await
        })
    }

    /// The groups a device is currently a member of.
    pub async fn device_groups(&self, user_id: &str, device_id: &str) -> StoreResult<Vec<Group>> {
        with_conn!(self.store, read, |conn| {
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
}

/// The tail's events for positions `after + 1..=through`, from what the database holds there:
/// application messages, proposals and notices whole; a Welcome as a change for its device;
/// a commit, or a position holding neither (a new group), as a change for everyone.
fn tail_events(
    after: i64,
    through: i64,
    messages: Vec<GroupMessage>,
    welcomes: Vec<(i64, String, String, String)>,
) -> Vec<crate::tail::TailEvent> {
    use crate::tail::TailEvent;
    let mut at: std::collections::HashMap<i64, TailEvent> =
        std::collections::HashMap::with_capacity(messages.len() + welcomes.len());
    for m in messages {
        let event = if m.kind == "commit" {
            TailEvent::Everyone
        } else {
            let pos = m.stream_pos;
            at.insert(pos, TailEvent::Message(std::sync::Arc::new(m)));
            continue;
        };
        at.insert(m.stream_pos, event);
    }
    for (pos, group_id, user_id, device_id) in welcomes {
        match at.entry(pos).or_insert_with(|| TailEvent::Change {
            group_id: Some(group_id),
            devices: Vec::new(),
        }) {
            TailEvent::Change { devices, .. } => devices.push((user_id, device_id)),
            other => *other = TailEvent::Everyone,
        }
    }
    (after + 1..=through)
        .map(|pos| at.remove(&pos).unwrap_or(TailEvent::Everyone))
        .collect()
}
