//! Read-ahead of sequential disk readers: a reader going through data no longer in the tail
//! cache gets its next range read while it handles the current one, reads back exactly what
//! was written, and never sees bytes of a range that truncation replaced; the read-ahead
//! stays within the core's budget and is given back when the log closes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::rc::Rc;

use common::{batch, run, test_dir, values, view};
use storage::{CoreResources, Durability, Log, LogConfig, ShardBudget};

/// The core's tail-cache budget here: 256 KiB, so the read-ahead budget is 64 KiB (32 KiB per
/// read ahead) and most of the log is read from disk.
const TAIL_CACHE_BYTES: usize = 256 * 1024;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 * 1024,
        write_chunk_bytes: 8 * 1024,
        tail_cache_bytes_max: 16 * 1024,
        index_interval_bytes: 4096,
        preallocate_bytes: 64 * 1024,
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

/// Installs the core's resources with [`TAIL_CACHE_BYTES`] and opens a log in `dir`.
async fn open(dir: &Path, config: LogConfig) -> (Rc<CoreResources>, Log) {
    let resources = CoreResources::install(ShardBudget {
        tail_cache_bytes: TAIL_CACHE_BYTES,
    });
    let log = Log::open(dir.join("p"), config).await.unwrap();
    (resources, log)
}

/// Appends `batches` batches of 4 records of 1 000 bytes (about 4 KiB each) tagged from
/// `first_tag`, durably, and returns their values.
async fn append(log: &Log, first_tag: u64, batches: u64) -> Vec<Vec<Vec<u8>>> {
    let mut expected = Vec::new();
    for tag in first_tag..first_tag + batches {
        let bytes = batch(tag, 4, 1_000, 1_000);
        let info = log.append(view(&bytes)).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        expected.push(values(&bytes));
    }
    expected
}

/// Reads from `offset` to the end in fetches of `max_bytes`, as a consumer does, returning
/// the values of every batch.
async fn read_all(log: &Log, mut offset: u64, max_bytes: usize) -> Vec<Vec<Vec<u8>>> {
    let mut got = Vec::new();
    while offset < log.log_end_offset() {
        let read = log.read(offset, max_bytes).await.unwrap();
        for batch in &read.batches {
            got.push(values(&batch.bytes));
        }
        offset = read.next_offset().unwrap();
    }
    got
}

/// A sequential reader through ~1.6 MB in 24 KiB fetches (sealed segments and the active
/// segment's disk part) reads back every batch in order, every fetch after its first is
/// served by read-ahead, and a closed log holds no read-ahead bytes.
#[test]
fn a_sequential_reader_is_served_by_read_ahead() {
    let dir = test_dir();
    run(async {
        let (resources, log) = open(dir.path(), config()).await;
        let expected = append(&log, 0, 400).await;
        assert!(log.segment_count() > 3, "several sealed segments");
        let mut offset = 0;
        let mut got = Vec::new();
        let mut fetches = 0u64;
        while offset < log.log_end_offset() {
            let read = log.read(offset, 24 * 1024).await.unwrap();
            fetches += 1;
            for batch in &read.batches {
                got.push(values(&batch.bytes));
            }
            offset = read.next_offset().unwrap();
        }
        assert_eq!(got, expected);
        // Every fetch but the first finds its bytes read ahead, across the segment files too
        // (a fetch that ends a file reads ahead the start of the next one).
        let hits = resources.read_ahead_hits();
        assert_eq!(hits + 1, fetches, "fetches served by read-ahead");
        log.close().await.unwrap();
        assert_eq!(resources.read_ahead_bytes(), 0, "a closed log holds none");
    });
}

/// Bytes read ahead are not handed out after a truncation replaced the batches they hold: a
/// reader continuing where it stopped gets the new batches, and a read from the start gets
/// the batches kept and then the new ones.
#[test]
fn truncation_discards_what_was_read_ahead() {
    let dir = test_dir();
    run(async {
        // One segment: everything below the tail cache is the active segment's disk part.
        let config = LogConfig {
            segment_bytes_max: 64 << 20,
            ..config()
        };
        let (resources, log) = open(dir.path(), config).await;
        let old = append(&log, 0, 60).await;
        assert_eq!(log.segment_count(), 1);
        // One fetch: it stops with more on disk, so the range after it is read ahead.
        let first = log.read(0, 24 * 1024).await.unwrap();
        let resume = first.next_offset().unwrap();
        assert!(resume > 8, "the first fetch read past offset 8");
        assert!(resources.read_ahead_bytes() > 0, "a read ahead started");
        // Cut the log before where the reader stopped (the truncation's own lookup does not
        // reach the range read ahead) and write other batches of the same sizes: the
        // positions read ahead now hold other batches with the same offsets.
        assert_eq!(log.truncate_to(8).await.unwrap(), 8);
        let new = append(&log, 1_000, 40).await;
        let skipped = usize::try_from((resume - 8) / 4).unwrap();
        assert_eq!(read_all(&log, resume, 24 * 1024).await, new[skipped..]);
        // And from the start: the two batches kept, then the new ones.
        let mut whole = old[..2].to_vec();
        whole.extend(new);
        assert_eq!(read_all(&log, 0, 24 * 1024).await, whole);
        log.close().await.unwrap();
        assert_eq!(resources.read_ahead_bytes(), 0);
    });
}

/// Bytes read ahead that nobody takes (the reader stopped) go back to the core's budget after
/// a while, without the log being read or closed.
#[test]
fn read_ahead_nobody_takes_is_dropped() {
    let dir = test_dir();
    run(async {
        let (resources, log) = open(dir.path(), config()).await;
        append(&log, 0, 100).await;
        log.read(0, 24 * 1024).await.unwrap();
        assert!(resources.read_ahead_bytes() > 0, "a read ahead started");
        // READ_AHEAD_UNTAKEN_MAX is 2 s; poll for the release rather than sleep a fixed time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while resources.read_ahead_bytes() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes still read ahead after 10 s",
                resources.read_ahead_bytes()
            );
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        }
        log.close().await.unwrap();
    });
}
