//! Group commit, for either backend: one task owns the write connection, takes every write
//! that is waiting, runs each in its own savepoint inside one transaction, commits once, and
//! only then answers each caller.
//!
//! - A write is acknowledged only after the transaction holding it is durable.
//! - One failing write rolls back alone without failing the others of its batch.
//! - Batches commit one after the other, and each write's `after` hook runs right after its
//!   batch has committed, in commit order: that is what lets the store publish new stream
//!   positions to the in-memory [`crate::tail`] in order, on both backends.
//!
//! Why one writer on PostgreSQL too: every write that takes stream positions updates the one
//! stream-position row (and a send also its group's row), and PostgreSQL holds those row locks
//! until the commit has been flushed. Written one request per transaction, writes queue on
//! the lock and commit one flush at a time; batched, one flush carries a whole batch
//! (docs/postgres.md has the measurements). SQLite serialises writers anyway.
//!
//! The backend-specific parts (how a transaction begins, the thread or task that runs the
//! loop) are in [`crate::sqlite_writer`] and [`crate::pg_writer`].

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::{StoreError, StoreResult};

/// Most writes committed in one transaction; bounds the latency a batch adds to its first write.
pub(crate) const MAX_BATCH: usize = 256;

/// Called once the batch holding a write has committed (`Ok`) or failed to (`Err`).
pub(crate) type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One caller's write. Given `true`, it runs in a savepoint of the batch transaction; given
/// `false` (it is alone in its batch, or unguarded), directly in the transaction. Returns
/// whether it succeeded, and what to do once the batch has committed.
type JobFn<C> = Box<dyn for<'c> FnOnce(&'c mut C, bool) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// How a job is run.
enum Work<C: BatchConn> {
    /// On its own.
    Exclusive(JobFn<C>),
    /// Together with the grouped writes next to it in its batch, in a few statements for all
    /// of them ([`BatchConn::run_grouped`]). Always unguarded.
    Grouped(C::Grouped),
}

/// A write waiting for the writer.
pub(crate) struct Job<C: BatchConn> {
    run: Work<C>,
    /// Whether the write may fail after it has changed something, and so needs a savepoint
    /// to roll back alone. A write without one fails its whole batch if it fails.
    guarded: bool,
}

/// What the writer is told.
pub(crate) enum Command<C: BatchConn> {
    Write(Job<C>),
    Stop,
}

/// The transaction statements the batch loop needs from a connection.
pub(crate) trait BatchConn: Send + Sync + 'static {
    /// Begins the batch transaction.
    fn begin(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>>;
    /// Runs one fixed statement (the savepoint statements).
    fn fixed(&mut self, sql: &'static str) -> BoxFuture<'_, diesel::QueryResult<()>>;
    /// Commits the batch transaction.
    fn commit(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>>;
    /// Rolls the batch transaction back.
    fn rollback(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>>;

    /// Whether [`BatchConn::run_grouped`] runs a group as one statement, which commits by
    /// itself when the batch holds nothing else.
    const GROUP_IS_ONE_STATEMENT: bool = false;

    /// A write this connection runs in one go with the like writes next to it in a batch
    /// (on PostgreSQL, appends of messages: one statement per step for all of them instead of
    /// one per message).
    type Grouped: Send + 'static;

    /// Runs `group` (in submission order) and, for each, says whether it succeeded and what
    /// to do once the batch has committed ([`finishing`]).
    fn run_grouped(&mut self, group: Vec<Self::Grouped>) -> BoxFuture<'_, Vec<(bool, Finish)>>;
}

/// The callers' side of a writer: submits writes and waits for their outcome.
pub(crate) struct WriterHandle<C: BatchConn> {
    commands: mpsc::UnboundedSender<Command<C>>,
    /// Named in errors ("the SQLite writer has stopped").
    name: &'static str,
}

impl<C: BatchConn> WriterHandle<C> {
    /// A handle and the receiving end its loop reads.
    pub(crate) fn new(name: &'static str) -> (Self, mpsc::UnboundedReceiver<Command<C>>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        (WriterHandle { commands, name }, receiver)
    }

    /// Runs `write` on the writer connection and returns its result once it is durable.
    /// `after` runs on the writer once the batch holding the write has committed, before the
    /// caller is answered and even if the caller has gone away: given the result when the
    /// write succeeded and was committed, `None` otherwise. Batches commit in order, so
    /// `after` hooks run in commit order.
    pub(crate) async fn run<R, F, A>(&self, write: F, after: A) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, StoreResult<R>> + Send + 'static,
        A: FnOnce(Option<&mut R>) + Send + 'static,
    {
        self.submit(write, after, true).await
    }

    /// [`WriterHandle::run`] for a write that fails only on a storage error once it has
    /// changed anything (its refusals come before its first change). It runs without a
    /// savepoint of its own (on SQLite a statement-journal copy of every page it touches, on
    /// PostgreSQL two round trips); if it does fail, its whole batch is rolled back and every
    /// write of it answered with the error.
    pub(crate) async fn run_unguarded<R, F, A>(&self, write: F, after: A) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, StoreResult<R>> + Send + 'static,
        A: FnOnce(Option<&mut R>) + Send + 'static,
    {
        self.submit(write, after, false).await
    }

    async fn submit<R, F, A>(&self, write: F, after: A, guarded: bool) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, StoreResult<R>> + Send + 'static,
        A: FnOnce(Option<&mut R>) + Send + 'static,
    {
        let (done, outcome) = tokio::sync::oneshot::channel::<StoreResult<R>>();
        let run: JobFn<C> = Box::new(move |conn, isolate| {
            Box::pin(async move {
                let result = if isolate {
                    in_savepoint(conn, write).await
                } else {
                    write(conn).await
                };
                finishing(result, after, done)
            })
        });
        self.queue(Work::Exclusive(run), guarded, outcome).await
    }

    /// Submits a write the connection runs together with the like writes next to it in its
    /// batch ([`BatchConn::run_grouped`]). `make` builds it around the sender of its answer.
    pub(crate) async fn run_grouped<R>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<R>>) -> C::Grouped,
    ) -> StoreResult<R> {
        let (done, outcome) = tokio::sync::oneshot::channel::<StoreResult<R>>();
        self.queue(Work::Grouped(make(done)), false, outcome).await
    }

    async fn queue<R>(
        &self,
        run: Work<C>,
        guarded: bool,
        outcome: tokio::sync::oneshot::Receiver<StoreResult<R>>,
    ) -> StoreResult<R> {
        self.commands
            .send(Command::Write(Job { run, guarded }))
            .map_err(|_| StoreError::Pool(format!("the {} writer has stopped", self.name)))?;
        outcome
            .await
            .map_err(|_| StoreError::Pool(format!("the {} writer dropped a write", self.name)))?
    }

    /// Tells the loop to finish the writes already queued and stop. Later writes fail.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// Whether a write succeeded, and what to do once its batch has committed (or failed to):
/// run `after`, then answer the caller through `done`.
pub(crate) fn finishing<R, A>(
    result: StoreResult<R>,
    after: A,
    done: tokio::sync::oneshot::Sender<StoreResult<R>>,
) -> (bool, Finish)
where
    R: Send + 'static,
    A: FnOnce(Option<&mut R>) + Send + 'static,
{
    let succeeded = result.is_ok();
    let finish: Finish = Box::new(move |committed| {
        let answer = match committed {
            Ok(()) => {
                let mut result = result;
                after(result.as_mut().ok());
                result
            }
            Err(e) => {
                after(None);
                Err(StoreError::Pool(format!("commit failed: {e}")))
            }
        };
        // The caller may have gone away; its write stands either way.
        let _ = done.send(answer);
    });
    (succeeded, finish)
}

/// Runs one write in a savepoint: its own changes roll back if it fails. A transaction the
/// write opens nests inside it.
async fn in_savepoint<C, R, F>(conn: &mut C, write: F) -> StoreResult<R>
where
    C: BatchConn,
    F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, StoreResult<R>>,
{
    conn.fixed("SAVEPOINT batched_write").await?;
    let result = write(conn).await;
    if result.is_err() {
        conn.fixed("ROLLBACK TO batched_write").await?;
    }
    conn.fixed("RELEASE batched_write").await?;
    result
}

/// The next batch: `first`, then everything that queued while the previous batch was
/// committing, up to [`MAX_BATCH`]. Also says whether a stop was among them.
pub(crate) fn take_batch<C: BatchConn>(
    first: Job<C>,
    commands: &mut mpsc::UnboundedReceiver<Command<C>>,
) -> (Vec<Job<C>>, bool) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(Command::Write(job)) => batch.push(job),
            Ok(Command::Stop) => return (batch, true),
            Err(_) => break,
        }
    }
    (batch, false)
}

/// Runs `batch` in one transaction and answers each of its writes. Returns whether the
/// transaction committed (or, for a lone failed write, rolled back cleanly); `false` tells a
/// loop that the connection may be unusable.
pub(crate) async fn run_batch<C: BatchConn>(conn: &mut C, batch: Vec<Job<C>>) -> bool {
    let (size, started) = (batch.len(), std::time::Instant::now());
    let committed = commit_batch(conn, batch).await;
    metrics::histogram!(crate::metrics::COMMIT_BATCH_SIZE).record(size as f64);
    metrics::histogram!(crate::metrics::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
    committed
}

/// [`run_batch`] without its metrics.
async fn commit_batch<C: BatchConn>(conn: &mut C, batch: Vec<Job<C>>) -> bool {
    // A batch of grouped writes only, where the connection runs a group as one statement,
    // needs no transaction: the statement is atomic and durable by itself (two round trips
    // fewer per batch).
    let one_statement =
        C::GROUP_IS_ONE_STATEMENT && batch.iter().all(|j| matches!(j.run, Work::Grouped(_)));
    if one_statement {
        let group = batch
            .into_iter()
            .filter_map(|j| match j.run {
                Work::Grouped(g) => Some(g),
                Work::Exclusive(_) => None,
            })
            .collect();
        let mut healthy = true;
        for (succeeded, finish) in conn.run_grouped(group).await {
            // Each failed write already holds its error, and the statement changed nothing;
            // a failure may also mean the connection is gone.
            healthy &= succeeded;
            finish(Ok(()));
        }
        return healthy;
    }
    if let Err(e) = conn.begin().await {
        // Nothing ran: dropping the jobs tells each caller its write was not made.
        tracing::error!(error = %e, "cannot begin a write transaction");
        return false;
    }
    let size = batch.len();
    let started = std::time::Instant::now();
    let mut finishes = Vec::with_capacity(size);
    // Whether a write that ran outside a savepoint failed: then nothing of the batch stands.
    let mut unguarded_failed = false;
    let mut jobs = batch.into_iter().peekable();
    while let Some(job) = jobs.next() {
        if unguarded_failed {
            // Dropped unrun: its caller learns the write was not made.
            continue;
        }
        match job.run {
            Work::Exclusive(run) => {
                // A write alone in its batch needs no savepoint: if it fails, the whole
                // transaction (only its own changes) is rolled back instead.
                let isolate = size > 1 && job.guarded;
                let (succeeded, finish) = run(conn, isolate).await;
                unguarded_failed = !succeeded && !isolate;
                finishes.push(finish);
            }
            Work::Grouped(first) => {
                let mut group = vec![first];
                while let Some(Job {
                    run: Work::Grouped(_),
                    ..
                }) = jobs.peek()
                {
                    if let Some(Job {
                        run: Work::Grouped(next),
                        ..
                    }) = jobs.next()
                    {
                        group.push(next);
                    }
                }
                for (succeeded, finish) in conn.run_grouped(group).await {
                    unguarded_failed |= !succeeded;
                    finishes.push(finish);
                }
            }
        }
    }
    let ran = started.elapsed();
    let mut healthy = true;
    let committed = if unguarded_failed {
        if let Err(e) = conn.rollback().await {
            tracing::error!(error = %e, "rollback failed");
            healthy = false;
        }
        if size == 1 {
            // The lone write already holds its own error.
            Ok(())
        } else {
            tracing::warn!(
                size,
                "a write failed outside a savepoint; its batch is rolled back"
            );
            Err("another write of its batch failed".to_owned())
        }
    } else {
        conn.commit().await.map_err(|e| {
            tracing::error!(error = %e, "group commit failed");
            healthy = false;
            e.to_string()
        })
    };
    tracing::trace!(
        size,
        run_us = ran.as_micros() as u64,
        commit_us = (started.elapsed() - ran).as_micros() as u64,
        "group commit"
    );
    for finish in finishes {
        finish(committed.clone());
    }
    healthy
}
