//! Credential validation against the keys the app fetched from the servers.

use std::collections::HashMap;

use openmls::prelude::Credential;

use crate::device_ref::DeviceRef;
use crate::error::{MlsError, Result};

/// What the app knows about devices' published signature keys (`GET /users/{id}/devices`).
/// The engine does no I/O: the app fetches before calling in.
pub trait DeviceKeyValidator {
    /// The raw Ed25519 key the device's server publishes, or `None` if unknown.
    fn published_signature_key(&self, device: &DeviceRef) -> Option<Vec<u8>>;
}

/// A [`DeviceKeyValidator`] over a map the app fills from device lists.
#[derive(Debug, Clone, Default)]
pub struct StaticDeviceKeys {
    keys: HashMap<DeviceRef, Vec<u8>>,
}

impl StaticDeviceKeys {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or replaces) a device's published key.
    pub fn insert(&mut self, device: DeviceRef, signature_key: Vec<u8>) {
        self.keys.insert(device, signature_key);
    }

    /// Forgets a device.
    pub fn remove(&mut self, device: &DeviceRef) {
        self.keys.remove(device);
    }
}

impl DeviceKeyValidator for StaticDeviceKeys {
    fn published_signature_key(&self, device: &DeviceRef) -> Option<Vec<u8>> {
        self.keys.get(device).cloned()
    }
}

/// Checks a leaf: its credential names a well-formed device whose published key is the leaf's
/// signature key. Returns the device.
pub(crate) fn validate_leaf(
    credential: &Credential,
    signature_key: &[u8],
    validator: &dyn DeviceKeyValidator,
) -> Result<DeviceRef> {
    let device =
        DeviceRef::from_credential(credential).map_err(|e| MlsError::CredentialRefused {
            device: "?".into(),
            reason: e.to_string(),
        })?;
    match validator.published_signature_key(&device) {
        Some(k) if k == signature_key => Ok(device),
        Some(_) => Err(MlsError::CredentialRefused {
            device: device.identity(),
            reason: "signature key differs from the device's published key".into(),
        }),
        None => Err(MlsError::CredentialRefused {
            device: device.identity(),
            reason: "no published signature key for the device".into(),
        }),
    }
}
