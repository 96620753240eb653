//! Errors of the batch codec.
//!
//! Every way untrusted bytes can be wrong maps to one [`BatchError`] variant
//! carrying the offending values, so a broker can log or report precisely why
//! it rejected a batch and a log can tell a torn tail from corruption.

use thiserror::Error;

/// Why a record batch could not be decoded, validated or built.
///
/// Decoding never panics: every malformed input ends up here.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The input ends before an item that must be present.
    ///
    /// `offset` is where the missing item starts in the input, `need` its
    /// size in bytes and `have` how many bytes are available from `offset`.
    /// For a batch walked out of a buffer this usually means a partial batch
    /// at the end of the buffer (read more, or truncate a torn tail).
    #[error("unexpected end of input: need {need} bytes at offset {offset}, have {have}")]
    UnexpectedEof {
        /// Position in the input where the missing item starts.
        offset: usize,
        /// Bytes the item needs from `offset`.
        need: usize,
        /// Bytes available from `offset`.
        have: usize,
    },

    /// The first three bytes are not the batch magic `b"SLB"`.
    #[error("bad batch magic: found {found:02x?}, expected \"SLB\" followed by the version")]
    BadMagic {
        /// The first four bytes of the header as found (magic and version).
        found: [u8; 4],
    },

    /// The magic is right but the format version is not one this codec
    /// understands.
    #[error("unsupported batch version {version}")]
    UnsupportedVersion {
        /// The version byte found at offset 3.
        version: u8,
    },

    /// `batch_length` or `records_length` violates the layout rules
    /// (too short, not a multiple of 16, or inconsistent with each other).
    #[error("bad batch length {batch_length}: {reason}")]
    BadLength {
        /// The `batch_length` field of the header.
        batch_length: u32,
        /// Which rule was broken.
        reason: &'static str,
    },

    /// The batch (or the batch a builder would produce) is larger than the
    /// applicable limit.
    #[error("batch of {batch_length} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the batch in bytes (for a builder: at least this much).
        batch_length: usize,
        /// The limit that applied: the smaller of the caller's limit and
        /// [`BATCH_SIZE_MAX`](crate::limits::BATCH_SIZE_MAX).
        max: usize,
    },

    /// The CRC32C stored in the header does not match the bytes it covers.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over bytes `[20, batch_length)`.
        computed: u32,
    },

    /// `record_count` is zero or larger than the offset range
    /// `last_offset_delta + 1` allows.
    #[error("bad record count {record_count} for last_offset_delta {last_offset_delta}")]
    BadRecordCount {
        /// The `record_count` field of the header.
        record_count: u32,
        /// The `last_offset_delta` field of the header.
        last_offset_delta: u32,
    },

    /// More records than [`RECORDS_PER_BATCH_MAX`](crate::limits::RECORDS_PER_BATCH_MAX).
    #[error("{record_count} records exceed the limit of {max} per batch")]
    TooManyRecords {
        /// Number of records in the header or the builder.
        record_count: usize,
        /// The limit.
        max: u32,
    },

    /// `base_offset + last_offset_delta + 1` does not fit in a `u64`.
    #[error("offset overflow: base_offset {base_offset} + last_offset_delta {last_offset_delta}")]
    OffsetOverflow {
        /// The `base_offset` field of the header.
        base_offset: u64,
        /// The `last_offset_delta` field of the header.
        last_offset_delta: u32,
    },

    /// The attributes use a compression codec this codec cannot read, or set
    /// reserved bits.
    #[error("unsupported batch attributes {attributes:#06x}: {reason}")]
    UnsupportedAttributes {
        /// The `attributes` field.
        attributes: u16,
        /// Which rule was broken.
        reason: &'static str,
    },

    /// A padding byte after the records is not zero.
    #[error("non-zero padding byte {byte:#04x} at batch offset {offset}")]
    NonZeroPadding {
        /// Offset of the first non-zero padding byte from the batch start.
        offset: usize,
        /// Its value.
        byte: u8,
    },

    /// The records are not at a 16-aligned address in memory, so they cannot
    /// be accessed in place.
    #[error("records at address {address:#x} are not {align}-byte aligned")]
    MisalignedRecords {
        /// Address of the first record byte.
        address: usize,
        /// The required alignment.
        align: usize,
    },

    /// The rkyv structure check (bytecheck) rejected the records.
    #[error("malformed records: {reason}")]
    Records {
        /// The validator's message.
        reason: String,
    },

    /// The archive holds a different number of records than the header says.
    #[error("header says {record_count} records, archive holds {archived}")]
    RecordCountMismatch {
        /// The `record_count` field of the header.
        record_count: u32,
        /// Length of the archived record vector.
        archived: usize,
    },

    /// The builder's timestamps span more than `u32::MAX` milliseconds, so
    /// the deltas do not fit the record format.
    #[error("timestamps {first_timestamp_ms}..={max_timestamp_ms} span more than u32::MAX ms")]
    TimestampRange {
        /// Smallest timestamp pushed.
        first_timestamp_ms: i64,
        /// Largest timestamp pushed.
        max_timestamp_ms: i64,
    },

    /// A builder with no records was asked to build (a batch has at least
    /// one record).
    #[error("cannot build an empty batch")]
    Empty,
}

/// Why a protocol frame could not be decoded. Never a panic: every malformed input ends here.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame ends before a field that must be present.
    #[error("frame ends early: need {need} bytes at position {position}, have {have}")]
    UnexpectedEof {
        /// Frame position of the missing field.
        position: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// The length prefix announces more than the limit.
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The API key is not one this side knows.
    #[error("unknown API key {api_key}")]
    UnknownApi {
        /// The key received.
        api_key: u16,
    },
    /// The API version is not supported.
    #[error("API {api_key} version {version} is not supported (this side speaks version 1)")]
    UnsupportedVersion {
        /// The API.
        api_key: u16,
        /// The version received.
        version: u16,
    },
    /// A field holds an impossible value.
    #[error("malformed frame at position {position}: {reason}")]
    Malformed {
        /// Frame position of the field.
        position: usize,
        /// What is wrong.
        reason: String,
    },
}
