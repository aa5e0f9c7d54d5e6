//! PostgreSQL's writer: a task that owns one connection and commits concurrent writes
//! together ([`crate::writer`]'s group commit), so one WAL flush carries a whole batch.
//!
//! Reads use the pool; only writes come here. The connection is the pool's kind (with
//! `synchronous_commit = on`), held for the life of the store and replaced when a batch
//! leaves it unusable.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use tokio::sync::mpsc;

use crate::writer::{run_batch, take_batch, BatchConn, Command, WriterHandle};
use crate::{StoreError, StoreResult};

/// How long the writer waits between attempts to reconnect.
const RECONNECT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

type Tm = <AsyncPgConnection as AsyncConnection>::TransactionManager;

impl BatchConn for AsyncPgConnection {
    fn begin(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        Box::pin(Tm::begin_transaction(self))
    }

    fn fixed(&mut self, sql: &'static str) -> BoxFuture<'_, diesel::QueryResult<()>> {
        // The simple query protocol: one round trip, nothing to prepare.
        Box::pin(self.batch_execute(sql))
    }

    fn commit(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        Box::pin(Tm::commit_transaction(self))
    }

    fn rollback(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        Box::pin(Tm::rollback_transaction(self))
    }

    /// `pg_append` runs a group as one statement.
    const GROUP_IS_ONE_STATEMENT: bool = true;

    type Grouped = crate::pg_append::PendingAppend;

    fn run_grouped(
        &mut self,
        group: Vec<Self::Grouped>,
    ) -> BoxFuture<'_, Vec<(bool, crate::writer::Finish)>> {
        crate::pg_append::run(self, group)
    }
}

/// Handle to the writer task; writes are submitted through its [`WriterHandle`].
pub(crate) struct PgWriter {
    handle: WriterHandle<AsyncPgConnection>,
}

impl std::ops::Deref for PgWriter {
    type Target = WriterHandle<AsyncPgConnection>;

    fn deref(&self) -> &Self::Target {
        &self.handle
    }
}

impl PgWriter {
    /// Connects to `url` and starts the writer task on the current runtime.
    pub(crate) async fn start(url: &str) -> StoreResult<PgWriter> {
        let conn = establish_postgres(url)
            .await
            .map_err(|e| StoreError::Pool(format!("cannot connect the PostgreSQL writer: {e}")))?;
        let (handle, receiver) = WriterHandle::new("PostgreSQL");
        tokio::spawn(writer_loop(conn, receiver, url.to_owned()));
        Ok(PgWriter { handle })
    }

    /// Finishes the writes already queued, then the task ends. Later writes fail. Nothing to
    /// wait for: every acknowledged write is already committed.
    pub(crate) fn stop(&self) {
        self.handle.stop();
    }
}

async fn writer_loop(
    mut conn: AsyncPgConnection,
    mut commands: mpsc::UnboundedReceiver<Command<AsyncPgConnection>>,
    url: String,
) {
    loop {
        let first = match commands.recv().await {
            Some(Command::Write(job)) => job,
            Some(Command::Stop) | None => break,
        };
        let (batch, stopping) = take_batch(first, &mut commands);
        let size = batch.len();
        let healthy = std::panic::AssertUnwindSafe(run_batch(&mut conn, batch))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                // The callers of this batch see their writes dropped.
                tracing::error!(size, "a write panicked");
                false
            });
        if stopping {
            break;
        }
        if !healthy {
            // The connection may be mid-transaction or gone: start over on a fresh one.
            match reconnect(&url, &mut commands).await {
                Some(fresh) => conn = fresh,
                None => break,
            }
        }
    }
    tracing::debug!("PostgreSQL writer stopped");
}

/// A fresh writer connection. While the database cannot be reached, writes that queue are
/// failed at once rather than left waiting. `None` if the store was closed meanwhile.
async fn reconnect(
    url: &str,
    commands: &mut mpsc::UnboundedReceiver<Command<AsyncPgConnection>>,
) -> Option<AsyncPgConnection> {
    loop {
        match establish_postgres(url).await {
            Ok(conn) => {
                tracing::info!("PostgreSQL writer reconnected");
                return Some(conn);
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL writer cannot reconnect; writes fail");
                // Dropping a queued job tells its caller the write was not made.
                loop {
                    match commands.try_recv() {
                        Ok(Command::Write(_)) => {}
                        Ok(Command::Stop) => return None,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    }
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
        }
    }
}

/// A PostgreSQL connection as the store uses them: the pool's and the writer's.
pub(crate) async fn establish_postgres(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    // Acknowledged writes must be on disk: never let a session relax this.
    conn.batch_execute("SET synchronous_commit = on")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}
