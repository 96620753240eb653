//! The I/O seam: the only module that touches files and the only one that imports glommio's
//! file API. Everything above it speaks in positions, aligned buffers and [`SharedBytes`].
//!
//! glommio is barely maintained; keeping it behind this small surface means a change of runtime
//! (raw io_uring, monoio, ...) rewrites this folder and nothing else.

mod bytes;
mod chunk;
mod file;
mod signal;

pub use bytes::SharedBytes;
pub(crate) use chunk::AppendChunk;
pub use file::check_direct_io;
pub(crate) use file::{prime_device_probe, remove_file, sync_dir, SegmentFile};
pub use signal::Signal;

/// Rounds `value` down to a multiple of `align` (a power of two).
pub(crate) const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub(crate) const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}
