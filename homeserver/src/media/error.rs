//! What the media repository fails with. Its errcodes and statuses are the API's business
//! (`api/errors.rs`).

use parley_schema::StoreError;

use crate::federation::remote_errors::RemoteError;

/// Why an upload or download was refused.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The upload is larger than `limits.max_upload_bytes`.
    #[error("media is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The upload would take the user past their quota.
    #[error("the upload would exceed the media quota of {quota} bytes ({used} used)")]
    QuotaExceeded { quota: u64, used: u64 },
    /// The user has `media.max_concurrent_uploads_per_user` uploads running.
    #[error("too many uploads at once")]
    TooManyUploads,
    /// The body stopped arriving, or the transfer took longer than allowed.
    #[error("the upload did not arrive in time")]
    Timeout,
    /// No such media here (or, for another server's, there).
    #[error("no such media")]
    NotFound,
    /// A `Range` starting at or past the end.
    #[error("range not satisfiable: the media has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// The server holding the media could not be reached or answered wrongly.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// A file operation failed; the text goes to the log only.
    #[error("internal error")]
    Io(String),
}

impl From<std::io::Error> for MediaError {
    fn from(e: std::io::Error) -> Self {
        MediaError::Io(e.to_string())
    }
}
