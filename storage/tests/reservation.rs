//! The active segment's disk reservation grows with its data: fallocate steps start at
//! `PREALLOCATE_FIRST_STEP_BYTES` and double up to `preallocate_bytes`, so a partition with a
//! few KB reserves 64 KiB, not 64 MiB, and a busy one still reserves ahead of its writes.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::{batch, run, test_dir, view};
use storage::{Durability, Log, LogConfig, PREALLOCATE_FIRST_STEP_BYTES};

/// Largest step in this test: 256 KiB, so the cap shows after a few MiB.
const STEP_MAX_BYTES: u64 = 256 * 1024;

/// After every append, the segment file (grown by fallocate) holds the data, is at most
/// twice the data (or the first step) while doubling, and at most one step beyond the data
/// once the step is capped; its allocated blocks match.
#[test]
fn the_reservation_doubles_from_a_small_first_step_up_to_the_cap() {
    let dir = test_dir();
    run(async {
        let config = LogConfig {
            durability: Durability::Never,
            preallocate_bytes: STEP_MAX_BYTES,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).await.unwrap();
        let segment = dir.path().join("00000000000000000000.log");
        let mut steps = Vec::new();
        for tag in 0..200u64 {
            let bytes = batch(tag, 4, 5_000, 1_000);
            log.append(view(&bytes)).await.unwrap();
            let data = log.size_bytes();
            let metadata = std::fs::metadata(&segment).unwrap();
            let reserved = metadata.len();
            assert!(reserved >= data, "reserved {reserved} < data {data}");
            let doubling_bound = PREALLOCATE_FIRST_STEP_BYTES.max(2 * data.next_multiple_of(4096));
            let capped_bound = data.next_multiple_of(4096) + STEP_MAX_BYTES;
            assert!(
                reserved <= doubling_bound.min(capped_bound.max(PREALLOCATE_FIRST_STEP_BYTES)),
                "after {data} bytes: {reserved} reserved"
            );
            assert!(metadata.blocks() * 512 <= reserved + 4096);
            if steps.last() != Some(&reserved) {
                steps.push(reserved);
            }
        }
        assert_eq!(steps[0], PREALLOCATE_FIRST_STEP_BYTES, "steps: {steps:?}");
        assert!(steps.len() > 6, "steps: {steps:?}");
        log.close().await.unwrap();
    });
}
