//! SQLite's single writer: a dedicated thread that owns the write connection and commits
//! concurrent writes together ([`crate::writer`]'s group commit).
//!
//! SQLite serialises writers anyway, and with `synchronous=FULL` every commit costs an fsync.
//! The queries run inline on this thread (the connection's
//! [`Inline`](crate::sqlite_conn::Inline) runtime), so a write costs no thread hand-off per
//! query.
//!
//! WAL checkpoints (copying the log back into the database file) happen in two places:
//! - A background thread with its own connection checkpoints every
//!   [`BACKGROUND_CHECKPOINT_EVERY`] (`PASSIVE`: it copies what no reader still needs and never
//!   waits for the writer). It does most of the copying, off the writer's path.
//! - This thread checkpoints too, right after a commit that leaves [`CHECKPOINT_PAGES`] pages
//!   or more in the log (SQLite's auto-checkpoint). With the background thread close behind,
//!   it has only the last few frames to copy. It is what keeps the log small: SQLite starts the
//!   log over only when a write transaction begins with every frame copied back, which under a
//!   steady stream of writes happens only if the writer itself checkpoints between two of them.
//!   A log that is written over rather than appended to also makes each commit's `fdatasync`
//!   cheaper: the file's size and blocks stay as they are.
//!
//! If the two meet, the second finds the checkpoint lock taken and skips its turn at once.

use std::sync::mpsc;

use diesel_async::{AsyncConnection, TransactionManager};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;

use crate::fixed_sql::FixedSql;
use crate::sqlite_conn::SqliteConn;
use crate::writer::{run_batch, take_batch, BatchConn, Command, WriterHandle};
use crate::{StoreError, StoreResult};

/// Pages in the write-ahead log after which a commit checkpoints it (SQLite's default).
const CHECKPOINT_PAGES: u32 = 1000;

/// How often the background thread checkpoints: often enough that the writer's own checkpoint
/// finds little left to copy (at full load the log grows by about 10,000 pages a second).
const BACKGROUND_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

type Tm = <SqliteConn as AsyncConnection>::TransactionManager;

impl BatchConn for SqliteConn {
    fn begin(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        // IMMEDIATE: take the write lock now, waiting (busy timeout) if a reader holds it for
        // a moment, as one does to re-read a WAL header it saw half-written. A deferred
        // transaction would instead upgrade at its first write, and SQLite fails such an
        // upgrade at once with "database is locked" rather than wait.
        self.spawn_blocking(|inner| {
            diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                inner,
                "BEGIN IMMEDIATE",
            )
        })
    }

    fn fixed(&mut self, sql: &'static str) -> BoxFuture<'_, diesel::QueryResult<()>> {
        // Prepared once and reused (diesel's own savepoints are parsed anew each time).
        use diesel_async::RunQueryDsl as _;
        FixedSql::new(diesel::sql_query(sql))
            .execute(self)
            .map(|r| r.map(drop))
            .boxed()
    }

    fn commit(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        Box::pin(Tm::commit_transaction(self))
    }

    fn rollback(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        Box::pin(Tm::rollback_transaction(self))
    }

    /// SQLite's statements cost no round trip: every write runs on its own.
    type Grouped = std::convert::Infallible;

    fn run_grouped(
        &mut self,
        group: Vec<Self::Grouped>,
    ) -> BoxFuture<'_, Vec<(bool, crate::writer::Finish)>> {
        Box::pin(async move { group.into_iter().map(|never| match never {}).collect() })
    }
}

/// Handle to the writer thread; writes are submitted through its [`WriterHandle`].
pub(crate) struct SqliteWriter {
    handle: WriterHandle<SqliteConn>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Dropping it stops the background checkpointer.
    checkpointer: std::sync::Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl std::ops::Deref for SqliteWriter {
    type Target = WriterHandle<SqliteConn>;

    fn deref(&self) -> &Self::Target {
        &self.handle
    }
}

impl SqliteWriter {
    /// Starts the writer thread on `conn` and the background checkpointer on `checkpoint_conn`;
    /// `reopen` replaces the writer connection if a write panics.
    pub(crate) fn start(
        mut conn: SqliteConn,
        mut checkpoint_conn: diesel::SqliteConnection,
        reopen: impl Fn() -> StoreResult<SqliteConn> + Send + 'static,
    ) -> StoreResult<SqliteWriter> {
        checkpoint_after_commits(&mut conn)?;
        let (stop_checkpoints, stop_signal) = mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                use diesel::connection::SimpleConnection as _;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stop_signal.recv_timeout(BACKGROUND_CHECKPOINT_EVERY)
                {
                    // PASSIVE: copies what no reader still needs and never waits for the writer.
                    if let Err(e) = checkpoint_conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);")
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Pool(format!("cannot start the SQLite checkpointer: {e}")))?;
        let (handle, receiver) = WriterHandle::new("SQLite");
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, receiver, reopen))
            .map_err(|e| StoreError::Pool(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteWriter {
            handle,
            thread: std::sync::Mutex::new(Some(thread)),
            checkpointer: std::sync::Mutex::new(Some((stop_checkpoints, checkpointer))),
        })
    }

    /// Finishes the writes already queued, closes the connection (SQLite checkpoints the WAL)
    /// and waits for the thread to end. Later writes fail.
    pub(crate) fn stop(&self) {
        self.handle.stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Makes the writer connection checkpoint the log once it holds [`CHECKPOINT_PAGES`] pages.
fn checkpoint_after_commits(conn: &mut SqliteConn) -> StoreResult<()> {
    let pragma = format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};");
    futures_executor::block_on(diesel_async::SimpleAsyncConnection::batch_execute(
        conn, &pragma,
    ))?;
    Ok(())
}

/// The writer thread: the queries run inline on it (the connection's `Inline` runtime), so a
/// write costs no thread hand-off per query.
fn writer_loop(
    mut conn: SqliteConn,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command<SqliteConn>>,
    reopen: impl Fn() -> StoreResult<SqliteConn>,
) {
    let mut stopping = false;
    while !stopping {
        let first = match commands.blocking_recv() {
            Some(Command::Write(job)) => job,
            Some(Command::Stop) | None => break,
        };
        let (batch, stop) = take_batch(first, &mut commands);
        stopping = stop;
        let size = batch.len();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures_executor::block_on(run_batch(&mut conn, batch))
        }));
        if ran.is_err() {
            // The callers of this batch see their writes dropped; the connection may be
            // mid-transaction, so start over on a fresh one.
            tracing::error!(
                size,
                "a write panicked; reopening the SQLite writer connection"
            );
            match reopen() {
                Ok(mut fresh) => {
                    if let Err(e) = checkpoint_after_commits(&mut fresh) {
                        tracing::warn!(error = %e, "cannot set the checkpoint threshold");
                    }
                    conn = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the SQLite writer; writes stop");
                    return;
                }
            }
        }
    }
    tracing::debug!("SQLite writer stopped");
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    use crate::db::Pools;
    use crate::schema::users;
    use crate::{testing, Store, StoreConfig, StoreError, StoreResult};

    /// A store on a fresh SQLite file, with the directory holding it.
    async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&testing::sqlite_url(dir.path()), &StoreConfig::default())
            .await
            .unwrap();
        (dir, store)
    }

    /// Inserts user `name` (with a password hash of `hash_bytes`), then fails if `fail`.
    async fn insert_user(
        conn: &mut super::SqliteConn,
        name: String,
        hash_bytes: usize,
        fail: bool,
    ) -> StoreResult<()> {
        diesel::insert_into(users::table)
            .values((
                users::user_id.eq(&name),
                users::localpart.eq(&name),
                users::password_hash.eq("h".repeat(hash_bytes)),
                users::created_ts.eq(0i64),
            ))
            .execute(conn)
            .await?;
        if fail {
            return Err(StoreError::Pool("failed on purpose".into()));
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unguarded_write_that_fails_takes_its_whole_batch_with_it_and_a_guarded_one_only_itself(
    ) {
        let (_dir, store) = sqlite_store().await;
        let Pools::Sqlite { writer, .. } = &*store.pools else {
            unreachable!("a SQLite store")
        };
        let writer = std::sync::Arc::new(writer);
        for unguarded_fails in [true, false] {
            let tag = if unguarded_fails { "u" } else { "g" };
            // A slow first write holds the thread, so the three after it queue into one batch.
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let slow = writer.run(
                move |_conn| {
                    Box::pin(async move {
                        let _ = started.send(());
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        Ok(())
                    })
                },
                |_| (),
            );
            let a = format!("@{tag}a:x");
            let b = format!("@{tag}b:x");
            let c = format!("@{tag}c:x");
            let (slow, (first, failing, last)) = tokio::join!(slow, async {
                running.await.unwrap();
                let first =
                    writer.run(move |conn| Box::pin(insert_user(conn, a, 0, false)), |_| ());
                let failing = async {
                    if unguarded_fails {
                        writer
                            .run_unguarded(
                                move |conn| Box::pin(insert_user(conn, b, 0, true)),
                                |_| (),
                            )
                            .await
                    } else {
                        writer
                            .run(move |conn| Box::pin(insert_user(conn, b, 0, true)), |_| ())
                            .await
                    }
                };
                let last = writer
                    .run_unguarded(move |conn| Box::pin(insert_user(conn, c, 0, false)), |_| ());
                tokio::join!(first, failing, last)
            });
            slow.unwrap();
            assert!(failing.is_err());
            let kept: Vec<String> = store
                .accounts()
                .user(&format!("@{tag}a:x"))
                .await
                .unwrap()
                .into_iter()
                .chain(store.accounts().user(&format!("@{tag}b:x")).await.unwrap())
                .chain(store.accounts().user(&format!("@{tag}c:x")).await.unwrap())
                .map(|u| u.user_id)
                .collect();
            if unguarded_fails {
                assert!(first.is_err() && last.is_err(), "{first:?} {last:?}");
                assert!(kept.is_empty(), "{kept:?}");
            } else {
                first.unwrap();
                last.unwrap();
                assert_eq!(kept, [format!("@{tag}a:x"), format!("@{tag}c:x")]);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_wal_is_written_over_and_stays_small_under_a_steady_stream_of_writes() {
        let (dir, store) = sqlite_store().await;
        let Pools::Sqlite { writer, .. } = &*store.pools else {
            unreachable!("a SQLite store")
        };
        let writer = std::sync::Arc::new(writer);
        // 16 writers back to back, each row about 3 KiB: some 6,000 pages of WAL frames in all,
        // with never a pause for a checkpoint to catch up in.
        let rows_each = 400;
        let writers = (0..16).map(|w| {
            let writer = writer.clone();
            async move {
                for i in 0..rows_each {
                    let name = format!("@w{w}-{i}:x");
                    writer
                        .run(
                            move |conn| Box::pin(insert_user(conn, name, 3000, false)),
                            |_| (),
                        )
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(writers).await;
        let wal = std::fs::metadata(dir.path().join("parley.db-wal"))
            .unwrap()
            .len();
        // Appended to without a restart, the WAL would hold every frame: over 24 MB.
        assert!(wal < 12 << 20, "the WAL grew to {wal} bytes");
        for last in ["@w0-399:x", "@w15-399:x"] {
            assert!(
                store.accounts().user(last).await.unwrap().is_some(),
                "{last} was written"
            );
        }
    }
}
