//! `MLSMessage`s (docs/protocol.md#hub-rules rule 2): wire format, group id, epoch, content type and (for a
//! `PublicMessage`) the sender leaf; a `PublicMessage` commit's proposal list read from its
//! framing (RFC 9420 §6, §12.4) and a proposal's reference (RFC 9420 §5.2); Welcome and
//! GroupInfo summaries to cross-check a commit bundle.

use openmls::ciphersuite::hash_ref::make_proposal_ref;
use openmls::prelude::tls_codec::{
    Deserialize as TlsDeserializeTrait, Serialize as TlsSerializeTrait, VLBytes,
};
use openmls::prelude::{
    AddProposalIn, GroupContextExtensionProposalIn, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn,
    ProposalIn, ProposalOrRefIn, ProposalType, ProtocolVersion,
};
use parley_client_api::disappearing::DISAPPEARING_EXTENSION_TYPE;
use parley_client_api::join::JOIN_RULES_EXTENSION_TYPE;
use parley_client_api::roles::ROLES_EXTENSION_TYPE;

use super::{basic_identity, crypto, WireFormatKind, CIPHERSUITE};

/// Why an MLS message, Welcome or GroupInfo was refused (all map to 400 `P_INVALID_MESSAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a TLS-serialised `MLSMessage` (or its body is malformed).
    #[error("not a valid TLS-serialised MLSMessage: {0}")]
    Malformed(String),
    /// The `MLSMessage` has another wire format than the one required here.
    #[error("expected an MLS {expected:?}, got a {found:?}")]
    WrongWireFormat {
        /// The wire format required.
        expected: WireFormatKind,
        /// The wire format found.
        found: WireFormatKind,
    },
    /// The content type travels in the wrong wire format (rule 2: handshake in PublicMessage,
    /// application in PrivateMessage).
    #[error("a {content:?} message must be sent as a {required:?}, not a {found:?}")]
    DisallowedWireFormat {
        /// The content type of the message.
        content: ContentKind,
        /// The wire format the hub requires for it.
        required: WireFormatKind,
        /// The wire format found.
        found: WireFormatKind,
    },
    /// The MLS group id is not the group of the request.
    #[error("the MLS message's group id does not match the group of the request")]
    GroupIdMismatch,
    /// The MLS content type is not what the request says.
    #[error("the MLS message is a {found:?}, but the request is for a {expected:?}")]
    ContentTypeMismatch {
        /// The content type the endpoint expects.
        expected: ContentKind,
        /// The content type in the message.
        found: ContentKind,
    },
    /// A handshake message whose sender is not a member (other than an external commit:
    /// external proposals and external senders are not supported).
    #[error("handshake messages must come from a group member (or be an external commit); external proposals and senders are not supported")]
    NonMemberSender,
    /// The ciphersuite of a Welcome, GroupInfo or added key package is not Parley's.
    #[error("unsupported ciphersuite 0x{0:04x}")]
    UnsupportedCiphersuite(u16),
    /// A key package inside an Add proposal does not verify.
    #[error("an added key package is invalid: {0}")]
    InvalidAddedKeyPackage(String),
    /// A key package inside an Add proposal has no BasicCredential with a UTF-8 identity.
    #[error("an added key package's credential is not a basic credential with a UTF-8 identity")]
    BadAddCredential,
    /// A commit names a proposal by reference that the hub has not accepted in this epoch.
    #[error("the commit references proposal {0} which was not accepted in this epoch")]
    UnknownProposalRef(String),
    /// A commit removes its own committer.
    #[error("the commit removes its own committer (leaf {0})")]
    CommitterRemoved(u32),
    /// The GroupInfo is for another group than the commit.
    #[error("the group info is for another group than the commit")]
    GroupInfoGroupMismatch,
    /// The GroupInfo's epoch is not the commit's epoch + 1.
    #[error("the group info is for epoch {found}, but the commit creates epoch {expected}")]
    GroupInfoEpochMismatch {
        /// The commit's epoch + 1.
        expected: u64,
        /// The group info's epoch.
        found: u64,
    },
    /// The Welcome's recipients are not exactly the commit's added key packages.
    #[error("the welcome's recipients do not match the key packages the commit adds")]
    WelcomeRecipientsMismatch,
}

/// The content type of a framed message (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// `application` (1).
    Application,
    /// `proposal` (2).
    Proposal,
    /// `commit` (3).
    Commit,
}

impl ContentKind {
    /// The sync `kind` string: `"application"`, `"proposal"` or `"commit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Proposal => "proposal",
            Self::Commit => "commit",
        }
    }

    /// Whether this is a handshake (proposal or commit) content type.
    pub fn is_handshake(self) -> bool {
        !matches!(self, Self::Application)
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Application),
            2 => Some(Self::Proposal),
            3 => Some(Self::Commit),
            _ => None,
        }
    }
}

/// The sender of a framed message (RFC 9420 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageSender {
    /// A member at this leaf index.
    Member(u32),
    /// An external sender (index into the group's external_senders extension).
    External(u32),
    /// A new member proposing to join.
    NewMemberProposal,
    /// A new member joining by external commit.
    NewMemberCommit,
    /// Encrypted in a PrivateMessage: the hub cannot see it.
    Hidden,
}

/// A member added by an Add proposal (its key package's signature verified, its credential read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMember {
    /// The credential identity, `@user:server/DEVICE`.
    pub identity: String,
    /// The leaf's raw Ed25519 signature key (compare with the device's bound key).
    pub signature_key: Vec<u8>,
    /// The KeyPackageRef of the added package (the Welcome names recipients by it).
    pub key_package_ref: Vec<u8>,
}

/// What one proposal does to the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalEffect {
    /// Adds a member.
    Add(AddedMember),
    /// Removes the member at this leaf.
    Remove {
        /// The removed leaf index.
        leaf: u32,
    },
    /// Replaces the sender's leaf node (no roster change).
    Update,
    /// The sender leaves (openmls SelfRemove, removes the proposal's sender).
    SelfRemove,
    /// Replaces the group context's extensions.
    GroupContextExtensions(ContextChange),
    /// Any other proposal type (PSK, ReInit, ExternalInit, GroupContextExtensions, custom…).
    Other {
        /// The RFC 9420 proposal type code.
        proposal_type: u16,
    },
}

/// What a GroupContextExtensions proposal sets that the hub tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContextChange {
    /// The body of the roles extension (docs/protocol.md#group-roles), `None` when the new
    /// context has none.
    pub roles: Option<Vec<u8>>,
    /// The body of the join-rules extension (docs/protocol.md#join-links), `None` when the
    /// new context has none.
    pub join_rules: Option<Vec<u8>>,
    /// The body of the disappearing-messages extension
    /// (docs/protocol.md#disappearing-messages), `None` when the new context has none.
    pub disappearing: Option<Vec<u8>>,
}

/// A standalone proposal (`PublicMessage` with content type proposal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalInfo {
    /// The ProposalRef (RFC 9420 §5.2) commits use to include it by reference.
    pub proposal_ref: Vec<u8>,
    /// What it does.
    pub effect: ProposalEffect,
}

/// A proposal that the hub accepted earlier in the current epoch, kept to resolve references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProposal {
    /// Leaf index of the member who sent the proposal.
    pub sender_leaf: u32,
    /// What it does.
    pub effect: ProposalEffect,
}

/// One entry of a commit's proposal list, in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedProposal {
    /// A proposal carried inline (its sender is the committer).
    Inline(ProposalEffect),
    /// A proposal included by reference (ProposalRef bytes).
    Reference(Vec<u8>),
}

/// The clear part of a `PublicMessage` commit, read from its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Every proposal in commit order, inline or by reference.
    pub proposals: Vec<CommittedProposal>,
    /// Inline Adds, in order.
    pub adds: Vec<AddedMember>,
    /// Leaf indices of inline Removes, in order.
    pub removes: Vec<u32>,
    /// Number of inline Updates.
    pub updates: usize,
    /// ProposalRefs of proposals included by reference, in order.
    pub proposal_refs: Vec<Vec<u8>>,
    /// Proposal type codes of other inline proposals (PSK, GroupContextExtensions, …).
    pub other_proposal_types: Vec<u16>,
    /// Whether the commit carries an UpdatePath.
    pub has_path: bool,
    /// The UpdatePath's leaf: for an external commit, the joiner's new leaf.
    pub path_leaf: Option<PathLeaf>,
}

/// The identity and signature key of a commit's UpdatePath leaf, read from its framing (the
/// hub checks them against the submitting device; members verify the signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLeaf {
    /// The credential identity, `@user:server/DEVICE` (`None` if not a UTF-8 basic credential).
    pub identity: Option<String>,
    /// The leaf's raw Ed25519 signature key.
    pub signature_key: Vec<u8>,
}

/// The roster change a commit makes once references are resolved (see [`CommitInfo::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitDelta {
    /// Added members, in the order openmls assigns their leaves.
    pub adds: Vec<AddedMember>,
    /// Removed leaf indices (Removes and SelfRemoves).
    pub removes: Vec<u32>,
    /// The leaf that proposed each removal, beside `removes` (the committer's for an inline
    /// Remove).
    pub remove_proposers: Vec<u32>,
    /// Number of Updates (no roster change).
    pub updates: usize,
    /// Proposal type codes of other proposals.
    pub other_proposal_types: Vec<u16>,
    /// The group context the commit sets, if it carries a GroupContextExtensions proposal.
    pub context: Option<ContextChange>,
}

impl CommitDelta {
    /// The identities of the added members, in leaf-assignment order.
    pub fn add_identities(&self) -> Vec<String> {
        self.adds.iter().map(|a| a.identity.clone()).collect()
    }
}

impl CommitInfo {
    /// Resolves the commit into its roster delta. `committer_leaf` is the commit's sender;
    /// `lookup` finds a proposal the hub accepted in this epoch by its ProposalRef.
    ///
    /// Order follows RFC 9420 §12.3 as openmls applies it: Removes (then SelfRemoves) blank
    /// leaves, then Adds in commit order. A reference the hub does not know, or a commit that
    /// removes its committer, is refused.
    pub fn resolve<F>(
        &self,
        committer_leaf: u32,
        mut lookup: F,
    ) -> Result<CommitDelta, MessageError>
    where
        F: FnMut(&[u8]) -> Option<StoredProposal>,
    {
        let mut delta = CommitDelta::default();
        let mut self_removes = Vec::new();
        for entry in &self.proposals {
            let (sender_leaf, effect) = match entry {
                CommittedProposal::Inline(effect) => (committer_leaf, effect.clone()),
                CommittedProposal::Reference(r) => {
                    let stored =
                        lookup(r).ok_or_else(|| MessageError::UnknownProposalRef(hex(r)))?;
                    (stored.sender_leaf, stored.effect)
                }
            };
            match effect {
                ProposalEffect::Add(a) => delta.adds.push(a),
                ProposalEffect::Remove { leaf } => {
                    delta.removes.push(leaf);
                    delta.remove_proposers.push(sender_leaf);
                }
                ProposalEffect::SelfRemove => self_removes.push(sender_leaf),
                ProposalEffect::Update => delta.updates += 1,
                ProposalEffect::GroupContextExtensions(change) => {
                    delta
                        .other_proposal_types
                        .push(u16::from(ProposalType::GroupContextExtensions));
                    delta.context = Some(change);
                }
                ProposalEffect::Other { proposal_type } => {
                    delta.other_proposal_types.push(proposal_type)
                }
            }
        }
        delta.remove_proposers.extend(self_removes.iter().copied());
        delta.removes.extend(self_removes);
        if delta.removes.contains(&committer_leaf) {
            return Err(MessageError::CommitterRemoved(committer_leaf));
        }
        Ok(delta)
    }
}

/// The clear fields of a `PublicMessage` or `PrivateMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramedInfo {
    /// PublicMessage or PrivateMessage.
    pub wire_format: WireFormatKind,
    /// The MLS group id (the UTF-8 bytes of `!opaque:hub`).
    pub group_id: Vec<u8>,
    /// The epoch the message was sent in.
    pub epoch: u64,
    /// Application, proposal or commit (in a PrivateMessage it is in the clear header).
    pub content_type: ContentKind,
    /// The sender (hidden in a PrivateMessage).
    pub sender: MessageSender,
    /// The authenticated data of a PublicMessage (empty for a PrivateMessage, whose AAD the
    /// hub cannot see).
    pub authenticated_data: Vec<u8>,
    /// For a PublicMessage proposal: its reference and effect.
    pub proposal: Option<ProposalInfo>,
    /// For a PublicMessage commit: its proposal list and path flag.
    pub commit: Option<CommitInfo>,
}

impl FramedInfo {
    /// For a member's PublicMessage proposal: its ProposalRef and what to store for
    /// [`CommitInfo::resolve`].
    pub fn stored_proposal(&self) -> Option<(Vec<u8>, StoredProposal)> {
        match (&self.proposal, self.sender) {
            (Some(p), MessageSender::Member(sender_leaf)) => Some((
                p.proposal_ref.clone(),
                StoredProposal {
                    sender_leaf,
                    effect: p.effect.clone(),
                },
            )),
            _ => None,
        }
    }
}

/// A Welcome's clear fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeInfo {
    /// The ciphersuite code (always 0x0001 once inspected).
    pub ciphersuite: u16,
    /// KeyPackageRefs of the recipients, in order.
    pub new_members: Vec<Vec<u8>>,
}

/// A GroupInfo's clear fields (its signature is not verified: the hub lacks the signer's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfoSummary {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The epoch the group info describes (a commit's epoch + 1).
    pub epoch: u64,
    /// The ciphersuite code.
    pub ciphersuite: u16,
}

/// What [`inspect_message`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageInfo {
    /// A PublicMessage or PrivateMessage.
    Framed(Box<FramedInfo>),
    /// A Welcome.
    Welcome(WelcomeInfo),
    /// A GroupInfo.
    GroupInfo(GroupInfoSummary),
    /// A key package (use [`validate_key_package`](super::validate_key_package) to check it).
    KeyPackage,
}

impl MessageInfo {
    /// The wire format of the message.
    pub fn wire_format(&self) -> WireFormatKind {
        match self {
            Self::Framed(f) => f.wire_format,
            Self::Welcome(_) => WireFormatKind::Welcome,
            Self::GroupInfo(_) => WireFormatKind::GroupInfo,
            Self::KeyPackage => WireFormatKind::KeyPackage,
        }
    }

    /// The framed fields, for a PublicMessage or PrivateMessage.
    pub fn framed(&self) -> Option<&FramedInfo> {
        match self {
            Self::Framed(f) => Some(f),
            _ => None,
        }
    }
}

/// Reads a TLS-serialised `MLSMessage` of any wire format (the whole input must be one message).
pub fn inspect_message(bytes: &[u8]) -> Result<MessageInfo, MessageError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    let kind = WireFormatKind::of(&msg);
    match msg.extract() {
        MlsMessageBodyIn::PublicMessage(_) => {
            inspect_public(bytes).map(|f| MessageInfo::Framed(Box::new(f)))
        }
        MlsMessageBodyIn::PrivateMessage(m) => Ok(MessageInfo::Framed(Box::new(FramedInfo {
            wire_format: WireFormatKind::PrivateMessage,
            group_id: m.group_id().as_slice().to_vec(),
            epoch: m.epoch().as_u64(),
            content_type: content_kind(m.content_type()),
            sender: MessageSender::Hidden,
            authenticated_data: Vec::new(),
            proposal: None,
            commit: None,
        }))),
        MlsMessageBodyIn::Welcome(w) => {
            let ciphersuite = u16::from(w.ciphersuite());
            if w.ciphersuite() != CIPHERSUITE {
                return Err(MessageError::UnsupportedCiphersuite(ciphersuite));
            }
            Ok(MessageInfo::Welcome(WelcomeInfo {
                ciphersuite,
                new_members: w
                    .secrets()
                    .iter()
                    .map(|s| s.new_member().as_slice().to_vec())
                    .collect(),
            }))
        }
        MlsMessageBodyIn::GroupInfo(gi) => {
            let ciphersuite = u16::from(gi.ciphersuite());
            if gi.ciphersuite() != CIPHERSUITE {
                return Err(MessageError::UnsupportedCiphersuite(ciphersuite));
            }
            Ok(MessageInfo::GroupInfo(GroupInfoSummary {
                group_id: gi.group_id().as_slice().to_vec(),
                epoch: gi.epoch().as_u64(),
                ciphersuite,
            }))
        }
        MlsMessageBodyIn::KeyPackage(_) => Ok(MessageInfo::KeyPackage),
        // openmls feature `targeted-messages-draft` adds a variant.
        #[allow(unreachable_patterns)]
        _ => Err(MessageError::Malformed(format!(
            "unsupported wire format {kind:?}"
        ))),
    }
}

/// Reads a Welcome `MLSMessage`: its ciphersuite (must be Parley's) and recipients.
pub fn inspect_welcome(bytes: &[u8]) -> Result<WelcomeInfo, MessageError> {
    match inspect_message(bytes)? {
        MessageInfo::Welcome(w) => Ok(w),
        other => Err(MessageError::WrongWireFormat {
            expected: WireFormatKind::Welcome,
            found: other.wire_format(),
        }),
    }
}

/// Reads a GroupInfo `MLSMessage`: group id, epoch, ciphersuite (must be Parley's).
pub fn inspect_group_info(bytes: &[u8]) -> Result<GroupInfoSummary, MessageError> {
    match inspect_message(bytes)? {
        MessageInfo::GroupInfo(g) => Ok(g),
        other => Err(MessageError::WrongWireFormat {
            expected: WireFormatKind::GroupInfo,
            found: other.wire_format(),
        }),
    }
}

/// docs/protocol.md#hub-rule-2: checks a message submitted to group `expected_group_id` as `kind`
/// (commit, proposal or application) and returns its framed fields. Handshake messages must
/// be PublicMessages from a member; application messages must be PrivateMessages. The epoch is
/// left to the hub (it needs the group's current epoch).
pub fn check_envelope<'a>(
    info: &'a MessageInfo,
    expected_group_id: &[u8],
    kind: ContentKind,
) -> Result<&'a FramedInfo, MessageError> {
    let required = if kind.is_handshake() {
        WireFormatKind::PublicMessage
    } else {
        WireFormatKind::PrivateMessage
    };
    let framed = info.framed().ok_or(MessageError::WrongWireFormat {
        expected: required,
        found: info.wire_format(),
    })?;
    if framed.content_type != kind {
        return Err(MessageError::ContentTypeMismatch {
            expected: kind,
            found: framed.content_type,
        });
    }
    if framed.wire_format != required {
        return Err(MessageError::DisallowedWireFormat {
            content: kind,
            required,
            found: framed.wire_format,
        });
    }
    if framed.group_id != expected_group_id {
        return Err(MessageError::GroupIdMismatch);
    }
    let by_member = matches!(framed.sender, MessageSender::Member(_));
    let external_commit =
        kind == ContentKind::Commit && framed.sender == MessageSender::NewMemberCommit;
    if kind.is_handshake() && !by_member && !external_commit {
        return Err(MessageError::NonMemberSender);
    }
    Ok(framed)
}

/// Checks that a bundle's GroupInfo belongs to its commit: same group, epoch = commit epoch + 1.
pub fn check_group_info(
    group_info: &GroupInfoSummary,
    commit: &FramedInfo,
) -> Result<(), MessageError> {
    if group_info.group_id != commit.group_id {
        return Err(MessageError::GroupInfoGroupMismatch);
    }
    let expected = commit.epoch.saturating_add(1);
    if group_info.epoch != expected {
        return Err(MessageError::GroupInfoEpochMismatch {
            expected,
            found: group_info.epoch,
        });
    }
    Ok(())
}

/// Checks that a bundle's Welcome is addressed to exactly the key packages the commit adds.
pub fn check_welcome(welcome: &WelcomeInfo, adds: &[AddedMember]) -> Result<(), MessageError> {
    let mut recipients: Vec<&[u8]> = welcome.new_members.iter().map(Vec::as_slice).collect();
    let mut added: Vec<&[u8]> = adds.iter().map(|a| a.key_package_ref.as_slice()).collect();
    recipients.sort_unstable();
    added.sort_unstable();
    if recipients != added {
        return Err(MessageError::WelcomeRecipientsMismatch);
    }
    Ok(())
}

fn content_kind(ct: openmls::prelude::ContentType) -> ContentKind {
    match ct {
        openmls::prelude::ContentType::Application => ContentKind::Application,
        openmls::prelude::ContentType::Proposal => ContentKind::Proposal,
        openmls::prelude::ContentType::Commit => ContentKind::Commit,
    }
}

/// Reads a PublicMessage's framing by hand (RFC 9420 §6):
///
/// ```text
/// MLSMessage   = version u16, wire_format u16, PublicMessage
/// PublicMessage = FramedContent, FramedContentAuthData, [membership_tag<V> if member]
/// FramedContent = group_id<V>, epoch u64, Sender, authenticated_data<V>, content_type u8, body
///   application: application_data<V>;  proposal: Proposal;
///   commit: Commit = proposals<V> (ProposalOrRef), optional<UpdatePath> path
/// FramedContentAuthData = signature<V>, [confirmation_tag<V> if commit]
/// ```
///
/// The caller has already parsed the whole message with openmls, so the structure is valid.
fn inspect_public(bytes: &[u8]) -> Result<FramedInfo, MessageError> {
    let bad = |e: openmls::prelude::tls_codec::Error| MessageError::Malformed(e.to_string());
    let mut r: &[u8] = bytes;
    let _version = u16::tls_deserialize(&mut r).map_err(bad)?;
    let _wire_format = u16::tls_deserialize(&mut r).map_err(bad)?;
    let group_id = VLBytes::tls_deserialize(&mut r).map_err(bad)?;
    let epoch = u64::tls_deserialize(&mut r).map_err(bad)?;
    let sender = match u8::tls_deserialize(&mut r).map_err(bad)? {
        1 => MessageSender::Member(u32::tls_deserialize(&mut r).map_err(bad)?),
        2 => MessageSender::External(u32::tls_deserialize(&mut r).map_err(bad)?),
        3 => MessageSender::NewMemberProposal,
        4 => MessageSender::NewMemberCommit,
        t => return Err(MessageError::Malformed(format!("unknown sender type {t}"))),
    };
    let authenticated_data = VLBytes::tls_deserialize(&mut r).map_err(bad)?;
    let ct = u8::tls_deserialize(&mut r).map_err(bad)?;
    let content_type = ContentKind::from_u8(ct)
        .ok_or_else(|| MessageError::Malformed(format!("unknown content type {ct}")))?;
    let mut info = FramedInfo {
        wire_format: WireFormatKind::PublicMessage,
        group_id: group_id.as_slice().to_vec(),
        epoch,
        content_type,
        sender,
        authenticated_data: authenticated_data.as_slice().to_vec(),
        proposal: None,
        commit: None,
    };
    match content_type {
        ContentKind::Application => {}
        ContentKind::Proposal => {
            let proposal = ProposalIn::tls_deserialize(&mut r).map_err(bad)?;
            let _signature = VLBytes::tls_deserialize(&mut r).map_err(bad)?;
            // AuthenticatedContent = wire_format || FramedContent || FramedContentAuthData:
            // the message without its version and membership tag.
            let end = bytes.len() - r.len();
            let authenticated_content = bytes
                .get(2..end)
                .ok_or_else(|| MessageError::Malformed("truncated proposal".into()))?;
            let proposal_ref = make_proposal_ref(authenticated_content, CIPHERSUITE, crypto())
                .map_err(|e| MessageError::Malformed(format!("proposal ref: {e:?}")))?;
            info.proposal = Some(ProposalInfo {
                proposal_ref: proposal_ref.as_slice().to_vec(),
                effect: proposal_effect(&proposal)?,
            });
        }
        ContentKind::Commit => {
            let proposals = Vec::<ProposalOrRefIn>::tls_deserialize(&mut r).map_err(bad)?;
            let has_path = match u8::tls_deserialize(&mut r).map_err(bad)? {
                0 => false,
                1 => true,
                p => {
                    return Err(MessageError::Malformed(format!(
                        "bad optional<UpdatePath> tag {p}"
                    )))
                }
            };
            let path_leaf = if has_path {
                Some(path_leaf(&mut r)?)
            } else {
                None
            };
            let mut commit = CommitInfo {
                proposals: Vec::with_capacity(proposals.len()),
                adds: Vec::new(),
                removes: Vec::new(),
                updates: 0,
                proposal_refs: Vec::new(),
                other_proposal_types: Vec::new(),
                has_path,
                path_leaf,
            };
            for p in proposals {
                let entry = match p {
                    ProposalOrRefIn::Proposal(p) => {
                        let effect = proposal_effect(&p)?;
                        match &effect {
                            ProposalEffect::Add(a) => commit.adds.push(a.clone()),
                            ProposalEffect::Remove { leaf } => commit.removes.push(*leaf),
                            ProposalEffect::Update => commit.updates += 1,
                            ProposalEffect::SelfRemove => commit
                                .other_proposal_types
                                .push(u16::from(ProposalType::SelfRemove)),
                            ProposalEffect::GroupContextExtensions(_) => commit
                                .other_proposal_types
                                .push(u16::from(ProposalType::GroupContextExtensions)),
                            ProposalEffect::Other { proposal_type } => {
                                commit.other_proposal_types.push(*proposal_type)
                            }
                        }
                        CommittedProposal::Inline(effect)
                    }
                    ProposalOrRefIn::Reference(r) => {
                        let r = r.as_slice().to_vec();
                        commit.proposal_refs.push(r.clone());
                        CommittedProposal::Reference(r)
                    }
                };
                commit.proposals.push(entry);
            }
            info.commit = Some(commit);
        }
    }
    Ok(info)
}

/// Reads the start of an UpdatePath's LeafNode (RFC 9420 §7.2): `encryption_key<V>`,
/// `signature_key<V>`, then the Credential (`credential_type u16`, for a basic credential
/// `identity<V>`). The rest of the path is not needed here.
fn path_leaf(r: &mut &[u8]) -> Result<PathLeaf, MessageError> {
    let bad = |e: openmls::prelude::tls_codec::Error| MessageError::Malformed(e.to_string());
    let _encryption_key = VLBytes::tls_deserialize(r).map_err(bad)?;
    let signature_key = VLBytes::tls_deserialize(r).map_err(bad)?;
    let credential_type = u16::tls_deserialize(r).map_err(bad)?;
    let identity = if credential_type == 1 {
        let id = VLBytes::tls_deserialize(r).map_err(bad)?;
        String::from_utf8(id.as_slice().to_vec()).ok()
    } else {
        None
    };
    Ok(PathLeaf {
        identity,
        signature_key: signature_key.as_slice().to_vec(),
    })
}

fn proposal_effect(p: &ProposalIn) -> Result<ProposalEffect, MessageError> {
    Ok(match p {
        ProposalIn::Add(add) => ProposalEffect::Add(added_member(add)?),
        ProposalIn::Remove(remove) => ProposalEffect::Remove {
            leaf: remove.removed().u32(),
        },
        ProposalIn::Update(_) => ProposalEffect::Update,
        ProposalIn::SelfRemove => ProposalEffect::SelfRemove,
        ProposalIn::GroupContextExtensions(gce) => {
            ProposalEffect::GroupContextExtensions(context_change(gce)?)
        }
        other => ProposalEffect::Other {
            proposal_type: u16::from(other.proposal_type()),
        },
    })
}

/// Reads a GroupContextExtensions proposal. openmls keeps its extensions private, but the
/// proposal is exactly `struct { Extension extensions<V>; }` (RFC 9420 §12.1.7), each
/// extension `struct { uint16 extension_type; opaque extension_data<V>; }`.
fn context_change(gce: &GroupContextExtensionProposalIn) -> Result<ContextChange, MessageError> {
    let malformed = |e: openmls::prelude::tls_codec::Error| MessageError::Malformed(e.to_string());
    let bytes = gce.tls_serialize_detached().map_err(malformed)?;
    let list = VLBytes::tls_deserialize_exact(&bytes).map_err(malformed)?;
    let mut r: &[u8] = list.as_slice();
    let mut change = ContextChange::default();
    while !r.is_empty() {
        let extension_type = u16::tls_deserialize(&mut r).map_err(malformed)?;
        let data = VLBytes::tls_deserialize(&mut r).map_err(malformed)?;
        let slot = match extension_type {
            ROLES_EXTENSION_TYPE => &mut change.roles,
            JOIN_RULES_EXTENSION_TYPE => &mut change.join_rules,
            DISAPPEARING_EXTENSION_TYPE => &mut change.disappearing,
            _ => continue,
        };
        if slot.is_some() {
            return Err(MessageError::Malformed(format!(
                "extension 0x{extension_type:04x} appears twice"
            )));
        }
        *slot = Some(data.as_slice().to_vec());
    }
    Ok(change)
}

/// Verifies the key package inside an Add (as every receiving client does) and reads it.
/// `AddProposalIn` keeps its package private, but `Add` is exactly `struct { KeyPackage }`, so
/// its TLS encoding is the package's.
fn added_member(add: &AddProposalIn) -> Result<AddedMember, MessageError> {
    let bytes = add
        .tls_serialize_detached()
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    let kp_in = KeyPackageIn::tls_deserialize_exact(&bytes)
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    if let Some(&[hi, lo]) = bytes.get(2..4) {
        let suite = u16::from_be_bytes([hi, lo]);
        if suite != u16::from(CIPHERSUITE) {
            return Err(MessageError::UnsupportedCiphersuite(suite));
        }
    }
    let kp = kp_in
        .validate(crypto(), ProtocolVersion::Mls10)
        .map_err(|e| MessageError::InvalidAddedKeyPackage(e.to_string()))?;
    let identity = basic_identity(kp.leaf_node().credential())
        .and_then(|id| String::from_utf8(id).ok())
        .ok_or(MessageError::BadAddCredential)?;
    let key_package_ref = kp
        .hash_ref(crypto())
        .map_err(|e| MessageError::InvalidAddedKeyPackage(e.to_string()))?
        .as_slice()
        .to_vec();
    Ok(AddedMember {
        identity,
        signature_key: kp.leaf_node().signature_key().as_slice().to_vec(),
        key_package_ref,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
