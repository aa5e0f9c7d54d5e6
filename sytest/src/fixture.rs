//! What a test gets: a [`Ctx`] that hands out servers (fresh ones, or the `--server` ones),
//! clients and unique user names.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use parley_client_api::Client;

use crate::process::ServerProcess;
pub use crate::unique::random_suffix;
use crate::{config, postgres, template};

/// The database a self-started server uses.
#[derive(Debug, Clone)]
pub enum Db {
    /// `sqlite://<data_dir>/parley.db`.
    Sqlite,
    /// A fresh database per instance, created through this administrative URL.
    Postgres { admin_url: String },
}

/// Which servers the suite tests.
#[derive(Debug, Clone)]
pub enum Target {
    /// The suite starts a fresh server per test from a command template.
    Managed {
        /// The template, split into words (see [`template`]).
        command: Vec<String>,
        /// The value of `{parley}`.
        parley: PathBuf,
        /// The backend.
        db: Db,
        /// `parley serve` processes per server, sharing its database (PostgreSQL only);
        /// clients are spread over them.
        processes: usize,
    },
    /// Servers that already run; shared by every test.
    External { urls: Vec<String> },
}

/// Everything shared by all tests of a run.
#[derive(Debug)]
pub struct Env {
    /// The servers under test.
    pub target: Target,
    /// One HTTP client (with a request timeout) for every request of the suite.
    pub http: reqwest::Client,
}

/// A test ended without a verdict: it cannot run in this mode.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// The error that makes the runner report `skip` with `reason`.
pub fn skip(reason: impl Into<String>) -> anyhow::Error {
    Skip(reason.into()).into()
}

/// Resources a test leaves behind for the runner to release: PostgreSQL databases.
#[derive(Debug, Default)]
pub struct Leftovers {
    databases: Mutex<Vec<String>>,
}

impl Leftovers {
    /// Drops every database the test created (best effort: errors are returned as text).
    pub async fn release(&self, env: &Env) -> Vec<String> {
        let names = match self.databases.lock() {
            Ok(mut names) => std::mem::take(&mut *names),
            Err(_) => return vec!["leftover list poisoned".into()],
        };
        let mut errors = Vec::new();
        if let Target::Managed {
            db: Db::Postgres { admin_url },
            ..
        } = &env.target
        {
            for name in names {
                if let Err(e) = postgres::drop_database(admin_url, &name).await {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        errors
    }

    fn add_database(&self, name: String) {
        if let Ok(mut names) = self.databases.lock() {
            names.push(name);
        }
    }
}

/// A test's context: the way to servers, clients and unique names.
pub struct Ctx {
    env: Arc<Env>,
    leftovers: Arc<Leftovers>,
    external_labels: Vec<String>,
}

impl Ctx {
    /// A context for one test; `leftovers` is shared with the runner for clean-up.
    pub fn new(env: Arc<Env>, leftovers: Arc<Leftovers>) -> Ctx {
        Ctx {
            env,
            leftovers,
            external_labels: Vec::new(),
        }
    }

    /// Starts building the server called `label` (e.g. `"hs1"`) for this test.
    pub fn server(&mut self, label: &str) -> ServerBuilder<'_> {
        ServerBuilder {
            ctx: self,
            label: label.to_owned(),
            snippets: Vec::new(),
            server_name: None,
            restartable: false,
            port: None,
            one_process: false,
        }
    }

    /// Whether the suite starts its own servers (so restarts and configs are possible).
    pub fn is_managed(&self) -> bool {
        matches!(self.env.target, Target::Managed { .. })
    }

    /// The suite's HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.env.http
    }

    /// A user name unique across runs (servers given with `--server` keep their accounts).
    pub fn user(&self, base: &str) -> String {
        format!("{base}-{}", random_suffix())
    }
}

/// Options for one server of a test; [`ServerBuilder::start`] gives the [`Server`].
pub struct ServerBuilder<'a> {
    ctx: &'a mut Ctx,
    label: String,
    snippets: Vec<String>,
    server_name: Option<String>,
    restartable: bool,
    port: Option<u16>,
    one_process: bool,
}

impl ServerBuilder<'_> {
    /// Runs one process even with `--processes`: for claims about one process's own state,
    /// such as its in-memory rate-limit buckets (docs/operations.md#scaling: limits are per
    /// process).
    pub fn one_process(mut self) -> Self {
        self.one_process = true;
        self
    }

    /// Listens on `127.0.0.1:port` (see [`free_port`]), so other servers can be configured to
    /// reach it before it starts. Tests using this skip with `--server`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Declares that the test will stop and restart the server, so it skips with `--server`
    /// before doing any work.
    pub fn restartable(mut self) -> Self {
        self.restartable = true;
        self
    }

    /// Adds a TOML snippet to the server's config file (Parley's format), e.g.
    /// `"[auth]\naccess_token_ttl_ms = 1500"`. Tests using this skip with `--server`.
    pub fn config(mut self, toml_snippet: &str) -> Self {
        self.snippets.push(toml_snippet.to_owned());
        self
    }

    /// Sets the server name (default `<label>.test`). Tests using this skip with `--server`.
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// Starts the server (or picks the next `--server` URL).
    pub async fn start(self) -> anyhow::Result<Server> {
        let env = self.ctx.env.clone();
        match &env.target {
            Target::External { urls } => {
                if !self.snippets.is_empty() {
                    return Err(skip(
                        "needs its own server configuration (not possible with --server)",
                    ));
                }
                if self.restartable {
                    return Err(skip(
                        "needs to restart the server (not possible with --server)",
                    ));
                }
                if self.server_name.is_some() {
                    return Err(skip(
                        "needs a chosen server name (not possible with --server)",
                    ));
                }
                if self.port.is_some() {
                    return Err(skip("needs a chosen port (not possible with --server)"));
                }
                let labels = &mut self.ctx.external_labels;
                let index = match labels.iter().position(|l| *l == self.label) {
                    Some(i) => i,
                    None => {
                        labels.push(self.label.clone());
                        labels.len() - 1
                    }
                };
                let url = urls.get(index).ok_or_else(|| {
                    skip(format!(
                        "needs {} servers; give --server {} times",
                        index + 1,
                        index + 1
                    ))
                })?;
                Ok(Server {
                    label: self.label,
                    base_url: url.trim_end_matches('/').to_owned(),
                    http: env.http.clone(),
                    managed: None,
                    next_process: std::sync::atomic::AtomicUsize::new(0),
                })
            }
            Target::Managed {
                command,
                parley,
                db,
                processes,
            } => {
                let server_name = self
                    .server_name
                    .unwrap_or_else(|| format!("{}.test", self.label));
                let dir = tempfile::Builder::new()
                    .prefix("sytest-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let data_dir = dir.path().join("data");
                std::fs::create_dir_all(&data_dir).context("creating the data dir")?;
                let config_path = dir.path().join("config.toml");
                let mut snippets = vec![config::BASE_CONFIG];
                snippets.extend(self.snippets.iter().map(String::as_str));
                std::fs::write(&config_path, config::merge(&snippets)?)
                    .context("writing the config file")?;
                let database = match db {
                    Db::Sqlite => format!("sqlite://{}", data_dir.join("parley.db").display()),
                    Db::Postgres { admin_url } => {
                        let (name, url) = postgres::create_database(admin_url).await?;
                        self.ctx.leftovers.add_database(name);
                        url
                    }
                };
                let mut managed = Managed {
                    command: command.clone(),
                    parley: parley.clone(),
                    server_name,
                    database,
                    config_path,
                    data_dir,
                    log_path: dir.path().join("server.log"),
                    process: None,
                    siblings: Vec::new(),
                    sibling_addresses: Vec::new(),
                    processes: if self.one_process {
                        1
                    } else {
                        (*processes).max(1)
                    },
                    _dir: dir,
                };
                let listen = format!("127.0.0.1:{}", self.port.unwrap_or(0));
                let process = managed.spawn(&listen).await?;
                let base_url = process.base_url.clone();
                managed.process = Some(process);
                managed.spawn_siblings().await?;
                Ok(Server {
                    label: self.label,
                    base_url,
                    http: env.http.clone(),
                    managed: Some(managed),
                    next_process: std::sync::atomic::AtomicUsize::new(0),
                })
            }
        }
    }
}

/// A self-started server's files and process.
struct Managed {
    command: Vec<String>,
    parley: PathBuf,
    server_name: String,
    database: String,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    process: Option<ServerProcess>,
    /// More processes of the same server (`--processes`), each on its own port.
    siblings: Vec<ServerProcess>,
    /// Their addresses, kept across a restart so that clients made before still reach them.
    sibling_addresses: Vec<String>,
    /// How many processes the server runs.
    processes: usize,
    _dir: tempfile::TempDir,
}

impl Managed {
    /// Starts the processes beyond the first, on free ports, once each has said hello to the
    /// others (a heartbeat, so that wake-ups between them flow from the first request).
    async fn spawn_siblings(&mut self) -> anyhow::Result<()> {
        for i in 1..self.processes {
            let listen = self
                .sibling_addresses
                .get(i - 1)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:0".to_owned());
            let process = self.spawn(&listen).await?;
            if self.sibling_addresses.len() < i {
                let address = process.base_url.trim_start_matches("http://").to_owned();
                self.sibling_addresses.push(address);
            }
            self.siblings.push(process);
        }
        if self.processes > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        Ok(())
    }

    /// Stops the processes beyond the first.
    async fn stop_siblings(&mut self) -> anyhow::Result<()> {
        for mut sibling in std::mem::take(&mut self.siblings) {
            sibling.stop().await?;
        }
        Ok(())
    }

    async fn spawn(&self, listen: &str) -> anyhow::Result<ServerProcess> {
        let parley = self.parley.display().to_string();
        let config = self.config_path.display().to_string();
        let data_dir = self.data_dir.display().to_string();
        let argv = template::substitute(
            &self.command,
            &[
                ("{parley}", &parley),
                ("{config}", &config),
                ("{server_name}", &self.server_name),
                ("{listen}", listen),
                ("{database}", &self.database),
                ("{data_dir}", &data_dir),
            ],
        );
        ServerProcess::spawn(&argv, &self.log_path).await
    }
}

/// A server under test.
pub struct Server {
    label: String,
    base_url: String,
    http: reqwest::Client,
    managed: Option<Managed>,
    /// Round-robin over the server's processes for new clients and raw requests.
    next_process: std::sync::atomic::AtomicUsize,
}

impl crate::device::ClientFactory for Server {
    fn client(&self) -> Client {
        Server::client(self)
    }
}

impl Server {
    /// `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// The test's label for this server (`hs1`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The server name it was started with; `None` for `--server` servers (not known).
    pub fn server_name(&self) -> Option<&str> {
        self.managed.as_ref().map(|m| m.server_name.as_str())
    }

    /// A typed client of this server without a token (with `--processes`, of its processes
    /// in turn: any process serves any request).
    pub fn client(&self) -> Client {
        Client::with_http(self.http.clone(), self.next_url())
    }

    /// A raw request to `path` (which starts with `/`), for what the typed client cannot send.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.next_url(), path))
    }

    /// The URL of the next process in turn.
    fn next_url(&self) -> String {
        let siblings = self.managed.as_ref().map_or(&[][..], |m| &m.siblings[..]);
        if siblings.is_empty() {
            return self.base_url.clone();
        }
        let n = self
            .next_process
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % (siblings.len() + 1);
        match n {
            0 => self.base_url.clone(),
            i => siblings[i - 1].base_url.clone(),
        }
    }

    /// Stops the server with SIGTERM and starts it again on the same address, data dir and
    /// database. Skips the test with `--server`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let status = self.stop().await?;
        anyhow::ensure!(
            status.success(),
            "server exited with {status} after SIGTERM; log: {}",
            self.log_tail()
        );
        self.start_again().await
    }

    /// Stops the server with SIGTERM; its exit status. Skips the test with `--server`.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let managed = self
            .managed
            .as_mut()
            .ok_or_else(|| skip("needs to stop the server (not possible with --server)"))?;
        managed.stop_siblings().await?;
        let mut process = managed.process.take().context("server is not running")?;
        process.stop().await
    }

    /// Starts a stopped server again on its previous address.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let listen = self
            .base_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let managed = self
            .managed
            .as_mut()
            .ok_or_else(|| skip("needs to start the server (not possible with --server)"))?;
        anyhow::ensure!(managed.process.is_none(), "server is already running");
        let process = managed.spawn(&listen).await?;
        self.base_url = process.base_url.clone();
        managed.process = Some(process);
        managed.spawn_siblings().await
    }

    /// The data dir of a self-started server (`None` with `--server`).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.managed.as_ref().map(|m| m.data_dir.as_path())
    }

    /// Whether a self-started server keeps its database in its data dir (SQLite).
    pub fn database_in_data_dir(&self) -> bool {
        self.managed
            .as_ref()
            .is_some_and(|m| m.database.starts_with("sqlite://"))
    }

    /// The process id of a self-started, running server.
    pub fn pid(&self) -> Option<u32> {
        self.managed
            .as_ref()
            .and_then(|m| m.process.as_ref())
            .and_then(|p| p.pid())
    }

    /// The last lines of the server's log (self-started servers only).
    pub fn log_tail(&self) -> String {
        self.managed
            .as_ref()
            .map_or_else(String::new, |m| crate::process::log_tail(&m.log_path))
    }
}

/// A loopback port that was free a moment ago (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}
