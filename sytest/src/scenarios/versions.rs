//! `GET /_parley/client/versions` (docs/protocol.md#versions).

use serde_json::Value;

use crate::check::{expect_eq, expect_ok, send};
use crate::fixture::Ctx;
use crate::scenarios::paths;

crate::tests!("versions":
    versions_lists_v1_and_limits_without_a_token,
    versions_reports_the_server_name,
    versions_reports_the_configured_limits,
);

/// The four shared limits, each a positive integer.
const LIMITS: [&str; 4] = [
    "max_past_epochs",
    "max_message_bytes",
    "max_bundle_bytes",
    "max_key_package_lifetime_ms",
];

async fn versions_lists_v1_and_limits_without_a_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let reply = send(hs.request(reqwest::Method::GET, paths::VERSIONS)).await?;
    let body = reply.expect_ok()?;
    let versions = body
        .get("versions")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("no versions array: {}", reply.text))?;
    anyhow::ensure!(
        versions.iter().any(|v| v == "v1"),
        "versions does not list v1: {versions:?}"
    );
    let server_name = body
        .get("server_name")
        .and_then(Value::as_str)
        .unwrap_or("");
    anyhow::ensure!(
        parley_client_api::ids::is_valid_server_name(server_name),
        "server_name {server_name:?} is not a valid server name"
    );
    let limits = body
        .get("limits")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow::anyhow!("no limits object: {}", reply.text))?;
    for name in LIMITS {
        anyhow::ensure!(
            limits
                .get(name)
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0),
            "limits.{name} is not a positive integer: {:?}",
            limits.get(name)
        );
    }
    Ok(())
}

async fn versions_reports_the_server_name(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .server_name("named.example")
        .start()
        .await?;
    let versions = expect_ok(hs.client().versions().await, "GET versions")?;
    expect_eq(
        versions.server_name.as_str(),
        "named.example",
        "server_name",
    )
}

async fn versions_reports_the_configured_limits(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config(
            "[limits]\nmax_past_epochs = 7\nmax_message_bytes = 12345\nmax_bundle_bytes = 234567\nmax_key_package_lifetime_ms = 86400000",
        )
        .start()
        .await?;
    let limits = expect_ok(hs.client().versions().await, "GET versions")?.limits;
    expect_eq(&limits.max_past_epochs, &7, "max_past_epochs")?;
    expect_eq(&limits.max_message_bytes, &12345, "max_message_bytes")?;
    expect_eq(&limits.max_bundle_bytes, &234567, "max_bundle_bytes")?;
    expect_eq(
        &limits.max_key_package_lifetime_ms,
        &86_400_000,
        "max_key_package_lifetime_ms",
    )
}
