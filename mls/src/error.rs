//! The crate's single error type.

use crate::device_ref::DeviceRef;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    /// A user id, device id or credential identity is not well-formed (docs/protocol.md#identifiers).
    #[error("invalid identifier: {0}")]
    InvalidIdentifier(String),
    /// Bytes that should have been an MLS structure could not be parsed or validated.
    #[error("invalid MLS message: {0}")]
    InvalidMessage(String),
    /// A key package could not be parsed or failed validation.
    #[error("invalid key package at index {index}: {reason}")]
    InvalidKeyPackage {
        /// Position of the bad package in the input.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// The engine has no group with this id.
    #[error("unknown group")]
    UnknownGroup,
    /// A group with this id already exists in this engine.
    #[error("group already exists")]
    GroupExists,
    /// A member's credential does not match what its server publishes for the device.
    #[error("credential of {device} refused: {reason}")]
    CredentialRefused {
        /// The device named by the credential.
        device: String,
        /// Why it was refused.
        reason: String,
    },
    /// The delivering envelope disagrees with the MLS message (epoch, sender, adds/removes).
    #[error("envelope does not match the message: {0}")]
    EnvelopeMismatch(String),
    /// The application message's AAD is malformed or disagrees with the message / envelope.
    #[error("bad authenticated data: {0}")]
    BadAad(String),
    /// This `msg_id` was already seen in the group.
    #[error("replayed message id {0}")]
    Replay(String),
    /// The message's `ts` is more than the allowed skew after the envelope's `ts`.
    #[error("message timestamp too far in the future")]
    TimestampSkew,
    /// A message for an epoch this member no longer (or not yet) holds secrets for.
    #[error("message epoch {message_epoch} is not usable at group epoch {group_epoch}")]
    WrongEpoch {
        /// Epoch of the message.
        message_epoch: u64,
        /// Current epoch of the group.
        group_epoch: u64,
    },
    /// An application message more than `maximum_forward_distance` generations ahead of what
    /// this member last saw from its sender (the sender ratchet would have to skip that far).
    #[error("message is beyond maximum_forward_distance of its sender's ratchet")]
    TooFarAhead,
    /// A message of this device's own epoch that it cannot read carries another fork check
    /// than its own: this device's state of the group differs from the sender's
    /// (docs/protocol.md#fork-recovery). Recover by re-add or rejoin.
    #[error("this device's state of the group forked from the sender's at epoch {epoch}")]
    ForkDetected {
        /// The epoch both claim to be in.
        epoch: u64,
    },
    /// The operation needs the group's pending commit to be confirmed or discarded first.
    #[error("the group has a pending commit")]
    PendingCommit,
    /// `confirm_pending_commit` / `discard_pending_commit` without a pending commit.
    #[error("the group has no pending commit")]
    NoPendingCommit,
    /// A member device's key changed and the change was not acknowledged yet.
    #[error("key change for {0} not acknowledged")]
    KeyChangeUnacknowledged(DeviceRef),
    /// A device is not a member of the group.
    #[error("{0} is not a member of the group")]
    NotMember(DeviceRef),
    /// This device is no longer a member of the group.
    #[error("this device is no longer a member of the group")]
    Evicted,
    /// The exported state blob is malformed or of an unknown version.
    #[error("invalid state blob: {0}")]
    InvalidState(String),
    /// The vault blob is malformed (bad magic, version, header or length).
    #[error("malformed vault: {0}")]
    VaultFormat(String),
    /// The passphrase is wrong or the vault was tampered with (AES-GCM tag mismatch).
    #[error("wrong passphrase or tampered vault")]
    VaultDecrypt,
    /// An attachment key, nonce prefix, hash or descriptor is malformed (length, base64, version).
    #[error("malformed attachment parameters: {0}")]
    AttachmentFormat(String),
    /// The attachment's ciphertext does not hash to the SHA-256 its descriptor names: the file
    /// was modified or corrupted on the way (checked before any decryption).
    #[error("attachment hash mismatch: the file was modified or corrupted")]
    AttachmentHashMismatch,
    /// The attachment does not decrypt: wrong key, or a chunk was altered, dropped, reordered or
    /// added (AES-GCM tag mismatch, missing final chunk, trailing bytes).
    #[error("attachment cannot be decrypted (wrong key or corrupted): {0}")]
    AttachmentCorrupt(String),
    /// Bytes a server asked this device to sign for login that are not a login challenge of
    /// the expected server for this device.
    #[error("refused to sign: {0}")]
    LoginChallenge(String),
    /// A commit the group's roles allow only an admin to make (docs/protocol.md#group-roles).
    #[error("{0}")]
    NotAdmin(String),
    /// A join by link the group's join rules refuse, or a link that does not parse
    /// (docs/protocol.md#join-links).
    #[error("{0}")]
    JoinRefused(String),
    /// Error reported by openmls.
    #[error("MLS error: {0}")]
    Mls(String),
    /// Cryptographic primitive failure (RNG, KDF, cipher).
    #[error("crypto error: {0}")]
    Crypto(String),
}

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, MlsError>;

/// Maps any displayable openmls error into [`MlsError::Mls`].
pub(crate) fn mls<E: std::fmt::Debug>(e: E) -> MlsError {
    MlsError::Mls(format!("{e:?}"))
}
