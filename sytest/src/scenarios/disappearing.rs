//! Disappearing messages at the hub (docs/protocol.md#disappearing-messages): an admin's
//! commit sets the group's timer; every application message accepted after it carries
//! `expires_ts` = `ts` + timer; a device that syncs after that never gets the message, and
//! gets what follows; a member who is no admin cannot set the timer (403 `P_NOT_ADMIN`).
//! Every client here is a real `parley-mls` device.

use std::time::Duration;

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::{bundle_request, Device};
use crate::fixture::Ctx;

crate::tests!("disappearing":
    messages_carry_their_expiry_and_an_expired_one_is_never_delivered,
    a_member_who_is_no_admin_cannot_set_the_timer,
);

const TIMER_MS: u64 = 1000;

async fn messages_carry_their_expiry_and_an_expired_one_is_never_delivered(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    let mut carol = Device::register(&hs, &ctx.user("carol")).await?;
    let ids = [
        alice.user_id.clone(),
        bob.user_id.clone(),
        carol.user_id.clone(),
    ];
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for d in [&mut alice, &mut bob, &mut carol] {
        d.know(&refs);
    }
    let group = alice.create_group_with_roles().await?;
    alice.add(&group, &refs[1..]).await?;
    let timer = alice
        .engine
        .set_disappearing(&group, Some(TIMER_MS))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    alice.submit(&group, timer).await?;
    for d in [&mut bob, &mut carol] {
        d.sync_all().await?;
        expect_eq(
            &d.engine.disappearing_after_ms(&group).ok().flatten(),
            &Some(TIMER_MS),
            "the timer every member sees",
        )?;
    }

    // Bob, online, gets it with its expiry.
    alice.send_text(&group, "soon gone").await?;
    let answer = expect_ok(bob.client.sync(bob.since.as_deref(), 0).await, "sync")?;
    let sent = answer
        .groups
        .get(&group)
        .and_then(|g| g.messages.iter().find(|m| m.kind == "application"))
        .ok_or_else(|| anyhow::anyhow!("bob got no application message"))?;
    expect_eq(
        &sent.expires_ts,
        &Some(sent.ts + TIMER_MS),
        "expires_ts = ts + timer",
    )?;
    bob.apply(answer).await?;
    anyhow::ensure!(
        bob.texts(&group).contains(&"soon gone".to_owned()),
        "bob did not read the message"
    );

    // Carol looks only after it expired: never delivered; what follows is.
    tokio::time::sleep(Duration::from_millis(TIMER_MS + 500)).await;
    alice.send_text(&group, "still here").await?;
    carol.sync_all().await?;
    expect_eq(
        &carol.texts(&group),
        &vec!["still here".to_owned()],
        "carol's messages",
    )?;
    Ok(())
}

async fn a_member_who_is_no_admin_cannot_set_the_timer(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    let ids = [alice.user_id.clone(), bob.user_id.clone()];
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for d in [&mut alice, &mut bob] {
        d.know(&refs);
    }
    // Roles at the hub only: bob's engine lets him build the commit, the hub refuses it.
    let group = alice.create_group_with_roles_at_hub().await?;
    alice.add(&group, &refs[1..]).await?;
    bob.sync_all().await?;
    let bundle = bob
        .engine
        .set_disappearing(&group, Some(60_000))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let result = bob.client.commit(&group, &bundle_request(&bundle)).await;
    let _ = bob.engine.discard_pending_commit(&group);
    expect_error(result, 403, "P_NOT_ADMIN")?;
    // Messages stay: no expiry on the next one.
    alice.send_text(&group, "kept").await?;
    let answer = expect_ok(bob.client.sync(bob.since.as_deref(), 0).await, "sync")?;
    let kept = answer
        .groups
        .get(&group)
        .and_then(|g| g.messages.iter().find(|m| m.kind == "application"))
        .ok_or_else(|| anyhow::anyhow!("bob got no application message"))?;
    expect_eq(&kept.expires_ts, &None, "no expiry without a timer")?;
    Ok(())
}
