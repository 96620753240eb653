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
use crate::records::Records;

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
                crc_by_stamp: false,
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
            self.accumulator.returned(&batch);
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
            self.accumulator.returned(&batch);
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

/// The consumer's per-record work on a fetched frame, without a broker or a socket: walk and
/// validate the batches (CRC, rkyv structure check), then hand every record out as a view.
#[derive(Debug)]
pub struct ConsumeBench {
    frame: Option<wire::AlignedVec<16>>,
    topic: Arc<str>,
}

impl ConsumeBench {
    /// A frame of `batches` batches of `records_per_batch` records with `value_bytes` values
    /// and an 8-byte key, as a fetch response carries them back to back.
    pub fn new(batches: usize, records_per_batch: usize, value_bytes: usize) -> Self {
        let value = vec![7u8; value_bytes];
        let mut frame = wire::AlignedVec::<16>::new();
        let mut builder = wire::BatchBuilder::new();
        for batch_index in 0..batches {
            for index in 0..records_per_batch {
                builder.push(
                    1_700_000_000_000 + index as i64,
                    Some(b"key-0001"),
                    &value,
                    &[],
                    None,
                );
            }
            if let Ok(mut batch) = builder.finish() {
                // The broker stamps consecutive base offsets.
                let base_offset = (batch_index * records_per_batch) as u64;
                if wire::stamp_base_offset(&mut batch, base_offset).is_ok() {
                    frame.extend_from_slice(&batch);
                }
            }
        }
        ConsumeBench {
            frame: Some(frame),
            topic: Arc::from("bench"),
        }
    }

    /// Validates the frame's batches into a `Records` and reads every record's key and
    /// value length. Returns the number of records read.
    pub fn consume(&mut self) -> usize {
        let Some(frame) = self.frame.take() else {
            return 0;
        };
        let length = frame.len();
        let mut records = Records::new();
        let index = records.add_frame(frame);
        let _ = records.add_partition(index, 0..length, &self.topic, 0, 0);
        let mut count = 0;
        let mut value_bytes = 0;
        for record in &records {
            value_bytes += record.value.len() + record.key.map_or(0, <[u8]>::len);
            count += 1;
        }
        std::hint::black_box(value_bytes);
        self.frame = records.into_frames().pop();
        count
    }
}
