//! Producer hot-path micro-benchmark: CPU per record of building batches through the
//! producer's accumulator, without a broker or a socket, on its two paths: `send` (size check,
//! timestamp, one completion per record, append into the batch, cut, drain, complete) and
//! `send_batch` (encode in the caller, queue, drain, one completion, buffer recycled); and the
//! consumer's side: validating a fetched frame's batches and handing its records out as views.
//!
//! ```text
//! cargo bench -p sluice-client --bench accumulator     # 1000 x 1 KiB records per batch
//! cargo test  -p sluice-client --benches               # smoke run on small inputs
//! ```
//!
//! Without `--bench` on the command line (`cargo test --benches`) it runs a tiny configuration
//! and checks the output, so it never rots. Prints ns/record and MB/s of record values.

use std::hint::black_box;
use std::time::Instant;

use client::bench_support::{AccumulatorBench, ConsumeBench};

/// Records per batch in the full run (issue 11's "batch 1000").
const RECORDS_PER_BATCH: usize = 1000;
/// Value bytes per record in the full run.
const VALUE_BYTES: usize = 1024;
/// Batch size cut: large enough that 1000 x 1 KiB records (~1.03 MB with framing) form one
/// batch.
const BATCH_SIZE_BYTES: usize = 2 * 1024 * 1024;
/// Batches measured in the full run (~1 GB of values: a few seconds).
const MEASURED_BATCHES: usize = 1000;
/// Batches run before measuring, so buffers are allocated and caches warm.
const WARMUP_BATCHES: usize = 50;

/// One producer path of the bench: builds a batch of the values, returns its length.
type ProducePath = fn(&mut AccumulatorBench, Option<&[u8]>, &[&[u8]]) -> usize;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (records, value_bytes, warmup, measured) = if full {
        (
            RECORDS_PER_BATCH,
            VALUE_BYTES,
            WARMUP_BATCHES,
            MEASURED_BATCHES,
        )
    } else {
        (10, 100, 1, 3)
    };
    let values_storage: Vec<Vec<u8>> = (0..records)
        .map(|i| vec![u8::try_from(i % 251).unwrap_or(0); value_bytes])
        .collect();
    let values: Vec<&[u8]> = values_storage.iter().map(Vec::as_slice).collect();
    let key = b"key-0001";
    let mut bench = AccumulatorBench::new(BATCH_SIZE_BYTES);
    let paths: [(&str, ProducePath); 2] = [
        ("send", AccumulatorBench::send_records),
        ("send_batch", AccumulatorBench::send_batch),
    ];
    for (name, produce) in paths {
        let mut built_bytes = 0;
        for _ in 0..warmup {
            built_bytes = produce(&mut bench, Some(key), &values);
        }
        assert!(
            built_bytes >= records * value_bytes,
            "{name}: a batch of {records} records of {value_bytes} B came out as {built_bytes} B"
        );
        let started = Instant::now();
        for _ in 0..measured {
            black_box(produce(&mut bench, Some(key), black_box(&values)));
        }
        let elapsed = started.elapsed();
        let total_records = (records * measured) as f64;
        let ns_per_record = elapsed.as_nanos() as f64 / total_records;
        let value_mb_per_s = total_records * value_bytes as f64 / elapsed.as_secs_f64() / 1e6;
        println!(
            "{name}: {records} x {value_bytes} B records per batch, {measured} batches: \
             {ns_per_record:.1} ns/record, {value_mb_per_s:.0} MB/s of values"
        );
    }

    // The consumer's side: the same batches, validated and handed out as views.
    let batches_per_frame = if full { 4 } else { 1 };
    let mut consume = ConsumeBench::new(batches_per_frame, records, value_bytes);
    let per_frame = batches_per_frame * records;
    for _ in 0..warmup {
        assert_eq!(consume.consume(), per_frame, "consume: records lost");
    }
    let started = Instant::now();
    for _ in 0..measured {
        black_box(consume.consume());
    }
    let elapsed = started.elapsed();
    let total_records = (per_frame * measured) as f64;
    let ns_per_record = elapsed.as_nanos() as f64 / total_records;
    println!(
        "consume: {batches_per_frame} x {records} x {value_bytes} B records per fetch, \
         {measured} fetches: {ns_per_record:.1} ns/record"
    );
}
