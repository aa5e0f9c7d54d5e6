//! `parley-bench`: load tool measuring a Parley homeserver's relay performance next to a
//! same-run baseline (a bare axum endpoint echoing 400 bytes). See `sytest/README.md`,
//! section "Benchmark".

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The same allocator as `parley serve`: the echo baseline runs in this binary, so both
/// servers compared are built alike (and the load generator spends less on allocation).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "parley-bench",
    about = "Relay benchmark for Parley homeservers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo baseline, then relay throughput/latency, idle-WebSocket RSS, optionally federated.
    Relay(RelayArgs),
    /// Upload and download of one large file through one server and across two, next to a
    /// plain copy on the same disk: throughput and peak RSS growth per transfer.
    Media(MediaArgs),
    /// Typing notices sent ephemerally against the same notices stored, on one server:
    /// notices per second, frames delivered and database commits per notice.
    Typing(TypingArgs),
    /// Hub CPU per commit in a group with roles next to a group without, on one server.
    Roles(RolesArgs),
    /// Joining by link into a large group: join_info, the joiner's engine and the hub per
    /// join, next to joins into a group of 10 and adds by Welcome, on one server.
    Join(JoinArgs),
    /// The baseline server: a bare axum endpoint `POST /echo` answering with the body.
    EchoServer {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

/// Database backend of the servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Concurrent sending devices (each one HTTP/1.1 keep-alive connection); also the
    /// number of connections driving the echo baseline.
    #[arg(long, default_value_t = 32)]
    senders: usize,
    /// Receiving devices, each holding one WebSocket.
    #[arg(long, default_value_t = 4)]
    receivers: usize,
    /// Groups; sender i sends to group i % groups, every receiver is in every group.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Length of each measured phase (echo, full load, half load; each federated phase).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[command(flatten)]
    server: ServerArgs,
    /// Also measure two federated servers (senders on a.example, receivers on b.example).
    #[arg(long)]
    federated: bool,
    /// Also measure N `parley serve` processes of one server on one PostgreSQL database
    /// (senders and receivers spread over them in turn); needs `--db postgres`.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Runtime threads of every parley process (`worker_threads`; default one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Idle authenticated WebSockets opened to measure RSS per connection (0 to skip).
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Application plaintext bytes per message (32 gives a ~430-byte request body).
    #[arg(long, default_value_t = 32)]
    plaintext_bytes: usize,
    /// Keep the servers' temporary directories (logs, databases) and print where they are.
    #[arg(long)]
    keep: bool,
}

/// The server under test: its backend and binary (shared by `media`, `typing` and `roles`).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Database backend.
    #[arg(long, value_enum, default_value_t = DbKind::Sqlite)]
    db: DbKind,
    /// Administrative PostgreSQL URL for `--db postgres` (a database per server is created).
    #[arg(long, env = "PARLEY_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The `parley` binary (default: next to this executable).
    #[arg(long)]
    parley: Option<PathBuf>,
}

impl ServerArgs {
    /// The PostgreSQL admin URL when `--db postgres`.
    fn postgres(&self) -> Option<String> {
        match self.db {
            DbKind::Sqlite => None,
            DbKind::Postgres => Some(self.postgres_url.clone().unwrap_or_default()),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct MediaArgs {
    /// File size in MiB.
    #[arg(long, default_value_t = 200)]
    size_mib: u64,
    #[command(flatten)]
    server: ServerArgs,
    /// Rounds of transfers: the first is the warm-up, the others give each transfer's median.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

#[derive(Debug, clap::Args)]
pub struct TypingArgs {
    /// Concurrent sending devices, each on its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Receiving devices, each holding one WebSocket.
    #[arg(long, default_value_t = 4)]
    receivers: usize,
    /// Length of each measured phase (stored, then ephemeral).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RolesArgs {
    /// Members of each group besides the creator and the committing member.
    #[arg(long, default_value_t = 30)]
    members: usize,
    /// Commits per group and round.
    #[arg(long, default_value_t = 200)]
    commits: usize,
    /// Rounds (each measures both groups, alternating which goes first).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// Members of the large group (its admin included).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// New members measured per row.
    #[arg(long, default_value_t = 10)]
    joins: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `work` on a fresh multi-threaded runtime; the exit code.
fn run_async(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parley-bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parley-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::EchoServer { listen } => match bench::echo::serve(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("parley-bench echo-server: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Relay(args) => run_async(bench::relay::run(args.into())),
        Command::Media(a) => run_async(bench::media::run(bench::media::MediaOptions {
            size_mib: a.size_mib.clamp(1, 4096),
            postgres_url: a.server.postgres(),
            parley: a.server.parley,
            rounds: a.rounds.clamp(2, 20),
        })),
        Command::Roles(a) => run_async(bench::roles::run(bench::roles::RolesOptions {
            members: a.members.clamp(1, 1000),
            commits: a.commits.clamp(1, 100_000),
            rounds: a.rounds.clamp(1, 100),
            postgres_url: a.server.postgres(),
            parley: a.server.parley,
        })),
        Command::Join(a) => run_async(bench::join::run(bench::join::JoinOptions {
            members: a.members.clamp(11, 5000),
            joins: a.joins.clamp(1, 1000),
            postgres_url: a.server.postgres(),
            parley: a.server.parley,
        })),
        Command::Typing(a) => run_async(bench::typing::run(bench::typing::TypingOptions {
            senders: a.senders.clamp(1, 256),
            receivers: a.receivers.clamp(1, 256),
            duration: std::time::Duration::from_secs(a.duration_secs.clamp(1, 600)),
            postgres_url: a.server.postgres(),
            parley: a.server.parley,
        })),
    }
}

impl From<RelayArgs> for bench::options::Options {
    fn from(a: RelayArgs) -> Self {
        bench::options::Options {
            senders: a.senders.max(1),
            receivers: a.receivers.max(1),
            groups: a.groups.clamp(1, a.senders.max(1)),
            duration: std::time::Duration::from_secs(a.duration_secs.clamp(1, 600)),
            postgres_url: a.server.postgres(),
            federated: a.federated,
            processes: a.processes,
            worker_threads: a.worker_threads,
            idle_connections: a.idle_connections.min(10_000),
            plaintext_bytes: a.plaintext_bytes.clamp(1, 60_000),
            parley: a.server.parley,
            keep: a.keep,
        }
    }
}
