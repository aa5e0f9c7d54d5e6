//! Federation (docs/protocol.md#server-server-api), mostly against the suite's fake remote
//! server (`fake_remote.rs`, named `fake.test`): the key document, request authentication,
//! inbound transactions, remote key claims, what the server sends out (signed, well formed,
//! retried, never resent), follower submissions; and two real servers in conversation.

use std::time::Duration;

use parley_client_api::client::{b64, unb64};
use parley_federation::keys::{verify_key_document, KeyId, ServerSigningKey};
use parley_mls::{Engine, EngineConfig};
use reqwest::Method;
use serde_json::{json, Value};

use crate::check::{expect_eq, expect_ok, send, shorten, Reply};
use crate::device::{envelope_of, now_ms, Device};
use crate::fake_remote::{FakeDevice, FakeRemote, Recorded, FAKE_NAME};
use crate::fixture::{free_port, skip, Ctx, Server};
use crate::scenarios::{device_keys_of, server_name_of};

crate::tests!("federation":
    key_document_is_self_signed_for_its_own_name,
    request_without_authorization_is_401,
    malformed_authorization_is_401,
    request_for_another_destination_is_401,
    unknown_key_id_is_401,
    bad_signature_is_401,
    body_changed_after_signing_is_401,
    body_origin_other_than_the_signer_is_403,
    server_names_in_the_signature_header_compare_without_regard_to_case,
    replayed_transaction_gets_the_first_answer,
    transaction_over_100_events_is_400,
    bad_event_is_refused_alone,
    message_for_a_group_whose_hub_is_not_the_origin_is_refused,
    remote_key_claim_is_answered_by_the_remote_server,
    remote_key_claim_while_the_remote_is_down_is_unreachable,
    remote_member_gets_welcome_and_commit_in_signed_transactions,
    failed_transaction_is_retried_and_delivered_events_are_not_resent,
    a_transaction_too_large_for_the_receiver_is_split_and_an_event_refused_alone_is_dropped,
    follower_submission_for_a_user_of_another_domain_is_403,
    catch_up_serves_a_member_server_in_seq_order_and_refuses_others,
    two_servers_hold_a_cross_server_conversation,
    a_backlog_of_large_messages_reaches_a_restarted_server_once_and_in_order,
);

const CLAIM: &str = "/_parley/federation/v1/keys/claim";

/// A fake remote and a server under test configured to reach it.
async fn with_fake(ctx: &mut Ctx) -> anyhow::Result<(FakeRemote, Server, String)> {
    if !ctx.is_managed() {
        return Err(skip(
            "needs a server configured to reach the suite's fake remote server (not possible with --server)",
        ));
    }
    let fake = FakeRemote::start(ctx.http().clone()).await?;
    let hs = ctx
        .server("hs1")
        .config(&fake.federation_config(&[]))
        .start()
        .await?;
    let name = server_name_of(&hs).await?;
    fake.target(&name, hs.url());
    Ok((fake, hs, name))
}

fn claim_body() -> Value {
    json!({"user_ids": ["@nobody:fake.test"]})
}

/// The `X-Parley` header with which `key` signs, as the fake remote's name, a claim of
/// `body` for `destination`.
fn sign_claim_as_fake(
    key: &ServerSigningKey,
    destination: &str,
    body: &Value,
) -> anyhow::Result<String> {
    parley_federation::auth::sign_request(key, FAKE_NAME, destination, "POST", CLAIM, Some(body))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// POSTs the key claim `body` to `hs` with the header `authorization`.
async fn post_claim(hs: &Server, authorization: &str, body: &Value) -> anyhow::Result<Reply> {
    send(
        hs.request(Method::POST, CLAIM)
            .header("authorization", authorization)
            .json(body),
    )
    .await
}

fn unauthorized(reply: &Reply, what: &str) -> anyhow::Result<()> {
    reply
        .expect_error(401, "P_UNAUTHORIZED")
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

async fn key_document_is_self_signed_for_its_own_name(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let name = server_name_of(&hs).await?;
    let reply = send(hs.request(Method::GET, "/_parley/key/v1/server")).await?;
    reply.expect_ok()?;
    let verified = verify_key_document(reply.text.as_bytes(), &name, now_ms()).map_err(|e| {
        anyhow::anyhow!(
            "key document does not verify for {name}: {e}: {}",
            shorten(&reply.text)
        )
    })?;
    anyhow::ensure!(!verified.verify_keys.is_empty(), "no verify_keys");
    anyhow::ensure!(
        verified.valid_until_ts > now_ms(),
        "valid_until_ts is in the past"
    );
    anyhow::ensure!(
        verify_key_document(reply.text.as_bytes(), "someone-else.test", now_ms()).is_err(),
        "the document verifies for another server name"
    );
    // Tampering breaks the self-signature.
    let mut doc = reply.json.clone();
    doc["valid_until_ts"] = json!(verified.valid_until_ts + 1);
    anyhow::ensure!(
        verify_key_document(doc.to_string().as_bytes(), &name, now_ms()).is_err(),
        "a modified document still verifies"
    );
    Ok(())
}

async fn request_without_authorization_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let reply = send(hs.request(Method::POST, CLAIM).json(&claim_body())).await?;
    unauthorized(&reply, "POST keys/claim")?;
    let reply = send(
        hs.request(Method::PUT, "/_parley/federation/v1/send/t1")
            .json(&json!({"origin": FAKE_NAME, "origin_ts": now_ms(), "events": []})),
    )
    .await?;
    unauthorized(&reply, "PUT send")
}

async fn malformed_authorization_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    for header in [
        "X-Parley nonsense",
        "X-Parley origin=\"fake.test\"",
        "Bearer abc",
        "X-Parley origin=\"fake.test\",destination=\"x\",key=\"ed25519:a\",sig=\"!!!\"",
    ] {
        let reply = post_claim(&hs, header, &claim_body()).await?;
        unauthorized(&reply, header)?;
    }
    Ok(())
}

async fn request_for_another_destination_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let key = ServerSigningKey::generate(KeyId::generate());
    let body = claim_body();
    let header = sign_claim_as_fake(&key, "elsewhere.test", &body)?;
    let reply = post_claim(&hs, &header, &body).await?;
    unauthorized(&reply, "destination elsewhere.test")
}

async fn unknown_key_id_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    // The fake's own key works …
    let body = claim_body();
    let reply = fake
        .send_signed(hs.url(), &name, Method::POST, CLAIM, Some(&body))
        .await?;
    reply
        .expect_ok()
        .map_err(|e| anyhow::anyhow!("a correctly signed claim: {e}"))?;
    // … a key id its document does not list does not.
    let stranger = ServerSigningKey::generate(
        KeyId::new("ed25519:notpublished").map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let header = sign_claim_as_fake(&stranger, &name, &body)?;
    let reply = post_claim(&hs, &header, &body).await?;
    unauthorized(&reply, "unknown key id")
}

async fn bad_signature_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let body = claim_body();
    // Same key id as the fake's published key, another secret.
    let impostor = ServerSigningKey::generate(fake.key().key_id().clone());
    let header = sign_claim_as_fake(&impostor, &name, &body)?;
    let reply = post_claim(&hs, &header, &body).await?;
    unauthorized(&reply, "signature by another secret")?;
    // A signature over another method/uri.
    let header = fake.sign(
        &name,
        "POST",
        "/_parley/federation/v1/keys/claim?x=1",
        Some(&body),
    )?;
    let reply = post_claim(&hs, &header, &body).await?;
    unauthorized(&reply, "signature over another uri")
}

async fn body_changed_after_signing_is_401(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let signed = claim_body();
    let header = fake.sign(&name, "POST", CLAIM, Some(&signed))?;
    let tampered = json!({"user_ids": ["@someone-else:fake.test"]});
    let reply = post_claim(&hs, &header, &tampered).await?;
    unauthorized(&reply, "tampered body")?;
    // Dropping the body is tampering too.
    let reply = send(
        hs.request(Method::POST, CLAIM)
            .header("authorization", header),
    )
    .await?;
    anyhow::ensure!(
        reply.status == 401 || reply.status == 400,
        "a signed body removed: expected 401 (or 400 for the missing body), got {} {}",
        reply.status,
        shorten(&reply.text)
    );
    Ok(())
}

async fn body_origin_other_than_the_signer_is_403(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let body = json!({"origin": "evil.test", "origin_ts": now_ms(), "events": []});
    let reply = fake
        .send_signed(
            hs.url(),
            &name,
            Method::PUT,
            "/_parley/federation/v1/send/o1",
            Some(&body),
        )
        .await?;
    reply.expect_error(403, "P_FORBIDDEN")?;
    Ok(())
}

pub(crate) fn transaction(events: Vec<Value>) -> Value {
    json!({"origin": FAKE_NAME, "origin_ts": now_ms(), "events": events})
}

fn device_list(event_id: &str) -> Value {
    json!({"event_id": event_id, "type": "device_list_update", "user_id": "@x:fake.test", "devices": []})
}

pub(crate) async fn put_txn(
    fake: &FakeRemote,
    hs: &Server,
    name: &str,
    txn: &str,
    body: &Value,
) -> anyhow::Result<Reply> {
    fake.send_signed(
        hs.url(),
        name,
        Method::PUT,
        &format!("/_parley/federation/v1/send/{txn}"),
        Some(body),
    )
    .await
}

pub(crate) fn results(reply: &Reply) -> anyhow::Result<serde_json::Map<String, Value>> {
    reply.expect_ok()?;
    reply
        .json
        .get("results")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("answer has no results object: {}", shorten(&reply.text)))
}

pub(crate) fn refused(results: &serde_json::Map<String, Value>, id: &str) -> bool {
    results
        .get(id)
        .and_then(|r| r.get("errcode"))
        .and_then(Value::as_str)
        .is_some_and(|c| c.starts_with("P_"))
}

pub(crate) fn accepted(results: &serde_json::Map<String, Value>, id: &str) -> bool {
    results
        .get(id)
        .and_then(Value::as_object)
        .is_some_and(|o| o.is_empty())
}

async fn replayed_transaction_gets_the_first_answer(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let first = transaction(vec![
        device_list("d1"),
        json!({"event_id": "b1", "type": "nonsense"}),
    ]);
    let a = put_txn(&fake, &hs, &name, "replay-1", &first).await?;
    let r1 = results(&a)?;
    anyhow::ensure!(
        accepted(&r1, "d1") && refused(&r1, "b1"),
        "first answer: {}",
        a.text
    );
    let b = put_txn(
        &fake,
        &hs,
        &name,
        "replay-1",
        &transaction(vec![device_list("other")]),
    )
    .await?;
    expect_eq(&b.json, &a.json, "answer to the replayed txn_id")?;
    // Another txn_id is a new transaction.
    let c = put_txn(
        &fake,
        &hs,
        &name,
        "replay-2",
        &transaction(vec![device_list("other")]),
    )
    .await?;
    let r3 = results(&c)?;
    anyhow::ensure!(
        accepted(&r3, "other") && r3.len() == 1,
        "a new txn_id: {}",
        c.text
    );
    Ok(())
}

async fn transaction_over_100_events_is_400(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let events: Vec<Value> = (0..101).map(|i| device_list(&format!("e{i}"))).collect();
    let reply = put_txn(&fake, &hs, &name, "big-1", &transaction(events)).await?;
    anyhow::ensure!(
        reply.status == 400 && reply.json.get("errcode").is_some_and(Value::is_string),
        "101 events: expected 400 with an errcode, got {} {}",
        reply.status,
        shorten(&reply.text)
    );
    let events: Vec<Value> = (0..100).map(|i| device_list(&format!("e{i}"))).collect();
    let reply = put_txn(&fake, &hs, &name, "big-2", &transaction(events)).await?;
    expect_eq(&results(&reply)?.len(), &100, "results of 100 events")?;
    Ok(())
}

async fn bad_event_is_refused_alone(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let events = vec![
        device_list("good-1"),
        json!({"event_id": "bad-1", "type": "device_list_update"}),
        json!({"event_id": "bad-2", "type": "no_such_type"}),
        device_list("good-2"),
    ];
    let reply = put_txn(&fake, &hs, &name, "mixed-1", &transaction(events)).await?;
    let r = results(&reply)?;
    anyhow::ensure!(
        accepted(&r, "good-1")
            && accepted(&r, "good-2")
            && refused(&r, "bad-1")
            && refused(&r, "bad-2"),
        "expected good-* accepted ({{}}) and bad-* refused ({{errcode, error}}): {}",
        reply.text
    );
    Ok(())
}

async fn message_for_a_group_whose_hub_is_not_the_origin_is_refused(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let group = alice.create_group().await?;
    let (_, message) = alice.encrypt(&group, "forged")?;
    let event = json!({
        "event_id": "m1", "type": "message", "group_id": group, "seq": 1,
        "sender": {"user_id": "@x:fake.test", "device_id": "FAKEDEV"},
        "kind": "application", "epoch": 0, "message": b64(&message), "ts": now_ms(),
    });
    let welcome = json!({
        "event_id": "w1", "type": "welcome", "group_id": group,
        "sender": {"user_id": "@x:fake.test", "device_id": "FAKEDEV"},
        "welcome": b64(b"not really"), "recipients": [alice.me()],
    });
    let reply = put_txn(
        &fake,
        &hs,
        &name,
        "hub-1",
        &transaction(vec![event, welcome]),
    )
    .await?;
    let r = results(&reply)?;
    anyhow::ensure!(
        refused(&r, "m1") && refused(&r, "w1"),
        "events for a group of {name} relayed by {FAKE_NAME} were not refused: {}",
        reply.text
    );
    let sync = expect_ok(alice.client.sync(None, 0).await, "sync")?;
    anyhow::ensure!(
        sync.welcomes.is_empty() && sync.groups.values().all(|g| g.messages.is_empty()),
        "a refused event was delivered: {sync:?}"
    );
    Ok(())
}

/// A user on the fake with one device (engine kept by the test) and `packages` packages.
pub(crate) fn fake_user(
    ctx: &Ctx,
    fake: &FakeRemote,
    packages: usize,
) -> anyhow::Result<(String, Engine)> {
    let user = format!("@{}:{FAKE_NAME}", ctx.user("fx"));
    let mut engine = Engine::new(&user, "FAKEDEV", EngineConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let kps = engine
        .generate_key_packages(packages)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    fake.add_device(
        &user,
        "FAKEDEV",
        FakeDevice {
            signature_key: engine.signature_public_key(),
            key_packages: kps.into(),
        },
    );
    Ok((user, engine))
}

fn signed_by(r: &Recorded, name: &str) -> anyhow::Result<()> {
    match &r.auth {
        Some(Ok(origin)) if origin == name => Ok(()),
        other => anyhow::bail!(
            "{} {}: X-Parley signature not valid for {name}: {other:?}",
            r.method,
            r.uri
        ),
    }
}

async fn remote_key_claim_is_answered_by_the_remote_server(mut ctx: Ctx) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let (user, engine) = fake_user(&ctx, &fake, 2)?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let nobody = format!("@{}:{FAKE_NAME}", ctx.user("nobody"));
    let claimed = expect_ok(alice.client.claim_keys(&[&user, &nobody]).await, "claim")?;
    let kp = claimed
        .key_packages
        .get(&user)
        .and_then(|d| d.get("FAKEDEV"))
        .ok_or_else(|| anyhow::anyhow!("no package of {user}/FAKEDEV: {claimed:?}"))?;
    anyhow::ensure!(unb64(kp).is_some(), "package is not base64");
    expect_eq(
        &claimed.failures.get(&nobody).map(|f| f.errcode.as_str()),
        &Some("P_NOT_FOUND"),
        "failure of a user the remote does not know",
    )?;
    let requests = fake.requests();
    let claim = requests
        .iter()
        .find(|r| r.method == "POST" && r.uri == CLAIM)
        .ok_or_else(|| anyhow::anyhow!("the fake received no keys/claim"))?;
    signed_by(claim, &name)?;
    // Device lists go through the remote too.
    let keys = device_keys_of(&alice.client, &user, "remote user devices").await?;
    expect_eq(
        &keys,
        &vec![("FAKEDEV".to_owned(), b64(&engine.signature_public_key()))],
        "remote device keys",
    )?;
    Ok(())
}

async fn remote_key_claim_while_the_remote_is_down_is_unreachable(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (mut fake, hs, _name) = with_fake(&mut ctx).await?;
    let (user, _engine) = fake_user(&ctx, &fake, 2)?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    fake.stop().await;
    let claimed = expect_ok(alice.client.claim_keys(&[&user]).await, "claim")?;
    expect_eq(
        &claimed.failures.get(FAKE_NAME).map(|f| f.errcode.as_str()),
        &Some("P_UNREACHABLE_SERVER"),
        "failure keyed by the server name",
    )?;
    anyhow::ensure!(
        claimed.key_packages.get(&user).is_none_or(|d| d.is_empty()),
        "packages from a server that is down: {claimed:?}"
    );
    Ok(())
}

/// The events of every 200-answered transaction, in order.
fn delivered_events(requests: &[Recorded]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.is_transaction() && r.status == 200)
        .flat_map(Recorded::events)
        .collect()
}

/// Checks a transaction the server under test sent: signed, origin, origin_ts, ≤ 100 events.
fn well_formed(r: &Recorded, name: &str) -> anyhow::Result<()> {
    signed_by(r, name)?;
    let body = r
        .body
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("transaction without a body"))?;
    expect_eq(
        &body.get("origin").and_then(Value::as_str),
        &Some(name),
        "transaction origin",
    )?;
    anyhow::ensure!(
        body.get("origin_ts").and_then(Value::as_u64).is_some(),
        "no integer origin_ts: {body}"
    );
    let events = r.events();
    anyhow::ensure!(
        !events.is_empty() && events.len() <= 100,
        "{} events",
        events.len()
    );
    for e in &events {
        anyhow::ensure!(
            e.get("event_id").is_some_and(Value::is_string),
            "event without event_id: {e}"
        );
    }
    Ok(())
}

/// Alice at the server under test with a group holding the fake's user; the fake's engine
/// joined from the Welcome it received.
struct RemoteGroup {
    alice: Device,
    fx_engine: Engine,
    fx_user: String,
    group: String,
}

async fn group_with_remote_member(
    ctx: &Ctx,
    fake: &FakeRemote,
    hs: &Server,
    name: &str,
) -> anyhow::Result<RemoteGroup> {
    let (fx_user, mut fx_engine) = fake_user(ctx, fake, 2)?;
    let mut alice = Device::register(hs, &ctx.user("alice")).await?;
    let group = alice.create_group().await?;
    alice.add(&group, &[&fx_user]).await?;
    let requests = fake
        .wait_for(15, "a welcome event", |rs| {
            delivered_events(rs).iter().any(|e| e["type"] == "welcome")
        })
        .await?;
    let welcome = delivered_events(&requests)
        .into_iter()
        .find(|e| e["type"] == "welcome")
        .unwrap_or_default();
    let txn = requests
        .iter()
        .find(|r| {
            r.is_transaction()
                && r.status == 200
                && r.events().iter().any(|e| e["type"] == "welcome")
        })
        .ok_or_else(|| anyhow::anyhow!("no transaction with the welcome"))?;
    well_formed(txn, name)?;
    expect_eq(
        &welcome["group_id"].as_str(),
        &Some(group.as_str()),
        "welcome group_id",
    )?;
    expect_eq(
        &welcome["sender"],
        &json!({"user_id": alice.user_id, "device_id": alice.device_id}),
        "welcome sender",
    )?;
    expect_eq(
        &welcome["recipients"],
        &json!([{"user_id": fx_user, "device_id": "FAKEDEV"}]),
        "welcome recipients",
    )?;
    let bytes = welcome["welcome"]
        .as_str()
        .and_then(unb64)
        .ok_or_else(|| anyhow::anyhow!("welcome is not padded base64: {welcome}"))?;
    let mut keys = parley_mls::StaticDeviceKeys::new();
    keys.insert(
        parley_mls::DeviceRef::new(&alice.user_id, &alice.device_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        alice.engine.signature_public_key(),
    );
    fx_engine.join_from_welcome(&bytes, &keys).map_err(|e| {
        anyhow::anyhow!("the fake's user cannot join from the relayed Welcome: {e}")
    })?;
    Ok(RemoteGroup {
        alice,
        fx_engine,
        fx_user,
        group,
    })
}

async fn remote_member_gets_welcome_and_commit_in_signed_transactions(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut rg = group_with_remote_member(&ctx, &fake, &hs, &name).await?;
    let r = rg.alice.self_update(&rg.group).await?;
    let requests = fake
        .wait_for(15, "the self-update commit", |rs| {
            delivered_events(rs)
                .iter()
                .any(|e| e["type"] == "message" && e["kind"] == "commit" && e["seq"] == r.seq)
        })
        .await?;
    let event = delivered_events(&requests)
        .into_iter()
        .find(|e| e["type"] == "message" && e["kind"] == "commit" && e["seq"] == r.seq)
        .unwrap_or_default();
    for r in requests.iter().filter(|r| r.is_transaction()) {
        well_formed(r, &name)?;
    }
    expect_eq(
        &event["group_id"].as_str(),
        &Some(rg.group.as_str()),
        "group_id",
    )?;
    expect_eq(
        &(event["seq"].as_u64(), event["epoch"].as_u64()),
        &(Some(r.seq), Some(1)),
        "(seq, epoch)",
    )?;
    let m: parley_client_api::sync::MessageEvent = serde_json::from_value(event.clone())
        .map_err(|e| anyhow::anyhow!("message event lacks the sync fields ({e}): {event}"))?;
    let bytes = unb64(&m.message).ok_or_else(|| anyhow::anyhow!("message is not base64"))?;
    let mut keys = parley_mls::StaticDeviceKeys::new();
    keys.insert(
        parley_mls::DeviceRef::new(&rg.alice.user_id, &rg.alice.device_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        rg.alice.engine.signature_public_key(),
    );
    rg.fx_engine
        .process(&rg.group, &bytes, &envelope_of(&m)?, &keys)
        .map_err(|e| anyhow::anyhow!("the fake's user cannot process the relayed commit: {e}"))?;
    let a = rg
        .alice
        .engine
        .epoch_authenticator(&rg.group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let f = rg
        .fx_engine
        .epoch_authenticator(&rg.group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(a == f, "the remote member forked from alice");
    let _ = &rg.fx_user;
    Ok(())
}

async fn failed_transaction_is_retried_and_delivered_events_are_not_resent(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut rg = group_with_remote_member(&ctx, &fake, &hs, &name).await?;
    fake.fail_next_transactions(2);
    for i in 0..3 {
        rg.alice.send_text(&rg.group, &format!("r{i}")).await?;
    }
    let requests = fake
        .wait_for(30, "the three messages after two failures", |rs| {
            delivered_events(rs)
                .iter()
                .filter(|e| e["type"] == "message" && e["kind"] == "application")
                .count()
                >= 3
        })
        .await?;
    let failed = requests
        .iter()
        .filter(|r| r.is_transaction() && r.status == 500)
        .count();
    expect_eq(&failed, &2, "transactions answered 500")?;
    // Let any wrongful resend happen, then count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    rg.alice.send_text(&rg.group, "last").await?;
    let requests = fake
        .wait_for(15, "the last message", |rs| {
            delivered_events(rs)
                .iter()
                .filter(|e| e["type"] == "message" && e["kind"] == "application")
                .count()
                >= 4
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let requests = {
        let later = fake.requests();
        if later.len() > requests.len() {
            later
        } else {
            requests
        }
    };
    let delivered = delivered_events(&requests);
    let mut ids: Vec<&str> = delivered
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    expect_eq(
        &ids.len(),
        &total,
        "distinct event_ids among delivered events (an event was resent)",
    )?;
    let seqs: Vec<u64> = delivered
        .iter()
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    anyhow::ensure!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "messages out of order or repeated: {seqs:?}"
    );
    Ok(())
}

async fn follower_submission_for_a_user_of_another_domain_is_403(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut alice = Device::register(&hs, &ctx.user("alice")).await?;
    let group = alice.create_group().await?;
    let update = alice
        .engine
        .self_update(&group)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = alice.engine.discard_pending_commit(&group);
    let mut commit = serde_json::to_value(crate::device::bundle_request(&update))?;
    // A sender of the server under test, and one of a third server: neither is the origin's.
    for sender in [
        json!({"user_id": alice.user_id, "device_id": alice.device_id}),
        json!({"user_id": "@x:third.test", "device_id": "DEV"}),
    ] {
        commit["sender"] = sender.clone();
        let path = format!("/_parley/federation/v1/groups/{}/commit", percent(&group));
        let reply = fake
            .send_signed(hs.url(), &name, Method::POST, &path, Some(&commit))
            .await?;
        reply
            .expect_error(403, "P_FORBIDDEN")
            .map_err(|e| anyhow::anyhow!("commit with sender {sender}: {e}"))?;
        let body = json!({"message": b64(b"x"), "sender": sender});
        let path = format!("/_parley/federation/v1/groups/{}/send/f1", percent(&group));
        let reply = fake
            .send_signed(hs.url(), &name, Method::PUT, &path, Some(&body))
            .await?;
        reply
            .expect_error(403, "P_FORBIDDEN")
            .map_err(|e| anyhow::anyhow!("send with sender {sender}: {e}"))?;
    }
    let listed = expect_ok(alice.client.groups().await, "GET /groups")?;
    expect_eq(
        &listed
            .groups
            .iter()
            .find(|g| g.group_id == group)
            .map(|g| g.epoch),
        &Some(0),
        "epoch after refused submissions",
    )?;
    Ok(())
}

/// `GET /groups/{gid}/messages?since=SEQ` (docs/protocol.md#server-server-api): the hub answers a member's server
/// with the group's messages after `since`, gap-free and in seq order; a server with no member
/// in the group is refused.
async fn catch_up_serves_a_member_server_in_seq_order_and_refuses_others(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut rg = group_with_remote_member(&ctx, &fake, &hs, &name).await?;
    let first = rg.alice.send_text(&rg.group, "one").await?;
    let second = rg.alice.send_text(&rg.group, "two").await?;
    let catch_up = |group: &str, since: &str| {
        format!(
            "/_parley/federation/v1/groups/{}/messages?since={since}",
            percent(group)
        )
    };
    let seqs = |reply: &Reply| -> anyhow::Result<Vec<u64>> {
        reply
            .json
            .get("messages")
            .and_then(Value::as_array)
            .map(|ms| ms.iter().filter_map(|m| m["seq"].as_u64()).collect())
            .ok_or_else(|| {
                anyhow::anyhow!("no messages list: {}", shorten(&reply.json.to_string()))
            })
    };
    let reply = fake
        .send_signed(
            hs.url(),
            &name,
            Method::GET,
            &catch_up(&rg.group, "0"),
            None,
        )
        .await?;
    anyhow::ensure!(
        reply.status == 200,
        "catch-up for a member server: {} {}",
        reply.status,
        shorten(&reply.json.to_string())
    );
    let all = seqs(&reply)?;
    let expected: Vec<u64> = (1..=second).collect();
    expect_eq(
        &all,
        &expected,
        "seqs after 0 (the add commit, then both texts)",
    )?;
    let reply = fake
        .send_signed(
            hs.url(),
            &name,
            Method::GET,
            &catch_up(&rg.group, &first.to_string()),
            None,
        )
        .await?;
    expect_eq(&seqs(&reply)?, &vec![second], "seqs after the first text")?;
    // A group with no member on the fake server.
    let other = rg.alice.create_group().await?;
    let reply = fake
        .send_signed(hs.url(), &name, Method::GET, &catch_up(&other, "0"), None)
        .await?;
    reply
        .expect_error(403, "P_FORBIDDEN")
        .map_err(|e| anyhow::anyhow!("catch-up for a group without a member there: {e}"))?;
    let _ = &rg.fx_user;
    Ok(())
}

fn percent(s: &str) -> String {
    parley_client_api::endpoint::fill_path("{x}", &[s]).unwrap_or_default()
}

async fn two_servers_hold_a_cross_server_conversation(mut ctx: Ctx) -> anyhow::Result<()> {
    if !ctx.is_managed() {
        return Err(skip(
            "needs two servers configured to reach each other (not possible with --server)",
        ));
    }
    let (p1, p2) = (free_port()?, free_port()?);
    let config = crate::fake_remote::federation_config(&[("hs1.test", p1), ("hs2.test", p2)]);
    let hs1 = ctx
        .server("hs1")
        .server_name("hs1.test")
        .port(p1)
        .config(&config)
        .start()
        .await?;
    let hs2 = ctx
        .server("hs2")
        .server_name("hs2.test")
        .port(p2)
        .config(&config)
        .start()
        .await?;
    let mut alice = Device::register(&hs1, &ctx.user("alice")).await?;
    let mut bob = Device::register(&hs2, &ctx.user("bob")).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.know(&[&a, &b]);
    bob.know(&[&a, &b]);
    let group = alice.create_group().await?;
    alice.add(&group, &[&b]).await?;
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await?;
    alice.send_text(&group, "hello from hs1").await?;
    bob.sync_until(20, "alice's message", |d| !d.texts(&group).is_empty())
        .await?;
    expect_eq(
        &bob.texts(&group),
        &vec!["hello from hs1".to_owned()],
        "bob's texts",
    )?;
    // Bob's message goes to the hub through hs2 and comes back.
    let seq = bob.send_text(&group, "hi from hs2").await?;
    expect_eq(&seq, &3, "seq answered synchronously through the follower")?;
    alice
        .sync_until(20, "bob's message", |d| !d.texts(&group).is_empty())
        .await?;
    expect_eq(
        &alice.texts(&group),
        &vec!["hi from hs2".to_owned()],
        "alice's texts",
    )?;
    Ok(())
}

async fn a_backlog_of_large_messages_reaches_a_restarted_server_once_and_in_order(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    if !ctx.is_managed() {
        return Err(skip(
            "needs two servers configured to reach each other, one restarted (not possible with --server)",
        ));
    }
    let (p1, p2) = (free_port()?, free_port()?);
    let config = crate::fake_remote::federation_config(&[("hs1.test", p1), ("hs2.test", p2)]);
    let hs1 = ctx
        .server("hs1")
        .server_name("hs1.test")
        .port(p1)
        .config(&config)
        .start()
        .await?;
    let mut hs2 = ctx
        .server("hs2")
        .server_name("hs2.test")
        .port(p2)
        .config(&config)
        .restartable()
        .start()
        .await?;
    let mut alice = Device::register(&hs1, &ctx.user("alice")).await?;
    let mut bob = Device::register(&hs2, &ctx.user("bob")).await?;
    let (a, b) = (alice.user_id.clone(), bob.user_id.clone());
    alice.know(&[&a, &b]);
    bob.know(&[&a, &b]);
    let group = alice.create_group().await?;
    alice.add(&group, &[&b]).await?;
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await?;
    hs2.stop().await?;
    // 100 messages of 48 KiB: 6.4 MB of base64, more than one transaction may carry.
    let texts: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "x".repeat(48 * 1024 - 3)))
        .collect();
    for text in &texts {
        alice.send_text(&group, text).await?;
    }
    hs2.start_again().await?;
    let started = std::time::Instant::now();
    bob.sync_until(60, "the 100 messages sent while hs2 was down", |d| {
        d.texts(&group).len() >= 100
    })
    .await?;
    eprintln!(
        "measured: 100 messages of 48 KiB queued while hs2 was down reached bob {:?} after hs2 restarted",
        started.elapsed()
    );
    let got = bob.texts(&group);
    anyhow::ensure!(
        got == texts,
        "bob got {} messages, not each once in order (first prefixes: {:?})",
        got.len(),
        got.iter().take(5).map(|t| &t[..3]).collect::<Vec<_>>()
    );
    Ok(())
}

async fn a_transaction_too_large_for_the_receiver_is_split_and_an_event_refused_alone_is_dropped(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let mut rg = group_with_remote_member(&ctx, &fake, &hs, &name).await?;
    fake.refuse_transactions_over(30_000);
    // Every send fails until all are queued, so they leave together (on a slow machine a
    // single failure could be retried before the rest were queued).
    fake.fail_next_transactions(usize::MAX);
    rg.alice.send_text(&rg.group, "first").await?;
    let mut expected = vec!["first".to_owned()];
    for i in 0..6 {
        let text = format!("mid{i}{}", "m".repeat(8 * 1024));
        rg.alice.send_text(&rg.group, &text).await?;
        expected.push(text);
    }
    // Too large for the receiver even alone: dropped, and it blocks nothing behind it.
    rg.alice
        .send_text(&rg.group, &"L".repeat(40 * 1024))
        .await?;
    rg.alice.send_text(&rg.group, "after").await?;
    fake.fail_next_transactions(0);
    let apps = |rs: &[Recorded]| -> Vec<Value> {
        delivered_events(rs)
            .into_iter()
            .filter(|e| e["type"] == "message" && e["kind"] == "application")
            .collect()
    };
    let requests = fake
        .wait_for(30, "the messages around the refused one", |rs| {
            apps(rs).len() > expected.len()
        })
        .await?;
    let delivered = apps(&requests);
    let refused_413 = requests
        .iter()
        .filter(|r| r.is_transaction() && r.status == 413)
        .count();
    let mut texts = Vec::new();
    for e in &delivered {
        texts.push(decrypt_event(&mut rg, e)?);
    }
    expected.push("after".into());
    eprintln!(
        "measured: {} transactions refused 413 by a 30 kB receiver; {} of 9 messages delivered",
        refused_413,
        texts.len()
    );
    anyhow::ensure!(
        texts == expected,
        "delivered {:?}",
        texts
            .iter()
            .map(|t| &t[..t.len().min(6)])
            .collect::<Vec<_>>()
    );
    anyhow::ensure!(refused_413 >= 2, "no batch was refused as too large");
    Ok(())
}

/// The text of a relayed application message, decrypted by the fake's member.
fn decrypt_event(rg: &mut RemoteGroup, event: &Value) -> anyhow::Result<String> {
    let m: parley_client_api::sync::MessageEvent = serde_json::from_value(event.clone())
        .map_err(|e| anyhow::anyhow!("message event lacks the sync fields ({e}): {event}"))?;
    let bytes = unb64(&m.message).ok_or_else(|| anyhow::anyhow!("message is not base64"))?;
    let mut keys = parley_mls::StaticDeviceKeys::new();
    keys.insert(
        parley_mls::DeviceRef::new(&rg.alice.user_id, &rg.alice.device_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        rg.alice.engine.signature_public_key(),
    );
    let events = rg
        .fx_engine
        .process(&rg.group, &bytes, &envelope_of(&m)?, &keys)
        .map_err(|e| anyhow::anyhow!("the fake's user cannot decrypt seq {}: {e}", m.seq))?;
    events
        .into_iter()
        .find_map(|e| match e {
            parley_mls::Event::ApplicationMessage { plaintext, .. } => {
                Some(String::from_utf8_lossy(&plaintext).into_owned())
            }
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("seq {} is not an application message", m.seq))
}

async fn server_names_in_the_signature_header_compare_without_regard_to_case(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let (fake, hs, name) = with_fake(&mut ctx).await?;
    let body = claim_body();
    let header = parley_federation::auth::sign_request(
        fake.key(),
        &FAKE_NAME.to_uppercase(),
        &name.to_uppercase(),
        "POST",
        CLAIM,
        Some(&body),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let reply = post_claim(&hs, &header, &body).await?;
    reply
        .expect_ok()
        .map_err(|e| anyhow::anyhow!("origin and destination in upper case: {e}"))?;
    Ok(())
}
