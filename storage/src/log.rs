//! [`Log`]: one partition's log, the API the broker and the replication layer use.
//!
//! A `Log` lives on the shard that owns the partition (it is `!Send`); every method takes
//! `&self` and may be called from many tasks of that shard at once. Appends, rolls, truncation,
//! retention and the flusher's hand-off of the tail are serialised by one async lock (never
//! held by readers); no `RefCell` borrow is ever held across an `.await`.
//!
//! Offsets: `log_start_offset() <= durable_offset() <= written_offset() <= log_end_offset()`;
//! offsets below `durable_offset()` have been fdatasync'ed, offsets below `written_offset()`
//! have been written to the file (O_DIRECT: they survive a crash of the process, not of the
//! machine).

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::sync::Semaphore;
use wire::batch::{peek_header, BatchView, BATCH_HEADER_SIZE};

use crate::appender::{poisoned, Appender};
use crate::config::{Durability, LogConfig, PAGE_SIZE, PREALLOCATE_FIRST_STEP_BYTES};
use crate::core_resources::{CacheAccount, CacheOwner, CoreResources};
use crate::error::{Result, StorageError};
use crate::index::{SegmentIndex, SegmentSummary};
use crate::io::{
    align_down, align_up, create_dir_all, list_dir, prime_device_probe, remove_file, sync_dir,
    SegmentFile, SharedBytes, Signal,
};
use crate::read_ahead::{Prefetch, ReadAhead, ResumePoint, READ_AHEAD_UNTAKEN_MAX};
use crate::recovery::scan_segment;
use crate::segment::{
    index_path, log_path, parse_log_name, read_from_disk, read_index_file, write_index_file,
    DiskRead, ReadBatch, SealedSegment,
};

/// Most sealed-segment indexes kept in memory per log; older ones are dropped and re-read from
/// their `.index` file when needed. 8 x (at most 1 MiB for a 1 GiB segment) bounds the memory.
const SEALED_INDEXES_LOADED_MAX: usize = 8;

/// What an append returns: the offsets the log gave the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset stamped into the batch: its first record's offset.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
}

/// Batches returned by [`Log::read`].
#[derive(Debug, Default)]
pub struct ReadBatches {
    /// Whole batches in offset order; the first may start before the offset asked for.
    pub batches: Vec<ReadBatch>,
}

impl ReadBatches {
    /// Offset to read next: one past the last batch returned (`None` when empty).
    pub fn next_offset(&self) -> Option<u64> {
        self.batches.last().map(|b| b.last_offset + 1)
    }

    /// Bytes returned.
    pub fn total_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.bytes.len()).sum()
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes of segment data deleted.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: u64,
}

/// One partition's log. See the module docs.
pub struct Log {
    inner: Rc<LogInner>,
}

struct LogInner {
    dir: PathBuf,
    config: LogConfig,
    /// This log's share of its core's tail-cache budget.
    cache: Rc<CacheAccount>,
    /// Reads running now; `close` waits until none is left.
    reads_in_flight: Cell<usize>,
    /// A read finished.
    read_finished: Signal,
    state: RefCell<LogState>,
    /// Serialises everything that changes the segments or the active segment's bytes.
    mutation: Semaphore,
    /// The durable or the written offset moved, or the log was poisoned or closed.
    durable_changed: Signal,
    /// The flusher has work (a sync was asked for, or unsynced data appeared).
    flush_wanted: Signal,
    /// The log end offset moved (for long polls).
    appended: Signal,
    /// The next range of the foremost sequential disk reader, read ahead.
    read_ahead: ReadAhead,
}

struct LogState {
    sealed: Vec<Rc<SealedSegment>>,
    active: ActiveSegment,
    log_start_offset: u64,
    next_offset: u64,
    durable_offset: u64,
    /// Every offset below it is written to the file (not necessarily synced).
    written_offset: u64,
    /// End offset a write of the tail now in flight will cover ([`Log::wait_written`]), so
    /// concurrent waiters share one write.
    tail_write_to: Option<u64>,
    /// Bumped by truncation, so a sync that started before it does not report stale offsets.
    epoch: u64,
    flush_requested: bool,
    unflushed_bytes: u64,
    first_unflushed_ms: Option<i64>,
    poisoned: Option<String>,
    closed: bool,
    /// Base offsets of sealed segments whose index is in memory, oldest first.
    loaded_indexes: Vec<u64>,
}

/// A tail write submitted by [`LogInner::submit_tail`]: the log end it covers once the file
/// is written up to `target_position`, and the truncation epoch it was taken in.
struct TailWrite {
    file: SegmentFile,
    tracker: Rc<crate::appender::WriteTracker>,
    target_position: u64,
    target_offset: u64,
    epoch: u64,
}

struct ActiveSegment {
    base_offset: u64,
    appender: Appender,
    index: SegmentIndex,
    /// When this segment started, for roll by age (first batch's timestamp, else creation).
    created_ms: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Opens the log in `dir`, creating the directory and an empty first segment if needed,
    /// with the calling shard's [`CoreResources::current`]. See [`Log::open_in`].
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Self::open_in(dir, config, &CoreResources::current()).await
    }

    /// Opens the log in `dir` on a shard whose logs share `resources` (tail-cache budget and
    /// chunk pool). Recovers from a crash: the active (last) segment is scanned, and a torn or
    /// invalid tail is cut; sealed segments are checked against their index files, rebuilt by
    /// a scan when the index is missing, and any invalid batch in them is a
    /// [`StorageError::Corrupt`].
    pub async fn open_in(
        dir: impl AsRef<Path>,
        config: LogConfig,
        resources: &Rc<CoreResources>,
    ) -> Result<Log> {
        config.validate()?;
        // Absolute, because glommio's directory operations mishandle relative paths.
        let dir =
            std::path::absolute(dir.as_ref()).map_err(|e| StorageError::io(dir.as_ref(), e))?;
        create_dir_all(&dir)?;
        prime_device_probe(&dir).await?;
        let mut bases: Vec<u64> = list_dir(&dir)?
            .iter()
            .filter_map(|name| parse_log_name(name))
            .collect();
        bases.sort_unstable();
        let options = config.file_options();
        let cache = resources.open_account();

        let mut sealed = Vec::new();
        let mut expected_base: Option<u64> = None;
        let active_base = bases.last().copied();
        for &base in bases.iter().take(bases.len().saturating_sub(1)) {
            let path = log_path(&dir, base);
            if expected_base.is_some_and(|e| e != base) {
                return Err(StorageError::Corrupt {
                    path,
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base}, previous one ended at {expected_base:?}"
                    ),
                });
            }
            let file = SegmentFile::open(&path, &options).await?;
            let size = file.size().await?;
            let summary = match read_index_file(&index_path(&dir, base), &options).await? {
                Some((_, summary))
                    if summary.base_offset == base && summary.end_position == size =>
                {
                    summary
                }
                _ => {
                    let scan = scan_segment(
                        &file,
                        base,
                        config.index_interval_bytes,
                        config.batch_bytes_max,
                    )
                    .await?;
                    if let Some(invalid) = scan.invalid {
                        return Err(StorageError::Corrupt {
                            path,
                            position: invalid.position,
                            reason: invalid.reason,
                        });
                    }
                    if scan.summary.end_position != size {
                        // A sealed segment is cut to its last batch: zeros before its end are
                        // damage, not preallocated space.
                        return Err(StorageError::Corrupt {
                            path,
                            position: scan.summary.end_position,
                            reason: "zeroed bytes inside a sealed segment".into(),
                        });
                    }
                    let bytes = scan.index.encode(&scan.summary);
                    write_index_file(&index_path(&dir, base), &bytes, &options).await?;
                    scan.summary
                }
            };
            expected_base = Some(summary.next_offset);
            sealed.push(Rc::new(SealedSegment {
                summary,
                file,
                index: RefCell::new(None),
                removed: Cell::new(false),
            }));
        }

        let active = match active_base {
            Some(base) => {
                if expected_base.is_some_and(|e| e != base) {
                    return Err(StorageError::Corrupt {
                        path: log_path(&dir, base),
                        position: 0,
                        reason: format!("segment starts at offset {base}, previous one ended at {expected_base:?}"),
                    });
                }
                let file = SegmentFile::open(&log_path(&dir, base), &options).await?;
                open_active(&dir, &config, file, base, &cache).await?
            }
            None => create_active(&dir, &config, 0, &cache).await?,
        };
        let log_start_offset = sealed
            .first()
            .map_or(active.segment.base_offset, |s| s.summary.base_offset);
        let next_offset = active.next_offset;
        tracing::info!(dir = %dir.display(), log_start_offset, next_offset, segments = sealed.len() + 1, "log opened");
        let inner = Rc::new(LogInner {
            dir,
            config,
            cache: cache.clone(),
            reads_in_flight: Cell::new(0),
            read_finished: Signal::default(),
            state: RefCell::new(LogState {
                sealed,
                active: active.segment,
                log_start_offset,
                next_offset,
                durable_offset: next_offset,
                written_offset: next_offset,
                tail_write_to: None,
                epoch: 0,
                flush_requested: false,
                unflushed_bytes: 0,
                first_unflushed_ms: None,
                poisoned: None,
                closed: false,
                loaded_indexes: Vec::new(),
            }),
            mutation: Semaphore::new(1),
            durable_changed: Signal::default(),
            flush_wanted: Signal::default(),
            appended: Signal::default(),
            read_ahead: ReadAhead::default(),
        });
        let owner: Weak<dyn CacheOwner> = Rc::downgrade(&inner) as Weak<dyn CacheOwner>;
        cache.set_owner(owner);
        glommio::spawn_local(flusher(Rc::downgrade(&inner))).detach();
        Ok(Log { inner })
    }

    /// The directory holding this log's files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The settings this log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.inner.state.borrow().log_start_offset
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// Every offset below this one has been fdatasync'ed.
    pub fn durable_offset(&self) -> u64 {
        self.inner.state.borrow().durable_offset
    }

    /// Every offset below this one has been written to the segment file (it survives a crash
    /// of the process); `durable_offset() <= written_offset() <= log_end_offset()`.
    pub fn written_offset(&self) -> u64 {
        self.inner.state.borrow().written_offset
    }

    /// Total bytes of segment data.
    pub fn size_bytes(&self) -> u64 {
        let state = self.inner.state.borrow();
        state.sealed.iter().map(|s| s.size_bytes()).sum::<u64>()
            + state.active.appender.end_position()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().sealed.len() + 1
    }

    /// Appends a validated batch: stamps the next offset into a copy of its header, copies it
    /// into the active segment and returns its offsets. On return the batch is *logically
    /// appended* (readable); use [`Log::wait_durable`] to wait until it is synced as the log's
    /// durability policy and the caller's acks require. Waits only for back-pressure (too many
    /// writes in flight), a segment roll or file preallocation.
    pub async fn append(&self, batch: BatchView<'_>) -> Result<AppendInfo> {
        let inner = &self.inner;
        let size_bytes = batch.len();
        if size_bytes > inner.config.batch_bytes_max {
            return Err(StorageError::BatchTooLarge {
                size_bytes,
                max_bytes: inner.config.batch_bytes_max,
            });
        }
        let _permit = inner.lock().await?;
        inner.check_usable()?;
        inner.cache.touch();
        if inner.needs_roll(size_bytes) {
            inner.roll().await?;
        }
        inner.reserve(size_bytes).await?;
        let tracker = inner.state.borrow().active.appender.tracker();
        tracker
            .wait_in_flight_below(inner.config.writes_in_flight_max)
            .await
            .map_err(|reason| inner.poison(reason))?;

        let header = batch.header();
        let info = {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            let base_offset = state.next_offset;
            let mut stamped = [0u8; BATCH_HEADER_SIZE];
            stamped.copy_from_slice(&batch.as_bytes()[..BATCH_HEADER_SIZE]);
            wire::batch::stamp_base_offset(&mut stamped, base_offset)?;
            let active = &mut state.active;
            let position = active.appender.end_position();
            active
                .appender
                .append_batch(&stamped, &batch.as_bytes()[BATCH_HEADER_SIZE..]);
            let relative = (base_offset - active.base_offset) as u32;
            active.index.on_batch(
                relative,
                position as u32,
                header.batch_length,
                header.max_timestamp_ms,
                inner.config.index_interval_bytes,
            );
            active.appender.trim_cache();
            let last_offset = base_offset + u64::from(header.last_offset_delta);
            state.next_offset = last_offset + 1;
            state.unflushed_bytes += size_bytes as u64;
            state.first_unflushed_ms.get_or_insert_with(now_ms);
            if let Durability::Interval { bytes, .. } = inner.config.durability {
                if state.unflushed_bytes >= bytes {
                    state.flush_requested = true;
                }
            }
            AppendInfo {
                base_offset,
                last_offset,
            }
        };
        inner.flush_wanted.notify_all();
        inner.appended.notify_all();
        Ok(info)
    }

    /// Waits until `offset` is durable (fdatasync'ed). Under `always` (and `never`) this asks
    /// for a sync at once; concurrent waiters share it (group commit). Under `interval` the
    /// sync comes on its schedule.
    pub async fn wait_durable(&self, offset: u64) -> Result<()> {
        let inner = &self.inner;
        {
            let mut state = inner.state.borrow_mut();
            if offset >= state.next_offset {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                });
            }
            if state.durable_offset > offset {
                return Ok(());
            }
            if !matches!(inner.config.durability, Durability::Interval { .. }) {
                state.flush_requested = true;
            }
        }
        inner.flush_wanted.notify_all();
        inner
            .durable_changed
            .wait_until(|| {
                let state = inner.state.borrow();
                state.durable_offset > offset || state.poisoned.is_some() || state.closed
            })
            .await;
        let state = inner.state.borrow();
        if state.durable_offset > offset {
            Ok(())
        } else {
            drop(state);
            inner.check_usable()?;
            Err(inner.closed_error())
        }
    }

    /// Waits until `offset` is written to the segment file, not necessarily synced: a crash of
    /// the process no longer loses it. Writes the partial tail at once if it holds `offset`
    /// (no fsync); concurrent waiters share that write. Replicas of a log that is not synced
    /// before every ack use it so that what they report replicated survives a kill -9.
    pub async fn wait_written(&self, offset: u64) -> Result<()> {
        self.inner.wait_written(offset).await
    }

    /// Starts writing the tail up to `offset` in the background, as [`Log::wait_written`] would,
    /// for a caller that does not wait (the write moves the written offset; a failure poisons
    /// the log as any failed write does).
    pub fn write_soon(&self, offset: u64) {
        let inner = self.inner.clone();
        glommio::spawn_local(async move {
            let _ = inner.wait_written(offset).await;
        })
        .detach();
    }

    /// Waits until the written offset is past `offset` (without asking for a write), or the
    /// log closes or is poisoned.
    pub async fn wait_for_written_offset(&self, offset: u64) {
        self.inner
            .wait_for_state(|state| state.written_offset > offset)
            .await
    }

    /// Syncs everything appended so far, whatever the policy.
    pub async fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        if end == 0 || self.durable_offset() >= end {
            return Ok(());
        }
        self.wait_durable(end - 1).await
    }

    /// Waits until the log holds `offset` (its end offset is past it), or the log closes.
    /// Long polls of the broker wait here; woken by appends on this shard, no polling.
    pub async fn wait_for_offset(&self, offset: u64) {
        let inner = &self.inner;
        inner
            .appended
            .wait_until(|| {
                let state = inner.state.borrow();
                state.next_offset > offset || state.closed
            })
            .await
    }

    /// Waits until the durable offset is past `offset` (without asking for a sync), or the
    /// log closes or is poisoned. Long polls of consumers that may only see synced data wait here.
    pub async fn wait_for_durable_offset(&self, offset: u64) {
        self.inner
            .wait_for_state(|state| state.durable_offset > offset)
            .await
    }

    /// Reads whole batches starting with the one that holds `from_offset`, up to `max_bytes`
    /// (at least one batch when any is there, so readers progress past large batches).
    /// `from_offset == log_end_offset()` returns nothing; outside `[start, end]` is
    /// [`StorageError::OffsetOutOfRange`].
    pub async fn read(&self, from_offset: u64, max_bytes: usize) -> Result<ReadBatches> {
        self.read_bounded(from_offset, max_bytes, u64::MAX).await
    }

    /// Like [`Log::read`], returning only batches whose last offset is below `end_offset` (the
    /// high watermark, for consumers that must see only replicated data).
    pub async fn read_bounded(
        &self,
        from_offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<ReadBatches> {
        let _in_flight = ReadInFlight::start(&*self.inner);
        // One pass reads from one place (a sealed segment, the disk part of the active one, or
        // the tail cache); continue into the next while the budget allows.
        let (mut out, mut budget_spent) = self
            .read_once(from_offset, max_bytes, end_offset, max_bytes)
            .await?;
        while let Some(next) = out.next_offset() {
            if budget_spent {
                // The next batch on disk did not fit: reading it again to find that out would
                // waste a read (and the read-ahead kept for the next fetch).
                break;
            }
            let taken = out.total_bytes();
            if taken >= max_bytes || next >= end_offset.min(self.log_end_offset()) {
                break;
            }
            let more;
            (more, budget_spent) = self
                .read_once(next, max_bytes - taken, end_offset, max_bytes)
                .await?;
            let Some(first) = more.batches.first() else {
                break;
            };
            // Only whole batches that fit: the first of a continuation is not exempt.
            if first.bytes.len() > max_bytes - taken {
                break;
            }
            let before = out.batches.len();
            let mut budget = max_bytes - taken;
            for batch in more.batches {
                if batch.bytes.len() > budget {
                    break;
                }
                budget -= batch.bytes.len();
                out.batches.push(batch);
            }
            if out.batches.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// One pass of [`Log::read_bounded`] (of a read of `fetch_bytes` in all), from one place;
    /// also says whether it stopped on disk because the next batch did not fit in `max_bytes`.
    async fn read_once(
        &self,
        from_offset: u64,
        max_bytes: usize,
        end_offset: u64,
        fetch_bytes: usize,
    ) -> Result<(ReadBatches, bool)> {
        let inner = &self.inner;
        let mut out = ReadBatches::default();
        let mut budget_spent = false;
        enum Plan {
            Done,
            Disk {
                file: SegmentFile,
                start_position: u64,
                start_offset: u64,
                end_position: u64,
            },
            Sealed(Rc<SealedSegment>),
        }
        let (plan, epoch) = {
            let state = inner.state.borrow();
            if state.closed {
                return Err(inner.closed_error());
            }
            if from_offset < state.log_start_offset || from_offset > state.next_offset {
                return Err(StorageError::OffsetOutOfRange {
                    requested: from_offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.next_offset,
                });
            }
            let active = &state.active;
            let plan = if from_offset == state.next_offset {
                Plan::Done
            } else if from_offset >= active.base_offset {
                let (hint, hint_offset) = active
                    .index
                    .lookup_offset((from_offset - active.base_offset) as u32)
                    .map_or((0, active.base_offset), |e| {
                        (
                            u64::from(e.position),
                            active.base_offset + u64::from(e.relative_offset),
                        )
                    });
                let cached = active.appender.first_cached_batch().and_then(|position| {
                    let header = active.appender.peek::<BATCH_HEADER_SIZE>(position)?;
                    let header = peek_header(&header, inner.config.batch_bytes_max).ok()?;
                    Some((position, header.base_offset))
                });
                match cached {
                    Some((cached_position, cached_offset)) if cached_offset <= from_offset => {
                        read_from_cache(
                            &active.appender,
                            hint.max(cached_position),
                            from_offset,
                            end_offset,
                            max_bytes,
                            inner.config.batch_bytes_max,
                            &mut out,
                        );
                        Plan::Done
                    }
                    cached => Plan::Disk {
                        file: active.appender.file().clone(),
                        start_position: hint,
                        start_offset: hint_offset,
                        end_position: cached.map_or(active.appender.end_position(), |c| c.0),
                    },
                }
            } else {
                let at = state
                    .sealed
                    .partition_point(|s| s.summary.base_offset <= from_offset);
                match at.checked_sub(1).and_then(|i| state.sealed.get(i)) {
                    Some(segment) => Plan::Sealed(segment.clone()),
                    None => Plan::Done,
                }
            };
            (plan, state.epoch)
        };
        let batch_bytes_max = inner.config.batch_bytes_max;
        // Only the first pass of a read returns a batch larger than its budget (a later pass
        // has less than the whole read left).
        let first_batch_exempt = max_bytes == fetch_bytes;
        match plan {
            Plan::Done => {}
            Plan::Disk {
                file,
                start_position,
                start_offset,
                end_position,
            } => {
                let request = DiskRead {
                    file: &file,
                    start_position,
                    start_offset,
                    end_position,
                    from_offset,
                    end_offset,
                    max_bytes,
                    batch_bytes_max,
                    first_batch_exempt,
                };
                budget_spent = self
                    .read_file(request, epoch, fetch_bytes, &mut out.batches)
                    .await?;
            }
            Plan::Sealed(segment) => {
                let index = match inner.sealed_index(&segment).await {
                    Ok(index) => index,
                    // Retention removed the segment while this read looked for its index.
                    Err(_) if segment.removed.get() => return Err(inner.out_of_range(from_offset)),
                    Err(error) => return Err(error),
                };
                let base = segment.summary.base_offset;
                let entry = index.lookup_offset((from_offset - base) as u32);
                let request = DiskRead {
                    file: &segment.file,
                    start_position: entry.map_or(0, |e| u64::from(e.position)),
                    start_offset: entry.map_or(base, |e| base + u64::from(e.relative_offset)),
                    end_position: segment.summary.end_position,
                    from_offset,
                    end_offset,
                    max_bytes,
                    batch_bytes_max,
                    first_batch_exempt,
                };
                budget_spent = self
                    .read_file(request, epoch, fetch_bytes, &mut out.batches)
                    .await?;
            }
        };
        Ok((out, budget_spent))
    }

    /// Reads batches from a segment file: from where the log's read-ahead resumes when that
    /// is closer to `from_offset` than the index's hint (a sequential reader's next fetch),
    /// taking the bytes read ahead. When the read stops with more of the file left, reads
    /// the next range ahead (see [`crate::read_ahead`]). Returns whether it stopped there.
    async fn read_file(
        &self,
        mut request: DiskRead<'_>,
        epoch: u64,
        fetch_bytes: usize,
        out: &mut Vec<ReadBatch>,
    ) -> Result<bool> {
        let inner = &self.inner;
        let hint = ResumePoint {
            position: request.start_position,
            offset: request.start_offset,
        };
        if let Some(resume) =
            inner
                .read_ahead
                .resume_point(request.file.path(), request.from_offset, hint)
        {
            request.start_position = resume.position;
            request.start_offset = resume.offset;
        }
        let file = request.file.clone();
        let end_position = request.end_position;
        let resume = read_from_disk(request, out, &inner.read_ahead).await?;
        if let Some(resume) = resume {
            self.start_read_ahead(&file, resume, fetch_bytes, end_position, epoch);
        }
        Ok(resume.is_some())
    }

    /// Starts reading the next fetch's bytes (`fetch_bytes`, plus the header of the batch after
    /// them) of `file` from `resume` in the background, at most up to `end_position` (the end
    /// of its bytes on disk), unless the log changed since the read that asked for it
    /// (truncated, closed), the slot holds a young prefetch, or the core's read-ahead budget is
    /// spent. Bytes nobody takes are dropped after [`READ_AHEAD_UNTAKEN_MAX`].
    fn start_read_ahead(
        &self,
        file: &SegmentFile,
        resume: ResumePoint,
        fetch_bytes: usize,
        end_position: u64,
        epoch: u64,
    ) {
        let inner = &self.inner;
        {
            let state = inner.state.borrow();
            if state.closed || state.poisoned.is_some() || state.epoch != epoch {
                return;
            }
        }
        if !inner.read_ahead.has_room_for(file.path(), resume) {
            return;
        }
        let resources = inner.cache.resources();
        let start = align_down(resume.position, PAGE_SIZE as u64);
        // What the next fetch reads first (see `read_from_disk`), within half the core's
        // budget so that two logs can read ahead at once.
        let wanted = (fetch_bytes as u64 + (resume.position - start) + BATCH_HEADER_SIZE as u64)
            .min((resources.read_ahead_bytes_max() / 2) as u64);
        let len = align_up(
            wanted.min(end_position.saturating_sub(start)),
            PAGE_SIZE as u64,
        );
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        if len == 0 {
            return;
        }
        let Some(charge) = resources.charge_read_ahead(len) else {
            return;
        };
        let prefetch = Prefetch::new(file.shared_path(), resume, start, end_position, charge);
        inner.read_ahead.put(prefetch.clone());
        let in_flight = ReadInFlight::start(inner.clone());
        let weak = Rc::downgrade(inner);
        let file = file.clone();
        glommio::spawn_local(async move {
            let result = file.read_aligned(start, len).await;
            prefetch.complete(result);
            // Closing the log waits for the read, not for the expiry below.
            drop(in_flight);
            drop(file);
            glommio::timer::sleep(READ_AHEAD_UNTAKEN_MAX).await;
            if let Some(inner) = weak.upgrade() {
                inner.read_ahead.expire(&prefetch);
            }
        })
        .detach();
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`; `None` when every
    /// record is older.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let inner = &self.inner;
        // The first segment whose newest record reaches the time, then its time index.
        let (sealed, active_start) = {
            let state = inner.state.borrow();
            let sealed = state
                .sealed
                .iter()
                .find(|s| s.summary.max_timestamp_ms >= timestamp_ms)
                .cloned();
            let active = &state.active;
            let active_start = (active.index.max_timestamp_ms() >= timestamp_ms).then(|| {
                active
                    .index
                    .lookup_timestamp(timestamp_ms)
                    .map_or(active.base_offset, |e| {
                        active.base_offset + u64::from(e.relative_offset)
                    })
            });
            (sealed, active_start)
        };
        let mut from = match (sealed, active_start) {
            (Some(segment), _) => {
                let index = inner.sealed_index(&segment).await?;
                let base = segment.summary.base_offset;
                index
                    .lookup_timestamp(timestamp_ms)
                    .map_or(base, |e| base + u64::from(e.relative_offset))
            }
            (None, Some(start)) => start,
            (None, None) => return Ok(None),
        };
        loop {
            let from_checked = from.max(self.log_start_offset());
            let read = self.read(from_checked, 1 << 20).await?;
            let Some(next) = read.next_offset() else {
                return Ok(None);
            };
            for batch in &read.batches {
                let view = BatchView::validate(&batch.bytes, inner.config.batch_bytes_max)?;
                let header = view.header();
                if header.max_timestamp_ms < timestamp_ms {
                    continue;
                }
                if header.first_timestamp_ms >= timestamp_ms {
                    return Ok(Some(batch.base_offset.max(from_checked)));
                }
                let found = view.records().ok().and_then(|records| {
                    records.iter().enumerate().find_map(|(i, record)| {
                        let at = header.first_timestamp_ms
                            + i64::from(record.timestamp_delta_ms.to_native());
                        (at >= timestamp_ms).then_some(batch.base_offset + i as u64)
                    })
                });
                return Ok(Some(found.unwrap_or(batch.base_offset).max(from_checked)));
            }
            from = next;
        }
    }

    /// Removes every batch at or after the batch holding `offset` (the replication layer cuts a
    /// divergent tail this way) and returns the new log end offset, which is that batch's base
    /// offset. An offset at or past the end changes nothing; one at or below the log start
    /// empties the log, which then continues at `offset`.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64> {
        let inner = &self.inner;
        let _permit = inner.lock().await?;
        inner.check_usable()?;
        let (start, end) = {
            let state = inner.state.borrow();
            (state.log_start_offset, state.next_offset)
        };
        if offset >= end {
            return Ok(end);
        }
        // Write out the tail and let every write land first: the cut is found on disk, and no
        // write may land after it.
        let tracker = {
            let mut state = inner.state.borrow_mut();
            state.active.appender.submit_tail();
            state.active.appender.tracker()
        };
        tracker.wait_idle().await;
        if let Some(reason) = tracker.failure() {
            return Err(inner.poison(reason));
        }
        if offset <= start {
            inner.reset_to(offset).await?;
            return Ok(offset);
        }
        // Drop whole segments after the one holding `offset`.
        loop {
            let doomed = {
                let state = inner.state.borrow();
                if state.active.base_offset <= offset {
                    None
                } else {
                    Some(state.active.base_offset)
                }
            };
            let Some(base) = doomed else { break };
            let previous = inner.state.borrow_mut().sealed.pop();
            let Some(previous) = previous else { break };
            remove_file(&log_path(&inner.dir, base))?;
            remove_file(&index_path(&inner.dir, previous.summary.base_offset))?;
            let active = open_active(
                &inner.dir,
                &inner.config,
                previous.file.clone(),
                previous.summary.base_offset,
                &inner.cache,
            )
            .await?;
            inner.state.borrow_mut().active = active.segment;
        }
        // Cut inside the active segment at the batch holding `offset`.
        let (file, base, position) = {
            let state = inner.state.borrow();
            let active = &state.active;
            let hint = active
                .index
                .lookup_offset((offset - active.base_offset) as u32)
                .map_or(0, |e| u64::from(e.position));
            (active.appender.file().clone(), active.base_offset, hint)
        };
        let cut =
            find_batch_position(&file, position, offset, inner.config.batch_bytes_max).await?;
        file.truncate(cut).await?;
        file.fdatasync().await?;
        sync_dir(&inner.dir).await?;
        let active = open_active(&inner.dir, &inner.config, file, base, &inner.cache).await?;
        let new_end = active.next_offset;
        {
            let mut state = inner.state.borrow_mut();
            state.active = active.segment;
            state.next_offset = new_end;
            state.durable_offset = state.durable_offset.min(new_end);
            state.written_offset = state.written_offset.min(new_end);
            state.epoch += 1;
            inner.read_ahead.clear();
            state.unflushed_bytes = 0;
            state.first_unflushed_ms = None;
        }
        tracing::info!(dir = %inner.dir.display(), offset, new_end, "log truncated");
        Ok(new_end)
    }

    /// Deletes sealed segments past the retention time (by their newest record) or beyond the
    /// retention size (oldest first), and advances the log start offset. The active segment is
    /// never deleted. `now_ms` is wall-clock time in ms since the Unix epoch.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let config = &self.inner.config;
        self.delete_oldest_sealed(|segment, total| {
            let too_old = config
                .retention_time
                .is_some_and(|t| segment.summary.max_timestamp_ms < now_ms - t.as_millis() as i64);
            let too_big = config
                .retention_bytes
                .is_some_and(|limit| total - segment.size_bytes() >= limit);
            too_old || too_big
        })
        .await
    }

    /// Deletes the sealed segments whose every record is below `offset`, and advances the log
    /// start offset. For logs whose state below `offset` is kept elsewhere (the group
    /// coordinator's snapshot of committed offsets): this is their compaction.
    pub async fn delete_segments_before(&self, offset: u64) -> Result<RetentionReport> {
        self.delete_oldest_sealed(|segment, _| segment.summary.next_offset <= offset)
            .await
    }

    /// Deletes sealed segments from the oldest while `doomed(segment, total bytes of the log
    /// from that segment on)` says so; stops at the first one it spares.
    async fn delete_oldest_sealed(
        &self,
        doomed: impl Fn(&SealedSegment, u64) -> bool,
    ) -> Result<RetentionReport> {
        let inner = &self.inner;
        let _permit = inner.lock().await?;
        let mut report = RetentionReport::default();
        let deleted = {
            let mut state = inner.state.borrow_mut();
            let mut total = state.sealed.iter().map(|s| s.size_bytes()).sum::<u64>()
                + state.active.appender.end_position();
            let mut count = 0;
            for segment in &state.sealed {
                if !doomed(segment, total) {
                    break;
                }
                total -= segment.size_bytes();
                count += 1;
            }
            let deleted: Vec<_> = state.sealed.drain(..count).collect();
            state.log_start_offset = state
                .sealed
                .first()
                .map_or(state.active.base_offset, |s| s.summary.base_offset);
            report.log_start_offset = state.log_start_offset;
            deleted
        };
        for segment in &deleted {
            let base = segment.summary.base_offset;
            // Reads in progress hold the segment (and its open descriptor): the files go now,
            // the descriptor when the last of them finishes.
            segment.removed.set(true);
            remove_file(&log_path(&inner.dir, base))?;
            remove_file(&index_path(&inner.dir, base))?;
            report.segments_deleted += 1;
            report.bytes_deleted += segment.size_bytes();
        }
        if !deleted.is_empty() {
            sync_dir(&inner.dir).await?;
            tracing::info!(dir = %inner.dir.display(), segments = report.segments_deleted, log_start_offset = report.log_start_offset, "deleted old segments");
        }
        Ok(report)
    }

    /// Syncs everything, then closes: waits for the append, roll, truncation or retention in
    /// progress and for every read in progress, stops the flusher, waits for the writes in
    /// flight and closes the files. Appends and reads that start meanwhile fail with
    /// [`StorageError::Closed`]. Once it returns no task of this log touches its directory any
    /// more, so the caller may delete it (topic deletion). The files stay. Takes `&self` so a
    /// log shared with tasks still reading can be closed; those reads finish first (or fail
    /// with `Closed` if they start after), and the descriptors of sealed segments close here,
    /// the active segment's when the last handle to the log drops.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        let mut result = if inner.state.borrow().poisoned.is_none() {
            self.flush().await
        } else {
            Ok(())
        };
        {
            let _permit = inner.lock().await?;
            inner.state.borrow_mut().closed = true;
        }
        inner.read_ahead.clear();
        inner.notify_all();
        // Appends that came in between the flush and the lock are synced too.
        let unsynced = {
            let state = inner.state.borrow();
            state.poisoned.is_none() && state.durable_offset < state.next_offset
        };
        if result.is_ok() && unsynced {
            result = inner.sync_now().await;
        }
        inner
            .read_finished
            .wait_until(|| inner.reads_in_flight.get() == 0)
            .await;
        let tracker = inner.state.borrow().active.appender.tracker();
        tracker.wait_idle().await;
        // Give the core's cache budget back: a closed log serves no reads.
        inner.release_cache();
        // Close the descriptors now rather than whenever glommio gets to dropped ones; a
        // closed log reads no segment any more.
        let sealed = std::mem::take(&mut inner.state.borrow_mut().sealed);
        let files: Vec<SegmentFile> = sealed.iter().map(|s| s.file.clone()).collect();
        drop(sealed);
        // Let the flusher see `closed` and drop its reference to the segment files.
        futures_lite::future::yield_now().await;
        for file in files {
            file.close().await?;
        }
        result
    }
}

/// Counts one read in progress for [`Log::close`], from its start to its end: a reader's
/// (borrowing the log) or a read ahead (owning a reference to it).
struct ReadInFlight<I: Deref<Target = LogInner>> {
    inner: I,
}

impl<I: Deref<Target = LogInner>> ReadInFlight<I> {
    fn start(inner: I) -> Self {
        inner.reads_in_flight.set(inner.reads_in_flight.get() + 1);
        ReadInFlight { inner }
    }
}

impl<I: Deref<Target = LogInner>> Drop for ReadInFlight<I> {
    fn drop(&mut self) {
        let count = self.inner.reads_in_flight.get() - 1;
        self.inner.reads_in_flight.set(count);
        if count == 0 {
            self.inner.read_finished.notify_all();
        }
    }
}

impl CacheOwner for LogInner {
    fn release_cache(&self) {
        // Skipped when the log is in the middle of a change (its state is borrowed): the next
        // log in line gives instead.
        if let Ok(mut state) = self.state.try_borrow_mut() {
            // A closed log writes nothing more (its directory may be gone); a poisoned one
            // writes nothing more until it is reopened.
            let may_write = !state.closed && state.poisoned.is_none();
            state.active.appender.release_cache(may_write);
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().closed = true;
        self.inner.notify_all();
    }
}

impl LogInner {
    async fn lock(&self) -> Result<glommio::sync::Permit<'_>> {
        self.mutation
            .acquire_permit(1)
            .await
            .map_err(|_| self.closed_error())
    }

    fn out_of_range(&self, requested: u64) -> StorageError {
        let state = self.state.borrow();
        StorageError::OffsetOutOfRange {
            requested,
            log_start_offset: state.log_start_offset,
            log_end_offset: state.next_offset,
        }
    }

    fn closed_error(&self) -> StorageError {
        StorageError::Closed {
            dir: self.dir.clone(),
        }
    }

    fn check_usable(&self) -> Result<()> {
        let state = self.state.borrow();
        if let Some(reason) = &state.poisoned {
            return Err(poisoned(&self.dir, reason.clone()));
        }
        if state.closed {
            return Err(self.closed_error());
        }
        Ok(())
    }

    fn notify_all(&self) {
        self.durable_changed.notify_all();
        self.flush_wanted.notify_all();
        self.appended.notify_all();
    }

    /// Marks the log unusable after a failed write or sync and returns the error to report.
    fn poison(&self, reason: String) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %reason, "log poisoned");
        self.state
            .borrow_mut()
            .poisoned
            .get_or_insert(reason.clone());
        self.notify_all();
        poisoned(&self.dir, reason)
    }

    fn needs_roll(&self, incoming_bytes: usize) -> bool {
        let state = self.state.borrow();
        let active = &state.active;
        let end = active.appender.end_position();
        if end == 0 {
            return false;
        }
        let too_big = end + incoming_bytes as u64 > self.config.segment_bytes_max;
        let too_old = now_ms() - active.created_ms > self.config.segment_age_max.as_millis() as i64;
        let offsets_full = state.next_offset - active.base_offset >= u64::from(u32::MAX) / 2;
        too_big || too_old || offsets_full
    }

    /// Grows the active file with fallocate so the next append cannot hit ENOSPC mid-write.
    async fn reserve(&self, incoming_bytes: usize) -> Result<()> {
        let needed = {
            let state = self.state.borrow();
            let appender = &state.active.appender;
            appender
                .allocation_needed(
                    incoming_bytes,
                    PREALLOCATE_FIRST_STEP_BYTES,
                    self.config.preallocate_bytes,
                )
                .map(|size| {
                    (
                        appender.file().clone(),
                        size.min(self.config.segment_bytes_max.max(
                            appender.end_position() + incoming_bytes as u64 + PAGE_SIZE as u64,
                        )),
                    )
                })
        };
        if let Some((file, size)) = needed {
            file.preallocate(size).await?;
            self.state.borrow_mut().active.appender.set_allocated(size);
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset. Caller holds the
    /// mutation lock.
    async fn roll(&self) -> Result<()> {
        let (file, tracker, end_position) = {
            let mut state = self.state.borrow_mut();
            let appender = &mut state.active.appender;
            let end = appender.submit_tail();
            (appender.file().clone(), appender.tracker(), end)
        };
        tracker
            .wait_written(end_position)
            .await
            .map_err(|reason| self.poison(reason))?;
        file.truncate(end_position).await?;
        file.fdatasync()
            .await
            .map_err(|e| self.poison(e.to_string()))?;
        let (summary, index_bytes) = {
            let state = self.state.borrow();
            let active = &state.active;
            let summary = SegmentSummary {
                base_offset: active.base_offset,
                end_position,
                next_offset: state.next_offset,
                max_timestamp_ms: active.index.max_timestamp_ms(),
            };
            (summary, active.index.encode(&summary))
        };
        write_index_file(
            &index_path(&self.dir, summary.base_offset),
            &index_bytes,
            &self.config.file_options(),
        )
        .await?;
        let fresh =
            create_active(&self.dir, &self.config, summary.next_offset, &self.cache).await?;
        {
            let mut state = self.state.borrow_mut();
            let old = std::mem::replace(&mut state.active, fresh.segment);
            state.sealed.push(Rc::new(SealedSegment {
                summary,
                file,
                index: RefCell::new(Some(Rc::new(old.index))),
                removed: Cell::new(false),
            }));
            state.loaded_indexes.push(summary.base_offset);
            state.durable_offset = state.durable_offset.max(summary.next_offset);
            state.written_offset = state.written_offset.max(summary.next_offset);
            state.unflushed_bytes = 0;
            state.first_unflushed_ms = None;
        }
        self.trim_loaded_indexes();
        self.durable_changed.notify_all();
        tracing::debug!(dir = %self.dir.display(), base_offset = summary.base_offset, size = end_position, "segment sealed");
        Ok(())
    }

    /// Deletes every segment and starts an empty one at `offset`.
    async fn reset_to(&self, offset: u64) -> Result<()> {
        let bases: Vec<u64> = {
            let state = self.state.borrow();
            state
                .sealed
                .iter()
                .map(|s| s.summary.base_offset)
                .chain([state.active.base_offset])
                .collect()
        };
        for base in bases {
            remove_file(&log_path(&self.dir, base))?;
            remove_file(&index_path(&self.dir, base))?;
        }
        let fresh = create_active(&self.dir, &self.config, offset, &self.cache).await?;
        let mut state = self.state.borrow_mut();
        state.sealed.clear();
        state.loaded_indexes.clear();
        state.active = fresh.segment;
        state.log_start_offset = offset;
        state.next_offset = offset;
        state.durable_offset = offset;
        state.written_offset = offset;
        state.epoch += 1;
        self.read_ahead.clear();
        state.unflushed_bytes = 0;
        state.first_unflushed_ms = None;
        Ok(())
    }

    /// The index of a sealed segment, loading it if needed and keeping at most
    /// [`SEALED_INDEXES_LOADED_MAX`] in memory.
    async fn sealed_index(&self, segment: &Rc<SealedSegment>) -> Result<Rc<SegmentIndex>> {
        let was_loaded = segment.index.borrow().is_some();
        let index = segment
            .index(&self.dir, &self.config.file_options())
            .await?;
        if !was_loaded {
            self.state
                .borrow_mut()
                .loaded_indexes
                .push(segment.summary.base_offset);
            self.trim_loaded_indexes();
        }
        Ok(index)
    }

    fn trim_loaded_indexes(&self) {
        let mut state = self.state.borrow_mut();
        while state.loaded_indexes.len() > SEALED_INDEXES_LOADED_MAX {
            let base = state.loaded_indexes.remove(0);
            if let Some(segment) = state.sealed.iter().find(|s| s.summary.base_offset == base) {
                *segment.index.borrow_mut() = None;
            }
        }
    }

    /// Hands the unwritten tail to the disk, waits for it, syncs, and publishes the new
    /// durable offset. Appends that arrive meanwhile wait for the next round: group commit.
    /// See [`Log::wait_written`].
    async fn wait_written(&self, offset: u64) -> Result<()> {
        let inner = self;
        loop {
            let sharing = {
                let state = inner.state.borrow();
                if offset >= state.next_offset {
                    return Err(StorageError::OffsetOutOfRange {
                        requested: offset,
                        log_start_offset: state.log_start_offset,
                        log_end_offset: state.next_offset,
                    });
                }
                if state.written_offset > offset {
                    return Ok(());
                }
                state.tail_write_to.is_some_and(|to| to > offset)
            };
            inner.check_usable()?;
            if inner.state.borrow().closed {
                return Err(inner.closed_error());
            }
            if sharing {
                inner
                    .durable_changed
                    .wait_until(|| {
                        let state = inner.state.borrow();
                        state.written_offset > offset
                            || state.tail_write_to.is_none_or(|to| to <= offset)
                            || state.poisoned.is_some()
                            || state.closed
                    })
                    .await;
            } else {
                inner.write_tail().await?;
            }
        }
    }

    /// Under the mutation lock: runs `before` on the state, then submits the write of the
    /// active segment's partial tail; what a write or a sync of the tail then waits for.
    async fn submit_tail(&self, before: impl FnOnce(&mut LogState)) -> Result<TailWrite> {
        let _permit = self.lock().await?;
        let mut state = self.state.borrow_mut();
        before(&mut state);
        let target_offset = state.next_offset;
        let epoch = state.epoch;
        let appender = &mut state.active.appender;
        let target_position = appender.submit_tail();
        Ok(TailWrite {
            file: appender.file().clone(),
            tracker: appender.tracker(),
            target_position,
            target_offset,
            epoch,
        })
    }

    /// Waits until `reached` holds for the state, or the log closes or is poisoned (without
    /// asking for a write or a sync).
    async fn wait_for_state(&self, reached: impl Fn(&LogState) -> bool) {
        self.durable_changed
            .wait_until(|| {
                let state = self.state.borrow();
                reached(&state) || state.closed || state.poisoned.is_some()
            })
            .await
    }

    /// Writes the partial tail of the active segment (no fsync) and moves the written offset
    /// to the log end it had when the write started.
    async fn write_tail(&self) -> Result<()> {
        let tail = self
            .submit_tail(|state| state.tail_write_to = Some(state.next_offset))
            .await?;
        let (target_offset, epoch) = (tail.target_offset, tail.epoch);
        let written = tail.tracker.wait_written(tail.target_position).await;
        {
            let mut state = self.state.borrow_mut();
            if state.tail_write_to == Some(target_offset) {
                state.tail_write_to = None;
            }
            if written.is_ok() && state.epoch == epoch && target_offset > state.written_offset {
                state.written_offset = target_offset;
            }
        }
        self.durable_changed.notify_all();
        written.map_err(|reason| self.poison(reason))
    }

    async fn sync_now(&self) -> Result<()> {
        let tail = self
            .submit_tail(|state| {
                state.flush_requested = false;
                state.unflushed_bytes = 0;
                state.first_unflushed_ms = None;
            })
            .await?;
        let (file, target_offset, epoch) = (tail.file, tail.target_offset, tail.epoch);
        tail.tracker
            .wait_written(tail.target_position)
            .await
            .map_err(|reason| self.poison(reason))?;
        let sync_started = std::time::Instant::now();
        let synced = file.fdatasync().await;
        if let Some(observer) = &self.config.sync_observer {
            (observer.0)(sync_started.elapsed());
        }
        if let Err(error) = synced {
            return Err(self.poison(error.to_string()));
        }
        {
            let mut state = self.state.borrow_mut();
            if state.epoch == epoch && target_offset > state.durable_offset {
                state.durable_offset = target_offset;
                state.written_offset = state.written_offset.max(target_offset);
            }
        }
        self.durable_changed.notify_all();
        Ok(())
    }
}

/// The background task of one log: runs syncs when asked (`always`, explicit flushes) or on the
/// `interval` schedule. Holds only a weak reference between rounds; ends when the log closes.
async fn flusher(weak: Weak<LogInner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let interval = match inner.config.durability {
            Durability::Interval { interval_ms, .. } => {
                Some(Duration::from_millis(u64::from(interval_ms)))
            }
            _ => None,
        };
        inner
            .flush_wanted
            .wait_until(|| {
                let state = inner.state.borrow();
                state.closed
                    || state.poisoned.is_some()
                    || state.flush_requested
                    || (interval.is_some() && state.unflushed_bytes > 0)
            })
            .await;
        {
            let state = inner.state.borrow();
            if state.closed || state.poisoned.is_some() {
                return;
            }
        }
        if let Some(interval) = interval {
            let first = inner
                .state
                .borrow()
                .first_unflushed_ms
                .unwrap_or_else(now_ms);
            let remaining_ms = (first + interval.as_millis() as i64 - now_ms()).max(0) as u64;
            if remaining_ms > 0 {
                let asked = inner.flush_wanted.wait_until(|| {
                    let state = inner.state.borrow();
                    state.flush_requested || state.closed
                });
                futures_lite::future::or(
                    asked,
                    glommio::timer::sleep(Duration::from_millis(remaining_ms)),
                )
                .await;
            }
        }
        if inner.state.borrow().closed {
            return;
        }
        if let Err(error) = inner.sync_now().await {
            tracing::error!(dir = %inner.dir.display(), %error, "log sync failed");
        }
    }
}

/// An active segment just opened, with the log end offset it recovered.
struct OpenedActive {
    segment: ActiveSegment,
    next_offset: u64,
}

/// Creates an empty segment file at `base_offset` and makes its creation durable.
async fn create_active(
    dir: &Path,
    config: &LogConfig,
    base_offset: u64,
    cache: &Rc<CacheAccount>,
) -> Result<OpenedActive> {
    let file = SegmentFile::create(&log_path(dir, base_offset), &config.file_options()).await?;
    remove_file(&index_path(dir, base_offset))?;
    sync_dir(dir).await?;
    let appender = Appender::new(
        file,
        0,
        &[],
        None,
        config.write_chunk_bytes,
        config.tail_cache_bytes_max,
        cache.clone(),
    );
    Ok(OpenedActive {
        segment: ActiveSegment {
            base_offset,
            appender,
            index: SegmentIndex::default(),
            created_ms: now_ms(),
        },
        next_offset: base_offset,
    })
}

/// Recovers the active segment: scans it, cuts an invalid tail, and seeds the appender with the
/// last partial page so the next write carries it again.
async fn open_active(
    dir: &Path,
    config: &LogConfig,
    file: SegmentFile,
    base_offset: u64,
    cache: &Rc<CacheAccount>,
) -> Result<OpenedActive> {
    let scan = scan_segment(
        &file,
        base_offset,
        config.index_interval_bytes,
        config.batch_bytes_max,
    )
    .await?;
    let end = scan.summary.end_position;
    if let Some(invalid) = &scan.invalid {
        tracing::warn!(file = %file.path().display(), position = invalid.position, reason = %invalid.reason, "cutting invalid tail of the active segment");
    }
    if file.size().await? != end {
        file.truncate(end).await?;
    }
    file.fdatasync().await?;
    // The index file of a segment that becomes active again is stale.
    remove_file(&index_path(dir, base_offset))?;
    let tail_start = align_down(end, PAGE_SIZE as u64);
    let tail = if end > tail_start {
        file.read_aligned(tail_start, PAGE_SIZE).await?
    } else {
        SharedBytes::empty()
    };
    let tail_len = (end - tail_start) as usize;
    let tail_bytes = tail.get(..tail_len).ok_or_else(|| StorageError::Corrupt {
        path: file.path().to_path_buf(),
        position: tail_start,
        reason: "short read of the last page".into(),
    })?;
    let first_in_tail = scan
        .first_batch_in_tail_page
        .map(|p| (p - tail_start) as usize);
    let appender = Appender::new(
        file,
        end,
        tail_bytes,
        first_in_tail,
        config.write_chunk_bytes,
        config.tail_cache_bytes_max,
        cache.clone(),
    );
    Ok(OpenedActive {
        segment: ActiveSegment {
            base_offset,
            appender,
            index: scan.index,
            created_ms: scan.first_timestamp_ms.unwrap_or_else(now_ms),
        },
        next_offset: scan.summary.next_offset,
    })
}

/// Walks batches in memory from `position` and collects those holding `from_offset` onwards.
fn read_from_cache(
    appender: &Appender,
    mut position: u64,
    from_offset: u64,
    end_offset: u64,
    max_bytes: usize,
    batch_bytes_max: usize,
    out: &mut ReadBatches,
) {
    let mut taken = 0usize;
    while position < appender.end_position() {
        let Some(header) = appender.peek::<BATCH_HEADER_SIZE>(position) else {
            break;
        };
        let Ok(header) = peek_header(&header, batch_bytes_max) else {
            break;
        };
        let len = header.batch_length as usize;
        if header.last_offset() >= from_offset {
            if header.last_offset() >= end_offset || (taken > 0 && taken + len > max_bytes) {
                break;
            }
            let Some(bytes) = appender.slice(position, len) else {
                break;
            };
            out.batches.push(ReadBatch {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                bytes,
            });
            taken += len;
            if taken >= max_bytes {
                break;
            }
        }
        position += len as u64;
    }
}

/// Position of the batch holding `offset`, walking headers on disk from `position`.
async fn find_batch_position(
    file: &SegmentFile,
    mut position: u64,
    offset: u64,
    batch_bytes_max: usize,
) -> Result<u64> {
    loop {
        let header = file.read(position, BATCH_HEADER_SIZE).await?;
        let header = peek_header(&header, batch_bytes_max).map_err(|e| StorageError::Corrupt {
            path: file.path().to_path_buf(),
            position,
            reason: e.to_string(),
        })?;
        if header.last_offset() >= offset {
            return Ok(position);
        }
        position += u64::from(header.batch_length);
    }
}
