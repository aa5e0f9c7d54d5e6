//! Request authentication: a bearer access token, verified, whose session still exists.

use axum::http::{header, HeaderMap};
use parley_client_api::groups::DeviceRef;

use super::error::AccountError;
use super::tokens::Claims;
use crate::state::AppState;

/// An authenticated device: the access token verified and its session still alive.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The session the token belongs to.
    pub session_id: String,
}

impl Authed {
    /// The authenticated device, as the protocol names devices.
    pub fn device(&self) -> DeviceRef {
        DeviceRef {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
        }
    }
}

/// The bearer token of `headers`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AccountError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AccountError::MissingToken)?;
    let value = value.to_str().map_err(|_| AccountError::UnknownToken)?;
    Ok(value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(AccountError::MissingToken)?
        .trim())
}

/// Verifies the bearer token of `headers` and that its session is still alive.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Authed, AccountError> {
    let token = bearer_token(headers)?;
    let claims = state
        .tokens
        .verify(token)
        .ok_or(AccountError::UnknownToken)?;
    check_session(&claims, state).await
}

/// The device of verified `claims`, if their session is still alive.
pub async fn check_session(claims: &Claims, state: &AppState) -> Result<Authed, AccountError> {
    // The session is checked on every request, so logout and device deletion act at once.
    let session = state
        .store
        .accounts()
        .session(&claims.sid)
        .await?
        .ok_or(AccountError::UnknownToken)?;
    if session.user_id != claims.sub || session.device_id != claims.did {
        return Err(AccountError::UnknownToken);
    }
    Ok(Authed {
        user_id: session.user_id,
        device_id: session.device_id,
        session_id: session.session_id,
    })
}
