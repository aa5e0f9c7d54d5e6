//! Accounts: registration, login, token refresh, logout, whoami and the caller's devices;
//! [`session`] authenticates requests, [`tokens`] issues and verifies the tokens,
//! [`passwords`] hashes passwords a bounded number at a time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::accounts::{
    DeviceInfo, DevicesResponse, LoginRequest, LoginType, RefreshRequest, RegisterRequest,
    SessionResponse, WhoAmIResponse,
};
use parley_client_api::ids::{is_valid_localpart, DeviceId, UserId};
use parley_schema::{NewDevice, RotateOutcome, Session, StoreError, User};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::now_ms;
use crate::config::RegistrationMode;
use crate::ids::random_id;
use crate::state::AppState;
use error::AccountError;
use tokens::{hash_refresh_token, new_refresh_token};

pub mod challenge;
pub mod error;
pub mod passwords;
pub mod session;
pub mod tokens;

pub use session::{authenticate, Authed};

/// Longest accepted password, in bytes (Argon2 input is bounded; this bounds the work).
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest device display name.
const MAX_DEVICE_NAME_BYTES: usize = 256;
const DEVICE_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Creates an account with its first device and session.
pub async fn register(
    state: &AppState,
    req: RegisterRequest,
) -> Result<SessionResponse, AccountError> {
    let password = Zeroizing::new(req.password);
    if state.config.registration.mode == RegistrationMode::Closed {
        return Err(AccountError::RegistrationClosed);
    }
    // Shape first: a malformed request spends no token.
    let user_id = check_new_account(state, &req.username, &password)?;
    check_device_name(req.device_name.as_deref())?;
    let redeemed = match state.config.registration.mode {
        RegistrationMode::Open => None,
        RegistrationMode::Closed => return Err(AccountError::RegistrationClosed),
        RegistrationMode::Token => {
            redeem_registration_token(state, req.registration_token.as_deref().unwrap_or(""))
                .await?
        }
    };
    let created = create_registered(state, user_id, req.username, password, req.device_name).await;
    if created.is_err() {
        // The registration failed after spending a token's use: give it back.
        if let Some(hash) = redeemed.flatten() {
            if let Err(e) = state.store.admin().refund_registration_token(&hash).await {
                tracing::warn!(error = %e, "cannot refund a registration token's use");
            }
        }
    }
    created
}

/// The user id a registration (or an admin) would create, once the username and password
/// have the right shape and the password is long enough.
pub(crate) fn check_new_account(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<UserId, AccountError> {
    if !is_valid_localpart(username) {
        return Err(AccountError::InvalidUsername(
            "username must use only a-z 0-9 . _ = -".into(),
        ));
    }
    let user_id = UserId::new(username, &state.config.server_name)
        .map_err(|e| AccountError::InvalidUsername(e.to_string()))?;
    check_password_shape(password)?;
    let min = state.config.registration.min_password_length;
    if password.chars().count() < min {
        return Err(AccountError::WeakPassword { min });
    }
    Ok(user_id)
}

/// Checks a registration token: one of the config file's (`Some(None)`), or one made by an
/// admin, whose use it spends (`Some(Some(hash))`, to refund if the registration fails).
async fn redeem_registration_token(
    state: &AppState,
    given: &str,
) -> Result<Option<Option<Vec<u8>>>, AccountError> {
    // Digests are compared, so neither the content nor the length of a token leaks.
    let digest = Sha256::digest(given.as_bytes());
    let in_config = state
        .config
        .registration
        .tokens
        .iter()
        .fold(false, |found, t| {
            found | bool::from(Sha256::digest(t.as_bytes()).ct_eq(&digest))
        });
    if in_config {
        return Ok(Some(None));
    }
    // Looked up by digest: the lookup's timing tells nothing about tokens that exist.
    if !given.is_empty()
        && state
            .store
            .admin()
            .redeem_registration_token(&digest, now_ms() as i64)
            .await?
    {
        return Ok(Some(Some(digest.to_vec())));
    }
    Err(AccountError::RegistrationTokenRequired)
}

/// Creates the account of a registration, with its first device and session.
async fn create_registered(
    state: &AppState,
    user_id: UserId,
    username: String,
    password: Zeroizing<String>,
    device_name: Option<String>,
) -> Result<SessionResponse, AccountError> {
    if state
        .store
        .accounts()
        .user(user_id.as_str())
        .await?
        .is_some()
    {
        return Err(AccountError::UserInUse);
    }
    let password_hash = state.passwords.hash(password).await?;
    let now = now_ms();
    let user = User {
        user_id: user_id.to_string(),
        localpart: username,
        password_hash,
        created_ts: now as i64,
    };
    let device = new_device(&user.user_id, device_name, now);
    let (session, refresh_token, refresh_hash) = new_session(&user.user_id, &device.device_id, now);
    let expires = refresh_expiry(state, now);
    match state
        .store
        .accounts()
        .create_user_with_session(&user, &device, &session, &refresh_hash, expires)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(AccountError::UserInUse),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %user.user_id, device_id = %device.device_id, "registered");
    session_response(state, &session, refresh_token, now)
}

/// A new session for an existing or new device of the account, by password.
pub async fn login(state: &AppState, req: LoginRequest) -> Result<SessionResponse, AccountError> {
    if req.login_type == LoginType::Signature {
        return challenge::login_with_signature(state, req).await;
    }
    // A password login names both (400 otherwise, as for any missing field).
    let (Some(username), Some(password)) = (req.username, req.password) else {
        return Err(AccountError::BadLoginField(
            "a password login needs username and password".into(),
        ));
    };
    let password = Zeroizing::new(password);
    // The cap bounds the hashing work; an empty password is just a wrong one.
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    let user_id = if username.starts_with('@') {
        UserId::parse(&username)
            .ok()
            .filter(|u| crate::ids::same_server(u.server_name(), &state.config.server_name))
    } else {
        UserId::new(&username, &state.config.server_name).ok()
    };
    // Each account has its own budget of attempts, whatever addresses they come from.
    if let Some(id) = &user_id {
        state.check_login_account_rate(id.as_str())?;
    }
    let user = match &user_id {
        Some(id) => state.store.accounts().user(id.as_str()).await?,
        None => None,
    };
    // Verify against a dummy hash when the user is unknown, so timing does not reveal it.
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    if !state.passwords.verify(password, stored_hash).await? {
        return Err(AccountError::InvalidCredentials);
    }
    let Some(user) = user else {
        return Err(AccountError::InvalidCredentials);
    };
    // Said only to who knows the password.
    if state.store.admin().deactivated(&user.user_id).await? == Some(true) {
        return Err(AccountError::UserDeactivated);
    }
    check_device_name(req.device_name.as_deref())?;
    let now = now_ms();
    let (device, device_id) = match req.device_id {
        Some(device_id) => {
            if state
                .store
                .accounts()
                .device(&user.user_id, &device_id)
                .await?
                .is_none()
            {
                return Err(AccountError::NotYourDevice);
            }
            (None, device_id)
        }
        None => {
            let device = new_device(&user.user_id, req.device_name, now);
            let id = device.device_id.clone();
            (Some(device), id)
        }
    };
    start_session(state, &user.user_id, device, device_id, now).await
}

/// Opens a session for `user_id` on `device_id`, creating `device` first if given.
async fn start_session(
    state: &AppState,
    user_id: &str,
    device: Option<NewDevice>,
    device_id: String,
    now: u64,
) -> Result<SessionResponse, AccountError> {
    let (session, refresh_token, refresh_hash) = new_session(user_id, &device_id, now);
    let expires = refresh_expiry(state, now);
    state
        .store
        .accounts()
        .create_session(device.as_ref(), &session, &refresh_hash, expires)
        .await?;
    tracing::info!(user_id = %user_id, device_id = %device_id, new_device = device.is_some(), "logged in");
    session_response(state, &session, refresh_token, now)
}

/// Rotates a refresh token into a new access and refresh token; a reused rotated-out token
/// revokes the device's sessions.
pub async fn refresh(
    state: &AppState,
    req: RefreshRequest,
) -> Result<SessionResponse, AccountError> {
    let old_hash = hash_refresh_token(&req.refresh_token);
    // One refresh token (one session's lineage) may be retried only so often.
    let mut key = [0u8; 32];
    let n = old_hash.len().min(32);
    key[..n].copy_from_slice(&old_hash[..n]);
    state.check_refresh_token_rate(key)?;
    let (new_token, new_hash) = state.tokens.successor_refresh_token(&req.refresh_token);
    let now = now_ms();
    let outcome = state
        .store
        .accounts()
        .rotate_refresh_token_with_grace(
            &old_hash,
            &new_hash,
            now as i64,
            refresh_expiry(state, now),
            state.config.auth.refresh_retry_grace_ms as i64,
        )
        .await?;
    match outcome {
        RotateOutcome::Rotated(session) => session_response(state, &session, new_token, now),
        RotateOutcome::Reused { user_id, device_id } => {
            tracing::warn!(%user_id, %device_id, "rotated-out refresh token reused; device sessions revoked");
            state.notifier.notify_session(&user_id, &device_id);
            Err(AccountError::UnknownToken)
        }
        RotateOutcome::Unknown => Err(AccountError::UnknownToken),
    }
}

/// Ends the caller's session.
pub async fn logout(state: &AppState, auth: &Authed) -> Result<(), AccountError> {
    state
        .store
        .accounts()
        .delete_session(&auth.session_id)
        .await?;
    // Wake the device's long-polls and sockets so they notice the session is gone.
    state
        .notifier
        .notify_session(&auth.user_id, &auth.device_id);
    tracing::info!(user_id = %auth.user_id, device_id = %auth.device_id, "logged out");
    Ok(())
}

/// Who the caller is.
pub fn whoami(auth: Authed) -> WhoAmIResponse {
    WhoAmIResponse {
        user_id: auth.user_id,
        device_id: auth.device_id,
    }
}

/// The caller's devices.
pub async fn list_devices(
    state: &AppState,
    auth: &Authed,
) -> Result<DevicesResponse, AccountError> {
    let devices = state.store.accounts().devices(&auth.user_id).await?;
    Ok(DevicesResponse {
        devices: devices.into_iter().map(device_info).collect(),
    })
}

/// A device as the API shows it.
pub fn device_info(d: parley_schema::Device) -> DeviceInfo {
    DeviceInfo {
        device_id: d.device_id,
        display_name: d.display_name,
        signature_key: d.signature_key.map(|k| STANDARD.encode(k)),
        created_ts: d.created_ts.max(0) as u64,
        last_seen_ts: d.last_seen_ts.max(0) as u64,
    }
}

/// Deletes one of the caller's devices: its sessions end at once and the other servers
/// sharing a group with the user learn the new device list.
pub async fn delete_device(
    state: &AppState,
    auth: &Authed,
    device_id: &DeviceId,
) -> Result<(), AccountError> {
    let device_id = device_id.as_str();
    if !state
        .store
        .accounts()
        .delete_device(&auth.user_id, device_id)
        .await?
    {
        return Err(AccountError::NoSuchDevice);
    }
    state.notifier.notify_session(&auth.user_id, device_id);
    crate::keys::publish_device_list(state, &auth.user_id).await?;
    tracing::info!(user_id = %auth.user_id, %device_id, "device deleted");
    Ok(())
}

pub(crate) fn check_password_shape(password: &str) -> Result<(), AccountError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::PasswordLength {
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

fn check_device_name(name: Option<&str>) -> Result<(), AccountError> {
    if name.is_some_and(|n| n.len() > MAX_DEVICE_NAME_BYTES) {
        return Err(AccountError::DeviceNameTooLong {
            max: MAX_DEVICE_NAME_BYTES,
        });
    }
    Ok(())
}

fn new_device(user_id: &str, display_name: Option<String>, now: u64) -> NewDevice {
    NewDevice {
        user_id: user_id.to_owned(),
        device_id: random_id(10, DEVICE_ID_ALPHABET),
        display_name,
        created_ts: now as i64,
        last_seen_ts: now as i64,
    }
}

fn new_session(user_id: &str, device_id: &str, now: u64) -> (Session, String, Vec<u8>) {
    let session = Session {
        session_id: random_id(
            24,
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        ),
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        created_ts: now as i64,
    };
    let (token, hash) = new_refresh_token();
    (session, token, hash)
}

fn refresh_expiry(state: &AppState, now: u64) -> i64 {
    now.saturating_add(state.config.auth.refresh_token_ttl_ms) as i64
}

fn session_response(
    state: &AppState,
    session: &Session,
    refresh_token: String,
    now: u64,
) -> Result<SessionResponse, AccountError> {
    let ttl = state.config.auth.access_token_ttl_ms;
    let access_token = state
        .tokens
        .issue(
            &session.user_id,
            &session.device_id,
            &session.session_id,
            now,
            ttl,
        )
        .map_err(|e| AccountError::Internal(format!("signing access token: {e}")))?;
    Ok(SessionResponse {
        user_id: session.user_id.clone(),
        device_id: session.device_id.clone(),
        access_token,
        refresh_token,
        expires_in_ms: ttl,
    })
}
