//! Segment files: naming, sealed segments (read-only, index on disk, loaded lazily) and the
//! aligned DMA read path that slices whole batches out of a read buffer.
//!
//! ```text
//!  <dir>/00000000000000000000.log     batches laid end to end, each a multiple of 16 bytes
//!  <dir>/00000000000000000000.index   sparse offset + time index, written when sealed
//!  <dir>/00000000000000004096.log     the next segment: named by its first offset
//! ```

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use wire::batch::{peek_header, BatchView, BATCH_HEADER_SIZE};

use crate::config::PAGE_SIZE;
use crate::error::{Result, StorageError};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::io::{align_down, align_up, file_exists, FileOptions, SegmentFile, SharedBytes};
use crate::read_ahead::{ReadAhead, ResumePoint};

/// One batch returned by a read: its offsets and its bytes, exactly as appended (with the base
/// offset stamped), sliced from an aligned buffer without a copy.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The whole batch: header and records.
    pub bytes: SharedBytes,
}

/// Path of the segment file whose first offset is `base_offset`.
pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// Path of that segment's index file.
pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// A sealed segment: immutable, summary always in memory, index loaded on demand. Shared by
/// `Rc`: a read holds one for as long as it runs, so retention that removes the segment
/// meanwhile only unlinks its files; the descriptor closes when the last holder drops it.
pub(crate) struct SealedSegment {
    pub(crate) summary: SegmentSummary,
    pub(crate) file: SegmentFile,
    pub(crate) index: RefCell<Option<Rc<SegmentIndex>>>,
    /// Set when retention removed the segment's files (readers in progress may still hold it).
    pub(crate) removed: Cell<bool>,
}

impl SealedSegment {
    /// Bytes of data in the segment.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.summary.end_position
    }

    /// The segment's index, from memory or read back from its `.index` file.
    pub(crate) async fn index(
        &self,
        dir: &Path,
        options: &FileOptions,
    ) -> Result<Rc<SegmentIndex>> {
        if let Some(index) = self.index.borrow().as_ref() {
            return Ok(index.clone());
        }
        let path = index_path(dir, self.summary.base_offset);
        let loaded = read_index_file(&path, options).await?;
        let index = match loaded {
            Some((index, summary)) if summary == self.summary => index,
            _ => {
                return Err(StorageError::Corrupt {
                    path,
                    position: 0,
                    reason: "index file changed or damaged while the log was open".into(),
                })
            }
        };
        let index = Rc::new(index);
        *self.index.borrow_mut() = Some(index.clone());
        Ok(index)
    }
}

/// Reads and decodes an `.index` file. `Ok(None)` when it is missing or invalid.
pub(crate) async fn read_index_file(
    path: &Path,
    options: &FileOptions,
) -> Result<Option<(SegmentIndex, SegmentSummary)>> {
    if !file_exists(path) {
        return Ok(None);
    }
    let file = SegmentFile::open(path, options).await?;
    let size = file.size().await?;
    let bytes = file.read(0, size as usize).await?;
    Ok(SegmentIndex::decode(&bytes))
}

/// Writes an `.index` file and makes it durable.
pub(crate) async fn write_index_file(
    path: &Path,
    bytes: &[u8],
    options: &FileOptions,
) -> Result<()> {
    let file = SegmentFile::create(path, options).await?;
    let mut buffer = file.alloc(align_up(bytes.len() as u64, PAGE_SIZE as u64) as usize);
    buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    file.write(buffer.into(), 0).await?;
    file.truncate(bytes.len() as u64).await?;
    file.fdatasync().await
}

/// What a disk read is after.
pub(crate) struct DiskRead<'a> {
    pub(crate) file: &'a SegmentFile,
    /// A batch boundary at or before the batch holding `from_offset` (from the index).
    pub(crate) start_position: u64,
    /// Base offset of the batch at `start_position`: each batch read must continue the
    /// sequence, since the base offset is outside the CRC.
    pub(crate) start_offset: u64,
    /// No batch at or past this position is read (segment end, or where the cache begins).
    pub(crate) end_position: u64,
    pub(crate) from_offset: u64,
    /// Batches whose last offset is at or past this are not returned.
    pub(crate) end_offset: u64,
    pub(crate) max_bytes: usize,
    pub(crate) batch_bytes_max: usize,
    /// The first batch is returned even when it is larger than `max_bytes` (the first pass of
    /// a read, so readers progress); a later pass of the same read returns only what fits.
    pub(crate) first_batch_exempt: bool,
}

/// Reads whole batches with aligned DMA reads, validating each (CRC included): a batch that
/// fails is corruption, since only data already written is read this way. Appends to `out`;
/// the first batch is returned even when it is larger than `max_bytes` if `first_batch_exempt`.
///
/// Takes bytes `read_ahead` holds for a range it reads instead of reading them again.
/// Returns where the next read would resume when this one stopped because `max_bytes` was
/// spent while the file has more before `end_position` (a candidate for reading ahead).
pub(crate) async fn read_from_disk(
    request: DiskRead<'_>,
    out: &mut Vec<ReadBatch>,
    read_ahead: &ReadAhead,
) -> Result<Option<ResumePoint>> {
    let DiskRead {
        file,
        start_position,
        start_offset,
        end_position,
        from_offset,
        end_offset,
        max_bytes,
        batch_bytes_max,
        first_batch_exempt,
    } = request;
    let corrupt = |position: u64, reason: String| StorageError::Corrupt {
        path: file.path().to_path_buf(),
        position,
        reason,
    };
    let mut position = start_position;
    let mut expected_offset = start_offset;
    let mut buffer = SharedBytes::empty();
    let mut buffer_start = 0u64;
    let mut taken = 0usize;
    let mut resume = None;
    // Whether a batch of `length` bytes would pass the budget (the first one of an exempt
    // read never does).
    let over_budget = |taken: usize, length: u32| {
        (taken > 0 || !first_batch_exempt) && taken + length as usize > max_bytes
    };
    while position < end_position {
        // Read enough for the header, then for the whole batch.
        let mut need = BATCH_HEADER_SIZE as u64;
        let header = loop {
            if position < buffer_start || position + need > buffer_start + buffer.len() as u64 {
                let start = align_down(position, PAGE_SIZE as u64);
                // The header of the batch after the budget too: whether it fits is decided
                // from its header, which would otherwise cost a read of its own.
                let wanted = (max_bytes.saturating_sub(taken) as u64).max(need)
                    + (position - start)
                    + BATCH_HEADER_SIZE as u64;
                let len = align_up(wanted.min(end_position - start), PAGE_SIZE as u64);
                buffer = match read_ahead.take(file.path(), start, position + need).await {
                    Some(bytes) => bytes,
                    None => file.read_aligned(start, len as usize).await?,
                };
                buffer_start = start;
                if position + need > buffer_start + buffer.len() as u64 {
                    return Err(corrupt(
                        position,
                        "batch runs past the end of the file".into(),
                    ));
                }
            }
            let at = (position - buffer_start) as usize;
            let header = peek_header(&buffer[at..], batch_bytes_max)
                .map_err(|e| corrupt(position, e.to_string()))?;
            if need >= u64::from(header.batch_length) {
                break header;
            }
            need = u64::from(header.batch_length);
            if header.last_offset() < from_offset
                || header.last_offset() >= end_offset
                || over_budget(taken, header.batch_length)
            {
                break header; // skipped, or the end of this read: its body is not needed
            }
        };
        if header.base_offset != expected_offset {
            return Err(corrupt(
                position,
                format!(
                    "batch has base offset {} where {expected_offset} was expected",
                    header.base_offset
                ),
            ));
        }
        expected_offset = header.next_offset();
        let batch_end = position + u64::from(header.batch_length);
        if header.last_offset() < from_offset {
            position = batch_end;
            continue;
        }
        if header.last_offset() >= end_offset {
            break;
        }
        if over_budget(taken, header.batch_length) {
            resume = Some(ResumePoint {
                position,
                offset: header.base_offset,
            });
            break;
        }
        let at = (position - buffer_start) as usize;
        let view = BatchView::validate(&buffer[at..], batch_bytes_max)
            .map_err(|e| corrupt(position, e.to_string()))?;
        let bytes = buffer
            .slice(at, view.len())
            .ok_or_else(|| corrupt(position, "batch outside the read buffer".into()))?;
        out.push(ReadBatch {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            bytes,
        });
        taken += view.len();
        position = batch_end;
        if taken >= max_bytes {
            resume = (position < end_position).then_some(ResumePoint {
                position,
                offset: expected_offset,
            });
            break;
        }
    }
    Ok(resume)
}
