//! Signature keys and key packages (docs/protocol.md#keys): binding once, upload
//! validation naming the bad index with nothing stored, claims consumed once, the last
//! resort, failures keyed by the most specific thing, counts in `/keys/count` and `/sync`.

use parley_client_api::client::{b64, unb64};
use parley_client_api::keys::UploadKeysRequest;
use parley_client_api::ClientError;
use parley_mls::{Engine, EngineConfig};

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::Device;
use crate::fixture::{free_port, Ctx};
use crate::scenarios::{device_keys_of, server_name_of, PASSWORD};

crate::tests!("keys":
    binding_the_same_key_again_is_ok_and_another_is_409,
    binding_a_key_for_another_device_is_403,
    upload_before_binding_a_key_is_400_invalid_key_package,
    invalid_package_is_refused_by_index_and_nothing_is_stored,
    package_of_another_device_is_refused,
    bad_last_resort_has_the_index_of_the_package_count,
    claimed_package_is_handed_out_once,
    exhausted_device_gets_the_last_resort_every_time,
    device_without_packages_fails_as_user_slash_device,
    unknown_user_fails_by_user_id,
    unreachable_server_fails_by_server_name,
    counts_are_reported_by_keys_count_and_sync,
    deleted_device_packages_are_not_handed_out,
);

/// Checks that an upload was refused as 400 `P_INVALID_KEY_PACKAGE` naming package `index`
/// (`what` says which package that is).
fn expect_invalid_key_package_at<T: std::fmt::Debug>(
    upload: Result<T, ClientError>,
    index: u64,
    what: &str,
) -> anyhow::Result<()> {
    let body = expect_error(upload, 400, "P_INVALID_KEY_PACKAGE")?;
    expect_eq(&body.extra_u64("index"), &Some(index), what)
}

fn engine(user_id: &str, device_id: &str) -> anyhow::Result<Engine> {
    Engine::new(user_id, device_id, EngineConfig::default())
        .map_err(|e| anyhow::anyhow!("MLS engine: {e}"))
}

async fn binding_the_same_key_again_is_ok_and_another_is_409(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut c = hs.client();
    let s = expect_ok(c.register(&ctx.user("kim"), PASSWORD).await, "register")?;
    let key = engine(&s.user_id, &s.device_id)?.signature_public_key();
    expect_ok(c.bind_signature_key(&s.device_id, &key).await, "first bind")?;
    expect_ok(
        c.bind_signature_key(&s.device_id, &key).await,
        "same key again",
    )?;
    let other = engine(&s.user_id, &s.device_id)?.signature_public_key();
    expect_error(
        c.bind_signature_key(&s.device_id, &other).await,
        409,
        "P_SIGNATURE_KEY_MISMATCH",
    )?;
    let keys = device_keys_of(&c, &s.user_id, "GET /users/{id}/devices").await?;
    expect_eq(
        &keys,
        &vec![(s.device_id.clone(), b64(&key))],
        "published keys",
    )?;
    Ok(())
}

async fn binding_a_key_for_another_device_is_403(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("lou");
    let mut first = hs.client();
    let s1 = expect_ok(first.register(&name, PASSWORD).await, "register")?;
    let mut second = hs.client();
    let s2 = expect_ok(second.login(&name, PASSWORD, None).await, "login")?;
    let mut other = hs.client();
    let s3 = expect_ok(other.register(&ctx.user("max"), PASSWORD).await, "register")?;
    let key = engine(&s2.user_id, &s2.device_id)?.signature_public_key();
    expect_error(
        first.bind_signature_key(&s2.device_id, &key).await,
        403,
        "P_FORBIDDEN",
    )
    .map_err(|e| anyhow::anyhow!("binding for the user's other device: {e}"))?;
    expect_error(
        other.bind_signature_key(&s1.device_id, &key).await,
        403,
        "P_FORBIDDEN",
    )
    .map_err(|e| anyhow::anyhow!("binding for another user's device: {e}"))?;
    let _ = s3;
    let listed = expect_ok(first.user_devices(&s1.user_id).await, "user devices")?;
    anyhow::ensure!(
        listed.devices.is_empty(),
        "a refused binding was published: {listed:?}"
    );
    Ok(())
}

async fn upload_before_binding_a_key_is_400_invalid_key_package(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut c = hs.client();
    let s = expect_ok(c.register(&ctx.user("ned"), PASSWORD).await, "register")?;
    let kps = engine(&s.user_id, &s.device_id)?
        .generate_key_packages(1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_error(
        c.upload_keys(&kps, None).await,
        400,
        "P_INVALID_KEY_PACKAGE",
    )?;
    let count = expect_ok(c.key_count().await, "key count")?;
    expect_eq(&(count.count, count.last_resort), &(0, false), "count")?;
    Ok(())
}

async fn invalid_package_is_refused_by_index_and_nothing_is_stored(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut bob = Device::register_with(&hs, &ctx.user("bob"), 0, false).await?;
    let mut kps = bob
        .engine
        .generate_key_packages(3)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let last = kps[1].len() - 1;
    kps[1][last] ^= 0xff;
    let lr = bob
        .engine
        .generate_last_resort_key_package()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_invalid_key_package_at(
        bob.client.upload_keys(&kps, Some(&lr)).await,
        1,
        "index of the bad package",
    )?;
    let count = expect_ok(bob.client.key_count().await, "key count")?;
    expect_eq(
        &(count.count, count.last_resort),
        &(0, false),
        "count after a refused upload",
    )?;
    // Base64 that does not decode is refused the same way.
    let raw = UploadKeysRequest {
        key_packages: vec![b64(&kps[0]), "%%%".into()],
        last_resort: None,
    };
    expect_invalid_key_package_at(
        bob.client
            .call::<parley_client_api::keys::UploadKeys>(&(), &raw)
            .await,
        1,
        "index of the bad base64",
    )?;
    let count = expect_ok(bob.client.key_count().await, "key count")?;
    expect_eq(&count.count, &0, "count after the second refused upload")?;
    Ok(())
}

async fn package_of_another_device_is_refused(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let bob = Device::register_with(&hs, &ctx.user("bob"), 0, false).await?;
    let mine = alice
        .engine
        .generate_key_packages(1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_invalid_key_package_at(
        bob.client.upload_keys(&[mine[0].clone()], None).await,
        0,
        "index",
    )?;
    let count = expect_ok(bob.client.key_count().await, "key count")?;
    expect_eq(&count.count, &0, "bob's count")?;
    Ok(())
}

async fn bad_last_resort_has_the_index_of_the_package_count(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut bob = Device::register_with(&hs, &ctx.user("bob"), 0, false).await?;
    let kps = bob
        .engine
        .generate_key_packages(3)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // An ordinary package (no last_resort extension) as the last resort.
    expect_invalid_key_package_at(
        bob.client.upload_keys(&kps[..2], Some(&kps[2])).await,
        2,
        "index of an ordinary last resort",
    )?;
    // Bytes that are no package at all.
    expect_invalid_key_package_at(
        bob.client
            .upload_keys(&kps[..1], Some(b"not a package"))
            .await,
        1,
        "index of a garbage last resort",
    )?;
    let count = expect_ok(bob.client.key_count().await, "key count")?;
    expect_eq(&(count.count, count.last_resort), &(0, false), "count")?;
    Ok(())
}

/// The package handed out for `user`'s `device` by one claim.
async fn claim_one(claimer: &Device, user: &str, device: &str) -> anyhow::Result<String> {
    let claimed = expect_ok(claimer.client.claim_keys(&[user]).await, "claim")?;
    claimed
        .key_packages
        .get(user)
        .and_then(|d| d.get(device))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("claim gave no package for {user}/{device}: {claimed:?}"))
}

async fn claimed_package_is_handed_out_once(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let bob = Device::register_with(&hs, &ctx.user("bob"), 3, true).await?;
    let mut seen = Vec::new();
    for i in 0..4u64 {
        let kp = claim_one(&alice, &bob.user_id, &bob.device_id).await?;
        anyhow::ensure!(
            unb64(&kp).is_some_and(|b| !b.is_empty()),
            "claim {i} gave {kp:?}, not base64 of a package"
        );
        anyhow::ensure!(!seen.contains(&kp), "claim {i} handed out a package again");
        seen.push(kp);
        let count = expect_ok(bob.client.key_count().await, "key count")?;
        expect_eq(&count.count, &2u64.saturating_sub(i), "count after a claim")?;
    }
    Ok(())
}

async fn exhausted_device_gets_the_last_resort_every_time(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let bob = Device::register_with(&hs, &ctx.user("bob"), 1, true).await?;
    let first = claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    let lr1 = claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    let lr2 = claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    let lr3 = claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    anyhow::ensure!(first != lr1, "the ordinary package was handed out twice");
    anyhow::ensure!(
        lr1 == lr2 && lr2 == lr3,
        "the last resort changed between claims (it is never consumed)"
    );
    let count = expect_ok(bob.client.key_count().await, "key count")?;
    expect_eq(&(count.count, count.last_resort), &(0, true), "count")?;
    Ok(())
}

async fn device_without_packages_fails_as_user_slash_device(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let bob = Device::register_with(&hs, &ctx.user("bob"), 1, false).await?;
    claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    let claimed = expect_ok(alice.client.claim_keys(&[&bob.user_id]).await, "claim")?;
    let key = format!("{}/{}", bob.user_id, bob.device_id);
    let failure = claimed
        .failures
        .get(&key)
        .ok_or_else(|| anyhow::anyhow!("no failure keyed {key:?}: {claimed:?}"))?;
    expect_eq(
        failure.errcode.as_str(),
        "P_KEY_PACKAGES_EXHAUSTED",
        "errcode",
    )?;
    anyhow::ensure!(
        claimed
            .key_packages
            .get(&bob.user_id)
            .is_none_or(|d| !d.contains_key(&bob.device_id)),
        "a failed device is also in key_packages: {claimed:?}"
    );
    Ok(())
}

async fn unknown_user_fails_by_user_id(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = server_name_of(&hs).await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let nobody = format!("@{}:{name}", ctx.user("nobody"));
    let claimed = expect_ok(alice.client.claim_keys(&[&nobody]).await, "claim")?;
    let failure = claimed
        .failures
        .get(&nobody)
        .ok_or_else(|| anyhow::anyhow!("no failure keyed {nobody:?}: {claimed:?}"))?;
    expect_eq(failure.errcode.as_str(), "P_NOT_FOUND", "errcode")?;
    anyhow::ensure!(
        !claimed.key_packages.contains_key(&nobody) || claimed.key_packages[&nobody].is_empty(),
        "packages for a user that does not exist: {claimed:?}"
    );
    Ok(())
}

async fn unreachable_server_fails_by_server_name(mut ctx: Ctx) -> anyhow::Result<()> {
    // Nothing listens on this port.
    let port = free_port()?;
    let hs = ctx
        .server("hs1")
        .config(&crate::fake_remote::federation_config(&[(
            "down.test",
            port,
        )]))
        .start()
        .await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let claimed = expect_ok(
        alice.client.claim_keys(&["@someone:down.test"]).await,
        "claim",
    )?;
    let failure = claimed
        .failures
        .get("down.test")
        .ok_or_else(|| anyhow::anyhow!("no failure keyed by the server name: {claimed:?}"))?;
    expect_eq(failure.errcode.as_str(), "P_UNREACHABLE_SERVER", "errcode")?;
    anyhow::ensure!(
        claimed
            .key_packages
            .get("@someone:down.test")
            .is_none_or(|d| d.is_empty()),
        "packages from an unreachable server: {claimed:?}"
    );
    Ok(())
}

async fn counts_are_reported_by_keys_count_and_sync(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let bob = Device::register_with(&hs, &ctx.user("bob"), 4, true).await?;
    for expected in [4u64, 3] {
        let count = expect_ok(bob.client.key_count().await, "key count")?;
        expect_eq(
            &(count.count, count.last_resort),
            &(expected, true),
            "/keys/count",
        )?;
        let sync = expect_ok(bob.client.sync(None, 0).await, "sync")?;
        expect_eq(
            &(sync.key_packages.count, sync.key_packages.last_resort),
            &(expected, true),
            "sync key_packages",
        )?;
        claim_one(&alice, &bob.user_id, &bob.device_id).await?;
    }
    let count = expect_ok(alice.client.key_count().await, "alice's count")?;
    expect_eq(
        &(count.count, count.last_resort),
        &(0, false),
        "alice's count",
    )?;
    Ok(())
}

async fn deleted_device_packages_are_not_handed_out(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let alice = Device::register_with(&hs, &ctx.user("alice"), 0, false).await?;
    let name = ctx.user("bob");
    let bob1 = Device::register_with(&hs, &name, 2, true).await?;
    let bob2 = Device::login(&hs, &name).await?;
    let claimed = expect_ok(alice.client.claim_keys(&[&bob1.user_id]).await, "claim")?;
    let devices: Vec<&String> = claimed
        .key_packages
        .get(&bob1.user_id)
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    expect_eq(
        &devices.len(),
        &2,
        "devices with packages before the deletion",
    )?;
    expect_ok(
        bob1.client.delete_device(&bob2.device_id).await,
        "delete device",
    )?;
    let claimed = expect_ok(alice.client.claim_keys(&[&bob1.user_id]).await, "claim")?;
    let devices: Vec<String> = claimed
        .key_packages
        .get(&bob1.user_id)
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    expect_eq(
        &devices,
        &vec![bob1.device_id.clone()],
        "devices with packages after",
    )?;
    Ok(())
}
