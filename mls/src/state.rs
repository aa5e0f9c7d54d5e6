//! Export and import of the whole engine as one versioned blob.
//!
//! Layout (all integers big-endian):
//! `"PLYSTATE"` ‖ version u16 (= 1) ‖ meta_len u32 ‖ meta (JSON: device, public key, config,
//! trust store, per-group bookkeeping incl. replay windows, key-package records) ‖
//! count u64 ‖ count × (key_len u32 ‖ value_len u32 ‖ key ‖ value) — the openmls store.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::config::EngineConfig;
use crate::device_ref::DeviceRef;
use crate::engine::{Engine, GroupMeta, KeyPackageRecord};
use crate::error::{MlsError, Result};
use crate::identity::Identity;
use crate::provider::EngineProvider;
use crate::trust::TrustStore;

/// The openmls key/value store.
type StoreEntries = HashMap<Vec<u8>, Vec<u8>>;

const MAGIC: &[u8; 8] = b"PLYSTATE";
/// Current version of the state blob.
pub const STATE_VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct Meta {
    device: DeviceRef,
    public_key: Vec<u8>,
    config: EngineConfig,
    trust: TrustStore,
    groups: Vec<(Vec<u8>, GroupMeta)>,
    key_packages: Vec<KeyPackageRecord>,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(MlsError::InvalidState("truncated".into()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

fn len32(n: usize) -> Result<[u8; 4]> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| MlsError::InvalidState("entry too large".into()))
}

/// Splits a state blob into its meta JSON and store entries (shared by import and tests).
fn parse(blob: &[u8]) -> Result<(Meta, StoreEntries)> {
    let mut r = Reader { bytes: blob };
    if r.take(8)? != MAGIC {
        return Err(MlsError::InvalidState("bad magic".into()));
    }
    let v = r.take(2)?;
    let version = u16::from_be_bytes([v[0], v[1]]);
    if version != STATE_VERSION {
        return Err(MlsError::InvalidState(format!("unknown version {version}")));
    }
    let meta_len = r.u32()?;
    let meta: Meta = serde_json::from_slice(r.take(meta_len)?)
        .map_err(|e| MlsError::InvalidState(format!("meta: {e}")))?;
    let c = r.take(8)?;
    let count = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    let mut entries = HashMap::new();
    for _ in 0..count {
        let k_len = r.u32()?;
        let v_len = r.u32()?;
        let k = r.take(k_len)?.to_vec();
        let v = r.take(v_len)?.to_vec();
        entries.insert(k, v);
    }
    if !r.bytes.is_empty() {
        return Err(MlsError::InvalidState("trailing bytes".into()));
    }
    Ok((meta, entries))
}

impl Engine {
    /// Serialises the whole engine (openmls store with every group and key, identity, trust
    /// store, replay windows, pending-commit bookkeeping). The blob holds secrets: seal it with
    /// [`crate::vault::seal`] before it leaves memory.
    pub fn export_state(&self) -> Result<Zeroizing<Vec<u8>>> {
        let meta = Meta {
            device: self.identity.device.clone(),
            public_key: self.identity.public_key().to_vec(),
            config: self.config.clone(),
            trust: self.trust.clone(),
            groups: self
                .groups
                .iter()
                .map(|(id, e)| (id.clone(), e.meta.clone()))
                .collect(),
            key_packages: self.key_packages.clone(),
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| MlsError::InvalidState(e.to_string()))?;
        let mut out = Zeroizing::new(Vec::new());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_be_bytes());
        out.extend_from_slice(&len32(meta.len())?);
        out.extend_from_slice(&meta);
        let mut entries = self.provider.snapshot();
        out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (k, v) in &entries {
            out.extend_from_slice(&len32(k.len())?);
            out.extend_from_slice(&len32(v.len())?);
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        for (k, v) in entries.iter_mut() {
            k.zeroize();
            v.zeroize();
        }
        Ok(out)
    }

    /// Restores an engine from [`Engine::export_state`]; every group continues where it was.
    pub fn import_state(blob: &[u8]) -> Result<Self> {
        let (meta, entries) = parse(blob)?;
        let provider = EngineProvider::with_entries(entries);
        let identity = Identity::load(meta.device, &meta.public_key, &provider)?;
        let groups = Self::load_groups(&provider, meta.groups.into_iter().collect())?;
        Ok(Self {
            config: meta.config,
            provider,
            identity,
            trust: meta.trust,
            groups,
            key_packages: meta.key_packages,
        })
    }
}

/// The openmls store entries of a state blob (for tests that inspect what was exported).
#[cfg(test)]
#[allow(dead_code)]
pub(crate) fn store_entries(blob: &[u8]) -> Result<StoreEntries> {
    parse(blob).map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_engine_round_trips_through_export() {
        let mut e =
            Engine::new("@alice:example.org", "ALICEDEV01", EngineConfig::default()).unwrap();
        e.generate_key_packages(2).unwrap();
        e.create_group("!room0001:example.org").unwrap();
        let blob = e.export_state().unwrap();
        let back = Engine::import_state(&blob).unwrap();
        assert_eq!(back.device(), e.device());
        assert_eq!(back.signature_public_key(), e.signature_public_key());
        assert_eq!(back.unused_key_package_count(), 2);
        assert_eq!(back.group_ids(), vec!["!room0001:example.org".to_string()]);
        assert_eq!(
            back.epoch_authenticator("!room0001:example.org").unwrap(),
            e.epoch_authenticator("!room0001:example.org").unwrap()
        );
    }

    #[test]
    fn corrupt_state_blobs_are_refused() {
        let e = Engine::new("@alice:example.org", "ALICEDEV01", EngineConfig::default()).unwrap();
        let blob = e.export_state().unwrap();
        assert!(Engine::import_state(&blob[..blob.len() - 1]).is_err());
        let mut bad = blob.to_vec();
        bad[9] = 9;
        assert!(matches!(
            Engine::import_state(&bad),
            Err(MlsError::InvalidState(_))
        ));
        assert!(Engine::import_state(b"nonsense").is_err());
    }
}
