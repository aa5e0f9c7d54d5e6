//! Login challenges ([`Store::login_challenges`]): single-use, short-lived challenges a device
//! signs with its MLS signature key to log in without a password. Only their SHA-256 is kept.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::schema::login_challenges;
use crate::{with_conn, Store, StoreResult};

/// Login challenges ([`Store::login_challenges`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginChallenges<'s> {
    store: &'s Store,
}

impl Store {
    /// Challenges for passwordless login.
    pub fn login_challenges(&self) -> LoginChallenges<'_> {
        LoginChallenges { store: self }
    }
}

impl LoginChallenges<'_> {
    /// Records a challenge (by its hash) for a device, valid until `expires_ts`. The device
    /// keeps at most `max_outstanding` unexpired challenges: the oldest beyond go, in the same
    /// write, as do its expired ones.
    pub async fn issue(
        &self,
        challenge_hash: &str,
        user_id: &str,
        device_id: &str,
        now: i64,
        expires_ts: i64,
        max_outstanding: i64,
    ) -> StoreResult<()> {
        let (hash, user, device) = (
            challenge_hash.to_owned(),
            user_id.to_owned(),
            device_id.to_owned(),
        );
        with_conn!(self.store, write, |conn| {
            let of_device = || {
                login_challenges::table
                    .filter(login_challenges::user_id.eq(user.clone()))
                    .filter(login_challenges::device_id.eq(device.clone()))
            };
            diesel::delete(of_device().filter(login_challenges::expires_ts.le(now)))
                .execute(conn)
                .await?;
            let kept: Vec<String> = of_device()
                .order(login_challenges::created_ts.desc())
                .select(login_challenges::challenge_hash)
                .limit(max_outstanding.max(1) - 1)
                .load(conn)
                .await?;
            diesel::delete(of_device().filter(login_challenges::challenge_hash.ne_all(kept)))
                .execute(conn)
                .await?;
            diesel::insert_into(login_challenges::table)
                .values((
                    login_challenges::challenge_hash.eq(&hash),
                    login_challenges::user_id.eq(&user),
                    login_challenges::device_id.eq(&device),
                    login_challenges::created_ts.eq(now),
                    login_challenges::expires_ts.eq(expires_ts),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Uses up the challenge of `challenge_hash` for the device: whether it was there and
    /// unexpired. One statement, so two logins racing with one challenge never both get it.
    pub async fn consume(
        &self,
        challenge_hash: &str,
        user_id: &str,
        device_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let (hash, user, device) = (
            challenge_hash.to_owned(),
            user_id.to_owned(),
            device_id.to_owned(),
        );
        with_conn!(self.store, write, |conn| {
            let n = diesel::delete(
                login_challenges::table
                    .filter(login_challenges::challenge_hash.eq(&hash))
                    .filter(login_challenges::user_id.eq(&user))
                    .filter(login_challenges::device_id.eq(&device))
                    .filter(login_challenges::expires_ts.gt(now)),
            )
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// Deletes expired challenges; how many.
    pub async fn purge_expired(&self, now: i64) -> StoreResult<usize> {
        with_conn!(self.store, write, |conn| {
            Ok(
                diesel::delete(
                    login_challenges::table.filter(login_challenges::expires_ts.le(now)),
                )
                .execute(conn)
                .await?,
            )
        })
    }

    /// Unexpired challenges a device holds (for tests and operators).
    pub async fn outstanding(&self, user_id: &str, device_id: &str, now: i64) -> StoreResult<i64> {
        let (user, device) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self.store, read, |conn| {
            Ok(login_challenges::table
                .filter(login_challenges::user_id.eq(&user))
                .filter(login_challenges::device_id.eq(&device))
                .filter(login_challenges::expires_ts.gt(now))
                .count()
                .get_result(conn)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::stores;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_challenge_is_used_once_and_a_device_holds_at_most_the_bound() {
        for (store, _dir) in stores().await {
            let c = store.login_challenges();
            for i in 0..8 {
                c.issue(&format!("h{i}"), "@a:x", "D", 100 + i, 1000, 3)
                    .await
                    .unwrap();
            }
            assert_eq!(c.outstanding("@a:x", "D", 200).await.unwrap(), 3);
            // The newest three are kept; the oldest went.
            assert!(!c.consume("h0", "@a:x", "D", 200).await.unwrap());
            // Another device's challenge is not this one's.
            assert!(!c.consume("h7", "@a:x", "E", 200).await.unwrap());
            assert!(c.consume("h7", "@a:x", "D", 200).await.unwrap());
            assert!(!c.consume("h7", "@a:x", "D", 200).await.unwrap());
            // Expired: refused.
            assert!(!c.consume("h6", "@a:x", "D", 1000).await.unwrap());
            assert_eq!(c.purge_expired(1000).await.unwrap(), 2);
            assert!(!c.consume("h6", "@a:x", "D", 200).await.unwrap());
        }
    }
}
