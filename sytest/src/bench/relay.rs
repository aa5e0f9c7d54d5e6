//! `parley-bench relay`: the echo baseline, then the relay on one server (and on two
//! federated servers), in one run.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use parley_client_api::client::b64;
use parley_client_api::endpoint::fill_path;
use parley_mls::Engine;
use parley_sytest::fake_remote::federation_config;

use super::cpu::{cpu_time, CpuSample, CpuSplit};
use super::load::{self, drive, EchoWorker, Outcome, Worker};
use super::options::Options;
use super::receiver::{self, Receipt, Receiver};
use super::report::{self, Figures, Latency, Report};
use super::server::{self, Parley, Proc};
use super::setup::{self, access_token};
use parley_sytest::device::Device;

/// Size of the echo baseline's request body.
const ECHO_BODY_BYTES: usize = 400;
/// Length of the probe that sizes the pre-encrypted message pools.
const PROBE: Duration = Duration::from_secs(2);
/// At most this many messages are encrypted ahead of a phase (all senders together).
const MAX_POOL: usize = 400_000;

pub async fn run(opts: Options) -> anyhow::Result<()> {
    if let Some(url) = &opts.postgres_url {
        anyhow::ensure!(
            !url.is_empty(),
            "--db postgres needs --postgres-url or PARLEY_TEST_POSTGRES_URL"
        );
    }
    let parley = server::parley_binary(opts.parley.clone())?;
    let tmp = tempfile::Builder::new().prefix("parley-bench").tempdir()?;
    let dir = tmp.path().to_owned();
    let started = Instant::now();
    eprintln!(
        "parley-bench relay: {} senders, {} receivers, {} group(s), {} s phases, {}{}",
        opts.senders,
        opts.receivers,
        opts.groups,
        opts.duration.as_secs(),
        if opts.postgres_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        if opts.federated { ", federated" } else { "" }
    );

    eprintln!(
        "[echo] baseline: POST {ECHO_BODY_BYTES} bytes, {} connections",
        opts.senders
    );
    let echo = echo_baseline(&dir, opts.senders, opts.duration).await?;
    eprintln!("[echo] {:.0} req/s", echo.rate());

    eprintln!("[single] one server");
    let single = relay(&opts, &parley, &dir, Topology::Single).await?;
    let federated = if opts.federated {
        eprintln!("[federated] senders on a.example, receivers on b.example");
        Some(relay(&opts, &parley, &dir, Topology::Federated).await?)
    } else {
        None
    };
    let processes = if opts.processes > 1 {
        anyhow::ensure!(
            opts.postgres_url.is_some(),
            "--processes needs --db postgres: SQLite serves one process"
        );
        eprintln!(
            "[processes] {} processes of one server on one database, senders and receivers spread over them",
            opts.processes
        );
        Some(relay(&opts, &parley, &dir, Topology::Processes(opts.processes)).await?)
    } else {
        None
    };
    // With PostgreSQL processes measured, SQLite's one process too, for comparison.
    let sqlite = if opts.processes > 1 {
        eprintln!("[sqlite] one process on SQLite");
        let on_sqlite = Options {
            postgres_url: None,
            ..opts.clone()
        };
        Some(relay(&on_sqlite, &parley, &dir, Topology::Single).await?)
    } else {
        None
    };
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        opts: opts.clone(),
        echo,
        single,
        federated,
        processes,
        sqlite,
        wall: started.elapsed(),
    };
    report::print(&report);
    if opts.keep {
        let kept = tmp.keep();
        eprintln!("kept server directories in {}", kept.display());
    }
    Ok(())
}

/// The echo baseline: same generator, `n` connections, a 1 s warm-up then `duration`.
async fn echo_baseline(dir: &Path, n: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let mut echo = server::start_echo(dir).await?;
    let http = load::http_client(n)?;
    let mut body = String::from("{\"message\":\"");
    while body.len() < ECHO_BODY_BYTES - 2 {
        body.push('A');
    }
    body.push_str("\"}");
    let make = || -> Vec<EchoWorker> {
        (0..n)
            .map(|_| EchoWorker {
                http: http.clone(),
                url: format!("{}{}", echo.base_url, super::echo::ECHO_PATH),
                body: Bytes::from(body.clone()),
            })
            .collect()
    };
    let _ = drive(make(), Duration::from_secs(1), None).await;
    let (outcome, _) = drive(make(), duration, None).await;
    echo.stop().await;
    anyhow::ensure!(
        outcome.ok > 0,
        "echo baseline failed: {:?}",
        outcome.first_error
    );
    Ok(outcome)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Single,
    Federated,
    /// One server, this many processes on its one PostgreSQL database.
    Processes(usize),
}

/// A sender: one device, one group, one keep-alive connection.
struct Sender {
    http: reqwest::Client,
    /// `…/groups/{gid}/send/` with the group id percent-encoded.
    url_prefix: String,
    bearer: String,
    engine: Engine,
    group_id: String,
    group: u32,
    plaintext: Vec<u8>,
    /// Messages encrypted ahead: (txn id = AAD msg_id, JSON body).
    pool: VecDeque<(String, Bytes)>,
    /// Messages that had to be encrypted during the phase (pool ran dry).
    on_the_fly: u64,
    /// (group, seq, submit time) of every accepted message.
    records: Vec<Receipt>,
}

impl Sender {
    fn encrypt(&mut self) -> anyhow::Result<(String, Bytes)> {
        let out = self
            .engine
            .encrypt(&self.group_id, &self.plaintext, now_ms())?;
        let body = format!("{{\"message\":\"{}\"}}", b64(&out.message));
        Ok((out.msg_id, Bytes::from(body)))
    }

    fn fill(&mut self, count: usize) -> anyhow::Result<()> {
        self.pool.clear();
        for _ in 0..count {
            let m = self.encrypt()?;
            self.pool.push_back(m);
        }
        Ok(())
    }
}

impl Worker for Sender {
    async fn call(&mut self) -> anyhow::Result<()> {
        let (txn, body) = match self.pool.pop_front() {
            Some(m) => m,
            None => {
                self.on_the_fly += 1;
                self.encrypt()?
            }
        };
        let submitted = Instant::now();
        let response = self
            .http
            .put(format!("{}{txn}", self.url_prefix))
            .header("authorization", &self.bearer)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "send answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
        #[derive(serde::Deserialize)]
        struct SendResponse {
            seq: u64,
        }
        let seq = serde_json::from_slice::<SendResponse>(&bytes)?.seq;
        self.records.push((self.group, seq, submitted));
        Ok(())
    }
}

/// Encrypts `per_sender` messages for every sender, in parallel on blocking threads.
async fn fill_pools(senders: Vec<Sender>, per_sender: usize) -> anyhow::Result<Vec<Sender>> {
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            tokio::task::spawn_blocking(move || {
                s.fill(per_sender)?;
                Ok::<_, anyhow::Error>(s)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}

/// One measured phase's sender records and receiver receipts, joined.
fn latencies(senders: &[Sender], receipts: &[Vec<Receipt>]) -> Latency {
    let submitted: HashMap<(u32, u64), Instant> = senders
        .iter()
        .flat_map(|s| s.records.iter().map(|&(g, seq, t)| ((g, seq), t)))
        .collect();
    let mut micros: Vec<u64> = Vec::new();
    for r in receipts {
        for (g, seq, at) in r {
            if let Some(t) = submitted.get(&(*g, *seq)) {
                micros.push(at.saturating_duration_since(*t).as_micros() as u64);
            }
        }
    }
    micros.sort_unstable();
    Latency::from_sorted(&micros, submitted.len() * receipts.len())
}

/// Waits until every receiver has every message accepted in the phase (or `limit` passes),
/// then takes the receipts.
async fn drain(
    senders: &[Sender],
    receivers: &[Receiver],
    groups: usize,
    limit: Duration,
) -> Vec<Vec<Receipt>> {
    let mut want = vec![0u64; groups];
    for s in senders {
        for &(g, seq, _) in &s.records {
            want[g as usize] = want[g as usize].max(seq);
        }
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = receivers.iter().all(|r| {
            r.max_seqs(groups)
                .iter()
                .zip(&want)
                .all(|(have, want)| have >= want)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receivers.iter().map(Receiver::take).collect()
}

async fn relay(
    opts: &Options,
    parley: &Path,
    dir: &Path,
    topology: Topology,
) -> anyhow::Result<Figures> {
    let tag = match topology {
        Topology::Single => "single",
        Topology::Federated => "federated",
        Topology::Processes(_) => "processes",
    };
    let pg = opts.postgres_url.as_deref();
    // Servers: choose ports first, so each can resolve the other.
    let mut siblings = Vec::new();
    let (hub, home) = match topology {
        Topology::Processes(n) => {
            let port = server::free_port()?;
            let s = Parley::start(
                parley,
                dir,
                "processes.example",
                ([127, 0, 0, 1], port).into(),
                pg,
                "",
                opts.worker_threads,
            )
            .await?;
            for i in 1..n {
                siblings.push(s.sibling(parley, i).await?);
            }
            // Processes say hello every 2 s; wake-ups flow once they have heard each other.
            tokio::time::sleep(Duration::from_millis(500)).await;
            (s, None)
        }
        Topology::Single => {
            let port = server::free_port()?;
            let s = Parley::start(
                parley,
                dir,
                "single.example",
                ([127, 0, 0, 1], port).into(),
                pg,
                "",
                opts.worker_threads,
            )
            .await?;
            (s, None)
        }
        Topology::Federated => {
            let (pa, pb) = (server::free_port()?, server::free_port()?);
            let fed = federation_config(&[("a.example", pa), ("b.example", pb)]);
            let a = Parley::start(
                parley,
                dir,
                "a.example",
                ([127, 0, 0, 1], pa).into(),
                pg,
                &fed,
                opts.worker_threads,
            )
            .await?;
            let b = Parley::start(
                parley,
                dir,
                "b.example",
                ([127, 0, 0, 1], pb).into(),
                pg,
                &fed,
                opts.worker_threads,
            )
            .await?;
            (a, Some(b))
        }
    };
    let result = relay_on(
        opts,
        &hub.proc,
        home.as_ref().map(|b| &b.proc),
        &siblings,
        topology,
        tag,
    )
    .await;
    if let Err(e) = &result {
        eprintln!(
            "[{tag}] failed: {e:#}\n[{tag}] hub log: {}",
            hub.proc.log_tail()
        );
        if let Some(b) = &home {
            eprintln!("[{tag}] b.example log: {}", b.proc.log_tail());
        }
    }
    for mut sibling in siblings {
        sibling.stop().await;
    }
    hub.stop().await;
    if let Some(b) = home {
        b.stop().await;
    }
    result
}

async fn relay_on(
    opts: &Options,
    hub: &Proc,
    home: Option<&Proc>,
    siblings: &[Proc],
    topology: Topology,
    tag: &str,
) -> anyhow::Result<Figures> {
    let n = opts.senders;
    let recv_server = home.unwrap_or(hub);
    // Every server process of the topology, the hub first: their CPU is the servers'.
    let servers: Vec<&Proc> = std::iter::once(hub)
        .chain(home)
        .chain(siblings.iter())
        .collect();
    // With several processes, the i-th sender or receiver talks to process i mod count.
    let process_url = |i: usize, first: &str| -> String {
        match i % (siblings.len() + 1) {
            0 => first.to_owned(),
            k => siblings[k - 1].base_url.clone(),
        }
    };
    let setup_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    // Accounts and devices (registered concurrently: password hashing dominates).
    let t = Instant::now();
    let suffix = random_suffix();
    let packages = opts.groups + 1;
    let sender_devices = futures_util::future::join_all((0..n).map(|i| {
        setup::register(
            &setup_http,
            &hub.base_url,
            format!("s{i}-{suffix}"),
            packages,
        )
    }))
    .await;
    let mut senders_dev: Vec<Device> = sender_devices.into_iter().collect::<anyhow::Result<_>>()?;
    let receiver_devices = futures_util::future::join_all((0..opts.receivers).map(|i| {
        setup::register(
            &setup_http,
            &recv_server.base_url,
            format!("r{i}-{suffix}"),
            packages,
        )
    }))
    .await;
    let mut receivers_dev: Vec<Device> = receiver_devices
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (group_ids, keys) =
        setup::form_groups(&mut senders_dev, &mut receivers_dev, opts.groups).await?;
    eprintln!(
        "[{tag}] {} devices registered, {} group(s) formed in {:.1} s",
        n + opts.receivers,
        group_ids.len(),
        t.elapsed().as_secs_f64()
    );

    // RSS per idle WebSocket (single server only, before any load).
    let rss = if topology == Topology::Single && opts.idle_connections > 0 {
        let r = &receivers_dev[0];
        Some(
            idle_rss(
                hub,
                access_token(r),
                r.since.as_deref(),
                opts.idle_connections,
            )
            .await?,
        )
    } else {
        None
    };

    let index: Arc<HashMap<String, u32>> = Arc::new(
        group_ids
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), i as u32))
            .collect(),
    );
    let verify = Arc::new(AtomicBool::new(true));
    let mut receivers = Vec::new();
    for (i, d) in receivers_dev.into_iter().enumerate() {
        receivers.push(
            Receiver::start(
                d,
                &process_url(i, &recv_server.base_url),
                index.clone(),
                keys.clone(),
                verify.clone(),
            )
            .await?,
        );
    }
    let load_http = load::http_client(n)?;
    let mut senders: Vec<Sender> = senders_dev
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let g = i % opts.groups;
            let group_id = group_ids[g].clone();
            let prefix = fill_path("/_parley/client/v1/groups/{group_id}/send/", &[&group_id])
                .unwrap_or_default();
            Sender {
                http: load_http.clone(),
                url_prefix: format!("{}{prefix}", process_url(i, &hub.base_url)),
                bearer: format!("Bearer {}", access_token(&d)),
                engine: d.engine,
                group_id,
                group: g as u32,
                plaintext: vec![b'p'; opts.plaintext_bytes],
                pool: VecDeque::new(),
                on_the_fly: 0,
                records: Vec::new(),
            }
        })
        .collect();

    // Warm-up: one message per sender, decrypted by every receiver.
    for s in senders.iter_mut() {
        s.call().await.context("warm-up send")?;
    }
    let warm = drain(&senders, &receivers, opts.groups, Duration::from_secs(30)).await;
    let want = (n * receivers.len()) as u64;
    let decrypted_so_far = || -> u64 {
        receivers
            .iter()
            .map(|r| r.decrypted.load(Ordering::Relaxed))
            .sum()
    };
    // A receiver logs a frame's arrival before it decrypts it: let the last decryptions finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while decrypted_so_far() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let decrypted = decrypted_so_far();
    verify.store(false, Ordering::Relaxed);
    let failures: Vec<String> = receivers
        .iter()
        .flat_map(|r| r.failures.lock().map(|f| f.clone()).unwrap_or_default())
        .collect();
    anyhow::ensure!(
        decrypted == want,
        "warm-up: receivers decrypted {decrypted} of {want} messages (received {}); {failures:?}",
        warm.iter().map(Vec::len).sum::<usize>()
    );
    let body_bytes = senders[0].encrypt()?.1.len();
    eprintln!(
        "[{tag}] warm-up: every receiver decrypted every sender's message; request body {body_bytes} bytes"
    );
    clear(&mut senders);

    // Probe (encrypting as it goes) to size the pools.
    let (probe, back) = drive(senders, PROBE, None).await;
    senders = back;
    let _ = drain(&senders, &receivers, opts.groups, Duration::from_secs(30)).await;
    anyhow::ensure!(
        probe.ok > 0,
        "probe: no message accepted: {:?}",
        probe.first_error
    );
    clear(&mut senders);
    for s in senders.iter_mut() {
        s.on_the_fly = 0; // the warm-up and the probe encrypt as they go, by design
    }

    // Full load.
    let per_sender = pool_size(probe.rate() * 3.0, opts.duration, n);
    senders = fill_pools(senders, per_sender).await?;
    let (full, full_lat, full_cpu, mut senders) =
        phase(senders, &receivers, &servers, opts, None, tag, "full load").await?;

    // Half of the measured rate, paced.
    let half_rate = full.rate() / 2.0;
    let per_sender = pool_size(half_rate * 2.0, opts.duration, n);
    senders = fill_pools(senders, per_sender).await?;
    let interval = Duration::from_secs_f64(n as f64 / half_rate.max(1.0));
    let (half, half_lat, _, senders) = phase(
        senders,
        &receivers,
        &servers,
        opts,
        Some(interval),
        tag,
        "half load",
    )
    .await?;
    let on_the_fly: u64 = senders.iter().map(|s| s.on_the_fly).sum();
    for r in receivers {
        r.stop().await;
    }
    Ok(Figures {
        full,
        full_latency: full_lat,
        half,
        half_latency: half_lat,
        rss_per_idle_kib: rss,
        body_bytes,
        hub_cpu_share: full_cpu.hub,
        cpu: full_cpu.split,
        on_the_fly,
    })
}

fn clear(senders: &mut [Sender]) {
    for s in senders {
        s.records.clear();
    }
}

fn pool_size(rate: f64, duration: Duration, senders: usize) -> usize {
    let total = (rate * duration.as_secs_f64()).min(MAX_POOL as f64) as usize;
    total / senders.max(1) + 64
}

/// CPU use of one phase: the hub process's alone, and the split of the whole machine.
struct PhaseCpu {
    hub: f64,
    split: CpuSplit,
}

/// One measured phase: drive, drain, join latencies. Also the CPU used while driving;
/// `servers[0]` is the hub.
async fn phase(
    senders: Vec<Sender>,
    receivers: &[Receiver],
    servers: &[&Proc],
    opts: &Options,
    interval: Option<Duration>,
    tag: &str,
    name: &str,
) -> anyhow::Result<(Outcome, Latency, PhaseCpu, Vec<Sender>)> {
    let hub = servers[0];
    // Announced, with the server's pid, so a profiler can be pointed at exactly this phase.
    eprintln!(
        "[{tag}] {name}: running for {} s (server pid {})",
        opts.duration.as_secs(),
        hub.pid
    );
    let cpu0 = cpu_time(hub.pid);
    let sample = CpuSample::take(&servers.iter().map(|p| p.pid).collect::<Vec<_>>());
    let (outcome, mut senders) = drive(senders, opts.duration, interval).await;
    let split = sample.split();
    let cpu = (cpu_time(hub.pid) - cpu0).as_secs_f64() / outcome.elapsed.as_secs_f64();
    let receipts = drain(&senders, receivers, opts.groups, Duration::from_secs(60)).await;
    let latency = latencies(&senders, &receipts);
    eprintln!(
        "[{tag}] {name}: {:.0} msgs/s accepted ({} errors{}), delivered {}/{}, p50 {:.1} ms, p99 {:.1} ms, hub CPU {:.2} cores",
        outcome.rate(),
        outcome.errors,
        outcome
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        latency.delivered,
        latency.expected,
        latency.p50_ms,
        latency.p99_ms,
        cpu
    );
    eprintln!(
        "[{tag}] {name}: CPU {}; per message, µs: {}",
        split.cores_text(),
        split.per_message_text(outcome.rate())
    );
    clear(&mut senders);
    Ok((outcome, latency, PhaseCpu { hub: cpu, split }, senders))
}

/// Opens `k` idle authenticated WebSockets and returns the server's RSS growth per
/// connection in KiB.
async fn idle_rss(
    server: &Proc,
    access_token: &str,
    since: Option<&str>,
    k: usize,
) -> anyhow::Result<f64> {
    let url = receiver::ws_url(&server.base_url);
    // A few first, so one-time allocations (buffers, the subscription map) are not counted.
    let mut warm = Vec::new();
    for _ in 0..16 {
        warm.push(receiver::connect(&url, access_token, since).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let mut open = Vec::with_capacity(k);
    while open.len() < k {
        let batch = (k - open.len()).min(50);
        let connected = futures_util::future::join_all(
            (0..batch).map(|_| receiver::connect(&url, access_token, since)),
        )
        .await;
        for c in connected {
            open.push(c?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib()?;
    // Signed: a fall means memory went back to the OS meanwhile, and the report says so.
    let per = (after as f64 - before as f64) / k as f64;
    eprintln!(
        "[single] {k} idle WebSockets: server RSS {before} KiB -> {after} KiB ({per:.1} KiB each)"
    );
    drop(open);
    drop(warm);
    Ok(per)
}
