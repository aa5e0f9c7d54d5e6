//! Disappearing messages at the hub (docs/protocol.md#disappearing-messages): the timer it
//! tracks from accepted commits' group-context changes. Each application message accepted
//! while a timer is set carries `expires_ts`; delivery skips it after that
//! ([`crate::delivery`]) and the expiry sweep wipes its ciphertext ([`crate::retention`]).

use parley_client_api::disappearing::Disappearing;

use super::error::HubError;
use super::invalid;
use crate::mls_check::CommitDelta;

/// The timer a commit's group-context change sets: `None` when the commit leaves the context
/// alone, `Some(None)` when the new context has no timer. A malformed timer is refused.
pub(super) fn context_disappearing(delta: &CommitDelta) -> Result<Option<Option<i64>>, HubError> {
    let Some(change) = &delta.context else {
        return Ok(None);
    };
    let timer = change
        .disappearing
        .as_deref()
        .map(Disappearing::decode)
        .transpose()
        .map_err(invalid)?;
    Ok(Some(
        timer.map(|t| i64::try_from(t.after_ms).unwrap_or(i64::MAX)),
    ))
}
