//! The stream tail: the most recent stream positions, kept in memory so that a connected
//! device's WebSocket takes new group messages from here instead of querying the database
//! once per wake-up.
//!
//! Every write that takes stream positions publishes what it wrote at them once it has
//! committed. On both backends all such writes go through the store's single writer
//! ([`crate::writer`]), which publishes in commit order, so the tail is gap-free and in
//! position order. Only application messages
//! and proposals are carried whole: anything that changes who receives what (a commit, a
//! Welcome, a new group) is published as a [`TailEvent::Change`], and a device it concerns goes
//! back to the database, which stays the source of truth, for that stretch. A device reading
//! from before the oldest position kept does the same.
//!
//! On PostgreSQL other processes may take positions too. Their writes serialise on the stream
//! position row, so when one says it committed up to a position, every position below it is
//! committed as well. The tail then has a hole between what it holds and that position (its
//! own later publishes wait in `pending`); a reader meeting the hole gets [`TailRead::Behind`]
//! and fills it with one range read of the database ([`crate::stream::DeliveryStream::fill_tail`]),
//! shared by every socket of the process, instead of each socket querying for its device.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::rows::GroupMessage;

/// Positions kept in memory.
const CAPACITY: usize = 16_384;
/// Bytes of MLS messages kept in memory: past it the oldest positions go, whatever their
/// count (16,384 messages of 64 KiB would otherwise hold 1 GiB).
const BYTE_BUDGET: usize = 32 * 1024 * 1024;
/// Bytes of MLS messages one read hands out (at least one message).
const READ_BYTE_BUDGET: usize = 4 * 1024 * 1024;

/// What was committed at one stream position.
#[derive(Debug, Clone)]
pub enum TailEvent {
    /// An application message or proposal: for the group's members, and changes no roster.
    Message(Arc<GroupMessage>),
    /// Anything else (a commit, a Welcome, a new group): devices in `group_id` and the listed
    /// devices must read this stretch from the database.
    Change {
        group_id: Option<String>,
        devices: Vec<(String, String)>,
    },
    /// A position filled from the database that may change who receives what for anyone (a
    /// commit, a new group): every device reads this stretch from the database.
    Everyone,
}

/// Result of reading the tail for one device.
#[derive(Debug)]
pub enum TailRead {
    /// The device's messages after `since`, in stream order, and the position to resume after.
    Messages {
        messages: Vec<Arc<GroupMessage>>,
        next: i64,
    },
    /// The tail cannot answer (a change concerning the device, or positions no longer kept):
    /// read from the database.
    Reread,
    /// Other processes committed positions this tail does not hold yet: fill them
    /// ([`crate::stream::DeliveryStream::fill_tail`]) and read again.
    Behind,
}

/// The in-memory tail of the stream.
#[derive(Debug)]
pub struct Tail {
    inner: Mutex<Inner>,
    /// Held while a hole is filled from the database, so that one read fills it for all.
    pub(crate) fill_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Inner {
    /// Position of `events[0]`.
    first: i64,
    events: VecDeque<TailEvent>,
    /// MLS bytes of the messages in `events`.
    bytes: usize,
    /// Other processes take positions too (PostgreSQL): being out of step is expected.
    shared: bool,
    /// The last position known committed (by any process); above `last()`, a hole to fill.
    committed: i64,
    /// This process's own events published beyond a hole, by position, until it is filled.
    pending: BTreeMap<i64, TailEvent>,
}

/// MLS bytes an event holds in memory.
fn event_bytes(event: &TailEvent) -> usize {
    match event {
        TailEvent::Message(m) => m.message.len(),
        TailEvent::Change { .. } | TailEvent::Everyone => 0,
    }
}

impl Inner {
    /// The last position published (everything up to it is here or older than `first`).
    fn last(&self) -> i64 {
        self.first + self.events.len() as i64 - 1
    }

    /// Forgets everything and starts after `pos`: reads from before it go to the database.
    fn restart_after(&mut self, pos: i64) {
        self.events.clear();
        self.pending.clear();
        self.bytes = 0;
        self.first = pos + 1;
        self.committed = pos;
    }

    /// Appends `event` at `last() + 1`, dropping the oldest past the bounds.
    fn push(&mut self, event: TailEvent) {
        self.bytes += event_bytes(&event);
        self.events.push_back(event);
        while self.events.len() > CAPACITY || self.bytes > BYTE_BUDGET {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&old);
            self.first += 1;
        }
        self.committed = self.committed.max(self.last());
    }

    /// Moves pending events that now follow `last()` into the tail.
    fn drain_pending(&mut self) {
        while let Some(event) = self.pending.remove(&(self.last() + 1)) {
            self.push(event);
        }
    }
}

impl Tail {
    /// Drops the MLS bytes of every message held here that expired by `now_ms` (disappearing
    /// messages, protocol §5.8): the server keeps no copy of them, in memory either. Readers
    /// skip an expired message anyway. Returns how many were dropped.
    pub(crate) fn wipe_expired(&self, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let mut wiped = 0;
        let Inner {
            events, pending, ..
        } = &mut *inner;
        for event in events.iter_mut().chain(pending.values_mut()) {
            if let TailEvent::Message(m) = event {
                if !m.message.is_empty() && m.expired_at(now_ms) {
                    // In place unless a reader holds it now (then that reader's copy goes
                    // when it is done).
                    Arc::make_mut(m).message = Vec::new();
                    wiped += 1;
                }
            }
        }
        // Pending events are not counted in `bytes` until they join the tail.
        inner.bytes = inner.events.iter().map(event_bytes).sum();
        wiped
    }

    /// An empty tail whose next position is `head + 1`.
    pub(crate) fn new(head: i64) -> Tail {
        Tail {
            inner: Mutex::new(Inner {
                first: head + 1,
                events: VecDeque::with_capacity(CAPACITY),
                bytes: 0,
                shared: false,
                committed: head,
                pending: BTreeMap::new(),
            }),
            fill_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// [`Tail::new`] for a database other processes write too: positions they take are holes
    /// that readers fill from the database, and being out of step is not worth a warning.
    pub(crate) fn shared(head: i64) -> Tail {
        let tail = Tail::new(head);
        tail.lock().shared = true;
        tail
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the events committed at positions `first_pos..first_pos + events.len()`.
    /// On a shared database, events beyond a hole wait for it to be filled. Anywhere else but
    /// right after the last position (which a correct store never does) drops what is kept,
    /// so readers fall back to the database rather than skip.
    pub(crate) fn publish(&self, first_pos: i64, events: Vec<TailEvent>) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let next = inner.last() + 1;
        if first_pos > next && inner.shared {
            // Positions below ours are committed (writes serialise on the position row).
            let through = first_pos + events.len() as i64 - 1;
            inner.committed = inner.committed.max(through);
            if through - next >= CAPACITY as i64 {
                // Too far behind to fill: start over after these.
                inner.restart_after(through);
                return;
            }
            for (i, event) in events.into_iter().enumerate() {
                inner.pending.insert(first_pos + i as i64, event);
            }
            return;
        }
        if first_pos != next {
            if inner.shared {
                tracing::debug!(
                    expected = next,
                    got = first_pos,
                    "stream positions published out of step; devices re-read from the database"
                );
            } else {
                tracing::warn!(
                    expected = next,
                    got = first_pos,
                    "stream tail out of step; devices re-read from the database"
                );
            }
            inner.restart_after(first_pos - 1);
        }
        for event in events {
            inner.push(event);
        }
        inner.drain_pending();
    }

    /// Another process committed events up to `pos`. On a shared database that is a hole
    /// for readers to fill; otherwise (or too far ahead to fill) the tail drops what it keeps
    /// and starts after `pos`, so that a read since an earlier position goes to the database.
    pub(crate) fn behind(&self, pos: i64) {
        let mut inner = self.lock();
        if pos <= inner.last() {
            return;
        }
        if inner.shared && pos - inner.last() <= CAPACITY as i64 {
            inner.committed = inner.committed.max(pos);
        } else {
            inner.restart_after(pos);
        }
    }

    /// The hole to fill, `(last held, last committed)`, if there is one.
    pub(crate) fn hole(&self) -> Option<(i64, i64)> {
        let inner = self.lock();
        (inner.committed > inner.last()).then(|| (inner.last(), inner.committed))
    }

    /// Fills positions `after + 1..` with `events` read from the database, if the tail still
    /// ends at `after`; this process's pending events there are superseded.
    pub(crate) fn fill(&self, after: i64, events: Vec<TailEvent>) {
        let mut inner = self.lock();
        if inner.last() != after {
            return;
        }
        for event in events {
            let pos = inner.last() + 1;
            inner.pending.remove(&pos);
            inner.push(event);
        }
        inner.drain_pending();
    }

    /// The last position published.
    pub fn last(&self) -> i64 {
        self.lock().last()
    }

    /// Messages after position `since` for a device that is a current member of exactly
    /// `groups` (as of `since`), at most `limit` of them.
    pub fn read(
        &self,
        user_id: &str,
        device_id: &str,
        groups: &HashSet<String>,
        since: i64,
        limit: usize,
    ) -> TailRead {
        let inner = self.lock();
        let last = inner.last();
        if inner.committed > last && since + 1 >= inner.first {
            return TailRead::Behind;
        }
        if since >= last {
            return TailRead::Messages {
                messages: Vec::new(),
                next: since,
            };
        }
        if since + 1 < inner.first {
            return TailRead::Reread;
        }
        let mut messages = Vec::new();
        let mut next = since;
        let mut bytes = 0usize;
        let skip = (since + 1 - inner.first) as usize;
        for event in inner.events.iter().skip(skip) {
            if messages.len() == limit {
                break;
            }
            match event {
                TailEvent::Message(m) => {
                    if groups.contains(&m.group_id) {
                        let size = m.message.len();
                        if !messages.is_empty() && bytes + size > READ_BYTE_BUDGET {
                            break;
                        }
                        bytes += size;
                        messages.push(m.clone());
                    }
                }
                TailEvent::Everyone => return TailRead::Reread,
                TailEvent::Change { group_id, devices } => {
                    let in_group = group_id.as_ref().is_some_and(|g| groups.contains(g));
                    let listed = devices.iter().any(|(u, d)| u == user_id && d == device_id);
                    if in_group || listed {
                        return TailRead::Reread;
                    }
                }
            }
            next += 1;
        }
        TailRead::Messages { messages, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(group_id: &str, pos: i64) -> TailEvent {
        TailEvent::Message(Arc::new(GroupMessage {
            expires_ts: None,
            group_id: group_id.into(),
            seq: pos,
            stream_pos: pos,
            sender_user: "@s:x".into(),
            sender_device: "S".into(),
            kind: "application".into(),
            epoch: 0,
            message: vec![1, 2, 3],
            adds: None,
            removes: None,
            ts: 0,
        }))
    }

    fn groups(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn positions(read: TailRead) -> (Vec<i64>, i64) {
        match read {
            TailRead::Messages { messages, next } => {
                (messages.iter().map(|m| m.stream_pos).collect(), next)
            }
            TailRead::Reread | TailRead::Behind => panic!("unexpected {read:?}"),
        }
    }

    /// The MLS bytes the tail holds at `pos` (it must hold a message there).
    fn bytes_at(tail: &Tail, pos: i64) -> usize {
        let inner = tail.lock();
        let at = usize::try_from(pos - inner.first).unwrap();
        match &inner.events[at] {
            TailEvent::Message(m) => m.message.len(),
            other => panic!("no message at {pos}: {other:?}"),
        }
    }

    #[test]
    fn expired_messages_lose_their_bytes_in_the_tail_and_others_keep_theirs() {
        let tail = Tail::new(10);
        let expiring = |pos: i64, expires_ts: i64| match message("!a:x", pos) {
            TailEvent::Message(m) => TailEvent::Message(Arc::new(GroupMessage {
                expires_ts: Some(expires_ts),
                ..(*m).clone()
            })),
            other => other,
        };
        tail.publish(
            11,
            vec![
                expiring(11, 1_000),
                message("!a:x", 12),
                expiring(13, 5_000),
            ],
        );
        assert_eq!(tail.lock().bytes, 9);
        assert_eq!(tail.wipe_expired(999), 0);
        assert_eq!(tail.wipe_expired(1_000), 1);
        assert_eq!(
            (
                bytes_at(&tail, 11),
                bytes_at(&tail, 12),
                bytes_at(&tail, 13)
            ),
            (0, 3, 3)
        );
        assert_eq!(tail.lock().bytes, 6);
        // Once wiped, a message is not counted again.
        assert_eq!(tail.wipe_expired(5_000), 1);
        assert_eq!(tail.lock().bytes, 3);
        // Positions and order are untouched: readers still walk past them.
        let mine = groups(&["!a:x"]);
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 10, 10)).0,
            vec![11, 12, 13]
        );
    }

    #[test]
    fn on_a_shared_database_another_process_positions_are_a_hole_filled_once_for_every_reader() {
        let tail = Tail::shared(10);
        let mine = groups(&["!a:x"]);
        tail.publish(11, vec![message("!a:x", 11)]);
        // Another process committed 12 and 13; ours at 14 waits behind the hole.
        tail.behind(13);
        tail.publish(14, vec![message("!a:x", 14)]);
        assert!(matches!(
            tail.read("@u:x", "D", &mine, 11, 10),
            TailRead::Behind
        ));
        assert_eq!(tail.hole(), Some((11, 14)));
        // The fill (from the database) covers 12..=14; ours at 14 is superseded by it.
        tail.fill(
            11,
            vec![
                message("!a:x", 12),
                message("!b:x", 13),
                message("!a:x", 14),
            ],
        );
        assert_eq!(tail.hole(), None);
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 11, 10)),
            (vec![12, 14], 14)
        );
        // A fill for a tail that moved on meanwhile changes nothing.
        tail.fill(11, vec![message("!a:x", 12)]);
        assert_eq!(tail.last(), 14);
        // A position that may change anyone's groups sends everyone to the database.
        tail.behind(15);
        tail.fill(14, vec![TailEvent::Everyone]);
        assert!(matches!(
            tail.read("@u:x", "D", &mine, 14, 10),
            TailRead::Reread
        ));
        // Pending events of ours follow a fill that stops short of them.
        tail.publish(18, vec![message("!a:x", 18)]);
        tail.fill(15, vec![message("!a:x", 16), message("!a:x", 17)]);
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 15, 10)),
            (vec![16, 17, 18], 18)
        );
        // Too far behind to fill: start over after it, readers from before go to the database.
        tail.behind(18 + 2 * CAPACITY as i64);
        assert!(matches!(
            tail.read("@u:x", "D", &mine, 18, 10),
            TailRead::Reread
        ));
        assert_eq!(tail.hole(), None);
    }

    #[test]
    fn a_device_gets_its_groups_messages_in_order_and_resumes_after_the_last_position() {
        let tail = Tail::new(10);
        tail.publish(11, vec![message("!a:x", 11), message("!b:x", 12)]);
        tail.publish(13, vec![message("!a:x", 13)]);
        let mine = groups(&["!a:x"]);
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 10, 100)),
            (vec![11, 13], 13)
        );
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 11, 100)),
            (vec![13], 13)
        );
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 13, 100)),
            (vec![], 13)
        );
        // Past the last published position (read from the database just before a publish).
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 20, 100)),
            (vec![], 20)
        );
        // A limit stops right after the last message taken.
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, 10, 1)),
            (vec![11], 11)
        );
    }

    #[test]
    fn a_change_that_concerns_the_device_sends_it_to_the_database() {
        let tail = Tail::new(0);
        tail.publish(1, vec![message("!a:x", 1)]);
        tail.publish(
            2,
            vec![TailEvent::Change {
                group_id: Some("!b:x".into()),
                devices: vec![("@u:x".into(), "D".into())],
            }],
        );
        tail.publish(
            3,
            vec![TailEvent::Change {
                group_id: Some("!a:x".into()),
                devices: vec![],
            }],
        );
        let mine = groups(&["!a:x"]);
        // Added to !b by position 2, so positions 1.. come from the database.
        assert!(matches!(
            tail.read("@u:x", "D", &mine, 0, 100),
            TailRead::Reread
        ));
        // Another device of another group skips both changes.
        let theirs = groups(&["!c:x"]);
        assert_eq!(
            positions(tail.read("@v:x", "E", &theirs, 0, 100)),
            (vec![], 3)
        );
        // A commit in a group of the device.
        assert!(matches!(
            tail.read("@w:x", "F", &mine, 2, 100),
            TailRead::Reread
        ));
    }

    #[test]
    fn positions_no_longer_kept_or_a_publish_out_of_step_fall_back_to_the_database() {
        let tail = Tail::new(0);
        let events: Vec<TailEvent> = (1..=CAPACITY as i64 + 5)
            .map(|p| message("!a:x", p))
            .collect();
        tail.publish(1, events);
        let mine = groups(&["!a:x"]);
        assert!(matches!(
            tail.read("@u:x", "D", &mine, 0, 10),
            TailRead::Reread
        ));
        assert_eq!(positions(tail.read("@u:x", "D", &mine, 5, 1)), (vec![6], 6));
        let last = tail.last();
        tail.publish(last + 2, vec![message("!a:x", last + 2)]);
        assert!(matches!(
            tail.read("@u:x", "D", &mine, last, 10),
            TailRead::Reread
        ));
        assert_eq!(
            positions(tail.read("@u:x", "D", &mine, last + 1, 10)),
            (vec![last + 2], last + 2)
        );
    }

    fn sized(group_id: &str, pos: i64, size: usize) -> TailEvent {
        TailEvent::Message(Arc::new(GroupMessage {
            expires_ts: None,
            group_id: group_id.into(),
            seq: pos,
            stream_pos: pos,
            sender_user: "@s:x".into(),
            sender_device: "S".into(),
            kind: "application".into(),
            epoch: 0,
            message: vec![0; size],
            adds: None,
            removes: None,
            ts: 0,
        }))
    }

    #[test]
    fn the_tail_keeps_at_most_its_byte_budget_and_a_read_hands_out_at_most_its_own() {
        let tail = Tail::new(0);
        // 64 messages of 1 MiB: twice the byte budget.
        for pos in 1..=64 {
            tail.publish(pos, vec![sized("!a:x", pos, 1024 * 1024)]);
        }
        let (first, bytes, last) = {
            let inner = tail.lock();
            (inner.first, inner.bytes, inner.last())
        };
        assert_eq!(last, 64);
        assert!(bytes <= BYTE_BUDGET, "{bytes} bytes kept");
        assert_eq!(first, 64 - (BYTE_BUDGET / (1024 * 1024)) as i64 + 1);
        // Reading from before what is kept goes to the database.
        assert!(matches!(
            tail.read("@u:x", "D", &groups(&["!a:x"]), 0, 1000),
            TailRead::Reread
        ));
        // A read stops at its own budget and says where to resume.
        let (got, next) = positions(tail.read("@u:x", "D", &groups(&["!a:x"]), first - 1, 1000));
        assert_eq!(got.len(), READ_BYTE_BUDGET / (1024 * 1024));
        assert_eq!(next, *got.last().unwrap());
    }
}
