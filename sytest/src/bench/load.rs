//! The load generator shared by the echo baseline and the relay: `n` workers, each one
//! request at a time on its own keep-alive HTTP/1.1 connection, closed-loop (as fast as
//! possible) or paced at a fixed interval, for a bounded time.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// One connection's worth of requests.
pub trait Worker: Send + 'static {
    /// Performs one request; `Err` counts as a failed request.
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a phase achieved.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// From the start until the last in-flight request finished.
    pub elapsed: Duration,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An HTTP client for one phase: HTTP/1.1 only, keep-alive, one connection per worker.
pub fn http_client(workers: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(workers)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_proxy()
        .build()?)
}

/// Runs every worker for `duration`; with `interval`, each worker starts a request every
/// `interval` (staggered across workers) instead of back to back. A worker that falls more
/// than one interval behind its schedule skips ahead rather than bursting.
pub async fn drive<W: Worker>(
    workers: Vec<W>,
    duration: Duration,
    interval: Option<Duration>,
) -> (Outcome, Vec<W>) {
    let n = workers.len().max(1) as u32;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (i, mut worker) in workers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut next = interval.map(|iv| start + iv * i as u32 / n);
            loop {
                if let (Some(at), Some(iv)) = (next.as_mut(), interval) {
                    if *at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until((*at).into()).await;
                    *at += iv;
                    let now = Instant::now();
                    if *at + iv < now {
                        *at = now;
                    }
                } else if Instant::now() >= deadline {
                    break;
                }
                match worker.call().await {
                    Ok(()) => out.ok += 1,
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            (out, worker)
        }));
    }
    let mut total = Outcome::default();
    let mut back = Vec::new();
    for task in tasks {
        match task.await {
            Ok((out, worker)) => {
                total.ok += out.ok;
                total.errors += out.errors;
                if total.first_error.is_none() {
                    total.first_error = out.first_error;
                }
                back.push(worker);
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.elapsed = start.elapsed();
    (total, back)
}

/// A worker of the echo baseline: `POST /echo` with a fixed body, body read and checked.
pub struct EchoWorker {
    pub http: reqwest::Client,
    pub url: String,
    pub body: Bytes,
}

impl Worker for EchoWorker {
    async fn call(&mut self) -> anyhow::Result<()> {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone())
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        anyhow::ensure!(
            status.is_success() && bytes.len() == self.body.len(),
            "echo answered {status} with {} bytes",
            bytes.len()
        );
        Ok(())
    }
}
