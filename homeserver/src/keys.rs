//! The authentication service side of MLS: device signature keys and the key-package
//! directory (upload with full validation, count, claim).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parley_client_api::endpoint::NoQuery;
use parley_client_api::groups::DeviceRef;
use parley_client_api::ids::{DeviceId, UserId};
use parley_client_api::keys::{
    BindSignatureKeyRequest, ClaimKeysRequest, ClaimKeysResponse, DeviceKey, KeyCountResponse,
    UploadKeysRequest, UserDevicesResponse,
};
use parley_client_api::params::UserPath;
use parley_client_api::{ErrCode, ErrorBody};
use parley_schema::{BindOutcome, NewKeyPackage, OutboundDeviceKey, StoreError};

use crate::clock::now_ms;
use crate::federation::client::FedError;
use crate::federation::remote_errors::RemoteError;
use crate::mls_check;
use crate::state::AppState;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A device binding another device's signature key.
    #[error("a device binds only its own signature key")]
    NotOwnDevice,
    /// A signature key that is not standard base64 of 32 bytes.
    #[error("signature_key must be standard base64 of 32 bytes")]
    BadSignatureKey,
    #[error("a different signature key is already bound to this device")]
    SignatureKeyMismatch,
    /// The caller's device no longer exists (deleted since its token was checked).
    #[error("unknown or expired access token")]
    DeviceGone,
    /// Not a user id, or no such user on its server.
    #[error("no such user")]
    NoSuchUser,
    /// More key packages in one upload, or held by one device, than allowed.
    #[error("request body is larger than {limit} bytes")]
    TooManyKeyPackages { limit: usize },
    /// Key package `index` of an upload (`len(key_packages)` for `last_resort`) is invalid,
    /// or the device has no bound signature key yet.
    #[error("key package {index} is invalid: {reason}")]
    InvalidKeyPackage { index: usize, reason: String },
    /// More users in one claim than allowed.
    #[error("at most {max} user_ids per claim")]
    TooManyUsers { max: usize },
    /// A remote user's server answered for another user.
    #[error("{0} answered for another user")]
    WrongUserAnswered(String),
    /// A remote user's server refused or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("storage failure")]
    Store(#[from] StoreError),
}

/// Most users in one claim.
const MAX_CLAIM_USERS: usize = 100;

/// Binds the MLS signature key of the caller's own device (once; the same key again is fine).
pub async fn bind_signature_key(
    state: &AppState,
    auth: &DeviceRef,
    device_id: &DeviceId,
    req: BindSignatureKeyRequest,
) -> Result<(), KeysError> {
    if device_id.as_str() != auth.device_id {
        return Err(KeysError::NotOwnDevice);
    }
    let key = STANDARD
        .decode(req.signature_key.as_bytes())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or(KeysError::BadSignatureKey)?;
    match state
        .store
        .keys()
        .bind_signature_key(&auth.user_id, &auth.device_id, &key)
        .await?
    {
        BindOutcome::Bound => {
            publish_device_list(state, &auth.user_id).await?;
            Ok(())
        }
        BindOutcome::AlreadyBound => Ok(()),
        BindOutcome::Mismatch => Err(KeysError::SignatureKeyMismatch),
        BindOutcome::NoDevice => Err(KeysError::DeviceGone),
    }
}

/// A user's devices and their signature keys: local ones from the store, remote ones from a
/// cache refreshed from their server.
pub async fn user_devices(
    state: &AppState,
    user: &UserId,
) -> Result<UserDevicesResponse, KeysError> {
    if crate::ids::same_server(user.server_name(), &state.config.server_name) {
        return local_user_devices(state, user).await;
    }
    let now = now_ms() as i64;
    if let Some((updated, devices)) = state
        .store
        .federation()
        .remote_device_list(user.as_str())
        .await?
    {
        if now - updated < REMOTE_DEVICES_TTL_MS {
            let devices = devices
                .into_iter()
                .map(|(device_id, key)| DeviceKey {
                    device_id,
                    signature_key: STANDARD.encode(key),
                })
                .collect();
            return Ok(UserDevicesResponse {
                user_id: user.to_string(),
                devices,
            });
        }
    }
    let path = UserPath {
        user_id: user.clone(),
    };
    let list = state
        .fed
        .call::<parley_federation::endpoints::UserDevices>(user.server_name(), &path, &NoQuery {})
        .await
        .map_err(RemoteError::from)?;
    if list.user_id != user.as_str() {
        return Err(KeysError::WrongUserAnswered(user.server_name().to_owned()));
    }
    crate::federation::device_lists::cache_remote_devices(state, &list).await?;
    Ok(list)
}

/// Pushes a local user's device list to every server sharing a group with them, durably.
pub async fn publish_device_list(state: &AppState, user_id: &str) -> Result<(), StoreError> {
    let destinations = state
        .store
        .federation()
        .servers_sharing_groups(user_id, &state.config.server_name)
        .await?;
    if destinations.is_empty() {
        notify_hosted_groups(state, user_id).await;
        return Ok(());
    }
    let devices: Vec<OutboundDeviceKey> = bound_devices(state, user_id)
        .await?
        .into_iter()
        .map(|d| OutboundDeviceKey {
            device_id: d.device_id,
            signature_key: d.signature_key,
        })
        .collect();
    state
        .store
        .outbox()
        .queue_device_list_update(&destinations, user_id, &devices, now_ms() as i64)
        .await?;
    for d in &destinations {
        state.outbox.wake(d);
    }
    notify_hosted_groups(state, user_id).await;
    Ok(())
}

/// The groups hosted here ask their members to add or remove the user's changed devices
/// (a hint: a failure is logged, and the list itself is already queued for other servers).
async fn notify_hosted_groups(state: &AppState, user_id: &str) {
    let Ok(user) = UserId::parse(user_id) else {
        return;
    };
    if let Err(e) = crate::hub::notice::member_devices_changed(state, &user).await {
        tracing::warn!(user_id = %user, error = %e, "device list notices not written");
    }
}

/// How long a remote device list is served from the cache without asking its server again
/// (updates pushed by that server refresh it sooner).
const REMOTE_DEVICES_TTL_MS: i64 = 10 * 60 * 1000;

/// A local user's devices with bound keys; 404 for a user that does not exist here.
pub async fn local_user_devices(
    state: &AppState,
    user: &UserId,
) -> Result<UserDevicesResponse, KeysError> {
    if !crate::ids::same_server(user.server_name(), &state.config.server_name)
        || state.store.accounts().user(user.as_str()).await?.is_none()
    {
        return Err(KeysError::NoSuchUser);
    }
    Ok(UserDevicesResponse {
        user_id: user.to_string(),
        devices: bound_devices(state, user.as_str()).await?,
    })
}

/// A user's devices that have a bound signature key.
pub async fn bound_devices(state: &AppState, user_id: &str) -> Result<Vec<DeviceKey>, StoreError> {
    Ok(state
        .store
        .accounts()
        .devices(user_id)
        .await?
        .into_iter()
        .filter_map(|d| {
            d.signature_key.map(|k| DeviceKey {
                device_id: d.device_id,
                signature_key: STANDARD.encode(k),
            })
        })
        .collect())
}

/// Validates and stores key packages of the caller's device (all or none).
pub async fn upload(
    state: &AppState,
    auth: &DeviceRef,
    req: UploadKeysRequest,
) -> Result<KeyCountResponse, KeysError> {
    let limits = &state.config.limits;
    if req.key_packages.len() > limits.max_key_packages_per_upload {
        return Err(KeysError::TooManyKeyPackages {
            limit: limits.max_key_packages_per_upload,
        });
    }
    let device = state
        .store
        .accounts()
        .device(&auth.user_id, &auth.device_id)
        .await?
        .ok_or(KeysError::DeviceGone)?;
    let Some(bound_key) = device.signature_key else {
        return Err(KeysError::InvalidKeyPackage {
            index: 0,
            reason: "bind the device's signature key first".into(),
        });
    };
    let identity = format!("{}/{}", auth.user_id, auth.device_id);
    let now = now_ms();
    let check = |index: usize, b64: &str, last_resort: bool| -> Result<NewKeyPackage, KeysError> {
        let invalid = |reason: String| KeysError::InvalidKeyPackage { index, reason };
        let bytes = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| invalid("not standard base64".into()))?;
        if bytes.len() as u64 > limits.max_message_bytes {
            return Err(invalid(format!(
                "larger than {} bytes",
                limits.max_message_bytes
            )));
        }
        let valid = mls_check::validate_key_package(
            &bytes,
            &identity,
            &bound_key,
            now,
            limits.max_key_package_lifetime_ms,
            last_resort,
        )
        .map_err(|e| invalid(e.to_string()))?;
        Ok(NewKeyPackage {
            kp_ref: valid.hash_ref,
            data: valid.message,
            not_after_ms: i64::try_from(valid.not_after_ms).unwrap_or(i64::MAX),
        })
    };
    let mut packages = Vec::with_capacity(req.key_packages.len());
    for (i, kp) in req.key_packages.iter().enumerate() {
        packages.push(check(i, kp, false)?);
    }
    let last_resort = match &req.last_resort {
        Some(kp) => Some(check(req.key_packages.len(), kp, true)?),
        None => None,
    };
    let max = limits.max_key_packages_per_device;
    let count = match state
        .store
        .keys()
        .store_key_packages_capped(
            &auth.user_id,
            &auth.device_id,
            &packages,
            last_resort.as_ref(),
            now as i64,
            max,
        )
        .await
    {
        Ok(count) => count,
        Err(StoreError::Quota(_)) => {
            return Err(KeysError::TooManyKeyPackages {
                limit: max as usize,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let (_, has_last_resort) = state
        .store
        .keys()
        .key_package_count(&auth.user_id, &auth.device_id, now as i64)
        .await?;
    state.notifier.notify_keys(&auth.user_id, &auth.device_id);
    Ok(KeyCountResponse {
        count,
        last_resort: has_last_resort,
    })
}

/// The device's key-package counts, as sent in sync and pushed on `/ws`.
pub async fn key_count(
    state: &AppState,
    user_id: &str,
    device_id: &str,
) -> Result<KeyCountResponse, StoreError> {
    let (count, last_resort) = state
        .store
        .keys()
        .key_package_count(user_id, device_id, now_ms() as i64)
        .await?;
    Ok(KeyCountResponse { count, last_resort })
}

/// Claims one key package per device of each user: local users here, remote ones from their
/// servers (one request per server); failures are reported per user, device or server.
pub async fn claim(
    state: &AppState,
    req: ClaimKeysRequest,
) -> Result<ClaimKeysResponse, KeysError> {
    if req.user_ids.len() > MAX_CLAIM_USERS {
        return Err(KeysError::TooManyUsers {
            max: MAX_CLAIM_USERS,
        });
    }
    // Local users here; remote ones grouped by server and claimed over federation.
    let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut local = Vec::new();
    for user_id in req.user_ids {
        match UserId::parse(&user_id) {
            Ok(u) if !crate::ids::same_server(u.server_name(), &state.config.server_name) => remote
                .entry(u.server_name().to_ascii_lowercase())
                .or_default()
                .push(user_id),
            _ => local.push(user_id),
        }
    }
    let mut response = claim_local(state, local).await?;
    for (server, user_ids) in remote {
        let request = ClaimKeysRequest {
            user_ids: user_ids.clone(),
        };
        let answer = state
            .fed
            .call::<parley_federation::endpoints::ClaimKeys>(&server, &(), &request)
            .await;
        match answer {
            Ok(theirs) => {
                // Keep only what concerns the users asked of that server.
                for (user, devices) in theirs.key_packages {
                    if user_ids.contains(&user) {
                        response.key_packages.insert(user, devices);
                    }
                }
                for (key, failure) in theirs.failures {
                    if user_ids
                        .iter()
                        .any(|u| key == *u || key.starts_with(&format!("{u}/")))
                    {
                        response.failures.insert(key, failure);
                    }
                }
            }
            Err(FedError::NotAllowed(_)) | Err(FedError::Refused { status: 403, .. }) => {
                response.failures.insert(
                    server,
                    failure(
                        ErrCode::Forbidden,
                        "federation with this server is not allowed",
                    ),
                );
            }
            Err(e) => {
                response
                    .failures
                    .insert(server, failure(ErrCode::UnreachableServer, &e.to_string()));
            }
        }
    }
    Ok(response)
}

/// Claims one package per device of each local user (what both the client API and the
/// federation API hand out for this server's users).
pub async fn claim_local(
    state: &AppState,
    user_ids: Vec<String>,
) -> Result<ClaimKeysResponse, StoreError> {
    let mut response = ClaimKeysResponse::default();
    let now = now_ms() as i64;
    for user_id in user_ids.into_iter().take(MAX_CLAIM_USERS) {
        let Ok(user) = UserId::parse(&user_id) else {
            response
                .failures
                .insert(user_id, failure(ErrCode::NotFound, "not a valid user id"));
            continue;
        };
        if !crate::ids::same_server(user.server_name(), &state.config.server_name) {
            response.failures.insert(
                user.server_name().to_owned(),
                failure(ErrCode::Forbidden, "not a user of this server"),
            );
            continue;
        }
        if state.store.accounts().user(user.as_str()).await?.is_none() {
            response
                .failures
                .insert(user_id, failure(ErrCode::NotFound, "no such user"));
            continue;
        }
        let mut claimed = BTreeMap::new();
        for device in bound_devices(state, user.as_str()).await? {
            match state
                .store
                .keys()
                .claim_key_package(user.as_str(), &device.device_id, now)
                .await?
            {
                Some(kp) => {
                    claimed.insert(device.device_id.clone(), STANDARD.encode(&kp.data));
                    state.notifier.notify_keys(user.as_str(), &device.device_id);
                }
                None => {
                    response.failures.insert(
                        format!("{}/{}", user, device.device_id),
                        failure(
                            ErrCode::KeyPackagesExhausted,
                            "no key package left for this device",
                        ),
                    );
                }
            }
        }
        response.key_packages.insert(user.to_string(), claimed);
    }
    Ok(response)
}

fn failure(code: ErrCode, text: &str) -> ErrorBody {
    ErrorBody {
        errcode: code.as_str().to_owned(),
        error: text.to_owned(),
        extra: Default::default(),
    }
}
