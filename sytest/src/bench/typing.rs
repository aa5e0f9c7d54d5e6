//! `parley-bench typing`: typing notices sent ephemerally (`PUT …/ephemeral/{txn}`: not
//! stored, no seq) against the same notices sent as stored messages (`PUT …/send/{txn}`: a
//! database commit, fsync'd), in one run on one server: notices accepted per second, frames
//! delivered to the receivers' WebSockets, and database commits per notice (read from the
//! server's own metrics).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use futures_util::StreamExt;
use parley_client_api::client::b64;
use parley_client_api::endpoint::fill_path;
use parley_mls::Engine;
use tokio_tungstenite::tungstenite::Message;

use super::cpu::cpu_time;
use super::load::{self, drive, Outcome, Worker};
use super::receiver;
use super::server::{self, Parley};
use super::setup::{self, access_token};

/// What `parley-bench typing` was asked to do.
#[derive(Debug, Clone)]
pub struct TypingOptions {
    pub senders: usize,
    pub receivers: usize,
    pub duration: Duration,
    /// `Some(admin URL)` for PostgreSQL.
    pub postgres_url: Option<String>,
    pub parley: Option<std::path::PathBuf>,
}

/// The metrics token of the server under test.
const METRICS_TOKEN: &str = "parley-bench-typing-metrics-token";
/// Notices encrypted ahead of each phase, per sender.
const POOL_PER_SENDER: usize = 20_000;

/// Which send path a phase uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Stored,
    Ephemeral,
}

/// One sending device in the one group, on its own keep-alive connection.
struct TypingSender {
    http: reqwest::Client,
    send_prefix: String,
    ephemeral_prefix: String,
    bearer: String,
    engine: Engine,
    group_id: String,
    pool: VecDeque<(String, Bytes)>,
    path: Path,
}

impl TypingSender {
    fn encrypt(&mut self) -> anyhow::Result<(String, Bytes)> {
        let out = self
            .engine
            .encrypt(&self.group_id, br#"{"type":"typing","v":1}"#, now_ms())?;
        let body = format!("{{\"message\":\"{}\"}}", b64(&out.message));
        Ok((out.msg_id, Bytes::from(body)))
    }
}

impl Worker for TypingSender {
    async fn call(&mut self) -> anyhow::Result<()> {
        let (txn, body) = match self.pool.pop_front() {
            Some(m) => m,
            None => self.encrypt()?,
        };
        let prefix = match self.path {
            Path::Stored => &self.send_prefix,
            Path::Ephemeral => &self.ephemeral_prefix,
        };
        let response = self
            .http
            .put(format!("{prefix}{txn}"))
            .header("authorization", &self.bearer)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "answered {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
        Ok(())
    }
}

/// One phase's figures.
struct PhaseFigures {
    outcome: Outcome,
    /// Frames of the phase's kind the receivers got, all together.
    delivered: u64,
    commits: f64,
    server_cpu: f64,
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: TypingOptions) -> anyhow::Result<()> {
    let parley = server::parley_binary(opts.parley.clone())?;
    let (_tmp, server) = server::start_alone(
        &parley,
        "parley-bench-typing",
        "typing.example",
        opts.postgres_url.as_deref(),
        &format!("[metrics]\nbearer_token = \"{METRICS_TOKEN}\"\n"),
    )
    .await?;
    let result = measure(&opts, &server).await;
    server::stop_after("typing", server, &result).await;
    let (stored, ephemeral) = result?;
    let backend = server::backend_name(opts.postgres_url.as_deref());
    println!(
        "\nparley-bench typing — {} senders, {} receivers (WebSocket) in one group, {} s phases, {backend}",
        opts.senders,
        opts.receivers,
        opts.duration.as_secs()
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<34} {:>12} {:>14} {:>16} {:>12}",
        "send path", "notices/s", "frames/s out", "db commits/notice", "server CPU"
    );
    for (name, f) in [
        ("stored (/send, baseline)", &stored),
        ("ephemeral (/ephemeral)", &ephemeral),
    ] {
        let secs = f.outcome.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<34} {:>12.0} {:>14.0} {:>16.3} {:>10.2} c",
            name,
            f.outcome.rate(),
            f.delivered as f64 / secs,
            per_notice(f),
            f.server_cpu
        );
    }
    let per = per_notice;
    println!(
        "ephemeral / stored: {:.2}× the notices per second; database commits (each fsync'd) per notice {:.3} → {:.3}",
        ephemeral.outcome.rate() / stored.outcome.rate().max(1e-9),
        per(&stored),
        per(&ephemeral)
    );
    for (name, f) in [("stored", &stored), ("ephemeral", &ephemeral)] {
        if f.outcome.errors > 0 {
            println!(
                "{name}: {} errors, first: {}",
                f.outcome.errors,
                f.outcome.first_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn measure(
    opts: &TypingOptions,
    server: &Parley,
) -> anyhow::Result<(PhaseFigures, PhaseFigures)> {
    let base = &server.proc.base_url;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let suffix = format!("{:x}", now_ms() % 0xffff_ffff);
    let mut senders_dev = Vec::new();
    for i in 0..opts.senders {
        senders_dev.push(setup::register(&http, base, format!("t{i}-{suffix}"), 2).await?);
    }
    let mut receivers_dev = Vec::new();
    for i in 0..opts.receivers {
        receivers_dev.push(setup::register(&http, base, format!("w{i}-{suffix}"), 2).await?);
    }
    let (groups, _keys) = setup::form_groups(&mut senders_dev, &mut receivers_dev, 1).await?;
    let group_id = groups.first().cloned().context("no group formed")?;

    // Receivers: one WebSocket each, counting message and ephemeral frames.
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let mut sockets = Vec::new();
    for d in &receivers_dev {
        let mut ws =
            receiver::connect(&receiver::ws_url(base), access_token(d), d.since.as_deref()).await?;
        let counts = counts.clone();
        sockets.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let kind = serde_json::from_str::<HashMap<String, serde_json::Value>>(&text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
                match kind.as_deref() {
                    Some("message") => counts.0.fetch_add(1, Ordering::Relaxed),
                    Some("ephemeral") => counts.1.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }));
    }

    let load_http = load::http_client(opts.senders)?;
    let mut senders: Vec<TypingSender> = senders_dev
        .into_iter()
        .map(|d| {
            let send = fill_path("/_parley/client/v1/groups/{group_id}/send/", &[&group_id])
                .unwrap_or_default();
            let ephemeral = fill_path(
                "/_parley/client/v1/groups/{group_id}/ephemeral/",
                &[&group_id],
            )
            .unwrap_or_default();
            TypingSender {
                http: load_http.clone(),
                send_prefix: format!("{base}{send}"),
                ephemeral_prefix: format!("{base}{ephemeral}"),
                bearer: format!("Bearer {}", access_token(&d)),
                engine: d.engine,
                group_id: group_id.clone(),
                pool: VecDeque::new(),
                path: Path::Stored,
            }
        })
        .collect();
    let mut figures = Vec::new();
    for path in [Path::Stored, Path::Ephemeral] {
        for s in senders.iter_mut() {
            s.path = path;
            s.pool.clear();
            for _ in 0..POOL_PER_SENDER {
                let m = s.encrypt()?;
                s.pool.push_back(m);
            }
        }
        // A short warm-up on this path, then the measured phase.
        let (_, back) = drive(senders, Duration::from_millis(500), None).await;
        senders = back;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counter = |c: &(AtomicU64, AtomicU64)| match path {
            Path::Stored => c.0.load(Ordering::Relaxed),
            Path::Ephemeral => c.1.load(Ordering::Relaxed),
        };
        let delivered0 = counter(&counts);
        let commits0 = commits(&http, base).await?;
        let cpu0 = cpu_time(server.proc.pid);
        let (outcome, back) = drive(senders, opts.duration, None).await;
        senders = back;
        let server_cpu =
            (cpu_time(server.proc.pid) - cpu0).as_secs_f64() / outcome.elapsed.as_secs_f64();
        // Stored messages still on their way reach the sockets within a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let delivered = counter(&counts) - delivered0;
        let commits = commits(&http, base).await? - commits0;
        eprintln!(
            "[typing] {path:?}: {:.0} notices/s accepted, {delivered} frames delivered, {commits:.0} database commits",
            outcome.rate()
        );
        anyhow::ensure!(
            outcome.ok > 0,
            "{path:?}: nothing accepted: {:?}",
            outcome.first_error
        );
        figures.push(PhaseFigures {
            outcome,
            delivered,
            commits,
            server_cpu,
        });
    }
    for s in sockets {
        s.abort();
    }
    let ephemeral = figures.pop().context("ephemeral phase")?;
    let stored = figures.pop().context("stored phase")?;
    Ok((stored, ephemeral))
}

/// Database commits per accepted notice in a phase.
fn per_notice(f: &PhaseFigures) -> f64 {
    f.commits / (f.outcome.ok.max(1) as f64)
}

/// Database commits so far (group commits: each one is a durable transaction), from the
/// server's metrics.
async fn commits(http: &reqwest::Client, base: &str) -> anyhow::Result<f64> {
    let body = http
        .get(format!("{base}/_parley/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix("parley_db_commit_batch_size_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
