//! Store behaviour, run against both SQLite and PostgreSQL.

use parley_schema::{
    testing, NewDevice, RotateOutcome, Session, Store, StoreConfig, StoreError, User,
};

/// One store per backend: a SQLite file in a temp dir and a fresh PostgreSQL database.
fn user(name: &str) -> User {
    User {
        user_id: format!("@{name}:test.example"),
        localpart: name.into(),
        password_hash: "$argon2id$fake".into(),
        created_ts: 1,
    }
}

fn device(name: &str, device_id: &str) -> NewDevice {
    NewDevice {
        user_id: format!("@{name}:test.example"),
        device_id: device_id.into(),
        display_name: Some("laptop".into()),
        created_ts: 1,
        last_seen_ts: 1,
    }
}

fn session(name: &str, device_id: &str, sid: &str) -> Session {
    Session {
        session_id: sid.into(),
        user_id: format!("@{name}:test.example"),
        device_id: device_id.into(),
        created_ts: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn created_user_is_found_and_duplicate_is_a_conflict() {
    for (store, _dir) in testing::stores().await {
        let u = user("alice");
        store
            .accounts()
            .create_user_with_session(
                &u,
                &device("alice", "AAAA"),
                &session("alice", "AAAA", "s1"),
                b"h1",
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            store.accounts().user(&u.user_id).await.unwrap(),
            Some(u.clone()),
            "{:?}",
            store.backend()
        );
        let err = store
            .accounts()
            .create_user_with_session(
                &u,
                &device("alice", "BBBB"),
                &session("alice", "BBBB", "s2"),
                b"h2",
                100,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err:?}");
        // Nothing of the refused registration was stored.
        assert!(store
            .accounts()
            .device(&u.user_id, "BBBB")
            .await
            .unwrap()
            .is_none());
        assert!(store.accounts().session("s2").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_are_listed_touched_and_deleted_with_their_sessions() {
    for (store, _dir) in testing::stores().await {
        let u = user("bob");
        store
            .accounts()
            .create_user_with_session(
                &u,
                &device("bob", "D1"),
                &session("bob", "D1", "s1"),
                b"h1",
                100,
            )
            .await
            .unwrap();
        store
            .accounts()
            .create_session(
                Some(&device("bob", "D2")),
                &session("bob", "D2", "s2"),
                b"h2",
                100,
            )
            .await
            .unwrap();
        store
            .accounts()
            .create_session(None, &session("bob", "D2", "s3"), b"h3", 100)
            .await
            .unwrap();
        let ids: Vec<_> = store
            .accounts()
            .devices(&u.user_id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(ids, ["D1", "D2"]);

        store
            .accounts()
            .touch_device(&u.user_id, "D2", 42)
            .await
            .unwrap();
        assert_eq!(
            store
                .accounts()
                .device(&u.user_id, "D2")
                .await
                .unwrap()
                .unwrap()
                .last_seen_ts,
            42
        );

        assert!(store
            .accounts()
            .delete_device(&u.user_id, "D2")
            .await
            .unwrap());
        assert!(!store
            .accounts()
            .delete_device(&u.user_id, "D2")
            .await
            .unwrap());
        assert!(store.accounts().session("s2").await.unwrap().is_none());
        assert!(store.accounts().session("s3").await.unwrap().is_none());
        assert!(store.accounts().session("s1").await.unwrap().is_some());
        // The refresh token of a deleted device's session is gone too.
        assert_eq!(
            store
                .accounts()
                .rotate_refresh_token(b"h2", b"n", 0, 100)
                .await
                .unwrap(),
            RotateOutcome::Unknown
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_session_is_gone() {
    for (store, _dir) in testing::stores().await {
        store
            .accounts()
            .create_user_with_session(
                &user("c"),
                &device("c", "D"),
                &session("c", "D", "s"),
                b"h",
                100,
            )
            .await
            .unwrap();
        assert!(store.accounts().delete_session("s").await.unwrap());
        assert!(store.accounts().session("s").await.unwrap().is_none());
        assert!(!store.accounts().delete_session("s").await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotation_then_reuse_revokes_the_device() {
    for (store, _dir) in testing::stores().await {
        store
            .accounts()
            .create_user_with_session(
                &user("d"),
                &device("d", "D"),
                &session("d", "D", "s"),
                b"t0",
                100,
            )
            .await
            .unwrap();
        store
            .accounts()
            .create_session(None, &session("d", "D", "s-other"), b"o0", 100)
            .await
            .unwrap();
        let out = store
            .accounts()
            .rotate_refresh_token(b"t0", b"t1", 10, 100)
            .await
            .unwrap();
        assert!(
            matches!(out, RotateOutcome::Rotated(ref s) if s.session_id == "s"),
            "{out:?}"
        );
        let out = store
            .accounts()
            .rotate_refresh_token(b"t1", b"t2", 10, 100)
            .await
            .unwrap();
        assert!(matches!(out, RotateOutcome::Rotated(_)));
        // Presenting t0 again is reuse: every session of the device is revoked.
        let out = store
            .accounts()
            .rotate_refresh_token(b"t0", b"t9", 10, 100)
            .await
            .unwrap();
        assert_eq!(
            out,
            RotateOutcome::Reused {
                user_id: "@d:test.example".into(),
                device_id: "D".into()
            }
        );
        assert!(store.accounts().session("s").await.unwrap().is_none());
        assert!(store.accounts().session("s-other").await.unwrap().is_none());
        assert_eq!(
            store
                .accounts()
                .rotate_refresh_token(b"t2", b"t3", 10, 100)
                .await
                .unwrap(),
            RotateOutcome::Unknown
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_refresh_token_is_unknown() {
    for (store, _dir) in testing::stores().await {
        store
            .accounts()
            .create_user_with_session(
                &user("e"),
                &device("e", "D"),
                &session("e", "D", "s"),
                b"t0",
                50,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .accounts()
                .rotate_refresh_token(b"t0", b"t1", 50, 100)
                .await
                .unwrap(),
            RotateOutcome::Unknown
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = testing::sqlite_url(dir.path());
    {
        let store = Store::connect(&url, &StoreConfig::default()).await.unwrap();
        store
            .accounts()
            .create_user_with_session(
                &user("f"),
                &device("f", "D"),
                &session("f", "D", "s"),
                b"t0",
                50,
            )
            .await
            .unwrap();
        store.close();
    }
    let store = Store::connect(&url, &StoreConfig::default()).await.unwrap();
    assert!(store
        .accounts()
        .user("@f:test.example")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_database_scheme_is_refused() {
    let err = Store::connect("mysql://x", &StoreConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadUrl));
}

/// Concurrent writes share SQLite's group commit: each write that fails rolls back alone (its
/// earlier statements too), and every write that was acknowledged is there after a reopen.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_commit_together_and_a_failing_one_rolls_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = testing::sqlite_url(dir.path());
    let pg_url = testing::fresh_postgres_url().await;
    for url in [url, pg_url] {
        let store = Store::connect(&url, &StoreConfig::default()).await.unwrap();
        store
            .accounts()
            .create_user_with_session(
                &user("owner"),
                &device("owner", "D"),
                &session("owner", "D", "taken"),
                b"h-owner",
                50,
            )
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("u{i}");
                // Odd writers reuse a taken session id: their user and device rows are
                // written first and must be rolled back with the failing session insert.
                let sid = if i % 2 == 1 {
                    "taken".to_owned()
                } else {
                    format!("s{i}")
                };
                store
                    .accounts()
                    .create_user_with_session(
                        &user(&name),
                        &device(&name, "D"),
                        &session(&name, "D", &sid),
                        format!("h{i}").as_bytes(),
                        50,
                    )
                    .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        store.close();
        let store = Store::connect(&url, &StoreConfig::default()).await.unwrap();
        for (i, result) in results.into_iter().enumerate() {
            let found = store
                .accounts()
                .user(&format!("@u{i}:test.example"))
                .await
                .unwrap()
                .is_some();
            if i % 2 == 1 {
                assert!(
                    matches!(result, Err(StoreError::Conflict)),
                    "u{i}: {result:?}"
                );
                assert!(!found, "u{i} was refused but its user row stayed");
            } else {
                assert!(result.is_ok(), "u{i}: {result:?}");
                assert!(found, "u{i} was acknowledged but is missing after reopen");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_refreshes_of_one_token_mint_one_successor_and_a_retry_in_grace_gets_it_again() {
    for (store, _dir) in testing::stores().await {
        store
            .accounts()
            .create_user_with_session(
                &user("g"),
                &device("g", "D"),
                &session("g", "D", "s"),
                b"t0",
                1_000_000,
            )
            .await
            .unwrap();
        // Eight copies of one refresh at once, with a grace window: one rotation, and every
        // copy answered with the same successor; the session lives.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.accounts()
                    .rotate_refresh_token_with_grace(b"t0", b"t1", 10, 1_000_000, 5_000)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), RotateOutcome::Rotated(_)));
        }
        assert!(store.accounts().session("s").await.unwrap().is_some());
        // The successor is used: the old token is now plain reuse, even within the window.
        assert!(matches!(
            store
                .accounts()
                .rotate_refresh_token_with_grace(b"t1", b"t2", 20, 1_000_000, 5_000)
                .await
                .unwrap(),
            RotateOutcome::Rotated(_)
        ));
        assert!(matches!(
            store
                .accounts()
                .rotate_refresh_token_with_grace(b"t0", b"t1", 30, 1_000_000, 5_000)
                .await
                .unwrap(),
            RotateOutcome::Reused { .. }
        ));
        assert!(store.accounts().session("s").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_grace_window_a_concurrent_second_refresh_is_reuse() {
    for (store, _dir) in testing::stores().await {
        store
            .accounts()
            .create_user_with_session(
                &user("h"),
                &device("h", "D"),
                &session("h", "D", "s"),
                b"t0",
                1_000_000,
            )
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.accounts()
                    .rotate_refresh_token(b"t0", b"t1", 10, 1_000_000)
                    .await
                    .unwrap()
            }));
        }
        let mut rotated = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), RotateOutcome::Rotated(_)) {
                rotated += 1;
            }
        }
        assert_eq!(rotated, 1, "exactly one copy rotates");
    }
}
