//! Engine configuration and its documented defaults.

use openmls::prelude::{
    MlsGroupCreateConfig, MlsGroupCreateConfigBuilder, MlsGroupJoinConfig,
    SenderRatchetConfiguration, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use serde::{Deserialize, Serialize};

use crate::ciphersuite::{leaf_capabilities, CIPHERSUITE};

/// Tunables of the engine. Every field has a documented default ([`EngineConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Past epochs whose message secrets are kept, so late application messages decrypt
    /// (default 5; must equal the hub's `max_past_epochs`).
    pub max_past_epochs: usize,
    /// How many skipped generations of a sender's ratchet are kept for out-of-order
    /// messages (default 10).
    pub out_of_order_tolerance: u32,
    /// How far ahead of the last seen generation a message may be (default 1000).
    pub maximum_forward_distance: u32,
    /// Application messages are padded to a multiple of this many bytes (default 32).
    pub padding_size: usize,
    /// Lifetime of generated key packages in seconds (default 30 days).
    pub key_package_lifetime_secs: u64,
    /// A message's AAD `ts` may be at most this far after the envelope's `ts` (default 5 min).
    pub max_clock_skew_ms: u64,
    /// Own commits remembered to recognise their echo after confirmation (default 16).
    pub remembered_own_commits: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_past_epochs: 5,
            out_of_order_tolerance: 10,
            maximum_forward_distance: 1000,
            padding_size: 32,
            key_package_lifetime_secs: 30 * 24 * 3600,
            max_clock_skew_ms: 5 * 60 * 1000,
            remembered_own_commits: 16,
        }
    }
}

impl EngineConfig {
    /// The openmls configuration of groups the engine creates: our ciphersuite, handshake
    /// messages as `PublicMessage` (mixed wire-format policy), ratchet-tree extension on,
    /// `max_past_epochs`, padding and sender-ratchet limits from this config, Parley's leaf
    /// capabilities. Public so that baselines and interop tests can use exactly the same one.
    pub fn group_create_config(&self) -> MlsGroupCreateConfig {
        self.group_create_config_builder().build()
    }

    /// The builder of [`EngineConfig::group_create_config`], to add to before building.
    pub(crate) fn group_create_config_builder(&self) -> MlsGroupCreateConfigBuilder {
        MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(self.max_past_epochs)
            .padding_size(self.padding_size)
            .sender_ratchet_configuration(self.sender_ratchet_configuration())
            .capabilities(leaf_capabilities())
    }

    /// The openmls configuration of groups the engine joins (same policy as
    /// [`EngineConfig::group_create_config`]).
    pub fn group_join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(self.max_past_epochs)
            .padding_size(self.padding_size)
            .sender_ratchet_configuration(self.sender_ratchet_configuration())
            .build()
    }

    fn sender_ratchet_configuration(&self) -> SenderRatchetConfiguration {
        SenderRatchetConfiguration::new(self.out_of_order_tolerance, self.maximum_forward_distance)
    }
}
