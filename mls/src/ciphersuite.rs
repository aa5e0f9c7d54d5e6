//! The protocol choices every Parley leaf makes: the one ciphersuite and the leaf capabilities
//! that advertise it. The lowest layer: configuration, identity and key packages all use them.

use openmls::prelude::{Capabilities, CredentialType, ExtensionType, ProtocolVersion};

/// The only ciphersuite the engine speaks (docs/protocol.md#mls-rules).
pub const CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Leaf capabilities advertised by every Parley leaf: our ciphersuite, basic credentials, the
/// `last_resort` extension type (0x000A), Parley's roles extension (0xFA50,
/// docs/protocol.md#group-roles) and join-rules extension (0xFA51,
/// docs/protocol.md#join-links). Default extension and proposal types are not listed (RFC 9420
/// §7.2).
pub fn leaf_capabilities() -> Capabilities {
    Capabilities::new(
        Some(&[ProtocolVersion::Mls10]),
        Some(&[CIPHERSUITE]),
        Some(&[
            ExtensionType::LastResort,
            ExtensionType::Unknown(parley_client_api::roles::ROLES_EXTENSION_TYPE),
            ExtensionType::Unknown(parley_client_api::join::JOIN_RULES_EXTENSION_TYPE),
            ExtensionType::Unknown(parley_client_api::disappearing::DISAPPEARING_EXTENSION_TYPE),
        ]),
        Some(&[]),
        Some(&[CredentialType::Basic]),
    )
}
