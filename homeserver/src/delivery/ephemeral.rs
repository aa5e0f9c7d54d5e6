//! Ephemeral messages (typing notices, read receipts): handed to the sockets and long-polls
//! of the recipient devices that are connected at that moment, here and, through the
//! cluster's signals, in the other processes serving the same database. Nothing is stored,
//! nothing takes a stream position, and a recipient that is not connected never gets it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use parley_client_api::sync::EphemeralEvent;
use parley_schema::cluster::{Cluster, Signal};
use tokio::sync::mpsc;

/// Ephemeral messages one connection may have waiting; past it, new ones are dropped for it
/// (a slow reader loses typing notices, never memory).
pub const QUEUE_PER_CONNECTION: usize = 64;

/// Largest MLS message an ephemeral send may carry, in bytes (a typing notice or a receipt
/// is a few hundred; the bound keeps one in a single signal between processes).
pub const MAX_EPHEMERAL_BYTES: usize = 2048;

type Device = (String, String);
/// The connections of one device: an id each (to unregister) and its queue.
type Connections = Vec<(u64, mpsc::Sender<Arc<EphemeralEvent>>)>;

/// The connections waiting for ephemeral messages, by device.
#[derive(Default)]
pub struct Ephemerals {
    waiting: Mutex<HashMap<Device, Connections>>,
    next_id: AtomicU64,
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

/// A connection's ephemeral messages, until it is dropped.
pub struct EphemeralInbox {
    owner: Arc<Ephemerals>,
    device: Device,
    id: u64,
    /// The messages, in the order they were handed over.
    pub messages: mpsc::Receiver<Arc<EphemeralEvent>>,
}

impl Drop for EphemeralInbox {
    fn drop(&mut self) {
        let mut waiting = self.owner.lock();
        if let Some(list) = waiting.get_mut(&self.device) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiting.remove(&self.device);
            }
        }
    }
}

impl Ephemerals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Device, Connections>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts receiving the device's ephemeral messages for one connection.
    pub fn subscribe(self: &Arc<Self>, user_id: &str, device_id: &str) -> EphemeralInbox {
        let (tx, rx) = mpsc::channel(QUEUE_PER_CONNECTION);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let device = (user_id.to_owned(), device_id.to_owned());
        self.lock()
            .entry(device.clone())
            .or_default()
            .push((id, tx));
        EphemeralInbox {
            owner: self.clone(),
            device,
            id,
            messages: rx,
        }
    }

    /// Hands `event` to the connections of `devices` here and, when other processes serve
    /// the database, to theirs; returns how many connections here took it.
    pub fn deliver(&self, event: EphemeralEvent, devices: Vec<Device>) -> usize {
        if let Some(cluster) = self.cluster.get().filter(|c| c.has_peers()) {
            if let Ok(e) = serde_json::to_string(&event) {
                cluster.send(Signal::Ephemeral {
                    e,
                    d: devices.clone(),
                });
            }
        }
        self.deliver_here(Arc::new(event), &devices)
    }

    /// Hands `event` to the connections of `devices` in this process.
    fn deliver_here(&self, event: Arc<EphemeralEvent>, devices: &[Device]) -> usize {
        let waiting = self.lock();
        let mut handed = 0;
        for device in devices {
            for (_, tx) in waiting.get(device).into_iter().flatten() {
                // A full queue drops it for that connection only.
                handed += usize::from(tx.try_send(event.clone()).is_ok());
            }
        }
        handed
    }

    /// Joins the other processes on the same database: ephemeral messages they relay are
    /// handed to the connections here, until the process ends.
    pub fn join_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let mut signals = cluster.subscribe();
        if self.cluster.set(cluster).is_err() {
            return;
        }
        let ephemerals = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let signal = signals.recv().await;
                let Some(ephemerals) = ephemerals.upgrade() else {
                    return;
                };
                match signal {
                    Ok(Signal::Ephemeral { e, d }) => {
                        if let Ok(event) = serde_json::from_str::<EphemeralEvent>(&e) {
                            ephemerals.deliver_here(Arc::new(event), &d);
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> EphemeralEvent {
        EphemeralEvent {
            group_id: "!g:x".into(),
            sender: parley_client_api::groups::DeviceRef {
                user_id: "@s:x".into(),
                device_id: "S".into(),
            },
            epoch: 1,
            message: format!("m{n}"),
            ts: 0,
        }
    }

    #[tokio::test]
    async fn only_connected_recipients_get_it_a_full_queue_drops_and_a_closed_one_unregisters() {
        let ephemerals = Arc::new(Ephemerals::default());
        let bob = ("@b:x".to_owned(), "B".to_owned());
        let carol = ("@c:x".to_owned(), "C".to_owned());
        // Nobody connected: nobody gets it, nothing is kept for later.
        assert_eq!(ephemerals.deliver(event(0), vec![bob.clone()]), 0);
        let mut inbox = ephemerals.subscribe("@b:x", "B");
        assert!(inbox.messages.try_recv().is_err());
        assert_eq!(
            ephemerals.deliver(event(1), vec![bob.clone(), carol.clone()]),
            1
        );
        assert_eq!(
            inbox.messages.recv().await.map(|e| e.message.clone()),
            Some("m1".into())
        );
        // A reader that does not read loses what exceeds its queue.
        let handed: usize = (0..QUEUE_PER_CONNECTION + 10)
            .map(|n| ephemerals.deliver(event(n), vec![bob.clone()]))
            .sum();
        assert_eq!(handed, QUEUE_PER_CONNECTION);
        drop(inbox);
        assert!(ephemerals.lock().is_empty());
    }
}
