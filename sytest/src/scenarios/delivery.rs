//! Delivery (docs/protocol.md#delivery): the shape of `/sync`, `since` tokens and
//! replays, long-polls, the WebSocket (first-frame auth, pushes, revoked sessions), welcome
//! acknowledgement, and a restart that loses nothing.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::check::{expect_eq, expect_ok, send, shorten};
use crate::device::Device;
use crate::fixture::{Ctx, Server};

crate::tests!("delivery":
    sync_has_every_section_even_when_empty,
    older_since_token_replays_the_same_events,
    long_poll_wakes_when_a_message_arrives,
    long_poll_without_events_waits_for_the_timeout,
    every_roster_device_receives_messages_in_seq_order,
    websocket_authenticated_by_its_first_frame_pushes_events,
    websocket_of_a_revoked_session_is_closed,
    websocket_with_a_bad_token_is_closed_without_events,
    deleted_welcome_is_not_sent_again,
    restart_keeps_groups_messages_and_welcomes,
    websocket_frame_larger_than_an_auth_frame_closes_the_socket,
);

/// Alice and Bob in a group of two (Bob joined).
async fn conversation(ctx: &Ctx, hs: &Server) -> anyhow::Result<(Device, Device, String)> {
    let mut alice = Device::register(hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(hs, &ctx.user("bob")).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.know(&[&a, &b]);
    bob.know(&[&a, &b]);
    let group = alice.create_group().await?;
    alice.add(&group, &[&b]).await?;
    bob.sync_all().await?;
    anyhow::ensure!(
        bob.engine.group_ids().contains(&group),
        "bob did not join the group"
    );
    Ok((alice, bob, group))
}

async fn sync_has_every_section_even_when_empty(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut c = hs.client();
    let s = expect_ok(
        c.register(&ctx.user("sue"), crate::scenarios::PASSWORD)
            .await,
        "register",
    )?;
    for query in ["", "?timeout_ms=0"] {
        let reply = send(
            hs.request(Method::GET, &format!("/_parley/client/v1/sync{query}"))
                .bearer_auth(&s.access_token),
        )
        .await?;
        let body = reply.expect_ok()?;
        let ok = body.get("next_batch").is_some_and(Value::is_string)
            && body
                .get("welcomes")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            && body
                .get("groups")
                .and_then(Value::as_object)
                .is_some_and(|g| g.is_empty())
            && body.get("key_packages").is_some_and(|k| {
                k.get("count").and_then(Value::as_u64) == Some(0)
                    && k.get("last_resort").and_then(Value::as_bool) == Some(false)
            });
        anyhow::ensure!(
            ok,
            "sync{query} of a new device is not {{next_batch: string, welcomes: [], groups: {{}}, key_packages: {{count: 0, last_resort: false}}}}: {}",
            shorten(&reply.text)
        );
    }
    Ok(())
}

async fn older_since_token_replays_the_same_events(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, group) = conversation(&ctx, &hs).await?;
    let resume = bob.since.clone();
    for i in 0..5 {
        alice.send_text(&group, &format!("m{i}")).await?;
    }
    let first = expect_ok(bob.client.sync(resume.as_deref(), 0).await, "sync")?;
    let again = expect_ok(bob.client.sync(resume.as_deref(), 0).await, "replayed sync")?;
    let seqs = |s: &parley_client_api::sync::SyncResponse| -> Vec<u64> {
        s.groups
            .get(&group)
            .map(|g| g.messages.iter().map(|m| m.seq).collect())
            .unwrap_or_default()
    };
    expect_eq(&seqs(&first), &vec![2, 3, 4, 5, 6], "seqs after the token")?;
    expect_eq(&first.groups, &again.groups, "events of the replayed sync")?;
    bob.apply(first).await?;
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    expect_eq(&bob.texts(&group), &expected, "bob's texts")?;
    let after = expect_ok(
        bob.client.sync(bob.since.as_deref(), 0).await,
        "sync at the end",
    )?;
    anyhow::ensure!(
        after.groups.values().all(|g| g.messages.is_empty()),
        "the newest token returned events again: {after:?}"
    );
    Ok(())
}

async fn long_poll_wakes_when_a_message_arrives(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, bob, group) = conversation(&ctx, &hs).await?;
    let since = bob.since.clone();
    let client = bob.client.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move { client.sync(since.as_deref(), 20_000).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    anyhow::ensure!(
        !waiter.is_finished(),
        "the long-poll returned before any event"
    );
    alice.send_text(&group, "wake up").await?;
    let woke = tokio::time::timeout(Duration::from_secs(8), waiter)
        .await
        .map_err(|_| anyhow::anyhow!("the long-poll did not wake within 8 s of a message"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let woke = expect_ok(woke, "long-poll")?;
    let n = woke.groups.get(&group).map_or(0, |g| g.messages.len());
    expect_eq(&n, &1, "messages in the woken sync")?;
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(15),
        "the long-poll ran to its timeout"
    );
    Ok(())
}

async fn long_poll_without_events_waits_for_the_timeout(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    bob.sync_all().await?;
    let started = Instant::now();
    let r = expect_ok(
        bob.client.sync(bob.since.as_deref(), 1500).await,
        "long-poll",
    )?;
    let waited = started.elapsed();
    anyhow::ensure!(
        waited >= Duration::from_millis(1300),
        "a long-poll with nothing to deliver returned after {waited:?}, not ~1500 ms"
    );
    anyhow::ensure!(
        r.welcomes.is_empty() && r.groups.values().all(|g| g.messages.is_empty()),
        "events appeared from nowhere: {r:?}"
    );
    Ok(())
}

async fn every_roster_device_receives_messages_in_seq_order(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = ctx.user("alice");
    let mut alice1 = Device::register(&hs, &name).await?;
    let mut alice2 = Device::login(&hs, &name).await?;
    let a = alice1.user_id.clone();
    alice1.know(&[&a]);
    alice2.know(&[&a]);
    let group = alice1.create_group().await?;
    alice1.add(&group, &[&a]).await?;
    alice2.sync_all().await?;
    anyhow::ensure!(
        alice2.engine.group_ids().contains(&group),
        "alice2 did not join"
    );
    for i in 0..6 {
        alice1.send_text(&group, &format!("n{i}")).await?;
    }
    for (who, d) in [("sender", &alice1), ("sender's other device", &alice2)] {
        let s = expect_ok(d.client.sync(None, 0).await, "sync")?;
        let messages = s
            .groups
            .get(&group)
            .map(|g| g.messages.clone())
            .unwrap_or_default();
        let apps: Vec<(u64, String)> = messages
            .iter()
            .filter(|m| m.kind == "application")
            .map(|m| (m.seq, m.sender.device_id.clone()))
            .collect();
        let expected: Vec<(u64, String)> = (2..8).map(|s| (s, alice1.device_id.clone())).collect();
        expect_eq(
            &apps,
            &expected,
            &format!("(seq, sender device) seen by the {who}"),
        )?;
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        anyhow::ensure!(
            seqs.windows(2).all(|w| w[1] > w[0]),
            "{who}: messages not in seq order: {seqs:?}"
        );
        anyhow::ensure!(
            messages
                .iter()
                .all(|m| m.ts > 0 && m.epoch == if m.kind == "commit" { 0 } else { 1 }),
            "{who}: epoch/ts fields wrong: {messages:?}"
        );
    }
    alice2.sync_all().await?;
    let expected: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    expect_eq(
        &alice2.texts(&group),
        &expected,
        "texts on the other device",
    )?;
    Ok(())
}

fn ws_url(hs: &Server) -> String {
    format!(
        "{}/_parley/client/v1/ws",
        hs.url()
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_ws(hs: &Server, token: &str, since: Option<&str>) -> anyhow::Result<Socket> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(hs))
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket upgrade of /ws failed: {e}"))?;
    let mut auth = serde_json::json!({ "access_token": token });
    if let Some(since) = since {
        auth["since"] = Value::from(since);
    }
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .map_err(|e| anyhow::anyhow!("sending the auth frame: {e}"))?;
    Ok(ws)
}

/// The next text frame as JSON; `None` when the socket closed.
async fn next_frame(ws: &mut Socket, secs: u64) -> anyhow::Result<Option<Value>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no WebSocket frame within {secs} s"))?;
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("frame is not JSON ({e}): {}", t.as_str()))
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn websocket_authenticated_by_its_first_frame_pushes_events(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let (mut alice, mut bob, group) = conversation(&ctx, &hs).await?;
    alice.send_text(&group, "backlog").await?;
    let token = bob.client.access_token().unwrap_or_default().to_owned();
    let mut ws = open_ws(&hs, &token, bob.since.as_deref()).await?;
    let mut frames: Vec<Value> = Vec::new();
    let mut pushed = false;
    while frames.iter().filter(|f| f["type"] == "message").count() < 2
        || !frames.iter().any(|f| f["type"] == "key_packages")
    {
        let frame = next_frame(&mut ws, 8)
            .await?
            .ok_or_else(|| anyhow::anyhow!("socket closed; frames so far: {frames:?}"))?;
        anyhow::ensure!(
            frame.get("next_batch").is_some_and(Value::is_string),
            "frame without a next_batch: {frame}"
        );
        frames.push(frame);
        if !pushed && frames.iter().any(|f| f["type"] == "message") {
            alice.send_text(&group, "pushed").await?;
            pushed = true;
        }
    }
    let messages: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message").collect();
    for m in &messages {
        expect_eq(
            &m["group_id"].as_str(),
            &Some(group.as_str()),
            "frame group_id",
        )?;
        let event: parley_client_api::sync::MessageEvent = serde_json::from_value((*m).clone())
            .map_err(|e| anyhow::anyhow!("message frame lacks sync fields ({e}): {m}"))?;
        bob.process(&group, &event)?;
    }
    expect_eq(
        &bob.texts(&group),
        &vec!["backlog".to_owned(), "pushed".to_owned()],
        "texts from the socket",
    )?;
    let kp = frames
        .iter()
        .find(|f| f["type"] == "key_packages")
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(
        // Five uploaded, one claimed by alice's invite.
        kp["count"].as_u64() == Some(4) && kp["last_resort"].as_bool() == Some(true),
        "key_packages frame: {kp}"
    );
    // Resuming from the last frame's token repeats nothing.
    let last = messages
        .last()
        .and_then(|m| m["next_batch"].as_str())
        .unwrap_or_default()
        .to_owned();
    drop(ws);
    let resumed = expect_ok(
        bob.client.sync(Some(&last), 0).await,
        "sync after the socket",
    )?;
    anyhow::ensure!(
        resumed.groups.values().all(|g| g.messages.is_empty()),
        "resuming with the last frame's next_batch repeated events: {resumed:?}"
    );
    Ok(())
}

async fn websocket_of_a_revoked_session_is_closed(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    bob.sync_all().await?;
    let token = bob.client.access_token().unwrap_or_default().to_owned();
    let mut ws = open_ws(&hs, &token, bob.since.as_deref()).await?;
    // The socket is up: it announces the key count.
    let first = next_frame(&mut ws, 8)
        .await?
        .ok_or_else(|| anyhow::anyhow!("socket closed before the logout"))?;
    expect_eq(
        &first["type"].as_str(),
        &Some("key_packages"),
        "first frame type",
    )?;
    expect_ok(bob.client.logout().await, "logout")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match next_frame(&mut ws, 10).await {
            Ok(None) | Err(_) => break,
            Ok(Some(frame)) if frame["type"] == "error" => {}
            Ok(Some(frame)) => anyhow::bail!("the revoked session's socket pushed {frame}"),
        }
    }
    match next_frame(&mut ws, 1).await {
        Ok(None) => Ok(()),
        Ok(Some(f)) => anyhow::bail!("socket still open after logout: {f}"),
        Err(_) => anyhow::bail!("the revoked session's socket stayed open for 10 s"),
    }
}

async fn websocket_with_a_bad_token_is_closed_without_events(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut ws = open_ws(&hs, "garbage", None).await?;
    loop {
        match next_frame(&mut ws, 10).await {
            Ok(None) => return Ok(()),
            Ok(Some(frame)) if frame["type"] == "error" => {}
            Ok(Some(frame)) => anyhow::bail!("an unauthenticated socket got {frame}"),
            Err(_) => anyhow::bail!("a socket with a garbage token stayed open for 10 s"),
        }
    }
}

async fn deleted_welcome_is_not_sent_again(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    let b = bob.user_id.clone();
    let group = alice.create_group().await?;
    alice.add(&group, &[&b]).await?;
    let s1 = expect_ok(bob.client.sync(None, 0).await, "sync")?;
    let welcome = s1
        .welcomes
        .iter()
        .find(|w| w.group_id == group)
        .ok_or_else(|| anyhow::anyhow!("no Welcome for {group}: {s1:?}"))?;
    // Still there until acknowledged.
    let s2 = expect_ok(bob.client.sync(None, 0).await, "sync again")?;
    anyhow::ensure!(
        s2.welcomes.iter().any(|w| w.id == welcome.id),
        "the Welcome vanished before DELETE"
    );
    expect_ok(
        bob.client.delete_welcome(&welcome.id).await,
        "DELETE /welcomes/{id}",
    )?;
    let s3 = expect_ok(bob.client.sync(None, 0).await, "sync after DELETE")?;
    anyhow::ensure!(
        s3.welcomes.iter().all(|w| w.id != welcome.id),
        "a deleted Welcome was sent again: {s3:?}"
    );
    Ok(())
}

async fn restart_keeps_groups_messages_and_welcomes(mut ctx: Ctx) -> anyhow::Result<()> {
    let mut hs = ctx.server("hs1").restartable().start().await?;
    let (mut alice, mut bob, group) = conversation(&ctx, &hs).await?;
    let carol = Device::register(&hs, &ctx.user("carol")).await?;
    for i in 0..5 {
        alice.send_text(&group, &format!("before {i}")).await?;
    }
    alice.add(&group, &[&carol.user_id.clone()]).await?;
    hs.restart().await?;
    for i in 0..5 {
        alice.send_text(&group, &format!("after {i}")).await?;
    }
    bob.sync_all().await?;
    let expected: Vec<String> = (0..5)
        .map(|i| format!("before {i}"))
        .chain((0..5).map(|i| format!("after {i}")))
        .collect();
    expect_eq(
        &bob.texts(&group),
        &expected,
        "bob's texts across the restart",
    )?;
    let s = expect_ok(carol.client.sync(None, 0).await, "carol's sync")?;
    anyhow::ensure!(
        s.welcomes.iter().any(|w| w.group_id == group),
        "carol's Welcome was lost in the restart"
    );
    let listed = expect_ok(alice.client.groups().await, "GET /groups")?;
    let entry = listed.groups.iter().find(|g| g.group_id == group);
    expect_eq(
        &entry.map(|g| (g.epoch, g.members.len())),
        &Some((2, 3)),
        "(epoch, members) after the restart",
    )?;
    let r = alice.self_update(&group).await?;
    expect_eq(
        &(r.epoch, r.seq),
        &(3, 13),
        "(epoch, seq) of a commit after the restart",
    )?;
    Ok(())
}

async fn websocket_frame_larger_than_an_auth_frame_closes_the_socket(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    let token = bob.client.access_token().unwrap_or_default().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&hs))
        .await
        .map_err(|e| anyhow::anyhow!("WebSocket upgrade of /ws failed: {e}"))?;
    // A valid auth frame padded to 32 KiB: far more than any auth frame needs.
    let big = serde_json::json!({ "access_token": token, "padding": "x".repeat(32 * 1024) });
    let _ = ws.send(Message::Text(big.to_string().into())).await;
    let started = Instant::now();
    loop {
        match next_frame(&mut ws, 10).await {
            Ok(None) => break,
            Ok(Some(frame)) if frame["type"] == "error" => {}
            Ok(Some(frame)) => anyhow::bail!("an oversized first frame got {frame}"),
            Err(_) => anyhow::bail!("a socket that sent 32 KiB before auth stayed open for 10 s"),
        }
    }
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(5),
        "closing took {:?}",
        started.elapsed()
    );
    Ok(())
}
