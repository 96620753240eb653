//! Recovery: walk a segment file batch by batch, validate each one (header, length, CRC32C,
//! offset continuity) and rebuild its index. The first batch that fails ends the walk; the
//! caller decides whether that is a torn tail to cut (the active segment after a crash) or
//! corruption to report (a sealed segment).

use wire::batch::{peek_header, BatchView, BATCH_HEADER_SIZE};

use crate::config::PAGE_SIZE;
use crate::error::Result;
use crate::index::{SegmentIndex, SegmentSummary};
use crate::io::{align_down, align_up, SegmentFile, SharedBytes};

/// Bytes read per step of a scan: large enough for sequential bandwidth, small enough to stay
/// out of the way of other work on the shard.
const SCAN_READ_BYTES: usize = 1 << 20;

/// Marks a scan that reached zeroed (preallocated) space: the end of the log, not damage.
const ZEROED: &str = "zeroed space";

/// Where and why a scan stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidTail {
    /// Byte position of the first invalid batch.
    pub(crate) position: u64,
    /// What was wrong with it.
    pub(crate) reason: String,
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    pub(crate) summary: SegmentSummary,
    pub(crate) index: SegmentIndex,
    /// Set when bytes after `summary.end_position` were not a valid batch.
    pub(crate) invalid: Option<InvalidTail>,
    /// First timestamp of the first batch, if any (for roll by age).
    pub(crate) first_timestamp_ms: Option<i64>,
    /// Position of the last valid batch that starts in the final page before the end.
    pub(crate) first_batch_in_tail_page: Option<u64>,
}

/// Scans `file` (a segment whose first batch has `base_offset`) from its start.
pub(crate) async fn scan_segment(
    file: &SegmentFile,
    base_offset: u64,
    index_interval_bytes: u32,
    batch_bytes_max: usize,
) -> Result<ScanOutcome> {
    let file_size = file.size().await?;
    let mut index = SegmentIndex::default();
    let mut position = 0u64;
    let mut next_offset = base_offset;
    let mut first_timestamp_ms = None;
    let mut batch_starts_in_tail_page: Option<u64> = None;
    let mut buffer = SharedBytes::empty();
    let mut buffer_start = 0u64;
    let invalid = loop {
        if position >= file_size {
            break None;
        }
        if position + BATCH_HEADER_SIZE as u64 > file_size {
            break Some(InvalidTail {
                position,
                reason: format!("{} stray bytes after the last batch", file_size - position),
            });
        }
        // Make sure the buffer holds the header, then the whole batch.
        let mut need = BATCH_HEADER_SIZE as u64;
        let header = loop {
            let have_end = buffer_start + buffer.len() as u64;
            if position < buffer_start || position + need > have_end {
                let start = align_down(position, PAGE_SIZE as u64);
                let len =
                    align_up(position + need - start, PAGE_SIZE as u64).max(SCAN_READ_BYTES as u64);
                buffer = file.read_aligned(start, len as usize).await?;
                buffer_start = start;
                if position + need > buffer_start + buffer.len() as u64 {
                    break Err(format!(
                        "batch runs past the end of the file ({file_size} bytes)"
                    ));
                }
            }
            let at = (position - buffer_start) as usize;
            match peek_header(&buffer[at..], batch_bytes_max) {
                // Zeros where a header should be: the preallocated, never written part of the
                // file, i.e. the normal end of the log.
                Err(_) if buffer[at..at + BATCH_HEADER_SIZE].iter().all(|b| *b == 0) => {
                    break Err(ZEROED.into())
                }
                Err(error) => break Err(error.to_string()),
                Ok(header) if need < u64::from(header.batch_length) => {
                    need = u64::from(header.batch_length)
                }
                Ok(header) => break Ok(header),
            }
        };
        let header = match header {
            Ok(header) => header,
            Err(reason) if reason == ZEROED => break None,
            Err(reason) => break Some(InvalidTail { position, reason }),
        };
        let at = (position - buffer_start) as usize;
        if let Err(error) = BatchView::validate(&buffer[at..], batch_bytes_max) {
            break Some(InvalidTail {
                position,
                reason: error.to_string(),
            });
        }
        if header.base_offset != next_offset {
            break Some(InvalidTail {
                position,
                reason: format!(
                    "batch has base offset {} where {next_offset} was expected",
                    header.base_offset
                ),
            });
        }
        let Ok(relative_offset) = u32::try_from(header.base_offset - base_offset) else {
            break Some(InvalidTail {
                position,
                reason: "offset too far from the segment's base offset".into(),
            });
        };
        index.on_batch(
            relative_offset,
            position as u32,
            header.batch_length,
            header.max_timestamp_ms,
            index_interval_bytes,
        );
        first_timestamp_ms.get_or_insert(header.first_timestamp_ms);
        let end = position + u64::from(header.batch_length);
        // Remember the first batch that starts in each page; the one of the final page tells
        // the appender where cached batches begin.
        let page = align_down(position, PAGE_SIZE as u64);
        if batch_starts_in_tail_page.is_none_or(|p| align_down(p, PAGE_SIZE as u64) != page) {
            batch_starts_in_tail_page = Some(position);
        }
        next_offset = header.next_offset();
        position = end;
    };
    let end_position = position;
    let tail_page = align_down(end_position, PAGE_SIZE as u64);
    let first_batch_in_tail_page = batch_starts_in_tail_page.filter(|p| *p >= tail_page);
    Ok(ScanOutcome {
        summary: SegmentSummary {
            base_offset,
            end_position,
            next_offset,
            max_timestamp_ms: index.max_timestamp_ms(),
        },
        index,
        invalid,
        first_timestamp_ms,
        first_batch_in_tail_page,
    })
}
