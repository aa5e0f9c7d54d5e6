//! What the engine hands back to the app: commit bundles, outgoing messages, events.

use serde::{Deserialize, Serialize};

use crate::device_ref::DeviceRef;
use crate::trust::{KeyChange, TrustState};

/// A commit to submit with `POST /groups/{id}/commit` (docs/protocol.md#client-server-api), all MLS values as
/// TLS-serialised `MLSMessage` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitBundle {
    /// The commit (a `PublicMessage`).
    pub commit: Vec<u8>,
    /// Welcome for the added devices, if any were added.
    pub welcome: Option<Vec<u8>>,
    /// Group info of the new epoch, ratchet tree included.
    pub group_info: Option<Vec<u8>>,
    /// Devices the commit adds, in commit order.
    pub adds: Vec<DeviceRef>,
    /// Devices the commit removes.
    pub removes: Vec<DeviceRef>,
    /// The epoch the commit is sent in (the new epoch is `epoch + 1`).
    pub epoch: u64,
    /// Key changes seen among the added devices (they block encryption until acknowledged).
    pub key_changes: Vec<KeyChange>,
}

/// An encrypted application message to submit with `PUT /groups/{id}/send/{txn_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The `PrivateMessage` as an `MLSMessage`.
    pub message: Vec<u8>,
    /// The UUID v4 in the AAD (a good `txn_id` too).
    pub msg_id: String,
    /// The AAD timestamp (ms).
    pub ts: u64,
    /// The epoch it was encrypted in.
    pub epoch: u64,
}

/// The hub's delivery wrapper of a message (the sync message object, docs/protocol.md#wire-details).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    /// Device the hub says submitted the message.
    pub sender: Option<DeviceRef>,
    /// The MLS epoch the hub read from the message.
    pub epoch: u64,
    /// Hub acceptance time (ms).
    pub ts: u64,
    /// For commits: the devices the submitter declared added.
    #[serde(default)]
    pub adds: Vec<DeviceRef>,
    /// For commits: the devices the submitter declared removed.
    #[serde(default)]
    pub removes: Vec<DeviceRef>,
}

/// The kind of a standalone proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalKind {
    /// Add a device.
    Add,
    /// Remove a device.
    Remove,
    /// Update the sender's leaf.
    Update,
    /// Anything else.
    Other,
}

/// Something that happened while processing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A decrypted application message.
    ApplicationMessage {
        /// The sending device (from its MLS credential).
        sender: DeviceRef,
        /// The plaintext.
        plaintext: Vec<u8>,
        /// The AAD `msg_id`.
        msg_id: String,
        /// The AAD `ts` (sender's clock).
        ts: u64,
        /// Epoch it was sent in.
        epoch: u64,
    },
    /// Another member's commit was validated and merged.
    CommitApplied {
        /// The committer.
        committer: DeviceRef,
        /// The new epoch.
        epoch: u64,
        /// Devices added.
        added: Vec<DeviceRef>,
        /// Devices removed.
        removed: Vec<DeviceRef>,
        /// Devices whose leaf was updated (the committer included when it sent a path).
        updated: Vec<DeviceRef>,
        /// Epoch authenticator of the new epoch (compare across members to detect forks).
        epoch_authenticator: Vec<u8>,
    },
    /// This device's own pending commit was accepted and merged.
    OwnCommitConfirmed {
        /// The new epoch.
        epoch: u64,
        /// Epoch authenticator of the new epoch.
        epoch_authenticator: Vec<u8>,
    },
    /// This device's pending commit lost to another commit for the same epoch and was
    /// discarded; the app should rebuild it on the new epoch if still wanted.
    PendingCommitDiscarded {
        /// Epoch the discarded commit was for.
        epoch: u64,
    },
    /// A standalone proposal was stored, to be covered by a later commit.
    ProposalStored {
        /// The proposer.
        sender: DeviceRef,
        /// What it proposes.
        kind: ProposalKind,
    },
    /// A device's signature key differs from its TOFU pin; encryption to groups with that
    /// device is refused until [`crate::Engine::acknowledge_key_change`].
    KeyChangeDetected(KeyChange),
    /// This device was removed from the group.
    RemovedFromGroup {
        /// The epoch in which it was removed.
        epoch: u64,
    },
}

/// One member of a group as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// `@localpart:server`.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
    /// Leaf index in the ratchet tree.
    pub leaf_index: u32,
    /// Raw Ed25519 signature key.
    pub signature_key: Vec<u8>,
    /// Fingerprint of the signature key.
    pub fingerprint: String,
    /// Trust state of the device (`None` if it was never pinned).
    pub trust: Option<TrustState>,
}

/// The result of joining a group from a Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The group id `!opaque:server`.
    pub group_id: String,
    /// The epoch joined at.
    pub epoch: u64,
    /// The members at that epoch.
    pub members: Vec<MemberInfo>,
    /// The device that signed the Welcome (the committer who added us), from the group's
    /// own tree: never from the server's envelope.
    pub welcome_sender: Option<DeviceRef>,
    /// Key changes seen among the members.
    pub events: Vec<Event>,
}
