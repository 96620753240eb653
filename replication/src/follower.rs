//! The follower's side of one partition: where to fetch from, what to do with what the leader
//! sends, and the high watermark learned from it.
//!
//! The broker's partition holds one [`FollowerState`] while its replica follows the partition's
//! leader. Its replication connection asks [`FollowerState::next_fetch`] what to put in the next
//! fetch request for this partition, and hands the answer back:
//!
//! - each fetched batch to [`FollowerState::on_fetched_batch`]: if accepted, the broker appends
//!   the batch's bytes exactly as received at the offset it names (no re-encoding) — the state
//!   and the epoch cache already count it as appended, so an append that then fails means the
//!   broker must drop this state and rebuild it from the log;
//! - the leader's high watermark to [`FollowerState::on_leader_high_watermark`];
//! - a divergence answer to [`FollowerState::on_diverging`], which says where to truncate the
//!   local log (only ever its uncommitted tail);
//! - a metadata update naming a newer leader or epoch to [`FollowerState::on_leader_change`].

use crate::epochs::LeaderEpochCache;
use crate::leader::FollowerFetch;
use crate::{ReplicaId, ReplicationError};

/// What the follower needs to know of one fetched record batch (read from its header; the
/// bytes themselves never pass through here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset just past its last record.
    pub end_offset: u64,
    /// The leader epoch that wrote it.
    pub leader_epoch: u32,
}

/// The truncation a divergence answer requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Truncate the local log so that it ends here (exclusive); the epoch cache already was.
    /// Equal to the old log end when no record has to go.
    pub truncate_to: u64,
    /// `false` when the follower only found a common earlier epoch and must check again with
    /// its next fetch (Kafka's "truncation not complete"); the next fetch does that on its own.
    pub complete: bool,
}

/// The replication state of one partition on a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerState {
    local: ReplicaId,
    leader: ReplicaId,
    leader_epoch: u32,
    /// Where the local log ends: the next fetch offset.
    log_end_offset: u64,
    /// Learned from the leader, never above the local log end.
    high_watermark: u64,
}

impl FollowerState {
    /// Starts following `leader` in `leader_epoch` with the local log ending at
    /// `log_end_offset` and the high watermark it last knew (capped at that log end).
    pub fn new(
        local: ReplicaId,
        leader: ReplicaId,
        leader_epoch: u32,
        log_end_offset: u64,
        high_watermark: u64,
    ) -> Self {
        Self {
            local,
            leader,
            leader_epoch,
            log_end_offset,
            high_watermark: high_watermark.min(log_end_offset),
        }
    }

    /// The leader being followed.
    pub fn leader(&self) -> ReplicaId {
        self.leader
    }

    /// The leader epoch being followed.
    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    /// Where the local log ends.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// The high watermark learned from the leader.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// A produce or consumer fetch reached this replica: it is not the leader; the answer says
    /// which one is.
    pub fn not_leader(&self) -> ReplicationError {
        ReplicationError::NotLeader {
            replica: self.local,
            leader: Some(self.leader),
            leader_epoch: self.leader_epoch,
        }
    }

    /// The fields of the next fetch request for this partition.
    pub fn next_fetch(&self, epochs: &LeaderEpochCache) -> FollowerFetch {
        FollowerFetch {
            fetch_offset: self.log_end_offset,
            last_fetched_epoch: epochs.latest_epoch(),
            current_leader_epoch: self.leader_epoch,
        }
    }

    /// Metadata names a leader for a newer epoch: follow it. An older or equal epoch is stale
    /// and changes nothing. Returns whether anything changed.
    pub fn on_leader_change(&mut self, leader: ReplicaId, leader_epoch: u32) -> bool {
        if leader_epoch <= self.leader_epoch {
            return false;
        }
        self.leader = leader;
        self.leader_epoch = leader_epoch;
        true
    }

    /// A batch arrived from the leader. It must start exactly at the local log end, hold at
    /// least one offset, and carry an epoch between the log's latest and the leader's. If
    /// accepted, the broker appends its bytes as received; the epoch cache records a new epoch.
    /// A refused batch (a stale or reordered response) changes nothing: drop the rest of the
    /// response and fetch again.
    pub fn on_fetched_batch(
        &mut self,
        batch: FetchedBatch,
        epochs: &mut LeaderEpochCache,
    ) -> Result<(), ReplicationError> {
        if batch.end_offset <= batch.base_offset {
            return Err(ReplicationError::InvalidBatchOffsets {
                base_offset: batch.base_offset,
                end_offset: batch.end_offset,
            });
        }
        if batch.base_offset != self.log_end_offset {
            return Err(ReplicationError::BatchOutOfOrder {
                base_offset: batch.base_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let latest = epochs.latest_epoch().unwrap_or(0);
        if batch.leader_epoch < latest || batch.leader_epoch > self.leader_epoch {
            return Err(ReplicationError::EpochOutOfOrder {
                epoch: batch.leader_epoch,
                latest,
                leader: self.leader_epoch,
            });
        }
        epochs.assign(batch.leader_epoch, batch.base_offset)?;
        self.log_end_offset = batch.end_offset;
        Ok(())
    }

    /// The leader's high watermark arrived with a fetch answer. The follower's is that, capped
    /// at its own log end, and never moves back. Returns the new value if it advanced.
    pub fn on_leader_high_watermark(&mut self, leader_high_watermark: u64) -> Option<u64> {
        let candidate = leader_high_watermark.min(self.log_end_offset);
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            return Some(candidate);
        }
        None
    }

    /// The leader said this log diverges: its epoch `epoch` (the largest ≤ our last fetched
    /// one) ends at `end_offset` there. Kafka's truncation rule (`AbstractFetcherThread`): if
    /// this log's own largest epoch ≤ `epoch` is `epoch` itself, truncate to the smaller of the
    /// two logs' ends for it — done; if it is an older epoch, truncate to where that older epoch
    /// ends here and check again with the next fetch. The epoch cache is truncated with the
    /// log (this also drops an epoch that wrote nothing).
    ///
    /// Refuses — and changes nothing — if that would cut below the high watermark: a committed
    /// record is never truncated.
    pub fn on_diverging(
        &mut self,
        epoch: u32,
        end_offset: u64,
        epochs: &mut LeaderEpochCache,
    ) -> Result<Truncation, ReplicationError> {
        let (truncate_to, complete) = match epochs.end_offset_for_epoch(epoch, self.log_end_offset)
        {
            Some((local_epoch, local_end_offset)) if local_epoch == epoch => {
                (end_offset.min(local_end_offset), true)
            }
            Some((_, local_end_offset)) => (local_end_offset, false),
            None => (end_offset, true),
        };
        let truncate_to = truncate_to.min(self.log_end_offset);
        if truncate_to < self.high_watermark {
            return Err(ReplicationError::TruncationBelowHighWatermark {
                truncate_to,
                high_watermark: self.high_watermark,
            });
        }
        epochs.truncate_from_end(truncate_to);
        self.log_end_offset = truncate_to;
        Ok(Truncation {
            truncate_to,
            complete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: ReplicaId = ReplicaId(2);
    const LEADER: ReplicaId = ReplicaId(1);

    fn batch(base_offset: u64, end_offset: u64, leader_epoch: u32) -> FetchedBatch {
        FetchedBatch {
            base_offset,
            end_offset,
            leader_epoch,
        }
    }

    #[test]
    fn batches_are_appended_in_order_and_epochs_recorded() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 3, 0, 0);
        assert_eq!(follower.next_fetch(&epochs).last_fetched_epoch, None);
        follower.on_fetched_batch(batch(0, 5, 1), &mut epochs).expect("first");
        follower.on_fetched_batch(batch(5, 9, 3), &mut epochs).expect("second");
        assert_eq!(
            follower.next_fetch(&epochs),
            FollowerFetch { fetch_offset: 9, last_fetched_epoch: Some(3), current_leader_epoch: 3 }
        );
        assert_eq!(epochs.end_offset_for_epoch(1, 9), Some((1, 5)));
        let before = follower.clone();
        assert_eq!(
            follower.on_fetched_batch(batch(5, 9, 3), &mut epochs),
            Err(ReplicationError::BatchOutOfOrder { base_offset: 5, log_end_offset: 9 })
        );
        assert!(matches!(
            follower.on_fetched_batch(batch(9, 10, 2), &mut epochs),
            Err(ReplicationError::EpochOutOfOrder { epoch: 2, latest: 3, leader: 3 })
        ));
        assert!(matches!(
            follower.on_fetched_batch(batch(9, 10, 4), &mut epochs),
            Err(ReplicationError::EpochOutOfOrder { epoch: 4, .. })
        ));
        assert!(matches!(
            follower.on_fetched_batch(batch(9, 9, 3), &mut epochs),
            Err(ReplicationError::InvalidBatchOffsets { .. })
        ));
        assert_eq!(follower, before, "refused batches change nothing");
    }

    #[test]
    fn the_high_watermark_is_capped_at_the_local_log_end_and_never_moves_back() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 1, 0, 0);
        follower.on_fetched_batch(batch(0, 10, 1), &mut epochs).expect("append");
        assert_eq!(follower.on_leader_high_watermark(30), Some(10));
        assert_eq!(follower.on_leader_high_watermark(4), None);
        assert_eq!(follower.high_watermark(), 10);
    }

    /// KIP-279's case: the follower has epochs 1 @ 0, 2 @ 4 (a lost leadership) and
    /// ends at 8; the leader has 1 @ 0, 3 @ 6. The leader says "your epoch 2 → my epoch 1 ends
    /// at 6"; the follower's own epoch 1 ends at 4, so it truncates to min(6, 4) = 4, and its
    /// next fetch (epoch 1, offset 4) is valid.
    #[test]
    fn divergence_truncates_only_the_divergent_tail() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 3, 0, 0);
        follower.on_fetched_batch(batch(0, 4, 1), &mut epochs).expect("epoch 1");
        follower.on_leader_change(LEADER, 2);
        follower.on_fetched_batch(batch(4, 8, 2), &mut epochs).expect("epoch 2");
        follower.on_leader_high_watermark(4);
        follower.on_leader_change(ReplicaId(3), 3);

        let truncation = follower.on_diverging(1, 6, &mut epochs).expect("above the HW");
        assert_eq!(truncation, Truncation { truncate_to: 4, complete: true });
        assert_eq!(follower.next_fetch(&epochs).last_fetched_epoch, Some(1));

        let mut leader_epochs = LeaderEpochCache::new();
        leader_epochs.assign(1, 0).expect("epoch 1");
        leader_epochs.assign(3, 6).expect("epoch 3");
        let next = follower.next_fetch(&epochs);
        assert_eq!(
            leader_epochs.check_fetch(next.fetch_offset, next.last_fetched_epoch, 0, 10),
            Ok(crate::epochs::FetchEpochCheck::Valid)
        );
    }

    #[test]
    fn divergence_to_an_older_common_epoch_takes_another_round() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 5, 0, 0);
        follower.on_fetched_batch(batch(0, 3, 1), &mut epochs).expect("epoch 1");
        follower.on_fetched_batch(batch(3, 6, 4), &mut epochs).expect("epoch 4");
        // The leader never saw epoch 4; its floor is epoch 2, which this log does not have.
        let truncation = follower.on_diverging(2, 5, &mut epochs).expect("no HW yet");
        assert_eq!(truncation, Truncation { truncate_to: 3, complete: false });
        assert_eq!(epochs.latest_epoch(), Some(1));
    }

    #[test]
    fn divergence_below_the_high_watermark_is_refused() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 2, 0, 0);
        follower.on_fetched_batch(batch(0, 10, 2), &mut epochs).expect("append");
        follower.on_leader_high_watermark(8);
        let before = (follower.clone(), epochs.clone());
        assert_eq!(
            follower.on_diverging(2, 5, &mut epochs),
            Err(ReplicationError::TruncationBelowHighWatermark { truncate_to: 5, high_watermark: 8 })
        );
        assert_eq!((follower, epochs), before);
    }

    #[test]
    fn a_follower_tells_clients_who_leads() {
        let mut follower = FollowerState::new(LOCAL, LEADER, 2, 0, 0);
        assert!(!follower.on_leader_change(ReplicaId(3), 2), "same epoch: stale");
        assert!(follower.on_leader_change(ReplicaId(3), 4));
        assert_eq!(
            follower.not_leader(),
            ReplicationError::NotLeader { replica: LOCAL, leader: Some(ReplicaId(3)), leader_epoch: 4 }
        );
    }
}
