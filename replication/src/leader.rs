//! The leader's side of one partition: follower progress, the in-sync replica set (ISR), the
//! high watermark, `acks=all` and `min.insync.replicas`.
//!
//! The broker's partition holds one [`LeaderState`] while its replica leads the partition, feeds
//! it the events below and carries out the [`LeaderAction`]s it returns through
//! [`LeaderState::poll_action`]. No I/O, no clock: time is the `now_ms` the broker passes in
//! (any monotonic millisecond clock; only differences matter).
//!
//! | input | from |
//! |---|---|
//! | [`LeaderState::on_append`] | the partition, after the local log appended a batch |
//! | [`LeaderState::on_follower_fetch`] | a follower's fetch request (the replication connection) |
//! | [`LeaderState::check_consumer_fetch`] | a consumer's fetch request |
//! | [`LeaderState::on_tick`] | a periodic timer of the shard |
//! | [`LeaderState::on_isr_confirmed`] / [`LeaderState::on_isr_change_failed`] | the controller's answer to an ISR proposal, or its own ISR change |
//!
//! The rules are Kafka's (`Partition.scala`, KIP-497):
//! - a follower fetching from offset X has X as its log end;
//! - the high watermark is the minimum log end over the ISR, leader included, never decreases
//!   while this replica leads, and with an ISR of one it follows the leader's log end;
//! - a follower is caught up at time t when it fetched at or past the leader's log end at t (or
//!   past the leader's log end of its previous fetch, which makes it caught up as of that
//!   previous fetch); one not caught up for longer than `replica_lag_time_max_ms` is proposed
//!   for removal, and one whose log end reaches the high watermark (and the start of this
//!   leader's epoch) is proposed for re-admission;
//! - ISR changes are proposed to the controller and applied only once it confirms them. While a
//!   proposal is in flight, the high watermark is computed over the "maximal" ISR — the
//!   confirmed one plus any replica being added — so it is never ahead of what either the old or
//!   the new ISR holds. One proposal is in flight at a time.

use crate::epochs::{FetchEpochCheck, LeaderEpochCache};
use crate::{ReplicaId, ReplicationError};

/// When a produce is answered: the wire's policy (`acks` 0, 1, -1), shared with the broker
/// and the client so the three never disagree.
pub use wire::Acks;

/// The replication settings of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// `min.insync.replicas`: an `acks=all` write is refused while the confirmed ISR (leader
    /// included) is smaller.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for longer leaves the ISR.
    pub replica_lag_time_max_ms: u64,
}

/// Everything a newly elected leader starts from: the controller's view of the partition and
/// its own log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// This replica.
    pub local: ReplicaId,
    /// The leader epoch the controller assigned to this leadership.
    pub leader_epoch: u32,
    /// Every replica of the partition, this one included.
    pub replicas: Vec<ReplicaId>,
    /// The confirmed ISR, this one included.
    pub isr: Vec<ReplicaId>,
    /// The controller's version of that ISR (KIP-497's partition epoch).
    pub isr_version: u32,
    /// First offset in the local log.
    pub log_start_offset: u64,
    /// Offset of the next record the local log will append.
    pub log_end_offset: u64,
    /// The high watermark this replica knew as a follower (at most its log end).
    pub high_watermark: u64,
    /// Replication settings.
    pub config: LeaderConfig,
    /// The current time.
    pub now_ms: u64,
}

/// What the broker must do for the leader. At most two are pending at any time (one high
/// watermark, coalesced to the latest, and one ISR proposal, since only one is in flight), so
/// the queue needs no bound of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderAction {
    /// The high watermark moved up to this offset: answer the `acks=all` produces whose batch
    /// ends at or below it (see [`LeaderState::acks_all_status`]), wake consumers waiting for
    /// data, and checkpoint it lazily.
    HighWatermarkAdvanced(u64),
    /// Ask the controller to remove lagging followers from the ISR (AlterPartition). Nothing
    /// changes here until [`LeaderState::on_isr_confirmed`].
    IsrShrink {
        /// The followers to remove.
        remove: Vec<ReplicaId>,
        /// The ISR asked for.
        proposed_isr: Vec<ReplicaId>,
        /// The leader epoch making the request (the controller refuses a stale one).
        leader_epoch: u32,
        /// The ISR version the proposal is based on (the controller refuses a stale one).
        isr_version: u32,
    },
    /// Ask the controller to add a caught-up follower to the ISR.
    IsrExpand {
        /// The follower to add.
        add: ReplicaId,
        /// The ISR asked for.
        proposed_isr: Vec<ReplicaId>,
        /// The leader epoch making the request.
        leader_epoch: u32,
        /// The ISR version the proposal is based on.
        isr_version: u32,
    },
}

/// A follower's fetch request, as far as replication is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    /// Where the follower's log ends: the first offset it wants.
    pub fetch_offset: u64,
    /// The epoch of the follower's last record (`None` for an empty log).
    pub last_fetched_epoch: Option<u32>,
    /// The leader epoch the follower believes current.
    pub current_leader_epoch: u32,
}

/// The leader's answer to a valid follower fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerFetchReply {
    /// Send the log's bytes from the fetch offset up to `log_end_offset` (within the fetch's
    /// byte budget), and the high watermark.
    Records {
        /// Read no further than this offset.
        log_end_offset: u64,
        /// The leader's high watermark, for the follower to learn.
        high_watermark: u64,
    },
    /// Send no records: the follower's log diverges; it must truncate (see
    /// `FollowerState::on_diverging`) and fetch again.
    Diverging {
        /// The largest leader epoch ≤ the follower's last fetched epoch.
        epoch: u32,
        /// Where that epoch ends on the leader.
        end_offset: u64,
        /// The leader's high watermark.
        high_watermark: u64,
    },
}

/// What the leader knows of one follower, reset at each election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    replica: ReplicaId,
    /// The offset of its last valid fetch; unknown until it fetches in this leader's term.
    log_end_offset: Option<u64>,
    /// The last time it was caught up to the leader's log end.
    last_caught_up_ms: u64,
    /// When it last fetched, and the leader's log end at that moment.
    last_fetch_ms: u64,
    last_fetch_leader_log_end_offset: u64,
}

/// The replication state of one partition on its leader.
#[derive(Debug, Clone)]
pub struct LeaderState {
    local: ReplicaId,
    leader_epoch: u32,
    /// Offset of the first record of this leader's epoch: the log end at election.
    leader_epoch_start_offset: u64,
    replicas: Vec<ReplicaId>,
    /// Confirmed by the controller.
    isr: Vec<ReplicaId>,
    isr_version: u32,
    /// The ISR proposed to the controller and not yet answered.
    proposed_isr: Option<Vec<ReplicaId>>,
    followers: Vec<FollowerProgress>,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
    config: LeaderConfig,
    /// A `HighWatermarkAdvanced` is waiting for `poll_action`.
    high_watermark_unreported: bool,
    /// An ISR proposal waiting for `poll_action`.
    unsent_proposal: Option<LeaderAction>,
}

impl LeaderState {
    /// Takes leadership: starts a leader term from the controller's decision and the local
    /// log, and records the new epoch in the log's epoch cache at the log end (the broker then
    /// checkpoints the cache). Refuses an ISR that leaves out this replica, names a replica
    /// outside the replica set or repeats one, and a leader epoch older than the log's latest.
    pub fn elected(
        election: LeaderElection,
        epochs: &mut LeaderEpochCache,
    ) -> Result<Self, ReplicationError> {
        validate_isr(
            &election.isr,
            election.isr_version,
            &election.replicas,
            election.local,
        )?;
        if let Some(latest) = epochs.latest_epoch() {
            if election.leader_epoch < latest {
                return Err(ReplicationError::EpochOutOfOrder {
                    epoch: election.leader_epoch,
                    latest,
                    leader: election.leader_epoch,
                });
            }
        }
        epochs.assign(election.leader_epoch, election.log_end_offset)?;
        let followers = election
            .replicas
            .iter()
            .filter(|&&replica| replica != election.local)
            .map(|&replica| FollowerProgress {
                replica,
                log_end_offset: None,
                last_caught_up_ms: election.now_ms,
                last_fetch_ms: election.now_ms,
                last_fetch_leader_log_end_offset: election.log_end_offset,
            })
            .collect();
        let mut leader = Self {
            local: election.local,
            leader_epoch: election.leader_epoch,
            leader_epoch_start_offset: election.log_end_offset,
            replicas: election.replicas,
            isr: election.isr,
            isr_version: election.isr_version,
            proposed_isr: None,
            followers,
            log_start_offset: election.log_start_offset,
            log_end_offset: election.log_end_offset,
            high_watermark: election.high_watermark.min(election.log_end_offset),
            config: election.config,
            high_watermark_unreported: false,
            unsent_proposal: None,
        };
        leader.update_high_watermark();
        Ok(leader)
    }

    /// This leader's epoch.
    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    /// The high watermark: consumers read below it.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The local log's end.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// The ISR confirmed by the controller.
    pub fn isr(&self) -> &[ReplicaId] {
        &self.isr
    }

    /// The ISR version confirmed by the controller.
    pub fn isr_version(&self) -> u32 {
        self.isr_version
    }

    /// The ISR proposed to the controller and not yet answered, if any.
    pub fn proposed_isr(&self) -> Option<&[ReplicaId]> {
        self.proposed_isr.as_deref()
    }

    /// The log end of `follower` as of its last valid fetch in this term.
    pub fn follower_log_end_offset(&self, follower: ReplicaId) -> Option<u64> {
        self.progress(follower)
            .and_then(|progress| progress.log_end_offset)
    }

    /// The next action for the broker, or `None` when all were handed out.
    pub fn poll_action(&mut self) -> Option<LeaderAction> {
        if std::mem::take(&mut self.high_watermark_unreported) {
            return Some(LeaderAction::HighWatermarkAdvanced(self.high_watermark));
        }
        self.unsent_proposal.take()
    }

    /// Whether a produce may be appended. `acks=all` is refused while the confirmed ISR is
    /// smaller than `min.insync.replicas`; other acks are always accepted.
    pub fn check_produce(&self, acks: Acks) -> Result<(), ReplicationError> {
        if acks == Acks::All && self.isr.len() < self.config.min_insync_replicas {
            return Err(ReplicationError::NotEnoughReplicas {
                isr: self.isr.len(),
                min: self.config.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// Whether an `acks=all` produce of a batch ending (exclusive) at `batch_end_offset` can be
    /// answered: `Ok(true)` once the high watermark covers it, `Ok(false)` while it waits, and
    /// `NotEnoughReplicasAfterAppend` if it is covered but the ISR shrank below
    /// `min.insync.replicas` meanwhile (Kafka's rule).
    pub fn acks_all_status(&self, batch_end_offset: u64) -> Result<bool, ReplicationError> {
        if self.high_watermark < batch_end_offset {
            return Ok(false);
        }
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(ReplicationError::NotEnoughReplicasAfterAppend {
                batch_end_offset,
                isr: self.isr.len(),
                min: self.config.min_insync_replicas,
            });
        }
        Ok(true)
    }

    /// The local log now ends at `log_end_offset` (after an append). With an ISR of one the high
    /// watermark follows it at once.
    pub fn on_append(&mut self, log_end_offset: u64) {
        self.log_end_offset = self.log_end_offset.max(log_end_offset);
        self.update_high_watermark();
    }

    /// Retention moved the local log start.
    pub fn on_log_start_advanced(&mut self, log_start_offset: u64) {
        self.log_start_offset = self.log_start_offset.max(log_start_offset);
    }

    /// A follower fetched. Checks its leader epoch and its position against `epochs` (this
    /// log's cache); on a valid position its log end becomes `fetch_offset`, its caught-up time
    /// is updated, it may be proposed for the ISR, and the high watermark may advance. A
    /// diverging follower changes nothing here.
    pub fn on_follower_fetch(
        &mut self,
        follower: ReplicaId,
        fetch: FollowerFetch,
        epochs: &LeaderEpochCache,
        now_ms: u64,
    ) -> Result<FollowerFetchReply, ReplicationError> {
        let index = self
            .followers
            .iter()
            .position(|progress| progress.replica == follower)
            .ok_or(ReplicationError::UnknownReplica { replica: follower })?;
        self.check_leader_epoch(fetch.current_leader_epoch)?;
        let check = epochs.check_fetch(
            fetch.fetch_offset,
            fetch.last_fetched_epoch,
            self.log_start_offset,
            self.log_end_offset,
        )?;
        if let FetchEpochCheck::Diverging { epoch, end_offset } = check {
            return Ok(FollowerFetchReply::Diverging {
                epoch,
                end_offset,
                high_watermark: self.high_watermark,
            });
        }
        let leader_log_end_offset = self.log_end_offset;
        let progress = &mut self.followers[index];
        if fetch.fetch_offset >= leader_log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch.fetch_offset >= progress.last_fetch_leader_log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_ms = now_ms;
        progress.last_fetch_leader_log_end_offset = leader_log_end_offset;
        progress.log_end_offset = Some(fetch.fetch_offset);

        self.maybe_propose_expand(follower, fetch.fetch_offset);
        self.update_high_watermark();
        Ok(FollowerFetchReply::Records {
            log_end_offset: self.log_end_offset,
            high_watermark: self.high_watermark,
        })
    }

    /// A consumer fetch from `fetch_offset`, with the leader epoch it believes current (`None`
    /// from old clients: no check). Returns the offset it may read up to (exclusive): the high
    /// watermark. An offset between the high watermark and the log end is valid and reads
    /// nothing yet.
    pub fn check_consumer_fetch(
        &self,
        fetch_offset: u64,
        current_leader_epoch: Option<u32>,
    ) -> Result<u64, ReplicationError> {
        if let Some(requested) = current_leader_epoch {
            self.check_leader_epoch(requested)?;
        }
        if fetch_offset < self.log_start_offset || fetch_offset > self.log_end_offset {
            return Err(ReplicationError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        Ok(self.high_watermark)
    }

    /// Time passed: proposes removing every ISR follower not caught up for longer than
    /// `replica_lag_time_max_ms` (unless a proposal is already in flight).
    pub fn on_tick(&mut self, now_ms: u64) {
        if self.proposed_isr.is_some() {
            return;
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let is_lagging = |replica: ReplicaId| {
            self.progress(replica).is_some_and(|progress| {
                now_ms.saturating_sub(progress.last_caught_up_ms) > lag_max_ms
            })
        };
        if !self.isr.iter().any(|&replica| is_lagging(replica)) {
            return;
        }
        let (remove, proposed_isr): (Vec<ReplicaId>, Vec<ReplicaId>) =
            self.isr.iter().partition(|&&replica| is_lagging(replica));
        self.proposed_isr = Some(proposed_isr.clone());
        self.unsent_proposal = Some(LeaderAction::IsrShrink {
            remove,
            proposed_isr,
            leader_epoch: self.leader_epoch,
            isr_version: self.isr_version,
        });
    }

    /// The controller committed an ISR for this partition: the answer to a proposal, or its own
    /// change (say, a dead broker fenced). An answer with a version not newer than the current
    /// one is stale and ignored.
    pub fn on_isr_confirmed(
        &mut self,
        isr: Vec<ReplicaId>,
        isr_version: u32,
    ) -> Result<(), ReplicationError> {
        if isr_version <= self.isr_version {
            return Ok(());
        }
        validate_isr(&isr, isr_version, &self.replicas, self.local)?;
        self.isr = isr;
        self.isr_version = isr_version;
        self.proposed_isr = None;
        self.unsent_proposal = None;
        self.update_high_watermark();
        Ok(())
    }

    /// The controller refused the proposal in flight (or it was lost): forget it; the next
    /// fetch or tick proposes again if still needed.
    pub fn on_isr_change_failed(&mut self) {
        self.proposed_isr = None;
        self.unsent_proposal = None;
    }

    fn progress(&self, replica: ReplicaId) -> Option<&FollowerProgress> {
        self.followers
            .iter()
            .find(|progress| progress.replica == replica)
    }

    fn check_leader_epoch(&self, requested: u32) -> Result<(), ReplicationError> {
        let current = self.leader_epoch;
        match requested.cmp(&current) {
            std::cmp::Ordering::Less => {
                Err(ReplicationError::FencedLeaderEpoch { current, requested })
            }
            std::cmp::Ordering::Greater => {
                Err(ReplicationError::UnknownLeaderEpoch { current, requested })
            }
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The confirmed ISR plus any replica a proposal in flight adds (KIP-497's maximal ISR).
    fn in_maximal_isr(&self, replica: ReplicaId) -> bool {
        self.isr.contains(&replica)
            || self
                .proposed_isr
                .as_ref()
                .is_some_and(|proposed| proposed.contains(&replica))
    }

    /// Kafka's `isFollowerInSync`: its log end reached the high watermark and this leader's
    /// epoch start, so it holds every committed record and is on this leader's history.
    fn maybe_propose_expand(&mut self, follower: ReplicaId, follower_log_end_offset: u64) {
        if self.proposed_isr.is_some()
            || self.in_maximal_isr(follower)
            || follower_log_end_offset < self.high_watermark
            || follower_log_end_offset < self.leader_epoch_start_offset
        {
            return;
        }
        // Keep the replica-set order so ISRs compare equal however they were built.
        let proposed_isr: Vec<ReplicaId> = self
            .replicas
            .iter()
            .copied()
            .filter(|&replica| replica == follower || self.isr.contains(&replica))
            .collect();
        self.proposed_isr = Some(proposed_isr.clone());
        self.unsent_proposal = Some(LeaderAction::IsrExpand {
            add: follower,
            proposed_isr,
            leader_epoch: self.leader_epoch,
            isr_version: self.isr_version,
        });
    }

    /// Raises the high watermark to the minimum log end over the maximal ISR, if that is
    /// higher; an ISR follower that has not fetched in this term holds it where it is.
    fn update_high_watermark(&mut self) {
        let mut minimum = self.log_end_offset;
        for progress in &self.followers {
            if !self.in_maximal_isr(progress.replica) {
                continue;
            }
            match progress.log_end_offset {
                Some(log_end_offset) => minimum = minimum.min(log_end_offset),
                None => return,
            }
        }
        if minimum > self.high_watermark {
            self.high_watermark = minimum;
            self.high_watermark_unreported = true;
        }
    }
}

/// An ISR must hold the leader, only replicas of the partition, and each once.
fn validate_isr(
    isr: &[ReplicaId],
    version: u32,
    replicas: &[ReplicaId],
    leader: ReplicaId,
) -> Result<(), ReplicationError> {
    let repeats = isr
        .iter()
        .enumerate()
        .any(|(index, replica)| isr[..index].contains(replica));
    let outsider = isr.iter().any(|replica| !replicas.contains(replica));
    if repeats || outsider || !isr.contains(&leader) {
        return Err(ReplicationError::InvalidIsr {
            isr: isr.to_vec(),
            version,
            replicas: replicas.to_vec(),
            leader,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: ReplicaId = ReplicaId(1);
    const FOLLOWER_A: ReplicaId = ReplicaId(2);
    const FOLLOWER_B: ReplicaId = ReplicaId(3);
    const LAG_MAX_MS: u64 = 10_000;

    fn elect(isr: &[ReplicaId], min_insync_replicas: usize) -> (LeaderState, LeaderEpochCache) {
        let mut epochs = LeaderEpochCache::new();
        let leader = LeaderState::elected(
            LeaderElection {
                local: LEADER,
                leader_epoch: 1,
                replicas: vec![LEADER, FOLLOWER_A, FOLLOWER_B],
                isr: isr.to_vec(),
                isr_version: 1,
                log_start_offset: 0,
                log_end_offset: 0,
                high_watermark: 0,
                config: LeaderConfig {
                    min_insync_replicas,
                    replica_lag_time_max_ms: LAG_MAX_MS,
                },
                now_ms: 0,
            },
            &mut epochs,
        )
        .expect("valid election");
        (leader, epochs)
    }

    fn fetch(
        leader: &mut LeaderState,
        epochs: &LeaderEpochCache,
        follower: ReplicaId,
        fetch_offset: u64,
        now_ms: u64,
    ) -> FollowerFetchReply {
        let last_fetched_epoch = (fetch_offset > 0).then_some(1);
        leader
            .on_follower_fetch(
                follower,
                FollowerFetch {
                    fetch_offset,
                    last_fetched_epoch,
                    current_leader_epoch: 1,
                },
                epochs,
                now_ms,
            )
            .expect("valid fetch")
    }

    fn drain(leader: &mut LeaderState) -> Vec<LeaderAction> {
        std::iter::from_fn(|| leader.poll_action()).collect()
    }

    #[test]
    fn alone_in_the_isr_the_high_watermark_follows_the_log_end() {
        let (mut leader, _) = elect(&[LEADER], 1);
        leader.on_append(10);
        assert_eq!(
            drain(&mut leader),
            [LeaderAction::HighWatermarkAdvanced(10)]
        );
        leader.on_append(25);
        leader.on_append(30);
        assert_eq!(
            drain(&mut leader),
            [LeaderAction::HighWatermarkAdvanced(30)],
            "coalesced"
        );
        assert_eq!(leader.acks_all_status(30), Ok(true));
    }

    #[test]
    fn the_high_watermark_is_the_minimum_over_the_isr_and_waits_for_unknown_followers() {
        let (mut leader, epochs) = elect(&[LEADER, FOLLOWER_A, FOLLOWER_B], 2);
        leader.on_append(100);
        fetch(&mut leader, &epochs, FOLLOWER_A, 100, 1);
        assert_eq!(leader.high_watermark(), 0, "B has not fetched in this term");
        assert_eq!(leader.acks_all_status(100), Ok(false));
        fetch(&mut leader, &epochs, FOLLOWER_B, 40, 2);
        assert_eq!(leader.high_watermark(), 40);
        // A follower re-sending an older fetch does not move the high watermark back.
        fetch(&mut leader, &epochs, FOLLOWER_B, 10, 3);
        assert_eq!(leader.high_watermark(), 40);
        assert_eq!(
            leader.check_consumer_fetch(50, Some(1)),
            Ok(40),
            "consumers read below the high watermark"
        );
    }

    #[test]
    fn min_insync_refuses_acks_all_only() {
        let (leader, _) = elect(&[LEADER, FOLLOWER_A], 3);
        assert_eq!(
            leader.check_produce(Acks::All),
            Err(ReplicationError::NotEnoughReplicas { isr: 2, min: 3 })
        );
        assert_eq!(leader.check_produce(Acks::Leader), Ok(()));
        assert_eq!(leader.check_produce(Acks::None), Ok(()));
        assert_eq!(
            leader.acks_all_status(0),
            Err(ReplicationError::NotEnoughReplicasAfterAppend {
                batch_end_offset: 0,
                isr: 2,
                min: 3
            })
        );
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_back_in_once_confirmed() {
        let (mut leader, epochs) = elect(&[LEADER, FOLLOWER_A, FOLLOWER_B], 2);
        leader.on_append(50);
        fetch(&mut leader, &epochs, FOLLOWER_A, 50, 1_000);
        fetch(&mut leader, &epochs, FOLLOWER_B, 20, 1_000);
        leader.on_tick(LAG_MAX_MS);
        assert!(
            !drain(&mut leader)
                .iter()
                .any(|action| matches!(action, LeaderAction::IsrShrink { .. })),
            "B was caught up at election time 0, not yet lagging for more than the maximum"
        );
        leader.on_tick(LAG_MAX_MS + 1);
        let actions = drain(&mut leader);
        assert_eq!(
            actions,
            [LeaderAction::IsrShrink {
                remove: vec![FOLLOWER_B],
                proposed_isr: vec![LEADER, FOLLOWER_A],
                leader_epoch: 1,
                isr_version: 1
            }]
        );
        assert_eq!(
            leader.isr(),
            [LEADER, FOLLOWER_A, FOLLOWER_B],
            "not applied before confirmed"
        );
        leader
            .on_isr_confirmed(vec![LEADER, FOLLOWER_A], 2)
            .expect("valid ISR");
        assert_eq!(
            drain(&mut leader),
            [LeaderAction::HighWatermarkAdvanced(50)]
        );
        assert_eq!(leader.check_produce(Acks::All), Ok(()));

        leader.on_append(80);
        fetch(&mut leader, &epochs, FOLLOWER_B, 49, LAG_MAX_MS + 2);
        assert!(
            drain(&mut leader).is_empty(),
            "below the high watermark: not in sync"
        );
        fetch(&mut leader, &epochs, FOLLOWER_B, 50, LAG_MAX_MS + 3);
        assert_eq!(
            drain(&mut leader),
            [LeaderAction::IsrExpand {
                add: FOLLOWER_B,
                proposed_isr: vec![LEADER, FOLLOWER_A, FOLLOWER_B],
                leader_epoch: 1,
                isr_version: 2
            }]
        );
        // While the expansion is in flight, B holds the high watermark (maximal ISR).
        fetch(&mut leader, &epochs, FOLLOWER_A, 80, LAG_MAX_MS + 4);
        assert_eq!(leader.high_watermark(), 50);
        leader
            .on_isr_confirmed(vec![LEADER, FOLLOWER_A], 2)
            .expect("stale answers are ignored");
        assert_eq!(leader.isr_version(), 2);
        leader
            .on_isr_confirmed(vec![LEADER, FOLLOWER_A, FOLLOWER_B], 3)
            .expect("valid ISR");
        assert_eq!(leader.isr().len(), 3);
    }

    /// Kafka's rule: a follower that always trails a busy leader by a little is still caught up,
    /// as of its previous fetch, if it reached where the leader was then.
    #[test]
    fn a_follower_trailing_a_busy_leader_stays_in_sync() {
        let (mut leader, epochs) = elect(&[LEADER, FOLLOWER_A], 1);
        let mut now_ms = 0;
        for round in 1..100u64 {
            leader.on_append(round * 10);
            // The follower fetches what the leader had at its previous fetch.
            fetch(&mut leader, &epochs, FOLLOWER_A, (round - 1) * 10, now_ms);
            now_ms += LAG_MAX_MS / 4;
            leader.on_tick(now_ms);
        }
        assert!(leader.proposed_isr().is_none(), "{:?}", drain(&mut leader));
    }

    #[test]
    fn stale_or_unknown_epochs_and_strangers_are_refused() {
        let (mut leader, epochs) = elect(&[LEADER, FOLLOWER_A], 1);
        let at_epoch = |current_leader_epoch| FollowerFetch {
            fetch_offset: 0,
            last_fetched_epoch: None,
            current_leader_epoch,
        };
        assert_eq!(
            leader.on_follower_fetch(FOLLOWER_A, at_epoch(0), &epochs, 0),
            Err(ReplicationError::FencedLeaderEpoch {
                current: 1,
                requested: 0
            })
        );
        assert_eq!(
            leader.on_follower_fetch(FOLLOWER_A, at_epoch(2), &epochs, 0),
            Err(ReplicationError::UnknownLeaderEpoch {
                current: 1,
                requested: 2
            })
        );
        assert_eq!(
            leader.on_follower_fetch(ReplicaId(9), at_epoch(1), &epochs, 0),
            Err(ReplicationError::UnknownReplica {
                replica: ReplicaId(9)
            })
        );
        assert_eq!(
            leader.check_consumer_fetch(0, Some(0)),
            Err(ReplicationError::FencedLeaderEpoch {
                current: 1,
                requested: 0
            })
        );
        assert!(matches!(
            leader.check_consumer_fetch(1, None),
            Err(ReplicationError::OffsetOutOfRange { offset: 1, .. })
        ));
        assert!(matches!(
            leader.on_isr_confirmed(vec![FOLLOWER_A], 5),
            Err(ReplicationError::InvalidIsr { .. })
        ));
        assert!(matches!(
            leader.on_isr_confirmed(vec![LEADER, LEADER], 5),
            Err(ReplicationError::InvalidIsr { .. })
        ));
    }
}
