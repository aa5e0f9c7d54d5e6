//! Connections, pools and migrations for both backends.

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

use crate::cache::GenCache;
use crate::pg_writer::PgWriter;
use crate::rows::{EpochRoster, Session};
use crate::sqlite_conn::{establish_sync, sqlite_pragmas, Inline, SqliteConn};
use crate::sqlite_writer::SqliteWriter;
use crate::tail::Tail;
use crate::{StoreError, StoreResult};

pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Connections in the PostgreSQL pool, or SQLite reader connections.
    pub max_connections: usize,
    /// How long SQLite waits on a locked database before failing, in milliseconds.
    pub sqlite_busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_connections: 8,
            sqlite_busy_timeout_ms: 5000,
        }
    }
}

pub(crate) enum Pools {
    /// SQLite: one writer thread with group commit (writes are serialised anyway; one writer
    /// also keeps `BEGIN` from ever failing to upgrade a lock) and a pool of readers, which WAL
    /// lets run beside it. Reads are short indexed lookups and run inline on the runtime.
    Sqlite {
        writer: SqliteWriter,
        readers: Pool<SqliteConn>,
    },
    /// PostgreSQL: one writer task with group commit (every position-taking write updates
    /// one row, whose lock PostgreSQL holds until the commit is flushed: batched, one flush
    /// carries many writes) and a pool of readers.
    Postgres {
        writer: PgWriter,
        readers: Pool<AsyncPgConnection>,
    },
}

/// The store: every query of the homeserver goes through it.
#[derive(Clone)]
pub struct Store {
    pub(crate) pools: std::sync::Arc<Pools>,
    pub(crate) memory: std::sync::Arc<Memory>,
}

/// What the store keeps in memory beside the database (see [`crate::cache`], [`crate::tail`]).
#[derive(Default)]
pub(crate) struct Memory {
    /// Live sessions by id, read on every authenticated request.
    pub(crate) sessions: GenCache<String, Session>,
    /// Group epoch and roster by group id, read on every send.
    pub(crate) rosters: GenCache<String, std::sync::Arc<EpochRoster>>,
    /// The stream's latest positions.
    pub(crate) tail: Option<std::sync::Arc<Tail>>,
    /// The other processes on the same PostgreSQL database (none on SQLite).
    pub(crate) cluster: std::sync::OnceLock<std::sync::Arc<crate::cluster::Cluster>>,
    /// Session reads going to the database together while other processes share it.
    pub(crate) session_reads: std::sync::Mutex<crate::accounts::SessionReads>,
}

impl Memory {
    /// Sessions were revoked (one by id, or any number): dropped here and in the other
    /// processes.
    pub(crate) fn sessions_revoked(&self, id: Option<&str>) {
        match id {
            Some(id) => self.sessions.invalidate(id),
            None => self.sessions.invalidate_all(),
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.send(crate::cluster::Signal::Sessions {
                id: id.map(str::to_owned),
            });
        }
    }

    /// What a signal from another process changes here: cached rows it names are dropped,
    /// and the tail stops answering for positions this process did not take.
    pub(crate) fn apply_signal(&self, signal: &crate::cluster::Signal) {
        use crate::cluster::Signal;
        match signal {
            Signal::Sessions { id: Some(id) } => self.sessions.invalidate(id.as_str()),
            Signal::Sessions { id: None } => self.sessions.invalidate_all(),
            Signal::Roster { g } => self.rosters.invalidate(g.as_str()),
            Signal::Resync => {
                self.sessions.invalidate_all();
                self.rosters.invalidate_all();
                if let Some(tail) = &self.tail {
                    tail.behind(i64::MAX - 1);
                }
            }
            // Events at positions the other process took (`a`: positions not given).
            Signal::Wake { k: 'e', p, .. } => {
                if let Some(tail) = &self.tail {
                    tail.behind(*p);
                }
            }
            Signal::Wake { k: 'a', .. } => {
                if let Some(tail) = &self.tail {
                    tail.behind(i64::MAX - 1);
                }
            }
            Signal::Wake { .. }
            | Signal::Outbox { .. }
            | Signal::Ephemeral { .. }
            | Signal::Hello => {}
        }
    }

    /// The session reads waiting to go to the database together (even if a thread panicked
    /// holding them: each step leaves them whole).
    pub(crate) fn session_reads(&self) -> std::sync::MutexGuard<'_, crate::accounts::SessionReads> {
        self.session_reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A group's roster changed: dropped here and in the other processes.
    pub(crate) fn roster_changed(&self, group_id: &str) {
        self.rosters.invalidate(group_id);
        if let Some(cluster) = self.cluster.get() {
            cluster.send(crate::cluster::Signal::Roster {
                g: group_id.to_owned(),
            });
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.backend())
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the store uses.
/// `write` picks SQLite's writer connection; `read` a reader.
#[macro_export]
#[doc(hidden)]
macro_rules! with_conn {
    ($store:expr, write, |$conn:ident| $body:expr) => {
        $crate::with_conn!($store, write, after = |_: Option<&mut _>| (), |$conn| $body)
    };
    // A write, run by the backend's writer ([`crate::writer`]) in a savepoint of its batch
    // transaction (so it is atomic) or, alone in its batch, in the transaction itself.
    // `after` gets `Some(&mut result)` once the write has committed (`None` if it failed) and
    // runs even if the caller goes away meanwhile: it is how writes invalidate caches and
    // publish to the stream tail. The body may capture only owned values: it runs on the
    // writer.
    ($store:expr, write, after = $after:expr, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@submit $store, run, after = $after, |$conn| $body)
    };
    // A write that fails only on a storage error once it has changed anything: it runs
    // without a savepoint (see `WriterHandle::run_unguarded`).
    ($store:expr, write_unguarded, after = $after:expr, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@submit $store, run_unguarded, after = $after, |$conn| $body)
    };
    // Submits a write to the writer's `$run`.
    (@submit $store:expr, $run:ident, after = $after:expr, |$conn:ident| $body:expr) => {{
        match &*$store.pools {
            $crate::db::Pools::Sqlite { writer, .. } => {
                writer
                    .$run(
                        move |$conn: &mut $crate::sqlite_conn::SqliteConn| Box::pin(async move { $body }),
                        $after,
                    )
                    .await
            }
            $crate::db::Pools::Postgres { writer, .. } => {
                writer
                    .$run(
                        move |$conn: &mut diesel_async::AsyncPgConnection| Box::pin(async move { $body }),
                        $after,
                    )
                    .await
            }
        }
    }};
    (@checkout $pool:expr) => {{
        let asked = std::time::Instant::now();
        let conn = $pool
            .get()
            .await
            .map_err(|e| $crate::StoreError::Pool(e.to_string()))?;
        metrics::histogram!($crate::metrics::POOL_WAIT).record(asked.elapsed().as_secs_f64());
        conn
    }};
    ($store:expr, read, |$conn:ident| $body:expr) => {{
        match &*$store.pools {
            $crate::db::Pools::Sqlite { readers, .. } => {
                let mut obj = $crate::with_conn!(@checkout readers);
                let $conn: &mut $crate::sqlite_conn::SqliteConn = &mut obj;
                $body
            }
            $crate::db::Pools::Postgres { readers, .. } => {
                let mut obj = $crate::with_conn!(@checkout readers);
                let $conn: &mut diesel_async::AsyncPgConnection = &mut obj;
                $body
            }
        }
    }};
}

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`), applying pending migrations.
    pub async fn connect(url: &str, config: &StoreConfig) -> StoreResult<Store> {
        let (pools, tail) = if let Some(path) = url.strip_prefix("sqlite://") {
            let (pools, head) = open_sqlite(path, config).await?;
            (pools, Some(std::sync::Arc::new(Tail::new(head))))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pools, head) = open_postgres(url, config).await?;
            // Other processes take positions too: a tail out of step is expected here.
            (pools, Some(std::sync::Arc::new(Tail::shared(head))))
        } else {
            return Err(StoreError::BadUrl);
        };
        let memory = std::sync::Arc::new(Memory {
            tail,
            ..Memory::default()
        });
        if matches!(pools, Pools::Postgres { .. }) {
            let weak = std::sync::Arc::downgrade(&memory);
            let apply: crate::cluster::Apply = std::sync::Arc::new(
                move |signal: &crate::cluster::Signal| match weak.upgrade() {
                    Some(memory) => {
                        memory.apply_signal(signal);
                        true
                    }
                    None => false,
                },
            );
            let cluster = crate::cluster::Cluster::start(url, apply);
            let _ = memory.cluster.set(cluster);
        }
        Ok(Store {
            pools: std::sync::Arc::new(pools),
            memory,
        })
    }

    /// The other processes serving the same PostgreSQL database; `None` on SQLite, which
    /// serves one process.
    pub fn cluster(&self) -> Option<&std::sync::Arc<crate::cluster::Cluster>> {
        self.memory.cluster.get()
    }

    /// The in-memory stream tail, on stores that keep one (SQLite).
    pub fn tail(&self) -> Option<&Tail> {
        self.memory.tail.as_deref()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match &*self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Closes every pooled connection; used on shutdown so SQLite checkpoints cleanly.
    pub fn close(&self) {
        match &*self.pools {
            Pools::Sqlite {
                writer, readers, ..
            } => {
                readers.close();
                writer.stop();
            }
            Pools::Postgres { writer, readers } => {
                readers.close();
                writer.stop();
            }
        }
    }
}

/// Opens SQLite; also returns the stream position at opening, where the tail starts.
async fn open_sqlite(path: &str, config: &StoreConfig) -> StoreResult<(Pools, i64)> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Pool(format!("{}: {e}", dir.display())))?;
        }
    }
    let busy = config.sqlite_busy_timeout_ms;
    let mut mc = ManagerConfig::<SqliteConn>::default();
    // A local file cannot drop a connection: skip the `SELECT 1` on every checkout.
    mc.recycling_method = RecyclingMethod::Fast;
    mc.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(&sqlite_pragmas(busy))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let readers = Pool::builder(AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
        path, mc,
    ))
    .max_size(config.max_connections.max(1))
    .build()
    .map_err(|e| StoreError::Pool(e.to_string()))?;
    // Migrations run on the writer connection before the writer thread takes it.
    let owned_path = path.to_owned();
    let (conn, head) = tokio::task::spawn_blocking(move || {
        use diesel::{QueryDsl as _, RunQueryDsl as _};
        let mut conn = establish_sync(&owned_path, busy)?;
        conn.run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        // Only the writer takes positions, and it has not started: this is the head.
        let head: i64 = crate::schema::stream_position::table
            .find(1)
            .select(crate::schema::stream_position::pos)
            .first(&mut conn)?;
        Ok::<_, StoreError>((conn, head))
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))??;
    let owned_path = path.to_owned();
    let checkpoint_conn = establish_sync(path, busy)?;
    let writer = SqliteWriter::start(
        SqliteConn::with_runtime(conn, Inline),
        checkpoint_conn,
        move || establish_sync(&owned_path, busy).map(|c| SqliteConn::with_runtime(c, Inline)),
    )?;
    Ok((Pools::Sqlite { writer, readers }, head))
}

/// For a `sqlite://PATH` database, locks `PATH.lock` for as long as the returned file is
/// kept, or fails with [`StoreError::InUse`] if another process holds it; `None` for other
/// databases. A server holds it while it runs.
///
/// One server process per SQLite database: the writer's group commit, the stream tail, the
/// caches and the wake-ups all assume they see every write. A second server on the same file
/// would otherwise start, and its devices would miss the first one's messages. The lock is the
/// operating system's (`flock`), so it goes with the process however it ends. Tools that only
/// read (tests inspecting a running server's database) open the store without it.
pub fn lock_sqlite_for_this_process(url: &str) -> StoreResult<Option<std::fs::File>> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Pool(format!("{}: {e}", dir.display())))?;
        }
    }
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Pool(format!("{lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Pool(format!("cannot lock {lock_path}: {e}")))
        }
    }
}

/// Opens PostgreSQL; also returns the stream position at opening, where the tail starts.
async fn open_postgres(url: &str, config: &StoreConfig) -> StoreResult<(Pools, i64)> {
    let mut mc = ManagerConfig::<AsyncPgConnection>::default();
    // No `SELECT 1` round trip per checkout: a connection the server dropped fails its next
    // query, is reported broken and replaced.
    mc.recycling_method = RecyclingMethod::Fast;
    mc.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move { crate::pg_writer::establish_postgres(&url).await }.boxed()
    });
    let readers = Pool::builder(AsyncDieselConnectionManager::new_with_config(url, mc))
        .max_size(config.max_connections.max(1))
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    let conn = readers
        .get()
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    run_migrations(deadpool::managed::Object::take(conn), POSTGRES_MIGRATIONS).await?;
    // Read before the writer starts: nothing of this store has taken a position yet.
    let head: i64 = {
        use diesel::QueryDsl as _;
        use diesel_async::RunQueryDsl as _;
        let mut conn = readers
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        crate::schema::stream_position::table
            .find(1)
            .select(crate::schema::stream_position::pos)
            .first(&mut conn)
            .await?
    };
    let writer = PgWriter::start(url).await?;
    Ok((Pools::Postgres { writer, readers }, head))
}

/// Applies pending migrations on a blocking thread (diesel's migration runner is synchronous).
async fn run_migrations<C>(conn: C, migrations: EmbeddedMigrations) -> StoreResult<()>
where
    C: AsyncConnection + Send + 'static,
    AsyncConnectionWrapper<C>:
        diesel::Connection<Backend = C::Backend> + MigrationHarness<C::Backend>,
{
    tokio::task::spawn_blocking(move || {
        let mut harness = AsyncConnectionWrapper::<C>::from(conn);
        harness
            .run_pending_migrations(migrations)
            .map(drop)
            .map_err(|e| StoreError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection as _;
    use diesel::sql_types::{BigInt, Text};
    use diesel::RunQueryDsl as _;
    use diesel_migrations::MigrationHarness as _;

    use super::SQLITE_MIGRATIONS;
    use crate::sqlite_conn::establish_sync;

    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        group_id: String,
        #[diesel(sql_type = BigInt)]
        seq: i64,
        #[diesel(sql_type = BigInt)]
        stream_pos: i64,
    }

    fn messages(conn: &mut diesel::SqliteConnection) -> Vec<Row> {
        diesel::sql_query(
            "SELECT group_id, seq, stream_pos FROM group_messages ORDER BY stream_pos",
        )
        .load(conn)
        .unwrap()
    }

    #[test]
    fn a_second_lock_on_one_sqlite_database_is_refused_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::testing::sqlite_url(dir.path());
        let first = super::lock_sqlite_for_this_process(&url).unwrap();
        assert!(first.is_some());
        let second = super::lock_sqlite_for_this_process(&url);
        assert!(
            matches!(second, Err(crate::StoreError::InUse(_))),
            "{second:?}"
        );
        drop(first);
        assert!(super::lock_sqlite_for_this_process(&url).unwrap().is_some());
        let postgres = super::lock_sqlite_for_this_process("postgres://localhost/x").unwrap();
        assert!(postgres.is_none());
    }

    #[test]
    fn rekeying_group_messages_and_transaction_ids_keeps_every_row_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let mut conn = establish_sync(path.to_str().unwrap(), 1000).unwrap();
        conn.run_pending_migrations(SQLITE_MIGRATIONS).unwrap();
        conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap();
        conn.batch_execute(
            "INSERT INTO groups (group_id, epoch, last_seq, created_ts) VALUES ('g', 0, 2, 0);
             INSERT INTO group_messages (group_id, seq, stream_pos, sender_user, sender_device,
                 kind, epoch, message, ts)
                 VALUES ('g', 1, 7, '@a:x', 'D', 'application', 0, x'01', 0),
                        ('g', 2, 9, '@a:x', 'D', 'application', 0, x'02', 0);
             INSERT INTO transaction_ids (user_id, device_id, txn_id, group_id, seq)
                 VALUES ('@a:x', 'D', 't1', 'g', 1);",
        )
        .unwrap();
        let before = messages(&mut conn);
        conn.run_pending_migrations(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(messages(&mut conn), before);
        // The stream position is now the rowid, and the key still refuses a second (group, seq).
        conn.batch_execute(
            "INSERT INTO group_messages (group_id, seq, stream_pos, sender_user, sender_device,
                 kind, epoch, message, ts)
                 VALUES ('g', 3, 10, '@a:x', 'D', 'application', 0, x'03', 0);",
        )
        .unwrap();
        let duplicate = conn.batch_execute(
            "INSERT INTO group_messages (group_id, seq, stream_pos, sender_user, sender_device,
                 kind, epoch, message, ts)
                 VALUES ('g', 3, 11, '@a:x', 'D', 'application', 0, x'04', 0);",
        );
        assert!(duplicate.is_err());
        let reused = conn.batch_execute(
            "INSERT INTO transaction_ids (user_id, device_id, txn_id, group_id, seq)
                 VALUES ('@a:x', 'D', 't1', 'g', 3);",
        );
        assert!(reused.is_err());
        conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(messages(&mut conn).len(), 3);
        let kept: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM transaction_ids)",
        ))
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(kept, 1);
    }
}
