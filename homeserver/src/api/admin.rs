//! The admin API, `/_parley/admin/v1`: thin handlers over [`crate::admin`]. The router lets
//! only admins in (`auth AdminToken`).

use parley_client_api::admin::{
    AclRuleRequest, AddAclRule, AdminUser, AdminUserDetail, AuditLog, AuditLogRequest,
    AuditLogResponse, CreateRegistrationToken, CreateTokenRequest, CreateUser, CreateUserRequest,
    CreatedToken, DeactivateResponse, DeactivateUser, DestinationPath, GetServerAcl, GetUser,
    ListRegistrationTokens, ListUsers, ListUsersRequest, ListUsersResponse, OutboxStatus,
    OutboxStatusResponse, RemoveAclRule, ResetPassword, ResetPasswordRequest, RetentionResponse,
    RetryDestination, RevokeRegistrationToken, RunRetention, RunRetentionRequest,
    ServerAclResponse, SetAdmin, SetAdminRequest, TokenPath, TokensResponse,
};
use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::params::UserPath;

use crate::admin;
use crate::api::errors::ApiResult;
use crate::api::route::{AdminCaller, Routes};
use crate::state::AppState;

/// The admin endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve::<ListUsers, _, _>(list_users)
        .serve::<GetUser, _, _>(get_user)
        .serve::<CreateUser, _, _>(create_user)
        .serve::<ResetPassword, _, _>(reset_password)
        .serve::<SetAdmin, _, _>(set_admin)
        .serve::<DeactivateUser, _, _>(deactivate)
        .serve::<CreateRegistrationToken, _, _>(create_token)
        .serve::<ListRegistrationTokens, _, _>(list_tokens)
        .serve::<RevokeRegistrationToken, _, _>(revoke_token)
        .serve::<GetServerAcl, _, _>(server_acl)
        .serve::<AddAclRule, _, _>(add_acl_rule)
        .serve::<RemoveAclRule, _, _>(remove_acl_rule)
        .serve::<OutboxStatus, _, _>(outbox_status)
        .serve::<RetryDestination, _, _>(retry_destination)
        .serve::<RunRetention, _, _>(run_retention)
        .serve::<AuditLog, _, _>(audit_log)
}

async fn list_users(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: ListUsersRequest,
) -> ApiResult<ListUsersResponse> {
    Ok(admin::list_users(&state, &who.0.user_id, req).await?)
}

async fn get_user(
    state: AppState,
    who: AdminCaller,
    path: UserPath,
    _: NoQuery,
) -> ApiResult<AdminUserDetail> {
    Ok(admin::get_user(&state, &who.0.user_id, &path.user_id).await?)
}

async fn create_user(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: CreateUserRequest,
) -> ApiResult<AdminUser> {
    Ok(admin::create_user(&state, &who.0.user_id, req).await?)
}

async fn reset_password(
    state: AppState,
    who: AdminCaller,
    path: UserPath,
    req: ResetPasswordRequest,
) -> ApiResult<Empty> {
    admin::reset_password(&state, &who.0.user_id, &path.user_id, req).await?;
    Ok(Empty {})
}

async fn set_admin(
    state: AppState,
    who: AdminCaller,
    path: UserPath,
    req: SetAdminRequest,
) -> ApiResult<Empty> {
    admin::set_admin(&state, &who.0.user_id, &path.user_id, req.admin).await?;
    Ok(Empty {})
}

async fn deactivate(
    state: AppState,
    who: AdminCaller,
    path: UserPath,
    _: Empty,
) -> ApiResult<DeactivateResponse> {
    Ok(admin::deactivate(&state, &who.0.user_id, &path.user_id).await?)
}

async fn create_token(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: CreateTokenRequest,
) -> ApiResult<CreatedToken> {
    Ok(admin::create_token(&state, &who.0.user_id, req).await?)
}

async fn list_tokens(
    state: AppState,
    who: AdminCaller,
    _: (),
    _: NoQuery,
) -> ApiResult<TokensResponse> {
    Ok(admin::list_tokens(&state, &who.0.user_id).await?)
}

async fn revoke_token(
    state: AppState,
    who: AdminCaller,
    path: TokenPath,
    _: NoQuery,
) -> ApiResult<Empty> {
    admin::revoke_token(&state, &who.0.user_id, &path.token_id).await?;
    Ok(Empty {})
}

async fn server_acl(
    state: AppState,
    who: AdminCaller,
    _: (),
    _: NoQuery,
) -> ApiResult<ServerAclResponse> {
    Ok(admin::server_acl(&state, &who.0.user_id).await?)
}

async fn add_acl_rule(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: AclRuleRequest,
) -> ApiResult<Empty> {
    admin::add_acl_rule(&state, &who.0.user_id, req).await?;
    Ok(Empty {})
}

async fn remove_acl_rule(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: AclRuleRequest,
) -> ApiResult<Empty> {
    admin::remove_acl_rule(&state, &who.0.user_id, req).await?;
    Ok(Empty {})
}

async fn outbox_status(
    state: AppState,
    who: AdminCaller,
    _: (),
    _: NoQuery,
) -> ApiResult<OutboxStatusResponse> {
    Ok(admin::outbox_status(&state, &who.0.user_id).await?)
}

async fn retry_destination(
    state: AppState,
    who: AdminCaller,
    path: DestinationPath,
    _: Empty,
) -> ApiResult<Empty> {
    admin::retry_destination(&state, &who.0.user_id, &path.destination).await?;
    Ok(Empty {})
}

async fn run_retention(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: RunRetentionRequest,
) -> ApiResult<RetentionResponse> {
    Ok(admin::run_retention(&state, &who.0.user_id, req).await?)
}

async fn audit_log(
    state: AppState,
    who: AdminCaller,
    _: (),
    req: AuditLogRequest,
) -> ApiResult<AuditLogResponse> {
    Ok(admin::audit_log(&state, &who.0.user_id, req).await?)
}
