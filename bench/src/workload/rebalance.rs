//! The rebalance scenario: how long a consumer group takes to hand a leaving member's
//! partitions to the others, under live traffic.
//!
//! ```text
//!  N consumers subscribe ─▶ balanced ─▶ producers start (open loop, --rate)
//!  repeat --repeats times:
//!    every partition flowing ─▶ steady for --warmup (longest silence per partition = baseline)
//!    the oldest member stops polling; mark = now; close() (graceful) or drop (crash)
//!      rebalance done   = first time the survivors' held sets (from their Assigned events)
//!                         cover every partition again                      − mark
//!      data flowing     = last of the first records received, after the mark, on each
//!                         partition that moved                              − mark
//!      unmoved partitions: longest silence between mark and data flowing, against the
//!                         baseline, and any partition revoked from a survivor (cooperative
//!                         rebalancing keeps both at zero)
//!    a fresh consumer joins; wait until balanced again
//!  producers stop; consumers catch up; every consumer closes
//! ```
//!
//! One point measures one way of leaving ([`Leave`]); the plan puts the graceful point and the
//! crash point one after the other, each on its own topic and group. The target (the issue's):
//! a graceful leave rebalances in under 1 s, a crash in under 1 s plus the session timeout.
//!
//! Records received twice (at-least-once: a partition's new owner resumes at the committed
//! offset, up to an auto-commit interval behind after a crash) are counted apart and left out
//! of throughput and latency.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::consume::{self, group_consumer, join_timeout, ConsumerTask, LoopSettings};
use super::group::{Assignments, Receipts, WAIT_STEP};
use super::produce::{assess, start_all, timeline};
use super::{
    create_topic, delete_topic, CpuPerMessage, CpuWindow, LatencySummary, PointResult, PointState,
    Target, WindowCell,
};
use crate::args::{Amount, GroupSpec, Leave, PointSpec};
use crate::histogram::fmt_ms;
use crate::schedule::now_ns;

/// What the issue allows a rebalance beyond the session timeout (crash) or at all (graceful).
pub const TARGET_MS: f64 = 1000.0;

/// Longest wait for a rebalance beyond its target: past it the repeat counts as failed and the
/// point stops repeating.
const REBALANCE_SLACK: Duration = Duration::from_secs(15);

/// Longest wait for records on every partition (before a steady period, and after a
/// rebalance for the moved partitions). At the default 20k msgs/s over 6 partitions each
/// partition gets a batch every few ms; 10 s covers a slow first fetch on shared cores.
const FLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition that did not move is said to have been interrupted when it went without
/// records during the rebalance for longer than its steady-state longest silence plus this.
/// An eager rebalance stops every partition for the whole rebalance (hundreds of ms or the
/// session timeout); scheduling noise on 2 shared cores is tens of ms.
pub const UNMOVED_GAP_TOLERANCE_MS: f64 = 200.0;

/// Longest the producers may send: far beyond any run (the scenario stops them itself).
const SEND_SECONDS_MAX: f64 = 86_400.0;

/// One leave.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repeat {
    /// From the leave until the survivors' assignments covered every partition (`None`: not
    /// within the wait).
    pub rebalance_done_ms: Option<f64>,
    /// From the leave until every moved partition delivered a record again.
    pub data_flowing_ms: Option<f64>,
    /// Partitions that changed owner: the leaver's, and any taken from a survivor.
    pub moved: Vec<u32>,
    /// Longest silence of a partition that did not move, from the leave to data flowing.
    pub unmoved_gap_ms: f64,
    /// Longest silence of any partition in the steady period before the leave.
    pub steady_gap_ms: f64,
    /// A partition that did not move was interrupted (see [`UNMOVED_GAP_TOLERANCE_MS`]), or
    /// a survivor had partitions revoked.
    pub unmoved_interrupted: bool,
}

/// Minimum, median and maximum of some repeats, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min_ms: f64,
    /// Median (the mean of the middle two for an even count).
    pub median_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// How many values.
    pub count: usize,
}

impl Spread {
    /// The spread of `values`, `None` when empty.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let (first, last) = (sorted.first()?, sorted.last()?);
        let median = if count % 2 == 1 {
            sorted[count / 2]
        } else {
            (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0
        };
        Some(Spread {
            min_ms: *first,
            median_ms: median,
            max_ms: *last,
            count,
        })
    }

    /// `120 / 180 / 250 ms`.
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {} ms",
            fmt_ms(self.min_ms),
            fmt_ms(self.median_ms),
            fmt_ms(self.max_ms)
        )
    }
}

/// Everything the rebalance scenario measured at one point.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceOutcome {
    /// How the member left.
    pub leave: Leave,
    /// Session timeout of the group, ms.
    pub session_timeout_ms: u64,
    /// Heartbeat interval of the members, ms.
    pub heartbeat_interval_ms: u64,
    /// Leaves asked for.
    pub repeats_wanted: u32,
    /// What each leave measured.
    pub repeats: Vec<Repeat>,
    /// Rebalance done, over the repeats that completed.
    pub rebalance_done: Option<Spread>,
    /// Data flowing again, over the repeats that completed.
    pub data_flowing: Option<Spread>,
    /// The target for "rebalance done": 1 s, plus the session timeout for a crash.
    pub target_ms: f64,
    /// Every wanted repeat completed and its rebalance was done within the target.
    pub met: bool,
    /// Any repeat interrupted a partition that did not move.
    pub unmoved_interrupted: bool,
    /// Records received twice (at-least-once redelivery after the moves).
    pub redelivered: u64,
}

impl RebalanceOutcome {
    /// Summarises the repeats.
    pub fn new(leave: Leave, group: GroupSpec, repeats_wanted: u32, repeats: Vec<Repeat>) -> Self {
        let done: Vec<f64> = repeats.iter().filter_map(|r| r.rebalance_done_ms).collect();
        let flowing: Vec<f64> = repeats.iter().filter_map(|r| r.data_flowing_ms).collect();
        let target_ms = match leave {
            Leave::Graceful => TARGET_MS,
            Leave::Crash => TARGET_MS + group.session_timeout_ms as f64,
        };
        let complete = repeats.len() == repeats_wanted as usize && done.len() == repeats.len();
        RebalanceOutcome {
            leave,
            session_timeout_ms: group.session_timeout_ms,
            heartbeat_interval_ms: group.heartbeat_interval_ms,
            repeats_wanted,
            rebalance_done: Spread::of(&done),
            data_flowing: Spread::of(&flowing),
            target_ms,
            met: complete && done.iter().all(|ms| *ms < target_ms),
            unmoved_interrupted: repeats.iter().any(|r| r.unmoved_interrupted),
            redelivered: 0,
            repeats,
        }
    }

    /// `met` / `NOT met`.
    pub fn met_label(&self) -> &'static str {
        if self.met {
            "met"
        } else {
            "NOT met"
        }
    }

    /// `no gap` / `GAP`.
    pub fn gap_label(&self) -> &'static str {
        if self.unmoved_interrupted {
            "GAP"
        } else {
            "no gap"
        }
    }

    /// One line: the times, the target and whether it was met, and the unmoved partitions.
    pub fn verdict(&self) -> String {
        let spread = |s: &Option<Spread>| s.as_ref().map_or_else(|| "-".into(), Spread::label);
        let target = match self.leave {
            Leave::Graceful => format!("< {} ms", fmt_ms(self.target_ms)),
            Leave::Crash => format!(
                "< 1 s + {} ms session = {} ms",
                self.session_timeout_ms,
                fmt_ms(self.target_ms)
            ),
        };
        format!(
            "rebalance {}: {} leave rebalanced in {} (min/median/max of {}/{}), data flowing \
             again in {}; target {target}; unmoved partitions: {}",
            self.met_label(),
            self.leave.name(),
            spread(&self.rebalance_done),
            self.rebalance_done.map_or(0, |s| s.count),
            self.repeats_wanted,
            spread(&self.data_flowing),
            self.gap_label()
        )
    }
}

/// Runs one rebalance point.
pub async fn run(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    let topic = create_topic(spec, target).await?;
    let result = run_on(spec, target, &topic).await;
    delete_topic(&topic, target).await;
    result
}

/// The members of the group, oldest first.
struct Group<'a> {
    spec: &'a PointSpec,
    target: &'a Target,
    topic: &'a str,
    state: Arc<PointState>,
    settings: LoopSettings,
    assignments: Arc<Assignments>,
    receipts: Arc<Receipts>,
    live: Vec<ConsumerTask>,
    next_id: usize,
    /// Outcomes of members that left.
    left: Vec<consume::ConsumerOutcome>,
    /// Problems of their leaving.
    left_problems: Vec<String>,
}

impl Group<'_> {
    /// A fresh consumer joins (it subscribes now and joins at its first poll).
    fn add(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let ready = group_consumer(self.spec, self.target, self.topic, id, &self.assignments)?;
        self.live
            .push(ConsumerTask::spawn(ready, &self.state, &self.settings));
        Ok(())
    }

    /// Stops the consumers, closes them, and returns everything they measured.
    async fn finish(self) -> consume::ConsumersOutcome {
        let mut outcome = consume::stop(&self.state, self.live).await;
        for left in self.left {
            outcome.merge(left);
        }
        outcome.problems.extend(self.left_problems);
        outcome
    }
}

async fn run_on(spec: &PointSpec, target: &Target, topic: &str) -> Result<PointResult> {
    let rebalance = spec
        .rebalance
        .context("a rebalance point without its leave (a bug of the plan)")?;
    let group_spec = spec
        .group
        .context("a rebalance point without group settings (a bug of the plan)")?;
    let state = Arc::new(PointState::default());
    let cell = Arc::new(WindowCell::unset());
    let receipts = Arc::new(Receipts::new(spec.partitions));
    let mut group = Group {
        spec,
        target,
        topic,
        state: state.clone(),
        settings: LoopSettings {
            window: cell.clone(),
            record_latency: true,
            receipts: Some(receipts.clone()),
            slice_span_ns: None,
        },
        assignments: Arc::new(Assignments::new(spec.partitions)),
        receipts,
        live: Vec::new(),
        next_id: 0,
        left: Vec::new(),
        left_problems: Vec::new(),
    };
    let joined: Result<()> = async {
        for _ in 0..spec.consumers {
            group.add()?;
        }
        group
            .assignments
            .wait_balanced(join_timeout(group_spec))
            .await
            .map(|_| ())
    }
    .await;
    if let Err(error) = joined {
        group.finish().await;
        return Err(error.context("the group did not form"));
    }

    // Producers send until stopped; everything from their first message is measured.
    let amount = Amount::Duration {
        seconds: SEND_SECONDS_MAX,
    };
    let (start_ns, mut window) = timeline(amount, 0);
    window.end_ns = None;
    cell.set(window);
    let cpu = CpuWindow::start(window, &target.broker_pids);
    let producers = match start_all(
        spec,
        target,
        topic,
        &state,
        spec.producer_load(),
        amount,
        (start_ns, window),
    ) {
        Ok(producers) => producers,
        Err(error) => {
            group.finish().await;
            return Err(error);
        }
    };

    let mut problems = Vec::new();
    let mut repeats = Vec::new();
    for index in 0..rebalance.repeats {
        match leave_once(&mut group, rebalance.leave, group_spec).await {
            Ok(repeat) => {
                let complete = repeat.data_flowing_ms.is_some();
                repeats.push(repeat);
                if !complete {
                    problems.push(format!(
                        "repeat {}: the {} leave did not complete; no more repeats",
                        index + 1,
                        rebalance.leave.name()
                    ));
                    break;
                }
            }
            Err(error) => {
                problems.push(format!("repeat {}: {error:#}", index + 1));
                break;
            }
        }
        if index + 1 < rebalance.repeats {
            // A fresh consumer takes the leaver's place before the next leave.
            let rejoined = match group.add() {
                Ok(()) => {
                    group
                        .assignments
                        .wait_balanced(join_timeout(group_spec))
                        .await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = rejoined {
                problems.push(format!("re-adding a consumer: {error:#}"));
                break;
            }
        }
    }

    state.stop_sends.store(true, Ordering::Release);
    let drain = Duration::from_secs_f64(spec.drain_timeout_s);
    let produced_outcome = producers.finish(drain).await;
    let deadline = tokio::time::Instant::now() + drain;
    let caught_up = consume::wait_for(&state, || state.acked(), drain, deadline).await;
    let cpu = cpu.finish().await;
    let redelivered = group.receipts.redelivered();
    let consumed_outcome = group.finish().await;

    problems.extend(produced_outcome.problems.iter().cloned());
    problems.extend(consumed_outcome.problems.iter().cloned());
    if !caught_up {
        problems.push(format!(
            "consumers fell behind: {} of {} acknowledged messages received after the sends",
            state.received(),
            state.acked()
        ));
    }
    let (produced, consumed, window_s) =
        super::flows(spec, &window, &produced_outcome, &consumed_outcome);
    // Held: the producers kept the rate (the consumers pause on purpose).
    // The backlog is not assessed: the window's length is not known in advance, and the
    // consumers pause on purpose.
    let held = assess(
        spec,
        produced.msgs_per_s,
        &produced_outcome.loop_stats,
        Vec::new(),
        &mut problems,
    );
    let mut outcome =
        RebalanceOutcome::new(rebalance.leave, group_spec, rebalance.repeats, repeats);
    outcome.redelivered = redelivered;
    Ok(PointResult {
        spec: spec.clone(),
        window_s,
        msgs_per_s: consumed.msgs_per_s,
        mb_per_s: consumed.mb_per_s,
        produced: Some(produced),
        consumed: Some(consumed),
        produce_latency: Some(LatencySummary::from(&produced_outcome.latency)),
        e2e_latency: Some(LatencySummary::from(&consumed_outcome.latency)),
        cpu,
        producer_loop: Some(produced_outcome.loop_stats),
        held,
        cpu_per_msg: CpuPerMessage::default(),
        problems,
        verdict: String::new(),
        client_bound: false,
        rebalance: Some(outcome),
        failover: None,
    })
}

/// Waits until every partition received a record after `since_ns`.
async fn wait_flowing(receipts: &Receipts, since_ns: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + FLOW_TIMEOUT;
    loop {
        let silent = receipts.silent_since(since_ns);
        if silent.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "partitions {silent:?} received nothing for {FLOW_TIMEOUT:?} (is the rate too low?)"
        );
        tokio::time::sleep(WAIT_STEP).await;
    }
}

/// One leave of the oldest member, measured (see the module docs).
async fn leave_once(group: &mut Group<'_>, leave: Leave, spec: GroupSpec) -> Result<Repeat> {
    // Steady state: every partition flowing, then a quiet period as the baseline.
    wait_flowing(&group.receipts, now_ns()).await?;
    group.receipts.reset_gaps(now_ns());
    tokio::time::sleep(Duration::from_secs_f64(group.spec.warmup_s)).await;

    anyhow::ensure!(!group.live.is_empty(), "no consumer left to leave");
    let leaver = group.live.remove(0);
    let leaver_id = leaver.id;
    let (consumer, outcome) = leaver.stop().await?;
    group.left.push(outcome);
    let held = group.assignments.leave(leaver_id);
    let steady = group.receipts.mark();
    let mark_ns = now_ns();
    group.assignments.mark(mark_ns);
    match leave {
        Leave::Graceful => {
            if let Err(error) = consumer.close().await {
                group
                    .left_problems
                    .push(format!("closing the leaving consumer failed: {error}"));
            }
        }
        Leave::Crash => drop(consumer),
    }

    let ms_since_mark = |ns: u64| ns.saturating_sub(mark_ns) as f64 / 1e6;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(spec.session_timeout_ms)
        + Duration::from_secs_f64(TARGET_MS / 1e3)
        + REBALANCE_SLACK;
    let mut repeat = Repeat::default();
    let done_ns = loop {
        if let Some(done_ns) = group.assignments.covered_since_mark() {
            break Some(done_ns);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(WAIT_STEP).await;
    };
    let Some(done_ns) = done_ns else {
        repeat.moved = held.into_iter().collect();
        return Ok(repeat);
    };
    repeat.rebalance_done_ms = Some(ms_since_mark(done_ns));
    // Data flowing: the first receipt after the mark of every moved partition.
    let flowing_deadline = tokio::time::Instant::now() + FLOW_TIMEOUT;
    let (snapshot, moved, flowing_ns) = loop {
        let snapshot = group.receipts.snapshot(now_ns());
        let moved: BTreeSet<u32> = held
            .iter()
            .copied()
            .chain(group.assignments.taken_from_members_since_mark())
            .collect();
        let firsts: Option<Vec<u64>> = moved
            .iter()
            .map(|p| {
                snapshot
                    .first_after_mark_ns
                    .get(*p as usize)
                    .copied()
                    .flatten()
            })
            .collect();
        if let Some(firsts) = firsts {
            break (snapshot, moved, firsts.into_iter().max());
        }
        if tokio::time::Instant::now() >= flowing_deadline {
            break (snapshot, moved, None);
        }
        tokio::time::sleep(WAIT_STEP).await;
    };
    repeat.data_flowing_ms = flowing_ns.map(ms_since_mark);
    let taken_from_survivors = !group.assignments.taken_from_members_since_mark().is_empty();
    let unmoved = (0..group.spec.partitions).filter(|p| !moved.contains(p));
    let gap_ns = unmoved
        .filter_map(|p| snapshot.gap_ns.get(p as usize).copied())
        .max()
        .unwrap_or(0);
    let steady_ns = steady.iter().copied().max().unwrap_or(0);
    repeat.unmoved_gap_ms = gap_ns as f64 / 1e6;
    repeat.steady_gap_ms = steady_ns as f64 / 1e6;
    repeat.unmoved_interrupted = taken_from_survivors
        || repeat.unmoved_gap_ms > repeat.steady_gap_ms + UNMOVED_GAP_TOLERANCE_MS;
    repeat.moved = moved.into_iter().collect();
    Ok(repeat)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Min, median (odd and even counts) and max.
    #[test]
    fn spreads() {
        assert_eq!(Spread::of(&[]), None);
        let odd = Spread::of(&[300.0, 100.0, 200.0]).unwrap();
        assert_eq!(
            (odd.min_ms, odd.median_ms, odd.max_ms),
            (100.0, 200.0, 300.0)
        );
        let even = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((even.median_ms, even.count), (2.5, 4));
    }

    fn repeat(done_ms: f64, interrupted: bool) -> Repeat {
        Repeat {
            rebalance_done_ms: Some(done_ms),
            data_flowing_ms: Some(done_ms + 10.0),
            moved: vec![0, 1],
            unmoved_gap_ms: 20.0,
            steady_gap_ms: 15.0,
            unmoved_interrupted: interrupted,
        }
    }

    /// The target is 1 s for a graceful leave and 1 s plus the session timeout for a crash,
    /// for every repeat; a missing repeat fails it.
    #[test]
    fn verdicts() {
        let group = GroupSpec::with_session_timeout(2000);
        let graceful = RebalanceOutcome::new(
            Leave::Graceful,
            group,
            2,
            vec![repeat(300.0, false), repeat(900.0, false)],
        );
        assert!(graceful.met && !graceful.unmoved_interrupted);
        assert_eq!(graceful.target_ms, 1000.0);
        assert!(graceful.verdict().starts_with("rebalance met: graceful"));
        let slow = RebalanceOutcome::new(Leave::Graceful, group, 1, vec![repeat(1200.0, true)]);
        assert!(!slow.met && slow.unmoved_interrupted);
        assert!(slow.verdict().contains("NOT met") && slow.verdict().contains("GAP"));
        let crash = RebalanceOutcome::new(Leave::Crash, group, 2, vec![repeat(2700.0, false)]);
        assert_eq!(crash.target_ms, 3000.0);
        assert!(!crash.met, "one of two repeats missing");
        let crash = RebalanceOutcome::new(Leave::Crash, group, 1, vec![repeat(2700.0, false)]);
        assert!(crash.met);
    }
}
