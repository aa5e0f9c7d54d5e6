//! Wakes a device's waiting `/sync` requests and WebSockets when something arrives for it.
//!
//! One `watch` channel per connected device; the value counts changes per kind, so a waiter
//! learns which kind to look at again (events, key-package counts, sessions) and re-reads only
//! that from the store, which stays the source of truth.
//!
//! On PostgreSQL other processes may serve the same devices: every wake-up is also sent to
//! them ([`parley_schema::cluster`]), and theirs are applied here ([`Notifier::join_cluster`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use parley_schema::cluster::{Cluster, Signal};

use tokio::sync::watch;

/// Watch channels by user id, then device id (looked up by `&str`, without allocating).
type Devices = HashMap<String, HashMap<String, watch::Sender<Changes>>>;

/// Change counters of one device; a waiter compares them with the ones it last saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// New group messages or welcomes, position unknown.
    pub events: u64,
    /// Highest stream position of new events notified with their position: a waiter that has
    /// already read up to it has nothing new to read.
    pub events_pos: i64,
    /// The device's key-package count changed.
    pub keys: u64,
    /// A session of the device was revoked.
    pub sessions: u64,
}

impl Changes {
    /// Which kinds differ from `earlier`.
    pub fn since(&self, earlier: &Changes) -> Changed {
        Changed {
            events: self.events != earlier.events || self.events_pos != earlier.events_pos,
            keys: self.keys != earlier.keys,
            sessions: self.sessions != earlier.sessions,
        }
    }
}

/// What a waiter must re-read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub events: bool,
    pub keys: bool,
    pub sessions: bool,
}

/// Per-device wake-ups for this process.
#[derive(Debug, Default)]
pub struct Notifier {
    devices: Mutex<Devices>,
    /// The other processes, told of every wake-up (PostgreSQL only).
    cluster: OnceLock<Arc<Cluster>>,
}

/// What a wake-up is about, as signals name it.
const EVENTS_AT: char = 'e';
const EVENTS: char = 'a';
const KEYS: char = 'k';
const SESSIONS: char = 's';

impl Notifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, Devices> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever the device is notified of anything.
    pub fn subscribe(&self, user_id: &str, device_id: &str) -> watch::Receiver<Changes> {
        self.lock()
            .entry(user_id.to_owned())
            .or_default()
            .entry(device_id.to_owned())
            .or_insert_with(|| watch::channel(Changes::default()).0)
            .subscribe()
    }

    /// Applies `change` to each listed device that has a waiter, under one lock; channels
    /// whose waiters have all gone are dropped on the way.
    fn bump<'a>(
        &self,
        devices: impl IntoIterator<Item = (&'a str, &'a str)>,
        change: impl Fn(&mut Changes),
    ) {
        let mut all = self.lock();
        for (user_id, device_id) in devices {
            let Some(user) = all.get_mut(user_id) else {
                continue;
            };
            let gone = match user.get(device_id) {
                Some(sender) if sender.receiver_count() == 0 => true,
                Some(sender) => {
                    sender.send_modify(&change);
                    false
                }
                None => false,
            };
            if gone {
                user.remove(device_id);
                if user.is_empty() {
                    all.remove(user_id);
                }
            }
        }
    }

    /// New events for each listed device.
    pub fn notify_all<'a>(&self, devices: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let devices = self.told(EVENTS, 0, devices);
        self.bump(devices, |c| c.events = c.events.wrapping_add(1));
    }

    /// A new event at stream position `pos` for each listed device.
    pub fn notify_at<'a>(&self, devices: impl IntoIterator<Item = (&'a str, &'a str)>, pos: i64) {
        let devices = self.told(EVENTS_AT, pos, devices);
        self.bump(devices, |c| c.events_pos = c.events_pos.max(pos));
    }

    /// The device's key-package count changed (upload or claim).
    pub fn notify_keys(&self, user_id: &str, device_id: &str) {
        let devices = self.told(KEYS, 0, [(user_id, device_id)]);
        self.bump(devices, |c| c.keys = c.keys.wrapping_add(1));
    }

    /// A session of the device was revoked: its long-polls and sockets re-check theirs.
    pub fn notify_session(&self, user_id: &str, device_id: &str) {
        let devices = self.told(SESSIONS, 0, [(user_id, device_id)]);
        self.bump(devices, |c| c.sessions = c.sessions.wrapping_add(1));
    }

    /// Passes `devices` through, having told the other processes (if any) to wake them too.
    fn told<'a>(
        &self,
        kind: char,
        pos: i64,
        devices: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        let devices: Vec<(&str, &str)> = devices.into_iter().collect();
        if let Some(cluster) = self.cluster.get().filter(|c| c.has_peers()) {
            cluster.send(Signal::Wake {
                k: kind,
                p: pos,
                d: devices
                    .iter()
                    .map(|(u, d)| ((*u).to_owned(), (*d).to_owned()))
                    .collect(),
            });
        }
        devices.into_iter()
    }

    /// Joins the other processes on the same database: wake-ups here are sent to them, and
    /// theirs are applied here, until the process ends.
    pub fn join_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let mut signals = cluster.subscribe();
        if self.cluster.set(cluster).is_err() {
            return;
        }
        let notifier = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let signal = signals.recv().await;
                let Some(notifier) = notifier.upgrade() else {
                    return;
                };
                match signal {
                    Ok(Signal::Wake { k, p, d }) => notifier.apply_wake(k, p, &d),
                    Ok(Signal::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        notifier.wake_everyone()
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Applies another process's wake-up here (without telling anyone).
    fn apply_wake(&self, kind: char, pos: i64, devices: &[(String, String)]) {
        let devices = devices.iter().map(|(u, d)| (u.as_str(), d.as_str()));
        match kind {
            EVENTS_AT => self.bump(devices, |c| c.events_pos = c.events_pos.max(pos)),
            KEYS => self.bump(devices, |c| c.keys = c.keys.wrapping_add(1)),
            SESSIONS => self.bump(devices, |c| c.sessions = c.sessions.wrapping_add(1)),
            _ => self.bump(devices, |c| c.events = c.events.wrapping_add(1)),
        }
    }

    /// Every waiter re-reads everything (wake-ups from other processes may have been missed).
    fn wake_everyone(&self) {
        let all = self.lock();
        for user in all.values() {
            for sender in user.values() {
                sender.send_modify(|c| {
                    c.events = c.events.wrapping_add(1);
                    c.keys = c.keys.wrapping_add(1);
                    c.sessions = c.sessions.wrapping_add(1);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_notified_device_wakes() {
        let n = Notifier::default();
        let mut a = n.subscribe("@a:x", "D");
        let mut b = n.subscribe("@b:x", "D");
        n.notify_all([("@a:x", "D")]);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), b.changed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_positioned_event_carries_the_highest_position() {
        let n = Notifier::default();
        let mut a = n.subscribe("@a:x", "D");
        let seen = *a.borrow_and_update();
        n.notify_at([("@a:x", "D")], 7);
        n.notify_at([("@a:x", "D")], 5);
        a.changed().await.unwrap();
        let now = *a.borrow_and_update();
        assert!(now.since(&seen).events);
        assert_eq!(now.events_pos, 7);
        assert_eq!(now.events, seen.events);
    }

    #[tokio::test]
    async fn a_waiter_learns_which_kind_changed() {
        let n = Notifier::default();
        let mut a = n.subscribe("@a:x", "D");
        let seen = *a.borrow_and_update();
        n.notify_keys("@a:x", "D");
        n.notify_session("@a:x", "D");
        a.changed().await.unwrap();
        let changed = a.borrow_and_update().since(&seen);
        assert_eq!(
            changed,
            Changed {
                events: false,
                keys: true,
                sessions: true
            }
        );
    }

    #[test]
    fn senders_without_receivers_are_dropped() {
        let n = Notifier::default();
        drop(n.subscribe("@a:x", "D"));
        n.notify_all([("@a:x", "D")]);
        assert!(n.devices.lock().unwrap().is_empty());
    }
}
