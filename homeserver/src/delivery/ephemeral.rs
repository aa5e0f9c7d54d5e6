//! Ephemeral messages (typing notices, read receipts): handed to the sockets and long-polls
//! of the recipient devices that are connected at that moment, here and, through the
//! cluster's signals, in the other processes serving the same database. Nothing is stored,
//! nothing takes a stream position, and a recipient that is not connected never gets it —
//! except a read receipt sent with `keep_latest`: each process keeps, in memory, the latest
//! one per (recipient device, group, sender device) for recipients not connected to it, and
//! hands them over when such a device next catches up with its stored events ([`KeptLatest`]).
//! Handing them only then matters: an MLS receiver keeps only a few skipped keys per sender,
//! so a receipt decrypted before the sender's older stored messages could make those
//! undecryptable.

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

/// Most kept receipts in one process (each a recipient device, group and sender device);
/// past it the oldest kept go first.
pub const MAX_KEPT: usize = 100_000;
/// Most bytes the kept receipts may take in one process, counted per entry (message, ids and
/// bookkeeping, as if none were shared); past it the oldest kept go first.
pub const MAX_KEPT_BYTES: usize = 16 << 20;
/// How long a kept receipt waits for its recipient (ms); later it is dropped unread.
pub const KEPT_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// The connections of one device: an id each (to unregister) and its queue.
type Connections = Vec<(u64, mpsc::Sender<Arc<EphemeralEvent>>)>;

/// The connections waiting for ephemeral messages, by device.
#[derive(Default)]
pub struct Ephemerals {
    waiting: Mutex<HashMap<Device, Connections>>,
    next_id: AtomicU64,
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    kept: Mutex<KeptLatest>,
}

/// (group id, sender user, sender device) of a kept receipt.
type KeptKey = (String, String, String);

/// The latest `keep_latest` receipt per recipient device, group and sender device, for
/// recipients that were not connected, oldest dropped first past [`MAX_KEPT`].
#[derive(Default)]
pub struct KeptLatest {
    by_device: HashMap<Device, HashMap<KeptKey, (u64, Arc<EphemeralEvent>)>>,
    /// Insertion order, (serial, recipient, key); entries whose serial no longer matches
    /// were replaced or taken.
    order: std::collections::VecDeque<(u64, Device, KeptKey)>,
    serial: u64,
    len: usize,
    bytes: usize,
}

/// What one kept entry counts against [`MAX_KEPT_BYTES`].
fn entry_bytes(device: &Device, event: &EphemeralEvent) -> usize {
    event.message.len()
        + event.group_id.len()
        + event.sender.user_id.len()
        + event.sender.device_id.len()
        + device.0.len()
        + device.1.len()
        + 128
}

impl KeptLatest {
    /// Keeps `event` for `device`, replacing the same sender device's earlier one.
    pub fn keep(&mut self, device: &Device, event: &Arc<EphemeralEvent>) {
        let key = (
            event.group_id.clone(),
            event.sender.user_id.clone(),
            event.sender.device_id.clone(),
        );
        self.serial += 1;
        let serial = self.serial;
        let slot = self.by_device.entry(device.clone()).or_default();
        match slot.insert(key.clone(), (serial, event.clone())) {
            None => self.len += 1,
            Some((_, old)) => self.bytes -= entry_bytes(device, &old),
        }
        self.bytes += entry_bytes(device, event);
        self.order.push_back((serial, device.clone(), key));
        while self.len > MAX_KEPT || self.bytes > MAX_KEPT_BYTES {
            let Some((serial, device, key)) = self.order.pop_front() else {
                break;
            };
            self.remove_if(&device, &key, serial);
        }
        self.compact();
    }

    /// Replaced and taken entries leave stale order records: dropped when they dominate, so
    /// the queue holds at most twice the live entries (plus 1,024).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.len + 1024 {
            let by_device = &self.by_device;
            self.order.retain(|(serial, device, key)| {
                by_device
                    .get(device)
                    .and_then(|m| m.get(key))
                    .is_some_and(|(s, _)| s == serial)
            });
        }
    }

    fn remove_if(&mut self, device: &Device, key: &KeptKey, serial: u64) {
        if let Some(slot) = self.by_device.get_mut(device) {
            if slot.get(key).is_some_and(|(s, _)| *s == serial) {
                if let Some((_, old)) = slot.remove(key) {
                    self.bytes -= entry_bytes(device, &old);
                }
                self.len -= 1;
            }
            if slot.is_empty() {
                self.by_device.remove(device);
            }
        }
    }

    /// Takes what is kept for `device` that is younger than [`KEPT_TTL_MS`] at `now_ms`,
    /// oldest first.
    pub fn take(&mut self, device: &Device, now_ms: u64) -> Vec<Arc<EphemeralEvent>> {
        let Some(slot) = self.by_device.remove(device) else {
            return Vec::new();
        };
        self.len -= slot.len();
        self.bytes -= slot
            .values()
            .map(|(_, e)| entry_bytes(device, e))
            .sum::<usize>();
        let mut events: Vec<(u64, Arc<EphemeralEvent>)> = slot
            .into_values()
            .filter(|(_, e)| now_ms.saturating_sub(e.ts) < KEPT_TTL_MS)
            .collect();
        events.sort_by_key(|(serial, _)| *serial);
        self.compact();
        events.into_iter().map(|(_, e)| e).collect()
    }

    /// Receipts kept now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes they count against [`MAX_KEPT_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
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

    /// Hands `event` to the connections of `devices` in this process; a `latest` one is
    /// kept for the devices with no connection here.
    fn deliver_here(&self, event: Arc<EphemeralEvent>, devices: &[Device]) -> usize {
        let waiting = self.lock();
        let mut handed = 0;
        let mut absent = Vec::new();
        for device in devices {
            match waiting.get(device) {
                Some(connections) if !connections.is_empty() => {
                    for (_, tx) in connections {
                        // A full queue drops it for that connection only.
                        handed += usize::from(tx.try_send(event.clone()).is_ok());
                    }
                }
                _ => absent.push(device),
            }
        }
        drop(waiting);
        if event.latest && !absent.is_empty() {
            let mut kept = self.kept_lock();
            for device in absent {
                kept.keep(device, &event);
            }
        }
        handed
    }

    fn kept_lock(&self) -> std::sync::MutexGuard<'_, KeptLatest> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The receipts kept for a device, taken: call once its connection has caught up with
    /// the stored events.
    pub fn take_kept(&self, user_id: &str, device_id: &str) -> Vec<Arc<EphemeralEvent>> {
        let device = (user_id.to_owned(), device_id.to_owned());
        self.kept_lock().take(&device, crate::clock::now_ms())
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
            latest: false,
        }
    }

    fn receipt(sender: &str, group: &str, n: usize) -> EphemeralEvent {
        EphemeralEvent {
            group_id: group.into(),
            sender: parley_client_api::groups::DeviceRef {
                user_id: "@s:x".into(),
                device_id: sender.into(),
            },
            epoch: 1,
            message: format!("r{n}"),
            ts: crate::clock::now_ms(),
            latest: true,
        }
    }

    #[tokio::test]
    async fn a_receipt_kept_for_an_absent_device_replaces_the_senders_earlier_one_and_is_taken_once(
    ) {
        let ephemerals = Arc::new(Ephemerals::default());
        let bob = ("@b:x".to_owned(), "B".to_owned());
        let carol = ("@c:x".to_owned(), "C".to_owned());
        let _carol_online = ephemerals.subscribe("@c:x", "C");
        for n in 0..5 {
            ephemerals.deliver(receipt("S1", "!g:x", n), vec![bob.clone(), carol.clone()]);
        }
        ephemerals.deliver(receipt("S2", "!g:x", 9), vec![bob.clone()]);
        ephemerals.deliver(receipt("S1", "!h:x", 7), vec![bob.clone()]);
        // A typing notice is never kept.
        ephemerals.deliver(event(3), vec![bob.clone()]);
        let kept: Vec<String> = ephemerals
            .take_kept("@b:x", "B")
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(kept, ["r4", "r9", "r7"]);
        assert!(ephemerals.take_kept("@b:x", "B").is_empty());
        // Carol was connected: hers went to her connection, nothing kept.
        assert!(ephemerals.take_kept("@c:x", "C").is_empty());
        assert!(ephemerals.kept_lock().is_empty());
    }

    #[test]
    fn kept_receipts_are_bounded_oldest_first_and_expire() {
        let mut kept = KeptLatest::default();
        let sender_receipt = |i: usize| Arc::new(receipt(&format!("S{i}"), "!g:x", i));
        let bob = ("@b:x".to_owned(), "B".to_owned());
        for i in 0..MAX_KEPT + 10 {
            kept.keep(&bob, &sender_receipt(i));
        }
        assert_eq!(kept.len(), MAX_KEPT);
        // Replacing one sender's receipt over and over keeps the order queue bounded.
        for _ in 0..3 * MAX_KEPT {
            kept.keep(&bob, &sender_receipt(MAX_KEPT + 9));
        }
        assert_eq!(kept.len(), MAX_KEPT);
        assert!(kept.order.len() <= 2 * kept.len() + 1025);
        let taken = kept.take(&bob, crate::clock::now_ms());
        assert_eq!(taken.len(), MAX_KEPT);
        assert_eq!(taken[0].message, "r10", "the 10 oldest went first");
        assert_eq!(kept.bytes(), 0);
        // Large receipts are bounded by bytes before count.
        let big = |i: usize| {
            let mut r = receipt(&format!("S{i}"), "!g:x", i);
            r.message = "A".repeat(2800);
            Arc::new(r)
        };
        for i in 0..20_000 {
            kept.keep(&bob, &big(i));
        }
        assert!(kept.bytes() <= MAX_KEPT_BYTES, "{}", kept.bytes());
        assert!(kept.len() < 20_000);
        println!(
            "20,000 receipts of 2,800 base64 chars kept for one device: {} kept in {} bytes (bound {MAX_KEPT_BYTES})",
            kept.len(),
            kept.bytes()
        );
        kept.take(&bob, crate::clock::now_ms());
        assert_eq!((kept.len(), kept.bytes()), (0, 0));
        // Expired ones are dropped when taken.
        kept.keep(&bob, &sender_receipt(1));
        assert!(kept
            .take(&bob, crate::clock::now_ms() + KEPT_TTL_MS)
            .is_empty());
        assert!(kept.is_empty());
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
