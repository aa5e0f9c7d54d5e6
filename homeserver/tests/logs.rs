//! Logs carry no secrets: two real servers log every line at `RUST_LOG=trace` as JSON while a
//! whole scenario runs (token registration, login, refresh, refresh-token reuse, a federated
//! group, messages both ways, a WebSocket, logout), and no line of either holds an access or
//! refresh token, a password, the registration token, a signing key, a password hash or a
//! message's plaintext, in any of the encodings a logger might use.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{federation_toml, free_port, Db, TestServer};
use futures::{SinkExt, StreamExt};
use parley_client_api::accounts::{Register, RegisterRequest, SessionResponse};
use parley_client_api::Client;
use parley_schema::{Store, StoreConfig};
use parley_sytest::device::Device;
use rand::distributions::{Alphanumeric, DistString};

/// A fresh random secret with a readable prefix.
fn secret(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    )
}

/// Every secret of the run, each with the forms in which a log line could show it.
#[derive(Default)]
struct Secrets(Vec<(String, Vec<String>)>);

impl Secrets {
    /// Random key bytes as hex, base64 (standard and URL-safe, padded or not) and a Rust byte
    /// list, and the same for their first 15 bytes (a truncated print).
    fn key(&mut self, what: &str, bytes: &[u8]) {
        let mut forms = encodings(bytes);
        let prefix = &bytes[..15.min(bytes.len())];
        // A byte list unterminated: the print may go on with the next byte.
        let truncated = encodings(prefix)
            .into_iter()
            .map(|f| f.trim_end_matches(']').to_owned());
        forms.extend(truncated);
        self.0.push((what.to_owned(), forms));
    }

    /// Text as itself and its bytes in the encodings of [`Secrets::key`] (whole only: the
    /// start of a token or hash is a common header, not a secret).
    fn text(&mut self, what: &str, text: &str) {
        let mut forms = encodings(text.as_bytes());
        forms.push(text.to_owned());
        self.0.push((what.to_owned(), forms));
    }

    /// A JWT as text, and its signature alone.
    fn jwt(&mut self, what: &str, token: &str) {
        self.text(what, token);
        if let Some(signature) = token.rsplit('.').next() {
            self.text(&format!("{what} (signature)"), signature);
        }
    }

    /// The tokens of one session response.
    fn session(&mut self, what: &str, s: &SessionResponse) {
        self.jwt(&format!("access token of {what}"), &s.access_token);
        self.text(&format!("refresh token of {what}"), &s.refresh_token);
    }
}

fn encodings(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        format!("{bytes:?}"),
    ]
}

/// Registers `name` on `server` with the registration token and sets the device up.
async fn register(
    server: &TestServer,
    name: &str,
    password: &str,
    token: &str,
) -> (Device, SessionResponse) {
    let mut client = server.client();
    let request = RegisterRequest {
        username: name.into(),
        password: password.into(),
        device_name: Some("phone".into()),
        registration_token: Some(token.into()),
    };
    let session = client
        .call::<Register>(&(), &request)
        .await
        .expect("register with the token");
    client.set_access_token(Some(session.access_token.clone()));
    let device = Device::setup(
        client,
        session.user_id.clone(),
        session.device_id.clone(),
        3,
        true,
    )
    .await
    .expect("set the device up");
    (device, session)
}

/// Syncs `device` until it has received `text` in `group` (about 30 s at most).
async fn sync_until_text(device: &mut Device, group: &str, text: &str) {
    for _ in 0..150 {
        device.sync(200).await.unwrap();
        if device.texts(group).iter().any(|t| t == text) {
            return;
        }
    }
    panic!("{} did not receive {text:?}", device.user_id);
}

/// The signing keys a server keeps in its data dir: the JWT key (raw bytes) and the seed of
/// the federation key (`ed25519 <version> <base64 seed>`).
fn add_signing_keys(secrets: &mut Secrets, server: &TestServer) {
    let name = &server.server_name;
    let jwt = std::fs::read(server.data_dir().join("jwt_signing.key")).expect("jwt key");
    secrets.key(&format!("JWT signing key of {name}"), &jwt);
    let line = std::fs::read_to_string(
        server
            .data_dir()
            .join(parley_federation::keys::KEY_FILE_NAME),
    )
    .expect("federation key");
    let seed = line.split_whitespace().nth(2).expect("seed field");
    secrets.text(&format!("federation key seed of {name} (text)"), seed);
    let bytes = STANDARD_NO_PAD
        .decode(seed.trim_end_matches('='))
        .expect("seed is base64");
    secrets.key(&format!("federation key seed of {name}"), &bytes);
}

/// The password hashes stored for `users` (the server is stopped: nothing else writes).
async fn add_password_hashes(secrets: &mut Secrets, server: &TestServer, users: &[&str]) {
    let store = Store::connect(&server.database, &StoreConfig::default())
        .await
        .expect("open the stopped server's database");
    for user in users {
        let stored = store
            .accounts()
            .user(user)
            .await
            .expect("read user")
            .expect("user");
        let hash = &stored.password_hash;
        secrets.text(&format!("password hash of {user}"), hash);
        // `$argon2id$v=19$m=…,t=…,p=…$<salt>$<digest>`: the digest alone too.
        if let Some(digest) = hash.rsplit('$').next() {
            secrets.text(&format!("password digest of {user}"), digest);
        }
    }
    store.close();
}

/// Every line of `server`'s log, checked to be JSON, with the levels seen.
fn log_lines(server: &TestServer) -> Vec<String> {
    let path = server.log_path().expect("logged server");
    let text = std::fs::read_to_string(path).expect("read server log");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string(), "no level: {line}");
    }
    lines
}

on_both_backends!(
    no_log_line_of_either_server_holds_a_secret_even_at_trace_level,
    |db: Db| async move {
        let mut secrets = Secrets::default();
        let registration_token = secret("regtoken");
        secrets.text("registration token", &registration_token);
        let (pa, pb) = (free_port(), free_port());
        let toml = format!(
            "log.format = \"json\"\n{}\n[registration]\nmode = \"token\"\ntokens = [\"{registration_token}\"]\n",
            federation_toml(&[("a.example", pa), ("b.example", pb)])
        );
        let mut a =
            TestServer::start_logged(db, "a.example", &toml, &format!("127.0.0.1:{pa}"), "trace")
                .await;
        let mut b =
            TestServer::start_logged(db, "b.example", &toml, &format!("127.0.0.1:{pb}"), "trace")
                .await;
        let (alice_id, bob_id) = ("@alice:a.example", "@bob:b.example");
        // Accounts: registration with the token, a wrong password, a second device, refresh,
        // reuse of a rotated-out refresh token, logout.
        let (alice_pw, bob_pw, wrong_pw) = (secret("pwalice"), secret("pwbob"), secret("pwwrong"));
        for (what, pw) in [
            ("alice's password", &alice_pw),
            ("bob's password", &bob_pw),
            ("a wrong password", &wrong_pw),
        ] {
            secrets.text(what, pw);
        }
        let (mut alice, alice_session) =
            register(&a, "alice", &alice_pw, &registration_token).await;
        secrets.session("alice's registration", &alice_session);
        let (mut bob, bob_session) = register(&b, "bob", &bob_pw, &registration_token).await;
        for d in [&mut alice, &mut bob] {
            d.know(&[alice_id, bob_id]);
        }
        secrets.session("bob's registration", &bob_session);
        let refused = Client::new(a.base_url.clone())
            .login("alice", &wrong_pw, None)
            .await;
        assert!(refused.is_err(), "a wrong password logged in");
        let mut phone = a.client();
        let login = phone.login("alice", &alice_pw, None).await.expect("login");
        secrets.session("alice's login", &login);
        let refreshed = phone.refresh(&login.refresh_token).await.expect("refresh");
        secrets.session("alice's refresh", &refreshed);
        assert!(
            a.client().refresh(&login.refresh_token).await.is_err(),
            "a rotated-out refresh token was accepted again"
        );
        // The reuse revoked the phone's session; another device logs out.
        let mut tablet = a.client();
        let tablet_login = tablet.login("alice", &alice_pw, None).await.expect("login");
        secrets.session("alice's tablet", &tablet_login);
        let renewed = alice
            .client
            .refresh(&alice_session.refresh_token)
            .await
            .expect("refresh of the first device");
        secrets.session("alice's first device, refreshed", &renewed);

        // A group across both servers, messages both ways, one of them pushed on a WebSocket
        // authenticated by its first frame.
        let (to_bob, to_alice) = (secret("plaintext-to-bob"), secret("plaintext-to-alice"));
        secrets.text("a message's plaintext", &to_bob);
        secrets.text("a message's plaintext", &to_alice);
        let group = alice.create_group().await.unwrap();
        alice.add(&group, &[bob_id]).await.expect("add bob");
        for _ in 0..150 {
            bob.sync(200).await.unwrap();
            if bob.engine.group_ids().contains(&group) {
                break;
            }
        }
        assert!(bob.engine.group_ids().contains(&group), "bob did not join");
        let ws_url = format!(
            "{}/_parley/client/v1/ws",
            b.base_url.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .expect("websocket");
        let auth = serde_json::json!({
            "access_token": bob.client.access_token().expect("bob's token"),
            "since": bob.since,
        });
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            auth.to_string().into(),
        ))
        .await
        .expect("auth frame");
        alice.send_text(&group, &to_bob).await.unwrap();
        let pushed = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(frame)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
                    if v["type"] == "message" {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        assert_eq!(
            pushed.ok(),
            Some(true),
            "no message pushed on the websocket"
        );
        drop(ws);
        sync_until_text(&mut bob, &group, &to_bob).await;
        bob.send_text(&group, &to_alice).await.unwrap();
        sync_until_text(&mut alice, &group, &to_alice).await;
        tablet.logout().await.expect("logout");

        // Stopping flushes every line; then the keys and hashes at rest are read.
        assert!(a.stop() && b.stop(), "a server did not stop cleanly");
        add_signing_keys(&mut secrets, &a);
        add_signing_keys(&mut secrets, &b);
        add_password_hashes(&mut secrets, &a, &[alice_id]).await;
        add_password_hashes(&mut secrets, &b, &[bob_id]).await;

        let mut leaks = Vec::new();
        for server in [&a, &b] {
            let lines = log_lines(server);
            assert!(
                lines.iter().any(|l| l.contains(r#""level":"TRACE""#)),
                "{} logged no TRACE line: RUST_LOG=trace did not take effect",
                server.server_name
            );
            for (what, field) in [
                ("its requests", r#""target":"tower_http::trace"#),
                ("its own events", r#""target":"parley"#),
            ] {
                assert!(
                    lines.iter().any(|l| l.contains(field)),
                    "{} logged none of {what} ({} lines)",
                    server.server_name,
                    lines.len()
                );
            }
            for line in &lines {
                for (what, forms) in &secrets.0 {
                    if let Some(form) = forms.iter().find(|f| line.contains(f.as_str())) {
                        let shown: String = line.chars().take(400).collect();
                        leaks.push(format!(
                            "{}: {what} (as {form:?}) in: {shown}",
                            server.server_name
                        ));
                    }
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "{} log lines hold secrets:\n{}",
            leaks.len(),
            leaks.join("\n")
        );
    }
);
