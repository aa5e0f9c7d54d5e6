//! Server-side MLS validation for the hub (DESIGN §3.3 rules 2 and 4, §3.4 "Keys" and "Groups").
//!
//! Pure functions over TLS-serialised MLS structures: no I/O, no storage, no panics on input.
//! The hub cannot decrypt or fully verify group messages (it holds no group secrets), so this
//! module reads what MLS leaves in the clear and verifies what can be verified without group
//! state:
//!
//! * key packages: parsed, signatures verified with openmls, then Parley's policy (ciphersuite,
//!   lifetime, credential identity, bound signature key, last-resort extension);
//! * `MLSMessage`s: wire format, group id, epoch, content type and (for `PublicMessage`) the
//!   sender leaf; for a `PublicMessage` commit the proposal list is read from the framing
//!   (RFC 9420 §6, §12.4) so the hub can compare Adds and Removes with the bundle's declared
//!   `adds`/`removes`; for a `PublicMessage` proposal its proposal reference (RFC 9420 §5.2) is
//!   computed so commits that include it by reference can be resolved;
//! * Welcome / GroupInfo summaries to cross-check a commit bundle;
//! * [`Roster`]: leaf-index tracking with RFC 9420 §12.3 rules, matching openmls.
//!
//! Accepted encodings: every MLS structure is a TLS-serialised `MLSMessage` (DESIGN §3); key
//! packages are also accepted bare (a TLS-serialised `KeyPackage`), and
//! [`ValidKeyPackage::message`] always gives the `MLSMessage` form to store and hand out.

use std::sync::OnceLock;

use openmls::ciphersuite::hash_ref::make_proposal_ref;
use openmls::prelude::tls_codec::{
    Deserialize as TlsDeserializeTrait, Serialize as TlsSerializeTrait, VLBytes,
};
use openmls::prelude::{
    AddProposalIn, BasicCredential, Ciphersuite, Credential, CredentialType, ExtensionType,
    KeyPackage, KeyPackageIn, KeyPackageVerifyError, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    ProposalIn, ProposalOrRefIn, ProposalType, ProtocolVersion,
};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::RustCrypto;

/// The only ciphersuite Parley v1 accepts (DESIGN §4).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How far a key package's `not_before` may lie after the server's clock (clock skew), in ms.
pub const NOT_BEFORE_SKEW_MS: u64 = 5 * 60 * 1000;

/// Slack added to `max_key_package_lifetime_ms` when checking `not_after − not_before` (DESIGN §3.4).
pub const LIFETIME_SLACK_MS: u64 = 60 * 60 * 1000;

/// A crypto provider shared by all calls (hashing and signature verification only; its RNG is
/// seeded once and never used here).
fn crypto() -> &'static RustCrypto {
    static CRYPTO: OnceLock<RustCrypto> = OnceLock::new();
    CRYPTO.get_or_init(RustCrypto::default)
}

// ---------------------------------------------------------------------------------------------
// Key packages
// ---------------------------------------------------------------------------------------------

/// Why an uploaded key package was refused (all map to 400 `P_INVALID_KEY_PACKAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPackageError {
    /// The bytes are neither a TLS-serialised `MLSMessage` key package nor a bare `KeyPackage`.
    #[error("not a TLS-serialised key package: {0}")]
    Malformed(String),
    /// The bytes are an `MLSMessage`, but of another wire format.
    #[error("the MLS message is a {0:?}, not a key package")]
    NotAKeyPackage(WireFormatKind),
    /// The ciphersuite is not MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
    #[error(
        "unsupported ciphersuite 0x{0:04x}; only MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (0x0001) is accepted"
    )]
    UnsupportedCiphersuite(u16),
    /// The key package or leaf node signature does not verify.
    #[error("the key package signature is invalid")]
    InvalidSignature,
    /// openmls refused the package for another structural reason.
    #[error("the key package is invalid: {0}")]
    Invalid(String),
    /// `not_after` is not in the future.
    #[error("the key package expired (not_after {not_after_ms} ms, now {now_ms} ms)")]
    Expired {
        /// The package's `not_after`, ms since the Unix epoch.
        not_after_ms: u64,
        /// The server's clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// `not_before` is more than the allowed skew after now.
    #[error("the key package is not valid yet (not_before {not_before_ms} ms, now {now_ms} ms)")]
    NotYetValid {
        /// The package's `not_before`, ms since the Unix epoch.
        not_before_ms: u64,
        /// The server's clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// `not_after − not_before` exceeds the configured maximum plus one hour.
    #[error(
        "the key package lifetime of {lifetime_ms} ms exceeds the maximum of {max_lifetime_ms} ms (plus one hour)"
    )]
    LifetimeTooLong {
        /// `not_after − not_before` in ms.
        lifetime_ms: u64,
        /// The configured `max_key_package_lifetime_ms`.
        max_lifetime_ms: u64,
    },
    /// The leaf credential is not a BasicCredential.
    #[error("the credential is not a basic credential")]
    NotBasicCredential,
    /// The credential identity is not this device's `@user:server/DEVICE`.
    #[error("the credential identity {found:?} is not this device ({expected:?})")]
    IdentityMismatch {
        /// The uploading device's identity.
        expected: String,
        /// The identity in the package (lossy UTF-8).
        found: String,
    },
    /// The leaf signature key is not the key bound to the device.
    #[error("the leaf signature key is not the signature key bound to this device")]
    SignatureKeyMismatch,
    /// A last-resort upload without the last_resort extension.
    #[error("the last-resort key package does not carry the last_resort extension (0x000A)")]
    MissingLastResortExtension,
    /// A last-resort package whose leaf capabilities do not list 0x000A.
    #[error("the last-resort key package's leaf capabilities do not list the last_resort extension (0x000A)")]
    LastResortNotInCapabilities,
    /// An ordinary package carrying the last_resort extension.
    #[error("an ordinary key package must not carry the last_resort extension (0x000A)")]
    UnexpectedLastResort,
}

/// A key package that passed [`validate_key_package`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKeyPackage {
    /// The KeyPackageRef (RFC 9420 §5.2) bytes: unique per package, for de-duplication.
    pub hash_ref: Vec<u8>,
    /// `not_before`, ms since the Unix epoch.
    pub not_before_ms: u64,
    /// `not_after`, ms since the Unix epoch (purge the package after this).
    pub not_after_ms: u64,
    /// Whether the package carries the last_resort extension.
    pub is_last_resort: bool,
    /// The credential identity (`@user:server/DEVICE`).
    pub identity: String,
    /// The package as a TLS-serialised `MLSMessage` (normalised if uploaded bare): store and serve this.
    pub message: Vec<u8>,
}

/// Validates one uploaded key package for device `expected_identity` whose bound Ed25519 key is
/// `bound_signature_key` (raw 32 bytes). `now_ms` is the server clock; `max_lifetime_ms` is
/// `max_key_package_lifetime_ms`; `require_last_resort` is true for the upload's `last_resort`.
///
/// Accepts an `MLSMessage` (wire format `mls_key_package`) or a bare `KeyPackage`. Checks, in
/// order: parses; ciphersuite; signatures and structure (openmls `KeyPackageIn::validate`, which
/// also refuses a package expired or not yet valid by the system clock); lifetime against
/// `now_ms`; BasicCredential identity; signature key; last-resort extension.
pub fn validate_key_package(
    bytes: &[u8],
    expected_identity: &str,
    bound_signature_key: &[u8],
    now_ms: u64,
    max_lifetime_ms: u64,
    require_last_resort: bool,
) -> Result<ValidKeyPackage, KeyPackageError> {
    let kp_in = parse_key_package_in(bytes)?;

    // Look at the ciphersuite before openmls tries to verify with it.
    let suite = key_package_ciphersuite(&kp_in)?;
    if suite != u16::from(CIPHERSUITE) {
        return Err(KeyPackageError::UnsupportedCiphersuite(suite));
    }

    let kp = kp_in
        .validate(crypto(), ProtocolVersion::Mls10)
        .map_err(|e| map_verify_error(e, now_ms))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(KeyPackageError::UnsupportedCiphersuite(u16::from(
            kp.ciphersuite(),
        )));
    }

    let lifetime = kp.life_time();
    let not_before_ms = lifetime.not_before().saturating_mul(1000);
    let not_after_ms = lifetime.not_after().saturating_mul(1000);
    if not_after_ms <= now_ms {
        return Err(KeyPackageError::Expired {
            not_after_ms,
            now_ms,
        });
    }
    if not_before_ms > now_ms.saturating_add(NOT_BEFORE_SKEW_MS) {
        return Err(KeyPackageError::NotYetValid {
            not_before_ms,
            now_ms,
        });
    }
    let lifetime_ms = not_after_ms.saturating_sub(not_before_ms);
    if lifetime_ms > max_lifetime_ms.saturating_add(LIFETIME_SLACK_MS) {
        return Err(KeyPackageError::LifetimeTooLong {
            lifetime_ms,
            max_lifetime_ms,
        });
    }

    let leaf = kp.leaf_node();
    let identity_bytes =
        basic_identity(leaf.credential()).ok_or(KeyPackageError::NotBasicCredential)?;
    if identity_bytes != expected_identity.as_bytes() {
        return Err(KeyPackageError::IdentityMismatch {
            expected: expected_identity.to_owned(),
            found: String::from_utf8_lossy(&identity_bytes).into_owned(),
        });
    }
    if leaf.signature_key().as_slice() != bound_signature_key {
        return Err(KeyPackageError::SignatureKeyMismatch);
    }

    let is_last_resort = kp.last_resort();
    if require_last_resort {
        if !is_last_resort {
            return Err(KeyPackageError::MissingLastResortExtension);
        }
        if !leaf
            .capabilities()
            .extensions()
            .contains(&ExtensionType::LastResort)
        {
            return Err(KeyPackageError::LastResortNotInCapabilities);
        }
    } else if is_last_resort {
        return Err(KeyPackageError::UnexpectedLastResort);
    }

    let hash_ref = kp
        .hash_ref(crypto())
        .map_err(|e| KeyPackageError::Invalid(e.to_string()))?
        .as_slice()
        .to_vec();
    let message = serialize_key_package(kp)?;
    Ok(ValidKeyPackage {
        hash_ref,
        not_before_ms,
        not_after_ms,
        is_last_resort,
        identity: expected_identity.to_owned(),
        message,
    })
}

/// Parses an `MLSMessage` key package, falling back to a bare `KeyPackage`.
fn parse_key_package_in(bytes: &[u8]) -> Result<KeyPackageIn, KeyPackageError> {
    match MlsMessageIn::tls_deserialize_exact(bytes) {
        Ok(msg) => {
            let kind = WireFormatKind::of(&msg);
            match msg.extract() {
                MlsMessageBodyIn::KeyPackage(kp) => Ok(kp),
                _ => Err(KeyPackageError::NotAKeyPackage(kind)),
            }
        }
        Err(mls_error) => {
            // An MLSMessage starts with version 1 and wire format 5 (key package); a bare
            // KeyPackage with version 1 and a ciphersuite. Report the error of what it looks like.
            if bytes.get(..4) == Some(&[0, 1, 0, 5][..]) {
                return Err(KeyPackageError::Malformed(mls_error.to_string()));
            }
            KeyPackageIn::tls_deserialize_exact(bytes)
                .map_err(|e| KeyPackageError::Malformed(e.to_string()))
        }
    }
}

/// Reads the ciphersuite of an unverified key package (`KeyPackageTBS`: version u16, suite u16).
fn key_package_ciphersuite(kp: &KeyPackageIn) -> Result<u16, KeyPackageError> {
    let bytes = kp
        .tls_serialize_detached()
        .map_err(|e| KeyPackageError::Malformed(e.to_string()))?;
    match bytes.get(2..4) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(KeyPackageError::Malformed("key package too short".into())),
    }
}

fn map_verify_error(e: KeyPackageVerifyError, now_ms: u64) -> KeyPackageError {
    match e {
        KeyPackageVerifyError::InvalidSignature
        | KeyPackageVerifyError::InvalidLeafNodeSignature => KeyPackageError::InvalidSignature,
        KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { not_after, .. }) => {
            KeyPackageError::Expired {
                not_after_ms: not_after.saturating_mul(1000),
                now_ms,
            }
        }
        KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { not_before, .. }) => {
            KeyPackageError::NotYetValid {
                not_before_ms: not_before.saturating_mul(1000),
                now_ms,
            }
        }
        other => KeyPackageError::Invalid(other.to_string()),
    }
}

fn serialize_key_package(kp: KeyPackage) -> Result<Vec<u8>, KeyPackageError> {
    MlsMessageOut::from(kp)
        .tls_serialize_detached()
        .map_err(|e| KeyPackageError::Invalid(e.to_string()))
}

/// The identity bytes of a BasicCredential, or `None` for another credential type.
fn basic_identity(credential: &Credential) -> Option<Vec<u8>> {
    if credential.credential_type() != CredentialType::Basic {
        return None;
    }
    BasicCredential::try_from(credential.clone())
        .ok()
        .map(|c| c.identity().to_vec())
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

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
    /// A handshake message whose sender is not a member (external senders are not in v1).
    #[error("handshake messages must come from a group member; external and new-member senders are not supported")]
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

/// The wire format of an `MLSMessage` (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormatKind {
    /// `mls_public_message` (1): signed, not encrypted.
    PublicMessage,
    /// `mls_private_message` (2): encrypted.
    PrivateMessage,
    /// `mls_welcome` (3).
    Welcome,
    /// `mls_group_info` (4).
    GroupInfo,
    /// `mls_key_package` (5).
    KeyPackage,
    /// A wire format this module does not know.
    Other(u16),
}

impl WireFormatKind {
    fn of(msg: &MlsMessageIn) -> Self {
        match msg.wire_format() as u16 {
            1 => Self::PublicMessage,
            2 => Self::PrivateMessage,
            3 => Self::Welcome,
            4 => Self::GroupInfo,
            5 => Self::KeyPackage,
            other => Self::Other(other),
        }
    }
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
    /// Any other proposal type (PSK, ReInit, ExternalInit, GroupContextExtensions, custom…).
    Other {
        /// The RFC 9420 proposal type code.
        proposal_type: u16,
    },
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
}

/// The roster change a commit makes once references are resolved (see [`CommitInfo::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitDelta {
    /// Added members, in the order openmls assigns their leaves.
    pub adds: Vec<AddedMember>,
    /// Removed leaf indices (Removes and SelfRemoves).
    pub removes: Vec<u32>,
    /// Number of Updates (no roster change).
    pub updates: usize,
    /// Proposal type codes of other proposals.
    pub other_proposal_types: Vec<u16>,
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
                ProposalEffect::Remove { leaf } => delta.removes.push(leaf),
                ProposalEffect::SelfRemove => self_removes.push(sender_leaf),
                ProposalEffect::Update => delta.updates += 1,
                ProposalEffect::Other { proposal_type } => {
                    delta.other_proposal_types.push(proposal_type)
                }
            }
        }
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
    /// A key package (use [`validate_key_package`] to check it).
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

/// Rule 2 of DESIGN §3.3: checks a message submitted to group `expected_group_id` as `kind`
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
    if kind.is_handshake() && !matches!(framed.sender, MessageSender::Member(_)) {
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
    let _authenticated_data = VLBytes::tls_deserialize(&mut r).map_err(bad)?;
    let ct = u8::tls_deserialize(&mut r).map_err(bad)?;
    let content_type = ContentKind::from_u8(ct)
        .ok_or_else(|| MessageError::Malformed(format!("unknown content type {ct}")))?;
    let mut info = FramedInfo {
        wire_format: WireFormatKind::PublicMessage,
        group_id: group_id.as_slice().to_vec(),
        epoch,
        content_type,
        sender,
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
            let mut commit = CommitInfo {
                proposals: Vec::with_capacity(proposals.len()),
                adds: Vec::new(),
                removes: Vec::new(),
                updates: 0,
                proposal_refs: Vec::new(),
                other_proposal_types: Vec::new(),
                has_path,
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

fn proposal_effect(p: &ProposalIn) -> Result<ProposalEffect, MessageError> {
    Ok(match p {
        ProposalIn::Add(add) => ProposalEffect::Add(added_member(add)?),
        ProposalIn::Remove(remove) => ProposalEffect::Remove {
            leaf: remove.removed().u32(),
        },
        ProposalIn::Update(_) => ProposalEffect::Update,
        ProposalIn::SelfRemove => ProposalEffect::SelfRemove,
        other => ProposalEffect::Other {
            proposal_type: u16::from(other.proposal_type()),
        },
    })
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

// ---------------------------------------------------------------------------------------------
// Roster (leaf tracking)
// ---------------------------------------------------------------------------------------------

/// Why a commit's roster change was refused (400 `P_INVALID_MESSAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// A Remove names a leaf that is blank or outside the tree.
    #[error("the commit removes leaf {0}, which holds no member")]
    RemoveOfBlankLeaf(u32),
    /// A leaf is removed twice.
    #[error("the commit removes leaf {0} twice")]
    DuplicateRemove(u32),
    /// An Add names a device that stays in (or is added twice to) the group.
    #[error("the commit adds {0}, which is already a member")]
    DuplicateMember(String),
    /// The bundle's declared `adds` are not the commit's Adds.
    #[error("the bundle's adds {declared:?} do not match the commit's adds {actual:?}")]
    AddsMismatch {
        /// Declared in the bundle.
        declared: Vec<String>,
        /// Found in the commit.
        actual: Vec<String>,
    },
    /// The bundle's declared `removes` are not the members the commit removes.
    #[error("the bundle's removes {declared:?} do not match the commit's removes {actual:?}")]
    RemovesMismatch {
        /// Declared in the bundle.
        declared: Vec<String>,
        /// Found in the commit (identities of the removed leaves).
        actual: Vec<String>,
    },
}

/// The hub's view of a group's leaves (DESIGN §3.3 rule 4): `leaves[i]` is the identity
/// (`@user:server/DEVICE`) at leaf `i`, `None` for a blank leaf. Trailing blank leaves are
/// always truncated, so the last leaf is occupied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Identity per leaf index; `None` is a blank leaf.
    pub leaves: Vec<Option<String>>,
}

impl Roster {
    /// A new group's roster: its creator at leaf 0.
    #[cfg(test)]
    pub fn new(creator: impl Into<String>) -> Self {
        Self {
            leaves: vec![Some(creator.into())],
        }
    }

    /// A roster from stored leaves (trailing blanks are truncated).
    pub fn from_leaves(leaves: Vec<Option<String>>) -> Self {
        let mut roster = Self { leaves };
        roster.truncate();
        roster
    }

    /// The leaf index of `identity`, if it is a member.
    pub fn leaf_of(&self, identity: &str) -> Option<u32> {
        self.leaves
            .iter()
            .position(|l| l.as_deref() == Some(identity))
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The member at `leaf`, if that leaf is occupied.
    pub fn identity_at(&self, leaf: u32) -> Option<&str> {
        self.leaves.get(leaf as usize).and_then(|l| l.as_deref())
    }

    /// The members as `(leaf, identity)` in leaf order.
    #[cfg(test)]
    pub fn members(&self) -> Vec<(u32, &str)> {
        self.leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((u32::try_from(i).ok()?, l.as_deref()?)))
            .collect()
    }

    /// Checks that `removes` name distinct occupied leaves and `adds` are distinct devices that
    /// are not members after the removes. Call before [`Roster::apply_commit`].
    pub fn check_commit(&self, removes: &[u32], adds: &[String]) -> Result<(), RosterError> {
        let mut removed = Vec::with_capacity(removes.len());
        for &leaf in removes {
            if self.identity_at(leaf).is_none() {
                return Err(RosterError::RemoveOfBlankLeaf(leaf));
            }
            if removed.contains(&leaf) {
                return Err(RosterError::DuplicateRemove(leaf));
            }
            removed.push(leaf);
        }
        for (i, add) in adds.iter().enumerate() {
            let stays = self
                .leaf_of(add)
                .is_some_and(|leaf| !removed.contains(&leaf));
            if stays || adds[..i].contains(add) {
                return Err(RosterError::DuplicateMember(add.clone()));
            }
        }
        Ok(())
    }

    /// Checks the commit's resolved delta ([`CommitDelta`]) against the bundle's declared
    /// `adds`/`removes` (identities `@user:server/DEVICE`), compared as sets, and with
    /// [`Roster::check_commit`].
    pub fn check_declared(
        &self,
        removes: &[u32],
        adds: &[String],
        declared_removes: &[String],
        declared_adds: &[String],
    ) -> Result<(), RosterError> {
        self.check_commit(removes, adds)?;
        let mut actual_adds = adds.to_vec();
        let mut declared_a = declared_adds.to_vec();
        actual_adds.sort();
        declared_a.sort();
        if actual_adds != declared_a {
            return Err(RosterError::AddsMismatch {
                declared: declared_a,
                actual: actual_adds,
            });
        }
        let mut actual_removes: Vec<String> = removes
            .iter()
            .filter_map(|&l| self.identity_at(l).map(str::to_owned))
            .collect();
        let mut declared_r = declared_removes.to_vec();
        actual_removes.sort();
        declared_r.sort();
        if actual_removes != declared_r {
            return Err(RosterError::RemovesMismatch {
                declared: declared_r,
                actual: actual_removes,
            });
        }
        Ok(())
    }

    /// Applies a commit (RFC 9420 §12.3): Removes blank their leaves, then each Add takes the
    /// leftmost blank leaf or extends the tree; trailing blank leaves are truncated. Returns
    /// `(identity, leaf)` of each added member. Removes of blank or absent leaves are ignored:
    /// call [`Roster::check_commit`] first.
    pub fn apply_commit(&mut self, removes: &[u32], adds: &[String]) -> Vec<(String, u32)> {
        for &leaf in removes {
            if let Some(slot) = self.leaves.get_mut(leaf as usize) {
                *slot = None;
            }
        }
        let mut added = Vec::with_capacity(adds.len());
        for identity in adds {
            // Leftmost blank leaf, or a new leaf at the right edge.
            let index = self
                .leaves
                .iter()
                .position(Option::is_none)
                .unwrap_or(self.leaves.len());
            match self.leaves.get_mut(index) {
                Some(slot) => *slot = Some(identity.clone()),
                None => self.leaves.push(Some(identity.clone())),
            }
            added.push((identity.clone(), u32::try_from(index).unwrap_or(u32::MAX)));
        }
        self.truncate();
        added
    }

    fn truncate(&mut self) {
        while matches!(self.leaves.last(), Some(None)) {
            self.leaves.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    use openmls::prelude::OpenMlsProvider as _;
    use openmls::prelude::{
        Capabilities, CredentialWithKey, GroupId, KeyPackage, LeafNodeIndex, LeafNodeParameters,
        Lifetime, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, ProcessedMessageContent,
        SignatureScheme, StagedWelcome, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY,
        PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
    };
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const MAX_LIFETIME_MS: u64 = 90 * DAY_MS;
    const GROUP_ID: &str = "!testgroup:hub.example";

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn now_s() -> u64 {
        now_ms() / 1000
    }

    struct Device {
        id: String,
        provider: OpenMlsRustCrypto,
        signer: SignatureKeyPair,
        cred: CredentialWithKey,
    }

    fn device(name: &str) -> Device {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        signer.store(provider.storage()).unwrap();
        let id = format!("@{name}:example.org/{}", name.to_uppercase());
        let cred = CredentialWithKey {
            credential: BasicCredential::new(id.clone().into_bytes()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        Device {
            id,
            provider,
            signer,
            cred,
        }
    }

    fn capabilities() -> Capabilities {
        Capabilities::new(
            Some(&[ProtocolVersion::Mls10]),
            Some(&[
                CIPHERSUITE,
                Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
            ]),
            Some(&[ExtensionType::LastResort]),
            Some(&[]),
            Some(&[CredentialType::Basic]),
        )
    }

    impl Device {
        fn key(&self) -> Vec<u8> {
            self.signer.public().to_vec()
        }

        fn build_kp(
            &self,
            suite: Ciphersuite,
            lifetime: Option<Lifetime>,
            last_resort: bool,
        ) -> KeyPackage {
            let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
            if let Some(l) = lifetime {
                builder = builder.key_package_lifetime(l);
            }
            if last_resort {
                builder = builder.mark_as_last_resort();
            }
            builder
                .build(suite, &self.provider, &self.signer, self.cred.clone())
                .unwrap()
                .key_package()
                .clone()
        }

        fn kp(&self) -> KeyPackage {
            self.build_kp(CIPHERSUITE, None, false)
        }

        fn kp_message(&self, kp: KeyPackage) -> Vec<u8> {
            MlsMessageOut::from(kp).tls_serialize_detached().unwrap()
        }
    }

    fn validate(
        dev: &Device,
        bytes: &[u8],
        last_resort: bool,
    ) -> Result<ValidKeyPackage, KeyPackageError> {
        validate_key_package(
            bytes,
            &dev.id,
            &dev.key(),
            now_ms(),
            MAX_LIFETIME_MS,
            last_resort,
        )
    }

    fn ser(msg: &MlsMessageOut) -> Vec<u8> {
        msg.tls_serialize_detached().unwrap()
    }

    // ---------------------------------------------------------------- key packages

    #[test]
    fn valid_key_package_message_passes_with_ref_lifetime_and_normalised_bytes() {
        let alice = device("alice");
        let kp = alice.kp();
        let bytes = alice.kp_message(kp.clone());
        let valid = validate(&alice, &bytes, false).unwrap();
        assert_eq!(
            valid.hash_ref,
            kp.hash_ref(alice.provider.crypto()).unwrap().as_slice()
        );
        assert_eq!(valid.not_after_ms, kp.life_time().not_after() * 1000);
        assert!(valid.not_after_ms > now_ms());
        assert!(!valid.is_last_resort);
        assert_eq!(valid.identity, alice.id);
        assert_eq!(valid.message, bytes);
    }

    #[test]
    fn bare_key_package_is_accepted_and_normalised_to_mls_message() {
        let alice = device("alice");
        let kp = alice.kp();
        let bare = kp.tls_serialize_detached().unwrap();
        let valid = validate(&alice, &bare, false).unwrap();
        assert_eq!(valid.message, alice.kp_message(kp));
    }

    #[test]
    fn key_package_with_wrong_identity_is_refused() {
        let alice = device("alice");
        let bytes = alice.kp_message(alice.kp());
        let err = validate_key_package(
            &bytes,
            "@alice:example.org/OTHERDEVICE",
            &alice.key(),
            now_ms(),
            MAX_LIFETIME_MS,
            false,
        )
        .unwrap_err();
        assert!(
            matches!(err, KeyPackageError::IdentityMismatch { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn key_package_with_unbound_signature_key_is_refused() {
        let alice = device("alice");
        let other = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let bytes = alice.kp_message(alice.kp());
        let err = validate_key_package(
            &bytes,
            &alice.id,
            other.public(),
            now_ms(),
            MAX_LIFETIME_MS,
            false,
        )
        .unwrap_err();
        assert_eq!(err, KeyPackageError::SignatureKeyMismatch);
    }

    #[test]
    fn expired_key_package_is_refused() {
        let alice = device("alice");
        let lifetime = Lifetime::init(now_s() - 2 * 86_400, now_s() - 86_400);
        let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
        let err = validate(&alice, &bytes, false).unwrap_err();
        assert!(matches!(err, KeyPackageError::Expired { .. }), "{err:?}");
    }

    #[test]
    fn key_package_expired_by_the_server_clock_is_refused() {
        let alice = device("alice");
        let bytes = alice.kp_message(alice.kp());
        let later = now_ms() + 200 * DAY_MS;
        let err = validate_key_package(
            &bytes,
            &alice.id,
            &alice.key(),
            later,
            MAX_LIFETIME_MS,
            false,
        )
        .unwrap_err();
        assert!(
            matches!(err, KeyPackageError::Expired { now_ms, .. } if now_ms == later),
            "{err:?}"
        );
    }

    #[test]
    fn key_package_not_yet_valid_by_more_than_the_skew_is_refused() {
        let alice = device("alice");
        // openmls's default not_before is one hour ago; a server clock 2 h behind sees it in
        // the future by more than NOT_BEFORE_SKEW_MS.
        let bytes = alice.kp_message(alice.kp());
        let behind = now_ms() - 2 * 3_600_000;
        let err = validate_key_package(
            &bytes,
            &alice.id,
            &alice.key(),
            behind,
            MAX_LIFETIME_MS,
            false,
        )
        .unwrap_err();
        assert!(
            matches!(err, KeyPackageError::NotYetValid { .. }),
            "{err:?}"
        );
        // Within the skew it passes.
        let slightly_behind = now_ms() - 3_600_000 - 60_000;
        validate_key_package(
            &bytes,
            &alice.id,
            &alice.key(),
            slightly_behind,
            MAX_LIFETIME_MS,
            false,
        )
        .unwrap();
    }

    #[test]
    fn key_package_lifetime_longer_than_maximum_plus_one_hour_is_refused() {
        let alice = device("alice");
        let lifetime = Lifetime::init(now_s() - 3600, now_s() + 90 * 86_400 + 60);
        let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
        let err = validate(&alice, &bytes, false).unwrap_err();
        assert!(
            matches!(err, KeyPackageError::LifetimeTooLong { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn key_package_lifetime_of_exactly_maximum_plus_one_hour_passes() {
        let alice = device("alice");
        // Lifetime::new(t) is [now − 1 h, now + t]: t = max gives max + 1 h.
        let lifetime = Lifetime::new(MAX_LIFETIME_MS / 1000);
        let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
        validate(&alice, &bytes, false).unwrap();
    }

    #[test]
    fn key_package_with_tampered_signature_is_refused() {
        let alice = device("alice");
        let mut bytes = alice.kp_message(alice.kp());
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01; // last byte of the key package signature
        assert_eq!(
            validate(&alice, &bytes, false).unwrap_err(),
            KeyPackageError::InvalidSignature
        );
    }

    #[test]
    fn key_package_with_tampered_payload_is_refused() {
        let alice = device("alice");
        let mut bytes = alice.kp_message(alice.kp());
        bytes[10] ^= 0x01; // inside the init key
        let err = validate(&alice, &bytes, false).unwrap_err();
        assert_eq!(err, KeyPackageError::InvalidSignature);
    }

    #[test]
    fn garbage_and_empty_key_packages_are_refused_as_malformed() {
        let alice = device("alice");
        for bytes in [
            &b""[..],
            b"\x00",
            b"hello world, not a key package",
            &[0, 1, 0, 5, 0xff],
        ] {
            let err = validate(&alice, bytes, false).unwrap_err();
            assert!(matches!(err, KeyPackageError::Malformed(_)), "{err:?}");
        }
    }

    #[test]
    fn every_truncated_key_package_is_refused_without_panic() {
        let alice = device("alice");
        let bytes = alice.kp_message(alice.kp());
        for len in 0..bytes.len() {
            assert!(
                validate(&alice, &bytes[..len], false).is_err(),
                "prefix {len}"
            );
        }
        let bare = alice.kp().tls_serialize_detached().unwrap();
        for len in 0..bare.len() {
            assert!(
                validate(&alice, &bare[..len], false).is_err(),
                "bare prefix {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            validate(&alice, &trailing, false),
            Err(KeyPackageError::Malformed(_))
        ));
    }

    #[test]
    fn key_package_with_other_ciphersuite_is_refused() {
        let alice = device("alice");
        let suite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
        let bytes = alice.kp_message(alice.build_kp(suite, None, false));
        assert_eq!(
            validate(&alice, &bytes, false).unwrap_err(),
            KeyPackageError::UnsupportedCiphersuite(0x0003)
        );
    }

    #[test]
    fn last_resort_key_package_is_detected_and_required_where_declared() {
        let alice = device("alice");
        let last_resort = alice.kp_message(alice.build_kp(CIPHERSUITE, None, true));
        let ordinary = alice.kp_message(alice.kp());

        let valid = validate(&alice, &last_resort, true).unwrap();
        assert!(valid.is_last_resort);
        assert_eq!(
            validate(&alice, &last_resort, false).unwrap_err(),
            KeyPackageError::UnexpectedLastResort
        );
        assert_eq!(
            validate(&alice, &ordinary, true).unwrap_err(),
            KeyPackageError::MissingLastResortExtension
        );
    }

    #[test]
    fn other_mls_messages_are_not_key_packages() {
        let alice = device("alice");
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let msg = group
            .create_message(&alice.provider, &alice.signer, b"hello")
            .unwrap();
        assert_eq!(
            validate(&alice, &ser(&msg), false).unwrap_err(),
            KeyPackageError::NotAKeyPackage(WireFormatKind::PrivateMessage)
        );
    }

    // ---------------------------------------------------------------- groups and messages

    fn create_group(alice: &Device, policy: openmls::prelude::WireFormatPolicy) -> MlsGroup {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(policy)
            .use_ratchet_tree_extension(true)
            .capabilities(capabilities())
            .build();
        MlsGroup::new_with_group_id(
            &alice.provider,
            &alice.signer,
            &config,
            GroupId::from_slice(GROUP_ID.as_bytes()),
            alice.cred.clone(),
        )
        .unwrap()
    }

    fn join(dev: &Device, welcome: &[u8]) -> MlsGroup {
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome)
            .unwrap()
            .extract()
        else {
            panic!("not a welcome")
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        StagedWelcome::new_from_welcome(&dev.provider, &config, welcome, None)
            .unwrap()
            .into_group(&dev.provider)
            .unwrap()
    }

    fn process(group: &mut MlsGroup, dev: &Device, bytes: &[u8]) -> ProcessedMessageContent {
        let protocol = MlsMessageIn::tls_deserialize_exact(bytes)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        group
            .process_message(&dev.provider, protocol)
            .unwrap()
            .into_content()
    }

    fn process_commit(group: &mut MlsGroup, dev: &Device, bytes: &[u8]) {
        match process(group, dev, bytes) {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group.merge_staged_commit(&dev.provider, *staged).unwrap()
            }
            _ => panic!("not a commit"),
        }
    }

    fn openmls_leaves(group: &MlsGroup) -> Vec<(u32, String)> {
        group
            .members()
            .map(|m| {
                let id = BasicCredential::try_from(m.credential).unwrap();
                (
                    m.index.u32(),
                    String::from_utf8(id.identity().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn roster_leaves(roster: &Roster) -> Vec<(u32, String)> {
        roster
            .members()
            .into_iter()
            .map(|(l, id)| (l, id.to_owned()))
            .collect()
    }

    /// What the hub does with a commit bundle: rule 2 envelope, resolve, rule 4 check, apply.
    fn hub_commit(
        roster: &mut Roster,
        stored: &HashMap<Vec<u8>, StoredProposal>,
        commit: &[u8],
        epoch: u64,
        declared_adds: &[&Device],
        declared_removes: &[&Device],
    ) -> (CommitInfo, CommitDelta, Vec<(String, u32)>) {
        let info = inspect_message(commit).unwrap();
        let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap();
        assert_eq!(framed.epoch, epoch);
        let MessageSender::Member(committer) = framed.sender else {
            panic!("committer not a member")
        };
        let commit_info = framed.commit.clone().unwrap();
        let delta = commit_info
            .resolve(committer, |r| stored.get(r).cloned())
            .unwrap();
        let adds = delta.add_identities();
        let declared_a: Vec<String> = declared_adds.iter().map(|d| d.id.clone()).collect();
        let declared_r: Vec<String> = declared_removes.iter().map(|d| d.id.clone()).collect();
        roster
            .check_declared(&delta.removes, &adds, &declared_r, &declared_a)
            .unwrap();
        let added = roster.apply_commit(&delta.removes, &adds);
        (commit_info, delta, added)
    }

    #[test]
    fn commit_deltas_and_roster_leaf_indices_agree_with_openmls() {
        let alice = device("alice");
        let [bob, carol, dave, erin, frank, gina] =
            ["bob", "carol", "dave", "erin", "frank", "gina"].map(device);
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let mut roster = Roster::new(alice.id.clone());
        let mut stored: HashMap<Vec<u8>, StoredProposal> = HashMap::new();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 0: add bob and carol.
        let (commit, welcome, group_info) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp(), carol.kp()])
            .unwrap();
        let (info, delta, added) =
            hub_commit(&mut roster, &stored, &ser(&commit), 0, &[&bob, &carol], &[]);
        assert_eq!(
            delta.add_identities(),
            vec![bob.id.clone(), carol.id.clone()]
        );
        assert_eq!(info.adds[0].signature_key, bob.key());
        assert!(info.removes.is_empty() && info.proposal_refs.is_empty());
        assert_eq!(added, vec![(bob.id.clone(), 1), (carol.id.clone(), 2)]);
        let welcome_info = inspect_welcome(&ser(&welcome)).unwrap();
        assert_eq!(welcome_info.ciphersuite, 0x0001);
        check_welcome(&welcome_info, &delta.adds).unwrap();
        let gi = inspect_group_info(&ser(&MlsMessageOut::from(group_info.unwrap()))).unwrap();
        assert_eq!((gi.group_id.as_slice(), gi.epoch), (GROUP_ID.as_bytes(), 1));
        let framed_commit = inspect_message(&ser(&commit))
            .unwrap()
            .framed()
            .cloned()
            .unwrap();
        check_group_info(&gi, &framed_commit).unwrap();
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 1: remove bob (leaf 1) — a blank leaf in the middle.
        let (commit, _, _) = group
            .remove_members(&alice.provider, &alice.signer, &[LeafNodeIndex::new(1)])
            .unwrap();
        let (info, _, _) = hub_commit(&mut roster, &stored, &ser(&commit), 1, &[], &[&bob]);
        assert_eq!(info.removes, vec![1]);
        assert!(info.has_path);
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(
            roster.leaves,
            vec![Some(alice.id.clone()), None, Some(carol.id.clone())]
        );
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 2: add dave, who takes the blank leaf 1; dave joins.
        let (commit, welcome, _) = group
            .add_members(&alice.provider, &alice.signer, &[dave.kp()])
            .unwrap();
        let (_, _, added) = hub_commit(&mut roster, &stored, &ser(&commit), 2, &[&dave], &[]);
        assert_eq!(added, vec![(dave.id.clone(), 1)]);
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));
        let mut dave_group = join(&dave, &ser(&welcome));

        // Epoch 3: remove carol, the last leaf: the tree is truncated.
        let (commit, _, _) = group
            .remove_members(&alice.provider, &alice.signer, &[LeafNodeIndex::new(2)])
            .unwrap();
        hub_commit(&mut roster, &stored, &ser(&commit), 3, &[], &[&carol]);
        group.merge_pending_commit(&alice.provider).unwrap();
        process_commit(&mut dave_group, &dave, &ser(&commit));
        assert_eq!(roster.leaves.len(), 2);
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 4: add erin and frank: they extend the tree at 2 and 3.
        let (commit, _, _) = group
            .add_members(&alice.provider, &alice.signer, &[erin.kp(), frank.kp()])
            .unwrap();
        let (_, _, added) = hub_commit(
            &mut roster,
            &stored,
            &ser(&commit),
            4,
            &[&erin, &frank],
            &[],
        );
        assert_eq!(added, vec![(erin.id.clone(), 2), (frank.id.clone(), 3)]);
        group.merge_pending_commit(&alice.provider).unwrap();
        process_commit(&mut dave_group, &dave, &ser(&commit));
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 5: dave leaves (a Remove proposal of his own leaf); alice commits it by reference.
        let leave = ser(&dave_group
            .leave_group(&dave.provider, &dave.signer)
            .unwrap());
        let leave_info = inspect_message(&leave).unwrap();
        let framed =
            check_envelope(&leave_info, GROUP_ID.as_bytes(), ContentKind::Proposal).unwrap();
        assert_eq!((framed.epoch, framed.sender), (5, MessageSender::Member(1)));
        assert_eq!(
            framed.proposal.as_ref().unwrap().effect,
            ProposalEffect::Remove { leaf: 1 }
        );
        let (leave_ref, leave_stored) = framed.stored_proposal().unwrap();
        stored.insert(leave_ref.clone(), leave_stored);
        match process(&mut group, &alice, &leave) {
            ProcessedMessageContent::ProposalMessage(p) => {
                group
                    .store_pending_proposal(alice.provider.storage(), *p)
                    .unwrap();
            }
            _ => panic!("not a proposal"),
        }
        let (commit, _, _) = group
            .commit_to_pending_proposals(&alice.provider, &alice.signer)
            .unwrap();
        let (info, delta, _) = hub_commit(&mut roster, &stored, &ser(&commit), 5, &[], &[&dave]);
        assert_eq!(info.proposal_refs, vec![leave_ref]);
        assert_eq!(delta.removes, vec![1]);
        stored.clear(); // proposals live for one epoch
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 6: alice proposes removing frank (the last leaf) and commits her own proposal.
        let (proposal, proposal_ref) = group
            .propose_remove_member(&alice.provider, &alice.signer, LeafNodeIndex::new(3))
            .unwrap();
        let proposal_info = inspect_message(&ser(&proposal)).unwrap();
        let framed = proposal_info.framed().unwrap();
        assert_eq!(
            framed.proposal.as_ref().unwrap().proposal_ref,
            proposal_ref.as_slice()
        );
        let (r, s) = framed.stored_proposal().unwrap();
        stored.insert(r, s);
        let (commit, _, _) = group
            .commit_to_pending_proposals(&alice.provider, &alice.signer)
            .unwrap();
        let (info, delta, _) = hub_commit(&mut roster, &stored, &ser(&commit), 6, &[], &[&frank]);
        assert_eq!(
            info.proposal_refs.len(),
            1,
            "own pending proposals are committed by reference"
        );
        assert_eq!(delta.removes, vec![3]);
        stored.clear();
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(
            roster.leaves,
            vec![Some(alice.id.clone()), None, Some(erin.id.clone())]
        );
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 7: add gina, who takes blank leaf 1.
        let (commit, _, _) = group
            .add_members(&alice.provider, &alice.signer, &[gina.kp()])
            .unwrap();
        let (_, _, added) = hub_commit(&mut roster, &stored, &ser(&commit), 7, &[&gina], &[]);
        assert_eq!(added, vec![(gina.id.clone(), 1)]);
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

        // Epoch 8: a self-update changes no leaf.
        let bundle = group
            .self_update(
                &alice.provider,
                &alice.signer,
                LeafNodeParameters::default(),
            )
            .unwrap();
        let (info, delta, added) =
            hub_commit(&mut roster, &stored, &ser(bundle.commit()), 8, &[], &[]);
        assert!(info.has_path && info.proposals.is_empty() && added.is_empty());
        assert_eq!(delta, CommitDelta::default());
        group.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(roster_leaves(&roster), openmls_leaves(&group));
        assert_eq!(group.epoch().as_u64(), 9);
    }

    #[test]
    fn application_message_is_a_private_message_with_clear_group_id_epoch_and_type() {
        let alice = device("alice");
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let msg = ser(&group
            .create_message(&alice.provider, &alice.signer, b"hi")
            .unwrap());
        let info = inspect_message(&msg).unwrap();
        let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Application).unwrap();
        assert_eq!(framed.wire_format, WireFormatKind::PrivateMessage);
        assert_eq!(framed.epoch, 0);
        assert_eq!(framed.sender, MessageSender::Hidden);
        assert!(framed.commit.is_none() && framed.proposal.is_none());
        assert_eq!(
            check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
            MessageError::ContentTypeMismatch {
                expected: ContentKind::Commit,
                found: ContentKind::Application
            }
        );
        assert_eq!(
            check_envelope(&info, b"!other:hub.example", ContentKind::Application).unwrap_err(),
            MessageError::GroupIdMismatch
        );
    }

    #[test]
    fn proposal_message_gives_group_id_epoch_type_sender_and_effect() {
        let alice = device("alice");
        let bob = device("bob");
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let (proposal, proposal_ref) = group
            .propose_add_member(&alice.provider, &alice.signer, &bob.kp())
            .unwrap();
        let info = inspect_message(&ser(&proposal)).unwrap();
        let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Proposal).unwrap();
        assert_eq!((framed.epoch, framed.sender), (0, MessageSender::Member(0)));
        let p = framed.proposal.as_ref().unwrap();
        assert_eq!(p.proposal_ref, proposal_ref.as_slice());
        let ProposalEffect::Add(added) = &p.effect else {
            panic!("not an add")
        };
        assert_eq!(added.identity, bob.id);
        assert_eq!(
            check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
            MessageError::ContentTypeMismatch {
                expected: ContentKind::Commit,
                found: ContentKind::Proposal
            }
        );
    }

    #[test]
    fn encrypted_commit_is_read_from_the_clear_header_and_refused_by_rule_two() {
        let alice = device("alice");
        let bob = device("bob");
        let mut group = create_group(&alice, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY);
        let (commit, _, _) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp()])
            .unwrap();
        let info = inspect_message(&ser(&commit)).unwrap();
        let framed = info.framed().unwrap();
        assert_eq!(framed.wire_format, WireFormatKind::PrivateMessage);
        assert_eq!(framed.content_type, ContentKind::Commit);
        assert_eq!(framed.group_id, GROUP_ID.as_bytes());
        assert_eq!(
            check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
            MessageError::DisallowedWireFormat {
                content: ContentKind::Commit,
                required: WireFormatKind::PublicMessage,
                found: WireFormatKind::PrivateMessage
            }
        );
    }

    #[test]
    fn welcome_and_group_info_are_not_accepted_as_group_messages() {
        let alice = device("alice");
        let bob = device("bob");
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let (commit, welcome, gi) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp()])
            .unwrap();
        let welcome_info = inspect_message(&ser(&welcome)).unwrap();
        assert_eq!(welcome_info.wire_format(), WireFormatKind::Welcome);
        assert!(matches!(
            check_envelope(&welcome_info, GROUP_ID.as_bytes(), ContentKind::Commit),
            Err(MessageError::WrongWireFormat { .. })
        ));
        assert!(matches!(
            inspect_group_info(&ser(&welcome)),
            Err(MessageError::WrongWireFormat { .. })
        ));
        assert!(matches!(
            inspect_welcome(&ser(&commit)),
            Err(MessageError::WrongWireFormat { .. })
        ));
        let kp_info = inspect_message(&bob.kp_message(bob.kp())).unwrap();
        assert_eq!(kp_info, MessageInfo::KeyPackage);
        // A group info of the wrong epoch does not belong to the commit.
        let gi = inspect_group_info(&ser(&MlsMessageOut::from(gi.unwrap()))).unwrap();
        let mut framed = inspect_message(&ser(&commit))
            .unwrap()
            .framed()
            .cloned()
            .unwrap();
        framed.epoch = 5;
        assert_eq!(
            check_group_info(&gi, &framed).unwrap_err(),
            MessageError::GroupInfoEpochMismatch {
                expected: 6,
                found: 1
            }
        );
    }

    #[test]
    fn welcome_for_other_key_packages_than_the_commit_adds_is_refused() {
        let alice = device("alice");
        let [bob, carol] = ["bob", "carol"].map(device);
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let (commit, _, _) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp()])
            .unwrap();
        let info = inspect_message(&ser(&commit)).unwrap();
        let adds = info.framed().unwrap().commit.as_ref().unwrap().adds.clone();
        group
            .clear_pending_commit(alice.provider.storage())
            .unwrap();
        let (_, other_welcome, _) = group
            .add_members(&alice.provider, &alice.signer, &[carol.kp()])
            .unwrap();
        let welcome = inspect_welcome(&ser(&other_welcome)).unwrap();
        assert_eq!(
            check_welcome(&welcome, &adds).unwrap_err(),
            MessageError::WelcomeRecipientsMismatch
        );
    }

    #[test]
    fn declared_adds_or_removes_that_disagree_with_the_commit_are_refused() {
        let alice = device("alice");
        let [bob, carol] = ["bob", "carol"].map(device);
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let (commit, _, _) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp()])
            .unwrap();
        let info = inspect_message(&ser(&commit)).unwrap();
        let delta = info
            .framed()
            .unwrap()
            .commit
            .as_ref()
            .unwrap()
            .resolve(0, |_| None)
            .unwrap();
        let roster = Roster::new(alice.id.clone());
        let adds = delta.add_identities();
        assert!(matches!(
            roster.check_declared(&delta.removes, &adds, &[], std::slice::from_ref(&carol.id)),
            Err(RosterError::AddsMismatch { .. })
        ));
        assert!(matches!(
            roster.check_declared(
                &delta.removes,
                &adds,
                std::slice::from_ref(&alice.id),
                std::slice::from_ref(&bob.id)
            ),
            Err(RosterError::RemovesMismatch { .. })
        ));
        roster
            .check_declared(&delta.removes, &adds, &[], std::slice::from_ref(&bob.id))
            .unwrap();
        // Adding a device that is already a member is refused.
        assert_eq!(
            roster
                .check_commit(&[], std::slice::from_ref(&alice.id))
                .unwrap_err(),
            RosterError::DuplicateMember(alice.id.clone())
        );
        assert_eq!(
            roster.check_commit(&[4], &[]).unwrap_err(),
            RosterError::RemoveOfBlankLeaf(4)
        );
    }

    #[test]
    fn commit_with_unknown_proposal_reference_is_refused() {
        let alice = device("alice");
        let bob = device("bob");
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        group
            .propose_add_member(&alice.provider, &alice.signer, &bob.kp())
            .unwrap();
        let (commit, _, _) = group
            .commit_to_pending_proposals(&alice.provider, &alice.signer)
            .unwrap();
        let info = inspect_message(&ser(&commit)).unwrap();
        let commit_info = info.framed().unwrap().commit.clone().unwrap();
        assert_eq!(commit_info.proposal_refs.len(), 1);
        assert!(matches!(
            commit_info.resolve(0, |_| None),
            Err(MessageError::UnknownProposalRef(_))
        ));
    }

    #[test]
    fn commit_removing_its_committer_is_refused() {
        let commit = CommitInfo {
            proposals: vec![CommittedProposal::Reference(vec![1, 2, 3])],
            adds: vec![],
            removes: vec![],
            updates: 0,
            proposal_refs: vec![vec![1, 2, 3]],
            other_proposal_types: vec![],
            has_path: true,
        };
        let stored = StoredProposal {
            sender_leaf: 2,
            effect: ProposalEffect::Remove { leaf: 0 },
        };
        assert_eq!(
            commit.resolve(0, |_| Some(stored.clone())).unwrap_err(),
            MessageError::CommitterRemoved(0)
        );
        let self_remove = StoredProposal {
            sender_leaf: 2,
            effect: ProposalEffect::SelfRemove,
        };
        assert_eq!(
            commit
                .resolve(0, |_| Some(self_remove.clone()))
                .unwrap()
                .removes,
            vec![2]
        );
    }

    #[test]
    fn truncated_garbage_or_corrupted_messages_give_errors_never_panics() {
        let alice = device("alice");
        let [bob, carol] = ["bob", "carol"].map(device);
        let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
        let (commit, welcome, gi) = group
            .add_members(&alice.provider, &alice.signer, &[bob.kp(), carol.kp()])
            .unwrap();
        group.merge_pending_commit(&alice.provider).unwrap();
        let app = group
            .create_message(&alice.provider, &alice.signer, b"x")
            .unwrap();
        let (proposal, _) = group
            .propose_remove_member(&alice.provider, &alice.signer, LeafNodeIndex::new(1))
            .unwrap();
        let samples = [
            ser(&commit),
            ser(&welcome),
            ser(&MlsMessageOut::from(gi.unwrap())),
            ser(&proposal),
            ser(&app),
        ];
        for bytes in &samples {
            inspect_message(bytes).unwrap();
            for len in 0..bytes.len() {
                assert!(
                    inspect_message(&bytes[..len]).is_err(),
                    "prefix {len} parsed"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(inspect_message(&longer).is_err());
        }
        // Corrupting any single byte must not panic (the result may still parse).
        let kp = bob.kp_message(bob.kp());
        for bytes in samples.iter().chain([&kp]) {
            for i in 0..bytes.len() {
                for mask in [0xff, 0x80, 0x01] {
                    let mut corrupted = bytes.clone();
                    corrupted[i] ^= mask;
                    let _ = inspect_message(&corrupted);
                }
            }
        }
        for i in 0..kp.len() {
            let mut corrupted = kp.clone();
            corrupted[i] ^= 0xff;
            let _ = validate(&bob, &corrupted, false);
        }
        for garbage in [
            &b""[..],
            b"\x00\x01",
            b"\x00\x01\x00\x01\xff\xff\xff\xff",
            b"garbage",
        ] {
            assert!(matches!(
                inspect_message(garbage),
                Err(MessageError::Malformed(_))
            ));
        }
    }

    #[test]
    fn roster_apply_commit_blanks_fills_leftmost_and_truncates() {
        let mut roster = Roster::new("a");
        let added = roster.apply_commit(&[], &["b".into(), "c".into(), "d".into()]);
        assert_eq!(
            added,
            vec![("b".into(), 1), ("c".into(), 2), ("d".into(), 3)]
        );
        assert!(roster.apply_commit(&[1, 3], &[]).is_empty());
        assert_eq!(
            roster.leaves,
            vec![Some("a".into()), None, Some("c".into())]
        );
        let added = roster.apply_commit(&[2], &["e".into(), "f".into()]);
        assert_eq!(added, vec![("e".into(), 1), ("f".into(), 2)]);
        assert_eq!(roster.leaf_of("f"), Some(2));
        assert_eq!(roster.identity_at(1), Some("e"));
        assert_eq!(
            Roster::from_leaves(vec![Some("a".into()), None, None])
                .leaves
                .len(),
            1
        );
    }
}
