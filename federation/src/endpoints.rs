//! The federation endpoints, declared like the client API's ([`parley_client_api::Endpoint`]):
//! method, path with typed parameters, authentication (the origin server's signature),
//! rate limit, body limit, errcodes and wire types.
//!
//! A concrete path is built with [`parley_client_api::endpoint::path_of`]; that exact string
//! (plus any query) is the `uri` a request is signed over, so build it once and send it as is.

use parley_client_api::endpoint::NoQuery;
use parley_client_api::groups::{
    CommitRequest, CommitResponse, DeviceRef, SendRequest, SendResponse,
};
use parley_client_api::join::JoinInfoResponse;
use parley_client_api::keys::{ClaimKeysRequest, ClaimKeysResponse, UserDevicesResponse};
use parley_client_api::params::{GroupPath, GroupTxnPath, TxnPath, UserPath};
use parley_client_api::sync::MessageEvent;
use parley_client_api::{endpoint, EndpointInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::transactions::{Transaction, TransactionResponse};

/// Prefix of the authenticated server–server API.
pub const FEDERATION_PREFIX: &str = "/_parley/federation/v1";

endpoint! {
    /// The server's self-signed key document: its current Ed25519 verify keys, the keys it
    /// retired, and how long others may cache them.
    ServerKeys: Get "/_parley/key/v1/server",
    auth Public, rate None, body Default, path (),
    NoQuery => serde_json::Value, errors []
}
endpoint! {
    /// The federation API's OpenAPI 3.1 document, built from the declarations the server
    /// routes by.
    GetFederationApiDocument: Get "/_parley/federation/v1/openapi.json",
    auth Public, rate None, body Default, path (),
    NoQuery => serde_json::Value, errors []
}
endpoint! {
    /// A transaction of events from a hub: group messages, Welcomes and device-list updates.
    /// Each event is accepted or refused on its own; a retried `txn_id` gets the first answer.
    SendTransaction: Put "/_parley/federation/v1/send/{txn_id}",
    auth ServerSignature, rate Federation, body Federation, path TxnPath,
    Transaction => TransactionResponse, errors [BadJson]
}
endpoint! {
    /// Claims one key package per device of each listed user of this server.
    ClaimKeys: Post "/_parley/federation/v1/keys/claim",
    auth ServerSignature, rate Federation, body Federation, path (),
    ClaimKeysRequest => ClaimKeysResponse, errors []
}
endpoint! {
    /// A user of this server's devices and their MLS signature keys.
    UserDevices: Get "/_parley/federation/v1/users/{user_id}/devices",
    auth ServerSignature, rate Federation, body Federation, path UserPath,
    NoQuery => UserDevicesResponse, errors [NotFound]
}
endpoint! {
    /// A follower server submits its device's commit to the group's hub (this server).
    FollowerCommit: Post "/_parley/federation/v1/groups/{group_id}/commit",
    auth ServerSignature, rate Federation, body Federation, path GroupPath,
    FollowerCommitRequest => CommitResponse,
    errors [InvalidMessage, NotFound, NotMember, StaleEpoch, NotAdmin, TooLarge]
}
endpoint! {
    /// A server asks the group's hub for its current GroupInfo, for its user holding the
    /// group's join link (docs/protocol.md#join-links).
    FollowerJoinInfo: Post "/_parley/federation/v1/groups/{group_id}/join_info",
    auth ServerSignature, rate Federation, body Federation, path GroupPath,
    FollowerJoinInfoRequest => JoinInfoResponse,
    errors [NotFound, JoinRefused]
}
endpoint! {
    /// A server tells the group's hub that its device lost the group's state
    /// (docs/protocol.md#fork-recovery); the hub asks the members to re-add it.
    FollowerForked: Post "/_parley/federation/v1/groups/{group_id}/forked",
    auth ServerSignature, rate Federation, body Federation, path GroupPath,
    FollowerForkedRequest => parley_client_api::endpoint::Empty,
    errors [NotFound, NotMember]
}
endpoint! {
    /// A follower server submits its device's application message or proposal to the hub.
    FollowerSend: Put "/_parley/federation/v1/groups/{group_id}/send/{txn_id}",
    auth ServerSignature, rate Federation, body Federation, path GroupTxnPath,
    FollowerSendRequest => SendResponse,
    errors [InvalidMessage, NotFound, NotMember, StaleEpoch, TooLarge]
}
endpoint! {
    /// A follower server submits its device's ephemeral message to the hub, which relays it
    /// to the member devices online (never stored).
    FollowerEphemeral: Put "/_parley/federation/v1/groups/{group_id}/ephemeral/{txn_id}",
    auth ServerSignature, rate Federation, body Federation, path GroupTxnPath,
    FollowerSendRequest => parley_client_api::endpoint::Empty,
    errors [InvalidMessage, NotFound, NotMember, TooLarge]
}
endpoint! {
    /// The hub relays an ephemeral message to a member server, for its devices online; not
    /// queued, not retried, never stored.
    RelayEphemeral: Put "/_parley/federation/v1/ephemeral/{txn_id}",
    auth ServerSignature, rate Federation, body Federation, path TxnPath,
    parley_client_api::sync::EphemeralEvent => parley_client_api::endpoint::Empty,
    errors [NotFound, TooLarge]
}
endpoint! {
    /// Catch-up from the hub: the group's messages with seq > `since`, in order, for servers
    /// with (or that had) a device in the group. A page may be short; an empty page ends it.
    CatchUp: Get "/_parley/federation/v1/groups/{group_id}/messages",
    auth ServerSignature, rate Federation, body Federation, path GroupPath,
    CatchUpQuery => CatchUpPage, errors [NotFound]
}
endpoint! {
    /// An attachment's ciphertext uploaded to this server, for a server whose user asked for
    /// it. Any server may fetch any media: ids are 128 random bits, and the bytes are
    /// encrypted. A `Range: bytes=a-b` header is answered 206 with that part.
    FetchMedia: Get "/_parley/federation/v1/media/{media_id}",
    auth ServerSignature, rate Federation, body Federation, path MediaIdPath,
    NoQuery => parley_client_api::media::MediaBytes, errors [NotFound, RangeNotSatisfiable]
}

/// `{media_id}` of [`FetchMedia`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MediaIdPath {
    /// The media's id on this server.
    pub media_id: String,
}

/// Body of [`FollowerCommit`]: the client's commit bundle and the device that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FollowerCommitRequest {
    /// The bundle, as the client submitted it.
    #[serde(flatten)]
    pub commit: CommitRequest,
    /// The submitting device; its server must be the requesting server.
    pub sender: DeviceRef,
}

/// Body of [`FollowerForked`]: the device that lost the group's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FollowerForkedRequest {
    /// The device; its server must be the requesting server.
    pub sender: DeviceRef,
}

/// Body of [`FollowerJoinInfo`]: the link's code and the user who would join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FollowerJoinInfoRequest {
    /// The code from the join link.
    pub code: String,
    /// The user asking; their server must be the requesting server.
    pub user_id: String,
}

/// Body of [`FollowerSend`]: the client's message and the device that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FollowerSendRequest {
    /// The message, as the client submitted it.
    #[serde(flatten)]
    pub send: SendRequest,
    /// The submitting device; its server must be the requesting server.
    pub sender: DeviceRef,
}

/// Query of [`CatchUp`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatchUpQuery {
    /// The last seq the requester holds (0: from the start).
    #[serde(default)]
    pub since: u64,
}

/// Answer of [`CatchUp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatchUpPage {
    /// The group.
    pub group_id: String,
    /// Up to 100 messages and 4 MiB of MLS data (at least one message), in seq order.
    pub messages: Vec<MessageEvent>,
    /// The hub's retention deleted every message of the group up to this seq: a requester
    /// behind it moves on past it (absent: nothing was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<i64>,
}

/// Every federation endpoint, in documentation order.
pub fn endpoints() -> Vec<EndpointInfo> {
    vec![
        EndpointInfo::of::<ServerKeys>(),
        EndpointInfo::of::<FollowerEphemeral>(),
        EndpointInfo::of::<RelayEphemeral>(),
        EndpointInfo::of::<GetFederationApiDocument>(),
        EndpointInfo::of::<SendTransaction>(),
        EndpointInfo::of::<ClaimKeys>(),
        EndpointInfo::of::<UserDevices>(),
        EndpointInfo::of::<FollowerCommit>(),
        EndpointInfo::of::<FollowerJoinInfo>(),
        EndpointInfo::of::<FollowerForked>(),
        EndpointInfo::of::<FollowerSend>(),
        EndpointInfo::of::<CatchUp>(),
        EndpointInfo::of::<FetchMedia>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_client_api::endpoint::path_of;
    use parley_client_api::Auth;

    #[test]
    fn signed_endpoints_live_under_the_federation_prefix() {
        for e in endpoints() {
            if e.auth == Auth::ServerSignature {
                assert!(e.path.starts_with(FEDERATION_PREFIX), "{e:?}");
            } else {
                assert!(
                    e.name == "ServerKeys" || e.name == "GetFederationApiDocument",
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn paths_percent_encode_ids() {
        let user = UserPath {
            user_id: "@bob:b.example:8448".parse().unwrap(),
        };
        assert_eq!(
            path_of::<UserDevices>(&user).as_deref(),
            Some("/_parley/federation/v1/users/%40bob%3Ab.example%3A8448/devices")
        );
        let send = GroupTxnPath {
            group_id: "!Ab_9-x:a.example".parse().unwrap(),
            txn_id: "t.1~".parse().unwrap(),
        };
        assert_eq!(
            path_of::<FollowerSend>(&send).as_deref(),
            Some("/_parley/federation/v1/groups/%21Ab_9-x%3Aa.example/send/t.1~")
        );
    }

    #[test]
    fn a_follower_submission_is_the_client_body_plus_its_sender() {
        let body = serde_json::json!({
            "message": "AAEC",
            "sender": {"user_id": "@a:b.example", "device_id": "D"},
        });
        let parsed: FollowerSendRequest = serde_json::from_value(body.clone()).expect("parses");
        assert_eq!(parsed.send.message, "AAEC");
        assert_eq!(serde_json::to_value(&parsed).expect("serialises"), body);
    }
}
