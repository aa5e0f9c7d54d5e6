//! Tests of the MLS checks against real openmls clients: key packages, messages and the roster.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::OpenMlsProvider as _;
use openmls::prelude::{
    Capabilities, CredentialWithKey, ExtensionType, GroupId, KeyPackage, LeafNodeIndex,
    LeafNodeParameters, Lifetime, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageBodyIn, MlsMessageOut, ProcessedMessageContent, ProtocolVersion, SignatureScheme,
    StagedWelcome, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::*;

const DAY_MS: u64 = 86_400_000;
const MAX_LIFETIME_MS: u64 = 90 * DAY_MS;
const GROUP_ID: &str = "!testgroup:hub.example";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn now_s() -> u64 {
    now_ms() / 1000
}

struct Device {
    id: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    cred: CredentialWithKey,
}

fn device(name: &str) -> Device {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    signer.store(provider.storage()).unwrap();
    let id = format!("@{name}:example.org/{}", name.to_uppercase());
    let cred = CredentialWithKey {
        credential: BasicCredential::new(id.clone().into_bytes()).into(),
        signature_key: signer.public().to_vec().into(),
    };
    Device {
        id,
        provider,
        signer,
        cred,
    }
}

fn capabilities() -> Capabilities {
    Capabilities::new(
        Some(&[ProtocolVersion::Mls10]),
        Some(&[
            CIPHERSUITE,
            Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        ]),
        Some(&[ExtensionType::LastResort]),
        Some(&[]),
        Some(&[CredentialType::Basic]),
    )
}

impl Device {
    fn key(&self) -> Vec<u8> {
        self.signer.public().to_vec()
    }

    fn build_kp(
        &self,
        suite: Ciphersuite,
        lifetime: Option<Lifetime>,
        last_resort: bool,
    ) -> KeyPackage {
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        if let Some(l) = lifetime {
            builder = builder.key_package_lifetime(l);
        }
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        builder
            .build(suite, &self.provider, &self.signer, self.cred.clone())
            .unwrap()
            .key_package()
            .clone()
    }

    fn kp(&self) -> KeyPackage {
        self.build_kp(CIPHERSUITE, None, false)
    }

    fn kp_message(&self, kp: KeyPackage) -> Vec<u8> {
        MlsMessageOut::from(kp).tls_serialize_detached().unwrap()
    }
}

fn validate(
    dev: &Device,
    bytes: &[u8],
    last_resort: bool,
) -> Result<ValidKeyPackage, KeyPackageError> {
    validate_key_package(
        bytes,
        &dev.id,
        &dev.key(),
        now_ms(),
        MAX_LIFETIME_MS,
        last_resort,
    )
}

fn ser(msg: &MlsMessageOut) -> Vec<u8> {
    msg.tls_serialize_detached().unwrap()
}

// ---------------------------------------------------------------- key packages

#[test]
fn valid_key_package_message_passes_with_ref_lifetime_and_normalised_bytes() {
    let alice = device("alice");
    let kp = alice.kp();
    let bytes = alice.kp_message(kp.clone());
    let valid = validate(&alice, &bytes, false).unwrap();
    assert_eq!(
        valid.hash_ref,
        kp.hash_ref(alice.provider.crypto()).unwrap().as_slice()
    );
    assert_eq!(valid.not_after_ms, kp.life_time().not_after() * 1000);
    assert!(valid.not_after_ms > now_ms());
    assert!(!valid.is_last_resort);
    assert_eq!(valid.identity, alice.id);
    assert_eq!(valid.message, bytes);
}

#[test]
fn bare_key_package_is_accepted_and_normalised_to_mls_message() {
    let alice = device("alice");
    let kp = alice.kp();
    let bare = kp.tls_serialize_detached().unwrap();
    let valid = validate(&alice, &bare, false).unwrap();
    assert_eq!(valid.message, alice.kp_message(kp));
}

#[test]
fn key_package_with_wrong_identity_is_refused() {
    let alice = device("alice");
    let bytes = alice.kp_message(alice.kp());
    let err = validate_key_package(
        &bytes,
        "@alice:example.org/OTHERDEVICE",
        &alice.key(),
        now_ms(),
        MAX_LIFETIME_MS,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err, KeyPackageError::IdentityMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn key_package_with_unbound_signature_key_is_refused() {
    let alice = device("alice");
    let other = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let bytes = alice.kp_message(alice.kp());
    let err = validate_key_package(
        &bytes,
        &alice.id,
        other.public(),
        now_ms(),
        MAX_LIFETIME_MS,
        false,
    )
    .unwrap_err();
    assert_eq!(err, KeyPackageError::SignatureKeyMismatch);
}

#[test]
fn expired_key_package_is_refused() {
    let alice = device("alice");
    let lifetime = Lifetime::init(now_s() - 2 * 86_400, now_s() - 86_400);
    let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
    let err = validate(&alice, &bytes, false).unwrap_err();
    assert!(matches!(err, KeyPackageError::Expired { .. }), "{err:?}");
}

#[test]
fn key_package_expired_by_the_server_clock_is_refused() {
    let alice = device("alice");
    let bytes = alice.kp_message(alice.kp());
    let later = now_ms() + 200 * DAY_MS;
    let err = validate_key_package(
        &bytes,
        &alice.id,
        &alice.key(),
        later,
        MAX_LIFETIME_MS,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err, KeyPackageError::Expired { now_ms, .. } if now_ms == later),
        "{err:?}"
    );
}

#[test]
fn key_package_not_yet_valid_by_more_than_the_skew_is_refused() {
    let alice = device("alice");
    // openmls's default not_before is one hour ago; a server clock 2 h behind sees it in
    // the future by more than NOT_BEFORE_SKEW_MS.
    let bytes = alice.kp_message(alice.kp());
    let behind = now_ms() - 2 * 3_600_000;
    let err = validate_key_package(
        &bytes,
        &alice.id,
        &alice.key(),
        behind,
        MAX_LIFETIME_MS,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err, KeyPackageError::NotYetValid { .. }),
        "{err:?}"
    );
    // Within the skew it passes.
    let slightly_behind = now_ms() - 3_600_000 - 60_000;
    validate_key_package(
        &bytes,
        &alice.id,
        &alice.key(),
        slightly_behind,
        MAX_LIFETIME_MS,
        false,
    )
    .unwrap();
}

#[test]
fn key_package_lifetime_longer_than_maximum_plus_one_hour_is_refused() {
    let alice = device("alice");
    let lifetime = Lifetime::init(now_s() - 3600, now_s() + 90 * 86_400 + 60);
    let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
    let err = validate(&alice, &bytes, false).unwrap_err();
    assert!(
        matches!(err, KeyPackageError::LifetimeTooLong { .. }),
        "{err:?}"
    );
}

#[test]
fn key_package_lifetime_of_exactly_maximum_plus_one_hour_passes() {
    let alice = device("alice");
    // Lifetime::new(t) is [now − 1 h, now + t]: t = max gives max + 1 h.
    let lifetime = Lifetime::new(MAX_LIFETIME_MS / 1000);
    let bytes = alice.kp_message(alice.build_kp(CIPHERSUITE, Some(lifetime), false));
    validate(&alice, &bytes, false).unwrap();
}

#[test]
fn key_package_with_tampered_signature_is_refused() {
    let alice = device("alice");
    let mut bytes = alice.kp_message(alice.kp());
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // last byte of the key package signature
    assert_eq!(
        validate(&alice, &bytes, false).unwrap_err(),
        KeyPackageError::InvalidSignature
    );
}

#[test]
fn key_package_with_tampered_payload_is_refused() {
    let alice = device("alice");
    let mut bytes = alice.kp_message(alice.kp());
    bytes[10] ^= 0x01; // inside the init key
    let err = validate(&alice, &bytes, false).unwrap_err();
    assert_eq!(err, KeyPackageError::InvalidSignature);
}

#[test]
fn garbage_and_empty_key_packages_are_refused_as_malformed() {
    let alice = device("alice");
    for bytes in [
        &b""[..],
        b"\x00",
        b"hello world, not a key package",
        &[0, 1, 0, 5, 0xff],
    ] {
        let err = validate(&alice, bytes, false).unwrap_err();
        assert!(matches!(err, KeyPackageError::Malformed(_)), "{err:?}");
    }
}

#[test]
fn every_truncated_key_package_is_refused_without_panic() {
    let alice = device("alice");
    let bytes = alice.kp_message(alice.kp());
    for len in 0..bytes.len() {
        assert!(
            validate(&alice, &bytes[..len], false).is_err(),
            "prefix {len}"
        );
    }
    let bare = alice.kp().tls_serialize_detached().unwrap();
    for len in 0..bare.len() {
        assert!(
            validate(&alice, &bare[..len], false).is_err(),
            "bare prefix {len}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        validate(&alice, &trailing, false),
        Err(KeyPackageError::Malformed(_))
    ));
}

#[test]
fn key_package_with_other_ciphersuite_is_refused() {
    let alice = device("alice");
    let suite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
    let bytes = alice.kp_message(alice.build_kp(suite, None, false));
    assert_eq!(
        validate(&alice, &bytes, false).unwrap_err(),
        KeyPackageError::UnsupportedCiphersuite(0x0003)
    );
}

#[test]
fn last_resort_key_package_is_detected_and_required_where_declared() {
    let alice = device("alice");
    let last_resort = alice.kp_message(alice.build_kp(CIPHERSUITE, None, true));
    let ordinary = alice.kp_message(alice.kp());

    let valid = validate(&alice, &last_resort, true).unwrap();
    assert!(valid.is_last_resort);
    assert_eq!(
        validate(&alice, &last_resort, false).unwrap_err(),
        KeyPackageError::UnexpectedLastResort
    );
    assert_eq!(
        validate(&alice, &ordinary, true).unwrap_err(),
        KeyPackageError::MissingLastResortExtension
    );
}

#[test]
fn other_mls_messages_are_not_key_packages() {
    let alice = device("alice");
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let msg = group
        .create_message(&alice.provider, &alice.signer, b"hello")
        .unwrap();
    assert_eq!(
        validate(&alice, &ser(&msg), false).unwrap_err(),
        KeyPackageError::NotAKeyPackage(WireFormatKind::PrivateMessage)
    );
}

// ---------------------------------------------------------------- groups and messages

fn create_group(alice: &Device, policy: openmls::prelude::WireFormatPolicy) -> MlsGroup {
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(policy)
        .use_ratchet_tree_extension(true)
        .capabilities(capabilities())
        .build();
    MlsGroup::new_with_group_id(
        &alice.provider,
        &alice.signer,
        &config,
        GroupId::from_slice(GROUP_ID.as_bytes()),
        alice.cred.clone(),
    )
    .unwrap()
}

fn join(dev: &Device, welcome: &[u8]) -> MlsGroup {
    let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome)
        .unwrap()
        .extract()
    else {
        panic!("not a welcome")
    };
    let config = MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    StagedWelcome::new_from_welcome(&dev.provider, &config, welcome, None)
        .unwrap()
        .into_group(&dev.provider)
        .unwrap()
}

fn process(group: &mut MlsGroup, dev: &Device, bytes: &[u8]) -> ProcessedMessageContent {
    let protocol = MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .try_into_protocol_message()
        .unwrap();
    group
        .process_message(&dev.provider, protocol)
        .unwrap()
        .into_content()
}

fn process_commit(group: &mut MlsGroup, dev: &Device, bytes: &[u8]) {
    match process(group, dev, bytes) {
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            group.merge_staged_commit(&dev.provider, *staged).unwrap()
        }
        _ => panic!("not a commit"),
    }
}

fn openmls_leaves(group: &MlsGroup) -> Vec<(u32, String)> {
    group
        .members()
        .map(|m| {
            let id = BasicCredential::try_from(m.credential).unwrap();
            (
                m.index.u32(),
                String::from_utf8(id.identity().to_vec()).unwrap(),
            )
        })
        .collect()
}

fn roster_leaves(roster: &Roster) -> Vec<(u32, String)> {
    roster
        .members()
        .into_iter()
        .map(|(l, id)| (l, id.to_owned()))
        .collect()
}

/// What the hub does with a commit bundle: rule 2 envelope, resolve, rule 4 check, apply.
fn hub_commit(
    roster: &mut Roster,
    stored: &HashMap<Vec<u8>, StoredProposal>,
    commit: &[u8],
    epoch: u64,
    declared_adds: &[&Device],
    declared_removes: &[&Device],
) -> (CommitInfo, CommitDelta, Vec<(String, u32)>) {
    let info = inspect_message(commit).unwrap();
    let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap();
    assert_eq!(framed.epoch, epoch);
    let MessageSender::Member(committer) = framed.sender else {
        panic!("committer not a member")
    };
    let commit_info = framed.commit.clone().unwrap();
    let delta = commit_info
        .resolve(committer, |r| stored.get(r).cloned())
        .unwrap();
    let adds = delta.add_identities();
    let declared_a: Vec<String> = declared_adds.iter().map(|d| d.id.clone()).collect();
    let declared_r: Vec<String> = declared_removes.iter().map(|d| d.id.clone()).collect();
    roster
        .check_declared(&delta.removes, &adds, &declared_r, &declared_a)
        .unwrap();
    let added = roster.apply_commit(&delta.removes, &adds);
    (commit_info, delta, added)
}

#[test]
fn commit_deltas_and_roster_leaf_indices_agree_with_openmls() {
    let alice = device("alice");
    let [bob, carol, dave, erin, frank, gina] =
        ["bob", "carol", "dave", "erin", "frank", "gina"].map(device);
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let mut roster = Roster::new(alice.id.clone());
    let mut stored: HashMap<Vec<u8>, StoredProposal> = HashMap::new();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 0: add bob and carol.
    let (commit, welcome, group_info) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp(), carol.kp()])
        .unwrap();
    let (info, delta, added) =
        hub_commit(&mut roster, &stored, &ser(&commit), 0, &[&bob, &carol], &[]);
    assert_eq!(
        delta.add_identities(),
        vec![bob.id.clone(), carol.id.clone()]
    );
    assert_eq!(info.adds[0].signature_key, bob.key());
    assert!(info.removes.is_empty() && info.proposal_refs.is_empty());
    assert_eq!(added, vec![(bob.id.clone(), 1), (carol.id.clone(), 2)]);
    let welcome_info = inspect_welcome(&ser(&welcome)).unwrap();
    assert_eq!(welcome_info.ciphersuite, 0x0001);
    check_welcome(&welcome_info, &delta.adds).unwrap();
    let gi = inspect_group_info(&ser(&MlsMessageOut::from(group_info.unwrap()))).unwrap();
    assert_eq!((gi.group_id.as_slice(), gi.epoch), (GROUP_ID.as_bytes(), 1));
    let framed_commit = inspect_message(&ser(&commit))
        .unwrap()
        .framed()
        .cloned()
        .unwrap();
    check_group_info(&gi, &framed_commit).unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 1: remove bob (leaf 1) — a blank leaf in the middle.
    let (commit, _, _) = group
        .remove_members(&alice.provider, &alice.signer, &[LeafNodeIndex::new(1)])
        .unwrap();
    let (info, _, _) = hub_commit(&mut roster, &stored, &ser(&commit), 1, &[], &[&bob]);
    assert_eq!(info.removes, vec![1]);
    assert!(info.has_path);
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(
        roster.leaves,
        vec![Some(alice.id.clone()), None, Some(carol.id.clone())]
    );
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 2: add dave, who takes the blank leaf 1; dave joins.
    let (commit, welcome, _) = group
        .add_members(&alice.provider, &alice.signer, &[dave.kp()])
        .unwrap();
    let (_, _, added) = hub_commit(&mut roster, &stored, &ser(&commit), 2, &[&dave], &[]);
    assert_eq!(added, vec![(dave.id.clone(), 1)]);
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));
    let mut dave_group = join(&dave, &ser(&welcome));

    // Epoch 3: remove carol, the last leaf: the tree is truncated.
    let (commit, _, _) = group
        .remove_members(&alice.provider, &alice.signer, &[LeafNodeIndex::new(2)])
        .unwrap();
    hub_commit(&mut roster, &stored, &ser(&commit), 3, &[], &[&carol]);
    group.merge_pending_commit(&alice.provider).unwrap();
    process_commit(&mut dave_group, &dave, &ser(&commit));
    assert_eq!(roster.leaves.len(), 2);
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 4: add erin and frank: they extend the tree at 2 and 3.
    let (commit, _, _) = group
        .add_members(&alice.provider, &alice.signer, &[erin.kp(), frank.kp()])
        .unwrap();
    let (_, _, added) = hub_commit(
        &mut roster,
        &stored,
        &ser(&commit),
        4,
        &[&erin, &frank],
        &[],
    );
    assert_eq!(added, vec![(erin.id.clone(), 2), (frank.id.clone(), 3)]);
    group.merge_pending_commit(&alice.provider).unwrap();
    process_commit(&mut dave_group, &dave, &ser(&commit));
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 5: dave leaves (a Remove proposal of his own leaf); alice commits it by reference.
    let leave = ser(&dave_group
        .leave_group(&dave.provider, &dave.signer)
        .unwrap());
    let leave_info = inspect_message(&leave).unwrap();
    let framed = check_envelope(&leave_info, GROUP_ID.as_bytes(), ContentKind::Proposal).unwrap();
    assert_eq!((framed.epoch, framed.sender), (5, MessageSender::Member(1)));
    assert_eq!(
        framed.proposal.as_ref().unwrap().effect,
        ProposalEffect::Remove { leaf: 1 }
    );
    let (leave_ref, leave_stored) = framed.stored_proposal().unwrap();
    stored.insert(leave_ref.clone(), leave_stored);
    match process(&mut group, &alice, &leave) {
        ProcessedMessageContent::ProposalMessage(p) => {
            group
                .store_pending_proposal(alice.provider.storage(), *p)
                .unwrap();
        }
        _ => panic!("not a proposal"),
    }
    let (commit, _, _) = group
        .commit_to_pending_proposals(&alice.provider, &alice.signer)
        .unwrap();
    let (info, delta, _) = hub_commit(&mut roster, &stored, &ser(&commit), 5, &[], &[&dave]);
    assert_eq!(info.proposal_refs, vec![leave_ref]);
    assert_eq!(delta.removes, vec![1]);
    stored.clear(); // proposals live for one epoch
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 6: alice proposes removing frank (the last leaf) and commits her own proposal.
    let (proposal, proposal_ref) = group
        .propose_remove_member(&alice.provider, &alice.signer, LeafNodeIndex::new(3))
        .unwrap();
    let proposal_info = inspect_message(&ser(&proposal)).unwrap();
    let framed = proposal_info.framed().unwrap();
    assert_eq!(
        framed.proposal.as_ref().unwrap().proposal_ref,
        proposal_ref.as_slice()
    );
    let (r, s) = framed.stored_proposal().unwrap();
    stored.insert(r, s);
    let (commit, _, _) = group
        .commit_to_pending_proposals(&alice.provider, &alice.signer)
        .unwrap();
    let (info, delta, _) = hub_commit(&mut roster, &stored, &ser(&commit), 6, &[], &[&frank]);
    assert_eq!(
        info.proposal_refs.len(),
        1,
        "own pending proposals are committed by reference"
    );
    assert_eq!(delta.removes, vec![3]);
    stored.clear();
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(
        roster.leaves,
        vec![Some(alice.id.clone()), None, Some(erin.id.clone())]
    );
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 7: add gina, who takes blank leaf 1.
    let (commit, _, _) = group
        .add_members(&alice.provider, &alice.signer, &[gina.kp()])
        .unwrap();
    let (_, _, added) = hub_commit(&mut roster, &stored, &ser(&commit), 7, &[&gina], &[]);
    assert_eq!(added, vec![(gina.id.clone(), 1)]);
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));

    // Epoch 8: a self-update changes no leaf.
    let bundle = group
        .self_update(
            &alice.provider,
            &alice.signer,
            LeafNodeParameters::default(),
        )
        .unwrap();
    let (info, delta, added) = hub_commit(&mut roster, &stored, &ser(bundle.commit()), 8, &[], &[]);
    assert!(info.has_path && info.proposals.is_empty() && added.is_empty());
    assert_eq!(delta, CommitDelta::default());
    group.merge_pending_commit(&alice.provider).unwrap();
    assert_eq!(roster_leaves(&roster), openmls_leaves(&group));
    assert_eq!(group.epoch().as_u64(), 9);
}

#[test]
fn application_message_is_a_private_message_with_clear_group_id_epoch_and_type() {
    let alice = device("alice");
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let msg = ser(&group
        .create_message(&alice.provider, &alice.signer, b"hi")
        .unwrap());
    let info = inspect_message(&msg).unwrap();
    let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Application).unwrap();
    assert_eq!(framed.wire_format, WireFormatKind::PrivateMessage);
    assert_eq!(framed.epoch, 0);
    assert_eq!(framed.sender, MessageSender::Hidden);
    assert!(framed.commit.is_none() && framed.proposal.is_none());
    assert_eq!(
        check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
        MessageError::ContentTypeMismatch {
            expected: ContentKind::Commit,
            found: ContentKind::Application
        }
    );
    assert_eq!(
        check_envelope(&info, b"!other:hub.example", ContentKind::Application).unwrap_err(),
        MessageError::GroupIdMismatch
    );
}

#[test]
fn proposal_message_gives_group_id_epoch_type_sender_and_effect() {
    let alice = device("alice");
    let bob = device("bob");
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let (proposal, proposal_ref) = group
        .propose_add_member(&alice.provider, &alice.signer, &bob.kp())
        .unwrap();
    let info = inspect_message(&ser(&proposal)).unwrap();
    let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Proposal).unwrap();
    assert_eq!((framed.epoch, framed.sender), (0, MessageSender::Member(0)));
    let p = framed.proposal.as_ref().unwrap();
    assert_eq!(p.proposal_ref, proposal_ref.as_slice());
    let ProposalEffect::Add(added) = &p.effect else {
        panic!("not an add")
    };
    assert_eq!(added.identity, bob.id);
    assert_eq!(
        check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
        MessageError::ContentTypeMismatch {
            expected: ContentKind::Commit,
            found: ContentKind::Proposal
        }
    );
}

#[test]
fn encrypted_commit_is_read_from_the_clear_header_and_refused_by_rule_two() {
    let alice = device("alice");
    let bob = device("bob");
    let mut group = create_group(&alice, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY);
    let (commit, _, _) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp()])
        .unwrap();
    let info = inspect_message(&ser(&commit)).unwrap();
    let framed = info.framed().unwrap();
    assert_eq!(framed.wire_format, WireFormatKind::PrivateMessage);
    assert_eq!(framed.content_type, ContentKind::Commit);
    assert_eq!(framed.group_id, GROUP_ID.as_bytes());
    assert_eq!(
        check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap_err(),
        MessageError::DisallowedWireFormat {
            content: ContentKind::Commit,
            required: WireFormatKind::PublicMessage,
            found: WireFormatKind::PrivateMessage
        }
    );
}

#[test]
fn welcome_and_group_info_are_not_accepted_as_group_messages() {
    let alice = device("alice");
    let bob = device("bob");
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let (commit, welcome, gi) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp()])
        .unwrap();
    let welcome_info = inspect_message(&ser(&welcome)).unwrap();
    assert_eq!(welcome_info.wire_format(), WireFormatKind::Welcome);
    assert!(matches!(
        check_envelope(&welcome_info, GROUP_ID.as_bytes(), ContentKind::Commit),
        Err(MessageError::WrongWireFormat { .. })
    ));
    assert!(matches!(
        inspect_group_info(&ser(&welcome)),
        Err(MessageError::WrongWireFormat { .. })
    ));
    assert!(matches!(
        inspect_welcome(&ser(&commit)),
        Err(MessageError::WrongWireFormat { .. })
    ));
    let kp_info = inspect_message(&bob.kp_message(bob.kp())).unwrap();
    assert_eq!(kp_info, MessageInfo::KeyPackage);
    // A group info of the wrong epoch does not belong to the commit.
    let gi = inspect_group_info(&ser(&MlsMessageOut::from(gi.unwrap()))).unwrap();
    let mut framed = inspect_message(&ser(&commit))
        .unwrap()
        .framed()
        .cloned()
        .unwrap();
    framed.epoch = 5;
    assert_eq!(
        check_group_info(&gi, &framed).unwrap_err(),
        MessageError::GroupInfoEpochMismatch {
            expected: 6,
            found: 1
        }
    );
}

#[test]
fn welcome_for_other_key_packages_than_the_commit_adds_is_refused() {
    let alice = device("alice");
    let [bob, carol] = ["bob", "carol"].map(device);
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let (commit, _, _) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp()])
        .unwrap();
    let info = inspect_message(&ser(&commit)).unwrap();
    let adds = info.framed().unwrap().commit.as_ref().unwrap().adds.clone();
    group
        .clear_pending_commit(alice.provider.storage())
        .unwrap();
    let (_, other_welcome, _) = group
        .add_members(&alice.provider, &alice.signer, &[carol.kp()])
        .unwrap();
    let welcome = inspect_welcome(&ser(&other_welcome)).unwrap();
    assert_eq!(
        check_welcome(&welcome, &adds).unwrap_err(),
        MessageError::WelcomeRecipientsMismatch
    );
}

#[test]
fn declared_adds_or_removes_that_disagree_with_the_commit_are_refused() {
    let alice = device("alice");
    let [bob, carol] = ["bob", "carol"].map(device);
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let (commit, _, _) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp()])
        .unwrap();
    let info = inspect_message(&ser(&commit)).unwrap();
    let delta = info
        .framed()
        .unwrap()
        .commit
        .as_ref()
        .unwrap()
        .resolve(0, |_| None)
        .unwrap();
    let roster = Roster::new(alice.id.clone());
    let adds = delta.add_identities();
    assert!(matches!(
        roster.check_declared(&delta.removes, &adds, &[], std::slice::from_ref(&carol.id)),
        Err(RosterError::AddsMismatch { .. })
    ));
    assert!(matches!(
        roster.check_declared(
            &delta.removes,
            &adds,
            std::slice::from_ref(&alice.id),
            std::slice::from_ref(&bob.id)
        ),
        Err(RosterError::RemovesMismatch { .. })
    ));
    roster
        .check_declared(&delta.removes, &adds, &[], std::slice::from_ref(&bob.id))
        .unwrap();
    // Adding a device that is already a member is refused.
    assert_eq!(
        roster
            .check_commit(&[], std::slice::from_ref(&alice.id))
            .unwrap_err(),
        RosterError::DuplicateMember(alice.id.clone())
    );
    assert_eq!(
        roster.check_commit(&[4], &[]).unwrap_err(),
        RosterError::RemoveOfBlankLeaf(4)
    );
}

#[test]
fn commit_with_unknown_proposal_reference_is_refused() {
    let alice = device("alice");
    let bob = device("bob");
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    group
        .propose_add_member(&alice.provider, &alice.signer, &bob.kp())
        .unwrap();
    let (commit, _, _) = group
        .commit_to_pending_proposals(&alice.provider, &alice.signer)
        .unwrap();
    let info = inspect_message(&ser(&commit)).unwrap();
    let commit_info = info.framed().unwrap().commit.clone().unwrap();
    assert_eq!(commit_info.proposal_refs.len(), 1);
    assert!(matches!(
        commit_info.resolve(0, |_| None),
        Err(MessageError::UnknownProposalRef(_))
    ));
}

#[test]
fn commit_removing_its_committer_is_refused() {
    let commit = CommitInfo {
        proposals: vec![CommittedProposal::Reference(vec![1, 2, 3])],
        adds: vec![],
        removes: vec![],
        updates: 0,
        proposal_refs: vec![vec![1, 2, 3]],
        other_proposal_types: vec![],
        has_path: true,
        path_leaf: None,
    };
    let stored = StoredProposal {
        sender_leaf: 2,
        effect: ProposalEffect::Remove { leaf: 0 },
    };
    assert_eq!(
        commit.resolve(0, |_| Some(stored.clone())).unwrap_err(),
        MessageError::CommitterRemoved(0)
    );
    let self_remove = StoredProposal {
        sender_leaf: 2,
        effect: ProposalEffect::SelfRemove,
    };
    assert_eq!(
        commit
            .resolve(0, |_| Some(self_remove.clone()))
            .unwrap()
            .removes,
        vec![2]
    );
}

#[test]
fn truncated_garbage_or_corrupted_messages_give_errors_never_panics() {
    let alice = device("alice");
    let [bob, carol] = ["bob", "carol"].map(device);
    let mut group = create_group(&alice, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY);
    let (commit, welcome, gi) = group
        .add_members(&alice.provider, &alice.signer, &[bob.kp(), carol.kp()])
        .unwrap();
    group.merge_pending_commit(&alice.provider).unwrap();
    let app = group
        .create_message(&alice.provider, &alice.signer, b"x")
        .unwrap();
    let (proposal, _) = group
        .propose_remove_member(&alice.provider, &alice.signer, LeafNodeIndex::new(1))
        .unwrap();
    let samples = [
        ser(&commit),
        ser(&welcome),
        ser(&MlsMessageOut::from(gi.unwrap())),
        ser(&proposal),
        ser(&app),
    ];
    for bytes in &samples {
        inspect_message(bytes).unwrap();
        for len in 0..bytes.len() {
            assert!(
                inspect_message(&bytes[..len]).is_err(),
                "prefix {len} parsed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(inspect_message(&longer).is_err());
    }
    // Corrupting any single byte must not panic (the result may still parse).
    let kp = bob.kp_message(bob.kp());
    for bytes in samples.iter().chain([&kp]) {
        for i in 0..bytes.len() {
            for mask in [0xff, 0x80, 0x01] {
                let mut corrupted = bytes.clone();
                corrupted[i] ^= mask;
                let _ = inspect_message(&corrupted);
            }
        }
    }
    for i in 0..kp.len() {
        let mut corrupted = kp.clone();
        corrupted[i] ^= 0xff;
        let _ = validate(&bob, &corrupted, false);
    }
    for garbage in [
        &b""[..],
        b"\x00\x01",
        b"\x00\x01\x00\x01\xff\xff\xff\xff",
        b"garbage",
    ] {
        assert!(matches!(
            inspect_message(garbage),
            Err(MessageError::Malformed(_))
        ));
    }
}

#[test]
fn roster_apply_commit_blanks_fills_leftmost_and_truncates() {
    let mut roster = Roster::new("a");
    let added = roster.apply_commit(&[], &["b".into(), "c".into(), "d".into()]);
    assert_eq!(
        added,
        vec![("b".into(), 1), ("c".into(), 2), ("d".into(), 3)]
    );
    assert!(roster.apply_commit(&[1, 3], &[]).is_empty());
    assert_eq!(
        roster.leaves,
        vec![Some("a".into()), None, Some("c".into())]
    );
    let added = roster.apply_commit(&[2], &["e".into(), "f".into()]);
    assert_eq!(added, vec![("e".into(), 1), ("f".into(), 2)]);
    assert_eq!(roster.leaf_of("f"), Some(2));
    assert_eq!(roster.identity_at(1), Some("e"));
    assert_eq!(
        Roster::from_leaves(vec![Some("a".into()), None, None])
            .leaves
            .len(),
        1
    );
}

#[test]
fn an_external_commit_is_read_with_its_joining_leaf_join_aad_and_context_changes() {
    use parley_mls::{Engine, EngineConfig, StaticDeviceKeys};
    let mut dir = StaticDeviceKeys::new();
    let mut alice = Engine::new("@alice:hub.example", "ALICE", EngineConfig::default()).unwrap();
    let mut dave = Engine::new("@dave:d.example", "DAVE", EngineConfig::default()).unwrap();
    for e in [&alice, &dave] {
        dir.insert(e.device().clone(), e.signature_public_key());
    }
    alice.create_group_with_roles(GROUP_ID).unwrap();
    let open = alice.open_join_link(GROUP_ID).unwrap();
    // The GCE sets both extensions: the roles kept, the join rules added.
    let framed = inspect_message(&open.commit).unwrap();
    let commit = framed.framed().unwrap().commit.as_ref().unwrap();
    let Some(CommittedProposal::Inline(ProposalEffect::GroupContextExtensions(change))) =
        commit.proposals.first()
    else {
        panic!("no GCE in {commit:?}");
    };
    assert!(change.roles.is_some());
    let rules =
        parley_client_api::join::JoinRules::decode(change.join_rules.as_ref().unwrap()).unwrap();
    alice.confirm_pending_commit(GROUP_ID).unwrap();
    let code = rules.code.unwrap();
    let (_, join) = dave
        .join_by_link(GROUP_ID, open.group_info.as_ref().unwrap(), &code, &dir)
        .unwrap();
    let info = inspect_message(&join.commit).unwrap();
    let framed = check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Commit).unwrap();
    assert_eq!(framed.sender, MessageSender::NewMemberCommit);
    assert_eq!(framed.epoch, 1);
    assert_eq!(
        framed.authenticated_data,
        format!(r#"{{"join_code":"{code}"}}"#).into_bytes()
    );
    let commit = framed.commit.as_ref().unwrap();
    let leaf = commit.path_leaf.as_ref().unwrap();
    assert_eq!(leaf.identity.as_deref(), Some("@dave:d.example/DAVE"));
    assert_eq!(leaf.signature_key, dave.signature_public_key());
    assert_eq!(
        commit.proposals,
        vec![CommittedProposal::Inline(ProposalEffect::Other {
            proposal_type: 6
        })]
    );
    // A new member may commit, but not propose.
    assert!(check_envelope(&info, GROUP_ID.as_bytes(), ContentKind::Proposal).is_err());
}
