//! What delivery (`/sync`, `/ws`, Welcome acknowledgement) fails with. Its errcodes and
//! statuses are the API's business (`api/errors.rs`).

use parley_schema::StoreError;

use crate::accounts::error::AccountError;

/// Why a device's read of its events failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A `since` that is not a `next_batch` token this server issued.
    #[error("since is not a token this server issued")]
    BadSince,
    /// The device's session ended (logout, device deletion, refresh-token reuse) while it
    /// waited.
    #[error("unknown or expired access token")]
    SessionEnded,
    /// A WebSocket that sent no auth frame in time (or a first frame without a token).
    #[error("missing access token")]
    NoAuthFrame,
    /// The WebSocket's auth frame did not authenticate.
    #[error(transparent)]
    Auth(#[from] AccountError),
    #[error("no such welcome")]
    NoSuchWelcome,
    #[error("storage failure")]
    Store(#[from] StoreError),
}
