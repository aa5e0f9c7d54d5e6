//! Account endpoints against a real `parley serve` process, on SQLite and PostgreSQL.

mod common;

use common::{assert_api_error, Db, TestServer};
use parley_client_api::Client;
use serde_json::{json, Value};

const NAME: &str = "test.example";

async fn raw(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, format!("{}{}", server.base_url, path))
}

async fn status_and_body(resp: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = resp.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

on_both_backends!(register_login_whoami_round_trip, |db: Db| async move {
    let server = TestServer::start(db, NAME, "").await;
    let mut alice = server.client();
    let reg = alice.register("alice", "correct horse").await.unwrap();
    assert_eq!(reg.user_id, "@alice:test.example");
    assert_eq!(reg.device_id.len(), 10);
    assert!(reg.device_id.bytes().all(|b| b.is_ascii_uppercase()));
    assert_eq!(reg.expires_in_ms, 15 * 60 * 1000);
    let who = alice.whoami().await.unwrap();
    assert_eq!(
        (who.user_id.as_str(), who.device_id.as_str()),
        ("@alice:test.example", reg.device_id.as_str())
    );

    // Login by localpart makes a new device; by full user id with a device id reuses it.
    let mut second = server.client();
    let login = second.login("alice", "correct horse", None).await.unwrap();
    assert_ne!(login.device_id, reg.device_id);
    let mut third = server.client();
    let again = third
        .login("@alice:test.example", "correct horse", Some(&reg.device_id))
        .await
        .unwrap();
    assert_eq!(again.device_id, reg.device_id);
    let devices = third.devices().await.unwrap().devices;
    let ids: Vec<_> = devices.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&reg.device_id.as_str()) && ids.contains(&login.device_id.as_str()));
    assert!(devices
        .iter()
        .all(|d| d.signature_key.is_none() && d.created_ts > 0));
});

on_both_backends!(
    wrong_password_and_unknown_user_are_forbidden,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        server.client().register("bob", "pw-bob-1").await.unwrap();
        assert_api_error(
            server.client().login("bob", "nope", None).await,
            403,
            "P_FORBIDDEN",
        );
        assert_api_error(
            server.client().login("nobody", "pw-12345", None).await,
            403,
            "P_FORBIDDEN",
        );
        assert_api_error(
            server
                .client()
                .login("@bob:other.example", "pw-bob-1", None)
                .await,
            403,
            "P_FORBIDDEN",
        );
    }
);

on_both_backends!(
    duplicate_and_invalid_usernames_are_refused,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        server.client().register("carol", "pw-12345").await.unwrap();
        assert_api_error(
            server.client().register("carol", "pw2-12345").await,
            409,
            "P_USER_IN_USE",
        );
        assert_api_error(
            server.client().register("Bad Name!", "pw-12345").await,
            400,
            "P_INVALID_USERNAME",
        );
        assert_api_error(
            server.client().register("", "pw-12345").await,
            400,
            "P_INVALID_USERNAME",
        );
        let long = "a".repeat(250);
        assert_api_error(
            server.client().register(&long, "pw-12345").await,
            400,
            "P_INVALID_USERNAME",
        );
    }
);

on_both_backends!(
    missing_garbage_expired_and_foreign_tokens_are_refused,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "[auth]\naccess_token_ttl_ms = 1500").await;
        let other = TestServer::start(db, NAME, "").await;
        assert!(matches!(
            server.client().whoami().await,
            Err(parley_client_api::ClientError::NoToken)
        ));
        let (status, body) =
            status_and_body(raw(&server, reqwest::Method::GET, "/_parley/client/v1/whoami").await)
                .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (401, Some("P_MISSING_TOKEN"))
        );

        let mut garbage = server.client();
        garbage.set_access_token(Some("not.a.jwt".into()));
        assert_api_error(garbage.whoami().await, 401, "P_UNKNOWN_TOKEN");

        // Same server name, different signing key: the signature does not verify.
        let mut foreign = other.client();
        foreign.register("dave", "pw-12345").await.unwrap();
        let mut forged = server.client();
        forged.set_access_token(foreign.access_token().map(str::to_owned));
        assert_api_error(forged.whoami().await, 401, "P_UNKNOWN_TOKEN");

        let mut eve = server.client();
        eve.register("eve", "pw-12345").await.unwrap();
        eve.whoami().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        assert_api_error(eve.whoami().await, 401, "P_UNKNOWN_TOKEN");
    }
);

on_both_backends!(
    logged_out_and_deleted_devices_lose_access_at_once,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        let mut a = server.client();
        a.register("frank", "pw-12345").await.unwrap();
        a.logout().await.unwrap();
        assert_api_error(a.whoami().await, 401, "P_UNKNOWN_TOKEN");

        let mut b = server.client();
        let b_session = b.login("frank", "pw-12345", None).await.unwrap();
        let mut c = server.client();
        c.login("frank", "pw-12345", None).await.unwrap();
        c.delete_device(&b_session.device_id).await.unwrap();
        assert_api_error(b.whoami().await, 401, "P_UNKNOWN_TOKEN");
        assert_api_error(
            b.refresh(&b_session.refresh_token).await,
            401,
            "P_UNKNOWN_TOKEN",
        );
        assert_api_error(
            c.delete_device(&b_session.device_id).await,
            404,
            "P_NOT_FOUND",
        );
        // Another user's device cannot be deleted, and cannot be logged into.
        let mut g = server.client();
        let g_session = g.register("grace", "pw-12345").await.unwrap();
        assert_api_error(
            c.delete_device(&g_session.device_id).await,
            404,
            "P_NOT_FOUND",
        );
        assert_api_error(
            server
                .client()
                .login("frank", "pw-12345", Some(&g_session.device_id))
                .await,
            403,
            "P_FORBIDDEN",
        );
        g.whoami().await.unwrap();
    }
);

on_both_backends!(
    refresh_rotates_and_reuse_revokes_the_session,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        let mut h = server.client();
        let first = h.register("heidi", "pw-12345").await.unwrap();
        let second = h.refresh(&first.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(second.device_id, first.device_id);
        h.whoami().await.unwrap();
        let third = h.refresh(&second.refresh_token).await.unwrap();
        h.whoami().await.unwrap();
        // Reusing a rotated-out token is refused and revokes the device's sessions.
        assert_api_error(
            h.refresh(&first.refresh_token).await,
            401,
            "P_UNKNOWN_TOKEN",
        );
        h.set_access_token(Some(third.access_token.clone()));
        assert_api_error(h.whoami().await, 401, "P_UNKNOWN_TOKEN");
        assert_api_error(
            h.refresh(&third.refresh_token).await,
            401,
            "P_UNKNOWN_TOKEN",
        );
        assert_api_error(h.refresh("pr_never-issued").await, 401, "P_UNKNOWN_TOKEN");
    }
);

on_both_backends!(
    malformed_and_oversized_bodies_get_their_errcodes,
    |db: Db| async move {
        let config = "[limits]\nmax_request_bytes = 1024\n[rate_limits]\nregister = { per_second = 100.0, burst = 100 }";
        let server = TestServer::start(db, NAME, config).await;
        let path = "/_parley/client/v1/register";
        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .header("content-type", "application/json")
                    .body("{not json"),
                400,
                "P_NOT_JSON",
            ),
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .header("content-type", "text/plain")
                    .body(r#"{"username":"x","password":"y"}"#),
                400,
                "P_NOT_JSON",
            ),
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .json(&json!({"username": 5, "password": "y"})),
                400,
                "P_BAD_JSON",
            ),
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .json(&json!({"username": "x"})),
                400,
                "P_BAD_JSON",
            ),
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .json(&json!([1, 2])),
                400,
                "P_BAD_JSON",
            ),
            (
                raw(&server, reqwest::Method::POST, path)
                    .await
                    .json(&json!({"username": "x", "password": "y".repeat(2000)})),
                413,
                "P_TOO_LARGE",
            ),
        ];
        for (request, status, errcode) in cases {
            let (s, body) = status_and_body(request).await;
            assert_eq!(
                (s, body["errcode"].as_str()),
                (status, Some(errcode)),
                "{body}"
            );
            assert!(body["error"].is_string());
        }
        // A chunked body without Content-Length is cut off at the limit too.
        let stream = futures_stream(vec![vec![b' '; 800], vec![b' '; 800]]);
        let (s, body) = status_and_body(
            raw(&server, reqwest::Method::POST, path)
                .await
                .header("content-type", "application/json")
                .body(stream),
        )
        .await;
        assert_eq!((s, body["errcode"].as_str()), (413, Some("P_TOO_LARGE")));
    }
);

fn futures_stream(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(Ok(c)).await.is_err() {
                break;
            }
        }
    });
    reqwest::Body::wrap_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

on_both_backends!(
    unknown_paths_and_wrong_methods_are_unrecognized_with_or_without_token,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        let mut a = server.client();
        let session = a.register("ivan", "pw-12345").await.unwrap();
        for token in [None, Some(session.access_token.as_str())] {
            for (method, path, status) in [
                (reqwest::Method::GET, "/_parley/client/v1/nope", 404),
                (reqwest::Method::GET, "/nope", 404),
                (reqwest::Method::POST, "/_parley/federation/v1/nope", 404),
                (reqwest::Method::GET, "/_parley/client/v1/register", 405),
                (reqwest::Method::POST, "/_parley/client/v1/whoami", 405),
                (reqwest::Method::DELETE, "/_parley/client/versions", 405),
            ] {
                let mut req = raw(&server, method.clone(), path).await;
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let (s, body) = status_and_body(req).await;
                assert_eq!(
                    (s, body["errcode"].as_str()),
                    (status, Some("P_UNRECOGNIZED")),
                    "{method} {path}"
                );
            }
        }
    }
);

on_both_backends!(
    versions_needs_no_token_and_reports_limits,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        let v = server.client().versions().await.unwrap();
        assert_eq!(v.versions, ["v1"]);
        assert_eq!(v.server_name, NAME);
        assert_eq!(v.limits.max_past_epochs, 5);
        assert_eq!(v.limits.max_key_package_lifetime_ms, 90 * 24 * 3600 * 1000);
    }
);

on_both_backends!(
    login_rate_limit_answers_429_with_retry_after,
    |db: Db| async move {
        let server = TestServer::start(
            db,
            NAME,
            "[rate_limits]\nlogin = { per_second = 0.01, burst = 3 }",
        )
        .await;
        server.client().register("judy", "pw-12345").await.unwrap();
        for _ in 0..3 {
            assert_api_error(
                server.client().login("judy", "wrong", None).await,
                403,
                "P_FORBIDDEN",
            );
        }
        let body = assert_api_error(
            server.client().login("judy", "pw-12345", None).await,
            429,
            "P_LIMIT_EXCEEDED",
        );
        assert!(
            body.extra_u64("retry_after_ms").is_some_and(|ms| ms > 1000),
            "{body:?}"
        );
    }
);

on_both_backends!(registration_modes_are_enforced, |db: Db| async move {
    let closed = TestServer::start(db, NAME, "[registration]\nmode = \"closed\"").await;
    assert_api_error(
        closed.client().register("kim", "pw-12345").await,
        403,
        "P_FORBIDDEN",
    );
    let token = TestServer::start(
        db,
        NAME,
        "[registration]\nmode = \"token\"\ntokens = [\"let-me-in\"]",
    )
    .await;
    assert_api_error(
        token.client().register("kim", "kim password").await,
        403,
        "P_FORBIDDEN",
    );
    let request = parley_client_api::accounts::RegisterRequest {
        username: "kim".into(),
        password: "kim password".into(),
        device_name: Some("phone".into()),
        registration_token: Some("let-me-in".into()),
    };
    let session = token
        .client()
        .call::<parley_client_api::accounts::Register>(&(), &request)
        .await
        .unwrap();
    let mut kim = token.client();
    kim.set_access_token(Some(session.access_token));
    assert_eq!(
        kim.devices().await.unwrap().devices[0]
            .display_name
            .as_deref(),
        Some("phone")
    );
});

on_both_backends!(
    restart_keeps_accounts_and_access_tokens_valid,
    |db: Db| async move {
        let mut server = TestServer::start(db, NAME, "").await;
        let mut a = server.client();
        a.register("leo", "pw-12345").await.unwrap();
        server.restart();
        let mut a2 = Client::new(server.base_url.clone());
        a2.set_access_token(a.access_token().map(str::to_owned));
        assert_eq!(a2.whoami().await.unwrap().user_id, "@leo:test.example");
        server
            .client()
            .login("leo", "pw-12345", None)
            .await
            .unwrap();
        assert!(server.stop(), "SIGTERM should end the server with success");
    }
);

on_both_backends!(
    undecodable_path_segments_are_400_bad_json_on_client_routes,
    |db: Db| async move {
        let server = TestServer::start(db, NAME, "").await;
        let mut alice = server.client();
        alice.register("alice", "pw-alice-1").await.unwrap();
        let token = alice.access_token().unwrap().to_owned();
        // `%FF` is not UTF-8: the route matches but its parameter cannot be decoded.
        for (method, path) in [
            (reqwest::Method::DELETE, "/_parley/client/v1/devices/%FF"),
            (reqwest::Method::GET, "/_parley/client/v1/users/%FF/devices"),
            (
                reqwest::Method::PUT,
                "/_parley/client/v1/devices/%FF/signature_key",
            ),
            (
                reqwest::Method::PUT,
                "/_parley/client/v1/groups/%FF/send/t1",
            ),
            (
                reqwest::Method::POST,
                "/_parley/client/v1/groups/%FF/commit",
            ),
            (reqwest::Method::DELETE, "/_parley/client/v1/welcomes/%FF"),
        ] {
            let req = raw(&server, method.clone(), path)
                .await
                .bearer_auth(&token)
                .json(&json!({}));
            let (status, body) = status_and_body(req).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert_eq!(body["errcode"], "P_BAD_JSON", "{method} {path}: {body}");
        }
    }
);
