//! Model-based property test: random appends, reads, reopens, truncations and retention passes
//! run against the real log and against a plain in-memory model; after every step they must
//! agree on offsets and on the bytes of every batch read back.
#![allow(clippy::unwrap_used)]

mod common;

use common::{run, small_config, test_dir, values, view};
use proptest::prelude::*;
use storage::{Durability, Log, LogConfig};
use wire::batch::BatchBuilder;

/// One step of a test case.
#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of `records` records with values of `value_len` bytes.
    Append { records: usize, value_len: usize },
    /// Read from the offset at `position` (0..=1 over [start, end]) with this byte budget.
    Read { position: f64, max_bytes: usize },
    /// Close and reopen.
    Reopen,
    /// Truncate at the offset at `position` over [start - 2, end + 2].
    Truncate { position: f64 },
    /// Run retention with a size limit.
    Retain { limit_bytes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 1usize..3000).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        4 => (0.0f64..=1.0, 1usize..40_000).prop_map(|(position, max_bytes)| Op::Read { position, max_bytes }),
        1 => Just(Op::Reopen),
        1 => (0.0f64..=1.0).prop_map(|position| Op::Truncate { position }),
        1 => (20_000u64..200_000).prop_map(|limit_bytes| Op::Retain { limit_bytes }),
    ]
}

/// What the log should hold: batches (base offset, values) in order, and the start offset.
#[derive(Default)]
struct Model {
    start: u64,
    end: u64,
    batches: Vec<(u64, Vec<Vec<u8>>)>,
}

impl Model {
    fn index_of(&self, offset: u64) -> Option<usize> {
        self.batches
            .iter()
            .position(|(base, values)| offset >= *base && offset < base + values.len() as u64)
    }
}

/// Most bytes of one segment under `small_config`: it rolls before an append would take it
/// past 64 KiB, unless a single batch is larger, and a batch here is at most 5 records of
/// under 3000 bytes plus headers, below 16 KiB.
const SEGMENT_BYTES_BOUND: u64 = 64 * 1024 + 16 * 1024;

fn config(limit: Option<u64>) -> LogConfig {
    LogConfig {
        retention_bytes: limit,
        retention_time: None,
        ..small_config(Durability::Never)
    }
}

async fn check_read(log: &Log, model: &Model, from: u64, max_bytes: usize) {
    let read = log.read(from, max_bytes).await.unwrap();
    if from == model.end {
        assert!(read.batches.is_empty());
        return;
    }
    let first = model.index_of(from).unwrap();
    assert!(!read.batches.is_empty(), "read at {from} returned nothing");
    let mut total = 0;
    for (i, got) in read.batches.iter().enumerate() {
        let (base, expected) = &model.batches[first + i];
        assert_eq!(got.base_offset, *base);
        assert_eq!(got.last_offset, base + expected.len() as u64 - 1);
        assert_eq!(&values(&got.bytes), expected, "values of batch at {base}");
        if i > 0 {
            assert!(
                total + got.bytes.len() <= max_bytes,
                "read exceeded its byte budget"
            );
        }
        total += got.bytes.len();
    }
}

async fn run_case(ops: Vec<Op>) {
    let dir = test_dir();
    let mut limit = None;
    let mut log = Log::open(dir.path(), config(limit)).await.unwrap();
    let mut model = Model::default();
    let mut tag = 0u64;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                tag += 1;
                let mut builder = BatchBuilder::new();
                let mut expected = Vec::new();
                for i in 0..records {
                    let mut value = format!("{tag}/{i}/").into_bytes();
                    value.resize(value_len.max(value.len()), (tag % 251) as u8);
                    builder.push(tag as i64, None, &value, &[], None);
                    expected.push(value);
                }
                let bytes = builder.build().unwrap();
                let info = log.append(view(&bytes)).await.unwrap();
                assert_eq!(info.base_offset, model.end);
                model.batches.push((model.end, expected));
                model.end += records as u64;
            }
            Op::Read {
                position,
                max_bytes,
            } => {
                let span = model.end - model.start;
                let from = model.start + (position * span as f64) as u64;
                check_read(&log, &model, from.min(model.end), max_bytes).await;
            }
            Op::Reopen => {
                log.close().await.unwrap();
                log = Log::open(dir.path(), config(limit)).await.unwrap();
            }
            Op::Truncate { position } => {
                let low = model.start.saturating_sub(2);
                let offset = low + (position * (model.end + 2 - low) as f64) as u64;
                let new_end = log.truncate_to(offset).await.unwrap();
                if offset >= model.end {
                    assert_eq!(new_end, model.end);
                } else if offset <= model.start {
                    assert_eq!(new_end, offset);
                    model = Model {
                        start: offset,
                        end: offset,
                        batches: Vec::new(),
                    };
                } else {
                    let i = model.index_of(offset).unwrap();
                    assert_eq!(new_end, model.batches[i].0);
                    model.batches.truncate(i);
                    model.end = new_end;
                }
            }
            Op::Retain { limit_bytes } => {
                limit = Some(limit_bytes);
                log.close().await.unwrap();
                log = Log::open(dir.path(), config(limit)).await.unwrap();
                let size_before = log.size_bytes();
                let report = log.enforce_retention(storage::now_ms()).await.unwrap();
                assert_eq!(report.log_start_offset, log.log_start_offset());
                assert!(
                    report.log_start_offset >= model.start && report.log_start_offset <= model.end
                );
                if report.segments_deleted > 0 {
                    assert!(
                        log.size_bytes() >= limit_bytes,
                        "retention went below the limit"
                    );
                    assert_eq!(log.size_bytes(), size_before - report.bytes_deleted);
                }
                // Nor may it keep too much: a log larger than the limit by more than one
                // segment holds a sealed segment whose deletion leaves it above the limit.
                if size_before > limit_bytes + SEGMENT_BYTES_BOUND {
                    assert!(
                        report.segments_deleted > 0,
                        "{size_before} bytes kept under a limit of {limit_bytes}"
                    );
                }
                model
                    .batches
                    .retain(|(base, _)| *base >= report.log_start_offset);
                if let Some((base, _)) = model.batches.first() {
                    assert_eq!(
                        *base, report.log_start_offset,
                        "start must be a batch boundary"
                    );
                }
                model.start = report.log_start_offset;
            }
        }
        assert_eq!(log.log_start_offset(), model.start);
        assert_eq!(log.log_end_offset(), model.end);
    }
    // Everything left reads back in order, from the start, in one pass.
    let mut offset = model.start;
    while offset < model.end {
        check_read(&log, &model, offset, 64 * 1024).await;
        offset = log
            .read(offset, 64 * 1024)
            .await
            .unwrap()
            .next_offset()
            .unwrap();
    }
    log.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The log and the model agree after any sequence of operations.
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(run_case(ops));
    }
}
