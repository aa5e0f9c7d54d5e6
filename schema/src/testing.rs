//! Helpers for tests that run against both backends (used by this and other crates' tests).

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Environment variable naming the PostgreSQL server tests create databases on.
pub const POSTGRES_URL_ENV: &str = "PARLEY_TEST_POSTGRES_URL";

/// A new empty PostgreSQL database on the test server, as a URL.
///
/// Panics with instructions when [`POSTGRES_URL_ENV`] is unset: the PostgreSQL half of a test
/// is part of the test, never silently skipped. `scripts/test.sh` starts a throw-away server.
pub async fn fresh_postgres_url() -> String {
    let admin = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| {
        panic!("{POSTGRES_URL_ENV} is not set: run the tests with scripts/test.sh, which starts a throw-away PostgreSQL")
    });
    let name = format!(
        "parley_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ) + &format!("_{}", nanos());
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach test PostgreSQL: {e}"));
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("://") && i > admin.find("://").unwrap_or(0) + 2 => {
            format!("{}/{name}", &admin[..i])
        }
        _ => format!("{}/{name}", admin.trim_end_matches('/')),
    }
}

/// A URL for a new SQLite database file inside `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("parley.db").display())
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000)
        .unwrap_or(0)
}

/// One store on each backend, for tests whose claim must hold on both: SQLite in a temporary
/// directory (the second element keeps it alive) and a fresh PostgreSQL database.
pub async fn stores() -> Vec<(crate::Store, Option<tempfile::TempDir>)> {
    let config = crate::StoreConfig::default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temporary dir: {e}"));
    let sqlite = crate::Store::connect(&sqlite_url(dir.path()), &config)
        .await
        .unwrap_or_else(|e| panic!("cannot open the test SQLite store: {e}"));
    let pg = crate::Store::connect(&fresh_postgres_url().await, &config)
        .await
        .unwrap_or_else(|e| panic!("cannot open the test PostgreSQL store: {e}"));
    vec![(sqlite, Some(dir)), (pg, None)]
}

/// Makes the test PostgreSQL server refuse (or accept again) connections to the database of
/// `database_url`, ending the ones it has: the database "goes down" for the store using it.
pub async fn set_postgres_database_reachable(database_url: &str, reachable: bool) {
    let admin =
        std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| panic!("{POSTGRES_URL_ENV} is not set"));
    let name = database_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "not a test database name: {name}"
    );
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach test PostgreSQL: {e}"));
    conn.batch_execute(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND NOT {reachable}"
    ))
    .await
    .unwrap_or_else(|e| panic!("cannot change database {name}: {e}"));
}
