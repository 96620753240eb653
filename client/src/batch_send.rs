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
//! Owned by [`crate::producer`]: its `Producer` builds with [`BatchPool::build`], its sender
//! task gives buffers back with [`BatchPool::give_back`].

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
}

impl BatchPool {
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
