//! Device signature keys and the key-package directory.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::schema::{devices, key_packages};
use crate::{with_conn, Store, StoreError, StoreResult};

// The stock counts devices without key packages.
diesel::allow_tables_to_appear_in_same_query!(devices, key_packages);

/// What binding a device's signature key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// The key is now bound.
    Bound,
    /// The same key was already bound.
    AlreadyBound,
    /// A different key is bound; nothing changed.
    Mismatch,
    /// No such device.
    NoDevice,
}

/// A validated key package to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeyPackage {
    /// KeyPackageRef (hash) of the package, unique across the server.
    pub kp_ref: Vec<u8>,
    /// The TLS-serialised package as uploaded.
    pub data: Vec<u8>,
    /// End of the package's lifetime, ms since the epoch.
    pub not_after_ms: i64,
}

/// A package handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    pub data: Vec<u8>,
    /// Whether this is the device's last-resort package (never consumed).
    pub last_resort: bool,
}

#[derive(Insertable)]
#[diesel(table_name = key_packages)]
struct KeyPackageRow<'a> {
    user_id: &'a str,
    device_id: &'a str,
    kp_ref: &'a [u8],
    data: &'a [u8],
    not_after_ms: i64,
    last_resort: bool,
}

/// Devices' signature keys and key packages ([`Store::keys`]).
#[derive(Debug, Clone, Copy)]
pub struct KeyDirectory<'s> {
    store: &'s Store,
}

impl Store {
    /// Devices' signature keys and key packages.
    pub fn keys(&self) -> KeyDirectory<'_> {
        KeyDirectory { store: self }
    }
}

impl KeyDirectory<'_> {
    /// Binds a device's MLS signature key, once.
    pub async fn bind_signature_key(
        &self,
        user_id: &str,
        device_id: &str,
        key: &[u8],
    ) -> StoreResult<BindOutcome> {
        let (user_id, device_id, key) = (user_id.to_owned(), device_id.to_owned(), key.to_vec());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let current: Option<Option<Vec<u8>>> = devices::table
                    .find((&user_id, &device_id))
                    .select(devices::signature_key)
                    .first(c)
                    .await
                    .optional()?;
                Ok(match current {
                    None => BindOutcome::NoDevice,
                    Some(Some(bound)) if bound == key => BindOutcome::AlreadyBound,
                    Some(Some(_)) => BindOutcome::Mismatch,
                    Some(None) => {
                        diesel::update(devices::table.find((&user_id, &device_id)))
                            .set(devices::signature_key.eq(&key))
                            .execute(c)
                            .await?;
                        BindOutcome::Bound
                    }
                })
            })
            .await
        })
    }

    /// Stores validated packages (duplicates of already stored ones are ignored) and replaces
    /// the last-resort package when one is given; all or nothing. Returns the new count.
    pub async fn store_key_packages(
        &self,
        user_id: &str,
        device_id: &str,
        packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        now_ms: i64,
    ) -> StoreResult<u64> {
        self.store_key_packages_capped(user_id, device_id, packages, last_resort, now_ms, u64::MAX)
            .await
    }

    /// [`KeyDirectory::store_key_packages`], refused with [`StoreError::Quota`] (nothing stored) when
    /// the device would then hold more than `max_unclaimed` unexpired ordinary packages.
    pub async fn store_key_packages_capped(
        &self,
        user_id: &str,
        device_id: &str,
        packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        now_ms: i64,
        max_unclaimed: u64,
    ) -> StoreResult<u64> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let (packages, last_resort) = (packages.to_vec(), last_resort.cloned());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let rows: Vec<_> = packages
                    .iter()
                    .map(|p| KeyPackageRow {
                        user_id: &user_id,
                        device_id: &device_id,
                        kp_ref: &p.kp_ref,
                        data: &p.data,
                        not_after_ms: p.not_after_ms,
                        last_resort: false,
                    })
                    .collect();
                for row in &rows {
                    diesel::insert_into(key_packages::table)
                        .values(row)
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                }
                if let Some(p) = &last_resort {
                    diesel::delete(
                        key_packages::table
                            .filter(key_packages::user_id.eq(&user_id))
                            .filter(key_packages::device_id.eq(&device_id))
                            .filter(key_packages::last_resort.eq(true)),
                    )
                    .execute(c)
                    .await?;
                    diesel::insert_into(key_packages::table)
                        .values(KeyPackageRow {
                            user_id: &user_id,
                            device_id: &device_id,
                            kp_ref: &p.kp_ref,
                            data: &p.data,
                            not_after_ms: p.not_after_ms,
                            last_resort: true,
                        })
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                }
                let count: i64 = key_packages::table
                    .filter(key_packages::user_id.eq(&user_id))
                    .filter(key_packages::device_id.eq(&device_id))
                    .filter(key_packages::last_resort.eq(false))
                    .filter(key_packages::not_after_ms.gt(now_ms))
                    .count()
                    .get_result(c)
                    .await?;
                let count = count.max(0) as u64;
                if count > max_unclaimed {
                    // Rolls the whole upload back.
                    return Err(StoreError::Quota(format!(
                        "a device holds at most {max_unclaimed} key packages"
                    )));
                }
                Ok(count)
            })
            .await
        })
    }

    /// The server's stock: unclaimed, unexpired ordinary key packages, and the devices left
    /// with none of them (only a last resort, or nothing).
    pub async fn stock(&self, now_ms: i64) -> StoreResult<(i64, i64)> {
        with_conn!(self.store, read, |conn| {
            let packages: i64 = key_packages::table
                .filter(key_packages::last_resort.eq(false))
                .filter(key_packages::not_after_ms.gt(now_ms))
                .count()
                .get_result(conn)
                .await?;
            let without: i64 = devices::table
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    key_packages::table
                        .filter(key_packages::user_id.eq(devices::user_id))
                        .filter(key_packages::device_id.eq(devices::device_id))
                        .filter(key_packages::last_resort.eq(false))
                        .filter(key_packages::not_after_ms.gt(now_ms)),
                )))
                .count()
                .get_result(conn)
                .await?;
            Ok((packages, without))
        })
    }

    /// Unclaimed, unexpired ordinary packages of a device, and whether it has a last resort.
    pub async fn key_package_count(
        &self,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> StoreResult<(u64, bool)> {
        with_conn!(self.store, read, |conn| {
            let rows: Vec<(bool, i64)> = key_packages::table
                .filter(key_packages::user_id.eq(user_id))
                .filter(key_packages::device_id.eq(device_id))
                .filter(key_packages::not_after_ms.gt(now_ms))
                .group_by(key_packages::last_resort)
                .select((key_packages::last_resort, diesel::dsl::count_star()))
                .load(conn)
                .await?;
            let count = rows.iter().find(|(lr, _)| !lr).map_or(0, |(_, n)| *n);
            let last_resort = rows.iter().any(|(lr, n)| *lr && *n > 0);
            Ok((count.max(0) as u64, last_resort))
        })
    }

    /// Claims one package of a device: the oldest unexpired ordinary one, consumed exactly once
    /// even under concurrent claims; else the last-resort package, which is never consumed.
    pub async fn claim_key_package(
        &self,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> StoreResult<Option<ClaimedKeyPackage>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                loop {
                    let oldest: Option<(i64, Vec<u8>)> = key_packages::table
                        .filter(key_packages::user_id.eq(&user_id))
                        .filter(key_packages::device_id.eq(&device_id))
                        .filter(key_packages::last_resort.eq(false))
                        .filter(key_packages::not_after_ms.gt(now_ms))
                        .order(key_packages::id.asc())
                        .select((key_packages::id, key_packages::data))
                        .first(c)
                        .await
                        .optional()?;
                    let Some((id, data)) = oldest else { break };
                    // A concurrent claim may have taken it (PostgreSQL, READ COMMITTED): the
                    // delete then removes nothing and we try the next one.
                    let deleted = diesel::delete(key_packages::table.find(id))
                        .execute(c)
                        .await?;
                    if deleted == 1 {
                        return Ok(Some(ClaimedKeyPackage {
                            data,
                            last_resort: false,
                        }));
                    }
                }
                let last: Option<Vec<u8>> = key_packages::table
                    .filter(key_packages::user_id.eq(&user_id))
                    .filter(key_packages::device_id.eq(&device_id))
                    .filter(key_packages::last_resort.eq(true))
                    .filter(key_packages::not_after_ms.gt(now_ms))
                    .select(key_packages::data)
                    .first(c)
                    .await
                    .optional()?;
                Ok(last.map(|data| ClaimedKeyPackage {
                    data,
                    last_resort: true,
                }))
            })
            .await
        })
    }

    /// Deletes every expired package; returns how many.
    pub async fn purge_expired_key_packages(&self, now_ms: i64) -> StoreResult<usize> {
        with_conn!(self.store, write, |conn| {
            Ok(
                diesel::delete(key_packages::table.filter(key_packages::not_after_ms.le(now_ms)))
                    .execute(conn)
                    .await?,
            )
        })
    }
}
