//! Fork detection and recovery (openmls `fork-resolution`).
//!
//! Members compare [`Engine::epoch_authenticator`] (for example through the app); members
//! whose authenticator differs from the hub-ordered history are forked. A member of the good
//! partition removes and re-adds the others with [`Engine::readd_forked_members`]; each
//! re-added device joins again with [`Engine::rejoin_from_welcome`].

use std::collections::BTreeSet;

use openmls::prelude::LeafNodeIndex;

use crate::device_ref::DeviceRef;
use crate::engine::Engine;
use crate::error::{mls, MlsError, Result};
use crate::events::CommitBundle;
use crate::validation::DeviceKeyValidator;

impl Engine {
    /// Commits removing every member not in `in_sync` (this device is always included) and
    /// re-adding them from `key_packages` — exactly one fresh package per such device.
    pub fn readd_forked_members(
        &mut self,
        group_id: &str,
        in_sync: &[DeviceRef],
        key_packages: &[Vec<u8>],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<CommitBundle> {
        let entry = self.entry(group_id)?;
        if entry.mls.pending_commit().is_some() {
            return Err(MlsError::PendingCommit);
        }
        let mut partition: Vec<LeafNodeIndex> = vec![entry.mls.own_leaf_index()];
        let mut forked = BTreeSet::new();
        for m in entry.mls.members() {
            let device = DeviceRef::from_credential(&m.credential)?;
            if in_sync.contains(&device) {
                if m.index != entry.mls.own_leaf_index() {
                    partition.push(m.index);
                }
            } else if m.index != entry.mls.own_leaf_index() {
                forked.insert(device);
            }
        }
        let (kps, changes) = self.checked_key_packages(key_packages, validator)?;
        let provided: BTreeSet<DeviceRef> = kps
            .iter()
            .map(|kp| DeviceRef::from_credential(kp.leaf_node().credential()))
            .collect::<Result<_>>()?;
        if provided != forked || kps.len() != forked.len() {
            return Err(MlsError::InvalidKeyPackage {
                index: 0,
                reason: "key packages must be exactly one per forked member".into(),
            });
        }
        self.stage_commit(group_id, changes, |group| {
            Ok(group
                .recover_fork_by_readding(&partition)
                .map_err(mls)?
                .provide_key_packages(kps))
        })
    }
}
