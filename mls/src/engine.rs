//! The engine: one device's identity, provider, trust store, key package records and groups,
//! and the trust methods over its [`TrustStore`]. The other operations are `impl Engine`
//! blocks in the modules above this one (key packages, groups, processing, state).

use std::collections::{BTreeMap, HashMap};

use openmls::prelude::{GroupId, KeyPackageRef, MlsGroup};
use serde::{Deserialize, Serialize};

use crate::aad::ReplayWindow;
use crate::config::EngineConfig;
use crate::device_ref::DeviceRef;
use crate::error::{MlsError, Result};
use crate::identity::{fingerprint, Identity};
use crate::provider::EngineProvider;
use crate::trust::{safety_number, KeyChange, TrustState, TrustStore};

/// What the engine remembers about its own commit that the hub has not accepted yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PendingInfo {
    /// SHA-256 of the commit's MLSMessage bytes.
    pub(crate) commit_hash: [u8; 32],
}

/// Engine-side bookkeeping for one group, beside the openmls state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GroupMeta {
    /// `msg_id`s seen per epoch (replay protection).
    pub(crate) replay: ReplayWindow,
    /// Own commit waiting for the hub's answer.
    pub(crate) pending: Option<PendingInfo>,
    /// Hashes of own commits already merged, to recognise their echo from the hub.
    pub(crate) confirmed_own_commits: Vec<[u8; 32]>,
}

/// A key package this engine generated and may still hold private keys for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyPackageRecord {
    /// The package's hash reference (its storage key).
    pub(crate) hash_ref: KeyPackageRef,
    /// Whether it carries the last-resort extension.
    pub(crate) last_resort: bool,
}

/// One group: the openmls group and the engine's bookkeeping.
pub(crate) struct GroupEntry {
    pub(crate) mls: MlsGroup,
    pub(crate) meta: GroupMeta,
}

/// The client MLS engine of one device. Holds every secret of the device in memory;
/// drop it (or call [`Engine::lock`]) to wipe them.
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) provider: EngineProvider,
    pub(crate) identity: Identity,
    pub(crate) trust: TrustStore,
    pub(crate) groups: BTreeMap<Vec<u8>, GroupEntry>,
    pub(crate) key_packages: Vec<KeyPackageRecord>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.identity.device)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates a new device identity `@user:server/DEVICE` with a fresh Ed25519 key.
    pub fn new(user_id: &str, device_id: &str, config: EngineConfig) -> Result<Self> {
        let device = DeviceRef::new(user_id, device_id)?;
        let provider = EngineProvider::default();
        let identity = Identity::generate(device.clone(), &provider)?;
        let mut trust = TrustStore::default();
        trust.pin_own(&device, identity.public_key());
        Ok(Self {
            config,
            provider,
            identity,
            trust,
            groups: BTreeMap::new(),
            key_packages: Vec::new(),
        })
    }

    /// This device.
    pub fn device(&self) -> &DeviceRef {
        &self.identity.device
    }

    /// The raw 32-byte Ed25519 signature public key, to bind at the server.
    pub fn signature_public_key(&self) -> Vec<u8> {
        self.identity.public_key().to_vec()
    }

    /// This device's fingerprint ([`fingerprint`] of its signature key).
    pub fn fingerprint(&self) -> String {
        fingerprint(self.identity.public_key())
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Ids (UTF-8 `!opaque:server`) of every group this engine holds, active or not.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// Wipes every secret held in memory and consumes the engine (vault lock).
    pub fn lock(self) {
        drop(self)
    }

    pub(crate) fn entry(&self, group_id: &str) -> Result<&GroupEntry> {
        self.groups
            .get(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)
    }

    pub(crate) fn entry_mut(&mut self, group_id: &str) -> Result<&mut GroupEntry> {
        self.groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)
    }

    pub(crate) fn mls_group_id(group_id: &str) -> GroupId {
        GroupId::from_slice(group_id.as_bytes())
    }

    /// Loads every group listed in `metas` from the provider's storage.
    pub(crate) fn load_groups(
        provider: &EngineProvider,
        metas: HashMap<Vec<u8>, GroupMeta>,
    ) -> Result<BTreeMap<Vec<u8>, GroupEntry>> {
        let mut groups = BTreeMap::new();
        for (id, meta) in metas {
            let mls = MlsGroup::load(provider.storage_ref(), &GroupId::from_slice(&id))
                .map_err(|e| MlsError::InvalidState(format!("group load: {e:?}")))?
                .ok_or_else(|| MlsError::InvalidState("group missing from storage".into()))?;
            groups.insert(id, GroupEntry { mls, meta });
        }
        Ok(groups)
    }
}

/// Trust: the engine's view of its [`TrustStore`] (pins, verified flags, key changes).
impl Engine {
    /// Trust state of a device this engine has seen.
    pub fn trust_state(&self, device: &DeviceRef) -> Option<TrustState> {
        self.trust.state(device)
    }

    /// Marks a device verified (or not) after the user compared safety numbers.
    pub fn set_verified(&mut self, device: &DeviceRef, verified: bool) -> Result<()> {
        self.trust.set_verified(device, verified)
    }

    /// Accepts a device's changed key; groups with that device can be encrypted to again.
    pub fn acknowledge_key_change(&mut self, device: &DeviceRef) -> Result<()> {
        self.trust.acknowledge(device)
    }

    /// Key changes not acknowledged yet.
    pub fn pending_key_changes(&self) -> Vec<KeyChange> {
        self.trust.pending_changes()
    }

    /// The 60-digit safety number between this engine's user and `other_user_id`, from every
    /// device key known (pinned or newly seen) for both users.
    pub fn safety_number(&self, other_user_id: &str) -> Result<String> {
        let own_user = &self.identity.device.user_id;
        let theirs = self.trust.user_keys(other_user_id);
        if theirs.is_empty() {
            return Err(MlsError::InvalidIdentifier(format!(
                "no known device of {other_user_id}"
            )));
        }
        Ok(safety_number(
            own_user,
            &self.trust.user_keys(own_user),
            other_user_id,
            &theirs,
        ))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The provider wipes its store on drop; the signer zeroizes its private key on drop.
        self.provider.wipe();
    }
}
