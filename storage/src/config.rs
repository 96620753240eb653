//! Per-log settings: how big segments grow, when they roll, how durable an append is and how
//! long data is kept. The broker builds a [`LogConfig`] from a topic's settings; this crate never
//! sees command-line flags.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, StorageError};
use crate::io::{FaultPlan, FileOptions};

/// The O_DIRECT page: every disk write and read is aligned to it. 4 KiB is the logical block
/// size of NVMe drives formatted for performance and a multiple of every other block size.
pub const PAGE_SIZE: usize = 4096;

/// First fallocate step of a segment: 64 KiB. Each later step reserves as much again as the
/// segment has reserved, up to [`LogConfig::preallocate_bytes`]: 64 KiB, 128 KiB, ... 64 MiB,
/// then 64 MiB at a time. So an idle partition with a few KB reserves 64 KiB of disk (10 000
/// of them: 640 MiB), and a busy one reaches 64 MiB steps after 64 MiB of data.
pub const PREALLOCATE_FIRST_STEP_BYTES: u64 = 64 * 1024;

/// Largest fallocate step: 64 MiB, the old fixed step (see [`LogConfig::preallocate_bytes`]).
pub const PREALLOCATE_STEP_MAX_BYTES: u64 = 64 << 20;

/// When an appended batch is forced to the device with `fdatasync`: the one policy type of
/// the project, defined in `wire` (it travels in topic settings).
pub use wire::Durability;

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment is sealed and a new one started once it would grow past this size.
    /// Default 1 GiB; at most 4 GiB because index entries store positions as `u32`.
    pub segment_bytes_max: u64,
    /// A non-empty segment older than this is sealed at the next append. Default 7 days.
    pub segment_age_max: Duration,
    /// When appends are synced.
    pub durability: Durability,
    /// Sealed segments whose newest record is older than this are deleted. Default 14 days
    /// (the seeds' two weeks); `None` keeps data forever.
    pub retention_time: Option<Duration>,
    /// Oldest sealed segments are deleted while the log is larger than this. `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// One sparse index entry per this many bytes of log. Default 16 KiB: a 1 GiB segment
    /// holds 65 536 entries (512 KiB offset index + 768 KiB time index at most), and a lookup
    /// reads at most 16 KiB more than it needs.
    pub index_interval_bytes: u32,
    /// Size of the largest append chunk: the unit of disk writes while data streams in.
    /// Default 1 MiB, where O_DIRECT writes reach the device's sequential bandwidth (see
    /// PEERS.md). A log starts with 16 KiB chunks and doubles up to this size, and its chunks
    /// come from (and count against) its core's [`CoreResources`](crate::CoreResources).
    pub write_chunk_bytes: usize,
    /// Most chunk writes in flight at once; appends wait when it is reached (back-pressure).
    /// Default 4: 4 x 1 MiB keeps a queue deep enough for full bandwidth.
    pub writes_in_flight_max: usize,
    /// Most recently appended data one log keeps in memory for readers, beyond the chunks
    /// still being written. Default 128 MiB, half of a core's default cache budget: at the
    /// 500-700 MB/s one partition takes on a core, that is 180-250 ms of data, so a consumer
    /// that falls that far behind (a pause, a 32 MiB fetch being processed) still reads from
    /// memory. With 8 MiB (16 ms) a consumer that lagged once read from disk from then on,
    /// competing with the appends for the disk, and never caught up (e2e 1 KiB × 1000: 126k
    /// of 359k msgs/s received, 2 shared cores).
    /// All logs of a core together keep at most their core's
    /// [`ShardBudget::tail_cache_bytes`](crate::ShardBudget), least recently appended evicted
    /// first; this is only the cap of one log.
    pub tail_cache_bytes_max: usize,
    /// Largest batch accepted. Default and upper bound: [`wire::limits::BATCH_SIZE_MAX`].
    pub batch_bytes_max: usize,
    /// The active segment's file is grown with fallocate ahead of the writes, so that a full
    /// disk shows up as a clean error before any byte is written. The steps grow with the data
    /// (see [`PREALLOCATE_FIRST_STEP_BYTES`]) up to this size. Default and upper bound 64 MiB.
    pub preallocate_bytes: u64,
    /// Refuse to open when the kernel silently drops O_DIRECT (tmpfs). Default true; tests of
    /// pure logic may turn it off.
    pub require_direct_io: bool,
    /// Faults to inject into every file operation of this log (tests of failure paths, the
    /// storage crate's and the broker's); `None` in production. See [`FaultPlan`].
    pub faults: Option<Arc<FaultPlan>>,
    /// Told how long each data sync (fdatasync of the active segment, one per group commit)
    /// took; the broker feeds its fsync-latency histogram with it. `None`: nobody listens.
    pub sync_observer: Option<SyncObserver>,
}

/// A hook a log calls with the duration of each of its data syncs, on the log's own shard,
/// right after the fdatasync returns (whether it succeeded or not). It must be cheap: it runs
/// on the log's flusher task.
#[derive(Clone)]
pub struct SyncObserver(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl fmt::Debug for SyncObserver {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SyncObserver")
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_max: Duration::from_secs(7 * 24 * 3600),
            durability: Durability::Interval {
                interval_ms: 10,
                bytes: 4 << 20,
            },
            retention_time: Some(Duration::from_secs(14 * 24 * 3600)),
            retention_bytes: None,
            index_interval_bytes: 16 * 1024,
            write_chunk_bytes: 1 << 20,
            writes_in_flight_max: 4,
            tail_cache_bytes_max: 128 << 20,
            batch_bytes_max: wire::limits::BATCH_SIZE_MAX,
            preallocate_bytes: 64 << 20,
            require_direct_io: true,
            faults: None,
            sync_observer: None,
        }
    }
}

impl LogConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(StorageError::Config(what));
        if self.segment_bytes_max < PAGE_SIZE as u64 * 4 || self.segment_bytes_max > u32::MAX as u64
        {
            return fail(format!(
                "segment_bytes_max {} must be within [16 KiB, 4 GiB)",
                self.segment_bytes_max
            ));
        }
        if self.write_chunk_bytes < PAGE_SIZE || self.write_chunk_bytes % PAGE_SIZE != 0 {
            return fail(format!(
                "write_chunk_bytes {} must be a non-zero multiple of {PAGE_SIZE}",
                self.write_chunk_bytes
            ));
        }
        if self.writes_in_flight_max == 0 || self.writes_in_flight_max > 64 {
            return fail(format!(
                "writes_in_flight_max {} must be within [1, 64]",
                self.writes_in_flight_max
            ));
        }
        if self.batch_bytes_max < wire::batch::BATCH_HEADER_SIZE
            || self.batch_bytes_max > wire::limits::BATCH_SIZE_MAX
        {
            return fail(format!(
                "batch_bytes_max {} must be within [{}, {}]",
                self.batch_bytes_max,
                wire::batch::BATCH_HEADER_SIZE,
                wire::limits::BATCH_SIZE_MAX
            ));
        }
        if self.preallocate_bytes < PAGE_SIZE as u64
            || self.preallocate_bytes > PREALLOCATE_STEP_MAX_BYTES
        {
            return fail(format!(
                "preallocate_bytes {} must be within [{PAGE_SIZE}, {PREALLOCATE_STEP_MAX_BYTES}]",
                self.preallocate_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be positive".into());
        }
        if let Durability::Interval { interval_ms, bytes } = self.durability {
            if interval_ms == 0 || bytes == 0 {
                return fail("durability interval and bytes must be positive".into());
            }
        }
        Ok(())
    }

    /// How this log's files are opened.
    pub(crate) fn file_options(&self) -> FileOptions {
        FileOptions {
            require_direct_io: self.require_direct_io,
            faults: self.faults.clone(),
        }
    }
}
