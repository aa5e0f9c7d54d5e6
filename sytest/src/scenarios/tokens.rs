//! Access and refresh tokens (docs/protocol.md#accounts): missing, garbage, expired,
//! foreign, revoked by logout or device deletion, refresh rotation and reuse detection.

use reqwest::Method;

use crate::check::{expect_error, expect_ok, send};
use crate::fixture::{Ctx, Server};
use crate::scenarios::{paths, PASSWORD};

crate::tests!("tokens":
    missing_token_is_401_missing_token,
    garbage_token_is_401_unknown_token,
    expired_access_token_is_unknown,
    token_signed_by_another_server_is_unknown,
    logout_revokes_the_access_token_at_once,
    logout_leaves_the_users_other_devices_signed_in,
    deleted_devices_tokens_are_revoked,
    refresh_rotates_both_tokens,
    reused_refresh_token_is_unknown_and_revokes_the_session,
    refresh_retried_within_the_grace_window_gets_the_same_new_refresh_token,
    refresh_token_of_a_logged_out_session_is_unknown,
    unknown_refresh_token_is_401_unknown_token,
);

/// Authenticated endpoints without a path parameter.
const AUTHED: [(Method, &str); 3] = [
    (Method::GET, paths::WHOAMI),
    (Method::GET, paths::DEVICES),
    (Method::POST, paths::LOGOUT),
];

/// `method path` bearing `token`, if any; a POST carries an empty JSON object.
fn authed_request(
    hs: &Server,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = hs.request(method.clone(), path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if *method == Method::POST {
        request = request.json(&serde_json::json!({}));
    }
    request
}

async fn missing_token_is_401_missing_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut endpoints = AUTHED.to_vec();
    endpoints.push((Method::DELETE, "/_parley/client/v1/devices/ABCDEFGHIJ"));
    for (method, path) in endpoints {
        send(authed_request(&hs, &method, path, None))
            .await?
            .expect_error(401, "P_MISSING_TOKEN")
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
    }
    Ok(())
}

async fn garbage_token_is_401_unknown_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    // The last is an unsigned JWT (`alg: none`) naming a user.
    for token in [
        "garbage",
        "not.a.jwt",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJAeDpoczEudGVzdCJ9.",
    ] {
        for (method, path) in AUTHED {
            send(authed_request(&hs, &method, path, Some(token)))
                .await?
                .expect_error(401, "P_UNKNOWN_TOKEN")
                .map_err(|e| anyhow::anyhow!("{method} {path} with {token:?}: {e}"))?;
        }
    }
    Ok(())
}

async fn expired_access_token_is_unknown(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[auth]\naccess_token_ttl_ms = 1500")
        .start()
        .await?;
    let mut pat = hs.client();
    let session = expect_ok(pat.register(&ctx.user("pat"), PASSWORD).await, "register")?;
    anyhow::ensure!(
        session.expires_in_ms > 0 && session.expires_in_ms <= 1500,
        "expires_in_ms is {}, the configured lifetime is 1500",
        session.expires_in_ms
    );
    expect_ok(pat.whoami().await, "whoami while fresh")?;
    // Leeway for clocks that count whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    expect_error(pat.whoami().await, 401, "P_UNKNOWN_TOKEN")?;
    // The refresh token still gives a working access token.
    expect_ok(pat.refresh(&session.refresh_token).await, "refresh")?;
    expect_ok(pat.whoami().await, "whoami after refresh")?;
    Ok(())
}

async fn token_signed_by_another_server_is_unknown(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs1 = ctx.server("hs1").start().await?;
    // Same server name where possible, so only the signature differs.
    let mut builder = ctx.server("hs2");
    if let Some(name) = hs1.server_name() {
        builder = builder.server_name(name);
    }
    let hs2 = builder.start().await?;
    let name = ctx.user("quinn");
    // The same account on both, so even the user and device could exist.
    expect_ok(
        hs1.client().register(&name, PASSWORD).await,
        "register on hs1",
    )?;
    let foreign = expect_ok(
        hs2.client().register(&name, PASSWORD).await,
        "register on hs2",
    )?;
    let mut forged = hs1.client();
    forged.set_access_token(Some(foreign.access_token));
    expect_error(forged.whoami().await, 401, "P_UNKNOWN_TOKEN")?;
    expect_error(
        hs1.client().refresh(&foreign.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    Ok(())
}

async fn logout_revokes_the_access_token_at_once(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut rita = hs.client();
    expect_ok(rita.register(&ctx.user("rita"), PASSWORD).await, "register")?;
    // In use just before, so a server caching validated tokens is caught too.
    expect_ok(rita.whoami().await, "whoami before logout")?;
    expect_ok(rita.logout().await, "logout")?;
    expect_error(rita.whoami().await, 401, "P_UNKNOWN_TOKEN")?;
    expect_error(rita.devices().await, 401, "P_UNKNOWN_TOKEN")?;
    expect_error(rita.logout().await, 401, "P_UNKNOWN_TOKEN")?;
    Ok(())
}

async fn logout_leaves_the_users_other_devices_signed_in(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("sam");
    let mut phone = hs.client();
    expect_ok(phone.register(&name, PASSWORD).await, "register")?;
    let mut laptop = hs.client();
    expect_ok(laptop.login(&name, PASSWORD, None).await, "login")?;
    expect_ok(phone.logout().await, "logout")?;
    expect_ok(laptop.whoami().await, "the other device's whoami")?;
    Ok(())
}

async fn deleted_devices_tokens_are_revoked(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("tom");
    let mut old = hs.client();
    let old_session = expect_ok(old.register(&name, PASSWORD).await, "register")?;
    let mut new = hs.client();
    expect_ok(new.login(&name, PASSWORD, None).await, "login")?;
    expect_ok(old.whoami().await, "whoami before the deletion")?;
    expect_ok(
        new.delete_device(&old_session.device_id).await,
        "delete device",
    )?;
    expect_error(old.whoami().await, 401, "P_UNKNOWN_TOKEN")?;
    expect_error(
        hs.client().refresh(&old_session.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    expect_ok(new.whoami().await, "the deleting device's whoami")?;
    Ok(())
}

async fn refresh_rotates_both_tokens(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut uma = hs.client();
    let first = expect_ok(uma.register(&ctx.user("uma"), PASSWORD).await, "register")?;
    let second = expect_ok(uma.refresh(&first.refresh_token).await, "refresh")?;
    anyhow::ensure!(
        second.refresh_token != first.refresh_token,
        "refresh returned the same refresh token"
    );
    anyhow::ensure!(!second.access_token.is_empty(), "empty access token");
    anyhow::ensure!(
        second.user_id == first.user_id && second.device_id == first.device_id,
        "refresh moved the session: {} {} → {} {}",
        first.user_id,
        first.device_id,
        second.user_id,
        second.device_id
    );
    let who = expect_ok(uma.whoami().await, "whoami with the new access token")?;
    anyhow::ensure!(
        who.device_id == first.device_id,
        "whoami names another device"
    );
    expect_ok(uma.refresh(&second.refresh_token).await, "second refresh")?;
    expect_ok(uma.whoami().await, "whoami after the second refresh")?;
    Ok(())
}

async fn reused_refresh_token_is_unknown_and_revokes_the_session(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut vic = hs.client();
    let first = expect_ok(vic.register(&ctx.user("vic"), PASSWORD).await, "register")?;
    let second = expect_ok(vic.refresh(&first.refresh_token).await, "refresh")?;
    expect_ok(vic.whoami().await, "whoami")?;
    // A stolen, rotated-out token comes back: refused, and the live session dies with it.
    expect_error(
        hs.client().refresh(&first.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    expect_error(vic.whoami().await, 401, "P_UNKNOWN_TOKEN")
        .map_err(|e| anyhow::anyhow!("the live access token after reuse: {e}"))?;
    expect_error(
        hs.client().refresh(&second.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )
    .map_err(|e| anyhow::anyhow!("the live refresh token after reuse: {e}"))?;
    Ok(())
}

async fn refresh_token_of_a_logged_out_session_is_unknown(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut wes = hs.client();
    let session = expect_ok(wes.register(&ctx.user("wes"), PASSWORD).await, "register")?;
    expect_ok(wes.logout().await, "logout")?;
    expect_error(
        hs.client().refresh(&session.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    Ok(())
}

async fn unknown_refresh_token_is_401_unknown_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let session = expect_ok(
        hs.client().register(&ctx.user("xena"), PASSWORD).await,
        "register",
    )?;
    for token in ["never-issued", "", session.access_token.as_str()] {
        expect_error(hs.client().refresh(token).await, 401, "P_UNKNOWN_TOKEN")
            .map_err(|e| anyhow::anyhow!("refresh with {token:.20?}…: {e}"))?;
    }
    Ok(())
}

async fn refresh_retried_within_the_grace_window_gets_the_same_new_refresh_token(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[auth]\nrefresh_retry_grace_ms = 30000\n")
        .start()
        .await?;
    let mut wes = hs.client();
    let first = expect_ok(wes.register(&ctx.user("wes"), PASSWORD).await, "register")?;
    let second = expect_ok(wes.refresh(&first.refresh_token).await, "refresh")?;
    // The answer was "lost": the client retries with the same token.
    let retried = expect_ok(
        hs.client().refresh(&first.refresh_token).await,
        "refresh retried within the grace window",
    )?;
    anyhow::ensure!(
        retried.refresh_token == second.refresh_token,
        "the retry got another refresh token"
    );
    expect_ok(wes.whoami().await, "whoami after the retry")?;
    // Once the new token is used, the old one is plain reuse again.
    expect_ok(
        wes.refresh(&second.refresh_token).await,
        "refresh with the new token",
    )?;
    expect_error(
        hs.client().refresh(&first.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    expect_error(wes.whoami().await, 401, "P_UNKNOWN_TOKEN")
        .map_err(|e| anyhow::anyhow!("the live access token after reuse: {e}"))?;
    Ok(())
}
