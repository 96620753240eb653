//! The leader-epoch cache of one partition log (Kafka KIP-101 and KIP-279), and its checkpoint
//! format.
//!
//! Every replica of a partition, leader or follower, keeps one [`LeaderEpochCache`] beside its
//! log: for each leader epoch that wrote records into this log, the offset of its first record.
//! The broker's partition owns it, persists it with [`LeaderEpochCache::encode_checkpoint`]
//! through the storage crate's atomic-write helper whenever it changes, and rebuilds it at start
//! with [`LeaderEpochCache::decode_checkpoint`]. The state machines use it to find where two
//! logs diverge:
//!
//! - the **leader** answers a follower's fetch `(fetch_offset, last_fetched_epoch)` with
//!   [`LeaderEpochCache::check_fetch`]: either the follower's log is a prefix of the leader's
//!   ([`FetchEpochCheck::Valid`]) or it is told where its last epoch ends on the leader
//!   ([`FetchEpochCheck::Diverging`]);
//! - the **follower** turns that answer into a truncation point with its own cache
//!   (`FollowerState::on_diverging` in [`crate::follower`]), so it removes only the
//!   divergent, uncommitted tail.
//!
//! Epochs are strictly increasing, and so are their start offsets (an epoch that wrote nothing
//! before the next one started is dropped, as Kafka does). The cache is tiny — one entry per
//! leader change that wrote records — and changes only on leader changes, truncation and
//! retention, never per record.

use crate::ReplicationError;

/// One epoch of the cache: leader epoch `epoch` wrote the records from `start_offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: u32,
    /// Offset of the first record written in this epoch.
    pub start_offset: u64,
}

/// What the leader says about a follower's fetch position (KIP-279 / KIP-320's divergence
/// check, done on the fetch itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEpochCheck {
    /// The follower's log up to its fetch offset is a prefix of the leader's: serve the fetch.
    Valid,
    /// The follower's log diverges: the largest epoch the leader has that is not above the
    /// follower's last fetched epoch is `epoch`, and it ends at `end_offset` on the leader. The
    /// follower truncates (see `FollowerState::on_diverging`) and fetches again.
    Diverging {
        /// The largest leader epoch ≤ the follower's last fetched epoch.
        epoch: u32,
        /// Where that epoch ends on the leader (start of the next epoch, or the log end).
        end_offset: u64,
    },
}

/// Leader epoch → start offset of one partition log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Sorted: epochs strictly increasing, start offsets strictly increasing.
    entries: Vec<EpochEntry>,
}

/// Version written on the first line of a checkpoint.
const CHECKPOINT_VERSION: u32 = 0;

impl LeaderEpochCache {
    /// An empty cache (a new, empty log).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any epoch wrote into this log.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<u32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Called by a leader when it is elected (at
    /// its log end) and by a follower for every fetched batch whose epoch is new.
    ///
    /// Re-assigning the latest epoch is a no-op (an epoch starts at its first record). A newer
    /// epoch first drops any entry starting at or after `start_offset` (left behind by a
    /// truncation the caller did not report; Kafka does the same). An epoch older than the latest
    /// remaining one is refused: logs never go back in epochs.
    pub fn assign(&mut self, epoch: u32, start_offset: u64) -> Result<(), ReplicationError> {
        if let Some(latest) = self.latest() {
            if epoch == latest.epoch {
                return Ok(());
            }
            if epoch < latest.epoch {
                return Err(ReplicationError::EpochOutOfOrder {
                    epoch,
                    latest: latest.epoch,
                    leader: epoch,
                });
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|entry| entry.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(())
    }

    /// The log was truncated so that it now ends at `end_offset` (exclusive): forget the epochs
    /// that started at or after it.
    pub fn truncate_from_end(&mut self, end_offset: u64) {
        while self
            .entries
            .last()
            .is_some_and(|entry| entry.start_offset >= end_offset)
        {
            self.entries.pop();
        }
    }

    /// Retention moved the log start to `start_offset`: forget the epochs wholly before it and
    /// move the start of the epoch that covers it up to it.
    pub fn truncate_from_start(&mut self, start_offset: u64) {
        let before = self
            .entries
            .partition_point(|entry| entry.start_offset < start_offset);
        if before == 0 {
            return;
        }
        let starts_exactly_there = self
            .entries
            .get(before)
            .is_some_and(|entry| entry.start_offset == start_offset);
        if starts_exactly_there {
            self.entries.drain(..before);
        } else {
            self.entries[before - 1].start_offset = start_offset;
            self.entries.drain(..before - 1);
        }
    }

    /// Kafka's `endOffsetForEpoch` (KIP-101, KIP-279): for `requested_epoch`, the largest epoch
    /// in this log that is ≤ it, and where that epoch ends — the start offset of the next epoch,
    /// or `log_end_offset` if it is the latest. `None` (Kafka's undefined epoch and offset) when
    /// the log has no epochs or `requested_epoch` is newer than all of them. When
    /// `requested_epoch` is older than every epoch here, the answer is `(requested_epoch,
    /// first start offset)`: everything this log has came later.
    pub fn end_offset_for_epoch(
        &self,
        requested_epoch: u32,
        log_end_offset: u64,
    ) -> Option<(u32, u64)> {
        let latest = self.latest()?;
        if requested_epoch == latest.epoch {
            return Some((latest.epoch, log_end_offset));
        }
        // Index of the first epoch above the requested one.
        let higher = self
            .entries
            .partition_point(|entry| entry.epoch <= requested_epoch);
        let higher_entry = self.entries.get(higher)?;
        match higher.checked_sub(1).map(|floor| self.entries[floor]) {
            Some(floor_entry) => Some((floor_entry.epoch, higher_entry.start_offset)),
            None => Some((requested_epoch, higher_entry.start_offset)),
        }
    }

    /// The leader's check of a follower's fetch position, exactly as Kafka's
    /// `Partition.validateFetchOffsetAndEpoch`: the follower's log ends at `fetch_offset` and its
    /// last record has epoch `last_fetched_epoch` (`None` for an empty follower log). It
    /// diverges if this log's end for that epoch is before `fetch_offset`, or if this log has
    /// no such epoch (the largest one ≤ it is older).
    ///
    /// A follower ahead of this log in the same epoch diverges too (its tail past this log's
    /// end goes). `OffsetOutOfRange` if an empty follower's fetch offset is past this log's
    /// end, or if the follower claims an epoch newer than any here (it cannot have come from a
    /// leader this one succeeded).
    pub fn check_fetch(
        &self,
        fetch_offset: u64,
        last_fetched_epoch: Option<u32>,
        log_start_offset: u64,
        log_end_offset: u64,
    ) -> Result<FetchEpochCheck, ReplicationError> {
        let out_of_range = ReplicationError::OffsetOutOfRange {
            offset: fetch_offset,
            log_start_offset,
            log_end_offset,
        };
        let Some(last_fetched_epoch) = last_fetched_epoch else {
            return if fetch_offset <= log_end_offset {
                Ok(FetchEpochCheck::Valid)
            } else {
                Err(out_of_range)
            };
        };
        let Some((epoch, end_offset)) =
            self.end_offset_for_epoch(last_fetched_epoch, log_end_offset)
        else {
            return Err(out_of_range);
        };
        if end_offset < fetch_offset || epoch < last_fetched_epoch {
            return Ok(FetchEpochCheck::Diverging { epoch, end_offset });
        }
        if fetch_offset > log_end_offset {
            return Err(out_of_range);
        }
        Ok(FetchEpochCheck::Valid)
    }

    /// The checkpoint text, Kafka's `leader-epoch-checkpoint` layout:
    ///
    /// ```text
    /// 0            <- format version
    /// 2            <- number of entries
    /// 0 0          <- "epoch start_offset", oldest first
    /// 3 120
    /// ```
    ///
    /// Every line ends with `\n`. The caller writes it atomically (write a temporary file, sync,
    /// rename) through the storage crate.
    pub fn encode_checkpoint(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(text, "{CHECKPOINT_VERSION}");
        let _ = writeln!(text, "{}", self.entries.len());
        for entry in &self.entries {
            let _ = writeln!(text, "{} {}", entry.epoch, entry.start_offset);
        }
        text
    }

    /// Parses a checkpoint written by [`Self::encode_checkpoint`]. Strict: the version, the
    /// count, exactly that many entries with strictly increasing epochs and start offsets, every
    /// line ending in `\n`, nothing after. Never panics on arbitrary bytes.
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<Self, ReplicationError> {
        let fault =
            |line: usize, reason: &'static str| ReplicationError::EpochCheckpoint { line, reason };
        let text = std::str::from_utf8(bytes).map_err(|_| fault(1, "not UTF-8"))?;
        let Some(body) = text.strip_suffix('\n') else {
            return Err(fault(1, "missing final newline"));
        };
        let mut lines = body.split('\n');
        let version: u32 = lines
            .next()
            .and_then(|line| line.parse().ok())
            .ok_or(fault(1, "bad version"))?;
        if version != CHECKPOINT_VERSION {
            return Err(fault(1, "unsupported version"));
        }
        let count: usize = lines
            .next()
            .and_then(|line| line.parse().ok())
            .ok_or(fault(2, "bad entry count"))?;
        // `count` is untrusted: no allocation from it; the entries grow as they are read.
        let mut cache = Self::new();
        for index in 0..count {
            let line_number = index + 3;
            let line = lines
                .next()
                .ok_or(fault(line_number, "fewer entries than the count"))?;
            let (epoch, start_offset) = line
                .split_once(' ')
                .ok_or(fault(line_number, "expected \"epoch start_offset\""))?;
            let entry = EpochEntry {
                epoch: epoch.parse().map_err(|_| fault(line_number, "bad epoch"))?,
                start_offset: start_offset
                    .parse()
                    .map_err(|_| fault(line_number, "bad start offset"))?,
            };
            if let Some(previous) = cache.latest() {
                if entry.epoch <= previous.epoch || entry.start_offset <= previous.start_offset {
                    return Err(fault(line_number, "entries not strictly increasing"));
                }
            }
            cache.entries.push(entry);
        }
        if lines.next().is_some() {
            return Err(fault(count + 3, "more entries than the count"));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cache(entries: &[(u32, u64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for &(epoch, start) in entries {
            cache.assign(epoch, start).expect("increasing epochs");
        }
        cache
    }

    /// KIP-279's definition, case by case, with epochs 1 @ 0, 3 @ 10, 6 @ 20 and log end 25.
    #[test]
    fn end_offset_for_epoch_follows_kip_279() {
        let cache = cache(&[(1, 0), (3, 10), (6, 20)]);
        assert_eq!(
            cache.end_offset_for_epoch(6, 25),
            Some((6, 25)),
            "latest: log end"
        );
        assert_eq!(
            cache.end_offset_for_epoch(3, 25),
            Some((3, 20)),
            "exact: next start"
        );
        assert_eq!(
            cache.end_offset_for_epoch(4, 25),
            Some((3, 20)),
            "gap: floor epoch"
        );
        assert_eq!(cache.end_offset_for_epoch(1, 25), Some((1, 10)));
        assert_eq!(
            cache.end_offset_for_epoch(0, 25),
            Some((0, 0)),
            "before all: first start"
        );
        assert_eq!(
            cache.end_offset_for_epoch(7, 25),
            None,
            "newer than all: undefined"
        );
        assert_eq!(LeaderEpochCache::new().end_offset_for_epoch(0, 0), None);
    }

    #[test]
    fn assign_ignores_the_same_epoch_refuses_an_older_one_and_drops_overlapped_entries() {
        let mut cache = cache(&[(1, 0), (2, 10)]);
        cache.assign(2, 15).expect("same epoch");
        assert_eq!(
            cache.latest(),
            Some(EpochEntry {
                epoch: 2,
                start_offset: 10
            })
        );
        assert!(matches!(
            cache.assign(1, 20),
            Err(ReplicationError::EpochOutOfOrder {
                epoch: 1,
                latest: 2,
                ..
            })
        ));
        // Epoch 5 starting at 10 means epoch 2 (starting at 10) wrote nothing that survived.
        cache.assign(5, 10).expect("newer epoch");
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 10
                }
            ]
        );
    }

    #[test]
    fn truncation_from_either_end() {
        let mut from_end = cache(&[(1, 0), (3, 10), (6, 20)]);
        from_end.truncate_from_end(20);
        assert_eq!(from_end.latest_epoch(), Some(3));
        from_end.truncate_from_end(11);
        assert_eq!(
            from_end.latest_epoch(),
            Some(3),
            "epoch 3 still has offset 10"
        );

        let mut from_start = cache(&[(1, 0), (3, 10), (6, 20)]);
        from_start.truncate_from_start(15);
        assert_eq!(
            from_start.entries(),
            &[
                EpochEntry {
                    epoch: 3,
                    start_offset: 15
                },
                EpochEntry {
                    epoch: 6,
                    start_offset: 20
                }
            ]
        );
        from_start.truncate_from_start(20);
        assert_eq!(
            from_start.entries(),
            &[EpochEntry {
                epoch: 6,
                start_offset: 20
            }]
        );
        from_start.truncate_from_start(5);
        assert_eq!(
            from_start.entries(),
            &[EpochEntry {
                epoch: 6,
                start_offset: 20
            }]
        );
    }

    /// The KIP-101 scenario: the follower wrote offsets 5..8 in epoch 1 as a leader that lost
    /// them; the new leader wrote 5..12 in epoch 2. The follower is told epoch 1 ends at 5.
    #[test]
    fn check_fetch_reports_divergence_of_a_stale_tail() {
        let leader = cache(&[(1, 0), (2, 5)]);
        assert_eq!(
            leader.check_fetch(8, Some(1), 0, 12),
            Ok(FetchEpochCheck::Diverging {
                epoch: 1,
                end_offset: 5
            })
        );
        assert_eq!(
            leader.check_fetch(5, Some(1), 0, 12),
            Ok(FetchEpochCheck::Valid)
        );
        assert_eq!(
            leader.check_fetch(9, Some(2), 0, 12),
            Ok(FetchEpochCheck::Valid)
        );
        assert_eq!(
            leader.check_fetch(0, None, 0, 12),
            Ok(FetchEpochCheck::Valid)
        );
        // Ahead of the leader in the same epoch: the tail past the leader's end goes.
        assert_eq!(
            leader.check_fetch(13, Some(2), 0, 12),
            Ok(FetchEpochCheck::Diverging {
                epoch: 2,
                end_offset: 12
            })
        );
        assert!(matches!(
            leader.check_fetch(13, None, 0, 12),
            Err(ReplicationError::OffsetOutOfRange { offset: 13, .. })
        ));
        assert!(matches!(
            leader.check_fetch(3, Some(9), 0, 12),
            Err(ReplicationError::OffsetOutOfRange { .. })
        ));
        // A follower whose last epoch (4) never wrote here: the leader's floor is epoch 2.
        let leader = cache(&[(1, 0), (2, 5), (7, 9)]);
        assert_eq!(
            leader.check_fetch(8, Some(4), 0, 12),
            Ok(FetchEpochCheck::Diverging {
                epoch: 2,
                end_offset: 9
            })
        );
    }

    #[test]
    fn checkpoint_text_is_kafkas_layout() {
        let cache = cache(&[(0, 0), (3, 120)]);
        assert_eq!(cache.encode_checkpoint(), "0\n2\n0 0\n3 120\n");
        assert_eq!(LeaderEpochCache::new().encode_checkpoint(), "0\n0\n");
    }

    #[test]
    fn checkpoint_decode_refuses_damaged_text() {
        for (text, line) in [
            (&b"0\n2\n0 0\n3 120"[..], 1),
            (b"1\n0\n", 1),
            (b"0\nx\n", 2),
            (b"0\n2\n0 0\n", 4),
            (b"0\n1\n0 0\n3 120\n", 4),
            (b"0\n2\n3 0\n1 120\n", 4),
            (b"0\n2\n0 5\n1 5\n", 4),
            (b"0\n1\n0\n", 3),
            (b"0\n1\n0 -1\n", 3),
            (b"\xff\n", 1),
        ] {
            match LeaderEpochCache::decode_checkpoint(text) {
                Err(ReplicationError::EpochCheckpoint { line: got, .. }) => {
                    assert_eq!(got, line, "{:?}", String::from_utf8_lossy(text))
                }
                other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    fn arbitrary_cache() -> impl Strategy<Value = LeaderEpochCache> {
        proptest::collection::vec((1u32..1000, 1u64..1_000_000), 0..20).prop_map(|steps| {
            let mut cache = LeaderEpochCache::new();
            let (mut epoch, mut offset) = (0u32, 0u64);
            for (epoch_step, offset_step) in steps {
                epoch += epoch_step;
                offset += offset_step;
                cache.assign(epoch, offset).expect("increasing");
            }
            cache
        })
    }

    proptest! {
        #[test]
        fn checkpoint_round_trips(cache in arbitrary_cache()) {
            let text = cache.encode_checkpoint();
            prop_assert_eq!(LeaderEpochCache::decode_checkpoint(text.as_bytes()), Ok(cache));
        }

        #[test]
        fn checkpoint_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LeaderEpochCache::decode_checkpoint(&bytes);
        }

        /// Every cut of a valid checkpoint is refused or decodes to a valid cache (a cut at a
        /// line end with a smaller count cannot exist: the count comes first).
        #[test]
        fn checkpoint_cuts_are_refused(cache in arbitrary_cache(), cut in any::<prop::sample::Index>()) {
            let text = cache.encode_checkpoint();
            let cut = cut.index(text.len());
            prop_assert!(LeaderEpochCache::decode_checkpoint(&text.as_bytes()[..cut]).is_err());
        }

        /// `end_offset_for_epoch` against its definition, computed by brute force.
        #[test]
        fn end_offset_for_epoch_matches_brute_force(
            cache in arbitrary_cache(),
            requested in 0u32..20_000,
            log_end_extra in 0u64..1000,
        ) {
            let entries = cache.entries();
            let log_end = entries.last().map_or(0, |entry| entry.start_offset) + log_end_extra;
            let expected = match entries.last() {
                None => None,
                Some(latest) if requested == latest.epoch => Some((requested, log_end)),
                Some(latest) if requested > latest.epoch => None,
                Some(_) => {
                    let next = entries.iter().find(|entry| entry.epoch > requested).map(|entry| entry.start_offset);
                    let floor = entries.iter().rev().find(|entry| entry.epoch <= requested).map(|entry| entry.epoch);
                    next.map(|next| (floor.unwrap_or(requested), next))
                }
            };
            prop_assert_eq!(cache.end_offset_for_epoch(requested, log_end), expected);
        }
    }
}
