//! Administration (docs/operations.md#administration): what an admin may do to users,
//! registration tokens, the server ACL, the federation outbox and retention. Every action is
//! written to the audit log, with its parameters but never a password or a token.

pub mod cli;
pub mod error;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parley_client_api::admin::{
    AclRuleInfo, AclRuleRequest, AdminUser, AdminUserDetail, AuditEntryInfo, AuditLogRequest,
    AuditLogResponse, CreateTokenRequest, CreateUserRequest, CreatedToken, DeactivateResponse,
    DestinationStatus, ListUsersRequest, ListUsersResponse, OutboxStatusResponse,
    ResetPasswordRequest, RetentionResponse, RunRetentionRequest, ServerAclResponse, TokenInfo,
    TokensResponse,
};
use parley_client_api::ids::UserId;
use parley_schema::{
    AclRule, NewAuditEntry, NewRegistrationToken, RegistrationToken, StoreError, User, UserSummary,
};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::accounts::{self, error::AccountError};
use crate::clock::now_ms;
use crate::federation::acl;
use crate::state::AppState;
pub use error::AdminError;

/// Who performs an action: an admin's user id, or `cli` for the command line on the database.
pub type Actor<'a> = &'a str;

/// Page size of listings when the request names none, and the most a request may ask for.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Longest ACL pattern.
const MAX_PATTERN_BYTES: usize = 255;

fn page(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE))
}

fn ts(ms: i64) -> u64 {
    ms.max(0) as u64
}

fn admin_user(u: UserSummary) -> AdminUser {
    AdminUser {
        user_id: u.user_id,
        admin: u.admin,
        deactivated_ts: u.deactivated_ts.map(ts),
        created_ts: ts(u.created_ts),
    }
}

/// Writes one action to the audit log.
pub async fn audit(
    state: &AppState,
    actor: Actor<'_>,
    action: &str,
    target: Option<&str>,
    detail: Value,
) -> Result<(), AdminError> {
    state
        .store
        .admin()
        .audit(NewAuditEntry {
            ts: now_ms() as i64,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            detail: detail.to_string(),
        })
        .await?;
    tracing::info!(%actor, action, target, "admin action");
    Ok(())
}

/// A local user's admin view; `NotFound` for unknown and remote users alike.
async fn local_user(state: &AppState, user_id: &UserId) -> Result<UserSummary, AdminError> {
    let local = crate::ids::same_server(user_id.server_name(), &state.config.server_name);
    let found = if local {
        state.store.admin().user(user_id.as_str()).await?
    } else {
        None
    };
    found.ok_or_else(|| AdminError::NotFound(format!("no local user {user_id}")))
}

/// Local users, by id.
pub async fn list_users(
    state: &AppState,
    actor: Actor<'_>,
    req: ListUsersRequest,
) -> Result<ListUsersResponse, AdminError> {
    let limit = page(req.limit);
    let users = state
        .store
        .admin()
        .list_users(req.search.as_deref(), req.from.as_deref(), limit)
        .await?;
    let next_from = (users.len() as i64 == limit)
        .then(|| users.last().map(|u| u.user_id.clone()))
        .flatten();
    audit(
        state,
        actor,
        "list_users",
        None,
        json!({"search": req.search, "from": req.from}),
    )
    .await?;
    Ok(ListUsersResponse {
        users: users.into_iter().map(admin_user).collect(),
        next_from,
    })
}

/// One local user and its devices.
pub async fn get_user(
    state: &AppState,
    actor: Actor<'_>,
    user_id: &UserId,
) -> Result<AdminUserDetail, AdminError> {
    let user = local_user(state, user_id).await?;
    let devices = state.store.accounts().devices(user_id.as_str()).await?;
    audit(state, actor, "get_user", Some(user_id.as_str()), json!({})).await?;
    Ok(AdminUserDetail {
        user: admin_user(user),
        devices: devices.into_iter().map(accounts::device_info).collect(),
    })
}

/// Creates a local user without devices, refusing what registration would refuse.
pub async fn create_user(
    state: &AppState,
    actor: Actor<'_>,
    req: CreateUserRequest,
) -> Result<AdminUser, AdminError> {
    let password = Zeroizing::new(req.password);
    let user_id = accounts::check_new_account(state, &req.username, &password)?;
    let password_hash = state
        .passwords
        .hash(password)
        .await
        .map_err(AdminError::Account)?;
    let user = User {
        user_id: user_id.to_string(),
        localpart: req.username,
        password_hash,
        created_ts: now_ms() as i64,
    };
    match state.store.accounts().create_user(&user, req.admin).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(AccountError::UserInUse.into()),
        Err(e) => return Err(e.into()),
    }
    audit(
        state,
        actor,
        "create_user",
        Some(&user.user_id),
        json!({"admin": req.admin}),
    )
    .await?;
    Ok(AdminUser {
        user_id: user.user_id,
        admin: req.admin,
        deactivated_ts: None,
        created_ts: ts(user.created_ts),
    })
}

/// Sets a local user's password; by default their sessions end.
pub async fn reset_password(
    state: &AppState,
    actor: Actor<'_>,
    user_id: &UserId,
    req: ResetPasswordRequest,
) -> Result<(), AdminError> {
    let password = Zeroizing::new(req.password);
    local_user(state, user_id).await?;
    accounts::check_password_shape(&password)?;
    let min = state.config.registration.min_password_length;
    if password.chars().count() < min {
        return Err(AccountError::WeakPassword { min }.into());
    }
    let hash = state.passwords.hash(password).await?;
    if !state
        .store
        .admin()
        .set_password(user_id.as_str(), &hash, req.logout_devices)
        .await?
    {
        return Err(AdminError::NotFound(format!("no local user {user_id}")));
    }
    if req.logout_devices {
        wake_devices(state, user_id.as_str()).await;
    }
    audit(
        state,
        actor,
        "reset_password",
        Some(user_id.as_str()),
        json!({"logout_devices": req.logout_devices}),
    )
    .await
}

/// Wakes every device of a user whose sessions ended, so their sockets and long-polls notice.
async fn wake_devices(state: &AppState, user_id: &str) {
    if let Ok(devices) = state.store.accounts().devices(user_id).await {
        for d in devices {
            state.notifier.notify_session(user_id, &d.device_id);
        }
    }
}

/// Grants or withdraws the admin flag of a local user (not one's own).
pub async fn set_admin(
    state: &AppState,
    actor: Actor<'_>,
    user_id: &UserId,
    admin: bool,
) -> Result<(), AdminError> {
    if user_id.as_str() == actor && !admin {
        return Err(AdminError::NotOnYourself(
            "an admin cannot withdraw their own admin flag".into(),
        ));
    }
    local_user(state, user_id).await?;
    state
        .store
        .admin()
        .set_admin(user_id.as_str(), admin)
        .await?;
    audit(
        state,
        actor,
        "set_admin",
        Some(user_id.as_str()),
        json!({"admin": admin}),
    )
    .await
}

/// Deactivates a local user for good: their devices go (sessions, refresh tokens and key
/// packages with them), login is refused, other servers learn the empty device list, and
/// the groups hosted here that hold the devices get a removal notice.
pub async fn deactivate(
    state: &AppState,
    actor: Actor<'_>,
    user_id: &UserId,
) -> Result<DeactivateResponse, AdminError> {
    if user_id.as_str() == actor {
        return Err(AdminError::NotOnYourself(
            "an admin cannot deactivate themselves".into(),
        ));
    }
    local_user(state, user_id).await?;
    // Woken before the devices go, while they can still be listed.
    let devices = state.store.accounts().devices(user_id.as_str()).await?;
    let Some(gone) = state
        .store
        .admin()
        .deactivate(user_id.as_str(), now_ms() as i64)
        .await?
    else {
        return Err(AdminError::NotFound(format!("no local user {user_id}")));
    };
    for d in &devices {
        state
            .notifier
            .notify_session(user_id.as_str(), &d.device_id);
    }
    crate::keys::publish_device_list(state, user_id.as_str()).await?;
    let groups_notified = crate::hub::notice::member_deactivated(state, user_id).await?;
    audit(
        state,
        actor,
        "deactivate_user",
        Some(user_id.as_str()),
        json!({"devices": gone.devices, "groups_notified": groups_notified}),
    )
    .await?;
    Ok(DeactivateResponse {
        devices_removed: gone.devices,
        groups_notified,
    })
}

fn token_info(t: RegistrationToken) -> TokenInfo {
    TokenInfo {
        token_id: t.token_id,
        uses_allowed: t.uses_allowed.map(ts),
        uses: ts(t.uses),
        expires_ts: t.expires_ts.map(ts),
        created_ts: ts(t.created_ts),
        created_by: t.created_by,
    }
}

/// Makes a registration token: 24 random bytes, of which only the hash is kept.
pub async fn create_token(
    state: &AppState,
    actor: Actor<'_>,
    req: CreateTokenRequest,
) -> Result<CreatedToken, AdminError> {
    let mut secret = Zeroizing::new([0u8; 24]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let token = URL_SAFE_NO_PAD.encode(secret.as_ref());
    let hash = Sha256::digest(token.as_bytes());
    let token_id: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let row = NewRegistrationToken {
        token_hash: hash.to_vec(),
        token_id: token_id.clone(),
        uses_allowed: req.uses_allowed.map(i64::from),
        expires_ts: req.expires_ts.map(|t| t.min(i64::MAX as u64) as i64),
        created_ts: now_ms() as i64,
        created_by: actor.to_owned(),
    };
    state
        .store
        .admin()
        .create_registration_token(row.clone())
        .await?;
    audit(
        state,
        actor,
        "create_registration_token",
        Some(&token_id),
        json!({"uses_allowed": req.uses_allowed, "expires_ts": req.expires_ts}),
    )
    .await?;
    Ok(CreatedToken {
        token,
        info: TokenInfo {
            token_id,
            uses_allowed: row.uses_allowed.map(ts),
            uses: 0,
            expires_ts: row.expires_ts.map(ts),
            created_ts: ts(row.created_ts),
            created_by: row.created_by,
        },
    })
}

/// The registration tokens admins made.
pub async fn list_tokens(state: &AppState, actor: Actor<'_>) -> Result<TokensResponse, AdminError> {
    let tokens = state.store.admin().registration_tokens().await?;
    audit(state, actor, "list_registration_tokens", None, json!({})).await?;
    Ok(TokensResponse {
        tokens: tokens.into_iter().map(token_info).collect(),
    })
}

/// Revokes a registration token.
pub async fn revoke_token(
    state: &AppState,
    actor: Actor<'_>,
    token_id: &str,
) -> Result<(), AdminError> {
    if !state
        .store
        .admin()
        .revoke_registration_token(token_id)
        .await?
    {
        return Err(AdminError::NotFound(format!(
            "no registration token {token_id}"
        )));
    }
    audit(
        state,
        actor,
        "revoke_registration_token",
        Some(token_id),
        json!({}),
    )
    .await
}

/// The server ACL, both sources.
pub async fn server_acl(
    state: &AppState,
    actor: Actor<'_>,
) -> Result<ServerAclResponse, AdminError> {
    let runtime = state.store.admin().acl_rules().await?;
    let (allow, deny) = state.fed.acl().config_rules();
    audit(state, actor, "get_server_acl", None, json!({})).await?;
    Ok(ServerAclResponse {
        config_allow: allow.to_vec(),
        config_deny: deny.to_vec(),
        runtime: runtime
            .into_iter()
            .map(|r| AclRuleInfo {
                pattern: r.pattern,
                rule: r.rule,
                created_ts: ts(r.created_ts),
            })
            .collect(),
    })
}

fn check_rule(req: &AclRuleRequest) -> Result<(), AdminError> {
    if !acl::is_rule(&req.rule) {
        return Err(AdminError::BadRequest(
            "rule must be \"allow\" or \"deny\"".into(),
        ));
    }
    let pattern_ok = !req.pattern.is_empty()
        && req.pattern.len() <= MAX_PATTERN_BYTES
        && req
            .pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:*[]".contains(&b));
    if !pattern_ok {
        return Err(AdminError::BadRequest(format!(
            "pattern must be 1..={MAX_PATTERN_BYTES} of a-z A-Z 0-9 . - : * [ ]"
        )));
    }
    Ok(())
}

/// Adds a runtime ACL rule and applies it in this process at once.
pub async fn add_acl_rule(
    state: &AppState,
    actor: Actor<'_>,
    req: AclRuleRequest,
) -> Result<(), AdminError> {
    check_rule(&req)?;
    state
        .store
        .admin()
        .add_acl_rule(AclRule {
            pattern: req.pattern.to_ascii_lowercase(),
            rule: req.rule.clone(),
            created_ts: now_ms() as i64,
        })
        .await?;
    state.fed.acl().reload(&state.store).await?;
    audit(
        state,
        actor,
        "add_acl_rule",
        Some(&req.pattern),
        json!({"rule": req.rule}),
    )
    .await
}

/// Removes a runtime ACL rule and applies that in this process at once.
pub async fn remove_acl_rule(
    state: &AppState,
    actor: Actor<'_>,
    req: AclRuleRequest,
) -> Result<(), AdminError> {
    check_rule(&req)?;
    if !state
        .store
        .admin()
        .remove_acl_rule(&req.pattern.to_ascii_lowercase(), &req.rule)
        .await?
    {
        return Err(AdminError::NotFound(format!(
            "no runtime {} rule {}",
            req.rule, req.pattern
        )));
    }
    state.fed.acl().reload(&state.store).await?;
    audit(
        state,
        actor,
        "remove_acl_rule",
        Some(&req.pattern),
        json!({"rule": req.rule}),
    )
    .await
}

/// The outbox by destination.
pub async fn outbox_status(
    state: &AppState,
    actor: Actor<'_>,
) -> Result<OutboxStatusResponse, AdminError> {
    let queues = state.store.outbox().queues().await?;
    audit(state, actor, "outbox_status", None, json!({})).await?;
    Ok(OutboxStatusResponse {
        destinations: queues
            .into_iter()
            .map(|q| {
                let sender = state.outbox.status(&q.destination);
                DestinationStatus {
                    queued: ts(q.queued),
                    oldest_ts: ts(q.oldest_ts),
                    sending: sender.sending,
                    backing_off: sender.backing_off,
                    consecutive_failures: sender.consecutive_failures,
                    destination: q.destination,
                }
            })
            .collect(),
    })
}

/// Retries a destination with queued events now.
pub async fn retry_destination(
    state: &AppState,
    actor: Actor<'_>,
    destination: &str,
) -> Result<(), AdminError> {
    let queues = state.store.outbox().queues().await?;
    if !queues.iter().any(|q| q.destination == destination) {
        return Err(AdminError::NotFound(format!(
            "nothing is queued for {destination}"
        )));
    }
    state.outbox.retry_now(destination);
    audit(
        state,
        actor,
        "retry_destination",
        Some(destination),
        json!({}),
    )
    .await
}

/// Runs the retention jobs now.
pub async fn run_retention(
    state: &AppState,
    actor: Actor<'_>,
    req: RunRetentionRequest,
) -> Result<RetentionResponse, AdminError> {
    let messages_ms = req
        .messages_older_than_ms
        .or(state.config.retention.messages_ms);
    let pruned = crate::retention::run_with(state, messages_ms).await;
    let answer = RetentionResponse {
        key_packages: pruned.key_packages as u64,
        transaction_ids: pruned.transaction_ids as u64,
        inbound_transactions: pruned.inbound_transactions as u64,
        messages: pruned.messages as u64,
        media: pruned.media as u64,
    };
    audit(
        state,
        actor,
        "run_retention",
        None,
        json!({"key_packages": answer.key_packages, "transaction_ids": answer.transaction_ids,
               "inbound_transactions": answer.inbound_transactions, "messages": answer.messages,
               "media": answer.media,
               "messages_older_than_ms": messages_ms}),
    )
    .await?;
    Ok(answer)
}

/// The audit log, newest first.
pub async fn audit_log(
    state: &AppState,
    actor: Actor<'_>,
    req: AuditLogRequest,
) -> Result<AuditLogResponse, AdminError> {
    let entries = state
        .store
        .admin()
        .audit_log(req.before, page(req.limit))
        .await?;
    audit(
        state,
        actor,
        "read_audit_log",
        None,
        json!({"before": req.before}),
    )
    .await?;
    Ok(AuditLogResponse {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryInfo {
                id: e.id,
                ts: ts(e.ts),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: serde_json::from_str(&e.detail).unwrap_or(Value::Null),
            })
            .collect(),
    })
}

/// `parley admin make-admin`: grants the flag directly on the database (the way to get the
/// first admin); returns whether the user exists.
pub async fn make_admin_on_store(
    store: &parley_schema::Store,
    user_id: &str,
) -> Result<bool, StoreError> {
    if !store.admin().set_admin(user_id, true).await? {
        return Ok(false);
    }
    store
        .admin()
        .audit(NewAuditEntry {
            ts: now_ms() as i64,
            actor: "cli".into(),
            action: "set_admin".into(),
            target: Some(user_id.to_owned()),
            detail: json!({"admin": true}).to_string(),
        })
        .await?;
    Ok(true)
}
