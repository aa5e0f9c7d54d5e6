//! Group roles at the hub (docs/protocol.md#group-roles): a group created with
//! `{"roles": true}` has its creator's user as first admin; the hub refuses, with 403
//! `P_NOT_ADMIN`, a non-admin's commit that adds a user, removes another user or changes the
//! group context, and tracks the roles an admin's commit sets. Every client here is a real
//! `parley-mls` device.

use parley_client_api::groups::DeviceRef as WireDevice;
use parley_mls::DeviceRef;

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::{bundle_request, Device};
use crate::fixture::{Ctx, Server};

crate::tests!("roles":
    a_non_admins_commit_adding_or_removing_a_user_or_changing_roles_is_403_not_admin,
    an_admin_promotes_a_member_whose_removal_of_another_is_then_accepted,
);

/// Alice, Bob and Carol on `hs`, knowing each other.
async fn three(ctx: &Ctx, hs: &Server) -> anyhow::Result<(Device, Device, Device)> {
    let mut alice = Device::register(hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(hs, &ctx.user("bob")).await?;
    let mut carol = Device::register(hs, &ctx.user("carol")).await?;
    let ids = [
        alice.user_id.clone(),
        bob.user_id.clone(),
        carol.user_id.clone(),
    ];
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for d in [&mut alice, &mut bob, &mut carol] {
        d.know(&ids);
    }
    Ok((alice, bob, carol))
}

/// Alice's group (made by `create`) with Bob and Carol joined.
async fn group_of_three(
    alice: &mut Device,
    bob: &mut Device,
    carol: &mut Device,
    roles_in_engine: bool,
) -> anyhow::Result<String> {
    let group = if roles_in_engine {
        alice.create_group_with_roles().await?
    } else {
        alice.create_group_with_roles_at_hub().await?
    };
    let (b, c) = (bob.user_id.clone(), carol.user_id.clone());
    alice.add(&group, &[&b, &c]).await?;
    for d in [bob, carol] {
        d.sync_all().await?;
        anyhow::ensure!(
            d.engine.group_ids().contains(&group),
            "{} did not join {group}",
            d.user_id
        );
    }
    Ok(group)
}

/// Submits `bundle` as `device` and expects 403 `P_NOT_ADMIN`; the engine drops the commit.
async fn expect_not_admin(
    device: &mut Device,
    group: &str,
    bundle: parley_mls::CommitBundle,
    what: &str,
) -> anyhow::Result<()> {
    let result = device.client.commit(group, &bundle_request(&bundle)).await;
    let _ = device.engine.discard_pending_commit(group);
    expect_error(result, 403, "P_NOT_ADMIN")
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
        .map(drop)
}

fn device_ref(d: &Device) -> anyhow::Result<DeviceRef> {
    DeviceRef::new(&d.user_id, &d.device_id).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn a_non_admins_commit_adding_or_removing_a_user_or_changing_roles_is_403_not_admin(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, mut carol) = three(&ctx, &hs).await?;
    // The engines here ignore roles (the group context has none): only the hub judges.
    let group = group_of_three(&mut alice, &mut bob, &mut carol, false).await?;
    let dave = Device::register(&hs, &ctx.user("dave")).await?;
    let d = dave.user_id.clone();
    bob.learn(&[&d]).await?;

    let removal = bob
        .engine
        .remove_members(&group, &[device_ref(&carol)?])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_not_admin(&mut bob, &group, removal, "bob removing carol").await?;
    let dave_kp = bob.claim(&[&d]).await?;
    let addition = bob.add_bundle(&group, &dave_kp)?;
    expect_not_admin(&mut bob, &group, addition, "bob adding dave").await?;
    let roles = bob
        .engine
        .set_admins(&group, std::slice::from_ref(&bob.user_id))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_not_admin(&mut bob, &group, roles, "bob making himself admin").await?;

    // What a member may still do: update its own leaf, and add a member's new device.
    bob.self_update(&group).await?;
    let carol_localpart = carol
        .user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut laptop = Device::login(&hs, &carol_localpart).await?;
    let c = carol.user_id.clone();
    bob.add_devices(&group, &c, std::slice::from_ref(&laptop.device_id))
        .await?;
    laptop.know(&[&alice.user_id, &bob.user_id]);
    laptop.sync_all().await?;
    anyhow::ensure!(
        laptop.engine.group_ids().contains(&group),
        "carol's laptop, added by bob, did not join"
    );
    // And the admin may remove anyone.
    alice.sync_all().await?;
    alice
        .remove(
            &group,
            &[WireDevice {
                user_id: bob.user_id.clone(),
                device_id: bob.device_id.clone(),
            }],
        )
        .await?;
    let groups = expect_ok(alice.client.groups().await, "list groups")?;
    let roster = groups
        .groups
        .iter()
        .find(|g| g.group_id == group)
        .map(|g| g.members.len());
    expect_eq(&roster, &Some(3), "members after bob's removal")?;
    Ok(())
}

async fn an_admin_promotes_a_member_whose_removal_of_another_is_then_accepted(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, mut carol) = three(&ctx, &hs).await?;
    let group = group_of_three(&mut alice, &mut bob, &mut carol, true).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.set_admins(&group, &[&a, &b]).await?;
    bob.sync_all().await?;
    let roles = bob
        .engine
        .roles(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map(|r| r.admins);
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    expect_eq(&roles, &Some(expected), "admins bob's engine holds")?;
    bob.remove(
        &group,
        &[WireDevice {
            user_id: carol.user_id.clone(),
            device_id: carol.device_id.clone(),
        }],
    )
    .await?;
    carol.sync_all().await?;
    anyhow::ensure!(
        !carol.engine.is_active(&group).unwrap_or(true),
        "carol was not removed"
    );
    // Demoted again, bob may no longer remove anyone.
    alice.sync_all().await?;
    alice.set_admins(&group, &[&a]).await?;
    bob.sync_all().await?;
    let alice_ref = device_ref(&alice)?;
    let refused = bob.engine.remove_members(&group, &[alice_ref]);
    anyhow::ensure!(
        matches!(refused, Err(parley_mls::MlsError::NotAdmin(_))),
        "bob's engine built a removal after his demotion: {refused:?}"
    );
    Ok(())
}
