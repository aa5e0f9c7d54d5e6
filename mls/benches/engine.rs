//! Engine vs bare openmls, same operations in the same run: add 10/100/1000 members,
//! self-update and process-commit at 100/1000 members, encrypt+decrypt of 256 bytes.
//!
//! Run with `cargo bench -p parley-mls --bench engine`. After criterion's own output a table
//! prints each row's median (openmls, engine) and the engine's overhead in percent.
//!
//! Fairness: the bare-openmls side uses exactly the engine's openmls configuration
//! ([`EngineConfig::group_create_config`] / [`EngineConfig::group_join_config`]: wire-format
//! policy, padding, `max_past_epochs`, ratchet-tree extension, out-of-order tolerance,
//! forward distance, leaf capabilities), the same ciphersuite, the same crypto and storage
//! types (`RustCrypto` + `MemoryStorage`), builds its commits with the same commit-builder
//! calls, and produces the same wire output the app must send (commit, welcome, group info).
//! The add rows add the very same key-package bytes on both sides. What remains is engine
//! work: credential validation, TOFU pins, envelope/AAD checks, replay windows, bookkeeping.
//!
//! Only the operation itself is timed (`iter_custom`): clearing the pending commit after an
//! add or self-update, and producing the commit a receiver processes, happen outside the clock.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use openmls::prelude::{tls_codec::*, *};
use openmls::treesync::LeafNodeParameters;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use parley_mls::{
    leaf_capabilities, DeviceRef, Engine, EngineConfig, Envelope, StaticDeviceKeys, CIPHERSUITE,
};

const G: &str = "!bench0001:example.org";

fn config() -> EngineConfig {
    EngineConfig::default()
}

fn identity(i: usize) -> (String, String) {
    (format!("@user{i}:example.org"), format!("DEV{i}"))
}

// ---------- key packages shared by both sides ----------

/// A fresh device (bare openmls client) with Parley's leaf capabilities and key-package
/// lifetime; returns its `MLSMessage`-wrapped key package and registers its key in `dir`.
fn shared_kp(i: usize, dir: &mut StaticDeviceKeys) -> Vec<u8> {
    let (provider, signer, cred) = bare_client(i);
    let (user, dev) = identity(i);
    dir.insert(
        DeviceRef::new(&user, &dev).unwrap(),
        signer.public().to_vec(),
    );
    let kp = bare_kp_builder()
        .build(CIPHERSUITE, &provider, &signer, cred)
        .unwrap()
        .key_package()
        .clone();
    MlsMessageOut::from(kp).tls_serialize_detached().unwrap()
}

/// Key packages of devices `first..first + n`.
fn shared_kps(first: usize, n: usize, dir: &mut StaticDeviceKeys) -> Vec<Vec<u8>> {
    (first..first + n).map(|i| shared_kp(i, dir)).collect()
}

// ---------- engine side ----------

struct EngineGroup {
    owner: Engine,
    receiver: Engine,
    dir: StaticDeviceKeys,
}

fn new_engine(i: usize, dir: &mut StaticDeviceKeys) -> Engine {
    let (user, dev) = identity(i);
    let e = Engine::new(&user, &dev, config()).unwrap();
    dir.insert(e.device().clone(), e.signature_public_key());
    e
}

/// Owner (device 0) and receiver (device 1) plus the devices of `others` in one group.
fn engine_group(others: &[Vec<u8>], dir: &StaticDeviceKeys) -> EngineGroup {
    let mut dir = dir.clone();
    let mut owner = new_engine(0, &mut dir);
    owner.create_group(G).unwrap();
    let mut receiver = new_engine(1, &mut dir);
    let mut kps = receiver.generate_key_packages(1).unwrap();
    kps.extend(others.iter().cloned());
    let b = owner.add_members(G, &kps, &dir).unwrap();
    owner.confirm_pending_commit(G).unwrap();
    receiver
        .join_from_welcome(b.welcome.as_ref().unwrap(), &dir)
        .unwrap();
    EngineGroup {
        owner,
        receiver,
        dir,
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
    let (user, dev) = identity(i);
    let cred = CredentialWithKey {
        credential: BasicCredential::new(format!("{user}/{dev}").into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    (provider, signer, cred)
}

fn bare_kp_builder() -> KeyPackageBuilder {
    KeyPackage::builder()
        .key_package_lifetime(Lifetime::new(config().key_package_lifetime_secs))
        .leaf_node_capabilities(leaf_capabilities())
}

/// A key package received from the server: parse and verify it, as any client must.
fn parse_kp(bytes: &[u8], provider: &OpenMlsRustCrypto) -> KeyPackage {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
    {
        MlsMessageBodyIn::KeyPackage(kp) => kp
            .validate(provider.crypto(), ProtocolVersion::Mls10)
            .unwrap(),
        _ => unreachable!(),
    }
}

/// The serialised outputs of a commit (what the app sends to the hub).
type Wire = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

fn wire(bundle: CommitMessageBundle) -> Wire {
    let welcome = bundle
        .to_welcome_msg()
        .map(|w| w.tls_serialize_detached().unwrap());
    let (commit, _, group_info) = bundle.into_contents();
    (
        commit.tls_serialize_detached().unwrap(),
        welcome,
        group_info.map(|gi| MlsMessageOut::from(gi).tls_serialize_detached().unwrap()),
    )
}

impl Bare {
    /// Builds and stages the commit `propose` prepares, with the engine's settings
    /// (`Engine::stage_commit`): stored PSKs, ratchet tree extension, every proposal accepted.
    fn commit(
        &mut self,
        propose: impl FnOnce(CommitBuilder<'_, Initial>) -> CommitBuilder<'_, Initial>,
    ) -> Wire {
        let bundle = propose(self.group.commit_builder())
            .load_psks(self.provider.storage())
            .unwrap()
            .use_ratchet_tree_extension(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.provider)
            .unwrap();
        wire(bundle)
    }

    /// The engine's add: same commit-builder calls.
    fn add(&mut self, kps: Vec<KeyPackage>) -> Wire {
        self.commit(|b| b.propose_adds(kps))
    }

    /// The engine's self-update: same commit-builder calls.
    fn self_update(&mut self) -> Wire {
        self.commit(|b| {
            b.consume_proposal_store(true)
                .force_self_update(true)
                .leaf_node_parameters(LeafNodeParameters::default())
        })
    }

    fn clear(&mut self) {
        self.group
            .clear_pending_commit(self.provider.storage())
            .unwrap();
    }

    /// Deserialise, process and merge a received message.
    fn process(&mut self, bytes: &[u8]) -> ProcessedMessageContent {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).unwrap();
        let pm = msg.try_into_protocol_message().unwrap();
        let processed = self.group.process_message(&self.provider, pm).unwrap();
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(sc) => {
                self.group.merge_staged_commit(&self.provider, *sc).unwrap();
                ProcessedMessageContent::OwnPrivateMessage
            }
            other => other,
        }
    }
}

struct BareGroup {
    owner: Bare,
    receiver: Bare,
}

fn bare_group(others: &[Vec<u8>]) -> BareGroup {
    let cfg = config();
    let (provider, signer, cred) = bare_client(0);
    let group = MlsGroup::new_with_group_id(
        &provider,
        &signer,
        &cfg.group_create_config(),
        GroupId::from_slice(G.as_bytes()),
        cred,
    )
    .unwrap();
    let mut owner = Bare {
        provider,
        signer,
        group,
    };
    let (r_provider, r_signer, r_cred) = bare_client(1);
    let rkp = bare_kp_builder()
        .build(CIPHERSUITE, &r_provider, &r_signer, r_cred)
        .unwrap()
        .key_package()
        .clone();
    let mut kps = vec![rkp];
    kps.extend(others.iter().map(|b| parse_kp(b, &owner.provider)));
    let (_, welcome, _) = owner.add(kps);
    owner.group.merge_pending_commit(&owner.provider).unwrap();
    let welcome = match MlsMessageIn::tls_deserialize_exact(welcome.unwrap())
        .unwrap()
        .extract()
    {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => unreachable!(),
    };
    let group =
        StagedWelcome::new_from_welcome(&r_provider, &cfg.group_join_config(), welcome, None)
            .unwrap()
            .into_group(&r_provider)
            .unwrap();
    BareGroup {
        owner,
        receiver: Bare {
            provider: r_provider,
            signer: r_signer,
            group,
        },
    }
}

// ---------- rows, paired timing and the closing table ----------

/// One row: both sides' state; each op runs once and returns the time of its timed part.
trait Row {
    fn engine_op(&mut self) -> Span;
    fn openmls_op(&mut self) -> Span;
}

/// Wall-clock and process CPU time of the timed part of one op.
#[derive(Clone, Copy)]
struct Span {
    wall: Duration,
    cpu: Duration,
}

/// CPU time of the whole process (every thread: openmls encrypts update paths on rayon
/// threads). Unlike wall time it does not count time spent waiting for a core, which on a
/// shared machine is most of the noise.
#[cfg(unix)]
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(unix))]
fn process_cpu() -> Duration {
    Duration::ZERO
}

struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    fn start() -> Self {
        Self {
            cpu: process_cpu(),
            wall: Instant::now(),
        }
    }

    fn stop(self) -> Span {
        let wall = self.wall.elapsed();
        Span {
            wall,
            cpu: process_cpu().saturating_sub(self.cpu),
        }
    }
}

/// Paired result of one row.
struct Paired {
    /// Median CPU time per op of each side.
    openmls: f64,
    engine: f64,
    /// Median over rounds of engine / openmls within the round, by CPU time and wall time.
    cpu_ratio: f64,
    wall_ratio: f64,
    rounds: usize,
}

/// Rows that ran in this process, in table order.
static TABLE: Mutex<BTreeMap<usize, (String, Paired)>> = Mutex::new(BTreeMap::new());

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Criterion rows `<group>/engine/<n>` and `<group>/openmls/<n>`, then the paired rounds for
/// the closing table: each round times one engine op and one openmls op back to back
/// (alternating which goes first), so load changes on a shared machine hit both sides alike.
fn run_row(
    c: &mut Criterion,
    order: usize,
    group: &str,
    n: Option<usize>,
    cfg: &dyn Fn(&mut BenchmarkGroup<'_, criterion::measurement::WallTime>),
    row: &mut dyn Row,
    paired_budget: Duration,
) {
    let label = match n {
        Some(n) => format!("{group} {n}"),
        None => group.to_owned(),
    };
    let id = |side: &str| match n {
        Some(n) => BenchmarkId::new(side, n),
        None => BenchmarkId::from_parameter(side),
    };
    let mut g = c.benchmark_group(group);
    cfg(&mut g);
    let mut ran = false;
    g.bench_function(id("engine"), |b| {
        ran = true;
        b.iter_custom(|iters| (0..iters).map(|_| row.engine_op().wall).sum())
    });
    g.bench_function(id("openmls"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| row.openmls_op().wall).sum())
    });
    g.finish();
    // Skipped by a filter, or `--test` / `--list` mode: no table row.
    let measuring = std::env::args().any(|a| a == "--bench")
        && !std::env::args().any(|a| a == "--test" || a == "--list");
    if !ran || !measuring {
        return;
    }
    let (mut e, mut o, mut rc, mut rw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while e.len() < 10 || (start.elapsed() < paired_budget && e.len() < 1000) {
        let (te, to) = if e.len() % 2 == 0 {
            let te = row.engine_op();
            (te, row.openmls_op())
        } else {
            let to = row.openmls_op();
            (row.engine_op(), to)
        };
        let ns = |d: Duration| d.as_nanos() as f64;
        e.push(ns(te.cpu));
        o.push(ns(to.cpu));
        rc.push(ns(te.cpu) / ns(to.cpu));
        rw.push(ns(te.wall) / ns(to.wall));
    }
    let paired = Paired {
        openmls: median(&mut o),
        engine: median(&mut e),
        cpu_ratio: median(&mut rc),
        wall_ratio: median(&mut rw),
        rounds: rc.len(),
    };
    TABLE.lock().unwrap().insert(order, (label, paired));
}

/// Settings for rows whose single iteration takes milliseconds or more.
fn heavy(measure_ms: u64) -> impl Fn(&mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    move |g| {
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(measure_ms));
    }
}

/// Add `spare` (the same key packages on both sides) to a one-member group; the pending
/// commit is cleared after each op, untimed.
struct AddRow {
    eg: EngineGroup,
    bg: BareGroup,
    spare: Vec<Vec<u8>>,
}

impl Row for AddRow {
    fn engine_op(&mut self) -> Span {
        let t = Clock::start();
        let bundle = self
            .eg
            .owner
            .add_members(G, &self.spare, &self.eg.dir)
            .unwrap();
        let d = t.stop();
        self.eg.owner.discard_pending_commit(G).unwrap();
        black_box(bundle);
        d
    }

    fn openmls_op(&mut self) -> Span {
        let o = &mut self.bg.owner;
        let t = Clock::start();
        let kps = self
            .spare
            .iter()
            .map(|k| parse_kp(k, &o.provider))
            .collect();
        let out = o.add(kps);
        let d = t.stop();
        o.clear();
        black_box(out);
        d
    }
}

/// Self-update in an n-member group; the pending commit is cleared after each op, untimed.
struct SelfUpdateRow {
    eg: EngineGroup,
    bg: BareGroup,
}

impl Row for SelfUpdateRow {
    fn engine_op(&mut self) -> Span {
        let t = Clock::start();
        let bundle = self.eg.owner.self_update(G).unwrap();
        let d = t.stop();
        self.eg.owner.discard_pending_commit(G).unwrap();
        black_box(bundle);
        d
    }

    fn openmls_op(&mut self) -> Span {
        let t = Clock::start();
        let out = self.bg.owner.self_update();
        let d = t.stop();
        self.bg.owner.clear();
        black_box(out);
        d
    }
}

/// The receiver processes (and merges) the owner's self-update commit; producing the commit
/// is untimed.
struct ProcessCommitRow {
    eg: EngineGroup,
    bg: BareGroup,
}

impl Row for ProcessCommitRow {
    fn engine_op(&mut self) -> Span {
        let eg = &mut self.eg;
        let bundle = eg.owner.self_update(G).unwrap();
        eg.owner.confirm_pending_commit(G).unwrap();
        let env = Envelope {
            sender: Some(eg.owner.device().clone()),
            epoch: bundle.epoch,
            ts: 0,
            adds: vec![],
            removes: vec![],
        };
        let t = Clock::start();
        let ev = eg
            .receiver
            .process(G, &bundle.commit, &env, &eg.dir)
            .unwrap();
        let d = t.stop();
        black_box(ev);
        d
    }

    fn openmls_op(&mut self) -> Span {
        let bg = &mut self.bg;
        let (commit, _, _) = bg.owner.self_update();
        bg.owner
            .group
            .merge_pending_commit(&bg.owner.provider)
            .unwrap();
        let t = Clock::start();
        let out = bg.receiver.process(&commit);
        let d = t.stop();
        black_box(out);
        d
    }
}

/// Encrypt 256 bytes at the owner and decrypt them at the receiver (both timed).
struct EncDecRow {
    eg: EngineGroup,
    bg: BareGroup,
    env: Envelope,
}

const PAYLOAD: [u8; 256] = [7u8; 256];

impl Row for EncDecRow {
    fn engine_op(&mut self) -> Span {
        let eg = &mut self.eg;
        let t = Clock::start();
        let out = eg.owner.encrypt(G, &PAYLOAD, 1).unwrap();
        let ev = eg
            .receiver
            .process(G, &out.message, &self.env, &eg.dir)
            .unwrap();
        let d = t.stop();
        black_box(ev);
        d
    }

    fn openmls_op(&mut self) -> Span {
        let bg = &mut self.bg;
        let t = Clock::start();
        let msg = bg
            .owner
            .group
            .create_message(&bg.owner.provider, &bg.owner.signer, &PAYLOAD)
            .unwrap();
        let bytes = msg.tls_serialize_detached().unwrap();
        let out = bg.receiver.process(&bytes);
        let d = t.stop();
        black_box(out);
        d
    }
}

fn bench_add(c: &mut Criterion) {
    for (order, n) in [(0usize, 10usize), (1, 100), (2, 1000)] {
        let mut dir = StaticDeviceKeys::new();
        let spare = shared_kps(100_000, n, &mut dir);
        let mut row = AddRow {
            eg: engine_group(&[], &dir),
            bg: bare_group(&[]),
            spare,
        };
        let (measure, budget) = if n >= 1000 { (2500, 8) } else { (1500, 3) };
        run_row(
            c,
            order,
            "add_members",
            Some(n),
            &heavy(measure),
            &mut row,
            Duration::from_secs(budget),
        );
    }
}

/// Runs the row `row` makes from an engine group and a bare openmls group of the same `n`
/// members, for each `(order, n)` of `sizes`, measuring `measure_ms(n)` per side.
fn bench_on_groups_of<R: Row>(
    c: &mut Criterion,
    name: &str,
    sizes: [(usize, usize); 2],
    row: impl Fn(EngineGroup, BareGroup) -> R,
    measure_ms: impl Fn(usize) -> u64,
) {
    for (order, n) in sizes {
        let mut dir = StaticDeviceKeys::new();
        let others = shared_kps(2, n - 2, &mut dir);
        let mut row = row(engine_group(&others, &dir), bare_group(&others));
        run_row(
            c,
            order,
            name,
            Some(n),
            &heavy(measure_ms(n)),
            &mut row,
            Duration::from_secs(4),
        );
    }
}

fn bench_self_update(c: &mut Criterion) {
    bench_on_groups_of(
        c,
        "self_update",
        [(3, 100), (4, 1000)],
        |eg, bg| SelfUpdateRow { eg, bg },
        |n| if n >= 1000 { 2500 } else { 1500 },
    );
}

fn bench_process_commit(c: &mut Criterion) {
    // Every op also builds the commit (untimed, ~10x the timed part): keep the measured
    // time short or the 1000-member row runs for minutes.
    bench_on_groups_of(
        c,
        "process_commit",
        [(5, 100), (6, 1000)],
        |eg, bg| ProcessCommitRow { eg, bg },
        |n| if n >= 1000 { 250 } else { 400 },
    );
}

fn bench_encrypt_decrypt(c: &mut Criterion) {
    let eg = engine_group(&[], &StaticDeviceKeys::new());
    let env = Envelope {
        sender: Some(eg.owner.device().clone()),
        epoch: eg.owner.epoch(G).unwrap(),
        ts: 1,
        adds: vec![],
        removes: vec![],
    };
    let mut row = EncDecRow {
        eg,
        bg: bare_group(&[]),
        env,
    };
    let cfg = |g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>| {
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    };
    run_row(
        c,
        7,
        "encrypt_decrypt_256B",
        None,
        &cfg,
        &mut row,
        Duration::from_secs(3),
    );
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// Prints the paired table of the rows that ran.
fn print_table() {
    let table = TABLE.lock().unwrap();
    if table.is_empty() {
        return;
    }
    println!(
        "\nEngine vs bare openmls, timed alternately in the same rounds. Times: median process \
         CPU time per op.\nOverhead: median over rounds of engine/openmls - 1, by CPU time \
         (the figure that counts) and by wall time. Target: <= +15%.\n"
    );
    println!(
        "| {:<22} | {:>11} | {:>11} | {:>10} | {:>11} | {:>6} |",
        "row", "openmls", "engine", "overhead", "(wall time)", "rounds"
    );
    println!(
        "|{:-<24}|{:->13}|{:->13}|{:->12}|{:->13}|{:->8}|",
        "", ":", ":", ":", ":", ":"
    );
    for (label, p) in table.values() {
        println!(
            "| {label:<22} | {:>11} | {:>11} | {:>+9.1}% | {:>+10.1}% | {:>6} |",
            fmt_ns(p.openmls),
            fmt_ns(p.engine),
            (p.cpu_ratio - 1.0) * 100.0,
            (p.wall_ratio - 1.0) * 100.0,
            p.rounds
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_add(&mut c);
    bench_self_update(&mut c);
    bench_process_commit(&mut c);
    bench_encrypt_decrypt(&mut c);
    c.final_summary();
    print_table();
}
