//! The end-to-end scenario: producers and consumers at once on a fresh topic. Consumers are
//! polling (positions resolved; in group mode, the group balanced) before the first message is
//! due; each message's end-to-end latency is its receipt time minus its intended send time
//! (and, uncorrected, minus its actual send time), both read from [`crate::schedule::now_ns`]
//! in this process.
//!
//! After the sends, the producers' acknowledgements are awaited, then the consumers get until
//! `--drain-timeout` after the end of the sends to receive every acknowledged message; a point
//! whose consumers fell behind is marked as not held. The held test's slices
//! ([`crate::held`]) are the consumers' receipts against the producers' schedule.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::consume::{
    prepare, rebalanced_during, start, stop, wait_for, wait_for_group, LoopSettings,
};
use super::produce::{assess, start_all, timeline, window_slices};
use super::{
    create_topic, delete_topic, CpuPerMessage, CpuWindow, LatencySummary, PointResult, PointState,
    Target, WindowCell,
};
use crate::args::PointSpec;
use crate::held::SliceLayout;
use crate::schedule::{instant_at, now_ns};

/// Runs one e2e point.
pub async fn run(spec: &PointSpec, target: &Target) -> Result<PointResult> {
    let topic = create_topic(spec, target).await?;
    let result = run_on(spec, target, &topic).await;
    delete_topic(&topic, target).await;
    result
}

async fn run_on(spec: &PointSpec, target: &Target, topic: &str) -> Result<PointResult> {
    let state = Arc::new(PointState::default());
    let prepared = prepare(spec, target, topic).await?;
    let cell = Arc::new(WindowCell::unset());
    let settings = LoopSettings {
        window: cell.clone(),
        record_latency: true,
        receipts: None,
        slice_span_ns: SliceLayout::span_ns(spec),
    };
    let consumers = start(prepared.consumers, &state, &settings);
    let assignments = prepared.assignments;
    let consumers = wait_for_group(spec, &state, assignments.as_ref(), consumers).await?;
    let warmup_ns = (spec.warmup_s * 1e9) as u64;
    let (start_ns, window) = timeline(spec.amount, warmup_ns);
    cell.set(window);
    let cpu = CpuWindow::start(window, &target.broker_pids);
    let producers = match start_all(
        spec,
        target,
        topic,
        &state,
        spec.producer_load(),
        spec.amount,
        (start_ns, window),
    ) {
        Ok(producers) => producers,
        Err(error) => {
            stop(&state, consumers).await;
            return Err(error);
        }
    };
    let drain = Duration::from_secs_f64(spec.drain_timeout_s);
    let produced_outcome = producers.finish(drain).await;
    // The consumers get until drain_timeout after the end of the sends (at least a second).
    let deadline = instant_at(produced_outcome.sends_end_ns + (spec.drain_timeout_s * 1e9) as u64)
        .max(tokio::time::Instant::now() + Duration::from_secs(1));
    let caught_up = wait_for(&state, || state.acked(), drain, deadline).await;
    let cpu = cpu.finish().await;
    // Before the close, whose Revoked events are no rebalance.
    let rebalanced = rebalanced_during(assignments.as_ref(), window.start_ns);
    let consumed_outcome = stop(&state, consumers).await;

    let mut problems = produced_outcome.problems.clone();
    problems.extend(consumed_outcome.problems.iter().cloned());
    problems.extend(rebalanced);
    if !caught_up {
        problems.push(format!(
            "consumers fell behind: {} of {} acknowledged messages received {:.1} s after \
             the sends",
            state.received(),
            state.acked(),
            now_ns().saturating_sub(produced_outcome.sends_end_ns) as f64 / 1e9
        ));
    }
    let (produced, consumed, window_s) =
        super::flows(spec, &window, &produced_outcome, &consumed_outcome);
    let slices = window_slices(
        produced_outcome.slice_layout,
        consumed_outcome.slices.as_ref(),
        &produced_outcome.scheduled_by_slice_end,
    );
    let held = assess(
        spec,
        consumed.msgs_per_s.min(produced.msgs_per_s),
        &produced_outcome.loop_stats,
        slices,
        &mut problems,
    );
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
        rebalance: None,
        failover: None,
    })
}
