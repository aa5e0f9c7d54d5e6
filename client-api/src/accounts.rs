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
    /// Logs in: a new device, or a new session on an existing one.
    Login: Post "/_parley/client/v1/login",
    auth Public, rate Login, body Default, path (),
    LoginRequest => SessionResponse, errors [Forbidden]
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

/// Body of [`Login`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginRequest {
    /// A localpart or a full user id of this server.
    pub username: String,
    /// The account's password.
    pub password: String,
    /// Open a session on this existing device instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Display name for a new device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
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
