//! Disappearing messages in the engine (docs/protocol.md#disappearing-messages): the timer in
//! the group context, changed by a GroupContextExtensions commit (an admin's only, in a group
//! with roles, as every context change). The app deletes its local copies after the timer.

use parley_client_api::disappearing::{Disappearing, DISAPPEARING_EXTENSION_TYPE};

use crate::context::{extension_body, with_extension};
use crate::engine::Engine;
use crate::error::{mls, MlsError, Result};
use crate::events::CommitBundle;

impl Engine {
    /// The group's disappearing-messages timer in milliseconds, `None` when messages stay.
    pub fn disappearing_after_ms(&self, group_id: &str) -> Result<Option<u64>> {
        extension_body(
            self.entry(group_id)?.mls.extensions(),
            DISAPPEARING_EXTENSION_TYPE,
        )
        .map(Disappearing::decode)
        .transpose()
        .map(|t| t.map(|t| t.after_ms))
        .map_err(|e| MlsError::InvalidMessage(e.to_string()))
    }

    /// Commits the group's disappearing-messages timer (`None` turns it off).
    pub fn set_disappearing(
        &mut self,
        group_id: &str,
        after_ms: Option<u64>,
    ) -> Result<CommitBundle> {
        let body = after_ms
            .map(Disappearing::new)
            .transpose()
            .map_err(|e| MlsError::InvalidState(e.to_string()))?
            .map(|t| t.encode());
        let entry = self.entry(group_id)?;
        if !entry.mls.is_active() {
            return Err(MlsError::Evicted);
        }
        if entry.mls.pending_commit().is_some() {
            return Err(MlsError::PendingCommit);
        }
        let extensions = with_extension(entry.mls.extensions(), DISAPPEARING_EXTENSION_TYPE, body)?;
        self.stage_commit(group_id, Vec::new(), |group| {
            group
                .commit_builder()
                .propose_group_context_extensions(extensions)
                .map_err(mls)
        })
    }
}
