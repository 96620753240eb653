//! One measured point: the topic it uses, the message format, the shared counters of its tasks,
//! and the [`PointResult`] it produces (throughput, latency percentiles, CPU split, whether the
//! target rate was held, and what limited it). The workloads live in [`produce`], [`consume`],
//! [`e2e`], [`rebalance`] (consumer-group helpers in [`group`]) and [`failover`] (a cluster the
//! harness started); [`run_point`] picks one. Topics get the point's replication factor and
//! min.insync.replicas; a replicated one is used only once every replica is in sync.
//!
//! In group mode (`--consume-mode group`) the window starts only once the group is balanced:
//! consumers poll from the start (joining happens inside `poll`), the harness waits for their
//! `Assigned` events to cover every partition evenly, and only then fixes the timeline, so the
//! join is never counted as lost throughput.
//!
//! ```text
//!  t0 ──── warm-up ────┬──────── measured window ────────┬── drain ──▶
//!                 measure_start                    end of sends     last ack / receipt
//!  messages sent here are  │ messages whose intended send time     │ outstanding acks and
//!  sent and consumed but   │ falls here are measured (flag in the  │ consumers catch up, up
//!  not measured            │ message), CPU sampled at both ends    │ to --drain-timeout
//! ```
//!
//! Message value layout (little endian), so that a consumer in the same process can compute
//! end-to-end latency from the producer's clock ([`crate::schedule::now_ns`]):
//!
//! ```text
//!  0        8                         16                      message_size
//!  ├────────┼─────────────────────────┼───────────────────────┤
//!  intended  sent_ns | MEASURED << 63  filler (constant bytes)
//!  send ns
//! ```

pub mod consume;
pub mod e2e;
pub mod failover;
pub mod group;
pub mod produce;
pub mod rebalance;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use client::{Admin, ClientError, NewTopic};
use serde::Serialize;
use wire::protocol::ErrorCode;

use crate::args::{PointSpec, Scenario};
use crate::cpu::{CpuSample, CpuUsage};
use crate::held::Held;
use crate::histogram::Percentiles;
use crate::schedule::{instant_at, now_ns, LatencyPair};

/// The flag bit of the second timestamp: the message belongs to the measured window.
const MEASURED_BIT: u64 = 1 << 63;

/// Bytes of the timestamps at the start of every message.
pub const STAMP_BYTES: usize = 16;

/// The broker a point runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` for the client.
    pub address: String,
    /// Broker pids for CPU figures (summed; empty: unknown).
    pub broker_pids: Vec<u32>,
    /// The cluster this harness started, for `failover`.
    pub cluster: Option<crate::broker::SharedCluster>,
    /// Prefix of topic names (unique per run).
    pub topic_prefix: String,
}

/// A message value with room for the timestamps; clone it per message and stamp the copy.
pub fn payload_template(message_size: usize) -> Vec<u8> {
    (0..message_size.max(STAMP_BYTES))
        .map(|i| (i.wrapping_mul(131) % 251) as u8 | 1)
        .collect()
}

/// Writes the timestamps into a message value (at least [`STAMP_BYTES`] long).
pub fn stamp(value: &mut [u8], intended_ns: u64, sent_ns: u64, measured: bool) {
    let flagged = (sent_ns & !MEASURED_BIT) | if measured { MEASURED_BIT } else { 0 };
    if let Some(head) = value.get_mut(..STAMP_BYTES) {
        head[..8].copy_from_slice(&intended_ns.to_le_bytes());
        head[8..].copy_from_slice(&flagged.to_le_bytes());
    }
}

/// Reads the timestamps of a message: (intended ns, sent ns, measured), or `None` for a value
/// too short to carry them (not written by this harness).
pub fn read_stamp(value: &[u8]) -> Option<(u64, u64, bool)> {
    let intended = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let flagged = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((
        intended,
        flagged & !MEASURED_BIT,
        flagged & MEASURED_BIT != 0,
    ))
}

/// The measured window of a point: throughput counts the completions (acknowledgements or
/// receipts, of any message) that happen inside it. Duration mode: `[start, start +
/// duration)`; count mode: from `start` to the last completion (`end_ns` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of measurement (end of the warm-up).
    pub start_ns: u64,
    /// End of measurement, when fixed in advance.
    pub end_ns: Option<u64>,
}

impl Window {
    /// Whether a completion at `ns` counts.
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start_ns && self.end_ns.is_none_or(|end| ns < end)
    }

    /// Length in seconds; an open end closes at `last_done_ns`.
    pub fn seconds(&self, last_done_ns: u64) -> f64 {
        self.end_ns
            .unwrap_or(last_done_ns)
            .saturating_sub(self.start_ns) as f64
            / 1e9
    }
}

/// A [`Window`] that consumers read at every poll and the point sets once it knows it (group
/// mode: after the group is balanced). Unset, it contains nothing.
#[derive(Debug)]
pub struct WindowCell {
    start_ns: AtomicU64,
    /// `u64::MAX`: open end.
    end_ns: AtomicU64,
}

impl WindowCell {
    /// A window that contains nothing until [`WindowCell::set`].
    pub fn unset() -> WindowCell {
        WindowCell {
            start_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Fixes the window (the end is stored first, so a reader that sees the new start sees
    /// the new end).
    pub fn set(&self, window: Window) {
        self.end_ns
            .store(window.end_ns.unwrap_or(u64::MAX), Ordering::Release);
        self.start_ns.store(window.start_ns, Ordering::Release);
    }

    /// The window now.
    pub fn get(&self) -> Window {
        let start_ns = self.start_ns.load(Ordering::Acquire);
        let end_ns = self.end_ns.load(Ordering::Acquire);
        Window {
            start_ns,
            end_ns: (end_ns != u64::MAX).then_some(end_ns),
        }
    }
}

/// CPU sampled over a [`Window`]: at its start, and at its end when that is fixed in advance
/// (else when [`CpuWindow::finish`] is called).
#[derive(Debug)]
pub struct CpuWindow {
    start: tokio::task::JoinHandle<(CpuSample, u64)>,
    end: Option<tokio::task::JoinHandle<(CpuSample, u64)>>,
    broker_pids: Vec<u32>,
}

impl CpuWindow {
    /// Schedules the samples of `window`.
    pub fn start(window: Window, broker_pids: &[u32]) -> CpuWindow {
        let sample_at = |at_ns: u64| {
            let pids = broker_pids.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep_until(instant_at(at_ns)).await;
                (CpuSample::take(&pids), now_ns())
            })
        };
        CpuWindow {
            start: sample_at(window.start_ns),
            end: window.end_ns.map(sample_at),
            broker_pids: broker_pids.to_vec(),
        }
    }

    /// The CPU used over the window.
    pub async fn finish(self) -> CpuUsage {
        let end = match self.end {
            Some(end) => end.await.ok(),
            None => Some((CpuSample::take(&self.broker_pids), now_ns())),
        };
        match (self.start.await.ok(), end) {
            (Some((start, start_ns)), Some((end, end_ns))) => {
                start.until(&end, end_ns.saturating_sub(start_ns) as f64 / 1e9)
            }
            _ => CpuUsage::default(),
        }
    }
}

/// Counters shared by the tasks of one point.
#[derive(Debug, Default)]
pub struct PointState {
    /// Messages acknowledged (all, warm-up included): what consumers must receive.
    pub acked: AtomicU64,
    /// Messages received by all consumers (all, warm-up included).
    pub received: AtomicU64,
    /// Tells consumers to stop after their current poll.
    pub stop: AtomicBool,
    /// Tells producers' send loops to stop before their next message (`rebalance`, whose
    /// length is not known in advance).
    pub stop_sends: AtomicBool,
}

impl PointState {
    /// Acknowledged messages so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Received messages so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }
}

/// Messages and bytes that went through one side (producers or consumers) in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flow {
    /// Messages completed (acknowledged, or received) inside the window.
    pub messages: u64,
    /// Their value bytes.
    pub bytes: u64,
    /// Messages per second over the window.
    pub msgs_per_s: f64,
    /// Megabytes (10^6 B) of values per second.
    pub mb_per_s: f64,
    /// Messages that failed (produce errors).
    pub failed: u64,
}

impl Flow {
    /// A flow of `messages` of `message_size` bytes over `window_s`.
    pub fn new(messages: u64, message_size: u64, window_s: f64, failed: u64) -> Flow {
        Flow::with_bytes(messages, messages * message_size, window_s, failed)
    }

    /// A flow of `messages` totalling `bytes` over `window_s`.
    pub fn with_bytes(messages: u64, bytes: u64, window_s: f64, failed: u64) -> Flow {
        let per_s = |x: f64| if window_s > 0.0 { x / window_s } else { 0.0 };
        Flow {
            messages,
            bytes,
            msgs_per_s: per_s(messages as f64),
            mb_per_s: per_s(bytes as f64) / 1e6,
            failed,
        }
    }
}

/// The produced and consumed flows of a point whose producers and consumers ran at once, with
/// the consumers' window in seconds.
pub fn flows(
    spec: &PointSpec,
    window: &Window,
    produced: &produce::ProducersOutcome,
    consumed: &consume::ConsumersOutcome,
) -> (Flow, Flow, f64) {
    let produce_window_s = window.seconds(produced.last_done_ns);
    let produced_flow = Flow::new(
        produced.in_window,
        spec.message_size,
        produce_window_s,
        produced.failed,
    );
    let window_s = window.seconds(consumed.last_done_ns);
    let consumed_flow = Flow::with_bytes(consumed.in_window, consumed.bytes_in_window, window_s, 0);
    (produced_flow, consumed_flow, window_s)
}

/// A latency measured both ways (see [`crate::schedule`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// From the intended send time (coordinated-omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time.
    pub uncorrected: Percentiles,
}

impl From<&LatencyPair> for LatencySummary {
    fn from(pair: &LatencyPair) -> Self {
        LatencySummary {
            corrected: pair.corrected.percentiles(),
            uncorrected: pair.uncorrected.percentiles(),
        }
    }
}

/// Where the producer threads' time went over the measured window (summed over producers).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoopStats {
    /// Share of the time asleep waiting for the schedule (headroom).
    pub waiting_share: f64,
    /// Share inside `Producer::enqueue` (mostly waiting for buffer room: back-pressure from
    /// the client's sender task or the broker).
    pub enqueue_share: f64,
    /// The rest: building and stamping messages, the harness's own work.
    pub busy_share: f64,
    /// Largest lag behind the schedule seen at the end of the sends, ms.
    pub lag_ms: f64,
    /// Messages the schedule wanted sent in the window that were never sent.
    pub unsent: u64,
    /// Messages the schedule wanted sent in the window.
    pub scheduled: u64,
}

/// Everything measured at one point.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    /// What was run.
    pub spec: PointSpec,
    /// Measured window in seconds (the duration, or in count mode from the end of the warm-up
    /// to the last completion).
    pub window_s: f64,
    /// Acknowledged produces (produce, e2e).
    pub produced: Option<Flow>,
    /// Received messages (consume, e2e).
    pub consumed: Option<Flow>,
    /// The headline throughput: produced for `produce`, consumed otherwise.
    pub msgs_per_s: f64,
    /// The headline throughput in MB/s (10^6 bytes of message values).
    pub mb_per_s: f64,
    /// Produce-acknowledgement latency.
    pub produce_latency: Option<LatencySummary>,
    /// End-to-end latency (e2e only).
    pub e2e_latency: Option<LatencySummary>,
    /// CPU of broker and client over the window.
    pub cpu: CpuUsage,
    /// Producer threads' time split.
    pub producer_loop: Option<LoopStats>,
    /// Open loop: whether the target rate was held, why not, and the slices of the window
    /// ([`crate::held`]; `None` for a closed loop).
    pub held: Option<Held>,
    /// CPU microseconds per message of broker and client (see [`CpuPerMessage`]).
    pub cpu_per_msg: CpuPerMessage,
    /// Why not, and other problems (errors, timeouts).
    pub problems: Vec<String>,
    /// What limited this point (see [`verdict`]).
    pub verdict: String,
    /// True when the client, not the broker, was the limit.
    pub client_bound: bool,
    /// `rebalance`: the rebalance times and their verdict.
    pub rebalance: Option<rebalance::RebalanceOutcome>,
    /// `failover`: the unavailability after each leader kill and the loss check.
    pub failover: Option<failover::FailoverOutcome>,
}

/// CPU time per message of broker and client over the measured window: each side's CPU
/// seconds per wall second ([`CpuUsage`]) divided by the messages per second
/// ([`PointResult::cpu_rate`]: in e2e the mean of the produced and received rates, else the
/// headline rate). In e2e a message is produced and consumed, so its cost covers both. The client is this whole
/// process: the client library and the harness's own work (building, stamping and timing
/// messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuPerMessage {
    /// Broker CPU µs per message (`None`: broker CPU unknown, or nothing achieved).
    pub broker_us: Option<f64>,
    /// Client CPU µs per message.
    pub client_us: Option<f64>,
}

impl CpuPerMessage {
    /// The CPU per message of `cpu` at `msgs_per_s`.
    pub fn of(cpu: &CpuUsage, msgs_per_s: f64) -> CpuPerMessage {
        let per_message = |cores: Option<f64>| {
            cores
                .filter(|_| msgs_per_s > 0.0)
                .map(|cores| cores * 1e6 / msgs_per_s)
        };
        CpuPerMessage {
            broker_us: per_message(cpu.broker_cores),
            client_us: per_message(cpu.client_cores),
        }
    }

    /// `4.1 + 6.3`: broker + client µs per message, for tables.
    pub fn short(&self) -> String {
        let show = |us: Option<f64>| us.map_or_else(|| "?".to_owned(), |us| format!("{us:.1}"));
        format!("{} + {}", show(self.broker_us), show(self.client_us))
    }
}

impl PointResult {
    /// The messages per second [`CpuPerMessage`] divides by: in e2e the mean of the produced
    /// and the received rates (a consumer that falls behind would otherwise charge the
    /// producer's and the broker's produce work to fewer messages), else the headline rate.
    pub fn cpu_rate(&self) -> f64 {
        match (&self.produced, &self.consumed) {
            (Some(produced), Some(consumed)) => (produced.msgs_per_s + consumed.msgs_per_s) / 2.0,
            _ => self.msgs_per_s,
        }
    }

    /// Open loop: whether the target rate was held (`None` for a closed loop).
    pub fn sustained(&self) -> Option<bool> {
        self.held.as_ref().map(|held| held.held)
    }

    /// The latency to plot and to headline: end-to-end for e2e, produce otherwise.
    pub fn headline_latency(&self) -> Option<&Percentiles> {
        self.e2e_latency
            .as_ref()
            .or(self.produce_latency.as_ref())
            .map(|summary| &summary.corrected)
    }

    /// True when the point may be drawn on a curve (and compared with the peers): closed
    /// loop, or open loop that held its rate, without errors, and not a `rebalance` point
    /// (whose consumers pause on purpose).
    pub fn plottable(&self) -> bool {
        self.sustained() != Some(false)
            && self.problems.is_empty()
            && self.msgs_per_s > 0.0
            && self.rebalance.is_none()
            && self.failover.is_none()
    }
}

/// Runs one point.
pub async fn run_point(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    let mut result = match spec.scenario {
        Scenario::Produce => produce::run(spec, target).await?,
        Scenario::Consume => consume::run(spec, target).await?,
        Scenario::E2e => e2e::run(spec, target).await?,
        Scenario::Rebalance => rebalance::run(spec, target).await?,
        Scenario::Failover => failover::run(spec, target).await?,
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let (verdict, client_bound) = match (&result.rebalance, &result.failover) {
        (Some(outcome), _) => (outcome.verdict(), false),
        (None, Some(outcome)) => (outcome.verdict(), false),
        (None, None) => verdict(&result, cores),
    };
    result.verdict = verdict;
    result.client_bound = client_bound;
    result.cpu_per_msg = CpuPerMessage::of(&result.cpu, result.cpu_rate());
    Ok(result)
}

/// The consumer group of a point: fresh per point and per run (`bench-<pid>-<run>-<point>`),
/// so no committed offset or member of an earlier point is found.
pub fn group_id(spec: &PointSpec, target: &Target) -> String {
    format!("{}-{}", target.topic_prefix, spec.index)
}

/// Share of one core above which a thread counts as saturated.
const SATURATED_CORES: f64 = 0.85;

/// Share of the machine's cores above which the shared CPU counts as the limit: with 10 ms
/// accounting ticks and threads that block on each other, a 2-core machine at 80 % is as
/// busy as it gets in practice.
const SATURATED_MACHINE: f64 = 0.80;

/// What limited a point, from the CPU split, the busiest threads and the producer loop, and
/// whether that was the client. Heuristic, stated in the report:
///
/// 1. an open-loop point that held its rate was limited by nothing (it says so, with the
///    headroom);
/// 2. a client thread at ≥ 0.85 core while no broker thread is → the client;
/// 3. a broker thread at ≥ 0.85 core while no client thread is → the broker;
/// 4. broker, client and other processes together using ≥ 80 % of the machine's cores → the
///    shared CPU; the client is called the bottleneck when it used at least as much CPU as
///    the broker;
/// 5. e2e consumers receiving < 90 % of the produced rate → the consume path (fetch round
///    trips);
/// 6. producers mostly waiting in enqueue with CPU to spare → round trips: the in-flight
///    window over the broker's answer time (fsync, queueing) sets the rate;
/// 7. producer threads busy > 70 % of the time (not waiting) → the client's load generation;
/// 8. otherwise: not CPU-bound (latency-bound: batching, round trips).
pub fn verdict(result: &PointResult, machine_cores: f64) -> (String, bool) {
    let cpu = &result.cpu;
    let broker = cpu.broker_cores.unwrap_or(0.0);
    let client = cpu.client_cores.unwrap_or(0.0);
    let other = cpu.other_cores.unwrap_or(0.0);
    let thread = |t: &Option<crate::cpu::ThreadUse>| t.as_ref().map_or(0.0, |t| t.cores);
    let broker_thread = thread(&cpu.broker_busiest_thread);
    let client_thread = thread(&cpu.client_busiest_thread);
    let client_name = cpu
        .client_busiest_thread
        .as_ref()
        .map_or(String::new(), |t| t.name.clone());
    let split = format!("broker {broker:.2} + client {client:.2} + others {other:.2} cores");
    if result.sustained() == Some(true) {
        return (
            format!(
                "kept up; {split} of {machine_cores:.0} (idle {:.2})",
                (machine_cores - broker - client - other).max(0.0)
            ),
            false,
        );
    }
    if client_thread >= SATURATED_CORES && broker_thread < SATURATED_CORES {
        return (
            format!(
                "client-bound: client thread `{client_name}` at {client_thread:.2} core, \
                 busiest broker thread {broker_thread:.2}; {split}"
            ),
            true,
        );
    }
    if broker_thread >= SATURATED_CORES && client_thread < SATURATED_CORES {
        return (
            format!(
                "broker-bound: a broker thread at {broker_thread:.2} core, busiest client \
                 thread {client_thread:.2}; {split}"
            ),
            false,
        );
    }
    if broker + client + other >= SATURATED_MACHINE * machine_cores {
        let client_bound = client >= broker;
        let who = if client_bound {
            "the client used as much CPU as the broker or more: client-bound"
        } else {
            "the broker used most of it"
        };
        let who = if other >= 0.25 {
            format!("{who}; other processes took {other:.2} cores")
        } else {
            who.to_owned()
        };
        return (
            format!("CPU-bound (cores shared): {split}; {who}"),
            client_bound,
        );
    }
    if let (Some(produced), Some(consumed)) = (&result.produced, &result.consumed) {
        if consumed.msgs_per_s < 0.9 * produced.msgs_per_s {
            return (
                format!(
                    "consumer-bound: consumers received {:.0}/s of the {:.0}/s produced with \
                     CPU to spare (fetch round trips); {split}",
                    consumed.msgs_per_s, produced.msgs_per_s
                ),
                false,
            );
        }
    }
    if let Some(stats) = &result.producer_loop {
        if stats.enqueue_share > 0.5 {
            return (
                format!(
                    "round-trip-bound: producers waited for buffer room {:.0} % of the time \
                     with CPU to spare (the in-flight window over the produce round trip, \
                     client and broker, sets the rate); {split}",
                    stats.enqueue_share * 100.0
                ),
                false,
            );
        }
        if stats.busy_share > 0.7 {
            return (
                format!(
                    "client-bound: producer threads busy building messages {:.0} % of the \
                     time; {split}",
                    stats.busy_share * 100.0
                ),
                true,
            );
        }
    }
    (
        format!("not CPU-bound (latency/round-trip bound); {split}"),
        false,
    )
}

/// Creates the point's topic; returns its name.
pub async fn create_topic(spec: &PointSpec, target: &Target) -> Result<String> {
    let admin = Admin::new(target.address.clone())?;
    let name = format!("{}-{}", target.topic_prefix, spec.index);
    let durability = spec
        .durability
        .map(|kind| kind.to_durability(spec.durability_interval_ms));
    let new_topic = || {
        let mut topic = NewTopic::new(&name, spec.partitions);
        topic.durability = durability;
        // A batch of the point must fit the topic's limit (the broker's default is 8 MiB).
        if spec.batch_bytes > 8 << 20 {
            topic.max_batch_bytes = u32::try_from(spec.batch_bytes).ok();
        }
        if let Some(factor) = spec.replication_factor {
            topic = topic.with_replication_factor(factor);
        }
        if let Some(min) = spec.min_insync_replicas {
            topic = topic.with_min_insync_replicas(min);
        }
        topic
    };
    match admin.create_topic(new_topic()).await {
        Ok(()) => {}
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
            // Left over from an earlier run with the same prefix: start clean.
            admin.delete_topic(&name).await?;
            admin.create_topic(new_topic()).await?;
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create topic {name}"));
        }
    }
    if spec.replication_factor.is_some_and(|factor| factor > 1) {
        wait_fully_replicated(&admin, &name, TOPIC_READY_TIMEOUT).await?;
    }
    Ok(name)
}

/// Longest wait for a new replicated topic to have a leader and every replica in sync.
pub const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the metadata is asked while waiting for leaders and ISRs.
pub const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits until every partition of `topic` has a leader and all its replicas in the ISR;
/// returns the partitions' descriptions then.
pub async fn wait_fully_replicated(
    admin: &Admin,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<client::PartitionDescription>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match admin.describe_topic(topic).await {
            Ok(description)
                if description.partitions.iter().all(|p| {
                    p.leader.is_some() && !p.replicas.is_empty() && p.isr.len() == p.replicas.len()
                }) =>
            {
                return Ok(description.partitions);
            }
            Ok(description) => format!("{:?}", description.partitions),
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "topic {topic} was not fully replicated within {timeout:?}; last seen: {last}"
            );
        }
        tokio::time::sleep(METADATA_POLL_INTERVAL).await;
    }
}

/// Deletes a point's topic (frees its disk space); failures only warn.
pub async fn delete_topic(name: &str, target: &Target) {
    let result: Result<(), ClientError> =
        async { Admin::new(target.address.clone())?.delete_topic(name).await }.await;
    if let Err(error) = result {
        eprintln!("warning: cannot delete topic {name}: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps and the measured flag survive the round trip through a message.
    #[test]
    fn stamps_round_trip() {
        let mut value = payload_template(100);
        assert_eq!(value.len(), 100);
        stamp(&mut value, 123_456_789, 123_456_999, true);
        assert_eq!(read_stamp(&value), Some((123_456_789, 123_456_999, true)));
        stamp(&mut value, 5, 6, false);
        assert_eq!(read_stamp(&value), Some((5, 6, false)));
        assert_eq!(read_stamp(&value[..10]), None);
        assert_eq!(payload_template(3).len(), STAMP_BYTES);
    }

    /// Flows are per second over the window, MB in 10^6 bytes.
    #[test]
    fn flow_rates() {
        let flow = Flow::new(1000, 1024, 2.0, 0);
        assert_eq!(flow.msgs_per_s, 500.0);
        assert!((flow.mb_per_s - 0.512).abs() < 1e-9);
        assert_eq!(Flow::new(10, 1, 0.0, 0).msgs_per_s, 0.0);
    }

    /// A fixed window counts completions in [start, end); an open one from start on.
    #[test]
    fn windows() {
        let fixed = Window {
            start_ns: 10,
            end_ns: Some(20),
        };
        assert!(!fixed.contains(9) && fixed.contains(10) && fixed.contains(19));
        assert!(!fixed.contains(20));
        assert_eq!(fixed.seconds(1_000), 10e-9);
        let open = Window {
            start_ns: 10,
            end_ns: None,
        };
        assert!(open.contains(u64::MAX));
        assert_eq!(open.seconds(1_000_000_010), 1.0);
    }

    /// An unset cell contains nothing; once set it is the window it was given.
    #[test]
    fn window_cells() {
        let cell = WindowCell::unset();
        assert!(!cell.get().contains(u64::MAX - 1));
        let fixed = Window {
            start_ns: 10,
            end_ns: Some(20),
        };
        cell.set(fixed);
        assert_eq!(cell.get(), fixed);
        let open = Window {
            start_ns: 5,
            end_ns: None,
        };
        cell.set(open);
        assert_eq!(cell.get(), open);
    }
}
