//! Incoming messages: Welcomes, commits, proposals and application messages.

use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
use openmls::group::{JoinBuilder, ProcessedWelcome, ValidationError};
use openmls::prelude::{
    tls_codec::Deserialize as _, ContentType, MlsMessageBodyIn, MlsMessageIn, ProcessMessageError,
    ProcessedMessageContent, Proposal, ProtocolMessage, Sender, StagedCommit, StagedWelcome,
};
use openmls::prelude::{KeyPackageBundle, KeyPackageRef, Welcome};
use openmls_traits::{storage::StorageProvider as _, OpenMlsProvider as _};
use sha2::{Digest, Sha256};

use crate::aad::Aad;
use crate::device_ref::DeviceRef;
use crate::engine::{Engine, GroupEntry, GroupMeta};
use crate::error::{mls, MlsError, Result};
use crate::events::{Envelope, Event, Joined, ProposalKind};
use crate::groups::{commit_delta, validate_delta};
use crate::join::check_external_join;
use crate::roles::check_staged_commit;
use crate::validation::{validate_leaf, DeviceKeyValidator};

fn sorted(mut v: Vec<DeviceRef>) -> Vec<DeviceRef> {
    v.sort();
    v
}

impl Engine {
    /// Joins a group from a Welcome (`MLSMessage` bytes). Every member's credential is checked
    /// with `validator` before the group is created; member keys are pinned (TOFU) and key
    /// changes reported. Fails with [`MlsError::GroupExists`] if the group is already held
    /// (use [`Engine::rejoin_from_welcome`] after a fork).
    pub fn join_from_welcome(
        &mut self,
        welcome: &[u8],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<Joined> {
        self.join_inner(welcome, validator, false)
    }

    /// Like [`Engine::join_from_welcome`], but replaces a group already held under the same id
    /// (fork recovery by re-add).
    pub fn rejoin_from_welcome(
        &mut self,
        welcome: &[u8],
        validator: &dyn DeviceKeyValidator,
    ) -> Result<Joined> {
        self.join_inner(welcome, validator, true)
    }

    fn join_inner(
        &mut self,
        welcome: &[u8],
        validator: &dyn DeviceKeyValidator,
        replace: bool,
    ) -> Result<Joined> {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| MlsError::InvalidMessage(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err(MlsError::InvalidMessage("not a Welcome".into()));
        };
        // openmls consumes the key package while decrypting the Welcome; keep a copy so a
        // refused Welcome does not burn it.
        let mut held: Vec<(KeyPackageRef, KeyPackageBundle)> = Vec::new();
        for egs in welcome.secrets() {
            let r = egs.new_member();
            if let Ok(Some(b)) = self
                .provider
                .storage()
                .key_package::<KeyPackageRef, KeyPackageBundle>(&r)
            {
                held.push((r, b));
            }
        }
        let result = self.join_welcome(welcome, validator, replace);
        if result.is_err() {
            for (r, b) in &held {
                if let Ok(None) = self
                    .provider
                    .storage()
                    .key_package::<KeyPackageRef, KeyPackageBundle>(r)
                {
                    // Best effort: a failed restore only costs one key package.
                    let _ = self.provider.storage().write_key_package(r, b);
                }
            }
        }
        result
    }

    fn join_welcome(
        &mut self,
        welcome: Welcome,
        validator: &dyn DeviceKeyValidator,
        replace: bool,
    ) -> Result<Joined> {
        let join_config = self.join_config();
        let processed = ProcessedWelcome::new_from_welcome(&self.provider, &join_config, welcome)
            .map_err(|e| MlsError::InvalidMessage(format!("welcome: {e:?}")))?;
        let welcome_group = processed
            .unverified_group_info()
            .group_id()
            .as_slice()
            .to_vec();
        if !replace && self.groups.contains_key(&welcome_group) {
            return Err(MlsError::GroupExists);
        }
        let mut builder = JoinBuilder::new(&self.provider, processed);
        if replace {
            builder = builder.replace_old_group();
        }
        let staged: StagedWelcome = builder
            .build()
            .map_err(|e| MlsError::InvalidMessage(format!("welcome: {e:?}")))?;
        let group_id = String::from_utf8(staged.group_context().group_id().as_slice().to_vec())
            .map_err(|_| MlsError::InvalidMessage("group id is not UTF-8".into()))?;
        if !replace && self.groups.contains_key(group_id.as_bytes()) {
            return Err(MlsError::GroupExists);
        }
        let own_leaf = staged.own_leaf_index();
        let sender_leaf = staged.welcome_sender_index();
        let mut devices = Vec::new();
        let mut welcome_sender = None;
        for m in staged.members() {
            if m.index == own_leaf {
                continue;
            }
            let device = validate_leaf(&m.credential, &m.signature_key, validator)?;
            if m.index == sender_leaf {
                welcome_sender = Some(device.clone());
            }
            devices.push((device, m.signature_key));
        }
        let group = staged.into_group(&self.provider).map_err(mls)?;
        let mut events = Vec::new();
        for (device, key) in &devices {
            if let Some(change) = self.trust.observe(device, key) {
                events.push(Event::KeyChangeDetected(change));
            }
        }
        let epoch = group.epoch().as_u64();
        self.groups.insert(
            group_id.as_bytes().to_vec(),
            GroupEntry {
                mls: group,
                meta: GroupMeta::default(),
            },
        );
        self.prune_consumed_key_packages();
        Ok(Joined {
            members: self.members(&group_id)?,
            group_id,
            epoch,
            welcome_sender,
            events,
        })
    }

    /// Processes one message of the group delivered by the hub with its `envelope`.
    ///
    /// Checks the envelope against the MLS message (group, epoch, sender); application
    /// messages against their AAD (group, epoch, replayed `msg_id`, clock skew); commits are
    /// staged, their adds/removes compared with the envelope's declared ones and their new
    /// credentials validated with `validator` before they are merged. A refused message
    /// changes nothing and returns an error.
    pub fn process(
        &mut self,
        group_id: &str,
        message: &[u8],
        envelope: &Envelope,
        validator: &dyn DeviceKeyValidator,
    ) -> Result<Vec<Event>> {
        let msg = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(|e| MlsError::InvalidMessage(e.to_string()))?;
        let protocol: ProtocolMessage = msg
            .try_into_protocol_message()
            .map_err(|e| MlsError::InvalidMessage(format!("{e:?}")))?;
        if protocol.group_id().as_slice() != group_id.as_bytes() {
            return Err(MlsError::EnvelopeMismatch("group id".into()));
        }
        let message_epoch = protocol.epoch().as_u64();
        if message_epoch != envelope.epoch {
            return Err(MlsError::EnvelopeMismatch(format!(
                "envelope epoch {} but message epoch {message_epoch}",
                envelope.epoch
            )));
        }
        let is_commit = protocol.content_type() == ContentType::Commit;
        let entry = self.entry(group_id)?;
        if !entry.mls.is_active() {
            return Err(MlsError::Evicted);
        }
        let group_epoch = entry.mls.epoch().as_u64();
        // An own commit already confirmed was sent in an earlier epoch (confirming merged it),
        // so only a past-epoch commit can be its echo: hash just those.
        if is_commit && message_epoch < group_epoch && !entry.meta.confirmed_own_commits.is_empty()
        {
            let hash: [u8; 32] = Sha256::digest(message).into();
            if entry.meta.confirmed_own_commits.contains(&hash) {
                // Echo of an own commit already confirmed with `confirm_pending_commit`.
                return Ok(Vec::new());
            }
        }
        if message_epoch > group_epoch
            || (message_epoch < group_epoch && protocol.content_type() != ContentType::Application)
        {
            return Err(MlsError::WrongEpoch {
                message_epoch,
                group_epoch,
            });
        }

        let entry = self
            .groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        // A message of our epoch carries its sender's fork check in the clear: if we cannot
        // read it and the checks differ, our state forked from the sender's.
        let own_check = crate::aad::fork_check_of(entry.mls.epoch_authenticator().as_slice());
        let forked = match &protocol {
            ProtocolMessage::PrivateMessage(p) if message_epoch == group_epoch => {
                Aad::decode(p.aad())
                    .ok()
                    .and_then(|a| a.fork_check)
                    .is_some_and(|c| c != own_check)
            }
            _ => false,
        };
        let processed = entry
            .mls
            .process_message(&self.provider, protocol)
            .map_err(|e| match e {
                _ if forked => MlsError::ForkDetected {
                    epoch: message_epoch,
                },
                ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                    MessageDecryptionError::SecretTreeError(SecretTreeError::TooDistantInTheFuture),
                )) => MlsError::TooFarAhead,
                ProcessMessageError::ValidationError(_) if message_epoch < group_epoch => {
                    MlsError::WrongEpoch {
                        message_epoch,
                        group_epoch,
                    }
                }
                other => MlsError::InvalidMessage(format!("{other:?}")),
            })?;
        let sender_leaf = match processed.sender() {
            Sender::Member(leaf) => *leaf,
            Sender::NewMemberCommit => {
                let aad = processed.aad().to_vec();
                let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content()
                else {
                    return Err(MlsError::InvalidMessage(
                        "a new member may only send an external commit".into(),
                    ));
                };
                return self.merge_external_join(group_id, *staged, &aad, envelope, validator);
            }
            _ => return Err(MlsError::InvalidMessage("non-member sender".into())),
        };
        let own_leaf = entry.mls.own_leaf_index();
        let content_is_own = matches!(
            processed.content(),
            ProcessedMessageContent::OwnPendingCommit | ProcessedMessageContent::OwnPrivateMessage
        );
        let sender = if content_is_own {
            self.identity.device.clone()
        } else {
            DeviceRef::from_credential(processed.credential())?
        };
        if let Some(declared) = &envelope.sender {
            if *declared != sender {
                return Err(MlsError::EnvelopeMismatch(format!(
                    "envelope sender {declared} but MLS sender {sender}"
                )));
            }
        }
        let aad = processed.aad().to_vec();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let aad = Aad::decode(&aad)?;
                if aad.group_id != group_id || aad.epoch != message_epoch {
                    return Err(MlsError::BadAad(
                        "group id or epoch differs from the MLS message".into(),
                    ));
                }
                if aad.ts > envelope.ts.saturating_add(self.config.max_clock_skew_ms) {
                    return Err(MlsError::TimestampSkew);
                }
                entry.meta.replay.check_and_insert(
                    message_epoch,
                    &aad.msg_id,
                    group_epoch,
                    self.config.max_past_epochs,
                )?;
                Ok(vec![Event::ApplicationMessage {
                    sender,
                    plaintext: app.into_bytes(),
                    msg_id: aad.msg_id,
                    ts: aad.ts,
                    epoch: message_epoch,
                }])
            }
            ProcessedMessageContent::OwnPrivateMessage => Ok(Vec::new()),
            ProcessedMessageContent::ProposalMessage(proposal) => {
                if sender_leaf == own_leaf {
                    return Ok(Vec::new());
                }
                let kind = match proposal.proposal() {
                    Proposal::Add(add) => {
                        let leaf = add.key_package().leaf_node();
                        validate_leaf(
                            leaf.credential(),
                            leaf.signature_key().as_slice(),
                            validator,
                        )?;
                        ProposalKind::Add
                    }
                    Proposal::Remove(_) => ProposalKind::Remove,
                    Proposal::Update(_) => ProposalKind::Update,
                    _ => ProposalKind::Other,
                };
                entry
                    .mls
                    .store_pending_proposal(self.provider.storage_ref(), *proposal)
                    .map_err(mls)?;
                Ok(vec![Event::ProposalStored { sender, kind }])
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(
                MlsError::InvalidMessage("external proposals are not accepted".into()),
            ),
            ProcessedMessageContent::OwnPendingCommit => {
                entry
                    .mls
                    .merge_pending_commit(&self.provider)
                    .map_err(mls)?;
                entry.meta.pending = None;
                Ok(vec![Event::OwnCommitConfirmed {
                    epoch: entry.mls.epoch().as_u64(),
                    epoch_authenticator: entry.mls.epoch_authenticator().as_slice().to_vec(),
                }])
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let delta = commit_delta(&entry.mls, &staged, sender_leaf)?;
                let added: Vec<DeviceRef> = delta.adds.iter().map(|a| a.device.clone()).collect();
                if sorted(added.clone()) != sorted(envelope.adds.clone())
                    || sorted(delta.removes.clone()) != sorted(envelope.removes.clone())
                {
                    return Err(MlsError::EnvelopeMismatch(
                        "declared adds/removes differ from the commit".into(),
                    ));
                }
                validate_delta(&delta, validator)?;
                check_staged_commit(&entry.mls, &staged, sender_leaf)?;
                let mut events = Vec::new();
                if entry.mls.pending_commit().is_some() {
                    entry
                        .mls
                        .clear_pending_commit(self.provider.storage_ref())
                        .map_err(mls)?;
                    entry.meta.pending = None;
                    events.push(Event::PendingCommitDiscarded { epoch: group_epoch });
                }
                let self_removed = staged.self_removed();
                entry
                    .mls
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(mls)?;
                let new_epoch = entry.mls.epoch().as_u64();
                let epoch_authenticator = entry.mls.epoch_authenticator().as_slice().to_vec();
                for change in delta.adds.iter().chain(delta.updates.iter()) {
                    if let Some(kc) = self.trust.observe(&change.device, &change.signature_key) {
                        events.push(Event::KeyChangeDetected(kc));
                    }
                }
                events.push(Event::CommitApplied {
                    committer: sender,
                    epoch: new_epoch,
                    added,
                    removed: delta.removes,
                    updated: delta.updates.into_iter().map(|u| u.device).collect(),
                    epoch_authenticator,
                });
                if self_removed {
                    events.push(Event::RemovedFromGroup { epoch: group_epoch });
                }
                Ok(events)
            }
        }
    }

    /// Merges an external commit (docs/protocol.md#join-links) once the group's join rules
    /// admit its joiner and the envelope declares exactly what it does.
    fn merge_external_join(
        &mut self,
        group_id: &str,
        staged: StagedCommit,
        aad: &[u8],
        envelope: &Envelope,
        validator: &dyn DeviceKeyValidator,
    ) -> Result<Vec<Event>> {
        let entry = self
            .groups
            .get_mut(group_id.as_bytes())
            .ok_or(MlsError::UnknownGroup)?;
        let join = check_external_join(&entry.mls, &staged, aad, validator)?;
        if envelope.sender.as_ref().is_some_and(|s| *s != join.joiner) {
            return Err(MlsError::EnvelopeMismatch(
                "envelope sender is not the joiner".into(),
            ));
        }
        if envelope.adds != [join.joiner.clone()]
            || sorted(envelope.removes.clone()) != sorted(join.removes.clone())
        {
            return Err(MlsError::EnvelopeMismatch(
                "declared adds/removes differ from the external commit".into(),
            ));
        }
        let group_epoch = entry.mls.epoch().as_u64();
        let mut events = Vec::new();
        if entry.mls.pending_commit().is_some() {
            entry
                .mls
                .clear_pending_commit(self.provider.storage_ref())
                .map_err(mls)?;
            entry.meta.pending = None;
            events.push(Event::PendingCommitDiscarded { epoch: group_epoch });
        }
        entry
            .mls
            .merge_staged_commit(&self.provider, staged)
            .map_err(mls)?;
        if let Some(kc) = self.trust.observe(&join.joiner, &join.signature_key) {
            events.push(Event::KeyChangeDetected(kc));
        }
        events.push(Event::CommitApplied {
            committer: join.joiner.clone(),
            epoch: entry.mls.epoch().as_u64(),
            added: vec![join.joiner],
            removed: join.removes,
            updated: Vec::new(),
            epoch_authenticator: entry.mls.epoch_authenticator().as_slice().to_vec(),
        });
        Ok(events)
    }
}
