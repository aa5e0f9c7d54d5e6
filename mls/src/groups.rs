//! Group operations: create, add, remove, update, leave, proposals, encrypt, members.

use openmls::prelude::{
    tls_codec::Serialize as _, CommitBuilder, Credential, Extensions, Initial, LeafNodeIndex,
    MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageOut, StagedCommit,
};
use openmls::treesync::LeafNodeParameters;
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::{random::OpenMlsRand as _, OpenMlsProvider as _};
use parley_client_api::roles::GroupRoles;
use sha2::{Digest, Sha256};

use crate::aad::{uuid_v4, Aad};
use crate::device_ref::DeviceRef;
use crate::engine::{Engine, GroupEntry, GroupMeta, PendingInfo};
use crate::error::{mls, MlsError, Result};
use crate::events::{CommitBundle, Event, MemberInfo, OutgoingMessage};
use crate::identity::fingerprint;
use crate::key_packages::parse_key_package;
use crate::provider::EngineProvider;
use crate::roles::{check_staged_commit, roles_of, with_roles};
use crate::trust::KeyChange;
use crate::validation::{validate_leaf, DeviceKeyValidator};

/// A leaf added or updated by a commit.
#[derive(Debug, Clone)]
pub(crate) struct LeafChange {
    pub(crate) device: DeviceRef,
    pub(crate) signature_key: Vec<u8>,
    /// The leaf's previous signature key (updates only).
    pub(crate) previous_key: Option<Vec<u8>>,
    pub(crate) credential: Credential,
}

/// What a commit does to the membership.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delta {
    pub(crate) adds: Vec<LeafChange>,
    pub(crate) removes: Vec<DeviceRef>,
    pub(crate) updates: Vec<LeafChange>,
}

fn refuse(device: &DeviceRef, reason: &str) -> MlsError {
    MlsError::CredentialRefused {
        device: device.identity(),
        reason: reason.into(),
    }
}

fn device_at(group: &MlsGroup, leaf: LeafNodeIndex) -> Result<(DeviceRef, Vec<u8>)> {
    let member = group
        .member_at(leaf)
        .ok_or_else(|| MlsError::InvalidMessage(format!("no member at leaf {}", leaf.u32())))?;
    Ok((
        DeviceRef::from_credential(&member.credential)?,
        member.signature_key,
    ))
}

/// Reads adds, removes and updated leaves of `staged` against the pre-merge tree of `group`.
/// `committer` is the leaf that sent the commit (its update path, if any, is an update).
pub(crate) fn commit_delta(
    group: &MlsGroup,
    staged: &StagedCommit,
    committer: LeafNodeIndex,
) -> Result<Delta> {
    let mut delta = Delta::default();
    for add in staged.add_proposals() {
        let leaf = add.add_proposal().key_package().leaf_node();
        let device = DeviceRef::from_credential(leaf.credential()).map_err(|e| {
            MlsError::CredentialRefused {
                device: "?".into(),
                reason: e.to_string(),
            }
        })?;
        delta.adds.push(LeafChange {
            device,
            signature_key: leaf.signature_key().as_slice().to_vec(),
            previous_key: None,
            credential: leaf.credential().clone(),
        });
    }
    for remove in staged.remove_proposals() {
        let (device, _) = device_at(group, remove.remove_proposal().removed())?;
        delta.removes.push(device);
    }
    let mut updated_leaves = Vec::new();
    for update in staged.update_proposals() {
        if let openmls::prelude::Sender::Member(leaf) = update.sender() {
            updated_leaves.push((*leaf, update.update_proposal().leaf_node().clone()));
        }
    }
    if let Some(path_leaf) = staged.update_path_leaf_node() {
        updated_leaves.push((committer, path_leaf.clone()));
    }
    for (leaf, node) in updated_leaves {
        let (device, old_key) = device_at(group, leaf)?;
        let new_device = DeviceRef::from_credential(node.credential())
            .map_err(|_| refuse(&device, "updated leaf has a malformed credential"))?;
        if new_device != device {
            return Err(refuse(&device, "updated leaf names another device"));
        }
        delta.updates.push(LeafChange {
            device,
            signature_key: node.signature_key().as_slice().to_vec(),
            previous_key: Some(old_key),
            credential: node.credential().clone(),
        });
    }
    Ok(delta)
}

/// Checks every added leaf and every update that changes a signature key with `validator`.
pub(crate) fn validate_delta(delta: &Delta, validator: &dyn DeviceKeyValidator) -> Result<()> {
    for add in &delta.adds {
        validate_leaf(&add.credential, &add.signature_key, validator)?;
    }
    for upd in &delta.updates {
        if upd.previous_key.as_deref() != Some(upd.signature_key.as_slice()) {
            validate_leaf(&upd.credential, &upd.signature_key, validator)?;
        }
    }
    Ok(())
}

/// Serialises an outgoing MLS message.
pub(crate) fn to_bytes(msg: &MlsMessageOut) -> Result<Vec<u8>> {
    msg.tls_serialize_detached().map_err(mls)
}

impl Engine {
    /// openmls configuration for groups this engine creates.
    pub(crate) fn create_config(&self) -> MlsGroupCreateConfig {
        self.config.group_create_config()
    }

    /// openmls configuration for groups this engine joins.
    pub(crate) fn join_config(&self) -> MlsGroupJoinConfig {
        self.config.group_join_config()
    }

    /// Creates group `group_id` (`!opaque:server`, its UTF-8 bytes are the MLS group id) with
    /// this device as its only member, at epoch 0.
    pub fn create_group(&mut self, group_id: &str) -> Result<()> {
        if self.groups.contains_key(group_id.as_bytes()) {
            return Err(MlsError::GroupExists);
        }
        let config = self.create_config();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.identity.signer,
            &config,
            Self::mls_group_id(group_id),
            self.identity.credential_with_key(),
        )
        .map_err(mls)?;
        self.groups.insert(
            group_id.as_bytes().to_vec(),
            GroupEntry {
                mls: group,
                meta: GroupMeta::default(),
            },
        );
        Ok(())
    }

    /// Creates group `group_id` like [`Engine::create_group`], with roles
    /// (docs/protocol.md#group-roles): this device's user is its only admin. The hub must be
    /// told too (`POST /groups` with `{"roles": true}`).
    pub fn create_group_with_roles(&mut self, group_id: &str) -> Result<()> {
        if self.groups.contains_key(group_id.as_bytes()) {
            return Err(MlsError::GroupExists);
        }
        let roles = GroupRoles::new([self.identity.device.user_id.clone()]);
        let extensions = with_roles(&Extensions::empty(), &roles)?;
        let config = self
            .config
            .group_create_config_builder()
            .with_group_context_extensions(extensions)
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.identity.signer,
            &config,
            Self::mls_group_id(group_id),
            self.identity.credential_with_key(),
        )
        .map_err(mls)?;
        self.groups.insert(
            group_id.as_bytes().to_vec(),
            GroupEntry {
                mls: group,
                meta: GroupMeta::default(),
            },
        );
        Ok(())
    }

    /// The group's roles, `None` for a group without roles.
    pub fn roles(&self, group_id: &str) -> Result<Option<GroupRoles>> {
        roles_of(self.entry(group_id)?.mls.extensions())
    }

    /// Whether `user_id` may change the group's membership and settings: always in a group
    /// without roles; otherwise when an admin (or when no member is one any more).
    pub fn is_admin(&self, group_id: &str, user_id: &str) -> Result<bool> {
        let entry = self.entry(group_id)?;
        let Some(roles) = roles_of(entry.mls.extensions())? else {
            return Ok(true);
        };
        let mut users = Vec::new();
        for m in entry.mls.members() {
            users.push(DeviceRef::from_credential(&m.credential)?.user_id);
        }
        let members = users.iter().map(String::as_str).collect();
        Ok(roles.is_admin(user_id, &members))
    }

    /// Commits new roles naming `admins` (an admin's commit; its own check refuses it
    /// otherwise). Turns roles on in a group without them, when every member supports them.
    pub fn set_admins(&mut self, group_id: &str, admins: &[String]) -> Result<CommitBundle> {
        self.ensure_no_pending(group_id)?;
        let roles = GroupRoles::new(admins.iter().cloned());
        GroupRoles::decode(&roles.encode()).map_err(|e| MlsError::NotAdmin(e.to_string()))?;
        let extensions = with_roles(self.entry(group_id)?.mls.extensions(), &roles)?;
        self.stage_commit(group_id, Vec::new(), |group| {
            group
                .commit_builder()
                .propose_group_context_extensions(extensions)
                .map_err(mls)
        })
    }

    /// Whether this device is still a member of the group.
    pub fn is_active(&self, group_id: &str) -> Result<bool> {
        Ok(self.entry(group_id)?.mls.is_active())
    }

    /// The group's current epoch.
    pub fn epoch(&self, group_id: &str) -> Result<u64> {
        Ok(self.entry(group_id)?.mls.epoch().as_u64())
    }

    /// The epoch authenticator of the current epoch (RFC 9420 §8.7): members that agree on it
    /// share the same state; a difference means a fork.
    pub fn epoch_authenticator(&self, group_id: &str) -> Result<Vec<u8>> {
        Ok(self
            .entry(group_id)?
            .mls
            .epoch_authenticator()
            .as_slice()
            .to_vec())
    }

    /// Whether an own commit is waiting for the hub's answer.
    pub fn has_pending_commit(&self, group_id: &str) -> Result<bool> {
        Ok(self.entry(group_id)?.mls.pending_commit().is_some())
    }

    /// Proposals received (or made here) in this epoch and not yet committed: what a
    /// `commit_pending_proposals` would include by reference.
    pub fn pending_proposal_count(&self, group_id: &str) -> Result<usize> {
        Ok(self.entry(group_id)?.mls.pending_proposals().count())
    }

    /// The members of the group with their trust state.
    pub fn members(&self, group_id: &str) -> Result<Vec<MemberInfo>> {
        let entry = self.entry(group_id)?;
        entry
            .mls
            .members()
            .map(|m| {
                let device = DeviceRef::from_credential(&m.credential)?;
                Ok(MemberInfo {
                    trust: self.trust.state(&device),
                    user_id: device.user_id,
                    device_id: device.device_id,
                    leaf_index: m.index.u32(),
                    fingerprint: fingerprint(&m.signature_key),
                    signature_key: m.signature_key,
                })
            })
            .collect()
    }

    fn ensure_no_pending(&self, group_id: &str) -> Result<()> {
        let entry = self.entry(group_id)?;
        if !entry.mls.is_active() {
            return Err(MlsError::Evicted);
        }
        if entry.mls.pending_commit().is_some() {
            return Err(MlsError::PendingCommit);
        }
        Ok(())
    }

    /// Parses, verifies and credential-checks key packages; pins their keys (TOFU).
    pub(crate) fn checked_key_packages(
        &mut self,
        key_packages: &[Vec<u8>],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<(Vec<openmls::prelude::KeyPackage>, Vec<KeyChange>)> {
        let mut out = Vec::with_capacity(key_packages.len());
        for (index, bytes) in key_packages.iter().enumerate() {
            let kp = parse_key_package(bytes, &self.provider)
                .map_err(|reason| MlsError::InvalidKeyPackage { index, reason })?;
            let leaf = kp.leaf_node();
            validate_leaf(
                leaf.credential(),
                leaf.signature_key().as_slice(),
                validator,
            )?;
            out.push(kp);
        }
        let mut changes = Vec::new();
        for kp in &out {
            let leaf = kp.leaf_node();
            let device = DeviceRef::from_credential(leaf.credential())?;
            if let Some(c) = self.trust.observe(&device, leaf.signature_key().as_slice()) {
                changes.push(c);
            }
        }
        Ok((out, changes))
    }

    /// Runs `f` on the MLS group `group_id` with the provider and this device's signer
    /// (borrowed apart from the rest of the engine).
    pub(crate) fn with_group_and_signer<T>(
        &mut self,
        group_id: &str,
        f: impl FnOnce(&mut MlsGroup, &EngineProvider, &SignatureKeyPair) -> Result<T>,
    ) -> Result<T> {
        let Self {
            groups,
            provider,
            identity,
            ..
        } = self;
        let entry = groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        f(&mut entry.mls, provider, &identity.signer)
    }

    /// Builds the commit whose proposals `propose` puts in the group's commit builder (stored
    /// PSKs loaded, ratchet tree in the Welcome, every queued proposal accepted), stages it
    /// as the pending commit and returns its bundle (see [`Engine::finish_commit`]).
    pub(crate) fn stage_commit<F>(
        &mut self,
        group_id: &str,
        key_changes: Vec<KeyChange>,
        propose: F,
    ) -> Result<CommitBundle>
    where
        F: for<'g> FnOnce(&'g mut MlsGroup) -> Result<CommitBuilder<'g, Initial>>,
    {
        let bundle = self.with_group_and_signer(group_id, |group, provider, signer| {
            propose(group)?
                .load_psks(provider.storage())
                .map_err(mls)?
                .use_ratchet_tree_extension(true)
                .build(provider.rand(), provider.crypto(), signer, |_| true)
                .map_err(mls)?
                .stage_commit(provider)
                .map_err(mls)
        })?;
        // An own commit the group's roles refuse is dropped before anyone sees it.
        let Self {
            groups, provider, ..
        } = self;
        let entry = groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        if let Some(staged) = entry.mls.pending_commit() {
            let own = entry.mls.own_leaf_index();
            if let Err(e) = check_staged_commit(&entry.mls, staged, own) {
                entry
                    .mls
                    .clear_pending_commit(provider.storage_ref())
                    .map_err(mls)?;
                return Err(e);
            }
        }
        self.finish_commit(group_id, bundle, key_changes)
    }

    /// Turns the group's freshly staged pending commit into a bundle and remembers it.
    pub(crate) fn finish_commit(
        &mut self,
        group_id: &str,
        bundle: openmls::prelude::CommitMessageBundle,
        key_changes: Vec<KeyChange>,
    ) -> Result<CommitBundle> {
        let entry = self.entry_mut(group_id)?;
        let epoch = entry.mls.epoch().as_u64();
        let own = entry.mls.own_leaf_index();
        let delta = match entry.mls.pending_commit() {
            Some(staged) => commit_delta(&entry.mls, staged, own)?,
            None => return Err(MlsError::Mls("commit was not staged".into())),
        };
        let welcome = bundle.to_welcome_msg();
        let (commit, _, group_info) = bundle.into_contents();
        let commit = to_bytes(&commit)?;
        let welcome = welcome.as_ref().map(to_bytes).transpose()?;
        let group_info = group_info
            .map(|gi| to_bytes(&MlsMessageOut::from(gi)))
            .transpose()?;
        entry.meta.pending = Some(PendingInfo {
            commit_hash: Sha256::digest(&commit).into(),
        });
        Ok(CommitBundle {
            commit,
            welcome,
            group_info,
            adds: delta.adds.into_iter().map(|a| a.device).collect(),
            removes: delta.removes,
            epoch,
            key_changes,
        })
    }

    /// Commits adding the devices of `key_packages` (each an `MLSMessage` or bare
    /// `KeyPackage`). Every package is verified and its credential checked with `validator`.
    /// The commit stays pending until [`Engine::confirm_pending_commit`] (hub accepted) or
    /// [`Engine::discard_pending_commit`] (hub answered 409).
    pub fn add_members(
        &mut self,
        group_id: &str,
        key_packages: &[Vec<u8>],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<CommitBundle> {
        self.ensure_no_pending(group_id)?;
        let (kps, changes) = self.checked_key_packages(key_packages, validator)?;
        self.stage_commit(group_id, changes, |group| {
            Ok(group.commit_builder().propose_adds(kps))
        })
    }

    pub(crate) fn leaf_of(&self, group_id: &str, device: &DeviceRef) -> Result<LeafNodeIndex> {
        let entry = self.entry(group_id)?;
        entry
            .mls
            .members()
            .find(|m| DeviceRef::from_credential(&m.credential).ok().as_ref() == Some(device))
            .map(|m| m.index)
            .ok_or_else(|| MlsError::NotMember(device.clone()))
    }

    /// Commits removing `devices` from the group.
    pub fn remove_members(
        &mut self,
        group_id: &str,
        devices: &[DeviceRef],
    ) -> Result<CommitBundle> {
        self.ensure_no_pending(group_id)?;
        let leaves = devices
            .iter()
            .map(|d| self.leaf_of(group_id, d))
            .collect::<Result<Vec<_>>>()?;
        self.stage_commit(group_id, Vec::new(), |group| {
            Ok(group.commit_builder().propose_removals(leaves))
        })
    }

    /// Commits a fresh leaf (new HPKE keys, update path) for post-compromise security; also
    /// covers any stored proposals.
    pub fn self_update(&mut self, group_id: &str) -> Result<CommitBundle> {
        self.commit_with(group_id, true)
    }

    /// Commits the proposals received and stored so far.
    pub fn commit_pending_proposals(&mut self, group_id: &str) -> Result<CommitBundle> {
        self.commit_with(group_id, false)
    }

    fn commit_with(&mut self, group_id: &str, force_update: bool) -> Result<CommitBundle> {
        self.ensure_no_pending(group_id)?;
        self.stage_commit(group_id, Vec::new(), |group| {
            Ok(group
                .commit_builder()
                .consume_proposal_store(true)
                .force_self_update(force_update)
                .leaf_node_parameters(LeafNodeParameters::default()))
        })
    }

    /// Proposes removing this device; another member must commit it. Returns the proposal.
    pub fn leave_group(&mut self, group_id: &str) -> Result<Vec<u8>> {
        self.ensure_no_pending(group_id)?;
        let msg = self.with_group_and_signer(group_id, |group, provider, signer| {
            group.leave_group(provider, signer).map_err(mls)
        })?;
        to_bytes(&msg)
    }

    /// Standalone proposal to add the device of `key_package` (validated like `add_members`).
    pub fn propose_add(
        &mut self,
        group_id: &str,
        key_package: &[u8],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<Vec<u8>> {
        self.ensure_no_pending(group_id)?;
        let (kps, _) = self.checked_key_packages(&[key_package.to_vec()], validator)?;
        let kp = kps
            .into_iter()
            .next()
            .ok_or_else(|| MlsError::Mls("no key package".into()))?;
        let (msg, _) = self.with_group_and_signer(group_id, |group, provider, signer| {
            group.propose_add_member(provider, signer, &kp).map_err(mls)
        })?;
        to_bytes(&msg)
    }

    /// Standalone proposal to remove `device`.
    pub fn propose_remove(&mut self, group_id: &str, device: &DeviceRef) -> Result<Vec<u8>> {
        self.ensure_no_pending(group_id)?;
        let leaf = self.leaf_of(group_id, device)?;
        let (msg, _) = self.with_group_and_signer(group_id, |group, provider, signer| {
            group
                .propose_remove_member(provider, signer, leaf)
                .map_err(mls)
        })?;
        to_bytes(&msg)
    }

    /// Standalone proposal to update this device's leaf.
    pub fn propose_update(&mut self, group_id: &str) -> Result<Vec<u8>> {
        self.ensure_no_pending(group_id)?;
        let (msg, _) = self.with_group_and_signer(group_id, |group, provider, signer| {
            group
                .propose_self_update(provider, signer, LeafNodeParameters::default())
                .map_err(mls)
        })?;
        to_bytes(&msg)
    }

    fn remember_own_commit(&mut self, group_id: &str, hash: [u8; 32]) -> Result<()> {
        let keep = self.config.remembered_own_commits;
        let entry = self.entry_mut(group_id)?;
        entry.meta.confirmed_own_commits.push(hash);
        let excess = entry.meta.confirmed_own_commits.len().saturating_sub(keep);
        entry.meta.confirmed_own_commits.drain(..excess);
        Ok(())
    }

    /// The group's entry, which must have a pending commit, and the provider beside it.
    fn entry_with_pending_commit(
        &mut self,
        group_id: &str,
    ) -> Result<(&mut GroupEntry, &EngineProvider)> {
        let Self {
            groups, provider, ..
        } = self;
        let entry = groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        if entry.mls.pending_commit().is_none() {
            return Err(MlsError::NoPendingCommit);
        }
        Ok((entry, provider))
    }

    /// The hub accepted the pending commit: merge it. Its echo from the hub is then ignored.
    pub fn confirm_pending_commit(&mut self, group_id: &str) -> Result<Event> {
        let (entry, provider) = self.entry_with_pending_commit(group_id)?;
        entry.mls.merge_pending_commit(provider).map_err(mls)?;
        let pending = entry.meta.pending.take();
        let event = Event::OwnCommitConfirmed {
            epoch: entry.mls.epoch().as_u64(),
            epoch_authenticator: entry.mls.epoch_authenticator().as_slice().to_vec(),
        };
        if let Some(p) = pending {
            self.remember_own_commit(group_id, p.commit_hash)?;
        }
        Ok(event)
    }

    /// The hub refused the pending commit (409 `P_STALE_EPOCH`): forget it, so the winning
    /// commit can be processed and the operation retried.
    pub fn discard_pending_commit(&mut self, group_id: &str) -> Result<()> {
        let (entry, provider) = self.entry_with_pending_commit(group_id)?;
        entry
            .mls
            .clear_pending_commit(provider.storage())
            .map_err(mls)?;
        entry.meta.pending = None;
        Ok(())
    }

    /// Encrypts an application message (a `PrivateMessage`) with the canonical AAD.
    /// `now_ms` is the sender's clock. Refused while a member's key change is unacknowledged.
    pub fn encrypt(
        &mut self,
        group_id: &str,
        plaintext: &[u8],
        now_ms: u64,
    ) -> Result<OutgoingMessage> {
        self.ensure_no_pending(group_id)?;
        if self.trust.has_changes() {
            let entry = self.entry(group_id)?;
            for m in entry.mls.members() {
                let device = DeviceRef::from_credential(&m.credential)?;
                if self.trust.is_changed(&device) {
                    return Err(MlsError::KeyChangeUnacknowledged(device));
                }
            }
        }
        let random: [u8; 16] = self
            .provider
            .rand()
            .random_array()
            .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        let (aad, msg) = self.with_group_and_signer(group_id, |group, provider, signer| {
            let aad = Aad {
                epoch: group.epoch().as_u64(),
                fork_check: Some(crate::aad::fork_check_of(
                    group.epoch_authenticator().as_slice(),
                )),
                group_id: group_id.to_owned(),
                msg_id: uuid_v4(random),
                ts: now_ms,
            };
            group.set_aad(aad.encode()?);
            let msg = group
                .create_message(provider, signer, plaintext)
                .map_err(mls)?;
            Ok((aad, msg))
        })?;
        let epoch = aad.epoch;
        Ok(OutgoingMessage {
            message: to_bytes(&msg)?,
            msg_id: aad.msg_id,
            ts: now_ms,
            epoch,
        })
    }
}
