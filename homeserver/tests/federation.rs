//! Two real homeservers federating over HTTP on loopback.

mod common;

use common::{assert_api_error, federated_pair, federation_toml, free_port, Db, TestServer};
use parley_sytest::device::{bundle_request, Device, PASSWORD};
use std::time::Duration;

async fn pair(db: Db) -> (TestServer, TestServer) {
    federated_pair(db, "").await
}

/// Syncs `device` until `done` holds or about 30 s pass (federation delivery is asynchronous).
#[track_caller]
fn sync_until<'a>(
    device: &'a mut Device,
    mut done: impl FnMut(&Device) -> bool + 'a,
) -> impl std::future::Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        for _ in 0..150 {
            device.sync(200).await.unwrap();
            if done(device) {
                return;
            }
        }
        panic!(
            "{} did not receive what was expected (waiting at {caller})",
            device.user_id
        );
    }
}

on_both_backends!(
    cross_domain_group_exchanges_messages_both_ways,
    |db: Db| async move {
        let (a, b) = pair(db).await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&["@alice:a.example", "@bob:b.example"]);
        }

        // Remote device list and key claim go through alice's server.
        let devices = alice.client.user_devices("@bob:b.example").await.unwrap();
        assert_eq!(devices.devices.len(), 1);
        assert_api_error(
            alice.client.user_devices("@nobody:b.example").await,
            404,
            "P_NOT_FOUND",
        );

        let group = alice.create_group().await.unwrap();
        alice.add(&group, &["@bob:b.example"]).await.unwrap();
        sync_until(&mut bob, |d| d.engine.group_ids().contains(&group)).await;

        alice.send_text(&group, "hello bob, from a").await.unwrap();
        sync_until(&mut bob, |d| d.texts(&group).len() == 1).await;
        assert_eq!(bob.texts(&group), ["hello bob, from a"]);

        // Bob's message goes to the hub through b.example and comes back to alice.
        bob.send_text(&group, "hi alice, from b").await.unwrap();
        sync_until(&mut alice, |d| d.texts(&group).len() == 1).await;
        assert_eq!(alice.texts(&group), ["hi alice, from b"]);

        // A follower's commit: bob updates; a stale one is refused with 409 through b.
        let stale = bob.engine.self_update(&group).unwrap();
        bob.engine.discard_pending_commit(&group).unwrap();
        bob.self_update(&group).await.unwrap();
        let r = bob.client.commit(&group, &bundle_request(&stale)).await;
        let body = assert_api_error(r, 409, "P_STALE_EPOCH");
        assert_eq!(body.extra_u64("current_epoch"), Some(2));
        sync_until(&mut alice, |d| d.engine.epoch(&group).unwrap() == 2).await;
        alice.send_text(&group, "after bob's update").await.unwrap();
        sync_until(&mut bob, |d| d.texts(&group).len() == 2).await;

        // Bob's new device: b.example pushes the device list to a.example, whose cached copy
        // (fetched when alice added bob) is updated without asking again.
        let cached = alice.client.user_devices("@bob:b.example").await.unwrap();
        assert_eq!(cached.devices.len(), 1);
        let bob2 = Device::login(&b, "bob").await.unwrap();
        let mut seen = 0;
        for _ in 0..100 {
            seen = alice
                .client
                .user_devices("@bob:b.example")
                .await
                .unwrap()
                .devices
                .len();
            if seen == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, 2, "device list update did not reach a.example");
        // Deleting it is pushed too.
        bob2.client.delete_device(&bob2.device_id).await.unwrap();
        for _ in 0..100 {
            seen = alice
                .client
                .user_devices("@bob:b.example")
                .await
                .unwrap()
                .devices
                .len();
            if seen == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, 1);
    }
);

on_both_backends!(
    server_down_then_back_gets_every_message_in_order_once,
    |db: Db| async move {
        let (mut a, mut b) = pair(db).await;
        let mut alice = Device::register(&a, "alice").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        for d in [&mut alice, &mut bob] {
            d.know(&["@alice:a.example", "@bob:b.example"]);
        }
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &["@bob:b.example"]).await.unwrap();
        sync_until(&mut bob, |d| d.engine.group_ids().contains(&group)).await;

        assert!(b.stop());
        for i in 0..100 {
            alice.send_text(&group, &format!("m{i}")).await.unwrap();
        }
        // Restart the hub too, with its outbox full: delivery resumes from disk.
        a.restart();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.start_again();
        sync_until(&mut bob, |d| d.texts(&group).len() >= 100).await;
        let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        assert_eq!(bob.texts(&group), expected);
        // Nothing arrives twice.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        bob.sync(0).await.unwrap();
        assert_eq!(bob.texts(&group).len(), 100);
    }
);

on_both_backends!(
    unsigned_forged_and_misdirected_requests_are_refused,
    |db: Db| async move {
        let (a, _b) = pair(db).await;
        let http = reqwest::Client::new();
        let url = format!("{}/_parley/federation/v1/keys/claim", a.base_url);
        let body = serde_json::json!({"user_ids": ["@alice:a.example"]});
        // No signature.
        let r = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["errcode"],
            "P_UNAUTHORIZED"
        );
        // A signature by a key b.example does not have.
        let key = parley_federation::keys::ServerSigningKey::generate(
            parley_federation::keys::KeyId::generate(),
        );
        let path = "/_parley/federation/v1/keys/claim";
        let forged = parley_federation::auth::sign_request(
            &key,
            "b.example",
            "a.example",
            "POST",
            path,
            Some(&body),
        )
        .unwrap();
        let r = http
            .post(&url)
            .header("authorization", forged)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // Garbage header.
        let r = http
            .post(&url)
            .header("authorization", "X-Parley nonsense")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // The key document is self-signed and verifies.
        let doc = http
            .get(format!("{}/_parley/key/v1/server", a.base_url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let verified =
            parley_federation::keys::verify_key_document(&doc, "a.example", now).unwrap();
        assert_eq!(verified.verify_keys.len(), 1);
        assert!(parley_federation::keys::verify_key_document(&doc, "b.example", now).is_err());
    }
);

/// A CA and a certificate for `name` (and 127.0.0.1, which the resolve map connects to),
/// written as PEM files into `dir`.
fn tls_files(
    dir: &std::path::Path,
    ca: &(rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>),
    name: &str,
) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca.1).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    format!(
        "tls = {{ cert_file = {:?}, key_file = {:?} }}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    )
}

fn test_ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Parley test CA");
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_federate_over_tls_with_certificates_from_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.0.pem()).unwrap();
    let (pa, pb) = (free_port(), free_port());
    // HTTPS only: no allow_insecure_http.
    let fed = format!(
        "{}\n[federation]\nca_file = {:?}\nresolve = {{ \"a.example\" = \"127.0.0.1:{pa}\", \"b.example\" = \"127.0.0.1:{pb}\" }}\n",
        common::RELAXED_LIMITS,
        ca_path.display().to_string()
    );
    let a_config = format!("{}{fed}", tls_files(dir.path(), &ca, "a.example"));
    let b_config = format!("{}{fed}", tls_files(dir.path(), &ca, "b.example"));
    let a = TestServer::start_at(
        Db::Sqlite,
        "a.example",
        &a_config,
        &format!("127.0.0.1:{pa}"),
    )
    .await;
    let b = TestServer::start_at(
        Db::Sqlite,
        "b.example",
        &b_config,
        &format!("127.0.0.1:{pb}"),
    )
    .await;
    assert!(a.base_url.starts_with("https://"), "{}", a.base_url);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.0.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    // Plain HTTP to a TLS server does not work.
    let plain = a.base_url.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/_parley/client/versions"))
        .await
        .is_err());

    let mut alice_client = parley_client_api::Client::with_http(http.clone(), a.base_url.clone());
    let s = alice_client.register("alice", PASSWORD).await.unwrap();
    let mut alice = Device::setup(alice_client, s.user_id, s.device_id, 3, true)
        .await
        .unwrap();
    let mut bob_client = parley_client_api::Client::with_http(http.clone(), b.base_url.clone());
    let s = bob_client.register("bob", PASSWORD).await.unwrap();
    let mut bob = Device::setup(bob_client, s.user_id, s.device_id, 3, true)
        .await
        .unwrap();
    for d in [&mut alice, &mut bob] {
        d.know(&["@alice:a.example", "@bob:b.example"]);
    }

    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:b.example"]).await.unwrap();
    sync_until(&mut bob, |d| d.engine.group_ids().contains(&group)).await;
    bob.send_text(&group, "over TLS").await.unwrap();
    sync_until(&mut alice, |d| d.texts(&group) == ["over TLS"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_signing_key_is_published_as_an_old_key() {
    let mut server = TestServer::start(Db::Sqlite, "rot.example", "").await;
    let url = format!("{}/_parley/key/v1/server", server.base_url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let before = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    let before = parley_federation::keys::verify_key_document(&before, "rot.example", now).unwrap();
    let old_id = before.verify_keys.keys().next().unwrap().clone();
    assert!(server.stop());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("rotate-federation-key")
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.start_again();
    let after = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    let after = parley_federation::keys::verify_key_document(&after, "rot.example", now).unwrap();
    assert!(
        !after.verify_keys.contains_key(&old_id),
        "the retired key no longer signs"
    );
    let (key, expired_ts) = after.old_verify_keys[&old_id];
    assert_eq!(key, before.verify_keys[&old_id]);
    assert!(expired_ts >= now);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_spans_three_servers_through_adds_and_removes() {
    let ports = [free_port(), free_port(), free_port()];
    let names = ["a.example", "b.example", "c.example"];
    let peers: Vec<(&str, u16)> = names.iter().copied().zip(ports).collect();
    let config = federation_toml(&peers);
    let mut servers = Vec::new();
    for (name, port) in &peers {
        servers.push(
            TestServer::start_at(Db::Sqlite, name, &config, &format!("127.0.0.1:{port}")).await,
        );
    }
    let mut alice = Device::register(&servers[0], "alice").await.unwrap();
    let mut bob = Device::register(&servers[1], "bob").await.unwrap();
    let mut carol = Device::register(&servers[2], "carol").await.unwrap();
    for d in [&mut alice, &mut bob, &mut carol] {
        d.know(&["@alice:a.example", "@bob:b.example", "@carol:c.example"]);
    }
    let group = alice.create_group().await.unwrap();
    alice
        .add(&group, &["@bob:b.example", "@carol:c.example"])
        .await
        .unwrap();
    sync_until(&mut bob, |d| d.engine.group_ids().contains(&group)).await;
    sync_until(&mut carol, |d| d.engine.group_ids().contains(&group)).await;

    carol.send_text(&group, "hello from c").await.unwrap();
    sync_until(&mut alice, |d| d.texts(&group) == ["hello from c"]).await;
    sync_until(&mut bob, |d| d.texts(&group) == ["hello from c"]).await;

    // Carol is removed (by bob, through his server): she sees her removal, nothing after.
    sync_until(&mut bob, |d| d.engine.epoch(&group).unwrap() == 1).await;
    bob.remove(&group, &[carol.me()]).await.unwrap();
    sync_until(&mut carol, |d| !d.engine.is_active(&group).unwrap_or(true)).await;
    sync_until(&mut alice, |d| d.engine.epoch(&group).unwrap() == 2).await;
    alice.send_text(&group, "only a and b now").await.unwrap();
    sync_until(&mut bob, |d| d.texts(&group).len() == 2).await;
    carol.sync(500).await.unwrap();
    assert_eq!(carol.texts(&group), Vec::<String>::new());
    assert_eq!(bob.texts(&group), ["hello from c", "only a and b now"]);
}

/// Deletes the queued group messages for `destination` from a stopped server's outbox, as if
/// they had been lost; returns how many.
/// Seqs of a [`group_across_pair`] group that b.example has before a test cuts it off.
const DELIVERED_BEFORE_THE_CUT: i64 = 2;

async fn lose_queued_messages(server: &TestServer, destination: &str) -> usize {
    let store = parley_schema::Store::connect(&server.database, &Default::default())
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .outbox()
        .outbox_batch(destination, 10_000)
        .await
        .unwrap()
        .into_iter()
        // The commit adding bob (seq 1) and m0 (seq 2) reached b.example before the cut; a row
        // of theirs may linger if the hub stopped between b's answer and deleting it.
        .filter(|r| {
            matches!(r.event, Ok(parley_schema::OutboundEvent::Message { seq, .. })
                if seq > DELIVERED_BEFORE_THE_CUT)
        })
        .map(|r| r.id)
        .collect();
    store.outbox().delete_outbox(&ids).await.unwrap();
    store.close();
    ids.len()
}

/// Alice on the hub a.example, bob on b.example, both in one group, one message delivered.
async fn group_across_pair(db: Db) -> (TestServer, TestServer, Device, Device, String, u16) {
    let (pa, pb) = (free_port(), free_port());
    let config = federation_toml(&[("a.example", pa), ("b.example", pb)]);
    let a = TestServer::start_at(db, "a.example", &config, &format!("127.0.0.1:{pa}")).await;
    let b = TestServer::start_at(db, "b.example", &config, &format!("127.0.0.1:{pb}")).await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    for d in [&mut alice, &mut bob] {
        d.know(&["@alice:a.example", "@bob:b.example"]);
    }
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:b.example"]).await.unwrap();
    sync_until(&mut bob, |d| d.engine.group_ids().contains(&group)).await;
    let m0 = alice.send_text(&group, "m0").await.unwrap();
    assert_eq!(m0, DELIVERED_BEFORE_THE_CUT as u64);
    sync_until(&mut bob, |d| d.texts(&group) == ["m0"]).await;
    (a, b, alice, bob, group, pa)
}

/// Alice sends m1..m3, commits a self-update, sends m4..m6: seven messages, one a commit, so
/// a device that saw them out of order could not even decrypt them.
async fn send_gap_messages(alice: &mut Device, group: &str) {
    for i in 1..=3 {
        alice.send_text(group, &format!("m{i}")).await.unwrap();
    }
    alice.self_update(group).await.unwrap();
    for i in 4..=6 {
        alice.send_text(group, &format!("m{i}")).await.unwrap();
    }
}

on_both_backends!(
    member_server_fills_a_gap_when_a_later_message_arrives_and_delivers_all_in_order_once,
    |db: Db| async move {
        let (mut a, b, mut alice, mut bob, group, pa) = group_across_pair(db).await;
        // The hub cannot reach b.example for a while (b stays up, so no start-up catch-up).
        let dead = free_port();
        let cut = federation_toml(&[("a.example", pa), ("b.example", dead)]);
        let good = federation_toml(&[
            ("a.example", pa),
            (
                "b.example",
                b.base_url.rsplit(':').next().unwrap().parse().unwrap(),
            ),
        ]);
        assert!(a.stop());
        a.set_extra_toml(&cut);
        a.start_again();
        send_gap_messages(&mut alice, &group).await;
        // The hub's queue for b.example is lost.
        assert!(a.stop());
        assert_eq!(lose_queued_messages(&a, "b.example").await, 7);
        a.set_extra_toml(&good);
        a.start_again();
        bob.sync(300).await.unwrap();
        assert_eq!(
            bob.texts(&group),
            ["m0"],
            "nothing may arrive before the gap is noticed"
        );

        // One more message reveals the gap: b.example fetches seqs it missed from the hub.
        alice.send_text(&group, "m7").await.unwrap();
        let expected: Vec<String> = (0..=7).map(|i| format!("m{i}")).collect();
        sync_until(&mut bob, |d| d.texts(&group).len() >= expected.len()).await;
        assert_eq!(bob.texts(&group), expected);
        assert_eq!(
            bob.engine.epoch(&group).unwrap(),
            alice.engine.epoch(&group).unwrap()
        );
        // Exactly once: a fresh sync from the start replays the same seqs, each once, in order.
        let all = bob.client.sync(None, 0).await.unwrap();
        let seqs: Vec<u64> = all.groups[&group].messages.iter().map(|m| m.seq).collect();
        let first = seqs[0];
        assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        bob.sync(0).await.unwrap();
        assert_eq!(bob.texts(&group), expected);
    }
);

on_both_backends!(
    member_server_catches_up_lost_messages_at_start_without_a_new_message,
    |db: Db| async move {
        let (mut a, mut b, mut alice, mut bob, group, _) = group_across_pair(db).await;
        assert!(b.stop());
        send_gap_messages(&mut alice, &group).await;
        assert!(a.stop());
        assert_eq!(lose_queued_messages(&a, "b.example").await, 7);
        a.start_again();
        b.start_again();
        let expected: Vec<String> = (0..=6).map(|i| format!("m{i}")).collect();
        sync_until(&mut bob, |d| d.texts(&group).len() >= expected.len()).await;
        assert_eq!(bob.texts(&group), expected);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        bob.sync(0).await.unwrap();
        assert_eq!(bob.texts(&group), expected);
    }
);

/// Sends a request signed with `server`'s own federation key (read from its data dir).
/// A request signed by `server` to `to`, ready to send.
fn signed_request(
    server: &TestServer,
    to: &TestServer,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> reqwest::RequestBuilder {
    let (key, created) =
        parley_federation::keys::ServerSigningKey::load_or_generate(server.data_dir()).unwrap();
    assert!(!created);
    let auth = parley_federation::auth::sign_request(
        &key,
        &server.server_name,
        &to.server_name,
        method,
        path,
        body,
    )
    .unwrap();
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", to.base_url))
        .header("authorization", auth);
    if let Some(body) = body {
        req = req.json(body);
    }
    req
}

/// Sends a request signed by `server` to `to`: the status and JSON body.
async fn signed_as(
    server: &TestServer,
    to: &TestServer,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let r = signed_request(server, to, method, path, body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A sender cut off after the receiver claimed its transaction (a crash, a dropped
/// connection) gets the first answer when it sends the transaction again: the receiver
/// finishes applying it rather than leaving the claim to expire (it used to answer 429 for
/// two minutes).
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_cut_off_mid_way_is_applied_and_answered_on_resend() {
    let (a, b) = pair(Db::Sqlite).await;
    let store_b =
        parley_schema::Store::connect(&b.database, &parley_schema::StoreConfig::default())
            .await
            .unwrap();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    // Each attempt: a transaction of 100 device-list updates (some 50 ms to apply), cut off
    // once b has claimed it. An attempt that looks too late (already answered) is repeated.
    for attempt in 0..20 {
        let events: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                serde_json::json!({"event_id": format!("d{i}"), "type": "device_list_update",
                    "user_id": format!("@u{attempt}x{i}:{}", a.server_name),
                    "devices": [{"device_id": "DEV", "signature_key": key}]})
            })
            .collect();
        let txn = serde_json::json!({"origin": a.server_name, "origin_ts": 1, "events": events});
        let path = format!("/_parley/federation/v1/send/cut{attempt}");
        // b has claimed the transaction once its row exists, and is still applying it while
        // the row holds no answer: cut the sender off then.
        let before = store_b
            .retention()
            .retained_rows()
            .await
            .unwrap()
            .inbound_transactions;
        let first = tokio::spawn(signed_request(&a, &b, "PUT", &path, Some(&txn)).send());
        let mut caught = false;
        for _ in 0..5000 {
            let rows = store_b.retention().retained_rows().await.unwrap();
            if rows.inbound_transactions > before {
                let answer = store_b
                    .federation()
                    .inbound_transaction(&a.server_name, &format!("cut{attempt}"))
                    .await
                    .unwrap();
                caught = answer.is_none();
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        if !caught {
            continue;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let body = loop {
            let (status, body) = signed_as(&a, &b, "PUT", &path, Some(&txn)).await;
            match status {
                200 => break body,
                429 if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => panic!("attempt {attempt}: the resend answered {status}: {body}"),
            }
        };
        let results = body["results"].as_object().unwrap();
        assert_eq!(results.len(), 100, "{body}");
        assert!(
            results.values().all(|r| r == &serde_json::json!({})),
            "{body}"
        );
        return;
    }
    panic!("no attempt caught the transaction while b applied it");
}

fn enc(s: &str) -> String {
    s.replace('!', "%21").replace(':', "%3A")
}

on_both_backends!(
    catch_up_and_transactions_refuse_bad_input_with_errcodes_and_serve_members_in_order,
    |db: Db| async move {
        let (a, b, mut alice, _bob, group, _) = group_across_pair(db).await;
        let other = alice.create_group().await.unwrap();
        let msgs =
            |g: &str, q: &str| format!("/_parley/federation/v1/groups/{}/messages{q}", enc(g));
        let check = |(status, body): (u16, serde_json::Value), want: u16, errcode: &str| {
            assert_eq!(
                (status, body["errcode"].as_str().unwrap_or("")),
                (want, errcode),
                "{body}"
            );
        };
        // The hub serves a member server its log in seq order (seq 1 is the add, 2 is m0).
        let (status, body) = signed_as(&b, &a, "GET", &msgs(&group, "?since=1"), None).await;
        assert_eq!(status, 200, "{body}");
        let seqs: Vec<u64> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [2]);
        check(
            signed_as(&b, &a, "GET", &msgs(&group, "?since=abc"), None).await,
            400,
            "P_BAD_JSON",
        );
        check(
            signed_as(&b, &a, "GET", &msgs(&group, "?since=-1"), None).await,
            400,
            "P_BAD_JSON",
        );
        check(
            signed_as(
                &b,
                &a,
                "GET",
                &msgs(&group, "?since=18446744073709551615"),
                None,
            )
            .await,
            400,
            "P_BAD_JSON",
        );
        check(
            signed_as(&b, &a, "GET", &msgs(&other, ""), None).await,
            403,
            "P_FORBIDDEN",
        );
        check(
            signed_as(&b, &a, "GET", &msgs("!nope:a.example", ""), None).await,
            404,
            "P_NOT_FOUND",
        );
        check(
            signed_as(&b, &a, "GET", &msgs("!x:b.example", ""), None).await,
            404,
            "P_NOT_FOUND",
        );
        check(
            signed_as(&b, &a, "GET", &msgs("no-group", ""), None).await,
            404,
            "P_NOT_FOUND",
        );
        check(
            signed_as(
                &b,
                &a,
                "GET",
                "/_parley/federation/v1/groups/%FF/messages",
                None,
            )
            .await,
            400,
            "P_BAD_JSON",
        );
        // Unsigned: 401 before anything else.
        let r = reqwest::get(format!("{}{}", a.base_url, msgs(&group, "?since=abc")))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);

        // Bad events in a transaction are refused one by one; the rest of the batch stands.
        let event = |id: &str, seq: serde_json::Value, message: &str, kind: &str, g: &str| {
            serde_json::json!({"event_id": id, "type": "message", "group_id": g, "seq": seq,
                "sender": {"user_id": "@alice:a.example", "device_id": "D"}, "kind": kind,
                "epoch": 1, "message": message, "ts": 1})
        };
        let txn = serde_json::json!({"origin": "a.example", "origin_ts": 1, "events": [
            event("zero", 0.into(), "AAAA", "application", &group),
            event("huge", ((1u64 << 53) - 1).into(), "AAAA", "application", &group),
            event("b64", 50.into(), "not base64!", "application", &group),
            event("kind", 50.into(), "AAAA", "shout", &group),
            event("hub", 50.into(), "AAAA", "application", "!x:b.example"),
            event("nogroup", 50.into(), "AAAA", "application", "not a group"),
            {"event_id": "shape", "type": "message"},
            {"event_id": "type", "type": "nonsense"},
        ]});
        let (status, body) = signed_as(
            &a,
            &b,
            "PUT",
            "/_parley/federation/v1/send/bad1",
            Some(&txn),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let results = &body["results"];
        for (id, errcode) in [
            ("zero", "P_BAD_JSON"),
            ("b64", "P_INVALID_MESSAGE"),
            ("kind", "P_BAD_JSON"),
            ("hub", "P_FORBIDDEN"),
            ("nogroup", "P_NOT_FOUND"),
            ("shape", "P_BAD_JSON"),
            ("type", "P_BAD_JSON"),
        ] {
            assert_eq!(results[id]["errcode"], errcode, "{id}: {body}");
        }
        // An out-of-range seq from the hub is a gap it fills from its own log: accepted.
        assert_eq!(results["huge"], serde_json::json!({}), "{body}");
        // A whole-batch error is 400 P_BAD_JSON; b.example still works afterwards.
        let (status, body) = signed_as(
            &a,
            &b,
            "PUT",
            "/_parley/federation/v1/send/bad2",
            Some(&serde_json::json!({"origin": "a.example", "origin_ts": 1, "events": "x"})),
        )
        .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("P_BAD_JSON"))
        );
        alice.send_text(&group, "still fine").await.unwrap();
    }
);

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_outbox_sender_is_woken_at_once_by_a_new_message() {
    let (_a, _b, mut alice, mut bob, group, _) = group_across_pair(Db::Sqlite).await;
    for round in 1..=3 {
        // Let the sender go idle (waiting for a wake-up, with a 60 s look-again timeout).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let text = format!("after idle {round}");
        let started = std::time::Instant::now();
        alice.send_text(&group, &text).await.unwrap();
        let response = bob.client.sync(bob.since.as_deref(), 10_000).await.unwrap();
        let elapsed = started.elapsed();
        bob.apply(response).await.unwrap();
        assert_eq!(bob.texts(&group).last(), Some(&text));
        assert!(
            elapsed < Duration::from_secs(3),
            "round {round}: {elapsed:?} from send to receipt"
        );
    }
}
