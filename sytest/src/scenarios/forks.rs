//! Fork recovery at the hub (docs/protocol.md#fork-recovery): a member device that lost the
//! group's state reports it with `POST /groups/{id}/forked`; the hub writes one
//! `member_forked` notice per device and epoch, however often it is asked; a device that is
//! not a member gets 403 `P_NOT_MEMBER`, an unknown group 404; a member re-adds the device,
//! which joins again from the Welcome and reads what follows. Every client here is a real
//! `parley-mls` device.

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::Device;
use crate::fixture::Ctx;

crate::tests!("forks":
    a_fork_report_makes_one_notice_per_epoch_and_the_member_readds_the_device,
);

async fn a_fork_report_makes_one_notice_per_epoch_and_the_member_readds_the_device(
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
    let group = alice.create_group().await?;
    alice.add(&group, &refs[1..2]).await?;
    bob.sync_all().await?;

    // Carol is no member; a group that does not exist is 404.
    expect_error(carol.client.report_fork(&group).await, 403, "P_NOT_MEMBER")?;
    let hub = group.split_once(':').map_or("", |(_, hub)| hub);
    expect_error(
        bob.client
            .report_fork(&format!("!nosuchgroup1:{hub}"))
            .await,
        404,
        "P_NOT_FOUND",
    )?;

    // Bob reports three times: one notice.
    for _ in 0..3 {
        expect_ok(bob.client.report_fork(&group).await, "report the fork")?;
    }
    alice.sync_all().await?;
    let notices: Vec<&serde_json::Value> = alice
        .notices
        .iter()
        .filter(|(g, n)| g == &group && n["type"] == "member_forked")
        .map(|(_, n)| n)
        .collect();
    expect_eq(&notices.len(), &1, "member_forked notices")?;
    expect_eq(
        &notices[0]["device_id"].as_str(),
        &Some(bob.device_id.as_str()),
        "the notice names bob's device",
    )?;

    // Alice re-adds bob's device; bob joins again from the Welcome and reads what follows.
    let device = parley_mls::DeviceRef::new(&bob.user_id, &bob.device_id)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bob.forked.insert(group.clone());
    alice.readd_forked(&group, &device).await?;
    bob.sync_all().await?;
    anyhow::ensure!(!bob.forked.contains(&group), "bob did not rejoin");
    alice.send_text(&group, "after the re-add").await?;
    bob.sync_all().await?;
    expect_eq(
        &bob.texts(&group).last().cloned(),
        &Some("after the re-add".to_owned()),
        "bob reads what follows",
    )?;
    Ok(())
}
