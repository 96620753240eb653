//! The record batch: a fixed 64-byte header followed by an rkyv archive of
//! the records, padded to a multiple of 16 bytes.
//!
//! The batch is the unit everything else moves: a producer builds it once
//! ([`BatchBuilder`]), the broker validates it ([`BatchView::validate_deep`])
//! and stamps its base offset ([`stamp_base_offset`]) without re-encoding,
//! the log appends the bytes verbatim and walks them back
//! ([`BatchIter`], [`peek_header`]), and consumers read the records in place
//! ([`BatchView::records`]). Nothing in between decodes or rewrites it.
//!
//! Three properties make that work:
//!
//! * **The base offset is outside the CRC.** The CRC32C covers bytes
//!   `[20, batch_length)`, the base offset lives at `[8, 16)`, so the broker
//!   can assign offsets to a producer's batch without recomputing the CRC.
//! * **Every batch length is a multiple of 16.** Batches are laid one after
//!   another in segment files and network buffers; a batch sliced out of a
//!   page-aligned buffer therefore starts 16-aligned, and so do its records
//!   at `+64`, which lets rkyv access them in place.
//! * **Validation is layered.** [`peek_header`] needs only the 64 header
//!   bytes and checks structure (enough to walk batch boundaries or frame a
//!   read); [`BatchView::validate`] adds the full length, zero padding and the
//!   CRC (enough for a log replaying its own segments); and
//!   [`BatchView::validate_deep`] adds the rkyv structure check of the
//!   records (what a broker runs on bytes from the network).

use core::fmt;
use core::iter::FusedIterator;
use core::marker::PhantomData;

use rkyv::munge::munge;
use rkyv::place::Place;
use rkyv::rancor::{self, Fallible, Strategy};
use rkyv::ser::sharing::Share;
use rkyv::ser::{Allocator, Positional, Serializer, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::{with_arena, AlignedVec};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::error::BatchError;
use crate::limits::{BATCH_SIZE_MAX, RECORDS_PER_BATCH_MAX};

/// Size in bytes of the fixed batch header; the records start right after.
pub const BATCH_HEADER_SIZE: usize = 64;

/// Every batch length is a multiple of this, so consecutive batches in an
/// aligned buffer all start (and keep their records) 16-aligned.
pub const BATCH_ALIGNMENT: usize = 16;

/// The three magic bytes every batch starts with.
pub const BATCH_MAGIC: [u8; 3] = *b"SLB";

/// The only format version this codec reads and writes.
pub const BATCH_VERSION: u8 = 1;

/// First byte covered by the CRC; everything before it (magic, version,
/// length, base offset, the CRC itself) is not.
pub const CRC_START: usize = 20;

/// Position of the little-endian `u64` base offset in the header; the broker
/// overwrites `[BASE_OFFSET_POSITION, BASE_OFFSET_POSITION + 8)` in place.
pub const BASE_OFFSET_POSITION: usize = 8;

/// Mask of the compression codec bits in `attributes` (0 = none, the only
/// codec supported so far).
pub const ATTR_COMPRESSION_MASK: u16 = 0b111;

/// `attributes` bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: u16 = 1 << 3;

/// `attributes` bit: the batch is a control batch (transaction markers).
pub const ATTR_CONTROL: u16 = 1 << 4;

/// All attribute bits defined by version 1; the rest are reserved and must
/// be zero.
const ATTR_DEFINED: u16 = ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL;

// Field positions inside the header (see the table on `BatchHeader`).
const OFF_VERSION: usize = 3;
const OFF_BATCH_LENGTH: usize = 4;
const OFF_CRC: usize = 16;
const OFF_ATTRIBUTES: usize = 20;
const OFF_PRODUCER_EPOCH: usize = 22;
const OFF_LAST_OFFSET_DELTA: usize = 24;
const OFF_RECORD_COUNT: usize = 28;
const OFF_FIRST_TIMESTAMP: usize = 32;
const OFF_MAX_TIMESTAMP: usize = 40;
const OFF_PRODUCER_ID: usize = 48;
const OFF_BASE_SEQUENCE: usize = 56;
const OFF_RECORDS_LENGTH: usize = 60;

/// One header of a record.
///
/// Headers are application metadata the broker never interprets.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value, opaque bytes.
    pub value: Vec<u8>,
}

/// One record as archived (with rkyv) inside a batch.
///
/// The record's timestamp is `first_timestamp_ms + timestamp_delta_ms` of
/// the batch header, and its offset is `base_offset + index` in the batch.
/// Tags are first-class (rather than a header convention) so that a broker
/// can filter on them without touching keys or values.
///
/// In a batch the records are one `rkyv` archive of `Vec<Record>` (see
/// [`ArchivedRecords`]); with the `pointer_width_32` and `little_endian`
/// features, every relative pointer is a little-endian `i32` and the largest
/// alignment inside the archive is 4.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Record {
    /// Milliseconds after the batch's `first_timestamp_ms` (never negative:
    /// the first timestamp is the minimum of the batch).
    pub timestamp_delta_ms: u32,
    /// Optional key (used for partitioning and compaction).
    pub key: Option<Vec<u8>>,
    /// The payload, opaque bytes.
    pub value: Vec<u8>,
    /// Application headers.
    pub headers: Vec<RecordHeader>,
    /// Optional tags the broker may filter on without reading values.
    pub tags: Option<Vec<String>>,
}

/// The archived records of a batch, accessed in place by
/// [`BatchView::records`].
pub type ArchivedRecords = ArchivedVec<ArchivedRecord>;

impl ArchivedRecord {
    /// Absolute timestamp of this record given its batch's
    /// `first_timestamp_ms` (saturating, so garbage cannot overflow).
    pub fn timestamp_ms(&self, first_timestamp_ms: i64) -> i64 {
        first_timestamp_ms.saturating_add(i64::from(self.timestamp_delta_ms.to_native()))
    }

    /// The key as a byte slice, if the record has one.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_ref().map(|key| key.as_slice())
    }

    /// The value as a byte slice.
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_slice()
    }

    /// Whether the record carries `tag`, so filters need not walk the
    /// archived option themselves.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| t.as_str() == tag))
    }
}

/// Decoded copy of the fixed header.
///
/// On the wire (all integers little-endian):
///
/// ```text
///  offset size field
///   0     3   magic               b"SLB"
///   3     1   version             1
///   4     4   batch_length: u32   total bytes incl. header and padding;
///                                 multiple of 16; >= 64
///   8     8   base_offset: u64    offset of the first record; stamped by
///                                 the broker/log, NOT covered by the CRC
///  16     4   crc: u32            CRC32C over bytes [20, batch_length)
///  20     2   attributes: u16     bits 0..=2 compression (0 = none),
///                                 bit 3 transactional, bit 4 control
///  22     2   producer_epoch: i16 (-1 = none)
///  24     4   last_offset_delta: u32   last offset = base + delta
///  28     4   record_count: u32   >= 1 and <= last_offset_delta + 1
///  32     8   first_timestamp_ms: i64  minimum record timestamp
///  40     8   max_timestamp_ms: i64    maximum record timestamp
///  48     8   producer_id: i64    (-1 = none)
///  56     4   base_sequence: i32  (-1 = none)
///  60     4   records_length: u32 length of the rkyv bytes;
///                                 batch_length == align_up(64 + this, 16)
///  64     ..  records             rkyv archive of Vec<Record>,
///                                 then zero padding to a multiple of 16
///
///  0        8        16   20                  64           batch_length
///  +--------+--------+----+-------------------+---------+----+
///  |SLB v len| base  |crc | rest of header    | records | 0s |
///  +--------+--------+----+-------------------+---------+----+
///                         |<---------- CRC32C covers ------->|
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Total bytes of the batch including header and padding.
    pub batch_length: u32,
    /// Offset of the first record; assigned by the broker, not CRC-covered.
    pub base_offset: u64,
    /// CRC32C over bytes `[20, batch_length)`.
    pub crc: u32,
    /// Compression codec and transactional/control flags.
    pub attributes: u16,
    /// Producer epoch for idempotence/transactions (-1 = none).
    pub producer_epoch: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: u32,
    /// Number of records in the archive.
    pub record_count: u32,
    /// Smallest record timestamp (ms since the epoch).
    pub first_timestamp_ms: i64,
    /// Largest record timestamp (ms since the epoch).
    pub max_timestamp_ms: i64,
    /// Producer id for idempotence/transactions (-1 = none).
    pub producer_id: i64,
    /// Sequence number of the first record for this producer (-1 = none).
    pub base_sequence: i32,
    /// Length of the rkyv bytes after the header, before padding.
    pub records_length: u32,
}

impl BatchHeader {
    /// Offset of the last record: `base_offset + last_offset_delta`.
    ///
    /// Saturates rather than overflowing; headers that passed
    /// [`peek_header`] never saturate.
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.last_offset_delta))
    }

    /// The offset after this batch, where the next batch starts
    /// (`last_offset() + 1`, saturating).
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// Whether the batch belongs to a transaction (attribute bit 3).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (attribute bit 4).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The compression codec (attribute bits 0..=2; 0 = none).
    pub fn compression(&self) -> u8 {
        // Masked to three bits, so the cast cannot truncate.
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// Encode this header (with magic and [`BATCH_VERSION`]) into its 64
    /// wire bytes, exactly as the table above. Performs no checks; used by
    /// the builder and handy for tests that need a specific header.
    pub fn encode(&self) -> [u8; BATCH_HEADER_SIZE] {
        let mut h = [0u8; BATCH_HEADER_SIZE];
        put(&mut h, 0, &BATCH_MAGIC);
        put(&mut h, OFF_VERSION, &[BATCH_VERSION]);
        put(&mut h, OFF_BATCH_LENGTH, &self.batch_length.to_le_bytes());
        put(
            &mut h,
            BASE_OFFSET_POSITION,
            &self.base_offset.to_le_bytes(),
        );
        put(&mut h, OFF_CRC, &self.crc.to_le_bytes());
        put(&mut h, OFF_ATTRIBUTES, &self.attributes.to_le_bytes());
        put(
            &mut h,
            OFF_PRODUCER_EPOCH,
            &self.producer_epoch.to_le_bytes(),
        );
        put(
            &mut h,
            OFF_LAST_OFFSET_DELTA,
            &self.last_offset_delta.to_le_bytes(),
        );
        put(&mut h, OFF_RECORD_COUNT, &self.record_count.to_le_bytes());
        put(
            &mut h,
            OFF_FIRST_TIMESTAMP,
            &self.first_timestamp_ms.to_le_bytes(),
        );
        put(
            &mut h,
            OFF_MAX_TIMESTAMP,
            &self.max_timestamp_ms.to_le_bytes(),
        );
        put(&mut h, OFF_PRODUCER_ID, &self.producer_id.to_le_bytes());
        put(&mut h, OFF_BASE_SEQUENCE, &self.base_sequence.to_le_bytes());
        put(
            &mut h,
            OFF_RECORDS_LENGTH,
            &self.records_length.to_le_bytes(),
        );
        h
    }

    /// Decode the fields of a 64-byte header without any checks (magic and
    /// version are not part of the decoded value).
    fn decode(h: &[u8; BATCH_HEADER_SIZE]) -> Self {
        Self {
            batch_length: u32::from_le_bytes(get(h, OFF_BATCH_LENGTH)),
            base_offset: u64::from_le_bytes(get(h, BASE_OFFSET_POSITION)),
            crc: u32::from_le_bytes(get(h, OFF_CRC)),
            attributes: u16::from_le_bytes(get(h, OFF_ATTRIBUTES)),
            producer_epoch: i16::from_le_bytes(get(h, OFF_PRODUCER_EPOCH)),
            last_offset_delta: u32::from_le_bytes(get(h, OFF_LAST_OFFSET_DELTA)),
            record_count: u32::from_le_bytes(get(h, OFF_RECORD_COUNT)),
            first_timestamp_ms: i64::from_le_bytes(get(h, OFF_FIRST_TIMESTAMP)),
            max_timestamp_ms: i64::from_le_bytes(get(h, OFF_MAX_TIMESTAMP)),
            producer_id: i64::from_le_bytes(get(h, OFF_PRODUCER_ID)),
            base_sequence: i32::from_le_bytes(get(h, OFF_BASE_SEQUENCE)),
            records_length: u32::from_le_bytes(get(h, OFF_RECORDS_LENGTH)),
        }
    }

    /// The structural checks of [`peek_header`] on decoded fields.
    fn check(&self, max_batch_size: usize) -> Result<(), BatchError> {
        let batch_length = self.batch_length;
        let len = batch_length as usize;
        if len < BATCH_HEADER_SIZE {
            return Err(BatchError::BadLength {
                batch_length,
                reason: "shorter than the 64-byte header",
            });
        }
        if len % BATCH_ALIGNMENT != 0 {
            return Err(BatchError::BadLength {
                batch_length,
                reason: "not a multiple of 16",
            });
        }
        let max = max_batch_size.min(BATCH_SIZE_MAX);
        if len > max {
            return Err(BatchError::TooLarge {
                batch_length: len,
                max,
            });
        }
        // In u64 so that a huge records_length cannot overflow.
        let expected = align_up_u64(BATCH_HEADER_SIZE as u64 + u64::from(self.records_length));
        if expected != u64::from(batch_length) {
            return Err(BatchError::BadLength {
                batch_length,
                reason: "records_length inconsistent with batch_length",
            });
        }
        if (self.records_length as usize) < core::mem::size_of::<ArchivedRecords>() {
            return Err(BatchError::BadLength {
                batch_length,
                reason: "records_length too small to hold a record vector",
            });
        }
        check_attributes(self.attributes)?;
        if self.record_count == 0
            || u64::from(self.record_count) > u64::from(self.last_offset_delta) + 1
        {
            return Err(BatchError::BadRecordCount {
                record_count: self.record_count,
                last_offset_delta: self.last_offset_delta,
            });
        }
        if self.record_count > RECORDS_PER_BATCH_MAX {
            return Err(BatchError::TooManyRecords {
                record_count: self.record_count as usize,
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        if self
            .base_offset
            .checked_add(u64::from(self.last_offset_delta))
            .and_then(|last| last.checked_add(1))
            .is_none()
        {
            return Err(BatchError::OffsetOverflow {
                base_offset: self.base_offset,
                last_offset_delta: self.last_offset_delta,
            });
        }
        Ok(())
    }
}

/// Copy `N` bytes of the fixed-size header starting at the constant `at`.
fn get<const N: usize>(h: &[u8; BATCH_HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // `at` is always one of the field constants above and `at + N <= 64`,
    // so this cannot go out of bounds whatever the input bytes are.
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Write `src` into the fixed-size header at the constant `at`.
fn put(h: &mut [u8; BATCH_HEADER_SIZE], at: usize, src: &[u8]) {
    h[at..at + src.len()].copy_from_slice(src);
}

fn align_up_u64(n: u64) -> u64 {
    let a = BATCH_ALIGNMENT as u64;
    n.div_ceil(a) * a
}

fn align_up(n: usize) -> usize {
    n.div_ceil(BATCH_ALIGNMENT) * BATCH_ALIGNMENT
}

/// Reject compression codecs other than none, and reserved bits.
fn check_attributes(attributes: u16) -> Result<(), BatchError> {
    if attributes & ATTR_COMPRESSION_MASK != 0 {
        return Err(BatchError::UnsupportedAttributes {
            attributes,
            reason: "compression is not supported (codec must be 0)",
        });
    }
    if attributes & !ATTR_DEFINED != 0 {
        return Err(BatchError::UnsupportedAttributes {
            attributes,
            reason: "reserved bits 5..=15 must be zero",
        });
    }
    Ok(())
}

/// Cheap structural check of the header at the start of `bytes`.
///
/// Checks the magic, the version, `batch_length` (>= 64, a multiple of 16,
/// at most `max_batch_size` and [`BATCH_SIZE_MAX`]), that `records_length`
/// is consistent with `batch_length`, the attributes, that `record_count`
/// is in `1..=last_offset_delta + 1` and within [`RECORDS_PER_BATCH_MAX`],
/// and that the last offset does not overflow.
///
/// Does **not** check the CRC and does **not** require the whole batch to be
/// present: only the first 64 bytes are read. The log uses it to walk batch
/// boundaries in a buffer, framing to know how many bytes to read next.
pub fn peek_header(bytes: &[u8], max_batch_size: usize) -> Result<BatchHeader, BatchError> {
    let Some(h) = bytes.first_chunk::<BATCH_HEADER_SIZE>() else {
        return Err(BatchError::UnexpectedEof {
            offset: 0,
            need: BATCH_HEADER_SIZE,
            have: bytes.len(),
        });
    };
    let found: [u8; 4] = get(h, 0);
    if found[..3] != BATCH_MAGIC {
        return Err(BatchError::BadMagic { found });
    }
    if found[OFF_VERSION] != BATCH_VERSION {
        return Err(BatchError::UnsupportedVersion {
            version: found[OFF_VERSION],
        });
    }
    let header = BatchHeader::decode(h);
    header.check(max_batch_size)?;
    Ok(header)
}

/// The header of the batch at the start of `bytes` (checked by [`peek_header`]), once all of
/// its `batch_length` bytes are known to be there. Never panics.
fn peek_whole(bytes: &[u8], max_batch_size: usize) -> Result<BatchHeader, BatchError> {
    let header = peek_header(bytes, max_batch_size)?;
    let need = header.batch_length as usize;
    if need > bytes.len() {
        return Err(BatchError::UnexpectedEof {
            offset: 0,
            need,
            have: bytes.len(),
        });
    }
    Ok(header)
}

/// Write `base_offset` into bytes `[8, 16)` of a batch.
///
/// This is how the broker assigns offsets to a producer's batch without
/// re-encoding it: the base offset is not covered by the CRC, so the batch
/// stays valid. Returns [`BatchError::UnexpectedEof`] if `batch` is shorter
/// than 16 bytes; does not otherwise look at the bytes.
pub fn stamp_base_offset(batch: &mut [u8], base_offset: u64) -> Result<(), BatchError> {
    let have = batch.len().saturating_sub(BASE_OFFSET_POSITION);
    match batch.get_mut(BASE_OFFSET_POSITION..BASE_OFFSET_POSITION + 8) {
        Some(field) => {
            field.copy_from_slice(&base_offset.to_le_bytes());
            Ok(())
        }
        None => Err(BatchError::UnexpectedEof {
            offset: BASE_OFFSET_POSITION,
            need: 8,
            have,
        }),
    }
}

/// Writes an idempotent producer's id, epoch and first sequence number into a built batch and
/// recomputes its CRC (these fields are covered by it). A producer stamps a batch once, when it
/// first sends it; retries send the same bytes, which is what lets the broker recognise them.
/// Checks the header and that the batch's length fits in `batch`, and never panics. The old
/// CRC is not checked: the producer stamps batches it has just built, and re-reading a 1 MiB
/// batch for it was a third of the producer's CRC work (build, check, stamp).
pub fn stamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let length = peek_whole(batch, crate::limits::BATCH_SIZE_MAX)?.batch_length as usize;
    batch[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_le_bytes());
    batch[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer_epoch.to_le_bytes());
    batch[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..length]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A batch whose header and CRC have been validated: exactly
/// `batch_length` bytes borrowed from the caller's buffer.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes themselves are not useful in logs; the header is.
        f.debug_struct("BatchView")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::len_without_is_empty)] // a valid batch is never empty
impl<'a> BatchView<'a> {
    /// Validate the batch at the start of `bytes`: the header (via
    /// [`peek_header`]), that all `batch_length` bytes are present, that the
    /// padding after the records is zero, and the CRC.
    ///
    /// Trailing bytes after the batch are allowed and ignored (see
    /// [`BatchView::len`]). Never panics. Does not look inside the records;
    /// use [`BatchView::validate_deep`] for untrusted bytes.
    pub fn validate(bytes: &'a [u8], max_batch_size: usize) -> Result<Self, BatchError> {
        let header = peek_whole(bytes, max_batch_size)?;
        let batch = &bytes[..header.batch_length as usize];
        let records_end = BATCH_HEADER_SIZE + header.records_length as usize;
        let padding = batch.get(records_end..).unwrap_or_default();
        if let Some((i, &byte)) = padding.iter().enumerate().find(|(_, &b)| b != 0) {
            return Err(BatchError::NonZeroPadding {
                offset: records_end + i,
                byte,
            });
        }
        let computed = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        Ok(Self {
            bytes: batch,
            header,
        })
    }

    /// Like [`BatchView::validate`], but also runs the rkyv structure check
    /// (bytecheck) over the records and checks that the archive holds
    /// exactly `record_count` records. The broker runs this on produce,
    /// where the bytes are untrusted.
    ///
    /// Like [`BatchView::records`], this requires the records to be
    /// 16-aligned in memory (copy network bytes into an
    /// `AlignedVec<16>` or an aligned buffer first).
    pub fn validate_deep(bytes: &'a [u8], max_batch_size: usize) -> Result<Self, BatchError> {
        let view = Self::validate(bytes, max_batch_size)?;
        view.records()?;
        Ok(view)
    }

    /// The decoded header.
    pub fn header(&self) -> BatchHeader {
        self.header
    }

    /// The batch bytes: exactly `batch_length` bytes, ready to append to a
    /// log or send to a consumer.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    /// Number of records in the batch.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Largest record timestamp in the batch (ms since the epoch), for time
    /// indexes and retention.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.header.max_timestamp_ms
    }

    /// Length of the batch in bytes (`batch_length`), i.e. how far to
    /// advance in a buffer to reach the next batch.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Zero-copy access to the archived records.
    ///
    /// The access is checked with bytecheck each time, so it is safe on
    /// untrusted bytes. Errors if the records are not 16-aligned in memory
    /// ([`BatchError::MisalignedRecords`]; holds for batches in page-aligned
    /// buffers and in `AlignedVec<16>`), if the archive is malformed
    /// ([`BatchError::Records`]) or if it holds a different number of
    /// records than the header says ([`BatchError::RecordCountMismatch`]).
    pub fn records(&self) -> Result<&'a ArchivedRecords, BatchError> {
        let end = BATCH_HEADER_SIZE + self.header.records_length as usize;
        let Some(slice) = self.bytes.get(BATCH_HEADER_SIZE..end) else {
            // Unreachable for a validated view; kept so that no input can panic.
            return Err(BatchError::UnexpectedEof {
                offset: BATCH_HEADER_SIZE,
                need: self.header.records_length as usize,
                have: self.bytes.len().saturating_sub(BATCH_HEADER_SIZE),
            });
        };
        let address = slice.as_ptr().addr();
        if address % BATCH_ALIGNMENT != 0 {
            return Err(BatchError::MisalignedRecords {
                address,
                align: BATCH_ALIGNMENT,
            });
        }
        let records = rkyv::access::<ArchivedRecords, rancor::Error>(slice).map_err(|e| {
            BatchError::Records {
                reason: e.to_string(),
            }
        })?;
        if records.len() != self.header.record_count as usize {
            return Err(BatchError::RecordCountMismatch {
                record_count: self.header.record_count,
                archived: records.len(),
            });
        }
        Ok(records)
    }
}

/// Iterates the batches laid one after another in a buffer (a segment read,
/// a fetch response).
///
/// Yields `Ok(BatchView)` for each valid batch (checked with
/// [`BatchView::validate`]). Stops (returns `None`) cleanly at the end of
/// the buffer or at a partial batch at the end — a header or body cut short
/// — so a caller reading in chunks can read more from
/// [`BatchIter::position`]. Yields one `Err` for an invalid batch and then
/// stops; [`BatchIter::position`] is then the start of the bad batch (the
/// end of the valid prefix, where a log would truncate).
///
/// ```text
///  buffer: | batch 0 | batch 1 | batch 2 | partial...|
///                                        ^ position() after the walk
/// ```
#[derive(Clone)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    max_batch_size: usize,
    done: bool,
}

impl fmt::Debug for BatchIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchIter")
            .field("len", &self.bytes.len())
            .field("position", &self.position)
            .field("max_batch_size", &self.max_batch_size)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a> BatchIter<'a> {
    /// Iterate the batches at the start of `bytes`, rejecting any batch
    /// larger than `max_batch_size` (and [`BATCH_SIZE_MAX`]).
    pub fn new(bytes: &'a [u8], max_batch_size: usize) -> Self {
        Self {
            bytes,
            position: 0,
            max_batch_size,
            done: false,
        }
    }

    /// Bytes consumed so far: the total length of the valid batches yielded.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Where the iteration stopped (or will resume): the same value as
    /// [`BatchIter::position`], named for callers checking a partial tail.
    pub fn remaining_position(&self) -> usize {
        self.position
    }

    /// The bytes not consumed yet (a partial batch, an invalid batch, or
    /// nothing).
    pub fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.remaining();
        if rest.len() < BATCH_HEADER_SIZE {
            // End of buffer or a partial header: stop cleanly.
            self.done = true;
            return None;
        }
        let header = match peek_header(rest, self.max_batch_size) {
            Ok(header) => header,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if rest.len() < header.batch_length as usize {
            // A partial batch at the end: stop cleanly.
            self.done = true;
            return None;
        }
        match BatchView::validate(rest, self.max_batch_size) {
            Ok(view) => {
                self.position += view.len();
                Some(Ok(view))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for BatchIter<'_> {}

/// Producer-side builder of a record batch, encoded in place.
///
/// [`BatchBuilder::push`] copies a record's key, value, headers and tags
/// once, from the caller's slices straight into the batch buffer, laid out as
/// rkyv lays out the record's out-of-line data; nothing owned is built per
/// record. [`BatchBuilder::finish`] then appends what needs the whole batch
/// (the array of archived records, whose timestamp deltas need the batch's
/// minimum timestamp, and the archive's root), writes the header and the CRC
/// and hands the buffer out; [`BatchBuilder::recycle`] gives a sent batch's
/// buffer back so the next batches allocate nothing. The batch's
/// `first_timestamp_ms` is the minimum pushed timestamp, so records may be
/// pushed in any timestamp order and every delta is non-negative.
///
/// ```text
///  while pushing:  0        64                                          len
///                  +--------+---------------------------------------------+
///                  | zeros  | rec 0: key value headers tags | rec 1 ... |
///                  +--------+---------------------------------------------+
///  finish appends:           ... | ArchivedRecord x n | root (8) | 0 pad |
///                  then writes the header over the zeros, then the CRC
/// ```
///
/// The bytes are exactly those of an rkyv archive of `Vec<Record>` after a
/// 64-byte header (the format on the wire and on disk is unchanged): the
/// pieces are serialized by the same rkyv routines in the same order as
/// rkyv's derived serializer would.
#[derive(Clone)]
pub struct BatchBuilder {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: u16,
    /// The batch being built: a zeroed header placeholder, then every
    /// pushed record's out-of-line data in push order.
    buffer: AlignedVec<BATCH_ALIGNMENT>,
    /// A buffer given back by [`BatchBuilder::recycle`], used for the next
    /// batch after `finish`.
    spare: Option<AlignedVec<BATCH_ALIGNMENT>>,
    /// Where each pushed record's parts lie in `buffer`, and its timestamp.
    records: Vec<PendingRecord>,
    min_timestamp_ms: i64,
    max_timestamp_ms: i64,
    /// Upper bound on the encoded size, maintained by `push`.
    estimated_size: usize,
    /// Lower bound on the encoded size (header plus raw payload bytes), to
    /// reject oversized batches before serializing them.
    min_size: usize,
    /// Why a pushed record could not be encoded; the batch then refuses to
    /// build.
    failed: Option<String>,
    /// Built batches leave their CRC at zero ([`BatchBuilder::defer_crc_to_stamp`]).
    crc_deferred: bool,
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("producer_id", &self.producer_id)
            .field("records", &self.records.len())
            .field("buffer_len", &self.buffer.len())
            .field("estimated_size", &self.estimated_size)
            .finish_non_exhaustive()
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bound on alignment padding rkyv inserts after one out-of-line
/// object (the largest alignment in the archive is 4).
const ARCHIVE_SLACK: usize = 8;

/// Where an archived vector's elements were written in the builder's
/// buffer, and how many there are.
#[derive(Debug, Clone, Copy)]
struct WrittenSlice {
    position: usize,
    len: usize,
}

/// A pushed record: its parts are in the buffer, its array entry is written
/// by `finish`.
#[derive(Debug, Clone, Copy)]
struct PendingRecord {
    timestamp_ms: i64,
    key: Option<WrittenSlice>,
    value: WrittenSlice,
    headers: WrittenSlice,
    tags: Option<WrittenSlice>,
}

impl BatchBuilder {
    /// An empty builder with no producer (id, epoch and sequence -1) and
    /// attributes 0.
    pub fn new() -> Self {
        let mut buffer = AlignedVec::new();
        buffer.extend_from_slice(&[0u8; BATCH_HEADER_SIZE]);
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            buffer,
            spare: None,
            records: Vec::new(),
            min_timestamp_ms: i64::MAX,
            max_timestamp_ms: i64::MIN,
            estimated_size: Self::EMPTY_ESTIMATED_SIZE,
            min_size: BATCH_HEADER_SIZE,
            failed: None,
            crc_deferred: false,
        }
    }

    /// Leaves the CRC of the batches this builder builds at zero, for an idempotent producer:
    /// it stamps every batch with [`stamp_producer`], which computes the CRC, before the batch
    /// leaves, so computing it here too would read every batch twice. Such a batch is invalid
    /// until stamped. Kept across [`BatchBuilder::clear`].
    pub fn defer_crc_to_stamp(&mut self, defer: bool) {
        self.crc_deferred = defer;
    }

    /// Estimated size of a batch without records: header, root, slack and
    /// the final padding.
    const EMPTY_ESTIMATED_SIZE: usize = BATCH_HEADER_SIZE
        + core::mem::size_of::<ArchivedRecords>()
        + ARCHIVE_SLACK
        + BATCH_ALIGNMENT;

    /// Set the idempotent/transactional producer identity stamped in the
    /// header.
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Set the raw attribute bits ([`ATTR_TRANSACTIONAL`],
    /// [`ATTR_CONTROL`]). Compression and reserved bits are rejected by
    /// [`BatchBuilder::build_into`].
    pub fn with_attributes(mut self, attributes: u16) -> Self {
        self.attributes = attributes;
        self
    }

    /// Add a record with an absolute timestamp (ms since the epoch).
    ///
    /// The batch's first timestamp is the minimum over all records and each
    /// record stores `timestamp_ms - first`, computed at build time, so
    /// records may come in any timestamp order. The bytes are copied once,
    /// into the batch buffer.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
        tags: Option<&[&str]>,
    ) -> &mut Self {
        self.push_parts(
            timestamp_ms,
            key,
            value,
            headers.iter().copied(),
            tags.map(|tags| tags.iter().copied()),
        )
    }

    /// [`BatchBuilder::push`] with headers and tags from any cheap iterator
    /// (for instance over the caller's owned `(String, Vec<u8>)` pairs), so
    /// the caller need not collect borrowed slices first.
    pub fn push_parts<'r, H, T>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: H,
        tags: Option<T>,
    ) -> &mut Self
    where
        H: ExactSizeIterator<Item = (&'r str, &'r [u8])> + Clone,
        T: ExactSizeIterator<Item = &'r str> + Clone,
    {
        let (low, high) = size_bounds(key, value, headers.clone(), tags.clone());
        self.min_size = self.min_size.saturating_add(low);
        self.estimated_size = self.estimated_size.saturating_add(high);
        self.min_timestamp_ms = self.min_timestamp_ms.min(timestamp_ms);
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        if headers.len() == 0 && tags.is_none() {
            // Common case without rkyv's serializer machinery: the same bytes rkyv writes
            // for two byte vectors (copied as they are, alignment 1) and an empty header
            // vector (padding to its alignment, then nothing).
            let key = key.map(|key| {
                let position = self.buffer.len();
                self.buffer.extend_from_slice(key);
                WrittenSlice {
                    position,
                    len: key.len(),
                }
            });
            let position = self.buffer.len();
            self.buffer.extend_from_slice(value);
            let value = WrittenSlice {
                position,
                len: value.len(),
            };
            let headers_position = self
                .buffer
                .len()
                .next_multiple_of(core::mem::align_of::<ArchivedRecordHeader>());
            self.buffer.resize(headers_position, 0);
            self.records.push(PendingRecord {
                timestamp_ms,
                key,
                value,
                headers: WrittenSlice {
                    position: headers_position,
                    len: 0,
                },
                tags: None,
            });
            return self;
        }
        let before = self.buffer.len();
        let written = with_arena(|arena| {
            let mut serializer = Serializer::new(
                core::mem::take(&mut self.buffer),
                arena.acquire(),
                Share::new(),
            );
            let written = write_record_parts(
                Strategy::<_, rancor::Error>::wrap(&mut serializer),
                key,
                value,
                headers,
                tags,
            );
            self.buffer = serializer.into_writer();
            written
        });
        match written {
            Ok((key, value, headers, tags)) => self.records.push(PendingRecord {
                timestamp_ms,
                key,
                value,
                headers,
                tags,
            }),
            Err(e) => {
                // Only a string too long for rkyv gets here; keep the
                // buffer consistent and refuse to build this batch.
                self.buffer.resize(before, 0);
                self.failed.get_or_insert_with(|| e.to_string());
            }
        }
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record has been pushed (building would fail with
    /// [`BatchError::Empty`]).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Estimated encoded size in bytes, so producers can cut batches by
    /// size. It is an upper bound: the built batch is never larger.
    pub fn estimated_size(&self) -> usize {
        self.estimated_size
    }

    /// Encode the batch into `out` (cleared first), which is 16-aligned in
    /// memory so the records can be accessed in place. The base offset is
    /// written as 0 (the broker stamps it). Returns the batch length, which
    /// is `out.len()`. The builder keeps its records; this copies them, so
    /// producers that build many batches use [`BatchBuilder::finish`].
    ///
    /// Errors: [`BatchError::Empty`] with no records,
    /// [`BatchError::TooManyRecords`], [`BatchError::UnsupportedAttributes`],
    /// [`BatchError::TimestampRange`] if the timestamps span more than
    /// `u32::MAX` ms, and [`BatchError::TooLarge`] above
    /// [`BATCH_SIZE_MAX`]. On error `out` is left empty.
    pub fn build_into(&self, out: &mut AlignedVec<16>) -> Result<usize, BatchError> {
        out.clear();
        self.check()?;
        out.extend_from_slice(&self.buffer);
        let built = self.complete(out);
        if built.is_err() {
            out.clear();
        }
        built
    }

    /// Convenience: build into a fresh `AlignedVec<16>`.
    pub fn build(&self) -> Result<AlignedVec<16>, BatchError> {
        let mut out = AlignedVec::with_capacity(self.estimated_size.min(BATCH_SIZE_MAX));
        self.build_into(&mut out)?;
        Ok(out)
    }

    /// Completes the batch in its own buffer and hands that buffer out,
    /// without copying the records, then clears the builder for the next
    /// batch (which starts in the buffer given to
    /// [`BatchBuilder::recycle`], if any). Same errors as
    /// [`BatchBuilder::build_into`]; on error the builder is unchanged.
    pub fn finish(&mut self) -> Result<AlignedVec<16>, BatchError> {
        self.check()?;
        let records_end = self.buffer.len();
        let mut batch = core::mem::take(&mut self.buffer);
        match self.complete(&mut batch) {
            Ok(_) => {
                self.buffer = self.spare.take().unwrap_or_default();
                self.clear();
                Ok(batch)
            }
            Err(e) => {
                batch.resize(records_end, 0);
                self.buffer = batch;
                Err(e)
            }
        }
    }

    /// Gives back the buffer of a batch returned by
    /// [`BatchBuilder::finish`] that is no longer needed, so a later batch
    /// reuses its allocation: at once if no record was pushed yet and it is
    /// larger than the current buffer, else after the next `finish`. The
    /// builder keeps at most one spare (the larger).
    pub fn recycle(&mut self, mut buffer: AlignedVec<16>) {
        buffer.clear();
        if self.records.is_empty() && self.buffer.capacity() < buffer.capacity() {
            buffer.extend_from_slice(&[0u8; BATCH_HEADER_SIZE]);
            buffer = core::mem::replace(&mut self.buffer, buffer);
            buffer.clear();
        }
        if self
            .spare
            .as_ref()
            .is_none_or(|spare| spare.capacity() < buffer.capacity())
        {
            self.spare = Some(buffer);
        }
    }

    /// The checks that need no encoding.
    fn check(&self) -> Result<u32, BatchError> {
        if self.records.is_empty() {
            return Err(BatchError::Empty);
        }
        let record_count = u32::try_from(self.records.len())
            .ok()
            .filter(|&n| n <= RECORDS_PER_BATCH_MAX)
            .ok_or(BatchError::TooManyRecords {
                record_count: self.records.len(),
                max: RECORDS_PER_BATCH_MAX,
            })?;
        check_attributes(self.attributes)?;
        let first = self.min_timestamp_ms;
        let max = self.max_timestamp_ms;
        if i128::from(max) - i128::from(first) > i128::from(u32::MAX) {
            return Err(BatchError::TimestampRange {
                first_timestamp_ms: first,
                max_timestamp_ms: max,
            });
        }
        if self.min_size > BATCH_SIZE_MAX {
            return Err(BatchError::TooLarge {
                batch_length: self.min_size,
                max: BATCH_SIZE_MAX,
            });
        }
        if let Some(reason) = &self.failed {
            return Err(BatchError::Records {
                reason: reason.clone(),
            });
        }
        Ok(record_count)
    }

    /// Appends the records' array and the root to `out` (which holds a copy
    /// of `buffer`), pads, and writes the header and CRC. rkyv positions are
    /// relative, and 64 is a multiple of every alignment in the archive, so
    /// the bytes from +64 on form a standalone archive.
    fn complete(&self, out: &mut AlignedVec<16>) -> Result<usize, BatchError> {
        let record_count = self.check()?;
        let first = self.min_timestamp_ms;
        let records = RecordsRef {
            records: &self.records,
            first_timestamp_ms: first,
        };
        with_arena(|arena| {
            let mut serializer =
                Serializer::new(core::mem::take(out), arena.acquire(), Share::new());
            let root = rkyv::api::serialize_using::<_, rancor::Error>(&records, &mut serializer);
            *out = serializer.into_writer();
            root.map(|_| ())
        })
        .map_err(|e| BatchError::Records {
            reason: e.to_string(),
        })?;

        let records_length = out.len() - BATCH_HEADER_SIZE;
        let batch_length = align_up(out.len());
        let too_large = BatchError::TooLarge {
            batch_length,
            max: BATCH_SIZE_MAX,
        };
        if batch_length > BATCH_SIZE_MAX {
            return Err(too_large);
        }
        let (Ok(batch_length_u32), Ok(records_length_u32)) =
            (u32::try_from(batch_length), u32::try_from(records_length))
        else {
            return Err(too_large);
        };
        out.resize(batch_length, 0);
        let header = BatchHeader {
            batch_length: batch_length_u32,
            base_offset: 0,
            crc: 0,
            attributes: self.attributes,
            producer_epoch: self.producer_epoch,
            last_offset_delta: record_count - 1,
            record_count,
            first_timestamp_ms: first,
            max_timestamp_ms: self.max_timestamp_ms,
            producer_id: self.producer_id,
            base_sequence: self.base_sequence,
            records_length: records_length_u32,
        };
        out[..BATCH_HEADER_SIZE].copy_from_slice(&header.encode());
        if !self.crc_deferred {
            let crc = crc32c::crc32c(&out[CRC_START..]);
            out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        }
        Ok(batch_length)
    }

    /// Remove all records (keeping the producer identity and attributes and
    /// the allocated capacity) so the builder can be reused for the next
    /// batch.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0u8; BATCH_HEADER_SIZE]);
        self.records.clear();
        self.min_timestamp_ms = i64::MAX;
        self.max_timestamp_ms = i64::MIN;
        self.estimated_size = Self::EMPTY_ESTIMATED_SIZE;
        self.min_size = BATCH_HEADER_SIZE;
        self.failed = None;
    }
}

/// Lower and upper bounds on the bytes one record adds to the archive.
fn size_bounds<'r>(
    key: Option<&[u8]>,
    value: &[u8],
    headers: impl ExactSizeIterator<Item = (&'r str, &'r [u8])>,
    tags: Option<impl ExactSizeIterator<Item = &'r str>>,
) -> (usize, usize) {
    let mut low = core::mem::size_of::<ArchivedRecord>();
    let mut high = low + ARCHIVE_SLACK;
    let mut blob = |len: usize| {
        low += len;
        high += len + ARCHIVE_SLACK;
    };
    if let Some(key) = key {
        blob(key.len());
    }
    blob(value.len());
    blob(headers.len() * core::mem::size_of::<ArchivedRecordHeader>());
    for (name, value) in headers {
        blob(name.len());
        blob(value.len());
    }
    if let Some(tags) = tags {
        blob(tags.len() * core::mem::size_of::<rkyv::string::ArchivedString>());
        for tag in tags {
            blob(tag.len());
        }
    }
    (low, high)
}

/// Where the elements of the archived vector just serialized lie: they are
/// the last thing its serialization wrote.
fn written<T, S: Positional + ?Sized>(serializer: &S, len: usize) -> WrittenSlice {
    WrittenSlice {
        position: serializer.pos() - len * core::mem::size_of::<T>(),
        len,
    }
}

/// Serialized parts of one record: key, value, headers, tags.
type WrittenParts = (
    Option<WrittenSlice>,
    WrittenSlice,
    WrittenSlice,
    Option<WrittenSlice>,
);

/// Serializes a record's out-of-line parts in the order rkyv's derived
/// serializer of [`Record`] does (key, value, headers, tags).
fn write_record_parts<'r, S, H, T>(
    serializer: &mut S,
    key: Option<&[u8]>,
    value: &[u8],
    headers: H,
    tags: Option<T>,
) -> Result<WrittenParts, S::Error>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: rancor::Source,
    H: ExactSizeIterator<Item = (&'r str, &'r [u8])> + Clone,
    T: ExactSizeIterator<Item = &'r str> + Clone,
{
    let key = match key {
        Some(key) => {
            ArchivedVec::<u8>::serialize_from_slice(key, serializer)?;
            Some(written::<u8, _>(serializer, key.len()))
        }
        None => None,
    };
    ArchivedVec::<u8>::serialize_from_slice(value, serializer)?;
    let value = written::<u8, _>(serializer, value.len());
    let header_count = headers.len();
    ArchivedVec::<ArchivedRecordHeader>::serialize_from_iter::<HeaderRef<'_>, _, _>(
        headers.map(|(name, value)| HeaderRef { name, value }),
        serializer,
    )?;
    let headers = written::<ArchivedRecordHeader, _>(serializer, header_count);
    let tags = match tags {
        Some(tags) => {
            let tag_count = tags.len();
            ArchivedVec::<ArchivedString>::serialize_from_iter::<StrRef<'_>, _, _>(
                tags.map(StrRef),
                serializer,
            )?;
            Some(written::<ArchivedString, _>(serializer, tag_count))
        }
        None => None,
    };
    Ok((key, value, headers, tags))
}

/// Serialization proxy: a borrowed header, archived as
/// [`ArchivedRecordHeader`].
struct HeaderRef<'a> {
    name: &'a str,
    value: &'a [u8],
}

/// Resolver of [`HeaderRef`].
struct HeaderRefResolver {
    name: StringResolver,
    value: VecResolver,
}

impl Archive for HeaderRef<'_> {
    type Archived = ArchivedRecordHeader;
    type Resolver = HeaderRefResolver;

    fn resolve(&self, resolver: HeaderRefResolver, out: Place<ArchivedRecordHeader>) {
        munge!(let ArchivedRecordHeader { key, value } = out);
        ArchivedString::resolve_from_str(self.name, resolver.name, key);
        ArchivedVec::resolve_from_len(self.value.len(), resolver.value, value);
    }
}

impl<S> Serialize<S> for HeaderRef<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: rancor::Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<HeaderRefResolver, S::Error> {
        Ok(HeaderRefResolver {
            name: ArchivedString::serialize_from_str(self.name, serializer)?,
            value: ArchivedVec::<u8>::serialize_from_slice(self.value, serializer)?,
        })
    }
}

/// Serialization proxy: a borrowed string, archived as [`ArchivedString`].
struct StrRef<'a>(&'a str);

impl Archive for StrRef<'_> {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(self.0, resolver, out);
    }
}

impl<S> Serialize<S> for StrRef<'_>
where
    S: Fallible + Writer + ?Sized,
    S::Error: rancor::Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(self.0, serializer)
    }
}

/// Resolution proxy: an archived vector whose elements are already written.
struct WrittenVec<T> {
    slice: WrittenSlice,
    _element: PhantomData<T>,
}

impl<T> WrittenVec<T> {
    fn new(slice: WrittenSlice) -> Self {
        WrittenVec {
            slice,
            _element: PhantomData,
        }
    }

    fn resolver(&self) -> VecResolver {
        VecResolver::from_pos(self.slice.position)
    }
}

impl<T: Portable> Archive for WrittenVec<T> {
    type Archived = ArchivedVec<T>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<T>>) {
        ArchivedVec::resolve_from_len(self.slice.len, resolver, out);
    }
}

/// Serialization proxy: a pushed record, whose parts are written already,
/// archived as [`ArchivedRecord`] with its delta from the batch's first
/// timestamp.
struct RecordRef {
    record: PendingRecord,
    delta: u32,
}

impl Archive for RecordRef {
    type Archived = ArchivedRecord;
    type Resolver = ();

    fn resolve(&self, (): (), out: Place<ArchivedRecord>) {
        munge!(let ArchivedRecord { timestamp_delta_ms, key, value, headers, tags } = out);
        self.delta.resolve((), timestamp_delta_ms);
        let key_vec = self.record.key.map(WrittenVec::<u8>::new);
        let key_resolver = key_vec.as_ref().map(WrittenVec::resolver);
        key_vec.resolve(key_resolver, key);
        let value_vec = WrittenVec::<u8>::new(self.record.value);
        value_vec.resolve(value_vec.resolver(), value);
        let headers_vec = WrittenVec::<ArchivedRecordHeader>::new(self.record.headers);
        headers_vec.resolve(headers_vec.resolver(), headers);
        let tags_vec = self.record.tags.map(WrittenVec::<ArchivedString>::new);
        let tags_resolver = tags_vec.as_ref().map(WrittenVec::resolver);
        tags_vec.resolve(tags_resolver, tags);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for RecordRef {
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(()) // the parts were written by `push`
    }
}

/// Serialization proxy for the whole record vector: archives as
/// [`ArchivedRecords`], with each delta computed from `first_timestamp_ms`.
struct RecordsRef<'a> {
    records: &'a [PendingRecord],
    first_timestamp_ms: i64,
}

impl RecordsRef<'_> {
    fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef> + Clone + '_ {
        let first = self.first_timestamp_ms;
        self.records.iter().map(move |&record| RecordRef {
            record,
            // `check` verified that every delta fits in a u32.
            delta: u32::try_from(i128::from(record.timestamp_ms) - i128::from(first))
                .unwrap_or(u32::MAX),
        })
    }
}

impl Archive for RecordsRef<'_> {
    type Archived = ArchivedRecords;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedRecords>) {
        ArchivedVec::resolve_from_len(self.records.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for RecordsRef<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<ArchivedRecord>::serialize_from_iter::<RecordRef, _, _>(
            self.iter(),
            serializer,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MAX: usize = BATCH_SIZE_MAX;

    fn sample(values: &[&[u8]]) -> AlignedVec<16> {
        let mut b = BatchBuilder::new();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{i}");
            b.push(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                v,
                &[("h", b"hv")],
                Some(&["t1", "t2"]),
            );
        }
        b.build().unwrap()
    }

    /// A built batch validates deeply, is aligned, and reads back every header field (offsets,
    /// timestamps, no producer) and every record (key, value, timestamp delta, header, tags)
    /// as pushed.
    #[test]
    fn round_trip_build_validate_records() {
        let values: [&[u8]; 3] = [b"alpha", b"", b"gamma gamma gamma gamma"];
        let bytes = sample(&values);
        assert_eq!(bytes.len() % BATCH_ALIGNMENT, 0);
        let view = BatchView::validate_deep(&bytes, MAX).unwrap();
        assert_eq!(view.len(), bytes.len());
        assert_eq!(view.record_count(), 3);
        assert_eq!(view.base_offset(), 0);
        assert_eq!(view.last_offset(), 2);
        assert_eq!(view.header().next_offset(), 3);
        assert_eq!(view.header().first_timestamp_ms, 1_700_000_000_000);
        assert_eq!(view.max_timestamp_ms(), 1_700_000_000_002);
        assert_eq!(view.header().producer_id, -1);
        assert_eq!(view.header().producer_epoch, -1);
        assert_eq!(view.header().base_sequence, -1);
        let records = view.records().unwrap();
        let got: Vec<&[u8]> = records.iter().map(|r| r.value_bytes()).collect();
        assert_eq!(got, values.to_vec());
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.key_bytes(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.timestamp_delta_ms.to_native(), i as u32);
            assert_eq!(r.headers.len(), 1);
            assert_eq!(r.headers[0].key.as_str(), "h");
            assert!(r.has_tag("t2"));
            assert!(!r.has_tag("t3"));
        }
    }

    /// Records pushed out of time order: the header's first timestamp is the minimum, its max
    /// the maximum, and each record still reads back its own timestamp.
    #[test]
    fn out_of_order_timestamps_use_minimum_as_first() {
        let mut b = BatchBuilder::new();
        b.push(1_000, None, b"a", &[], None);
        b.push(400, None, b"b", &[], None);
        b.push(2_500, None, b"c", &[], None);
        let bytes = b.build().unwrap();
        let view = BatchView::validate_deep(&bytes, MAX).unwrap();
        let h = view.header();
        assert_eq!(h.first_timestamp_ms, 400);
        assert_eq!(h.max_timestamp_ms, 2_500);
        let ts: Vec<i64> = view
            .records()
            .unwrap()
            .iter()
            .map(|r| r.timestamp_ms(h.first_timestamp_ms))
            .collect();
        assert_eq!(ts, vec![1_000, 400, 2_500]);
    }

    /// A batch whose timestamps span exactly `u32::MAX` ms builds; one more millisecond of
    /// span is a `TimestampRange` error naming both ends.
    #[test]
    fn timestamp_span_beyond_u32_is_an_error() {
        let mut b = BatchBuilder::new();
        b.push(0, None, b"a", &[], None);
        b.push(i64::from(u32::MAX), None, b"b", &[], None);
        assert!(b.build().is_ok());
        b.push(-1, None, b"c", &[], None);
        assert_eq!(
            b.build().unwrap_err(),
            BatchError::TimestampRange {
                first_timestamp_ms: -1,
                max_timestamp_ms: i64::from(u32::MAX)
            }
        );
    }

    /// Producer id, epoch, base sequence and the transactional attribute are written to the
    /// header and read back; an unsupported attribute (compression) is refused.
    #[test]
    fn producer_and_attributes_are_encoded() {
        let mut b = BatchBuilder::new()
            .with_producer(42, 7, 1000)
            .with_attributes(ATTR_TRANSACTIONAL);
        b.push(5, Some(b"k"), b"v", &[], None);
        let bytes = b.build().unwrap();
        let h = BatchView::validate_deep(&bytes, MAX).unwrap().header();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 7, 1000)
        );
        assert!(h.is_transactional());
        assert!(!h.is_control());
        assert_eq!(h.compression(), 0);

        let mut c = BatchBuilder::new().with_attributes(1);
        c.push(5, None, b"v", &[], None);
        assert!(matches!(
            c.build(),
            Err(BatchError::UnsupportedAttributes { attributes: 1, .. })
        ));
    }

    /// An empty builder refuses to build; `clear` after a push brings back the empty state,
    /// its size estimate included.
    #[test]
    fn empty_builder_fails_and_clear_resets() {
        let mut b = BatchBuilder::new();
        assert!(b.is_empty());
        assert_eq!(b.build().unwrap_err(), BatchError::Empty);
        let empty_estimate = b.estimated_size();
        b.push(1, None, b"x", &[], None);
        assert_eq!(b.len(), 1);
        assert!(b.estimated_size() > empty_estimate);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.estimated_size(), empty_estimate);
        assert_eq!(b.build().unwrap_err(), BatchError::Empty);
    }

    /// `build_into` reports the length it wrote and a second build into the same buffer
    /// replaces the first batch.
    #[test]
    fn build_into_reuses_buffer() {
        let mut out = AlignedVec::<16>::new();
        let mut b = BatchBuilder::new();
        b.push(1, None, b"first batch value", &[], None);
        let n1 = b.build_into(&mut out).unwrap();
        assert_eq!(n1, out.len());
        b.clear();
        b.push(2, None, b"2", &[], None);
        let n2 = b.build_into(&mut out).unwrap();
        assert_eq!(n2, out.len());
        let view = BatchView::validate_deep(&out, MAX).unwrap();
        assert_eq!(view.records().unwrap()[0].value_bytes(), b"2");
    }

    /// After each of 50 pushes of growing records, the size estimate is at least the built
    /// size and at most about twice it.
    #[test]
    fn estimated_size_is_an_upper_bound() {
        let mut b = BatchBuilder::new();
        for i in 0..50u8 {
            let v = vec![i; usize::from(i) * 3];
            b.push(
                i64::from(i),
                (i % 2 == 0).then_some(&v[..]),
                &v,
                &[("a", &v)],
                Some(&["x"]),
            );
            let built = b.build().unwrap();
            assert!(b.estimated_size() >= built.len());
            assert!(b.estimated_size() <= 2 * built.len() + 256);
        }
    }

    /// A record of `BATCH_SIZE_MAX` bytes makes the batch `TooLarge`; one 1 KiB smaller
    /// builds, fits the limit and validates.
    #[test]
    fn too_large_is_rejected_by_builder() {
        let mut b = BatchBuilder::new();
        let big = vec![0u8; BATCH_SIZE_MAX];
        b.push(0, None, &big, &[], None);
        assert!(matches!(b.build(), Err(BatchError::TooLarge { .. })));
        // Just under the limit after encoding overhead still builds.
        let mut c = BatchBuilder::new();
        let fits = vec![0u8; BATCH_SIZE_MAX - 1024];
        c.push(0, None, &fits, &[], None);
        let bytes = c.build().unwrap();
        assert!(bytes.len() <= BATCH_SIZE_MAX);
        BatchView::validate_deep(&bytes, MAX).unwrap();
    }

    /// Stamping a base offset keeps the batch valid (the offset is outside the CRC) and moves
    /// its last and next offsets; a buffer shorter than the field is an `UnexpectedEof` saying
    /// how much was missing.
    #[test]
    fn stamp_base_offset_keeps_crc_valid() {
        let mut bytes = sample(&[b"a", b"b"]);
        stamp_base_offset(&mut bytes, 1_000_000).unwrap();
        let view = BatchView::validate_deep(&bytes, MAX).unwrap();
        assert_eq!(view.base_offset(), 1_000_000);
        assert_eq!(view.last_offset(), 1_000_001);
        assert_eq!(view.header().next_offset(), 1_000_002);

        let mut short = [0u8; 15];
        assert_eq!(
            stamp_base_offset(&mut short, 1),
            Err(BatchError::UnexpectedEof {
                offset: 8,
                need: 8,
                have: 7
            })
        );
        let mut exact = [0u8; 16];
        stamp_base_offset(&mut exact, u64::MAX).unwrap();
        assert_eq!(exact[8..16], u64::MAX.to_le_bytes());
    }

    /// Flipping any single bit in the CRC-covered region is detected by `validate`.
    #[test]
    fn any_byte_flip_in_crc_region_fails_validate() {
        let original = sample(&[b"hello", b"world"]);
        for i in CRC_START..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            assert!(
                BatchView::validate(&bytes, MAX).is_err(),
                "flip at {i} not detected"
            );
        }
    }

    /// The base offset is outside the CRC (the broker stamps it): changing any of its bytes
    /// still validates, and the new offset is read.
    #[test]
    fn byte_flips_in_base_offset_are_not_covered() {
        let original = sample(&[b"hello"]);
        for i in BASE_OFFSET_POSITION..BASE_OFFSET_POSITION + 8 {
            let mut bytes = original.clone();
            bytes[i] ^= 0x5a;
            let view = BatchView::validate_deep(&bytes, MAX).unwrap();
            assert_ne!(view.base_offset(), 0);
        }
    }

    /// A corrupted stored CRC is reported as `CrcMismatch` with the stored and the computed
    /// value.
    #[test]
    fn crc_mismatch_reports_both_values() {
        let mut bytes = sample(&[b"hello"]);
        let stored = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        bytes[16] ^= 0xff;
        match BatchView::validate(&bytes, MAX) {
            Err(BatchError::CrcMismatch {
                stored: s,
                computed,
            }) => {
                assert_eq!(computed, stored);
                assert_eq!(s, stored ^ 0xff);
            }
            other => panic!("expected CrcMismatch, got {other:?}"),
        }
    }

    /// Rewrite the CRC after tampering, to test the checks behind it.
    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    /// A non-zero byte in the alignment padding after the records (with a fixed-up CRC) is
    /// `NonZeroPadding` at its position.
    #[test]
    fn nonzero_padding_fails() {
        // Find a value length that leaves padding.
        let mut bytes = (0..16)
            .map(|n| sample(&[&vec![7u8; n]]))
            .find(|b| {
                let h = peek_header(b, MAX).unwrap();
                h.batch_length as usize > BATCH_HEADER_SIZE + h.records_length as usize
            })
            .unwrap();
        let h = peek_header(&bytes, MAX).unwrap();
        let pad = BATCH_HEADER_SIZE + h.records_length as usize;
        let last = bytes.len() - 1;
        bytes[last] = 9;
        fix_crc(&mut bytes);
        assert_eq!(
            BatchView::validate(&bytes, MAX).unwrap_err(),
            BatchError::NonZeroPadding {
                offset: last,
                byte: 9
            }
        );
        assert!(pad <= last);
    }

    /// A batch cut at every length is `UnexpectedEof` for `validate` and an error for
    /// `validate_deep`; `peek_header` needs only the header; bytes after a whole batch are
    /// ignored.
    #[test]
    fn truncation_at_every_length_is_unexpected_eof() {
        let bytes = sample(&[b"some value", b"another"]);
        for n in 0..bytes.len() {
            let err = BatchView::validate(&bytes[..n], MAX).unwrap_err();
            assert!(
                matches!(err, BatchError::UnexpectedEof { .. }),
                "len {n}: {err:?}"
            );
            assert!(BatchView::validate_deep(&bytes[..n], MAX).is_err());
            if n < BATCH_HEADER_SIZE {
                assert!(peek_header(&bytes[..n], MAX).is_err());
            } else {
                // The header alone is enough for peek_header.
                assert!(peek_header(&bytes[..n], MAX).is_ok());
            }
        }
        // Trailing bytes are ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAB; 40]);
        assert_eq!(
            BatchView::validate(&longer, MAX).unwrap().len(),
            bytes.len()
        );
    }

    /// Each header check (magic, version, lengths, record count against the offset range, too
    /// many records, offset overflow, attributes, size limit) refuses a header broken in that
    /// field with its own error.
    #[test]
    fn header_checks() {
        let bytes = sample(&[b"v"]);
        let good = peek_header(&bytes, MAX).unwrap();

        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            peek_header(&bad, MAX),
            Err(BatchError::BadMagic {
                found: [b'X', b'L', b'B', 1]
            })
        );
        let mut bad = bytes.clone();
        bad[3] = 2;
        assert_eq!(
            peek_header(&bad, MAX),
            Err(BatchError::UnsupportedVersion { version: 2 })
        );

        let with = |f: &dyn Fn(&mut BatchHeader)| {
            let mut h = good;
            f(&mut h);
            peek_header(&h.encode(), MAX)
        };
        assert!(matches!(
            with(&|h| h.batch_length = 48),
            Err(BatchError::BadLength {
                batch_length: 48,
                ..
            })
        ));
        assert!(matches!(
            with(&|h| h.batch_length += 1),
            Err(BatchError::BadLength { .. })
        ));
        assert!(matches!(
            with(&|h| h.batch_length += 16),
            Err(BatchError::BadLength { .. })
        ));
        assert!(matches!(
            with(&|h| h.records_length = u32::MAX),
            Err(BatchError::BadLength { .. })
        ));
        assert!(matches!(
            with(&|h| h.record_count = 0),
            Err(BatchError::BadRecordCount { .. })
        ));
        assert!(matches!(
            with(&|h| h.record_count = 2),
            Err(BatchError::BadRecordCount {
                record_count: 2,
                last_offset_delta: 0
            })
        ));
        // Gaps in offsets (compaction) are fine.
        assert!(with(&|h| h.last_offset_delta = 10).is_ok());
        assert!(matches!(
            with(&|h| {
                h.record_count = RECORDS_PER_BATCH_MAX + 1;
                h.last_offset_delta = u32::MAX;
            }),
            Err(BatchError::TooManyRecords { .. })
        ));
        assert!(matches!(
            with(&|h| h.base_offset = u64::MAX),
            Err(BatchError::OffsetOverflow { .. })
        ));
        assert!(matches!(
            with(&|h| h.attributes = 1 << 7),
            Err(BatchError::UnsupportedAttributes { .. })
        ));
        // A topic's lower limit applies; the hard limit always does.
        assert_eq!(
            peek_header(&bytes, bytes.len() - 16),
            Err(BatchError::TooLarge {
                batch_length: bytes.len(),
                max: bytes.len() - 16
            })
        );
        assert!(peek_header(&bytes, usize::MAX).is_ok());
    }

    /// A header claiming more records than the archive holds (with a valid CRC) is
    /// `RecordCountMismatch`, and the same valid batch at a misaligned address is
    /// `MisalignedRecords`.
    #[test]
    fn records_detects_count_mismatch_and_misalignment() {
        let one = sample(&[b"v"]);
        // Claim one more record (with room in the offset range) and fix CRC.
        let mut h = peek_header(&one, MAX).unwrap();
        h.record_count = 2;
        h.last_offset_delta = 1;
        let mut bytes = one.clone();
        bytes[..BATCH_HEADER_SIZE].copy_from_slice(&h.encode());
        fix_crc(&mut bytes);
        let view = BatchView::validate(&bytes, MAX).unwrap();
        assert_eq!(
            view.records().unwrap_err(),
            BatchError::RecordCountMismatch {
                record_count: 2,
                archived: 1
            }
        );
        assert!(BatchView::validate_deep(&bytes, MAX).is_err());

        // The same batch 8 bytes into an aligned buffer is misaligned.
        let mut shifted = AlignedVec::<16>::new();
        shifted.extend_from_slice(&[0u8; 8]);
        shifted.extend_from_slice(&one);
        let view = BatchView::validate(&shifted[8..], MAX).unwrap();
        assert!(matches!(
            view.records(),
            Err(BatchError::MisalignedRecords { align: 16, .. })
        ));
    }

    /// A records archive with a pointer outside itself (and a fixed-up CRC) passes the shallow
    /// `validate` but is refused by `validate_deep`.
    #[test]
    fn garbage_records_are_rejected_by_deep_validation() {
        let bytes = sample(&[b"value"]);
        let h = peek_header(&bytes, MAX).unwrap();
        let end = BATCH_HEADER_SIZE + h.records_length as usize;
        let mut bad = bytes.clone();
        // Point the root vector's relative pointer far outside the archive.
        bad[end - 8..end - 4].copy_from_slice(&0x4000_0000i32.to_le_bytes());
        fix_crc(&mut bad);
        assert!(BatchView::validate(&bad, MAX).is_ok());
        assert!(matches!(
            BatchView::validate_deep(&bad, MAX),
            Err(BatchError::Records { .. })
        ));
    }

    /// `BatchIter` yields each of several concatenated batches in order, with their own base
    /// offsets, and ends at the end of the buffer.
    #[test]
    fn batch_iter_walks_concatenated_batches() {
        let a = sample(&[b"a"]);
        let b = sample(&[b"bb", b"bbb"]);
        let mut c = sample(&[b"c"]);
        stamp_base_offset(&mut c, 3).unwrap();
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&c);
        let full = buf.len();
        let partial = sample(&[b"partial"]);
        buf.extend_from_slice(&partial[..partial.len() - 5]);

        let mut iter = BatchIter::new(&buf, MAX);
        let views: Vec<BatchView<'_>> = iter.by_ref().map(Result::unwrap).collect();
        assert_eq!(views.len(), 3);
        assert_eq!(views[1].record_count(), 2);
        assert_eq!(views[2].base_offset(), 3);
        for v in &views {
            // Each view starts 16-aligned, so records are accessible in place.
            v.records().unwrap();
        }
        assert_eq!(iter.position(), full);
        assert_eq!(iter.remaining_position(), full);
        assert_eq!(iter.remaining().len(), partial.len() - 5);
        assert!(iter.next().is_none());

        // Exactly at the end: no partial tail.
        let mut iter = BatchIter::new(&buf[..full], MAX);
        assert_eq!(iter.by_ref().count(), 3);
        assert_eq!(iter.position(), full);

        // A partial header also stops cleanly.
        let mut iter = BatchIter::new(&buf[..a.len() + 10], MAX);
        assert_eq!(iter.by_ref().count(), 1);
        assert_eq!(iter.position(), a.len());
    }

    /// `BatchIter` yields one error for a corrupt batch and then nothing more, its position at
    /// the start of the bad batch; a zeroed tail is `BadMagic`; an empty buffer yields
    /// nothing.
    #[test]
    fn batch_iter_yields_one_error_then_stops() {
        let a = sample(&[b"a"]);
        let mut b = sample(&[b"b"]);
        let last = b.len() - 1;
        b[last - 20] ^= 0xff;
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&a);
        let mut iter = BatchIter::new(&buf, MAX);
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_err());
        assert!(iter.next().is_none());
        assert!(iter.next().is_none());
        assert_eq!(iter.position(), a.len());

        // Zeros (a preallocated tail) are reported as bad magic.
        let zeros = [0u8; 64];
        let mut iter = BatchIter::new(&zeros, MAX);
        assert!(matches!(
            iter.next(),
            Some(Err(BatchError::BadMagic {
                found: [0, 0, 0, 0]
            }))
        ));
        assert!(iter.next().is_none());
        assert!(BatchIter::new(&[], MAX).next().is_none());
    }

    /// Archived records deserialize to records equal to what was pushed (key, value, headers,
    /// empty and absent tags).
    #[test]
    fn archived_records_deserialize_to_equal_records() {
        let mut b = BatchBuilder::new();
        b.push(
            10,
            Some(b"key"),
            b"value",
            &[("a", b"1"), ("b", b"")],
            Some(&[]),
        );
        b.push(12, None, b"", &[], None);
        let bytes = b.build().unwrap();
        let view = BatchView::validate_deep(&bytes, MAX).unwrap();
        let archived = view.records().unwrap();
        let records: Vec<Record> =
            rkyv::deserialize::<Vec<Record>, rancor::Error>(archived).unwrap();
        let expected = vec![
            Record {
                timestamp_delta_ms: 0,
                key: Some(b"key".to_vec()),
                value: b"value".to_vec(),
                headers: vec![
                    RecordHeader {
                        key: "a".into(),
                        value: b"1".to_vec(),
                    },
                    RecordHeader {
                        key: "b".into(),
                        value: vec![],
                    },
                ],
                tags: Some(vec![]),
            },
            Record {
                timestamp_delta_ms: 2,
                key: None,
                value: vec![],
                headers: vec![],
                tags: None,
            },
        ];
        assert_eq!(records, expected);
        assert_eq!(archived[0], expected[0]);
    }

    /// A builder deferring its CRC builds a batch that fails validation until it is stamped,
    /// and then validates with the same bytes as one built with its CRC.
    #[test]
    fn deferred_crc_is_computed_by_the_stamp() {
        let mut sealed = BatchBuilder::new();
        let mut deferred = BatchBuilder::new();
        deferred.defer_crc_to_stamp(true);
        for builder in [&mut sealed, &mut deferred] {
            builder.push(5, Some(b"k"), b"value", &[], None);
            builder.push(6, None, b"other", &[], None);
        }
        let mut sealed = sealed.finish().unwrap();
        let mut deferred = deferred.finish().unwrap();
        assert!(matches!(
            BatchView::validate(&deferred, crate::limits::BATCH_SIZE_MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
        stamp_producer(&mut sealed, 9, 1, 0).unwrap();
        stamp_producer(&mut deferred, 9, 1, 0).unwrap();
        BatchView::validate(&deferred, crate::limits::BATCH_SIZE_MAX).unwrap();
        assert_eq!(&sealed[..], &deferred[..]);
    }

    /// Stamping producer fields keeps the batch valid and is read back from the header.
    #[test]
    fn stamp_producer_rewrites_fields_and_crc() {
        let mut builder = BatchBuilder::new();
        builder.push(5, None, b"v", &[], None);
        let mut batch = builder.build().unwrap();
        stamp_producer(&mut batch, 77, 3, 1000).unwrap();
        let view = BatchView::validate(&batch, crate::limits::BATCH_SIZE_MAX).unwrap();
        let header = view.header();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (77, 3, 1000)
        );
        assert!(stamp_producer(&mut batch[..40], 1, 1, 1).is_err());
    }

    /// The records of one generated batch: (timestamp, key, value, headers, tags).
    type GeneratedRecord = (
        i64,
        Option<Vec<u8>>,
        Vec<u8>,
        Vec<(String, Vec<u8>)>,
        Option<Vec<String>>,
    );

    fn generated_records() -> impl proptest::strategy::Strategy<Value = Vec<GeneratedRecord>> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        let bytes = || vec(any::<u8>(), 0..40);
        // Strings around rkyv's inline capacity (8 bytes) on both sides.
        let text = || "[a-z\\u{e9}]{0,14}";
        vec(
            (
                1_700_000_000_000i64..1_700_000_100_000,
                proptest::option::of(bytes()),
                bytes(),
                vec((text(), bytes()), 0..4),
                proptest::option::of(vec(text(), 0..4)),
            ),
            1..12,
        )
    }

    /// The batch as rkyv's derived serializer of `Vec<Record>` lays it out: the reference
    /// the in-place builder must match byte for byte.
    fn reference_records_bytes(records: &[GeneratedRecord]) -> Vec<u8> {
        let first = records.iter().map(|r| r.0).min().unwrap();
        let owned: Vec<Record> = records
            .iter()
            .map(|(ts, key, value, headers, tags)| Record {
                timestamp_delta_ms: u32::try_from(ts - first).unwrap(),
                key: key.clone(),
                value: value.clone(),
                headers: headers
                    .iter()
                    .map(|(name, value)| RecordHeader {
                        key: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                tags: tags.clone(),
            })
            .collect();
        let mut out = AlignedVec::<16>::new();
        out.extend_from_slice(&[0u8; BATCH_HEADER_SIZE]);
        let out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&owned, out).unwrap();
        out[BATCH_HEADER_SIZE..].to_vec()
    }

    proptest::proptest! {
        /// Records pushed in place come out byte-identical to rkyv's own archive of the same
        /// records (keys, headers, tags and timestamp deltas included), through `build` and
        /// through `finish` with a recycled buffer, batch after batch.
        #[test]
        fn in_place_builder_matches_rkyv_archive(
            batches in proptest::collection::vec(generated_records(), 1..4)
        ) {
            let mut builder = BatchBuilder::new();
            let mut previous: Option<AlignedVec<16>> = None;
            for records in &batches {
                for (ts, key, value, headers, tags) in records {
                    builder.push_parts(
                        *ts,
                        key.as_deref(),
                        value,
                        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
                        tags.as_ref().map(|t| t.iter().map(String::as_str)),
                    );
                }
                let estimate = builder.estimated_size();
                let built = builder.build().unwrap();
                if let Some(buffer) = previous.take() {
                    builder.recycle(buffer);
                }
                let finished = builder.finish().unwrap();
                proptest::prop_assert_eq!(&built[..], &finished[..]);
                proptest::prop_assert!(finished.len() <= estimate);
                proptest::prop_assert!(builder.is_empty());
                let view = BatchView::validate_deep(&finished, MAX).unwrap();
                let header = view.header();
                proptest::prop_assert_eq!(header.record_count as usize, records.len());
                let records_end = BATCH_HEADER_SIZE + header.records_length as usize;
                let expected = reference_records_bytes(records);
                proptest::prop_assert_eq!(&finished[BATCH_HEADER_SIZE..records_end], &expected[..]);
                previous = Some(finished);
            }
        }
    }

    /// A failed `finish` leaves the builder as it was, and it builds once fixed up.
    #[test]
    fn finish_error_keeps_records() {
        let mut b = BatchBuilder::new();
        assert!(matches!(b.finish(), Err(BatchError::Empty)));
        b.push(0, None, b"a", &[], None);
        b.push(i64::from(u32::MAX) + 1, None, b"b", &[], None);
        assert!(matches!(b.finish(), Err(BatchError::TimestampRange { .. })));
        assert_eq!(b.len(), 2);
        b.clear();
        b.push(7, Some(b"k"), b"v", &[], None);
        let batch = b.finish().unwrap();
        let view = BatchView::validate_deep(&batch, MAX).unwrap();
        assert_eq!(view.records().unwrap()[0].value_bytes(), b"v");
    }
}
