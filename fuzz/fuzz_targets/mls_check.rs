//! The hub's MLS inspection (homeserver/src/mls_check/) on arbitrary bytes.
//!
//! The input is what a client or a remote server submits as one MLS value: an `MLSMessage`
//! (PublicMessage proposal or commit, PrivateMessage, Welcome, GroupInfo, key package) or a
//! bare `KeyPackage`. Every entry point runs on it, and every helper the hub applies to a
//! successful result runs on that result. Nothing may panic; a few consistency properties are
//! asserted as well (see the comments).
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{BasicCredential, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn};

// homeserver is a binary crate: compile its (dependency-free) module into this target. What
// this target does not use of it (items, re-exports) is no concern here.
#[allow(dead_code, unused_imports)]
#[path = "../../homeserver/src/mls_check/mod.rs"]
mod mls_check;

use mls_check::{
    check_envelope, check_group_info, check_welcome, inspect_group_info, inspect_message,
    inspect_welcome, validate_key_package, CommittedProposal, ContentKind, MessageInfo,
    ProposalEffect, Roster, StoredProposal,
};

const DAY_MS: u64 = 86_400_000;
/// The homeserver's default `max_key_package_lifetime_ms`.
const MAX_LIFETIME_MS: u64 = 90 * DAY_MS;
/// The identity the seed generator's key packages carry (examples/gen_seeds.rs).
const SEED_IDENTITY: &str = "@bob:b.example/BOBDEVICE";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let now = now_ms();

    // --- Messages: every wire format.
    let info = inspect_message(data);
    let welcome = inspect_welcome(data);
    let group_info = inspect_group_info(data);
    // The typed readers agree with the generic one.
    assert_eq!(
        welcome.is_ok(),
        matches!(info, Ok(MessageInfo::Welcome(_))),
        "inspect_welcome and inspect_message disagree"
    );
    assert_eq!(
        group_info.is_ok(),
        matches!(info, Ok(MessageInfo::GroupInfo(_))),
        "inspect_group_info and inspect_message disagree"
    );

    if let Ok(info) = &info {
        let _ = info.wire_format();
        for kind in [
            ContentKind::Application,
            ContentKind::Proposal,
            ContentKind::Commit,
        ] {
            let _ = kind.as_str();
            if let Some(framed) = info.framed() {
                let _ = check_envelope(info, &framed.group_id, kind);
            }
            let _ = check_envelope(info, b"!other:hub.example", kind);
        }
        if let Some(framed) = info.framed() {
            // A proposal the hub would store, and a commit resolved against it.
            let stored = framed.stored_proposal();
            if let Some(commit) = &framed.commit {
                let committer = match framed.sender {
                    mls_check::MessageSender::Member(leaf) => leaf,
                    _ => 0,
                };
                // Every reference resolves to a Remove of a leaf taken from the reference.
                let lookup = |r: &[u8]| -> Option<StoredProposal> {
                    if let Some((stored_ref, p)) = &stored {
                        if stored_ref.as_slice() == r {
                            return Some(p.clone());
                        }
                    }
                    r.first().map(|&b| StoredProposal {
                        sender_leaf: u32::from(b),
                        effect: ProposalEffect::Remove {
                            leaf: u32::from(b) / 2,
                        },
                    })
                };
                let refs = commit
                    .proposals
                    .iter()
                    .filter(|p| matches!(p, CommittedProposal::Reference(_)))
                    .count();
                assert_eq!(refs, commit.proposal_refs.len());
                let _ = commit.resolve(committer, |_| None);
                if let Ok(delta) = commit.resolve(committer, lookup) {
                    let adds = delta.add_identities();
                    // A roster of 8 leaves with a blank, where the committer sits.
                    let mut leaves: Vec<Option<String>> = (0..8)
                        .map(|i| Some(format!("@u{i}:hub.example/D{i}")))
                        .collect();
                    leaves[3] = None;
                    let mut roster = Roster::from_leaves(leaves);
                    if roster.check_commit(&delta.removes, &adds).is_ok() {
                        let removed: Vec<String> = delta
                            .removes
                            .iter()
                            .filter_map(|&l| roster.identity_at(l).map(str::to_owned))
                            .collect();
                        assert!(roster
                            .check_declared(&delta.removes, &adds, &removed, &adds)
                            .is_ok());
                        let placed = roster.apply_commit(&delta.removes, &adds);
                        assert_eq!(placed.len(), adds.len());
                        for (identity, leaf) in placed {
                            assert_eq!(roster.leaf_of(&identity), Some(leaf));
                        }
                    } else {
                        let _ = roster.check_declared(&delta.removes, &adds, &[], &[]);
                    }
                }
                let _ = check_welcome(
                    &mls_check::WelcomeInfo {
                        ciphersuite: 1,
                        new_members: Vec::new(),
                    },
                    &commit.adds,
                );
            }
            let summary = mls_check::GroupInfoSummary {
                group_id: framed.group_id.clone(),
                epoch: framed.epoch.saturating_add(1),
                ciphersuite: 1,
            };
            assert!(check_group_info(&summary, framed).is_ok());
        }
    }
    if let Ok(w) = &welcome {
        let _ = check_welcome(w, &[]);
    }

    // --- Key packages: the upload check as the hub runs it, for a device that is not the
    // package's (fails at the identity at the latest) ...
    let _ = validate_key_package(data, SEED_IDENTITY, &[0; 32], now, MAX_LIFETIME_MS, false);
    // ... and for the device the package names, so that valid packages (the seeds) get past
    // the signature to the lifetime, identity, key and last-resort checks.
    if let Some((identity, key)) = claimed_device(data) {
        for last_resort in [false, true] {
            let _ = validate_key_package(data, &identity, &key, now, MAX_LIFETIME_MS, last_resort);
            if let Ok(valid) =
                validate_key_package(data, &identity, &key, now, u64::MAX, last_resort)
            {
                assert_eq!(valid.is_last_resort, last_resort);
                // The normalised form is an MLSMessage that validates the same way.
                let again = validate_key_package(
                    &valid.message,
                    &identity,
                    &key,
                    now,
                    u64::MAX,
                    last_resort,
                );
                assert_eq!(
                    again.as_ref().ok(),
                    Some(&valid),
                    "normalised key package differs"
                );
                assert!(matches!(
                    inspect_message(&valid.message),
                    Ok(MessageInfo::KeyPackage)
                ));
            }
        }
    }
});

/// The (identity, signature key) a key package claims, read without verifying it.
fn claimed_device(data: &[u8]) -> Option<(String, Vec<u8>)> {
    let kp = match MlsMessageIn::tls_deserialize_exact(data) {
        Ok(msg) => match msg.extract() {
            MlsMessageBodyIn::KeyPackage(kp) => kp,
            _ => return None,
        },
        Err(_) => KeyPackageIn::tls_deserialize_exact(data).ok()?,
    };
    let cred = kp.unverified_credential();
    let basic = BasicCredential::try_from(cred.credential).ok()?;
    let identity = String::from_utf8(basic.identity().to_vec()).ok()?;
    Some((identity, cred.signature_key.as_slice().to_vec()))
}
