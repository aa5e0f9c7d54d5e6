//! What the federation service fails with when other servers call it: transactions and their
//! events, relayed messages and Welcomes, catch-up pages served as a hub. Its errcodes and
//! statuses are the API's business (`api/errors.rs`); a refused event of a transaction
//! carries the same errcode and text.

use parley_schema::StoreError;

use crate::ids::NotAGroupId;

/// Why a federation request, or one event of a transaction, was refused.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A transaction (or its id) outside the federation protocol's rules; the federation
    /// crate gives its errcode and status.
    #[error("{0}")]
    BadTransaction(#[from] parley_federation::Error),
    /// A copy of this transaction is being applied right now.
    #[error("too many requests")]
    TransactionInFlight { retry_after_ms: u64 },
    /// A field no hub could have produced (a seq, epoch or timestamp out of range, an unknown
    /// message kind), or a `since` out of range.
    #[error("{0}")]
    BadField(String),
    /// A relayed message or Welcome that is not base64, or not MLS.
    #[error("invalid MLS message: {0}")]
    InvalidMessage(String),
    /// A relayed message or Welcome over its byte limit, or a Welcome listing too many
    /// recipients.
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    NotAGroupId(#[from] NotAGroupId),
    /// Catch-up for a group that is not registered at this hub.
    #[error("no such group at this hub")]
    NoSuchGroup,
    /// A message relayed by a server that is not the group's hub.
    #[error("only the group's hub relays its messages")]
    MessageNotFromHub,
    /// A Welcome relayed by a server that is not the group's hub.
    #[error("only the group's hub relays its welcomes")]
    WelcomeNotFromHub,
    /// A device-list update for a user of another server than the sender.
    #[error("a server may only update its own users' devices")]
    NotTheUsersServer,
    /// Catch-up asked by a server that never had a member in the group.
    #[error("the requesting server has no member in this group")]
    NoMemberOnServer,
    /// A relayed event for a group in which no device of this server is a member.
    #[error("no device of this server is a member of this group")]
    NoLocalMember,
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// This server failed (a stored answer that does not parse back, a serialisation); the
    /// text goes to the log only.
    #[error("internal error")]
    Internal(String),
}
