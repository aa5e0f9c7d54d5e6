//! What an append of an application message or proposal is, and what it comes to: shared by
//! the store's append (`hub_log.rs`, SQLite's statements) and PostgreSQL's batched append
//! (`pg_append.rs`).

/// What an append comes to, with the log entry to publish to the stream tail when it appended
/// one. A refusal and a replay leave no change behind.
pub(crate) type AppendResult =
    Result<(Appended, Option<std::sync::Arc<crate::rows::GroupMessage>>), Refused>;

/// The log position a commit or message got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub seq: i64,
    pub stream_pos: i64,
    /// The group's epoch after acceptance.
    pub epoch: i64,
}

/// What [`crate::hub_log::HubLog::append_message`] did with a message it did not refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended as the group's next message.
    New(Accepted),
    /// The device had already used the message's `txn_id`: nothing was written, and `seq` is
    /// what that first send got (whatever this one carried).
    Replayed { seq: i64 },
}

impl Appended {
    /// The seq to answer the sender with: the new message's, or the first send's.
    pub fn seq(&self) -> i64 {
        match self {
            Appended::New(accepted) => accepted.seq,
            Appended::Replayed { seq } => *seq,
        }
    }
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
    /// The group is no longer at the epoch whose roster the send was checked against.
    RosterChanged,
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
    /// When the message expires (an application message in a group with a
    /// disappearing-messages timer), `None` when it stays.
    pub expires_ts: Option<i64>,
    /// Oldest acceptable epoch is `current − max_past_epochs` (proposals: current only).
    pub max_past_epochs: i64,
    /// Idempotency key (`txn_id`) of the sending device. A key already used is
    /// [`Appended::Replayed`] and nothing is written.
    pub txn_id: Option<String>,
    /// The epoch whose roster the sender and recipients were checked against: the append is
    /// refused with [`Refused::RosterChanged`] if the group has moved on since.
    pub roster_epoch: i64,
    /// Other servers with members in the group: the message is queued for each.
    pub outbox: Vec<String>,
}
