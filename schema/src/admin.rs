//! Administration: admin and deactivated users, registration tokens made at runtime, server
//! ACL rules made at runtime, and the audit log of admin actions ([`Store::admin`]).

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::schema::{admin_audit, devices, registration_tokens, server_acl, users};
use crate::{with_conn, Store, StoreError, StoreResult};

/// A user as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserSummary {
    pub user_id: String,
    pub created_ts: i64,
    pub admin: bool,
    pub deactivated_ts: Option<i64>,
}

/// A registration token, without its secret (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = registration_tokens)]
pub struct RegistrationToken {
    /// Hex of the first 6 bytes of the token's SHA-256: names it in listings.
    pub token_id: String,
    /// Registrations it may complete; `None` is unlimited.
    pub uses_allowed: Option<i64>,
    /// Registrations it has completed.
    pub uses: i64,
    /// When it stops working; `None` never.
    pub expires_ts: Option<i64>,
    pub created_ts: i64,
    pub created_by: String,
}

/// A new registration token.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = registration_tokens)]
pub struct NewRegistrationToken {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    pub token_id: String,
    pub uses_allowed: Option<i64>,
    pub expires_ts: Option<i64>,
    pub created_ts: i64,
    pub created_by: String,
}

/// A server ACL rule added at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_acl)]
pub struct AclRule {
    /// A server-name glob (`*` matches any run of characters).
    pub pattern: String,
    /// `allow` or `deny`.
    pub rule: String,
    pub created_ts: i64,
}

/// One admin action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = admin_audit)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: i64,
    /// The admin's user id, or `cli` for an action on the database from the command line.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// JSON of the action's parameters (never a password or a token).
    pub detail: String,
}

/// An admin action to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = admin_audit)]
pub struct NewAuditEntry {
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: String,
}

/// What deactivating an account removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivated {
    /// The devices deleted (their sessions, refresh tokens and key packages went with them).
    pub devices: Vec<String>,
}

/// Administration ([`Store::admin`]).
#[derive(Debug, Clone, Copy)]
pub struct Admin<'s> {
    store: &'s Store,
}

impl Store {
    /// Administration: admin flags, deactivation, registration tokens, ACL rules, audit log.
    pub fn admin(&self) -> Admin<'_> {
        Admin { store: self }
    }
}

/// Escapes `%`, `_` and `\` so that `text` matches itself inside a LIKE pattern.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Admin<'_> {
    /// Whether `user_id` is an admin whose account is active. Read from the database on every
    /// call, so that a change made by any process counts at once.
    pub async fn is_active_admin(&self, user_id: &str) -> StoreResult<bool> {
        let row: Option<(bool, Option<i64>)> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                users::table
                    .find(user_id)
                    .select((users::admin, users::deactivated_ts))
                    .first(conn)
                    .await
                    .optional()?,
            )
        })?;
        Ok(matches!(row, Some((true, None))))
    }

    /// One user's admin view, if the user exists.
    pub async fn user(&self, user_id: &str) -> StoreResult<Option<UserSummary>> {
        with_conn!(self.store, read, |conn| {
            Ok(users::table
                .find(user_id)
                .select(UserSummary::as_select())
                .first(conn)
                .await
                .optional()?)
        })
    }

    /// Sets or clears the admin flag; returns whether the user exists.
    pub async fn set_admin(&self, user_id: &str, admin: bool) -> StoreResult<bool> {
        let user_id = user_id.to_owned();
        with_conn!(self.store, write, |conn| {
            let n = diesel::update(users::table.find(&user_id))
                .set(users::admin.eq(admin))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    /// Users in user-id order after `after`, whose id contains `search` (case-insensitive),
    /// at most `limit`.
    pub async fn list_users(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<UserSummary>> {
        let pattern = search.map(|s| format!("%{}%", like_literal(&s.to_lowercase())));
        let after = after.unwrap_or("").to_owned();
        with_conn!(self.store, read, |conn| {
            let mut query = users::table
                .filter(users::user_id.gt(&after))
                .select(UserSummary::as_select())
                .order(users::user_id.asc())
                .limit(limit)
                .into_boxed();
            if let Some(p) = &pattern {
                // User ids are lower case by grammar, so lowering the search suffices.
                query = query.filter(users::user_id.like(p).escape('\\'));
            }
            Ok(query.load(conn).await?)
        })
    }

    /// Deactivates an account: marks it, and deletes its devices (sessions, refresh tokens
    /// and key packages go with them). `None` when there is no such user.
    pub async fn deactivate(&self, user_id: &str, now_ts: i64) -> StoreResult<Option<Deactivated>> {
        let user_id = user_id.to_owned();
        let memory = self.store.memory.clone();
        let after = move |_: Option<&mut _>| memory.sessions_revoked(None);
        with_conn!(self.store, write, after = after, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                // Deactivating twice keeps the first time.
                let n = diesel::update(
                    users::table
                        .find(&user_id)
                        .filter(users::deactivated_ts.is_null()),
                )
                .set(users::deactivated_ts.eq(Some(now_ts)))
                .execute(c)
                .await?;
                let exists = n > 0
                    || users::table
                        .find(&user_id)
                        .count()
                        .get_result::<i64>(c)
                        .await?
                        > 0;
                if !exists {
                    return Ok(None);
                }
                let gone: Vec<String> = devices::table
                    .filter(devices::user_id.eq(&user_id))
                    .select(devices::device_id)
                    .load(c)
                    .await?;
                diesel::delete(devices::table.filter(devices::user_id.eq(&user_id)))
                    .execute(c)
                    .await?;
                Ok(Some(Deactivated { devices: gone }))
            })
            .await
        })
    }

    /// Whether the account is deactivated (`None`: no such user).
    pub async fn deactivated(&self, user_id: &str) -> StoreResult<Option<bool>> {
        let row: Option<Option<i64>> = with_conn!(self.store, read, |conn| {
            Ok::<_, StoreError>(
                users::table
                    .find(user_id)
                    .select(users::deactivated_ts)
                    .first(conn)
                    .await
                    .optional()?,
            )
        })?;
        Ok(row.map(|ts| ts.is_some()))
    }

    /// Replaces a password hash; with `revoke_sessions`, every session of the user ends too.
    /// Returns whether the user exists.
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        revoke_sessions: bool,
    ) -> StoreResult<bool> {
        let (user_id, password_hash) = (user_id.to_owned(), password_hash.to_owned());
        let memory = self.store.memory.clone();
        let after = move |_: Option<&mut _>| memory.sessions_revoked(None);
        with_conn!(self.store, write, after = after, |conn| {
            conn.transaction::<_, StoreError, _>(async move |c| {
                let n = diesel::update(users::table.find(&user_id))
                    .set(users::password_hash.eq(&password_hash))
                    .execute(c)
                    .await?;
                if n > 0 && revoke_sessions {
                    use crate::schema::sessions;
                    diesel::delete(sessions::table.filter(sessions::user_id.eq(&user_id)))
                        .execute(c)
                        .await?;
                }
                Ok(n > 0)
            })
            .await
        })
    }

    /// Stores a new registration token. [`StoreError::Conflict`] if its id is taken.
    pub async fn create_registration_token(&self, token: NewRegistrationToken) -> StoreResult<()> {
        with_conn!(self.store, write, |conn| {
            diesel::insert_into(registration_tokens::table)
                .values(&token)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Every registration token, newest first.
    pub async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        with_conn!(self.store, read, |conn| {
            Ok(registration_tokens::table
                .select(RegistrationToken::as_select())
                .order((
                    registration_tokens::created_ts.desc(),
                    registration_tokens::token_id.asc(),
                ))
                .load(conn)
                .await?)
        })
    }

    /// Deletes a registration token by id; returns whether it existed.
    pub async fn revoke_registration_token(&self, token_id: &str) -> StoreResult<bool> {
        let token_id = token_id.to_owned();
        with_conn!(self.store, write, |conn| {
            let n = diesel::delete(
                registration_tokens::table.filter(registration_tokens::token_id.eq(&token_id)),
            )
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// Uses a registration token once, if it is unexpired and has uses left: one atomic
    /// compare-and-set, so concurrent registrations never overspend it.
    pub async fn redeem_registration_token(
        &self,
        token_hash: &[u8],
        now_ts: i64,
    ) -> StoreResult<bool> {
        let token_hash = token_hash.to_vec();
        with_conn!(self.store, write, |conn| {
            let n = diesel::update(
                registration_tokens::table
                    .find(&token_hash)
                    .filter(
                        registration_tokens::expires_ts
                            .is_null()
                            .or(registration_tokens::expires_ts.gt(now_ts)),
                    )
                    .filter(
                        registration_tokens::uses_allowed.is_null().or(
                            registration_tokens::uses_allowed
                                .assume_not_null()
                                .gt(registration_tokens::uses),
                        ),
                    ),
            )
            .set(registration_tokens::uses.eq(registration_tokens::uses + 1))
            .execute(conn)
            .await?;
            Ok(n > 0)
        })
    }

    /// Gives back a use of a redeemed token (the registration it was redeemed for failed).
    pub async fn refund_registration_token(&self, token_hash: &[u8]) -> StoreResult<()> {
        let token_hash = token_hash.to_vec();
        with_conn!(self.store, write, |conn| {
            diesel::update(
                registration_tokens::table
                    .find(&token_hash)
                    .filter(registration_tokens::uses.gt(0)),
            )
            .set(registration_tokens::uses.eq(registration_tokens::uses - 1))
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    /// The ACL rules added at runtime.
    pub async fn acl_rules(&self) -> StoreResult<Vec<AclRule>> {
        with_conn!(self.store, read, |conn| {
            Ok(server_acl::table
                .select(AclRule::as_select())
                .order((server_acl::rule.asc(), server_acl::pattern.asc()))
                .load(conn)
                .await?)
        })
    }

    /// Adds an ACL rule; returns false if it was there already.
    pub async fn add_acl_rule(&self, rule: AclRule) -> StoreResult<bool> {
        with_conn!(self.store, write, |conn| {
            let n = diesel::insert_into(server_acl::table)
                .values(&rule)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    /// Removes an ACL rule; returns whether it existed.
    pub async fn remove_acl_rule(&self, pattern: &str, rule: &str) -> StoreResult<bool> {
        let (pattern, rule) = (pattern.to_owned(), rule.to_owned());
        with_conn!(self.store, write, |conn| {
            let n = diesel::delete(server_acl::table.find((&pattern, &rule)))
                .execute(conn)
                .await?;
            Ok(n > 0)
        })
    }

    /// Records an admin action.
    pub async fn audit(&self, entry: NewAuditEntry) -> StoreResult<()> {
        with_conn!(self.store, write, |conn| {
            diesel::insert_into(admin_audit::table)
                .values(&entry)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Audit entries before id `before` (all when `None`), newest first, at most `limit`.
    pub async fn audit_log(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        let before = before.unwrap_or(i64::MAX);
        with_conn!(self.store, read, |conn| {
            Ok(admin_audit::table
                .filter(admin_audit::id.lt(before))
                .select(AuditEntry::as_select())
                .order(admin_audit::id.desc())
                .limit(limit)
                .load(conn)
                .await?)
        })
    }
}
