//! Passwordless login against a real server: a device signs its server's challenge with its
//! bound MLS signature key; each challenge works once, for its device, before it expires, and
//! nothing tells a caller whether the user or device exists.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{assert_api_error, TestServer};
use parley_client_api::accounts::{
    Login, LoginChallenge, LoginChallengeRequest, LoginRequest, WhoAmI,
};
use parley_client_api::endpoint::NoQuery;
use parley_schema::{Store, StoreConfig};
use parley_sytest::device::Device;

/// A challenge for `user_id`'s `device_id`, as base64 and bytes.
async fn challenge(server: &TestServer, user_id: &str, device_id: &str) -> (String, Vec<u8>) {
    let answer = server
        .client()
        .call::<LoginChallenge>(
            &(),
            &LoginChallengeRequest {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
            },
        )
        .await
        .expect("challenge");
    let bytes = STANDARD.decode(&answer.challenge).expect("base64");
    (answer.challenge, bytes)
}

/// `device`'s signature login with `challenge` and `signature` (base64).
async fn login(
    server: &TestServer,
    device: &Device,
    challenge: &str,
    signature: &[u8],
) -> Result<parley_client_api::accounts::SessionResponse, parley_client_api::ClientError> {
    server
        .client()
        .call::<Login>(
            &(),
            &LoginRequest::signature(
                &device.user_id,
                &device.device_id,
                challenge,
                &STANDARD.encode(signature),
            ),
        )
        .await
}

on_both_backends!(
    a_device_logs_in_with_its_signature_key_once_per_challenge,
    |db| async move {
        let config = format!(
            "{}\nlogin_account = {{ per_second = 100.0, burst = 1000 }}\n[auth]\nlogin_challenge_ttl_ms = 1500\n",
            common::RELAXED_LIMITS
        );
        let server = TestServer::start(db, "pl.example", &config).await;
        let alice = Device::register(&server, "alice").await.unwrap();
        let bob = Device::register(&server, "bob").await.unwrap();

        // The device signs its challenge: a session on that same device.
        let (text, bytes) = challenge(&server, &alice.user_id, &alice.device_id).await;
        let signature = alice
            .engine
            .sign_login_challenge("pl.example", &bytes)
            .unwrap();
        let session = login(&server, &alice, &text, &signature).await.unwrap();
        assert_eq!(
            (session.user_id.as_str(), session.device_id.as_str()),
            (alice.user_id.as_str(), alice.device_id.as_str())
        );
        let mut client = server.client();
        client.set_access_token(Some(session.access_token.clone()));
        let me = client.call::<WhoAmI>(&(), &NoQuery {}).await.unwrap();
        assert_eq!(me.device_id, alice.device_id);

        // Used once: the same challenge and signature again are refused.
        assert_api_error(
            login(&server, &alice, &text, &signature).await,
            403,
            "P_FORBIDDEN",
        );

        // Another device's key does not sign for alice's device (bob's engine refuses the
        // bytes; a signature of his own challenge is no signature of hers).
        let (text, bytes) = challenge(&server, &alice.user_id, &alice.device_id).await;
        assert!(bob
            .engine
            .sign_login_challenge("pl.example", &bytes)
            .is_err());
        let (_, bob_bytes) = challenge(&server, &bob.user_id, &bob.device_id).await;
        let bob_signature = bob
            .engine
            .sign_login_challenge("pl.example", &bob_bytes)
            .unwrap();
        assert_api_error(
            login(&server, &alice, &text, &bob_signature).await,
            403,
            "P_FORBIDDEN",
        );
        // A challenge the server did not issue (other random bytes), validly signed.
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged_signature = alice
            .engine
            .sign_login_challenge("pl.example", &forged)
            .unwrap();
        assert_api_error(
            login(
                &server,
                &alice,
                &STANDARD.encode(&forged),
                &forged_signature,
            )
            .await,
            403,
            "P_FORBIDDEN",
        );
        // The real one still works after those failures.
        let signature = alice
            .engine
            .sign_login_challenge("pl.example", &bytes)
            .unwrap();
        login(&server, &alice, &text, &signature).await.unwrap();

        // Expired: refused.
        let (text, bytes) = challenge(&server, &alice.user_id, &alice.device_id).await;
        let signature = alice
            .engine
            .sign_login_challenge("pl.example", &bytes)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_api_error(
            login(&server, &alice, &text, &signature).await,
            403,
            "P_FORBIDDEN",
        );

        // An unknown user or device gets a challenge like anyone (nothing is said), which
        // then logs nobody in; malformed fields are 400.
        let (text, _) = challenge(&server, "@nobody:pl.example", "NODEVICE").await;
        let ghost = server
            .client()
            .call::<Login>(
                &(),
                &LoginRequest::signature("@nobody:pl.example", "NODEVICE", &text, "AAAA"),
            )
            .await;
        assert_api_error(ghost, 403, "P_FORBIDDEN");
        let bad = server
            .client()
            .call::<Login>(
                &(),
                &LoginRequest::signature(&alice.user_id, &alice.device_id, "%%%", "AAAA"),
            )
            .await;
        assert_api_error(bad, 400, "P_BAD_JSON");

        // A device holds at most 5 challenges, however many are asked for.
        for _ in 0..12 {
            challenge(&server, &alice.user_id, &alice.device_id).await;
        }
        let store = Store::connect(&server.database, &StoreConfig::default())
            .await
            .unwrap();
        let now = i64::try_from(parley_sytest::device::now_ms()).unwrap();
        let held = store
            .login_challenges()
            .outstanding(&alice.user_id, &alice.device_id, now)
            .await
            .unwrap();
        println!("[{db:?}] challenges held by one device after 12 requests: {held}");
        assert_eq!(held, 5);
        store.close();
    }
);
