//! What devices said they received: the `since` of each `/sync`, and the `received` frames of
//! a WebSocket. Positions are gathered in memory and written in batches
//! ([`ReceivedPositions::flush`], every [`FLUSH_EVERY`] and before each retention run), so a
//! sync costs no write; a position lost in a crash only makes retention keep more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use parley_schema::Store;

/// How often gathered positions are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Most devices gathered between flushes; past it, new devices wait for the next flush (their
/// next sync notes them again).
pub const MAX_PENDING: usize = 100_000;

/// Received positions not yet written, by device.
#[derive(Default)]
pub struct ReceivedPositions {
    pending: Mutex<HashMap<(String, String), i64>>,
}

impl ReceivedPositions {
    /// Notes that the device received its events up to stream position `pos`.
    pub fn note(&self, user_id: &str, device_id: &str, pos: i64) {
        if pos <= 0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user_id.to_owned(), device_id.to_owned());
        if let Some(known) = pending.get_mut(&key) {
            *known = (*known).max(pos);
        } else if pending.len() < MAX_PENDING {
            pending.insert(key, pos);
        }
    }

    /// Writes the gathered positions; on failure they are gathered again by later syncs.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, String, i64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
                .into_iter()
                .map(|((u, d), p)| (u, d, p))
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.retention().record_received(batch).await {
            tracing::warn!(error = %e, "recording devices' received positions failed");
        }
    }

    /// Flushes every [`FLUSH_EVERY`], forever (spawned at start-up).
    pub async fn keep_flushing(self: std::sync::Arc<Self>, store: Store) {
        let mut ticker = tokio::time::interval(FLUSH_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.flush(&store).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_furthest_position_and_zero_is_not_noted() {
        let received = ReceivedPositions::default();
        received.note("@a:x", "D", 7);
        received.note("@a:x", "D", 3);
        received.note("@b:x", "E", 0);
        let pending = received.pending.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.get(&("@a:x".into(), "D".into())), Some(&7));
    }
}
