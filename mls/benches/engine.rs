//! Engine vs bare openmls: add 10/100/1000, self-update and process-commit at 100/1000,
//! encrypt+decrypt of 256 bytes. Run with `cargo bench -p parley-mls`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use openmls::prelude::{tls_codec::*, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use parley_mls::{Engine, EngineConfig, Envelope, StaticDeviceKeys, CIPHERSUITE};

const G: &str = "!bench0001:example.org";

// ---------- engine side ----------

struct EngineGroup {
    owner: Engine,
    receiver: Engine,
    dir: StaticDeviceKeys,
    spare_kps: Vec<Vec<u8>>,
}

fn new_engine(i: usize, dir: &mut StaticDeviceKeys) -> Engine {
    let e = Engine::new(
        &format!("@user{i}:example.org"),
        &format!("DEV{i}"),
        EngineConfig::default(),
    )
    .unwrap();
    dir.insert(e.device().clone(), e.signature_public_key());
    e
}

/// An engine group with `members` members (owner + receiver + others), plus `spare` key
/// packages of devices not in the group.
fn engine_group(members: usize, spare: usize) -> EngineGroup {
    let mut dir = StaticDeviceKeys::new();
    let mut owner = new_engine(0, &mut dir);
    owner.create_group(G).unwrap();
    let mut receiver = new_engine(1, &mut dir);
    let mut kps = receiver.generate_key_packages(1).unwrap();
    for i in 2..members {
        kps.extend(new_engine(i, &mut dir).generate_key_packages(1).unwrap());
    }
    if members > 1 {
        let b = owner.add_members(G, &kps, &dir).unwrap();
        owner.confirm_pending_commit(G).unwrap();
        receiver
            .join_from_welcome(b.welcome.as_ref().unwrap(), &dir)
            .unwrap();
    }
    let spare_kps = (0..spare)
        .flat_map(|i| {
            new_engine(100_000 + i, &mut dir)
                .generate_key_packages(1)
                .unwrap()
        })
        .collect();
    EngineGroup {
        owner,
        receiver,
        dir,
        spare_kps,
    }
}

// ---------- bare openmls side ----------

struct Bare {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    group: MlsGroup,
}

fn bare_client(i: usize) -> (OpenMlsRustCrypto, SignatureKeyPair, CredentialWithKey) {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
    signer.store(provider.storage()).unwrap();
    let cred = CredentialWithKey {
        credential: BasicCredential::new(format!("@user{i}:example.org/DEV{i}").into_bytes())
            .into(),
        signature_key: signer.public().into(),
    };
    (provider, signer, cred)
}

fn bare_kp(i: usize) -> (KeyPackage, OpenMlsRustCrypto, SignatureKeyPair) {
    let (provider, signer, cred) = bare_client(i);
    let kp = KeyPackage::builder()
        .build(CIPHERSUITE, &provider, &signer, cred)
        .unwrap()
        .key_package()
        .clone();
    (kp, provider, signer)
}

fn bare_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

struct BareGroup {
    owner: Bare,
    receiver: Option<Bare>,
    /// Serialised key packages, as received from the server.
    spare_kps: Vec<Vec<u8>>,
}

fn bare_group(members: usize, spare: usize) -> BareGroup {
    let (provider, signer, cred) = bare_client(0);
    let group = MlsGroup::new(&provider, &signer, &bare_config(), cred).unwrap();
    let mut owner = Bare {
        provider,
        signer,
        group,
    };
    let (rkp, r_provider, r_signer) = bare_kp(1);
    let mut kps = vec![rkp];
    for i in 2..members {
        kps.push(bare_kp(i).0);
    }
    let receiver = if members > 1 {
        let (_, welcome, _) = owner
            .group
            .add_members(&owner.provider, &owner.signer, &kps)
            .unwrap();
        owner.group.merge_pending_commit(&owner.provider).unwrap();
        let welcome = match MlsMessageIn::from(welcome).extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => unreachable!(),
        };
        let group = StagedWelcome::new_from_welcome(
            &r_provider,
            bare_config().join_config(),
            welcome,
            None,
        )
        .unwrap()
        .into_group(&r_provider)
        .unwrap();
        Some(Bare {
            provider: r_provider,
            signer: r_signer,
            group,
        })
    } else {
        None
    };
    let spare_kps = (0..spare)
        .map(|i| {
            MlsMessageOut::from(bare_kp(100_000 + i).0)
                .tls_serialize_detached()
                .unwrap()
        })
        .collect();
    BareGroup {
        owner,
        receiver,
        spare_kps,
    }
}

fn bench_add(c: &mut Criterion) {
    let mut g = c.benchmark_group("add_members");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [10usize, 100, 1000] {
        let mut eg = engine_group(1, n);
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter(|| {
                let bundle = eg.owner.add_members(G, &eg.spare_kps, &eg.dir).unwrap();
                eg.owner.discard_pending_commit(G).unwrap();
                black_box(bundle);
            })
        });
        let mut bg = bare_group(1, n);
        g.bench_with_input(BenchmarkId::new("openmls", n), &n, |b, _| {
            b.iter(|| {
                let o = &mut bg.owner;
                // A client must parse and verify received key packages before adding them.
                let kps: Vec<KeyPackage> = bg
                    .spare_kps
                    .iter()
                    .map(|bytes| {
                        match MlsMessageIn::tls_deserialize_exact(bytes)
                            .unwrap()
                            .extract()
                        {
                            MlsMessageBodyIn::KeyPackage(kp) => kp
                                .validate(o.provider.crypto(), ProtocolVersion::Mls10)
                                .unwrap(),
                            _ => unreachable!(),
                        }
                    })
                    .collect();
                let out = o.group.add_members(&o.provider, &o.signer, &kps).unwrap();
                let bytes = out.0.tls_serialize_detached().unwrap();
                let w = out.1.tls_serialize_detached().unwrap();
                o.group.clear_pending_commit(o.provider.storage()).unwrap();
                black_box((bytes, w));
            })
        });
    }
    g.finish();
}

fn bench_self_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("self_update");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [100usize, 1000] {
        let mut eg = engine_group(n, 0);
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter(|| {
                let bundle = eg.owner.self_update(G).unwrap();
                eg.owner.discard_pending_commit(G).unwrap();
                black_box(bundle);
            })
        });
        let mut bg = bare_group(n, 0);
        g.bench_with_input(BenchmarkId::new("openmls", n), &n, |b, _| {
            b.iter(|| {
                let o = &mut bg.owner;
                let bundle = o
                    .group
                    .self_update(&o.provider, &o.signer, Default::default())
                    .unwrap();
                let bytes = bundle.commit().tls_serialize_detached().unwrap();
                o.group.clear_pending_commit(o.provider.storage()).unwrap();
                black_box(bytes);
            })
        });
    }
    g.finish();
}

fn bench_process_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [100usize, 1000] {
        let mut eg = engine_group(n, 0);
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let bundle = eg.owner.self_update(G).unwrap();
                    eg.owner.confirm_pending_commit(G).unwrap();
                    let env = Envelope {
                        sender: Some(eg.owner.device().clone()),
                        epoch: bundle.epoch,
                        ts: 0,
                        adds: vec![],
                        removes: vec![],
                    };
                    let t = Instant::now();
                    let ev = eg
                        .receiver
                        .process(G, &bundle.commit, &env, &eg.dir)
                        .unwrap();
                    total += t.elapsed();
                    black_box(ev);
                }
                total
            })
        });
        let mut bg = bare_group(n, 0);
        g.bench_with_input(BenchmarkId::new("openmls", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let o = &mut bg.owner;
                    let bundle = o
                        .group
                        .self_update(&o.provider, &o.signer, Default::default())
                        .unwrap();
                    o.group.merge_pending_commit(&o.provider).unwrap();
                    let bytes = bundle.commit().tls_serialize_detached().unwrap();
                    let r = bg.receiver.as_mut().unwrap();
                    let t = Instant::now();
                    let msg = MlsMessageIn::tls_deserialize_exact(&bytes).unwrap();
                    let pm = msg.try_into_protocol_message().unwrap();
                    let processed = r.group.process_message(&r.provider, pm).unwrap();
                    if let ProcessedMessageContent::StagedCommitMessage(sc) =
                        processed.into_content()
                    {
                        r.group.merge_staged_commit(&r.provider, *sc).unwrap();
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_encrypt_decrypt(c: &mut Criterion) {
    let mut g = c.benchmark_group("encrypt_decrypt_256B");
    let payload = [7u8; 256];
    let mut eg = engine_group(2, 0);
    g.bench_function("engine", |b| {
        b.iter(|| {
            let out = eg.owner.encrypt(G, &payload, 1).unwrap();
            let env = Envelope {
                sender: Some(eg.owner.device().clone()),
                epoch: out.epoch,
                ts: 1,
                adds: vec![],
                removes: vec![],
            };
            black_box(eg.receiver.process(G, &out.message, &env, &eg.dir).unwrap());
        })
    });
    let mut bg = bare_group(2, 0);
    g.bench_function("openmls", |b| {
        b.iter(|| {
            let o = &mut bg.owner;
            let msg = o
                .group
                .create_message(&o.provider, &o.signer, &payload)
                .unwrap();
            let bytes = msg.tls_serialize_detached().unwrap();
            let r = bg.receiver.as_mut().unwrap();
            let m = MlsMessageIn::tls_deserialize_exact(&bytes).unwrap();
            let pm = m.try_into_protocol_message().unwrap();
            black_box(r.group.process_message(&r.provider, pm).unwrap());
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_add,
    bench_self_update,
    bench_process_commit,
    bench_encrypt_decrypt
);
criterion_main!(benches);
