//! The batch path of the producer ([`crate::Producer::send_batch`]): records the caller already
//! groups for one partition are encoded by the calling task straight into a record batch, one
//! copy of each key and value from the caller's bytes, and the finished batch goes to the
//! sender task as one command with one completion.
//!
//! ```text
//!  send_batch(topic, partition, records) ─▶ pool: a builder with a recycled buffer
//!     push each record (one copy, one clock read per call) ─▶ finish ─▶ command ─▶ sender task
//!  BatchDelivery ◀── BatchMetadata (base offset: records have consecutive offsets) ◀──┘
//!  completed batch buffers go back to the pool, so steady state allocates nothing per record
//! ```
//!
//! Owned by [`crate::producer`]: its `Producer` builds with `BatchPool::build`, its sender
//! task gives buffers back with `BatchPool::give_back`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use wire::{AlignedVec, BatchBuilder};

use crate::error::ClientError;

/// One record of [`crate::Producer::send_batch`], borrowing its bytes from the caller: a slice of
/// a `Vec`, of a `bytes::Bytes` (`&bytes[..]`), of a reused buffer. Nothing is copied until the
/// record is encoded into its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Application headers (name, value).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Tags the broker may filter on without reading values (empty: none).
    pub tags: &'a [&'a str],
    /// Milliseconds since the epoch; `None`: the time of the `send_batch` call.
    pub timestamp_ms: Option<i64>,
}

impl<'a> BatchRecord<'a> {
    /// A keyless record with this value.
    pub fn new(value: &'a [u8]) -> Self {
        BatchRecord {
            value,
            ..BatchRecord::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the tags.
    pub fn with_tags(mut self, tags: &'a [&'a str]) -> Self {
        self.tags = tags;
        self
    }

    /// Sets the timestamp.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged [`crate::Producer::send_batch`] landed. Its records are one record
/// batch, so they have consecutive offsets from `base_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset of the first record; `None` with `acks = 0` (the broker does not answer).
    pub base_offset: Option<u64>,
    /// Records in the batch.
    pub record_count: u32,
}

impl BatchMetadata {
    /// Offset of the record at `index` in the call's order (`None` with `acks = 0` or past
    /// the last record).
    pub fn offset(&self, index: u32) -> Option<u64> {
        (index < self.record_count)
            .then_some(self.base_offset)
            .flatten()
            .map(|base| base + u64::from(index))
    }
}

/// The sender task's side of a [`BatchDelivery`].
pub(crate) type BatchReply = oneshot::Sender<Result<BatchMetadata, ClientError>>;

/// Resolves when the broker acknowledges a batch of [`crate::Producer::enqueue_batch`].
#[derive(Debug)]
pub struct BatchDelivery {
    pub(crate) receiver: oneshot::Receiver<Result<BatchMetadata, ClientError>>,
}

impl Future for BatchDelivery {
    type Output = Result<BatchMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Most idle builders, and most spare buffers, the pool keeps. One builder per task building
/// at the same moment is enough; spare buffers hold at most this many batches' bytes
/// (8 x the largest batch sent, e.g. 8 x 1 MiB for 1000 x 1 KiB records), and a buffer given back
/// when the pool is full is freed.
pub(crate) const BATCH_POOL_MAX: usize = 8;

#[derive(Debug, Default)]
struct PoolState {
    builders: Vec<BatchBuilder>,
    buffers: Vec<AlignedVec<16>>,
}

/// Builders and batch buffers shared by the producer's callers and its sender task. Its lock
/// is taken twice per batch (take a builder, put it back) and once per completed batch, never
/// per record.
#[derive(Debug, Default)]
pub(crate) struct BatchPool {
    state: Mutex<PoolState>,
    /// Batches are built without their CRC, which the idempotent producer's stamp computes
    /// (`BatchBuilder::defer_crc_to_stamp`).
    crc_by_stamp: bool,
}

impl BatchPool {
    /// A pool whose batches get their CRC from the producer's stamp when `crc_by_stamp`.
    pub fn new(crc_by_stamp: bool) -> Self {
        BatchPool {
            state: Mutex::default(),
            crc_by_stamp,
        }
    }

    /// Whether this pool's batches leave their CRC to the producer's stamp: the one place
    /// the producer decides it (its accumulator builds batches the same way).
    pub fn crc_by_stamp(&self) -> bool {
        self.crc_by_stamp
    }

    /// Encodes `records` into one batch, stamping those without a timestamp with `now_ms`.
    /// Returns the batch and its record count.
    pub fn build<'a>(
        &self,
        records: impl IntoIterator<Item = BatchRecord<'a>>,
        now_ms: i64,
    ) -> Result<(AlignedVec<16>, u32), ClientError> {
        let mut builder = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut builder = state.builders.pop().unwrap_or_default();
            if let Some(buffer) = state.buffers.pop() {
                builder.recycle(buffer);
            }
            builder.defer_crc_to_stamp(self.crc_by_stamp);
            builder
        };
        for record in records {
            builder.push_parts(
                record.timestamp_ms.unwrap_or(now_ms),
                record.key,
                record.value,
                record.headers.iter().copied(),
                (!record.tags.is_empty()).then(|| record.tags.iter().copied()),
            );
        }
        // The count is checked against the wire limit by `finish`.
        let record_count = u32::try_from(builder.len()).unwrap_or(u32::MAX);
        let built = builder.finish();
        if built.is_err() {
            builder.clear();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.builders.len() < BATCH_POOL_MAX {
            state.builders.push(builder);
        }
        drop(state);
        Ok((built?, record_count))
    }

    /// Takes back the buffer of a completed batch.
    pub fn give_back(&self, buffer: AlignedVec<16>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.buffers.len() < BATCH_POOL_MAX {
            state.buffers.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use tokio::time::Instant;
    use wire::limits::BATCH_SIZE_MAX;
    use wire::BatchView;

    use super::*;
    use crate::accumulator::{Accumulator, AccumulatorConfig, RecordData};

    /// A record as the application holds it.
    #[derive(Debug, Clone)]
    struct Owned {
        timestamp_ms: i64,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
        tags: Vec<String>,
    }

    fn owned_records() -> impl Strategy<Value = Vec<Owned>> {
        let bytes = || vec(any::<u8>(), 0..64);
        let text = || "[a-z0-9\\u{e9}]{0,12}";
        vec(
            (
                1_700_000_000_000i64..1_700_000_060_000,
                proptest::option::of(bytes()),
                bytes(),
                vec((text(), bytes()), 0..3),
                vec(text(), 0..3),
            )
                .prop_map(|(timestamp_ms, key, value, headers, tags)| Owned {
                    timestamp_ms,
                    key,
                    value,
                    headers,
                    tags,
                }),
            1..20,
        )
    }

    /// Every record of `batches`, decoded back into the application's shape.
    fn decode(batches: &[AlignedVec<16>]) -> Vec<Owned> {
        let mut out = Vec::new();
        for bytes in batches {
            let view = BatchView::validate_deep(bytes, BATCH_SIZE_MAX).unwrap();
            let first = view.header().first_timestamp_ms;
            for record in view.records().unwrap().iter() {
                out.push(Owned {
                    timestamp_ms: record.timestamp_ms(first),
                    key: record.key_bytes().map(<[u8]>::to_vec),
                    value: record.value_bytes().to_vec(),
                    headers: record
                        .headers
                        .iter()
                        .map(|h| (h.key.as_str().to_owned(), h.value.as_slice().to_vec()))
                        .collect(),
                    tags: record
                        .tags
                        .as_ref()
                        .map(|tags| tags.iter().map(|t| t.as_str().to_owned()).collect())
                        .unwrap_or_default(),
                });
            }
        }
        out
    }

    fn assert_same(sent: &[Owned], received: &[Owned]) -> Result<(), TestCaseError> {
        prop_assert_eq!(sent.len(), received.len());
        for (sent, received) in sent.iter().zip(received) {
            prop_assert_eq!(sent.timestamp_ms, received.timestamp_ms);
            prop_assert_eq!(&sent.key, &received.key);
            prop_assert_eq!(&sent.value, &received.value);
            prop_assert_eq!(&sent.headers, &received.headers);
            prop_assert_eq!(&sent.tags, &received.tags);
        }
        Ok(())
    }

    /// Byte ranges `(start, end)` of a record's key (if any) and value in a shared buffer.
    type Spans = (Option<(usize, usize)>, (usize, usize));

    /// The `send_batch` records borrowed from one shared allocation (what `&bytes[..]` of a
    /// `bytes::Bytes` gives): every key and value is a slice of `arena`.
    fn slices_of_one_buffer(records: &[Owned]) -> (Vec<u8>, Vec<Spans>) {
        let mut arena = Vec::new();
        let mut spans = Vec::new();
        for record in records {
            let key = record.key.as_ref().map(|key| {
                let start = arena.len();
                arena.extend_from_slice(key);
                (start, arena.len())
            });
            let start = arena.len();
            arena.extend_from_slice(&record.value);
            spans.push((key, (start, arena.len())));
        }
        (arena, spans)
    }

    proptest! {
        /// Records come out of the built batches byte-identical (keys, values, headers, tags,
        /// timestamps) whichever way they went in: `send`'s owned records through the
        /// accumulator (cut into several batches), `send_batch`'s records borrowed from their
        /// owners or from one shared buffer, through the pool with recycled buffers.
        #[test]
        fn records_round_trip_through_both_paths(
            rounds in vec(owned_records(), 1..4),
            batch_size_bytes in 1024usize..8192,
        ) {
            let pool = BatchPool::default();
            let mut accumulator = Accumulator::new(AccumulatorConfig {
                batch_size_bytes,
                linger: Duration::from_secs(3600),
                max_in_flight: usize::MAX,
                crc_by_stamp: false,
            });
            let topic: Arc<str> = Arc::from("t");
            let now = Instant::now();
            let mut seq = 0;
            for records in &rounds {
                // send: owned records, one reply each.
                for record in records {
                    let (reply, _receiver) = oneshot::channel();
                    let data = RecordData {
                        timestamp_ms: record.timestamp_ms,
                        key: record.key.as_deref(),
                        value: &record.value,
                        headers: &record.headers,
                        tags: &record.tags,
                    };
                    accumulator.append(&topic, 0, data, reply, 1, seq, BATCH_SIZE_MAX, now);
                    seq += 1;
                }
                accumulator.flushing = true;
                let mut built = Vec::new();
                // A flush sends the ready batches first, then the open one.
                while !accumulator.is_idle() {
                    for batch in accumulator.drain(now) {
                        accumulator.returned(&batch);
                        accumulator.finished(&batch);
                        built.push(batch.complete(Some(0)));
                    }
                }
                assert_same(records, &decode(&built))?;
                for bytes in built {
                    accumulator.recycle(&topic, 0, bytes);
                }

                // send_batch: borrowed from each record's own vectors.
                let headers: Vec<Vec<(&str, &[u8])>> = records
                    .iter()
                    .map(|r| r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect())
                    .collect();
                let tags: Vec<Vec<&str>> = records
                    .iter()
                    .map(|r| r.tags.iter().map(String::as_str).collect())
                    .collect();
                let borrowed = records.iter().enumerate().map(|(i, r)| BatchRecord {
                    key: r.key.as_deref(),
                    value: &r.value,
                    headers: &headers[i],
                    tags: &tags[i],
                    timestamp_ms: Some(r.timestamp_ms),
                });
                let (bytes, count) = pool.build(borrowed, 0).unwrap();
                prop_assert_eq!(count as usize, records.len());
                assert_same(records, &decode(std::slice::from_ref(&bytes)))?;
                pool.give_back(bytes);

                // send_batch: keys and values slices of one shared buffer.
                let (arena, spans) = slices_of_one_buffer(records);
                let shared = records.iter().zip(&spans).enumerate().map(|(i, (r, (key, value)))| {
                    BatchRecord {
                        key: key.map(|(start, end)| &arena[start..end]),
                        value: &arena[value.0..value.1],
                        headers: &headers[i],
                        tags: &tags[i],
                        timestamp_ms: Some(r.timestamp_ms),
                    }
                });
                let (bytes, _) = pool.build(shared, 0).unwrap();
                assert_same(records, &decode(std::slice::from_ref(&bytes)))?;
                pool.give_back(bytes);
            }
        }
    }

    /// Records without a timestamp get the call's clock reading; an empty call is refused.
    #[test]
    fn missing_timestamps_and_empty_calls() {
        let pool = BatchPool::default();
        let records = [
            BatchRecord::new(b"a"),
            BatchRecord::new(b"b").with_timestamp_ms(5_000),
        ];
        let (bytes, count) = pool.build(records, 7_000).unwrap();
        assert_eq!(count, 2);
        let decoded = decode(std::slice::from_ref(&bytes));
        assert_eq!(decoded[0].timestamp_ms, 7_000);
        assert_eq!(decoded[1].timestamp_ms, 5_000);
        assert!(matches!(
            pool.build(std::iter::empty(), 0),
            Err(ClientError::Batch(wire::BatchError::Empty))
        ));
    }

    /// Offsets of a batch's records are consecutive from its base.
    #[test]
    fn batch_metadata_offsets() {
        let metadata = BatchMetadata {
            topic: Arc::from("t"),
            partition: 0,
            base_offset: Some(10),
            record_count: 3,
        };
        assert_eq!(metadata.offset(0), Some(10));
        assert_eq!(metadata.offset(2), Some(12));
        assert_eq!(metadata.offset(3), None);
        let unacknowledged = BatchMetadata {
            base_offset: None,
            ..metadata
        };
        assert_eq!(unacknowledged.offset(0), None);
    }
}
