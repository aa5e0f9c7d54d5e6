//! `sytest`: the black-box conformance suite for Parley homeservers.
//!
//! With no arguments it starts a fresh `parley serve` (the binary next to this one) for every
//! test; `--server-cmd` starts another implementation instead; `--server URL` targets servers
//! that already run. See `sytest/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use parley_sytest::fixture::{Db, Env, Target};
use parley_sytest::{postgres, registry, runner, template};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "sytest",
    version,
    about = "Black-box conformance suite for Parley homeservers",
    after_help = placeholders_help()
)]
struct Cli {
    /// Test servers that already run at URL (repeat for a second server); tests needing a
    /// restart or their own configuration are skipped.
    #[arg(long = "server", value_name = "URL", conflicts_with_all = ["server_cmd", "db"])]
    servers: Vec<String>,
    /// Command template starting one server instance (placeholders below); default: this
    /// repository's parley.
    #[arg(long, value_name = "TEMPLATE")]
    server_cmd: Option<String>,
    /// The `{parley}` binary; default: `parley` next to the sytest executable.
    #[arg(long, value_name = "PATH")]
    parley: Option<PathBuf>,
    /// Database of self-started servers.
    #[arg(long, value_enum)]
    db: Option<DbKind>,
    /// Administrative PostgreSQL URL for `--db postgres`; a fresh database is created per
    /// server instance.
    #[arg(
        long,
        env = "PARLEY_TEST_POSTGRES_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    postgres_url: Option<String>,
    /// `parley serve` processes per self-started server, all on its one database
    /// (`--db postgres` only); clients are spread over them in turn.
    #[arg(long, default_value_t = 1, value_name = "N")]
    processes: usize,
    /// List the tests (`group/name`) and exit.
    #[arg(long)]
    list: bool,
    /// Run only tests whose `group/name` matches GLOB (`*`, `?`); repeatable. A pattern without
    /// `/` also matches a whole group.
    #[arg(long, value_name = "GLOB")]
    filter: Vec<String>,
    /// Start no new test after the first failure.
    #[arg(long)]
    fail_fast: bool,
    /// Tests running at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    jobs: usize,
    /// Longest a single test may run, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DbKind {
    Sqlite,
    Postgres,
}

fn placeholders_help() -> String {
    let mut help = String::from("Placeholders of --server-cmd:\n");
    for (name, meaning) in template::PLACEHOLDERS {
        help.push_str(&format!("  {name:<14} {meaning}\n"));
    }
    help.push_str(&format!("Default: {}\n", template::DEFAULT_TEMPLATE));
    help.push_str("The server must print a line containing 'listening on http://HOST:PORT' on stdout once bound, and exit on SIGTERM.");
    help
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let all = registry::all();
    let selected: Vec<_> = all
        .into_iter()
        .filter(|t| cli.filter.is_empty() || cli.filter.iter().any(|p| registry::selects(p, t)))
        .collect();
    if cli.list {
        for test in &selected {
            println!("{}", test.full_name());
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sytest: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let env = match build_env(&cli).await {
            Ok(env) => env,
            Err(e) => {
                eprintln!("sytest: {e:#}");
                return ExitCode::from(2);
            }
        };
        if selected.is_empty() {
            eprintln!("sytest: no test matches the filters");
            println!("{}", runner::Summary::default());
            return ExitCode::from(2);
        }
        let options = runner::Options {
            jobs: cli.jobs,
            fail_fast: cli.fail_fast,
            timeout: Duration::from_secs(cli.timeout.max(1)),
        };
        let summary = runner::run(Arc::new(env), selected, options).await;
        if summary.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Turns the options into the run's environment, checking what can be checked up front.
async fn build_env(cli: &Cli) -> anyhow::Result<Env> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let target = if !cli.servers.is_empty() {
        for url in &cli.servers {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--server {url}: expected an http:// or https:// URL"
            );
        }
        Target::External {
            urls: cli.servers.clone(),
        }
    } else {
        let command = template::split_words(
            cli.server_cmd
                .as_deref()
                .unwrap_or(template::DEFAULT_TEMPLATE),
        )
        .map_err(|e| anyhow::anyhow!("--server-cmd: {e}"))?;
        let parley = match &cli.parley {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(|dir| dir.join("parley"))
                .ok_or_else(|| {
                    anyhow::anyhow!("cannot locate the sytest executable's directory")
                })?,
        };
        if command.iter().any(|w| w.contains("{parley}")) && !parley.is_file() {
            anyhow::bail!(
                "{} not found: build it (cargo build -p parley-homeserver), pass --parley PATH, --server-cmd or --server",
                parley.display()
            );
        }
        let db = match cli.db.unwrap_or(DbKind::Sqlite) {
            DbKind::Sqlite => Db::Sqlite,
            DbKind::Postgres => {
                let admin_url = cli.postgres_url.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--db postgres needs --postgres-url or PARLEY_TEST_POSTGRES_URL"
                    )
                })?;
                postgres::check(&admin_url).await?;
                Db::Postgres { admin_url }
            }
        };
        anyhow::ensure!(
            (1..=8).contains(&cli.processes),
            "--processes must be 1 to 8"
        );
        anyhow::ensure!(
            cli.processes == 1 || matches!(db, Db::Postgres { .. }),
            "--processes {} needs --db postgres: SQLite serves one process",
            cli.processes
        );
        Target::Managed {
            command,
            parley,
            db,
            processes: cli.processes,
        }
    };
    Ok(Env { target, http })
}
