//! The `failover` scenario: one acks=all producer at a steady open-loop rate on a replicated
//! one-partition topic of a cluster the harness started (`--cluster`); round after round the
//! partition's leader is killed with kill -9, the time until the new leader acknowledges a
//! write is measured, the killed broker is restarted and the round ends once it is back in the
//! ISR. At the end the partition is read back and every acknowledged message is checked to be
//! present exactly once, at the offset it was acknowledged with, in send order.
//!
//! ```text
//!  round:  leader L, ISR full ── kill -9 L ──────────── first ack beyond the kill point ──
//!                                │◀──── unavailability ────▶│
//!          restart L ── L ready ── L back in the ISR ── next round
//! ```
//!
//! The kill point: the highest offset acknowledged before the kill, including acknowledgements
//! the dead leader wrote to its socket before dying and that the client reads up to
//! [`KILL_GRACE`] after the kill (so the dead leader's last answers never count as the new
//! leader's). The unavailability is from the kill to the first acknowledgement whose offset is
//! beyond that point ([`unavailability_ns`]); it includes the broker session timeout (the
//! controller fences the dead broker only then), the election, the metadata propagation and the
//! producer's retry backoff ([`RETRY_BACKOFF`], [`RETRY_BACKOFF_MAX`]).
//!
//! Message values carry a sequence number (8 bytes, little endian) and the send time; the
//! producer is idempotent, so a batch retried after the kill is written once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use client::connection::decode_body;
use client::{Admin, Consumer, ConsumerConfig, Offset, Producer, ProducerRecord, TopicPartition};
use client::{Connection, ConnectionConfig};
use serde::Serialize;
use tokio::sync::mpsc;
use wire::protocol::{ApiKey, DescribeClusterRequest, DescribeClusterResponse};

use super::{
    create_topic, delete_topic, payload_template, wait_fully_replicated, Flow, PointResult, Target,
    METADATA_POLL_INTERVAL,
};
use crate::args::PointSpec;
use crate::cpu::CpuUsage;
use crate::histogram::fmt_ms;
use crate::schedule::now_ns;
use crate::workload::produce::producer_config;

/// Target of the issue: p99 unavailability under 5 s.
pub const TARGET_MS: f64 = 5000.0;

/// Acknowledgements the dead leader sent before dying are read by the client within this
/// long after the kill (they are already in the loopback socket's buffer); acknowledgements up
/// to here define the kill point. A new leader cannot answer this early (the broker session
/// timeout alone is seconds), so this only ever moves the kill point past the dead leader's
/// last answers.
pub const KILL_GRACE: Duration = Duration::from_millis(100);

/// Longest wait, after a kill, for the first acknowledgement by a new leader; a round that
/// needs longer fails the scenario (a failover that never completes is a broker bug).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a restarted broker to be back in the ISR (it fetches what it missed: at
/// 20k msgs/s of 1 KiB a 10 s round is 200 MB).
pub const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest wait for the read-back of the whole partition at the end.
pub const READ_BACK_TIMEOUT: Duration = Duration::from_secs(300);

/// Steady traffic before the first kill and between a rejoin and the next kill.
pub const STEADY_BETWEEN_ROUNDS: Duration = Duration::from_secs(1);

/// Producer retries: enough to ride out any failover within [`FAILOVER_TIMEOUT`] at
/// [`RETRY_BACKOFF_MAX`] (60 s / 250 ms = 240), with room.
pub const RETRIES: u32 = 1000;

/// First retry backoff of the producer (doubled up to [`RETRY_BACKOFF_MAX`]).
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Longest retry backoff: bounds how late the producer notices the new leader.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The send loop wakes at most this often and sends everything due (tokio's timer has a 1 ms
/// resolution; at 20k msgs/s that is 20 messages a wake).
const SEND_TICK: Duration = Duration::from_millis(1);

/// A send loop further behind its schedule than this (the producer's buffer was full during
/// a failover) restarts its schedule from now instead of sending the backlog in one burst;
/// the messages skipped are counted.
const BEHIND_MAX: Duration = Duration::from_millis(100);

/// Deliveries queued between the send loop and the acknowledgement collector. The producer's
/// buffer (`--buffer-bytes`) bounds the messages outstanding far below this, so the queue
/// never fills in practice; when it does the send loop waits.
const DELIVERY_QUEUE: usize = 1 << 20;

/// One acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// When the client saw the acknowledgement ([`now_ns`]).
    pub at_ns: u64,
    /// The offset it was written at.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// The time from `kill_ns` to the first acknowledgement beyond the kill point, the highest
/// offset acknowledged before `kill_ns + grace_ns` (see the module documentation); `None` when
/// there is none. `acks` in the order the client saw them.
pub fn unavailability_ns(acks: &[Ack], kill_ns: u64, grace_ns: u64) -> Option<u64> {
    let kill_point = acks
        .iter()
        .take_while(|ack| ack.at_ns < kill_ns.saturating_add(grace_ns))
        .map(|ack| ack.offset)
        .max();
    acks.iter()
        .filter(|ack| ack.at_ns >= kill_ns)
        .find(|ack| kill_point.is_none_or(|point| ack.offset > point))
        .map(|ack| ack.at_ns - kill_ns)
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of `sorted` (ascending): the smallest value
/// with at least `q` of the values at or below it. `None` when empty.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Min, p50, p99 and max of the rounds' unavailability (nearest rank: with 10 rounds the p99
/// is the largest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Unavailability {
    /// Smallest, ms.
    pub min_ms: f64,
    /// Median (nearest rank), ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Rounds.
    pub count: usize,
}

impl Unavailability {
    /// Of these values (ms); `None` when empty.
    pub fn of(values_ms: &[f64]) -> Option<Unavailability> {
        let mut sorted = values_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Unavailability {
            min_ms: *sorted.first()?,
            p50_ms: nearest_rank(&sorted, 0.5)?,
            p99_ms: nearest_rank(&sorted, 0.99)?,
            max_ms: *sorted.last()?,
            count: sorted.len(),
        })
    }

    /// `3120 / 3250 / 3400 / 3400 ms`.
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {} / {} ms",
            fmt_ms(self.min_ms),
            fmt_ms(self.p50_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms)
        )
    }
}

/// What the read-back found, against the acknowledgements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LossCheck {
    /// Messages acknowledged.
    pub acked: u64,
    /// Records read back.
    pub read: u64,
    /// Acknowledged messages not read back.
    pub lost: u64,
    /// Acknowledged messages read more than once.
    pub duplicated: u64,
    /// Acknowledged messages read at another offset than the one acknowledged.
    pub misplaced: u64,
    /// Records read whose sequence number is not above the previous record's (the one
    /// producer sends in sequence order, so the log must hold them in that order).
    pub reordered: u64,
    /// Records read that were never sent (a sequence number beyond the last one sent, or a
    /// value this scenario did not write).
    pub unknown: u64,
    /// Messages read back that were sent but not acknowledged (failed, or in flight at the
    /// end): allowed (at-least-once for unacknowledged writes).
    pub unacked_present: u64,
}

impl LossCheck {
    /// True when nothing acknowledged is missing, doubled, misplaced or out of order, and
    /// nothing unknown was read.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.misplaced == 0
            && self.reordered == 0
            && self.unknown == 0
    }

    /// `no acknowledged message lost (N acked, M read)` or the counts of what is wrong.
    pub fn label(&self) -> String {
        if self.clean() {
            format!(
                "clean: all {} acknowledged present once, in order ({} read, {} unacknowledged \
                 also present)",
                self.acked, self.read, self.unacked_present
            )
        } else {
            format!(
                "LOST {} DUPLICATED {} MISPLACED {} REORDERED {} UNKNOWN {} (of {} acknowledged, \
                 {} read)",
                self.lost,
                self.duplicated,
                self.misplaced,
                self.reordered,
                self.unknown,
                self.acked,
                self.read
            )
        }
    }
}

/// Checks the records read back (`(offset, sequence number)` in log order; `None` for a value
/// that carries none) against the acknowledgements, for `sent` messages sent (sequence numbers
/// `0..sent`).
pub fn check_read_back(acks: &[Ack], read: &[(u64, Option<u64>)], sent: u64) -> LossCheck {
    const NOT_READ: u64 = u64::MAX;
    let slots = usize::try_from(sent).unwrap_or(usize::MAX);
    let mut offset_of = vec![NOT_READ; slots];
    let mut times_read = vec![0u8; slots];
    let mut check = LossCheck {
        acked: acks.len() as u64,
        read: read.len() as u64,
        ..LossCheck::default()
    };
    let mut previous: Option<u64> = None;
    for &(offset, seq) in read {
        let Some(index) = seq
            .and_then(|seq| usize::try_from(seq).ok())
            .filter(|i| *i < slots)
        else {
            check.unknown += 1;
            continue;
        };
        let seq = index as u64;
        if previous.is_some_and(|p| seq <= p) {
            check.reordered += 1;
        }
        previous = Some(seq);
        times_read[index] = times_read[index].saturating_add(1);
        if offset_of[index] == NOT_READ {
            offset_of[index] = offset;
        }
    }
    let mut acked_seqs = vec![false; slots];
    for ack in acks {
        let Some(index) = usize::try_from(ack.seq).ok().filter(|i| *i < slots) else {
            check.lost += 1;
            continue;
        };
        acked_seqs[index] = true;
        match times_read[index] {
            0 => check.lost += 1,
            1 => {}
            _ => check.duplicated += 1,
        }
        if times_read[index] > 0 && offset_of[index] != ack.offset {
            check.misplaced += 1;
        }
    }
    check.unacked_present = times_read
        .iter()
        .zip(&acked_seqs)
        .filter(|(read, acked)| **read > 0 && !**acked)
        .count() as u64;
    check
}

/// One leader kill.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The broker killed (the partition's leader).
    pub killed: u32,
    /// Its leader epoch before the kill.
    pub epoch_before: u32,
    /// The leader once the killed broker was back in the ISR, and its epoch.
    pub leader_after: Option<(u32, u32)>,
    /// Kill to the first acknowledgement beyond the kill point, ms (`None`: never).
    pub unavailable_ms: Option<f64>,
    /// The controller quorum's leader just before the kill (`None`: unknown). When it is the
    /// killed broker, a new controller leader is elected first, and it gives every broker a
    /// full session from its election before fencing anyone.
    pub controller_before: Option<u32>,
    /// Kill until the metadata (asked every 50 ms) first showed another leader, ms: the
    /// fencing after the broker session timeout, the election and its propagation.
    pub new_leader_seen_ms: Option<f64>,
    /// Kill until the metadata first showed the killed broker out of the ISR, ms.
    pub isr_shrunk_seen_ms: Option<f64>,
    /// Restart of the killed broker until its readiness line, ms.
    pub restart_ms: f64,
    /// Readiness of the restarted broker until it was back in the ISR, ms.
    pub rejoin_ms: Option<f64>,
}

/// What the `failover` scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverOutcome {
    /// Rounds asked for.
    pub rounds_wanted: u32,
    /// Rounds done.
    pub rounds: Vec<Round>,
    /// Over the rounds that recovered.
    pub unavailability: Option<Unavailability>,
    /// Restart to back in the ISR, over the rounds.
    pub rejoin_ms: Vec<f64>,
    /// The target for the p99, ms.
    pub target_ms: f64,
    /// Every round recovered and the p99 is under the target.
    pub met: bool,
    /// The read-back check (`None`: the read-back did not complete).
    pub loss: Option<LossCheck>,
    /// Messages whose send failed (the producer gave up after its retries).
    pub failed_sends: u64,
    /// Messages the send loop skipped because it was blocked more than 100 ms (full
    /// producer buffer during a failover).
    pub skipped_sends: u64,
    /// Producer settings that shape the measurement.
    pub producer_settings: String,
}

impl FailoverOutcome {
    /// The point's verdict line.
    pub fn verdict(&self) -> String {
        let times = self
            .unavailability
            .map_or_else(|| "no round recovered".to_owned(), |u| u.label());
        let loss = self
            .loss
            .as_ref()
            .map_or_else(|| "read-back INCOMPLETE".to_owned(), LossCheck::label);
        format!(
            "failover min/p50/p99/max {times} over {}/{} rounds (target p99 < {} ms: {}); {loss}",
            self.rounds
                .iter()
                .filter(|r| r.unavailable_ms.is_some())
                .count(),
            self.rounds_wanted,
            fmt_ms(self.target_ms),
            if self.met { "met" } else { "NOT MET" }
        )
    }
}

/// Progress shared by the send loop, the collector and the rounds.
#[derive(Debug, Default)]
struct Live {
    /// Highest offset acknowledged + 1 (0: none yet).
    offset_end: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    /// 1: stop sending.
    stop: AtomicU64,
}

/// Runs the scenario.
pub async fn run(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    let cluster = target
        .cluster
        .clone()
        .context("--scenario failover needs a cluster this harness starts (--cluster 3)")?;
    let topic = create_topic(spec, target).await?;
    let result = run_on(spec, target, &cluster, &topic).await;
    delete_topic(&topic, target).await;
    result
}

async fn run_on(
    spec: &PointSpec,
    target: &Target,
    cluster: &crate::broker::SharedCluster,
    topic: &str,
) -> Result<PointResult> {
    let rate = spec.target_rate.context("failover needs a --rate")?;
    let config = client::ProducerConfig {
        enable_idempotence: true,
        retries: RETRIES,
        retry_backoff: RETRY_BACKOFF,
        retry_backoff_max: RETRY_BACKOFF_MAX,
        ..producer_config(spec, &target.address)
    };
    let producer_settings = format!(
        "acks={}, idempotent, batch {} B, linger {} ms, {} in flight, buffer {} B, retries \
         {RETRIES}, backoff {}..{} ms",
        spec.acks.name(),
        config.batch_size_bytes,
        spec.linger_ms,
        config.max_in_flight_per_partition,
        config.max_buffered_bytes,
        RETRY_BACKOFF.as_millis(),
        RETRY_BACKOFF_MAX.as_millis()
    );
    let producer = Arc::new(Producer::new(config)?);
    let live = Arc::new(Live::default());
    let (deliveries_tx, mut deliveries_rx) = mpsc::channel(DELIVERY_QUEUE);
    let started_ns = now_ns();

    // Acknowledgement collector: deliveries resolve in send order on one partition.
    let collector_live = live.clone();
    let collector = tokio::spawn(async move {
        let mut acks: Vec<Ack> = Vec::new();
        let mut first_error: Option<String> = None;
        while let Some((seq, delivery)) = deliveries_rx.recv().await {
            let delivery: client::DeliveryFuture = delivery;
            match delivery.await {
                Ok(metadata) => {
                    let offset = metadata.offset.unwrap_or(u64::MAX);
                    acks.push(Ack {
                        at_ns: now_ns(),
                        offset,
                        seq,
                    });
                    collector_live
                        .offset_end
                        .fetch_max(offset.saturating_add(1), Ordering::AcqRel);
                    collector_live.acked.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => {
                    collector_live.failed.fetch_add(1, Ordering::AcqRel);
                    first_error.get_or_insert_with(|| error.to_string());
                }
            }
        }
        (acks, first_error)
    });

    // Send loop: open loop at `rate`, sequence numbers from 0.
    let sender_live = live.clone();
    let sender_producer = producer.clone();
    let message_size = usize::try_from(spec.message_size)?;
    let topic_name = topic.to_owned();
    let sender = tokio::spawn(async move {
        let template = payload_template(message_size);
        let mut seq: u64 = 0;
        let mut skipped: u64 = 0;
        let mut origin_ns = now_ns();
        let mut origin_seq: u64 = 0;
        let behind_max = (rate * BEHIND_MAX.as_secs_f64()) as u64;
        let mut error: Option<String> = None;
        while sender_live.stop.load(Ordering::Acquire) == 0 {
            let due =
                origin_seq + ((now_ns().saturating_sub(origin_ns)) as f64 / 1e9 * rate) as u64;
            if due > seq + behind_max {
                skipped += due - seq;
                origin_ns = now_ns();
                origin_seq = seq;
                continue;
            }
            while seq < due {
                let mut value = template.clone();
                value[..8].copy_from_slice(&seq.to_le_bytes());
                value[8..16].copy_from_slice(&now_ns().to_le_bytes());
                let record = ProducerRecord::new(topic_name.as_str(), value).with_partition(0);
                match sender_producer.enqueue(record).await {
                    Ok(delivery) => {
                        if deliveries_tx.send((seq, delivery)).await.is_err() {
                            return (seq, skipped, Some("the collector stopped".to_owned()));
                        }
                    }
                    Err(e) => {
                        error.get_or_insert_with(|| e.to_string());
                        sender_live.failed.fetch_add(1, Ordering::AcqRel);
                    }
                }
                seq += 1;
            }
            tokio::time::sleep(SEND_TICK).await;
        }
        (seq, skipped, error)
    });

    let admin = Admin::new(target.address.clone())?;
    let mut rounds = Vec::new();
    let mut kills = Vec::new();
    let mut problems = Vec::new();
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_s).max(STEADY_BETWEEN_ROUNDS)).await;
    let rounds_wanted = spec.rounds.unwrap_or(1);
    for round in 0..rounds_wanted {
        match one_round(&admin, &target.address, topic, cluster, &live).await {
            Ok((measured, kill_ns)) => {
                rounds.push(measured);
                kills.push(kill_ns);
            }
            Err(error) => {
                problems.push(format!("round {} failed: {error:#}", round + 1));
                break;
            }
        }
        tokio::time::sleep(STEADY_BETWEEN_ROUNDS).await;
    }

    live.stop.store(1, Ordering::Release);
    let (sent, skipped_sends, send_error) = sender.await.context("the send loop panicked")?;
    let drain = Duration::from_secs_f64(spec.drain_timeout_s);
    match tokio::time::timeout(drain, producer.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => problems.push(format!("flush failed: {error}")),
        Err(_) => problems.push(format!(
            "acknowledgements still outstanding after {drain:?}"
        )),
    }
    let _ = tokio::time::timeout(drain, producer.close()).await;
    let (acks, first_error) = collector.await.context("the collector panicked")?;
    let ended_ns = now_ns();
    if let Some(error) = send_error.or(first_error) {
        problems.push(format!("send errors (first: {error})"));
    }

    for (round, kill_ns) in rounds.iter_mut().zip(&kills) {
        round.unavailable_ms = unavailability_ns(&acks, *kill_ns, KILL_GRACE.as_nanos() as u64)
            .map(|ns| ns as f64 / 1e6);
    }
    let unavailable: Vec<f64> = rounds.iter().filter_map(|r| r.unavailable_ms).collect();
    let unavailability = Unavailability::of(&unavailable);
    let loss = match read_back(target, topic, &acks, sent).await {
        Ok(check) => Some(check),
        Err(error) => {
            problems.push(format!("read-back failed: {error:#}"));
            None
        }
    };
    if let Some(check) = loss.as_ref().filter(|c| !c.clean()) {
        problems.push(format!("acknowledged data: {}", check.label()));
    }
    let met = rounds.len() == rounds_wanted as usize
        && unavailable.len() == rounds.len()
        && unavailability.is_some_and(|u| u.p99_ms < TARGET_MS);
    let failed_sends = live.failed.load(Ordering::Acquire);
    let outcome = FailoverOutcome {
        rounds_wanted,
        rejoin_ms: rounds.iter().filter_map(|r| r.rejoin_ms).collect(),
        rounds,
        unavailability,
        target_ms: TARGET_MS,
        met,
        loss,
        failed_sends,
        skipped_sends,
        producer_settings,
    };
    let window_s = ended_ns.saturating_sub(started_ns) as f64 / 1e9;
    let produced = Flow::new(acks.len() as u64, spec.message_size, window_s, failed_sends);
    Ok(PointResult {
        spec: spec.clone(),
        window_s,
        msgs_per_s: produced.msgs_per_s,
        mb_per_s: produced.mb_per_s,
        produced: Some(produced),
        consumed: None,
        produce_latency: None,
        e2e_latency: None,
        cpu: CpuUsage::default(),
        producer_loop: None,
        held: None,
        cpu_per_msg: super::CpuPerMessage::default(),
        problems,
        verdict: String::new(),
        client_bound: false,
        rebalance: None,
        failover: Some(outcome),
    })
}

/// One round: find the leader (every replica in sync), kill it, wait for an acknowledgement
/// beyond the kill point, restart it, wait until it is back in the ISR. Returns the round
/// (its unavailability is computed afterwards from the full timeline) and the kill time.
async fn one_round(
    admin: &Admin,
    bootstrap: &str,
    topic: &str,
    cluster: &crate::broker::SharedCluster,
    live: &Live,
) -> Result<(Round, u64)> {
    let partitions = wait_fully_replicated(admin, topic, REJOIN_TIMEOUT).await?;
    let partition = partitions.first().context("the topic has no partition")?;
    let leader = partition.leader.context("no leader")?;
    let epoch_before = partition.leader_epoch;
    // Acknowledgements must be flowing before the kill.
    let acked = live.acked.load(Ordering::Acquire);
    wait_until(Duration::from_secs(30), || {
        live.acked.load(Ordering::Acquire) > acked
    })
    .await
    .context("no acknowledgement in 30 s before the kill")?;

    let controller_before = controller_leader(bootstrap).await;
    let killer = cluster.clone();
    let kill_ns = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut cluster = killer
            .lock()
            .map_err(|_| anyhow::anyhow!("the cluster lock is poisoned"))?;
        let kill_ns = now_ns();
        cluster.kill(leader)?;
        Ok(kill_ns)
    })
    .await??;
    tokio::time::sleep(KILL_GRACE).await;
    let kill_point = live.offset_end.load(Ordering::Acquire);
    // Until the first acknowledgement beyond the kill point, and until the metadata shows
    // the new leader and the shrunk ISR (whichever is last), watch the metadata.
    let deadline = tokio::time::Instant::now() + FAILOVER_TIMEOUT;
    let mut recovered_at: Option<tokio::time::Instant> = None;
    let (mut new_leader_seen_ms, mut isr_shrunk_seen_ms) = (None, None);
    let since_kill_ms = || now_ns().saturating_sub(kill_ns) as f64 / 1e6;
    loop {
        if recovered_at.is_none() && live.offset_end.load(Ordering::Acquire) > kill_point {
            recovered_at = Some(tokio::time::Instant::now());
        }
        if new_leader_seen_ms.is_none() || isr_shrunk_seen_ms.is_none() {
            let asked = tokio::time::timeout(METADATA_POLL_INTERVAL * 10, admin.list_topics());
            if let Ok(Ok(topics)) = asked.await {
                let partition = topics
                    .iter()
                    .find(|t| t.name == topic)
                    .and_then(|t| t.partitions.first());
                if let Some(p) = partition {
                    if new_leader_seen_ms.is_none()
                        && p.leader >= 0
                        && i32::try_from(leader).ok() != Some(p.leader)
                    {
                        new_leader_seen_ms = Some(since_kill_ms());
                    }
                    if isr_shrunk_seen_ms.is_none() && !p.isr.contains(&leader) {
                        isr_shrunk_seen_ms = Some(since_kill_ms());
                    }
                }
            }
        }
        let watched = new_leader_seen_ms.is_some() && isr_shrunk_seen_ms.is_some();
        let now = tokio::time::Instant::now();
        match recovered_at {
            Some(at) if watched || now >= at + FAILOVER_TIMEOUT / 4 => break,
            None if now >= deadline => break,
            _ => {}
        }
        tokio::time::sleep(METADATA_POLL_INTERVAL).await;
    }
    if recovered_at.is_none() {
        let state = admin
            .describe_topic(topic)
            .await
            .map_or_else(|e| e.to_string(), |d| format!("{:?}", d.partitions));
        let log = {
            let cluster = cluster.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            cluster
                .log_path(leader)
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        bail!(
            "no write acknowledged by a new leader within {FAILOVER_TIMEOUT:?} of killing \
             broker {leader} (epoch {epoch_before}); partition now: {state}; brokers' logs next \
             to {log}"
        );
    }

    let restarter = cluster.clone();
    let restart_started = now_ns();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut cluster = restarter
            .lock()
            .map_err(|_| anyhow::anyhow!("the cluster lock is poisoned"))?;
        cluster.restart(leader)
    })
    .await??;
    let ready_ns = now_ns();
    let rejoined = wait_fully_replicated(admin, topic, REJOIN_TIMEOUT).await;
    let rejoin_ms = rejoined
        .as_ref()
        .ok()
        .map(|_| now_ns().saturating_sub(ready_ns) as f64 / 1e6);
    let leader_after = rejoined.as_ref().ok().and_then(|partitions| {
        let p = partitions.first()?;
        Some((p.leader?, p.leader_epoch))
    });
    let round = Round {
        killed: leader,
        epoch_before,
        leader_after,
        unavailable_ms: None,
        controller_before,
        new_leader_seen_ms,
        isr_shrunk_seen_ms,
        restart_ms: ready_ns.saturating_sub(restart_started) as f64 / 1e6,
        rejoin_ms,
    };
    rejoined.with_context(|| format!("broker {leader} did not rejoin the ISR"))?;
    Ok((round, kill_ns))
}

/// The controller quorum's leader as the first broker of `bootstrap` that answers
/// `DescribeCluster` reports it; `None` when none answers within a second or none is known.
pub async fn controller_leader(bootstrap: &str) -> Option<u32> {
    for address in bootstrap.split(',') {
        let asked = async {
            let connection = Connection::connect(address, ConnectionConfig::default()).await?;
            let frame = connection
                .request(
                    ApiKey::DescribeCluster,
                    &DescribeClusterRequest {
                        include_fenced: true,
                    },
                )
                .await?;
            let response: DescribeClusterResponse = decode_body(&frame)?;
            Ok::<i32, client::ClientError>(response.controller_id)
        };
        if let Ok(Ok(id)) = tokio::time::timeout(Duration::from_secs(1), asked).await {
            return u32::try_from(id).ok();
        }
    }
    None
}

/// Polls `done` every [`METADATA_POLL_INTERVAL`] / 10 until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(METADATA_POLL_INTERVAL / 10).await;
    }
    Ok(())
}

/// Reads partition 0 of `topic` from the start to its end and checks it against `acks`.
async fn read_back(target: &Target, topic: &str, acks: &[Ack], sent: u64) -> Result<LossCheck> {
    let admin = Admin::new(target.address.clone())?;
    let tp = TopicPartition::new(topic, 0);
    let end = admin
        .list_offsets(&tp, client::LATEST_TIMESTAMP)
        .await
        .context("cannot find the end of the partition")?;
    let mut consumer = Consumer::new(ConsumerConfig::new(target.address.clone()))?;
    consumer.assign(std::slice::from_ref(&tp));
    consumer.seek(&tp, Offset::Earliest)?;
    let mut read: Vec<(u64, Option<u64>)> = Vec::with_capacity(acks.len());
    let mut position = 0u64;
    let deadline = tokio::time::Instant::now() + READ_BACK_TIMEOUT;
    while position < end {
        if tokio::time::Instant::now() >= deadline {
            bail!("read {position} of {end} offsets in {READ_BACK_TIMEOUT:?}");
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        for record in records.iter() {
            let seq = record
                .value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            read.push((record.offset, seq));
            position = record.offset + 1;
        }
    }
    Ok(check_read_back(acks, &read, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(at_ns: u64, offset: u64) -> Ack {
        Ack {
            at_ns,
            offset,
            seq: offset,
        }
    }

    /// The unavailability runs from the kill to the first acknowledgement beyond every
    /// offset acknowledged up to the grace: the dead leader's late answers (read after the
    /// kill, within the grace) do not end it.
    #[test]
    fn unavailability_from_a_timeline() {
        let acks = [
            ack(100, 0),
            ack(200, 1),
            ack(1_050, 2), // the dead leader's last answer, read just after the kill
            ack(4_000, 3), // the new leader
            ack(4_100, 4),
        ];
        assert_eq!(unavailability_ns(&acks, 1_000, 100), Some(3_000));
        // Without a grace the late answer would be taken for the new leader.
        assert_eq!(unavailability_ns(&acks, 1_000, 0), Some(50));
        // Nothing after the kill: never recovered.
        assert_eq!(unavailability_ns(&acks, 5_000, 100), None);
        // Nothing before the kill: the first acknowledgement after it.
        assert_eq!(unavailability_ns(&acks, 50, 10), Some(50));
        // A retried batch acknowledged by the new leader at an offset above the kill point
        // counts even when later acknowledgements reuse nothing below it.
        let retried = [ack(100, 5), ack(3_500, 6), ack(3_600, 7)];
        assert_eq!(unavailability_ns(&retried, 1_000, 100), Some(2_500));
    }

    /// Nearest-rank percentiles: with 10 values the p99 is the largest and the p50 the 5th.
    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.5), Some(5.0));
        assert_eq!(nearest_rank(&values, 0.99), Some(10.0));
        assert_eq!(nearest_rank(&values, 0.1), Some(1.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&hundred, 0.99), Some(99.0));
        let spread = Unavailability::of(&[3.0, 1.0, 2.0]).unwrap_or_else(|| panic!("empty"));
        assert_eq!(
            (spread.min_ms, spread.p50_ms, spread.p99_ms, spread.max_ms),
            (1.0, 2.0, 3.0, 3.0)
        );
        assert!(Unavailability::of(&[]).is_none());
    }

    /// The read-back check finds lost, doubled, misplaced, reordered and unknown records, and
    /// accepts unacknowledged ones.
    #[test]
    fn read_back_check() {
        let acks: Vec<Ack> = (0..4).map(|i| ack(i, i)).collect();
        let clean = check_read_back(
            &acks,
            &[
                (0, Some(0)),
                (1, Some(1)),
                (2, Some(2)),
                (3, Some(3)),
                (4, Some(4)),
            ],
            5,
        );
        assert!(clean.clean(), "{clean:?}");
        assert_eq!(clean.unacked_present, 1);
        let lost = check_read_back(&acks, &[(0, Some(0)), (1, Some(1)), (2, Some(3))], 5);
        assert_eq!((lost.lost, lost.misplaced), (1, 1));
        assert!(!lost.clean());
        let doubled = check_read_back(
            &acks,
            &[
                (0, Some(0)),
                (1, Some(1)),
                (2, Some(1)),
                (3, Some(2)),
                (4, Some(3)),
            ],
            5,
        );
        assert_eq!((doubled.duplicated, doubled.reordered), (1, 1));
        assert_eq!(doubled.misplaced, 2); // seqs 2 and 3 sit one offset later
        let unknown = check_read_back(&acks[..1], &[(0, Some(0)), (1, Some(99)), (2, None)], 5);
        assert_eq!(unknown.unknown, 2);
        assert_eq!(unknown.lost, 0);
    }
}
