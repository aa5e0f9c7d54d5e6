//! Server processes of a run: the echo baseline and `parley serve` instances, each on
//! loopback, with their pid (for RSS) and a temporary directory removed afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use parley_sytest::process::{log_tail, parse_listening_line};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Rate limits loose enough that the benchmark measures the relay, not the limiter.
pub const RELAXED_RATE_LIMITS: &str = "[rate_limits]
send = { per_second = 1000000.0, burst = 1000000 }
register = { per_second = 1000.0, burst = 1000 }
login = { per_second = 1000.0, burst = 1000 }
key_upload = { per_second = 1000.0, burst = 1000 }
key_claim = { per_second = 1000.0, burst = 1000 }
group_create = { per_second = 1000.0, burst = 1000 }
device_lookup = { per_second = 100000.0, burst = 100000 }
federation = { per_second = 1000000.0, burst = 1000000 }
";

/// A child process that printed `listening on http://ADDR`; killed when dropped.
pub struct Proc {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The process id, for `/proc/<pid>/status`.
    pub pid: u32,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args`, stderr to `log`, and waits (60 s at most) for the listening line.
    pub async fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Proc> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("no pid")?;
        let stdout = child.stdout.take().context("stdout not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = parse_listening_line(&line) {
                    return Ok(Some(url));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let base_url = match url {
            Ok(Ok(Some(url))) => url,
            _ => anyhow::bail!(
                "{} did not print its listening line; log: {}",
                program.display(),
                log_tail(log)
            ),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            child,
            base_url,
            pid,
            log: log.to_owned(),
        })
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// The last lines of the process's stderr.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The echo baseline: `parley-bench echo-server` started from this executable.
pub async fn start_echo(dir: &Path) -> anyhow::Result<Proc> {
    let me = std::env::current_exe().context("locating parley-bench")?;
    Proc::spawn(
        &me,
        &[
            "echo-server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        &dir.join("echo.log"),
    )
    .await
}

/// A `parley serve` instance.
pub struct Parley {
    pub proc: Proc,
    /// PostgreSQL database to drop afterwards: (admin URL, name).
    database: Option<(String, String)>,
    /// The command line it was started with, and its directory (for [`Parley::sibling`]).
    args: Vec<String>,
    home: PathBuf,
}

impl Parley {
    /// Starts `parley` as `server_name` on `listen` with its data in `dir/<server_name>`,
    /// SQLite unless `postgres_admin` is given, and `extra_toml` after the relaxed limits.
    pub async fn start(
        parley: &Path,
        dir: &Path,
        server_name: &str,
        listen: SocketAddr,
        postgres_admin: Option<&str>,
        extra_toml: &str,
        worker_threads: Option<usize>,
    ) -> anyhow::Result<Parley> {
        anyhow::ensure!(listen.ip().is_loopback(), "servers listen on loopback only");
        let home = dir.join(server_name);
        let data_dir = home.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let config = home.join("parley.toml");
        let threads = worker_threads
            .map(|n| format!("worker_threads = {n}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "{threads}[log]\nlevel = \"warn\"\n[auth]\naccess_token_ttl_ms = 7200000\n{RELAXED_RATE_LIMITS}{extra_toml}\n"
            ),
        )?;
        let (database, url) = match postgres_admin {
            Some(admin) => {
                let (name, url) = parley_sytest::postgres::create_database(admin).await?;
                (Some((admin.to_owned(), name)), url)
            }
            None => (
                None,
                format!("sqlite://{}", data_dir.join("parley.db").display()),
            ),
        };
        let args = vec![
            "serve".to_owned(),
            "--config".into(),
            config.display().to_string(),
            "--server-name".into(),
            server_name.into(),
            "--listen".into(),
            listen.to_string(),
            "--database".into(),
            url,
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        let proc = Proc::spawn(parley, &args, &home.join("server.log")).await?;
        Ok(Parley {
            proc,
            database,
            args,
            home,
        })
    }

    /// Another process of the same server (same configuration, database and data directory)
    /// on a free loopback port; its log is `server-<n>.log`.
    pub async fn sibling(&self, parley: &Path, n: usize) -> anyhow::Result<Proc> {
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            if let Some(listen) = args.get_mut(i + 1) {
                *listen = "127.0.0.1:0".into();
            }
        }
        Proc::spawn(parley, &args, &self.home.join(format!("server-{n}.log"))).await
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        self.proc.stop().await;
        if let Some((admin, name)) = self.database.take() {
            let _ = parley_sytest::postgres::drop_database(&admin, &name).await;
        }
    }
}

/// One server under test, `server_name` on a free loopback port, in a fresh temporary
/// directory (removed when the returned guard drops).
pub async fn start_alone(
    parley: &Path,
    prefix: &str,
    server_name: &str,
    postgres_admin: Option<&str>,
    extra_toml: &str,
) -> anyhow::Result<(tempfile::TempDir, Parley)> {
    let tmp = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let port = free_port()?;
    let server = Parley::start(
        parley,
        tmp.path(),
        server_name,
        ([127, 0, 0, 1], port).into(),
        postgres_admin,
        extra_toml,
        None,
    )
    .await?;
    Ok((tmp, server))
}

/// Stops `server` once its measurement ended, printing its log's tail first when the
/// measurement failed (tagged `[tag]`).
pub async fn stop_after<T>(tag: &str, server: Parley, result: &anyhow::Result<T>) {
    if let Err(e) = result {
        eprintln!(
            "[{tag}] failed: {e:#}\n[{tag}] log: {}",
            server.proc.log_tail()
        );
    }
    server.stop().await;
}

/// The backend's name for a report: `postgres` with an admin URL, else `sqlite`.
pub fn backend_name(postgres_admin: Option<&str>) -> &'static str {
    if postgres_admin.is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// `parley` next to this executable, unless given.
pub fn parley_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    let p = me.with_file_name("parley");
    anyhow::ensure!(
        p.exists(),
        "no `parley` next to {} (build parley-homeserver or pass --parley)",
        me.display()
    );
    Ok(p)
}
