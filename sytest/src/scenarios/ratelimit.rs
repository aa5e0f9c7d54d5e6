//! Rate limits (`[rate_limits]`): 429 `P_LIMIT_EXCEEDED` with `retry_after_ms`, and recovery.

use std::fmt::Debug;
use std::time::Duration;

use parley_client_api::ClientError;

use crate::check::{expect_error, expect_ok};
use crate::fixture::Ctx;
use crate::scenarios::PASSWORD;

crate::tests!("ratelimit":
    login_over_the_limit_is_429_with_retry_after_ms,
    register_over_the_limit_is_429_with_retry_after_ms,
    rate_limited_client_succeeds_after_retry_after_ms,
);

/// Checks that `result` is 429 `P_LIMIT_EXCEEDED` with an integer `retry_after_ms` over a
/// second.
fn expect_limited_for_over_a_second<T: Debug>(
    result: Result<T, ClientError>,
) -> anyhow::Result<()> {
    let body = expect_error(result, 429, "P_LIMIT_EXCEEDED")?;
    let retry = body.extra_u64("retry_after_ms");
    anyhow::ensure!(
        retry.is_some_and(|ms| ms > 1000),
        "retry_after_ms is {retry:?}, expected an integer > 1000"
    );
    Ok(())
}

async fn login_over_the_limit_is_429_with_retry_after_ms(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[rate_limits]\nlogin = { per_second = 0.01, burst = 3 }")
        .start()
        .await?;
    let name = ctx.user("rl");
    expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    // Failed attempts count: that is what the limit is for.
    for attempt in 1..=3 {
        expect_error(
            hs.client().login(&name, "wrong", None).await,
            403,
            "P_FORBIDDEN",
        )
        .map_err(|e| anyhow::anyhow!("attempt {attempt} of the burst: {e}"))?;
    }
    // One token per 100 s: the wait is far more than a second.
    expect_limited_for_over_a_second(hs.client().login(&name, PASSWORD, None).await)
}

async fn register_over_the_limit_is_429_with_retry_after_ms(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[rate_limits]\nregister = { per_second = 0.01, burst = 2 }")
        .start()
        .await?;
    for attempt in 1..=2 {
        expect_ok(
            hs.client().register(&ctx.user("rr"), PASSWORD).await,
            &format!("registration {attempt} of the burst"),
        )?;
    }
    expect_limited_for_over_a_second(hs.client().register(&ctx.user("rr"), PASSWORD).await)
}

async fn rate_limited_client_succeeds_after_retry_after_ms(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[rate_limits]\nlogin = { per_second = 2.0, burst = 1 }")
        .start()
        .await?;
    let name = ctx.user("rt");
    expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    expect_ok(
        hs.client().login(&name, PASSWORD, None).await,
        "first login",
    )?;
    let body = expect_error(
        hs.client().login(&name, PASSWORD, None).await,
        429,
        "P_LIMIT_EXCEEDED",
    )?;
    let retry = body
        .extra_u64("retry_after_ms")
        .ok_or_else(|| anyhow::anyhow!("no integer retry_after_ms: {body:?}"))?;
    anyhow::ensure!(
        (1..=2000).contains(&retry),
        "retry_after_ms is {retry} for a bucket refilling twice a second"
    );
    tokio::time::sleep(Duration::from_millis(retry + 100)).await;
    expect_ok(
        hs.client().login(&name, PASSWORD, None).await,
        "login after waiting retry_after_ms",
    )?;
    Ok(())
}
