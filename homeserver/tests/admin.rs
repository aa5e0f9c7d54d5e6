//! The admin API and `parley admin`, against real server processes on both backends.

mod common;

use std::process::Command;

use common::{assert_api_error, federated_pair, make_admin, Db, TestServer};
use parley_client_api::accounts::{Register, RegisterRequest};
use parley_client_api::admin::{
    AclRuleRequest, AddAclRule, AuditLog, AuditLogRequest, CreateRegistrationToken,
    CreateTokenRequest, CreateUser, CreateUserRequest, DeactivateUser, GetServerAcl, GetUser,
    ListRegistrationTokens, ListUsers, ListUsersRequest, RemoveAclRule, ResetPassword,
    ResetPasswordRequest, RevokeRegistrationToken, SetAdmin, SetAdminRequest,
};
use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::params::UserPath;
use parley_client_api::{Client, ClientError};
use parley_sytest::device::{Device, PASSWORD};

fn user_path(user_id: &str) -> UserPath {
    UserPath {
        user_id: user_id.parse().expect("user id"),
    }
}

/// The config token of servers in token mode, for their admin to register with.
const BOOT_TOKEN: &str = "boot-token-for-the-admin";

/// Registers `name` (with [`BOOT_TOKEN`]) and returns a client holding its token.
async fn registered(server: &TestServer, name: &str) -> Client {
    let mut client = server.client();
    let req = RegisterRequest {
        username: name.into(),
        password: PASSWORD.into(),
        device_name: None,
        registration_token: Some(BOOT_TOKEN.into()),
    };
    let session = client.call::<Register>(&(), &req).await.expect("register");
    client.set_access_token(Some(session.access_token));
    client
}

/// A server with an admin `root` (made by the CLI) and the admin's client.
async fn with_admin(db: Db, name: &str, extra_toml: &str) -> (TestServer, Client) {
    let server = TestServer::start(db, name, extra_toml).await;
    let admin = registered(&server, "root").await;
    let out = make_admin(&server, &format!("@root:{name}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (server, admin)
}

on_both_backends!(
    only_admins_reach_the_admin_api_and_the_cli_grants_the_first_admin,
    |db: Db| async move {
        let server = TestServer::start(db, "adm.example", "").await;
        let root = registered(&server, "root").await;
        let _bob = registered(&server, "bob").await;
        let everyone = ListUsersRequest::default();
        // Not an admin yet: 403, and nothing listed.
        assert_api_error(
            root.call::<ListUsers>(&(), &everyone).await,
            403,
            "P_FORBIDDEN",
        );
        // No token at all: 401.
        let bare = reqwest::get(format!("{}/_parley/admin/v1/users", server.base_url))
            .await
            .unwrap();
        assert_eq!(bare.status().as_u16(), 401);
        // An unknown user is refused by the CLI, with a clear message and a failing exit.
        let out = make_admin(&server, "@nobody:adm.example");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no user @nobody:adm.example"));
        // The CLI, on the database of the running server.
        let out = make_admin(&server, "@root:adm.example");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = root.call::<ListUsers>(&(), &everyone).await.unwrap();
        let ids: Vec<&str> = listed.users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["@bob:adm.example", "@root:adm.example"]);
        assert!(listed.users[1].admin && !listed.users[0].admin);
        // Search (case-insensitive, `%` and `_` taken literally) and paging.
        let search = |s: &str| ListUsersRequest {
            search: Some(s.into()),
            ..Default::default()
        };
        let found = root.call::<ListUsers>(&(), &search("BO")).await.unwrap();
        assert_eq!(found.users.len(), 1);
        let found = root.call::<ListUsers>(&(), &search("%")).await.unwrap();
        assert!(found.users.is_empty());
        let first = ListUsersRequest {
            limit: Some(1),
            ..Default::default()
        };
        let page = root.call::<ListUsers>(&(), &first).await.unwrap();
        assert_eq!(page.next_from.as_deref(), Some("@bob:adm.example"));
        let next = ListUsersRequest {
            from: page.next_from,
            ..Default::default()
        };
        let page = root.call::<ListUsers>(&(), &next).await.unwrap();
        assert_eq!(page.users[0].user_id, "@root:adm.example");
        // One user with their devices; a remote or unknown one is 404.
        let bob = root
            .call::<GetUser>(&user_path("@bob:adm.example"), &NoQuery {})
            .await
            .unwrap();
        assert_eq!(bob.devices.len(), 1);
        assert_api_error(
            root.call::<GetUser>(&user_path("@bob:elsewhere.example"), &NoQuery {})
                .await,
            404,
            "P_NOT_FOUND",
        );
        // Every action is in the audit log, newest first, the CLI's included.
        let log = root
            .call::<AuditLog>(&(), &AuditLogRequest::default())
            .await
            .unwrap();
        let actions: Vec<(&str, &str)> = log
            .entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(actions.last(), Some(&("cli", "set_admin")));
        assert_eq!(actions[0], ("@root:adm.example", "get_user"));
        assert_eq!(
            actions.iter().filter(|(_, a)| *a == "list_users").count(),
            5
        );
    }
);

on_both_backends!(
    created_users_log_in_and_a_reset_password_ends_their_sessions,
    |db: Db| async move {
        let (server, root) = with_admin(db, "cr.example", "").await;
        let req = CreateUserRequest {
            username: "dana".into(),
            password: PASSWORD.into(),
            admin: false,
        };
        let dana = root.call::<CreateUser>(&(), &req).await.unwrap();
        assert_eq!(dana.user_id, "@dana:cr.example");
        // What registration refuses, creation refuses too.
        assert_api_error(
            root.call::<CreateUser>(&(), &req).await,
            409,
            "P_USER_IN_USE",
        );
        let weak = CreateUserRequest {
            username: "erin".into(),
            password: "short".into(),
            admin: false,
        };
        assert_api_error(
            root.call::<CreateUser>(&(), &weak).await,
            400,
            "P_WEAK_PASSWORD",
        );
        let mut dana = server.client();
        dana.login("dana", PASSWORD, None).await.unwrap();
        dana.whoami().await.unwrap();
        let reset = ResetPasswordRequest {
            password: "a brand new passphrase".into(),
            logout_devices: true,
        };
        root.call::<ResetPassword>(&user_path("@dana:cr.example"), &reset)
            .await
            .unwrap();
        assert_api_error(dana.whoami().await, 401, "P_UNKNOWN_TOKEN");
        assert_api_error(
            server.client().login("dana", PASSWORD, None).await,
            403,
            "P_FORBIDDEN",
        );
        server
            .client()
            .login("dana", "a brand new passphrase", None)
            .await
            .unwrap();
        // An admin may grant the flag, but not withdraw their own.
        root.call::<SetAdmin>(
            &user_path("@dana:cr.example"),
            &SetAdminRequest { admin: true },
        )
        .await
        .unwrap();
        assert_api_error(
            root.call::<SetAdmin>(
                &user_path("@root:cr.example"),
                &SetAdminRequest { admin: false },
            )
            .await,
            403,
            "P_FORBIDDEN",
        );
    }
);

on_both_backends!(
    deactivation_ends_sessions_refuses_login_and_asks_the_groups_to_remove_the_devices,
    |db: Db| async move {
        let (server, root) = with_admin(db, "de.example", "").await;
        let mut carol = Device::register(&server, "carol").await.unwrap();
        let mut bob = Device::register(&server, "bob").await.unwrap();
        carol.know(&["@bob:de.example"]);
        bob.know(&["@carol:de.example"]);
        let group = carol.create_group().await.unwrap();
        carol.add(&group, &["@bob:de.example"]).await.unwrap();
        bob.sync_all().await.unwrap();
        carol.sync_all().await.unwrap();
        let bob_device = bob.me();

        let answer = root
            .call::<DeactivateUser>(&user_path("@bob:de.example"), &Empty {})
            .await
            .unwrap();
        assert_eq!(
            answer.devices_removed,
            std::slice::from_ref(&bob_device.device_id)
        );
        assert_eq!(answer.groups_notified, std::slice::from_ref(&group));
        // Sessions end at once, login is refused with its own errcode, the devices are gone.
        assert_api_error(bob.client.whoami().await, 401, "P_UNKNOWN_TOKEN");
        assert_api_error(
            server.client().login("bob", PASSWORD, None).await,
            403,
            "P_USER_DEACTIVATED",
        );
        let shown = root
            .call::<GetUser>(&user_path("@bob:de.example"), &NoQuery {})
            .await
            .unwrap();
        assert!(shown.devices.is_empty() && shown.user.deactivated_ts.is_some());
        // The name stays taken.
        assert_api_error(
            server.client().register("bob", PASSWORD).await,
            409,
            "P_USER_IN_USE",
        );
        // An admin cannot deactivate themselves.
        assert_api_error(
            root.call::<DeactivateUser>(&user_path("@root:de.example"), &Empty {})
                .await,
            403,
            "P_FORBIDDEN",
        );
        // Carol reads the notice and commits the removal, which the hub accepts.
        carol
            .sync_until(10, "the notice", |d| !d.notices.is_empty())
            .await
            .unwrap();
        let (in_group, notice) = &carol.notices[0];
        assert_eq!(in_group, &group);
        assert_eq!(notice["type"], "member_deactivated");
        assert_eq!(notice["user_id"], "@bob:de.example");
        assert_eq!(
            notice["devices"][0]["device_id"],
            bob_device.device_id.as_str()
        );
        carol.remove(&group, &[bob_device]).await.unwrap();
        carol.send_text(&group, "still here").await.unwrap();
    }
);

on_both_backends!(
    a_remote_users_deactivation_makes_the_hub_of_their_groups_ask_its_members_to_remove_them,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "").await;
        let root_b = registered(&b, "root").await;
        let out = make_admin(&b, "@root:b.example");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut carol = Device::register(&a, "carol").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        carol.know(&["@bob:b.example"]);
        bob.know(&["@carol:a.example"]);
        let group = carol.create_group().await.unwrap();
        carol.add(&group, &["@bob:b.example"]).await.unwrap();
        bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
        let bob_device = bob.me();

        // b deactivates bob: b hosts none of his groups, so it notifies none itself...
        let answer = root_b
            .call::<DeactivateUser>(&user_path("@bob:b.example"), &Empty {})
            .await
            .unwrap();
        assert!(answer.groups_notified.is_empty());
        // ... but a, the hub, learns his empty device list and writes the notice.
        carol
            .sync_until(20, "the notice", |d| !d.notices.is_empty())
            .await
            .unwrap();
        let (in_group, notice) = &carol.notices[0];
        assert_eq!(in_group, &group);
        assert_eq!(notice["type"], "member_deactivated");
        assert_eq!(notice["user_id"], "@bob:b.example");
        assert_eq!(
            notice["devices"][0]["device_id"],
            bob_device.device_id.as_str()
        );
        carol.remove(&group, &[bob_device]).await.unwrap();
        carol.send_text(&group, "still here").await.unwrap();
    }
);

/// Registers `name` with `token`.
async fn register_with_token(
    server: &TestServer,
    name: &str,
    token: &str,
) -> Result<(), ClientError> {
    let req = RegisterRequest {
        username: name.into(),
        password: PASSWORD.into(),
        device_name: None,
        registration_token: Some(token.into()),
    };
    server.client().call::<Register>(&(), &req).await.map(drop)
}

on_both_backends!(
    registration_tokens_are_spent_once_per_registration_expire_and_can_be_revoked,
    |db: Db| async move {
        let (server, root) = with_admin(
            db,
            "tok.example",
            &format!(
                "[registration]\nmode = \"token\"\ntokens = [\"{BOOT_TOKEN}\"]\n\
                 [rate_limits]\nregister = {{ per_second = 100.0, burst = 100 }}"
            ),
        )
        .await;
        let created = root
            .call::<CreateRegistrationToken>(
                &(),
                &CreateTokenRequest {
                    uses_allowed: Some(3),
                    expires_ts: None,
                },
            )
            .await
            .unwrap();
        // Eight registrations race for three uses: exactly three get in.
        let mut racing = Vec::new();
        for i in 0..8 {
            let (base, token) = (server.base_url.clone(), created.token.clone());
            racing.push(tokio::spawn(async move {
                let req = RegisterRequest {
                    username: format!("racer{i}"),
                    password: PASSWORD.into(),
                    device_name: None,
                    registration_token: Some(token),
                };
                Client::new(base).call::<Register>(&(), &req).await.is_ok()
            }));
        }
        let mut won = 0;
        for r in racing {
            won += usize::from(r.await.unwrap());
        }
        assert_eq!(won, 3);
        assert_api_error(
            register_with_token(&server, "late", &created.token).await,
            403,
            "P_FORBIDDEN",
        );
        // A registration refused after the token is checked gives its use back.
        let second = root
            .call::<CreateRegistrationToken>(
                &(),
                &CreateTokenRequest {
                    uses_allowed: Some(1),
                    expires_ts: None,
                },
            )
            .await
            .unwrap();
        assert_api_error(
            register_with_token(&server, "root", &second.token).await,
            409,
            "P_USER_IN_USE",
        );
        register_with_token(&server, "fresh", &second.token)
            .await
            .unwrap();
        // Expired, and revoked.
        let expired = root
            .call::<CreateRegistrationToken>(
                &(),
                &CreateTokenRequest {
                    uses_allowed: None,
                    expires_ts: Some(1),
                },
            )
            .await
            .unwrap();
        assert_api_error(
            register_with_token(&server, "tooslow", &expired.token).await,
            403,
            "P_FORBIDDEN",
        );
        let open = root
            .call::<CreateRegistrationToken>(&(), &CreateTokenRequest::default())
            .await
            .unwrap();
        let listed = root
            .call::<ListRegistrationTokens>(&(), &NoQuery {})
            .await
            .unwrap();
        assert_eq!(listed.tokens.len(), 4);
        let spent = listed
            .tokens
            .iter()
            .find(|t| t.token_id == created.info.token_id)
            .unwrap();
        assert_eq!((spent.uses, spent.uses_allowed), (3, Some(3)));
        // The secret is never listed.
        let text = serde_json::to_string(&listed).unwrap();
        assert!(!text.contains(&created.token) && !text.contains(&open.token));
        let path =
            serde_json::from_value(serde_json::json!({"token_id": open.info.token_id})).unwrap();
        root.call::<RevokeRegistrationToken>(&path, &NoQuery {})
            .await
            .unwrap();
        assert_api_error(
            register_with_token(&server, "revoked", &open.token).await,
            403,
            "P_FORBIDDEN",
        );
        assert_api_error(
            root.call::<RevokeRegistrationToken>(&path, &NoQuery {})
                .await,
            404,
            "P_NOT_FOUND",
        );
    }
);

/// A request this server refused to make: the ACL forbids the destination.
fn refused_by_acl<T: std::fmt::Debug>(result: Result<T, ClientError>) {
    let body = assert_api_error(result, 502, "P_UNREACHABLE_SERVER");
    assert!(body.error.contains("not allowed"), "{}", body.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_acl_rule_holds_at_once_survives_a_restart_and_can_be_removed() {
    let (a, mut b) = federated_pair(Db::Sqlite, "").await;
    let _alice = registered(&a, "alice").await;
    // Remote device lists are cached once fetched: each check after a change asks for one
    // not fetched successfully yet.
    let _al2 = registered(&a, "al2").await;
    let root = registered(&b, "root").await;
    let out = make_admin(&b, "@root:b.example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = "@alice:a.example";
    // Federation works before the rule.
    root.user_devices(alice).await.unwrap();
    let deny = AclRuleRequest {
        pattern: "a.example".into(),
        rule: "deny".into(),
    };
    root.call::<AddAclRule>(&(), &deny).await.unwrap();
    // Outbound refused at once (this server will not ask a.example).
    let al2 = "@al2:a.example";
    refused_by_acl(root.user_devices(al2).await);
    // Kept across a restart.
    b.restart();
    let mut root = b.client();
    root.login("root", PASSWORD, None).await.unwrap();
    let acl = root.call::<GetServerAcl>(&(), &NoQuery {}).await.unwrap();
    assert_eq!(acl.runtime.len(), 1);
    assert_eq!(acl.runtime[0].pattern, "a.example");
    refused_by_acl(root.user_devices(al2).await);
    // Bad rules are refused; removing the rule restores federation.
    let bad = AclRuleRequest {
        pattern: "a.example".into(),
        rule: "maybe".into(),
    };
    assert_api_error(root.call::<AddAclRule>(&(), &bad).await, 400, "P_BAD_JSON");
    let long = AclRuleRequest {
        pattern: "a".repeat(300),
        rule: "deny".into(),
    };
    assert_api_error(root.call::<AddAclRule>(&(), &long).await, 400, "P_BAD_JSON");
    root.call::<RemoveAclRule>(&(), &deny).await.unwrap();
    root.user_devices(al2).await.unwrap();
    assert_api_error(
        root.call::<RemoveAclRule>(&(), &deny).await,
        404,
        "P_NOT_FOUND",
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_requests_are_rate_limited_per_admin_and_pages_are_bounded() {
    let (server, root) = with_admin(Db::Sqlite, "rl.example", "").await;
    // Burst 100 at 10/s: 130 requests at once see 429 before the end.
    let mut limited = 0;
    let huge = ListUsersRequest {
        limit: Some(1_000_000),
        ..Default::default()
    };
    for _ in 0..130 {
        match root.call::<ListUsers>(&(), &huge).await {
            Ok(page) => assert!(page.users.len() <= 1000),
            Err(ClientError::Api { status: 429, .. }) => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(limited >= 20, "only {limited} of 130 were limited");
    drop(server);
}

on_both_backends!(
    the_cli_drives_the_admin_api_with_an_admin_token,
    |db: Db| async move {
        let (server, root) = with_admin(db, "cli.example", "").await;
        let token = root.access_token().unwrap().to_owned();
        let cli = |args: &[&str], stdin: &str| {
            use std::io::Write;
            let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
                .arg("admin")
                .args(args)
                .env("PARLEY_ADMIN_URL", &server.base_url)
                .env("PARLEY_ADMIN_TOKEN", &token)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run parley admin");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = cli(&["users", "create", "zoe"], "zoe's long passphrase\n");
        assert!(ok, "{err}");
        assert!(out.contains("\"@zoe:cli.example\""), "{out}");
        let (ok, out, _) = cli(&["users", "list", "--search", "zo"], "");
        assert!(
            ok && out.contains("@zoe:cli.example") && !out.contains("@root"),
            "{out}"
        );
        let (ok, out, _) = cli(&["tokens", "create", "--uses", "2"], "");
        assert!(ok && out.contains("\"token\""), "{out}");
        let (ok, out, _) = cli(&["acl", "add", "deny", "*.spam.example"], "");
        assert!(ok, "{out}");
        let (ok, out, _) = cli(&["acl", "show"], "");
        assert!(ok && out.contains("*.spam.example"), "{out}");
        let (ok, _, _) = cli(&["users", "deactivate", "@zoe:cli.example"], "");
        assert!(ok);
        // A refusal is a failing exit with the server's errcode.
        let (ok, _, err) = cli(&["users", "show", "@nobody:cli.example"], "");
        assert!(!ok && err.contains("P_NOT_FOUND"), "{err}");
        let (ok, out, _) = cli(&["audit", "--limit", "3"], "");
        assert!(ok && out.contains("deactivate_user"), "{out}");
        // The password never reaches the audit log.
        let (_, out, _) = cli(&["audit"], "");
        assert!(!out.contains("passphrase"));
    }
);
