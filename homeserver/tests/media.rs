//! The media repository against real servers: encrypted attachments uploaded to one server,
//! sent in a group, fetched by a member of another server through federation, checked and
//! decrypted; byte ranges; and the bounds an upload or a remote server meets (size, quota,
//! uploads at once, a stalled body, the remote cache), measured on disk.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{federation_toml, free_port, make_admin, Db, TestServer};
use parley_client_api::admin::{RunRetention, RunRetentionRequest};
use parley_client_api::groups::{SendMessage, SendRequest};
use parley_client_api::params::GroupTxnPath;
use parley_mls::{encrypt_attachment, AttachmentDescriptor, MlsError};
use parley_schema::{Store, StoreConfig};
use parley_sytest::device::Device;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// `n` bytes that do not compress or repeat.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// POSTs `body` to the upload endpoint with `token`; the status and JSON answer.
async fn upload(server: &TestServer, token: &str, body: reqwest::Body) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/_parley/client/v1/media", server.base_url))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads `bytes` (with their length declared); the media id.
async fn upload_ok(server: &TestServer, token: &str, bytes: Vec<u8>) -> String {
    let (status, answer) = upload(server, token, bytes.into()).await;
    assert_eq!(status, 200, "{answer}");
    answer["media_id"].as_str().expect("media_id").to_owned()
}

/// A body of `total` bytes sent in 64 KiB pieces with no declared length (chunked).
fn streamed(total: usize) -> reqwest::Body {
    let piece = noise(64 * 1024);
    let pieces = total.div_ceil(piece.len());
    let stream =
        futures::stream::iter((0..pieces).map(move |_| Ok::<_, std::io::Error>(bytes_of(&piece))));
    reqwest::Body::wrap_stream(stream)
}

fn bytes_of(piece: &[u8]) -> Vec<u8> {
    piece.to_vec()
}

/// GETs `server_name`'s media `media_id` through `server`; status, headers and bytes.
async fn download(
    server: &TestServer,
    token: &str,
    server_name: &str,
    media_id: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .get(format!(
            "{}/_parley/client/v1/media/{server_name}/{media_id}",
            server.base_url
        ))
        .bearer_auth(token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.expect("download request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body").to_vec();
    (status, headers, bytes)
}

/// The errcode of a JSON error body.
fn errcode(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null)["errcode"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Bytes of the files under `dir`, and how many there are.
fn disk_use(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            let (bytes, files) = disk_use(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

fn media_dir(server: &TestServer) -> std::path::PathBuf {
    server.data_dir().join("media")
}

fn token(device: &Device) -> String {
    device.client.access_token().expect("logged in").to_owned()
}

/// Sends `text` to `group`, naming `media`; the seq.
async fn send_naming(device: &mut Device, group: &str, text: &str, media: Vec<String>) -> u64 {
    let (txn, bytes) = device.encrypt(group, text).expect("encrypt");
    let path = GroupTxnPath {
        group_id: group.parse().expect("group id"),
        txn_id: txn.parse().expect("txn id"),
    };
    let request = SendRequest {
        message: STANDARD.encode(&bytes),
        media,
        keep_latest: false,
    };
    device
        .client
        .call::<SendMessage>(&path, &request)
        .await
        .expect("send")
        .seq
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attachment_sent_in_a_group_is_fetched_through_federation_checked_and_decrypted() {
    let (pa, pb) = (free_port(), free_port());
    let config = federation_toml(&[("a.example", pa), ("b.example", pb)]);
    let mut a =
        TestServer::start_at(Db::Sqlite, "a.example", &config, &format!("127.0.0.1:{pa}")).await;
    let b = TestServer::start_at(
        Db::Postgres,
        "b.example",
        &config,
        &format!("127.0.0.1:{pb}"),
    )
    .await;
    let mut alice = Device::register(&a, "alice").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    let everyone = ["@alice:a.example", "@bob:b.example"];
    alice.know(&everyone);
    bob.know(&everyone);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:b.example"]).await.unwrap();
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await
        .unwrap();

    // Alice encrypts a file, uploads the ciphertext and sends its descriptor.
    let file = noise(MIB + 12_345);
    let encrypted = encrypt_attachment(&file).unwrap();
    let media_id = upload_ok(&a, &token(&alice), encrypted.ciphertext.clone()).await;
    assert_eq!(media_id.len(), 22, "128 bits, base64url");
    let descriptor = AttachmentDescriptor::new(
        media_id.clone(),
        "a.example",
        &encrypted,
        "application/pdf",
        "report.pdf",
    );
    let text = serde_json::to_string(&descriptor).unwrap();
    send_naming(&mut alice, &group, &text, vec![media_id.clone()]).await;
    let store_a = Store::connect(&a.database, &StoreConfig::default())
        .await
        .unwrap();
    let row = store_a
        .media()
        .get("a.example", &media_id)
        .await
        .unwrap()
        .expect("recorded");
    assert!(row.referenced_ts.is_some(), "the send named it");
    store_a.close();

    // Bob reads the descriptor and fetches the ciphertext through his own server.
    bob.sync_until(20, "the descriptor", |d| !d.texts(&group).is_empty())
        .await
        .unwrap();
    let received: AttachmentDescriptor = serde_json::from_str(&bob.texts(&group)[0]).unwrap();
    let (status, headers, ciphertext) =
        download(&b, &token(&bob), "a.example", &received.media_id, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(received.decrypt(&ciphertext).unwrap(), file);

    // A resumed download: the first part, then the rest with `Range`.
    let cut = 300_000;
    let (status, headers, first) = download(
        &b,
        &token(&bob),
        "a.example",
        &media_id,
        Some(&format!("bytes=0-{}", cut - 1)),
    )
    .await;
    assert_eq!((status, first.len()), (206, cut));
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-{}/{}", cut - 1, ciphertext.len()).as_str()
    );
    let (status, _, rest) = download(
        &b,
        &token(&bob),
        "a.example",
        &media_id,
        Some(&format!("bytes={cut}-")),
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!([first, rest].concat(), ciphertext);
    let (status, _, body) = download(
        &b,
        &token(&bob),
        "a.example",
        &media_id,
        Some(&format!("bytes={}-", ciphertext.len())),
    )
    .await;
    assert_eq!(
        (status, errcode(&body).as_str()),
        (416, "P_RANGE_NOT_SATISFIABLE")
    );

    // A tampered file is refused by the hash check before any decryption.
    let mut tampered = ciphertext.clone();
    tampered[1000] ^= 1;
    assert!(matches!(
        received.decrypt(&tampered),
        Err(MlsError::AttachmentHashMismatch)
    ));

    // Unknown media is 404 on its own server and through another; ids outside the grammar
    // name nothing; no token, no bytes.
    for (server, t) in [(&a, token(&alice)), (&b, token(&bob))] {
        let (status, _, body) = download(server, &t, "a.example", "nosuchmedia", None).await;
        assert_eq!((status, errcode(&body).as_str()), (404, "P_NOT_FOUND"));
        let (status, _, body) = download(server, &t, "a.example", "bad.id", None).await;
        assert_eq!((status, errcode(&body).as_str()), (404, "P_NOT_FOUND"));
    }
    let (status, _, body) = download(&a, "nope", "a.example", &media_id, None).await;
    assert_eq!((status, errcode(&body).as_str()), (401, "P_UNKNOWN_TOKEN"));
    // B cached it: with A stopped, Bob still gets it; an unknown id of A's is 502 now.
    assert!(a.stop());
    let (status, _, again) = download(&b, &token(&bob), "a.example", &media_id, None).await;
    assert_eq!((status, again == ciphertext), (200, true));
    let (status, _, body) = download(&b, &token(&bob), "a.example", "unknownid", None).await;
    assert_eq!(
        (status, errcode(&body).as_str()),
        (502, "P_UNREACHABLE_SERVER")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_past_the_size_limit_or_the_quota_are_refused_and_the_disk_stays_within_them() {
    for db in [Db::Sqlite, Db::Postgres] {
        let config = "[limits]\nmax_upload_bytes = 1048576\n[media]\nuser_quota_bytes = 2621440\n";
        let server = TestServer::start(db, "up.example", config).await;
        let alice = Device::register(&server, "alice").await.unwrap();
        let bob = Device::register(&server, "bob").await.unwrap();
        let t = token(&alice);
        let dir = media_dir(&server);

        // Declared too large: refused before a byte is read.
        let (status, answer) = upload(&server, &t, vec![0u8; MIB + 1].into()).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (413, Some("P_TOO_LARGE"))
        );
        // Streamed with no declared length: cut off once past the limit, nothing kept.
        let (status, answer) = upload(&server, &t, streamed(8 * MIB)).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (413, Some("P_TOO_LARGE"))
        );
        let after_attack = disk_use(&dir);
        println!(
            "[{db:?}] after a declared 1 MiB+1 and a streamed 8 MiB upload: {} bytes in {} files",
            after_attack.0, after_attack.1
        );
        assert_eq!(after_attack, (0, 0));

        // Within the limit: stored. The quota (2.5 MiB) then refuses a third MiB, declared or
        // streamed, while another user's uploads count against their own.
        upload_ok(&server, &t, noise(MIB)).await;
        upload_ok(&server, &t, noise(MIB)).await;
        let (status, answer) = upload(&server, &t, noise(MIB).into()).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (413, Some("P_QUOTA_EXCEEDED"))
        );
        let (status, answer) = upload(&server, &t, streamed(MIB)).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (413, Some("P_QUOTA_EXCEEDED"))
        );
        let (bytes, files) = disk_use(&dir);
        println!(
            "[{db:?}] alice at her quota after 6 upload attempts: {bytes} bytes in {files} files"
        );
        assert_eq!((bytes, files), (2 * MIB as u64, 2));
        upload_ok(&server, &token(&bob), noise(MIB)).await;
        // An empty upload is a file too (an empty attachment's ciphertext is never empty,
        // but the repository does not judge).
        upload_ok(&server, &t, Vec::new()).await;
        let (status, answer) = upload(&server, "bad-token", noise(10).into()).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (401, Some("P_UNKNOWN_TOKEN"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_times_out_and_a_user_runs_at_most_two_at_once() {
    let config = "[limits]\nbody_read_timeout_ms = 1500\n";
    let server = TestServer::start(Db::Sqlite, "stall.example", config).await;
    let alice = Device::register(&server, "alice").await.unwrap();
    let t = token(&alice);
    // Two uploads that send a little, then nothing.
    let mut senders = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
        tx.unbounded_send(Ok(vec![1u8; 1000])).unwrap();
        senders.push(tx);
        let body = reqwest::Body::wrap_stream(rx);
        let base = server.base_url.clone();
        let t = t.clone();
        stalled.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = reqwest::Client::new()
                .post(format!("{base}/_parley/client/v1/media"))
                .bearer_auth(t)
                .body(body)
                .send()
                .await
                .expect("answered");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            (status, answer, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, answer) = upload(&server, &t, noise(10).into()).await;
    assert_eq!(
        (status, answer["errcode"].as_str()),
        (429, Some("P_LIMIT_EXCEEDED"))
    );
    for task in stalled {
        let (status, answer, took) = task.await.unwrap();
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (408, Some("P_TIMEOUT"))
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    drop(senders);
    assert_eq!(
        disk_use(&media_dir(&server)),
        (0, 0),
        "no partial file kept"
    );
    // The slots are free again.
    upload_ok(&server, &t, noise(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_uploads_no_message_named_and_keeps_the_others() {
    let config = "[retention]\nunreferenced_media_ms = 1\n";
    let server = TestServer::start(Db::Sqlite, "keep.example", config).await;
    let mut alice = Device::register(&server, "alice").await.unwrap();
    alice.know(&["@alice:keep.example"]);
    let t = token(&alice);
    let named = upload_ok(&server, &t, noise(1000)).await;
    let orphan = upload_ok(&server, &t, noise(1000)).await;
    let group = alice.create_group().await.unwrap();
    send_naming(&mut alice, &group, "a file", vec![named.clone()]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut admin = server.client();
    let root = admin
        .register("root", "a long enough password")
        .await
        .unwrap();
    assert!(make_admin(&server, &root.user_id).status.success());
    let req = RunRetentionRequest {
        messages_older_than_ms: None,
    };
    let pruned = admin.call::<RunRetention>(&(), &req).await.unwrap();
    assert_eq!(pruned.media, 1);
    let (status, _, _) = download(&server, &t, "keep.example", &orphan, None).await;
    assert_eq!(status, 404);
    let (status, _, bytes) = download(&server, &t, "keep.example", &named, None).await;
    assert_eq!((status, bytes.len()), (200, 1000));
    assert_eq!(disk_use(&media_dir(&server)).1, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_servers_media_is_cached_within_the_size_limit_and_the_cache_bound() {
    let (pa, pb) = (free_port(), free_port());
    let peers = federation_toml(&[("a.example", pa), ("b.example", pb)]);
    // A accepts 4 MiB uploads; B fetches at most 1 MiB and caches at most 1.5 MiB.
    let a_config = format!("{peers}\n[limits]\nmax_upload_bytes = 4194304\n");
    let b_config = format!(
        "{peers}\n[limits]\nmax_upload_bytes = 1048576\n[media]\nremote_cache_bytes = 1572864\n"
    );
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
    let alice = Device::register(&a, "alice").await.unwrap();
    let bob = Device::register(&b, "bob").await.unwrap();
    let (ta, tb) = (token(&alice), token(&bob));

    // A file past B's limit is refused, and nothing of it stays on B's disk.
    let big = upload_ok(&a, &ta, noise(3 * MIB)).await;
    let (status, _, body) = download(&b, &tb, "a.example", &big, None).await;
    assert_eq!(
        (status, errcode(&body).as_str()),
        (502, "P_UNREACHABLE_SERVER")
    );
    let after = disk_use(&media_dir(&b));
    println!(
        "B after a 3 MiB remote file past its 1 MiB limit: {} bytes in {} files",
        after.0, after.1
    );
    assert_eq!(after, (0, 0));

    // Three files of 700 KiB: the cache keeps at most 1.5 MiB, dropping the least recently
    // read; a dropped file is fetched again when asked for.
    let ids = [
        upload_ok(&a, &ta, noise(700 * 1024)).await,
        upload_ok(&a, &ta, noise(700 * 1024 + 1)).await,
        upload_ok(&a, &ta, noise(700 * 1024 + 2)).await,
    ];
    for id in &ids {
        let (status, _, bytes) = download(&b, &tb, "a.example", id, None).await;
        assert_eq!(status, 200);
        assert!(bytes.len() >= 700 * 1024);
        let (cached, files) = disk_use(&media_dir(&b));
        println!("B's cache after a fetch: {cached} bytes in {files} files");
        assert!(cached <= 1_572_864, "{cached}");
    }
    let (status, _, bytes) = download(&b, &tb, "a.example", &ids[0], None).await;
    assert_eq!((status, bytes.len()), (200, 700 * 1024));
}
