//! The producer's per-partition accumulators: records become [`BatchBuilder`] batches, cut by
//! size or by linger, and wait in a per-partition queue until the sender task sends them.
//!
//! ```text
//!  append ─▶ open batch (BatchBuilder) ──cut: size reached, linger over, flush──▶ ready queue
//!                                                                                    │ drain
//!                         in flight (≤ max_in_flight per partition) ◀───────────────┘
//!                              │ answered: complete / fail / retry (back to the queue front)
//! ```
//!
//! Cutting rules (the batch size / linger dial of DESIGN.md):
//! * a record that would take the open batch past `batch_size_bytes` (estimated with the
//!   builder's upper bound, so the built batch never exceeds it) first cuts the open batch; a
//!   batch whose estimate reaches `batch_size_bytes` is cut at once;
//! * except while the partition's window is full (`max_in_flight` batches in flight or ready):
//!   then no cut batch could leave anyway, so the open batch keeps growing, up to
//!   [`BLOCKED_BATCH_BYTES_MAX`] (or the topic's limit), and leaves whole when a slot frees.
//!   The bytes in flight thus follow the acknowledgement latency: with an fsync before every
//!   acknowledgement, each request carries what arrived during the previous ones, instead of
//!   `max_in_flight` fixed-size batches capping the pipeline while the producer waits for
//!   buffer room;
//! * with `linger > 0`, an open batch is cut once it is `linger` old and the partition has a
//!   free in-flight slot (until then it keeps growing);
//! * with `linger == 0`, an open batch is cut as soon as nothing is in flight for its
//!   partition: the first record goes out at once, and records arriving while a request is in
//!   flight are batched behind it;
//! * `flush` cuts every open batch as soon as a slot is free.
//!
//! Pure data structure with an explicit clock, owned by the producer's sender task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use wire::{AlignedVec, ArchivedRecord, ArchivedRecordHeader, BatchBuilder};

use crate::batch_send::{BatchMetadata, BatchReply};
use crate::error::ClientError;
use crate::producer::RecordMetadata;

/// Where a record's outcome is delivered.
pub(crate) type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

/// Largest open batch while its partition's window is full (see the module doc), unless
/// `batch_size_bytes` is larger. 4 MiB is about 4 ms of writing at 1 GB/s, the order of one
/// fsync on the disks this runs on, so one such batch keeps a synced partition's disk busy for
/// one acknowledgement's latency; four of them fit in a quarter of `FRAME_SIZE_MAX` (64 MiB),
/// and the producer buffer (`max_buffered_bytes`) bounds the memory they hold anyway.
pub(crate) const BLOCKED_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Upper bound on the alignment padding rkyv inserts after one out-of-line object; mirrors
/// the slack of `BatchBuilder::estimated_size`.
const ARCHIVE_SLACK: usize = 8;

/// Upper bound on the bytes a record adds to a batch: the same arithmetic as
/// `BatchBuilder::estimated_size`, so `estimated_size() + record_size_upper_bound(..)` bounds
/// the estimate after pushing the record.
pub(crate) fn record_size_upper_bound(
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(String, Vec<u8>)],
    tags: &[String],
) -> usize {
    let blob = |len: usize| len + ARCHIVE_SLACK;
    let mut size = std::mem::size_of::<ArchivedRecord>() + ARCHIVE_SLACK;
    if let Some(key) = key {
        size += blob(key.len());
    }
    size += blob(value.len());
    size += blob(headers.len() * std::mem::size_of::<ArchivedRecordHeader>());
    for (name, value) in headers {
        size += blob(name.len()) + blob(value.len());
    }
    if !tags.is_empty() {
        size += blob(tags.len() * std::mem::size_of::<rkyv::string::ArchivedString>());
        for tag in tags {
            size += blob(tag.len());
        }
    }
    size
}

/// Estimated size of a batch with no record yet. Computed once (a builder allocates its
/// header), since `send` needs it for every record.
pub(crate) fn empty_batch_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| BatchBuilder::new().estimated_size())
}

/// The cutting parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccumulatorConfig {
    /// Cut a batch when its estimated size reaches this.
    pub batch_size_bytes: usize,
    /// How long a batch may wait for more records.
    pub linger: Duration,
    /// Most batches of one partition in flight at once.
    pub max_in_flight: usize,
    /// Batches are stamped by the idempotent producer before they leave, which computes their
    /// CRC: they are built without one (`BatchBuilder::defer_crc_to_stamp`).
    pub crc_by_stamp: bool,
}

/// One record to append, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordData<'a> {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Application headers.
    pub headers: &'a [(String, Vec<u8>)],
    /// Tags (empty: none).
    pub tags: &'a [String],
}

/// A cut batch: built once, then sent (and re-sent on retry) as these exact bytes.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// The encoded batch, 16-aligned.
    pub bytes: AlignedVec<16>,
    /// Who learns the outcome.
    pub completion: Completion,
    /// Producer-buffer bytes held by these records, released when the batch completes.
    pub reserved_bytes: usize,
    /// Sequence number of the batch's first record (for `flush`).
    pub min_seq: u64,
    /// Sends attempted so far.
    pub attempts: u32,
    /// Stamped for idempotence (producer id, epoch, sequence) when first sent.
    pub stamped: bool,
}

/// Who learns a batch's outcome.
#[derive(Debug)]
pub(crate) enum Completion {
    /// A batch built here from `send` records: one reply per record, in record order.
    Records(Vec<Reply>),
    /// A batch built by the caller of `send_batch`: one reply for the whole batch.
    Batch {
        /// The caller's `BatchDelivery`.
        reply: BatchReply,
        /// Records in the batch.
        record_count: u32,
    },
}

impl ProducerBatch {
    /// Records in the batch.
    pub fn record_count(&self) -> usize {
        match &self.completion {
            Completion::Records(replies) => replies.len(),
            Completion::Batch { record_count, .. } => *record_count as usize,
        }
    }

    /// Whether the caller of `send_batch` built it (its buffer goes back to that pool).
    pub fn prebuilt(&self) -> bool {
        matches!(self.completion, Completion::Batch { .. })
    }

    /// Resolves every record: offsets `base_offset + index`, or `None` for `acks = 0`.
    /// Returns the batch's buffer, for reuse.
    pub fn complete(self, base_offset: Option<u64>) -> AlignedVec<16> {
        // The caller may have dropped its future; that only means nobody is listening.
        match self.completion {
            Completion::Records(replies) => {
                for (index, reply) in replies.into_iter().enumerate() {
                    let metadata = RecordMetadata {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: base_offset.map(|base| base + index as u64),
                    };
                    let _ = reply.send(Ok(metadata));
                }
            }
            Completion::Batch {
                reply,
                record_count,
            } => {
                let _ = reply.send(Ok(BatchMetadata {
                    topic: self.topic,
                    partition: self.partition,
                    base_offset,
                    record_count,
                }));
            }
        }
        self.bytes
    }

    /// Fails every record with `error`. Returns the batch's buffer, for reuse.
    pub fn fail(self, error: &ClientError) -> AlignedVec<16> {
        match self.completion {
            Completion::Records(replies) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Completion::Batch { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.bytes
    }
}

/// The batch being filled for one partition.
#[derive(Debug)]
struct OpenBatch {
    created: Instant,
    replies: Vec<Reply>,
    reserved_bytes: usize,
    min_seq: u64,
    min_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    /// Reused across batches: it keeps its record table's capacity, and the buffers of
    /// completed batches come back to it ([`Accumulator::recycle`]), so a partition in steady
    /// state allocates nothing per batch or per record.
    builder: BatchBuilder,
    open: Option<OpenBatch>,
    ready: VecDeque<ProducerBatch>,
    /// `min_seq` of each batch in flight, in send order; at most `max_in_flight` entries
    /// (its capacity is kept, so sending allocates nothing in steady state).
    in_flight: VecDeque<u64>,
    /// Retry backoff: nothing of this partition is sent before this instant.
    retry_at: Option<Instant>,
    /// The leader epoch the retried batch failed against, when known: a newer leader in the
    /// metadata ends the backoff at once ([`Accumulator::end_backoffs_of_moved_leaders`]).
    retry_epoch: Option<u32>,
}

impl PartitionQueue {
    /// A retried batch heads the queue while batches are still out: it waits until every one
    /// of them has come back, so that it cannot reach the broker after a later batch of the
    /// partition, or while an earlier one is still on its way (possibly to an old leader's
    /// endpoint, or on a connection that failed before writing it).
    fn retry_waits(&self) -> bool {
        !self.in_flight.is_empty() && self.ready.front().is_some_and(|batch| batch.attempts > 0)
    }
}

/// What the accumulator knows about incomplete records, apart from the queues.
#[derive(Debug, Default)]
struct Ledger {
    /// Multiset of the `min_seq` of every batch not yet completed (open, ready, in flight):
    /// every record with a sequence number below its first key is complete.
    incomplete: BTreeMap<u64, u32>,
    /// Bytes of records failed inside the accumulator, to release from the producer buffer.
    released_bytes: usize,
}

impl Ledger {
    fn track(&mut self, seq: u64) {
        *self.incomplete.entry(seq).or_insert(0) += 1;
    }

    fn untrack(&mut self, seq: u64) {
        if let Some(count) = self.incomplete.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                self.incomplete.remove(&seq);
            }
        }
    }
}

/// All partitions' queues.
#[derive(Debug)]
pub(crate) struct Accumulator {
    config: AccumulatorConfig,
    /// Every partition's queue, never removed (a producer writes to a bounded set of
    /// partitions), so a queue's index stays valid.
    queues: Vec<PartitionQueue>,
    /// Queue index of each partition, with the topic and partition of each queue.
    index: HashMap<(Arc<str>, u32), usize>,
    /// The queue `append` used last: consecutive records of one partition (the common case)
    /// find it with a pointer comparison instead of hashing the topic name.
    last_queue: Option<(Arc<str>, u32, usize)>,
    ledger: Ledger,
    /// Cut every open batch as soon as it can be sent (a flush is waiting).
    pub flushing: bool,
    /// Send only batches already sent once (retries), none for the first time: set by the
    /// idempotent producer while it waits for its stamped batches to complete before it
    /// bumps its epoch.
    pub hold_new: bool,
}

impl Accumulator {
    /// An empty accumulator.
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            queues: Vec::new(),
            index: HashMap::new(),
            last_queue: None,
            ledger: Ledger::default(),
            flushing: false,
            hold_new: false,
        }
    }

    /// Smallest sequence number of a record not yet complete, if any.
    pub fn min_incomplete(&self) -> Option<u64> {
        self.ledger.incomplete.keys().next().copied()
    }

    /// True when no batch is open, queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.ledger.incomplete.is_empty()
    }

    /// Producer-buffer bytes of records failed here since the last call.
    pub fn take_released_bytes(&mut self) -> usize {
        std::mem::take(&mut self.ledger.released_bytes)
    }

    /// Index of `topic`/`partition`'s queue, created if needed.
    fn queue_index(&mut self, topic: &Arc<str>, partition: u32) -> usize {
        if let Some((last_topic, last_partition, index)) = &self.last_queue {
            if *last_partition == partition && Arc::ptr_eq(last_topic, topic) {
                return *index;
            }
        }
        let next = self.queues.len();
        let index = *self.index.entry((topic.clone(), partition)).or_insert(next);
        if index == next {
            let mut queue = PartitionQueue::default();
            queue.builder.defer_crc_to_stamp(self.config.crc_by_stamp);
            self.queues.push(queue);
        }
        self.last_queue = Some((topic.clone(), partition, index));
        index
    }

    /// Ends the retry backoff of every partition whose leader changed since its batch failed
    /// (`epoch_of` gives the leader epoch the metadata now names): the batch goes to the new
    /// leader at once instead of sleeping out a backoff meant for a leader that is gone
    /// (Kafka's KIP-951). Returns true while some partition still backs off against the
    /// leader it failed on, so the caller keeps refreshing the metadata until it moves.
    pub fn end_backoffs_of_moved_leaders(
        &mut self,
        epoch_of: impl Fn(&str, u32) -> Option<u32>,
    ) -> bool {
        let mut waiting = false;
        for ((topic, partition), &index) in &self.index {
            let queue = &mut self.queues[index];
            let (Some(_), Some(failed)) = (queue.retry_at, queue.retry_epoch) else {
                continue;
            };
            if epoch_of(topic, *partition).is_some_and(|now| now > failed) {
                queue.retry_at = None;
                queue.retry_epoch = None;
            } else {
                waiting = true;
            }
        }
        waiting
    }

    /// The queue of `topic`/`partition`, if it exists.
    fn queue_mut(&mut self, topic: &Arc<str>, partition: u32) -> Option<&mut PartitionQueue> {
        let index = *self.index.get(&(topic.clone(), partition))?;
        self.queues.get_mut(index)
    }

    /// Gives the buffer of a completed batch back to its partition's builder, for a later
    /// batch.
    pub fn recycle(&mut self, topic: &Arc<str>, partition: u32, bytes: AlignedVec<16>) {
        if let Some(queue) = self.queue_mut(topic, partition) {
            queue.builder.recycle(bytes);
        }
    }

    /// Appends a record to `topic`/`partition`'s open batch. `batch_limit_bytes` is the
    /// largest batch the topic accepts (the caller has checked that the record alone fits).
    /// Returns true when a batch of this partition was cut (size reached).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        record: RecordData<'_>,
        reply: Reply,
        reserved_bytes: usize,
        seq: u64,
        batch_limit_bytes: usize,
        now: Instant,
    ) -> bool {
        let size = record_size_upper_bound(record.key, record.value, record.headers, record.tags);
        let mut cut = false;
        let index = self.queue_index(topic, partition);
        let ledger = &mut self.ledger;
        let queue = &mut self.queues[index];
        let window_full = queue.in_flight.len() + queue.ready.len() >= self.config.max_in_flight;
        let limit = if window_full {
            self.config.batch_size_bytes.max(BLOCKED_BATCH_BYTES_MAX)
        } else {
            self.config.batch_size_bytes
        }
        .min(batch_limit_bytes);
        if let Some(open) = &queue.open {
            let span_ms = i128::from(open.max_timestamp_ms.max(record.timestamp_ms))
                - i128::from(open.min_timestamp_ms.min(record.timestamp_ms));
            if queue.builder.estimated_size() + size > limit || span_ms > i128::from(u32::MAX) {
                cut_open(ledger, topic, partition, queue);
                cut = true;
            }
        }
        if queue.open.is_none() {
            ledger.track(seq);
            queue.open = Some(OpenBatch {
                created: now,
                replies: Vec::new(),
                reserved_bytes: 0,
                min_seq: seq,
                min_timestamp_ms: record.timestamp_ms,
                max_timestamp_ms: record.timestamp_ms,
            });
        }
        queue.builder.push_parts(
            record.timestamp_ms,
            record.key,
            record.value,
            record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
            (!record.tags.is_empty()).then(|| record.tags.iter().map(String::as_str)),
        );
        if let Some(open) = &mut queue.open {
            open.replies.push(reply);
            open.reserved_bytes += reserved_bytes;
            open.min_timestamp_ms = open.min_timestamp_ms.min(record.timestamp_ms);
            open.max_timestamp_ms = open.max_timestamp_ms.max(record.timestamp_ms);
        }
        if queue.builder.estimated_size() >= limit {
            cut_open(ledger, topic, partition, queue);
            cut = true;
        }
        cut
    }

    /// Queues a batch the caller of `send_batch` built, behind the partition's open batch
    /// (cut first, so the partition's records stay in call order).
    #[allow(clippy::too_many_arguments)]
    pub fn append_built(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        bytes: AlignedVec<16>,
        reply: BatchReply,
        record_count: u32,
        reserved_bytes: usize,
        seq: u64,
    ) {
        let index = self.queue_index(topic, partition);
        let queue = &mut self.queues[index];
        cut_open(&mut self.ledger, topic, partition, queue);
        self.ledger.track(seq);
        queue.ready.push_back(ProducerBatch {
            topic: topic.clone(),
            partition,
            bytes,
            completion: Completion::Batch {
                reply,
                record_count,
            },
            reserved_bytes,
            min_seq: seq,
            attempts: 0,
            stamped: false,
        });
    }

    /// Cuts the batches that are due and takes every batch that may be sent now, marking them
    /// in flight.
    pub fn drain(&mut self, now: Instant) -> Vec<ProducerBatch> {
        let mut out = Vec::new();
        let config = self.config;
        let flushing = self.flushing;
        for ((topic, partition), &index) in &self.index {
            let queue = &mut self.queues[index];
            if queue.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            queue.retry_at = None;
            if let Some(open) = &queue.open {
                let slot_free =
                    queue.in_flight.len() < config.max_in_flight && queue.ready.is_empty();
                // Grown past the batch size while the window was full: goes at the next slot.
                let full = queue.builder.estimated_size() >= config.batch_size_bytes;
                let due = slot_free
                    && (flushing
                        || full
                        || if config.linger.is_zero() {
                            queue.in_flight.is_empty()
                        } else {
                            now >= open.created + config.linger
                        });
                if due {
                    cut_open(&mut self.ledger, topic, *partition, queue);
                }
            }
            if queue.retry_waits() {
                continue;
            }
            while queue.in_flight.len() < config.max_in_flight {
                if self.hold_new && queue.ready.front().is_some_and(|b| b.attempts == 0) {
                    break;
                }
                let Some(batch) = queue.ready.pop_front() else {
                    break;
                };
                queue.in_flight.push_back(batch.min_seq);
                out.push(batch);
            }
        }
        out
    }

    /// When `drain` may next have something to do on its own (a linger or a retry backoff
    /// ending); `None` if only an event (append, completion) can make progress.
    pub fn next_deadline(&self) -> Option<Instant> {
        let config = self.config;
        self.queues
            .iter()
            .filter_map(|queue| {
                if let Some(at) = queue.retry_at {
                    let has_work = queue.open.is_some() || !queue.ready.is_empty();
                    return has_work.then_some(at);
                }
                let open = queue.open.as_ref()?;
                let sendable =
                    queue.in_flight.len() < config.max_in_flight && queue.ready.is_empty();
                (sendable && !config.linger.is_zero()).then_some(open.created + config.linger)
            })
            .min()
    }

    /// True when every partition with records waiting (an open or a ready batch) has a batch
    /// in flight, whose answer will make it look again (see the producer's lazy intake).
    pub fn every_loaded_partition_in_flight(&self) -> bool {
        self.queues.iter().all(|queue| {
            !queue.in_flight.is_empty() || (queue.open.is_none() && queue.ready.is_empty())
        })
    }

    /// A drained batch came back: its partition has one more free in-flight slot.
    pub fn returned(&mut self, batch: &ProducerBatch) {
        if let Some(queue) = self.queue_mut(&batch.topic, batch.partition) {
            if let Some(at) = queue.in_flight.iter().position(|&seq| seq == batch.min_seq) {
                queue.in_flight.remove(at);
            }
        }
    }

    /// True when a batch of `batch`'s partition enqueued before it is neither acknowledged
    /// nor failed yet (in flight, or waiting to be retried). An idempotent batch refused with
    /// `OutOfOrderSequence` in that state only arrived before its predecessor: it is retried
    /// behind it rather than failed.
    pub fn has_earlier_incomplete(&self, batch: &ProducerBatch) -> bool {
        let Some(&index) = self.index.get(&(batch.topic.clone(), batch.partition)) else {
            return false;
        };
        let queue = &self.queues[index];
        queue.in_flight.iter().any(|&seq| seq < batch.min_seq)
            || queue
                .ready
                .iter()
                .any(|ready| ready.min_seq < batch.min_seq)
    }

    /// A batch is done (acknowledged or failed for good): `flush` no longer waits for it.
    pub fn finished(&mut self, batch: &ProducerBatch) {
        self.ledger.untrack(batch.min_seq);
    }

    /// Puts a batch back in its queue, to be sent again at `retry_at`: before every batch
    /// enqueued after it, so that batches of one partition failing together (a lost
    /// connection fails all those in flight, oldest first) are sent again in send order. The
    /// partition then sends nothing until every batch still in flight has come back (see
    /// `PartitionQueue::retry_waits`).
    ///
    /// `failed_epoch` is the leader epoch the batch failed against, if known: see
    /// [`Accumulator::end_backoffs_of_moved_leaders`].
    pub fn retry(&mut self, batch: ProducerBatch, retry_at: Instant, failed_epoch: Option<u32>) {
        let index = self.queue_index(&batch.topic, batch.partition);
        let queue = &mut self.queues[index];
        queue.retry_at = Some(queue.retry_at.map_or(retry_at, |at| at.max(retry_at)));
        queue.retry_epoch = failed_epoch;
        let at = queue
            .ready
            .iter()
            .position(|ready| ready.min_seq > batch.min_seq)
            .unwrap_or(queue.ready.len());
        queue.ready.insert(at, batch);
    }
}

/// Builds `queue`'s open batch into its ready queue (or fails its records if it cannot be
/// built, which the size and timestamp checks of `append` make unreachable in practice).
fn cut_open(ledger: &mut Ledger, topic: &Arc<str>, partition: u32, queue: &mut PartitionQueue) {
    let Some(open) = queue.open.take() else {
        return;
    };
    match queue.builder.finish() {
        Ok(bytes) => queue.ready.push_back(ProducerBatch {
            topic: topic.clone(),
            partition,
            bytes,
            completion: Completion::Records(open.replies),
            reserved_bytes: open.reserved_bytes,
            min_seq: open.min_seq,
            attempts: 0,
            stamped: false,
        }),
        Err(e) => {
            queue.builder.clear();
            let error = ClientError::Batch(e);
            for reply in open.replies {
                let _ = reply.send(Err(error.clone()));
            }
            ledger.released_bytes += open.reserved_bytes;
            ledger.untrack(open.min_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::limits::BATCH_SIZE_MAX;
    use wire::BatchView;

    fn accumulator(batch_size_bytes: usize, linger_ms: u64) -> Accumulator {
        Accumulator::new(AccumulatorConfig {
            batch_size_bytes,
            linger: Duration::from_millis(linger_ms),
            max_in_flight: 2,
            crc_by_stamp: false,
        })
    }

    fn record(value: &[u8]) -> RecordData<'_> {
        RecordData {
            timestamp_ms: 1_000,
            key: None,
            value,
            headers: &[],
            tags: &[],
        }
    }

    /// Appends one record; returns whether a batch was cut and the record's outcome receiver.
    fn append(
        acc: &mut Accumulator,
        topic: &Arc<str>,
        value: &[u8],
        seq: u64,
        now: Instant,
    ) -> (bool, oneshot::Receiver<Result<RecordMetadata, ClientError>>) {
        let (reply, receiver) = oneshot::channel();
        let cut = acc.append(
            topic,
            0,
            record(value),
            reply,
            value.len(),
            seq,
            BATCH_SIZE_MAX,
            now,
        );
        (cut, receiver)
    }

    /// Batches are cut before they would exceed the batch size, and each cut batch is a valid
    /// batch no larger than it.
    #[test]
    fn cuts_by_size() {
        let topic: Arc<str> = Arc::from("t");
        let batch_size = 4096;
        let mut acc = accumulator(batch_size, 60_000);
        let now = Instant::now();
        let value = [7u8; 300];
        let mut cuts = 0;
        for seq in 0..100 {
            let (cut, _) = append(&mut acc, &topic, &value, seq, now);
            cuts += usize::from(cut);
        }
        // Two batches fill the window (max in flight 2); the rest grows in the open batch.
        assert_eq!(cuts, 2);
        // Linger not over: only the cut batches are ready.
        let batches = acc.drain(now);
        assert_eq!(batches.len(), 2);
        for batch in &batches {
            assert!(batch.bytes.len() <= batch_size);
            let view = BatchView::validate_deep(&batch.bytes, BATCH_SIZE_MAX).unwrap();
            assert_eq!(view.record_count() as usize, batch.record_count());
            assert_eq!(view.records().unwrap()[0].value_bytes(), &value[..]);
        }
        assert_eq!(batches[0].min_seq, 0);
        assert!(acc.drain(now).is_empty());
        // Completing one frees a slot for the next: the grown batch, whole, though its linger
        // is not over.
        let sent_before: usize = batches.iter().map(ProducerBatch::record_count).sum();
        let first = batches.into_iter().next().unwrap();
        acc.returned(&first);
        acc.finished(&first);
        let grown = acc.drain(now);
        assert_eq!(grown.len(), 1);
        assert_eq!(grown[0].record_count(), 100 - sent_before);
        assert!(grown[0].bytes.len() > batch_size);
        assert!(grown[0].bytes.len() <= BLOCKED_BATCH_BYTES_MAX);
        BatchView::validate_deep(&grown[0].bytes, BATCH_SIZE_MAX).unwrap();
        // A record larger than the batch size gets a batch of its own.
        let mut acc = accumulator(256, 60_000);
        let (cut, _) = append(&mut acc, &topic, &[1u8; 1000], 0, now);
        assert!(cut);
        assert_eq!(acc.drain(now).len(), 1);
    }

    /// With a linger, a batch waits for it; the deadline says when.
    #[test]
    fn cuts_by_linger() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 5);
        let now = Instant::now();
        let (cut, mut receiver) = append(&mut acc, &topic, b"a", 0, now);
        assert!(!cut);
        append(&mut acc, &topic, b"b", 1, now + Duration::from_millis(1));
        assert!(acc.drain(now + Duration::from_millis(4)).is_empty());
        assert_eq!(acc.next_deadline(), Some(now + Duration::from_millis(5)));
        let batches = acc.drain(now + Duration::from_millis(5));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].record_count(), 2);
        assert_eq!(acc.next_deadline(), None);
        // Completion resolves records with consecutive offsets.
        let batch = batches.into_iter().next().unwrap();
        acc.returned(&batch);
        acc.finished(&batch);
        let _buffer = batch.complete(Some(40));
        let metadata = receiver.try_recv().unwrap().unwrap();
        assert_eq!((metadata.partition, metadata.offset), (0, Some(40)));
        assert!(acc.is_idle());
    }

    /// With linger zero, a batch goes at once when nothing is in flight, and records arriving
    /// while a request is in flight wait for its answer, batched together.
    #[test]
    fn linger_zero_sends_when_idle() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 0);
        let now = Instant::now();
        assert!(acc.every_loaded_partition_in_flight(), "nothing loaded");
        append(&mut acc, &topic, b"a", 0, now);
        assert!(
            !acc.every_loaded_partition_in_flight(),
            "a record waits on an idle partition"
        );
        let first = acc.drain(now);
        assert_eq!(first.len(), 1);
        assert!(acc.every_loaded_partition_in_flight());
        append(&mut acc, &topic, b"b", 1, now);
        append(&mut acc, &topic, b"c", 2, now);
        assert!(
            acc.every_loaded_partition_in_flight(),
            "records behind a request in flight wait for its answer"
        );
        assert!(acc.drain(now + Duration::from_secs(1)).is_empty());
        assert_eq!(acc.min_incomplete(), Some(0));
        acc.returned(&first[0]);
        acc.finished(&first[0]);
        assert_eq!(acc.min_incomplete(), Some(1));
        let second = acc.drain(now);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].record_count(), 2);
    }

    /// Flush cuts open batches at once; a retried batch waits for its backoff, at the front.
    #[test]
    fn flush_and_retry() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 60_000);
        let now = Instant::now();
        append(&mut acc, &topic, b"a", 0, now);
        assert!(acc.drain(now).is_empty());
        acc.flushing = true;
        let mut batches = acc.drain(now);
        assert_eq!(batches.len(), 1);
        let mut batch = batches.pop().unwrap();
        acc.returned(&batch);
        batch.attempts += 1;
        acc.retry(batch, now + Duration::from_millis(100), None);
        append(&mut acc, &topic, b"b", 1, now);
        assert!(acc.drain(now + Duration::from_millis(50)).is_empty());
        assert_eq!(acc.next_deadline(), Some(now + Duration::from_millis(100)));
        let batches = acc.drain(now + Duration::from_millis(100));
        assert_eq!(
            batches.len(),
            1,
            "the retried batch first, alone (queue was not empty)"
        );
        assert_eq!(batches[0].attempts, 1);
        assert_eq!(batches[0].min_seq, 0);
    }

    /// A batch backing off after failing against leader epoch 3 leaves at once when the
    /// metadata names epoch 4, not before (same epoch: it keeps waiting, and the caller is told
    /// to keep refreshing).
    #[test]
    fn a_new_leader_ends_the_retry_backoff() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 60_000);
        let now = Instant::now();
        append(&mut acc, &topic, b"a", 0, now);
        acc.flushing = true;
        let mut batch = acc.drain(now).pop().unwrap();
        acc.returned(&batch);
        batch.attempts += 1;
        acc.retry(batch, now + Duration::from_secs(1), Some(3));
        assert!(acc.end_backoffs_of_moved_leaders(|_, _| Some(3)));
        assert!(acc.drain(now).is_empty(), "same leader: still backing off");
        assert!(!acc.end_backoffs_of_moved_leaders(|t, p| (t == "t" && p == 0).then_some(4)));
        let batches = acc.drain(now);
        assert_eq!(batches.len(), 1, "new leader: sent at once");
        assert_eq!(batches[0].attempts, 1);
    }

    /// Batches in flight that fail together, oldest first, are sent again in send order,
    /// ahead of the batches enqueued after them.
    #[test]
    fn batches_retried_together_keep_send_order() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 60_000);
        let now = Instant::now();
        acc.flushing = true;
        append(&mut acc, &topic, b"a", 0, now);
        let mut in_flight = acc.drain(now);
        append(&mut acc, &topic, b"b", 1, now);
        in_flight.extend(acc.drain(now));
        assert_eq!(in_flight.len(), 2, "two batches in flight");
        append(&mut acc, &topic, b"c", 2, now);
        for mut batch in in_flight {
            acc.returned(&batch);
            batch.attempts += 1;
            acc.retry(batch, now + Duration::from_millis(100), None);
        }
        let mut sent_again = Vec::new();
        for _ in 0..3 {
            let batches = acc.drain(now + Duration::from_millis(100));
            sent_again.extend(batches.iter().map(|b| b.min_seq));
            for batch in batches {
                acc.returned(&batch);
                acc.finished(&batch);
            }
        }
        assert_eq!(sent_again, [0, 1, 2]);
    }

    /// A retry never overtakes a batch still out: with one of two in-flight batches back for
    /// a retry, nothing of the partition leaves (not the retry, not newer batches) until the
    /// other one is back too; then they go in send order. A batch refused while an earlier
    /// one is incomplete knows it.
    #[test]
    fn retry_waits_for_every_batch_in_flight() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 60_000);
        let now = Instant::now();
        acc.flushing = true;
        append(&mut acc, &topic, b"a", 0, now);
        let mut in_flight = acc.drain(now);
        append(&mut acc, &topic, b"b", 1, now);
        in_flight.extend(acc.drain(now));
        assert_eq!(in_flight.len(), 2);
        let second = in_flight.pop().unwrap();
        let mut first = in_flight.pop().unwrap();
        assert!(!acc.has_earlier_incomplete(&first));
        assert!(
            acc.has_earlier_incomplete(&second),
            "the first is in flight"
        );
        acc.returned(&first);
        first.attempts += 1;
        acc.retry(first, now, None);
        append(&mut acc, &topic, b"c", 2, now);
        let later = now + Duration::from_secs(1);
        assert!(acc.drain(later).is_empty(), "the second batch is still out");
        assert_eq!(acc.next_deadline(), None, "only its return can unblock");
        assert!(
            acc.has_earlier_incomplete(&second),
            "the first waits for a retry"
        );
        acc.returned(&second);
        let mut second = second;
        second.attempts += 1;
        acc.retry(second, later, None);
        let sent: Vec<u64> = acc.drain(later).iter().map(|b| b.min_seq).collect();
        assert_eq!(sent, [0, 1]);
    }

    /// While `hold_new` is set only retries leave; new batches wait, in order, behind them.
    #[test]
    fn hold_new_lets_only_retries_leave() {
        let topic: Arc<str> = Arc::from("t");
        let mut acc = accumulator(1 << 20, 60_000);
        let now = Instant::now();
        acc.flushing = true;
        append(&mut acc, &topic, b"a", 0, now);
        let mut first = acc.drain(now).pop().unwrap();
        acc.returned(&first);
        first.attempts += 1;
        acc.retry(first, now, None);
        append(&mut acc, &topic, b"b", 1, now);
        acc.hold_new = true;
        let sent = acc.drain(now);
        assert_eq!(sent.iter().map(|b| b.min_seq).collect::<Vec<_>>(), [0]);
        for batch in &sent {
            acc.returned(batch);
            acc.finished(batch);
        }
        assert!(acc.drain(now).is_empty(), "the new batch is held");
        acc.hold_new = false;
        let sent = acc.drain(now);
        assert_eq!(sent.iter().map(|b| b.min_seq).collect::<Vec<_>>(), [1]);
    }

    /// The size bound used to cut batches really bounds the builder's estimate.
    #[test]
    fn size_bound_matches_builder() {
        let mut builder = BatchBuilder::new();
        let headers = vec![("h".to_owned(), vec![1u8; 10])];
        let tags = vec!["x".to_owned(), "yy".to_owned()];
        for n in 0..20usize {
            let value = vec![0u8; n * 7];
            let key = vec![1u8; n];
            let before = builder.estimated_size();
            let bound = record_size_upper_bound(Some(&key), &value, &headers, &tags);
            builder.push(
                0,
                Some(&key),
                &value,
                &[("h", &[1u8; 10])],
                Some(&["x", "yy"]),
            );
            assert!(builder.estimated_size() <= before + bound);
            assert!(builder.build().unwrap().len() <= builder.estimated_size());
        }
    }
}
