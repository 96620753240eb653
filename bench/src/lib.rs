//! The Sluice benchmark harness: drives a broker through the native client (`sluice-client`)
//! and reports throughput, latency percentiles, CPU split and hardware references.
//!
//! Place: above `client` and `wire`, never the broker library (it runs the `sluice` binary as
//! a separate process); the `sluice` binary links it for `sluice bench`.
//!
//! Run it as `sluice-bench` or `sluice bench` (both take [`Args`]); [`run`] is the whole
//! program. By default it starts its own broker (`sluice serve` on an ephemeral loopback port,
//! data under `target/bench-data` on the real disk) and stops it afterwards; `--broker
//! host:port` targets a running one, `--brokers a,b,c` a running cluster, and `--cluster 3`
//! starts three local brokers (one CPU each) for replicated topics and the `failover` scenario.
//!
//! ```text
//!  args ──▶ Plan (points: sweep values × rates)
//!            │ broker: start or attach           limits: fio + iperf3 (--with-limits)
//!            ▼
//!  for each point: workload::{produce, consume, e2e, rebalance, failover}
//!     producers: send thread (schedule::Pacer, open/closed loop) ─▶ client::Producer
//!                ack collector task ─▶ histogram::Latency (corrected + uncorrected)
//!     consumers: client::Consumer poll tasks ─▶ end-to-end latency from stamped send times
//!                manual assignment, or one consumer group per point (--consume-mode group:
//!                the window opens once the group is balanced; workload::group tracks who
//!                holds what from the rebalance events)
//!     rebalance: one member leaves (close, or crash = drop) ─▶ time until the survivors
//!                hold every partition, and until moved partitions deliver again
//!     cpu: /proc utime+stime of broker and client over the measured window
//!            ▼
//!  report: table on stdout, NAME.md / .csv / .json / .svg; peers' figures as reference only
//! ```
//!
//! Modules: [`args`] (command line → plan), [`workload`] (one point; `failover` kills and
//! restarts the partition leader of a [`cluster`]), [`schedule`] (open-loop
//! schedule, coordinated-omission correction, the clock), [`held`] (whether an open-loop
//! point held its rate: slices of the window, no growing backlog), [`histogram`] (HDR
//! histograms, merged per point), [`cpu`] (/proc), [`broker`] (start/stop), [`limits`] (fio,
//! iperf3), [`fio`] (the fio runner, shared with the storage bench), [`peers`] (PEERS.md
//! figures, reference only), [`report`] (outputs), [`progress`] (bar or lines), [`cluster`]
//! (a local cluster of `--cluster N` brokers: start, kill, restart, stop).

pub mod args;
pub mod broker;
pub mod cluster;
pub mod cpu;
pub mod fio;
pub mod held;
pub mod histogram;
pub mod limits;
pub mod peers;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use args::Args;

use crate::args::{BrokerTarget, DurabilityArg, Plan};
use crate::broker::Broker;
use crate::progress::Progress;
use crate::report::{Machine, Report};
use crate::workload::{run_point, Target};

/// Pause between points, so the broker finishes deleting the previous topic.
const BETWEEN_POINTS: Duration = Duration::from_millis(300);

/// Runs the harness with these arguments: the whole `sluice-bench` program. Prints the table
/// on stdout, progress and errors on stderr.
pub fn run(args: Args) -> ExitCode {
    match run_inner(args) {
        Ok(report) if report.failed_points.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: Args) -> Result<Report> {
    let plan = args.into_plan()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(execute(&plan))?;
    print!("{}", report.table());
    if let Some((dir, _)) = &plan.output {
        let written = report::write_files(&report, dir)?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(report)
}

/// Starts or attaches to the broker, measures the limits, runs every point, stops the broker
/// and returns the report.
pub async fn execute(plan: &Plan) -> Result<Report> {
    let started = Instant::now();
    let progress = Progress::new(plan.progress, plan.points.len());
    let mut broker = Broker::open(&plan.broker)?;
    progress.note(&format!("broker: {}", broker.description));
    let data_dir = match (&broker.data_dir, &plan.broker) {
        (Some(dir), _) => dir.clone(),
        (None, BrokerTarget::Own { data_dir, .. }) => {
            data_dir.clone().unwrap_or_else(broker::default_data_base)
        }
        (None, BrokerTarget::External { .. }) => broker::default_data_base(),
        (None, BrokerTarget::Cluster { data_dir, .. }) => {
            data_dir.clone().unwrap_or_else(broker::default_data_base)
        }
    };
    let machine = Machine::describe(&data_dir);
    let limits = if plan.with_limits {
        progress.note(&format!(
            "measuring hardware limits ({:?} each): fio in {}, loopback TCP",
            plan.limits_duration,
            data_dir.display()
        ));
        let with_fsync = plan
            .points
            .iter()
            .any(|p| p.durability == Some(DurabilityArg::Always));
        let dir = data_dir.clone();
        let duration = plan.limits_duration;
        let limits =
            tokio::task::spawn_blocking(move || limits::measure(&dir, duration, with_fsync))
                .await
                .context("the limits measurement panicked")?;
        progress.note(&limits_note(&limits));
        Some(limits)
    } else {
        None
    };
    let mut target = Target {
        address: broker.address.clone(),
        broker_pids: broker.pids.clone(),
        cluster: broker.cluster.clone(),
        topic_prefix: format!(
            "bench-{}-{}",
            std::process::id(),
            started.elapsed().as_nanos() % 1_000_000
        ),
    };
    let mut points = Vec::new();
    let mut failed_points = Vec::new();
    for spec in &plan.points {
        target.broker_pids = broker.current_pids();
        progress.start_point(spec.index, &spec.describe());
        match run_point(spec, &target).await {
            Ok(result) => {
                progress.finish_point(spec.index, &point_line(&result));
                points.push(result);
            }
            Err(error) => {
                let text = format!("{error:#}");
                progress.finish_point(spec.index, &format!("{} FAILED: {text}", spec.describe()));
                failed_points.push((spec.describe(), text));
                if let Err(dead) = broker.check_alive() {
                    progress.finish();
                    return Err(dead);
                }
            }
        }
        tokio::time::sleep(BETWEEN_POINTS).await;
    }
    progress.finish();
    let stopped = broker.stop();
    if let Err(error) = stopped {
        eprintln!("warning: {error:#}");
    }
    Ok(Report {
        name: plan
            .output
            .as_ref()
            .map_or_else(|| "bench".to_owned(), |(_, name)| name.clone()),
        command_line: plan.command_line.clone(),
        machine,
        broker: broker.description.clone(),
        client_threads: plan.client_threads,
        swept: plan.swept.clone(),
        limits,
        points,
        failed_points,
        notes: plan.notes.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        peers: peers::PEERS.to_vec(),
        peers_note: peers::REFERENCE_NOTE.into(),
    })
}

fn limits_note(limits: &limits::Limits) -> String {
    let mut parts = Vec::new();
    if let Some(disk) = &limits.disk {
        parts.push(format!("disk {:.0} MB/s", disk.mb_per_s()));
    }
    if let Some(disk) = &limits.disk_fsync {
        parts.push(format!("disk+fdatasync {:.0} MB/s", disk.mb_per_s()));
    }
    if let Some(net) = &limits.loopback {
        parts.push(format!(
            "loopback {:.0} MB/s ({})",
            net.mb_per_s(),
            net.tool
        ));
    }
    parts.extend(limits.problems.iter().cloned());
    format!("limits: {}", parts.join(", "))
}

/// One line per finished point.
fn point_line(result: &workload::PointResult) -> String {
    let latency = result.headline_latency().map_or_else(String::new, |p| {
        if p.count == 0 {
            return ", no latency measured".to_owned();
        }
        format!(
            ", p50 {} p99 {} p99.9 {} ms",
            histogram::fmt_ms(p.p50_ms),
            histogram::fmt_ms(p.p99_ms),
            histogram::fmt_ms(p.p999_ms)
        )
    });
    let held = match &result.held {
        Some(held) if held.held => " held".to_owned(),
        Some(held) => format!(" {}", held.label().replace("NO", "NOT HELD")),
        None => String::new(),
    };
    format!(
        "{}: {} msgs/s {:.1} MB/s{latency}, cpu {} cores = {} µs/msg{held}; {}",
        result.spec.describe(),
        args::fmt_count(result.msgs_per_s.round()),
        result.mb_per_s,
        result.cpu.short(),
        result.cpu_per_msg.short(),
        result.verdict
    )
}
