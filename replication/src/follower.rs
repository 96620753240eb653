//! The follower's side of one partition: where to fetch from, what to do with what the leader
//! sends, and the high watermark learned from it.
//!
//! The broker's partition holds one [`FollowerState`] while its replica follows the partition's
//! leader. Its replication connection asks [`FollowerState::next_fetch`] what to put in the next
//! fetch request for this partition, and hands the answer back:
//!
//! - a records answer (the batches' headers and the leader's high watermark) to
//!   [`FollowerState::on_fetched_records`]: if accepted, the broker appends the answer's bytes
//!   exactly as received (no re-encoding) — the state and the epoch cache already count them as
//!   appended, so an append that then fails means the broker must drop this state and rebuild
//!   it from the log;
//! - a divergence answer to [`FollowerState::on_diverging`], which says where to truncate the
//!   local log (only ever its uncommitted tail);
//!
//! Both take the request they answer and ignore a stale answer (a delayed or duplicated one:
//! the follower's log or epoch moved since), so a late divergence answer can never cut records
//! fetched after it.
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

/// What to append after a records answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendRecords {
    /// Append the answer's bytes at this offset (the old log end)...
    pub base_offset: u64,
    /// ...up to this one (the new log end; equal to `base_offset` for an answer without
    /// records).
    pub end_offset: u64,
    /// The follower's new high watermark, if it advanced.
    pub high_watermark_advanced: Option<u64>,
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

    /// Whether an answer from the leader answers `answered`, the follower's current request:
    /// nothing (log end, last epoch, leader epoch) moved since it was built.
    pub fn is_current(&self, answered: &FollowerFetch, epochs: &LeaderEpochCache) -> bool {
        *answered == self.next_fetch(epochs)
    }

    /// The leader answered `answered` with record batches (their headers in `batches`, in
    /// order) and its high watermark. All or nothing: the answer must be current (see
    /// [`Self::is_current`]), and every batch must hold at least one offset, start where the
    /// previous one ended (the first at the local log end), and carry an epoch between the
    /// log's latest and the leader's. If so, the broker appends the answer's bytes, as
    /// received, from [`AppendRecords::base_offset`]; the epoch cache already records the new
    /// epochs and the follower's high watermark is updated. If not, nothing changed: drop the
    /// answer and fetch again. `batches` is walked twice (check, then apply), hence `Clone`.
    pub fn on_fetched_records<I>(
        &mut self,
        answered: &FollowerFetch,
        batches: I,
        leader_high_watermark: u64,
        epochs: &mut LeaderEpochCache,
    ) -> Result<AppendRecords, ReplicationError>
    where
        I: IntoIterator<Item = FetchedBatch>,
        I::IntoIter: Clone,
    {
        self.check_current(answered, epochs)?;
        let batches = batches.into_iter();
        let mut end_offset = self.log_end_offset;
        let mut latest_epoch = epochs.latest_epoch().unwrap_or(0);
        for batch in batches.clone() {
            if batch.end_offset <= batch.base_offset {
                return Err(ReplicationError::InvalidBatchOffsets {
                    base_offset: batch.base_offset,
                    end_offset: batch.end_offset,
                });
            }
            if batch.base_offset != end_offset {
                return Err(ReplicationError::BatchOutOfOrder {
                    base_offset: batch.base_offset,
                    log_end_offset: end_offset,
                });
            }
            if batch.leader_epoch < latest_epoch || batch.leader_epoch > self.leader_epoch {
                return Err(ReplicationError::EpochOutOfOrder {
                    epoch: batch.leader_epoch,
                    latest: latest_epoch,
                    leader: self.leader_epoch,
                });
            }
            latest_epoch = batch.leader_epoch;
            end_offset = batch.end_offset;
        }
        for batch in batches {
            epochs.assign(batch.leader_epoch, batch.base_offset)?;
        }
        let base_offset = self.log_end_offset;
        self.log_end_offset = end_offset;
        let high_watermark_advanced = self.on_leader_high_watermark(leader_high_watermark);
        Ok(AppendRecords {
            base_offset,
            end_offset,
            high_watermark_advanced,
        })
    }

    /// The follower's high watermark is the leader's, capped at its own log end, and never
    /// moves back. Only answers to a current request, after their records are counted, teach
    /// it: the local log below it then matches the leader's.
    fn on_leader_high_watermark(&mut self, leader_high_watermark: u64) -> Option<u64> {
        let candidate = leader_high_watermark.min(self.log_end_offset);
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            return Some(candidate);
        }
        None
    }

    fn check_current(
        &self,
        answered: &FollowerFetch,
        epochs: &LeaderEpochCache,
    ) -> Result<(), ReplicationError> {
        if self.is_current(answered, epochs) {
            return Ok(());
        }
        Err(ReplicationError::StaleFetchResponse {
            answered_fetch_offset: answered.fetch_offset,
            answered_leader_epoch: answered.current_leader_epoch,
            log_end_offset: self.log_end_offset,
            leader_epoch: self.leader_epoch,
        })
    }

    /// The leader answered `answered` with a divergence: its epoch `epoch` (the largest ≤ our last fetched
    /// one) ends at `end_offset` there. Kafka's truncation rule (`AbstractFetcherThread`): if
    /// this log's own largest epoch ≤ `epoch` is `epoch` itself, truncate to the smaller of the
    /// two logs' ends for it — done; if it is an older epoch, truncate to where that older epoch
    /// ends here and check again with the next fetch. The epoch cache is truncated with the
    /// log (this also drops an epoch that wrote nothing).
    ///
    /// Refuses — and changes nothing — a stale answer (see [`Self::is_current`]), and a
    /// truncation below the high watermark: a committed record is never truncated.
    pub fn on_diverging(
        &mut self,
        answered: &FollowerFetch,
        epoch: u32,
        end_offset: u64,
        epochs: &mut LeaderEpochCache,
    ) -> Result<Truncation, ReplicationError> {
        self.check_current(answered, epochs)?;
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

    /// Fetches `batches` with the follower's current request and the leader's HW.
    fn fetch(
        follower: &mut FollowerState,
        epochs: &mut LeaderEpochCache,
        batches: &[FetchedBatch],
        leader_high_watermark: u64,
    ) -> Result<AppendRecords, ReplicationError> {
        let request = follower.next_fetch(epochs);
        follower.on_fetched_records(
            &request,
            batches.iter().copied(),
            leader_high_watermark,
            epochs,
        )
    }

    #[test]
    fn batches_are_appended_in_order_and_epochs_recorded() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 3, 0, 0);
        assert_eq!(follower.next_fetch(&epochs).last_fetched_epoch, None);
        let appended = fetch(
            &mut follower,
            &mut epochs,
            &[batch(0, 5, 1), batch(5, 9, 3)],
            2,
        )
        .expect("in order");
        assert_eq!(
            appended,
            AppendRecords {
                base_offset: 0,
                end_offset: 9,
                high_watermark_advanced: Some(2)
            }
        );
        assert_eq!(
            follower.next_fetch(&epochs),
            FollowerFetch {
                fetch_offset: 9,
                last_fetched_epoch: Some(3),
                current_leader_epoch: 3
            }
        );
        assert_eq!(epochs.end_offset_for_epoch(1, 9), Some((1, 5)));
    }

    #[test]
    fn a_bad_answer_is_refused_whole_and_changes_nothing() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 3, 0, 0);
        fetch(
            &mut follower,
            &mut epochs,
            &[batch(0, 5, 1), batch(5, 9, 3)],
            0,
        )
        .expect("valid");
        let before = (follower.clone(), epochs.clone());
        for (batches, expected) in [
            (
                vec![batch(9, 12, 3), batch(11, 14, 3)],
                ReplicationError::BatchOutOfOrder {
                    base_offset: 11,
                    log_end_offset: 12,
                },
            ),
            (
                vec![batch(9, 12, 3), batch(12, 14, 2)],
                ReplicationError::EpochOutOfOrder {
                    epoch: 2,
                    latest: 3,
                    leader: 3,
                },
            ),
            (
                vec![batch(9, 10, 4)],
                ReplicationError::EpochOutOfOrder {
                    epoch: 4,
                    latest: 3,
                    leader: 3,
                },
            ),
            (
                vec![batch(9, 9, 3)],
                ReplicationError::InvalidBatchOffsets {
                    base_offset: 9,
                    end_offset: 9,
                },
            ),
        ] {
            assert_eq!(
                fetch(&mut follower, &mut epochs, &batches, 9),
                Err(expected)
            );
            assert_eq!(
                (&follower, &epochs),
                (&before.0, &before.1),
                "refused answers change nothing"
            );
        }
    }

    #[test]
    fn stale_answers_are_ignored() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 1, 0, 0);
        let first_request = follower.next_fetch(&epochs);
        fetch(&mut follower, &mut epochs, &[batch(0, 10, 1)], 0).expect("valid");
        // The first request's answer, delivered twice: the duplicate is stale.
        assert!(matches!(
            follower.on_fetched_records(&first_request, [batch(0, 10, 1)], 10, &mut epochs),
            Err(ReplicationError::StaleFetchResponse {
                answered_fetch_offset: 0,
                log_end_offset: 10,
                ..
            })
        ));
        // A late divergence answer to it cannot cut what was fetched since.
        assert!(matches!(
            follower.on_diverging(&first_request, 1, 0, &mut epochs),
            Err(ReplicationError::StaleFetchResponse { .. })
        ));
        assert_eq!(follower.log_end_offset(), 10);
        assert_eq!(follower.high_watermark(), 0);
    }

    #[test]
    fn the_high_watermark_is_capped_at_the_local_log_end_and_never_moves_back() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 1, 0, 0);
        let appended = fetch(&mut follower, &mut epochs, &[batch(0, 10, 1)], 30).expect("append");
        assert_eq!(appended.high_watermark_advanced, Some(10));
        let appended = fetch(&mut follower, &mut epochs, &[], 4).expect("empty answer");
        assert_eq!(appended.high_watermark_advanced, None);
        assert_eq!(follower.high_watermark(), 10);
    }

    /// KIP-279's case: the follower has epochs 1 @ 0, 2 @ 4 (a lost leadership) and ends at 8;
    /// the leader has 1 @ 0, 3 @ 6. The leader says "your epoch 2 → my epoch 1 ends at 6"; the
    /// follower's own epoch 1 ends at 4, so it truncates to min(6, 4) = 4, and its next fetch
    /// (epoch 1, offset 4) is valid.
    #[test]
    fn divergence_truncates_only_the_divergent_tail() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 1, 0, 0);
        fetch(&mut follower, &mut epochs, &[batch(0, 4, 1)], 0).expect("epoch 1");
        follower.on_leader_change(LEADER, 2);
        fetch(&mut follower, &mut epochs, &[batch(4, 8, 2)], 4).expect("epoch 2");
        follower.on_leader_change(ReplicaId(3), 3);

        let request = follower.next_fetch(&epochs);
        let truncation = follower
            .on_diverging(&request, 1, 6, &mut epochs)
            .expect("above the HW");
        assert_eq!(
            truncation,
            Truncation {
                truncate_to: 4,
                complete: true
            }
        );
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
        fetch(
            &mut follower,
            &mut epochs,
            &[batch(0, 3, 1), batch(3, 6, 4)],
            0,
        )
        .expect("valid");
        // The leader never saw epoch 4; its floor is epoch 2, which this log does not have.
        let request = follower.next_fetch(&epochs);
        let truncation = follower
            .on_diverging(&request, 2, 5, &mut epochs)
            .expect("no HW yet");
        assert_eq!(
            truncation,
            Truncation {
                truncate_to: 3,
                complete: false
            }
        );
        assert_eq!(epochs.latest_epoch(), Some(1));
    }

    #[test]
    fn divergence_below_the_high_watermark_is_refused() {
        let mut epochs = LeaderEpochCache::new();
        let mut follower = FollowerState::new(LOCAL, LEADER, 2, 0, 0);
        fetch(&mut follower, &mut epochs, &[batch(0, 10, 2)], 8).expect("append");
        let before = (follower.clone(), epochs.clone());
        let request = follower.next_fetch(&epochs);
        assert_eq!(
            follower.on_diverging(&request, 2, 5, &mut epochs),
            Err(ReplicationError::TruncationBelowHighWatermark {
                truncate_to: 5,
                high_watermark: 8
            })
        );
        assert_eq!((follower, epochs), before);
    }

    #[test]
    fn a_follower_tells_clients_who_leads() {
        let mut follower = FollowerState::new(LOCAL, LEADER, 2, 0, 0);
        assert!(
            !follower.on_leader_change(ReplicaId(3), 2),
            "same epoch: stale"
        );
        assert!(follower.on_leader_change(ReplicaId(3), 4));
        assert_eq!(
            follower.not_leader(),
            ReplicationError::NotLeader {
                replica: LOCAL,
                leader: Some(ReplicaId(3)),
                leader_epoch: 4
            }
        );
    }
}
