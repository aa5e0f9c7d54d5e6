//! Whether the store can serve: its database answers, and every migration this build embeds
//! has been applied to it (a process of an older build, or a database restored from an old
//! backup, would otherwise serve a schema it does not know).

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sqlite::Sqlite;
use diesel_async::RunQueryDsl;

use crate::db::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::{with_conn, Store, StoreError, StoreResult};

/// One row of diesel's migration record.
#[derive(diesel::QueryableByName)]
struct AppliedMigration {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

impl Store {
    /// The migrations this build embeds that the database has not applied (empty when the
    /// store is ready); an error when the database does not answer.
    pub async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        let applied: Vec<AppliedMigration> = with_conn!(self, read, |conn| {
            Ok::<_, StoreError>(
                diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                    .load(conn)
                    .await?,
            )
        })?;
        let embedded = match self.backend() {
            Backend::Sqlite => versions(MigrationSource::<Sqlite>::migrations(&SQLITE_MIGRATIONS)),
            Backend::Postgres => versions(MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS)),
        }?;
        Ok(embedded
            .into_iter()
            .filter(|v| !applied.iter().any(|a| &a.version == v))
            .collect())
    }
}

/// The versions of a list of embedded migrations.
fn versions<DB: diesel::backend::Backend>(
    migrations: diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>>,
) -> StoreResult<Vec<String>> {
    Ok(migrations
        .map_err(|e| StoreError::Migration(e.to_string()))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_migrated_store_has_none_pending_and_a_forgotten_one_is_named() {
        for (store, _dir) in crate::testing::stores().await {
            assert_eq!(
                store.pending_migrations().await.unwrap(),
                Vec::<String>::new()
            );
            let newest: Vec<AppliedMigration> = with_conn!(store, write, |conn| {
                let newest: Vec<AppliedMigration> = diesel::sql_query(
                    "DELETE FROM __diesel_schema_migrations WHERE version = \
                     (SELECT MAX(version) FROM __diesel_schema_migrations) RETURNING version",
                )
                .load(conn)
                .await?;
                Ok::<_, StoreError>(newest)
            })
            .unwrap();
            let forgotten = vec![newest[0].version.clone()];
            assert_eq!(store.pending_migrations().await.unwrap(), forgotten);
        }
    }
}
