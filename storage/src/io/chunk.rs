//! [`AppendChunk`]: one aligned buffer that appends are copied into. It is the unit of disk
//! writes while data streams in (a full chunk is written as one O_DIRECT write, with no copy)
//! and, shared by `Rc`, the tail cache that readers slice batches out of.
//!
//! ```text
//!  file position: start                                  start + capacity
//!                 |<-------- filled, immutable -------->|<----- free ----->|
//!                 0                                    fill           capacity
//!                 ^ readers slice only here              ^ the appender writes only here
//! ```

use std::rc::Rc;

use glommio::io::DmaBuffer;

use super::buffer::{AlignedBuffer, WriteBuffer, WriteSource};
use super::bytes::SharedBytes;

/// An append buffer covering file positions `[start, start + capacity)`.
pub(crate) struct AppendChunk {
    buffer: Rc<DmaBuffer>,
    /// File position of byte 0 of the buffer; a multiple of the page size.
    start: u64,
    /// Bytes `[0, fill)` hold appended data and are never written again.
    fill: usize,
    /// Bytes `[0, submitted)` were already handed to a disk write (a flush of a partial chunk);
    /// the next write of this chunk starts at `align_down(submitted, PAGE)`.
    pub(crate) submitted: usize,
}

impl AppendChunk {
    /// Wraps a fresh buffer (from `SegmentFile::alloc`) that starts at file position `start`.
    pub(crate) fn new(buffer: AlignedBuffer, start: u64) -> Self {
        AppendChunk {
            buffer: Rc::new(buffer.into_dma()),
            start,
            fill: 0,
            submitted: 0,
        }
    }

    /// Gives the buffer back for reuse when nobody else holds it any more (no reader slice, no
    /// write in flight).
    pub(crate) fn into_buffer(self) -> Option<AlignedBuffer> {
        Rc::try_unwrap(self.buffer)
            .ok()
            .map(AlignedBuffer::from_dma)
    }

    /// File position of byte 0.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// File position just past the last appended byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.fill as u64
    }

    /// Bytes appended so far.
    pub(crate) fn fill(&self) -> usize {
        self.fill
    }

    /// Total size of the buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.buffer.len()
    }

    /// True once no byte is left.
    pub(crate) fn is_full(&self) -> bool {
        self.fill == self.capacity()
    }

    /// Copies as much of `bytes` as fits behind the fill mark; returns how many were copied.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> usize {
        let count = bytes.len().min(self.capacity() - self.fill);
        // SAFETY: `fill + count <= capacity`, so the destination lies inside the allocation.
        // The pointer is the allocation's own pointer (not derived from a reference), and the
        // range `[fill, fill + count)` is above the fill mark: no `SharedBytes` covers it (they
        // only cover `[0, fill)`), and glommio reads the buffer only for full chunks, which are
        // never appended to. The source is a distinct caller buffer, so they do not overlap.
        unsafe {
            let destination = (self.buffer.as_ptr() as *mut u8).add(self.fill);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), destination, count);
        }
        self.fill += count;
        count
    }

    /// Shares `[start, start + len)` (buffer positions) with a reader. `None` unless the range is
    /// entirely below the fill mark.
    pub(crate) fn slice(&self, start: usize, len: usize) -> Option<SharedBytes> {
        (start.checked_add(len)? <= self.fill)
            .then(|| SharedBytes::from_chunk(self.buffer.clone(), start, len))
    }

    /// The whole buffer, for the one zero-copy write of a full chunk.
    pub(crate) fn shared_buffer(&self) -> WriteBuffer {
        debug_assert!(self.is_full());
        WriteBuffer(WriteSource::Shared(self.buffer.clone()))
    }

    /// Copies filled bytes `[from, fill)` into `destination` (which must be at least that long).
    pub(crate) fn copy_filled(&self, from: usize, destination: &mut [u8]) {
        let len = self.fill - from;
        if let Some(source) = self.slice(from, len) {
            destination[..len].copy_from_slice(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use glommio::LocalExecutor;

    /// Slices handed out before later appends still read the bytes they were cut from: the
    /// appender never writes below the fill mark.
    #[test]
    fn slices_are_stable_across_appends() {
        LocalExecutor::default().run(async {
            let dir = crate::io::test_dir();
            let options = crate::io::FileOptions::default();
            let file = crate::io::SegmentFile::create(&dir.path().join("c.log"), &options)
                .await
                .unwrap();
            let mut chunk = AppendChunk::new(file.alloc(8192), 4096);
            assert_eq!(chunk.append(&[1u8; 100]), 100);
            let first = chunk.slice(0, 100).unwrap();
            assert_eq!(chunk.append(&[2u8; 9000]), 8092);
            assert!(chunk.is_full());
            assert!(first.iter().all(|b| *b == 1));
            let second = chunk.slice(100, 8092).unwrap();
            assert!(second.iter().all(|b| *b == 2));
            assert!(chunk.slice(0, 8193).is_none());
            assert_eq!(chunk.end(), 4096 + 8192);
            let mut copy = vec![0u8; 92];
            chunk.copy_filled(8100, &mut copy);
            assert!(copy.iter().all(|b| *b == 2));
        });
    }
}
