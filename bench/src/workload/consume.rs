//! Consumers, and the consume-only scenario (a catch-up read of data written beforehand).
//!
//! Each consumer is one [`client::Consumer`] on its own tokio task, assigned the partitions
//! `p` with `p % consumers == its index`, reading from the earliest offset. After each poll it
//! reads the clock once (records of one poll arrived together) and, in e2e, records each
//! measured message's end-to-end latency from the timestamps the producer wrote into it.
//! Records are read in place (zero-copy views): the harness copies nothing per message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use client::{Admin, Consumer, ConsumerConfig, Offset, TopicPartition};

use super::produce::{start_all, timeline};
use super::{
    create_topic, delete_topic, read_stamp, CpuWindow, Flow, PointResult, PointState, Target,
    Window,
};
use crate::args::{Amount, PointSpec};
use crate::schedule::{now_ns, LatencyPair, Load};

/// Longest wait of one poll: how quickly a consumer notices `stop`.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Longest a catch-up read may take in all (it also stops when it makes no progress for the
/// drain timeout).
const READ_TIME_MAX: Duration = Duration::from_secs(600);

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
}

/// A consumer assigned its partitions, positions resolved, not yet polling.
pub struct ReadyConsumer {
    consumer: Consumer,
}

/// Creates the consumers of a point and resolves their positions (earliest), so that the
/// measured polls do no offset lookups. Consumers beyond the partition count get nothing and
/// are not created.
pub async fn prepare(spec: &PointSpec, target: &Target, topic: &str) -> Result<Vec<ReadyConsumer>> {
    let mut ready = Vec::new();
    for index in 0..spec.consumers {
        let partitions: Vec<TopicPartition> = (0..spec.partitions)
            .filter(|p| p % spec.consumers == index)
            .map(|p| TopicPartition::new(topic, p))
            .collect();
        if partitions.is_empty() {
            continue;
        }
        let config = ConsumerConfig {
            partition_max_bytes: u32::try_from(spec.fetch_partition_bytes).unwrap_or(u32::MAX),
            ..ConsumerConfig::new(target.address.clone())
        };
        let mut consumer = Consumer::new(config)?;
        consumer.assign(&partitions);
        for tp in &partitions {
            consumer.seek(tp, Offset::Earliest)?;
            consumer.position(tp).await.with_context(|| {
                format!("cannot find the start of {}/{}", tp.topic, tp.partition)
            })?;
        }
        ready.push(ReadyConsumer { consumer });
    }
    Ok(ready)
}

/// Starts polling.
pub fn start(
    ready: Vec<ReadyConsumer>,
    state: &Arc<PointState>,
    window: Window,
    record_latency: bool,
) -> Vec<tokio::task::JoinHandle<ConsumerOutcome>> {
    ready
        .into_iter()
        .map(|ready| {
            tokio::spawn(consume_loop(
                ready.consumer,
                state.clone(),
                window,
                record_latency,
            ))
        })
        .collect()
}

/// Polls until told to stop.
async fn consume_loop(
    mut consumer: Consumer,
    state: Arc<PointState>,
    window: Window,
    record_latency: bool,
) -> ConsumerOutcome {
    let mut outcome = ConsumerOutcome::default();
    while !state.stop.load(Ordering::Acquire) {
        match consumer.poll(POLL_TIMEOUT).await {
            Ok(records) => {
                let done_ns = now_ns();
                let count = records.len() as u64;
                if count == 0 {
                    continue;
                }
                let mut bytes = 0u64;
                for record in &records {
                    bytes += record.value.len() as u64;
                    if record_latency {
                        if let Some((intended_ns, sent_ns, true)) = read_stamp(record.value) {
                            outcome.latency.record(intended_ns, sent_ns, done_ns);
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
                state.received.fetch_add(count, Ordering::AcqRel);
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
    outcome
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
}

/// Tells the consumers to stop and merges what they measured.
pub async fn stop(
    state: &PointState,
    tasks: Vec<tokio::task::JoinHandle<ConsumerOutcome>>,
) -> ConsumersOutcome {
    state.stop.store(true, Ordering::Release);
    let mut merged = ConsumersOutcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                merged.latency.merge(&outcome.latency);
                merged.in_window += outcome.in_window;
                merged.bytes_in_window += outcome.bytes_in_window;
                merged.total += outcome.total;
                merged.bytes_total += outcome.bytes_total;
                merged.last_done_ns = merged.last_done_ns.max(outcome.last_done_ns);
                if let Some(error) = outcome.first_error {
                    merged
                        .problems
                        .push(format!("{} consumer errors: {error}", outcome.errors));
                }
            }
            Err(error) => merged
                .problems
                .push(format!("consumer task failed: {error}")),
        }
    }
    merged
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
    let ready = prepare(spec, target, topic).await?;
    let read_start_ns = now_ns();
    let window = Window {
        start_ns: read_start_ns + (spec.warmup_s * 1e9) as u64,
        end_ns: None,
    };
    let cpu = CpuWindow::start(window, target.broker_pid);
    let tasks = start(ready, &state, window, false);
    let deadline = tokio::time::Instant::now() + READ_TIME_MAX;
    let stall = Duration::from_secs_f64(spec.drain_timeout_s);
    let complete = wait_for(&state, || expected, stall, deadline).await;
    let cpu = cpu.finish().await;
    let outcome = stop(&state, tasks).await;
    let mut problems = outcome.problems;
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
        sustained: None,
        problems,
        verdict: String::new(),
        client_bound: false,
    })
}
