//! Sluice's storage engine: the partition log.
//!
//! Place: above `wire`, below the broker (the only crate that uses it); the only crate that
//! touches files. [`metadata`] writes the broker's small metadata files atomically.
//!
//! A log is a directory of segment files named by their first offset. Batches (the
//! [`wire::batch`] format) are laid end to end; each is a multiple of 16 bytes, so a batch cut out
//! of a page-aligned buffer can be read in place.
//!
//! ```text
//!  <dir>/
//!    00000000000000000000.log    sealed: read-only, O_DIRECT reads
//!    00000000000000000000.index  its sparse offset + time index (written when sealed)
//!    00000000000000812345.log    active: appended through 1 MiB aligned chunks, O_DIRECT writes
//!
//!  a segment file:
//!  +---------+---------+---------+-----+---------+------------------------------------+
//!  | batch 0 | batch 1 | batch 2 | ... | batch n | zeros up to the page end (on disk)  |
//!  +---------+---------+---------+-----+---------+------------------------------------+
//!  each batch: 64-byte header (base offset stamped by the log, CRC32C over the rest) + rkyv
//!  records + zero padding to 16 bytes
//! ```
//!
//! Durability contract (see [`Durability`]): an append returns once the batch is *logically
//! appended* (readable, offsets assigned). It is *written* when its O_DIRECT writes complete (it
//! then survives a crash of the process) and *durable* when an fdatasync covering it returns (it
//! survives a crash of the machine); [`Log::wait_durable`] waits for the latter, and appends
//! waiting together share one fdatasync. After a crash, [`Log::open`] keeps every durable batch
//! and cuts the active segment at the first batch that does not validate.
//!
//! Everything runs inside a glommio executor on the shard that owns the log; the only module that
//! touches files is `io`.

mod appender;
pub mod config;
pub mod error;
mod index;
mod io;
mod log;
pub mod metadata;
mod recovery;
mod segment;

pub use config::{Durability, LogConfig, PAGE_SIZE};
pub use error::{Result, StorageError};
pub use io::{check_direct_io, SharedBytes, Signal};
pub use log::{now_ms, AppendInfo, Log, ReadBatches, RetentionReport};
pub use segment::ReadBatch;

/// A fresh directory for a test, on the real disk under `target/` (never tmpfs: O_DIRECT).
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
    let _ = std::fs::create_dir_all(&base);
    match tempfile::tempdir_in(&base) {
        Ok(dir) => dir,
        Err(error) => panic!(
            "cannot create a test directory under {}: {error}",
            base.display()
        ),
    }
}
