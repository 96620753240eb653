//! The command line of `sluice-bench` / `sluice bench` (clap), and [`Args::into_plan`], which
//! checks it and expands sweeps into the list of points to measure. Nothing past this module
//! sees clap.
//!
//! Number syntax: sizes take binary suffixes (`1k` = 1024 bytes, `1m` = 1 MiB); rates and
//! counts take decimal ones (`10k` = 10 000 messages/s, `1m` = 1 000 000); durations take `s`,
//! `ms` or `m` (plain numbers are seconds).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::schedule::Load;

/// Benchmark the Sluice broker through its native client: produce, consume or end-to-end
/// workloads, closed loop or open loop at a target rate, single points or sweeps, with HDR
/// latency percentiles, throughput, CPU split and hardware references.
///
/// Examples:
///
///   sluice-bench --rate 50k --duration 10
///
///   sluice-bench --sweep batch=1,16,64,256,1024 --rates 10k,50k,100k,max --with-limits
///
///   sluice-bench --scenario consume --messages 1m --broker 127.0.0.1:9092
///
///   sluice-bench --scenario e2e --batch 256 --rate max --sweep consume=manual,group
///
///   sluice-bench --scenario rebalance --consumers 3 --partitions 6 --rate 20k
///
///   sluice-bench --cluster 3 --replication-factor 3 --min-insync-replicas 2 --acks all
///
///   sluice-bench --scenario failover --cluster 3 --acks all --rounds 10
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice-bench", version, verbatim_doc_comment)]
pub struct Args {
    /// What to measure: `produce` (acknowledgement latency), `consume` (catch-up read of
    /// existing data), `e2e` (producers and consumers at once; end-to-end latency),
    /// `rebalance` (how long a consumer group takes to move a leaving member's partitions) or
    /// `failover` (with `--cluster`: kill -9 the partition leader, time until the new leader
    /// acknowledges, no acknowledged message lost).
    #[arg(long, value_enum, default_value_t = Scenario::E2e)]
    pub scenario: Scenario,
    /// Value size of each message (at least 16: the first 16 bytes carry the send times).
    #[arg(long, value_parser = parse_size, default_value = "1k")]
    pub message_size: u64,
    /// Messages per produce batch: the producer's batch size is set to exactly this many
    /// messages of `--message-size` (but at least the client's 1 KiB floor).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Batch size in bytes instead of messages (overrides --batch).
    #[arg(long, value_parser = parse_size)]
    pub batch_bytes: Option<u64>,
    /// How long a partial batch waits for more messages (ms). 0: sent as soon as the
    /// partition has nothing in flight (messages arriving meanwhile batch up behind it).
    #[arg(long, default_value_t = 0.0)]
    pub linger_ms: f64,
    /// Produce requests in flight per partition.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Producer buffer (bytes enqueued and not yet acknowledged); a closed-loop producer
    /// blocks when it is full, so in closed loop latency ≈ buffer / throughput (Little's
    /// law). Default: room for the batches in flight plus two (`(max-in-flight + 2) × batch
    /// bytes`), at least 1 MiB. At least one batch (with `--batch 1`, one message: a
    /// producer buffer of one message).
    #[arg(long, value_parser = parse_size)]
    pub buffer_bytes: Option<u64>,
    /// Sends (records at `--batch 1`, batches above) outstanding per producer: only `1` is
    /// supported, a closed loop of one where the send loop waits for each acknowledgement
    /// before its next send (the single-request round trip). Default: as many as the buffer
    /// and `--max-in-flight` allow.
    #[arg(long)]
    pub outstanding: Option<u32>,
    /// Open loop with `--batch N` > 1: send the messages due at once (up to N) as one batch
    /// per call, as at `--rate max`. Default: one send per message, the client batching them
    /// behind the request in flight (measured at batch 16, 100k/s: p50 0.5 ms per message
    /// against 9.8 ms grouped, whose few-message batches queue behind the in-flight window).
    #[arg(long)]
    pub open_loop_batches: bool,
    /// Most bytes a consumer fetch returns per partition. Default: 32 batches, between 1 MiB
    /// and 32 MiB (the client's own default is 8 MiB). A consumer has one fetch in flight per partition, so
    /// its rate is this over the fetch round trip: with four batches (4 MiB at batch 1000) the
    /// consumer fell behind its producer in e2e runs (145k of 820k msgs/s received), with 32
    /// MiB it kept up (598k msgs/s, p99.9 120 ms; 2 shared cores).
    #[arg(long, value_parser = parse_size)]
    pub fetch_partition_bytes: Option<u64>,
    /// Acknowledgements: 0 (none), 1 (leader) or all.
    #[arg(long, value_enum, default_value_t = AcksArg::One)]
    pub acks: AcksArg,
    /// Durability policy of the benchmark topics (default: the broker's default).
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityArg>,
    /// Sync interval of `--durability interval` (ms).
    #[arg(long, default_value_t = 10)]
    pub durability_interval_ms: u32,
    /// Partitions of the benchmark topic. Default 1 (6 for `rebalance`).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Producer clients (each its own connections and sender task).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer clients (partitions are split among them). Default 1 (3 for `rebalance`).
    #[arg(long)]
    pub consumers: Option<u32>,
    /// How consumers get their partitions: `manual` (assigned by hand, `p % consumers`, from
    /// the earliest offset) or `group` (every consumer subscribes in one fresh consumer group
    /// per point: cooperative-sticky, at-least-once auto-commit every 5 s, earliest offset
    /// when nothing is committed; the measurement starts once the group is balanced). `e2e`
    /// and `consume` only; `rebalance` is always `group`. Default manual.
    #[arg(long, value_enum)]
    pub consume_mode: Option<ConsumeMode>,
    /// Consumer-group session timeout (ms); the heartbeat interval is a third of it, at most
    /// 1 s. Default 2000 for `rebalance`; for `--consume-mode group` the client's defaults
    /// (10 s session, 3 s heartbeat).
    #[arg(long)]
    pub session_timeout_ms: Option<u64>,
    /// `rebalance` only: leaves measured per variant (graceful close, crash); a fresh consumer
    /// rejoins between two.
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
    /// Target rate over all producers (messages/s, e.g. `50k`), or `max` for a closed loop.
    /// Default max (20k for `rebalance`, which needs live traffic on every partition).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<Rate>,
    /// Sweep over these rates (e.g. `10k,50k,100k,max`); replaces --rate.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate)]
    pub rates: Vec<Rate>,
    /// Sweep a parameter: `batch=1,16,64`, `size=100,1k`, `partitions=1,4`, `producers=1,2`,
    /// `consumers=1,2`, `linger=0,1,5` (ms) or `consume=manual,group` (the consume mode, both
    /// measured back to back with otherwise identical settings). Repeat for a cross product;
    /// every value makes one curve of the plot.
    #[arg(long, value_parser = parse_sweep)]
    pub sweep: Vec<Sweep>,
    /// Measured time per point (after the warm-up).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Measured messages per point instead of a duration (for `consume`: the messages
    /// written first and read back; default 1m there).
    #[arg(long, value_parser = parse_count)]
    pub messages: Option<u64>,
    /// Warm-up per point: sent and consumed like the rest, but not measured. `rebalance`:
    /// the steady consumption before each leave.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Longest wait after the sends for the outstanding acknowledgements and for the consumers
    /// to catch up; a point that needs longer is marked as not sustained.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub drain_timeout: Duration,
    /// `consume` only: read this existing topic instead of writing one first.
    #[arg(long)]
    pub topic: Option<String>,
    /// Use the broker at this address instead of starting one.
    #[arg(long)]
    pub broker: Option<String>,
    /// Use the cluster reachable at these bootstrap addresses (`host:port,host:port,...`)
    /// instead of starting a broker. Broker CPU is the sum over the pids found listening on
    /// those ports on this machine.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Start a cluster of this many local brokers (1, 3 or 5; every one a controller voter),
    /// each `sluice serve --cores 1` pinned to one CPU with `taskset` (broker i on CPU i mod
    /// the machine's CPUs), with fresh data directories; stopped at the end. Broker CPU is
    /// the sum over their processes.
    #[arg(long)]
    pub cluster: Option<u32>,
    /// Replication factor of the benchmark topics (default: the broker's default; 3 for
    /// `failover`).
    #[arg(long)]
    pub replication_factor: Option<u16>,
    /// `min.insync.replicas` of the benchmark topics (default: the broker's default; 2 for
    /// `failover`).
    #[arg(long)]
    pub min_insync_replicas: Option<u16>,
    /// `failover` only: leader kills measured.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Broker session timeout of a started cluster (`--broker-session-timeout-ms`): how long
    /// a killed broker keeps its leaderships before it is fenced.
    #[arg(long, default_value_t = 3000)]
    pub broker_session_timeout_ms: u64,
    /// Process id of the `--broker` (for its CPU time); found from the port when omitted and
    /// the broker runs on this machine.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// The `sluice` binary to start (default: next to this executable, else the workspace's
    /// target/release or target/debug).
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Shards of the broker this harness starts (`sluice serve --cores`); 0: one per core.
    #[arg(long, default_value_t = 0)]
    pub broker_cores: usize,
    /// How long (µs) an idle shard of the broker this harness starts spins before it sleeps
    /// (`sluice serve --spin-before-park-us`). With `--broker-cores 1 --client-spin-us` it
    /// takes the sleeps out of the single-request round trip; see the README.
    #[arg(long, default_value_t = 0)]
    pub broker_spin_us: u64,
    /// Where the started broker keeps its data (a fresh directory inside it per run). Must be
    /// a real disk, not tmpfs. Default: the workspace's target/bench-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the started broker's data directory afterwards.
    #[arg(long)]
    pub keep_data: bool,
    /// Worker threads of the client's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// How long (µs) the client's connections poll their sockets for the next answer before
    /// they sleep (`ProducerConfig::spin_before_park`). Pays for the single-request round trip
    /// (`--outstanding 1`) when the client has a core of its own; costs CPU on shared cores.
    #[arg(long, default_value_t = 0)]
    pub client_spin_us: u64,
    /// Also measure the disk's O_DIRECT sequential write bandwidth (fio) and loopback TCP
    /// bandwidth (iperf3, else a built-in probe), and print throughputs as ratios of them.
    #[arg(long)]
    pub with_limits: bool,
    /// Length of each limit measurement.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub limits_duration: Duration,
    /// Where report files go (NAME.md, .csv, .json, .svg).
    #[arg(long, default_value = "target/bench-results")]
    pub output_dir: PathBuf,
    /// Base name of the report files (default: bench-<UTC date and time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Only print the table; write no files.
    #[arg(long)]
    pub no_files: bool,
    /// A note printed in the report (e.g. the machine's caveats).
    #[arg(long)]
    pub note: Vec<String>,
    /// Progress display: a bar on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

/// The workload of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Producers only; produce-acknowledgement latency.
    Produce,
    /// Read back data written before the measurement.
    Consume,
    /// Producers and consumers at once; end-to-end latency.
    E2e,
    /// A consumer group under steady traffic; one member leaves (gracefully, then by a
    /// crash); the time until its partitions are reassigned and flowing again.
    Rebalance,
    /// An acks=all producer at a steady rate on a replicated topic of a started cluster;
    /// the partition's leader is killed (kill -9) and restarted, round after round; the time
    /// from each kill to the first write acknowledged by the new leader, and a read-back
    /// check that no acknowledged message was lost.
    Failover,
}

impl Scenario {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Produce => "produce",
            Scenario::Consume => "consume",
            Scenario::E2e => "e2e",
            Scenario::Rebalance => "rebalance",
            Scenario::Failover => "failover",
        }
    }
}

/// `--consume-mode`: how consumers get their partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumeMode {
    /// Manual assignment (`Consumer::assign`), partition `p` to consumer `p % consumers`.
    Manual,
    /// One consumer group (`Consumer::subscribe`); the group's assignor splits the partitions.
    Group,
}

impl ConsumeMode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ConsumeMode::Manual => "manual",
            ConsumeMode::Group => "group",
        }
    }

    /// The number that stands for this mode in a [`Sweep`]'s values.
    pub fn code(self) -> u64 {
        match self {
            ConsumeMode::Manual => 0,
            ConsumeMode::Group => 1,
        }
    }

    /// The mode a [`Sweep`] value stands for (see [`ConsumeMode::code`]).
    pub fn from_code(code: u64) -> Option<ConsumeMode> {
        match code {
            0 => Some(ConsumeMode::Manual),
            1 => Some(ConsumeMode::Group),
            _ => None,
        }
    }

    /// Parses `manual` or `group`.
    pub fn parse(text: &str) -> Result<ConsumeMode, String> {
        match text.trim() {
            "manual" => Ok(ConsumeMode::Manual),
            "group" => Ok(ConsumeMode::Group),
            other => Err(format!("`{other}` is not a consume mode: manual or group")),
        }
    }
}

/// How the leaving member of the `rebalance` scenario leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leave {
    /// `Consumer::close`: commits and sends LeaveGroup; the group rebalances at once.
    Graceful,
    /// The consumer is dropped without closing: no LeaveGroup, so the coordinator notices
    /// only when the session times out.
    Crash,
}

impl Leave {
    /// Both variants, in the order they are measured.
    pub const ALL: [Leave; 2] = [Leave::Graceful, Leave::Crash];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Leave::Graceful => "graceful",
            Leave::Crash => "crash",
        }
    }
}

/// Consumer-group settings of a point (group mode and `rebalance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupSpec {
    /// Session timeout, ms.
    pub session_timeout_ms: u64,
    /// Heartbeat interval, ms.
    pub heartbeat_interval_ms: u64,
}

impl GroupSpec {
    /// The client's defaults (10 s session, 3 s heartbeat), used when `--session-timeout-ms`
    /// is not given outside `rebalance`.
    pub const CLIENT_DEFAULT: GroupSpec = GroupSpec {
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 3_000,
    };

    /// A session timeout with a heartbeat of a third of it (room for two lost heartbeats),
    /// at most [`HEARTBEAT_MAX_MS`].
    pub fn with_session_timeout(session_timeout_ms: u64) -> GroupSpec {
        GroupSpec {
            session_timeout_ms,
            heartbeat_interval_ms: (session_timeout_ms / 3).clamp(1, HEARTBEAT_MAX_MS),
        }
    }
}

/// What the `rebalance` scenario measures at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebalanceSpec {
    /// How the member leaves.
    pub leave: Leave,
    /// Leaves measured.
    pub repeats: u32,
}

/// `--acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum AcksArg {
    /// No acknowledgement.
    #[value(name = "0")]
    Zero,
    /// The leader's.
    #[value(name = "1")]
    One,
    /// Every in-sync replica's.
    #[value(name = "all")]
    All,
}

impl AcksArg {
    /// The client setting (`wire::Acks`, the one acks type).
    pub fn to_client(self) -> wire::Acks {
        match self {
            AcksArg::Zero => client::Acks::None,
            AcksArg::One => client::Acks::Leader,
            AcksArg::All => client::Acks::All,
        }
    }

    /// `0`, `1` or `all`.
    pub fn name(self) -> &'static str {
        match self {
            AcksArg::Zero => "0",
            AcksArg::One => "1",
            AcksArg::All => "all",
        }
    }
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// fsync before every acknowledgement (group commit).
    Always,
    /// fsync every `--durability-interval-ms`.
    Interval,
    /// No fsync (rely on replicas).
    Never,
}

impl DurabilityArg {
    /// The topic setting (`wire::Durability`, the one durability type), with `interval_ms`
    /// for `interval`.
    pub fn to_durability(self, interval_ms: u32) -> wire::Durability {
        match self {
            DurabilityArg::Always => wire::Durability::Always,
            DurabilityArg::Interval => wire::Durability::interval(interval_ms),
            DurabilityArg::Never => wire::Durability::Never,
        }
    }
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// A bar when standard error is a terminal, plain lines otherwise.
    Auto,
    /// Always a bar.
    Bar,
    /// Always plain lines.
    Plain,
}

/// A target rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Closed loop.
    Max,
    /// Messages per second over all producers.
    PerSecond(f64),
}

impl Rate {
    /// `max`, `50k`, `1.5m`, `700`.
    pub fn label(self) -> String {
        match self {
            Rate::Max => "max".into(),
            Rate::PerSecond(rate) => fmt_count(rate),
        }
    }
}

/// A number with a decimal suffix: `700`, `50k`, `1.5m`.
pub fn fmt_count(value: f64) -> String {
    if value >= 1e6 && (value / 1e6).fract() == 0.0 {
        format!("{}m", value / 1e6)
    } else if value >= 1e6 {
        format!("{:.2}m", value / 1e6)
    } else if value >= 1e3 && (value / 1e3).fract() == 0.0 {
        format!("{}k", value / 1e3)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// A swept parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepParam {
    /// Messages per batch.
    Batch,
    /// Message size in bytes.
    Size,
    /// Partitions.
    Partitions,
    /// Producers.
    Producers,
    /// Consumers.
    Consumers,
    /// Linger in ms.
    Linger,
    /// Consume mode (values: [`ConsumeMode::code`]).
    Consume,
}

impl SweepParam {
    /// The name used on the command line and in labels.
    pub fn name(self) -> &'static str {
        match self {
            SweepParam::Batch => "batch",
            SweepParam::Size => "size",
            SweepParam::Partitions => "partitions",
            SweepParam::Producers => "producers",
            SweepParam::Consumers => "consumers",
            SweepParam::Linger => "linger",
            SweepParam::Consume => "consume",
        }
    }

    /// A value as written on the command line and in curve labels: `16`, or `group`.
    pub fn value_label(self, value: u64) -> String {
        match self {
            SweepParam::Consume => {
                ConsumeMode::from_code(value).map_or_else(|| value.to_string(), |m| m.name().into())
            }
            _ => value.to_string(),
        }
    }
}

/// `--sweep PARAM=V1,V2,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Which parameter.
    pub param: SweepParam,
    /// Its values (numbers; for `consume` the modes' [`ConsumeMode::code`]s).
    pub values: Vec<u64>,
}

/// Parses `4096`, `4k`, `16KiB`, `1m`, `1g` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix("ib").unwrap_or(&lower);
    let lower = lower.strip_suffix('b').unwrap_or(lower);
    let (digits, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 1024, 1k, 64k or 1m"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `700`, `50k`, `1.5m` (powers of 1000).
pub fn parse_count(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1e3),
        Some('m') => (&lower[..lower.len() - 1], 1e6),
        Some('g') => (&lower[..lower.len() - 1], 1e9),
        _ => (lower.as_str(), 1.0),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a count such as 700, 50k or 1.5m"))?;
    let value = value * scale;
    if !value.is_finite() || !(0.0..=1e15).contains(&value) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(value.round() as u64)
}

/// Parses a rate: `max` or a positive count per second.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.trim().eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let value = parse_count(text)?;
    if value == 0 {
        return Err("a rate must be positive (or `max`)".into());
    }
    Ok(Rate::PerSecond(value as f64))
}

/// Parses `5`, `5s`, `1.5s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, scale) = if let Some(digits) = lower.strip_suffix("ms") {
        (digits, 1e-3)
    } else if let Some(digits) = lower.strip_suffix('s') {
        (digits, 1.0)
    } else if let Some(digits) = lower.strip_suffix('m') {
        (digits, 60.0)
    } else {
        (lower.as_str(), 1.0)
    };
    let value: f64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 5, 5s, 500ms or 2m"))?;
    let seconds = value * scale;
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 24 h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `batch=1,16,64`.
pub fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected PARAM=V1,V2,... (e.g. batch=1,16,64)"))?;
    let param = match name.trim() {
        "batch" => SweepParam::Batch,
        "size" | "message-size" => SweepParam::Size,
        "partitions" => SweepParam::Partitions,
        "producers" => SweepParam::Producers,
        "consumers" => SweepParam::Consumers,
        "linger" | "linger-ms" => SweepParam::Linger,
        "consume" | "consume-mode" => SweepParam::Consume,
        other => {
            return Err(format!(
                "cannot sweep `{other}`: one of batch, size, partitions, producers, consumers, \
                 linger, consume"
            ))
        }
    };
    let values = values
        .split(',')
        .map(|value| match param {
            SweepParam::Size => parse_size(value),
            SweepParam::Consume => ConsumeMode::parse(value).map(ConsumeMode::code),
            _ => parse_count(value),
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if values.is_empty() {
        return Err(format!("`{text}`: no values"));
    }
    Ok(Sweep { param, values })
}

/// How long a point's producers run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Amount {
    /// Send for this long after the warm-up.
    Duration {
        /// Seconds.
        seconds: f64,
    },
    /// Send this many measured messages after the warm-up (over all producers).
    Messages {
        /// Count.
        count: u64,
    },
}

/// One point of a run: everything that defines a measurement.
#[derive(Debug, Clone, Serialize)]
pub struct PointSpec {
    /// Position in the run (0-based).
    pub index: usize,
    /// The curve this point belongs to (`batch=16`), or `all` without a sweep.
    pub curve: String,
    /// Workload.
    pub scenario: Scenario,
    /// Value bytes per message.
    pub message_size: u64,
    /// Messages per batch (`None` when the batch size was given in bytes).
    pub batch_messages: Option<u32>,
    /// The producer's `batch_size_bytes`.
    pub batch_bytes: u64,
    /// Linger in ms.
    pub linger_ms: f64,
    /// Produce requests in flight per partition.
    pub max_in_flight: usize,
    /// Producer buffer bytes.
    pub buffer_bytes: u64,
    /// `--outstanding 1`: each send waits for the previous one's acknowledgement.
    pub one_outstanding: bool,
    /// `--open-loop-batches`: an open loop sends the messages due as one batch per call.
    pub open_loop_batches: bool,
    /// `--client-spin-us`: how long the client's connections spin before they sleep.
    pub client_spin: Duration,
    /// Consumer fetch bytes per partition.
    pub fetch_partition_bytes: u64,
    /// Acknowledgements.
    pub acks: AcksArg,
    /// Topic durability (`None`: the broker's default).
    pub durability: Option<DurabilityArg>,
    /// Interval of `interval` durability.
    pub durability_interval_ms: u32,
    /// Partitions.
    pub partitions: u32,
    /// Producers.
    pub producers: u32,
    /// Consumers.
    pub consumers: u32,
    /// Target rate over all producers, `None` for closed loop.
    pub target_rate: Option<f64>,
    /// How long producers send.
    pub amount: Amount,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Drain timeout seconds.
    pub drain_timeout_s: f64,
    /// `consume`: existing topic to read.
    pub topic: Option<String>,
    /// How consumers get their partitions; `None` without consumers (`produce`).
    pub consume_mode: Option<ConsumeMode>,
    /// Consumer-group settings (group mode and `rebalance`).
    pub group: Option<GroupSpec>,
    /// `rebalance`: which leave and how often.
    pub rebalance: Option<RebalanceSpec>,
    /// Replication factor of the topic (`None`: the broker's default).
    pub replication_factor: Option<u16>,
    /// `min.insync.replicas` of the topic (`None`: the broker's default).
    pub min_insync_replicas: Option<u16>,
    /// `failover`: leader kills measured.
    pub rounds: Option<u32>,
}

impl PointSpec {
    /// The load model of one producer.
    pub fn producer_load(&self) -> Load {
        match self.target_rate {
            None => Load::Closed,
            Some(rate) => Load::Open {
                rate_per_s: rate / f64::from(self.producers),
            },
        }
    }

    /// `max` or the target rate.
    pub fn rate_label(&self) -> String {
        self.target_rate
            .map_or_else(|| "max".to_owned(), |rate| Rate::PerSecond(rate).label())
    }

    /// One line for progress and logs.
    pub fn describe(&self) -> String {
        let replication = match (self.replication_factor, self.min_insync_replicas) {
            (None, None) => String::new(),
            (factor, min) => format!(
                " rf={} min-isr={}",
                factor.map_or_else(|| "default".to_owned(), |f| f.to_string()),
                min.map_or_else(|| "default".to_owned(), |m| m.to_string())
            ),
        };
        format!(
            "{} {} rate={} size={} batch={}{} P={} C={} partitions={} mode={} acks={}{replication}",
            self.scenario.name(),
            self.curve,
            self.rate_label(),
            self.message_size,
            self.batch_label(),
            if self.one_outstanding {
                " outstanding=1"
            } else {
                ""
            },
            self.producers,
            self.consumers,
            self.partitions,
            self.mode_label(),
            self.acks.name()
        )
    }

    /// `manual`, `group`, or `-` without consumers.
    pub fn mode_label(&self) -> &'static str {
        self.consume_mode.map_or("-", ConsumeMode::name)
    }

    /// `64` (messages) or `64KiB`.
    pub fn batch_label(&self) -> String {
        match self.batch_messages {
            Some(messages) => messages.to_string(),
            None => format!("{}B", self.batch_bytes),
        }
    }
}

/// Where the broker comes from.
#[derive(Debug, Clone)]
pub enum BrokerTarget {
    /// Start one (and stop it afterwards).
    Own {
        /// Explicit binary.
        binary: Option<PathBuf>,
        /// `--cores`.
        cores: usize,
        /// `--spin-before-park-us`.
        spin_us: u64,
        /// Base directory of the data directory.
        data_dir: Option<PathBuf>,
        /// Keep the data afterwards.
        keep_data: bool,
    },
    /// Use a running one (or a running cluster).
    External {
        /// `host:port`, or a comma-separated bootstrap list.
        address: String,
        /// Its pid, if known (`--broker-pid`; with `--brokers` looked up per address).
        pid: Option<u32>,
    },
    /// Start a local cluster (and stop it afterwards).
    Cluster {
        /// Explicit binary.
        binary: Option<PathBuf>,
        /// Brokers (every one a controller voter).
        size: u32,
        /// Base directory of the data directories.
        data_dir: Option<PathBuf>,
        /// Keep the data afterwards.
        keep_data: bool,
        /// `--broker-session-timeout-ms` of every broker.
        session_timeout_ms: u64,
    },
}

/// Checked arguments: what to run and where to put the results.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The points, in order.
    pub points: Vec<PointSpec>,
    /// The swept parameters (for labels and the plot's legend title).
    pub swept: Vec<SweepParam>,
    /// Broker.
    pub broker: BrokerTarget,
    /// Client runtime threads.
    pub client_threads: usize,
    /// Measure fio / iperf3 references.
    pub with_limits: bool,
    /// Length of each limit measurement.
    pub limits_duration: Duration,
    /// Report directory and base name; `None` with `--no-files`.
    pub output: Option<(PathBuf, String)>,
    /// Notes for the report.
    pub notes: Vec<String>,
    /// Progress display.
    pub progress: ProgressArg,
    /// The command line, for the report.
    pub command_line: String,
}

/// Smallest message: two 8-byte timestamps.
pub const MESSAGE_SIZE_MIN: u64 = 16;

/// Largest message: a batch of one must fit the wire's batch limit with room for the record
/// framing.
pub const MESSAGE_SIZE_MAX: u64 = (wire::limits::BATCH_SIZE_MAX as u64) - 4096;

/// Most points in one run: a sweep of 10 values × 10 rates is 100; more is a mistake.
pub const POINTS_MAX: usize = 1000;

/// Producers, consumers and partitions: at most this many each (the machine has 2 cores).
pub const CLIENTS_MAX: u32 = 256;

/// Longest heartbeat interval derived from `--session-timeout-ms`: a member that leaves is
/// noticed by the others at their next heartbeat, so this bounds what a graceful leave costs.
pub const HEARTBEAT_MAX_MS: u64 = 1000;

/// Session timeouts accepted by `--session-timeout-ms`: at least 10 ms (the heartbeat is a
/// third of it), at most 30 min (the broker's default upper bound).
pub const SESSION_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=1_800_000;

/// Most `--repeats`: 100 crash leaves at the default 2 s session timeout take about 5 min.
pub const REPEATS_MAX: u32 = 100;

/// `rebalance` defaults: consumers, partitions and total rate (20k msgs/s of 1 KiB keeps
/// every partition busy while using a fraction of the 2 shared cores).
pub const REBALANCE_DEFAULT_CONSUMERS: u32 = 3;
/// See [`REBALANCE_DEFAULT_CONSUMERS`].
pub const REBALANCE_DEFAULT_PARTITIONS: u32 = 6;
/// See [`REBALANCE_DEFAULT_CONSUMERS`].
pub const REBALANCE_DEFAULT_RATE: f64 = 20_000.0;

/// `failover` default rate: 20k msgs/s keeps the partition busy at every instant (an
/// acknowledgement every 50 µs, so the first one after a failover is timed to well under a
/// millisecond) while leaving CPU for three brokers and the client on 2 shared cores.
pub const FAILOVER_DEFAULT_RATE: f64 = 20_000.0;

/// Most `--rounds`: each round waits out the broker session timeout and the restarted
/// broker's return to the ISR (about 10 s), so 100 rounds take about 20 min.
pub const ROUNDS_MAX: u32 = 100;

/// `--brokers a:1,b:2`: the bootstrap addresses, each `host:port` with a numeric port, at
/// least one, no duplicates.
pub fn parse_brokers(text: &str) -> Result<Vec<String>> {
    let mut addresses: Vec<String> = Vec::new();
    for address in text.split(',').map(str::trim) {
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("`{address}` in --brokers is not host:port"))?;
        ensure!(
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            "`{address}` in --brokers is not host:port"
        );
        ensure!(
            !addresses.iter().any(|a| a == address),
            "`{address}` is given twice in --brokers"
        );
        addresses.push(address.to_owned());
    }
    Ok(addresses)
}

/// Default session timeout of the `rebalance` scenario, ms.
pub const REBALANCE_DEFAULT_SESSION_TIMEOUT_MS: u64 = 2000;

impl Args {
    /// Checks the arguments and expands the sweep into points.
    pub fn into_plan(self) -> Result<Plan> {
        let command_line = std::env::args()
            .map(|arg| shell_quote(&arg))
            .collect::<Vec<_>>()
            .join(" ");
        ensure!(
            self.client_threads >= 1,
            "--client-threads must be at least 1"
        );
        ensure!(
            self.max_in_flight >= 1,
            "--max-in-flight must be at least 1"
        );
        ensure!(
            self.linger_ms.is_finite() && (0.0..=60_000.0).contains(&self.linger_ms),
            "--linger-ms must be within [0, 60000]"
        );
        if let Some(bytes) = self.buffer_bytes {
            ensure!(
                (1..=u64::from(u32::MAX)).contains(&bytes),
                "--buffer-bytes must be within [1 B, 4 GiB) (and hold one batch)"
            );
        }
        if let Some(outstanding) = self.outstanding {
            ensure!(outstanding == 1, "--outstanding supports only 1");
        }
        ensure!(
            self.durability_interval_ms >= 1,
            "--durability-interval-ms must be at least 1"
        );
        ensure!(
            !self.duration.is_zero() || self.messages.is_some(),
            "--duration must be positive"
        );
        if self.topic.is_some() {
            ensure!(
                self.scenario == Scenario::Consume,
                "--topic only applies to --scenario consume"
            );
        }
        let mut swept = Vec::new();
        for sweep in &self.sweep {
            ensure!(
                !swept.contains(&sweep.param),
                "--sweep {} given twice",
                sweep.param.name()
            );
            swept.push(sweep.param);
        }
        let rebalance = self.scenario == Scenario::Rebalance;
        let default_rate = if rebalance {
            Rate::PerSecond(REBALANCE_DEFAULT_RATE)
        } else if self.scenario == Scenario::Failover {
            Rate::PerSecond(FAILOVER_DEFAULT_RATE)
        } else {
            Rate::Max
        };
        let rates = if self.rates.is_empty() {
            vec![self.rate.unwrap_or(default_rate)]
        } else {
            self.rates.clone()
        };
        if self.scenario == Scenario::Consume {
            ensure!(
                rates.iter().all(|rate| *rate == Rate::Max),
                "--scenario consume reads as fast as it can: no --rate"
            );
        }
        let mode_swept = swept.contains(&SweepParam::Consume);
        match self.scenario {
            Scenario::Produce | Scenario::Failover => ensure!(
                self.consume_mode.is_none() && !mode_swept,
                "--consume-mode and --sweep consume need consumers: --scenario e2e or consume"
            ),
            Scenario::Rebalance => {
                ensure!(
                    self.consume_mode != Some(ConsumeMode::Manual) && !mode_swept,
                    "--scenario rebalance measures a consumer group: no --consume-mode manual or \
                     --sweep consume"
                );
                ensure!(
                    rates.iter().all(|rate| *rate != Rate::Max),
                    "--scenario rebalance needs steady traffic: an open-loop --rate (e.g. 20k), \
                     not max"
                );
                ensure!(
                    self.messages.is_none(),
                    "--scenario rebalance runs for its --repeats: no --messages"
                );
                ensure!(
                    (1..=REPEATS_MAX).contains(&self.repeats),
                    "--repeats must be within [1, {REPEATS_MAX}]"
                );
            }
            Scenario::Consume | Scenario::E2e => {}
        }
        if let Some(ms) = self.session_timeout_ms {
            ensure!(
                SESSION_TIMEOUT_MS_RANGE.contains(&ms),
                "--session-timeout-ms must be within [{}, {}]",
                SESSION_TIMEOUT_MS_RANGE.start(),
                SESSION_TIMEOUT_MS_RANGE.end()
            );
        }
        // The cross product of the sweeps: each combination is one curve.
        let mut combinations: Vec<Vec<(SweepParam, u64)>> = vec![Vec::new()];
        for sweep in &self.sweep {
            let mut next = Vec::new();
            for combination in &combinations {
                for &value in &sweep.values {
                    let mut extended = combination.clone();
                    extended.push((sweep.param, value));
                    next.push(extended);
                }
            }
            combinations = next;
        }
        // `rebalance` measures both ways of leaving, one after the other, at every point.
        let leaves: Vec<Option<Leave>> = if rebalance {
            Leave::ALL.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        let total = combinations.len() * rates.len() * leaves.len();
        ensure!(total <= POINTS_MAX, "{total} points: at most {POINTS_MAX}");
        let mut points = Vec::with_capacity(total);
        for combination in &combinations {
            for &rate in &rates {
                for &leave in &leaves {
                    points.push(self.point(points.len(), combination, rate, leave)?);
                }
            }
        }
        ensure!(
            [
                self.broker.is_some(),
                self.brokers.is_some(),
                self.cluster.is_some()
            ]
            .iter()
            .filter(|given| **given)
            .count()
                <= 1,
            "--broker, --brokers and --cluster exclude each other"
        );
        if self.scenario == Scenario::Failover {
            ensure!(
                self.cluster.is_some_and(|size| size >= 3),
                "--scenario failover kills and restarts brokers: it needs a cluster this harness \
                 starts (--cluster 3)"
            );
            ensure!(
                self.acks == AcksArg::All,
                "--scenario failover measures acknowledged writes that survive: add --acks all"
            );
            ensure!(
                rates.iter().all(|rate| *rate != Rate::Max),
                "--scenario failover needs a steady open-loop --rate (default 20k), not max"
            );
            ensure!(
                (1..=ROUNDS_MAX).contains(&self.rounds),
                "--rounds must be within [1, {ROUNDS_MAX}]"
            );
            ensure!(
                self.messages.is_none() && self.partitions.unwrap_or(1) == 1,
                "--scenario failover runs one partition for its --rounds: no --messages or \
                 --partitions"
            );
        }
        if let Some(size) = self.cluster {
            ensure!(
                [1, 3, 5].contains(&size),
                "--cluster takes 1, 3 or 5 brokers (the controller quorum's sizes)"
            );
            ensure!(
                self.broker_cores == 0 && self.broker_spin_us == 0,
                "--broker-cores and --broker-spin-us are for the single broker: a --cluster \
                 broker runs one shard, sleeping when idle"
            );
        }
        if let (Some(rf), Some(size)) = (self.replication_factor, self.cluster) {
            ensure!(
                (1..=size).contains(&u32::from(rf)),
                "--replication-factor {rf} needs as many brokers (--cluster {size})"
            );
        }
        if let (Some(rf), Some(min)) = (self.replication_factor, self.min_insync_replicas) {
            ensure!(
                min >= 1 && min <= rf,
                "--min-insync-replicas must be within [1, --replication-factor]"
            );
        }
        let broker = match (&self.broker, &self.brokers, self.cluster) {
            (Some(address), _, _) | (None, Some(address), _) => {
                ensure!(
                    self.sluice_bin.is_none()
                        && self.data_dir.is_none()
                        && self.broker_spin_us == 0,
                    "--sluice-bin, --data-dir and --broker-spin-us are for the broker this \
                     harness starts, not for --broker or --brokers"
                );
                let addresses = parse_brokers(address)?;
                ensure!(
                    self.broker_pid.is_none() || self.broker.is_some(),
                    "--broker-pid only applies with --broker"
                );
                BrokerTarget::External {
                    address: addresses.join(","),
                    pid: self.broker_pid,
                }
            }
            (None, None, Some(size)) => {
                ensure!(
                    self.broker_pid.is_none(),
                    "--broker-pid only applies with --broker"
                );
                BrokerTarget::Cluster {
                    binary: self.sluice_bin.clone(),
                    size,
                    data_dir: self.data_dir.clone(),
                    keep_data: self.keep_data,
                    session_timeout_ms: self.broker_session_timeout_ms,
                }
            }
            (None, None, None) => {
                ensure!(
                    self.broker_pid.is_none(),
                    "--broker-pid only applies with --broker"
                );
                BrokerTarget::Own {
                    binary: self.sluice_bin.clone(),
                    cores: self.broker_cores,
                    spin_us: self.broker_spin_us,
                    data_dir: self.data_dir.clone(),
                    keep_data: self.keep_data,
                }
            }
        };
        let output = if self.no_files {
            None
        } else {
            let name = self.name.clone().unwrap_or_else(default_name);
            ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "--name may hold letters, digits, `-`, `_` and `.` only"
            );
            Some((self.output_dir.clone(), name))
        };
        Ok(Plan {
            points,
            swept,
            broker,
            client_threads: self.client_threads,
            with_limits: self.with_limits,
            limits_duration: self.limits_duration,
            output,
            notes: self.note.clone(),
            progress: self.progress,
            command_line,
        })
    }

    /// The point for one sweep combination and rate (and, for `rebalance`, way of leaving).
    fn point(
        &self,
        index: usize,
        combination: &[(SweepParam, u64)],
        rate: Rate,
        leave: Option<Leave>,
    ) -> Result<PointSpec> {
        let rebalance = self.scenario == Scenario::Rebalance;
        let failover = self.scenario == Scenario::Failover;
        let mut message_size = self.message_size;
        let mut batch_messages = Some(self.batch);
        let mut batch_bytes = self.batch_bytes;
        let mut partitions = self.partitions.unwrap_or(if rebalance {
            REBALANCE_DEFAULT_PARTITIONS
        } else {
            1
        });
        let mut producers = self.producers;
        let mut consumers = self.consumers.unwrap_or(if rebalance {
            REBALANCE_DEFAULT_CONSUMERS
        } else {
            1
        });
        if failover {
            // One producer on one partition; the read-back check is the only consumer.
            consumers = 1;
        }
        let mut linger_ms = self.linger_ms;
        let mut consume_mode = match self.scenario {
            Scenario::Produce | Scenario::Failover => None,
            Scenario::Rebalance => Some(ConsumeMode::Group),
            Scenario::Consume | Scenario::E2e => {
                Some(self.consume_mode.unwrap_or(ConsumeMode::Manual))
            }
        };
        let small = |value: u64, what: &str| -> Result<u32> {
            u32::try_from(value)
                .ok()
                .filter(|v| (1..=CLIENTS_MAX).contains(v))
                .with_context(|| format!("{what} {value} is outside [1, {CLIENTS_MAX}]"))
        };
        for &(param, value) in combination {
            match param {
                SweepParam::Batch => {
                    batch_messages =
                        Some(u32::try_from(value).context("batch too large for a batch")?);
                    batch_bytes = None;
                }
                SweepParam::Size => message_size = value,
                SweepParam::Partitions => partitions = small(value, "partitions")?,
                SweepParam::Producers => producers = small(value, "producers")?,
                SweepParam::Consumers => consumers = small(value, "consumers")?,
                SweepParam::Linger => linger_ms = value as f64,
                SweepParam::Consume => {
                    consume_mode = Some(
                        ConsumeMode::from_code(value).context("unknown consume mode in a sweep")?,
                    );
                }
            }
        }
        ensure!(
            (MESSAGE_SIZE_MIN..=MESSAGE_SIZE_MAX).contains(&message_size),
            "message size {message_size} is outside [{MESSAGE_SIZE_MIN}, {MESSAGE_SIZE_MAX}]"
        );
        small(u64::from(partitions), "partitions")?;
        small(u64::from(producers), "producers")?;
        small(u64::from(consumers), "consumers")?;
        if rebalance {
            ensure!(
                consumers >= 2,
                "--scenario rebalance needs at least 2 consumers (one leaves, one takes over)"
            );
            ensure!(
                partitions >= consumers,
                "--scenario rebalance needs at least as many partitions as consumers, so the \
                 leaving one has partitions to move ({partitions} < {consumers})"
            );
        }
        let batch_bytes = match batch_bytes {
            Some(bytes) => {
                batch_messages = None;
                bytes
            }
            None => {
                let messages = batch_messages.unwrap_or(1);
                ensure!(messages >= 1, "a batch holds at least one message");
                batch_size_for(messages, message_size)?
            }
        };
        ensure!(
            (1024..=wire::limits::BATCH_SIZE_MAX as u64).contains(&batch_bytes),
            "batch size {batch_bytes} B is outside [1 KiB, {} B]: fewer or smaller messages \
             per batch",
            wire::limits::BATCH_SIZE_MAX
        );
        let buffer_bytes = self.buffer_bytes.unwrap_or_else(|| {
            ((self.max_in_flight as u64 + 2) * batch_bytes).clamp(1 << 20, u64::from(u32::MAX))
        });
        ensure!(
            buffer_bytes >= batch_bytes,
            "--buffer-bytes {buffer_bytes} B cannot hold one batch ({batch_bytes} B)"
        );
        let mut labels: Vec<String> = combination
            .iter()
            .map(|(param, value)| format!("{}={}", param.name(), param.value_label(*value)))
            .collect();
        if let Some(leave) = leave {
            labels.push(format!("leave={}", leave.name()));
        }
        let curve = if labels.is_empty() {
            "all".to_owned()
        } else {
            labels.join(" ")
        };
        let amount = match (self.scenario, self.messages) {
            (_, Some(count)) => {
                ensure!(count >= 1, "--messages must be at least 1");
                Amount::Messages { count }
            }
            (Scenario::Consume, None) if self.topic.is_none() => {
                Amount::Messages { count: 1_000_000 }
            }
            (_, None) => Amount::Duration {
                seconds: self.duration.as_secs_f64(),
            },
        };
        if let Rate::PerSecond(rate) = rate {
            ensure!(
                rate >= f64::from(producers) / 3600.0,
                "rate {rate}/s is below one message per hour per producer"
            );
        }
        Ok(PointSpec {
            index,
            curve,
            scenario: self.scenario,
            message_size,
            batch_messages,
            batch_bytes,
            linger_ms,
            max_in_flight: self.max_in_flight,
            buffer_bytes,
            one_outstanding: self.outstanding == Some(1),
            open_loop_batches: self.open_loop_batches,
            client_spin: Duration::from_micros(self.client_spin_us),
            fetch_partition_bytes: self
                .fetch_partition_bytes
                .unwrap_or(32 * batch_bytes)
                .clamp(1 << 20, 32 << 20),
            acks: self.acks,
            durability: self.durability,
            durability_interval_ms: self.durability_interval_ms,
            partitions,
            producers,
            consumers,
            target_rate: match rate {
                Rate::Max => None,
                Rate::PerSecond(rate) => Some(rate),
            },
            amount,
            warmup_s: self.warmup.as_secs_f64(),
            drain_timeout_s: self.drain_timeout.as_secs_f64(),
            topic: self.topic.clone(),
            consume_mode,
            group: (consume_mode == Some(ConsumeMode::Group)).then(|| {
                match (self.session_timeout_ms, rebalance) {
                    (Some(ms), _) => GroupSpec::with_session_timeout(ms),
                    (None, true) => {
                        GroupSpec::with_session_timeout(REBALANCE_DEFAULT_SESSION_TIMEOUT_MS)
                    }
                    (None, false) => GroupSpec::CLIENT_DEFAULT,
                }
            }),
            rebalance: leave.map(|leave| RebalanceSpec {
                leave,
                repeats: self.repeats,
            }),
            replication_factor: self.replication_factor.or(failover.then_some(3)),
            min_insync_replicas: self.min_insync_replicas.or(failover.then_some(2)),
            rounds: failover.then_some(self.rounds),
        })
    }
}

/// The producer `batch_size_bytes` that cuts a batch at exactly `messages` messages of
/// `message_size` bytes: the client cuts a batch when its estimated size reaches the limit, and
/// the estimate of `messages` such records is what [`wire::BatchBuilder`] computes (the client
/// uses the same arithmetic). At least the client's 1 KiB floor.
pub fn batch_size_for(messages: u32, message_size: u64) -> Result<u64> {
    let empty = wire::BatchBuilder::new().estimated_size() as u64;
    let mut one = wire::BatchBuilder::new();
    let value = vec![0u8; usize::try_from(message_size)?];
    one.push(0, None, &value, &[], None);
    let per_record = one.estimated_size() as u64 - empty;
    let bytes = empty + u64::from(messages) * per_record;
    if bytes > wire::limits::BATCH_SIZE_MAX as u64 {
        bail!(
            "{messages} messages of {message_size} B ({bytes} B) exceed the batch limit of {} B",
            wire::limits::BATCH_SIZE_MAX
        );
    }
    Ok(bytes.max(1024))
}

/// `arg` as a shell word: unchanged when plain, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// `bench-20261122-101500` (UTC).
fn default_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("bench-{}", utc_compact(now))
}

/// `YYYYMMDD-HHMMSS` in UTC for seconds since the epoch.
pub fn utc_compact(epoch_s: u64) -> String {
    utc_format(epoch_s, "%Y%m%d-%H%M%S")
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub fn utc_readable(epoch_s: u64) -> String {
    utc_format(epoch_s, "%Y-%m-%d %H:%M:%S UTC")
}

/// A Unix time in UTC through `jiff`'s civil-date arithmetic, in `format` (strftime); a time
/// beyond jiff's range (year 9999) is shown as the range's end.
fn utc_format(epoch_s: u64, format: &str) -> String {
    let seconds = i64::try_from(epoch_s).unwrap_or(i64::MAX);
    let timestamp = jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::MAX);
    timestamp.strftime(format).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["sluice-bench"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap()
    }

    /// Sizes, counts, rates and durations parse with their suffixes and refuse malformed
    /// values; counts format back compactly.
    #[test]
    fn number_syntax() {
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_count("50k"), Ok(50_000));
        assert_eq!(parse_count("1.5m"), Ok(1_500_000));
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("10k"), Ok(Rate::PerSecond(10_000.0)));
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1").is_err());
        assert_eq!(fmt_count(50_000.0), "50k");
        assert_eq!(fmt_count(1_500_000.0), "1.50m");
        assert_eq!(fmt_count(2_000_000.0), "2m");
    }

    /// The spin settings reach the client's points and the started broker, and are refused
    /// where they cannot apply (a broker this harness does not start).
    #[test]
    fn spin_settings() {
        let plan = parse(&[
            "--client-spin-us",
            "150",
            "--broker-spin-us",
            "300",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        assert_eq!(plan.points[0].client_spin, Duration::from_micros(150));
        assert!(matches!(
            plan.broker,
            BrokerTarget::Own { spin_us: 300, .. }
        ));
        let plain = parse(&["--no-files"]).into_plan().unwrap();
        assert_eq!(plain.points[0].client_spin, Duration::ZERO);
        assert!(matches!(plain.broker, BrokerTarget::Own { spin_us: 0, .. }));
        for refused in [
            &[
                "--broker",
                "127.0.0.1:9092",
                "--broker-spin-us",
                "100",
                "--no-files",
            ][..],
            &["--cluster", "3", "--broker-spin-us", "100", "--no-files"][..],
        ] {
            assert!(parse(refused).into_plan().is_err(), "{refused:?}");
        }
    }

    /// A producer buffer of one message is accepted at `--batch 1` (the one-outstanding
    /// point), a buffer smaller than one batch is refused, and `--outstanding` takes only 1.
    #[test]
    fn buffer_of_one_message_and_one_outstanding() {
        let plan = parse(&[
            "--batch",
            "1",
            "--buffer-bytes",
            "2k",
            "--outstanding",
            "1",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        let point = &plan.points[0];
        assert!(point.one_outstanding);
        assert_eq!(point.buffer_bytes, 2048);
        // One 1 KiB message fits, two do not.
        assert!(point.buffer_bytes >= point.batch_bytes);
        assert!(point.buffer_bytes < batch_size_for(2, 1024).unwrap());
        assert!(point.describe().contains("outstanding=1"));
        assert!(
            parse(&["--batch", "16", "--buffer-bytes", "2k", "--no-files"])
                .into_plan()
                .is_err()
        );
        assert!(parse(&["--outstanding", "2", "--no-files"])
            .into_plan()
            .is_err());
        assert!(!parse(&["--no-files"]).into_plan().unwrap().points[0].one_outstanding);
    }

    /// A sweep times the rates gives one point per pair, grouped by curve.
    #[test]
    fn sweep_expands_into_points() {
        let plan = parse(&["--sweep", "batch=1,16", "--rates", "10k,max", "--no-files"])
            .into_plan()
            .unwrap();
        let labels: Vec<(String, String)> = plan
            .points
            .iter()
            .map(|p| (p.curve.clone(), p.rate_label()))
            .collect();
        assert_eq!(
            labels,
            [
                ("batch=1".into(), "10k".into()),
                ("batch=1".into(), "max".into()),
                ("batch=16".into(), "10k".into()),
                ("batch=16".into(), "max".into()),
            ]
        );
        assert_eq!(plan.points[0].batch_messages, Some(1));
        assert!(plan.points[2].batch_bytes > 16 * 1024);
        assert_eq!(plan.points[1].producer_load(), Load::Closed);
        assert!(plan.output.is_none());
    }

    /// The batch size in bytes holds exactly N messages under the client's cutting rule.
    #[test]
    fn batch_size_holds_exactly_n_messages() {
        let per = batch_size_for(2, 1024).unwrap() - batch_size_for(1, 1024).unwrap();
        assert!(per > 1024 && per < 1100, "{per}");
        assert_eq!(batch_size_for(1, 16).unwrap(), 1024); // the client's floor
        assert!(batch_size_for(100_000, 1024).is_err());
    }

    /// Flags that cannot make a plan (too small messages, a rate for the consume scenario,
    /// `--topic` outside it, `--broker-pid` without `--broker`, a run name that is a path, an
    /// unknown sweep parameter) are refused.
    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--message-size", "8"]).into_plan().is_err());
        assert!(parse(&["--scenario", "consume", "--rate", "10k"])
            .into_plan()
            .is_err());
        assert!(parse(&["--topic", "t"]).into_plan().is_err());
        assert!(parse(&["--broker-pid", "1"]).into_plan().is_err());
        assert!(parse(&["--name", "../x"]).into_plan().is_err());
        assert!(Args::try_parse_from(["sluice-bench", "--sweep", "color=1"]).is_err());
    }

    /// `--sweep consume=manual,group` gives two points that differ only in the mode (and
    /// its group settings), back to back.
    #[test]
    fn consume_mode_sweeps() {
        assert_eq!(
            parse_sweep("consume=group,manual"),
            Ok(Sweep {
                param: SweepParam::Consume,
                values: vec![1, 0]
            })
        );
        assert!(parse_sweep("consume=sometimes").is_err());
        let plan = parse(&[
            "--batch",
            "256",
            "--sweep",
            "consume=manual,group",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        let points = &plan.points;
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].curve, "consume=manual");
        assert_eq!(points[1].curve, "consume=group");
        assert_eq!(points[0].consume_mode, Some(ConsumeMode::Manual));
        assert_eq!(points[1].consume_mode, Some(ConsumeMode::Group));
        assert_eq!(points[0].group, None);
        assert_eq!(points[1].group, Some(GroupSpec::CLIENT_DEFAULT));
        assert_eq!(points[0].batch_messages, points[1].batch_messages);
        assert!(points[1].describe().contains("mode=group"));
        assert_eq!(plan.swept, [SweepParam::Consume]);
        // Default: manual; produce has no consumers.
        let plain = parse(&["--no-files"]).into_plan().unwrap();
        assert_eq!(plain.points[0].consume_mode, Some(ConsumeMode::Manual));
        assert_eq!(plain.points[0].mode_label(), "manual");
        let produce = parse(&["--scenario", "produce", "--no-files"])
            .into_plan()
            .unwrap();
        assert_eq!(produce.points[0].consume_mode, None);
        assert_eq!(produce.points[0].mode_label(), "-");
        // --consume-mode group with a session timeout: heartbeat a third of it.
        let group = parse(&[
            "--consume-mode",
            "group",
            "--session-timeout-ms",
            "1500",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        assert_eq!(
            group.points[0].group,
            Some(GroupSpec {
                session_timeout_ms: 1500,
                heartbeat_interval_ms: 500
            })
        );
    }

    /// `--scenario rebalance`: its own defaults, and two points (graceful, then crash).
    #[test]
    fn rebalance_plan() {
        let plan = parse(&["--scenario", "rebalance", "--no-files"])
            .into_plan()
            .unwrap();
        assert_eq!(plan.points.len(), 2);
        let (graceful, crash) = (&plan.points[0], &plan.points[1]);
        assert_eq!(graceful.curve, "leave=graceful");
        assert_eq!(crash.curve, "leave=crash");
        assert_eq!(
            graceful.rebalance,
            Some(RebalanceSpec {
                leave: Leave::Graceful,
                repeats: 5
            })
        );
        assert_eq!(crash.rebalance.map(|r| r.leave), Some(Leave::Crash));
        assert_eq!((graceful.consumers, graceful.partitions), (3, 6));
        assert_eq!(graceful.target_rate, Some(REBALANCE_DEFAULT_RATE));
        assert_eq!(graceful.consume_mode, Some(ConsumeMode::Group));
        assert_eq!(
            graceful.group,
            Some(GroupSpec {
                session_timeout_ms: 2000,
                heartbeat_interval_ms: 666
            })
        );
        let small = parse(&[
            "--scenario",
            "rebalance",
            "--repeats",
            "1",
            "--session-timeout-ms",
            "600",
            "--consumers",
            "2",
            "--partitions",
            "2",
            "--rate",
            "2k",
            "--sweep",
            "batch=16,64",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        let curves: Vec<&str> = small.points.iter().map(|p| p.curve.as_str()).collect();
        assert_eq!(
            curves,
            [
                "batch=16 leave=graceful",
                "batch=16 leave=crash",
                "batch=64 leave=graceful",
                "batch=64 leave=crash"
            ]
        );
        assert_eq!(
            small.points[0].group.map(|g| g.heartbeat_interval_ms),
            Some(200)
        );
        assert_eq!(small.points[0].rebalance.map(|r| r.repeats), Some(1));
        // A long session timeout: the heartbeat stays at 1 s.
        assert_eq!(
            GroupSpec::with_session_timeout(30_000).heartbeat_interval_ms,
            HEARTBEAT_MAX_MS
        );
    }

    /// Group settings that make no sense are refused before anything runs.
    #[test]
    fn bad_group_arguments_are_refused() {
        let refused = |args: &[&str]| {
            let mut all = args.to_vec();
            all.push("--no-files");
            parse(&all).into_plan().is_err()
        };
        assert!(refused(&[
            "--scenario",
            "produce",
            "--consume-mode",
            "group"
        ]));
        assert!(refused(&[
            "--scenario",
            "produce",
            "--sweep",
            "consume=manual,group"
        ]));
        assert!(refused(&["--scenario", "rebalance", "--rate", "max"]));
        assert!(refused(&["--scenario", "rebalance", "--consumers", "1"]));
        assert!(refused(&[
            "--scenario",
            "rebalance",
            "--consumers",
            "4",
            "--partitions",
            "3"
        ]));
        assert!(refused(&[
            "--scenario",
            "rebalance",
            "--consume-mode",
            "manual"
        ]));
        assert!(refused(&[
            "--scenario",
            "rebalance",
            "--sweep",
            "consume=manual,group"
        ]));
        assert!(refused(&["--scenario", "rebalance", "--repeats", "0"]));
        assert!(refused(&["--scenario", "rebalance", "--messages", "10k"]));
        assert!(refused(&[
            "--consume-mode",
            "group",
            "--session-timeout-ms",
            "1"
        ]));
        assert!(!refused(&[
            "--scenario",
            "consume",
            "--consume-mode",
            "group"
        ]));
    }

    /// `--brokers` takes a list of distinct `host:port`s; anything else is refused.
    #[test]
    fn brokers_list() {
        assert_eq!(
            parse_brokers("127.0.0.1:9092, 127.0.0.1:9093,localhost:1").unwrap(),
            ["127.0.0.1:9092", "127.0.0.1:9093", "localhost:1"]
        );
        assert!(parse_brokers("").is_err());
        assert!(parse_brokers("127.0.0.1").is_err());
        assert!(parse_brokers("127.0.0.1:0").is_err());
        assert!(parse_brokers(":9092").is_err());
        assert!(parse_brokers("a:1,a:1").is_err());
        assert!(parse_brokers("a:1,,b:2").is_err());
        let plan = parse(&["--brokers", "a:1,b:2", "--no-files"])
            .into_plan()
            .unwrap();
        match plan.broker {
            BrokerTarget::External { address, pid } => {
                assert_eq!((address.as_str(), pid), ("a:1,b:2", None));
            }
            other => panic!("{other:?}"),
        }
    }

    /// `--cluster` starts brokers with replicated topics; `failover` needs it, acks=all and
    /// an open-loop rate, and defaults to RF 3, min.insync 2, 20k msgs/s.
    #[test]
    fn cluster_and_failover_plans() {
        let refused = |args: &[&str]| {
            let mut all = args.to_vec();
            all.push("--no-files");
            parse(&all).into_plan().is_err()
        };
        let plan = parse(&[
            "--cluster",
            "3",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
            "--acks",
            "all",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        assert!(matches!(
            plan.broker,
            BrokerTarget::Cluster {
                size: 3,
                session_timeout_ms: 3000,
                ..
            }
        ));
        let point = &plan.points[0];
        assert_eq!(
            (point.replication_factor, point.min_insync_replicas),
            (Some(3), Some(2))
        );
        assert!(point.describe().contains("acks=all rf=3 min-isr=2"));
        assert_eq!(point.rounds, None);
        // The single-broker default is unchanged.
        let plain = parse(&["--no-files"]).into_plan().unwrap();
        assert!(matches!(plain.broker, BrokerTarget::Own { .. }));
        assert_eq!(plain.points[0].replication_factor, None);

        let failover = parse(&[
            "--scenario",
            "failover",
            "--cluster",
            "3",
            "--acks",
            "all",
            "--no-files",
        ])
        .into_plan()
        .unwrap();
        let point = &failover.points[0];
        assert_eq!(point.rounds, Some(10));
        assert_eq!(point.target_rate, Some(FAILOVER_DEFAULT_RATE));
        assert_eq!(
            (point.replication_factor, point.min_insync_replicas),
            (Some(3), Some(2))
        );
        assert_eq!((point.partitions, point.producers), (1, 1));
        assert_eq!(point.consume_mode, None);

        assert!(refused(&["--scenario", "failover", "--acks", "all"]));
        assert!(refused(&["--scenario", "failover", "--cluster", "3"]));
        assert!(refused(&[
            "--scenario",
            "failover",
            "--cluster",
            "3",
            "--acks",
            "all",
            "--rate",
            "max"
        ]));
        assert!(refused(&[
            "--scenario",
            "failover",
            "--cluster",
            "3",
            "--acks",
            "all",
            "--rounds",
            "0"
        ]));
        assert!(refused(&["--cluster", "2"]));
        assert!(refused(&["--cluster", "3", "--broker", "a:1"]));
        assert!(refused(&["--brokers", "a:1", "--broker", "a:1"]));
        assert!(refused(&["--cluster", "3", "--replication-factor", "4"]));
        assert!(refused(&[
            "--replication-factor",
            "2",
            "--min-insync-replicas",
            "3"
        ]));
        assert!(refused(&["--cluster", "3", "--broker-cores", "2"]));
    }

    /// Arguments are quoted for a shell only when needed, single quotes included.
    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("--rate"), "--rate");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    /// UTC timestamps format as compact and readable dates, a leap day and a year's last
    /// second included.
    #[test]
    fn dates() {
        assert_eq!(utc_compact(0), "19700101-000000");
        assert_eq!(utc_readable(1_795_000_000), "2026-11-18 11:06:40 UTC");
        // A leap day, and the end of a leap year.
        assert_eq!(utc_readable(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert_eq!(utc_compact(1_735_689_599), "20241231-235959");
    }
}
