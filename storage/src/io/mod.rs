//! The I/O seam: the only module that touches files and directories, and the only one that
//! imports glommio's file API (`grep -rn "glommio::io\|std::fs" storage/src` lists only this
//! folder; `tests/io_seam.rs` fails otherwise). Everything above it speaks in positions,
//! [`AlignedBuffer`]s, [`WriteBuffer`]s and [`SharedBytes`].
//!
//! Each file consults the log's [`FaultPlan`] (tests only) before every operation, so the
//! failure paths of the log (failed fsync, full disk, torn writes, read errors) run against
//! real files.
//!
//! glommio is barely maintained; keeping it behind this small surface means a change of runtime
//! (raw io_uring, monoio, ...) rewrites this folder and nothing else.

mod buffer;
mod bytes;
mod chunk;
mod dir;
mod faults;
mod file;
pub mod metadata;
mod signal;

pub(crate) use buffer::{AlignedBuffer, WriteBuffer};
pub use bytes::SharedBytes;
pub(crate) use chunk::AppendChunk;
pub use dir::check_direct_io;
pub(crate) use dir::{
    create_dir_all, file_exists, list_dir, prime_device_probe, remove_file, sync_dir,
};
pub use faults::{FaultCounts, FaultPlan};
pub(crate) use file::{FileOptions, SegmentFile};
pub use signal::Signal;

/// Rounds `value` down to a multiple of `align` (a power of two).
pub(crate) const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub(crate) const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// A fresh directory for a unit test, on the real disk under `target/` (never tmpfs: O_DIRECT).
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
