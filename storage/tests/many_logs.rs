//! Scale: thousands of partition logs on one core cost disk and memory in proportion to the
//! data written and the core's budgets, not to their number. 3000 logs, one small batch each:
//! the old engine reserved 64 MiB of disk and pinned a 1 MiB write buffer per log (190 GB of
//! reservation and 3 GiB of memory here); now each log reserves one 64 KiB fallocate step and
//! keeps at most its tail page once the core's cache budget is reached.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{batch, run, test_dir, values, view};
use storage::{
    CoreResources, Durability, Log, LogConfig, ShardBudget, PREALLOCATE_FIRST_STEP_BYTES,
};

/// Logs opened on the one executor.
const LOGS: usize = 3000;

/// The core's tail-cache budget in this test: 16 MiB.
const TAIL_CACHE_BYTES: usize = 16 << 20;

/// Disk allowed per log beyond its data: one first fallocate step (64 KiB) plus the directory
/// itself and one more block of slack (8 KiB).
const DISK_BYTES_PER_LOG: u64 = PREALLOCATE_FIRST_STEP_BYTES + 8 * 1024;

/// Memory allowed per open idle log: its tail page (4 KiB) plus its state (glommio's file
/// object, index, flusher task, signals): 8 KiB in all. (Measured: about 2.5 KiB.)
const RSS_BYTES_PER_LOG: u64 = 8 * 1024;

/// Memory allowed besides: the cache budget, the spare chunks (8 x 16 KiB at most here) and
/// 16 MiB for the allocator's own slack.
const RSS_BYTES_FIXED: u64 = TAIL_CACHE_BYTES as u64 + (16 << 20);

/// Resident memory of this process, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page_size
}

/// Bytes of disk allocated to everything under `dir` (st_blocks counts 512-byte units).
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            total += allocated_bytes(&entry.path());
        }
    }
    total
}

fn config() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

fn log_dir(base: &Path, i: usize) -> std::path::PathBuf {
    base.join(format!("p{i:05}"))
}

/// Open 3000 logs on one executor, append a small batch to each and sync it: the directory's
/// allocated blocks stay within the data plus 72 KiB per log, and the process's resident
/// memory grows by at most 8 KiB per log plus the cache budget plus 16 MiB (56 MiB here,
/// where one 1 MiB buffer per log would be 3 GiB). Then close all,
/// reopen all and read every batch back.
#[test]
fn thousands_of_logs_cost_what_their_data_costs() {
    let dir = test_dir();
    run(async {
        let resources = CoreResources::install(ShardBudget {
            tail_cache_bytes: TAIL_CACHE_BYTES,
        });
        // Warm up the executor and the allocator with one log, then measure from there.
        let warm = Log::open(dir.path().join("warm"), config()).await.unwrap();
        warm.close().await.unwrap();
        std::fs::remove_dir_all(dir.path().join("warm")).unwrap();
        let rss_before = rss_bytes();

        let mut logs = Vec::with_capacity(LOGS);
        let mut data_bytes = 0u64;
        let mut expected = Vec::with_capacity(LOGS);
        for i in 0..LOGS {
            let log = Log::open(log_dir(dir.path(), i), config()).await.unwrap();
            let bytes = batch(i as u64, 5, 150, 1_000);
            let info = log.append(view(&bytes)).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
            data_bytes += bytes.len() as u64;
            expected.push(values(&bytes));
            logs.push(log);
        }
        let rss_growth = rss_bytes().saturating_sub(rss_before);
        let disk = allocated_bytes(dir.path());
        let disk_bound = data_bytes + LOGS as u64 * DISK_BYTES_PER_LOG;
        let rss_bound = RSS_BYTES_FIXED + LOGS as u64 * RSS_BYTES_PER_LOG;
        eprintln!(
            "{LOGS} logs, {data_bytes} bytes of data: {disk} bytes allocated on disk (bound \
             {disk_bound}), resident memory grew by {rss_growth} bytes (bound {rss_bound}), \
             core cache holds {} bytes",
            resources.cached_bytes()
        );
        assert!(
            resources.cached_bytes() <= TAIL_CACHE_BYTES,
            "the core's chunks exceed its budget: {}",
            resources.cached_bytes()
        );
        assert!(disk <= disk_bound, "disk use {disk} > {disk_bound}");
        assert!(
            rss_growth <= rss_bound,
            "RSS growth {rss_growth} > {rss_bound}"
        );

        for log in logs {
            log.close().await.unwrap();
        }
        for (i, values_expected) in expected.iter().enumerate() {
            let log = Log::open(log_dir(dir.path(), i), config()).await.unwrap();
            let read = log.read(0, 1 << 20).await.unwrap();
            assert_eq!(read.batches.len(), 1, "log {i}");
            assert_eq!(&values(&read.batches[0].bytes), values_expected, "log {i}");
            log.close().await.unwrap();
        }
    });
}
