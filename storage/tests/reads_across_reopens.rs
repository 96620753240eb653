//! Reads after reopening a log that was appended to after an earlier reopen, including when a
//! reopen rolled the segment (old record timestamps make the segment older than its maximum
//! age): one read continues from a sealed segment into the next while its budget allows.
#![allow(clippy::unwrap_used)]

mod common;

use common::{batch, run, test_dir, view};
use storage::{Durability, Log, LogConfig};

/// Append, close, reopen, append, crash (drop), reopen: every batch reads back in one read.
#[test]
fn every_batch_reads_back_after_two_reopens() {
    let dir = test_dir();
    let config = || LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    };
    run(async {
        let log = Log::open(dir.path(), config()).await.unwrap();
        for i in 0..2 {
            let info = log
                .append(view(&batch(i, 2, 10, storage::now_ms())))
                .await
                .unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        log.close().await.unwrap();
        let log = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(
            log.read(0, 4 << 20).await.unwrap().batches.len(),
            2,
            "a read before appending"
        );
        let info = log
            .append(view(&batch(9, 2, 10, storage::now_ms())))
            .await
            .unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        assert_eq!(
            log.read(0, 1 << 20).await.unwrap().batches.len(),
            3,
            "before the crash"
        );
        drop(log);
        let log = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(log.log_end_offset(), 6);
        let read = log.read(0, 4 << 20).await.unwrap();
        assert_eq!(read.batches.len(), 3, "after the crash");
        let read = log.read(0, 1 << 20).await.unwrap();
        assert_eq!(read.batches.len(), 3, "after the crash, again");
        let read = log
            .read_bounded(0, 1 << 20, log.durable_offset())
            .await
            .unwrap();
        assert_eq!(read.batches.len(), 3, "bounded by the durable offset");
    });
}

/// Records stamped in 2023 make each reopened segment roll at the next append; a read from the
/// first segment still returns the batches of the next one.
#[test]
fn read_from_the_middle_after_reopens() {
    use wire::BatchBuilder;
    let dir = test_dir();
    let config = || LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    };
    let make = |seq: i32, values: &[&str]| {
        let mut builder = BatchBuilder::new().with_producer(0, 0, seq);
        for v in values {
            builder.push(1_700_000_000_000, None, v.as_bytes(), &[], None);
        }
        builder.build().unwrap()
    };
    run(async {
        let log = Log::open(dir.path(), config()).await.unwrap();
        for (seq, values) in [(0, vec!["a", "b", "c"]), (3, vec!["d"])] {
            let info = log.append(view(&make(seq, &values))).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        log.close().await.unwrap();
        let log = Log::open(dir.path(), config()).await.unwrap();
        assert_eq!(log.read(0, 4 << 20).await.unwrap().batches.len(), 2);
        let info = log.append(view(&make(4, &["e", "f"]))).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        drop(log);
        let log = Log::open(dir.path(), config()).await.unwrap();
        assert!(
            log.segment_count() >= 2,
            "the reopened log did not roll ({} segment): no cross-segment read to check",
            log.segment_count()
        );
        let bases = |read: storage::ReadBatches| -> Vec<u64> {
            read.batches.iter().map(|b| b.base_offset).collect()
        };
        assert_eq!(
            bases(log.read(0, 4 << 20).await.unwrap()),
            [0, 3, 4],
            "from 0"
        );
        assert_eq!(bases(log.read(3, 1 << 20).await.unwrap()), [3, 4], "from 3");
    });
}
