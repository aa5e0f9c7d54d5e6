//! Client API hygiene (docs/protocol.md#general-rules): routing before authentication, body rules,
//! size limits, the error body.

use reqwest::Method;
use serde_json::{json, Value};

use crate::check::{expect_ok, send};
use crate::fixture::{Ctx, Server};
use crate::scenarios::{paths, PASSWORD};

crate::tests!("hygiene":
    unknown_paths_are_404_unrecognized_on_every_prefix,
    unknown_paths_are_404_unrecognized_even_with_a_token,
    wrong_methods_are_405_unrecognized_with_and_without_a_token,
    body_that_is_not_json_is_400_not_json,
    body_without_json_content_type_is_400_not_json,
    body_missing_a_field_is_400_bad_json,
    body_with_a_mistyped_field_is_400_bad_json,
    body_that_is_an_array_is_400_bad_json,
    body_over_max_request_bytes_is_413_too_large,
    chunked_body_over_max_request_bytes_is_413_too_large,
    body_within_max_request_bytes_is_accepted,
);

/// Every path prefix, and one the protocol does not use.
const PREFIXES: [&str; 5] = [
    "/_parley/client/v1",
    "/_parley/federation/v1",
    "/_parley/key/v1",
    "/_parley/client",
    "/sytest-random",
];

/// Known client endpoints with a method they do not take.
/// (Federation and key endpoints belong here once servers have them.)
const WRONG_METHODS: [(Method, &str); 7] = [
    (Method::GET, paths::REGISTER),
    (Method::PUT, paths::LOGIN),
    (Method::POST, paths::WHOAMI),
    (Method::PUT, paths::WHOAMI),
    (Method::GET, paths::LOGOUT),
    (Method::POST, paths::DEVICES),
    (Method::DELETE, paths::VERSIONS),
];

async fn check_unknown_paths(hs: &Server, token: Option<&str>) -> anyhow::Result<()> {
    for prefix in PREFIXES {
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let path = format!("{prefix}/sytest-no-such-endpoint/x");
            let mut request = hs.request(method.clone(), &path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if method == Method::POST || method == Method::PUT {
                request = request.json(&json!({}));
            }
            send(request)
                .await?
                .expect_error(404, "P_UNRECOGNIZED")
                .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        }
    }
    Ok(())
}

async fn unknown_paths_are_404_unrecognized_on_every_prefix(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    check_unknown_paths(&hs, None).await
}

async fn unknown_paths_are_404_unrecognized_even_with_a_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let session = expect_ok(
        hs.client().register(&ctx.user("hyg"), PASSWORD).await,
        "register",
    )?;
    check_unknown_paths(&hs, Some(&session.access_token)).await?;
    check_unknown_paths(&hs, Some("garbage-token")).await
}

async fn wrong_methods_are_405_unrecognized_with_and_without_a_token(
    mut ctx: Ctx,
) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let session = expect_ok(
        hs.client().register(&ctx.user("hyg"), PASSWORD).await,
        "register",
    )?;
    for token in [None, Some(session.access_token.as_str())] {
        for (method, path) in WRONG_METHODS {
            let mut request = hs.request(method.clone(), path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            send(request)
                .await?
                .expect_error(405, "P_UNRECOGNIZED")
                .map_err(|e| {
                    let with = if token.is_some() { "with" } else { "without" };
                    anyhow::anyhow!("{method} {path} {with} a token: {e}")
                })?;
        }
    }
    Ok(())
}

/// Sends `body` with `content_type` to register and to login; both must refuse it alike.
async fn check_body(
    hs: &Server,
    content_type: Option<&str>,
    body: &str,
    status: u16,
    errcode: &str,
) -> anyhow::Result<()> {
    for path in [paths::REGISTER, paths::LOGIN] {
        let mut request = hs.request(Method::POST, path).body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        send(request)
            .await?
            .expect_error(status, errcode)
            .map_err(|e| anyhow::anyhow!("POST {path} {content_type:?} {body:.60}: {e}"))?;
    }
    Ok(())
}

async fn body_that_is_not_json_is_400_not_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    for body in [
        "{not json",
        "username=a&password=b",
        "{\"username\": \"a\",}",
    ] {
        check_body(&hs, Some("application/json"), body, 400, "P_NOT_JSON").await?;
    }
    Ok(())
}

async fn body_without_json_content_type_is_400_not_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let body = json!({"username": ctx.user("ct"), "password": PASSWORD}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        check_body(&hs, content_type, &body, 400, "P_NOT_JSON").await?;
    }
    Ok(())
}

/// Checks that each of `bodies`, sent as JSON to register and to login, is 400 `P_BAD_JSON`.
async fn expect_bad_json(hs: &Server, bodies: &[Value]) -> anyhow::Result<()> {
    for body in bodies {
        check_body(
            hs,
            Some("application/json"),
            &body.to_string(),
            400,
            "P_BAD_JSON",
        )
        .await?;
    }
    Ok(())
}

async fn body_missing_a_field_is_400_bad_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let user = ctx.user("missing");
    expect_bad_json(
        &hs,
        &[
            json!({"username": user}),
            json!({"password": PASSWORD}),
            json!({}),
        ],
    )
    .await
}

async fn body_with_a_mistyped_field_is_400_bad_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    let user = ctx.user("typed");
    expect_bad_json(
        &hs,
        &[
            json!({"username": 5, "password": PASSWORD}),
            json!({"username": user, "password": ["x"]}),
            json!({"username": user, "password": PASSWORD, "device_name": 12}),
        ],
    )
    .await
}

async fn body_that_is_an_array_is_400_bad_json(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").start().await?;
    for body in ["[1, 2]", "\"username\"", "42", "null"] {
        check_body(&hs, Some("application/json"), body, 400, "P_BAD_JSON").await?;
    }
    Ok(())
}

/// A server whose account endpoints take at most 1024 bytes.
const SMALL_LIMIT: &str = "[limits]\nmax_request_bytes = 1024";

async fn body_over_max_request_bytes_is_413_too_large(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").config(SMALL_LIMIT).start().await?;
    let body = json!({"username": ctx.user("big"), "password": "p".repeat(2000)});
    for path in [paths::REGISTER, paths::LOGIN] {
        send(hs.request(Method::POST, path).json(&body))
            .await?
            .expect_error(413, "P_TOO_LARGE")
            .map_err(|e| anyhow::anyhow!("POST {path} with 2 kB: {e}"))?;
    }
    Ok(())
}

async fn chunked_body_over_max_request_bytes_is_413_too_large(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").config(SMALL_LIMIT).start().await?;
    // No Content-Length: the server has to count while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 800]), Ok(vec![b' '; 800]), Ok(b"{}".to_vec())];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    send(
        hs.request(Method::POST, paths::REGISTER)
            .header("content-type", "application/json")
            .body(body),
    )
    .await?
    .expect_error(413, "P_TOO_LARGE")?;
    Ok(())
}

async fn body_within_max_request_bytes_is_accepted(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").config(SMALL_LIMIT).start().await?;
    let body = json!({"username": ctx.user("fits"), "password": "p".repeat(900)});
    let reply = send(hs.request(Method::POST, paths::REGISTER).json(&body)).await?;
    reply
        .expect_ok()
        .map_err(|e| anyhow::anyhow!("a {} byte body: {e}", body.to_string().len()))?;
    Ok(())
}
