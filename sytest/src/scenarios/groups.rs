//! Groups at their hub (docs/protocol.md#groups): creation, invites, removals,
//! leaving, self-updates, the epoch race, the roster, envelope mismatches, `txn_id` retries.
//! Every client here is a real `parley-mls` device.

use parley_client_api::groups::DeviceRef as WireDevice;
use parley_mls::{CommitBundle, EngineConfig, Event};

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::device::{bundle_request, Device};
use crate::fixture::{Ctx, Server};
use crate::scenarios::{is_valid_group_id, server_name_of};

crate::tests!("groups":
    created_group_has_a_valid_id_and_starts_at_epoch_0,
    invited_local_member_gets_the_welcome_not_the_commit_and_joins,
    removed_member_learns_it_and_can_no_longer_send,
    leave_is_a_proposal_committed_by_reference,
    self_update_advances_the_epoch_for_everyone,
    stale_commit_is_409_with_the_current_epoch,
    non_member_cannot_send_403_not_member,
    message_for_another_group_is_400_invalid_message,
    declared_adds_that_disagree_with_the_commit_are_400,
    commit_adding_members_without_a_welcome_is_400,
    bad_base64_in_bundles_and_messages_is_400,
    ids_outside_their_grammar_in_a_path_name_nothing_and_a_bad_txn_id_is_400,
    txn_id_reuse_returns_the_first_seq_and_delivers_once,
    application_message_of_max_message_bytes_plus_one_is_413_and_one_at_the_limit_is_delivered,
    ephemeral_message_reaches_a_waiting_long_poll_only_and_is_never_stored,
    a_members_new_device_is_announced_by_a_notice_and_another_member_adds_it,
);

/// Alice and Bob, both on `hs`, knowing each other's keys.
async fn pair(ctx: &Ctx, hs: &Server) -> anyhow::Result<(Device, Device)> {
    let mut alice = Device::register(hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(hs, &ctx.user("bob")).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.know(&[&a, &b]);
    bob.know(&[&a, &b]);
    Ok((alice, bob))
}

/// A group of Alice with Bob added and joined.
async fn group_of_two(alice: &mut Device, bob: &mut Device) -> anyhow::Result<String> {
    let group = alice.create_group().await?;
    let b = bob.user_id.clone();
    let r = alice.add(&group, &[&b]).await?;
    expect_eq(
        &(r.epoch, r.seq),
        &(1, 1),
        "(epoch, seq) of the first commit",
    )?;
    bob.sync_all().await?;
    anyhow::ensure!(
        bob.engine.group_ids().contains(&group),
        "bob did not join {group} (no Welcome delivered)"
    );
    Ok(group)
}

/// `hs1` started, with Alice and Bob registered on it in a group of two (see [`group_of_two`]).
async fn alice_and_bob_in_a_group(
    ctx: &mut Ctx,
) -> anyhow::Result<(Server, Device, Device, String)> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob) = pair(ctx, &hs).await?;
    let group = group_of_two(&mut alice, &mut bob).await?;
    Ok((hs, alice, bob, group))
}

/// `from` sends `text` to `group`; after syncing, it is the only text `to` has received there.
async fn expect_only_text_delivered(
    from: &mut Device,
    to: &mut Device,
    group: &str,
    text: &str,
) -> anyhow::Result<()> {
    from.send_text(group, text).await?;
    to.sync_all().await?;
    expect_eq(
        &to.texts(group),
        &vec![text.to_owned()],
        "the recipient's texts",
    )
}

/// Checks that `by` sending the application `message` (as `txn_id`) to `group`, then the
/// commit `update`, is refused both times with `(status, errcode)`.
async fn expect_message_and_commit_refused(
    by: &Device,
    group: &str,
    txn_id: &str,
    message: &[u8],
    update: &CommitBundle,
    (status, errcode): (u16, &str),
) -> anyhow::Result<()> {
    expect_error(
        by.client.send(group, txn_id, message).await,
        status,
        errcode,
    )
    .map_err(|e| anyhow::anyhow!("application message: {e}"))?;
    expect_error(
        by.client.commit(group, &bundle_request(update)).await,
        status,
        errcode,
    )
    .map_err(|e| anyhow::anyhow!("commit: {e}"))?;
    Ok(())
}

async fn members_of(d: &Device, group: &str) -> anyhow::Result<Option<(u64, Vec<WireDevice>)>> {
    let groups = expect_ok(d.client.groups().await, "GET /groups")?;
    Ok(groups
        .groups
        .into_iter()
        .find(|g| g.group_id == group)
        .map(|g| {
            let mut m = g.members;
            m.sort();
            (g.epoch, m)
        }))
}

async fn created_group_has_a_valid_id_and_starts_at_epoch_0(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = server_name_of(&hs).await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let g1 = alice.create_group().await?;
    let g2 = alice.create_group().await?;
    for g in [&g1, &g2] {
        anyhow::ensure!(
            is_valid_group_id(g, &name),
            "group id {g:?} is not !opaque:{name} with 8–64 [A-Za-z0-9_-]"
        );
    }
    anyhow::ensure!(g1 != g2, "two groups got the same id {g1}");
    let listed = members_of(&alice, &g1).await?;
    expect_eq(
        &listed,
        &Some((0, vec![alice.me()])),
        "GET /groups entry (epoch, members)",
    )?;
    let sync = expect_ok(alice.client.sync(None, 0).await, "sync")?;
    anyhow::ensure!(
        sync.groups.get(&g1).is_none_or(|g| g.messages.is_empty()),
        "a new group has messages: {sync:?}"
    );
    Ok(())
}

async fn invited_local_member_gets_the_welcome_not_the_commit_and_joins(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob) = pair(&ctx, &hs).await?;
    let group = alice.create_group().await?;
    let b = bob.user_id.clone();
    let r = alice.add(&group, &[&b]).await?;
    expect_eq(&(r.epoch, r.seq), &(1, 1), "(epoch, seq)")?;
    let sync = expect_ok(bob.client.sync(None, 0).await, "bob's sync")?;
    let welcome = sync
        .welcomes
        .iter()
        .find(|w| w.group_id == group)
        .ok_or_else(|| anyhow::anyhow!("bob's sync has no Welcome for {group}: {sync:?}"))?;
    expect_eq(&welcome.sender, &alice.me(), "welcome sender")?;
    anyhow::ensure!(
        sync.groups
            .get(&group)
            .is_none_or(|g| g.messages.is_empty()),
        "the added device received the commit that added it"
    );
    bob.apply(sync).await?;
    anyhow::ensure!(bob.engine.group_ids().contains(&group), "bob did not join");
    let mut expected = vec![alice.me(), bob.me()];
    expected.sort();
    expect_eq(
        &members_of(&bob, &group).await?,
        &Some((1, expected)),
        "bob's GET /groups entry",
    )?;
    expect_only_text_delivered(&mut alice, &mut bob, &group, "hello bob").await?;
    Ok(())
}

async fn removed_member_learns_it_and_can_no_longer_send(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, mut bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let (_, stale) = bob.encrypt(&group, "from the past")?;
    let r = alice.remove(&group, &[bob.me()]).await?;
    expect_eq(&r.epoch, &2, "epoch after the removal")?;
    let events = bob.sync_all().await?;
    anyhow::ensure!(
        events
            .iter()
            .any(|e| matches!(e, Event::RemovedFromGroup { .. })),
        "bob did not learn of his removal: {events:?}"
    );
    expect_eq(
        &members_of(&alice, &group).await?,
        &Some((2, vec![alice.me()])),
        "roster after the removal",
    )?;
    anyhow::ensure!(
        members_of(&bob, &group).await?.is_none(),
        "the group is still in bob's GET /groups"
    );
    expect_error(
        bob.client.send(&group, "late-1", &stale).await,
        403,
        "P_NOT_MEMBER",
    )?;
    alice.send_text(&group, "after bob left").await?;
    let sync = expect_ok(bob.client.sync(bob.since.as_deref(), 0).await, "bob's sync")?;
    anyhow::ensure!(
        sync.groups
            .get(&group)
            .is_none_or(|g| g.messages.is_empty()),
        "a removed device still receives the group's messages"
    );
    Ok(())
}

async fn leave_is_a_proposal_committed_by_reference(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, mut bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let proposal = bob
        .engine
        .leave_group(&group)
        .map_err(|e| anyhow::anyhow!("leave: {e}"))?;
    let seq = expect_ok(
        bob.client.send(&group, "leave-1", &proposal).await,
        "send the proposal",
    )?;
    expect_eq(&seq, &2, "seq of the proposal")?;
    let sync = expect_ok(alice.client.sync(alice.since.as_deref(), 0).await, "sync")?;
    let kinds: Vec<String> = sync
        .groups
        .get(&group)
        .map(|g| g.messages.iter().map(|m| m.kind.clone()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        kinds.contains(&"proposal".to_owned()),
        "the leave proposal was not delivered as kind \"proposal\": {kinds:?}"
    );
    alice.apply(sync).await?;
    let bundle = alice
        .engine
        .commit_pending_proposals(&group)
        .map_err(|e| anyhow::anyhow!("commit proposals: {e}"))?;
    expect_eq(&bundle.removes.len(), &1, "removes of the commit")?;
    let r = alice.submit(&group, bundle).await?;
    expect_eq(&(r.epoch, r.seq), &(2, 3), "(epoch, seq) of the commit")?;
    expect_eq(
        &members_of(&alice, &group).await?,
        &Some((2, vec![alice.me()])),
        "roster after the leave",
    )?;
    let events = bob.sync_all().await?;
    anyhow::ensure!(
        events
            .iter()
            .any(|e| matches!(e, Event::RemovedFromGroup { .. })),
        "bob did not see his leave committed: {events:?}"
    );
    Ok(())
}

async fn self_update_advances_the_epoch_for_everyone(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, mut bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let r = bob.self_update(&group).await?;
    expect_eq(
        &(r.epoch, r.seq),
        &(2, 2),
        "(epoch, seq) of the self-update",
    )?;
    alice.sync_all().await?;
    let epoch = alice
        .engine
        .epoch(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_eq(&epoch, &2, "alice's epoch")?;
    let a = alice
        .engine
        .epoch_authenticator(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = bob
        .engine
        .epoch_authenticator(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(a == b, "alice and bob disagree on the epoch authenticator");
    expect_eq(
        &members_of(&alice, &group).await?.map(|(e, _)| e),
        &Some(2),
        "GET /groups epoch",
    )?;
    expect_only_text_delivered(&mut alice, &mut bob, &group, "new epoch").await?;
    Ok(())
}

async fn stale_commit_is_409_with_the_current_epoch(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, mut bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let stale = bob
        .engine
        .self_update(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = bob.engine.discard_pending_commit(&group);
    alice.self_update(&group).await?;
    let body = expect_error(
        bob.client.commit(&group, &bundle_request(&stale)).await,
        409,
        "P_STALE_EPOCH",
    )?;
    expect_eq(&body.extra_u64("current_epoch"), &Some(2), "current_epoch")?;
    // The loser catches up and retries.
    bob.sync_all().await?;
    let r = bob.self_update(&group).await?;
    expect_eq(&r.epoch, &3, "epoch after the retry")?;
    Ok(())
}

async fn non_member_cannot_send_403_not_member(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob) = pair(&ctx, &hs).await?;
    let mallory = Device::register(&hs, &ctx.user("mallory")).await?;
    let group = group_of_two(&mut alice, &mut bob).await?;
    let (_, message) = bob.encrypt(&group, "bob's words")?;
    let update = alice
        .engine
        .self_update(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let refused = (403, "P_NOT_MEMBER");
    expect_message_and_commit_refused(&mallory, &group, "m-1", &message, &update, refused).await
}

async fn message_for_another_group_is_400_invalid_message(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, _bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let other = alice.create_group().await?;
    let (_, message) = alice.encrypt(&group, "for the first group")?;
    let update = alice
        .engine
        .self_update(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let refused = (400, "P_INVALID_MESSAGE");
    expect_message_and_commit_refused(&alice, &other, "x-1", &message, &update, refused).await
}

async fn declared_adds_that_disagree_with_the_commit_are_400(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob) = pair(&ctx, &hs).await?;
    let carol = Device::register(&hs, &ctx.user("carol")).await?;
    let group = alice.create_group().await?;
    let kps = alice.claim(&[&carol.user_id]).await?;
    let bundle = alice.add_bundle(&group, &kps)?;
    let mut request = bundle_request(&bundle);
    for adds in [vec![bob.me()], vec![], vec![carol.me(), bob.me()]] {
        request.adds = adds.clone();
        expect_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        )
        .map_err(|e| anyhow::anyhow!("declared adds {adds:?}: {e}"))?;
    }
    request.adds = vec![carol.me()];
    request.removes = vec![bob.me()];
    expect_error(
        alice.client.commit(&group, &request).await,
        400,
        "P_INVALID_MESSAGE",
    )
    .map_err(|e| anyhow::anyhow!("declared removes of a commit removing nobody: {e}"))?;
    // The matching declaration is accepted.
    let r = expect_ok(
        alice.client.commit(&group, &bundle_request(&bundle)).await,
        "the correctly declared commit",
    )?;
    expect_eq(&r.epoch, &1, "epoch")?;
    let _ = &mut bob;
    Ok(())
}

async fn commit_adding_members_without_a_welcome_is_400(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, bob) = pair(&ctx, &hs).await?;
    let group = alice.create_group().await?;
    let kps = alice.claim(&[&bob.user_id]).await?;
    let bundle = alice.add_bundle(&group, &kps)?;
    let mut request = bundle_request(&bundle);
    request.welcome = None;
    expect_error(
        alice.client.commit(&group, &request).await,
        400,
        "P_INVALID_MESSAGE",
    )?;
    expect_eq(
        &members_of(&alice, &group).await?.map(|(e, _)| e),
        &Some(0),
        "epoch after the refusal",
    )?;
    Ok(())
}

/// A path parameter is parsed as the id it names before the handler runs: a group, user or
/// device id outside its grammar names nothing (404 `P_NOT_FOUND`); a `txn_id` outside its
/// grammar is the client's mistake (400 `P_BAD_JSON`). Nothing is stored or sent.
async fn ids_outside_their_grammar_in_a_path_name_nothing_and_a_bad_txn_id_is_400(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, _bob) = pair(&ctx, &hs).await?;
    let group = alice.create_group().await?;
    let client = &alice.client;
    let commit = parley_client_api::groups::CommitRequest {
        commit: "AAAA".into(),
        welcome: None,
        group_info: None,
        adds: Vec::new(),
        removes: Vec::new(),
    };
    for bad_group in [
        "no-bang:h.example",
        "!nocolon",
        "!:h.example",
        "!g:bad host",
    ] {
        expect_error(client.send(bad_group, "t1", b"x").await, 404, "P_NOT_FOUND")
            .map_err(|e| anyhow::anyhow!("send to {bad_group:?}: {e}"))?;
        expect_error(client.commit(bad_group, &commit).await, 404, "P_NOT_FOUND")
            .map_err(|e| anyhow::anyhow!("commit to {bad_group:?}: {e}"))?;
    }
    for bad_txn in ["a/b", "has space", &"t".repeat(65)] {
        expect_error(client.send(&group, bad_txn, b"x").await, 400, "P_BAD_JSON")
            .map_err(|e| anyhow::anyhow!("txn_id {bad_txn:?}: {e}"))?;
    }
    for bad_user in ["alice", "@alice", "@Alice:h.example"] {
        expect_error(client.user_devices(bad_user).await, 404, "P_NOT_FOUND")
            .map_err(|e| anyhow::anyhow!("user {bad_user:?}: {e}"))?;
    }
    for bad_device in ["has space", "dev.ice", &"D".repeat(65)] {
        expect_error(client.delete_device(bad_device).await, 404, "P_NOT_FOUND")
            .map_err(|e| anyhow::anyhow!("delete device {bad_device:?}: {e}"))?;
        expect_error(
            client.bind_signature_key(bad_device, &[7; 32]).await,
            404,
            "P_NOT_FOUND",
        )
        .map_err(|e| anyhow::anyhow!("bind device {bad_device:?}: {e}"))?;
    }
    // Nothing was touched: the one group, and both of Alice's devices' keys still bound.
    expect_eq(&client.groups().await?.groups.len(), &1, "groups")?;
    expect_eq(
        &client.user_devices(&alice.user_id).await?.devices.len(),
        &1,
        "alice's devices",
    )?;
    Ok(())
}

async fn bad_base64_in_bundles_and_messages_is_400(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, bob) = pair(&ctx, &hs).await?;
    let group = alice.create_group().await?;
    let kps = alice.claim(&[&bob.user_id]).await?;
    let bundle = alice.add_bundle(&group, &kps)?;
    for field in ["commit", "welcome", "group_info"] {
        let mut request = bundle_request(&bundle);
        match field {
            "commit" => request.commit = "not base64!".into(),
            "welcome" => request.welcome = Some("not base64!".into()),
            _ => request.group_info = Some("not base64!".into()),
        }
        expect_error(
            alice.client.commit(&group, &request).await,
            400,
            "P_INVALID_MESSAGE",
        )
        .map_err(|e| anyhow::anyhow!("bad {field}: {e}"))?;
    }
    let raw = parley_client_api::groups::SendRequest::new("%%%".into());
    expect_error(
        alice
            .client
            .call_with_raw_path::<parley_client_api::groups::SendMessage>(
                &[group.as_str(), "b64-1"],
                &raw,
            )
            .await,
        400,
        "P_INVALID_MESSAGE",
    )
    .map_err(|e| anyhow::anyhow!("bad message: {e}"))?;
    expect_error(
        alice
            .client
            .send(&group, "b64-2", b"valid base64, no MLS")
            .await,
        400,
        "P_INVALID_MESSAGE",
    )
    .map_err(|e| anyhow::anyhow!("bytes that are not MLS: {e}"))?;
    Ok(())
}

async fn txn_id_reuse_returns_the_first_seq_and_delivers_once(mut ctx: Ctx) -> anyhow::Result<()> {
    let (_hs, mut alice, mut bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let (_, first) = alice.encrypt(&group, "once")?;
    let (_, second) = alice.encrypt(&group, "a different body")?;
    let s1 = expect_ok(alice.client.send(&group, "txn-1", &first).await, "send")?;
    let s2 = expect_ok(alice.client.send(&group, "txn-1", &first).await, "resend")?;
    let s3 = expect_ok(
        alice.client.send(&group, "txn-1", &second).await,
        "reuse with another body",
    )?;
    expect_eq(&(s2, s3), &(s1, s1), "seqs of the retries")?;
    bob.sync_all().await?;
    expect_eq(&bob.texts(&group), &vec!["once".to_owned()], "bob's texts")?;
    let all = expect_ok(bob.client.sync(None, 0).await, "full sync")?;
    let apps = all
        .groups
        .get(&group)
        .map(|g| {
            g.messages
                .iter()
                .filter(|m| m.kind == "application")
                .count()
        })
        .unwrap_or(0);
    expect_eq(&apps, &1, "application messages stored")?;
    Ok(())
}

/// An application message of `d` in `group` whose MLS bytes are exactly `size` long, with the
/// text it carries. `d`'s engine must not pad (`padding_size = 0`): then one more byte of text
/// is one more byte of message (above 16 KiB, where the length prefixes stop growing).
fn message_of_exactly(d: &mut Device, group: &str, size: u64) -> anyhow::Result<(String, Vec<u8>)> {
    let mut text_len = size.saturating_sub(256);
    for _ in 0..8 {
        let text = "x".repeat(text_len as usize);
        let (_, message) = d.encrypt(group, &text)?;
        let len = message.len() as u64;
        if len == size {
            return Ok((text, message));
        }
        text_len = (text_len + size).saturating_sub(len);
    }
    anyhow::bail!("cannot make an application message of exactly {size} bytes")
}

async fn application_message_of_max_message_bytes_plus_one_is_413_and_one_at_the_limit_is_delivered(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let versions = expect_ok(hs.client().versions().await, "GET /versions")?;
    let limit = versions.limits.max_message_bytes;
    let unpadded = EngineConfig {
        padding_size: 0,
        ..EngineConfig::default()
    };
    let mut alice = Device::register_configured(&hs, &ctx.user("alice"), unpadded).await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.know(&[&a, &b]);
    bob.know(&[&a, &b]);
    let group = group_of_two(&mut alice, &mut bob).await?;
    let (_, over) = message_of_exactly(&mut alice, &group, limit + 1)?;
    expect_error(
        alice.client.send(&group, "big-1", &over).await,
        413,
        "P_TOO_LARGE",
    )
    .map_err(|e| anyhow::anyhow!("a message of max_message_bytes ({limit}) + 1 bytes: {e}"))?;
    let (text, at_limit) = message_of_exactly(&mut alice, &group, limit)?;
    expect_ok(
        alice.client.send(&group, "big-2", &at_limit).await,
        &format!("a message of exactly max_message_bytes ({limit}) bytes"),
    )?;
    bob.sync_all().await?;
    anyhow::ensure!(
        bob.texts(&group) == vec![text],
        "bob did not receive exactly the message at the limit (texts of lengths {:?})",
        bob.texts(&group)
            .iter()
            .map(String::len)
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// `d`'s ephemeral message of `group` with base64 `message`.
async fn ephemeral(
    d: &Device,
    group: &str,
    txn: &str,
    message: String,
) -> Result<parley_client_api::endpoint::Empty, parley_client_api::ClientError> {
    use parley_client_api::groups::{SendEphemeral, SendRequest};
    d.client
        .call_with_raw_path::<SendEphemeral>(&[group, txn], &SendRequest::new(message))
        .await
}

async fn ephemeral_message_reaches_a_waiting_long_poll_only_and_is_never_stored(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    use parley_client_api::client::b64;
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob) = pair(&ctx, &hs).await?;
    let mallory = Device::register(&hs, &ctx.user("mallory")).await?;
    let group = group_of_two(&mut alice, &mut bob).await?;
    let since = bob.since.clone();
    // Bob waits in a long-poll; Alice's typing notice answers it at once.
    let waiting = {
        let client = bob.client.clone();
        let since = since.clone();
        tokio::spawn(async move { client.sync(since.as_deref(), 20_000).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (txn, typing) = alice.encrypt(&group, "typing")?;
    expect_ok(
        ephemeral(&alice, &group, &txn, b64(&typing)).await,
        "ephemeral send",
    )?;
    let answer = expect_ok(waiting.await?, "long-poll")?;
    expect_eq(
        &answer.ephemeral.len(),
        &1,
        "ephemeral messages in the long-poll",
    )?;
    expect_eq(
        &answer.ephemeral[0].message,
        &b64(&typing),
        "the message as sent",
    )?;
    expect_eq(
        &answer.ephemeral[0].sender.user_id,
        &alice.user_id,
        "its sender",
    )?;
    expect_eq(
        &Some(answer.next_batch.clone()),
        &since,
        "the stream did not move",
    )?;
    // Never stored: no later sync, from any token, returns it.
    for from in [since.clone(), None] {
        let later = expect_ok(bob.client.sync(from.as_deref(), 0).await, "sync")?;
        expect_eq(
            &later.ephemeral.len(),
            &0,
            "ephemeral messages in a later sync",
        )?;
        let apps = later
            .groups
            .get(&group)
            .map(|g| {
                g.messages
                    .iter()
                    .filter(|m| m.kind == "application")
                    .count()
            })
            .unwrap_or(0);
        expect_eq(&apps, &0, "application messages stored")?;
    }
    // Refusals: a non-member, an oversized message, a message that is not base64.
    let (txn, words) = alice.encrypt(&group, "alice's words")?;
    expect_error(
        ephemeral(&mallory, &group, &txn, b64(&words)).await,
        403,
        "P_NOT_MEMBER",
    )?;
    expect_error(
        ephemeral(&alice, &group, "big-1", b64(&vec![0u8; 4096])).await,
        413,
        "P_TOO_LARGE",
    )?;
    expect_error(
        ephemeral(&alice, &group, "bad-1", "not base64!".into()).await,
        400,
        "P_INVALID_MESSAGE",
    )?;
    Ok(())
}

/// The `added` and `removed` device ids of the first `member_devices_changed` notice `d`
/// holds for `group`, if any.
fn device_change(d: &Device, group: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
            .collect()
    };
    d.notices
        .iter()
        .find(|(g, n)| g == group && n["type"] == "member_devices_changed")
        .map(|(_, n)| (ids(&n["added"]), ids(&n["removed"])))
}

async fn a_members_new_device_is_announced_by_a_notice_and_another_member_adds_it(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (hs, mut alice, bob, group) = alice_and_bob_in_a_group(&mut ctx).await?;
    let localpart = bob
        .user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    // Bob's first device stays silent; his second one binds its key.
    let mut laptop = Device::login(&hs, &localpart).await?;
    laptop.know(&[&alice.user_id]);
    alice
        .sync_until(20, "a member_devices_changed notice", |d| {
            device_change(d, &group).is_some()
        })
        .await?;
    expect_eq(
        &device_change(&alice, &group),
        &Some((vec![laptop.device_id.clone()], vec![])),
        "(added, removed) of the notice",
    )?;
    let b = bob.user_id.clone();
    alice
        .add_devices(&group, &b, std::slice::from_ref(&laptop.device_id))
        .await?;
    laptop.sync_all().await?;
    anyhow::ensure!(
        laptop.engine.group_ids().contains(&group),
        "bob's new device did not join {group}"
    );
    expect_only_text_delivered(&mut alice, &mut laptop, &group, "hello, new device").await?;
    Ok(())
}
