//! One tail-cache budget per core, shared by the core's logs: a log that needs a chunk takes
//! it from the least recently appended logs once the budget is reached, and those logs keep
//! serving every batch (from their tail page and the disk) and keep appending.
#![allow(clippy::unwrap_used)]

mod common;

use common::{batch, run, test_dir, values, view};
use storage::{CoreResources, Durability, Log, LogConfig, ShardBudget};

/// The core's budget in this test: 64 KiB, a few small chunks.
const TAIL_CACHE_BYTES: usize = 64 * 1024;

fn config() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

/// Reads the whole log and checks every batch against `expected` (values per batch, in order).
async fn assert_reads_back(log: &Log, expected: &[Vec<Vec<u8>>]) {
    let mut offset = 0;
    let mut seen = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20).await.unwrap();
        for got in &read.batches {
            assert_eq!(&values(&got.bytes), &expected[seen], "batch {seen}");
            seen += 1;
        }
        offset = read.next_offset().unwrap();
    }
    assert_eq!(seen, expected.len());
}

/// Eight logs take turns appending ~20 KB batches on a core with a 64 KiB budget: after each
/// durable append the core's chunks are within the budget, and every log reads back all its
/// batches and keeps appending after giving its chunks away.
#[test]
fn logs_share_one_budget_least_recently_appended_give_first() {
    let dir = test_dir();
    run(async {
        let resources = CoreResources::install(ShardBudget {
            tail_cache_bytes: TAIL_CACHE_BYTES,
        });
        let mut logs = Vec::new();
        for i in 0..8 {
            logs.push(
                Log::open(dir.path().join(format!("p{i}")), config())
                    .await
                    .unwrap(),
            );
        }
        let mut expected: Vec<Vec<Vec<Vec<u8>>>> = vec![Vec::new(); logs.len()];
        for round in 0..6u64 {
            for (i, log) in logs.iter().enumerate() {
                let bytes = batch(round * 100 + i as u64, 4, 5_000, 1_000);
                let info = log.append(view(&bytes)).await.unwrap();
                log.wait_durable(info.last_offset).await.unwrap();
                expected[i].push(values(&bytes));
                // The appending log may hold up to a couple of chunks of its own beyond what
                // the others gave up (16 + 32 KiB at this size); the others stay within budget.
                assert!(
                    resources.cached_bytes() <= TAIL_CACHE_BYTES + 48 * 1024,
                    "round {round} log {i}: {} bytes cached",
                    resources.cached_bytes()
                );
            }
        }
        for (log, expected) in logs.iter().zip(&expected) {
            assert_reads_back(log, expected).await;
        }
        for log in &logs {
            log.close().await.unwrap();
        }
        assert_eq!(resources.cached_bytes(), 0, "closed logs hold no chunk");
        for (i, expected) in expected.iter().enumerate() {
            let log = Log::open(dir.path().join(format!("p{i}")), config())
                .await
                .unwrap();
            assert_reads_back(&log, expected).await;
            log.close().await.unwrap();
        }
    });
}
