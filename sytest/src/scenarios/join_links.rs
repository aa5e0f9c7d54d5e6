//! Join links at the hub (docs/protocol.md#join-links): `POST /groups/{id}/join_info` hands
//! the current GroupInfo only to a user holding the group's current code (403
//! `P_JOIN_REFUSED` otherwise); an external commit with that code in its authenticated data
//! joins the group and every member merges it; one with a wrong or rotated code, by a banned
//! user, to a closed group, with a Welcome, or submitted by another device than the joining
//! leaf's is refused. Every client here is a real `parley-mls` device.

use parley_client_api::join::JoinLink;

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::{bundle_request, Device};
use crate::fixture::{Ctx, Server};

crate::tests!("join_links":
    join_info_needs_the_current_code_and_a_joiner_by_link_is_merged_by_every_member,
    external_commits_with_a_stale_code_from_a_banned_user_or_another_device_are_refused,
);

/// Alice (admin) and Bob in a group with roles, and `others` registered; everyone knows
/// everyone.
async fn group_with(
    ctx: &Ctx,
    hs: &Server,
    others: &[&str],
) -> anyhow::Result<(Device, Device, Vec<Device>, String)> {
    let mut alice = Device::register(hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(hs, &ctx.user("bob")).await?;
    let mut rest = Vec::new();
    for name in others {
        rest.push(Device::register(hs, &ctx.user(name)).await?);
    }
    let mut ids = vec![alice.user_id.clone(), bob.user_id.clone()];
    ids.extend(rest.iter().map(|d| d.user_id.clone()));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for d in [&mut alice, &mut bob].into_iter().chain(rest.iter_mut()) {
        d.know(&ids);
    }
    let group = alice.create_group_with_roles().await?;
    let b = bob.user_id.clone();
    alice.add(&group, &[&b]).await?;
    bob.sync_all().await?;
    Ok((alice, bob, rest, group))
}

fn code(link: &str) -> anyhow::Result<String> {
    Ok(JoinLink::parse(link)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .code)
}

async fn join_info_needs_the_current_code_and_a_joiner_by_link_is_merged_by_every_member(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, rest, group) = group_with(&ctx, &hs, &["dave"]).await?;
    let mut dave = rest
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no dave"))?;
    let guess = "AAAAAAAAAAAAAAAAAAAAAA";
    expect_error(
        dave.client.join_info(&group, guess).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    let link = alice.open_join_link(&group).await?;
    expect_error(
        dave.client.join_info(&group, guess).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    let hub = group.split_once(':').map_or("", |(_, hub)| hub);
    expect_error(
        dave.client
            .join_info(&format!("!nosuchgroup1:{hub}"), guess)
            .await,
        404,
        "P_NOT_FOUND",
    )?;
    let info = expect_ok(
        dave.client.join_info(&group, &code(&link)?).await,
        "join_info with the current code",
    )?;
    let epoch = alice
        .engine
        .epoch(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_eq(&info.epoch, &epoch, "the GroupInfo's epoch is the group's")?;

    dave.join_by_link(&link).await?;
    bob.sync_all().await?;
    alice.sync_all().await?;
    for d in [&alice, &bob] {
        expect_eq(
            &d.engine.members(&group).map(|m| m.len()).ok(),
            &Some(3),
            "members after the join",
        )?;
    }
    let groups = expect_ok(alice.client.groups().await, "list groups")?;
    let roster = groups
        .groups
        .iter()
        .find(|g| g.group_id == group)
        .map(|g| g.members.iter().any(|m| m.user_id == dave.user_id));
    expect_eq(&roster, &Some(true), "dave in the hub's roster")?;
    dave.send_text(&group, "joined by link").await?;
    bob.sync_all().await?;
    anyhow::ensure!(
        bob.texts(&group).contains(&"joined by link".to_owned()),
        "bob did not read dave's message"
    );
    Ok(())
}

async fn external_commits_with_a_stale_code_from_a_banned_user_or_another_device_are_refused(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, rest, group) = group_with(&ctx, &hs, &["erin", "frank"]).await?;
    let mut rest = rest.into_iter();
    let (mut erin, mut frank) = match (rest.next(), rest.next()) {
        (Some(e), Some(f)) => (e, f),
        _ => anyhow::bail!("missing devices"),
    };
    let old = alice.open_join_link(&group).await?;
    let current = alice.open_join_link(&group).await?;
    expect_error(
        erin.client.join_info(&group, &code(&old)?).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    let info = expect_ok(
        erin.client.join_info(&group, &code(&current)?).await,
        "join_info",
    )?;
    let gi = parley_client_api::client::unb64(&info.group_info)
        .ok_or_else(|| anyhow::anyhow!("group_info is not base64"))?;
    let users = erin.known_users.clone();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    erin.learn(&refs).await?;
    let keys = erin.keys.clone();

    // The rotated code in the commit's AAD.
    let (_, stale) = erin
        .engine
        .join_by_link(&group, &gi, &code(&old)?, &keys)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_error(
        erin.client.commit(&group, &bundle_request(&stale)).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    erin.engine
        .forget_group(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The right code, but submitted by frank for erin's leaf; then with a Welcome attached.
    let (_, good) = erin
        .engine
        .join_by_link(&group, &gi, &code(&current)?, &keys)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut request = bundle_request(&good);
    request.adds[0].device_id = frank.device_id.clone();
    request.adds[0].user_id = frank.user_id.clone();
    expect_error(
        frank.client.commit(&group, &request).await,
        400,
        "P_INVALID_MESSAGE",
    )?;
    let mut with_welcome = bundle_request(&good);
    with_welcome.welcome = with_welcome.group_info.clone();
    expect_error(
        erin.client.commit(&group, &with_welcome).await,
        400,
        "P_INVALID_MESSAGE",
    )?;
    erin.engine
        .forget_group(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Banned: refused at join_info and at commit time.
    let ban = alice
        .engine
        .set_banned(&group, &erin.user_id, true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let banned_epoch_info = ban
        .group_info
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the ban commit carries no GroupInfo"))?;
    alice.submit(&group, ban).await?;
    expect_error(
        erin.client.join_info(&group, &code(&current)?).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    // An external commit on the current GroupInfo (as if erin had fetched it before the
    // ban): the hub's join rules refuse it.
    let (_, banned) = erin
        .engine
        .join_by_link(&group, &banned_epoch_info, &code(&current)?, &keys)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_error(
        erin.client.commit(&group, &bundle_request(&banned)).await,
        403,
        "P_JOIN_REFUSED",
    )?;
    erin.engine
        .forget_group(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Closed: frank, not banned, is refused too; the group is unchanged.
    let close = alice
        .engine
        .close_join_link(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    alice.submit(&group, close).await?;
    expect_error(
        frank.try_join_by_link(&current).await?,
        403,
        "P_JOIN_REFUSED",
    )?;
    bob.sync_all().await?;
    expect_eq(
        &bob.engine.members(&group).map(|m| m.len()).ok(),
        &Some(2),
        "members after the refused joins",
    )?;
    Ok(())
}
