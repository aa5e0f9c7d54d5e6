//! Starts real `parley serve` processes for tests, on SQLite or PostgreSQL.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley_schema::testing;

/// Rate limits loose enough for tests that register many users from one IP.
pub const RELAXED_LIMITS: &str = "[rate_limits]\nregister = { per_second = 100.0, burst = 1000 }\nlogin = { per_second = 100.0, burst = 1000 }";

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Federation settings for test servers that reach each other on loopback over plain HTTP.
pub fn federation_toml(peers: &[(&str, u16)]) -> String {
    let resolve: Vec<String> = peers
        .iter()
        .map(|(name, port)| format!("\"{name}\" = \"127.0.0.1:{port}\""))
        .collect();
    format!(
        "{RELAXED_LIMITS}\n[federation]\nallow_insecure_http = true\nmax_backoff_ms = 1000\nresolve = {{ {} }}\n",
        resolve.join(", ")
    )
}

/// Two servers, `a.example` and `b.example`, federating over loopback on `db`, with
/// `extra_toml` appended to both configurations.
pub async fn federated_pair(db: Db, extra_toml: &str) -> (TestServer, TestServer) {
    let (pa, pb) = (free_port(), free_port());
    let config = format!(
        "{}\n{extra_toml}",
        federation_toml(&[("a.example", pa), ("b.example", pb)])
    );
    let a = TestServer::start_at(db, "a.example", &config, &format!("127.0.0.1:{pa}")).await;
    let b = TestServer::start_at(db, "b.example", &config, &format!("127.0.0.1:{pb}")).await;
    (a, b)
}

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// How a server process is started, for tests of where it runs from.
#[derive(Debug, Default)]
pub struct Launch {
    /// The binary to run (default: this build's `parley`).
    pub exe: Option<PathBuf>,
    /// Its working directory (default: the test's).
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running homeserver process, killed on drop.
pub struct TestServer {
    child: Option<Child>,
    pub base_url: String,
    pub server_name: String,
    pub data_dir: PathBuf,
    pub database: String,
    config_path: PathBuf,
    /// Where stderr goes (appended across restarts) and the `RUST_LOG` it runs with, if set.
    log: Option<(PathBuf, String)>,
    launch: Launch,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server named `server_name` on `db` with extra TOML appended to its config.
    pub async fn start(db: Db, server_name: &str, extra_toml: &str) -> TestServer {
        TestServer::start_at(db, server_name, extra_toml, "127.0.0.1:0").await
    }

    /// Like [`TestServer::start`], listening on `listen`.
    pub async fn start_at(db: Db, server_name: &str, extra_toml: &str, listen: &str) -> TestServer {
        let mut server = TestServer::prepare(db, server_name, extra_toml).await;
        server.spawn(listen);
        server
    }

    /// Like [`TestServer::start_at`], with `RUST_LOG=rust_log` and every stderr line appended
    /// to [`TestServer::log_path`].
    pub async fn start_logged(
        db: Db,
        server_name: &str,
        extra_toml: &str,
        listen: &str,
        rust_log: &str,
    ) -> TestServer {
        let mut server = TestServer::prepare(db, server_name, extra_toml).await;
        let path = server.config_path.with_file_name("server.log");
        server.log = Some((path, rust_log.to_owned()));
        server.spawn(listen);
        server
    }

    /// Like [`TestServer::start_logged`] on a free port, started as `launch` says.
    pub async fn start_launched(
        db: Db,
        server_name: &str,
        extra_toml: &str,
        launch: Launch,
        rust_log: &str,
    ) -> TestServer {
        let mut server = TestServer::prepare(db, server_name, extra_toml).await;
        let path = server.config_path.with_file_name("server.log");
        server.log = Some((path, rust_log.to_owned()));
        server.launch = launch;
        server.spawn("127.0.0.1:0");
        server
    }

    /// The file stderr is appended to (servers started with [`TestServer::start_logged`]).
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_ref().map(|(path, _)| path.as_path())
    }

    async fn prepare(db: Db, server_name: &str, extra_toml: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let database = match db {
            Db::Sqlite => testing::sqlite_url(&data_dir),
            Db::Postgres => testing::fresh_postgres_url().await,
        };
        let config_path = dir.path().join("parley.toml");
        std::fs::write(
            &config_path,
            format!("log.level = \"warn\"\n{extra_toml}\n"),
        )
        .expect("write config");
        TestServer {
            child: None,
            base_url: String::new(),
            server_name: server_name.to_owned(),
            data_dir,
            database,
            config_path,
            log: None,
            launch: Launch::default(),
            _dir: Some(dir),
        }
    }

    fn spawn(&mut self, listen: &str) {
        let exe = self.launch.exe.clone();
        let mut command = Command::new(exe.unwrap_or_else(|| env!("CARGO_BIN_EXE_parley").into()));
        // The developer's own setting must not change what tests serve.
        command.env_remove("PARLEY_WEB_CLIENT_DIR");
        command.envs(self.launch.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.launch.cwd {
            command.current_dir(cwd);
        }
        match &self.log {
            Some((path, rust_log)) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open server log");
                command.env("RUST_LOG", rust_log).stderr(file);
            }
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--server-name")
            .arg(&self.server_name)
            .arg("--listen")
            .arg(listen)
            .arg("--database")
            .arg(&self.database)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn parley");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("parley listening on ") {
                        break url.to_owned();
                    }
                }
                _ => panic!("parley exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.base_url = url;
        self.child = Some(child);
    }

    /// Another `parley serve` process of the same server: same configuration, database and
    /// data directory (so the same keys), on its own port. The first one owns the files.
    pub fn sibling(&self) -> TestServer {
        let mut sibling = TestServer {
            child: None,
            base_url: String::new(),
            server_name: self.server_name.clone(),
            data_dir: self.data_dir.clone(),
            database: self.database.clone(),
            config_path: self.config_path.clone(),
            log: None,
            launch: Launch::default(),
            _dir: None,
        };
        sibling.spawn("127.0.0.1:0");
        sibling
    }

    /// A fresh client of this server.
    pub fn client(&self) -> parley_client_api::Client {
        parley_client_api::Client::new(self.base_url.clone())
    }

    /// Stops the process with SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the process with SIGKILL (a crash: nothing is cleaned up) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again on the same address, data dir and database.
    pub fn start_again(&mut self) {
        let addr = self.base_url.trim_start_matches("http://").to_owned();
        self.spawn(&addr);
    }

    /// Restarts on the same address, data dir and database.
    pub fn restart(&mut self) {
        assert!(self.stop(), "server did not shut down cleanly");
        let addr = self.base_url.trim_start_matches("http://").to_owned();
        self.spawn(&addr);
    }

    /// Replaces the extra TOML of the config; takes effect at the next (re)start.
    pub fn set_extra_toml(&self, extra_toml: &str) {
        std::fs::write(
            &self.config_path,
            format!("log.level = \"warn\"\n{extra_toml}\n"),
        )
        .expect("write config");
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl parley_sytest::device::ClientFactory for TestServer {
    fn client(&self) -> parley_client_api::Client {
        TestServer::client(self)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `parley admin make-admin` on the server's database, as an operator would while the
/// server runs.
pub fn make_admin(server: &TestServer, user_id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "admin",
            "make-admin",
            user_id,
            "--database",
            &server.database,
        ])
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .expect("run parley admin make-admin")
}

/// Defines `NAME_sqlite` and `NAME_postgres` tests running `body(Db)`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                ($body)(common::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                ($body)(common::Db::Postgres).await
            }
        }
    };
}

/// Asserts a client error's status and errcode.
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, parley_client_api::ClientError>,
    status: u16,
    errcode: &str,
) -> parley_client_api::ErrorBody {
    match result {
        Err(parley_client_api::ClientError::Api { status: s, body }) => {
            assert_eq!(
                (s, body.errcode.as_str()),
                (status, errcode),
                "{}",
                body.error
            );
            body
        }
        other => panic!("expected {status} {errcode}, got {other:?}"),
    }
}
