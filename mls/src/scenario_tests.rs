//! Many-client scenarios run in-process against a minimal hub that orders commits.

use crate::{
    CommitBundle, DeviceRef, Engine, EngineConfig, Envelope, Event, MlsError, StaticDeviceKeys,
};

const G: &str = "!room0001:example.org";
const NOW: u64 = 1_700_000_000_000;

/// Clients, the device directory, and the hub's view of the group's epoch.
struct World {
    clients: Vec<Engine>,
    dir: StaticDeviceKeys,
    members: Vec<usize>,
    epoch: u64,
}

impl World {
    fn new(names: &[(&str, &str)], config: EngineConfig) -> Self {
        let mut dir = StaticDeviceKeys::new();
        let clients: Vec<Engine> = names
            .iter()
            .map(|(u, d)| {
                let e = Engine::new(u, d, config.clone()).unwrap();
                dir.insert(e.device().clone(), e.signature_public_key());
                e
            })
            .collect();
        Self {
            clients,
            dir,
            members: Vec::new(),
            epoch: 0,
        }
    }

    fn add_client(&mut self, user: &str, device: &str, config: EngineConfig) -> usize {
        let e = Engine::new(user, device, config).unwrap();
        self.dir
            .insert(e.device().clone(), e.signature_public_key());
        self.clients.push(e);
        self.clients.len() - 1
    }

    fn dev(&self, i: usize) -> DeviceRef {
        self.clients[i].device().clone()
    }

    /// Client 0 creates the group and adds `others`.
    fn start(&mut self, others: &[usize]) {
        self.clients[0].create_group(G).unwrap();
        self.members = vec![0];
        self.add(0, others);
    }

    fn commit_envelope(&self, from: usize, b: &CommitBundle) -> Envelope {
        Envelope {
            sender: Some(self.dev(from)),
            epoch: b.epoch,
            ts: NOW,
            adds: b.adds.clone(),
            removes: b.removes.clone(),
        }
    }

    fn app_envelope(&self, from: usize, epoch: u64) -> Envelope {
        Envelope {
            sender: Some(self.dev(from)),
            epoch,
            ts: NOW,
            ..Envelope::default()
        }
    }

    /// The hub accepts `b` from `from` (if its epoch is current) and fans it out: the sender
    /// confirms, members process, added devices join from the Welcome.
    fn deliver_commit(&mut self, from: usize, b: &CommitBundle, joiners: &[usize]) -> bool {
        if b.epoch != self.epoch {
            self.clients[from].discard_pending_commit(G).unwrap();
            return false;
        }
        self.epoch += 1;
        let env = self.commit_envelope(from, b);
        let ev = self.clients[from].confirm_pending_commit(G).unwrap();
        assert!(matches!(ev, Event::OwnCommitConfirmed { .. }));
        // The echo of the sender's own commit is recognised and ignored.
        assert!(self.clients[from]
            .process(G, &b.commit, &env, &self.dir)
            .unwrap()
            .is_empty());
        let removed: Vec<DeviceRef> = b.removes.clone();
        for &m in &self.members.clone() {
            if m == from {
                continue;
            }
            let events = self.clients[m]
                .process(G, &b.commit, &env, &self.dir)
                .unwrap();
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::CommitApplied { .. })),
                "{events:?}"
            );
        }
        self.members
            .retain(|&m| !removed.contains(self.clients[m].device()));
        for &j in joiners {
            let welcome = b.welcome.as_ref().unwrap();
            self.clients[j]
                .join_from_welcome(welcome, &self.dir)
                .unwrap();
            self.members.push(j);
        }
        true
    }

    fn add(&mut self, from: usize, others: &[usize]) {
        let kps: Vec<Vec<u8>> = others
            .iter()
            .map(|&o| self.clients[o].generate_key_packages(1).unwrap().remove(0))
            .collect();
        let dir = self.dir.clone();
        let b = self.clients[from].add_members(G, &kps, &dir).unwrap();
        assert_eq!(b.adds.len(), others.len());
        assert!(self.deliver_commit(from, &b, others));
    }

    fn send(&mut self, from: usize, text: &[u8]) -> (Vec<u8>, Envelope) {
        let out = self.clients[from].encrypt(G, text, NOW).unwrap();
        (out.message, self.app_envelope(from, out.epoch))
    }

    /// `from` sends `text` and every other member decrypts it.
    fn exchange(&mut self, from: usize, text: &[u8]) {
        let (msg, env) = self.send(from, text);
        for &m in &self.members.clone() {
            let events = self.clients[m].process(G, &msg, &env, &self.dir).unwrap();
            if m == from {
                assert!(events.is_empty());
                continue;
            }
            match &events[..] {
                [Event::ApplicationMessage {
                    sender, plaintext, ..
                }] => {
                    assert_eq!(sender, self.clients[from].device());
                    assert_eq!(plaintext, text);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn assert_in_sync(&self) {
        let first = self.members[0];
        let auth = self.clients[first].epoch_authenticator(G).unwrap();
        for &m in &self.members {
            assert_eq!(self.clients[m].epoch(G).unwrap(), self.epoch);
            assert_eq!(self.clients[m].epoch_authenticator(G).unwrap(), auth);
            assert_eq!(
                self.clients[m].members(G).unwrap().len(),
                self.members.len()
            );
        }
    }
}

fn three() -> World {
    let mut w = World::new(
        &[
            ("@alice:a.example", "ALICEDEV01"),
            ("@bob:b.example:8448", "BOBDEV0001"),
            ("@carol:a.example", "CAROLDEV01"),
        ],
        EngineConfig::default(),
    );
    w.start(&[1, 2]);
    w
}

/// Alice (client 0) and Bob (client 1) in group `G`, their engines keeping `max_past_epochs`.
fn alice_and_bob_keeping_past_epochs(max_past_epochs: usize) -> World {
    let cfg = EngineConfig {
        max_past_epochs,
        ..EngineConfig::default()
    };
    let mut w = World::new(
        &[("@alice:a.example", "ALICE"), ("@bob:b.example", "BOB")],
        cfg,
    );
    w.start(&[1]);
    w
}

#[test]
fn three_clients_create_add_join_and_exchange() {
    let mut w = three();
    w.assert_in_sync();
    for from in 0..3 {
        w.exchange(from, format!("hello from {from}").as_bytes());
    }
    let members = w.clients[1].members(G).unwrap();
    let alice = members
        .iter()
        .find(|m| m.user_id == "@alice:a.example")
        .unwrap();
    assert_eq!(alice.signature_key, w.clients[0].signature_public_key());
    assert_eq!(alice.fingerprint, w.clients[0].fingerprint());
    assert_eq!(alice.trust, Some(crate::TrustState::Tofu));
    // Consumed key packages are gone from the joiners.
    assert_eq!(w.clients[1].unused_key_package_count(), 0);
}

#[test]
fn remove_member_excludes_it_from_later_epochs() {
    let mut w = three();
    let carol = w.dev(2);
    let b = w.clients[0]
        .remove_members(G, std::slice::from_ref(&carol))
        .unwrap();
    assert_eq!(b.removes, vec![carol]);
    let env = w.commit_envelope(0, &b);
    let events = w.clients[2].process(G, &b.commit, &env, &w.dir).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::RemovedFromGroup { .. })));
    assert!(!w.clients[2].is_active(G).unwrap());
    w.members.retain(|&m| m != 2);
    assert!(w.deliver_commit(0, &b, &[]));
    w.assert_in_sync();
    let (msg, env) = w.send(0, b"after removal");
    assert!(matches!(
        w.clients[2].process(G, &msg, &env, &w.dir),
        Err(MlsError::Evicted)
    ));
    w.exchange(1, b"still here");
}

#[test]
fn leave_group_is_a_proposal_committed_by_another_member() {
    let mut w = three();
    let proposal = w.clients[1].leave_group(G).unwrap();
    let env = w.app_envelope(1, w.epoch);
    for m in [0, 2] {
        let ev = w.clients[m].process(G, &proposal, &env, &w.dir).unwrap();
        assert!(matches!(
            &ev[..],
            [Event::ProposalStored {
                kind: crate::ProposalKind::Remove,
                ..
            }]
        ));
    }
    let b = w.clients[0].commit_pending_proposals(G).unwrap();
    assert_eq!(b.removes, vec![w.dev(1)]);
    let env = w.commit_envelope(0, &b);
    let ev = w.clients[1].process(G, &b.commit, &env, &w.dir).unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::RemovedFromGroup { .. })));
    w.members.retain(|&m| m != 1);
    assert!(w.deliver_commit(0, &b, &[]));
    w.assert_in_sync();
}

fn encryption_key_of(e: &Engine, device: &DeviceRef) -> Vec<u8> {
    let entry = e.entry(G).unwrap();
    let member = entry
        .mls
        .members()
        .find(|m| DeviceRef::from_credential(&m.credential).unwrap() == *device)
        .unwrap();
    member.encryption_key
}

#[test]
fn self_update_changes_the_members_leaf_keys() {
    let mut w = three();
    let bob = w.dev(1);
    let before = encryption_key_of(&w.clients[0], &bob);
    let b = w.clients[1].self_update(G).unwrap();
    assert!(b.adds.is_empty() && b.removes.is_empty());
    let env = w.commit_envelope(1, &b);
    let ev = w.clients[0].process(G, &b.commit, &env, &w.dir).unwrap();
    match &ev[..] {
        [Event::CommitApplied { updated, epoch, .. }] => {
            assert_eq!(updated, &vec![bob.clone()]);
            assert_eq!(*epoch, 2);
        }
        other => panic!("{other:?}"),
    }
    w.members.retain(|&m| m != 0);
    assert!(w.deliver_commit(1, &b, &[]));
    w.members.push(0);
    assert_ne!(before, encryption_key_of(&w.clients[0], &bob));
    assert_eq!(
        encryption_key_of(&w.clients[0], &bob),
        encryption_key_of(&w.clients[1], &bob)
    );
    w.assert_in_sync();
    w.exchange(1, b"post-update");
}

#[test]
fn two_commits_for_one_epoch_only_one_merges_and_the_loser_retries() {
    let mut w = three();
    let a = w.clients[0].self_update(G).unwrap();
    let b = w.clients[1].self_update(G).unwrap();
    assert_eq!(a.epoch, b.epoch);
    // The loser's pending commit blocks sending until resolved.
    assert!(matches!(
        w.clients[1].encrypt(G, b"x", NOW),
        Err(MlsError::PendingCommit)
    ));
    // Bob (1) sees Alice's commit before the hub's 409: his pending commit is dropped.
    let env = w.commit_envelope(0, &a);
    let ev = w.clients[1].process(G, &a.commit, &env, &w.dir).unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::PendingCommitDiscarded { .. })));
    w.members.retain(|&m| m != 1);
    assert!(w.deliver_commit(0, &a, &[]));
    w.members.push(1);
    w.assert_in_sync();
    // Carol (2) commits, Bob commits concurrently; Bob gets the 409 first, then the winner.
    let c = w.clients[2].self_update(G).unwrap();
    let b2 = w.clients[1].self_update(G).unwrap();
    assert_eq!(c.epoch, b2.epoch);
    w.members.retain(|&m| m != 1);
    assert!(w.deliver_commit(2, &c, &[]));
    w.members.push(1);
    assert!(!w.deliver_commit(1, &b2, &[]), "409 for the loser");
    assert!(!w.clients[1].has_pending_commit(G).unwrap());
    let env = w.commit_envelope(2, &c);
    let ev = w.clients[1].process(G, &c.commit, &env, &w.dir).unwrap();
    assert!(matches!(&ev[..], [Event::CommitApplied { .. }]));
    w.assert_in_sync();
    let b3 = w.clients[1].self_update(G).unwrap();
    assert!(w.deliver_commit(1, &b3, &[]));
    w.assert_in_sync();
    w.exchange(1, b"retried");
}

#[test]
fn out_of_order_application_messages_within_tolerance_decrypt() {
    let mut w = three();
    let msgs: Vec<_> = (0..4).map(|i| w.send(0, &[i])).collect();
    for i in [3usize, 0, 2, 1] {
        let (m, env) = &msgs[i];
        let ev = w.clients[1].process(G, m, env, &w.dir).unwrap();
        assert!(
            matches!(&ev[..], [Event::ApplicationMessage { plaintext, .. }] if plaintext == &vec![i as u8])
        );
    }
}

#[test]
fn message_beyond_maximum_forward_distance_is_refused_as_too_far_ahead_and_one_within_decrypts() {
    let cfg = EngineConfig {
        maximum_forward_distance: 5,
        ..EngineConfig::default()
    };
    let mut w = World::new(
        &[("@alice:a.example", "ALICE"), ("@bob:b.example", "BOB")],
        cfg,
    );
    w.start(&[1]);
    // Alice encrypts generations 0..=6; Bob has seen none of them (his ratchet is at 0).
    let msgs: Vec<_> = (0..=6u8).map(|i| w.send(0, &[i])).collect();
    let (beyond, env) = &msgs[6];
    assert!(matches!(
        w.clients[1].process(G, beyond, env, &w.dir),
        Err(MlsError::TooFarAhead)
    ));
    // Generation 5 is exactly `maximum_forward_distance` ahead: it decrypts.
    let (within, env) = &msgs[5];
    let ev = w.clients[1].process(G, within, env, &w.dir).unwrap();
    assert!(
        matches!(&ev[..], [Event::ApplicationMessage { plaintext, .. }] if plaintext == &vec![5u8])
    );
    // The refusal changed nothing: generation 6 is now one ahead and decrypts too.
    let ev = w.clients[1].process(G, beyond, &msgs[6].1, &w.dir).unwrap();
    assert!(
        matches!(&ev[..], [Event::ApplicationMessage { plaintext, .. }] if plaintext == &vec![6u8])
    );
}

#[test]
fn past_epoch_message_decrypts_within_max_past_epochs_and_not_beyond() {
    let mut w = alice_and_bob_keeping_past_epochs(2);
    let early = w.send(0, b"early");
    let late = w.send(0, b"late");
    for _ in 0..2 {
        let b = w.clients[0].self_update(G).unwrap();
        assert!(w.deliver_commit(0, &b, &[]));
    }
    let ev = w.clients[1].process(G, &early.0, &early.1, &w.dir).unwrap();
    assert!(matches!(
        &ev[..],
        [Event::ApplicationMessage { epoch: 1, .. }]
    ));
    let b = w.clients[0].self_update(G).unwrap();
    assert!(w.deliver_commit(0, &b, &[]));
    assert!(matches!(
        w.clients[1].process(G, &late.0, &late.1, &w.dir),
        Err(MlsError::WrongEpoch { .. })
    ));
}

#[test]
fn envelope_and_aad_tampering_is_detected() {
    let mut w = three();
    let (msg, env) = w.send(0, b"hi");
    let wrong_epoch = Envelope {
        epoch: env.epoch + 1,
        ..env.clone()
    };
    assert!(matches!(
        w.clients[1].process(G, &msg, &wrong_epoch, &w.dir),
        Err(MlsError::EnvelopeMismatch(_))
    ));
    let wrong_sender = Envelope {
        sender: Some(w.dev(2)),
        ..env.clone()
    };
    assert!(matches!(
        w.clients[1].process(G, &msg, &wrong_sender, &w.dir),
        Err(MlsError::EnvelopeMismatch(_))
    ));
    assert!(matches!(
        w.clients[1].process("!other000:example.org", &msg, &env, &w.dir),
        Err(MlsError::EnvelopeMismatch(_))
    ));
    let mut flipped = msg.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(w.clients[2].process(G, &flipped, &env, &w.dir).is_err());
    // Envelope ts more than 5 minutes before the sender's ts.
    let early_env = Envelope {
        ts: NOW - 5 * 60 * 1000 - 1,
        ..env.clone()
    };
    assert!(matches!(
        w.clients[2].process(G, &msg, &early_env, &w.dir),
        Err(MlsError::TimestampSkew)
    ));
    // AAD naming another group (set by a misbehaving sender) is refused.
    let bad_aad = crate::Aad {
        epoch: 1,
        fork_check: None,
        group_id: "!elsewhere:example.org".into(),
        msg_id: crate::aad::uuid_v4([9; 16]),
        ts: NOW,
    };
    let forged = {
        let e = &mut w.clients[0];
        let Engine {
            groups,
            provider,
            identity,
            ..
        } = e;
        let entry = groups.get_mut(G.as_bytes()).unwrap();
        entry.mls.set_aad(bad_aad.encode().unwrap());
        let m = entry
            .mls
            .create_message(provider, &identity.signer, b"forged")
            .unwrap();
        crate::groups::to_bytes(&m).unwrap()
    };
    assert!(matches!(
        w.clients[1].process(G, &forged, &env, &w.dir),
        Err(MlsError::BadAad(_))
    ));
}

#[test]
fn replayed_message_is_refused() {
    let mut w = three();
    let (msg, env) = w.send(0, b"once");
    w.clients[1].process(G, &msg, &env, &w.dir).unwrap();
    assert!(w.clients[1].process(G, &msg, &env, &w.dir).is_err());
    // A fresh ciphertext reusing a msg_id is refused by the replay window.
    let aad = crate::Aad {
        epoch: 1,
        fork_check: None,
        group_id: G.into(),
        msg_id: crate::aad::uuid_v4([5; 16]),
        ts: NOW,
    };
    let mut copies = Vec::new();
    for _ in 0..2 {
        let Engine {
            groups,
            provider,
            identity,
            ..
        } = &mut w.clients[0];
        let entry = groups.get_mut(G.as_bytes()).unwrap();
        entry.mls.set_aad(aad.encode().unwrap());
        let m = entry
            .mls
            .create_message(provider, &identity.signer, b"dup")
            .unwrap();
        copies.push(crate::groups::to_bytes(&m).unwrap());
    }
    w.clients[1].process(G, &copies[0], &env, &w.dir).unwrap();
    assert!(matches!(
        w.clients[1].process(G, &copies[1], &env, &w.dir),
        Err(MlsError::Replay(_))
    ));
}

#[test]
fn credential_identity_mismatch_is_refused_at_add_commit_and_welcome() {
    let mut w = three();
    // Mallory claims Bob's device id with her own key.
    let mut mallory =
        Engine::new("@bob:b.example:8448", "BOBDEV0002", EngineConfig::default()).unwrap();
    let mkp = mallory.generate_key_packages(1).unwrap();
    // Bob's server publishes another key for BOBDEV0002.
    w.dir.insert(
        DeviceRef::new("@bob:b.example:8448", "BOBDEV0002").unwrap(),
        vec![7; 32],
    );
    let dir = w.dir.clone();
    assert!(matches!(
        w.clients[0].add_members(G, &mkp, &dir),
        Err(MlsError::CredentialRefused { .. })
    ));
    // A member with a permissive directory adds Mallory: the others refuse the commit.
    let mut lax = w.dir.clone();
    lax.insert(mallory.device().clone(), mallory.signature_public_key());
    let b = w.clients[0].add_members(G, &mkp, &lax).unwrap();
    let env = w.commit_envelope(0, &b);
    assert!(matches!(
        w.clients[1].process(G, &b.commit, &env, &w.dir),
        Err(MlsError::CredentialRefused { .. })
    ));
    assert_eq!(w.clients[1].epoch(G).unwrap(), 1, "nothing merged");
    // Alice goes ahead; a newcomer validating the Welcome's members refuses to join.
    w.clients[0].confirm_pending_commit(G).unwrap();
    let dave = w.add_client("@dave:a.example", "DAVEDEV001", EngineConfig::default());
    lax.insert(w.dev(dave), w.clients[dave].signature_public_key());
    let dkp = w.clients[dave].generate_key_packages(1).unwrap();
    let b = w.clients[0].add_members(G, &dkp, &lax).unwrap();
    w.clients[0].confirm_pending_commit(G).unwrap();
    let dir = w.dir.clone();
    assert!(matches!(
        w.clients[dave].join_from_welcome(b.welcome.as_ref().unwrap(), &dir),
        Err(MlsError::CredentialRefused { .. })
    ));
    assert!(w.clients[dave].group_ids().is_empty());
    assert_eq!(
        w.clients[dave].unused_key_package_count(),
        1,
        "a refused Welcome does not burn the key package"
    );
}

#[test]
fn commit_with_undeclared_add_is_refused() {
    let mut w = World::new(
        &[
            ("@alice:a.example", "ALICE"),
            ("@bob:b.example", "BOB"),
            ("@carol:a.example", "CAROL"),
        ],
        EngineConfig::default(),
    );
    w.start(&[1]);
    let kp = w.clients[2].generate_key_packages(1).unwrap();
    let dir = w.dir.clone();
    let b = w.clients[0].add_members(G, &kp, &dir).unwrap();
    let mut env = w.commit_envelope(0, &b);
    env.adds.clear();
    assert!(matches!(
        w.clients[1].process(G, &b.commit, &env, &w.dir),
        Err(MlsError::EnvelopeMismatch(_))
    ));
    env.removes = vec![w.dev(1)];
    env.adds = b.adds.clone();
    assert!(matches!(
        w.clients[1].process(G, &b.commit, &env, &w.dir),
        Err(MlsError::EnvelopeMismatch(_))
    ));
    assert!(w.deliver_commit(0, &b, &[2]));
    w.assert_in_sync();
}

#[test]
fn key_change_is_reported_and_blocks_encryption_until_acknowledged() {
    let mut w = three();
    let sn_alice = w.clients[0].safety_number("@bob:b.example:8448").unwrap();
    let sn_bob = w.clients[1].safety_number("@alice:a.example").unwrap();
    assert_eq!(sn_alice, sn_bob);
    assert_eq!(sn_alice.len(), 60);
    // Bob's device is reset: same device id, new key, published by his server.
    let bob = w.dev(1);
    let b = w.clients[0]
        .remove_members(G, std::slice::from_ref(&bob))
        .unwrap();
    w.members.retain(|&m| m != 1);
    assert!(w.deliver_commit(0, &b, &[]));
    w.clients[1] = Engine::new(&bob.user_id, &bob.device_id, EngineConfig::default()).unwrap();
    w.dir
        .insert(bob.clone(), w.clients[1].signature_public_key());
    let kp = w.clients[1].generate_key_packages(1).unwrap();
    let dir = w.dir.clone();
    let b = w.clients[0].add_members(G, &kp, &dir).unwrap();
    assert_eq!(b.key_changes.len(), 1);
    let env = w.commit_envelope(0, &b);
    w.clients[0].confirm_pending_commit(G).unwrap();
    let ev = w.clients[2].process(G, &b.commit, &env, &w.dir).unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::KeyChangeDetected(kc) if kc.device == bob)));
    w.epoch += 1;
    let welcome = b.welcome.unwrap();
    w.clients[1].join_from_welcome(&welcome, &w.dir).unwrap();
    w.members.push(1);
    w.assert_in_sync();
    for m in [0, 2] {
        assert!(matches!(
            w.clients[m].encrypt(G, b"x", NOW),
            Err(MlsError::KeyChangeUnacknowledged(d)) if d == bob
        ));
        assert_eq!(
            w.clients[m].trust_state(&bob),
            Some(crate::TrustState::KeyChanged)
        );
    }
    // The safety number changed, and both sides agree on the new one.
    let sn_alice2 = w.clients[0].safety_number("@bob:b.example:8448").unwrap();
    assert_ne!(sn_alice, sn_alice2);
    assert_eq!(
        sn_alice2,
        w.clients[1].safety_number("@alice:a.example").unwrap()
    );
    for m in [0, 2] {
        w.clients[m].acknowledge_key_change(&bob).unwrap();
    }
    w.exchange(0, b"welcome back");
    w.exchange(2, b"hi bob");
}

#[test]
fn export_import_mid_conversation_continues_every_group() {
    let mut w = three();
    w.exchange(0, b"before");
    let blob = w.clients[1].export_state().unwrap();
    let restored = Engine::import_state(&blob).unwrap();
    let old = std::mem::replace(&mut w.clients[1], restored);
    old.lock();
    w.exchange(0, b"after restore");
    w.exchange(1, b"restored bob speaks");
    let b = w.clients[1].self_update(G).unwrap();
    assert!(w.deliver_commit(1, &b, &[]));
    w.assert_in_sync();
    // Replay windows travel with the state.
    let (msg, env) = w.send(2, b"once");
    w.clients[1].process(G, &msg, &env, &w.dir).unwrap();
    let blob = w.clients[1].export_state().unwrap();
    let mut again = Engine::import_state(&blob).unwrap();
    assert!(again.process(G, &msg, &env, &w.dir).is_err());
}

#[test]
fn past_epoch_secrets_are_absent_from_a_later_export() {
    let mut w = alice_and_bob_keeping_past_epochs(1);
    let old_msg = w.send(0, b"epoch one");
    let early = crate::state::store_entries(&w.clients[1].export_state().unwrap()).unwrap();
    for _ in 0..3 {
        let b = w.clients[0].self_update(G).unwrap();
        assert!(w.deliver_commit(0, &b, &[]));
    }
    let later_blob = w.clients[1].export_state().unwrap();
    let later = crate::state::store_entries(&later_blob).unwrap();
    let secret_labels: [&[u8]; 4] = [
        b"EpochSecrets",
        b"MessageSecrets",
        b"EncryptionKeyPair",
        b"EpochKeyPairs",
    ];
    let mut checked = 0;
    for (k, v) in &early {
        if secret_labels.iter().any(|l| k.starts_with(l)) {
            checked += 1;
            assert!(
                !later.values().any(|lv| lv == v),
                "a secret value of epoch 1 survived"
            );
        }
    }
    assert!(checked >= 2, "expected epoch secrets in the early export");
    let mut restored = Engine::import_state(&later_blob).unwrap();
    assert!(restored.process(G, &old_msg.0, &old_msg.1, &w.dir).is_err());
}

#[test]
fn sealed_engine_state_reopens_and_wrong_passphrase_fails() {
    let w = three();
    let params = crate::vault::VaultParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let state = w.clients[0].export_state().unwrap();
    let sealed = crate::vault::seal_with(&state, "hunter2 hunter2", params).unwrap();
    assert!(matches!(
        crate::vault::open(&sealed, "hunter3"),
        Err(MlsError::VaultDecrypt)
    ));
    let opened = crate::vault::open(&sealed, "hunter2 hunter2").unwrap();
    let e = Engine::import_state(&opened).unwrap();
    assert_eq!(
        e.epoch_authenticator(G).unwrap(),
        w.clients[0].epoch_authenticator(G).unwrap()
    );
    e.lock();
}

#[test]
fn forked_member_is_readded_and_all_share_the_epoch_authenticator() {
    let mut w = three();
    // A broken delivery: Alice and Bob both merge their own commits for the same epoch.
    let a = w.clients[0].self_update(G).unwrap();
    let b = w.clients[1].self_update(G).unwrap();
    w.clients[0].confirm_pending_commit(G).unwrap();
    w.clients[1].confirm_pending_commit(G).unwrap();
    let env = w.commit_envelope(0, &a);
    w.clients[2].process(G, &a.commit, &env, &w.dir).unwrap();
    w.epoch += 1;
    let _ = b;
    assert_ne!(
        w.clients[0].epoch_authenticator(G).unwrap(),
        w.clients[1].epoch_authenticator(G).unwrap()
    );
    assert_eq!(
        w.clients[0].epoch_authenticator(G).unwrap(),
        w.clients[2].epoch_authenticator(G).unwrap()
    );
    // Bob cannot read Alice's next message, and its fork check tells him why.
    let (msg, env) = w.send(0, b"from the main line");
    assert!(matches!(
        w.clients[1].process(G, &msg, &env, &w.dir),
        Err(MlsError::ForkDetected { epoch }) if epoch == w.epoch
    ));
    w.clients[2].process(G, &msg, &env, &w.dir).unwrap();
    // Alice re-adds Bob with a fresh key package.
    let kp = w.clients[1].generate_key_packages(1).unwrap();
    let in_sync = vec![w.dev(0), w.dev(2)];
    let dir = w.dir.clone();
    let r = w.clients[0]
        .readd_forked_members(G, &in_sync, &kp, &dir)
        .unwrap();
    assert_eq!(r.adds, vec![w.dev(1)]);
    assert_eq!(r.removes, vec![w.dev(1)]);
    w.clients[0].confirm_pending_commit(G).unwrap();
    let env = w.commit_envelope(0, &r);
    w.clients[2].process(G, &r.commit, &env, &w.dir).unwrap();
    w.epoch += 1;
    let dir = w.dir.clone();
    assert!(matches!(
        w.clients[1].join_from_welcome(r.welcome.as_ref().unwrap(), &dir),
        Err(MlsError::GroupExists)
    ));
    w.clients[1]
        .rejoin_from_welcome(r.welcome.as_ref().unwrap(), &dir)
        .unwrap();
    w.assert_in_sync();
    w.exchange(1, b"back in sync");
}

// proptest is a native-only dev-dependency (the wasm tests are tests/wasm_node.rs).
#[cfg(not(target_arch = "wasm32"))]
mod random_ops {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send(usize),
        Update(usize),
        Add(usize),
        Remove(usize, usize),
        Race(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8usize).prop_map(Op::Send),
            (0..8usize).prop_map(Op::Update),
            (0..8usize).prop_map(Op::Add),
            (0..8usize, 0..8usize).prop_map(|(a, b)| Op::Remove(a, b)),
            (0..8usize, 0..8usize).prop_map(|(a, b)| Op::Race(a, b)),
        ]
    }

    fn run(ops: Vec<Op>) {
        let mut w = World::new(
            &[("@alice:a.example", "DEV0"), ("@bob:b.example", "DEV1")],
            EngineConfig::default(),
        );
        w.start(&[1]);
        let mut next = 2;
        for op in ops {
            let n = w.members.len();
            match op {
                Op::Send(i) => w.exchange(w.members[i % n], b"payload"),
                Op::Update(i) => {
                    let from = w.members[i % n];
                    let b = w.clients[from].self_update(G).unwrap();
                    assert!(w.deliver_commit(from, &b, &[]));
                }
                Op::Add(i) => {
                    let from = w.members[i % n];
                    let user = format!("@user{next}:c.example");
                    let new = w.add_client(&user, &format!("DEV{next}"), EngineConfig::default());
                    next += 1;
                    w.add(from, &[new]);
                }
                Op::Remove(i, j) => {
                    if n <= 2 {
                        continue;
                    }
                    let from = w.members[i % n];
                    let target = w.members[j % n];
                    if from == target {
                        continue;
                    }
                    let dev = w.dev(target);
                    let b = w.clients[from].remove_members(G, &[dev]).unwrap();
                    let env = w.commit_envelope(from, &b);
                    w.clients[target]
                        .process(G, &b.commit, &env, &w.dir)
                        .unwrap();
                    w.members.retain(|&m| m != target);
                    assert!(w.deliver_commit(from, &b, &[]));
                }
                Op::Race(i, j) => {
                    let (a, b) = (w.members[i % n], w.members[j % n]);
                    if a == b {
                        continue;
                    }
                    let ca = w.clients[a].self_update(G).unwrap();
                    let cb = w.clients[b].self_update(G).unwrap();
                    // a wins; b gets 409 first, then processes the winner.
                    w.members.retain(|&m| m != b);
                    assert!(w.deliver_commit(a, &ca, &[]));
                    w.members.push(b);
                    assert!(!w.deliver_commit(b, &cb, &[]));
                    let env = w.commit_envelope(a, &ca);
                    w.clients[b].process(G, &ca.commit, &env, &w.dir).unwrap();
                }
            }
            w.assert_in_sync();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn random_operations_keep_members_in_the_same_epoch(ops in proptest::collection::vec(op(), 1..10)) {
            run(ops);
        }
    }
}

#[test]
fn a_joiner_learns_who_signed_its_welcome_from_the_group_itself() {
    let mut w = World::new(
        &[
            ("@alice:a.example", "ALICEDEV01"),
            ("@bob:b.example:8448", "BOBDEV0001"),
            ("@carol:a.example", "CAROLDEV01"),
        ],
        EngineConfig::default(),
    );
    w.start(&[1]);
    // Bob (not the creator) adds Carol: her Welcome names Bob's device.
    let kps = w.clients[2].generate_key_packages(1).unwrap();
    let dir = w.dir.clone();
    let b = w.clients[1].add_members(G, &kps, &dir).unwrap();
    let env = w.commit_envelope(1, &b);
    w.clients[1].confirm_pending_commit(G).unwrap();
    w.clients[0].process(G, &b.commit, &env, &w.dir).unwrap();
    let joined = w.clients[2]
        .join_from_welcome(b.welcome.as_ref().unwrap(), &w.dir)
        .unwrap();
    assert_eq!(joined.welcome_sender, Some(w.dev(1)));
}

/// Alice (admin), bob and carol in a group with roles.
fn three_with_roles() -> World {
    let mut w = World::new(
        &[
            ("@alice:a.example", "ALICEDEV01"),
            ("@bob:b.example", "BOBDEV0001"),
            ("@carol:a.example", "CAROLDEV01"),
        ],
        EngineConfig::default(),
    );
    w.clients[0].create_group_with_roles(G).unwrap();
    w.members = vec![0];
    w.add(0, &[1, 2]);
    w
}

/// A commit built with openmls directly, as a client that skips the role check would.
fn unchecked_removal(w: &mut World, from: usize, victim: usize) -> CommitBundle {
    use openmls_traits::OpenMlsProvider as _;
    let victim = w.dev(victim);
    let leaf = w.clients[from].leaf_of(G, &victim).unwrap();
    let bundle = w.clients[from]
        .with_group_and_signer(G, |group, provider, signer| {
            group
                .commit_builder()
                .propose_removals([leaf])
                .load_psks(provider.storage())
                .map_err(crate::error::mls)?
                .build(provider.rand(), provider.crypto(), signer, |_| true)
                .map_err(crate::error::mls)?
                .stage_commit(provider)
                .map_err(crate::error::mls)
        })
        .unwrap();
    w.clients[from]
        .finish_commit(G, bundle, Vec::new())
        .unwrap()
}

#[test]
fn a_member_who_is_not_admin_cannot_remove_others_or_change_roles() {
    let mut w = three_with_roles();
    w.assert_in_sync();
    let alice = "@alice:a.example".to_owned();
    for i in 0..3 {
        assert_eq!(
            w.clients[i].roles(G).unwrap().unwrap().admins,
            std::slice::from_ref(&alice)
        );
    }
    assert!(w.clients[1].is_admin(G, &alice).unwrap());
    assert!(!w.clients[1].is_admin(G, "@bob:b.example").unwrap());
    // Bob's own engine refuses to build the commits, and leaves no pending commit behind.
    let carol = w.dev(2);
    assert!(matches!(
        w.clients[1].remove_members(G, &[carol]),
        Err(MlsError::NotAdmin(_))
    ));
    assert!(matches!(
        w.clients[1].set_admins(G, &["@bob:b.example".to_owned()]),
        Err(MlsError::NotAdmin(_))
    ));
    assert!(!w.clients[1].has_pending_commit(G).unwrap());
    // A client that skips the check: carol and alice refuse its commit before merging it.
    let forged = unchecked_removal(&mut w, 1, 2);
    let env = w.commit_envelope(1, &forged);
    for i in [0, 2] {
        let err = w.clients[i]
            .process(G, &forged.commit, &env, &w.dir)
            .unwrap_err();
        assert!(matches!(err, MlsError::NotAdmin(_)), "{err:?}");
        assert_eq!(w.clients[i].epoch(G).unwrap(), w.epoch);
    }
    w.clients[1].discard_pending_commit(G).unwrap();
    // Bob may still update his own leaf, and the group goes on.
    let update = w.clients[1].self_update(G).unwrap();
    assert!(w.deliver_commit(1, &update, &[]));
    w.exchange(2, b"still here");
    w.assert_in_sync();
}

#[test]
fn an_admin_promotes_a_member_who_may_then_remove_others() {
    let mut w = three_with_roles();
    let admins = vec!["@alice:a.example".to_owned(), "@bob:b.example".to_owned()];
    let promote = w.clients[0].set_admins(G, &admins).unwrap();
    assert!(w.deliver_commit(0, &promote, &[]));
    for i in 0..3 {
        assert_eq!(w.clients[i].roles(G).unwrap().unwrap().admins, admins);
    }
    let carol = w.dev(2);
    let removal = w.clients[1].remove_members(G, &[carol]).unwrap();
    assert!(w.deliver_commit(1, &removal, &[]));
    w.assert_in_sync();
    w.exchange(0, b"two of us");
}

#[test]
fn a_member_may_add_a_members_new_device_but_not_a_new_user() {
    let mut w = three_with_roles();
    let carol_laptop = w.add_client("@carol:a.example", "CAROLLAPTOP", EngineConfig::default());
    let dave = w.add_client("@dave:d.example", "DAVEDEV001", EngineConfig::default());
    let dir = w.dir.clone();
    let kp = w.clients[dave].generate_key_packages(1).unwrap();
    assert!(matches!(
        w.clients[1].add_members(G, &kp, &dir),
        Err(MlsError::NotAdmin(_))
    ));
    w.add(1, &[carol_laptop]);
    w.exchange(carol_laptop, b"from the laptop");
    w.assert_in_sync();
}

#[test]
fn a_device_without_the_roles_capability_cannot_be_added_to_a_group_with_roles() {
    use openmls::prelude::{
        tls_codec::Serialize as _, Capabilities, CredentialType, KeyPackage, MlsMessageOut,
        ProtocolVersion,
    };
    use openmls_basic_credential::SignatureKeyPair;
    let mut w = three_with_roles();
    // An RFC 9420 client that does not know Parley's roles extension.
    let provider = crate::provider::EngineProvider::default();
    let signer = SignatureKeyPair::new(crate::CIPHERSUITE.signature_algorithm()).unwrap();
    let device = DeviceRef::new("@old:a.example", "OLDDEVICE1").unwrap();
    w.dir.insert(device.clone(), signer.to_public_vec());
    let credential = openmls::prelude::BasicCredential::new(device.identity().into_bytes());
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(Capabilities::new(
            Some(&[ProtocolVersion::Mls10]),
            Some(&[crate::CIPHERSUITE]),
            Some(&[]),
            Some(&[]),
            Some(&[CredentialType::Basic]),
        ))
        .build(
            crate::CIPHERSUITE,
            &provider,
            &signer,
            openmls::prelude::CredentialWithKey {
                credential: credential.into(),
                signature_key: signer.to_public_vec().into(),
            },
        )
        .unwrap();
    let bytes = MlsMessageOut::from(kp.key_package().clone())
        .tls_serialize_detached()
        .unwrap();
    let dir = w.dir.clone();
    let err = w.clients[0].add_members(G, &[bytes], &dir).unwrap_err();
    assert!(!matches!(err, MlsError::NotAdmin(_)), "{err:?}");
    assert!(!w.clients[0].has_pending_commit(G).unwrap());
}

impl World {
    /// The hub accepts `joiner`'s external commit `b` and fans it out: every member merges
    /// it, the joiner ignores its echo.
    fn deliver_external_join(&mut self, joiner: usize, b: &CommitBundle) {
        assert_eq!(b.epoch, self.epoch);
        self.epoch += 1;
        let env = self.commit_envelope(joiner, b);
        for &m in &self.members.clone() {
            let events = self.clients[m]
                .process(G, &b.commit, &env, &self.dir)
                .unwrap();
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    Event::CommitApplied { added, .. } if added == &[self.dev(joiner)]
                )),
                "{events:?}"
            );
        }
        assert!(self.clients[joiner]
            .process(G, &b.commit, &env, &self.dir)
            .unwrap()
            .is_empty());
        self.members.push(joiner);
    }

    /// Every member refuses `joiner`'s external commit `b` before merging it.
    fn refuse_external_join(&mut self, joiner: usize, b: &CommitBundle) -> MlsError {
        let env = self.commit_envelope(joiner, b);
        let mut last = None;
        for &m in &self.members.clone() {
            let err = self.clients[m]
                .process(G, &b.commit, &env, &self.dir)
                .unwrap_err();
            assert_eq!(self.clients[m].epoch(G).unwrap(), self.epoch);
            last = Some(err);
        }
        self.clients[joiner].forget_group(G).unwrap();
        last.unwrap()
    }
}

/// The code of `link`.
fn code_of(link: &str) -> String {
    crate::JoinLink::parse(link).unwrap().code
}

#[test]
fn a_user_with_the_link_joins_by_external_commit_and_every_member_merges_it() {
    let mut w = three_with_roles();
    let dave = w.add_client("@dave:d.example", "DAVEDEV001", EngineConfig::default());
    assert_eq!(w.clients[0].join_link(G).unwrap(), None);
    let open = w.clients[0].open_join_link(G).unwrap();
    assert!(w.deliver_commit(0, &open, &[]));
    let link = w.clients[0].join_link(G).unwrap().unwrap();
    assert!(link.starts_with("parley:!room0001:example.org?via=example.org&code="));
    for i in 1..3 {
        assert_eq!(w.clients[i].join_link(G).unwrap().as_deref(), Some(&*link));
    }
    let dir = w.dir.clone();
    let (joined, join) = w.clients[dave]
        .join_by_link(G, open.group_info.as_ref().unwrap(), &code_of(&link), &dir)
        .unwrap();
    assert_eq!(joined.epoch, w.epoch + 1);
    assert_eq!(joined.members.len(), 4);
    assert_eq!(join.adds, vec![w.dev(dave)]);
    assert!(join.removes.is_empty() && join.welcome.is_none());
    w.deliver_external_join(dave, &join);
    w.assert_in_sync();
    w.exchange(dave, b"hello from dave");
    w.exchange(1, b"welcome, dave");
    // The joiner is a member, not an admin.
    let bob = w.dev(1);
    assert!(matches!(
        w.clients[dave].remove_members(G, &[bob]),
        Err(MlsError::NotAdmin(_))
    ));
}

#[test]
fn external_joins_with_a_wrong_code_when_closed_or_by_a_banned_user_are_refused_by_members() {
    let mut w = three_with_roles();
    let dave = w.add_client("@dave:d.example", "DAVEDEV001", EngineConfig::default());
    let dir = w.dir.clone();
    // Bob, not an admin, may not open the link.
    assert!(matches!(
        w.clients[1].open_join_link(G),
        Err(MlsError::NotAdmin(_))
    ));
    let open = w.clients[0].open_join_link(G).unwrap();
    assert!(w.deliver_commit(0, &open, &[]));
    let gi = open.group_info.clone().unwrap();
    let (_, wrong) = w.clients[dave]
        .join_by_link(G, &gi, "AAAAAAAAAAAAAAAAAAAAAA", &dir)
        .unwrap();
    let err = w.refuse_external_join(dave, &wrong);
    assert!(
        matches!(&err, MlsError::JoinRefused(m) if m.contains("not valid")),
        "{err:?}"
    );

    // Rotating the code: the old link stops working.
    let old = code_of(&w.clients[0].join_link(G).unwrap().unwrap());
    let rotate = w.clients[0].open_join_link(G).unwrap();
    assert!(w.deliver_commit(0, &rotate, &[]));
    assert_ne!(code_of(&w.clients[2].join_link(G).unwrap().unwrap()), old);
    let (_, stale) = w.clients[dave]
        .join_by_link(G, rotate.group_info.as_ref().unwrap(), &old, &dir)
        .unwrap();
    assert!(matches!(
        w.refuse_external_join(dave, &stale),
        MlsError::JoinRefused(_)
    ));

    // Banned.
    let ban = w.clients[0].set_banned(G, "@dave:d.example", true).unwrap();
    assert!(w.deliver_commit(0, &ban, &[]));
    let code = code_of(&w.clients[0].join_link(G).unwrap().unwrap());
    let (_, banned) = w.clients[dave]
        .join_by_link(G, ban.group_info.as_ref().unwrap(), &code, &dir)
        .unwrap();
    let err = w.refuse_external_join(dave, &banned);
    assert!(
        matches!(&err, MlsError::JoinRefused(m) if m.contains("banned")),
        "{err:?}"
    );

    // Closed.
    let close = w.clients[0].close_join_link(G).unwrap();
    assert!(w.deliver_commit(0, &close, &[]));
    assert_eq!(w.clients[1].join_link(G).unwrap(), None);
    assert_eq!(
        w.clients[1].join_rules(G).unwrap().unwrap().banned,
        ["@dave:d.example"]
    );
    let (_, closed) = w.clients[dave]
        .join_by_link(G, close.group_info.as_ref().unwrap(), &code, &dir)
        .unwrap();
    let err = w.refuse_external_join(dave, &closed);
    assert!(
        matches!(&err, MlsError::JoinRefused(m) if m.contains("not joinable")),
        "{err:?}"
    );
    w.exchange(0, b"still three of us");
    w.assert_in_sync();
}

#[test]
fn an_admin_sets_the_disappearing_timer_every_member_sees_it_and_a_member_may_not() {
    let mut w = three_with_roles();
    assert_eq!(w.clients[1].disappearing_after_ms(G).unwrap(), None);
    assert!(matches!(
        w.clients[1].set_disappearing(G, Some(60_000)),
        Err(MlsError::NotAdmin(_))
    ));
    assert!(matches!(
        w.clients[0].set_disappearing(G, Some(10)),
        Err(MlsError::InvalidState(_))
    ));
    let on = w.clients[0].set_disappearing(G, Some(60_000)).unwrap();
    assert!(w.deliver_commit(0, &on, &[]));
    for i in 0..3 {
        assert_eq!(w.clients[i].disappearing_after_ms(G).unwrap(), Some(60_000));
    }
    // The timer sits next to the other extensions: the join link survives it.
    let open = w.clients[0].open_join_link(G).unwrap();
    assert!(w.deliver_commit(0, &open, &[]));
    assert_eq!(w.clients[2].disappearing_after_ms(G).unwrap(), Some(60_000));
    let off = w.clients[0].set_disappearing(G, None).unwrap();
    assert!(w.deliver_commit(0, &off, &[]));
    assert_eq!(w.clients[2].disappearing_after_ms(G).unwrap(), None);
    assert!(w.clients[2].join_link(G).unwrap().is_some());
    w.exchange(1, b"after the timer");
    w.assert_in_sync();
}

/// A key package of a new device `user`/`device` whose leaf lists `extensions` (and nothing
/// of Parley's that is not among them), its key in `w.dir`.
fn key_package_with_extensions(
    w: &mut World,
    user: &str,
    device: &str,
    extensions: &[openmls::prelude::ExtensionType],
) -> Vec<u8> {
    use openmls::prelude::{
        tls_codec::Serialize as _, Capabilities, CredentialType, KeyPackage, MlsMessageOut,
        ProtocolVersion,
    };
    use openmls_basic_credential::SignatureKeyPair;
    let provider = crate::provider::EngineProvider::default();
    let signer = SignatureKeyPair::new(crate::CIPHERSUITE.signature_algorithm()).unwrap();
    let device = DeviceRef::new(user, device).unwrap();
    w.dir.insert(device.clone(), signer.to_public_vec());
    let credential = openmls::prelude::BasicCredential::new(device.identity().into_bytes());
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(Capabilities::new(
            Some(&[ProtocolVersion::Mls10]),
            Some(&[crate::CIPHERSUITE]),
            Some(extensions),
            Some(&[]),
            Some(&[CredentialType::Basic]),
        ))
        .build(
            crate::CIPHERSUITE,
            &provider,
            &signer,
            openmls::prelude::CredentialWithKey {
                credential: credential.into(),
                signature_key: signer.to_public_vec().into(),
            },
        )
        .unwrap();
    MlsMessageOut::from(kp.key_package().clone())
        .tls_serialize_detached()
        .unwrap()
}

#[test]
fn a_device_without_the_disappearing_capability_cannot_be_added_once_the_timer_is_set() {
    use openmls::prelude::ExtensionType;
    let mut w = three_with_roles();
    // Knows roles and join rules, not the timer (declared in its leaf's capabilities).
    let known = [
        ExtensionType::LastResort,
        ExtensionType::Unknown(crate::ROLES_EXTENSION_TYPE),
        ExtensionType::Unknown(crate::JOIN_RULES_EXTENSION_TYPE),
    ];
    let before = key_package_with_extensions(&mut w, "@old:a.example", "OLDDEVICE1", &known);
    let after = key_package_with_extensions(&mut w, "@old2:a.example", "OLDDEVICE2", &known);
    let timer = w.clients[0].set_disappearing(G, Some(60_000)).unwrap();
    assert!(w.deliver_commit(0, &timer, &[]));
    let dir = w.dir.clone();
    let err = w.clients[0].add_members(G, &[after], &dir).unwrap_err();
    assert!(!matches!(err, MlsError::NotAdmin(_)), "{err:?}");
    assert!(!w.clients[0].has_pending_commit(G).unwrap());
    // Turning the timer off does not make room for it: `required_capabilities` keeps the
    // type listed once added, so the group stays closed to devices that cannot honour it.
    let off = w.clients[0].set_disappearing(G, None).unwrap();
    assert!(w.deliver_commit(0, &off, &[]));
    let err = w.clients[0].add_members(G, &[before], &dir).unwrap_err();
    assert!(!matches!(err, MlsError::NotAdmin(_)), "{err:?}");
}
