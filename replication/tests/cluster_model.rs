//! Model-based property test of the whole replication core: three replicas of one partition,
//! each a log of `(epoch, payload)` records kept in memory with its `LeaderEpochCache`, one
//! `LeaderState` and two `FollowerState`s, and a tiny controller (leader, epoch, ISR, version)
//! — all pure, no I/O. proptest drives random interleavings of appends (acks=1 and acks=all),
//! follower fetches of random sizes, stale and out-of-position fetches, clock ticks, controller
//! answers to ISR proposals and leader changes to an ISR member, and checks after every step:
//!
//! - the high watermark never decreases while one replica leads;
//! - it is at most the log end of every ISR member;
//! - every committed record (below any high watermark ever reached) is, unchanged, on every ISR
//!   member and below every follower's high watermark, and is never truncated anywhere;
//! - every epoch cache describes its log exactly;
//! - `acks=all` is refused exactly when the ISR is below `min.insync.replicas`, and answered
//!   only once every ISR member holds the batch;
//! - a follower silent for longer than the lag time is proposed out of the ISR;
//! - at the end, once every follower fetches until it is caught up, all replicas hold the
//!   leader's log, all are back in the ISR and everything is committed.

use proptest::prelude::*;
use replication::{
    Acks, FetchedBatch, FollowerFetch, FollowerFetchReply, FollowerState, LeaderAction,
    LeaderConfig, LeaderElection, LeaderEpochCache, LeaderState, ReplicaId, ReplicationError,
};

const REPLICAS: [ReplicaId; 3] = [ReplicaId(1), ReplicaId(2), ReplicaId(3)];
const LAG_MAX_MS: u64 = 1_000;
const MIN_INSYNC_REPLICAS: usize = 2;
const CONFIG: LeaderConfig = LeaderConfig {
    min_insync_replicas: MIN_INSYNC_REPLICAS,
    replica_lag_time_max_ms: LAG_MAX_MS,
};
/// Fetch rounds the final catch-up may take: each follower needs at most a few divergence
/// rounds plus one fetch per `CATCH_UP_FETCH_RECORDS_MAX` records of at most 200 appends of 4.
const CATCH_UP_ROUNDS_MAX: usize = 200;
const CATCH_UP_FETCH_RECORDS_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    epoch: u32,
    payload: u64,
}

#[derive(Debug)]
enum Role {
    Leader(LeaderState),
    Follower {
        state: FollowerState,
        /// The last request this follower sent, for replaying it late.
        last_request: Option<FollowerFetch>,
    },
}

#[derive(Debug)]
struct Replica {
    id: ReplicaId,
    log: Vec<Record>,
    epochs: LeaderEpochCache,
    role: Role,
    /// When the leader last accepted a fetch from it (followers), for the lag check.
    last_fetch_ms: u64,
}

#[derive(Debug)]
struct Proposal {
    proposed_isr: Vec<ReplicaId>,
    leader_epoch: u32,
    isr_version: u32,
}

#[derive(Debug)]
struct Controller {
    leader: ReplicaId,
    leader_epoch: u32,
    isr: Vec<ReplicaId>,
    isr_version: u32,
    proposal: Option<Proposal>,
}

#[derive(Debug)]
struct Cluster {
    replicas: Vec<Replica>,
    controller: Controller,
    now_ms: u64,
    /// When the current leader was elected.
    term_start_ms: u64,
    next_payload: u64,
    /// The records below the highest high watermark any leader ever reached.
    committed: Vec<Record>,
    /// The current leader's high watermark as last reported, to check it never decreases.
    term_high_watermark: u64,
    /// acks=all batches waiting for an answer: (end offset exclusive).
    waiting_acks_all: Vec<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: u64, acks_all: bool },
    Fetch { follower: usize, records_max: usize },
    ReplayStaleFetch { follower: usize, records_max: usize },
    FetchFromBelow { follower: usize, back: usize },
    Tick { advance_ms: u64 },
    ControllerAnswer { accept: bool },
    LeaderChange { candidate: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..=4, any::<bool>()).prop_map(|(records, acks_all)| Op::Append { records, acks_all }),
        8 => (0usize..2, 1usize..=8).prop_map(|(follower, records_max)| Op::Fetch { follower, records_max }),
        1 => (0usize..2, 1usize..=8).prop_map(|(follower, records_max)| Op::ReplayStaleFetch { follower, records_max }),
        1 => (0usize..2, 0usize..6).prop_map(|(follower, back)| Op::FetchFromBelow { follower, back }),
        3 => (0u64..=LAG_MAX_MS * 3 / 2).prop_map(|advance_ms| Op::Tick { advance_ms }),
        3 => any::<bool>().prop_map(|accept| Op::ControllerAnswer { accept }),
        1 => (0usize..2).prop_map(|candidate| Op::LeaderChange { candidate }),
    ]
}

impl Cluster {
    fn new() -> Self {
        let controller = Controller {
            leader: REPLICAS[0],
            leader_epoch: 1,
            isr: REPLICAS.to_vec(),
            isr_version: 1,
            proposal: None,
        };
        let replicas = REPLICAS
            .iter()
            .map(|&id| {
                let mut epochs = LeaderEpochCache::new();
                let role = if id == controller.leader {
                    Role::Leader(
                        LeaderState::elected(election(id, &controller, 0, 0, 0), &mut epochs)
                            .expect("first election"),
                    )
                } else {
                    Role::Follower {
                        state: FollowerState::new(id, controller.leader, 1, 0, 0),
                        last_request: None,
                    }
                };
                Replica {
                    id,
                    log: Vec::new(),
                    epochs,
                    role,
                    last_fetch_ms: 0,
                }
            })
            .collect();
        Self {
            replicas,
            controller,
            now_ms: 0,
            term_start_ms: 0,
            next_payload: 0,
            committed: Vec::new(),
            term_high_watermark: 0,
            waiting_acks_all: Vec::new(),
        }
    }

    fn leader_index(&self) -> usize {
        self.index_of(self.controller.leader)
    }

    fn index_of(&self, id: ReplicaId) -> usize {
        self.replicas
            .iter()
            .position(|replica| replica.id == id)
            .expect("known replica")
    }

    /// The `pick`-th follower (of two).
    fn follower_index(&self, pick: usize) -> usize {
        let leader = self.leader_index();
        (0..self.replicas.len())
            .filter(|&index| index != leader)
            .nth(pick % 2)
            .expect("two followers")
    }

    fn leader(&mut self) -> &mut LeaderState {
        let index = self.leader_index();
        match &mut self.replicas[index].role {
            Role::Leader(leader) => leader,
            Role::Follower { .. } => panic!("the controller's leader is not leading"),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Append { records, acks_all } => self.append(records, acks_all)?,
            Op::Fetch {
                follower,
                records_max,
            } => {
                let follower = self.follower_index(follower);
                self.fetch(follower, records_max)?;
            }
            Op::ReplayStaleFetch {
                follower,
                records_max,
            } => {
                let follower = self.follower_index(follower);
                let Role::Follower { last_request, .. } = &self.replicas[follower].role else {
                    unreachable!("a follower index")
                };
                if let Some(request) = *last_request {
                    self.send_fetch(follower, request, records_max, false)?;
                }
            }
            Op::FetchFromBelow { follower, back } => {
                let follower = self.follower_index(follower);
                let replica = &self.replicas[follower];
                let Role::Follower { state, .. } = &replica.role else {
                    unreachable!("a follower index")
                };
                let fetch_offset = replica.log.len().saturating_sub(back);
                let request = FollowerFetch {
                    fetch_offset: fetch_offset as u64,
                    last_fetched_epoch: fetch_offset
                        .checked_sub(1)
                        .map(|last| replica.log[last].epoch),
                    current_leader_epoch: state.leader_epoch(),
                };
                self.send_fetch(follower, request, 8, false)?;
            }
            Op::Tick { advance_ms } => self.tick(advance_ms)?,
            Op::ControllerAnswer { accept } => self.controller_answer(accept)?,
            Op::LeaderChange { candidate } => self.leader_change(candidate)?,
        }
        self.drain_leader_actions()?;
        self.check_invariants()
    }

    fn append(&mut self, records: u64, acks_all: bool) -> Result<(), TestCaseError> {
        let isr_len = self.controller.isr.len();
        let acks = if acks_all { Acks::All } else { Acks::Leader };
        let verdict = self.leader().check_produce(acks);
        if acks_all && isr_len < MIN_INSYNC_REPLICAS {
            prop_assert_eq!(
                verdict,
                Err(ReplicationError::NotEnoughReplicas {
                    isr: isr_len,
                    min: MIN_INSYNC_REPLICAS
                })
            );
            return Ok(());
        }
        prop_assert_eq!(verdict, Ok(()));
        let epoch = self.controller.leader_epoch;
        let index = self.leader_index();
        for _ in 0..records {
            let payload = self.next_payload;
            self.next_payload += 1;
            self.replicas[index].log.push(Record { epoch, payload });
        }
        let log_end_offset = self.replicas[index].log.len() as u64;
        self.leader().on_append(log_end_offset);
        if acks_all {
            self.waiting_acks_all.push(log_end_offset);
        }
        Ok(())
    }

    /// A fresh fetch: the follower's current request, answered and applied; nothing may fail.
    fn fetch(&mut self, follower: usize, records_max: usize) -> Result<(), TestCaseError> {
        let replica = &mut self.replicas[follower];
        let Role::Follower {
            state,
            last_request,
        } = &mut replica.role
        else {
            unreachable!("a follower index")
        };
        let request = state.next_fetch(&replica.epochs);
        *last_request = Some(request);
        self.send_fetch(follower, request, records_max, true)
    }

    /// Sends `request` from `follower` to the leader and delivers the answer. A `fresh`
    /// request must succeed end to end; any other may be refused, but never wrongly accepted.
    fn send_fetch(
        &mut self,
        follower: usize,
        request: FollowerFetch,
        records_max: usize,
        fresh: bool,
    ) -> Result<(), TestCaseError> {
        let leader_index = self.leader_index();
        let follower_id = self.replicas[follower].id;
        let now_ms = self.now_ms;
        let (leader_replica, follower_replica) =
            two_mut(&mut self.replicas, leader_index, follower);
        let Role::Leader(leader) = &mut leader_replica.role else {
            unreachable!("the leader index")
        };
        let reply = leader.on_follower_fetch(follower_id, request, &leader_replica.epochs, now_ms);
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                prop_assert!(!fresh, "a fresh fetch was refused: {error}");
                return Ok(());
            }
        };
        let Role::Follower { state, .. } = &mut follower_replica.role else {
            unreachable!("a follower index")
        };
        let is_current = state.is_current(&request, &follower_replica.epochs);
        match reply {
            FollowerFetchReply::Records {
                log_end_offset,
                high_watermark,
            } => {
                // The leader counted this fetch (a divergent one it does not).
                follower_replica.last_fetch_ms = now_ms;
                let from = request.fetch_offset as usize;
                let to = (log_end_offset as usize).min(from + records_max);
                let records = &leader_replica.log[from..to];
                let batches = batches_of(from as u64, records);
                let result = state.on_fetched_records(
                    &request,
                    batches.iter().copied(),
                    high_watermark,
                    &mut follower_replica.epochs,
                );
                match result {
                    Ok(append) => {
                        prop_assert!(is_current);
                        prop_assert_eq!(append.base_offset, follower_replica.log.len() as u64);
                        prop_assert_eq!(append.end_offset, to as u64);
                        follower_replica.log.extend_from_slice(records);
                    }
                    Err(error) => {
                        prop_assert!(!is_current, "a current answer was refused: {error}");
                        let is_stale = matches!(error, ReplicationError::StaleFetchResponse { .. });
                        prop_assert!(is_stale, "{}", error);
                    }
                }
            }
            FollowerFetchReply::Diverging {
                epoch, end_offset, ..
            } => {
                let result =
                    state.on_diverging(&request, epoch, end_offset, &mut follower_replica.epochs);
                match result {
                    Ok(truncation) => {
                        prop_assert!(is_current);
                        let truncate_to = truncation.truncate_to as usize;
                        // No committed record is ever removed.
                        for offset in truncate_to..follower_replica.log.len() {
                            prop_assert!(
                                self.committed.get(offset) != Some(&follower_replica.log[offset]),
                                "replica {} truncated committed offset {}",
                                follower_id,
                                offset
                            );
                        }
                        follower_replica.log.truncate(truncate_to);
                    }
                    Err(error) => {
                        prop_assert!(!is_current, "a current divergence was refused: {error}");
                    }
                }
            }
        }
        Ok(())
    }

    fn tick(&mut self, advance_ms: u64) -> Result<(), TestCaseError> {
        self.now_ms += advance_ms;
        let now_ms = self.now_ms;
        let proposal_before = self.leader().proposed_isr().is_some();
        self.leader().on_tick(now_ms);
        let term_start_ms = self.term_start_ms;
        let silent: Vec<ReplicaId> = self
            .replicas
            .iter()
            .filter(|replica| {
                replica.id != self.controller.leader
                    && self.controller.isr.contains(&replica.id)
                    && now_ms - replica.last_fetch_ms.max(term_start_ms) > LAG_MAX_MS
            })
            .map(|replica| replica.id)
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let proposed = self.leader().proposed_isr().map(<[ReplicaId]>::to_vec);
        prop_assert!(
            proposed.is_some(),
            "silent ISR followers {:?} not proposed out",
            silent
        );
        if !proposal_before {
            let proposed = proposed.unwrap_or_default();
            for id in silent {
                prop_assert!(
                    !proposed.contains(&id),
                    "silent {} kept in {:?}",
                    id,
                    proposed
                );
            }
        }
        Ok(())
    }

    fn controller_answer(&mut self, accept: bool) -> Result<(), TestCaseError> {
        let Some(proposal) = self.controller.proposal.take() else {
            return Ok(());
        };
        let is_current = proposal.leader_epoch == self.controller.leader_epoch
            && proposal.isr_version == self.controller.isr_version;
        if accept && is_current {
            self.controller.isr = proposal.proposed_isr;
            self.controller.isr_version += 1;
            let (isr, version) = (self.controller.isr.clone(), self.controller.isr_version);
            let confirmed = self.leader().on_isr_confirmed(isr, version);
            prop_assert_eq!(confirmed, Ok(()));
        } else {
            self.leader().on_isr_change_failed();
        }
        Ok(())
    }

    /// A clean election: the controller moves leadership to another ISR member.
    fn leader_change(&mut self, candidate: usize) -> Result<(), TestCaseError> {
        let old_leader = self.controller.leader;
        let candidates: Vec<ReplicaId> = self
            .controller
            .isr
            .iter()
            .copied()
            .filter(|&id| id != old_leader)
            .collect();
        let Some(&new_leader) = candidates.get(candidate % candidates.len().max(1)) else {
            return Ok(());
        };
        self.controller.leader = new_leader;
        self.controller.leader_epoch += 1;
        self.controller.isr_version += 1;
        self.controller.proposal = None;
        let leader_epoch = self.controller.leader_epoch;
        for index in 0..self.replicas.len() {
            let replica = &mut self.replicas[index];
            let log_end_offset = replica.log.len() as u64;
            if replica.id == old_leader {
                let Role::Leader(leader) = &replica.role else {
                    unreachable!("the old leader")
                };
                replica.role = Role::Follower {
                    state: FollowerState::new(
                        replica.id,
                        new_leader,
                        leader_epoch,
                        log_end_offset,
                        leader.high_watermark(),
                    ),
                    last_request: None,
                };
                replica.last_fetch_ms = self.now_ms;
            } else if replica.id == new_leader {
                let Role::Follower { state, .. } = &replica.role else {
                    unreachable!("the new leader was a follower")
                };
                let high_watermark = state.high_watermark();
                let election = election(
                    replica.id,
                    &self.controller,
                    log_end_offset,
                    high_watermark,
                    self.now_ms,
                );
                let leader = LeaderState::elected(election, &mut replica.epochs);
                prop_assert!(leader.is_ok(), "{:?}", leader);
                replica.role = Role::Leader(leader.expect("checked"));
            } else {
                let Role::Follower { state, .. } = &mut replica.role else {
                    unreachable!("a bystander follower")
                };
                prop_assert!(state.on_leader_change(new_leader, leader_epoch));
                replica.last_fetch_ms = self.now_ms;
            }
        }
        self.term_start_ms = self.now_ms;
        self.term_high_watermark = self.leader().high_watermark();
        // Their producers are told NotLeader and retry on the new leader.
        self.waiting_acks_all.clear();
        Ok(())
    }

    fn drain_leader_actions(&mut self) -> Result<(), TestCaseError> {
        while let Some(action) = self.leader().poll_action() {
            match action {
                LeaderAction::HighWatermarkAdvanced(high_watermark) => {
                    prop_assert!(high_watermark > self.term_high_watermark);
                    self.term_high_watermark = high_watermark;
                    let leader_log = &self.replicas[self.leader_index()].log;
                    let high_watermark = high_watermark as usize;
                    prop_assert!(high_watermark <= leader_log.len());
                    if high_watermark > self.committed.len() {
                        prop_assert_eq!(&leader_log[..self.committed.len()], &self.committed[..]);
                        self.committed = leader_log[..high_watermark].to_vec();
                    }
                }
                LeaderAction::IsrShrink {
                    proposed_isr,
                    leader_epoch,
                    isr_version,
                    remove,
                } => {
                    prop_assert!(remove.iter().all(|id| !proposed_isr.contains(id)));
                    self.controller.proposal = Some(Proposal {
                        proposed_isr,
                        leader_epoch,
                        isr_version,
                    });
                }
                LeaderAction::IsrExpand {
                    proposed_isr,
                    leader_epoch,
                    isr_version,
                    add,
                } => {
                    prop_assert!(proposed_isr.contains(&add));
                    self.controller.proposal = Some(Proposal {
                        proposed_isr,
                        leader_epoch,
                        isr_version,
                    });
                }
            }
        }
        // acks=all answers: only once every ISR member holds the batch.
        let isr = self.controller.isr.clone();
        let mut still_waiting = Vec::new();
        for end_offset in std::mem::take(&mut self.waiting_acks_all) {
            match self.leader().acks_all_status(end_offset) {
                Ok(false) => still_waiting.push(end_offset),
                Ok(true) => {
                    for id in &isr {
                        let log = &self.replicas[self.index_of(*id)].log;
                        prop_assert!(log.len() as u64 >= end_offset, "acked, but {} lacks it", id);
                    }
                }
                Err(error) => {
                    let after_append =
                        matches!(error, ReplicationError::NotEnoughReplicasAfterAppend { .. });
                    prop_assert!(after_append, "{}", error);
                    prop_assert!(isr.len() < MIN_INSYNC_REPLICAS);
                }
            }
        }
        self.waiting_acks_all = still_waiting;
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let isr = self.controller.isr.clone();
        let leader_high_watermark = self.leader().high_watermark();
        prop_assert_eq!(
            leader_high_watermark,
            self.term_high_watermark,
            "HW reported"
        );
        prop_assert_eq!(
            self.leader().isr(),
            &isr[..],
            "leader applies only confirmed ISRs"
        );
        let refused = self.leader().check_produce(Acks::All).is_err();
        prop_assert_eq!(refused, isr.len() < MIN_INSYNC_REPLICAS);
        let committed_len = self.committed.len();
        for replica in &self.replicas {
            if isr.contains(&replica.id) {
                prop_assert!(
                    replica.log.len() >= committed_len
                        && replica.log[..committed_len] == self.committed[..],
                    "ISR member {} lacks committed records (log {:?}, committed {:?})",
                    replica.id,
                    replica.log,
                    self.committed
                );
                prop_assert!(replica.log.len() as u64 >= leader_high_watermark);
            }
            let high_watermark = match &replica.role {
                Role::Leader(leader) => leader.high_watermark(),
                Role::Follower { state, .. } => state.high_watermark(),
            } as usize;
            prop_assert!(high_watermark <= replica.log.len().min(committed_len));
            prop_assert_eq!(
                &replica.log[..high_watermark],
                &self.committed[..high_watermark]
            );
            check_epoch_cache(replica)?;
        }
        Ok(())
    }

    /// Every follower fetches until nothing changes; the controller accepts every proposal.
    fn catch_up(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..CATCH_UP_ROUNDS_MAX {
            for pick in 0..2 {
                let follower = self.follower_index(pick);
                self.fetch(follower, CATCH_UP_FETCH_RECORDS_MAX)?;
                self.drain_leader_actions()?;
                self.controller_answer(true)?;
                self.drain_leader_actions()?;
                self.check_invariants()?;
            }
            let leader_log = &self.replicas[self.leader_index()].log;
            let converged = self
                .replicas
                .iter()
                .all(|replica| replica.log == *leader_log);
            if converged
                && self.controller.isr.len() == REPLICAS.len()
                && self.committed.len() == leader_log.len()
            {
                return Ok(());
            }
        }
        let logs: Vec<_> = self
            .replicas
            .iter()
            .map(|replica| replica.log.len())
            .collect();
        Err(TestCaseError::fail(format!(
            "no convergence: logs {logs:?}, ISR {:?}, committed {}",
            self.controller.isr,
            self.committed.len()
        )))
    }
}

fn election(
    local: ReplicaId,
    controller: &Controller,
    log_end_offset: u64,
    high_watermark: u64,
    now_ms: u64,
) -> LeaderElection {
    LeaderElection {
        local,
        leader_epoch: controller.leader_epoch,
        replicas: REPLICAS.to_vec(),
        isr: controller.isr.clone(),
        isr_version: controller.isr_version,
        log_start_offset: 0,
        log_end_offset,
        high_watermark,
        config: CONFIG,
        now_ms,
    }
}

/// The batches of `records` starting at `base_offset`: one per run of equal epochs, as a
/// leader's log holds them.
fn batches_of(base_offset: u64, records: &[Record]) -> Vec<FetchedBatch> {
    let mut batches: Vec<FetchedBatch> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let offset = base_offset + index as u64;
        match batches.last_mut() {
            Some(batch) if batch.leader_epoch == record.epoch => batch.end_offset = offset + 1,
            _ => batches.push(FetchedBatch {
                base_offset: offset,
                end_offset: offset + 1,
                leader_epoch: record.epoch,
            }),
        }
    }
    batches
}

/// The epoch cache says, for every record, the epoch it was written in.
fn check_epoch_cache(replica: &Replica) -> Result<(), TestCaseError> {
    let entries = replica.epochs.entries();
    for (offset, record) in replica.log.iter().enumerate() {
        let covering = entries
            .iter()
            .rev()
            .find(|entry| entry.start_offset <= offset as u64);
        prop_assert_eq!(
            covering.map(|entry| entry.epoch),
            Some(record.epoch),
            "replica {} offset {}: cache {:?}",
            replica.id,
            offset,
            entries
        );
    }
    for entry in entries {
        prop_assert!(entry.start_offset <= replica.log.len() as u64);
    }
    Ok(())
}

fn two_mut<T>(items: &mut [T], first: usize, second: usize) -> (&mut T, &mut T) {
    assert_ne!(first, second);
    if first < second {
        let (left, right) = items.split_at_mut(second);
        (&mut left[first], &mut right[0])
    } else {
        let (left, right) = items.split_at_mut(first);
        (&mut right[0], &mut left[second])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn replicas_never_lose_committed_records_and_converge(ops in proptest::collection::vec(op(), 1..200)) {
        let mut cluster = Cluster::new();
        for op in &ops {
            cluster.apply(op)?;
        }
        cluster.catch_up()?;
    }
}

/// The KIP-101 scenario, step by step: a leader appends records only it has, loses leadership
/// to an ISR member that wrote other records in the new epoch, and on its return as a follower
/// truncates exactly its uncommitted tail.
#[test]
fn a_returning_leader_truncates_only_its_uncommitted_tail() -> Result<(), TestCaseError> {
    let mut cluster = Cluster::new();
    cluster.apply(&Op::Append {
        records: 3,
        acks_all: true,
    })?;
    for follower in 0..2 {
        cluster.apply(&Op::Fetch {
            follower,
            records_max: 8,
        })?;
        cluster.apply(&Op::Fetch {
            follower,
            records_max: 8,
        })?;
    }
    assert_eq!(cluster.committed.len(), 3);
    cluster.apply(&Op::Append {
        records: 2,
        acks_all: false,
    })?;
    assert_eq!(
        cluster.replicas[0].log.len(),
        5,
        "only the leader has offsets 3 and 4"
    );
    cluster.apply(&Op::LeaderChange { candidate: 0 })?;
    assert_eq!(cluster.controller.leader, REPLICAS[1]);
    cluster.apply(&Op::Append {
        records: 4,
        acks_all: false,
    })?;
    // The old leader (now the first follower by index) fetches with epoch 1 at offset 5.
    let old_leader = cluster.index_of(REPLICAS[0]);
    cluster.fetch(old_leader, 8)?;
    assert_eq!(
        cluster.replicas[old_leader].log.len(),
        3,
        "truncated to the end of epoch 1"
    );
    cluster.fetch(old_leader, 8)?;
    assert_eq!(
        cluster.replicas[old_leader].log,
        cluster.replicas[cluster.leader_index()].log
    );
    cluster.catch_up()
}
