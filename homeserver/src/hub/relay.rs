//! Submissions of this server's devices to a group whose hub is another server: the client's
//! body plus the sending device, signed and sent to the hub, whose verdict comes back as the
//! protocol's own errors.

use parley_client_api::groups::DeviceRef;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiResult, Error};
use crate::state::AppState;

/// Submits `req` from `sender` to `hub` at `path` and reads the hub's answer.
pub(super) async fn submit<Req: Serialize, Resp: DeserializeOwned>(
    state: &AppState,
    method: reqwest::Method,
    hub: &str,
    path: &str,
    req: &Req,
    sender: &DeviceRef,
) -> ApiResult<Resp> {
    let body = follower_body(req, sender)?;
    let answer = relay(state, method, hub, path, &body).await?;
    serde_json::from_value(answer).map_err(|e| Error::UnreachableServer(format!("{hub}: {e}")))
}

/// The client body plus `sender`, as a follower submits it to the hub.
fn follower_body<T: serde::Serialize>(req: &T, sender: &DeviceRef) -> ApiResult<serde_json::Value> {
    let mut body = serde_json::to_value(req).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "sender".into(),
            serde_json::to_value(sender).map_err(|e| Error::Internal(e.to_string()))?,
        );
    }
    Ok(body)
}

/// Sends a follower submission to the hub and hands its answer back unchanged.
async fn relay(
    state: &AppState,
    method: reqwest::Method,
    hub: &str,
    path: &str,
    body: &serde_json::Value,
) -> ApiResult<serde_json::Value> {
    state
        .fed
        .request(method, hub, path, Some(body))
        .await
        .map_err(Error::from)
}
