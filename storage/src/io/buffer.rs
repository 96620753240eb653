//! Aligned buffers that cross the I/O seam: [`AlignedBuffer`], an owned page-aligned buffer the
//! layers above fill (append chunks, copies of a partial tail, index files), and
//! [`WriteBuffer`], what a disk write takes. Both wrap glommio's `DmaBuffer`, which only this
//! folder names.

use std::rc::Rc;

use glommio::io::DmaBuffer;

/// An owned, page-aligned buffer suitable for O_DIRECT writes.
pub(crate) struct AlignedBuffer(DmaBuffer);

impl AlignedBuffer {
    pub(super) fn from_dma(buffer: DmaBuffer) -> Self {
        AlignedBuffer(buffer)
    }

    pub(super) fn into_dma(self) -> DmaBuffer {
        self.0
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes, for filling.
    pub(crate) fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

/// The source of one disk write: a full append chunk shared with its readers (no copy), or an
/// owned buffer (a copy of part of a chunk, an index file).
pub(crate) struct WriteBuffer(pub(super) WriteSource);

pub(super) enum WriteSource {
    Shared(Rc<DmaBuffer>),
    Owned(DmaBuffer),
}

impl WriteBuffer {
    /// Bytes to write.
    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            WriteSource::Shared(buffer) => buffer.len(),
            WriteSource::Owned(buffer) => buffer.len(),
        }
    }

    /// The bytes (the fault-injecting path copies a prefix out of them).
    pub(super) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            WriteSource::Shared(buffer) => buffer.as_bytes(),
            WriteSource::Owned(buffer) => buffer.as_bytes(),
        }
    }
}

impl From<AlignedBuffer> for WriteBuffer {
    fn from(buffer: AlignedBuffer) -> Self {
        WriteBuffer(WriteSource::Owned(buffer.into_dma()))
    }
}
