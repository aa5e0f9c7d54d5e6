//! Submissions of this server's devices to a group whose hub is another server: the client's
//! body plus the sending device, signed and sent to the hub, whose verdict comes back as the
//! protocol's own errors.

use parley_client_api::groups::{
    CommitRequest, CommitResponse, DeviceRef, SendRequest, SendResponse,
};
use parley_client_api::ids::GroupId;
use parley_client_api::join::JoinInfoResponse;
use parley_client_api::params::{GroupPath, GroupTxnPath};
use parley_federation::endpoints::{
    FollowerCommit, FollowerCommitRequest, FollowerJoinInfo, FollowerJoinInfoRequest, FollowerSend,
    FollowerSendRequest,
};

use super::error::HubError;
use crate::federation::remote_errors::RemoteError;
use crate::state::AppState;

/// Submits a commit of `sender` to the group's `hub`.
pub(super) async fn commit(
    state: &AppState,
    hub: &str,
    group_id: &GroupId,
    commit: CommitRequest,
    sender: &DeviceRef,
) -> Result<CommitResponse, HubError> {
    let path = GroupPath {
        group_id: group_id.clone(),
    };
    let request = FollowerCommitRequest {
        commit,
        sender: sender.clone(),
    };
    Ok(state
        .fed
        .call::<FollowerCommit>(hub, &path, &request)
        .await
        .map_err(RemoteError::from)?)
}

/// Tells the group's `hub` that `device` lost the group's state.
pub(super) async fn forked(
    state: &AppState,
    hub: &str,
    group_id: &GroupId,
    device: &DeviceRef,
) -> Result<(), HubError> {
    let path = GroupPath {
        group_id: group_id.clone(),
    };
    let request = parley_federation::endpoints::FollowerForkedRequest {
        sender: device.clone(),
    };
    state
        .fed
        .call::<parley_federation::endpoints::FollowerForked>(hub, &path, &request)
        .await
        .map_err(RemoteError::from)?;
    Ok(())
}

/// Asks the group's `hub` for its GroupInfo for `user_id` holding a join link's `code`.
pub(super) async fn join_info(
    state: &AppState,
    hub: &str,
    group_id: &GroupId,
    code: &str,
    user_id: &str,
) -> Result<JoinInfoResponse, HubError> {
    let path = GroupPath {
        group_id: group_id.clone(),
    };
    let request = FollowerJoinInfoRequest {
        code: code.to_owned(),
        user_id: user_id.to_owned(),
    };
    Ok(state
        .fed
        .call::<FollowerJoinInfo>(hub, &path, &request)
        .await
        .map_err(RemoteError::from)?)
}

/// Submits a message of `sender` to the group's `hub`.
pub(super) async fn send(
    state: &AppState,
    hub: &str,
    path: GroupTxnPath,
    send: SendRequest,
    sender: &DeviceRef,
) -> Result<SendResponse, HubError> {
    let request = FollowerSendRequest {
        send,
        sender: sender.clone(),
    };
    Ok(state
        .fed
        .call::<FollowerSend>(hub, &path, &request)
        .await
        .map_err(RemoteError::from)?)
}
