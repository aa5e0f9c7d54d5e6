//! Delivery: `/sync` long-poll, `/ws` push and welcome acknowledgement (docs/protocol.md#delivery).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::endpoint::Empty;
use crate::groups::DeviceRef;
use crate::keys::KeyCountResponse;

crate::endpoint! {
    /// Events after `since`, waiting up to `timeout_ms` when there are none.
    Sync: Get "/_parley/client/v1/sync",
    auth AccessToken, rate None, body Default, path (),
    SyncRequest => SyncResponse, errors []
}
crate::endpoint! {
    /// Acknowledges a processed welcome; it is not sent again.
    DeleteWelcome: Delete "/_parley/client/v1/welcomes/{id}",
    auth AccessToken, rate None, body Default, path crate::params::WelcomePath,
    crate::endpoint::NoQuery => Empty, errors [NotFound]
}

crate::endpoint! {
    /// The device's events pushed as they happen (101 Switching Protocols). A browser sends
    /// `{"access_token", "since"}` ([`WsAuth`]) as its first frame; a native client may use an
    /// `Authorization` header instead. Frames are [`WsEvent`]s; an error closes with 4001.
    WebSocket: Get "/_parley/client/v1/ws",
    auth Public, rate None, body Default, path (),
    crate::endpoint::NoQuery => Empty, errors [MissingToken, UnknownToken]
}

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = <WebSocket as crate::Endpoint>::PATH;

/// Query of [`Sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A Welcome for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WelcomeEvent {
    pub id: String,
    pub group_id: String,
    pub sender: DeviceRef,
    /// Base64 `MLSMessage` Welcome.
    pub welcome: String,
    pub ts: u64,
}

/// An accepted group message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MessageEvent {
    pub seq: u64,
    pub sender: DeviceRef,
    /// `commit`, `proposal` or `application`.
    pub kind: String,
    /// The MLS message's own epoch.
    pub epoch: u64,
    /// Base64 `MLSMessage`.
    pub message: String,
    /// Hub acceptance time.
    pub ts: u64,
    /// Commits only: declared adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adds: Option<Vec<DeviceRef>>,
    /// Commits only: declared removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<Vec<DeviceRef>>,
    /// Application messages of a group with a disappearing-messages timer: when the hub stops
    /// delivering it (ms since the Unix epoch; docs/protocol.md#disappearing-messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ts: Option<u64>,
}

/// A group's messages in a sync response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GroupEvents {
    pub messages: Vec<MessageEvent>,
}

/// Response of [`Sync`]; every section is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncResponse {
    pub next_batch: String,
    pub welcomes: Vec<WelcomeEvent>,
    pub groups: BTreeMap<String, GroupEvents>,
    pub key_packages: KeyCountResponse,
    /// Ephemeral messages sent while this long-poll waited (never stored: a later `/sync`
    /// from any token does not return them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral: Vec<EphemeralEvent>,
}

/// An ephemeral application message (a typing notice, a read receipt), delivered only to the
/// member devices online when it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EphemeralEvent {
    pub group_id: String,
    pub sender: DeviceRef,
    /// The MLS message's own epoch, as the hub read it.
    pub epoch: u64,
    /// Base64 `MLSMessage` (a PrivateMessage).
    pub message: String,
    /// When the hub took it (ms).
    pub ts: u64,
    /// A read receipt kept as the sender device's latest in the group for devices that were
    /// not connected (the send's `keep_latest`); such a frame may reach a device later,
    /// once it has caught up with its stored events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub latest: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The first frame a client sends on `/ws` (the token never appears in a URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WsAuth {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// A frame a client may send on `/ws` after authenticating: it has processed its events up to
/// the `next_batch` token `received`. The server keeps messages until every member device has
/// said so (by this frame, or by the `since` of a `/sync` or `/ws`), before retention may
/// delete them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WsReceived {
    pub received: String,
}

/// A frame the server pushes on `/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsEvent {
    Welcome {
        #[serde(flatten)]
        welcome: WelcomeEvent,
        next_batch: String,
    },
    Message {
        group_id: String,
        #[serde(flatten)]
        message: MessageEvent,
        next_batch: String,
    },
    KeyPackages {
        #[serde(flatten)]
        key_packages: KeyCountResponse,
        next_batch: String,
    },
    /// An ephemeral message; it has no stream position, so no `next_batch`.
    Ephemeral {
        #[serde(flatten)]
        event: EphemeralEvent,
    },
}
