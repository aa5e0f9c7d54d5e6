//! `parley-bench roles`: the hub's CPU per commit in a group with roles (docs/protocol.md
//! #group-roles: each commit's change is checked against the group's admins) next to the
//! same commits in a group without roles, in one run on one server. Both groups hold the same
//! members; the commits are self-updates by a member who is not an admin, so the whole rule
//! runs. Phases alternate, so drift of the machine falls on both.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::cpu::cpu_time;
use super::server::{self, Parley};
use super::setup;
use parley_sytest::device::Device;

/// What `parley-bench roles` was asked to do.
#[derive(Debug, Clone)]
pub struct RolesOptions {
    /// Members of each group besides the creator and the committer.
    pub members: usize,
    /// Commits per phase.
    pub commits: usize,
    /// Rounds of (without roles, with roles) phases.
    pub rounds: usize,
    /// `Some(admin URL)` for PostgreSQL.
    pub postgres_url: Option<String>,
    pub parley: Option<std::path::PathBuf>,
}

/// Server CPU and wall time spent on one group's commits, summed over the rounds.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    cpu: Duration,
    wall: Duration,
    commits: usize,
}

impl Spent {
    fn cpu_ms_per_commit(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.commits.max(1) as f64
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: RolesOptions) -> anyhow::Result<()> {
    let parley = server::parley_binary(opts.parley.clone())?;
    let (_tmp, server) = server::start_alone(
        &parley,
        "parley-bench-roles",
        "roles.example",
        opts.postgres_url.as_deref(),
        "",
    )
    .await?;
    let result = measure(&opts, &server).await;
    server::stop_after("roles", server, &result).await;
    let (plain, roles) = result?;
    let backend = server::backend_name(opts.postgres_url.as_deref());
    println!(
        "\nparley-bench roles — self-update commits by a non-admin member, groups of {} members, {} rounds of {} commits per group, {backend}",
        opts.members + 2,
        opts.rounds,
        opts.commits
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<30} {:>9} {:>18} {:>12}",
        "group", "commits", "hub CPU/commit", "commits/s"
    );
    for (name, s) in [("without roles (baseline)", &plain), ("with roles", &roles)] {
        println!(
            "{:<30} {:>9} {:>15.3} ms {:>12.0}",
            name,
            s.commits,
            s.cpu_ms_per_commit(),
            s.commits as f64 / s.wall.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "with roles / without: {:.3}× the hub CPU per commit (target ≤ 1.1×)",
        roles.cpu_ms_per_commit() / plain.cpu_ms_per_commit().max(1e-9)
    );
    Ok(())
}

async fn measure(opts: &RolesOptions, server: &Parley) -> anyhow::Result<(Spent, Spent)> {
    let base = &server.proc.base_url;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()?;
    let suffix = format!("{:x}", now_ms() % 0xffff_ffff);
    let mut creator = setup::register(&http, base, format!("admin-{suffix}"), 4).await?;
    let mut committer = setup::register(&http, base, format!("member-{suffix}"), 4).await?;
    let mut users = vec![committer.user_id.clone()];
    for i in 0..opts.members {
        let d = setup::register(&http, base, format!("m{i}-{suffix}"), 4).await?;
        users.push(d.user_id.clone());
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let creator_id = creator.user_id.clone();
    let mut everyone = refs.clone();
    everyone.push(&creator_id);
    committer.learn(&everyone).await?;
    let plain = creator.create_group().await?;
    creator.add(&plain, &refs).await?;
    let with_roles = creator.create_group_with_roles().await?;
    creator.add(&with_roles, &refs).await?;
    committer.sync_all().await?;
    for g in [&plain, &with_roles] {
        anyhow::ensure!(
            committer.engine.group_ids().contains(g),
            "the committer did not join {g}"
        );
    }
    anyhow::ensure!(
        !committer
            .engine
            .is_admin(&with_roles, &committer.user_id)
            .context("roles")?,
        "the committer should not be an admin"
    );
    // Warm-up on both, then the measured rounds, alternating which group goes first.
    for g in [&plain, &with_roles] {
        commit_self_updates(&mut committer, g, 10).await?;
    }
    let (mut spent_plain, mut spent_roles) = (Spent::default(), Spent::default());
    for round in 0..opts.rounds {
        let order = if round % 2 == 0 {
            [(&plain, false), (&with_roles, true)]
        } else {
            [(&with_roles, true), (&plain, false)]
        };
        for (group, is_roles) in order {
            let cpu0 = cpu_time(server.proc.pid);
            let t0 = Instant::now();
            commit_self_updates(&mut committer, group, opts.commits).await?;
            let spent = if is_roles {
                &mut spent_roles
            } else {
                &mut spent_plain
            };
            spent.cpu += cpu_time(server.proc.pid).saturating_sub(cpu0);
            spent.wall += t0.elapsed();
            spent.commits += opts.commits;
        }
        eprintln!(
            "[roles] round {}: {:.3} ms vs {:.3} ms of hub CPU per commit",
            round + 1,
            spent_plain.cpu_ms_per_commit(),
            spent_roles.cpu_ms_per_commit()
        );
    }
    Ok((spent_plain, spent_roles))
}

/// `n` self-update commits of `device` in `group`, one after the other.
async fn commit_self_updates(device: &mut Device, group: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        device.self_update(group).await?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
