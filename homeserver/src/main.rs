//! `parley`: the command line of the Parley homeserver (serve, generate-config,
//! rotate-federation-key, admin); everything else is the `parley_homeserver` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use parley_homeserver::config::{self, Config};
use parley_homeserver::{allocator, logging, server, signing_keys};

/// mimalloc, with large blocks from glibc: see [`allocator`].
#[global_allocator]
static ALLOCATOR: allocator::SplitAllocator = allocator::SplitAllocator;

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "The Parley federated MLS homeserver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve(ServeArgs),
    /// Print a commented default configuration file.
    GenerateConfig,
    /// Retire the federation signing key (still published as an old key) and generate a new
    /// one. Run while the server is stopped.
    RotateFederationKey {
        /// Data directory holding the keys.
        #[arg(long, env = "PARLEY_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Administration: `make-admin` on the database, everything else through the running
    /// server's admin API (docs/operations.md#administration).
    Admin(AdminArgs),
}

/// `parley admin …`.
#[derive(clap::Args)]
struct AdminArgs {
    #[command(flatten)]
    connection: parley_homeserver::admin::cli::Connection,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Grant the admin flag on the database directly (the way to make the first admin; safe
    /// while the server runs, on either backend).
    MakeAdmin {
        /// The local user, `@name:server`.
        user_id: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    #[command(flatten)]
    Api(parley_homeserver::admin::cli::ApiCommand),
}

/// Flags of `parley serve`; each overrides the config file, and `PARLEY_*` variables set them.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "PARLEY_CONFIG")]
    config: Option<PathBuf>,
    /// This server's name (domain of its user ids).
    #[arg(long, env = "PARLEY_SERVER_NAME")]
    server_name: Option<String>,
    /// Address to listen on, e.g. 127.0.0.1:8008 (port 0 picks a free one).
    #[arg(long, env = "PARLEY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database URL: sqlite://PATH or postgres://…
    #[arg(long, env = "PARLEY_DATABASE")]
    database: Option<String>,
    /// Data directory (SQLite database, generated keys).
    #[arg(long, env = "PARLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.server_name {
            config.server_name = v;
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.database {
            config.database = Some(v);
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        Ok(config)
    }
}

/// A runtime for a one-off command, or the exit code of failing to make one.
fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("parley: cannot start runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}

/// Exit code of a finished one-off command.
fn finished(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parley: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `parley admin make-admin`: opens the database of the configuration and sets the flag.
async fn make_admin(user_id: &str, config: Config) -> anyhow::Result<()> {
    let store = parley_schema::Store::connect(
        &config.database_url(),
        &parley_schema::StoreConfig::default(),
    )
    .await?;
    let found = parley_homeserver::admin::make_admin_on_store(&store, user_id).await;
    store.close();
    if !found? {
        anyhow::bail!("no user {user_id} in this database");
    }
    println!("{user_id} is now an admin");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match args.command {
                AdminCommand::MakeAdmin { user_id, serve } => {
                    let config = match serve.into_config() {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("parley: {e:#}");
                            return std::process::ExitCode::from(2);
                        }
                    };
                    finished(rt.block_on(make_admin(&user_id, config)))
                }
                AdminCommand::Api(command) => finished(
                    rt.block_on(parley_homeserver::admin::cli::run(args.connection, command)),
                ),
            }
        }
        Command::GenerateConfig => {
            print!("{}", config::DEFAULT_CONFIG_TOML);
            std::process::ExitCode::SUCCESS
        }
        Command::RotateFederationKey { data_dir } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            match signing_keys::rotate(&data_dir, now) {
                Ok((old, new)) => {
                    println!(
                        "retired {} (still published as an old key); new key {}",
                        old.as_str(),
                        new.as_str()
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("parley: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            allocator::return_large_blocks_to_the_os();
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("parley: {e:#}");
                    return std::process::ExitCode::from(2);
                }
            };
            logging::init(&config);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = config.worker_threads {
                builder.worker_threads(n.clamp(1, 1024));
            }
            let runtime = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("parley: cannot start runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "parley stopped");
                    eprintln!("parley: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
