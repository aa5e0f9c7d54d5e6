//! The admin API, `/_parley/admin/v1` (docs/operations.md#administration): for users whose
//! account carries the admin flag (`parley admin make-admin`). Every action is written to the
//! audit log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::accounts::DeviceInfo;
use crate::endpoint::{Empty, NoQuery};
use crate::params::UserPath;

/// Path prefix of the admin API.
pub const ADMIN_PREFIX: &str = "/_parley/admin/v1";

crate::endpoint! {
    /// Local users in user-id order, optionally those whose id contains `search`; page with
    /// `from` (the last user id of the previous page).
    ListUsers: Get "/_parley/admin/v1/users",
    auth AdminToken, rate Admin, body Default, path (),
    ListUsersRequest => ListUsersResponse, errors []
}

crate::endpoint! {
    /// One local user with its devices.
    GetUser: Get "/_parley/admin/v1/users/{user_id}",
    auth AdminToken, rate Admin, body Default, path UserPath,
    NoQuery => AdminUserDetail, errors [NotFound]
}

crate::endpoint! {
    /// Creates a local user (whatever `registration.mode` says), without a device: the user
    /// logs in to get one.
    CreateUser: Post "/_parley/admin/v1/users",
    auth AdminToken, rate Admin, body Default, path (),
    CreateUserRequest => AdminUser, errors [UserInUse, InvalidUsername, WeakPassword]
}

crate::endpoint! {
    /// Sets a new password; by default every session of the user ends too.
    ResetPassword: Post "/_parley/admin/v1/users/{user_id}/password",
    auth AdminToken, rate Admin, body Default, path UserPath,
    ResetPasswordRequest => Empty, errors [NotFound, WeakPassword]
}

crate::endpoint! {
    /// Grants or withdraws the admin flag (an admin cannot withdraw their own).
    SetAdmin: Put "/_parley/admin/v1/users/{user_id}/admin",
    auth AdminToken, rate Admin, body Default, path UserPath,
    SetAdminRequest => Empty, errors [NotFound, Forbidden]
}

crate::endpoint! {
    /// Deactivates a user for good: sessions end, login is refused (403
    /// `P_USER_DEACTIVATED`), the devices are deleted, other servers learn the empty device
    /// list, and every group hosted here that holds one of the devices gets a `notice` in its
    /// log asking its members to commit their removal.
    DeactivateUser: Post "/_parley/admin/v1/users/{user_id}/deactivate",
    auth AdminToken, rate Admin, body Default, path UserPath,
    Empty => DeactivateResponse, errors [NotFound, Forbidden]
}

crate::endpoint! {
    /// Creates a registration token (when `registration.mode = "token"`); the token is shown
    /// only in this answer, the server keeps its hash.
    CreateRegistrationToken: Post "/_parley/admin/v1/registration_tokens",
    auth AdminToken, rate Admin, body Default, path (),
    CreateTokenRequest => CreatedToken, errors []
}

crate::endpoint! {
    /// Registration tokens made through this API, newest first (without their secrets).
    ListRegistrationTokens: Get "/_parley/admin/v1/registration_tokens",
    auth AdminToken, rate Admin, body Default, path (),
    NoQuery => TokensResponse, errors []
}

crate::endpoint! {
    /// Revokes a registration token by its id.
    RevokeRegistrationToken: Delete "/_parley/admin/v1/registration_tokens/{token_id}",
    auth AdminToken, rate Admin, body Default, path TokenPath,
    NoQuery => Empty, errors [NotFound]
}

crate::endpoint! {
    /// The server ACL: the config file's rules and those added at runtime.
    GetServerAcl: Get "/_parley/admin/v1/server_acl",
    auth AdminToken, rate Admin, body Default, path (),
    NoQuery => ServerAclResponse, errors []
}

crate::endpoint! {
    /// Adds an ACL rule, kept in the database and applied at once.
    AddAclRule: Post "/_parley/admin/v1/server_acl",
    auth AdminToken, rate Admin, body Default, path (),
    AclRuleRequest => Empty, errors []
}

crate::endpoint! {
    /// Removes an ACL rule added at runtime (the config file's stay).
    RemoveAclRule: Delete "/_parley/admin/v1/server_acl",
    auth AdminToken, rate Admin, body Default, path (),
    AclRuleRequest => Empty, errors [NotFound]
}

crate::endpoint! {
    /// The federation outbox: per destination, what is queued and how its sender is doing.
    OutboxStatus: Get "/_parley/admin/v1/federation/outbox",
    auth AdminToken, rate Admin, body Default, path (),
    NoQuery => OutboxStatusResponse, errors []
}

crate::endpoint! {
    /// Retries a destination now, cutting its backoff short.
    RetryDestination: Post "/_parley/admin/v1/federation/outbox/{destination}/retry",
    auth AdminToken, rate Admin, body Default, path DestinationPath,
    Empty => Empty, errors [NotFound]
}

crate::endpoint! {
    /// Runs the retention jobs now (those that run every `retention.interval_ms`), deleting
    /// delivered messages older than `messages_older_than_ms` if given, else than
    /// `retention.messages_ms` if set.
    RunRetention: Post "/_parley/admin/v1/retention/run",
    auth AdminToken, rate Admin, body Default, path (),
    RunRetentionRequest => RetentionResponse, errors []
}

crate::endpoint! {
    /// The audit log, newest first; page with `before` (the last id of the previous page).
    AuditLog: Get "/_parley/admin/v1/audit_log",
    auth AdminToken, rate Admin, body Default, path (),
    AuditLogRequest => AuditLogResponse, errors []
}

/// Query of [`ListUsers`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListUsersRequest {
    /// Only users whose id contains this (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Users after this user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A user as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminUser {
    pub user_id: String,
    pub admin: bool,
    /// When the account was deactivated; absent while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_ts: Option<u64>,
    pub created_ts: u64,
}

/// Response of [`ListUsers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListUsersResponse {
    pub users: Vec<AdminUser>,
    /// `from` of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_from: Option<String>,
}

/// Response of [`GetUser`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminUserDetail {
    #[serde(flatten)]
    pub user: AdminUser,
    pub devices: Vec<DeviceInfo>,
}

/// Body of [`CreateUser`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The localpart.
    pub username: String,
    pub password: String,
    /// Make the user an admin too.
    #[serde(default)]
    pub admin: bool,
}

/// Body of [`ResetPassword`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    pub password: String,
    /// End every session of the user (default true).
    #[serde(default = "yes")]
    pub logout_devices: bool,
}

fn yes() -> bool {
    true
}

/// Body of [`SetAdmin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAdminRequest {
    pub admin: bool,
}

/// Response of [`DeactivateUser`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeactivateResponse {
    /// Devices deleted.
    pub devices_removed: Vec<String>,
    /// Groups hosted here that got a removal notice.
    pub groups_notified: Vec<String>,
}

/// Body of [`CreateRegistrationToken`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Registrations it may complete; absent is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_allowed: Option<u32>,
    /// When it stops working (ms since the epoch); absent never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ts: Option<u64>,
}

/// A registration token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    /// Names the token (hex of the first 6 bytes of its SHA-256).
    pub token_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_allowed: Option<u64>,
    pub uses: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ts: Option<u64>,
    pub created_ts: u64,
    /// The admin who made it.
    pub created_by: String,
}

/// Response of [`CreateRegistrationToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    /// The token to hand out; shown only here.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Response of [`ListRegistrationTokens`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokensResponse {
    pub tokens: Vec<TokenInfo>,
}

/// `{token_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenPath {
    pub token_id: String,
}

/// `{destination}`: a server name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DestinationPath {
    pub destination: String,
}

/// An ACL rule: body of [`AddAclRule`], query of [`RemoveAclRule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AclRuleRequest {
    /// A server-name glob (`*` matches any run of characters; a `:port` is ignored).
    pub pattern: String,
    /// `allow` or `deny`.
    pub rule: String,
}

/// A runtime ACL rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AclRuleInfo {
    pub pattern: String,
    pub rule: String,
    pub created_ts: u64,
}

/// Response of [`GetServerAcl`]. A server is allowed when no allow rule exists or one
/// matches, and no deny rule matches, counting both sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerAclResponse {
    /// `federation.allow` of the config file.
    pub config_allow: Vec<String>,
    /// `federation.deny` of the config file.
    pub config_deny: Vec<String>,
    /// Rules added at runtime.
    pub runtime: Vec<AclRuleInfo>,
}

/// One destination's queue and sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DestinationStatus {
    pub destination: String,
    /// Events queued.
    pub queued: u64,
    /// When the oldest was queued.
    pub oldest_ts: u64,
    /// Whether a sender is running for it (in this process).
    pub sending: bool,
    /// Whether that sender is waiting out a backoff.
    pub backing_off: bool,
    /// Failed attempts since its last success.
    pub consecutive_failures: u64,
}

/// Response of [`OutboxStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutboxStatusResponse {
    pub destinations: Vec<DestinationStatus>,
}

/// Body of [`RunRetention`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunRetentionRequest {
    /// Delete delivered messages older than this many milliseconds (0: every delivered
    /// message), instead of the configured `retention.messages_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_older_than_ms: Option<u64>,
}

/// Response of [`RunRetention`]: rows removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetentionResponse {
    pub key_packages: u64,
    pub transaction_ids: u64,
    pub inbound_transactions: u64,
    /// Delivered messages deleted.
    #[serde(default)]
    pub messages: u64,
    /// Media files deleted (unreferenced or past their period, and stale cached media).
    #[serde(default)]
    pub media: u64,
}

/// Query of [`AuditLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditLogRequest {
    /// Entries with an id below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntryInfo {
    pub id: i64,
    pub ts: u64,
    /// The admin's user id, or `cli`.
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The action's parameters (never a password or a token).
    pub detail: serde_json::Value,
}

/// Response of [`AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditLogResponse {
    pub entries: Vec<AuditEntryInfo>,
}
