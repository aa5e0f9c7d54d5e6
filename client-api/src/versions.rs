//! `GET /_parley/client/versions`: protocol versions and the limits client and hub share.

use serde::{Deserialize, Serialize};

crate::endpoint! {
    /// Protocol versions, server name and limits; needs no token.
    GetVersions: Get "/_parley/client/versions",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => VersionsResponse, errors []
}

crate::endpoint! {
    /// This API's OpenAPI 3.1 document, built from the same declarations the server routes by.
    GetClientApiDocument: Get "/_parley/client/v1/openapi.json",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => serde_json::Value, errors []
}
crate::endpoint! {
    /// A human-readable reference of both APIs (HTML), generated from their OpenAPI documents.
    ApiReference: Get "/_parley/docs",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => String, errors []
}

/// Limits every client and hub of this server agree on (docs/protocol.md#versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Limits {
    /// How many epochs back an application message is still accepted.
    pub max_past_epochs: u64,
    /// Largest decoded MLS message, in bytes.
    pub max_message_bytes: u64,
    /// Largest decoded commit + welcome + group info, in bytes.
    pub max_bundle_bytes: u64,
    /// Longest accepted key-package lifetime, in milliseconds.
    pub max_key_package_lifetime_ms: u64,
    /// Largest media upload, in bytes (0 from a server without a media repository).
    #[serde(default)]
    pub max_upload_bytes: u64,
}

/// Response of [`GetVersions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VersionsResponse {
    /// Supported protocol versions, e.g. `["v1"]`.
    pub versions: Vec<String>,
    /// The server's name.
    pub server_name: String,
    /// Shared limits.
    pub limits: Limits,
}
