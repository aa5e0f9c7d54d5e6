//! Accounts, sessions and devices (docs/protocol.md#accounts).

use serde::{Deserialize, Serialize};

use crate::endpoint::Empty;

crate::endpoint! {
    /// Creates an account and its first device.
    Register: Post "/_parley/client/v1/register",
    auth Public, rate Register, body Default, path (),
    RegisterRequest => SessionResponse, errors [Forbidden, InvalidUsername, WeakPassword, UserInUse]
}
crate::endpoint! {
    /// Logs in: by password (a new device, or a new session on an existing one), or by a
    /// challenge signed with an existing device's MLS signature key (`type: "signature"`).
    Login: Post "/_parley/client/v1/login",
    auth Public, rate Login, body Default, path (),
    LoginRequest => SessionResponse, errors [Forbidden, UserDeactivated]
}
crate::endpoint! {
    /// A single-use challenge for passwordless login of a device: its MLS signature key signs
    /// it, and `POST /login` with `type: "signature"` trades it for a session.
    LoginChallenge: Post "/_parley/client/v1/login/challenge",
    auth Public, rate Login, body Default, path (),
    LoginChallengeRequest => LoginChallengeResponse, errors []
}
crate::endpoint! {
    /// Trades a refresh token for a new access and refresh token (rotation).
    Refresh: Post "/_parley/client/v1/refresh",
    auth Public, rate Refresh, body Default, path (),
    RefreshRequest => SessionResponse, errors [UnknownToken]
}
crate::endpoint! {
    /// Revokes the calling device's session.
    Logout: Post "/_parley/client/v1/logout",
    auth AccessToken, rate None, body Default, path (),
    Empty => Empty, errors []
}
crate::endpoint! {
    /// Who the token belongs to.
    WhoAmI: Get "/_parley/client/v1/whoami",
    auth AccessToken, rate None, body Default, path (),
    crate::endpoint::NoQuery => WhoAmIResponse, errors []
}
crate::endpoint! {
    /// The caller's devices.
    ListDevices: Get "/_parley/client/v1/devices",
    auth AccessToken, rate None, body Default, path (),
    crate::endpoint::NoQuery => DevicesResponse, errors []
}
crate::endpoint! {
    /// Deletes one of the caller's devices with its sessions (and later its key packages).
    DeleteDevice: Delete "/_parley/client/v1/devices/{device_id}",
    auth AccessToken, rate None, body Default, path crate::params::DevicePath,
    crate::endpoint::NoQuery => Empty, errors [NotFound]
}

/// Body of [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegisterRequest {
    /// Localpart of the new user id.
    pub username: String,
    /// Password, hashed with Argon2id by the server.
    pub password: String,
    /// Display name of the first device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Needed when registration is token-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token: Option<String>,
}

/// How a [`LoginRequest`] proves who is logging in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoginType {
    /// `username` and `password`.
    #[default]
    Password,
    /// `user_id`, `device_id`, `challenge` and `signature`.
    Signature,
}

/// Body of [`Login`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginRequest {
    /// `password` (the default) or `signature`.
    #[serde(rename = "type", default, skip_serializing_if = "is_password")]
    pub login_type: LoginType,
    /// A localpart or a full user id of this server (password login: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The account's password (password login: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The user logging in (signature login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Base64 challenge from [`LoginChallenge`] (signature login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// Base64 Ed25519 signature of the challenge's bytes by the device's bound MLS signature
    /// key (signature login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Open a session on this existing device instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Display name for a new device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

fn is_password(t: &LoginType) -> bool {
    *t == LoginType::Password
}

impl LoginRequest {
    /// A password login as `username` (a new device unless `device_id`).
    pub fn password(username: &str, password: &str, device_id: Option<&str>) -> LoginRequest {
        LoginRequest {
            login_type: LoginType::Password,
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
            user_id: None,
            challenge: None,
            signature: None,
            device_id: device_id.map(str::to_owned),
            device_name: None,
        }
    }

    /// A signature login of `user_id`'s device `device_id` with a signed challenge (base64).
    pub fn signature(user_id: &str, device_id: &str, challenge: &str, signature: &str) -> Self {
        LoginRequest {
            login_type: LoginType::Signature,
            username: None,
            password: None,
            user_id: Some(user_id.to_owned()),
            challenge: Some(challenge.to_owned()),
            signature: Some(signature.to_owned()),
            device_id: Some(device_id.to_owned()),
            device_name: None,
        }
    }
}

/// Body of [`LoginChallenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginChallengeRequest {
    /// The user logging in, `@localpart:server`.
    pub user_id: String,
    /// The device whose MLS signature key will sign.
    pub device_id: String,
}

/// Response of [`LoginChallenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginChallengeResponse {
    /// Base64 of the challenge's bytes: `parley-login-v1`, the server name, the user id and
    /// the device id, each followed by a zero byte, then 32 random bytes.
    pub challenge: String,
    /// When it stops being accepted (ms since the epoch).
    pub expires_ts: u64,
}

/// First bytes of every login challenge.
pub const LOGIN_CHALLENGE_PREFIX: &[u8] = b"parley-login-v1\0";

/// Random bytes at the end of a login challenge.
pub const LOGIN_CHALLENGE_RANDOM_BYTES: usize = 32;

/// The bytes of a login challenge for `user_id`'s `device_id` at `server_name`.
pub fn login_challenge_bytes(
    server_name: &str,
    user_id: &str,
    device_id: &str,
    random: &[u8; LOGIN_CHALLENGE_RANDOM_BYTES],
) -> Vec<u8> {
    let mut bytes = LOGIN_CHALLENGE_PREFIX.to_vec();
    for part in [server_name, user_id, device_id] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(random);
    bytes
}

/// The server name, user id and device id a login challenge was made for, if `bytes` is one.
pub fn parse_login_challenge(bytes: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = bytes.strip_prefix(LOGIN_CHALLENGE_PREFIX)?;
    if rest.len() < LOGIN_CHALLENGE_RANDOM_BYTES {
        return None;
    }
    let (named, _random) = rest.split_at(rest.len() - LOGIN_CHALLENGE_RANDOM_BYTES);
    let mut parts = named.split(|b| *b == 0);
    let server = std::str::from_utf8(parts.next()?).ok()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let device = std::str::from_utf8(parts.next()?).ok()?;
    // Exactly three zero-terminated parts.
    if parts.next() != Some(&[][..]) || parts.next().is_some() {
        return None;
    }
    Some((server, user, device))
}

/// Body of [`Refresh`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RefreshRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

/// A new session's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionResponse {
    pub user_id: String,
    pub device_id: String,
    /// Short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Single-use token for [`Refresh`].
    pub refresh_token: String,
    /// Lifetime of `access_token` in milliseconds.
    pub expires_in_ms: u64,
}

/// Response of [`WhoAmI`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhoAmIResponse {
    pub user_id: String,
    pub device_id: String,
}

/// One of the caller's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceInfo {
    pub device_id: String,
    pub display_name: Option<String>,
    /// Standard base64 of the bound 32-byte Ed25519 MLS signature key, if bound.
    pub signature_key: Option<String>,
    pub created_ts: u64,
    pub last_seen_ts: u64,
}

/// Response of [`ListDevices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DevicesResponse {
    pub devices: Vec<DeviceInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_challenge_names_its_server_user_and_device_and_nothing_else_parses() {
        let bytes = login_challenge_bytes("a.example:8448", "@al:a.example:8448", "DEV", &[7; 32]);
        assert_eq!(
            parse_login_challenge(&bytes),
            Some(("a.example:8448", "@al:a.example:8448", "DEV"))
        );
        assert_eq!(parse_login_challenge(&bytes[1..]), None);
        assert_eq!(parse_login_challenge(&bytes[..bytes.len() - 1]), None);
        let four = login_challenge_bytes("a\0b", "@u:a", "D", &[0; 32]);
        assert_eq!(parse_login_challenge(&four), None);
        // Random bytes that contain zeros do not confuse it.
        let zeros = login_challenge_bytes("a", "@u:a", "D", &[0; 32]);
        assert_eq!(parse_login_challenge(&zeros), Some(("a", "@u:a", "D")));
    }

    #[test]
    fn a_password_login_body_is_unchanged_on_the_wire() {
        let body = serde_json::to_value(LoginRequest::password("al", "pw", None)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"username": "al", "password": "pw"})
        );
        let parsed: LoginRequest =
            serde_json::from_value(serde_json::json!({"username": "al", "password": "pw"}))
                .unwrap();
        assert_eq!(parsed.login_type, LoginType::Password);
        let sig: LoginRequest = serde_json::from_value(serde_json::json!(
            {"type": "signature", "user_id": "@al:a", "device_id": "D", "challenge": "c", "signature": "s"}))
        .unwrap();
        assert_eq!(sig.login_type, LoginType::Signature);
    }
}
