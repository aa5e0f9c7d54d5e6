//! The media repository's index ([`Store::media`]): which files the media store holds, whose
//! they are, how large, and when they were last used. The bytes live in files beside the
//! database (the homeserver's `media` module); a row is written only once its file is on
//! disk, and deleted before its file is.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::RunQueryDsl;

use crate::schema::media;
use crate::{with_conn, Store, StoreResult};

/// The media index ([`Store::media`]).
#[derive(Debug, Clone, Copy)]
pub struct Media<'s> {
    store: &'s Store,
}

impl Store {
    /// The media repository's index.
    pub fn media(&self) -> Media<'_> {
        Media { store: self }
    }
}

/// One file of the media store.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = media)]
pub struct MediaRow {
    /// The server the media was uploaded to.
    pub server_name: String,
    /// Its id there.
    pub media_id: String,
    /// The local user who uploaded it; `None` for another server's media cached here.
    pub uploader: Option<String>,
    /// Bytes.
    pub size: i64,
    /// When it was stored here.
    pub created_ts: i64,
    /// When it was last read (to within [`ACCESS_GRANULARITY_MS`]).
    pub last_access_ts: i64,
    /// When a message its uploader sent first named it.
    pub referenced_ts: Option<i64>,
}

/// A read moves `last_access_ts` only when it is older than this, so that downloads do not
/// each cost a write.
pub const ACCESS_GRANULARITY_MS: i64 = 3_600_000;

/// Why a local upload was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRefused {
    /// The uploader's media would exceed the quota; `used` bytes are stored already.
    Quota {
        /// Bytes the uploader holds.
        used: i64,
    },
}

impl Media<'_> {
    /// Bytes of media `uploader` holds.
    pub async fn used_by(&self, uploader: &str) -> StoreResult<i64> {
        let uploader = uploader.to_owned();
        with_conn!(self.store, read, |conn| {
            let used: Option<i64> = media::table
                .filter(media::uploader.eq(&uploader))
                .select(sql::<Nullable<BigInt>>("CAST(SUM(size) AS BIGINT)"))
                .first(conn)
                .await?;
            Ok(used.unwrap_or(0))
        })
    }

    /// Records a local upload whose file is on disk, unless it takes `uploader` past `quota`
    /// bytes (checked in the same write).
    pub async fn insert_local(
        &self,
        server_name: &str,
        media_id: &str,
        uploader: &str,
        size: i64,
        now: i64,
        quota: i64,
    ) -> StoreResult<Result<(), UploadRefused>> {
        let row = MediaRow {
            server_name: server_name.to_owned(),
            media_id: media_id.to_owned(),
            uploader: Some(uploader.to_owned()),
            size,
            created_ts: now,
            last_access_ts: now,
            referenced_ts: None,
        };
        with_conn!(self.store, write, |conn| {
            let used: Option<i64> = media::table
                .filter(media::uploader.eq(row.uploader.clone()))
                .select(sql::<Nullable<BigInt>>("CAST(SUM(size) AS BIGINT)"))
                .first(conn)
                .await?;
            let used = used.unwrap_or(0);
            if used.saturating_add(row.size) > quota {
                return Ok(Err(UploadRefused::Quota { used }));
            }
            diesel::insert_into(media::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok(Ok(()))
        })
    }

    /// Records another server's media, cached here; a second record of it changes nothing.
    pub async fn insert_remote(
        &self,
        server_name: &str,
        media_id: &str,
        size: i64,
        now: i64,
    ) -> StoreResult<()> {
        let row = MediaRow {
            server_name: server_name.to_owned(),
            media_id: media_id.to_owned(),
            uploader: None,
            size,
            created_ts: now,
            last_access_ts: now,
            referenced_ts: None,
        };
        with_conn!(self.store, write, |conn| {
            diesel::insert_into(media::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The record of a file, if the store holds it.
    pub async fn get(&self, server_name: &str, media_id: &str) -> StoreResult<Option<MediaRow>> {
        let (server_name, media_id) = (server_name.to_owned(), media_id.to_owned());
        with_conn!(self.store, read, |conn| {
            Ok(media::table
                .find((&server_name, &media_id))
                .select(MediaRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Notes a read of `row` at `now`, if its last noted one is [`ACCESS_GRANULARITY_MS`] old.
    pub async fn touch(&self, row: &MediaRow, now: i64) -> StoreResult<()> {
        if now - row.last_access_ts < ACCESS_GRANULARITY_MS {
            return Ok(());
        }
        let (server_name, media_id) = (row.server_name.clone(), row.media_id.clone());
        with_conn!(self.store, write, |conn| {
            diesel::update(media::table.find((&server_name, &media_id)))
                .set(media::last_access_ts.eq(now))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Marks media that `uploader` uploaded here as named by a message they sent; returns
    /// how many of `media_ids` are theirs (referenced before or now).
    pub async fn reference(
        &self,
        server_name: &str,
        uploader: &str,
        media_ids: &[String],
        now: i64,
    ) -> StoreResult<usize> {
        let (server_name, uploader, ids) = (
            server_name.to_owned(),
            uploader.to_owned(),
            media_ids.to_vec(),
        );
        with_conn!(self.store, write, |conn| {
            let owned = media::table
                .filter(media::server_name.eq(&server_name))
                .filter(media::uploader.eq(&uploader))
                .filter(media::media_id.eq_any(&ids))
                .count()
                .get_result::<i64>(conn)
                .await?;
            diesel::update(
                media::table
                    .filter(media::server_name.eq(&server_name))
                    .filter(media::uploader.eq(&uploader))
                    .filter(media::media_id.eq_any(&ids))
                    .filter(media::referenced_ts.is_null()),
            )
            .set(media::referenced_ts.eq(now))
            .execute(conn)
            .await?;
            Ok(usize::try_from(owned).unwrap_or(0))
        })
    }

    /// Up to `limit` files retention deletes: local uploads never referenced and stored
    /// before `unreferenced_before`; local uploads stored before `local_before` (if set);
    /// cached media of other servers last read before `remote_before`.
    pub async fn expired(
        &self,
        unreferenced_before: i64,
        local_before: Option<i64>,
        remote_before: i64,
        limit: i64,
    ) -> StoreResult<Vec<MediaRow>> {
        let local_before = local_before.unwrap_or(i64::MIN);
        with_conn!(self.store, read, |conn| {
            Ok(media::table
                .filter(
                    media::uploader
                        .is_not_null()
                        .and(media::referenced_ts.is_null())
                        .and(media::created_ts.lt(unreferenced_before))
                        .or(media::uploader
                            .is_not_null()
                            .and(media::created_ts.lt(local_before)))
                        .or(media::uploader
                            .is_null()
                            .and(media::last_access_ts.lt(remote_before))),
                )
                .order(media::created_ts.asc())
                .limit(limit)
                .select(MediaRow::as_select())
                .load(conn)
                .await?)
        })
    }

    /// Bytes of other servers' media cached here.
    pub async fn remote_cache_bytes(&self) -> StoreResult<i64> {
        with_conn!(self.store, read, |conn| {
            let used: Option<i64> = media::table
                .filter(media::uploader.is_null())
                .select(sql::<Nullable<BigInt>>("CAST(SUM(size) AS BIGINT)"))
                .first(conn)
                .await?;
            Ok(used.unwrap_or(0))
        })
    }

    /// The `limit` cached media of other servers read least recently.
    pub async fn least_recently_read_remote(&self, limit: i64) -> StoreResult<Vec<MediaRow>> {
        with_conn!(self.store, read, |conn| {
            Ok(media::table
                .filter(media::uploader.is_null())
                .order(media::last_access_ts.asc())
                .limit(limit)
                .select(MediaRow::as_select())
                .load(conn)
                .await?)
        })
    }

    /// Forgets a file (before it is deleted from disk); whether it was recorded.
    pub async fn delete(&self, server_name: &str, media_id: &str) -> StoreResult<bool> {
        let (server_name, media_id) = (server_name.to_owned(), media_id.to_owned());
        with_conn!(self.store, write, |conn| {
            let n = diesel::delete(media::table.find((&server_name, &media_id)))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::UploadRefused;
    use crate::testing::stores;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_past_the_quota_is_refused_and_records_nothing() {
        for (store, _dir) in stores().await {
            let m = store.media();
            m.insert_local("a.example", "m1", "@u:a.example", 600, 1, 1000)
                .await
                .unwrap()
                .unwrap();
            let refused = m
                .insert_local("a.example", "m2", "@u:a.example", 401, 2, 1000)
                .await
                .unwrap();
            assert_eq!(refused, Err(UploadRefused::Quota { used: 600 }));
            assert!(m.get("a.example", "m2").await.unwrap().is_none());
            // Another user's quota is their own.
            m.insert_local("a.example", "m3", "@v:a.example", 1000, 2, 1000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.used_by("@u:a.example").await.unwrap(), 600);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn retention_picks_unreferenced_uploads_and_stale_cached_media_only() {
        for (store, _dir) in stores().await {
            let m = store.media();
            let q = i64::MAX;
            m.insert_local("a.example", "kept", "@u:a.example", 1, 10, q)
                .await
                .unwrap()
                .unwrap();
            m.insert_local("a.example", "orphan", "@u:a.example", 1, 10, q)
                .await
                .unwrap()
                .unwrap();
            m.insert_local("a.example", "young", "@u:a.example", 1, 500, q)
                .await
                .unwrap()
                .unwrap();
            m.insert_remote("b.example", "stale", 1, 10).await.unwrap();
            m.insert_remote("b.example", "read", 1, 10).await.unwrap();
            // Only the uploader's own media can be referenced.
            let named = ["kept".to_owned(), "stale".to_owned()];
            assert_eq!(
                m.reference("a.example", "@v:a.example", &named, 20)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                m.reference("a.example", "@u:a.example", &named, 20)
                    .await
                    .unwrap(),
                1
            );
            let read = m.get("b.example", "read").await.unwrap().unwrap();
            m.touch(&read, 10 + super::ACCESS_GRANULARITY_MS)
                .await
                .unwrap();
            let expired = m.expired(100, None, 100, 100).await.unwrap();
            let mut names: Vec<&str> = expired.iter().map(|r| r.media_id.as_str()).collect();
            names.sort();
            assert_eq!(names, ["orphan", "stale"]);
            // With a period for every upload, the referenced one goes too once old.
            let expired = m.expired(100, Some(100), 100, 100).await.unwrap();
            assert_eq!(expired.len(), 3);
            assert!(m.delete("a.example", "orphan").await.unwrap());
            assert!(!m.delete("a.example", "orphan").await.unwrap());
            assert_eq!(m.remote_cache_bytes().await.unwrap(), 2);
            let lru = m.least_recently_read_remote(1).await.unwrap();
            assert_eq!(lru[0].media_id, "stale");
        }
    }
}
