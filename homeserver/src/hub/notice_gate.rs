//! Spacing of `member_devices_changed` notices (see `notice`): at most one per group and user
//! per [`DEVICE_NOTICE_INTERVAL`], and one pending re-check per user, in this process. It
//! holds no state worth keeping: after a restart the next device list change notices again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two `member_devices_changed` notices for one user in one group.
pub const DEVICE_NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// Entries past which expired ones are dropped (each is a group and a user).
const PRUNE_AT: usize = 10_000;

/// Whether a notice may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; the interval starts again.
    Now,
    /// Not before this much time has passed.
    Later(Duration),
}

/// When each group last got a notice about each user, and which users have a re-check
/// scheduled.
#[derive(Default)]
pub struct DeviceNoticeGate {
    inner: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    last: HashMap<(String, String), Instant>,
    rechecks: HashSet<String>,
    /// Size at which expired entries are dropped next: twice what a prune left, so pruning
    /// stays amortised when most entries are recent.
    prune_at: usize,
}

impl DeviceNoticeGate {
    /// Admits a notice about `user_id` into `group_id` at `now`, or says how long to wait.
    pub fn admit(&self, group_id: &str, user_id: &str, now: Instant) -> Admission {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if state.last.len() >= state.prune_at.max(PRUNE_AT) {
            state
                .last
                .retain(|_, at| now.saturating_duration_since(*at) < DEVICE_NOTICE_INTERVAL);
            state.prune_at = (2 * state.last.len()).max(PRUNE_AT);
        }
        let key = (group_id.to_owned(), user_id.to_owned());
        if let Some(at) = state.last.get(&key) {
            let since = now.saturating_duration_since(*at);
            if since < DEVICE_NOTICE_INTERVAL {
                return Admission::Later(DEVICE_NOTICE_INTERVAL - since);
            }
        }
        state.last.insert(key, now);
        Admission::Now
    }

    /// Claims the one re-check of `user_id`; false if one is already scheduled.
    pub fn schedule_recheck(&self, user_id: &str) -> bool {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.rechecks.insert(user_id.to_owned())
    }

    /// The re-check of `user_id` runs: later changes may schedule another.
    pub fn recheck_started(&self, user_id: &str) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.rechecks.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_notice_within_the_interval_waits_for_the_rest_of_it() {
        let gate = DeviceNoticeGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.admit("!g", "@u", t0), Admission::Now);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            gate.admit("!g", "@u", later),
            Admission::Later(DEVICE_NOTICE_INTERVAL - Duration::from_secs(2))
        );
        // Other groups and users are spaced on their own.
        assert_eq!(gate.admit("!h", "@u", later), Admission::Now);
        assert_eq!(gate.admit("!g", "@v", later), Admission::Now);
        assert_eq!(
            gate.admit("!g", "@u", t0 + DEVICE_NOTICE_INTERVAL),
            Admission::Now
        );
    }

    #[test]
    fn one_recheck_per_user_is_scheduled_until_it_starts() {
        let gate = DeviceNoticeGate::default();
        assert!(gate.schedule_recheck("@u"));
        assert!(!gate.schedule_recheck("@u"));
        assert!(gate.schedule_recheck("@v"));
        gate.recheck_started("@u");
        assert!(gate.schedule_recheck("@u"));
    }

    #[test]
    fn expired_entries_are_dropped_once_the_table_is_full() {
        let gate = DeviceNoticeGate::default();
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            gate.admit(&format!("!g{i}"), "@u", t0);
        }
        gate.admit("!new", "@u", t0 + DEVICE_NOTICE_INTERVAL);
        let len = gate.inner.lock().map(|s| s.last.len()).unwrap_or(0);
        assert_eq!(len, 1);
    }
}
