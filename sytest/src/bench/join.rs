//! `parley-bench join`: joining by link (docs/protocol.md#join-links) into a large group, on
//! one server: for each new member, the time of `POST /groups/{id}/join_info`, of the
//! joiner's engine building the external commit (every member's credential checked), and of
//! the hub accepting it (wall time and the server's CPU). The baseline, measured in the same
//! run: the same joins into a group of 10, and adds by an admin's commit with a Welcome into
//! the large group.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use parley_client_api::client::unb64;
use parley_sytest::device::{bundle_request, Device};

use super::cpu::cpu_time;
use super::server::{self, Parley};
use super::setup;

/// What `parley-bench join` was asked to do.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Members of the large group (its admin included).
    pub members: usize,
    /// New members measured per row.
    pub joins: usize,
    /// `Some(admin URL)` for PostgreSQL.
    pub postgres_url: Option<String>,
    pub parley: Option<std::path::PathBuf>,
}

/// One row of the report: times summed over its joins.
#[derive(Debug, Default, Clone)]
struct Row {
    name: String,
    joins: usize,
    info: Duration,
    engine: Duration,
    commit: Duration,
    hub_cpu: Duration,
    group_info_bytes: usize,
    commit_bytes: usize,
}

impl Row {
    fn ms(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0 / self.joins.max(1) as f64
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: JoinOptions) -> anyhow::Result<()> {
    let parley = server::parley_binary(opts.parley.clone())?;
    let (_tmp, server) = server::start_alone(
        &parley,
        "parley-bench-join",
        "join.example",
        opts.postgres_url.as_deref(),
        "",
    )
    .await?;
    let result = measure(&opts, &server).await;
    server::stop_after("join", server, &result).await;
    let rows = result?;
    let backend = server::backend_name(opts.postgres_url.as_deref());
    println!(
        "\nparley-bench join — joining by link into a group of {} members, {} joins per row, {backend}",
        opts.members, opts.joins
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<42} {:>13} {:>14} {:>13} {:>14} {:>12} {:>12}",
        "per new member",
        "join_info ms",
        "joiner/adder",
        "commit ms",
        "hub CPU ms",
        "GroupInfo B",
        "commit B"
    );
    for r in &rows {
        println!(
            "{:<42} {:>13.1} {:>11.1} ms {:>13.1} {:>14.1} {:>12} {:>12}",
            r.name,
            r.ms(r.info),
            r.ms(r.engine),
            r.ms(r.commit),
            r.ms(r.hub_cpu),
            r.group_info_bytes,
            r.commit_bytes / r.joins.max(1)
        );
    }
    if let [small, large, add] = rows.as_slice() {
        let ratio = |a: Duration, b: Duration| {
            if b.is_zero() {
                "n/a (below one CPU tick)".to_owned()
            } else {
                format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
            }
        };
        println!(
            "large / small group: joiner {}, commit wall {}, hub CPU {}; join by link / add by Welcome in the large group: hub CPU {}",
            ratio(large.engine, small.engine),
            ratio(large.commit, small.commit),
            ratio(large.hub_cpu, small.hub_cpu),
            ratio(large.hub_cpu, add.hub_cpu),
        );
    }
    println!("(hub CPU from /proc/<pid>/stat, 10 ms ticks summed over the joins of a row)");
    Ok(())
}

async fn measure(opts: &JoinOptions, server: &Parley) -> anyhow::Result<Vec<Row>> {
    let base = &server.proc.base_url;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()?;
    let suffix = format!("{:x}", now_ms() % 0xffff_ffff);
    let mut admin = setup::register(&http, base, format!("admin-{suffix}"), 2).await?;
    // The members: registered (a key package each), then only their ids are kept.
    let started = Instant::now();
    let mut members = Vec::new();
    let others = opts.members.saturating_sub(1).max(10);
    for chunk in (0..others).collect::<Vec<_>>().chunks(8) {
        let registering = chunk.iter().map(|i| {
            let http = http.clone();
            let name = format!("m{i}-{suffix}");
            async move { setup::register(&http, base, name, 1).await }
        });
        for d in futures_util::future::try_join_all(registering).await? {
            members.push(d.user_id.clone());
        }
    }
    eprintln!(
        "[join] {} members registered in {:.1} s",
        members.len(),
        started.elapsed().as_secs_f64()
    );
    let mut everyone = members.clone();
    everyone.push(admin.user_id.clone());
    let mut keys = setup::device_keys(&admin.client, &everyone).await?;
    admin.keys = keys.clone();

    let small = admin.create_group_with_roles().await?;
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    admin.add(&small, &refs[..9]).await?;
    let large = admin.create_group_with_roles().await?;
    for chunk in refs.chunks(100) {
        admin.add(&large, chunk).await?;
    }
    anyhow::ensure!(
        admin.engine.members(&large).context("members")?.len() == members.len() + 1,
        "the large group does not hold every member"
    );
    let mut rows = Vec::new();
    for (name, group) in [
        ("join by link, group of 10 (baseline)".to_owned(), &small),
        (
            format!("join by link, group of {}", members.len() + 1),
            &large,
        ),
    ] {
        let link = admin.open_join_link(group).await?;
        let code = parley_mls::JoinLink::parse(&link)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .code;
        let mut row = Row {
            name,
            ..Row::default()
        };
        for i in 0..opts.joins {
            let mut joiner =
                setup::register(&http, base, format!("j{}-{i}-{suffix}", rows.len()), 1).await?;
            joiner.keys = keys.clone();
            join_once(&mut joiner, group, &code, server, &mut row).await?;
            // Later joiners check this one's credential too.
            let me = parley_mls::DeviceRef::new(&joiner.user_id, &joiner.device_id)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            keys.insert(me, joiner.engine.signature_public_key());
        }
        // The admin takes in the joins before its next commit.
        admin.sync_all().await?;
        rows.push(row);
    }
    // Adds by the admin's commit with a Welcome, into the large group.
    let mut row = Row {
        name: format!("add by Welcome, group of {}+", members.len() + 1),
        ..Row::default()
    };
    for i in 0..opts.joins {
        let added = setup::register(&http, base, format!("w{i}-{suffix}"), 1).await?;
        admin.learn(&[added.user_id.as_str()]).await?;
        let kps = admin.claim(&[added.user_id.as_str()]).await?;
        let t0 = Instant::now();
        let bundle = admin.add_bundle(&large, &kps)?;
        row.engine += t0.elapsed();
        row.commit_bytes += bundle.commit.len();
        row.group_info_bytes = bundle.group_info.as_ref().map_or(0, Vec::len);
        let cpu0 = cpu_time(server.proc.pid);
        let t1 = Instant::now();
        admin.submit(&large, bundle).await?;
        row.commit += t1.elapsed();
        row.hub_cpu += cpu_time(server.proc.pid).saturating_sub(cpu0);
        row.joins += 1;
    }
    rows.push(row);
    Ok(rows)
}

/// One join by link of `joiner` into `group`, timed into `row`.
async fn join_once(
    joiner: &mut Device,
    group: &str,
    code: &str,
    server: &Parley,
    row: &mut Row,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let info = joiner
        .client
        .join_info(group, code)
        .await
        .map_err(|e| anyhow::anyhow!("join_info: {e}"))?;
    row.info += t0.elapsed();
    let group_info = unb64(&info.group_info).context("group_info is not base64")?;
    row.group_info_bytes = group_info.len();
    let t1 = Instant::now();
    let (_, bundle) = joiner
        .engine
        .join_by_link(group, &group_info, code, &joiner.keys)
        .map_err(|e| anyhow::anyhow!("join by link: {e}"))?;
    row.engine += t1.elapsed();
    row.commit_bytes += bundle.commit.len();
    let cpu0 = cpu_time(server.proc.pid);
    let t2 = Instant::now();
    joiner
        .client
        .commit(group, &bundle_request(&bundle))
        .await
        .map_err(|e| anyhow::anyhow!("the hub refused the join: {e}"))?;
    row.commit += t2.elapsed();
    row.hub_cpu += cpu_time(server.proc.pid).saturating_sub(cpu0);
    row.joins += 1;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
