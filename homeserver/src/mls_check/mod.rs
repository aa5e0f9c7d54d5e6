//! Server-side MLS validation for the hub (docs/protocol.md#hub-rules).
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
//! The checks are in three modules below this one: [`key_package`] (uploaded key packages),
//! [`message`] (`MLSMessage`s, Welcomes, GroupInfos and commit bundles) and [`roster`] (leaf
//! tracking). This module holds what they share (the ciphersuite, the crypto provider, the wire
//! format, credential identities) and re-exports their public items, which callers name as
//! `crate::mls_check::…`.
//!
//! Accepted encodings: every MLS structure is a TLS-serialised `MLSMessage` (docs/protocol.md#errors); key
//! packages are also accepted bare (a TLS-serialised `KeyPackage`), and
//! [`ValidKeyPackage::message`] always gives the `MLSMessage` form to store and hand out.

use std::sync::OnceLock;

use openmls::prelude::{BasicCredential, Ciphersuite, Credential, CredentialType, MlsMessageIn};
use openmls_rust_crypto::RustCrypto;

mod key_package;
mod message;
mod roster;
#[cfg(test)]
mod tests;

// What the rest of the homeserver names.
pub use key_package::validate_key_package;
pub use message::{
    check_envelope, check_group_info, check_welcome, inspect_group_info, inspect_message,
    inspect_welcome, ContentKind, FramedInfo, MessageSender, StoredProposal,
};
pub use roster::Roster;
// The other public items: the types of the signatures above, which the homeserver only lets
// flow through, and the limits. The tests and the fuzz target (fuzz/fuzz_targets/mls_check.rs)
// name them here, at the `crate::mls_check::` paths they have always had.
#[allow(unused_imports)]
pub use self::{
    key_package::{KeyPackageError, ValidKeyPackage, LIFETIME_SLACK_MS, NOT_BEFORE_SKEW_MS},
    message::{
        AddedMember, CommitDelta, CommitInfo, CommittedProposal, ContextChange, GroupInfoSummary,
        MessageError, MessageInfo, PathLeaf, ProposalEffect, ProposalInfo, WelcomeInfo,
    },
    roster::RosterError,
};

/// The only ciphersuite Parley v1 accepts (docs/protocol.md#mls-rules).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// A crypto provider shared by all calls (hashing and signature verification only; its RNG is
/// seeded once and never used here).
fn crypto() -> &'static RustCrypto {
    static CRYPTO: OnceLock<RustCrypto> = OnceLock::new();
    CRYPTO.get_or_init(RustCrypto::default)
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

/// The identity bytes of a BasicCredential, or `None` for another credential type.
fn basic_identity(credential: &Credential) -> Option<Vec<u8>> {
    if credential.credential_type() != CredentialType::Basic {
        return None;
    }
    BasicCredential::try_from(credential.clone())
        .ok()
        .map(|c| c.identity().to_vec())
}
