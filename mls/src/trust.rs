//! Trust: TOFU pins per device, the verified flag, key changes and safety numbers. The engine's
//! trust methods, which use them, are in [`crate::engine`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::device_ref::DeviceRef;
use crate::error::{MlsError, Result};

/// How far the engine trusts a device's signature key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustState {
    /// This engine's own device.
    Own,
    /// Pinned on first sight (TOFU), not verified by the user.
    Tofu,
    /// The user compared safety numbers / fingerprints and marked the device verified.
    Verified,
    /// The device now uses a different key than the pinned one; not acknowledged yet.
    KeyChanged,
}

/// A device whose signature key differs from its pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    /// The device.
    pub device: DeviceRef,
    /// The pinned (previous) key.
    pub old_key: Vec<u8>,
    /// The key now seen.
    pub new_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrustRecord {
    device: DeviceRef,
    pinned_key: Vec<u8>,
    verified: bool,
    own: bool,
    changed_key: Option<Vec<u8>>,
}

/// TOFU pins of every device this engine has seen, keyed by credential identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TrustStore {
    devices: BTreeMap<String, TrustRecord>,
    /// Identities with an unacknowledged key change (kept beside the records so the
    /// per-message check is cheap).
    #[serde(default)]
    changed: BTreeSet<String>,
}

impl TrustStore {
    /// Pins this engine's own device.
    pub(crate) fn pin_own(&mut self, device: &DeviceRef, key: &[u8]) {
        self.devices.insert(
            device.identity(),
            TrustRecord {
                device: device.clone(),
                pinned_key: key.to_vec(),
                verified: true,
                own: true,
                changed_key: None,
            },
        );
    }

    /// Records a key seen for `device`: pins it on first sight, returns a key change if it
    /// differs from the pin (and marks it unacknowledged).
    pub(crate) fn observe(&mut self, device: &DeviceRef, key: &[u8]) -> Option<KeyChange> {
        let id = device.identity();
        match self.devices.get_mut(&id) {
            None => {
                self.devices.insert(
                    id,
                    TrustRecord {
                        device: device.clone(),
                        pinned_key: key.to_vec(),
                        verified: false,
                        own: false,
                        changed_key: None,
                    },
                );
                None
            }
            Some(rec) if rec.pinned_key == key => {
                rec.changed_key = None;
                self.changed.remove(&id);
                None
            }
            Some(rec) => {
                let first = rec.changed_key.as_deref() != Some(key);
                rec.changed_key = Some(key.to_vec());
                self.changed.insert(id);
                first.then(|| KeyChange {
                    device: device.clone(),
                    old_key: rec.pinned_key.clone(),
                    new_key: key.to_vec(),
                })
            }
        }
    }

    /// Trust state of a device (`None` if never seen).
    pub(crate) fn state(&self, device: &DeviceRef) -> Option<TrustState> {
        let rec = self.devices.get(&device.identity())?;
        Some(if rec.own {
            TrustState::Own
        } else if rec.changed_key.is_some() {
            TrustState::KeyChanged
        } else if rec.verified {
            TrustState::Verified
        } else {
            TrustState::Tofu
        })
    }

    fn record_mut(&mut self, device: &DeviceRef) -> Result<&mut TrustRecord> {
        self.devices
            .get_mut(&device.identity())
            .ok_or_else(|| MlsError::NotMember(device.clone()))
    }

    /// Accepts the changed key as the new pin (verification is reset).
    pub(crate) fn acknowledge(&mut self, device: &DeviceRef) -> Result<()> {
        let rec = self.record_mut(device)?;
        if let Some(new) = rec.changed_key.take() {
            rec.pinned_key = new;
            rec.verified = false;
        }
        self.changed.remove(&device.identity());
        Ok(())
    }

    /// Sets the verified flag of a pinned device.
    pub(crate) fn set_verified(&mut self, device: &DeviceRef, verified: bool) -> Result<()> {
        self.record_mut(device)?.verified = verified;
        Ok(())
    }

    /// Whether `device` has an unacknowledged key change.
    pub(crate) fn is_changed(&self, device: &DeviceRef) -> bool {
        !self.changed.is_empty() && self.changed.contains(&device.identity())
    }

    /// Whether any device has an unacknowledged key change.
    pub(crate) fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Every unacknowledged key change.
    pub(crate) fn pending_changes(&self) -> Vec<KeyChange> {
        self.devices
            .values()
            .filter_map(|r| {
                r.changed_key.as_ref().map(|new| KeyChange {
                    device: r.device.clone(),
                    old_key: r.pinned_key.clone(),
                    new_key: new.clone(),
                })
            })
            .collect()
    }

    /// Pinned `(device_id, key)` of every known device of `user_id`.
    pub(crate) fn user_keys(&self, user_id: &str) -> Vec<(String, Vec<u8>)> {
        self.devices
            .values()
            .filter(|r| r.device.user_id == user_id)
            .map(|r| {
                let key = r
                    .changed_key
                    .clone()
                    .unwrap_or_else(|| r.pinned_key.clone());
                (r.device.device_id.clone(), key)
            })
            .collect()
    }
}

/// Version tag of the safety-number construction.
const SAFETY_NUMBER_VERSION: u16 = 0;
/// SHA-512 iterations per half (as Signal's numeric fingerprint).
const SAFETY_NUMBER_ITERATIONS: usize = 5200;

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Ids are ≤255 bytes and keys 32 bytes, so u16 lengths cannot overflow in practice;
    // longer inputs are truncated in the length only, which still keeps encodings distinct.
    out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The 30-digit half of a safety number for one user.
///
/// `keys = len16(device_id) ‖ device_id ‖ len16(key) ‖ key` for every device, sorted by device
/// id; `h₀ = SHA-512(version16 ‖ len16(user_id) ‖ user_id ‖ keys)`,
/// `hᵢ = SHA-512(hᵢ₋₁ ‖ keys)` for 5200 rounds; the first 30 bytes of the result are read as
/// six 40-bit big-endian integers, each reduced mod 100000 and printed as 5 digits.
pub fn safety_number_half(user_id: &str, device_keys: &[(String, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(String, Vec<u8>)> = device_keys.iter().collect();
    sorted.sort();
    let mut keys = Vec::new();
    for (device_id, key) in sorted {
        put_len_prefixed(&mut keys, device_id.as_bytes());
        put_len_prefixed(&mut keys, key);
    }
    let mut input = SAFETY_NUMBER_VERSION.to_be_bytes().to_vec();
    put_len_prefixed(&mut input, user_id.as_bytes());
    input.extend_from_slice(&keys);
    let mut hash = Sha512::digest(&input);
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(&keys);
        hash = h.finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect()
}

/// The 60-digit safety number of two users: both halves, the one of the lexicographically
/// smaller user id first, so both sides compute the same digits.
pub fn safety_number(
    user_a: &str,
    keys_a: &[(String, Vec<u8>)],
    user_b: &str,
    keys_b: &[(String, Vec<u8>)],
) -> String {
    let a = safety_number_half(user_a, keys_a);
    let b = safety_number_half(user_b, keys_b);
    if (user_a, &a) <= (user_b, &b) {
        a + &b
    } else {
        b + &a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(u: &str, d: &str) -> DeviceRef {
        DeviceRef::new(u, d).unwrap()
    }

    #[test]
    fn safety_number_is_symmetric_and_sixty_digits() {
        let a = vec![("A1".to_string(), vec![1u8; 32])];
        let b = vec![
            ("B1".to_string(), vec![2u8; 32]),
            ("B2".into(), vec![3; 32]),
        ];
        let ab = safety_number("@a:x.org", &a, "@b:y.org", &b);
        let ba = safety_number("@b:y.org", &b, "@a:x.org", &a);
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 60);
        assert!(ab.bytes().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn safety_number_changes_with_any_key_and_ignores_device_order() {
        let a = vec![("A1".to_string(), vec![1u8; 32])];
        let b = vec![
            ("B1".to_string(), vec![2u8; 32]),
            ("B2".into(), vec![3; 32]),
        ];
        let b_rev: Vec<_> = b.iter().rev().cloned().collect();
        let base = safety_number("@a:x.org", &a, "@b:y.org", &b);
        assert_eq!(base, safety_number("@a:x.org", &a, "@b:y.org", &b_rev));
        let b2 = vec![
            ("B1".to_string(), vec![9u8; 32]),
            ("B2".into(), vec![3; 32]),
        ];
        assert_ne!(base, safety_number("@a:x.org", &a, "@b:y.org", &b2));
    }

    #[test]
    fn tofu_pins_first_key_and_reports_a_change_once() {
        let mut t = TrustStore::default();
        let d = dev("@b:y.org", "DEV");
        assert_eq!(t.observe(&d, &[1; 32]), None);
        assert_eq!(t.state(&d), Some(TrustState::Tofu));
        assert_eq!(t.observe(&d, &[1; 32]), None);
        let change = t.observe(&d, &[2; 32]).unwrap();
        assert_eq!(change.old_key, vec![1; 32]);
        assert_eq!(t.observe(&d, &[2; 32]), None, "reported once");
        assert_eq!(t.state(&d), Some(TrustState::KeyChanged));
        t.acknowledge(&d).unwrap();
        assert_eq!(t.state(&d), Some(TrustState::Tofu));
        t.set_verified(&d, true).unwrap();
        assert_eq!(t.state(&d), Some(TrustState::Verified));
    }
}
