//! Catch-up from the hub (`GET /groups/{group_id}/messages?since=SEQ`), served to servers with
//! devices in the group.

use parley_federation::endpoints::CatchUpPage;

use super::error::FederationError;
use crate::delivery::events::message_event;
use crate::ids::{remote_hub, same_server, server_of};
use crate::state::AppState;
use parley_client_api::ids::GroupId;

/// Messages per catch-up page.
pub const CATCH_UP_PAGE: i64 = 100;

/// MLS bytes per catch-up page (one message always goes): a page may be short before the end,
/// so a requester reads until a page is empty.
pub const CATCH_UP_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Catch-up from the hub (`GET /groups/{group_id}/messages?since=SEQ`), for servers with
/// devices in the group: up to [`CATCH_UP_PAGE`] messages and [`CATCH_UP_PAGE_BYTES`] with
/// seq > `since`, in order; an empty page is the end. A
/// server whose devices have all left gets messages up to the commit that removed the last of
/// them (it must deliver that commit), nothing after; a server that never had a member is
/// refused (403).
pub async fn page(
    state: &AppState,
    origin: &str,
    group_id: &GroupId,
    since: u64,
) -> Result<CatchUpPage, FederationError> {
    let group = group_id;
    let group_id = group.as_str();
    if remote_hub(&state.config.server_name, group).is_some()
        || state.store.hub_log().group(group_id).await?.is_none()
    {
        return Err(FederationError::NoSuchGroup);
    }
    let since = i64::try_from(since)
        .map_err(|_| FederationError::BadField("since is out of range".into()))?;
    let history = state
        .store
        .federation()
        .group_membership_history(group_id)
        .await?;
    let theirs: Vec<Option<i64>> = history
        .into_iter()
        .filter(|(user_id, _)| same_server(server_of(user_id), origin))
        .map(|(_, left_pos)| left_pos)
        .collect();
    if theirs.is_empty() {
        return Err(FederationError::NoMemberOnServer);
    }
    // No current member: the last message it may see is the commit removing its last device.
    let until = if theirs.iter().any(Option::is_none) {
        None
    } else {
        let last_left = theirs.iter().flatten().copied().max().unwrap_or(0);
        Some(
            state
                .store
                .federation()
                .seq_at_position(group_id, last_left)
                .await?
                .unwrap_or(0),
        )
    };
    // Read before the page: a prune running meanwhile only makes the page start later.
    let pruned = state
        .store
        .hub_log()
        .pruned_seq(group_id)
        .await?
        .unwrap_or(0);
    let messages = state
        .store
        .hub_log()
        .group_messages_since(group_id, since, CATCH_UP_PAGE)
        .await?;
    // A page carries at most CATCH_UP_PAGE_BYTES of MLS data (at least one message).
    let mut bytes = 0usize;
    let messages: Vec<_> = messages
        .into_iter()
        .filter(|m| until.is_none_or(|u| m.seq <= u))
        .take_while(|m| {
            let first = bytes == 0;
            bytes += m.message.len().max(1);
            first || bytes <= CATCH_UP_PAGE_BYTES
        })
        .map(|m| message_event(&m))
        .collect();
    tracing::debug!(%group_id, origin = %origin, since, count = messages.len(), "catch-up served");
    Ok(CatchUpPage {
        group_id: group_id.to_owned(),
        messages,
        pruned_through: (pruned > since).then_some(pruned),
    })
}
