//! Helpers shared by the storage integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;

use storage::{Durability, LogConfig};
use wire::batch::{BatchBuilder, BatchView};

/// Runs `future` to completion on a fresh glommio executor on this thread.
pub fn run<T>(future: impl Future<Output = T>) -> T {
    let executor = glommio::LocalExecutorBuilder::default().make().expect(
        "cannot start a glommio executor (is io_uring available, `ulimit -l` high enough?)",
    );
    executor.run(future)
}

/// A fresh directory on the real disk under `target/` (O_DIRECT does not work on tmpfs).
pub fn test_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(&base).unwrap()
}

/// A small-footprint config so tests exercise rolls, chunk boundaries and cache eviction.
pub fn small_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        write_chunk_bytes: 8 * 1024,
        tail_cache_bytes_max: 16 * 1024,
        index_interval_bytes: 1024,
        preallocate_bytes: 32 * 1024,
        durability,
        ..LogConfig::default()
    }
}

/// A batch of `count` records whose values are `"{tag}-{i}"` padded to `value_len` bytes,
/// timestamps starting at `timestamp_ms`.
pub fn batch(
    tag: u64,
    count: usize,
    value_len: usize,
    timestamp_ms: i64,
) -> rkyv::util::AlignedVec<16> {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let mut value = format!("{tag}-{i}").into_bytes();
        value.resize(value_len.max(value.len()), b'.');
        builder.push(
            timestamp_ms + i as i64,
            Some(format!("k{i}").as_bytes()),
            &value,
            &[],
            None,
        );
    }
    builder.build().unwrap()
}

/// Validates `bytes` as one batch.
pub fn view(bytes: &[u8]) -> BatchView<'_> {
    BatchView::validate(bytes, wire::limits::BATCH_SIZE_MAX).unwrap()
}

/// The values of every record in a batch read back from the log.
pub fn values(bytes: &[u8]) -> Vec<Vec<u8>> {
    let view = BatchView::validate(bytes, wire::limits::BATCH_SIZE_MAX).unwrap();
    view.records()
        .unwrap()
        .iter()
        .map(|r| r.value_bytes().to_vec())
        .collect()
}
