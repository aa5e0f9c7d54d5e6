//! What the hub fails with, for group creation and listing, commits and messages (here or
//! at another hub). Its errcodes and statuses are the API's business (`api/errors.rs`).

use parley_schema::StoreError;

use crate::federation::remote_errors::RemoteError;

/// Why a group operation, commit or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No such group is registered at this hub.
    #[error("no such group at this hub")]
    NoSuchGroup,
    /// A follower server submitted to a group whose hub is another server.
    #[error("this server is not the group's hub")]
    NotTheHub,
    /// An MLS message, Welcome or GroupInfo that does not decode, is framed wrongly, is for
    /// a future epoch or disagrees with what the client declared.
    #[error("invalid MLS message: {0}")]
    InvalidMessage(String),
    /// A message or bundle over its byte limit, or a count (adds, servers, proposals) over
    /// its bound.
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A commit adding devices of a server the federation ACL refuses.
    #[error("federation with {0} is not allowed")]
    FederationNotAllowed(String),
    /// The sending device is not in the roster (or not at the leaf its message names).
    #[error("the sending device is not a member of this group")]
    NotMember,
    /// A commit the group's roles allow only an admin to make (docs/protocol.md#group-roles).
    #[error(transparent)]
    NotAdmin(parley_client_api::roles::RoleError),
    /// A join by link the group's join rules refuse (docs/protocol.md#join-links).
    #[error(transparent)]
    JoinRefused(parley_client_api::join::JoinError),
    #[error("the group is at epoch {current_epoch}")]
    StaleEpoch { current_epoch: u64 },
    /// The group's hub (another server) refused or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// The hub itself failed (a roster that kept changing under retries, a serialisation);
    /// the text goes to the log only.
    #[error("internal error")]
    Internal(String),
}
