//! Hostile peers and abusive clients: one scenario per attack, each measuring the bound the
//! server promises (copies stored, data-dir growth, resident-memory growth, requests reaching
//! a named origin, sockets closed and how fast). Self-started servers only: the measures read
//! the server's data dir and `/proc`, and the attacks need their own configuration.
//!
//! Each test prints its measure on stderr (`measured: …`), the figures the project reports.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_client_api::client::b64;
use parley_federation::keys::{KeyId, ServerSigningKey};
use parley_mls::{Engine, EngineConfig};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::check::{expect_ok, send, shorten};
use crate::device::{now_ms, Device};
use crate::fake_remote::{FakeRemote, FAKE_NAME};
use crate::fixture::{skip, Ctx, Server};
use crate::scenarios::federation::{put_txn, results, transaction};
use crate::scenarios::server_name_of;

crate::tests!("hostile":
    welcome_listing_hundreds_of_devices_is_stored_once_for_the_real_one,
    welcome_too_large_not_mls_or_listing_too_many_devices_is_refused,
    oversized_relayed_messages_are_refused_and_cost_no_disk,
    messages_for_groups_without_a_local_member_are_refused,
    unsigned_requests_naming_a_hundred_origins_cause_at_most_twenty_key_fetches,
    connections_that_never_finish_their_headers_are_closed,
    a_body_that_never_finishes_is_refused_with_408,
    data_dir_and_database_are_readable_by_the_server_user_only,
    key_packages_beyond_the_per_device_quota_are_refused_and_none_stored,
    ip_literal_and_loopback_servers_are_never_contacted,
    commits_adding_past_the_hubs_bounds_are_refused,
    proposals_past_the_per_epoch_cap_are_refused,
);

/// A fake remote and a server under test (with `config` merged in) that reaches it.
async fn hostile_fake(ctx: &mut Ctx, config: &str) -> anyhow::Result<(FakeRemote, Server, String)> {
    if !ctx.is_managed() {
        return Err(skip(
            "measures a self-started server's data dir and memory (not possible with --server)",
        ));
    }
    let fake = FakeRemote::start(ctx.http().clone()).await?;
    let hs = ctx
        .server("hs1")
        .config(&fake.federation_config(&[]))
        .config(config)
        .start()
        .await?;
    let name = server_name_of(&hs).await?;
    fake.target(&name, hs.url());
    Ok((fake, hs, name))
}

/// A self-started server with `config` merged in (the test is skipped with `--server`).
async fn configured_server(ctx: &mut Ctx, config: &str) -> anyhow::Result<Server> {
    if !ctx.is_managed() {
        return Err(skip(
            "needs its own configuration (not possible with --server)",
        ));
    }
    ctx.server("hs1").config(config).start().await
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The data dir's size now, when the server keeps its database there (SQLite).
fn disk(hs: &Server) -> Option<u64> {
    hs.database_in_data_dir()
        .then(|| hs.data_dir().map(dir_bytes))
        .flatten()
}

/// The server's resident set, in KiB.
fn rss_kib(hs: &Server) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", hs.pid()?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn growth(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// A real MLS Welcome adding `alice`'s device to `group_id`, made by a fake-server user's
/// engine from a package `claimer` claims for it.
async fn real_welcome(
    claimer: &mut Device,
    alice: &Device,
    group_id: &str,
) -> anyhow::Result<Vec<u8>> {
    let kps = claimer.claim(&[&alice.user_id]).await?;
    let mut hub_user = Engine::new(
        &format!("@hub:{FAKE_NAME}"),
        "HUBDEV",
        EngineConfig::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    hub_user
        .create_group(group_id)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bundle = hub_user
        .add_members(group_id, &kps, &claimer.keys)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bundle
        .welcome
        .ok_or_else(|| anyhow::anyhow!("adding a member made no Welcome"))
}

fn welcome_event(event_id: &str, group_id: &str, welcome: &[u8], recipients: Vec<Value>) -> Value {
    json!({
        "event_id": event_id, "type": "welcome", "group_id": group_id,
        "sender": {"user_id": format!("@hub:{FAKE_NAME}"), "device_id": "HUBDEV"},
        "welcome": b64(welcome), "recipients": recipients,
    })
}

fn message_event(event_id: &str, group_id: &str, seq: u64, kind: &str, bytes: &[u8]) -> Value {
    json!({
        "event_id": event_id, "type": "message", "group_id": group_id, "seq": seq,
        "sender": {"user_id": format!("@hub:{FAKE_NAME}"), "device_id": "HUBDEV"},
        "kind": kind, "epoch": 0, "message": b64(bytes), "ts": now_ms(),
    })
}

fn errcode_of<'a>(results: &'a serde_json::Map<String, Value>, id: &str) -> &'a str {
    results
        .get(id)
        .and_then(|r| r.get("errcode"))
        .and_then(Value::as_str)
        .unwrap_or("(accepted)")
}

async fn welcomes_of(device: &Device) -> anyhow::Result<usize> {
    let sync = expect_ok(device.client.sync(None, 0).await, "sync")?;
    Ok(sync.welcomes.len())
}

async fn welcome_listing_hundreds_of_devices_is_stored_once_for_the_real_one(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = hostile_fake(&mut ctx, "").await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let mut bob = Device::register(&hs, &ctx.user("bob")).await?;
    let group = format!("!hostilewelcome:{FAKE_NAME}");
    let welcome = real_welcome(&mut bob, &alice, &group).await?;
    // 300 devices that do not exist here, and the real one 60 times over.
    let mut recipients: Vec<Value> = (0..300)
        .map(|i| json!({"user_id": format!("@ghost{i}:{name}"), "device_id": "GHOST"}))
        .collect();
    recipients.extend((0..60).map(|_| json!(alice.me())));
    let disk_before = disk(&hs);
    let event = welcome_event("w1", &group, &welcome, recipients);
    let reply = put_txn(&fake, &hs, &name, "w-1", &transaction(vec![event.clone()])).await?;
    let r = results(&reply)?;
    anyhow::ensure!(
        errcode_of(&r, "w1") == "(accepted)",
        "the Welcome was refused: {}",
        reply.text
    );
    // The same event in another transaction (a retry under a new id) stores nothing more.
    put_txn(&fake, &hs, &name, "w-2", &transaction(vec![event])).await?;
    let disk_after = disk(&hs);
    let copies = welcomes_of(&alice).await?;
    eprintln!(
        "measured: welcome of {} bytes listing 360 devices, sent twice: {copies} copy for the real device, data dir +{:?} bytes",
        welcome.len(),
        growth(disk_before, disk_after)
    );
    anyhow::ensure!(copies == 1, "the real device holds {copies} copies");
    if let Some(g) = growth(disk_before, disk_after) {
        anyhow::ensure!(
            g <= 256 * 1024,
            "the data dir grew by {g} bytes for one Welcome of {} bytes",
            welcome.len()
        );
    }
    Ok(())
}

async fn welcome_too_large_not_mls_or_listing_too_many_devices_is_refused(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = hostile_fake(&mut ctx, "").await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let group = format!("!hostilewelcome2:{FAKE_NAME}");
    let big = vec![0x55u8; 1536 * 1024];
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": alice.user_id, "device_id": format!("D{i}")}))
        .collect();
    let events = vec![
        welcome_event("big", &group, &big, vec![json!(alice.me())]),
        welcome_event(
            "junk",
            &group,
            b"not an MLS welcome",
            vec![json!(alice.me())],
        ),
        welcome_event("many", &group, b"x", many),
    ];
    let disk_before = disk(&hs);
    let reply = put_txn(&fake, &hs, &name, "bad-w", &transaction(events)).await?;
    let r = results(&reply)?;
    let codes = [
        errcode_of(&r, "big"),
        errcode_of(&r, "junk"),
        errcode_of(&r, "many"),
    ];
    eprintln!(
        "measured: 1.5 MiB / non-MLS / 1001-recipient welcomes answered {codes:?}; data dir +{:?} bytes",
        growth(disk_before, disk(&hs))
    );
    anyhow::ensure!(
        codes == ["P_TOO_LARGE", "P_INVALID_MESSAGE", "P_TOO_LARGE"],
        "expected P_TOO_LARGE, P_INVALID_MESSAGE, P_TOO_LARGE; got {codes:?}"
    );
    anyhow::ensure!(
        welcomes_of(&alice).await? == 0,
        "a refused Welcome was delivered"
    );
    Ok(())
}

async fn oversized_relayed_messages_are_refused_and_cost_no_disk(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = hostile_fake(&mut ctx, "").await?;
    let disk_before = disk(&hs);
    let big = vec![0xA5u8; 1536 * 1024];
    let mut codes = Vec::new();
    // The first few only warm the allocator up (its arenas and caches take memory once per
    // thread); the bound is on what more of them cost: nothing that accumulates.
    let mut rss_before = None;
    for i in 0..16 {
        if i == 4 {
            rss_before = rss_kib(&hs);
        }
        let group = format!("!oversized{i}:{FAKE_NAME}");
        let event = message_event("m", &group, 1, "application", &big);
        let reply = put_txn(
            &fake,
            &hs,
            &name,
            &format!("big-{i}"),
            &transaction(vec![event]),
        )
        .await?;
        codes.push(errcode_of(&results(&reply)?, "m").to_owned());
    }
    let (disk_grew, rss_grew) = (
        growth(disk_before, disk(&hs)),
        growth(rss_before, rss_kib(&hs)),
    );
    eprintln!(
        "measured: 16 relayed application messages of 1.5 MiB: {:?}; data dir +{disk_grew:?} bytes, RSS over the last 12 +{rss_grew:?} KiB",
        codes.first()
    );
    anyhow::ensure!(
        codes.iter().all(|c| c == "P_TOO_LARGE"),
        "expected every one refused with P_TOO_LARGE: {codes:?}"
    );
    if let Some(g) = disk_grew {
        anyhow::ensure!(g < 1024 * 1024, "the data dir grew by {g} bytes");
    }
    // Keeping even the 12 refused messages would take 18 MiB.
    if let Some(g) = rss_grew {
        anyhow::ensure!(
            g < 12 * 1024,
            "the server's RSS grew by {g} KiB over 12 refused messages"
        );
    }
    Ok(())
}

async fn messages_for_groups_without_a_local_member_are_refused(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = hostile_fake(&mut ctx, "").await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let disk_before = disk(&hs);
    let body = vec![7u8; 60 * 1024];
    let mut events = Vec::new();
    for i in 0..20 {
        let group = format!("!nomember{i}:{FAKE_NAME}");
        events.push(message_event(
            &format!("a{i}"),
            &group,
            1,
            "application",
            &body,
        ));
        // A commit that claims to add a device that does not exist here adds nobody.
        let mut commit = message_event(&format!("c{i}"), &group, 1, "commit", &body);
        commit["adds"] = json!([{"user_id": format!("@ghost:{name}"), "device_id": "GHOST"}]);
        commit["removes"] = json!([]);
        events.push(commit);
    }
    let reply = put_txn(&fake, &hs, &name, "nm-1", &transaction(events)).await?;
    let r = results(&reply)?;
    let not_member = r
        .values()
        .filter(|v| v.get("errcode").and_then(Value::as_str) == Some("P_NOT_MEMBER"))
        .count();
    let disk_grew = growth(disk_before, disk(&hs));
    eprintln!(
        "measured: 40 messages of 60 KiB for groups without a member here: {not_member} refused P_NOT_MEMBER; data dir +{disk_grew:?} bytes"
    );
    anyhow::ensure!(
        not_member == 40 && r.len() == 40,
        "expected 40 refusals with P_NOT_MEMBER: {}",
        shorten(&reply.text)
    );
    let sync = expect_ok(alice.client.sync(None, 0).await, "sync")?;
    anyhow::ensure!(sync.groups.is_empty(), "a refused group reached a device");
    if let Some(g) = disk_grew {
        anyhow::ensure!(g < 512 * 1024, "the data dir grew by {g} bytes");
    }
    Ok(())
}

/// A listener standing in for 100 origins; counts key-document requests.
async fn counting_origin() -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::NOT_FOUND
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, hits))
}

async fn unsigned_requests_naming_a_hundred_origins_cause_at_most_twenty_key_fetches(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    if !ctx.is_managed() {
        return Err(skip(
            "needs its own federation configuration (not possible with --server)",
        ));
    }
    let (port, hits) = counting_origin().await?;
    let origins: Vec<String> = (0..100).map(|i| format!("origin{i}.test")).collect();
    let peers: Vec<(&str, u16)> = origins.iter().map(|o| (o.as_str(), port)).collect();
    let hs = ctx
        .server("hs1")
        .config(&crate::fake_remote::federation_config(&peers))
        .start()
        .await?;
    let name = server_name_of(&hs).await?;
    // Signed, but by keys no origin publishes.
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (i, origin) in origins.iter().enumerate() {
        let key = ServerSigningKey::generate(KeyId::generate());
        let body = json!({"origin": origin, "origin_ts": now_ms(), "events": []});
        let uri = format!("/_parley/federation/v1/send/t{i}");
        let header =
            parley_federation::auth::sign_request(&key, origin, &name, "PUT", &uri, Some(&body))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let reply = send(
            hs.request(Method::PUT, &uri)
                .header("authorization", header)
                .json(&body),
        )
        .await?;
        *statuses.entry(reply.status).or_default() += 1;
    }
    let sent_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fetches = hits.load(Ordering::SeqCst);
    eprintln!(
        "measured: 100 requests naming 100 origins from one address in {sent_in:?}: {fetches} key fetches; answers {statuses:?}"
    );
    anyhow::ensure!(
        statuses.keys().all(|s| *s == 401 || *s == 429),
        "every request should be refused (401 or 429): {statuses:?}"
    );
    anyhow::ensure!(fetches <= 20, "{fetches} key fetches reached the origins");
    Ok(())
}

async fn connections_that_never_finish_their_headers_are_closed(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = configured_server(&mut ctx, "[limits]\nheader_read_timeout_ms = 2000\n").await?;
    let addr = hs
        .url()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.write_all(b"GET /_parley/client/versions HTTP/1.1\r\nHost: slow\r\n")
                .await?;
            let mut buf = [0u8; 1024];
            // Closed (EOF or reset) within the deadline, or still open.
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .is_ok();
            Ok::<_, std::io::Error>((closed, started.elapsed()))
        }));
    }
    let mut closed = 0;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (was_closed, at) = t.await??;
        if was_closed {
            closed += 1;
            slowest = slowest.max(at);
        }
    }
    eprintln!(
        "measured: 40 connections without complete headers, timeout 2 s: {closed} closed, the last after {slowest:?}"
    );
    anyhow::ensure!(
        closed == 40,
        "only {closed} of 40 connections were closed within 20 s"
    );
    anyhow::ensure!(
        slowest < Duration::from_secs(10),
        "closing took {slowest:?} with a 2 s header timeout"
    );
    // The server still serves.
    let reply = send(hs.request(Method::GET, "/_parley/client/versions")).await?;
    reply.expect_ok()?;
    Ok(())
}

async fn a_body_that_never_finishes_is_refused_with_408(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = configured_server(&mut ctx, "[limits]\nbody_read_timeout_ms = 1000\n").await?;
    let addr = hs.url().trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    s.write_all(
        b"POST /_parley/client/v1/login HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"username\":",
    )
    .await?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(9).any(|w| w == b"P_TIMEOUT") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    eprintln!(
        "measured: a body stalled after 12 of 200 bytes was answered after {:?}: {}",
        started.elapsed(),
        text.lines().next().unwrap_or("(nothing)")
    );
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 408") && text.contains("P_TIMEOUT"),
        "expected 408 P_TIMEOUT, got {}",
        shorten(&text)
    );
    Ok(())
}

async fn data_dir_and_database_are_readable_by_the_server_user_only(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !ctx.is_managed() {
        return Err(skip(
            "reads the server's data dir (not possible with --server)",
        ));
    }
    let hs = ctx.server("hs1").start().await?;
    // Some writes, so the database and its WAL exist.
    Device::register(&hs, &ctx.user("alice")).await?;
    let dir = hs
        .data_dir()
        .ok_or_else(|| anyhow::anyhow!("no data dir"))?;
    let mode = |p: &Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    let dir_mode = mode(dir)?;
    let mut open = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let m = mode(&entry.path())?;
        if m & 0o077 != 0 {
            open.push(format!("{} {m:o}", entry.file_name().to_string_lossy()));
        }
    }
    eprintln!("measured: data dir {dir_mode:o}; files readable by others: {open:?}");
    anyhow::ensure!(dir_mode == 0o700, "the data dir is {dir_mode:o}");
    anyhow::ensure!(open.is_empty(), "files open to others: {open:?}");
    Ok(())
}

async fn key_packages_beyond_the_per_device_quota_are_refused_and_none_stored(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = configured_server(&mut ctx, "[limits]\nmax_key_packages_per_device = 20\n").await?;
    let mut alice = Device::register_with(&hs, &ctx.user("alice"), 15, true).await?;
    let more = alice
        .engine
        .generate_key_packages(10)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::check::expect_error(
        alice.client.upload_keys(&more, None).await,
        413,
        "P_TOO_LARGE",
    )?;
    let count = expect_ok(alice.client.key_count().await, "GET /keys/count")?;
    eprintln!(
        "measured: 15 held + an upload of 10 with a quota of 20: refused, {} held",
        count.count
    );
    anyhow::ensure!(
        count.count == 15,
        "the device holds {} packages",
        count.count
    );
    let five = alice
        .engine
        .generate_key_packages(5)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = expect_ok(
        alice.client.upload_keys(&five, None).await,
        "upload up to the quota",
    )?;
    anyhow::ensure!(
        count.count == 20,
        "after filling the quota: {}",
        count.count
    );
    Ok(())
}

async fn ip_literal_and_loopback_servers_are_never_contacted(mut ctx: Ctx) -> anyhow::Result<()> {
    if !ctx.is_managed() {
        return Err(skip(
            "counts requests reaching a local listener (not possible with --server)",
        ));
    }
    let (port, hits) = counting_origin().await?;
    // Federation on, plain HTTP allowed as in the other tests, but no `resolve` entries.
    let hs = ctx
        .server("hs1")
        .config("[federation]\nallow_insecure_http = true\n")
        .start()
        .await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let servers = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    let users: Vec<String> = servers.iter().map(|s| format!("@x:{s}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let claimed = expect_ok(alice.client.claim_keys(&refs).await, "claim keys")?;
    let failures: Vec<(String, String)> = claimed
        .failures
        .iter()
        .map(|(k, v)| (k.clone(), v.errcode.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = hits.load(Ordering::SeqCst);
    eprintln!(
        "measured: key claims for users on {servers:?}: failures {failures:?}; requests reaching the listener: {reached}"
    );
    anyhow::ensure!(
        reached == 0,
        "{reached} requests reached a loopback listener"
    );
    anyhow::ensure!(
        failures.len() == 3,
        "expected a failure per server, got {failures:?}"
    );
    Ok(())
}

/// Submits a commit adding `kps` and expects the refusal `status`/`errcode`.
async fn add_refused(
    alice: &mut Device,
    group: &str,
    kps: &[Vec<u8>],
    status: u16,
    errcode: &str,
) -> anyhow::Result<()> {
    let bundle = alice.add_bundle(group, kps)?;
    let request = crate::device::bundle_request(&bundle);
    let result = alice.client.commit(group, &request).await;
    let _ = alice.engine.discard_pending_commit(group);
    crate::check::expect_error(result, status, errcode).map(drop)
}

async fn commits_adding_past_the_hubs_bounds_are_refused(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, _name) = hostile_fake(
        &mut ctx,
        "[limits]\nmax_adds_per_commit = 1\nmax_servers_per_group = 0\n[federation]\ndeny = [\"denied.test\"]\n",
    )
    .await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    let carol = Device::register(&hs, &ctx.user("carol")).await?;
    let group = alice.create_group().await?;
    // A device of a server the ACL denies, its package made here (no claim can reach it).
    let denied_user = format!("@{}:denied.test", ctx.user("dx"));
    let mut denied = Engine::new(&denied_user, "DENIEDDEV", EngineConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let kp = denied
        .generate_key_packages(1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    alice.keys.insert(
        parley_mls::DeviceRef::new(&denied_user, "DENIEDDEV")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        denied.signature_public_key(),
    );
    add_refused(&mut alice, &group, &kp, 403, "P_FORBIDDEN")
        .await
        .map_err(|e| anyhow::anyhow!("adding a device of a denied server: {e}"))?;
    // A device of an allowed server, past max_servers_per_group = 0.
    let (fx_user, _fx) = crate::scenarios::federation::fake_user(&ctx, &fake, 1)?;
    let kps = alice.claim(&[&fx_user]).await?;
    add_refused(&mut alice, &group, &kps, 413, "P_TOO_LARGE")
        .await
        .map_err(|e| anyhow::anyhow!("adding a server past the group's bound: {e}"))?;
    // Two local devices, past max_adds_per_commit = 1.
    let kps = alice.claim(&[&bob.user_id, &carol.user_id]).await?;
    add_refused(&mut alice, &group, &kps, 413, "P_TOO_LARGE")
        .await
        .map_err(|e| anyhow::anyhow!("adding two devices past max_adds_per_commit = 1: {e}"))?;
    // One local device is within every bound.
    let kps = alice.claim(&[&bob.user_id]).await?;
    let bundle = alice.add_bundle(&group, &kps)?;
    alice.submit(&group, bundle).await?;
    let sent = fake
        .requests()
        .iter()
        .filter(|r| r.is_transaction())
        .count();
    eprintln!("measured: refused adds (denied server, server bound, adds bound); transactions sent to the remote: {sent}");
    anyhow::ensure!(sent == 0, "{sent} transactions went to the remote server");
    Ok(())
}

async fn proposals_past_the_per_epoch_cap_are_refused(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = configured_server(&mut ctx, "[limits]\nmax_proposals_per_epoch = 3\n").await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let group = alice.create_group().await?;
    for i in 0..3 {
        let proposal = alice
            .engine
            .propose_update(&group)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        expect_ok(
            alice.client.send(&group, &format!("p{i}"), &proposal).await,
            &format!("proposal {i} within the cap"),
        )?;
    }
    let proposal = alice
        .engine
        .propose_update(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::check::expect_error(
        alice.client.send(&group, "p3", &proposal).await,
        413,
        "P_TOO_LARGE",
    )?;
    Ok(())
}
