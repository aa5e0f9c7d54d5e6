//! Users, devices, sessions and refresh tokens.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

pub use crate::rows::Session;
use crate::schema::{devices, refresh_tokens, sessions, users};
use crate::{with_conn, Store, StoreError, StoreResult};

/// Inserts a current (not rotated) refresh token, on either backend's connection.
macro_rules! insert_refresh {
    ($c:expr, $hash:expr, $session_id:expr, $expires_ts:expr) => {
        diesel::insert_into(refresh_tokens::table)
            .values(NewRefreshToken {
                token_hash: $hash,
                session_id: $session_id,
                rotated: false,
                expires_ts: $expires_ts,
            })
            .execute($c)
            .await
    };
}

/// Deletes every session of one device (refresh tokens cascade), on either backend.
macro_rules! delete_device_sessions {
    ($c:expr, $user_id:expr, $device_id:expr) => {
        diesel::delete(
            sessions::table.filter(
                sessions::user_id
                    .eq($user_id)
                    .and(sessions::device_id.eq($device_id)),
            ),
        )
        .execute($c)
        .await
    };
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub user_id: String,
    pub localpart: String,
    /// PHC string of the Argon2id hash, parameters included.
    pub password_hash: String,
    pub created_ts: i64,
}

/// One of a user's devices.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct Device {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    /// Raw 32-byte Ed25519 MLS signature key, once bound.
    pub signature_key: Option<Vec<u8>>,
    pub created_ts: i64,
    pub last_seen_ts: i64,
}

/// A device to create together with a session.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = devices)]
pub struct NewDevice {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub created_ts: i64,
    pub last_seen_ts: i64,
}

#[derive(Insertable)]
#[diesel(table_name = refresh_tokens)]
struct NewRefreshToken<'a> {
    token_hash: &'a [u8],
    session_id: &'a str,
    rotated: bool,
    expires_ts: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was current: it is now rotated out and the new one stored.
    Rotated(Session),
    /// The token had already been rotated out: every session of its device was revoked.
    Reused { user_id: String, device_id: String },
    /// No such token (never issued, expired, or its session is gone).
    Unknown,
}

/// Session look-ups waiting for the next shared read ([`Accounts::session`] while other
/// processes serve the database), and whether a round of reads is running.
#[derive(Default)]
pub(crate) struct SessionReads {
    waiting: Vec<(String, SessionAnswer)>,
    running: bool,
    /// Rounds (queries) run so far.
    pub(crate) rounds: u64,
}

/// Where one waiting look-up gets its session (or why the read failed).
type SessionAnswer = tokio::sync::oneshot::Sender<Result<Option<Session>, String>>;

/// Session look-ups answered by one query at most.
const SESSION_ROUND: usize = 512;

/// The task running rounds of session reads. Should it end early (a panic, the runtime
/// shutting down), the next look-up must start rounds again, and those waiting are told
/// rather than left waiting.
struct RoundsRunning<'s> {
    store: &'s Store,
    /// Ended normally (it said so under the lock itself).
    done: bool,
}

impl Drop for RoundsRunning<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut reads = self.store.memory.session_reads();
            reads.running = false;
            // Dropping their answers tells them the read failed.
            reads.waiting.clear();
        }
    }
}

/// Users, devices, sessions and refresh tokens ([`Store::accounts`]).
#[derive(Debug, Clone, Copy)]
pub struct Accounts<'s> {
    store: &'s Store,
}

impl Store {
    /// Users, devices, sessions and refresh tokens.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { store: self }
    }
}

impl Accounts<'_> {
    /// Creates a user, its first device and a session with its first refresh token, atomically.
    /// Fails with [`StoreError::Conflict`] when the user id is taken.
    pub async fn create_user_with_session(
        &self,
        user: &User,
        device: &NewDevice,
        session: &Session,
        refresh_hash: &[u8],
        refresh_expires_ts: i64,
    ) -> StoreResult<()> {
        let (user, device, session) = (user.clone(), device.clone(), session.clone());
        let refresh_hash = refresh_hash.to_vec();
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                diesel::insert_into(users::table)
                    .values(&user)
                    .execute(c)
                    .await?;
                diesel::insert_into(devices::table)
                    .values(&device)
                    .execute(c)
                    .await?;
                diesel::insert_into(sessions::table)
                    .values(&session)
                    .execute(c)
                    .await?;
                insert_refresh!(c, &refresh_hash, &session.session_id, refresh_expires_ts)?;
                Ok(())
            })
            .await
        })
    }

    /// Creates a user without devices (an admin's doing), with the admin flag if `admin`.
    /// Fails with [`StoreError::Conflict`] when the user id is taken.
    pub async fn create_user(&self, user: &User, admin: bool) -> StoreResult<()> {
        let user = user.clone();
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                diesel::insert_into(users::table)
                    .values(&user)
                    .execute(c)
                    .await?;
                if admin {
                    diesel::update(users::table.find(&user.user_id))
                        .set(users::admin.eq(true))
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        })
    }

    /// Opens a session, creating `new_device` first when given; atomically.
    pub async fn create_session(
        &self,
        new_device: Option<&NewDevice>,
        session: &Session,
        refresh_hash: &[u8],
        refresh_expires_ts: i64,
    ) -> StoreResult<()> {
        let (device, session) = (new_device.cloned(), session.clone());
        let refresh_hash = refresh_hash.to_vec();
        with_conn!(self.store, write, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                if let Some(device) = &device {
                    diesel::insert_into(devices::table)
                        .values(device)
                        .execute(c)
                        .await?;
                }
                diesel::insert_into(sessions::table)
                    .values(&session)
                    .execute(c)
                    .await?;
                insert_refresh!(c, &refresh_hash, &session.session_id, refresh_expires_ts)?;
                Ok(())
            })
            .await
        })
    }

    /// The user with this id.
    pub async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        with_conn!(self.store, read, |conn| {
            Ok(users::table
                .find(user_id)
                .select(User::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// One device of a user.
    pub async fn device(&self, user_id: &str, device_id: &str) -> StoreResult<Option<Device>> {
        with_conn!(self.store, read, |conn| {
            Ok(devices::table
                .find((user_id, device_id))
                .select(Device::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// All devices of a user, oldest first.
    pub async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        with_conn!(self.store, read, |conn| {
            Ok(devices::table
                .filter(devices::user_id.eq(user_id))
                .order((devices::created_ts.asc(), devices::device_id.asc()))
                .select(Device::as_select())
                .load(conn)
                .await?)
        })
    }

    /// Deletes a device; its sessions and refresh tokens go with it. Returns whether it existed.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let memory = self.store.memory.clone();
        let after = move |_: Option<&mut _>| memory.sessions_revoked(None);
        with_conn!(self.store, write, after = after, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                delete_device_sessions!(c, &user_id, &device_id)?;
                let n = diesel::delete(devices::table.find((&user_id, &device_id)))
                    .execute(c)
                    .await?;
                Ok(n > 0)
            })
            .await
        })
    }

    /// Records that a device was seen at `now_ts`.
    pub async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        now_ts: i64,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        with_conn!(self.store, write, |conn| {
            diesel::update(devices::table.find((&user_id, &device_id)))
                .set(devices::last_seen_ts.eq(now_ts))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The live session with this id, if it was not revoked.
    /// Served from memory once read (every write that deletes sessions invalidates it), except
    /// while other processes serve the same database.
    pub async fn session(&self, session_id: &str) -> StoreResult<Option<Session>> {
        // While other processes serve the database, a revocation there must count here at
        // once, before its signal arrives: read the database every time.
        let shared = self
            .store
            .memory
            .cluster
            .get()
            .is_some_and(|c| c.has_peers());
        if shared {
            return self.read_session_together(session_id).await;
        }
        let generation = match self.store.memory.sessions.get(session_id) {
            Ok(session) => return Ok(Some(session)),
            Err(generation) => Some(generation),
        };
        let session: Option<Session> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                sessions::table
                    .find(session_id)
                    .select(Session::as_select())
                    .first(conn)
                    .await
                    .optional()?,
            )
        })?;
        if let (Some(s), Some(generation)) = (&session, generation) {
            self.store
                .memory
                .sessions
                .fill(generation, s.session_id.clone(), s.clone());
        }
        Ok(session)
    }

    /// Reads a session from the database together with the other look-ups waiting at the
    /// same moment: under load, one query serves many requests instead of one each. A round
    /// runs while any are waiting; who comes during a round goes in the next.
    async fn read_session_together(&self, session_id: &str) -> StoreResult<Option<Session>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start_round = {
            let mut reads = self.store.memory.session_reads();
            reads.waiting.push((session_id.to_owned(), answer));
            !std::mem::replace(&mut reads.running, true)
        };
        if start_round {
            let store = self.store.clone();
            tokio::spawn(async move { store.accounts().session_read_rounds().await });
        }
        match answered.await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(reason)) => Err(StoreError::Pool(reason)),
            Err(_) => Err(StoreError::Pool("the session read was dropped".into())),
        }
    }

    /// Runs rounds of session reads until none are waiting, [`SESSION_ROUND`] look-ups at
    /// most per query.
    async fn session_read_rounds(&self) {
        let mut rounds = RoundsRunning {
            store: self.store,
            done: false,
        };
        loop {
            let waiting: Vec<(String, SessionAnswer)> = {
                let mut reads = self.store.memory.session_reads();
                if reads.waiting.is_empty() {
                    reads.running = false;
                    rounds.done = true;
                    return;
                }
                reads.rounds += 1;
                let take = reads.waiting.len().min(SESSION_ROUND);
                reads.waiting.drain(..take).collect()
            };
            let mut ids: Vec<String> = waiting.iter().map(|(id, _)| id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            match self.sessions_by_id(&ids).await {
                Ok(rows) => {
                    let by_id: std::collections::HashMap<&str, &Session> =
                        rows.iter().map(|s| (s.session_id.as_str(), s)).collect();
                    for (id, answer) in waiting {
                        let _ = answer.send(Ok(by_id.get(id.as_str()).map(|s| (*s).clone())));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for (_, answer) in waiting {
                        let _ = answer.send(Err(reason.clone()));
                    }
                }
            }
        }
    }

    /// The live sessions among `ids`.
    async fn sessions_by_id(&self, ids: &[String]) -> StoreResult<Vec<Session>> {
        with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                sessions::table
                    .filter(sessions::session_id.eq_any(ids))
                    .select(Session::as_select())
                    .load(conn)
                    .await?,
            )
        })
    }

    /// Revokes one session. Returns whether it existed.
    pub async fn delete_session(&self, session_id: &str) -> StoreResult<bool> {
        let session_id = session_id.to_owned();
        let memory = self.store.memory.clone();
        let revoked = session_id.clone();
        let after = move |_: Option<&mut _>| memory.sessions_revoked(Some(&revoked));
        with_conn!(self.store, write, after = after, |conn| {
            let n = diesel::delete(sessions::table.find(&session_id))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    /// Presents refresh token `old_hash`: rotates it to `new_hash`, or detects reuse of a
    /// rotated-out token and revokes every session of its device (RFC 6819 §5.2.2.3).
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now_ts: i64,
        new_expires_ts: i64,
    ) -> StoreResult<RotateOutcome> {
        self.rotate_refresh_token_with_grace(old_hash, new_hash, now_ts, new_expires_ts, 0)
            .await
    }

    /// [`Accounts::rotate_refresh_token`] where a token rotated out less than `grace_ms` ago,
    /// whose successor `new_hash` is still unused, rotates again to that same successor (a
    /// client retrying a refresh whose answer it lost) instead of counting as reuse. The
    /// rotation is a compare-and-set on `rotated`, so two concurrent refreshes of one token
    /// never both mint a new one.
    pub async fn rotate_refresh_token_with_grace(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now_ts: i64,
        new_expires_ts: i64,
        grace_ms: i64,
    ) -> StoreResult<RotateOutcome> {
        let (old_hash, new_hash) = (old_hash.to_vec(), new_hash.to_vec());
        // A reused token revokes every session of its device.
        let memory = self.store.memory.clone();
        let after = move |outcome: Option<&mut RotateOutcome>| {
            if !matches!(
                outcome,
                Some(RotateOutcome::Rotated(_) | RotateOutcome::Unknown)
            ) {
                memory.sessions_revoked(None);
            }
        };
        with_conn!(self.store, write, after = after, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let found: Option<(String, bool, i64, Option<i64>)> = refresh_tokens::table
                    .find(&old_hash)
                    .select((
                        refresh_tokens::session_id,
                        refresh_tokens::rotated,
                        refresh_tokens::expires_ts,
                        refresh_tokens::rotated_ts,
                    ))
                    .first(c)
                    .await
                    .optional()?;
                let Some((session_id, mut rotated, expires_ts, mut rotated_ts)) = found else {
                    return Ok(RotateOutcome::Unknown);
                };
                let session: Option<Session> = sessions::table
                    .find(&session_id)
                    .select(Session::as_select())
                    .first(c)
                    .await
                    .optional()?;
                let Some(session) = session else {
                    return Ok(RotateOutcome::Unknown);
                };
                if !rotated {
                    if expires_ts <= now_ts {
                        return Ok(RotateOutcome::Unknown);
                    }
                    // Compare-and-set: on PostgreSQL a concurrent rotation holds the row and
                    // this update then finds it rotated.
                    let won = diesel::update(
                        refresh_tokens::table
                            .find(&old_hash)
                            .filter(refresh_tokens::rotated.eq(false)),
                    )
                    .set((
                        refresh_tokens::rotated.eq(true),
                        refresh_tokens::rotated_ts.eq(Some(now_ts)),
                    ))
                    .execute(c)
                    .await?
                        == 1;
                    if won {
                        insert_refresh!(c, &new_hash, &session_id, new_expires_ts)?;
                        return Ok(RotateOutcome::Rotated(session));
                    }
                    rotated = true;
                    rotated_ts = Some(now_ts);
                }
                let in_grace = rotated && rotated_ts.is_some_and(|t| now_ts - t < grace_ms);
                if in_grace {
                    let successor_unused: Option<bool> = refresh_tokens::table
                        .find(&new_hash)
                        .filter(refresh_tokens::session_id.eq(&session_id))
                        .select(refresh_tokens::rotated)
                        .first(c)
                        .await
                        .optional()?;
                    if successor_unused == Some(false) {
                        return Ok(RotateOutcome::Rotated(session));
                    }
                }
                delete_device_sessions!(c, &session.user_id, &session.device_id)?;
                Ok(RotateOutcome::Reused {
                    user_id: session.user_id,
                    device_id: session.device_id,
                })
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` look-ups made at once, of sessions `s0`…`s{ids - 1}` in turn, with what each got.
    async fn read_at_once(
        store: &Store,
        count: usize,
        ids: usize,
    ) -> Vec<(String, StoreResult<Option<Session>>)> {
        futures_util::future::join_all((0..count).map(|i| async move {
            let id = format!("s{}", i % ids);
            let found = store.accounts().read_session_together(&id).await;
            (id, found)
        }))
        .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn session_reads_made_at_once_share_queries_and_each_gets_its_own_answer() {
        for (store, _dir) in crate::testing::stores().await {
            for i in 0..5 {
                let name = format!("u{i}");
                let user_id = format!("@{name}:test.example");
                store
                    .accounts()
                    .create_user_with_session(
                        &User {
                            user_id: user_id.clone(),
                            localpart: name,
                            password_hash: "$argon2id$fake".into(),
                            created_ts: 1,
                        },
                        &NewDevice {
                            user_id: user_id.clone(),
                            device_id: "D".into(),
                            display_name: None,
                            created_ts: 1,
                            last_seen_ts: 1,
                        },
                        &Session {
                            session_id: format!("s{i}"),
                            user_id,
                            device_id: "D".into(),
                            created_ts: 1,
                        },
                        format!("refresh{i}").as_bytes(),
                        100,
                    )
                    .await
                    .unwrap();
            }
            assert!(store.accounts().delete_session("s4").await.unwrap());
            // 60 look-ups at once: s0–s3 live, s4 revoked, s5 never existed.
            for (id, found) in read_at_once(&store, 60, 6).await {
                let found = found.unwrap();
                match id.as_str() {
                    "s4" | "s5" => assert!(found.is_none(), "{id}: {found:?}"),
                    _ => assert_eq!(found.map(|s| s.session_id), Some(id)),
                }
            }
            let rounds = store.memory.session_reads().rounds;
            assert!(rounds < 10, "{rounds} queries for 60 reads made at once");
            // A crowd larger than one query takes is answered over several, each its own.
            let before = store.memory.session_reads().rounds;
            for (id, found) in read_at_once(&store, 2 * SESSION_ROUND + 76, 4).await {
                assert_eq!(found.unwrap().map(|s| s.session_id), Some(id));
            }
            let crowd_rounds = store.memory.session_reads().rounds - before;
            assert!(crowd_rounds >= 3, "{crowd_rounds} queries for 1,100 reads");
            // The next read, alone, is answered too (the rounds ended and start again).
            let alone = store.accounts().read_session_together("s1").await.unwrap();
            assert_eq!(alone.map(|s| s.session_id).as_deref(), Some("s1"));
        }
    }
}
