//! Groups, commits and application messages at the hub (docs/protocol.md#groups).

use serde::{Deserialize, Serialize};

crate::endpoint! {
    /// Registers a new group at this (hub) server with the caller's device as its only member.
    CreateGroup: Post "/_parley/client/v1/groups",
    auth AccessToken, rate GroupCreate, body Default, path (),
    CreateGroupRequest => CreateGroupResponse, errors []
}
crate::endpoint! {
    /// The calling device's groups with epoch and members.
    ListGroups: Get "/_parley/client/v1/groups",
    auth AccessToken, rate None, body Default, path (),
    crate::endpoint::NoQuery => ListGroupsResponse, errors []
}
crate::endpoint! {
    /// Submits a commit bundle, accepted or refused as one.
    SubmitCommit: Post "/_parley/client/v1/groups/{group_id}/commit",
    auth AccessToken, rate Send, body Bundle, path crate::params::GroupPath,
    CommitRequest => CommitResponse, errors [InvalidMessage, NotFound, NotMember, StaleEpoch, Forbidden, NotAdmin, JoinRefused, UnreachableServer]
}
crate::endpoint! {
    /// Sends an ephemeral application message (a typing notice, a read receipt): relayed at
    /// once to the member devices online, never stored and given no seq.
    SendEphemeral: Put "/_parley/client/v1/groups/{group_id}/ephemeral/{txn_id}",
    auth AccessToken, rate Send, body Message, path crate::params::GroupTxnPath,
    SendRequest => crate::endpoint::Empty, errors [InvalidMessage, NotFound, NotMember, TooLarge, UnreachableServer]
}
crate::endpoint! {
    /// Sends an application message or a proposal; idempotent per (device, txn_id).
    SendMessage: Put "/_parley/client/v1/groups/{group_id}/send/{txn_id}",
    auth AccessToken, rate Send, body Message, path crate::params::GroupTxnPath,
    SendRequest => SendResponse, errors [InvalidMessage, NotFound, NotMember, StaleEpoch, UnreachableServer]
}

/// A device named in a commit's `adds`/`removes` or as a sender.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct DeviceRef {
    pub user_id: String,
    pub device_id: String,
}

/// Body of [`CreateGroup`] (may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// The group has roles (docs/protocol.md#group-roles): the caller's user is its first
    /// admin, and the hub refuses membership and settings changes by other members. The
    /// creator's epoch-0 group context must carry the same roles extension.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub roles: bool,
}

/// Response of [`CreateGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateGroupResponse {
    pub group_id: String,
}

/// One group of [`ListGroups`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GroupSummary {
    pub group_id: String,
    pub epoch: u64,
    pub members: Vec<DeviceRef>,
}

/// Response of [`ListGroups`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListGroupsResponse {
    pub groups: Vec<GroupSummary>,
}

/// Body of [`SubmitCommit`]: a commit bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommitRequest {
    /// Base64 `MLSMessage` (PublicMessage) with the commit.
    pub commit: String,
    /// Base64 `MLSMessage` Welcome for the added devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
    /// Base64 `MLSMessage` GroupInfo of the new epoch, ratchet tree included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_info: Option<String>,
    /// Devices the commit adds, in the order of its Add proposals.
    #[serde(default)]
    pub adds: Vec<DeviceRef>,
    /// Devices the commit removes.
    #[serde(default)]
    pub removes: Vec<DeviceRef>,
}

/// Response of [`SubmitCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommitResponse {
    /// The group's new epoch.
    pub epoch: u64,
    pub seq: u64,
}

/// Body of [`SendMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SendRequest {
    /// Base64 `MLSMessage`: a PrivateMessage (application) or PublicMessage (proposal).
    pub message: String,
    /// Ids of media the sender uploaded to their own server that the message names (at most
    /// [`MAX_MEDIA_PER_MESSAGE`]): their server keeps them past the unreferenced-media
    /// period. Read by the sender's server only; never passed to the hub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// Ephemeral sends only (`PUT …/ephemeral/{txn_id}`): a read receipt. Servers keep this
    /// message, in memory and replacing the sender device's previous one in the group, for
    /// the member devices not connected now, and hand it to each when it next catches up
    /// (docs/protocol.md#ephemeral). Ignored by `/send`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_latest: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Most media ids one [`SendRequest`] may name.
pub const MAX_MEDIA_PER_MESSAGE: usize = 16;

impl SendRequest {
    /// A request sending `message` (base64), naming no media.
    pub fn new(message: String) -> SendRequest {
        SendRequest {
            message,
            media: Vec::new(),
            keep_latest: false,
        }
    }
}

/// Response of [`SendMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SendResponse {
    pub seq: u64,
}

crate::endpoint! {
    /// This device lost the group's state (a fork, docs/protocol.md#fork-recovery): the hub
    /// writes a `member_forked` notice and the members re-add the device with a fresh key
    /// package. Answered `{}` once the notice is written (once per device and epoch).
    GroupForked: Post "/_parley/client/v1/groups/{group_id}/forked",
    auth AccessToken, rate GroupCreate, body Default, path crate::params::GroupPath,
    crate::endpoint::Empty => crate::endpoint::Empty, errors [NotFound, NotMember, UnreachableServer]
}
