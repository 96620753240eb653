//! One partition's replication on this broker: the `replication` crate's sans-IO state machines
//! (leader or follower, and the log's leader epoch cache) plus what they drive here — the high
//! watermark consumers read below and `acks=all` produces wait for, the epoch cache's
//! checkpoint file, and the ISR proposal waiting to go to the controller.
//!
//! [`Replica::apply`] takes the controller's decision for the partition
//! ([`ReplicaAssignment`]) and moves between the roles; the produce path calls
//! [`Replica::check_produce`] and [`Replica::on_appended`]; the leader's replica-fetch handler
//! calls [`Replica::on_follower_fetch`]; the follower's fetch session calls
//! [`Replica::next_fetch`], [`Replica::on_fetched`] and [`Replica::on_diverging`]. Every
//! method is synchronous and shard-local; the I/O (reading, appending, truncating, writing the
//! checkpoint) is the caller's.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use replication::{
    AppendRecords, FetchedBatch, FollowerFetch, FollowerFetchReply, FollowerState, LeaderAction,
    LeaderConfig, LeaderElection, LeaderEpochCache, LeaderState, ReplicaId, ReplicationError,
    Truncation,
};
use wire::protocol::{ErrorCode, WireError};
use wire::Acks;

use crate::cluster_metadata::ReplicaAssignment;

/// Name of the epoch cache's checkpoint file in a partition's directory (Kafka's name).
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// What this broker is for the partition.
enum Role {
    /// Leads: takes produce requests, decides the high watermark.
    Leader(LeaderState),
    /// Copies the leader's log.
    Follower(FollowerState),
    /// Holds a replica but nobody leads (every ISR member is down), or the controller's
    /// decision has not arrived.
    Offline {
        /// The last known leader epoch.
        leader_epoch: u32,
    },
}

/// An ISR change for the controller, taken from a leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The leader epoch making the request.
    pub leader_epoch: u32,
    /// The ISR version (partition epoch) it is based on.
    pub partition_epoch: u32,
    /// The ISR asked for.
    pub isr: Vec<u32>,
}

/// What changed for the caller after [`Replica::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing the caller must act on.
    None,
    /// Now leads (the epoch cache changed: checkpoint it).
    BecameLeader,
    /// Now follows `leader` (register with that leader's fetch session).
    BecameFollower {
        /// The leader's broker id.
        leader: u32,
    },
}

/// One partition's replication state on its owner shard.
pub struct Replica {
    local: u32,
    replica_lag_time_max_ms: u64,
    role: RefCell<Role>,
    epochs: RefCell<LeaderEpochCache>,
    epochs_path: PathBuf,
    /// The controller's latest decision applied.
    assignment: RefCell<ReplicaAssignment>,
    /// Offsets below this are committed (on every ISR member). Never decreases while this
    /// replica leads.
    high_watermark: Cell<u64>,
    /// An ISR proposal not yet sent, and whether one is in flight.
    isr_proposal: RefCell<Option<IsrProposal>>,
    /// Notified when the high watermark moves or the role changes.
    changed: Rc<storage::Signal>,
    /// The epoch cache changed since its checkpoint was last taken.
    epochs_dirty: Cell<bool>,
}

impl Replica {
    /// The replica of a log ending at `log_end_offset`, with the epoch cache read from its
    /// checkpoint in `dir` (entries past the log end dropped: the log lost a torn tail).
    /// Starts offline; [`Replica::apply`] gives it a role.
    pub fn open(
        local: u32,
        replica_lag_time_max_ms: u64,
        dir: &Path,
        log_end_offset: u64,
    ) -> Result<Replica, String> {
        let epochs_path = dir.join(EPOCH_CHECKPOINT_FILE);
        let mut epochs = match std::fs::read(&epochs_path) {
            Ok(bytes) => LeaderEpochCache::decode_checkpoint(&bytes)
                .map_err(|e| format!("{}: {e}", epochs_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LeaderEpochCache::new(),
            Err(e) => return Err(format!("{}: {e}", epochs_path.display())),
        };
        epochs.truncate_from_end(log_end_offset);
        let leader_epoch = epochs.latest_epoch().unwrap_or(0);
        Ok(Replica {
            local,
            replica_lag_time_max_ms,
            role: RefCell::new(Role::Offline { leader_epoch }),
            epochs: RefCell::new(epochs),
            epochs_path,
            assignment: RefCell::new(ReplicaAssignment::sole(local)),
            high_watermark: Cell::new(0),
            isr_proposal: RefCell::new(None),
            changed: Rc::new(storage::Signal::default()),
            epochs_dirty: Cell::new(false),
        })
    }

    /// Applies the controller's decision for the partition. `log_start_offset` and
    /// `log_end_offset` describe the local log now.
    pub fn apply(
        &self,
        assignment: &ReplicaAssignment,
        log_start_offset: u64,
        log_end_offset: u64,
        now_ms: u64,
    ) -> Result<Transition, ReplicationError> {
        let previous = self.assignment.replace(assignment.clone());
        let mut role = self.role.borrow_mut();
        let transition = match assignment.leader {
            Some(leader) if leader == self.local => {
                let same_term = matches!(&*role, Role::Leader(state)
                    if state.leader_epoch() == assignment.leader_epoch);
                if same_term && previous.replicas == assignment.replicas {
                    if let Role::Leader(state) = &mut *role {
                        let isr = assignment.isr.iter().map(|&id| ReplicaId(id)).collect();
                        state.on_isr_confirmed(isr, assignment.partition_epoch)?;
                        if state.proposed_isr().is_none() {
                            self.isr_proposal.replace(None);
                        }
                    }
                    Transition::None
                } else {
                    let election = LeaderElection {
                        local: ReplicaId(self.local),
                        leader_epoch: assignment.leader_epoch,
                        replicas: assignment
                            .replicas
                            .iter()
                            .map(|&id| ReplicaId(id))
                            .collect(),
                        isr: assignment.isr.iter().map(|&id| ReplicaId(id)).collect(),
                        isr_version: assignment.partition_epoch,
                        log_start_offset,
                        log_end_offset,
                        high_watermark: self.high_watermark.get(),
                        config: LeaderConfig {
                            min_insync_replicas: usize::from(assignment.min_insync_replicas.max(1)),
                            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
                        },
                        now_ms,
                    };
                    let state = LeaderState::elected(election, &mut self.epochs.borrow_mut())?;
                    *role = Role::Leader(state);
                    self.isr_proposal.replace(None);
                    self.epochs_dirty.set(true);
                    Transition::BecameLeader
                }
            }
            Some(leader) if assignment.replicas.contains(&self.local) => {
                let moved = match &mut *role {
                    Role::Follower(state) => {
                        state.on_leader_change(ReplicaId(leader), assignment.leader_epoch)
                    }
                    _ => {
                        *role = Role::Follower(FollowerState::new(
                            ReplicaId(self.local),
                            ReplicaId(leader),
                            assignment.leader_epoch,
                            log_end_offset,
                            self.high_watermark.get(),
                        ));
                        true
                    }
                };
                if moved {
                    Transition::BecameFollower { leader }
                } else {
                    Transition::None
                }
            }
            _ => {
                if !matches!(&*role, Role::Offline { .. }) {
                    *role = Role::Offline {
                        leader_epoch: assignment.leader_epoch,
                    };
                }
                Transition::None
            }
        };
        drop(role);
        self.poll_leader_actions();
        self.changed.notify_all();
        Ok(transition)
    }

    /// The controller's latest decision for the partition.
    pub fn assignment(&self) -> ReplicaAssignment {
        self.assignment.borrow().clone()
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leader(_))
    }

    /// The leader this replica follows, if it follows one.
    pub fn following(&self) -> Option<u32> {
        match &*self.role.borrow() {
            Role::Follower(state) => Some(state.leader().0),
            _ => None,
        }
    }

    /// The current leader epoch as this replica knows it.
    pub fn leader_epoch(&self) -> u32 {
        match &*self.role.borrow() {
            Role::Leader(state) => state.leader_epoch(),
            Role::Follower(state) => state.leader_epoch(),
            Role::Offline { leader_epoch } => *leader_epoch,
        }
    }

    /// The latest epoch of the log's epoch cache (to tell whether it changed).
    pub fn leader_epoch_cache_latest(&self) -> Option<u32> {
        self.epochs.borrow().latest_epoch()
    }

    /// The committed offset: consumers read below it.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.get()
    }

    /// Number of replicas in the controller's assignment (1 for an unreplicated partition).
    pub fn replica_count(&self) -> usize {
        self.assignment.borrow().replicas.len().max(1)
    }

    /// Notified when the high watermark moves or the role changes.
    pub fn changed(&self) -> &storage::Signal {
        &self.changed
    }

    /// The error a request meant for the leader gets here.
    pub fn not_leader(&self) -> WireError {
        let assignment = self.assignment.borrow();
        match assignment.leader {
            Some(leader) if leader != self.local => WireError::new(
                ErrorCode::NotLeader,
                format!(
                    "broker {leader} leads this partition (epoch {})",
                    assignment.leader_epoch
                ),
            ),
            Some(_) => WireError::new(
                ErrorCode::NotLeader,
                "this broker is taking leadership of the partition; retry",
            ),
            None => WireError::new(
                ErrorCode::NotLeader,
                "the partition has no leader: no in-sync replica is live",
            ),
        }
    }

    /// Whether a produce may be appended: only on the leader, and `acks=all` only while the
    /// ISR has `min.insync.replicas` members.
    pub fn check_produce(&self, acks: Acks) -> Result<(), WireError> {
        match &*self.role.borrow() {
            Role::Leader(state) => state.check_produce(acks).map_err(|e| wire_error(&e)),
            _ => Err(self.not_leader()),
        }
    }

    /// The local log now ends at `log_end_offset` (after a leader's append).
    pub fn on_appended(&self, log_end_offset: u64) {
        if let Role::Leader(state) = &mut *self.role.borrow_mut() {
            state.on_append(log_end_offset);
        }
        self.poll_leader_actions();
    }

    /// Whether an `acks=all` batch ending (exclusive) at `end_offset` is committed: `Ok(true)`
    /// once the high watermark covers it; an error once this replica stops leading or the ISR
    /// shrank below `min.insync.replicas`.
    pub fn acks_all_status(&self, end_offset: u64) -> Result<bool, WireError> {
        match &*self.role.borrow() {
            Role::Leader(state) => state
                .acks_all_status(end_offset)
                .map_err(|e| wire_error(&e)),
            _ => Err(self.not_leader()),
        }
    }

    /// A consumer's fetch: the offset it may read up to (the high watermark), or why not
    /// (not the leader, a stale or future leader epoch).
    pub fn check_consumer_fetch(
        &self,
        fetch_offset: u64,
        current_leader_epoch: Option<u32>,
    ) -> Result<u64, WireError> {
        match &*self.role.borrow() {
            Role::Leader(state) => {
                match state.check_consumer_fetch(fetch_offset, current_leader_epoch) {
                    Ok(high_watermark) => Ok(high_watermark),
                    // Out-of-range is the fetch path's own answer (with the log's bounds).
                    Err(ReplicationError::OffsetOutOfRange { .. }) => Ok(self.high_watermark.get()),
                    Err(error) => Err(wire_error(&error)),
                }
            }
            _ => Err(self.not_leader()),
        }
    }

    /// A follower's fetch, on the leader.
    pub fn on_follower_fetch(
        &self,
        follower: u32,
        fetch: FollowerFetch,
        now_ms: u64,
    ) -> Result<FollowerFetchReply, WireError> {
        let reply = match &mut *self.role.borrow_mut() {
            Role::Leader(state) => state
                .on_follower_fetch(ReplicaId(follower), fetch, &self.epochs.borrow(), now_ms)
                .map_err(|e| wire_error(&e))?,
            _ => return Err(self.not_leader()),
        };
        self.poll_leader_actions();
        Ok(reply)
    }

    /// The leader's epoch cache entries that cover offsets from `from_offset` on (the first
    /// one starts at or before it): sent with records so the follower knows which epoch wrote
    /// each batch.
    pub fn epochs_from(&self, from_offset: u64) -> Vec<(u32, u64)> {
        let epochs = self.epochs.borrow();
        let entries = epochs.entries();
        let first = entries
            .iter()
            .rposition(|entry| entry.start_offset <= from_offset)
            .unwrap_or(0);
        entries[first..]
            .iter()
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    /// Time passed: a leader proposes dropping followers that lag too long.
    pub fn on_tick(&self, now_ms: u64) {
        if let Role::Leader(state) = &mut *self.role.borrow_mut() {
            state.on_tick(now_ms);
        }
        self.poll_leader_actions();
    }

    /// The ISR proposal waiting to go to the controller, if any (taken: the caller sends it
    /// and reports back with [`Replica::on_isr_proposal_failed`] if it fails).
    pub fn take_isr_proposal(&self) -> Option<IsrProposal> {
        self.isr_proposal.take()
    }

    /// The controller refused or lost a proposal: the leader proposes again when needed.
    pub fn on_isr_proposal_failed(&self) {
        if let Role::Leader(state) = &mut *self.role.borrow_mut() {
            state.on_isr_change_failed();
        }
    }

    /// The follower's next fetch, if it follows a leader.
    pub fn next_fetch(&self) -> Option<FollowerFetch> {
        match &*self.role.borrow() {
            Role::Follower(state) => Some(state.next_fetch(&self.epochs.borrow())),
            _ => None,
        }
    }

    /// A records answer to `answered`: checks the batches' offsets and epochs and updates the
    /// epoch cache. The caller appends the bytes at once; if that fails it calls
    /// [`Replica::reset_follower`].
    pub fn on_fetched(
        &self,
        answered: &FollowerFetch,
        batches: &[FetchedBatch],
        leader_high_watermark: u64,
    ) -> Result<AppendRecords, ReplicationError> {
        let mut role = self.role.borrow_mut();
        let Role::Follower(state) = &mut *role else {
            return Err(ReplicationError::StaleFetchResponse {
                answered_fetch_offset: answered.fetch_offset,
                answered_leader_epoch: answered.current_leader_epoch,
                log_end_offset: 0,
                leader_epoch: 0,
            });
        };
        let append = state.on_fetched_records(
            answered,
            batches.iter().copied(),
            leader_high_watermark,
            &mut self.epochs.borrow_mut(),
        )?;
        if let Some(high_watermark) = append.high_watermark_advanced {
            self.set_high_watermark(high_watermark);
        }
        Ok(append)
    }

    /// A follower learned the leader's high watermark without records.
    pub fn on_leader_high_watermark(&self, answered: &FollowerFetch, leader_high_watermark: u64) {
        let _ = self.on_fetched(answered, &[], leader_high_watermark);
    }

    /// A divergence answer to `answered`: where to truncate the local log (the epoch cache is
    /// truncated already).
    pub fn on_diverging(
        &self,
        answered: &FollowerFetch,
        epoch: u32,
        end_offset: u64,
    ) -> Result<Truncation, ReplicationError> {
        let mut role = self.role.borrow_mut();
        let Role::Follower(state) = &mut *role else {
            return Err(ReplicationError::StaleFetchResponse {
                answered_fetch_offset: answered.fetch_offset,
                answered_leader_epoch: answered.current_leader_epoch,
                log_end_offset: 0,
                leader_epoch: 0,
            });
        };
        state.on_diverging(answered, epoch, end_offset, &mut self.epochs.borrow_mut())
    }

    /// The follower's view no longer matches the log (an append or truncation failed, or
    /// truncated further than asked): start again from the log's real end.
    pub fn reset_follower(&self, log_end_offset: u64) {
        let mut role = self.role.borrow_mut();
        if let Role::Follower(state) = &*role {
            let (leader, epoch) = (state.leader(), state.leader_epoch());
            self.epochs.borrow_mut().truncate_from_end(log_end_offset);
            *role = Role::Follower(FollowerState::new(
                ReplicaId(self.local),
                leader,
                epoch,
                log_end_offset,
                self.high_watermark.get(),
            ));
        }
    }

    /// True (once) when the epoch cache changed since the last checkpoint was taken.
    pub fn take_epochs_dirty(&self) -> bool {
        self.epochs_dirty.replace(false)
    }

    /// The epoch cache's checkpoint: the file and its bytes (the caller writes it atomically).
    pub fn epoch_checkpoint(&self) -> (PathBuf, Vec<u8>) {
        self.epochs_dirty.set(false);
        (
            self.epochs_path.clone(),
            self.epochs.borrow().encode_checkpoint().into_bytes(),
        )
    }

    /// Hands out what the leader state machine asks for: a high watermark move (applied here)
    /// and an ISR proposal (kept for [`Replica::take_isr_proposal`]).
    fn poll_leader_actions(&self) {
        loop {
            let action = match &mut *self.role.borrow_mut() {
                Role::Leader(state) => state.poll_action(),
                _ => None,
            };
            let Some(action) = action else {
                return;
            };
            match action {
                LeaderAction::HighWatermarkAdvanced(high_watermark) => {
                    self.set_high_watermark(high_watermark)
                }
                LeaderAction::IsrShrink {
                    proposed_isr,
                    leader_epoch,
                    isr_version,
                    ..
                }
                | LeaderAction::IsrExpand {
                    proposed_isr,
                    leader_epoch,
                    isr_version,
                    ..
                } => {
                    self.isr_proposal.replace(Some(IsrProposal {
                        leader_epoch,
                        partition_epoch: isr_version,
                        isr: proposed_isr.iter().map(|id| id.0).collect(),
                    }));
                }
            }
        }
    }

    fn set_high_watermark(&self, high_watermark: u64) {
        if high_watermark != self.high_watermark.get() {
            self.high_watermark.set(high_watermark);
            self.changed.notify_all();
        }
    }
}

/// The wire error for a replication refusal.
pub fn wire_error(error: &ReplicationError) -> WireError {
    let code = match error {
        ReplicationError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
        ReplicationError::NotEnoughReplicasAfterAppend { .. } => {
            ErrorCode::NotEnoughReplicasAfterAppend
        }
        ReplicationError::NotLeader { .. } => ErrorCode::NotLeader,
        ReplicationError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
        ReplicationError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
        ReplicationError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        _ => ErrorCode::InvalidRequest,
    };
    WireError::new(code, error.to_string())
}
