//! CPU time of the broker process and of this process, read from `/proc/<pid>/stat` (fields
//! 14 `utime` and 15 `stime`, in clock ticks of `sysconf(_SC_CLK_TCK)`, usually 10 ms).
//!
//! Broker and client share the cores of this machine, so every point reports both: the CPU
//! seconds each used over the measured window, and as "cores" (CPU seconds per wall second).
//! A tick is 10 ms, so over a 5 s window the figures are good to about 0.5 %.
//!
//! Per-thread times (`/proc/<pid>/task/<tid>/stat`) name the busiest thread of each side: a
//! thread near 1.0 core is saturated, whatever the process total says (one broker shard, or
//! the client's producer sender task, can be the limit while the other core idles).

use std::path::Path;

use serde::Serialize;

/// CPU seconds (user + system) used so far by process `pid` (`None` for this process), or
/// `None` if it cannot be read (process gone, no permission, not Linux).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(Path::new(&path)).ok()?;
    let ticks = parse_stat_ticks(&text)?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// CPU seconds all cores of the machine spent busy so far (user, nice, system, irq, softirq
/// and steal from the first line of `/proc/stat`), or `None` if unreadable.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_machine_busy_ticks(stat.lines().next()?)?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// Busy ticks from the `cpu ...` line of `/proc/stat`: user + nice + system + irq + softirq +
/// steal (idle and iowait are not busy; guest time is already inside user).
pub fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let get = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The second field (the command name)
/// is in parentheses and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of every thread of process `pid` (`None`: this process): (thread id, thread
/// name, ticks). Empty if unreadable.
pub fn thread_ticks(pid: Option<u32>) -> Vec<(u32, String, u64)> {
    let base = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(open, close)| stat[open + 1..close].to_owned())
            .unwrap_or_default();
        if let Some(ticks) = parse_stat_ticks(&stat) {
            threads.push((tid, name, ticks));
        }
    }
    threads
}

/// The thread that used the most CPU between two [`thread_ticks`] readings.
fn busiest_thread(
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
    wall_s: f64,
) -> Option<ThreadUse> {
    if wall_s <= 0.0 {
        return None;
    }
    let per_second = clock_ticks_per_second();
    after
        .iter()
        .map(|(tid, name, ticks)| {
            let start = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, ticks)| *ticks);
            (name, ticks.saturating_sub(start))
        })
        .max_by_key(|(_, ticks)| *ticks)
        .map(|(name, ticks)| ThreadUse {
            name: name.clone(),
            cores: ticks as f64 / per_second / wall_s,
        })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU readings of the broker and of this process at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// Broker CPU seconds so far (`None`: unknown broker process).
    pub broker_s: Option<f64>,
    /// This process's CPU seconds so far.
    pub client_s: Option<f64>,
    /// The whole machine's busy CPU seconds so far.
    pub machine_s: Option<f64>,
    broker_threads: Vec<(u32, String, u64)>,
    client_threads: Vec<(u32, String, u64)>,
}

impl CpuSample {
    /// Reads both now; the broker's figures are summed over `broker_pids` (a cluster's
    /// brokers), unknown when that is empty or one of them cannot be read.
    pub fn take(broker_pids: &[u32]) -> Self {
        let broker_s = if broker_pids.is_empty() {
            None
        } else {
            broker_pids
                .iter()
                .map(|pid| cpu_seconds(Some(*pid)))
                .sum::<Option<f64>>()
        };
        CpuSample {
            broker_s,
            client_s: cpu_seconds(None),
            machine_s: machine_busy_seconds(),
            broker_threads: broker_pids
                .iter()
                .flat_map(|pid| thread_ticks(Some(*pid)))
                .collect(),
            client_threads: thread_ticks(None),
        }
    }

    /// CPU used from `self` to `later`, over `wall_s` wall-clock seconds.
    pub fn until(&self, later: &CpuSample, wall_s: f64) -> CpuUsage {
        let delta = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0));
        let broker_s = delta(self.broker_s, later.broker_s);
        let client_s = delta(self.client_s, later.client_s);
        let cores = |s: Option<f64>| s.filter(|_| wall_s > 0.0).map(|s| s / wall_s);
        let machine_s = delta(self.machine_s, later.machine_s);
        let other_s =
            machine_s.map(|m| (m - broker_s.unwrap_or(0.0) - client_s.unwrap_or(0.0)).max(0.0));
        CpuUsage {
            other_cores: cores(other_s),
            wall_s,
            broker_s,
            client_s,
            broker_cores: cores(broker_s),
            client_cores: cores(client_s),
            broker_busiest_thread: busiest_thread(
                &self.broker_threads,
                &later.broker_threads,
                wall_s,
            ),
            client_busiest_thread: busiest_thread(
                &self.client_threads,
                &later.client_threads,
                wall_s,
            ),
        }
    }
}

/// The CPU use of one thread over a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThreadUse {
    /// Thread name (`comm`).
    pub name: String,
    /// CPU seconds per wall second.
    pub cores: f64,
}

/// CPU used by broker and client over a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUsage {
    /// Length of the window.
    pub wall_s: f64,
    /// Broker CPU seconds.
    pub broker_s: Option<f64>,
    /// Client (this process) CPU seconds.
    pub client_s: Option<f64>,
    /// Broker CPU seconds per wall second.
    pub broker_cores: Option<f64>,
    /// Client CPU seconds per wall second.
    pub client_cores: Option<f64>,
    /// CPU seconds per wall second used by everything else on the machine (other processes,
    /// the kernel's own threads, hypervisor steal): the machine is shared.
    pub other_cores: Option<f64>,
    /// The broker thread that used the most CPU.
    pub broker_busiest_thread: Option<ThreadUse>,
    /// The client thread that used the most CPU.
    pub client_busiest_thread: Option<ThreadUse>,
}

impl CpuUsage {
    /// `0.93 + 0.85 (+0.05)`: broker + client (+ others) cores, for tables.
    pub fn short(&self) -> String {
        let show = |cores: Option<f64>| cores.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"));
        let mut text = format!("{} + {}", show(self.broker_cores), show(self.client_cores));
        if let Some(other) = self.other_cores {
            text.push_str(&format!(" (+{other:.2})"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Fields are counted after the last parenthesis, whatever the command name holds.
    #[test]
    fn parses_utime_and_stime() {
        let stat = "4242 (sluice (shard 0)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    /// Busy = user + nice + system + irq + softirq + steal.
    #[test]
    fn parses_machine_busy_ticks() {
        let line = "cpu  229955 1 60117 345435 97205 2 3868 16914 0 0";
        assert_eq!(
            parse_machine_busy_ticks(line),
            Some(229955 + 1 + 60117 + 2 + 3868 + 16914)
        );
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3"), None);
        assert_eq!(parse_machine_busy_ticks("intr 1 2"), None);
    }

    /// This process's own CPU time is readable and grows with work.
    #[test]
    fn reads_own_cpu_time() {
        let before = CpuSample::take(&[]);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = CpuSample::take(&[]);
        let usage = before.until(&after, 0.1);
        assert!(usage.client_s.unwrap() > 0.0);
        let busiest = usage.client_busiest_thread.clone().unwrap();
        assert!(busiest.cores > 0.0, "{busiest:?}");
        assert!(usage.broker_s.is_none());
        assert_eq!(usage.short().split(" + ").next(), Some("?"));
    }
}
