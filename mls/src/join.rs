//! Join links in the engine (docs/protocol.md#join-links): the join-rules extension in the
//! group context (changed by an admin's commit like the roles), joining a group by external
//! commit from the GroupInfo the hub publishes, and the check every member makes before it
//! merges someone's external commit, with the rule the hub applies
//! ([`parley_client_api::join::JoinRules::admits`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openmls::prelude::{
    tls_codec::Deserialize as _, Extensions, ExternalCommitBuilder, GroupContext, MlsGroup,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, StagedCommit,
};
use openmls::treesync::LeafNodeParameters;
use openmls_traits::{random::OpenMlsRand as _, OpenMlsProvider as _};
use parley_client_api::join::{JoinAad, JoinLink, JoinRules, JOIN_RULES_EXTENSION_TYPE};
use sha2::{Digest, Sha256};

use crate::ciphersuite::leaf_capabilities;
use crate::context::{extension_body, with_extension};
use crate::device_ref::DeviceRef;
use crate::engine::{Engine, GroupEntry, GroupMeta};
use crate::error::{mls, MlsError, Result};
use crate::events::{CommitBundle, Joined};
use crate::groups::to_bytes;
use crate::validation::{validate_leaf, DeviceKeyValidator};

/// The join rules a group context holds, `None` when it has none (not joinable, nobody
/// banned).
pub(crate) fn join_rules_of(extensions: &Extensions<GroupContext>) -> Result<Option<JoinRules>> {
    extension_body(extensions, JOIN_RULES_EXTENSION_TYPE)
        .map(JoinRules::decode)
        .transpose()
        .map_err(|e| MlsError::InvalidMessage(e.to_string()))
}

/// What an external commit by a new member does, read before it is merged.
pub(crate) struct ExternalJoin {
    /// The joining device, from its new leaf.
    pub(crate) joiner: DeviceRef,
    /// The joiner's leaf signature key.
    pub(crate) signature_key: Vec<u8>,
    /// The joiner's own earlier leaves the commit removes (a rejoin after a fork).
    pub(crate) removes: Vec<DeviceRef>,
}

/// Checks `staged`, an external commit received in `group` with authenticated data `aad`,
/// against the group's join rules before it is merged: the rules admit the joiner with the
/// code in the AAD, the joiner's leaf passes `validator`, and it removes no one but the
/// joiner's own earlier leaf.
pub(crate) fn check_external_join(
    group: &MlsGroup,
    staged: &StagedCommit,
    aad: &[u8],
    validator: &dyn DeviceKeyValidator,
) -> Result<ExternalJoin> {
    let refused = |e: parley_client_api::join::JoinError| MlsError::JoinRefused(e.to_string());
    let leaf = staged
        .update_path_leaf_node()
        .ok_or_else(|| MlsError::InvalidMessage("external commit without a path".into()))?;
    let joiner = validate_leaf(
        leaf.credential(),
        leaf.signature_key().as_slice(),
        validator,
    )?;
    let code = JoinAad::decode(aad).map_err(refused)?.join_code;
    let rules = join_rules_of(group.extensions())?
        .ok_or_else(|| refused(parley_client_api::join::JoinError::NotJoinable))?;
    rules.admits(&joiner.user_id, &code).map_err(refused)?;
    let mut removes = Vec::new();
    for remove in staged.remove_proposals() {
        let member = group
            .member_at(remove.remove_proposal().removed())
            .ok_or_else(|| MlsError::InvalidMessage("removal of an empty leaf".into()))?;
        let removed = DeviceRef::from_credential(&member.credential)?;
        if removed != joiner {
            return Err(MlsError::JoinRefused(format!(
                "an external commit by {joiner} may not remove {removed}"
            )));
        }
        removes.push(removed);
    }
    Ok(ExternalJoin {
        joiner,
        signature_key: leaf.signature_key().as_slice().to_vec(),
        removes,
    })
}

impl Engine {
    /// The group's join rules, `None` when it has none.
    pub fn join_rules(&self, group_id: &str) -> Result<Option<JoinRules>> {
        join_rules_of(self.entry(group_id)?.mls.extensions())
    }

    /// The group's current join link, `None` when joining by link is off.
    pub fn join_link(&self, group_id: &str) -> Result<Option<String>> {
        let Some(code) = self.join_rules(group_id)?.and_then(|r| r.code) else {
            return Ok(None);
        };
        let group_id = parley_client_api::ids::GroupId::parse(group_id)
            .map_err(|e| MlsError::InvalidMessage(e.to_string()))?;
        Ok(Some(JoinLink { group_id, code }.format()))
    }

    /// Commits join rules with a fresh random code: turns joining by link on, or rotates the
    /// code so that every link handed out before stops working. An admin's commit when the
    /// group has roles.
    pub fn open_join_link(&mut self, group_id: &str) -> Result<CommitBundle> {
        let random: [u8; 16] = self
            .provider
            .rand()
            .random_array()
            .map_err(|e| MlsError::Crypto(format!("{e:?}")))?;
        let banned = self.join_rules(group_id)?.unwrap_or_default().banned;
        self.set_join_rules(
            group_id,
            JoinRules::new(Some(URL_SAFE_NO_PAD.encode(random)), banned),
        )
    }

    /// Commits join rules without a code: nobody can join by link any more.
    pub fn close_join_link(&mut self, group_id: &str) -> Result<CommitBundle> {
        let banned = self.join_rules(group_id)?.unwrap_or_default().banned;
        self.set_join_rules(group_id, JoinRules::new(None, banned))
    }

    /// Commits join rules that ban (or unban) `user_id` from joining by link.
    pub fn set_banned(
        &mut self,
        group_id: &str,
        user_id: &str,
        banned: bool,
    ) -> Result<CommitBundle> {
        let rules = self.join_rules(group_id)?.unwrap_or_default();
        let list = rules
            .banned
            .iter()
            .filter(|u| u.as_str() != user_id)
            .cloned()
            .chain(banned.then(|| user_id.to_owned()));
        self.set_join_rules(group_id, JoinRules::new(rules.code, list))
    }

    /// Commits `rules` as the group's join rules (a GroupContextExtensions proposal).
    pub fn set_join_rules(&mut self, group_id: &str, rules: JoinRules) -> Result<CommitBundle> {
        let body = rules.encode();
        JoinRules::decode(&body).map_err(|e| MlsError::JoinRefused(e.to_string()))?;
        let entry = self.entry(group_id)?;
        if !entry.mls.is_active() {
            return Err(MlsError::Evicted);
        }
        if entry.mls.pending_commit().is_some() {
            return Err(MlsError::PendingCommit);
        }
        let extensions = with_extension(
            entry.mls.extensions(),
            JOIN_RULES_EXTENSION_TYPE,
            Some(body),
        )?;
        self.stage_commit(group_id, Vec::new(), |group| {
            group
                .commit_builder()
                .propose_group_context_extensions(extensions)
                .map_err(mls)
        })
    }

    /// Joins `group_id` by external commit from its current `group_info` (an `MLSMessage`,
    /// from `POST /groups/{group_id}/join_info`) with the link's `code` in the commit's
    /// authenticated data. Every member's credential is checked with `validator` first. The
    /// group is held at the new epoch at once; submit the bundle with
    /// `POST /groups/{group_id}/commit` and call [`Engine::forget_group`] if the hub refuses
    /// it. A group held already is replaced only when this device is no longer a member of it.
    pub fn join_by_link(
        &mut self,
        group_id: &str,
        group_info: &[u8],
        code: &str,
        validator: &dyn DeviceKeyValidator,
    ) -> Result<(Joined, CommitBundle)> {
        parley_client_api::join::check_code(code)
            .map_err(|e| MlsError::JoinRefused(e.to_string()))?;
        if let Some(held) = self.groups.get(group_id.as_bytes()) {
            if held.mls.is_active() {
                return Err(MlsError::GroupExists);
            }
        }
        let msg = MlsMessageIn::tls_deserialize_exact(group_info)
            .map_err(|e| MlsError::InvalidMessage(e.to_string()))?;
        let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
            return Err(MlsError::InvalidMessage("not a GroupInfo".into()));
        };
        if info.group_id().as_slice() != group_id.as_bytes() {
            return Err(MlsError::InvalidMessage(
                "the GroupInfo is for another group".into(),
            ));
        }
        let epoch = info.epoch().as_u64();
        // openmls removes an earlier leaf with this device's signature key (a rejoin).
        let own_key = self.identity.credential_with_key().signature_key;
        let rejoins = info.extensions().ratchet_tree().is_some_and(|t| {
            t.ratchet_tree()
                .leaves()
                .any(|l| l.signature_key().as_slice() == own_key.as_slice())
        });
        let removes = if rejoins {
            vec![self.identity.device.clone()]
        } else {
            Vec::new()
        };
        let aad = JoinAad {
            join_code: code.to_owned(),
        }
        .encode();
        let params = LeafNodeParameters::builder()
            .with_capabilities(leaf_capabilities())
            .build();
        let (group, bundle) = ExternalCommitBuilder::new()
            .with_aad(aad)
            .with_config(self.join_config())
            .build_group(&self.provider, info, self.identity.credential_with_key())
            .map_err(|e| MlsError::InvalidMessage(format!("group info: {e:?}")))?
            .leaf_node_parameters(params)
            .load_psks(self.provider.storage())
            .map_err(mls)?
            .use_ratchet_tree_extension(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.identity.signer,
                |_| true,
            )
            .map_err(mls)?
            .finalize(&self.provider)
            .map_err(mls)?;
        // Every other member is checked as a Welcome's would be; the group is dropped if one
        // fails.
        let own_leaf = group.own_leaf_index();
        let mut devices = Vec::new();
        let mut group = group;
        let others: Vec<_> = group.members().filter(|m| m.index != own_leaf).collect();
        for m in others {
            match validate_leaf(&m.credential, &m.signature_key, validator) {
                Ok(device) => devices.push((device, m.signature_key)),
                Err(e) => {
                    // Best effort: the group never became visible.
                    let _ = group.delete(self.provider.storage());
                    return Err(e);
                }
            }
        }
        let mut events = Vec::new();
        for (device, key) in &devices {
            if let Some(change) = self.trust.observe(device, key) {
                events.push(crate::events::Event::KeyChangeDetected(change));
            }
        }
        let (commit, _, group_info) = bundle.into_contents();
        let commit = to_bytes(&commit)?;
        let group_info = group_info
            .map(|gi| to_bytes(&MlsMessageOut::from(gi)))
            .transpose()?;
        let mut meta = GroupMeta::default();
        // The hub echoes the commit back: it was merged here already.
        meta.confirmed_own_commits
            .push(Sha256::digest(&commit).into());
        self.groups.insert(
            group_id.as_bytes().to_vec(),
            GroupEntry { mls: group, meta },
        );
        let joined = Joined {
            members: self.members(group_id)?,
            group_id: group_id.to_owned(),
            epoch: epoch + 1,
            welcome_sender: None,
            events,
        };
        let bundle = CommitBundle {
            commit,
            welcome: None,
            group_info,
            adds: vec![self.identity.device.clone()],
            removes,
            epoch,
            key_changes: Vec::new(),
        };
        Ok((joined, bundle))
    }

    /// Drops a group this device holds, with its MLS state (a join by link the hub refused,
    /// or a group left for good).
    pub fn forget_group(&mut self, group_id: &str) -> Result<()> {
        let mut entry = self
            .groups
            .remove(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        entry.mls.delete(self.provider.storage()).map_err(mls)
    }
}
