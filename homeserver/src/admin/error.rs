//! What the admin service fails with; its errcodes are the API's business (`api/errors.rs`).

use parley_schema::StoreError;

use crate::accounts::error::AccountError;

/// Why an admin action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The user, token, rule or destination named does not exist (or is not local).
    #[error("{0}")]
    NotFound(String),
    /// An admin may not deactivate themselves or withdraw their own flag: a server must not
    /// lose its last admin by a slip.
    #[error("{0}")]
    NotOnYourself(String),
    /// A parameter outside its grammar.
    #[error("{0}")]
    BadRequest(String),
    /// A username or password refused as registration would refuse it.
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("storage failure")]
    Store(#[from] StoreError),
}
