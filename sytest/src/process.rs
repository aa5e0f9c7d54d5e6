//! One homeserver process: spawned from a command line, ready once it prints its address.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The marker a server prints on stdout once bound: `… listening on http://ADDR`.
pub const LISTENING_MARKER: &str = "listening on ";

/// A running server process; killed if dropped while running.
pub struct ServerProcess {
    child: Child,
    /// `http://HOST:PORT` as printed by the server.
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `argv`, sending stderr to `log_path`, and waits for the listening line.
    pub async fn spawn(argv: &[String], log_path: &Path) -> anyhow::Result<ServerProcess> {
        let (program, args) = argv.split_first().context("empty server command")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting server command {program:?}"))?;
        let stdout = child.stdout.take().context("server stdout not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        let wait_for_url = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = parse_listening_line(&line) {
                    return Ok(Some(url));
                }
            }
            Ok::<_, std::io::Error>(None)
        };
        let url = match tokio::time::timeout(START_TIMEOUT, wait_for_url).await {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                anyhow::bail!(
                    "server exited before printing its '{LISTENING_MARKER}http://…' line ({}); log: {}",
                    status.map_or("unknown status".into(), |s| s.to_string()),
                    log_tail(log_path)
                );
            }
            Err(_) => anyhow::bail!(
                "server did not print '{LISTENING_MARKER}http://…' within {START_TIMEOUT:?}; log: {}",
                log_tail(log_path)
            ),
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess {
            child,
            base_url: url,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; kills the process if it does not exit in time.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            let sent = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await
                .context("running kill -TERM")?;
            anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.kill().await;
                anyhow::bail!("server did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it")
            }
        }
    }
}

/// The URL of a `… listening on http://ADDR` line.
pub fn parse_listening_line(line: &str) -> Option<String> {
    let at = line.find(LISTENING_MARKER)?;
    let url = line[at + LISTENING_MARKER.len()..].trim();
    let url = url.split_whitespace().next()?;
    (url.starts_with("http://") || url.starts_with("https://"))
        .then(|| url.trim_end_matches('/').to_owned())
}

/// The last few lines of a log file, on one line.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_the_base_url() {
        assert_eq!(
            parse_listening_line("parley listening on http://127.0.0.1:4321").as_deref(),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(
            parse_listening_line("other-hs listening on http://[::1]:80/ (ready)").as_deref(),
            Some("http://[::1]:80")
        );
        assert_eq!(parse_listening_line("listening on port 80"), None);
        assert_eq!(parse_listening_line("starting"), None);
    }
}
