//! Passwordless login (docs/protocol.md#challenge-login): a device proves itself with its bound
//! MLS signature key. `POST /login/challenge` hands out a single-use challenge naming this
//! server, the user and the device; `POST /login` with `type: "signature"` checks the
//! signature under the key the device bound and uses the challenge up.
//!
//! Nothing tells a caller whether the user or device exists: every well-formed request gets a
//! challenge, recorded only for a device with a bound key, and every failed login is the same
//! 403. Challenges are bounded in number per device, in time, and by the `login` rate classes
//! (per address and per account).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use parley_client_api::accounts::{
    login_challenge_bytes, parse_login_challenge, LoginChallengeRequest, LoginChallengeResponse,
    LoginRequest, SessionResponse, LOGIN_CHALLENGE_RANDOM_BYTES,
};
use parley_client_api::ids::{DeviceId, UserId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::AccountError;
use super::start_session;
use crate::clock::now_ms;
use crate::state::AppState;

/// Unexpired challenges one device may hold; a new one replaces the oldest.
pub const MAX_OUTSTANDING_CHALLENGES: i64 = 5;

/// A challenge for `req`'s device, valid for `auth.login_challenge_ttl_ms`.
pub async fn issue(
    state: &AppState,
    req: LoginChallengeRequest,
) -> Result<LoginChallengeResponse, AccountError> {
    let user_id = UserId::parse(&req.user_id)
        .map_err(|e| AccountError::BadLoginField(format!("user_id: {e}")))?;
    DeviceId::parse(&req.device_id)
        .map_err(|e| AccountError::BadLoginField(format!("device_id: {e}")))?;
    state.check_login_account_rate(user_id.as_str())?;
    let mut random = [0u8; LOGIN_CHALLENGE_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let server_name = &state.config.server_name;
    let bytes = login_challenge_bytes(server_name, user_id.as_str(), &req.device_id, &random);
    let now = now_ms();
    let expires_ts = now.saturating_add(state.config.auth.login_challenge_ttl_ms);
    let device = if crate::ids::same_server(user_id.server_name(), server_name) {
        state
            .store
            .accounts()
            .device(user_id.as_str(), &req.device_id)
            .await?
    } else {
        None
    };
    if device.is_some_and(|d| d.signature_key.is_some()) {
        state
            .store
            .login_challenges()
            .issue(
                &challenge_hash(&bytes),
                user_id.as_str(),
                &req.device_id,
                now as i64,
                expires_ts as i64,
                MAX_OUTSTANDING_CHALLENGES,
            )
            .await?;
    }
    Ok(LoginChallengeResponse {
        challenge: STANDARD.encode(&bytes),
        expires_ts,
    })
}

/// A session on the device `req` names, if its signature of an outstanding challenge
/// verifies under the device's bound key.
pub async fn login_with_signature(
    state: &AppState,
    req: LoginRequest,
) -> Result<SessionResponse, AccountError> {
    let field = |name: &str, value: Option<String>| {
        value.ok_or_else(|| AccountError::BadLoginField(format!("signature login needs {name}")))
    };
    let user_id = field("user_id", req.user_id)?;
    let device_id = field("device_id", req.device_id)?;
    let challenge = STANDARD
        .decode(field("challenge", req.challenge)?)
        .map_err(|_| AccountError::BadLoginField("challenge is not base64".into()))?;
    let signature = STANDARD
        .decode(field("signature", req.signature)?)
        .map_err(|_| AccountError::BadLoginField("signature is not base64".into()))?;
    state.check_login_account_rate(&user_id)?;
    // The challenge must be this server's, for this user and device.
    match parse_login_challenge(&challenge) {
        Some((server, user, device))
            if crate::ids::same_server(server, &state.config.server_name)
                && user == user_id
                && device == device_id => {}
        _ => return Err(AccountError::InvalidChallenge),
    }
    let device = state
        .store
        .accounts()
        .device(&user_id, &device_id)
        .await?
        .ok_or(AccountError::InvalidChallenge)?;
    let key = device
        .signature_key
        .as_deref()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or(AccountError::InvalidChallenge)?;
    let signature =
        Signature::from_slice(&signature).map_err(|_| AccountError::InvalidChallenge)?;
    key.verify(&challenge, &signature)
        .map_err(|_| AccountError::InvalidChallenge)?;
    let now = now_ms();
    // Used once: a replay, even of a valid signature, finds nothing.
    if !state
        .store
        .login_challenges()
        .consume(
            &challenge_hash(&challenge),
            &user_id,
            &device_id,
            now as i64,
        )
        .await?
    {
        return Err(AccountError::InvalidChallenge);
    }
    // Said only to who holds the device's key.
    if state.store.admin().deactivated(&user_id).await? == Some(true) {
        return Err(AccountError::UserDeactivated);
    }
    start_session(state, &user_id, None, device_id, now).await
}

/// The key a challenge is stored under: its SHA-256, hex.
fn challenge_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
