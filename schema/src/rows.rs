//! Rows the store keeps in memory as well as in the database: sessions and group rosters in its
//! caches ([`crate::cache`]), log messages in the stream tail ([`crate::tail`]). They sit below
//! [`crate::db`] so that the store can hold them; [`crate::accounts`] and [`crate::groups`],
//! whose queries produce them, re-export them.

use diesel::prelude::*;

use crate::schema::{group_messages, sessions};

/// A login session of one device.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub created_ts: i64,
}

/// A roster device and its leaf index in the ratchet tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub user_id: String,
    pub device_id: String,
    pub leaf_index: u32,
}

/// A group's epoch with the roster of that epoch, as the hub checks sends against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRoster {
    pub epoch: i64,
    /// Current members, by leaf index.
    pub members: Vec<Member>,
    /// The group's disappearing-messages timer (ms), `None` when messages stay.
    pub disappear_after_ms: Option<i64>,
}

/// An accepted message of a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
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
    /// When an application message of a group with a disappearing-messages timer expires
    /// (`ts` + timer): never delivered to a device after it.
    pub expires_ts: Option<i64>,
}

impl GroupMessage {
    /// Whether the message has expired at `now_ms` (never delivered to a device then).
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_ts.is_some_and(|e| e <= now_ms)
    }
}
