//! Entry points for the client's micro-benchmarks (`client/benches/`), which cannot reach the
//! crate-private accumulator otherwise. Not part of the public API: hidden from the docs and
//! free to change with the benchmarks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use wire::limits::BATCH_SIZE_MAX;

use crate::accumulator::{record_size_upper_bound, Accumulator, AccumulatorConfig, RecordData};
use crate::batch_send::{BatchPool, BatchRecord};

/// The producer's per-record and per-batch work without a broker or a socket: for `send`
/// (size check, timestamp, completion handle, append into the partition's batch, cut, drain,
/// complete) and for `send_batch` (encode in the caller, queue, drain, complete, recycle).
#[derive(Debug)]
pub struct AccumulatorBench {
    accumulator: Accumulator,
    pool: BatchPool,
    topic: Arc<str>,
    next_seq: u64,
}

impl AccumulatorBench {
    /// A one-partition accumulator cutting batches at `batch_size_bytes`.
    pub fn new(batch_size_bytes: usize) -> Self {
        AccumulatorBench {
            accumulator: Accumulator::new(AccumulatorConfig {
                batch_size_bytes,
                linger: Duration::from_secs(3600),
                max_in_flight: 1,
            }),
            pool: BatchPool::default(),
            topic: Arc::from("bench"),
            next_seq: 0,
        }
    }

    /// The `send_batch` path: encodes `values` (with `key`) into one batch as the caller's
    /// task does, queues it, drains and completes it as the sender task does after an
    /// acknowledgement, and gives its buffer back. Returns the built batch's length.
    pub fn send_batch(&mut self, key: Option<&[u8]>, values: &[&[u8]]) -> usize {
        let now = Instant::now();
        let records = values.iter().map(|value| BatchRecord {
            key,
            value,
            ..BatchRecord::default()
        });
        let Ok((bytes, record_count)) = self.pool.build(records, crate::producer::now_ms()) else {
            return 0;
        };
        let (reply, mut receiver) = oneshot::channel();
        let reserved_bytes = bytes.len();
        self.accumulator.append_built(
            &self.topic,
            0,
            bytes,
            reply,
            record_count,
            reserved_bytes,
            self.next_seq,
        );
        self.next_seq += 1;
        let mut built_bytes = 0;
        for batch in self.accumulator.drain(now) {
            built_bytes += batch.bytes.len();
            self.accumulator.returned(&self.topic, 0);
            self.accumulator.finished(&batch);
            self.pool.give_back(batch.complete(Some(0)));
        }
        let _ = receiver.try_recv();
        built_bytes
    }

    /// The `send` path: appends `values` (with `key`) as records, one completion each, into
    /// the partition's batch, cuts, drains and completes it the way the sender task does
    /// after an acknowledgement. Returns the built batch's length.
    pub fn send_records(&mut self, key: Option<&[u8]>, values: &[&[u8]]) -> usize {
        let now = Instant::now();
        // The sender task reads the clock once per round of commands.
        let timestamp_ms = crate::producer::now_ms();
        let mut receivers = Vec::with_capacity(values.len());
        for value in values {
            let reserved_bytes = record_size_upper_bound(key, value, &[], &[]);
            let (reply, receiver) = oneshot::channel();
            receivers.push(receiver);
            let record = RecordData {
                timestamp_ms,
                key,
                value,
                headers: &[],
                tags: &[],
            };
            self.accumulator.append(
                &self.topic,
                0,
                record,
                reply,
                reserved_bytes,
                self.next_seq,
                BATCH_SIZE_MAX,
                now,
            );
            self.next_seq += 1;
        }
        self.accumulator.flushing = true;
        let mut built_bytes = 0;
        for batch in self.accumulator.drain(now) {
            built_bytes += batch.bytes.len();
            self.accumulator.returned(&self.topic, 0);
            self.accumulator.finished(&batch);
            let bytes = batch.complete(Some(0));
            self.accumulator.recycle(&self.topic, 0, bytes);
        }
        self.accumulator.flushing = false;
        for mut receiver in receivers {
            let _ = receiver.try_recv();
        }
        built_bytes
    }
}
