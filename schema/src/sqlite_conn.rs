//! The SQLite connection: its type, the runtime its queries run on, and how it is opened.
//! Shared by the store (readers, migrations) and the single writer ([`crate::sqlite_writer`]).

use std::error::Error as StdError;

use diesel::Connection as _;
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use futures_util::future::BoxFuture;

use crate::{StoreError, StoreResult};

/// The SQLite connection type used through diesel-async: queries run inline on whichever thread
/// the store chose (see [`crate::sqlite_writer`]).
pub type SqliteConn = SyncConnectionWrapper<diesel::SqliteConnection, Inline>;

/// Runs a "blocking" task immediately on the calling thread. SQLite connections use it because
/// the store already picked the thread: the writer thread, or a runtime worker for short reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn StdError + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// Opens a sync SQLite connection with the store's pragmas (used before it is wrapped).
pub(crate) fn establish_sync(
    path: &str,
    busy_timeout_ms: u64,
) -> StoreResult<diesel::SqliteConnection> {
    use diesel::connection::SimpleConnection as _;
    let mut conn = diesel::SqliteConnection::establish(path)
        .map_err(|e| StoreError::Pool(format!("{path}: {e}")))?;
    conn.batch_execute(&sqlite_pragmas(busy_timeout_ms))?;
    Ok(conn)
}

/// The busy timeout comes first so that switching to WAL waits for a closing connection.
/// WAL lets readers run beside the writer; `synchronous=FULL` makes every commit durable before
/// it is acknowledged. `temp_store=MEMORY` keeps the statement journal of a batch's savepoints
/// in memory: every write of a batch copies the pages it changes there, and past 64 KiB SQLite
/// would otherwise spill it to a temporary file (a write syscall per page).
pub(crate) fn sqlite_pragmas(busy_timeout_ms: u64) -> String {
    format!(
        "PRAGMA busy_timeout = {busy_timeout_ms}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;"
    )
}
