//! Runs selected tests with bounded parallelism and prints one line per test and a summary.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::fixture::{Ctx, Env, Leftovers, Skip};
use crate::registry::Test;

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed, in this long.
    Ok(Duration),
    /// Failed, for this reason.
    Fail(String),
    /// Could not run in this mode, for this reason.
    Skip(String),
}

/// Runner options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Tests running at once.
    pub jobs: usize,
    /// Start no new test after the first failure.
    pub fail_fast: bool,
    /// Longest a test may run.
    pub timeout: Duration,
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Runs `tests`, printing a line per test as it ends and the summary line last.
pub async fn run(env: Arc<Env>, tests: Vec<Test>, options: Options) -> Summary {
    let mut summary = Summary::default();
    let mut pending = tests.into_iter();
    let mut running = JoinSet::new();
    let mut stopping = false;
    loop {
        while !stopping && running.len() < options.jobs.max(1) {
            let Some(test) = pending.next() else { break };
            let env = env.clone();
            running.spawn(async move {
                let outcome = run_one(env, test, options.timeout).await;
                (test, outcome)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (test, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                // run_one catches the test's panics; this is the runner's own task failing.
                eprintln!("sytest: a runner task failed: {e}");
                summary.failed += 1;
                stopping |= options.fail_fast;
                continue;
            }
        };
        let line = match &outcome {
            Outcome::Ok(elapsed) => {
                summary.passed += 1;
                format!("ok   {} ({} ms)", test.full_name(), elapsed.as_millis())
            }
            Outcome::Fail(reason) => {
                summary.failed += 1;
                stopping |= options.fail_fast;
                format!("FAIL {}: {}", test.full_name(), one_line(reason))
            }
            Outcome::Skip(reason) => {
                summary.skipped += 1;
                format!("skip {}: {}", test.full_name(), one_line(reason))
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    println!("{summary}");
    summary
}

/// Runs one test in its own task (so a panic is a failure), with a timeout, then releases
/// what it left behind.
async fn run_one(env: Arc<Env>, test: Test, timeout: Duration) -> Outcome {
    let leftovers = Arc::new(Leftovers::default());
    let ctx = Ctx::new(env.clone(), leftovers.clone());
    let started = Instant::now();
    let mut task = tokio::spawn((test.run)(ctx));
    let outcome = match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(()))) => Outcome::Ok(started.elapsed()),
        Ok(Ok(Err(e))) => match e.downcast_ref::<Skip>() {
            Some(skip) => Outcome::Skip(skip.0.clone()),
            None => Outcome::Fail(format!("{e:#}")),
        },
        Ok(Err(join_error)) => Outcome::Fail(panic_message(join_error)),
        Err(_) => {
            task.abort();
            // Let the aborted test drop its servers before databases are dropped.
            let _ = task.await;
            Outcome::Fail(format!("timed out after {} s", timeout.as_secs()))
        }
    };
    for error in leftovers.release(&env).await {
        eprintln!("sytest: {}: clean-up: {error}", test.full_name());
    }
    outcome
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-text panic".into());
            format!("panicked: {text}")
        }
        Err(e) => format!("test task ended: {e}"),
    }
}

fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_mentions_skips_only_when_there_are_some() {
        let mut s = Summary {
            passed: 3,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(s.to_string(), "3 passed, 1 failed");
        s.skipped = 2;
        assert_eq!(s.to_string(), "3 passed, 1 failed, 2 skipped");
    }
}
