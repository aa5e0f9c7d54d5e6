//! The engine's core flow compiled to `wasm32-unknown-unknown` and run under Node with
//! `wasm-bindgen-test-runner` (issue 3, "WASM"). Run it with `mls/scripts/test-wasm.sh`.
//! On other targets this file is empty: the same flow runs natively in the unit tests.
#![cfg(target_arch = "wasm32")]

use parley_mls::{vault, Engine, EngineConfig, Envelope, Event, MlsError, StaticDeviceKeys};
use wasm_bindgen_test::wasm_bindgen_test;

const G: &str = "!wasm0001:example.org";
const NOW: u64 = 1_700_000_000_000;

fn envelope(from: &Engine, epoch: u64, adds: Vec<parley_mls::DeviceRef>) -> Envelope {
    Envelope {
        sender: Some(from.device().clone()),
        epoch,
        ts: NOW,
        adds,
        removes: vec![],
    }
}

/// Exchanges one message from `a` to `b` and returns the plaintext `b` decrypted.
fn exchange(a: &mut Engine, b: &mut Engine, dir: &StaticDeviceKeys, text: &[u8]) -> Vec<u8> {
    let out = a.encrypt(G, text, NOW).unwrap();
    let env = envelope(a, out.epoch, vec![]);
    let events = b.process(G, &out.message, &env, dir).unwrap();
    match events.as_slice() {
        [Event::ApplicationMessage {
            sender,
            plaintext,
            msg_id,
            ..
        }] => {
            assert_eq!(sender, a.device());
            assert_eq!(msg_id, &out.msg_id);
            plaintext.clone()
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[wasm_bindgen_test]
fn core_flow_under_node() {
    let mut dir = StaticDeviceKeys::new();
    let mut alice = Engine::new("@alice:example.org", "ALICE1", EngineConfig::default()).unwrap();
    let mut bob = Engine::new("@bob:example.org", "BOB1", EngineConfig::default()).unwrap();
    dir.insert(alice.device().clone(), alice.signature_public_key());
    dir.insert(bob.device().clone(), bob.signature_public_key());

    // Create, add (commit + welcome), join by welcome.
    alice.create_group(G).unwrap();
    let kps = bob.generate_key_packages(2).unwrap();
    assert_eq!(bob.unused_key_package_count(), 2);
    let bundle = alice.add_members(G, &kps[..1], &dir).unwrap();
    assert_eq!(bundle.adds, vec![bob.device().clone()]);
    alice.confirm_pending_commit(G).unwrap();
    let joined = bob
        .join_from_welcome(bundle.welcome.as_ref().unwrap(), &dir)
        .unwrap();
    assert_eq!(joined.group_id, G);
    assert_eq!(joined.members.len(), 2);
    assert_eq!(bob.unused_key_package_count(), 1);
    assert_eq!(alice.epoch(G).unwrap(), bob.epoch(G).unwrap());
    assert_eq!(
        alice.epoch_authenticator(G).unwrap(),
        bob.epoch_authenticator(G).unwrap()
    );

    // Encrypted messages both ways; a replay is refused.
    assert_eq!(
        exchange(&mut alice, &mut bob, &dir, b"hello from wasm"),
        b"hello from wasm"
    );
    assert_eq!(
        exchange(&mut bob, &mut alice, &dir, b"hi alice"),
        b"hi alice"
    );
    let out = alice.encrypt(G, b"once", NOW).unwrap();
    let env = envelope(&alice, out.epoch, vec![]);
    bob.process(G, &out.message, &env, &dir).unwrap();
    assert!(matches!(
        bob.process(G, &out.message, &env, &dir),
        Err(MlsError::Replay(_) | MlsError::InvalidMessage(_))
    ));

    // A self-update processed by the other member keeps both in the same epoch.
    let update = bob.self_update(G).unwrap();
    bob.confirm_pending_commit(G).unwrap();
    let events = alice
        .process(
            G,
            &update.commit,
            &envelope(&bob, update.epoch, vec![]),
            &dir,
        )
        .unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CommitApplied { .. })));
    assert_eq!(
        alice.epoch_authenticator(G).unwrap(),
        bob.epoch_authenticator(G).unwrap()
    );

    // Seal Bob's whole state in the vault (default Argon2id parameters), open it, restore,
    // and continue the conversation with the restored engine.
    let state = bob.export_state().unwrap();
    let sealed = vault::seal(&state, "correct horse battery staple").unwrap();
    assert!(matches!(
        vault::open(&sealed, "wrong passphrase"),
        Err(MlsError::VaultDecrypt)
    ));
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        vault::open(&tampered, "correct horse battery staple"),
        Err(MlsError::VaultDecrypt)
    ));
    let opened = vault::open(&sealed, "correct horse battery staple").unwrap();
    assert_eq!(opened.as_slice(), state.as_slice());
    bob.lock();
    let mut bob = Engine::import_state(&opened).unwrap();
    assert_eq!(bob.epoch(G).unwrap(), alice.epoch(G).unwrap());
    assert_eq!(
        exchange(&mut alice, &mut bob, &dir, b"after restore"),
        b"after restore"
    );
    assert_eq!(
        exchange(&mut bob, &mut alice, &dir, b"still here"),
        b"still here"
    );
}
