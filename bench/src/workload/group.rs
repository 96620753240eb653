//! What the harness needs to measure consumer groups: the [`client::GroupConfig`] of a point,
//! [`Assignments`] (who holds which partition, from the consumers' rebalance events) and
//! [`Receipts`] (per partition: when records last arrived, the longest silence, the first
//! record after a mark, records delivered twice). Used by group mode in [`super::consume`] /
//! [`super::e2e`] and by [`super::rebalance`].
//!
//! ```text
//!  consumer i: poll ──▶ on_rebalance(Assigned | Revoked | Lost) ──▶ Assignments (held sets,
//!                                                                  time of each change)
//!              poll ──▶ records ──▶ Receipts (per partition: last receipt, longest gap,
//!                                             first receipt after mark, next offset)
//!  scenario: waits until the live members' held sets cover every partition ("balanced"),
//!            marks the leave, reads the times back
//! ```
//!
//! Both trackers sit behind a `std::sync::Mutex`: the rebalance callback runs inside
//! `Consumer::poll` on each consumer's task, events are rare, and receipts are taken once per
//! poll (a few hundred times a second), never across an `.await`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{bail, Result};
use client::{Delivery, GroupConfig, Offset, RebalanceEvent};

use crate::args::GroupSpec;
use crate::schedule::now_ns;

/// How often a waiter looks at the trackers. The times measured are those of the events
/// themselves (taken inside the consumers' polls), so this only delays the waiter.
pub const WAIT_STEP: Duration = Duration::from_millis(2);

/// The group settings of a point: the client's defaults (cooperative-sticky, at-least-once
/// auto-commit every 5 s), the point's session timeout and heartbeat, and the earliest offset
/// for partitions without a committed offset (what manual mode seeks to).
pub fn group_config(group_id: &str, spec: GroupSpec, client_id: String) -> GroupConfig {
    GroupConfig {
        client_id,
        session_timeout: Duration::from_millis(spec.session_timeout_ms),
        heartbeat_interval: Duration::from_millis(spec.heartbeat_interval_ms),
        delivery: Delivery::AtLeastOnce,
        auto_commit: true,
        auto_offset_reset: Offset::Earliest,
        ..GroupConfig::new(group_id)
    }
}

/// Locks a tracker; a panic in another holder leaves consistent data behind (every update is
/// a few field writes), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One member as its rebalance events describe it.
#[derive(Debug, Default, Clone)]
struct Member {
    held: BTreeSet<u32>,
    /// Partitions revoked or lost since the last [`Assignments::mark`].
    taken_since_mark: BTreeSet<u32>,
}

#[derive(Debug, Default)]
struct AssignmentsState {
    /// Live members by id; a member that left is removed (its later events are ignored).
    members: BTreeMap<usize, Member>,
    /// Time of the last change of any live member's held set.
    last_change_ns: u64,
    /// Set by [`Assignments::mark`].
    mark_ns: Option<u64>,
    /// First time after the mark at which the live members covered every partition.
    covered_ns: Option<u64>,
}

/// Who holds which partition of one topic, from the rebalance events of the members.
#[derive(Debug)]
pub struct Assignments {
    partitions: u32,
    state: Mutex<AssignmentsState>,
}

/// A summary of [`Assignments`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    /// Partitions held by each live member.
    pub counts: Vec<(usize, usize)>,
    /// Every partition is held by a live member.
    pub covered: bool,
    /// No partition is held twice.
    pub disjoint: bool,
}

impl Holdings {
    /// Covered, disjoint, and no member holds more than one partition more than another.
    pub fn balanced(&self) -> bool {
        let most = self.counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let least = self.counts.iter().map(|(_, n)| *n).min().unwrap_or(0);
        self.covered && self.disjoint && most - least <= 1
    }
}

impl std::fmt::Display for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(id, n)| format!("consumer {id}: {n}"))
            .collect();
        write!(
            f,
            "partitions held: {}; covered {}, disjoint {}",
            counts.join(", "),
            self.covered,
            self.disjoint
        )
    }
}

impl Assignments {
    /// Nobody holds anything of a topic with `partitions` partitions.
    pub fn new(partitions: u32) -> Assignments {
        Assignments {
            partitions,
            state: Mutex::new(AssignmentsState::default()),
        }
    }

    /// A member joins (holding nothing until its first `Assigned`).
    pub fn join(&self, member: usize) {
        lock(&self.state).members.insert(member, Member::default());
    }

    /// A member leaves: its events are ignored from now on. Returns what it held.
    pub fn leave(&self, member: usize) -> BTreeSet<u32> {
        lock(&self.state)
            .members
            .remove(&member)
            .map(|m| m.held)
            .unwrap_or_default()
    }

    /// Applies one rebalance event of `member` (called from its `on_rebalance` callback).
    pub fn record(&self, member: usize, event: &RebalanceEvent) {
        let now = now_ns();
        let mut state = lock(&self.state);
        let Some(entry) = state.members.get_mut(&member) else {
            return;
        };
        let partitions = event.partitions().iter().map(|tp| tp.partition);
        match event {
            RebalanceEvent::Assigned(_) => entry.held.extend(partitions),
            RebalanceEvent::Revoked(_) | RebalanceEvent::Lost(_) => {
                for partition in partitions {
                    entry.held.remove(&partition);
                    entry.taken_since_mark.insert(partition);
                }
            }
        }
        if event.partitions().is_empty() {
            return;
        }
        state.last_change_ns = now;
        if state.mark_ns.is_some() && state.covered_ns.is_none() && covered(&state, self.partitions)
        {
            state.covered_ns = Some(now);
        }
    }

    /// Starts timing a rebalance at `at_ns` (the leave): [`Assignments::covered_since_mark`]
    /// then reports when the live members cover every partition again.
    pub fn mark(&self, at_ns: u64) {
        let mut state = lock(&self.state);
        state.mark_ns = Some(at_ns);
        state.covered_ns = None;
        for member in state.members.values_mut() {
            member.taken_since_mark.clear();
        }
    }

    /// When the live members covered every partition again after the mark.
    pub fn covered_since_mark(&self) -> Option<u64> {
        lock(&self.state).covered_ns
    }

    /// Partitions revoked from (or lost by) live members since the mark: partitions that
    /// moved although their owner stayed.
    pub fn taken_from_members_since_mark(&self) -> BTreeSet<u32> {
        lock(&self.state)
            .members
            .values()
            .flat_map(|m| m.taken_since_mark.iter().copied())
            .collect()
    }

    /// Partitions held by live members now, by member.
    pub fn held(&self) -> BTreeMap<usize, BTreeSet<u32>> {
        lock(&self.state)
            .members
            .iter()
            .map(|(id, m)| (*id, m.held.clone()))
            .collect()
    }

    /// Time of the last change of a live member's partitions (0: none yet).
    pub fn last_change_ns(&self) -> u64 {
        lock(&self.state).last_change_ns
    }

    /// Who holds what, now.
    pub fn holdings(&self) -> Holdings {
        let state = lock(&self.state);
        let mut seen = BTreeSet::new();
        let mut disjoint = true;
        for member in state.members.values() {
            for partition in &member.held {
                disjoint &= seen.insert(*partition);
            }
        }
        Holdings {
            counts: state
                .members
                .iter()
                .map(|(id, m)| (*id, m.held.len()))
                .collect(),
            covered: covered(&state, self.partitions),
            disjoint,
        }
    }

    /// Waits until the live members hold a balanced assignment (see [`Holdings::balanced`]);
    /// fails after `timeout` with who holds what. Returns the time of the event that
    /// completed it.
    pub async fn wait_balanced(&self, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let holdings = self.holdings();
            if holdings.balanced() {
                return Ok(self.last_change_ns());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the group was not balanced after {timeout:?}: {holdings}");
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }
}

/// Whether the live members hold every partition.
fn covered(state: &AssignmentsState, partitions: u32) -> bool {
    let held: BTreeSet<u32> = state
        .members
        .values()
        .flat_map(|m| m.held.iter().copied())
        .collect();
    (0..partitions).all(|p| held.contains(&p))
}

/// Receipts of one partition.
#[derive(Debug, Default, Clone, Copy)]
struct PartitionReceipts {
    /// Last receipt (any consumer).
    last_ns: Option<u64>,
    /// Longest time without a receipt since the last reset (gaps that end after it).
    max_gap_ns: u64,
    /// First receipt after the mark.
    first_after_mark_ns: Option<u64>,
    /// One past the highest offset received: a record below it is a redelivery.
    next_offset: u64,
    /// Records received again (at-least-once: a new owner restarts at the committed offset).
    redelivered: u64,
}

/// Per-partition receipt times of one topic, fed by the consumers once per poll.
#[derive(Debug)]
pub struct Receipts {
    partitions: Mutex<Vec<PartitionReceipts>>,
}

/// [`Receipts`] locked for the records of one poll.
pub struct ReceiptsGuard<'a>(MutexGuard<'a, Vec<PartitionReceipts>>);

impl ReceiptsGuard<'_> {
    /// Records one record received at `done_ns`; false when it was received before (a
    /// redelivery). Records of other partitions than the topic's count as fresh.
    pub fn record(&mut self, partition: u32, offset: u64, done_ns: u64) -> bool {
        let Some(entry) = self.0.get_mut(slot(partition)) else {
            return true;
        };
        if let Some(last) = entry.last_ns {
            entry.max_gap_ns = entry.max_gap_ns.max(done_ns.saturating_sub(last));
        }
        entry.last_ns = Some(done_ns);
        entry.first_after_mark_ns.get_or_insert(done_ns);
        if offset >= entry.next_offset {
            entry.next_offset = offset + 1;
            true
        } else {
            entry.redelivered += 1;
            false
        }
    }
}

/// Gaps and first receipts read back after a mark (see [`Receipts::snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct ReceiptSnapshot {
    /// Per partition: the longest time without a receipt since the mark, counting a silence
    /// still going on at the snapshot.
    pub gap_ns: Vec<u64>,
    /// Per partition: the first receipt after the mark.
    pub first_after_mark_ns: Vec<Option<u64>>,
    /// Per partition: the longest gap of the period before the mark (steady state).
    pub steady_gap_ns: Vec<u64>,
}

/// A partition index as a `usize` (partitions are at most [`crate::args::CLIENTS_MAX`]).
fn slot(partition: u32) -> usize {
    usize::try_from(partition).unwrap_or(usize::MAX)
}

impl Receipts {
    /// No receipt yet on `partitions` partitions.
    pub fn new(partitions: u32) -> Receipts {
        Receipts {
            partitions: Mutex::new(vec![PartitionReceipts::default(); slot(partitions)]),
        }
    }

    /// Locks the receipts for the records of one poll (never held across an `.await`).
    pub fn lock(&self) -> ReceiptsGuard<'_> {
        ReceiptsGuard(lock(&self.partitions))
    }

    /// Starts a steady period at `at_ns`: longest gaps restart from zero, and a partition
    /// silent since before counts its silence from now.
    pub fn reset_gaps(&self, at_ns: u64) {
        for entry in lock(&self.partitions).iter_mut() {
            entry.max_gap_ns = 0;
            entry.last_ns = Some(entry.last_ns.map_or(at_ns, |last| last.max(at_ns)));
        }
    }

    /// Marks the leave: returns the steady period's longest gaps, restarts them, and forgets
    /// first receipts (the next receipt of each partition is its first after the mark).
    /// Gaps that began before the mark and end after it count after it.
    pub fn mark(&self) -> Vec<u64> {
        let mut partitions = lock(&self.partitions);
        partitions
            .iter_mut()
            .map(|entry| {
                let steady = entry.max_gap_ns;
                entry.max_gap_ns = 0;
                entry.first_after_mark_ns = None;
                steady
            })
            .collect()
    }

    /// The partitions that received nothing since `since_ns`.
    pub fn silent_since(&self, since_ns: u64) -> Vec<u32> {
        lock(&self.partitions)
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.last_ns.is_none_or(|last| last < since_ns))
            .filter_map(|(index, _)| u32::try_from(index).ok())
            .collect()
    }

    /// Gaps since the mark (an ongoing silence counted up to `now_ns`) and first receipts;
    /// `steady_gap_ns` is left empty for the caller to fill from [`Receipts::mark`].
    pub fn snapshot(&self, now_ns: u64) -> ReceiptSnapshot {
        let partitions = lock(&self.partitions);
        ReceiptSnapshot {
            gap_ns: partitions
                .iter()
                .map(|entry| {
                    let open = entry.last_ns.map_or(0, |last| now_ns.saturating_sub(last));
                    entry.max_gap_ns.max(open)
                })
                .collect(),
            first_after_mark_ns: partitions.iter().map(|e| e.first_after_mark_ns).collect(),
            steady_gap_ns: Vec::new(),
        }
    }

    /// Records received more than once, in all.
    pub fn redelivered(&self) -> u64 {
        lock(&self.partitions).iter().map(|e| e.redelivered).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::TopicPartition;

    fn tps(partitions: &[u32]) -> Vec<TopicPartition> {
        partitions
            .iter()
            .map(|p| TopicPartition::new("t", *p))
            .collect()
    }

    /// Held sets follow Assigned / Revoked / Lost; a member that left is ignored; coverage
    /// after a mark is timed once.
    #[test]
    fn assignments_follow_events() {
        let assignments = Assignments::new(4);
        assignments.join(0);
        assignments.join(1);
        assignments.record(0, &RebalanceEvent::Assigned(tps(&[0, 1, 2, 3])));
        let holdings = assignments.holdings();
        assert!(holdings.covered && holdings.disjoint && !holdings.balanced());
        assignments.record(0, &RebalanceEvent::Revoked(tps(&[2, 3])));
        assignments.record(1, &RebalanceEvent::Assigned(tps(&[2, 3])));
        assert!(assignments.holdings().balanced());
        assignments.mark(now_ns());
        let moved = assignments.leave(1);
        assert_eq!(moved.into_iter().collect::<Vec<_>>(), [2, 3]);
        assignments.record(1, &RebalanceEvent::Revoked(tps(&[2, 3]))); // ignored
        assert!(!assignments.holdings().covered);
        assert_eq!(assignments.covered_since_mark(), None);
        assignments.record(0, &RebalanceEvent::Assigned(tps(&[2, 3])));
        assert!(assignments.covered_since_mark().is_some());
        assert!(assignments.taken_from_members_since_mark().is_empty());
        assignments.record(0, &RebalanceEvent::Lost(tps(&[0])));
        assert_eq!(
            assignments
                .taken_from_members_since_mark()
                .into_iter()
                .collect::<Vec<_>>(),
            [0]
        );
    }

    /// Gaps, first receipts after the mark and redeliveries.
    #[test]
    fn receipts_measure_gaps_and_redeliveries() {
        let receipts = Receipts::new(2);
        let poll = |records: &[(u32, u64)], done_ns: u64| -> Vec<bool> {
            let mut guard = receipts.lock();
            records
                .iter()
                .map(|&(partition, offset)| guard.record(partition, offset, done_ns))
                .collect()
        };
        assert_eq!(poll(&[(0, 0), (0, 1), (1, 0)], 1_000), [true, true, true]);
        assert_eq!(poll(&[(0, 2), (7, 0)], 1_500), [true, true]);
        let steady = receipts.mark();
        assert_eq!(steady, [500, 0]);
        // Partition 0 is redelivered from offset 1 by its new owner.
        assert_eq!(poll(&[(0, 1), (0, 2), (0, 3)], 3_000), [false, false, true]);
        let snapshot = receipts.snapshot(4_000);
        assert_eq!(snapshot.first_after_mark_ns, [Some(3_000), None]);
        // 0: 1.5 → 3 µs (spans the mark); 1: silent since 1 µs, still open at 4.
        assert_eq!(snapshot.gap_ns, [1_500, 3_000]);
        assert_eq!(receipts.redelivered(), 2);
        assert_eq!(receipts.silent_since(2_000), [1]);
        receipts.reset_gaps(5_000);
        assert_eq!(receipts.snapshot(5_000).gap_ns, [0, 0]);
    }

    /// The group settings of a point.
    #[test]
    fn group_settings() {
        let config = group_config("g", GroupSpec::with_session_timeout(2000), "c".into());
        assert_eq!(config.session_timeout, Duration::from_secs(2));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(666));
        assert_eq!(config.auto_offset_reset, Offset::Earliest);
        assert!(config.auto_commit);
        assert!(config.validate().is_ok());
        let long = GroupSpec::with_session_timeout(30_000);
        assert_eq!(long.heartbeat_interval_ms, 1000);
    }
}
