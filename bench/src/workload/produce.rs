//! Producers, and the produce-only scenario.
//!
//! Each producer is one [`client::Producer`] driven by two parts:
//!
//! ```text
//!  send thread (OS thread, 1 µs timer slack)          ack collector (tokio task)
//!  Pacer: wait for message i's intended time ──┐      FuturesUnordered of deliveries
//!  stamp intended/sent ns into the value       │      on completion: now_ns(); latency from
//!  enqueue (blocks if buffer full) ────────────┴─ch──▶ intended (corrected) and from sent
//! ```
//!
//! The send loop runs on its own thread so that an open-loop schedule can be kept with
//! `nanosleep` precision (tokio's timer has 1 ms granularity, which would add up to a
//! millisecond of harness-made latency to every message at rates above 1000/s). Sleeping
//! costs no CPU; the enqueue itself goes through `Handle::block_on` and normally completes
//! without waiting.
//!
//! Two send paths:
//! - `--batch N` with N > 1 (in messages) in closed loop (`--rate max`), or in open loop with
//!   `--open-loop-batches`: the loop takes up to N messages per call — in closed loop N at
//!   once, in open loop those whose intended time has come (at most N) — and hands them to [`Producer::enqueue_batch`] as one record batch for one partition
//!   (partitions taken in turn, per call). The values are borrowed slices of one reusable
//!   buffer of N payloads, stamped in place (intended time per message, one clock read for the
//!   batch's sent time); the client copies each once into its batch. One delivery future per
//!   call; the collector gets the per-message intended times in a recycled `Vec`, so nothing is
//!   allocated per message. Latency semantics: every message of a batch shares the batch's
//!   acknowledgement time and its sent time; its intended time (hence the corrected latency)
//!   is its own.
//! - `--batch 1`, `--batch-bytes`, or an open loop without `--open-loop-batches`: one
//!   [`Producer::enqueue`] per message, the client forming the batches behind the request in
//!   flight (each message its own latency point). Open loop defaults to this because the
//!   messages due at one wake-up are few: sent as their own batches they queue behind the
//!   in-flight window (batch 16 at 100k/s: p50 9.8 ms grouped against 0.5 ms per message). The client's API needs an owned
//!   `ProducerRecord` (`String` topic, `Vec<u8>` value) here, so this path allocates twice and
//!   copies the payload once per message, and gets one delivery future per message.
//!
//! `--outstanding 1` makes either path a closed loop of one: the send thread waits for each
//! send's acknowledgement itself (taking the acknowledgement time) before the next send, and
//! passes the completed send to the collector. The producer, its connection and the collector
//! then run on the send thread's own current-thread runtime (see [`start`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use client::{
    BatchDelivery, BatchRecord, ClientError, DeliveryFuture, Producer, ProducerConfig,
    ProducerRecord,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{
    create_topic, delete_topic, payload_template, stamp, CpuPerMessage, CpuWindow, Flow,
    LatencySummary, LoopStats, PointResult, PointState, Target, Window,
};
use crate::args::{Amount, PointSpec, Scenario};
use crate::held::{self, Achieved, Held, NotHeld, Slice, SliceLayout, SliceRecorder, SLICES};
use crate::schedule::{now_ns, LatencyPair, Load, Next, Pacer};

/// Lead time before the first message, so that every producer thread is ready when the
/// schedule starts.
const START_LEAD_NS: u64 = 100_000_000;

/// Longest sleep of a send loop between two looks at `stop_sends`.
const STOP_CHECK_NS: u64 = 50_000_000;

/// Refused sends after which a send loop gives up.
const SEND_ERRORS_MAX: u64 = 1000;

/// When a producer's sends end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendEnd {
    /// At this [`now_ns`] time (duration mode).
    At(u64),
    /// After this many measured messages (count mode).
    Measured(u64),
}

/// What one producer sends.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// Topic.
    pub topic: String,
    /// Value bytes per message.
    pub message_size: usize,
    /// Closed or open loop.
    pub load: Load,
    /// When the first message is due.
    pub start_ns: u64,
    /// Messages intended from here on are measured.
    pub measure_start_ns: u64,
    /// When to stop.
    pub end: SendEnd,
    /// The slices of the measured window (open loop, `produce` and `e2e`): the loop counts
    /// what its schedule wanted sent by the end of each.
    pub slices: Option<SliceLayout>,
    /// Most messages per [`Producer::enqueue_batch`] call; 1: one [`Producer::enqueue`] per
    /// message.
    pub batch: usize,
    /// Partitions of the topic (the batch path sends to them in turn).
    pub partitions: u32,
    /// Partition of this producer's first batch (spreads producers).
    pub first_partition: u32,
    /// Wait for each send's acknowledgement before the next (`--outstanding 1`).
    pub one_outstanding: bool,
}

/// What a send loop did.
#[derive(Debug, Clone, Default)]
pub struct SendOutcome {
    /// Messages enqueued, warm-up included.
    pub sent_total: u64,
    /// Measured messages enqueued.
    pub sent_measured: u64,
    /// Measured messages the schedule wanted.
    pub scheduled_measured: u64,
    /// Lag behind the schedule when the sends ended.
    pub lag_ns: u64,
    /// Time in the measured window: asleep, in enqueue (with `--outstanding 1`, also waiting
    /// for the acknowledgement), in total.
    pub sleep_ns: u64,
    /// See `sleep_ns`.
    pub enqueue_ns: u64,
    /// See `sleep_ns`.
    pub window_ns: u64,
    /// Enqueue failures and the first one's text.
    pub errors: u64,
    /// See `errors`.
    pub first_error: Option<String>,
    /// When the sends ended.
    pub end_ns: u64,
    /// Measured messages the schedule wanted sent by the end of each slice of the window
    /// (zeros without slices).
    pub scheduled_by_slice_end: [u64; SLICES],
}

/// What an ack collector saw.
#[derive(Debug, Clone, Default)]
pub struct AckOutcome {
    /// Latency of measured messages.
    pub latency: LatencyPair,
    /// Measured messages acknowledged.
    pub acked_measured: u64,
    /// Messages that failed (any), and the first error.
    pub failed: u64,
    /// See `failed`.
    pub first_error: Option<String>,
    /// Time of the last measured acknowledgement.
    pub last_ack_ns: u64,
    /// Acknowledgements (of any message) inside the window.
    pub in_window: u64,
    /// Time of the last acknowledgement.
    pub last_done_ns: u64,
    /// The window's slices (`produce` only: its headline is the acknowledgements).
    pub slices: Option<SliceRecorder>,
}

/// What a send is waiting for.
enum Delivery {
    /// One message's acknowledgement.
    Record(DeliveryFuture),
    /// One batch's acknowledgement.
    Batch(BatchDelivery),
    /// Already acknowledged (`--outstanding 1`): at this time, or failed.
    Done(u64, Result<(), ClientError>),
}

/// A message's intended time and whether it is measured.
#[derive(Debug, Clone, Copy)]
struct Intended {
    intended_ns: u64,
    measured: bool,
}

/// A send (one message, or a batch) handed to the client, waiting for its acknowledgement.
struct Pending {
    delivery: Delivery,
    sent_ns: u64,
    /// The message of a one-message send (`many` empty).
    one: Intended,
    /// The messages of a batch, in order (a recycled `Vec`).
    many: Vec<Intended>,
}

/// A completed send: acknowledgement time (`None`: now), result, and its [`Pending`] without
/// the delivery.
struct Completed {
    done_ns: Option<u64>,
    result: Result<(), ClientError>,
    sent_ns: u64,
    one: Intended,
    many: Vec<Intended>,
}

impl Future for Pending {
    type Output = Completed;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (done_ns, result) = match &mut this.delivery {
            Delivery::Record(delivery) => match Pin::new(delivery).poll(cx) {
                Poll::Ready(result) => (None, result.map(|_| ())),
                Poll::Pending => return Poll::Pending,
            },
            Delivery::Batch(delivery) => match Pin::new(delivery).poll(cx) {
                Poll::Ready(result) => (None, result.map(|_| ())),
                Poll::Pending => return Poll::Pending,
            },
            Delivery::Done(done_ns, result) => (
                Some(*done_ns),
                std::mem::replace(result, Err(ClientError::Closed)),
            ),
        };
        Poll::Ready(Completed {
            done_ns,
            result,
            sent_ns: this.sent_ns,
            one: this.one,
            many: std::mem::take(&mut this.many),
        })
    }
}

/// A running producer.
pub struct RunningProducer {
    /// The client producer (to close it at the end).
    pub producer: Producer,
    sends: oneshot::Receiver<SendOutcome>,
    /// The collector's outcome; dropped unsent if it failed.
    acks: oneshot::Receiver<AckOutcome>,
}

/// The client producer settings of a point.
pub fn producer_config(spec: &PointSpec, address: &str) -> ProducerConfig {
    ProducerConfig {
        acks: spec.acks.to_client(),
        batch_size_bytes: usize::try_from(spec.batch_bytes).unwrap_or(usize::MAX),
        linger: Duration::from_secs_f64(spec.linger_ms / 1000.0),
        max_in_flight_per_partition: spec.max_in_flight,
        max_buffered_bytes: usize::try_from(spec.buffer_bytes).unwrap_or(usize::MAX),
        spin_before_park: spec.client_spin,
        ..ProducerConfig::new(address)
    }
}

/// Starts a producer's send thread and ack collector.
///
/// Usually the producer (its sender and connection tasks) and the collector run on the
/// bench's shared multi-thread runtime, and the send thread hands records over through
/// `Handle::block_on`, so encoding and sending use both cores. With `--outstanding 1` the
/// send thread is the application's only thread instead: it builds a current-thread runtime
/// and runs the producer, its connection and the collector on it, as an application task
/// awaiting each send would, so a round trip wakes one client thread (from the socket).
/// Through the shared runtime each send and each acknowledgement also crossed threads, two
/// more wake-ups of tens of µs each on this VM (batch 1, one outstanding: 3.2-4.1k round trips
/// a second and 125-147 µs of client CPU each, against 4.1-4.8k and 82-92 µs; 2 cores shared
/// with the broker). Not for open loops: there one thread doing everything capped per-message
/// sends at 377k of 400k msgs/s (client-bound).
pub fn start(
    id: u32,
    config: ProducerConfig,
    plan: SendPlan,
    state: Arc<PointState>,
    window: Window,
    ack_slices: Option<SliceLayout>,
) -> Result<RunningProducer> {
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    // The collector gives the batches' `Vec`s back for reuse. Unbounded, but each `Vec` is a
    // batch the send loop enqueued and the buffer admitted: at most buffer / batch bytes + 1
    // are out at once, so the channel never holds more.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel();
    let (done_tx, sends) = oneshot::channel();
    let (acks_tx, acks) = oneshot::channel();
    let collector = collect(pending_rx, spare_tx, state.clone(), window, ack_slices);
    let name = format!("bench-send-{id}");
    if !plan.one_outstanding {
        let producer = Producer::new(config)?;
        let thread_producer = producer.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::spawn(async move {
            let _ = acks_tx.send(collector.await);
        });
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let ends = Ends {
                    pending: pending_tx,
                    spare: spare_rx,
                };
                let outcome = runtime.block_on(send_loop(thread_producer, plan, ends, state));
                let _ = done_tx.send(outcome);
            })
            .context("cannot spawn a producer thread")?;
        return Ok(RunningProducer {
            producer,
            sends,
            acks,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a producer thread's runtime")?;
    let producer = {
        let _entered = runtime.enter();
        Producer::new(config)?
    };
    let thread_producer = producer.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let collector = runtime.spawn(collector);
            let ends = Ends {
                pending: pending_tx,
                spare: spare_rx,
            };
            // A task, not the `block_on` future itself: a current-thread runtime wakes its
            // `block_on` future through the driver (an eventfd write per wake-up), its tasks
            // through its run queue.
            let closing = thread_producer.clone();
            let sends = runtime.spawn(send_loop(thread_producer, plan, ends, state));
            // The producer's and the collector's tasks live on this thread's runtime: keep
            // driving it until every acknowledgement is in.
            let collected = runtime.block_on(async move {
                let outcome = sends.await.unwrap_or_default();
                let _ = done_tx.send(outcome);
                let _ = closing.close().await;
                collector.await
            });
            if let Ok(collected) = collected {
                let _ = acks_tx.send(collected);
            }
        })
        .context("cannot spawn a producer thread")?;
    Ok(RunningProducer {
        producer,
        sends,
        acks,
    })
}

/// Sleeps until [`now_ns`] reaches `at_ns`.
fn sleep_until_ns(at_ns: u64) {
    loop {
        let now = now_ns();
        if now >= at_ns {
            return;
        }
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

/// Asks for 1 µs timer slack on this thread (default 50 µs), so sleeps end on time.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// The channels a send loop works with.
struct Ends {
    pending: mpsc::UnboundedSender<Pending>,
    spare: std::sync::mpsc::Receiver<Vec<Intended>>,
}

/// The send loop of one producer (see the module docs). Ends at the plan's end or when
/// `state.stop_sends` is set.
///
/// Async so that it can run as a task of a producer thread's own runtime (`--outstanding 1`);
/// otherwise a send thread blocks on it. It blocks its thread itself (`nanosleep`) while it
/// waits for a message's intended time (see the module docs).
async fn send_loop(
    producer: Producer,
    plan: SendPlan,
    ends: Ends,
    state: Arc<PointState>,
) -> SendOutcome {
    tighten_timer_slack();
    let template = payload_template(plan.message_size);
    let size = template.len();
    // The batch path's payloads: `batch` copies of the template, stamped in place per send.
    let mut payloads = if plan.batch > 1 {
        template.repeat(plan.batch)
    } else {
        Vec::new()
    };
    let mut partition = plan.first_partition;
    let mut pacer = Pacer::new(plan.load, plan.start_ns);
    let mut outcome = SendOutcome::default();
    sleep_until_ns(plan.start_ns);
    // When `stop_sends` was first seen: the messages due before it are still sent (an open
    // loop that lags catches up, as at a planned end), and the schedule counts up to it.
    let mut stopped_ns: Option<u64> = None;
    loop {
        let now = now_ns();
        if stopped_ns.is_none() && state.stop_sends.load(Ordering::Relaxed) {
            stopped_ns = Some(now);
        }
        let over = match plan.end {
            SendEnd::At(end) => now >= end,
            SendEnd::Measured(quota) => outcome.sent_measured >= quota,
        };
        if over {
            break;
        }
        let past_stop = |at: u64| stopped_ns.is_some_and(|stop| at >= stop);
        let intended_ns = match pacer.next(now) {
            Next::WaitUntil(at) => {
                if matches!(plan.end, SendEnd::At(end) if at >= end) || past_stop(at) {
                    break;
                }
                // In slices, so that `stop_sends` is seen within one at low rates.
                sleep_until_ns(at.min(now + STOP_CHECK_NS));
                if at > plan.measure_start_ns {
                    outcome.sleep_ns += now_ns().saturating_sub(now.max(plan.measure_start_ns));
                }
                continue;
            }
            Next::Send { intended_ns, .. } if past_stop(intended_ns) => break,
            Next::Send { intended_ns, .. } => intended_ns,
        };
        let is_measured = |intended_ns: u64, measured_before: u64| {
            intended_ns >= plan.measure_start_ns
                && match plan.end {
                    SendEnd::At(end) => intended_ns < end,
                    SendEnd::Measured(quota) => measured_before < quota,
                }
        };
        let first = Intended {
            intended_ns,
            measured: is_measured(intended_ns, outcome.sent_measured),
        };
        let (sent, result) = if plan.batch > 1 {
            // The messages due now, up to the batch: the pacer gives those whose intended
            // time has come (all at once in closed loop).
            let mut many = ends.spare.try_recv().unwrap_or_default();
            many.clear();
            many.push(first);
            let mut measured = u64::from(first.measured);
            while many.len() < plan.batch {
                if matches!(plan.end, SendEnd::Measured(quota) if outcome.sent_measured + measured >= quota)
                {
                    break;
                }
                match pacer.take_due(now, stopped_ns.unwrap_or(u64::MAX)) {
                    Some(intended_ns) => {
                        let message = Intended {
                            intended_ns,
                            measured: is_measured(intended_ns, outcome.sent_measured + measured),
                        };
                        measured += u64::from(message.measured);
                        many.push(message);
                    }
                    None => break,
                }
            }
            let sent_ns = now_ns();
            let chunks = payloads.chunks_exact_mut(size);
            for (value, message) in chunks.zip(&many) {
                stamp(value, message.intended_ns, sent_ns, message.measured);
            }
            let records = payloads
                .chunks_exact(size)
                .take(many.len())
                .map(BatchRecord::new);
            let enqueued = producer.enqueue_batch(&plan.topic, partition, records);
            partition = (partition + 1) % plan.partitions.max(1);
            let result = enqueued.await;
            let count = many.len() as u64;
            let sent = Pending {
                delivery: Delivery::Done(0, Ok(())),
                sent_ns,
                one: first,
                many,
            };
            outcome.sent_total += count;
            if result.is_ok() {
                outcome.sent_measured += measured;
            }
            (sent, result.map(Delivery::Batch))
        } else {
            let mut value = template.clone();
            let sent_ns = now_ns();
            stamp(&mut value, intended_ns, sent_ns, first.measured);
            let record = ProducerRecord {
                topic: plan.topic.clone(),
                value: value.into(),
                ..ProducerRecord::default()
            };
            let result = producer.enqueue(record).await;
            outcome.sent_total += 1;
            if result.is_ok() {
                outcome.sent_measured += u64::from(first.measured);
            }
            let sent = Pending {
                delivery: Delivery::Done(0, Ok(())),
                sent_ns,
                one: first,
                many: Vec::new(),
            };
            (sent, result.map(Delivery::Record))
        };
        if sent.sent_ns >= plan.measure_start_ns {
            outcome.enqueue_ns += now_ns() - sent.sent_ns;
        }
        match result {
            Ok(delivery) => {
                let delivery = if plan.one_outstanding {
                    // A closed loop of one: this thread waits for the acknowledgement.
                    let waited_from = now_ns();
                    let result = match delivery {
                        Delivery::Record(delivery) => delivery.await.map(|_| ()),
                        Delivery::Batch(delivery) => delivery.await.map(|_| ()),
                        Delivery::Done(_, result) => result,
                    };
                    let done_ns = now_ns();
                    // Waiting for the acknowledgement counts as time in the client (like
                    // waiting for buffer room), not as the loop's own work.
                    if sent.sent_ns >= plan.measure_start_ns {
                        outcome.enqueue_ns += done_ns - waited_from;
                    }
                    Delivery::Done(done_ns, result)
                } else {
                    delivery
                };
                if ends.pending.send(Pending { delivery, ..sent }).is_err() {
                    break; // the collector is gone: the point was abandoned
                }
            }
            Err(error) => {
                outcome.errors += 1;
                let closed = matches!(error, ClientError::Closed);
                outcome.first_error.get_or_insert_with(|| error.to_string());
                // A refused send is refused again: stop rather than spin (a count-mode loop
                // would never reach its quota).
                if closed || outcome.errors >= SEND_ERRORS_MAX {
                    break;
                }
            }
        }
    }
    let end = now_ns();
    outcome.end_ns = end;
    outcome.lag_ns = pacer.lag_ns(end);
    outcome.window_ns = end.saturating_sub(plan.measure_start_ns);
    outcome.scheduled_measured = match (plan.load, plan.end) {
        (Load::Open { .. }, SendEnd::At(end_ns)) => {
            let end_ns = stopped_ns.map_or(end_ns, |stopped| stopped.min(end_ns));
            let before = pacer.scheduled_by(plan.measure_start_ns.saturating_sub(1));
            pacer
                .scheduled_by(end_ns.saturating_sub(1))
                .saturating_sub(before)
        }
        (_, SendEnd::Measured(quota)) => quota,
        (Load::Closed, SendEnd::At(_)) => outcome.sent_measured,
    };
    if let Some(layout) = &plan.slices {
        let before = pacer.scheduled_by(plan.measure_start_ns.saturating_sub(1));
        // A count-mode loop sends its quota and no more; a stopped one nothing after the stop.
        let cap = match plan.end {
            SendEnd::Measured(quota) => quota,
            SendEnd::At(_) => u64::MAX,
        };
        for (index, scheduled) in outcome.scheduled_by_slice_end.iter_mut().enumerate() {
            let end_ns =
                stopped_ns.map_or(layout.end_ns(index), |stop| stop.min(layout.end_ns(index)));
            *scheduled = pacer
                .scheduled_by(end_ns.saturating_sub(1))
                .saturating_sub(before)
                .min(cap);
        }
    }
    outcome
}

/// Most acknowledgements taken from the channel per wake-up, so completions are looked at
/// between bursts of new messages.
const RECEIVE_BURST_MAX: usize = 256;

/// Awaits the acknowledgements of one producer's messages and records their latency.
async fn collect(
    mut pending_rx: mpsc::UnboundedReceiver<Pending>,
    spare: std::sync::mpsc::Sender<Vec<Intended>>,
    state: Arc<PointState>,
    window: Window,
    slices: Option<SliceLayout>,
) -> AckOutcome {
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = AckOutcome {
        slices: slices.map(|_| SliceRecorder::new()),
        ..AckOutcome::default()
    };
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(completed) = in_flight.next(), if !in_flight.is_empty() => {
                let completed: Completed = completed;
                // Every message of a batch shares its acknowledgement time.
                let done_ns = completed.done_ns.unwrap_or_else(now_ns);
                let messages = if completed.many.is_empty() {
                    std::slice::from_ref(&completed.one)
                } else {
                    &completed.many[..]
                };
                let count = messages.len() as u64;
                match completed.result {
                    Ok(()) => {
                        state.acked.fetch_add(count, Ordering::AcqRel);
                        if window.contains(done_ns) {
                            outcome.in_window += count;
                        }
                        outcome.last_done_ns = done_ns;
                        for message in messages.iter().filter(|message| message.measured) {
                            outcome
                                .latency
                                .record(message.intended_ns, completed.sent_ns, done_ns);
                            if let (Some(layout), Some(recorder)) =
                                (&slices, &mut outcome.slices)
                            {
                                recorder.record(layout, message.intended_ns, done_ns);
                            }
                            outcome.acked_measured += 1;
                            outcome.last_ack_ns = outcome.last_ack_ns.max(done_ns);
                        }
                    }
                    Err(error) => {
                        outcome.failed += count;
                        outcome.first_error.get_or_insert_with(|| error.to_string());
                    }
                }
                if completed.many.capacity() > 0 {
                    let _ = spare.send(completed.many); // the send loop may be gone
                }
            }
            message = pending_rx.recv(), if open => match message {
                Some(message) => {
                    in_flight.push(message);
                    for _ in 1..RECEIVE_BURST_MAX {
                        match pending_rx.try_recv() {
                            Ok(message) => in_flight.push(message),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
            else => break,
        }
    }
    outcome
}

/// The producers of a point, all running.
pub struct Producers {
    running: Vec<RunningProducer>,
    /// The measured window.
    pub window: Window,
    /// Its slices (open loop, `produce` and `e2e`).
    pub slices: Option<SliceLayout>,
}

/// Merged outcome of all producers of a point.
#[derive(Debug, Clone, Default)]
pub struct ProducersOutcome {
    /// Measured acknowledgement latencies.
    pub latency: LatencyPair,
    /// Measured messages acknowledged.
    pub acked_measured: u64,
    /// Failed messages.
    pub failed: u64,
    /// Last measured acknowledgement.
    pub last_ack_ns: u64,
    /// Acknowledgements inside the window.
    pub in_window: u64,
    /// Last acknowledgement.
    pub last_done_ns: u64,
    /// Time split and schedule keeping.
    pub loop_stats: LoopStats,
    /// Last end of sends.
    pub sends_end_ns: u64,
    /// Problems seen (errors, timeouts).
    pub problems: Vec<String>,
    /// The window's slices (open loop, `produce` and `e2e`).
    pub slice_layout: Option<SliceLayout>,
    /// Measured messages the producers' schedules wanted sent by the end of each slice.
    pub scheduled_by_slice_end: [u64; SLICES],
    /// The acknowledgements' slices (`produce`).
    pub ack_slices: Option<SliceRecorder>,
}

/// When a point's schedule starts and its measured window: the first message is due
/// [`START_LEAD_NS`] from now (so every producer thread is ready), measurement starts after
/// the warm-up.
pub fn timeline(amount: Amount, warmup_ns: u64) -> (u64, Window) {
    let start_ns = now_ns() + START_LEAD_NS;
    let measure_start_ns = start_ns + warmup_ns;
    let window = Window {
        start_ns: measure_start_ns,
        end_ns: match amount {
            Amount::Duration { seconds } => Some(measure_start_ns + (seconds * 1e9) as u64),
            Amount::Messages { .. } => None,
        },
    };
    (start_ns, window)
}

/// Creates and starts the producers of a point on the given timeline.
pub fn start_all(
    spec: &PointSpec,
    target: &Target,
    topic: &str,
    state: &Arc<PointState>,
    load: Load,
    amount: Amount,
    (start_ns, window): (u64, Window),
) -> Result<Producers> {
    // Slices for the held test (crate::held): the send loops count the schedule of an open
    // loop in `produce` and `e2e`; the ack collectors record only for `produce`, whose
    // headline is the acknowledgements (e2e's consumers record the receipts).
    let slices = match spec.scenario {
        Scenario::Produce | Scenario::E2e => SliceLayout::span_ns(spec)
            .filter(|_| matches!(load, Load::Open { .. }))
            .and_then(|span_ns| SliceLayout::new(window.start_ns, span_ns)),
        Scenario::Consume | Scenario::Rebalance | Scenario::Failover => None,
    };
    let ack_slices = slices.filter(|_| spec.scenario == Scenario::Produce);
    let mut running = Vec::new();
    for id in 0..spec.producers {
        let end = match (amount, window.end_ns) {
            (Amount::Duration { .. }, Some(end_ns)) => SendEnd::At(end_ns),
            (Amount::Messages { count }, _) => {
                // Split the count; the first producers take the remainder.
                let n = u64::from(spec.producers);
                let quota = count / n + u64::from(u64::from(id) < count % n);
                SendEnd::Measured(quota)
            }
            (Amount::Duration { seconds }, None) => {
                SendEnd::At(window.start_ns + (seconds * 1e9) as u64)
            }
        };
        let plan = SendPlan {
            topic: topic.to_owned(),
            message_size: usize::try_from(spec.message_size)?,
            load,
            start_ns,
            measure_start_ns: window.start_ns,
            end,
            slices,
            // Batches per call in closed loop, in open loop only when asked (see the module
            // docs).
            batch: match load {
                Load::Open { .. } if !spec.open_loop_batches => 1,
                _ => spec
                    .batch_messages
                    .map_or(1, |messages| messages.max(1) as usize),
            },
            partitions: spec.partitions,
            first_partition: id % spec.partitions.max(1),
            one_outstanding: spec.one_outstanding,
        };
        running.push(start(
            id,
            producer_config(spec, &target.address),
            plan,
            state.clone(),
            window,
            ack_slices,
        )?);
    }
    Ok(Producers {
        running,
        window,
        slices,
    })
}

impl Producers {
    /// Waits for the send loops to end, then for every acknowledgement (closing the
    /// producers), up to `drain_timeout` after the sends; merges what they measured.
    pub async fn finish(self, drain_timeout: Duration) -> ProducersOutcome {
        let mut outcome = ProducersOutcome {
            slice_layout: self.slices,
            ..ProducersOutcome::default()
        };
        let mut sends = Vec::new();
        let mut rest = Vec::new();
        for running in self.running {
            let send = running.sends.await.unwrap_or_default();
            sends.push(send);
            rest.push((running.producer, running.acks));
        }
        let deadline = tokio::time::Instant::now() + drain_timeout;
        for (producer, acks) in rest {
            if tokio::time::timeout_at(deadline, producer.close())
                .await
                .is_err()
            {
                outcome.problems.push(format!(
                    "acknowledgements still missing {drain_timeout:?} after the sends"
                ));
            }
            match tokio::time::timeout_at(deadline, acks).await {
                Ok(Ok(acks)) => {
                    outcome.latency.merge(&acks.latency);
                    outcome.acked_measured += acks.acked_measured;
                    outcome.failed += acks.failed;
                    outcome.last_ack_ns = outcome.last_ack_ns.max(acks.last_ack_ns);
                    outcome.in_window += acks.in_window;
                    outcome.last_done_ns = outcome.last_done_ns.max(acks.last_done_ns);
                    if let Some(slices) = &acks.slices {
                        outcome
                            .ack_slices
                            .get_or_insert_with(SliceRecorder::new)
                            .merge(slices);
                    }
                    if let Some(error) = acks.first_error {
                        outcome
                            .problems
                            .push(format!("{} messages failed: {error}", acks.failed));
                    }
                }
                Ok(Err(_)) => outcome.problems.push("ack collector failed".to_owned()),
                Err(_) => {} // counted above
            }
        }
        outcome.problems.dedup();
        let mut stats = LoopStats::default();
        let mut window_ns = 0u64;
        for send in &sends {
            stats.scheduled += send.scheduled_measured;
            stats.unsent += send.scheduled_measured.saturating_sub(send.sent_measured);
            stats.lag_ms = stats.lag_ms.max(send.lag_ns as f64 / 1e6);
            window_ns += send.window_ns;
            stats.waiting_share += send.sleep_ns as f64;
            stats.enqueue_share += send.enqueue_ns as f64;
            outcome.sends_end_ns = outcome.sends_end_ns.max(send.end_ns);
            for (total, scheduled) in outcome
                .scheduled_by_slice_end
                .iter_mut()
                .zip(send.scheduled_by_slice_end)
            {
                *total += scheduled;
            }
            if let Some(error) = &send.first_error {
                outcome
                    .problems
                    .push(format!("{} sends refused: {error}", send.errors));
            }
        }
        if window_ns > 0 {
            stats.waiting_share /= window_ns as f64;
            stats.enqueue_share /= window_ns as f64;
            stats.busy_share = (1.0 - stats.waiting_share - stats.enqueue_share).max(0.0);
        }
        outcome.loop_stats = stats;
        outcome
    }
}

/// Whether an open-loop point held its target ([`crate::held`]), and why not: the reasons
/// are added to `problems` too. `achieved_per_s` is the throughput that must match the target
/// (acknowledgements, or receipts for e2e); `slices` the window's slices (empty: backlog not
/// measured). `None` for a closed loop.
pub fn assess(
    spec: &PointSpec,
    achieved_per_s: f64,
    stats: &LoopStats,
    slices: Vec<Slice>,
    problems: &mut Vec<String>,
) -> Option<Held> {
    let target_per_s = spec.target_rate?;
    let held = held::assess(
        &Achieved {
            target_per_s,
            achieved_per_s,
            scheduled: stats.scheduled,
            unsent: stats.unsent,
            lag_ms: stats.lag_ms,
            other_problems: problems.len(),
        },
        slices,
    );
    problems.extend(
        held.reasons
            .iter()
            .filter(|reason| !matches!(reason, NotHeld::Problems { .. }))
            .map(NotHeld::describe),
    );
    Some(held)
}

/// The slices of a window from what the completions' side recorded (`None`: nothing
/// recorded) and the producers' schedule; empty without a layout.
pub fn window_slices(
    layout: Option<SliceLayout>,
    recorded: Option<&SliceRecorder>,
    scheduled_by_slice_end: &[u64; SLICES],
) -> Vec<Slice> {
    let Some(layout) = layout else {
        return Vec::new();
    };
    match recorded {
        Some(recorder) => recorder.slices(&layout, scheduled_by_slice_end),
        None => SliceRecorder::new().slices(&layout, scheduled_by_slice_end),
    }
}

/// The produce-only scenario: acknowledgement latency and throughput.
pub async fn run(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    let topic = create_topic(spec, target).await?;
    let result = run_on(spec, target, &topic).await;
    delete_topic(&topic, target).await;
    result
}

async fn run_on(spec: &PointSpec, target: &Target, topic: &str) -> Result<PointResult> {
    let state = Arc::new(PointState::default());
    let warmup_ns = (spec.warmup_s * 1e9) as u64;
    let producers = start_all(
        spec,
        target,
        topic,
        &state,
        spec.producer_load(),
        spec.amount,
        timeline(spec.amount, warmup_ns),
    )?;
    let window = producers.window;
    let cpu = CpuWindow::start(window, &target.broker_pids);
    let outcome = producers
        .finish(Duration::from_secs_f64(spec.drain_timeout_s))
        .await;
    let cpu = cpu.finish().await;
    let window_s = window.seconds(outcome.last_done_ns);
    let produced = Flow::new(
        outcome.in_window,
        spec.message_size,
        window_s,
        outcome.failed,
    );
    let mut problems = outcome.problems.clone();
    let slices = window_slices(
        outcome.slice_layout,
        outcome.ack_slices.as_ref(),
        &outcome.scheduled_by_slice_end,
    );
    let held = assess(
        spec,
        produced.msgs_per_s,
        &outcome.loop_stats,
        slices,
        &mut problems,
    );
    Ok(PointResult {
        spec: spec.clone(),
        window_s,
        msgs_per_s: produced.msgs_per_s,
        mb_per_s: produced.mb_per_s,
        produced: Some(produced),
        consumed: None,
        produce_latency: Some(LatencySummary::from(&outcome.latency)),
        e2e_latency: None,
        cpu,
        producer_loop: Some(outcome.loop_stats),
        held,
        cpu_per_msg: CpuPerMessage::default(),
        problems,
        verdict: String::new(),
        client_bound: false,
        rebalance: None,
        failover: None,
    })
}
