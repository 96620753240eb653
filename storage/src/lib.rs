//! Sluice's storage engine: the partition log.
//!
//! Place: above `wire`, below the broker (the only crate that uses it); the only crate that
//! touches files. [`metadata`] writes the broker's small metadata files atomically.
//!
//! A log is a directory of segment files named by their first offset. Batches (the
//! [`wire::batch`] format) are laid end to end; each is a multiple of 16 bytes, so a batch cut out
//! of a page-aligned buffer can be read in place.
//!
//! ```text
//!  <dir>/
//!    00000000000000000000.log    sealed: read-only, O_DIRECT reads
//!    00000000000000000000.index  its sparse offset + time index (written when sealed)
//!    00000000000000812345.log    active: appended through aligned chunks (16 KiB doubling to
//!                                1 MiB), O_DIRECT writes, fallocate steps of 64 KiB doubling
//!
//!  a segment file:
//!  +---------+---------+---------+-----+---------+------------------------------------+
//!  | batch 0 | batch 1 | batch 2 | ... | batch n | zeros up to the page end (on disk)  |
//!  +---------+---------+---------+-----+---------+------------------------------------+
//!  each batch: 64-byte header (base offset stamped by the log, CRC32C over the rest) + rkyv
//!  records + zero padding to 16 bytes
//! ```
//!
//! Durability contract (see [`Durability`]): an append returns once the batch is *logically
//! appended* (readable, offsets assigned). It is *written* when its O_DIRECT writes complete (it
//! then survives a crash of the process) and *durable* when an fdatasync covering it returns (it
//! survives a crash of the machine); [`Log::wait_durable`] waits for the latter, and appends
//! waiting together share one fdatasync. After a crash, [`Log::open`] keeps every durable batch
//! and cuts the active segment at the first batch that does not validate.
//!
//! Everything runs inside a glommio executor on the shard that owns the log; the only module that
//! touches files is `io`, and a [`FaultPlan`] in [`LogConfig::faults`] makes its files fail on
//! purpose (tests). The logs of one shard share a [`CoreResources`]: one tail-cache budget and
//! one pool of append chunks, so memory follows the data and the budget, not the number of
//! partitions; a segment's disk reservation likewise grows with its data.

mod appender;
pub mod config;
mod core_resources;
pub mod error;
mod index;
mod io;
mod log;
mod read_ahead;
pub use io::metadata;
mod recovery;
mod segment;

pub use config::{
    Durability, LogConfig, SyncObserver, PAGE_SIZE, PREALLOCATE_FIRST_STEP_BYTES,
    PREALLOCATE_STEP_MAX_BYTES,
};
pub use core_resources::{
    CoreResources, ShardBudget, SPARE_CHUNKS_MAX, TAIL_CACHE_BYTES_PER_CORE_DEFAULT,
};
pub use error::{Result, StorageError};
pub use io::{check_direct_io, FaultCounts, FaultPlan, SharedBytes, Signal};
pub use log::{now_ms, AppendInfo, Log, ReadBatches, RetentionReport};
pub use segment::ReadBatch;
