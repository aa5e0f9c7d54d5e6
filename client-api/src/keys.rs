//! Device signature keys and key packages (docs/protocol.md#keys).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::endpoint::Empty;
use crate::error::ErrorBody;

crate::endpoint! {
    /// Binds the calling device's MLS signature public key, once.
    BindSignatureKey: Put "/_parley/client/v1/devices/{device_id}/signature_key",
    auth AccessToken, rate None, body Default, path crate::params::DevicePath,
    BindSignatureKeyRequest => Empty, errors [Forbidden, SignatureKeyMismatch]
}
crate::endpoint! {
    /// Devices with bound signature keys of any user, local or remote.
    UserDevices: Get "/_parley/client/v1/users/{user_id}/devices",
    auth AccessToken, rate DeviceLookup, body Default, path crate::params::UserPath,
    crate::endpoint::NoQuery => UserDevicesResponse, errors [NotFound, Forbidden, UnreachableServer]
}
crate::endpoint! {
    /// Uploads key packages (and optionally the last-resort package) for the calling device.
    UploadKeys: Post "/_parley/client/v1/keys/upload",
    auth AccessToken, rate KeyUpload, body KeyUpload, path (),
    UploadKeysRequest => KeyCountResponse, errors [InvalidKeyPackage]
}
crate::endpoint! {
    /// Unclaimed key packages of the calling device.
    KeyCount: Get "/_parley/client/v1/keys/count",
    auth AccessToken, rate None, body Default, path (),
    crate::endpoint::NoQuery => KeyCountResponse, errors []
}
crate::endpoint! {
    /// Claims one key package per device of each listed user.
    ClaimKeys: Post "/_parley/client/v1/keys/claim",
    auth AccessToken, rate KeyClaim, body Default, path (),
    ClaimKeysRequest => ClaimKeysResponse, errors []
}

/// Body of [`BindSignatureKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BindSignatureKeyRequest {
    /// Standard base64 of the raw 32-byte Ed25519 public key.
    pub signature_key: String,
}

/// A device and its bound signature key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceKey {
    pub device_id: String,
    /// Standard base64 of the raw 32-byte Ed25519 public key.
    pub signature_key: String,
}

/// Response of [`UserDevices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserDevicesResponse {
    pub user_id: String,
    pub devices: Vec<DeviceKey>,
}

/// Body of [`UploadKeys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadKeysRequest {
    /// Standard base64 of TLS-serialised `MLSMessage`s carrying key packages.
    pub key_packages: Vec<String>,
    /// The last-resort package (carries the `last_resort` extension); replaces the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<String>,
}

/// Response of [`UploadKeys`] and [`KeyCount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeyCountResponse {
    /// Unclaimed ordinary packages (the last resort excluded).
    pub count: u64,
    /// Whether a last-resort package is uploaded.
    pub last_resort: bool,
}

/// Body of [`ClaimKeys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimKeysRequest {
    pub user_ids: Vec<String>,
}

/// Response of [`ClaimKeys`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimKeysResponse {
    /// user id → device id → base64 key package.
    pub key_packages: BTreeMap<String, BTreeMap<String, String>>,
    /// Most specific failing thing (server name, user id, or `user_id/device_id`) → error.
    pub failures: BTreeMap<String, ErrorBody>,
}
