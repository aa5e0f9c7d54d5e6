//! Several `parley serve` processes on one PostgreSQL database (docs/operations.md#scaling):
//! what one process changes that others hold in memory, it tells them through PostgreSQL's
//! `LISTEN`/`NOTIFY` on the channel [`CHANNEL`]. No broker of our own.
//!
//! Signals are hints, never data: the database stays the source of truth. A process that
//! receives one drops a cached row (a session, a group's roster) or wakes its devices'
//! waiters, which then re-read from the database. Each process sends through its own
//! connection, several signals per `pg_notify` round trip, and listens on another. When the
//! listening connection is lost, nothing may be assumed of what was missed: on reconnecting
//! the process drops every cached row and wakes every waiter ([`Signal::Resync`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// What this process does with a signal from another before the server's subscribers see
/// it (drop cached rows, step the tail); `false` once the store it serves is gone, which stops
/// the listener.
pub(crate) type Apply = Arc<dyn Fn(&Signal) -> bool + Send + Sync>;

/// The `NOTIFY` channel.
pub const CHANNEL: &str = "parley";
/// PostgreSQL refuses payloads of 8000 bytes or more; signals are cut to stay well below.
pub const MAX_PAYLOAD_BYTES: usize = 7000;
/// Signals sent per round trip at most.
const BATCH: usize = 32;

/// What one process tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Signal {
    /// Sessions were revoked: the one with this id, or any number (`None`: drop them all).
    #[serde(rename = "s")]
    Sessions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A group's roster or epoch changed (a commit).
    #[serde(rename = "r")]
    Roster { g: String },
    /// Devices to wake: `k` is what changed (`e` events up to position `p`, `a` events at
    /// positions not given, `k` key packages, `s` sessions), `d` the `[user_id, device_id]`
    /// pairs.
    #[serde(rename = "w")]
    Wake {
        k: char,
        #[serde(default)]
        p: i64,
        d: Vec<(String, String)>,
    },
    /// Events were queued for server `d`: its sender (wherever it runs) should look; with
    /// `r`, an operator asked to retry it now, cutting its backoff short.
    #[serde(rename = "o")]
    Outbox {
        d: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        r: bool,
    },
    /// An ephemeral message (`e`: its JSON as clients get it), for the connections of devices
    /// `d` in every process (never stored).
    #[serde(rename = "e")]
    Ephemeral { e: String, d: Vec<(String, String)> },
    /// Signals may have been missed (this process's listening connection was lost): drop
    /// every cached row and wake every waiter. Only ever raised locally.
    #[serde(rename = "x")]
    Resync,
    /// "I am here", every [`HEARTBEAT`]: wake-ups are sent only while another process is.
    #[serde(rename = "h")]
    Hello,
}

/// How often a process says it is here.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A process not heard from for this long is gone.
const PEER_GONE_AFTER: Duration = Duration::from_secs(10);

/// A signal with the process it came from.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sending process.
    o: u64,
    #[serde(flatten)]
    s: Signal,
}

/// This process's end of the cluster: sends signals and hands received ones to subscribers.
#[derive(Debug)]
pub struct Cluster {
    id: u64,
    out: mpsc::UnboundedSender<Signal>,
    incoming: broadcast::Sender<Signal>,
    /// When another process was last heard from (ms since this process started), 0 never.
    peer_seen_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    /// Processes heard from since start (a few ids).
    peers: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl Cluster {
    /// Starts the sending and listening connections to `url` (in the background; both
    /// reconnect on their own); received signals go through `apply` first.
    pub(crate) fn start(url: &str, apply: Apply) -> Arc<Cluster> {
        let id = rand_id();
        let (out, queued) = mpsc::unbounded_channel();
        let (incoming, _) = broadcast::channel(4096);
        let cluster = Arc::new(Cluster {
            id,
            out,
            incoming: incoming.clone(),
            peer_seen_ms: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            peers: std::sync::Mutex::new(std::collections::HashSet::new()),
        });
        tokio::spawn(send_loop(url.to_owned(), id, queued));
        tokio::spawn(listen_loop(
            url.to_owned(),
            Arc::downgrade(&cluster),
            apply,
            incoming,
        ));
        let heartbeat = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            while let Some(cluster) = heartbeat.upgrade() {
                cluster.send(Signal::Hello);
                drop(cluster);
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
        cluster
    }

    /// This process's id among those sharing the database (it names lease holders).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether another process has been heard from lately: wake-ups are worth sending.
    pub fn has_peers(&self) -> bool {
        let seen = self.peer_seen_ms.load(std::sync::atomic::Ordering::Relaxed);
        seen != 0 && self.elapsed_ms().saturating_sub(seen) < PEER_GONE_AFTER.as_millis() as u64
    }

    fn elapsed_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    /// Notes that process `id` was heard from; true the first time.
    fn peer_heard(&self, id: u64) -> bool {
        self.peer_seen_ms
            .store(self.elapsed_ms(), std::sync::atomic::Ordering::Relaxed);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        // Ids of processes long gone pile up over restarts: forget them all now and then.
        if peers.len() >= 1024 {
            peers.clear();
        }
        peers.insert(id)
    }

    /// Tells the other processes (wake-ups queued together go as one signal).
    pub fn send(&self, signal: Signal) {
        // Only fails once the runtime shuts down.
        let _ = self.out.send(signal);
    }

    /// Signals from the other processes (and [`Signal::Resync`]), for the server's
    /// notifier and outbox. A subscriber that lags behind gets `Lagged` and must treat it
    /// as a resync.
    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.incoming.subscribe()
    }
}

/// A random process id (two processes picking the same one is as likely as a UUID clash).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Cuts a wake signal so that each part's payload stays under [`MAX_PAYLOAD_BYTES`].
fn split(signal: Signal) -> Vec<Signal> {
    match signal {
        Signal::Wake { k, p, d } => {
            let mut parts = Vec::new();
            let mut current: Vec<(String, String)> = Vec::new();
            let mut bytes = 64;
            for pair in d {
                let size = pair.0.len() + pair.1.len() + 8;
                if bytes + size > MAX_PAYLOAD_BYTES && !current.is_empty() {
                    parts.push(Signal::Wake {
                        k,
                        p,
                        d: std::mem::take(&mut current),
                    });
                    bytes = 64;
                }
                bytes += size;
                current.push(pair);
            }
            if !current.is_empty() {
                parts.push(Signal::Wake { k, p, d: current });
            }
            parts
        }
        Signal::Ephemeral { e, d } => {
            // Each part carries the message; the devices are cut to fit beside it.
            let base = 64 + e.len();
            let mut parts = Vec::new();
            let mut current: Vec<(String, String)> = Vec::new();
            let mut bytes = base;
            for pair in d {
                let size = pair.0.len() + pair.1.len() + 8;
                if bytes + size > MAX_PAYLOAD_BYTES && !current.is_empty() {
                    parts.push(Signal::Ephemeral {
                        e: e.clone(),
                        d: std::mem::take(&mut current),
                    });
                    bytes = base;
                }
                bytes += size;
                current.push(pair);
            }
            if !current.is_empty() && base < MAX_PAYLOAD_BYTES {
                parts.push(Signal::Ephemeral { e, d: current });
            }
            parts
        }
        other => vec![other],
    }
}

/// How long to wait before reconnecting after a failure.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Signals taken off the queue at most per round of sending.
const QUEUE_ROUND: usize = 4096;

/// Sends queued signals, several per round trip, reconnecting when the connection fails
/// (signals that failed to go are dropped: they are hints, and a receiver that lost its own
/// connection resyncs). What queued up while the previous round trip ran goes in the next,
/// its wake-ups merged ([`merge`]): under load a process sends one wake-up per round trip
/// rather than one per message.
async fn send_loop(url: String, origin: u64, mut queued: mpsc::UnboundedReceiver<Signal>) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut round: Vec<Signal> = Vec::new();
    while let Some(first) = queued.recv().await {
        round.push(first);
        while round.len() < QUEUE_ROUND {
            match queued.try_recv() {
                Ok(more) => round.push(more),
                Err(_) => break,
            }
        }
        let payloads: Vec<String> = merge(std::mem::take(&mut round))
            .into_iter()
            .flat_map(split)
            .filter_map(|s| serde_json::to_string(&Envelope { o: origin, s }).ok())
            .collect();
        for batch in payloads.chunks(BATCH) {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = connect(&url).await;
            }
            let Some(c) = &client else {
                tokio::time::sleep(RECONNECT_AFTER).await;
                break;
            };
            let sql = (1..=batch.len())
                .map(|i| format!("pg_notify('{CHANNEL}', ${i})"))
                .collect::<Vec<_>>()
                .join(", ");
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = batch
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            if let Err(e) = c.execute(&format!("SELECT {sql}"), &params).await {
                tracing::warn!(error = %e, "cannot notify the other processes");
                client = None;
            }
        }
    }
}

/// Merges the wake-ups of one kind among `signals` into one, in place of the first: its
/// devices are all of theirs (each once) and its position the highest. A waiter told of a
/// later position than its own event's re-reads up to a position that is already committed
/// (positions are committed in order), so nothing is lost. Other signals keep their order.
fn merge(signals: Vec<Signal>) -> Vec<Signal> {
    let mut out: Vec<Signal> = Vec::with_capacity(signals.len());
    /// A kind of wake-up seen: its index in `out` and the devices already in it.
    type Seen = (char, usize, std::collections::HashSet<(String, String)>);
    let mut wakes: Vec<Seen> = Vec::new();
    for signal in signals {
        let Signal::Wake { k, p, d } = signal else {
            out.push(signal);
            continue;
        };
        match wakes.iter_mut().find(|(kind, _, _)| *kind == k) {
            Some((_, at, seen)) => {
                if let Some(Signal::Wake {
                    p: merged_p,
                    d: merged_d,
                    ..
                }) = out.get_mut(*at)
                {
                    *merged_p = (*merged_p).max(p);
                    for pair in d {
                        if seen.insert(pair.clone()) {
                            merged_d.push(pair);
                        }
                    }
                }
            }
            None => {
                let mut seen = std::collections::HashSet::new();
                let d: Vec<(String, String)> = d
                    .into_iter()
                    .filter(|pair| seen.insert(pair.clone()))
                    .collect();
                wakes.push((k, out.len(), seen));
                out.push(Signal::Wake { k, p, d });
            }
        }
    }
    out
}

/// The sending connection, whose driver runs in the background.
async fn connect(url: &str) -> Option<tokio_postgres::Client> {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            // A `NOTIFY` commits a transaction of its own, and PostgreSQL holds its
            // database-wide notify lock until that commit is flushed. Signals are hints about
            // data already committed, so they need not wait for the disk: without this, every
            // round trip cost an fsync, taken in turn by every process.
            if let Err(e) = client.batch_execute("SET synchronous_commit = off").await {
                tracing::warn!(error = %e, "cannot set up the connection notifying other processes");
                return None;
            }
            Some(client)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot connect to PostgreSQL to notify other processes");
            None
        }
    }
}

/// Listens on [`CHANNEL`] for as long as `memory` lives, reconnecting (and resyncing) when
/// the connection is lost.
async fn listen_loop(
    url: String,
    cluster: Weak<Cluster>,
    apply: Apply,
    incoming: broadcast::Sender<Signal>,
) {
    let mut first = true;
    loop {
        if cluster.strong_count() == 0 {
            return;
        }
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "cannot LISTEN for the other processes");
                    driver.abort();
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
                if !first {
                    // What was sent while we were away is lost: start over from the database.
                    if !apply(&Signal::Resync) {
                        driver.abort();
                        return;
                    }
                    let _ = incoming.send(Signal::Resync);
                }
                first = false;
                while let Some(payload) = rx.recv().await {
                    let Ok(envelope) = serde_json::from_str::<Envelope>(&payload) else {
                        tracing::warn!("unreadable signal from another process");
                        continue;
                    };
                    let Some(own) = cluster.upgrade() else {
                        driver.abort();
                        return;
                    };
                    if envelope.o == own.id {
                        continue;
                    }
                    // A process new to us: say hello at once, so that both send wake-ups
                    // from now on rather than from the next heartbeat.
                    if own.peer_heard(envelope.o) {
                        own.send(Signal::Hello);
                    }
                    if !apply(&envelope.s) {
                        driver.abort();
                        return;
                    }
                    let _ = incoming.send(envelope.s);
                }
                drop(client);
                tracing::warn!(
                    "lost the connection listening to the other processes; reconnecting"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to PostgreSQL to listen to other processes");
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_signals_are_cut_under_the_payload_limit_and_lose_no_device() {
        let devices: Vec<(String, String)> = (0..2000)
            .map(|i| {
                (
                    format!("@user{i}:some.server.example"),
                    format!("DEVICE{i:06}"),
                )
            })
            .collect();
        let parts = split(Signal::Wake {
            k: 'e',
            p: 42,
            d: devices.clone(),
        });
        assert!(parts.len() > 1);
        let mut seen = Vec::new();
        for part in parts {
            let payload = serde_json::to_string(&Envelope {
                o: 7,
                s: part.clone(),
            })
            .unwrap();
            assert!(payload.len() < MAX_PAYLOAD_BYTES, "{} bytes", payload.len());
            let Signal::Wake { d, p, .. } = part else {
                panic!("not a wake")
            };
            assert_eq!(p, 42);
            seen.extend(d);
        }
        assert_eq!(seen, devices);
    }

    #[test]
    fn ephemeral_signals_carry_the_message_in_every_part_under_the_payload_limit() {
        let devices: Vec<(String, String)> = (0..500)
            .map(|i| (format!("@user{i}:some.server.example"), format!("D{i:06}")))
            .collect();
        let event = format!("{{\"message\":\"{}\"}}", "A".repeat(2800));
        let parts = split(Signal::Ephemeral {
            e: event.clone(),
            d: devices.clone(),
        });
        assert!(parts.len() > 1);
        let mut seen = Vec::new();
        for part in parts {
            let payload = serde_json::to_string(&Envelope {
                o: 7,
                s: part.clone(),
            })
            .unwrap();
            assert!(payload.len() < MAX_PAYLOAD_BYTES, "{} bytes", payload.len());
            let Signal::Ephemeral { e, d } = part else {
                panic!("not an ephemeral signal")
            };
            assert_eq!(e, event);
            seen.extend(d);
        }
        assert_eq!(seen, devices);
    }

    #[test]
    fn signals_read_back_as_sent() {
        for s in [
            Signal::Sessions { id: None },
            Signal::Sessions {
                id: Some("abc".into()),
            },
            Signal::Roster { g: "!g:h".into() },
            Signal::Outbox {
                d: "b.example".into(),
                r: false,
            },
            Signal::Outbox {
                d: "b.example".into(),
                r: true,
            },
        ] {
            let text = serde_json::to_string(&Envelope { o: 1, s: s.clone() }).unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!((back.o, back.s), (1, s));
        }
    }

    fn pair(u: &str, d: &str) -> (String, String) {
        (u.to_owned(), d.to_owned())
    }

    #[test]
    fn wake_ups_queued_together_go_as_one_per_kind_with_every_device_once_and_the_last_position() {
        let merged = merge(vec![
            Signal::Wake {
                k: 'e',
                p: 5,
                d: vec![pair("@a:x", "A"), pair("@b:x", "B")],
            },
            Signal::Roster { g: "g1".into() },
            Signal::Wake {
                k: 'k',
                p: 0,
                d: vec![pair("@a:x", "A")],
            },
            Signal::Wake {
                k: 'e',
                p: 9,
                d: vec![pair("@b:x", "B"), pair("@c:x", "C")],
            },
            Signal::Wake {
                k: 'e',
                p: 7,
                d: vec![pair("@c:x", "C"), pair("@c:x", "C")],
            },
            Signal::Sessions { id: None },
        ]);
        assert_eq!(
            merged,
            vec![
                Signal::Wake {
                    k: 'e',
                    p: 9,
                    d: vec![pair("@a:x", "A"), pair("@b:x", "B"), pair("@c:x", "C")],
                },
                Signal::Roster { g: "g1".into() },
                Signal::Wake {
                    k: 'k',
                    p: 0,
                    d: vec![pair("@a:x", "A")],
                },
                Signal::Sessions { id: None },
            ]
        );
    }
}
