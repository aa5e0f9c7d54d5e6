//! Rate limits (`[rate_limits]`): 429 `P_LIMIT_EXCEEDED` with `retry_after_ms`, and recovery;
//! per address (login, registration) and per user (sends, group creation, key uploads, claims).

use std::fmt::Debug;
use std::time::Duration;

use parley_client_api::ClientError;

use crate::check::{expect_error, expect_ok};
use crate::device::Device;
use crate::fixture::{Ctx, Server};
use crate::scenarios::PASSWORD;

crate::tests!("ratelimit":
    login_over_the_limit_is_429_with_retry_after_ms,
    register_over_the_limit_is_429_with_retry_after_ms,
    rate_limited_client_succeeds_after_retry_after_ms,
    sends_over_the_per_user_limit_are_429_and_other_users_still_send,
    group_creation_over_the_per_user_limit_is_429_and_other_users_still_create,
    key_uploads_over_the_per_user_limit_are_429_and_other_users_still_upload,
    key_claims_over_the_per_user_limit_are_429_and_other_users_still_claim,
    logins_to_one_account_are_limited_per_account_and_others_still_log_in,
    retries_of_one_refresh_token_are_limited,
    device_lookups_over_the_per_user_limit_are_429,
    forwarded_for_counts_only_behind_a_trusted_proxy,
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
        .one_process()
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
        .one_process()
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
        .one_process()
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

/// A server whose per-user limit `class` allows a burst of `burst` and then one request per
/// 100 s (so the wait asked for is far over a second).
async fn server_limiting(ctx: &mut Ctx, class: &str, burst: u32) -> anyhow::Result<Server> {
    ctx.server("hs1")
        .one_process()
        .config(&format!(
            "[rate_limits]\n{class} = {{ per_second = 0.01, burst = {burst} }}"
        ))
        .start()
        .await
}

async fn sends_over_the_per_user_limit_are_429_and_other_users_still_send(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = server_limiting(&mut ctx, "send", 3).await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let group = alice.create_group().await?;
    for i in 1..=3 {
        alice
            .send_text(&group, &format!("message {i} of the burst"))
            .await
            .map_err(|e| anyhow::anyhow!("send {i} of the burst: {e}"))?;
    }
    let (txn, message) = alice.encrypt(&group, "one too many")?;
    expect_limited_for_over_a_second(alice.client.send(&group, &txn, &message).await)
        .map_err(|e| anyhow::anyhow!("send after the burst: {e}"))?;
    // The bucket is the user's, not the address's.
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    let bobs = bob.create_group().await?;
    bob.send_text(&bobs, "bob has a bucket of his own")
        .await
        .map_err(|e| anyhow::anyhow!("another user's send: {e}"))?;
    Ok(())
}

async fn group_creation_over_the_per_user_limit_is_429_and_other_users_still_create(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = server_limiting(&mut ctx, "group_create", 2).await?;
    let mut alice = hs.client();
    expect_ok(
        alice.register(&ctx.user("alice"), PASSWORD).await,
        "register",
    )?;
    for i in 1..=2 {
        expect_ok(
            alice.create_group().await,
            &format!("group {i} of the burst"),
        )?;
    }
    expect_limited_for_over_a_second(alice.create_group().await)
        .map_err(|e| anyhow::anyhow!("group creation after the burst: {e}"))?;
    let mut bob = hs.client();
    expect_ok(bob.register(&ctx.user("bob"), PASSWORD).await, "register")?;
    expect_ok(bob.create_group().await, "another user's group creation")?;
    Ok(())
}

async fn key_uploads_over_the_per_user_limit_are_429_and_other_users_still_upload(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = server_limiting(&mut ctx, "key_upload", 2).await?;
    // Set up without uploading anything, so that the burst is all the test's.
    let mut alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    for i in 1..=2 {
        let kps = alice
            .engine
            .generate_key_packages(1)
            .map_err(|e| anyhow::anyhow!("key packages: {e}"))?;
        expect_ok(
            alice.client.upload_keys(&kps, None).await,
            &format!("upload {i} of the burst"),
        )?;
    }
    let kps = alice
        .engine
        .generate_key_packages(1)
        .map_err(|e| anyhow::anyhow!("key packages: {e}"))?;
    expect_limited_for_over_a_second(alice.client.upload_keys(&kps, None).await)
        .map_err(|e| anyhow::anyhow!("upload after the burst: {e}"))?;
    // Bob's set-up uploads once, within his own bucket.
    Device::register_with(&hs, &ctx.user("bob"), 1, false)
        .await
        .map_err(|e| anyhow::anyhow!("another user's upload: {e}"))?;
    Ok(())
}

async fn key_claims_over_the_per_user_limit_are_429_and_other_users_still_claim(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = server_limiting(&mut ctx, "key_claim", 2).await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    let bobs = [bob.user_id.as_str()];
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    for i in 1..=2 {
        expect_ok(
            alice.client.claim_keys(&bobs).await,
            &format!("claim {i} of the burst"),
        )?;
    }
    expect_limited_for_over_a_second(alice.client.claim_keys(&bobs).await)
        .map_err(|e| anyhow::anyhow!("claim after the burst: {e}"))?;
    let carol = Device::register(&hs, &ctx.user("carol")).await?;
    expect_ok(carol.client.claim_keys(&bobs).await, "another user's claim")?;
    Ok(())
}

async fn logins_to_one_account_are_limited_per_account_and_others_still_log_in(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    // The address allows far more than the account does.
    let hs = ctx
        .server("hs1")
        .one_process()
        .config("[rate_limits]\nlogin_account = { per_second = 0.01, burst = 3 }")
        .start()
        .await?;
    let (target, other) = (ctx.user("la"), ctx.user("lb"));
    expect_ok(hs.client().register(&target, PASSWORD).await, "register")?;
    expect_ok(hs.client().register(&other, PASSWORD).await, "register")?;
    for attempt in 1..=3 {
        expect_error(
            hs.client().login(&target, "wrong", None).await,
            403,
            "P_FORBIDDEN",
        )
        .map_err(|e| anyhow::anyhow!("attempt {attempt} of the burst: {e}"))?;
    }
    expect_limited_for_over_a_second(hs.client().login(&target, PASSWORD, None).await)?;
    expect_ok(
        hs.client().login(&other, PASSWORD, None).await,
        "login to another account from the same address",
    )?;
    Ok(())
}

async fn retries_of_one_refresh_token_are_limited(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .one_process()
        .config("[rate_limits]\nrefresh_token = { per_second = 0.01, burst = 2 }")
        .start()
        .await?;
    let mut client = hs.client();
    for attempt in 1..=2 {
        expect_error(
            client.refresh("not a refresh token").await,
            401,
            "P_UNKNOWN_TOKEN",
        )
        .map_err(|e| anyhow::anyhow!("attempt {attempt} of the burst: {e}"))?;
    }
    expect_limited_for_over_a_second(client.refresh("not a refresh token").await)?;
    // Another token has its own budget.
    expect_error(
        client.refresh("another refresh token").await,
        401,
        "P_UNKNOWN_TOKEN",
    )?;
    Ok(())
}

async fn device_lookups_over_the_per_user_limit_are_429(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .one_process()
        .config("[rate_limits]\ndevice_lookup = { per_second = 0.01, burst = 2 }")
        .start()
        .await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    for _ in 0..2 {
        expect_ok(alice.client.user_devices(&bob.user_id).await, "lookup")?;
    }
    expect_limited_for_over_a_second(alice.client.user_devices(&bob.user_id).await)?;
    expect_ok(
        bob.client.user_devices(&alice.user_id).await,
        "another user's lookup",
    )?;
    Ok(())
}

/// `POST /register` from `hs` claiming to be forwarded for `address`.
async fn register_forwarded(hs: &Server, name: &str, address: &str) -> anyhow::Result<u16> {
    let reply = crate::check::send(
        hs.request(reqwest::Method::POST, crate::scenarios::paths::REGISTER)
            .header("x-forwarded-for", address)
            .json(&serde_json::json!({"username": name, "password": PASSWORD})),
    )
    .await?;
    Ok(reply.status)
}

async fn forwarded_for_counts_only_behind_a_trusted_proxy(mut ctx: Ctx) -> anyhow::Result<()> {
    let limit = "[rate_limits]\nregister = { per_second = 0.01, burst = 1 }\n";
    // Behind a trusted proxy (the suite's own address): each forwarded client has a bucket,
    // IPv6 clients one per /64.
    let proxied = ctx
        .server("hs1")
        .one_process()
        .config(&format!(
            "trusted_proxies = [\"127.0.0.1\", \"::1\"]\n{limit}"
        ))
        .start()
        .await?;
    let statuses = [
        register_forwarded(&proxied, &ctx.user("f"), "203.0.113.1").await?,
        register_forwarded(&proxied, &ctx.user("f"), "203.0.113.1").await?,
        register_forwarded(&proxied, &ctx.user("f"), "203.0.113.2").await?,
        register_forwarded(&proxied, &ctx.user("f"), "2001:db8:1:2::1").await?,
        register_forwarded(&proxied, &ctx.user("f"), "2001:db8:1:2::99").await?,
    ];
    anyhow::ensure!(
        statuses == [200, 429, 200, 200, 429],
        "behind a trusted proxy: {statuses:?}, expected [200, 429, 200, 200, 429]"
    );
    // Without one, the header is the client's to forge and counts for nothing.
    let direct = ctx
        .server("hs2")
        .one_process()
        .config(limit)
        .start()
        .await?;
    let statuses = [
        register_forwarded(&direct, &ctx.user("g"), "203.0.113.1").await?,
        register_forwarded(&direct, &ctx.user("g"), "203.0.113.2").await?,
    ];
    anyhow::ensure!(
        statuses == [200, 429],
        "without a trusted proxy: {statuses:?}, expected [200, 429]"
    );
    Ok(())
}
