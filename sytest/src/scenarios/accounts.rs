//! Accounts and devices (docs/protocol.md#accounts): register, login, whoami, devices.

use parley_client_api::accounts::{Register, RegisterRequest};
use parley_client_api::ids::{is_valid_device_id, UserId};
use reqwest::Method;
use serde_json::Value;

use crate::check::{expect_eq, expect_error, expect_ok, send};
use crate::fixture::{Ctx, Server};
use crate::scenarios::{paths, PASSWORD};

crate::tests!("accounts":
    register_returns_a_session_that_whoami_confirms,
    login_by_localpart_creates_a_new_device,
    login_by_full_user_id_opens_a_session,
    login_with_own_device_id_reuses_that_device,
    login_with_another_users_device_id_is_403_forbidden,
    login_with_wrong_password_is_403_forbidden,
    login_of_unknown_user_is_403_forbidden,
    register_of_taken_username_is_409_user_in_use,
    register_of_invalid_username_is_400_invalid_username,
    register_with_a_password_under_eight_characters_is_400_weak_password,
    login_with_a_password_over_1024_bytes_is_400_bad_json,
    devices_lists_the_callers_devices_with_every_field,
    deleted_device_disappears_from_the_list,
    deleting_an_unknown_device_is_404_not_found,
    deleting_another_users_device_is_refused,
    logout_answers_an_empty_object,
    a_device_logs_in_by_signing_a_challenge_once,
);

/// The user id `localpart` gets on `hs`, checked against what the server answered.
fn check_user_id(hs: &Server, localpart: &str, user_id: &str) -> anyhow::Result<()> {
    let parsed = UserId::parse(user_id)
        .map_err(|e| anyhow::anyhow!("user_id {user_id:?} is not a user id: {e}"))?;
    expect_eq(parsed.localpart(), localpart, "user_id localpart")?;
    if let Some(name) = hs.server_name() {
        expect_eq(parsed.server_name(), name, "user_id server name")?;
    }
    Ok(())
}

async fn register_returns_a_session_that_whoami_confirms(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("alice");
    let mut alice = hs.client();
    let session = expect_ok(alice.register(&name, PASSWORD).await, "register")?;
    check_user_id(&hs, &name, &session.user_id)?;
    anyhow::ensure!(
        is_valid_device_id(&session.device_id),
        "device_id {:?} is not 1–64 of [A-Za-z0-9_-]",
        session.device_id
    );
    anyhow::ensure!(!session.access_token.is_empty(), "empty access_token");
    anyhow::ensure!(!session.refresh_token.is_empty(), "empty refresh_token");
    anyhow::ensure!(session.expires_in_ms > 0, "expires_in_ms is 0");
    let who = expect_ok(alice.whoami().await, "whoami")?;
    expect_eq(&who.user_id, &session.user_id, "whoami user_id")?;
    expect_eq(&who.device_id, &session.device_id, "whoami device_id")
}

async fn login_by_localpart_creates_a_new_device(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("bob");
    let first = expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    let mut second = hs.client();
    let login = expect_ok(second.login(&name, PASSWORD, None).await, "login")?;
    expect_eq(&login.user_id, &first.user_id, "login user_id")?;
    anyhow::ensure!(
        login.device_id != first.device_id,
        "login without device_id reused device {}",
        first.device_id
    );
    let who = expect_ok(second.whoami().await, "whoami")?;
    expect_eq(&who.device_id, &login.device_id, "whoami device_id")?;
    let devices = expect_ok(second.devices().await, "devices")?.devices;
    let mut ids: Vec<_> = devices.iter().map(|d| d.device_id.clone()).collect();
    ids.sort();
    let mut expected = vec![first.device_id, login.device_id];
    expected.sort();
    expect_eq(&ids, &expected, "device ids")
}

async fn login_by_full_user_id_opens_a_session(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("carol");
    let first = expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    let mut carol = hs.client();
    let login = expect_ok(
        carol.login(&first.user_id, PASSWORD, None).await,
        "login by full user id",
    )?;
    expect_eq(&login.user_id, &first.user_id, "login user_id")?;
    let who = expect_ok(carol.whoami().await, "whoami")?;
    expect_eq(&who.user_id, &first.user_id, "whoami user_id")
}

async fn login_with_own_device_id_reuses_that_device(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("dave");
    let first = expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    let mut dave = hs.client();
    let again = expect_ok(
        dave.login(&name, PASSWORD, Some(&first.device_id)).await,
        "login with device_id",
    )?;
    expect_eq(&again.device_id, &first.device_id, "device_id")?;
    let who = expect_ok(dave.whoami().await, "whoami")?;
    expect_eq(&who.device_id, &first.device_id, "whoami device_id")?;
    let devices = expect_ok(dave.devices().await, "devices")?.devices;
    expect_eq(&devices.len(), &1, "number of devices")
}

async fn login_with_another_users_device_id_is_403_forbidden(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (erin, frank) = (ctx.user("erin"), ctx.user("frank"));
    expect_ok(hs.client().register(&erin, PASSWORD).await, "register erin")?;
    let mut frank_client = hs.client();
    let frank_session = expect_ok(
        frank_client.register(&frank, PASSWORD).await,
        "register frank",
    )?;
    expect_error(
        hs.client()
            .login(&erin, PASSWORD, Some(&frank_session.device_id))
            .await,
        403,
        "P_FORBIDDEN",
    )?;
    // Frank's device is untouched.
    expect_ok(frank_client.whoami().await, "frank's whoami afterwards")?;
    let devices = expect_ok(frank_client.devices().await, "frank's devices")?.devices;
    expect_eq(&devices.len(), &1, "frank's number of devices")
}

async fn login_with_wrong_password_is_403_forbidden(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("grace");
    expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    expect_error(
        hs.client().login(&name, "not the password", None).await,
        403,
        "P_FORBIDDEN",
    )?;
    expect_error(hs.client().login(&name, "", None).await, 403, "P_FORBIDDEN")?;
    Ok(())
}

async fn login_of_unknown_user_is_403_forbidden(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("heidi");
    let session = expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    expect_error(
        hs.client().login(&ctx.user("nobody"), PASSWORD, None).await,
        403,
        "P_FORBIDDEN",
    )?;
    // The same localpart on another server is not this account.
    let foreign = format!("@{name}:elsewhere.invalid");
    anyhow::ensure!(foreign != session.user_id, "test set-up: same user id");
    expect_error(
        hs.client().login(&foreign, PASSWORD, None).await,
        403,
        "P_FORBIDDEN",
    )?;
    Ok(())
}

async fn register_of_taken_username_is_409_user_in_use(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("ivan");
    expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    expect_error(
        hs.client().register(&name, "another password").await,
        409,
        "P_USER_IN_USE",
    )?;
    // The first account still has its password.
    expect_ok(hs.client().login(&name, PASSWORD, None).await, "login")?;
    Ok(())
}

async fn register_of_invalid_username_is_400_invalid_username(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let too_long = "a".repeat(256);
    for bad in [
        "Upper",
        "with space",
        "",
        "semi;colon",
        "@at",
        "sla/sh",
        too_long.as_str(),
    ] {
        expect_error(
            hs.client().register(bad, PASSWORD).await,
            400,
            "P_INVALID_USERNAME",
        )
        .map_err(|e| anyhow::anyhow!("username {bad:.40?}: {e}"))?;
    }
    Ok(())
}

async fn register_with_a_password_under_eight_characters_is_400_weak_password(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("shorty");
    expect_error(
        hs.client().register(&name, "1234567").await,
        400,
        "P_WEAK_PASSWORD",
    )?;
    expect_ok(hs.client().register(&name, "12345678").await, "register")?;
    Ok(())
}

async fn login_with_a_password_over_1024_bytes_is_400_bad_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("longpw");
    expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    expect_error(
        hs.client().login(&name, &"p".repeat(1025), None).await,
        400,
        "P_BAD_JSON",
    )?;
    Ok(())
}

async fn devices_lists_the_callers_devices_with_every_field(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let request = RegisterRequest {
        username: ctx.user("judy"),
        password: PASSWORD.into(),
        device_name: Some("Judy's laptop".into()),
        registration_token: None,
    };
    let session = expect_ok(
        hs.client().call::<Register>(&(), &request).await,
        "register",
    )?;
    let reply = send(
        hs.request(Method::GET, paths::DEVICES)
            .bearer_auth(&session.access_token),
    )
    .await?;
    let body = reply.expect_ok()?;
    let devices = body
        .get("devices")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("no devices array: {}", reply.text))?;
    expect_eq(&devices.len(), &1, "number of devices")?;
    let device = &devices[0];
    expect_eq(
        &device.get("device_id").and_then(Value::as_str),
        &Some(session.device_id.as_str()),
        "device_id",
    )?;
    expect_eq(
        &device.get("display_name").and_then(Value::as_str),
        &Some("Judy's laptop"),
        "display_name",
    )?;
    expect_eq(
        &device.get("signature_key"),
        &Some(&Value::Null),
        "signature_key of a device without one",
    )?;
    for field in ["created_ts", "last_seen_ts"] {
        anyhow::ensure!(
            device
                .get(field)
                .and_then(Value::as_u64)
                .is_some_and(|t| t > 1_500_000_000_000),
            "{field} is not a millisecond timestamp: {:?}",
            device.get(field)
        );
    }
    // A second device without a name has display_name null.
    let mut second = hs.client();
    expect_ok(
        second.login(&request.username, PASSWORD, None).await,
        "login",
    )?;
    let devices = expect_ok(second.devices().await, "devices")?.devices;
    expect_eq(&devices.len(), &2, "number of devices after login")?;
    anyhow::ensure!(
        devices.iter().any(|d| d.display_name.is_none()),
        "the unnamed device has a display_name: {devices:?}"
    );
    Ok(())
}

async fn deleted_device_disappears_from_the_list(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("kim");
    let first = expect_ok(hs.client().register(&name, PASSWORD).await, "register")?;
    let mut second = hs.client();
    let other = expect_ok(second.login(&name, PASSWORD, None).await, "login")?;
    expect_ok(
        second.delete_device(&first.device_id).await,
        "delete device",
    )?;
    let devices = expect_ok(second.devices().await, "devices")?.devices;
    let ids: Vec<_> = devices.iter().map(|d| d.device_id.as_str()).collect();
    expect_eq(
        ids.as_slice(),
        &[other.device_id.as_str()][..],
        "remaining devices",
    )
}

async fn deleting_an_unknown_device_is_404_not_found(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut leo = hs.client();
    expect_ok(leo.register(&ctx.user("leo"), PASSWORD).await, "register")?;
    expect_error(leo.delete_device("NOSUCHDEVICE").await, 404, "P_NOT_FOUND")?;
    Ok(())
}

async fn deleting_another_users_device_is_refused(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut mallory = hs.client();
    expect_ok(
        mallory.register(&ctx.user("mallory"), PASSWORD).await,
        "register",
    )?;
    let mut nina = hs.client();
    let nina_session = expect_ok(nina.register(&ctx.user("nina"), PASSWORD).await, "register")?;
    match mallory.delete_device(&nina_session.device_id).await {
        Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {}
        other => {
            anyhow::bail!("deleting another user's device: expected a 4xx error, got {other:?}")
        }
    }
    expect_ok(nina.whoami().await, "the owner's whoami afterwards")?;
    Ok(())
}

async fn logout_answers_an_empty_object(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let session = expect_ok(
        hs.client().register(&ctx.user("olga"), PASSWORD).await,
        "register",
    )?;
    let reply = send(
        hs.request(Method::POST, paths::LOGOUT)
            .bearer_auth(&session.access_token)
            .json(&serde_json::json!({})),
    )
    .await?;
    let body = reply.expect_ok()?;
    anyhow::ensure!(body.is_empty(), "logout answered {}", reply.text);
    Ok(())
}

async fn a_device_logs_in_by_signing_a_challenge_once(mut ctx: Ctx) -> anyhow::Result<()> {
    use parley_client_api::accounts::{Login, LoginChallenge, LoginChallengeRequest, LoginRequest};
    let hs = ctx.server("hs1").start().await?;
    let server_name = crate::scenarios::server_name_of(&hs).await?;
    let alice = crate::device::Device::register(&hs, &ctx.user("alice")).await?;
    let ask = LoginChallengeRequest {
        user_id: alice.user_id.clone(),
        device_id: alice.device_id.clone(),
    };
    let answer = expect_ok(
        hs.client().call::<LoginChallenge>(&(), &ask).await,
        "POST /login/challenge",
    )?;
    anyhow::ensure!(
        answer.expires_ts > crate::device::now_ms(),
        "expires_ts is not in the future"
    );
    let bytes = parley_client_api::client::unb64(&answer.challenge)
        .ok_or_else(|| anyhow::anyhow!("challenge is not base64"))?;
    // The engine signs only a challenge naming this server and this device.
    let signature = alice.engine.sign_login_challenge(&server_name, &bytes)?;
    let request = LoginRequest::signature(
        &alice.user_id,
        &alice.device_id,
        &answer.challenge,
        &parley_client_api::client::b64(&signature),
    );
    let session = expect_ok(
        hs.client().call::<Login>(&(), &request).await,
        "signature login",
    )?;
    expect_eq(&session.device_id, &alice.device_id, "the session's device")?;
    // Used once.
    expect_error(
        hs.client().call::<Login>(&(), &request).await,
        403,
        "P_FORBIDDEN",
    )
    .map_err(|e| anyhow::anyhow!("the same challenge again: {e}"))?;
    // An unknown device gets a challenge too, which logs nobody in.
    let ghost = LoginChallengeRequest {
        user_id: alice.user_id.clone(),
        device_id: "NOSUCHDEVICE".into(),
    };
    let answer = expect_ok(
        hs.client().call::<LoginChallenge>(&(), &ghost).await,
        "a challenge for an unknown device",
    )?;
    let request = LoginRequest::signature(
        &alice.user_id,
        "NOSUCHDEVICE",
        &answer.challenge,
        &parley_client_api::client::b64(&signature),
    );
    expect_error(
        hs.client().call::<Login>(&(), &request).await,
        403,
        "P_FORBIDDEN",
    )
    .map_err(|e| anyhow::anyhow!("a login of an unknown device: {e}"))?;
    Ok(())
}
