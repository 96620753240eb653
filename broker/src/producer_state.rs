//! Idempotent producers: per partition, the last few batches of every producer id, so a retried
//! batch (its acknowledgement was lost) is answered with its original offsets instead of being
//! written twice, and a gap in a producer's sequence numbers is refused.
//!
//! The state lives with the partition on its owner shard. After a restart it is rebuilt by
//! reading the batch headers of the log (only headers: producer id, epoch, sequences, offsets).

use std::collections::{HashMap, VecDeque};

use wire::batch::BatchHeader;
use wire::protocol::{ErrorCode, WireError};

/// Batches remembered per producer and partition: a producer with at most this many requests
/// in flight per partition can have every one of them retried and deduplicated.
pub const IDEMPOTENCE_WINDOW: usize = 5;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Appended {
    first_sequence: i32,
    last_sequence: i32,
    /// `None` while its append is in progress.
    offsets: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Appended>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not idempotent, or the next in sequence: append it.
    Append,
    /// Already appended at these offsets: answer without writing.
    Duplicate {
        /// Its base offset.
        base_offset: u64,
        /// Its last offset.
        last_offset: u64,
    },
}

/// Producer states of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0, as in Kafka.
    let span = header.record_count.saturating_sub(1) as i64;
    ((i64::from(header.base_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStates {
    /// Decides about a batch before it is appended and, for an `Append`, reserves its place so
    /// a retry racing it is told to wait. Call [`ProducerStates::appended`] or
    /// [`ProducerStates::abandoned`] afterwards.
    pub fn check(&mut self, header: &BatchHeader) -> Result<Verdict, WireError> {
        if header.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let first_sequence = header.base_sequence;
        if first_sequence < 0 {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "producer {} sent a batch without a sequence number",
                    header.producer_id
                ),
            ));
        }
        let last = last_sequence(header);
        let producer = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch < producer.epoch {
            return Err(WireError::new(
                ErrorCode::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} is older than {}: a newer instance took over",
                    header.producer_id, header.producer_epoch, producer.epoch
                ),
            ));
        }
        if header.producer_epoch > producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.recent.clear();
        }
        if let Some(known) = producer
            .recent
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last)
        {
            return match known.offsets {
                Some((base_offset, last_offset)) => Ok(Verdict::Duplicate {
                    base_offset,
                    last_offset,
                }),
                None => Err(WireError::new(
                    ErrorCode::DuplicateInFlight,
                    "this batch is being appended right now; retry for its offsets",
                )),
            };
        }
        if let Some(previous) = producer.recent.back() {
            let expected = next_sequence(previous.last_sequence);
            if first_sequence != expected {
                return Err(WireError::new(
                    ErrorCode::OutOfOrderSequence,
                    format!(
                        "producer {} sent sequence {first_sequence} where {expected} was expected",
                        header.producer_id
                    ),
                ));
            }
        }
        producer.recent.push_back(Appended {
            first_sequence,
            last_sequence: last,
            offsets: None,
        });
        if producer.recent.len() > IDEMPOTENCE_WINDOW {
            producer.recent.pop_front();
        }
        Ok(Verdict::Append)
    }

    /// Records the offsets a reserved batch got.
    pub fn appended(&mut self, header: &BatchHeader, base_offset: u64, last_offset: u64) {
        if header.producer_id < 0 {
            return;
        }
        let last = last_sequence(header);
        if let Some(producer) = self.producers.get_mut(&header.producer_id) {
            if let Some(batch) = producer
                .recent
                .iter_mut()
                .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last)
            {
                batch.offsets = Some((base_offset, last_offset));
            }
        }
    }

    /// Forgets a reservation whose append failed, so the producer's retry is accepted.
    pub fn abandoned(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        if let Some(producer) = self.producers.get_mut(&header.producer_id) {
            producer
                .recent
                .retain(|b| !(b.first_sequence == header.base_sequence && b.offsets.is_none()));
        }
    }

    /// Replays a batch read back from the log (rebuilding the state after a restart).
    pub fn replay(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return;
        }
        let producer = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch > producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.recent.clear();
        }
        producer.recent.push_back(Appended {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            offsets: Some((header.base_offset, header.last_offset())),
        });
        if producer.recent.len() > IDEMPOTENCE_WINDOW {
            producer.recent.pop_front();
        }
    }

    /// Number of producers tracked.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: u32,
        base_offset: u64,
    ) -> BatchHeader {
        BatchHeader {
            batch_length: 128,
            base_offset,
            crc: 0,
            attributes: 0,
            producer_epoch: epoch,
            last_offset_delta: records - 1,
            record_count: records,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id,
            base_sequence,
            records_length: 8,
        }
    }

    /// In-order batches are appended, a retry of any of the last five gets its offsets back,
    /// a gap is refused, and an older epoch is fenced.
    #[test]
    fn sequences_deduplicate_and_refuse_gaps() {
        let mut states = ProducerStates::default();
        let mut offset = 0;
        for i in 0..6 {
            let batch = header(7, 0, i * 3, 3, offset);
            assert_eq!(states.check(&batch).unwrap(), Verdict::Append);
            states.appended(&batch, offset, offset + 2);
            offset += 3;
        }
        // Batch 5 (sequences 15..=17) was at offsets 15..=17; batch 0 fell out of the window.
        assert_eq!(
            states.check(&header(7, 0, 15, 3, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 15,
                last_offset: 17
            }
        );
        assert_eq!(
            states.check(&header(7, 0, 3, 3, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 3,
                last_offset: 5
            }
        );
        assert_eq!(
            states.check(&header(7, 0, 0, 3, 0)).unwrap_err().code,
            ErrorCode::OutOfOrderSequence
        );
        assert_eq!(
            states.check(&header(7, 0, 21, 1, 0)).unwrap_err().code,
            ErrorCode::OutOfOrderSequence
        );
        // A newer epoch starts over; the old one is fenced from then on.
        assert_eq!(
            states.check(&header(7, 1, 0, 1, 0)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            states.check(&header(7, 0, 18, 1, 0)).unwrap_err().code,
            ErrorCode::InvalidProducerEpoch
        );
        // Non-idempotent batches are always appended.
        assert_eq!(
            states.check(&header(-1, -1, -1, 1, 0)).unwrap(),
            Verdict::Append
        );
    }

    /// A retry racing its original is told to retry; a failed append frees the reservation.
    #[test]
    fn in_flight_duplicates_and_abandoned_appends() {
        let mut states = ProducerStates::default();
        let batch = header(1, 0, 0, 2, 0);
        assert_eq!(states.check(&batch).unwrap(), Verdict::Append);
        assert_eq!(
            states.check(&batch).unwrap_err().code,
            ErrorCode::DuplicateInFlight
        );
        states.abandoned(&batch);
        assert_eq!(states.check(&batch).unwrap(), Verdict::Append);
        states.appended(&batch, 10, 11);
        assert_eq!(
            states.check(&batch).unwrap(),
            Verdict::Duplicate {
                base_offset: 10,
                last_offset: 11
            }
        );
    }

    /// Replaying the log rebuilds the same answers.
    #[test]
    fn replay_rebuilds_state() {
        let mut states = ProducerStates::default();
        for i in 0..3u64 {
            states.replay(&header(9, 2, (i * 2) as i32, 2, 100 + i * 2));
        }
        assert_eq!(states.producer_count(), 1);
        assert_eq!(
            states.check(&header(9, 2, 2, 2, 0)).unwrap(),
            Verdict::Duplicate {
                base_offset: 102,
                last_offset: 103
            }
        );
        assert_eq!(
            states.check(&header(9, 2, 6, 1, 0)).unwrap(),
            Verdict::Append
        );
    }
}
