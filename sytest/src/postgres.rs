//! Fresh PostgreSQL databases per server instance, created with `CREATE DATABASE`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

/// Connects to the administrative URL (the one given with `--postgres-url`).
async fn connect(admin_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL at {}: {e}", redact(admin_url)))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error then is of no interest.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates a new, empty database and returns its name and URL.
pub async fn create_database(admin_url: &str) -> anyhow::Result<(String, String)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "sytest_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        crate::unique::random_suffix()
    );
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .map_err(|e| anyhow::anyhow!("CREATE DATABASE {name}: {e}"))?;
    let url = database_url(admin_url, &name)?;
    Ok((name, url))
}

/// Drops a database made by [`create_database`], closing its remaining connections.
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(|e| anyhow::anyhow!("DROP DATABASE {name}: {e}"))
}

/// Checks that the administrative URL works, so a bad one fails once, not in every test.
pub async fn check(admin_url: &str) -> anyhow::Result<()> {
    connect(admin_url).await?.batch_execute("SELECT 1").await?;
    Ok(())
}

/// `admin_url` with its database name replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(admin_url)
        .map_err(|e| anyhow::anyhow!("PostgreSQL URL {}: {e}", redact(admin_url)))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable",
                "x1"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:55432/x1?sslmode=disable"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
