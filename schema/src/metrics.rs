//! Metric names the store records through the `metrics` facade (a process that installs no
//! recorder records nothing).

/// Writes per database transaction of the group-commit writer.
pub const COMMIT_BATCH_SIZE: &str = "parley_db_commit_batch_size";
/// Time from a batch's start to its commit, in seconds.
pub const COMMIT_DURATION: &str = "parley_db_commit_duration_seconds";
/// Time a read waited for a pooled connection, in seconds.
pub const POOL_WAIT: &str = "parley_db_pool_wait_seconds";
