//! [`SharedBytes`]: a read-only, reference-counted slice of an aligned buffer. Reads hand out
//! batches as these slices, straight from the tail cache or from a DMA read buffer, so a batch
//! goes from disk to socket without being copied or re-encoded.

use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use glommio::io::{DmaBuffer, ReadResult};

use super::buffer::AlignedBuffer;

/// Immutable bytes backed by a shared aligned buffer. Cloning is a reference-count bump.
/// Every slice starts where a batch starts, so it is 16-aligned in memory and rkyv records in
/// it can be accessed in place.
#[derive(Clone)]
pub struct SharedBytes {
    backing: Backing,
}

#[derive(Clone)]
enum Backing {
    /// A slice of an append chunk: `[start, start + len)` lies below the chunk's fill mark,
    /// which is never written again.
    Chunk {
        buffer: Rc<DmaBuffer>,
        start: usize,
        len: usize,
    },
    /// A slice of a DMA read.
    Read(ReadResult),
}

impl SharedBytes {
    /// Slice of a chunk. The caller guarantees the range is below the chunk's fill mark (bytes
    /// there are never written again) and inside the buffer.
    pub(super) fn from_chunk(buffer: Rc<DmaBuffer>, start: usize, len: usize) -> Self {
        assert!(start + len <= buffer.len(), "chunk slice out of bounds");
        SharedBytes {
            backing: Backing::Chunk { buffer, start, len },
        }
    }

    /// The first `len` bytes of a buffer that nobody writes any more (a copy made for a batch
    /// that straddled two chunks).
    pub(crate) fn from_buffer(buffer: AlignedBuffer, len: usize) -> Self {
        Self::from_chunk(Rc::new(buffer.into_dma()), 0, len)
    }

    /// No bytes.
    pub(crate) fn empty() -> Self {
        Self::from_read(ReadResult::default())
    }

    /// A DMA read result.
    pub(super) fn from_read(read: ReadResult) -> Self {
        SharedBytes {
            backing: Backing::Read(read),
        }
    }

    /// A sub-range of these bytes, sharing the buffer. `None` when out of bounds.
    pub fn slice(&self, start: usize, len: usize) -> Option<SharedBytes> {
        if start.checked_add(len)? > self.len() {
            return None;
        }
        let backing = match &self.backing {
            Backing::Chunk {
                buffer,
                start: base,
                ..
            } => Backing::Chunk {
                buffer: buffer.clone(),
                start: base + start,
                len,
            },
            Backing::Read(read) => {
                if len == 0 {
                    Backing::Read(ReadResult::default())
                } else {
                    Backing::Read(ReadResult::slice(read, start, len)?)
                }
            }
        };
        Some(SharedBytes { backing })
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.backing {
            Backing::Chunk { buffer, start, len } => {
                // SAFETY: `from_chunk` checked that the range lies inside the allocation, and its
                // caller guarantees the range lies below the chunk's fill mark. The appender only
                // writes at or above the fill mark (see `AppendChunk::append`), so these bytes are
                // initialised and never mutated while this shared slice exists. The pointer comes
                // from the buffer's own allocation (not from a reference), and the `Rc` keeps the
                // allocation alive for the lifetime of `self`.
                unsafe { std::slice::from_raw_parts(buffer.as_ptr().add(*start), *len) }
            }
            Backing::Read(read) => read,
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish()
    }
}
