//! Leases: which process runs a named job (sending to one destination, filling one group's
//! gap) when several processes share a PostgreSQL database ([`Store::leases`]). A lease is
//! held until a time; its holder renews it while it works and releases it when done, and a
//! process that dies lets it expire. On SQLite, which serves one process, every lease is
//! granted without touching the database.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;

use crate::db::Pools;
use crate::schema::leases;
use crate::{with_conn, Store, StoreResult};

/// Leases between processes ([`Store::leases`]).
#[derive(Debug, Clone, Copy)]
pub struct Leases<'s> {
    store: &'s Store,
}

impl Store {
    /// Leases between processes sharing the database.
    pub fn leases(&self) -> Leases<'_> {
        Leases { store: self }
    }
}

impl Leases<'_> {
    /// Takes or renews the lease `name` for `holder` until `until_ts`: granted when nobody
    /// holds it, `holder` already does, or the holder's time ran out before `now_ts`. One
    /// statement, so two processes asking at once never both get it.
    pub async fn take(
        &self,
        name: &str,
        holder: &str,
        now_ts: i64,
        until_ts: i64,
    ) -> StoreResult<bool> {
        if !matches!(&*self.store.pools, Pools::Postgres { .. }) {
            return Ok(true);
        }
        let (name, holder) = (name.to_owned(), holder.to_owned());
        with_conn!(self.store, write, |conn| {
            let n = diesel::sql_query(
                "INSERT INTO leases (name, holder, until_ts) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ts = EXCLUDED.until_ts \
                 WHERE leases.holder = EXCLUDED.holder OR leases.until_ts < $4",
            )
            .bind::<Text, _>(&name)
            .bind::<Text, _>(&holder)
            .bind::<BigInt, _>(until_ts)
            .bind::<BigInt, _>(now_ts)
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// Gives the lease up, if `holder` has it.
    pub async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        if !matches!(&*self.store.pools, Pools::Postgres { .. }) {
            return Ok(());
        }
        let (name, holder) = (name.to_owned(), holder.to_owned());
        with_conn!(self.store, write, |conn| {
            diesel::delete(
                leases::table
                    .filter(leases::name.eq(&name))
                    .filter(leases::holder.eq(&holder)),
            )
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{fresh_postgres_url, stores};
    use crate::{Backend, Store};

    /// Two stores on one database stand for two processes.
    #[tokio::test(flavor = "multi_thread")]
    async fn one_holder_at_a_time_until_it_releases_or_its_time_runs_out() {
        let url = fresh_postgres_url().await;
        let a = Store::connect(&url, &Default::default()).await.unwrap();
        let b = Store::connect(&url, &Default::default()).await.unwrap();
        let (la, lb) = (a.leases(), b.leases());
        assert!(la.take("outbox:x", "A", 1_000, 31_000).await.unwrap());
        assert!(!lb.take("outbox:x", "B", 2_000, 32_000).await.unwrap());
        // Renewal by the holder.
        assert!(la.take("outbox:x", "A", 20_000, 50_000).await.unwrap());
        assert!(!lb.take("outbox:x", "B", 40_000, 70_000).await.unwrap());
        // Expired: another process takes over.
        assert!(lb.take("outbox:x", "B", 50_001, 80_000).await.unwrap());
        assert!(!la.take("outbox:x", "A", 50_002, 80_000).await.unwrap());
        // Released: free again at once.
        lb.release("outbox:x", "B").await.unwrap();
        assert!(la.take("outbox:x", "A", 50_003, 80_000).await.unwrap());
        // Other names are other leases.
        assert!(lb.take("outbox:y", "B", 50_003, 80_000).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_serves_one_process_and_grants_every_lease() {
        for (store, _dir) in stores().await {
            if store.backend() == Backend::Sqlite {
                assert!(store.leases().take("outbox:x", "A", 1, 2).await.unwrap());
                assert!(store.leases().take("outbox:x", "B", 1, 2).await.unwrap());
            }
        }
    }
}
