//! The media repository (docs/protocol.md#media): raw uploads, downloads whole and by range,
//! the limits, and another server's media fetched through one's own.

use parley_mls::{decrypt_attachment, encrypt_attachment};
use reqwest::Method;
use serde_json::Value;

use crate::check::{expect_eq, send, Reply};
use crate::device::Device;
use crate::fixture::{free_port, skip, Ctx, Server};
use crate::scenarios::server_name_of;

crate::tests!("media":
    an_upload_gets_an_unguessable_id_and_comes_back_whole_and_by_range,
    uploads_over_the_limit_and_unknown_media_are_refused,
    another_servers_media_is_fetched_through_ones_own_and_decrypts,
);

const UPLOAD: &str = "/_parley/client/v1/media";

/// Uploads `bytes` as `token`'s user.
async fn upload(hs: &Server, token: &str, bytes: Vec<u8>) -> anyhow::Result<Reply> {
    send(
        hs.request(Method::POST, UPLOAD)
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(bytes),
    )
    .await
}

/// The raw answer to a download, with `range` if given: status, `Content-Range`, bytes.
async fn download(
    hs: &Server,
    token: &str,
    server_name: &str,
    media_id: &str,
    range: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, Vec<u8>)> {
    let mut request = hs
        .request(Method::GET, &format!("{UPLOAD}/{server_name}/{media_id}"))
        .bearer_auth(token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("download failed: {e}"))?;
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("reading the download: {e}"))?;
    Ok((status, content_range, bytes.to_vec()))
}

fn token(device: &Device) -> anyhow::Result<String> {
    device
        .client
        .access_token()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("not logged in"))
}

/// `n` bytes of a simple pattern that does not repeat within 251 bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn an_upload_gets_an_unguessable_id_and_comes_back_whole_and_by_range(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let server_name = server_name_of(&hs).await?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let bob = Device::register(&hs, &ctx.user("bob")).await?;
    let bytes = pattern(200_000);
    let reply = upload(&hs, &token(&alice)?, bytes.clone()).await?;
    let body = reply.expect_ok()?;
    let media_id = body
        .get("media_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    anyhow::ensure!(
        media_id.len() >= 22 && parley_client_api::media::is_valid_media_id(&media_id),
        "media_id is not 128 bits of [A-Za-z0-9_-]: {media_id:?}"
    );
    expect_eq(
        &body.get("server_name").and_then(Value::as_str),
        &Some(server_name.as_str()),
        "server_name",
    )?;
    expect_eq(
        &body.get("size").and_then(Value::as_u64),
        &Some(200_000),
        "size",
    )?;
    let second = upload(&hs, &token(&alice)?, bytes.clone()).await?;
    anyhow::ensure!(
        second.json.get("media_id").and_then(Value::as_str) != Some(media_id.as_str()),
        "two uploads got the same id"
    );
    // Any user of the server may read it: whole, then by range.
    let (status, _, got) = download(&hs, &token(&bob)?, &server_name, &media_id, None).await?;
    expect_eq(&status, &200, "download status")?;
    anyhow::ensure!(got == bytes, "the bytes came back changed");
    let (status, range, part) = download(
        &hs,
        &token(&bob)?,
        &server_name,
        &media_id,
        Some("bytes=1000-1999"),
    )
    .await?;
    expect_eq(&status, &206, "range status")?;
    expect_eq(
        &range.as_deref(),
        &Some("bytes 1000-1999/200000"),
        "Content-Range",
    )?;
    anyhow::ensure!(part == bytes[1000..2000], "the range came back changed");
    let (status, _, tail) = download(
        &hs,
        &token(&bob)?,
        &server_name,
        &media_id,
        Some("bytes=-10"),
    )
    .await?;
    expect_eq(&status, &206, "suffix range status")?;
    anyhow::ensure!(tail == bytes[199_990..], "the suffix came back changed");
    let reply = send(
        hs.request(Method::GET, &format!("{UPLOAD}/{server_name}/{media_id}"))
            .bearer_auth(token(&bob)?)
            .header("range", "bytes=200000-"),
    )
    .await?;
    reply.expect_error(416, "P_RANGE_NOT_SATISFIABLE")?;
    // No token, no bytes.
    let reply =
        send(hs.request(Method::GET, &format!("{UPLOAD}/{server_name}/{media_id}"))).await?;
    reply.expect_error(401, "P_MISSING_TOKEN")?;
    Ok(())
}

async fn uploads_over_the_limit_and_unknown_media_are_refused(mut ctx: Ctx) -> anyhow::Result<()> {
    if !ctx.is_managed() {
        return Err(skip(
            "sets limits.max_upload_bytes (not possible with --server)",
        ));
    }
    let hs = ctx
        .server("hs1")
        .config("[limits]\nmax_upload_bytes = 65536\n")
        .start()
        .await?;
    let server_name = server_name_of(&hs).await?;
    let versions = crate::check::expect_ok(hs.client().versions().await, "GET /versions")?;
    expect_eq(
        &versions.limits.max_upload_bytes,
        &65_536,
        "max_upload_bytes announced",
    )?;
    let alice = Device::register(&hs, &ctx.user("alice")).await?;
    let t = token(&alice)?;
    upload(&hs, &t, pattern(65_537))
        .await?
        .expect_error(413, "P_TOO_LARGE")?;
    upload(&hs, &t, pattern(65_536)).await?.expect_ok()?;
    for id in ["nosuchmediahere", "bad.id", "x%2Fy"] {
        let reply = send(
            hs.request(Method::GET, &format!("{UPLOAD}/{server_name}/{id}"))
                .bearer_auth(&t),
        )
        .await?;
        reply
            .expect_error(404, "P_NOT_FOUND")
            .map_err(|e| anyhow::anyhow!("media id {id:?}: {e}"))?;
    }
    upload(&hs, "not-a-token", pattern(10))
        .await?
        .expect_error(401, "P_UNKNOWN_TOKEN")?;
    Ok(())
}

async fn another_servers_media_is_fetched_through_ones_own_and_decrypts(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
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
    let alice = Device::register(&hs1, &ctx.user("alice")).await?;
    let bob = Device::register(&hs2, &ctx.user("bob")).await?;
    let file = pattern(300_000);
    let encrypted = encrypt_attachment(&file)?;
    let reply = upload(&hs1, &token(&alice)?, encrypted.ciphertext.clone()).await?;
    let media_id = reply
        .expect_ok()?
        .get("media_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // Bob asks his own server, which fetches it from hs1.
    let (status, _, ciphertext) =
        download(&hs2, &token(&bob)?, "hs1.test", &media_id, None).await?;
    expect_eq(&status, &200, "download through hs2")?;
    let plain = decrypt_attachment(
        &ciphertext,
        encrypted.key.key(),
        encrypted.key.nonce_prefix(),
        &encrypted.sha256,
    )?;
    anyhow::ensure!(plain == file, "the file decrypted to other bytes");
    let (status, range, _) = download(
        &hs2,
        &token(&bob)?,
        "hs1.test",
        &media_id,
        Some("bytes=0-99"),
    )
    .await?;
    expect_eq(&status, &206, "range through hs2")?;
    expect_eq(
        &range,
        &Some(format!("bytes 0-99/{}", ciphertext.len())),
        "Content-Range through hs2",
    )?;
    let (status, _, _) = download(&hs2, &token(&bob)?, "hs1.test", "nosuchmediahere", None).await?;
    expect_eq(&status, &404, "unknown media of hs1 through hs2")?;
    Ok(())
}
