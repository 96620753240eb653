//! Consumers, and the consume-only scenario (a catch-up read of data written beforehand).
//!
//! Each consumer is one [`client::Consumer`] on its own tokio task. In manual mode it is
//! assigned the partitions `p` with `p % consumers == its index`, reading from the earliest
//! offset; in group mode it subscribes to the topic in the point's group (earliest offset when
//! nothing is committed, at-least-once auto-commit) and [`Prepared::assignments`] follows what
//! the group gives it. After each poll it reads the clock once (records of one poll arrived
//! together) and, in e2e, records each measured message's end-to-end latency from the
//! timestamps the producer wrote into it. Records are read in place (zero-copy views): the
//! harness copies nothing per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use client::{Admin, Consumer, ConsumerConfig, Offset, Records, TopicPartition};

use super::group::{group_config, Assignments, Receipts};
use super::produce::{start_all, timeline};
use super::{
    create_topic, delete_topic, group_id, read_stamp, CpuPerMessage, CpuWindow, Flow, PointResult,
    PointState, Target, Window, WindowCell,
};
use crate::args::{Amount, ConsumeMode, GroupSpec, PointSpec};
use crate::held::{SliceLayout, SliceRecorder};
use crate::schedule::{now_ns, LatencyPair, Load};

/// Longest wait of one poll: how quickly a consumer notices `stop`.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Longest a catch-up read may take in all (it also stops when it makes no progress for the
/// drain timeout).
const READ_TIME_MAX: Duration = Duration::from_secs(600);

/// Longest wait for a group to be balanced beyond its session timeout: the broker delays the
/// first rebalance of an empty group by 300 ms (`--group-initial-rebalance-delay-ms`), a
/// cooperative hand-over takes two rebalances, each paced by heartbeats (at most 3 s apart).
const JOIN_SLACK: Duration = Duration::from_secs(30);

/// Longest wait for one consumer's close (commit and LeaveGroup).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a group of `spec` to be balanced.
pub fn join_timeout(spec: GroupSpec) -> Duration {
    Duration::from_millis(spec.session_timeout_ms) + JOIN_SLACK
}

/// What one consumer saw.
#[derive(Debug, Clone, Default)]
pub struct ConsumerOutcome {
    /// End-to-end latency of measured messages (e2e only).
    pub latency: LatencyPair,
    /// Messages received inside the window.
    pub in_window: u64,
    /// Their value bytes.
    pub bytes_in_window: u64,
    /// Messages received in all.
    pub total: u64,
    /// Their value bytes.
    pub bytes_total: u64,
    /// Last receipt.
    pub last_done_ns: u64,
    /// Poll errors, and the first one.
    pub errors: u64,
    /// See `errors`.
    pub first_error: Option<String>,
    /// The window's slices (e2e open loop; created at the first measured receipt).
    pub slices: Option<SliceRecorder>,
}

/// A consumer set up to poll: in manual mode assigned its partitions, positions resolved; in
/// group mode subscribed (it joins the group at its first poll).
pub struct ReadyConsumer {
    consumer: Consumer,
    /// Its number in the point (member id for [`Assignments`]).
    pub id: usize,
}

/// The consumers of a point, and in group mode what the group assigned them.
pub struct Prepared {
    /// Ready to poll.
    pub consumers: Vec<ReadyConsumer>,
    /// Group mode: the members' holdings, from their rebalance events.
    pub assignments: Option<Arc<Assignments>>,
}

/// The client consumer settings of a point (without a group).
pub fn consumer_config(spec: &PointSpec, target: &Target) -> ConsumerConfig {
    ConsumerConfig {
        partition_max_bytes: u32::try_from(spec.fetch_partition_bytes).unwrap_or(u32::MAX),
        spin_before_park: spec.client_spin,
        ..ConsumerConfig::new(target.address.clone())
    }
}

/// A consumer of the point's group, subscribed to `topic`, reporting its rebalance events to
/// `assignments` as member `id`.
pub fn group_consumer(
    spec: &PointSpec,
    target: &Target,
    topic: &str,
    id: usize,
    assignments: &Arc<Assignments>,
) -> Result<ReadyConsumer> {
    let group = spec
        .group
        .context("group mode without group settings (a bug of the plan)")?;
    let config = consumer_config(spec, target).with_group(group_config(
        &group_id(spec, target),
        group,
        format!("bench-consumer-{id}"),
    ));
    let mut consumer = Consumer::new(config)?;
    let tracker = assignments.clone();
    consumer.on_rebalance(move |event| tracker.record(id, event));
    consumer.subscribe(&[topic])?;
    assignments.join(id);
    Ok(ReadyConsumer { consumer, id })
}

/// Creates the consumers of a point: in manual mode assigned and positioned at the earliest
/// offset, so that the measured polls do no offset lookups; in group mode subscribed. Consumers
/// beyond the partition count would get nothing and are not created (in either mode, so both
/// run the same number).
pub async fn prepare(spec: &PointSpec, target: &Target, topic: &str) -> Result<Prepared> {
    let count = spec.consumers.min(spec.partitions);
    if spec.consume_mode == Some(ConsumeMode::Group) {
        let assignments = Arc::new(Assignments::new(spec.partitions));
        let consumers = (0..count)
            .map(|id| group_consumer(spec, target, topic, id as usize, &assignments))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Prepared {
            consumers,
            assignments: Some(assignments),
        });
    }
    let mut consumers = Vec::new();
    for index in 0..count {
        let partitions: Vec<TopicPartition> = (0..spec.partitions)
            .filter(|p| p % spec.consumers == index)
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        let mut consumer = Consumer::new(consumer_config(spec, target))?;
        consumer.assign(&partitions);
        for tp in &partitions {
            consumer.seek(tp, Offset::Earliest)?;
            consumer.position(tp).await.with_context(|| {
                format!("cannot find the start of {}/{}", tp.topic, tp.partition)
            })?;
        }
        consumers.push(ReadyConsumer {
            consumer,
            id: index as usize,
        });
    }
    Ok(Prepared {
        consumers,
        assignments: None,
    })
}

/// What a consume loop does besides counting.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Receipts inside it count as throughput.
    pub window: Arc<WindowCell>,
    /// Record end-to-end latency (e2e, rebalance).
    pub record_latency: bool,
    /// Per-partition receipts (rebalance): redelivered records are then left out of the
    /// counts and latencies.
    pub receipts: Option<Arc<Receipts>>,
    /// e2e open loop: how long the window's schedule runs, to cut it into the slices of the
    /// held test ([`crate::held`]) from the window's start.
    pub slice_span_ns: Option<u64>,
}

/// One polling consumer.
pub struct ConsumerTask {
    /// Its number in the point.
    pub id: usize,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(Consumer, ConsumerOutcome)>,
}

impl ConsumerTask {
    /// Starts polling.
    pub fn spawn(
        ready: ReadyConsumer,
        state: &Arc<PointState>,
        settings: &LoopSettings,
    ) -> ConsumerTask {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn(consume_loop(
            ready.consumer,
            state.clone(),
            stop.clone(),
            settings.clone(),
        ));
        ConsumerTask {
            id: ready.id,
            stop,
            handle,
        }
    }

    /// Stops this consumer after its current poll and returns it (neither closed nor
    /// dropped: the caller decides how it leaves) with what it measured.
    pub async fn stop(self) -> Result<(Consumer, ConsumerOutcome)> {
        self.stop.store(true, Ordering::Release);
        self.handle.await.context("consumer task failed")
    }
}

/// Starts polling.
pub fn start(
    ready: Vec<ReadyConsumer>,
    state: &Arc<PointState>,
    settings: &LoopSettings,
) -> Vec<ConsumerTask> {
    ready
        .into_iter()
        .map(|ready| ConsumerTask::spawn(ready, state, settings))
        .collect()
}

/// Polls until told to stop (the point's `stop` or its own); returns the consumer.
async fn consume_loop(
    mut consumer: Consumer,
    state: Arc<PointState>,
    stop: Arc<AtomicBool>,
    settings: LoopSettings,
) -> (Consumer, ConsumerOutcome) {
    let mut outcome = ConsumerOutcome::default();
    while !state.stop.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
        match consumer.poll(POLL_TIMEOUT).await {
            Ok(records) => {
                let done_ns = now_ns();
                if records.is_empty() {
                    continue;
                }
                let fresh = tally(&records, done_ns, &settings, &mut outcome);
                state.received.fetch_add(fresh, Ordering::AcqRel);
            }
            Err(error) => {
                outcome.errors += 1;
                let retriable = error.is_retriable();
                outcome.first_error.get_or_insert_with(|| error.to_string());
                if !retriable {
                    break;
                }
                tokio::time::sleep(POLL_TIMEOUT).await;
            }
        }
    }
    (consumer, outcome)
}

/// Counts the records of one poll received at `done_ns` into `outcome`; returns how many were
/// new (not redelivered).
fn tally(
    records: &Records,
    done_ns: u64,
    settings: &LoopSettings,
    outcome: &mut ConsumerOutcome,
) -> u64 {
    let mut receipts = settings.receipts.as_deref().map(Receipts::lock);
    let window = settings.window.get();
    let slices = settings
        .slice_span_ns
        .and_then(|span_ns| SliceLayout::new(window.start_ns, span_ns));
    let mut count = 0u64;
    let mut bytes = 0u64;
    for record in records {
        if let Some(receipts) = &mut receipts {
            if !receipts.record(record.partition, record.offset, done_ns) {
                continue; // redelivered: counted by the receipts
            }
        }
        count += 1;
        bytes += record.value.len() as u64;
        if settings.record_latency {
            if let Some((intended_ns, sent_ns, true)) = read_stamp(record.value) {
                outcome.latency.record(intended_ns, sent_ns, done_ns);
                if let Some(layout) = &slices {
                    outcome
                        .slices
                        .get_or_insert_with(SliceRecorder::new)
                        .record(layout, intended_ns, done_ns);
                }
            }
        }
    }
    if window.contains(done_ns) {
        outcome.in_window += count;
        outcome.bytes_in_window += bytes;
    }
    outcome.total += count;
    outcome.bytes_total += bytes;
    outcome.last_done_ns = done_ns;
    count
}

/// Merged outcome of a point's consumers.
#[derive(Debug, Clone, Default)]
pub struct ConsumersOutcome {
    /// End-to-end latency.
    pub latency: LatencyPair,
    /// Messages received inside the window.
    pub in_window: u64,
    /// Their value bytes.
    pub bytes_in_window: u64,
    /// Messages received in all.
    pub total: u64,
    /// Their value bytes.
    pub bytes_total: u64,
    /// Last receipt.
    pub last_done_ns: u64,
    /// Problems (errors).
    pub problems: Vec<String>,
    /// The window's slices (e2e open loop).
    pub slices: Option<SliceRecorder>,
}

impl ConsumersOutcome {
    /// Adds one consumer's outcome.
    pub fn merge(&mut self, outcome: ConsumerOutcome) {
        self.latency.merge(&outcome.latency);
        self.in_window += outcome.in_window;
        self.bytes_in_window += outcome.bytes_in_window;
        self.total += outcome.total;
        self.bytes_total += outcome.bytes_total;
        self.last_done_ns = self.last_done_ns.max(outcome.last_done_ns);
        if let Some(slices) = &outcome.slices {
            self.slices
                .get_or_insert_with(SliceRecorder::new)
                .merge(slices);
        }
        if let Some(error) = outcome.first_error {
            self.problems
                .push(format!("{} consumer errors: {error}", outcome.errors));
        }
    }
}

/// Tells the consumers to stop, merges what they measured and closes them (in group mode:
/// commit and LeaveGroup), outside any measured window. The closes run together: one after
/// the other, each LeaveGroup would start a rebalance that fails the next one's final commit
/// (`IllegalGeneration`). A failed close only warns: the measurement is over, and under
/// at-least-once a lost final commit costs redeliveries, not records.
pub async fn stop(state: &PointState, tasks: Vec<ConsumerTask>) -> ConsumersOutcome {
    state.stop.store(true, Ordering::Release);
    let mut merged = ConsumersOutcome::default();
    let mut consumers = Vec::new();
    for task in tasks {
        match task.stop().await {
            Ok((consumer, outcome)) => {
                merged.merge(outcome);
                consumers.push(consumer);
            }
            Err(error) => merged.problems.push(format!("{error:#}")),
        }
    }
    let closes = consumers
        .into_iter()
        .map(|consumer| tokio::time::timeout(CLOSE_TIMEOUT, consumer.close()));
    for closed in futures::future::join_all(closes).await {
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: closing a consumer failed: {error}"),
            Err(_) => eprintln!("warning: closing a consumer took more than {CLOSE_TIMEOUT:?}"),
        }
    }
    merged
}

/// Group mode: waits until the group is balanced (every consumer polling meanwhile), so that
/// the caller can start the measured window. Manual mode: returns at once. On failure the
/// consumers are stopped.
pub async fn wait_for_group(
    spec: &PointSpec,
    state: &PointState,
    prepared_assignments: Option<&Arc<Assignments>>,
    tasks: Vec<ConsumerTask>,
) -> Result<Vec<ConsumerTask>> {
    let (Some(assignments), Some(group)) = (prepared_assignments, spec.group) else {
        return Ok(tasks);
    };
    match assignments.wait_balanced(join_timeout(group)).await {
        Ok(_) => Ok(tasks),
        Err(error) => {
            let outcome = stop(state, tasks).await;
            Err(error.context(format!(
                "group {} did not settle{}",
                spec.index,
                if outcome.problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", outcome.problems.join("; "))
                }
            )))
        }
    }
}

/// Group mode: a problem when the group's assignment changed after `window_start_ns` (a
/// rebalance inside the measured window makes the comparison with manual mode unfair).
pub fn rebalanced_during(
    assignments: Option<&Arc<Assignments>>,
    window_start_ns: u64,
) -> Option<String> {
    let changed = assignments?.last_change_ns();
    (changed > window_start_ns).then(|| {
        format!(
            "the group's assignment changed {:.2} s into the measured window",
            (changed - window_start_ns) as f64 / 1e9
        )
    })
}

/// Waits until the consumers received `expected` messages, or until they made no progress for
/// `stall_timeout`, or `deadline`. True when they got everything.
pub async fn wait_for(
    state: &PointState,
    expected: impl Fn() -> u64,
    stall_timeout: Duration,
    deadline: tokio::time::Instant,
) -> bool {
    let mut last = state.received();
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let received = state.received();
        if received >= expected() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if received > last {
            last = received;
            last_progress = now;
        }
        if now >= deadline || now.duration_since(last_progress) >= stall_timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The consume-only scenario: write `--messages` messages (or use `--topic`), then read them
/// all back from the earliest offset as fast as the consumers go.
pub async fn run(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    match &spec.topic {
        Some(topic) => run_on(spec, target, topic, None).await,
        None => {
            let topic = create_topic(spec, target).await?;
            let result = prefill(spec, target, &topic).await;
            let result = match result {
                Ok(written) => run_on(spec, target, &topic, Some(written)).await,
                Err(error) => Err(error),
            };
            delete_topic(&topic, target).await;
            result
        }
    }
}

/// Writes the point's messages as fast as possible (closed loop, not measured). Returns how
/// many were acknowledged.
async fn prefill(spec: &PointSpec, target: &Target, topic: &str) -> Result<u64> {
    let state = Arc::new(PointState::default());
    let amount = match spec.amount {
        Amount::Messages { count } => Amount::Messages { count },
        Amount::Duration { seconds } => Amount::Duration { seconds },
    };
    let producers = start_all(
        spec,
        target,
        topic,
        &state,
        Load::Closed,
        amount,
        timeline(amount, 0),
    )?;
    let outcome = producers
        .finish(Duration::from_secs_f64(spec.drain_timeout_s))
        .await;
    ensure!(
        outcome.problems.is_empty(),
        "writing the data to read failed: {}",
        outcome.problems.join("; ")
    );
    Ok(state.acked())
}

async fn run_on(
    spec: &PointSpec,
    target: &Target,
    topic: &str,
    written: Option<u64>,
) -> Result<PointResult> {
    let expected = match written {
        Some(written) => written,
        None => {
            let description = Admin::new(target.address.clone())?
                .describe_topic(topic)
                .await
                .with_context(|| format!("cannot describe topic {topic}"))?;
            description
                .partitions
                .iter()
                .map(|p| {
                    p.log_end_offset
                        .unwrap_or(0)
                        .saturating_sub(p.log_start_offset.unwrap_or(0))
                })
                .sum()
        }
    };
    ensure!(expected > 0, "topic {topic} holds no messages to read");
    let state = Arc::new(PointState::default());
    let prepared = prepare(spec, target, topic).await?;
    let cell = Arc::new(WindowCell::unset());
    let settings = LoopSettings {
        window: cell.clone(),
        record_latency: false,
        receipts: None,
        slice_span_ns: None,
    };
    let tasks = start(prepared.consumers, &state, &settings);
    // Group mode: records read while the group forms are read but not measured.
    let assignments = prepared.assignments;
    let tasks = wait_for_group(spec, &state, assignments.as_ref(), tasks).await?;
    let read_start_ns = now_ns();
    let window = Window {
        start_ns: read_start_ns + (spec.warmup_s * 1e9) as u64,
        end_ns: None,
    };
    cell.set(window);
    let cpu = CpuWindow::start(window, &target.broker_pids);
    let deadline = tokio::time::Instant::now() + READ_TIME_MAX;
    let stall = Duration::from_secs_f64(spec.drain_timeout_s);
    let complete = wait_for(&state, || expected, stall, deadline).await;
    let cpu = cpu.finish().await;
    // Before the close, whose Revoked events are no rebalance.
    let rebalanced = rebalanced_during(assignments.as_ref(), window.start_ns);
    let outcome = stop(&state, tasks).await;
    let mut problems = outcome.problems;
    problems.extend(rebalanced);
    if !complete {
        problems.push(format!(
            "read {} of {expected} messages before giving up",
            outcome.total
        ));
    }
    let (messages, bytes, window_s) = if outcome.in_window > 0 {
        (
            outcome.in_window,
            outcome.bytes_in_window,
            window.seconds(outcome.last_done_ns),
        )
    } else {
        problems
            .push("the whole read fit in the warm-up: measured from the first poll instead".into());
        let seconds = outcome.last_done_ns.saturating_sub(read_start_ns) as f64 / 1e9;
        (outcome.total, outcome.bytes_total, seconds)
    };
    let consumed = Flow::with_bytes(messages, bytes, window_s, 0);
    Ok(PointResult {
        spec: spec.clone(),
        window_s,
        msgs_per_s: consumed.msgs_per_s,
        mb_per_s: consumed.mb_per_s,
        produced: None,
        consumed: Some(consumed),
        produce_latency: None,
        e2e_latency: None,
        cpu,
        producer_loop: None,
        held: None,
        cpu_per_msg: CpuPerMessage::default(),
        problems,
        verdict: String::new(),
        client_bound: false,
        rebalance: None,
        failover: None,
    })
}
