//! Wakes a device's waiting `/sync` requests and WebSockets when something arrives for it.
//!
//! One `watch` channel per connected device; the value is a generation counter, so a waiter
//! only learns "look again" and re-reads the store, which stays the source of truth.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

type DeviceKey = (String, String);

/// Per-device wake-ups for this process.
#[derive(Debug, Default)]
pub struct Notifier {
    devices: Mutex<HashMap<DeviceKey, watch::Sender<u64>>>,
}

impl Notifier {
    /// A receiver that changes whenever [`Notifier::notify`] is called for the device.
    pub fn subscribe(&self, user_id: &str, device_id: &str) -> watch::Receiver<u64> {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices
            .entry((user_id.to_owned(), device_id.to_owned()))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes every waiter of one device (new events, key-count change, or session revoked).
    pub fn notify(&self, user_id: &str, device_id: &str) {
        let key = (user_id.to_owned(), device_id.to_owned());
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = devices.get(&key) {
            if sender.receiver_count() == 0 {
                devices.remove(&key);
            } else {
                sender.send_modify(|g| *g = g.wrapping_add(1));
            }
        }
    }

    /// Wakes each listed device.
    pub fn notify_all<'a>(&self, devices: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (user_id, device_id) in devices {
            self.notify(user_id, device_id);
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
        n.notify("@a:x", "D");
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

    #[test]
    fn senders_without_receivers_are_dropped() {
        let n = Notifier::default();
        drop(n.subscribe("@a:x", "D"));
        n.notify("@a:x", "D");
        assert!(n.devices.lock().unwrap().is_empty());
    }
}
