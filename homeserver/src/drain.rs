//! Graceful drain on shutdown (SIGTERM or SIGINT): readiness answers 503 so a load balancer
//! stops sending, long-polls answer at once with what they have, WebSockets close with a
//! reconnect hint, and the server waits a bounded time for them before it exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// WebSocket close code for a drain: 1012 "Service Restart" (RFC 6455 registry), which tells
/// a client to reconnect, to another process or after a moment.
pub const RESTART_CLOSE_CODE: u16 = 1012;

/// Whether the server drains, and how many WebSockets are open.
#[derive(Debug)]
pub struct Drain {
    started: watch::Sender<bool>,
    open_sockets: Arc<AtomicUsize>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            started: watch::Sender::new(false),
            open_sockets: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Counts one open WebSocket until dropped.
#[derive(Debug)]
pub struct OpenSocket(Arc<AtomicUsize>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drain {
    /// Starts the drain (once; later calls change nothing).
    pub fn start(&self) {
        self.started.send_replace(true);
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves once the drain has started (at once if it has).
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we are borrowed.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Counts a WebSocket as open while the guard lives.
    pub fn socket_opened(&self) -> OpenSocket {
        self.open_sockets.fetch_add(1, Ordering::Relaxed);
        OpenSocket(self.open_sockets.clone())
    }

    /// WebSockets open now.
    pub fn open_sockets(&self) -> usize {
        self.open_sockets.load(Ordering::Relaxed)
    }

    /// Waits until every WebSocket has closed or `within` has passed; returns how many are
    /// still open.
    pub async fn sockets_closed(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.open_sockets() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open_sockets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_drain_wakes_waiters_and_counts_sockets_down() {
        let drain = Arc::new(Drain::default());
        let socket = drain.socket_opened();
        assert_eq!(drain.open_sockets(), 1);
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.started().await })
        };
        assert!(!drain.is_draining());
        drain.start();
        waiter.await.unwrap();
        assert!(drain.is_draining());
        assert_eq!(drain.sockets_closed(Duration::from_millis(50)).await, 1);
        drop(socket);
        assert_eq!(drain.sockets_closed(Duration::from_secs(1)).await, 0);
    }
}
