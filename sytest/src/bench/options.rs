//! What `parley-bench relay` was asked to do: read by the run ([`super::relay`]) and printed
//! with its results ([`super::report`]).

use std::path::PathBuf;
use std::time::Duration;

/// What `parley-bench relay` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub senders: usize,
    pub receivers: usize,
    pub groups: usize,
    pub duration: Duration,
    /// `Some(admin URL)` for PostgreSQL.
    pub postgres_url: Option<String>,
    pub federated: bool,
    /// Also measure this many `parley serve` processes of one server on one PostgreSQL
    /// database (1: not measured).
    pub processes: usize,
    /// `worker_threads` of every parley process (unset: one per core).
    pub worker_threads: Option<usize>,
    pub idle_connections: usize,
    pub plaintext_bytes: usize,
    pub parley: Option<PathBuf>,
    pub keep: bool,
}
