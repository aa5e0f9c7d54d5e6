//! Where the machine's CPU went during a measured phase: the server processes, PostgreSQL,
//! this load generator, and the machine as a whole, read from `/proc`. With every part on
//! the same few cores, this is what says what bounds a throughput figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `USER_HZ` on Linux: the unit of `/proc` CPU times.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`; zero once it is
/// gone.
pub fn cpu_time(pid: u32) -> Duration {
    ticks_to_duration(process_ticks(&format!("/proc/{pid}/stat")))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// utime + stime of a `/proc/<pid>/stat` (or `/proc/self/stat`) file, in ticks.
fn process_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command (field 2) may hold spaces: the fields that matter follow its ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime field 14, stime field 15 (1-based).
    let field = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Busy and total ticks of the whole machine (all cores), from `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Ticks of every PostgreSQL process (server, backends, WAL writer, …) running now.
fn postgres_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == "postgres" {
            out.insert(pid, process_ticks(&format!("/proc/{pid}/stat")));
        }
    }
    out
}

/// A reading of everything, taken at the start of a phase.
pub struct CpuSample {
    at: Instant,
    servers: Vec<(u32, u64)>,
    postgres: HashMap<u32, u64>,
    generator: u64,
    machine: (u64, u64),
}

/// CPU used during a phase, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    /// The `parley` processes measured.
    pub servers: f64,
    /// Every PostgreSQL process of the machine (zero on SQLite).
    pub postgres: f64,
    /// This benchmark: its senders, receivers and their MLS work.
    pub generator: f64,
    /// The whole machine, the kernel's own work included.
    pub machine: f64,
    /// Cores the machine has.
    pub cores: usize,
}

impl CpuSample {
    /// Reads the machine, PostgreSQL, this process and the given server processes.
    pub fn take(server_pids: &[u32]) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            servers: server_pids
                .iter()
                .map(|&pid| (pid, process_ticks(&format!("/proc/{pid}/stat"))))
                .collect(),
            postgres: postgres_ticks(),
            generator: process_ticks("/proc/self/stat"),
            machine: machine_ticks(),
        }
    }

    /// What each part used since this sample. A PostgreSQL process started during the phase
    /// (a new connection's backend) counts whole; one that ended during it is lost.
    pub fn split(&self) -> CpuSplit {
        let now = CpuSample::take(&self.servers.iter().map(|(p, _)| *p).collect::<Vec<_>>());
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND as f64 / seconds;
        let servers: u64 = now
            .servers
            .iter()
            .zip(&self.servers)
            .map(|((_, after), (_, before))| after.saturating_sub(*before))
            .sum();
        let postgres: u64 = now
            .postgres
            .iter()
            .map(|(pid, after)| after.saturating_sub(self.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        CpuSplit {
            servers: cores(servers),
            postgres: cores(postgres),
            generator: cores(now.generator.saturating_sub(self.generator)),
            machine: cores(now.machine.0.saturating_sub(self.machine.0)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl CpuSplit {
    /// "servers 0.48 / PostgreSQL 0.57 / generator 0.39 / machine 1.52 of 2 cores".
    pub fn cores_text(&self) -> String {
        format!(
            "servers {:.2} / PostgreSQL {:.2} / generator {:.2} / machine {:.2} of {} cores",
            self.servers, self.postgres, self.generator, self.machine, self.cores
        )
    }

    /// CPU per accepted message at `rate` messages a second, in µs, by part.
    pub fn per_message_text(&self, rate: f64) -> String {
        let us = |cores: f64| cores * 1e6 / rate.max(1e-9);
        format!(
            "servers {:.0} / PostgreSQL {:.0} / generator {:.0} / machine {:.0}",
            us(self.servers),
            us(self.postgres),
            us(self.generator),
            us(self.machine)
        )
    }

    /// The rate this machine would reach with every core busy at this phase's CPU cost per
    /// message (`rate` messages a second measured): the most any topology can get out of
    /// these cores unless it costs less per message than this phase did.
    pub fn all_cores_rate(&self, rate: f64) -> f64 {
        if self.machine <= 0.0 {
            return 0.0;
        }
        rate * self.cores as f64 / self.machine
    }

    /// What bounds the figure, as far as CPU can tell: the machine's cores when they are
    /// nearly all busy, else something that waits (locks, disk flushes, round trips).
    pub fn bound_text(&self) -> &'static str {
        if self.machine >= 0.9 * self.cores as f64 {
            "the machine's cores (all busy)"
        } else {
            "waiting, not CPU (cores left idle)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_as_about_one_core_of_the_generator_and_of_the_machine() {
        let sample = CpuSample::take(&[]);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(400) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let split = sample.split();
        assert!(split.generator > 0.5, "{split:?}");
        assert!(split.machine >= split.generator * 0.8, "{split:?}");
        assert_eq!(split.servers, 0.0);
        assert!(split.cores >= 1);
    }

    #[test]
    fn the_bound_is_the_cores_only_when_nearly_all_are_busy() {
        let split = |machine| CpuSplit {
            machine,
            cores: 2,
            ..CpuSplit::default()
        };
        assert_eq!(split(1.95).bound_text(), "the machine's cores (all busy)");
        assert_eq!(
            split(1.2).bound_text(),
            "waiting, not CPU (cores left idle)"
        );
        // 1.5 of 2 cores for 9,000 msgs/s: 12,000 msgs/s with both busy at that cost.
        assert_eq!(split(1.5).all_cores_rate(9000.0).round(), 12000.0);
        assert_eq!(split(0.0).all_cores_rate(9000.0), 0.0);
        assert_eq!(
            split(1.0).per_message_text(1000.0),
            "servers 0 / PostgreSQL 0 / generator 0 / machine 1000"
        );
    }
}
