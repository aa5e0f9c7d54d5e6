//! What the accounts service fails with. Its errcodes and statuses are the API's business
//! (`api/errors.rs`); the texts here are the `error` a client reads.

use parley_schema::StoreError;

use crate::ratelimit::RateLimited;

/// Why registration, login, refresh, logout, a device operation or a request's
/// authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The server's registration mode is `closed`.
    #[error("registration is closed")]
    RegistrationClosed,
    /// Registration needs a token (from the configuration, or made by an admin with uses
    /// left and unexpired), and none was given.
    #[error("a valid registration_token is required")]
    RegistrationTokenRequired,
    /// A localpart outside the grammar, or a user id that would be too long.
    #[error("{0}")]
    InvalidUsername(String),
    /// A password shorter than the configured minimum.
    #[error("password must have at least {min} characters")]
    WeakPassword { min: usize },
    /// A registration password that is empty or longer than the cap.
    #[error("password must be 1..={max} bytes")]
    PasswordLength { max: usize },
    /// A login password longer than the cap (the cap bounds the hashing work).
    #[error("password is longer than {max} bytes")]
    PasswordTooLong { max: usize },
    #[error("device_name is longer than {max} bytes")]
    DeviceNameTooLong { max: usize },
    /// A login to an account an admin deactivated.
    #[error("this account has been deactivated")]
    UserDeactivated,
    #[error("user id is already taken")]
    UserInUse,
    /// Wrong username or password (which of the two is not said).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A signature login whose challenge is unknown, used, expired or for another device, or
    /// whose signature does not verify under the device's bound key (which is not said).
    #[error("invalid or expired challenge, or a signature that does not verify")]
    InvalidChallenge,
    /// A login body missing the fields of its `type`, or with bad base64.
    #[error("{0}")]
    BadLoginField(String),
    /// A login naming a `device_id` that is not one of the user's devices.
    #[error("device_id is not one of this user's devices")]
    NotYourDevice,
    #[error("no such device")]
    NoSuchDevice,
    /// No bearer token on a request that needs one.
    #[error("missing access token")]
    MissingToken,
    /// An access token that does not verify or whose session is gone; a refresh token that
    /// is unknown, expired, revoked or reused.
    #[error("unknown or expired access token")]
    UnknownToken,
    /// An account's login budget, a refresh token's budget, or password hashing is spent.
    #[error("too many requests")]
    RateLimited { retry_after_ms: u64 },
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// Signing a token or hashing a password failed; the text goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<RateLimited> for AccountError {
    fn from(e: RateLimited) -> Self {
        AccountError::RateLimited {
            retry_after_ms: e.retry_after_ms,
        }
    }
}
