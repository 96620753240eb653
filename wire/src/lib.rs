//! Sluice wire formats.
//!
//! Place: the bottom crate; every other crate (storage, broker, client, bench, the `sluice`
//! binary) depends on it and it depends on none of them. It also defines the delivery
//! policies all of them share ([`Durability`], [`Acks`]).
//!
//! This crate is a pure codec: it turns values into bytes and bytes back
//! into checked views, with no I/O, no async and no allocation on the read
//! path. It currently defines the **record batch** ([`batch`]), the unit of
//! data everywhere in Sluice: the batch a producer builds is, byte for byte,
//! what the broker validates, what the log appends to disk and what a
//! consumer reads back. It is the contract between producer, broker, disk
//! and consumer, so its layout (documented on [`BatchHeader`]) only changes
//! with a new version number.
//!
//! Reading never panics on untrusted bytes: every malformed input becomes a
//! [`BatchError`]. Size limits shared by every component are in [`limits`].
//!
//! ```
//! use wire::{BatchBuilder, BatchView, stamp_base_offset, limits::BATCH_SIZE_MAX};
//!
//! // Producer: build a batch.
//! let mut builder = BatchBuilder::new();
//! builder.push(1_700_000_000_000, Some(b"user-1"), b"hello", &[], Some(&["greeting"]));
//! let mut batch = builder.build()?;
//!
//! // Broker: validate untrusted bytes deeply, then assign offsets in place.
//! BatchView::validate_deep(&batch, BATCH_SIZE_MAX)?;
//! stamp_base_offset(&mut batch, 42)?;
//!
//! // Consumer: validate and read the records in place.
//! let view = BatchView::validate(&batch, BATCH_SIZE_MAX)?;
//! assert_eq!(view.base_offset(), 42);
//! let records = view.records()?;
//! assert_eq!(records[0].value_bytes(), b"hello");
//! assert!(records[0].has_tag("greeting"));
//! # Ok::<(), wire::BatchError>(())
//! ```

pub mod batch;
pub mod error;
pub mod limits;
pub mod policy;
pub mod protocol;

pub use batch::{
    peek_header, stamp_base_offset, stamp_producer, ArchivedRecord, ArchivedRecordHeader,
    ArchivedRecords, BatchBuilder, BatchHeader, BatchIter, BatchView, Record, RecordHeader,
    ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL, BASE_OFFSET_POSITION, BATCH_ALIGNMENT,
    BATCH_HEADER_SIZE, BATCH_MAGIC, BATCH_VERSION, CRC_START,
};
pub use error::{BatchError, ProtocolError};
pub use policy::{Acks, Durability, ParsePolicyError};
/// The 16-aligned byte buffer batches are built into, re-exported so
/// callers need not depend on rkyv directly.
pub use rkyv::util::AlignedVec;
