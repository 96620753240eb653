//! No file is taken away under a reader: retention (and `delete_segments_before`) may remove a
//! segment while a read of it runs, and `close` may run while reads are pending. The read then
//! returns its data or a clear error, never garbage or a panic, and `close` returns only once
//! no read is left, so the caller may delete the directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::{batch, run, small_config, test_dir, values};
use storage::{Durability, Log, StorageError};

/// Records per batch, and batches appended.
const RECORDS: usize = 3;
const BATCHES: u64 = 150;

/// A log of many small sealed segments, every batch durable; returns the values per batch.
async fn filled_log(dir: &std::path::Path) -> (Log, Vec<Vec<Vec<u8>>>) {
    let log = Log::open(dir, small_config(Durability::Never))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for tag in 0..BATCHES {
        let bytes = batch(tag, RECORDS, 1_000, 1_000 + tag as i64);
        log.append(common::view(&bytes)).await.unwrap();
        expected.push(values(&bytes));
    }
    log.flush().await.unwrap();
    assert!(log.segment_count() > 4, "64 KiB segments must have rolled");
    (log, expected)
}

/// The outcome of one read: the batches' values matched, or a clear out-of-range error.
fn check_read(
    result: Result<storage::ReadBatches, StorageError>,
    expected: &[Vec<Vec<u8>>],
) -> bool {
    match result {
        Ok(read) => {
            assert!(!read.batches.is_empty());
            for got in &read.batches {
                let index = (got.base_offset / RECORDS as u64) as usize;
                assert_eq!(
                    values(&got.bytes),
                    expected[index],
                    "batch at {}",
                    got.base_offset
                );
            }
            true
        }
        Err(StorageError::OffsetOutOfRange { .. }) => false,
        Err(other) => panic!("a read racing retention failed unclearly: {other:?}"),
    }
}

/// Reads of every sealed segment start (and suspend on their disk reads) while retention
/// deletes all of them: each read returns its batches or `OffsetOutOfRange`, and nothing
/// panics. Run on a reopened log, so the reads must also load index files retention removes.
#[test]
fn a_read_racing_retention_returns_its_data_or_a_clear_error() {
    let dir = test_dir();
    run(async {
        let (log, expected) = filled_log(dir.path()).await;
        log.close().await.unwrap();
        let log = Rc::new(
            Log::open(dir.path(), small_config(Durability::Never))
                .await
                .unwrap(),
        );
        let end = log.log_end_offset();
        let reads: Vec<_> = (0..end)
            .step_by(RECORDS * 2)
            .map(|offset| {
                let log = log.clone();
                glommio::spawn_local(async move { log.read(offset, 4096).await })
            })
            .collect();
        // Let every read start and reach its first await.
        futures_lite::future::yield_now().await;
        let report = log.delete_segments_before(end).await.unwrap();
        assert!(report.segments_deleted > 3);
        let mut served = 0;
        for read in reads {
            if check_read(read.await, &expected) {
                served += 1;
            }
        }
        eprintln!("{served} reads served, the others refused as out of range");
        // What retention kept still reads; what it removed is out of range.
        assert!(matches!(
            log.read(0, 1).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let start = log.log_start_offset();
        assert!(check_read(log.read(start, 1).await, &expected));
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
    });
}

/// `close` while reads are pending (the log shared with the reading tasks, as the broker
/// shares a partition with its requests): it returns only after every one of them finished,
/// each with its data or `Closed`; reads after it fail with `Closed`, and the directory can
/// then be deleted.
#[test]
fn close_waits_for_pending_reads() {
    let dir = test_dir();
    run(async {
        let (log, expected) = filled_log(dir.path()).await;
        log.close().await.unwrap();
        // Reopened: the reads must go to disk for their indexes and batches.
        let log = Rc::new(
            Log::open(dir.path(), small_config(Durability::Never))
                .await
                .unwrap(),
        );
        let end = log.log_end_offset();
        let finished = Rc::new(Cell::new(0usize));
        let reads: Vec<_> = (0..end)
            .step_by(RECORDS)
            .map(|offset| {
                let log = log.clone();
                let finished = finished.clone();
                glommio::spawn_local(async move {
                    let result = log.read(offset, 64 * 1024).await;
                    finished.set(finished.get() + 1);
                    result
                })
            })
            .collect();
        // Let every read start and reach its first await.
        futures_lite::future::yield_now().await;
        assert!(
            finished.get() < reads.len(),
            "the reads must still be pending"
        );
        log.close().await.unwrap();
        assert_eq!(
            finished.get(),
            reads.len(),
            "close returned while reads were pending"
        );
        for read in reads {
            match read.await {
                Ok(read) => {
                    for got in &read.batches {
                        let index = (got.base_offset / RECORDS as u64) as usize;
                        assert_eq!(values(&got.bytes), expected[index]);
                    }
                }
                Err(StorageError::Closed { .. }) => {}
                Err(other) => panic!("a read racing close failed unclearly: {other:?}"),
            }
        }
        assert!(matches!(
            log.read(0, 1).await,
            Err(StorageError::Closed { .. })
        ));
        std::fs::remove_dir_all(dir.path()).unwrap();
    });
}
