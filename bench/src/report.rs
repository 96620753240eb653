//! The results of a run, for people and for tools: a table on standard output, and files
//! `NAME.md` (the standard report: machine, configuration, limits, results, the slices behind
//! each held verdict, the peers as reference context, where the client was the bottleneck),
//! `NAME.csv` (one row per point, [`CsvRow`], through the `csv` crate), `NAME.json`
//! (everything, including the configuration, git revision, CPU and kernel) and `NAME.svg`
//! (p50 and p99 latency against achieved throughput, one colour per curve; points that did not
//! hold their target rate, [`crate::held`], are drawn as crosses off the curves, never as
//! curve points). Every point shows the CPU of broker and client in cores and in µs per
//! message. The peers' figures (PEERS.md, another day) are never divided into ours.
//!
//! Every row shows the consume mode (`manual`, `group`); when a run measured both modes at
//! otherwise identical settings, the table and the markdown add a group ÷ manual throughput
//! line per pair ([`Report::mode_comparisons`]). `rebalance` points get a table of their own
//! (rebalance done and data flowing again, min/median/max, against the target).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::args::{fmt_count, ConsumeMode, DurabilityArg, PointSpec, Scenario, SweepParam};
use crate::held::{
    BACKLOG_GROWTH_SHARE_MAX, LATENCY_GROWTH_FACTOR, LATENCY_GROWTH_MARGIN_MS, RATE_TOLERANCE,
    SLICES, UNSENT_SHARE_MAX,
};
use crate::histogram::{fmt_ms, Percentiles};
use crate::limits::Limits;
use crate::peers::{self, Peer};
use crate::workload::rebalance::{Spread, UNMOVED_GAP_TOLERANCE_MS};
use crate::workload::PointResult;

/// The bound on what consuming through a group may cost against manual assignment:
/// group throughput at least 95 % of manual's, measured in the same run.
pub const GROUP_COST_MAX: f64 = 0.05;

/// Group and manual consumption measured at otherwise identical settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeComparison {
    /// The shared settings (curve without the consume mode, and the rate).
    pub settings: String,
    /// Manual assignment, msgs/s.
    pub manual_msgs_per_s: f64,
    /// Group, msgs/s.
    pub group_msgs_per_s: f64,
    /// Group ÷ manual.
    pub ratio: f64,
    /// `1 - ratio` ≤ [`GROUP_COST_MAX`].
    pub within_target: bool,
    /// Either point had problems (see them before trusting the ratio).
    pub problems: bool,
}

impl ModeComparison {
    /// One line for the table and the markdown.
    pub fn line(&self) -> String {
        format!(
            "group vs manual ({}): {} vs {} msgs/s = {:.3}× (cost {:+.1} %): {} the {:.0} % \
             target{}",
            self.settings,
            fmt_count(self.group_msgs_per_s.round()),
            fmt_count(self.manual_msgs_per_s.round()),
            self.ratio,
            (1.0 - self.ratio) * 100.0,
            if self.within_target {
                "within"
            } else {
                "NOT within"
            },
            GROUP_COST_MAX * 100.0,
            if self.problems {
                " [a point had problems: see below]"
            } else {
                ""
            }
        )
    }
}

/// The machine a run measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// The data directory's filesystem and device.
    pub disk: String,
    /// Git revision of the workspace (`-dirty` with uncommitted changes).
    pub git_revision: String,
    /// When the run started (UTC).
    pub date: String,
}

impl Machine {
    /// Describes this machine, with the disk that holds `data_dir`.
    pub fn describe(data_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel,
            disk: describe_disk(data_dir),
            git_revision: git_revision(),
            date: crate::args::utc_readable(now),
        }
    }
}

/// `/dev/vda on / (ext4), virtio, non-rotational` for the filesystem holding `path`.
pub fn describe_disk(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _)| mount_point.len());
    let Some((device, mount_point, fs_type)) = best else {
        return "unknown".into();
    };
    let mut text = format!("{device} on {mount_point} ({fs_type})");
    let name = device.trim_start_matches("/dev/");
    // vda1 → vda, nvme0n1p2 → nvme0n1, sda3 → sda.
    let base = if name.starts_with("nvme") {
        name.split_once('p')
            .filter(|(_, partition)| partition.chars().all(|c| c.is_ascii_digit()))
            .map_or(name, |(base, _)| base)
    } else {
        name.trim_end_matches(|c: char| c.is_ascii_digit())
    };
    let sys = PathBuf::from("/sys/block").join(base);
    if let Ok(link) = std::fs::read_link(&sys) {
        if link.to_string_lossy().contains("virtio") {
            text.push_str(", virtio block device");
        }
    }
    if let Ok(model) = std::fs::read_to_string(sys.join("device/model")) {
        let model = model.trim();
        if !model.is_empty() {
            let _ = write!(text, ", model {model}");
        }
    }
    if let Ok(rotational) = std::fs::read_to_string(sys.join("queue/rotational")) {
        text.push_str(if rotational.trim() == "0" {
            ", reported non-rotational"
        } else {
            ", reported rotational (a virtual disk may say so)"
        });
    }
    text
}

/// `git rev-parse --short=12 HEAD` of the workspace, `-dirty` when files changed.
fn git_revision() -> String {
    let root = crate::broker::workspace_root();
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(revision) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    if dirty {
        format!("{revision}-dirty")
    } else {
        revision
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Base name of the files.
    pub name: String,
    /// The command line.
    pub command_line: String,
    /// The machine.
    pub machine: Machine,
    /// The broker (started or external).
    pub broker: String,
    /// Client runtime threads.
    pub client_threads: usize,
    /// Swept parameters.
    pub swept: Vec<SweepParam>,
    /// Hardware references of this run.
    pub limits: Option<Limits>,
    /// The measured points.
    pub points: Vec<PointResult>,
    /// Points that failed outright: (description, error).
    pub failed_points: Vec<(String, String)>,
    /// Notes given on the command line.
    pub notes: Vec<String>,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// The peer brokers' figures (PEERS.md), reference context only.
    pub peers: Vec<Peer>,
    /// What the peers' figures are and are not ([`peers::REFERENCE_NOTE`]).
    pub peers_note: String,
}

/// The standard caveat of every report on this machine class.
pub const CAVEAT: &str = "Broker and load generator run on the same machine and share its \
     cores (2 vCPU here): every message costs CPU on both sides of loopback, so client CPU is \
     taken from the broker and the figures are a floor for a broker with a machine of its own. \
     The host is shared and noisy (±30 % run to run): compare ratios taken in one run, not \
     absolute numbers across runs; the `(+others)` CPU figure shows what other processes on \
     the machine took during each point.";

/// Client costs per message that the harness cannot avoid (the client's API).
pub const CLIENT_COSTS: &str = "With `--batch N` > 1 at `--rate max` (in open loop with \
     `--open-loop-batches`) the send loop hands up to N messages per call to \
     `Producer::enqueue_batch` as borrowed slices of one reused buffer (stamped in place; the \
     client copies each value once into its batch; one acknowledgement per batch, which all \
     its messages share; nothing allocated per message). Otherwise (`--batch 1`, \
     `--batch-bytes`, open loop) it sends per message: the client API needs an owned \
     `ProducerRecord` (a `String` topic and a `Vec<u8>` value), so the loop allocates twice \
     and copies the payload once per message, and the client allocates a oneshot channel per \
     acknowledgement and copies the value into its batch builder. Consumers read records in \
     place (no copy).";

impl Report {
    /// Ratio of a throughput to the disk reference.
    fn disk_ratio(&self, mb_per_s: f64) -> Option<f64> {
        let disk = self.limits.as_ref()?.disk.as_ref()?;
        Some(mb_per_s / disk.mb_per_s())
    }

    /// Ratio of a throughput to the loopback reference.
    fn net_ratio(&self, mb_per_s: f64) -> Option<f64> {
        let net = self.limits.as_ref()?.loopback.as_ref()?;
        Some(mb_per_s / net.mb_per_s())
    }

    /// The results table (rows of cells).
    fn result_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let headers = vec![
            "curve",
            "mode",
            "rate",
            "msgs/s",
            "MB/s",
            "held",
            "produce ms p50/p99/p99.9/max",
            "e2e ms p50/p90/p99/p99.9/p99.99/max",
            "CPU broker+client (+others)",
            "CPU µs/msg broker+client",
            "÷disk",
            "÷loopback",
            "limit",
        ];
        let rows = self
            .points
            .iter()
            .map(|point| {
                let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.3}"));
                vec![
                    point.spec.curve.clone(),
                    point.spec.mode_label().to_owned(),
                    point.spec.rate_label(),
                    fmt_count(point.msgs_per_s.round()),
                    format!("{:.1}", point.mb_per_s),
                    held_label(point),
                    latency_cell(point, point.produce_latency.as_ref(), Percentiles::short),
                    latency_cell(point, point.e2e_latency.as_ref(), long_percentiles),
                    point.cpu.short(),
                    point.cpu_per_msg.short(),
                    ratio(self.disk_ratio(point.mb_per_s)),
                    ratio(self.net_ratio(point.mb_per_s)),
                    short_verdict(point),
                ]
            })
            .collect();
        (headers, rows)
    }

    /// Pairs of points measured with manual and group consumption whose other settings are
    /// identical (every field of the spec but its index, curve, consume mode and group
    /// settings), in the order of the group points.
    pub fn mode_comparisons(&self) -> Vec<ModeComparison> {
        let key = |spec: &PointSpec| {
            let mut value = serde_json::to_value(spec).unwrap_or_default();
            if let Some(fields) = value.as_object_mut() {
                for field in ["index", "curve", "consume_mode", "group"] {
                    fields.remove(field);
                }
            }
            value
        };
        let of_mode = |mode: ConsumeMode| {
            self.points
                .iter()
                .filter(move |p| p.spec.consume_mode == Some(mode) && p.rebalance.is_none())
        };
        let mut comparisons = Vec::new();
        for group in of_mode(ConsumeMode::Group) {
            let group_key = key(&group.spec);
            let Some(manual) = of_mode(ConsumeMode::Manual).find(|m| key(&m.spec) == group_key)
            else {
                continue;
            };
            let ratio = if manual.msgs_per_s > 0.0 {
                group.msgs_per_s / manual.msgs_per_s
            } else {
                0.0
            };
            let curve: Vec<&str> = group
                .spec
                .curve
                .split(' ')
                .filter(|part| !part.starts_with("consume="))
                .collect();
            let curve = if curve.is_empty() {
                "all".to_owned()
            } else {
                curve.join(" ")
            };
            comparisons.push(ModeComparison {
                settings: format!("{curve}, rate {}", group.spec.rate_label()),
                manual_msgs_per_s: manual.msgs_per_s,
                group_msgs_per_s: group.msgs_per_s,
                ratio,
                within_target: ratio > 0.0 && 1.0 - ratio <= GROUP_COST_MAX,
                problems: !group.problems.is_empty() || !manual.problems.is_empty(),
            });
        }
        comparisons
    }

    /// The `rebalance` points' table (rows of cells), empty without such points.
    fn rebalance_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let headers = vec![
            "curve",
            "leave",
            "session",
            "repeats",
            "rebalance done min/median/max",
            "data flowing min/median/max",
            "target",
            "met",
            "unmoved partitions",
            "redelivered",
        ];
        let spread = |s: &Option<Spread>| s.as_ref().map_or_else(|| "-".into(), Spread::label);
        let rows = self
            .points
            .iter()
            .filter_map(|point| Some((point, point.rebalance.as_ref()?)))
            .map(|(point, outcome)| {
                let gaps = outcome
                    .repeats
                    .iter()
                    .map(|r| r.unmoved_gap_ms)
                    .fold(0.0, f64::max);
                let steady = outcome
                    .repeats
                    .iter()
                    .map(|r| r.steady_gap_ms)
                    .fold(0.0, f64::max);
                vec![
                    point.spec.curve.clone(),
                    outcome.leave.name().to_owned(),
                    format!(
                        "{} ms (heartbeat {} ms)",
                        outcome.session_timeout_ms, outcome.heartbeat_interval_ms
                    ),
                    format!("{}/{}", outcome.repeats.len(), outcome.repeats_wanted),
                    spread(&outcome.rebalance_done),
                    spread(&outcome.data_flowing),
                    format!("< {} ms", fmt_ms(outcome.target_ms)),
                    outcome.met_label().to_owned(),
                    format!(
                        "{} (longest silence {} ms, steady {} ms)",
                        outcome.gap_label(),
                        fmt_ms(gaps),
                        fmt_ms(steady)
                    ),
                    outcome.redelivered.to_string(),
                ]
            })
            .collect();
        (headers, rows)
    }

    /// The `failover` points' table (rows of cells), empty without such points.
    fn failover_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let headers = vec![
            "curve",
            "rate",
            "rounds",
            "unavailable min/p50/p99/max",
            "target p99",
            "met",
            "rejoin ISR median/max",
            "acknowledged data",
            "failed/skipped sends",
        ];
        let rows = self
            .points
            .iter()
            .filter_map(|point| Some((point, point.failover.as_ref()?)))
            .map(|(point, outcome)| {
                let rejoin = Spread::of(&outcome.rejoin_ms).map_or_else(
                    || "-".to_owned(),
                    |s| format!("{} / {} ms", fmt_ms(s.median_ms), fmt_ms(s.max_ms)),
                );
                vec![
                    point.spec.curve.clone(),
                    point.spec.rate_label(),
                    format!("{}/{}", outcome.rounds.len(), outcome.rounds_wanted),
                    outcome
                        .unavailability
                        .map_or_else(|| "-".to_owned(), |u| u.label()),
                    format!("< {} ms", fmt_ms(outcome.target_ms)),
                    if outcome.met { "met" } else { "NOT MET" }.to_owned(),
                    rejoin,
                    outcome.loss.as_ref().map_or_else(
                        || "read-back INCOMPLETE".to_owned(),
                        crate::workload::failover::LossCheck::label,
                    ),
                    format!("{}/{}", outcome.failed_sends, outcome.skipped_sends),
                ]
            })
            .collect();
        (headers, rows)
    }

    /// Each `failover` round (rows of cells).
    fn failover_round_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let headers = vec![
            "round",
            "killed (epoch)",
            "controller leader before",
            "unavailable",
            "new leader in metadata",
            "killed out of ISR",
            "restart to ready",
            "ready to in ISR",
            "leader after (epoch)",
        ];
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{} ms", fmt_ms(v)));
        let rows = self
            .points
            .iter()
            .filter_map(|point| point.failover.as_ref())
            .flat_map(|outcome| outcome.rounds.iter().enumerate())
            .map(|(i, round)| {
                vec![
                    (i + 1).to_string(),
                    format!("{} ({})", round.killed, round.epoch_before),
                    match round.controller_before {
                        Some(id) if id == round.killed => format!("{id} (killed too)"),
                        Some(id) => id.to_string(),
                        None => "?".to_owned(),
                    },
                    ms(round.unavailable_ms),
                    ms(round.new_leader_seen_ms),
                    ms(round.isr_shrunk_seen_ms),
                    ms(Some(round.restart_ms)),
                    ms(round.rejoin_ms),
                    round
                        .leader_after
                        .map_or_else(|| "-".to_owned(), |(l, e)| format!("{l} ({e})")),
                ]
            })
            .collect();
        (headers, rows)
    }

    /// The slices of each open-loop point that has them (rows of cells).
    fn slice_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let headers = vec![
            "curve",
            "rate",
            "p50 ms per slice",
            "backlog per slice (msgs)",
            "p50 start → end",
            "backlog growth",
            "held",
        ];
        let rows = self
            .points
            .iter()
            .filter_map(|point| Some((point, point.held.as_ref()?)))
            .filter(|(_, held)| !held.slices.is_empty())
            .map(|(point, held)| {
                let p50s: Vec<String> = held.slices.iter().map(|s| fmt_ms(s.p50_ms)).collect();
                let backlogs: Vec<String> = held
                    .slices
                    .iter()
                    .map(|s| fmt_count(s.backlog_msgs as f64))
                    .collect();
                let (levels, growth) = held.trend.map_or_else(
                    || ("-".to_owned(), "-".to_owned()),
                    |t| {
                        (
                            format!("{} → {}", fmt_ms(t.start_p50_ms), fmt_ms(t.end_p50_ms)),
                            format!("{:+.0}", t.backlog_growth_msgs),
                        )
                    },
                );
                vec![
                    point.spec.curve.clone(),
                    point.spec.rate_label(),
                    p50s.join(" "),
                    backlogs.join(" "),
                    levels,
                    growth,
                    held.label(),
                ]
            })
            .collect();
        (headers, rows)
    }

    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let (headers, rows) = self.result_rows();
        let mut out = String::new();
        let _ = writeln!(out, "{}", align(&headers, &rows));
        let (headers, rows) = self.rebalance_rows();
        if !rows.is_empty() {
            let _ = writeln!(out, "Rebalance:\n{}", align(&headers, &rows));
        }
        let (headers, rows) = self.failover_rows();
        if !rows.is_empty() {
            let _ = writeln!(out, "Failover:\n{}", align(&headers, &rows));
            let (headers, rows) = self.failover_round_rows();
            let _ = writeln!(out, "{}", align(&headers, &rows));
        }
        for comparison in self.mode_comparisons() {
            let _ = writeln!(out, "{}", comparison.line());
        }
        if let Some(limits) = &self.limits {
            let _ = writeln!(out, "{}", limits_lines(limits));
        }
        for (description, error) in &self.failed_points {
            let _ = writeln!(out, "FAILED {description}: {error}");
        }
        let _ = writeln!(out, "{}", self.peer_summary());
        let _ = writeln!(out, "{}", self.client_summary());
        out
    }

    /// One CSV row per point ([`CsvRow`], written by the `csv` crate: quoting, and empty
    /// cells for what was not measured).
    pub fn csv(&self) -> Result<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        for point in &self.points {
            writer
                .serialize(CsvRow::of(self, point))
                .context("cannot write a CSV row")?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|error| anyhow::anyhow!("cannot finish the CSV: {error}"))?;
        String::from_utf8(bytes).context("the CSV is not UTF-8")
    }

    /// The peers as reference context: no ratio (see [`peers::REFERENCE_NOTE`]).
    fn peer_summary(&self) -> String {
        let mut out = format!("Peer brokers: {}.", peers::REFERENCE_NOTE);
        for class in ["none", "periodic", "always"] {
            if let Some(peer) = peers::best_for(class) {
                let _ = write!(
                    out,
                    "\n  fsync {class}: best peer {} {} msgs/s ({}, measured {})",
                    peer.broker,
                    peer.msgs_range,
                    peer.setup,
                    peers::MEASURED_ON
                );
            }
        }
        out.push('\n');
        out
    }

    /// Where the client was the bottleneck.
    fn client_summary(&self) -> String {
        let bound: Vec<&PointResult> = self.points.iter().filter(|p| p.client_bound).collect();
        let mut out = String::new();
        let hungrier: Vec<f64> = self
            .points
            .iter()
            .filter_map(|p| Some((p.cpu.client_cores?, p.cpu.broker_cores?)))
            .filter(|(client, broker)| client > broker && *broker > 0.0)
            .map(|(client, broker)| client / broker)
            .collect();
        if !hungrier.is_empty() {
            let _ = writeln!(
                out,
                "The client used more CPU than the broker at {} of {} points (up to {:.1}× the \
                 broker's): on these shared cores every client CPU second is taken from the \
                 broker.",
                hungrier.len(),
                self.points.len(),
                hungrier.iter().copied().fold(0.0, f64::max)
            );
        }
        if bound.is_empty() {
            out.push_str(
                "The client was not found to be the bottleneck at any point (see the limit \
                 column).",
            );
        } else {
            let _ = writeln!(
                out,
                "The client, not the broker, was the bottleneck at {} of {} points:",
                bound.len(),
                self.points.len()
            );
            for point in bound {
                let _ = writeln!(
                    out,
                    "- {} rate {}: {}",
                    point.spec.curve,
                    point.spec.rate_label(),
                    point.verdict
                );
            }
        }
        out
    }

    /// The markdown report; `svg_file` is the plot's file name next to it.
    pub fn markdown(&self, svg_file: Option<&str>) -> String {
        let mut md = String::new();
        let first = self.points.first().map(|p| &p.spec);
        let _ = writeln!(md, "# Sluice benchmark: {}\n", self.name);
        let _ = writeln!(
            md,
            "{} · git `{}` · {:.0} s · `{}`\n",
            self.machine.date, self.machine.git_revision, self.duration_s, self.command_line
        );
        md.push_str("## Machine\n\n");
        let m = &self.machine;
        let _ = writeln!(md, "- CPU: {} × {} cores available", m.cpu_model, m.cores);
        let _ = writeln!(md, "- memory: {:.1} GiB", m.memory_gib);
        let _ = writeln!(md, "- kernel: Linux {}", m.kernel);
        let _ = writeln!(md, "- data disk: {}", m.disk);
        let _ = writeln!(md, "- broker: {}", self.broker);
        let _ = writeln!(
            md,
            "- client: this process, tokio runtime with {} worker threads + one send thread \
             per producer",
            self.client_threads
        );
        let _ = writeln!(md, "\n**Caveat.** {CAVEAT}");
        for note in &self.notes {
            let _ = writeln!(md, "\n{note}");
        }
        if first.is_some() {
            md.push_str("\n## Workload\n\n");
            let specs: Vec<&PointSpec> = self.points.iter().map(|p| &p.spec).collect();
            md.push_str(&workload_lines(&specs));
        }
        md.push_str("\n## Summary\n\n");
        md.push_str(&self.summary());
        md.push_str("\n## Hardware limits measured in this run\n\n");
        match &self.limits {
            Some(limits) => {
                md.push_str("| reference | result | how |\n|---|---|---|\n");
                for (label, bandwidth) in [
                    ("disk: sequential write, O_DIRECT, 1 MiB qd8", &limits.disk),
                    (
                        "disk: 256 KiB writes + fdatasync each, qd1",
                        &limits.disk_fsync,
                    ),
                    ("loopback TCP, 1 stream", &limits.loopback),
                ] {
                    if let Some(b) = bandwidth {
                        let _ = writeln!(
                            md,
                            "| {label} | {:.0} MB/s ({:.0} MiB/s) | {} (`{}`) |",
                            b.mb_per_s(),
                            b.bytes_per_s / (1 << 20) as f64,
                            b.tool,
                            b.method
                        );
                    }
                }
                for problem in &limits.problems {
                    let _ = writeln!(md, "\nNote: {problem}");
                }
            }
            None => md.push_str("Not measured (run with `--with-limits`).\n"),
        }
        md.push_str("\nFor context, PEERS.md measured on this machine class:\n\n");
        for (what, value) in peers::PEERS_LIMITS {
            let _ = writeln!(md, "- {what}: {value}");
        }
        md.push_str("\n## Results\n\n");
        if let Some(svg) = svg_file {
            let _ = writeln!(
                md,
                "![p50 and p99 latency against achieved throughput]({svg})\n\nLatency is \
                 {} latency counted from each message's intended send time (coordinated \
                 omission corrected). Crosses mark points that could not hold their target \
                 rate: they are not part of the curves.\n",
                if first.is_some_and(|s| s.scenario == Scenario::E2e) {
                    "end-to-end"
                } else {
                    "produce-acknowledgement"
                }
            );
        }
        let (headers, rows) = self.result_rows();
        md.push_str(&markdown_table(&headers, &rows));
        let _ = writeln!(
            md,
            "\n`mode`: how the consumers got their partitions, `manual` (assigned by hand) or \
             `group` (one consumer group per point: cooperative-sticky, at-least-once \
             auto-commit every 5 s; measured from the moment the group was balanced, so the \
             join is not counted). \
             `rate` is the target (`max`: closed loop); `msgs/s` and `MB/s` (10^6 bytes of \
             message values) are what was achieved: acknowledged messages for `produce`, \
             received ones otherwise. `held`: whether an open-loop point kept its target rate \
             in a steady state: the producers kept their schedule (at most {:.0} % unsent), the \
             achieved rate is within {:.0} % of the target either way, and the backlog did not \
             grow over the measured window (cut into {} slices by intended send time: the \
             p50 latency at the end not above {} times and {} ms more than at the start, and the \
             backlog of scheduled but not yet completed messages not climbing by more than \
             {:.0} % of the window's messages); otherwise `NO:` and the reasons (`behind \
             schedule`, `rate missed`, `backlog growing`, `errors`), detailed in the slices \
             table below. CPU is in cores (CPU seconds per second) of broker + client over \
             the measured window, with what everything else on the (shared) machine used in \
             parentheses; `CPU µs/msg` divides each side's CPU by the messages per second (in \
             e2e the mean of the produced and the received rates, so a consumer falling behind \
             does not inflate it): the CPU one message cost the broker and the client (this process: the client \
             library and the harness; in e2e a message is both produced and consumed). \
             `÷disk` and `÷loopback` divide MB/s by the references above.\n",
            UNSENT_SHARE_MAX * 100.0,
            RATE_TOLERANCE * 100.0,
            SLICES,
            LATENCY_GROWTH_FACTOR,
            LATENCY_GROWTH_MARGIN_MS,
            BACKLOG_GROWTH_SHARE_MAX * 100.0,
        );
        let (headers, rows) = self.slice_rows();
        if !rows.is_empty() {
            md.push_str("\n### Held: the measured window in slices\n\n");
            md.push_str(&markdown_table(&headers, &rows));
            md.push_str(
                "\nPer open-loop point, the p50 latency of the messages meant to be sent in \
                 each slice of the window (ms) and the backlog at each slice's end (messages \
                 the schedule wanted sent since the window opened, minus those completed: \
                 acknowledged for `produce`, received otherwise), then the start and end \
                 latency levels (lower p50 of the first two and of the last two slices) and \
                 the fitted growth of the backlog over the window.\n",
            );
        }
        let comparisons = self.mode_comparisons();
        if !comparisons.is_empty() {
            md.push_str("\n### Consumer group vs manual assignment\n\n");
            for comparison in &comparisons {
                let _ = writeln!(md, "- {}", comparison.line());
            }
            let _ = writeln!(
                md,
                "\nSame run, same settings, measured back to back; the target is a cost below \
                 {:.0} % (group ≥ {:.2}× manual).",
                GROUP_COST_MAX * 100.0,
                1.0 - GROUP_COST_MAX
            );
        }
        let (headers, rows) = self.rebalance_rows();
        if !rows.is_empty() {
            md.push_str("\n### Rebalance after a consumer leaves\n\n");
            md.push_str(&markdown_table(&headers, &rows));
            let _ = writeln!(
                md,
                "\nEach repeat: the group balanced and every partition flowing, then steady \
                 consumption for the warm-up, then the oldest member stops polling and leaves: \
                 `graceful` = `close()` (commit and LeaveGroup), `crash` = dropped without \
                 close (the coordinator notices only after the session timeout); a fresh \
                 consumer rejoins before the next repeat. `rebalance done`: from the leave \
                 until the survivors' Assigned events cover every partition again. `data \
                 flowing`: until the first record of each moved partition arrived again. \
                 `target`: 1 s for a graceful leave, 1 s + the session timeout for a crash; \
                 `met` when every repeat's rebalance was done within it. `unmoved \
                 partitions`: `GAP` when a partition that did not move went without records \
                 during the rebalance for {} ms longer than its longest silence in the steady \
                 period, or a survivor had partitions revoked (a cooperative rebalance keeps \
                 them flowing). `redelivered`: records received twice (at-least-once: a moved \
                 partition resumes at its last committed offset).",
                fmt_ms(UNMOVED_GAP_TOLERANCE_MS)
            );
        }
        let (headers, rows) = self.failover_rows();
        if !rows.is_empty() {
            md.push_str("\n### Failover after killing the partition leader\n\n");
            md.push_str(&markdown_table(&headers, &rows));
            let (headers, rows) = self.failover_round_rows();
            md.push('\n');
            md.push_str(&markdown_table(&headers, &rows));
            let settings = self
                .points
                .iter()
                .find_map(|p| p.failover.as_ref())
                .map_or_else(String::new, |o| o.producer_settings.clone());
            let _ = writeln!(
                md,
                "\nEach round: the partition's leader (every replica in sync) is killed with \
                 kill -9 under a steady producer ({settings}); `unavailable` runs from the kill \
                 to the first acknowledgement at an offset beyond every offset acknowledged up \
                 to {} ms after the kill (the dead leader's last answers), i.e. the first write \
                 acknowledged by the new leader; it includes the broker session timeout, the \
                 election, the metadata refresh and the producer's retry backoff. Then the \
                 killed broker is restarted and the round ends when it is back in the ISR. \
                 Percentiles are nearest-rank (with 10 rounds the p99 is the largest). At the \
                 end the partition is read back from the start: every acknowledged message must \
                 be present once, at the offset it was acknowledged with, in send order.",
                crate::workload::failover::KILL_GRACE.as_millis()
            );
        }
        md.push_str("\n### Latency with and without coordinated-omission correction\n\n");
        md.push_str(&self.correction_table());
        md.push_str("\n## Peer brokers (reference, not side by side)\n\n");
        md.push_str(&self.peer_markdown());
        md.push_str("\n## Where the client was the bottleneck\n\n");
        md.push_str(&self.client_summary());
        md.push_str("\n\nHow the limit column is decided: an open-loop point that held its \
             rate was limited by nothing; otherwise a thread of one side at ≥ 0.85 core while \
             the other side has none is that side's limit; broker, client and other processes \
             together at ≥ 80 % of the cores is a shared-CPU limit, called client-bound when \
             the client used at least as much CPU as the broker; e2e consumers receiving less \
             than 90 % of the produced rate are the consume path's limit; producers waiting for buffer room with CPU to \
             spare are round-trip-bound (the in-flight window over the produce round trip); \
             otherwise nothing was saturated.\n\n");
        md.push_str(CLIENT_COSTS);
        md.push('\n');
        let problems: Vec<String> = self
            .points
            .iter()
            .filter(|p| !p.problems.is_empty())
            .map(|p| {
                format!(
                    "- {} rate {}: {}",
                    p.spec.curve,
                    p.spec.rate_label(),
                    p.problems.join("; ")
                )
            })
            .chain(
                self.failed_points
                    .iter()
                    .map(|(description, error)| format!("- FAILED {description}: {error}")),
            )
            .collect();
        if !problems.is_empty() {
            md.push_str("\n## Points with problems\n\n");
            md.push_str(&problems.join("\n"));
            md.push('\n');
        }
        md
    }

    /// Per curve: the highest open-loop rate held (with its latency) and the closed-loop
    /// maximum; then the best throughput as a share of the hardware references.
    fn summary(&self) -> String {
        let mut out = String::new();
        let mut curves: Vec<&str> = Vec::new();
        for point in &self.points {
            if !curves.contains(&point.spec.curve.as_str()) {
                curves.push(&point.spec.curve);
            }
        }
        for curve in curves {
            let of_curve = || self.points.iter().filter(move |p| p.spec.curve == curve);
            let held = of_curve()
                .filter(|p| p.sustained() == Some(true))
                .max_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
            let first_missed = of_curve()
                .filter(|p| p.sustained() == Some(false))
                .filter_map(|p| p.spec.target_rate)
                .min_by(f64::total_cmp);
            let closed = of_curve().find(|p| p.spec.target_rate.is_none());
            let mut line = format!("- **{curve}**: ");
            if let Some(outcome) = of_curve().find_map(|p| p.rebalance.as_ref()) {
                let _ = writeln!(out, "{line}{}", outcome.verdict());
                continue;
            }
            match held {
                Some(p) => {
                    let latency = p.headline_latency().map_or_else(String::new, |l| {
                        format!(
                            " at p50 {} / p99 {} / p99.9 {} ms",
                            fmt_ms(l.p50_ms),
                            fmt_ms(l.p99_ms),
                            fmt_ms(l.p999_ms)
                        )
                    });
                    let _ = write!(line, "held {} msgs/s{latency}", p.spec.rate_label());
                }
                None => line.push_str("held no target rate"),
            }
            if let Some(rate) = first_missed {
                let _ = write!(line, "; missed {}/s", fmt_count(rate));
            }
            if let Some(p) = closed {
                let _ = write!(
                    line,
                    "; closed loop {} msgs/s ({:.0} MB/s, limit: {})",
                    fmt_count(p.msgs_per_s.round()),
                    p.mb_per_s,
                    short_verdict(p)
                );
            }
            let _ = writeln!(out, "{line}");
        }
        for comparison in self.mode_comparisons() {
            let _ = writeln!(out, "- {}", comparison.line());
        }
        if let Some(best) = self
            .points
            .iter()
            .filter(|p| p.plottable())
            .max_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s))
        {
            let _ = write!(
                out,
                "\nBest throughput: {} msgs/s = {:.0} MB/s ({} rate {})",
                fmt_count(best.msgs_per_s.round()),
                best.mb_per_s,
                best.spec.curve,
                best.spec.rate_label()
            );
            let mut ratios = Vec::new();
            if let Some(r) = self.disk_ratio(best.mb_per_s) {
                ratios.push(format!(
                    "{:.0} % of the disk's O_DIRECT write bandwidth",
                    r * 100.0
                ));
            }
            if let Some(r) = self.net_ratio(best.mb_per_s) {
                ratios.push(format!("{:.0} % of loopback TCP", r * 100.0));
            }
            if !ratios.is_empty() {
                let _ = write!(out, ": {}", ratios.join(", "));
            }
            out.push_str(".\n");
        }
        out
    }

    /// Corrected versus uncorrected percentiles of each point.
    fn correction_table(&self) -> String {
        let headers = [
            "curve",
            "rate",
            "produce corrected p50/p99/p99.9/max",
            "produce uncorrected",
            "e2e corrected",
            "e2e uncorrected",
        ];
        let rows: Vec<Vec<String>> = self
            .points
            .iter()
            .map(|p| {
                let pair = |l: &Option<crate::workload::LatencySummary>| {
                    l.as_ref().map_or_else(
                        || ("-".to_owned(), "-".to_owned()),
                        |l| (l.corrected.short(), l.uncorrected.short()),
                    )
                };
                let (pc, pu) = pair(&p.produce_latency);
                let (ec, eu) = pair(&p.e2e_latency);
                vec![p.spec.curve.clone(), p.spec.rate_label(), pc, pu, ec, eu]
            })
            .collect();
        markdown_table(&headers, &rows)
    }

    /// Our best held points, then the peers' table as reference context (no ratio: see
    /// [`peers::REFERENCE_NOTE`]).
    fn peer_markdown(&self) -> String {
        let mut md = String::from(
            "This run's best held point per durability class (for the peers' workload: 1 KiB, \
             1 partition, 1 producer + 1 consumer, end to end):\n\n",
        );
        let mut any = false;
        for class in ["none", "periodic", "always"] {
            let best = self
                .points
                .iter()
                .filter(|p| fsync_class(&p.spec) == class && p.plottable())
                .max_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
            let Some(ours) = best else { continue };
            any = true;
            let latency = ours.headline_latency().map_or_else(
                || "-".into(),
                |p| format!("p50 {} / p99 {} ms", fmt_ms(p.p50_ms), fmt_ms(p.p99_ms)),
            );
            let _ = writeln!(
                md,
                "- fsync {class}: {} msgs/s ({:.0} MB/s, {latency}; {}, batch {}, acks {}, rate \
                 {}; CPU {} µs/msg broker + client){}",
                fmt_count(ours.msgs_per_s.round()),
                ours.mb_per_s,
                durability_name(&ours.spec),
                ours.spec.batch_label(),
                ours.spec.acks.name(),
                ours.spec.rate_label(),
                ours.cpu_per_msg.short(),
                if same_workload(&ours.spec) {
                    ""
                } else {
                    " [not the peers' workload]"
                }
            );
        }
        if !any {
            md.push_str("- no held point\n");
        }
        let _ = writeln!(
            md,
            "\nThe peer brokers ({}): {}.\n",
            peers::SOURCE,
            peers::REFERENCE_NOTE
        );
        md.push_str(
            "| broker | durability, batching | msgs/s | MB/s | produce ms p50/p99/p99.9 | \
             e2e ms p50/p99/p99.9 |\n|---|---|---|---|---|---|\n",
        );
        for class in ["none", "periodic", "always"] {
            for peer in peers::PEERS.iter().filter(|p| p.fsync == class) {
                md.push_str(&peer_row(peer));
            }
        }
        md.push_str(
            "\nThe peers' end-to-end latency runs from the producer's timestamp (the actual \
             send); ours runs from the intended send time (coordinated-omission corrected), \
             which can only make ours look higher: the uncorrected column of the latency \
             table above is the like-for-like figure.\n",
        );
        md
    }
}

/// One row of `NAME.csv`: the field names are the column names. Latencies and times in ms,
/// CPU in seconds, cores and µs per message; empty cells for what was not measured.
#[derive(Debug, Serialize)]
pub struct CsvRow<'a> {
    index: usize,
    curve: &'a str,
    scenario: &'a str,
    message_size: u64,
    batch_messages: Option<u32>,
    batch_bytes: u64,
    linger_ms: f64,
    acks: &'a str,
    durability: String,
    replication_factor: Option<u16>,
    min_insync_replicas: Option<u16>,
    partitions: u32,
    producers: u32,
    consumers: u32,
    consume_mode: Option<&'a str>,
    session_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    /// `max` for a closed loop.
    target_rate: String,
    held: Option<bool>,
    /// Why not: `backlog growing; rate missed` ([`crate::held::NotHeld::label`]).
    not_held_reasons: String,
    slice_p50_start_ms: Option<f64>,
    slice_p50_end_ms: Option<f64>,
    backlog_growth_msgs: Option<f64>,
    msgs_per_s: f64,
    mb_per_s: f64,
    produced_msgs_per_s: Option<f64>,
    consumed_msgs_per_s: Option<f64>,
    window_s: f64,
    produce_p50_ms: Option<f64>,
    produce_p90_ms: Option<f64>,
    produce_p99_ms: Option<f64>,
    produce_p999_ms: Option<f64>,
    produce_p9999_ms: Option<f64>,
    produce_max_ms: Option<f64>,
    produce_uncorrected_p50_ms: Option<f64>,
    produce_uncorrected_p99_ms: Option<f64>,
    produce_uncorrected_max_ms: Option<f64>,
    e2e_p50_ms: Option<f64>,
    e2e_p90_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    e2e_p999_ms: Option<f64>,
    e2e_p9999_ms: Option<f64>,
    e2e_max_ms: Option<f64>,
    e2e_uncorrected_p50_ms: Option<f64>,
    e2e_uncorrected_p99_ms: Option<f64>,
    e2e_uncorrected_max_ms: Option<f64>,
    broker_cpu_s: Option<f64>,
    client_cpu_s: Option<f64>,
    broker_cores: Option<f64>,
    client_cores: Option<f64>,
    broker_cpu_us_per_msg: Option<f64>,
    client_cpu_us_per_msg: Option<f64>,
    broker_busiest_thread_cores: Option<f64>,
    client_busiest_thread_cores: Option<f64>,
    disk_ratio: Option<f64>,
    loopback_ratio: Option<f64>,
    leave: Option<&'a str>,
    repeats: Option<usize>,
    rebalance_done_min_ms: Option<f64>,
    rebalance_done_median_ms: Option<f64>,
    rebalance_done_max_ms: Option<f64>,
    data_flowing_min_ms: Option<f64>,
    data_flowing_median_ms: Option<f64>,
    data_flowing_max_ms: Option<f64>,
    rebalance_target_ms: Option<f64>,
    rebalance_met: Option<bool>,
    unmoved_interrupted: Option<bool>,
    redelivered: Option<u64>,
    client_bound: bool,
    verdict: &'a str,
    problems: String,
}

impl<'a> CsvRow<'a> {
    /// The row of `point` in `report`.
    fn of(report: &Report, point: &'a PointResult) -> CsvRow<'a> {
        let spec = &point.spec;
        let latency = |l: &Option<crate::workload::LatencySummary>| {
            l.map(|l| (l.corrected, l.uncorrected)).unzip()
        };
        let (pc, pu) = latency(&point.produce_latency);
        let (ec, eu) = latency(&point.e2e_latency);
        let pick = |p: Option<Percentiles>, f: fn(&Percentiles) -> f64| p.as_ref().map(f);
        let rebalance = point.rebalance.as_ref();
        let spread = |s: Option<Spread>, f: fn(&Spread) -> f64| s.as_ref().map(f);
        let done = rebalance.and_then(|r| r.rebalance_done);
        let flowing = rebalance.and_then(|r| r.data_flowing);
        let held = point.held.as_ref();
        let trend = held.and_then(|h| h.trend);
        CsvRow {
            index: spec.index,
            curve: &spec.curve,
            scenario: spec.scenario.name(),
            message_size: spec.message_size,
            batch_messages: spec.batch_messages,
            batch_bytes: spec.batch_bytes,
            linger_ms: spec.linger_ms,
            acks: spec.acks.name(),
            durability: durability_name(spec),
            replication_factor: spec.replication_factor,
            min_insync_replicas: spec.min_insync_replicas,
            partitions: spec.partitions,
            producers: spec.producers,
            consumers: spec.consumers,
            consume_mode: spec.consume_mode.map(|m| m.name()),
            session_timeout_ms: spec.group.map(|g| g.session_timeout_ms),
            heartbeat_interval_ms: spec.group.map(|g| g.heartbeat_interval_ms),
            target_rate: spec
                .target_rate
                .map_or_else(|| "max".into(), |r| format!("{r:.0}")),
            held: held.map(|h| h.held),
            not_held_reasons: held.map_or_else(String::new, |h| {
                let labels: Vec<&str> = h.reasons.iter().map(|r| r.label()).collect();
                labels.join("; ")
            }),
            slice_p50_start_ms: trend.map(|t| t.start_p50_ms),
            slice_p50_end_ms: trend.map(|t| t.end_p50_ms),
            backlog_growth_msgs: trend.map(|t| t.backlog_growth_msgs),
            msgs_per_s: point.msgs_per_s,
            mb_per_s: point.mb_per_s,
            produced_msgs_per_s: point.produced.as_ref().map(|f| f.msgs_per_s),
            consumed_msgs_per_s: point.consumed.as_ref().map(|f| f.msgs_per_s),
            window_s: point.window_s,
            produce_p50_ms: pick(pc, |p| p.p50_ms),
            produce_p90_ms: pick(pc, |p| p.p90_ms),
            produce_p99_ms: pick(pc, |p| p.p99_ms),
            produce_p999_ms: pick(pc, |p| p.p999_ms),
            produce_p9999_ms: pick(pc, |p| p.p9999_ms),
            produce_max_ms: pick(pc, |p| p.max_ms),
            produce_uncorrected_p50_ms: pick(pu, |p| p.p50_ms),
            produce_uncorrected_p99_ms: pick(pu, |p| p.p99_ms),
            produce_uncorrected_max_ms: pick(pu, |p| p.max_ms),
            e2e_p50_ms: pick(ec, |p| p.p50_ms),
            e2e_p90_ms: pick(ec, |p| p.p90_ms),
            e2e_p99_ms: pick(ec, |p| p.p99_ms),
            e2e_p999_ms: pick(ec, |p| p.p999_ms),
            e2e_p9999_ms: pick(ec, |p| p.p9999_ms),
            e2e_max_ms: pick(ec, |p| p.max_ms),
            e2e_uncorrected_p50_ms: pick(eu, |p| p.p50_ms),
            e2e_uncorrected_p99_ms: pick(eu, |p| p.p99_ms),
            e2e_uncorrected_max_ms: pick(eu, |p| p.max_ms),
            broker_cpu_s: point.cpu.broker_s,
            client_cpu_s: point.cpu.client_s,
            broker_cores: point.cpu.broker_cores,
            client_cores: point.cpu.client_cores,
            broker_cpu_us_per_msg: point.cpu_per_msg.broker_us,
            client_cpu_us_per_msg: point.cpu_per_msg.client_us,
            broker_busiest_thread_cores: point.cpu.broker_busiest_thread.as_ref().map(|t| t.cores),
            client_busiest_thread_cores: point.cpu.client_busiest_thread.as_ref().map(|t| t.cores),
            disk_ratio: report.disk_ratio(point.mb_per_s),
            loopback_ratio: report.net_ratio(point.mb_per_s),
            leave: rebalance.map(|r| r.leave.name()),
            repeats: rebalance.map(|r| r.repeats.len()),
            rebalance_done_min_ms: spread(done, |s| s.min_ms),
            rebalance_done_median_ms: spread(done, |s| s.median_ms),
            rebalance_done_max_ms: spread(done, |s| s.max_ms),
            data_flowing_min_ms: spread(flowing, |s| s.min_ms),
            data_flowing_median_ms: spread(flowing, |s| s.median_ms),
            data_flowing_max_ms: spread(flowing, |s| s.max_ms),
            rebalance_target_ms: rebalance.map(|r| r.target_ms),
            rebalance_met: rebalance.map(|r| r.met),
            unmoved_interrupted: rebalance.map(|r| r.unmoved_interrupted),
            redelivered: rebalance.map(|r| r.redelivered),
            client_bound: point.client_bound,
            verdict: &point.verdict,
            problems: point.problems.join("; "),
        }
    }
}

fn peer_row(peer: &Peer) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        peer.broker, peer.setup, peer.msgs_range, peer.mb_per_s, peer.produce_ms, peer.e2e_ms
    )
}

/// `yes`, `NO: backlog growing` (the reasons, [`crate::held::Held::label`]), or `-` for a
/// closed loop.
fn held_label(point: &PointResult) -> String {
    match &point.held {
        Some(held) => held.label(),
        None if point.problems.is_empty() => "-".into(),
        None => "problems".into(),
    }
}

/// The first words of the verdict (`client-bound`, `kept up`, ...).
fn short_verdict(point: &PointResult) -> String {
    let head = point.verdict.split([':', ';']).next().unwrap_or("").trim();
    head.to_owned()
}

/// A latency cell: the percentiles, `-` when not measured, or a note when an open-loop
/// producer never caught up with its schedule (no message intended in the window was sent).
fn latency_cell(
    point: &PointResult,
    latency: Option<&crate::workload::LatencySummary>,
    show: fn(&Percentiles) -> String,
) -> String {
    match latency {
        None => "-".into(),
        Some(l) if l.corrected.count == 0 && point.sustained() == Some(false) => {
            "none: never caught up with the schedule".into()
        }
        Some(l) => show(&l.corrected),
    }
}

fn long_percentiles(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".into();
    }
    format!(
        "{} / {} / {} / {} / {} / {}",
        fmt_ms(p.p50_ms),
        fmt_ms(p.p90_ms),
        fmt_ms(p.p99_ms),
        fmt_ms(p.p999_ms),
        fmt_ms(p.p9999_ms),
        fmt_ms(p.max_ms)
    )
}

/// `always`, `interval(10ms)`, `never` or `broker default`.
fn durability_name(spec: &PointSpec) -> String {
    match spec.durability {
        Some(DurabilityArg::Always) => "fsync always".into(),
        Some(DurabilityArg::Never) => "no fsync".into(),
        Some(DurabilityArg::Interval) => format!("fsync every {} ms", spec.durability_interval_ms),
        None => "broker default (fsync every 10 ms)".into(),
    }
}

/// The peers' durability class of a point.
fn fsync_class(spec: &PointSpec) -> &'static str {
    match spec.durability {
        Some(DurabilityArg::Always) => "always",
        Some(DurabilityArg::Never) => "none",
        Some(DurabilityArg::Interval) | None => "periodic",
    }
}

/// Whether a point runs the peers' workload.
fn same_workload(spec: &PointSpec) -> bool {
    spec.message_size == 1024
        && spec.partitions == 1
        && spec.producers == 1
        && spec.consumers == 1
        && spec.scenario == Scenario::E2e
}

/// Distinct values of a field over the points, in order: `1024` or `1, 16, 64 (swept)`.
fn distinct(specs: &[&PointSpec], field: impl Fn(&PointSpec) -> String) -> String {
    let mut values: Vec<String> = Vec::new();
    for spec in specs {
        let value = field(spec);
        if !values.contains(&value) {
            values.push(value);
        }
    }
    if values.len() > 1 {
        format!("{} (swept)", values.join(", "))
    } else {
        values.join("")
    }
}

fn workload_lines(specs: &[&PointSpec]) -> String {
    let Some(spec) = specs.first() else {
        return String::new();
    };
    let amount = match spec.amount {
        crate::args::Amount::Duration { seconds } => format!("{seconds} s measured per point"),
        crate::args::Amount::Messages { count } => format!("{count} messages per point"),
    };
    let mut out = String::new();
    let _ = writeln!(out, "- scenario: {}", spec.scenario.name());
    let _ = writeln!(
        out,
        "- message size: {} B",
        distinct(specs, |s| s.message_size.to_string())
    );
    let _ = writeln!(
        out,
        "- batch: {} messages (the producer's batch_size_bytes set to fit exactly that many), \
         linger {} ms, {} requests in flight per partition, producer buffer {} KiB",
        distinct(specs, PointSpec::batch_label),
        distinct(specs, |s| s.linger_ms.to_string()),
        distinct(specs, |s| s.max_in_flight.to_string()),
        distinct(specs, |s| (s.buffer_bytes / 1024).to_string())
    );
    let _ = writeln!(
        out,
        "- consumers fetch up to {} KiB per partition per request (long poll, 1 byte minimum)",
        distinct(specs, |s| (s.fetch_partition_bytes / 1024).to_string())
    );
    let _ = writeln!(
        out,
        "- acks: {}; durability: {}; replication factor: {}; min.insync.replicas: {}",
        distinct(specs, |s| s.acks.name().to_owned()),
        distinct(specs, durability_name),
        distinct(specs, |s| s
            .replication_factor
            .map_or_else(|| "broker default".to_owned(), |f| f.to_string())),
        distinct(specs, |s| s
            .min_insync_replicas
            .map_or_else(|| "broker default".to_owned(), |m| m.to_string()))
    );
    let _ = writeln!(
        out,
        "- partitions: {}; producers: {}; consumers: {}",
        distinct(specs, |s| s.partitions.to_string()),
        distinct(specs, |s| s.producers.to_string()),
        distinct(specs, |s| s.consumers.to_string())
    );
    let _ = writeln!(
        out,
        "- consume mode: {}{}",
        distinct(specs, |s| s.mode_label().to_owned()),
        match specs.iter().find_map(|s| s.group) {
            Some(group) => format!(
                "; groups: session timeout {} ms, heartbeat {} ms, cooperative-sticky, \
                 at-least-once auto-commit every 5 s, earliest offset when nothing is committed",
                group.session_timeout_ms, group.heartbeat_interval_ms
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "- target rates: {}",
        distinct(specs, PointSpec::rate_label)
    );
    match spec.rebalance {
        Some(rebalance) => {
            let _ = writeln!(
                out,
                "- {} leaves per point, each after {} s of steady consumption; drain timeout {} s",
                rebalance.repeats, spec.warmup_s, spec.drain_timeout_s
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- {amount}, after {} s of warm-up; drain timeout {} s",
                spec.warmup_s, spec.drain_timeout_s
            );
        }
    }
    let _ = writeln!(
        out,
        "- load: open loop at each target rate on a fixed schedule (latency from the intended \
         send time), or closed loop for `max`"
    );
    out
}

/// Aligned text columns.
fn align(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

fn limits_lines(limits: &Limits) -> String {
    let mut out = String::from("Hardware limits measured in this run:");
    for (label, bandwidth) in [
        ("disk O_DIRECT seq write 1 MiB qd8", &limits.disk),
        ("disk 256 KiB + fdatasync qd1", &limits.disk_fsync),
        ("loopback TCP 1 stream", &limits.loopback),
    ] {
        if let Some(b) = bandwidth {
            let _ = write!(out, "\n  {label}: {:.0} MB/s ({})", b.mb_per_s(), b.tool);
        }
    }
    for problem in &limits.problems {
        let _ = write!(out, "\n  note: {problem}");
    }
    out
}

/// Colours of the curves (matplotlib's "tab10": distinct, readable on white).
const CURVE_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes NAME.md, .csv, .json and .svg into `dir`; returns the paths written.
pub fn write_files(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let base = dir.join(&report.name);
    let mut written = Vec::new();
    let svg_path = base.with_extension("svg");
    let svg_name = match plot(report, &svg_path) {
        Ok(true) => {
            written.push(svg_path.clone());
            svg_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        }
        Ok(false) => None,
        Err(error) => {
            eprintln!("warning: no plot: {error:#}");
            None
        }
    };
    let csv_path = base.with_extension("csv");
    std::fs::write(&csv_path, report.csv()?)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    written.push(csv_path);
    let json_path = base.with_extension("json");
    let json = serde_json::to_string_pretty(report).context("cannot encode the JSON report")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    written.push(json_path);
    let md_path = base.with_extension("md");
    std::fs::write(&md_path, report.markdown(svg_name.as_deref()))
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    written.push(md_path);
    Ok(written)
}

/// Draws p50 and p99 latency against achieved throughput, one colour per curve, on log-log
/// axes. Points that could not hold their target rate are drawn as crosses and not joined to
/// their curve. Returns false when there is nothing to plot.
pub fn plot(report: &Report, path: &Path) -> Result<bool> {
    let points: Vec<(&PointResult, &Percentiles)> = report
        .points
        .iter()
        .filter(|p| p.msgs_per_s > 0.0 && p.rebalance.is_none())
        .filter_map(|p| p.headline_latency().filter(|l| l.count > 0).map(|l| (p, l)))
        .collect();
    if points.is_empty() {
        return Ok(false);
    }
    let x_min = points
        .iter()
        .map(|(p, _)| p.msgs_per_s)
        .fold(f64::MAX, f64::min);
    let x_max = points.iter().map(|(p, _)| p.msgs_per_s).fold(0.0, f64::max);
    let y_min = points
        .iter()
        .map(|(_, l)| l.p50_ms.max(0.001))
        .fold(f64::MAX, f64::min);
    let y_max = points.iter().map(|(_, l)| l.p99_ms).fold(0.0, f64::max);
    // Room on the right for the legend: nothing is measured beyond 1.5 × the largest
    // throughput.
    let (x_lo, x_hi) = (x_min / 1.5, x_max * 5.0);
    let x_range = x_lo..x_hi;
    let y_range_start = y_min / 2.0;
    let y_top = (y_max * 2.0).max(y_min * 4.0);
    let y_range = y_range_start..y_top;
    let scenario = report
        .points
        .first()
        .map_or(Scenario::E2e, |p| p.spec.scenario);
    let what = if scenario == Scenario::E2e {
        "end-to-end"
    } else {
        "produce-ack"
    };
    let root = SVGBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Sluice {what} latency vs throughput — {} ({})",
                report.name, report.machine.git_revision
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.15))
        .x_desc("achieved throughput (messages/s)")
        .y_desc(format!("{what} latency (ms, corrected)"))
        .x_label_formatter(&|x| fmt_count(*x))
        .y_label_formatter(&|y| fmt_ms(*y))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut curves: Vec<&str> = Vec::new();
    for point in &report.points {
        if !curves.contains(&point.spec.curve.as_str()) {
            curves.push(&point.spec.curve);
        }
    }
    let error = |e: DrawingAreaErrorKind<std::io::Error>| anyhow::anyhow!("{e}");
    for (index, curve) in curves.iter().enumerate() {
        let color = CURVE_COLORS[index % CURVE_COLORS.len()];
        // The curve joins the open-loop points that held their rate, in target-rate order;
        // the closed-loop point (another load model) stands apart in its square.
        let mut held: Vec<(f64, f64, f64)> = points
            .iter()
            .filter(|(p, _)| {
                p.spec.curve == *curve && p.plottable() && p.spec.target_rate.is_some()
            })
            .map(|(p, l)| (p.msgs_per_s, l.p50_ms.max(y_min), l.p99_ms.max(y_min)))
            .collect();
        held.sort_by(|a, b| a.0.total_cmp(&b.0));
        let p50: Vec<(f64, f64)> = held.iter().map(|&(x, p50, _)| (x, p50)).collect();
        let p99: Vec<(f64, f64)> = held.iter().map(|&(x, _, p99)| (x, p99)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
            .map_err(error)?
            .label(curve.to_string())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (20, 0)], color.stroke_width(2))
                    + Circle::new((10, 0), 4, color.filled())
            });
        chart
            .draw_series(
                p50.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
            )
            .map_err(error)?;
        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(1)))
            .map_err(error)?;
        chart
            .draw_series(
                p99.iter()
                    .map(|&(x, y)| TriangleMarker::new((x, y), 5, color.filled())),
            )
            .map_err(error)?;
        // Points that did not hold their rate: crosses at their achieved throughput, p50 and
        // p99, not joined; without any measured latency (the producer never caught up with
        // its schedule), a cross at the top edge.
        let missed: Vec<(f64, f64)> = report
            .points
            .iter()
            .filter(|p| {
                p.spec.curve == *curve
                    && !p.plottable()
                    && p.msgs_per_s > 0.0
                    && p.rebalance.is_none()
            })
            .flat_map(|p| match p.headline_latency().filter(|l| l.count > 0) {
                Some(l) => vec![
                    (p.msgs_per_s, l.p50_ms.max(y_min)),
                    (p.msgs_per_s, l.p99_ms.max(y_min)),
                ],
                None => vec![(p.msgs_per_s, y_top)],
            })
            .filter(|&(x, _)| x >= x_lo && x <= x_hi)
            .collect();
        chart
            .draw_series(
                missed
                    .iter()
                    .map(|&(x, y)| Cross::new((x, y.min(y_top)), 5, color.stroke_width(2))),
            )
            .map_err(error)?;
        // Closed-loop points (`max`) get a square around their markers.
        let closed: Vec<(f64, f64, f64)> = points
            .iter()
            .filter(|(p, _)| {
                p.spec.curve == *curve && p.plottable() && p.spec.target_rate.is_none()
            })
            .map(|(p, l)| (p.msgs_per_s, l.p50_ms.max(y_min), l.p99_ms.max(y_min)))
            .collect();
        for &(x, p50, p99) in &closed {
            let square = || Rectangle::new([(-8, -8), (8, 8)], color.stroke_width(1));
            chart
                .draw_series([EmptyElement::at((x, p50))
                    + Circle::new((0, 0), 4, color.filled())
                    + square()])
                .map_err(error)?;
            chart
                .draw_series([EmptyElement::at((x, p99))
                    + TriangleMarker::new((0, 0), 5, color.filled())
                    + square()])
                .map_err(error)?;
        }
    }
    // Legend entries for the marker kinds (an empty element each, only for the legend).
    let nowhere = (x_lo, y_range_start);
    macro_rules! key {
        ($label:expr, $marker:expr) => {
            chart
                .draw_series(std::iter::once(EmptyElement::at(nowhere)))
                .map_err(error)?
                .label($label)
                .legend(move |(x, y)| EmptyElement::at((x, y)) + $marker)
        };
    }
    key!("p50 (thick line)", Circle::new((10, 0), 4, BLACK.filled()));
    key!(
        "p99 (thin line)",
        TriangleMarker::new((10, 0), 5, BLACK.filled())
    );
    if report.points.iter().any(|p| p.spec.target_rate.is_none()) {
        key!(
            "closed loop (max rate)",
            Rectangle::new([(3, -7), (17, 7)], BLACK.stroke_width(1))
        );
    }
    if report
        .points
        .iter()
        .any(|p| !p.plottable() && p.rebalance.is_none())
    {
        key!(
            "target rate not held",
            Cross::new((10, 0), 5, BLACK.stroke_width(2))
        );
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()
        .map_err(error)?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;
    use crate::args::{Args, GroupSpec, Leave};
    use crate::cpu::CpuUsage;
    use crate::workload::rebalance::{RebalanceOutcome, Repeat};

    /// The points of a command line.
    fn specs(args: &[&str]) -> Vec<PointSpec> {
        let mut argv = vec!["sluice-bench", "--no-files"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .unwrap()
            .into_plan()
            .unwrap()
            .points
    }

    /// A clean result of `spec` at `msgs_per_s`.
    fn result(spec: PointSpec, msgs_per_s: f64) -> PointResult {
        PointResult {
            spec,
            window_s: 5.0,
            produced: None,
            consumed: None,
            msgs_per_s,
            mb_per_s: msgs_per_s * 1024.0 / 1e6,
            produce_latency: None,
            e2e_latency: None,
            cpu: CpuUsage::default(),
            producer_loop: None,
            held: None,
            cpu_per_msg: crate::workload::CpuPerMessage::default(),
            problems: Vec::new(),
            verdict: "not CPU-bound (latency/round-trip bound); ...".into(),
            client_bound: false,
            rebalance: None,
            failover: None,
        }
    }

    fn report(points: Vec<PointResult>) -> Report {
        Report {
            name: "test".into(),
            command_line: "sluice-bench".into(),
            machine: Machine {
                cpu_model: "cpu".into(),
                cores: 2,
                memory_gib: 4.0,
                kernel: "6".into(),
                disk: "disk".into(),
                git_revision: "abc".into(),
                date: "today".into(),
            },
            broker: "broker".into(),
            client_threads: 2,
            swept: Vec::new(),
            limits: None,
            points,
            failed_points: Vec::new(),
            notes: Vec::new(),
            duration_s: 1.0,
            peers: Vec::new(),
            peers_note: peers::REFERENCE_NOTE.into(),
        }
    }

    /// Manual and group points at the same settings are paired, with their ratio, in the
    /// table, the markdown, the CSV and the rows; a point at other settings is not.
    #[test]
    fn group_and_manual_are_compared() {
        let mut points: Vec<PointResult> = specs(&["--sweep", "consume=manual,group"])
            .into_iter()
            .zip([100_000.0, 97_000.0])
            .map(|(spec, rate)| result(spec, rate))
            .collect();
        let other = specs(&["--consume-mode", "group", "--batch", "16"]);
        points.push(result(other[0].clone(), 50_000.0));
        let report = report(points);
        let comparisons = report.mode_comparisons();
        assert_eq!(comparisons.len(), 1, "{comparisons:?}");
        let comparison = &comparisons[0];
        assert!((comparison.ratio - 0.97).abs() < 1e-9);
        assert!(comparison.within_target && !comparison.problems);
        assert_eq!(comparison.settings, "all, rate max");
        assert!(
            comparison.line().contains("0.970×"),
            "{}",
            comparison.line()
        );
        let (headers, rows) = report.result_rows();
        assert_eq!(headers[1], "mode");
        let modes: Vec<&str> = rows.iter().map(|row| row[1].as_str()).collect();
        assert_eq!(modes, ["manual", "group", "group"]);
        assert!(report.table().contains("group vs manual (all, rate max)"));
        let markdown = report.markdown(None);
        assert!(markdown.contains("### Consumer group vs manual assignment"));
        assert!(markdown.contains("0.970×"));
        assert!(markdown.contains("- consume mode: manual, group (swept); groups: session"));
        let csv = report.csv().unwrap();
        assert_eq!(
            csv_column(&csv, "consume_mode"),
            ["manual", "group", "group"]
        );
    }

    /// A group point 10 % slower than manual misses the target.
    #[test]
    fn a_costly_group_misses_the_target() {
        let points = specs(&["--sweep", "consume=manual,group"])
            .into_iter()
            .zip([100_000.0, 90_000.0])
            .map(|(spec, rate)| result(spec, rate))
            .collect();
        let comparison = &report(points).mode_comparisons()[0];
        assert!(!comparison.within_target);
        assert!(comparison.line().contains("NOT within the 5 % target"));
    }

    /// Rebalance points get their own table with the spread and the verdict, CSV columns,
    /// and stay off the plot and the peer comparison.
    #[test]
    fn rebalance_rows() {
        let group = GroupSpec::with_session_timeout(2000);
        let repeat = |done_ms: f64| Repeat {
            rebalance_done_ms: Some(done_ms),
            data_flowing_ms: Some(done_ms + 5.0),
            moved: vec![0, 3],
            unmoved_gap_ms: 12.0,
            steady_gap_ms: 10.0,
            unmoved_interrupted: false,
        };
        let points: Vec<PointResult> = specs(&["--scenario", "rebalance", "--repeats", "3"])
            .into_iter()
            .map(|spec| {
                let leave = spec.rebalance.unwrap().leave;
                let base = if leave == Leave::Crash { 2400.0 } else { 400.0 };
                let mut point = result(spec, 20_000.0);
                let outcome = RebalanceOutcome::new(
                    leave,
                    group,
                    3,
                    vec![repeat(base), repeat(base + 100.0), repeat(base + 50.0)],
                );
                point.verdict = outcome.verdict();
                point.rebalance = Some(outcome);
                point
            })
            .collect();
        let report = report(points);
        assert!(report.points.iter().all(|p| !p.plottable()));
        let table = report.table();
        assert!(table.contains("Rebalance:"), "{table}");
        assert!(table.contains("400 / 450 / 500 ms"), "{table}");
        assert!(table.contains("< 3000 ms"), "{table}");
        let markdown = report.markdown(None);
        assert!(markdown.contains("### Rebalance after a consumer leaves"));
        assert!(markdown.contains("rebalance met: crash leave rebalanced in"));
        let csv = report.csv().unwrap();
        let medians: Vec<f64> = csv_column(&csv, "rebalance_done_median_ms")
            .iter()
            .map(|cell| cell.parse().unwrap())
            .collect();
        assert_eq!(medians, [450.0, 2450.0]);
    }

    /// The cells of one column of a CSV, read back with the `csv` crate (so quoting counts).
    fn csv_column(csv: &str, name: &str) -> Vec<String> {
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let column = reader
            .headers()
            .unwrap()
            .iter()
            .position(|header| header == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        reader
            .records()
            .map(|record| record.unwrap()[column].to_owned())
            .collect()
    }

    /// An open-loop point at `rate` with these slice p50s and backlogs, and 0.5 broker + 1.0
    /// client cores.
    fn open_point(rate: f64, p50_ms: &[f64], backlog_msgs: &[u64]) -> PointResult {
        let spec = specs(&["--rate", &rate.to_string(), "--duration", "5s"])[0].clone();
        let mut point = result(spec, rate);
        let slices = p50_ms
            .iter()
            .zip(backlog_msgs)
            .enumerate()
            .map(|(index, (&p50_ms, &backlog_msgs))| crate::held::Slice {
                start_ms: index as f64 * 625.0,
                messages: 1_000,
                p50_ms,
                backlog_msgs,
            })
            .collect();
        let achieved = crate::held::Achieved {
            target_per_s: rate,
            achieved_per_s: rate,
            scheduled: (rate * 5.0) as u64,
            ..crate::held::Achieved::default()
        };
        point.held = Some(crate::held::assess(&achieved, slices));
        point.cpu.broker_cores = Some(0.5);
        point.cpu.client_cores = Some(1.0);
        point.cpu_per_msg = crate::workload::CpuPerMessage::of(&point.cpu, rate);
        point
    }

    /// A point whose latency and backlog climb says `NO: backlog growing` in the table, the
    /// markdown (with its slices), the CSV and the JSON; every output has the CPU µs per
    /// message of both sides; the CSV quotes what needs quoting.
    #[test]
    fn held_reasons_and_cpu_per_message_in_every_output() {
        let flat = open_point(100_000.0, &[1.0; 8], &[100; 8]);
        let mut growing = open_point(
            100_000.0,
            &[2.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 140.0],
            &[200, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 14_000],
        );
        growing.verdict = "round-trip-bound, says \"the loop\"".into();
        assert!(flat.plottable() && !growing.plottable());
        let report = report(vec![flat, growing]);
        let table = report.table();
        assert!(table.contains("NO: backlog growing"), "{table}");
        assert!(table.contains("5.0 + 10.0"), "{table}");
        let markdown = report.markdown(None);
        assert!(markdown.contains("### Held: the measured window in slices"));
        assert!(markdown.contains("2.00 → 120"), "{markdown}");
        assert!(markdown.contains("CPU µs/msg broker+client"));
        let csv = report.csv().unwrap();
        assert_eq!(csv_column(&csv, "held"), ["true", "false"]);
        assert_eq!(
            csv_column(&csv, "not_held_reasons"),
            ["", "backlog growing"]
        );
        assert_eq!(csv_column(&csv, "broker_cpu_us_per_msg"), ["5.0", "5.0"]);
        assert_eq!(csv_column(&csv, "client_cpu_us_per_msg"), ["10.0", "10.0"]);
        assert_eq!(
            csv_column(&csv, "verdict")[1],
            "round-trip-bound, says \"the loop\""
        );
        assert_eq!(csv_column(&csv, "produce_p50_ms"), ["", ""]);
        let json = serde_json::to_value(&report).unwrap();
        let held = &json["points"][1]["held"];
        assert_eq!(held["held"], false, "{held:#}");
        assert_eq!(held["reasons"][0]["reason"], "backlog_growing", "{held:#}");
        assert_eq!(
            held["slices"].as_array().unwrap().len(),
            crate::held::SLICES
        );
        assert_eq!(json["points"][0]["cpu_per_msg"]["client_us"], 10.0);
    }

    /// The peers' figures from another day are reference context: no ratio to them anywhere,
    /// and the date and the caveat are said.
    #[test]
    fn peers_are_reference_only() {
        let mut spec = specs(&["--rate", "max", "--message-size", "1k"])[0].clone();
        spec.partitions = 1;
        let mut report = report(vec![result(spec, 600_000.0)]);
        report.peers = peers::PEERS.to_vec();
        let table = report.table();
        let markdown = report.markdown(None);
        for text in [&table, &markdown] {
            for line in text.lines() {
                let names_a_peer = ["Iggy", "NATS", "Redis", "RabbitMQ"]
                    .iter()
                    .any(|peer| line.contains(peer));
                assert!(!(names_a_peer && line.contains('×')), "a ratio: {line}");
            }
            assert!(text.contains("not comparable as a ratio"), "{text}");
            assert!(text.contains(peers::MEASURED_ON), "{text}");
        }
        assert!(markdown.contains("## Peer brokers (reference, not side by side)"));
        assert!(markdown.contains("| Apache Iggy 0.9 dev (thread-per-core io_uring) |"));
        assert!(
            markdown.contains("- fsync periodic: 600k msgs/s"),
            "{markdown}"
        );
        let json = serde_json::to_value(&report).unwrap();
        let note = json["peers_note"].as_str().unwrap();
        assert!(note.contains("not comparable as a ratio"), "{note}");
    }
}
