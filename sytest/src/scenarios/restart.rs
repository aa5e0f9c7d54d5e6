//! Durability across a restart (self-started servers only: SIGTERM, then the same data dir
//! and database).

use crate::check::{expect_error, expect_ok};
use crate::fixture::Ctx;
use crate::scenarios::PASSWORD;

crate::tests!("restart":
    restart_keeps_accounts_and_tokens,
    restart_keeps_revocations_and_rotations,
);

async fn restart_keeps_accounts_and_tokens(mut ctx: Ctx) -> anyhow::Result<()> {
    let mut hs = ctx.server("hs1").restartable().start().await?;
    let name = ctx.user("leo");
    let mut leo = hs.client();
    let session = expect_ok(leo.register(&name, PASSWORD).await, "register")?;
    hs.restart().await?;
    let mut after = hs.client();
    after.set_access_token(Some(session.access_token.clone()));
    let who = expect_ok(after.whoami().await, "whoami with the old access token")?;
    anyhow::ensure!(
        who.device_id == session.device_id,
        "whoami names another device"
    );
    expect_ok(
        hs.client().login(&name, PASSWORD, None).await,
        "login after restart",
    )?;
    expect_ok(
        after.refresh(&session.refresh_token).await,
        "refresh with the old refresh token",
    )?;
    expect_ok(after.whoami().await, "whoami after refresh")?;
    let status = hs.stop().await?;
    anyhow::ensure!(status.success(), "SIGTERM ended the server with {status}");
    Ok(())
}

async fn restart_keeps_revocations_and_rotations(mut ctx: Ctx) -> anyhow::Result<()> {
    let mut hs = ctx.server("hs1").restartable().start().await?;
    let name = ctx.user("mia");
    let mut out = hs.client();
    let logged_out = expect_ok(out.register(&name, PASSWORD).await, "register")?;
    expect_ok(out.logout().await, "logout")?;
    let mut rotating = hs.client();
    let first = expect_ok(rotating.login(&name, PASSWORD, None).await, "login")?;
    let second = expect_ok(rotating.refresh(&first.refresh_token).await, "refresh")?;
    hs.restart().await?;
    expect_error(out.whoami().await, 401, "P_UNKNOWN_TOKEN")
        .map_err(|e| anyhow::anyhow!("logged-out token after restart: {e}"))?;
    expect_error(
        hs.client().refresh(&logged_out.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    expect_ok(rotating.whoami().await, "rotated session after restart")?;
    // Reuse detection survives the restart too.
    expect_error(
        hs.client().refresh(&first.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )
    .map_err(|e| anyhow::anyhow!("rotated-out refresh token after restart: {e}"))?;
    expect_error(rotating.whoami().await, 401, "P_UNKNOWN_TOKEN")?;
    expect_error(
        hs.client().refresh(&second.refresh_token).await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    Ok(())
}
