//! The gap fills running in this process, one per group at most.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The running fills, by group id; the flag asks a running fill to look once more.
#[derive(Default)]
pub struct GapFiller {
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl GapFiller {
    /// Registers a fill of `group_id` and returns its look-again flag; `None` when one runs
    /// already, which is then asked to look once more.
    pub fn start(&self, group_id: &str) -> Option<Arc<AtomicBool>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = running.get(group_id) {
            again.store(true, Ordering::Release);
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        running.insert(group_id.to_owned(), flag.clone());
        Some(flag)
    }

    /// Whether a fill of `group_id` is running.
    pub fn is_running(&self, group_id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(group_id)
    }

    /// Ends the fill of `group_id` unless it was asked to look again meanwhile (then it runs
    /// once more and this returns `false`).
    pub fn finish(&self, group_id: &str, again: &AtomicBool) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if again.swap(false, Ordering::AcqRel) {
            return false;
        }
        running.remove(group_id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_request_asks_the_running_fill_to_look_again() {
        let fills = GapFiller::default();
        let again = fills.start("!g:a").expect("first fill starts");
        assert!(fills.start("!g:a").is_none());
        assert!(!fills.finish("!g:a", &again), "asked to look again");
        assert!(fills.is_running("!g:a"));
        assert!(fills.finish("!g:a", &again));
        assert!(!fills.is_running("!g:a"));
    }
}
