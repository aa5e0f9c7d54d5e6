//! Parley client MLS engine (docs/protocol.md#mls-rules): identity, key packages, groups, trust, state and
//! vault on top of openmls. No I/O: bytes in, bytes and events out.

mod aad;
pub mod attachment;
mod ciphersuite;
mod config;
mod context;
mod device_ref;
mod disappearing;
mod engine;
mod error;
mod events;
mod fork;
mod groups;
mod identity;
mod join;
mod key_packages;
mod login;
mod process;
mod provider;
mod roles;
#[cfg(test)]
mod scenario_tests;
mod state;
mod trust;
mod validation;
pub mod vault;

pub use aad::Aad;
pub use attachment::{
    ciphertext_sha256, ciphertext_size, decrypt_attachment, encrypt_attachment,
    AttachmentDecryptor, AttachmentDescriptor, AttachmentEncryptor, AttachmentKey,
    CiphertextHasher, EncryptedAttachment, ThumbnailDescriptor, ATTACHMENT_VERSION,
};
pub use ciphersuite::{leaf_capabilities, CIPHERSUITE};
pub use config::EngineConfig;
pub use device_ref::DeviceRef;
pub use engine::Engine;
pub use error::{MlsError, Result};
pub use events::{
    CommitBundle, Envelope, Event, Joined, MemberInfo, OutgoingMessage, ProposalKind,
};
pub use identity::{fingerprint, validate_device_id, validate_server_name, validate_user_id};
pub use login::{LOGIN_CHALLENGE_PREFIX, LOGIN_CHALLENGE_RANDOM_BYTES};
pub use parley_client_api::disappearing::{Disappearing, DISAPPEARING_EXTENSION_TYPE};
pub use parley_client_api::join::{JoinLink, JoinRules, JOIN_RULES_EXTENSION_TYPE};
pub use parley_client_api::roles::GroupRoles;
pub use roles::ROLES_EXTENSION_TYPE;
pub use state::STATE_VERSION;
pub use trust::{safety_number, safety_number_half, KeyChange, TrustState};
pub use validation::{DeviceKeyValidator, StaticDeviceKeys};
pub use zeroize::Zeroizing;
