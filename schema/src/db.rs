//! Connections, pools and migrations for both backends.

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

use crate::{StoreError, StoreResult};

/// The SQLite connection type used through diesel-async.
pub type SqliteConn = SyncConnectionWrapper<diesel::SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

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
    /// SQLite: one writer connection (writes are serialised anyway; this keeps `BEGIN` from
    /// ever failing to upgrade a lock) and a pool of readers, which WAL lets run beside it.
    Sqlite {
        writer: Pool<SqliteConn>,
        readers: Pool<SqliteConn>,
    },
    /// PostgreSQL: one pool for everything.
    Postgres(Pool<AsyncPgConnection>),
}

/// The store: every query of the homeserver goes through it.
#[derive(Clone)]
pub struct Store {
    pub(crate) pools: std::sync::Arc<Pools>,
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
    ($store:expr, $mode:ident, |$conn:ident| $body:expr) => {{
        match &*$store.pools {
            $crate::db::Pools::Sqlite { writer, readers } => {
                let pool = if $crate::with_conn!(@is_write $mode) { writer } else { readers };
                let mut obj = pool.get().await.map_err(|e| $crate::StoreError::Pool(e.to_string()))?;
                let $conn: &mut $crate::db::SqliteConn = &mut obj;
                $body
            }
            $crate::db::Pools::Postgres(pool) => {
                let mut obj = pool.get().await.map_err(|e| $crate::StoreError::Pool(e.to_string()))?;
                let $conn: &mut diesel_async::AsyncPgConnection = &mut obj;
                $body
            }
        }
    }};
    (@is_write write) => { true };
    (@is_write read) => { false };
}

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`), applying pending migrations.
    pub async fn connect(url: &str, config: &StoreConfig) -> StoreResult<Store> {
        let pools = if let Some(path) = url.strip_prefix("sqlite://") {
            open_sqlite(path, config).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url, config).await?
        } else {
            return Err(StoreError::BadUrl);
        };
        Ok(Store {
            pools: std::sync::Arc::new(pools),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match &*self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes every pooled connection; used on shutdown so SQLite checkpoints cleanly.
    pub fn close(&self) {
        match &*self.pools {
            Pools::Sqlite { writer, readers } => {
                readers.close();
                writer.close();
            }
            Pools::Postgres(pool) => pool.close(),
        }
    }
}

async fn open_sqlite(path: &str, config: &StoreConfig) -> StoreResult<Pools> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Pool(format!("{}: {e}", dir.display())))?;
        }
    }
    let busy = config.sqlite_busy_timeout_ms;
    let manager = || {
        let mut mc = ManagerConfig::<SqliteConn>::default();
        mc.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            async move {
                let mut conn = SqliteConn::establish(&url).await?;
                // WAL lets readers run beside the writer; synchronous=FULL makes every commit
                // durable before it is acknowledged.
                conn.batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = {busy}; PRAGMA foreign_keys = ON;"
                ))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, mc)
    };
    let build = |size: usize| {
        Pool::builder(manager())
            .max_size(size)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))
    };
    let writer = build(1)?;
    let readers = build(config.max_connections.max(1))?;
    {
        let conn = writer
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        run_migrations(deadpool::managed::Object::take(conn), SQLITE_MIGRATIONS).await?;
    }
    Ok(Pools::Sqlite { writer, readers })
}

async fn open_postgres(url: &str, config: &StoreConfig) -> StoreResult<Pools> {
    let mut mc = ManagerConfig::<AsyncPgConnection>::default();
    mc.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // Acknowledged writes must be on disk: never let a session relax this.
            conn.batch_execute("SET synchronous_commit = on")
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let pool = Pool::builder(AsyncDieselConnectionManager::new_with_config(url, mc))
        .max_size(config.max_connections.max(1))
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    let conn = pool
        .get()
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    run_migrations(deadpool::managed::Object::take(conn), POSTGRES_MIGRATIONS).await?;
    Ok(Pools::Postgres(pool))
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
