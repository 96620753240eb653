//! The appender of the active segment: copies batches into aligned chunks and writes them with
//! O_DIRECT, many writes in flight.
//!
//! Two events are kept apart, as in Redpanda's segment appender: a batch is *logically
//! appended* when its bytes are in a chunk (readers see it at once), and *written* when every
//! write covering it has completed. *Durable* (fdatasync) is the log's business, one level up.
//!
//! Writes:
//! - a chunk that fills is written whole, from its own buffer (no copy), as soon as it fills;
//! - a flush writes the filled part of the last chunk, rounded up to the page with zeros, from
//!   a copy; the next write of that chunk starts again at the page that was partial. That page
//!   is thus rewritten, but its bytes already on disk are rewritten with the same values: a
//!   torn rewrite leaves each sector either old or new, and both hold the same durable prefix.
//!   What the design relies on is that a device never leaves a sector half-written, which every
//!   block device guarantees at its logical block size. The cost: up to one extra page per flush
//!   and one copy of the flushed range; none under durability `never`.
//! - two writes of the same page are never in flight together: a write that starts on the page
//!   a partial write ended on waits for it, so the older content can never land last.
//!
//! Memory: chunks come from the core's [`CoreResources`](crate::CoreResources) and count
//! against its tail-cache budget. A log's first chunk is small ([`CHUNK_FIRST_BYTES`]) and each
//! next one twice the size, up to `write_chunk_bytes`, so a log holding a little data holds a
//! little memory. When the core needs room, [`Appender::release_cache`] drops chunks that are
//! on disk and shrinks a partial last chunk to a copy of its tail page.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::config::PAGE_SIZE;
use crate::core_resources::{CacheAccount, CacheCharge};
use crate::error::{Result, StorageError};
use crate::io::{align_down, align_up, AppendChunk, SegmentFile, SharedBytes, Signal, WriteBuffer};

/// Size of a log's first append chunk: 16 KiB (four pages). Each next chunk is twice the size
/// of the one before, up to `write_chunk_bytes`: a busy log reaches 1 MiB chunks after 2 MiB of
/// data, and 10 000 logs holding a few KB each hold at most 16 KiB of chunk each (160 MiB,
/// and the core's budget evicts far below that).
pub(crate) const CHUNK_FIRST_BYTES: usize = 16 * 1024;

/// Tracks the disk writes of one segment: which are in flight and how far the file is written
/// without a gap.
#[derive(Default)]
pub(crate) struct WriteTracker {
    state: RefCell<TrackerState>,
    changed: Signal,
}

#[derive(Default)]
struct TrackerState {
    next_id: u64,
    /// Writes in submission order: (id, logical end they cover, completed?).
    pending: VecDeque<(u64, u64, bool)>,
    /// Every byte below this position is on disk.
    written_position: u64,
    /// The first failure; the segment accepts no more writes after it.
    failure: Option<String>,
}

impl WriteTracker {
    fn new(written_position: u64) -> Rc<Self> {
        let tracker = WriteTracker::default();
        tracker.state.borrow_mut().written_position = written_position;
        Rc::new(tracker)
    }

    fn begin(&self, covers_until: u64) -> u64 {
        let mut state = self.state.borrow_mut();
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push_back((id, covers_until, false));
        id
    }

    fn complete(&self, id: u64, result: Result<()>) {
        {
            let mut state = self.state.borrow_mut();
            if let Err(error) = result {
                tracing::error!(%error, "segment write failed");
                state.failure.get_or_insert_with(|| error.to_string());
            }
            if let Some(write) = state.pending.iter_mut().find(|w| w.0 == id) {
                write.2 = true;
            }
            while let Some(&(_, covers_until, true)) = state.pending.front() {
                state.written_position = state.written_position.max(covers_until);
                state.pending.pop_front();
            }
        }
        self.changed.notify_all();
    }

    fn is_done(&self, id: u64) -> bool {
        let state = self.state.borrow();
        state.pending.iter().find(|w| w.0 == id).is_none_or(|w| w.2)
    }

    /// Number of writes not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().pending.iter().filter(|w| !w.2).count()
    }

    /// Every byte below this position is on disk.
    pub(crate) fn written_position(&self) -> u64 {
        self.state.borrow().written_position
    }

    /// The failure that stopped this segment's writes, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.state.borrow().failure.clone()
    }

    fn check(&self) -> Result<(), String> {
        match &self.state.borrow().failure {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Waits until every byte below `position` is on disk. `Err(reason)` if a write failed.
    pub(crate) async fn wait_written(&self, position: u64) -> Result<(), String> {
        self.changed
            .wait_until(|| {
                let state = self.state.borrow();
                state.failure.is_some() || state.written_position >= position
            })
            .await;
        self.check()
    }

    /// Waits until fewer than `max` writes are in flight (back-pressure for appends).
    pub(crate) async fn wait_in_flight_below(&self, max: usize) -> Result<(), String> {
        self.changed
            .wait_until(|| self.failure().is_some() || self.in_flight() < max)
            .await;
        self.check()
    }

    /// Waits until no write is in flight.
    pub(crate) async fn wait_idle(&self) {
        self.changed.wait_until(|| self.in_flight() == 0).await
    }
}

/// Appends to one segment file. Lives on the shard that owns the log.
pub(crate) struct Appender {
    file: SegmentFile,
    /// Chunks in file order; the last one is being filled. Together with the chunks' fill marks
    /// they are the tail cache: `[front().start(), end_position)` is readable from memory.
    chunks: VecDeque<CachedChunk>,
    /// Largest chunk (`write_chunk_bytes`).
    chunk_bytes: usize,
    /// Size of the next chunk taken: starts at [`CHUNK_FIRST_BYTES`], doubles to `chunk_bytes`.
    next_chunk_bytes: usize,
    tail_cache_bytes_max: usize,
    end_position: u64,
    /// Bytes of the file reserved with fallocate.
    allocated: u64,
    tracker: Rc<WriteTracker>,
    /// The last write that ended on a partial page: the next write starts on that page.
    last_partial_write: Option<u64>,
    /// This log's share of the core's cache budget (and the pool chunks come from).
    cache: Rc<CacheAccount>,
}

/// A chunk plus what readers need to know about batch boundaries in it.
struct CachedChunk {
    chunk: AppendChunk,
    /// Buffer position of the first batch that starts in this chunk.
    first_batch_at: Option<usize>,
    /// File position where the batch running over this chunk's end finishes.
    straddle_end: u64,
    /// The chunk's bytes counted against the core's budget; `None` for a tail-page copy,
    /// which counts as the log's own small state.
    _charge: Option<CacheCharge>,
}

impl Appender {
    /// Takes over a segment whose valid data ends at `end_position`; `tail_page` holds the
    /// bytes `[align_down(end_position), end_position)` read back from disk, so the next write
    /// of that page carries them again. `first_batch_in_tail` is where, in that page, the first
    /// batch starting there begins. Holds no chunk until the first append, only a copy of
    /// the tail page when there is one.
    pub(crate) fn new(
        file: SegmentFile,
        end_position: u64,
        tail_page: &[u8],
        first_batch_in_tail: Option<usize>,
        chunk_bytes: usize,
        tail_cache_bytes_max: usize,
        cache: Rc<CacheAccount>,
    ) -> Self {
        let start = align_down(end_position, PAGE_SIZE as u64);
        debug_assert_eq!(start + tail_page.len() as u64, end_position);
        let mut chunks = VecDeque::new();
        if !tail_page.is_empty() {
            chunks.push_back(tail_page_chunk(
                &file,
                start,
                tail_page,
                first_batch_in_tail,
            ));
        }
        Appender {
            file,
            chunks,
            chunk_bytes,
            next_chunk_bytes: CHUNK_FIRST_BYTES.min(chunk_bytes),
            tail_cache_bytes_max,
            end_position,
            allocated: end_position,
            tracker: WriteTracker::new(end_position),
            last_partial_write: None,
            cache,
        }
    }

    /// The segment file.
    pub(crate) fn file(&self) -> &SegmentFile {
        &self.file
    }

    /// The write tracker, to wait on outside a borrow of the log state.
    pub(crate) fn tracker(&self) -> Rc<WriteTracker> {
        self.tracker.clone()
    }

    /// File position just past the last appended byte.
    pub(crate) fn end_position(&self) -> u64 {
        self.end_position
    }

    /// How far the file must be preallocated before `additional` bytes can be appended, if it
    /// is not already. The reservation grows with the data: each step reserves as much again
    /// as is reserved already, at least `first_step` and at most `step_max` (64 KiB, 128 KiB,
    /// ... up to 64 MiB by default), so a segment holding 3 KB reserves 64 KiB, and one of
    /// 1 GiB calls fallocate about 25 times.
    pub(crate) fn allocation_needed(
        &self,
        additional: usize,
        first_step: u64,
        step_max: u64,
    ) -> Option<u64> {
        let needed = align_up(self.end_position + additional as u64, PAGE_SIZE as u64);
        if needed <= self.allocated {
            return None;
        }
        let step = self.allocated.clamp(first_step.min(step_max), step_max);
        Some(align_up(
            needed.max(self.allocated + step),
            PAGE_SIZE as u64,
        ))
    }

    /// Records that the file was preallocated up to `size`.
    pub(crate) fn set_allocated(&mut self, size: u64) {
        self.allocated = self.allocated.max(size);
    }

    /// Appends one batch given as its (stamped) header and the rest of its bytes. Full chunks
    /// are submitted for writing on the way. Never waits; the caller applies back-pressure first.
    pub(crate) fn append_batch(&mut self, header: &[u8], body: &[u8]) {
        let batch_start = self.end_position;
        let batch_end = batch_start + (header.len() + body.len()) as u64;
        if let Some(last) = self.chunks.back_mut() {
            if last.first_batch_at.is_none() && !last.chunk.is_full() {
                last.first_batch_at = Some(last.chunk.fill());
            }
        }
        for mut part in [header, body] {
            while !part.is_empty() {
                if self.chunks.back().is_none_or(|c| c.chunk.is_full()) {
                    self.push_chunk();
                    if let Some(last) = self.chunks.back_mut() {
                        if self.end_position == batch_start {
                            last.first_batch_at = Some(0);
                        }
                    }
                }
                let Some(last) = self.chunks.back_mut() else {
                    return;
                };
                let copied = last.chunk.append(part);
                part = &part[copied..];
                self.end_position += copied as u64;
                if last.chunk.is_full() {
                    if self.end_position < batch_end {
                        last.straddle_end = batch_end;
                    }
                    self.submit_full_chunk();
                }
            }
        }
    }

    fn push_chunk(&mut self) {
        // With no chunk, the log end is page-aligned: a partial page is always held as a chunk.
        let start = self
            .chunks
            .back()
            .map_or(self.end_position, |c| c.chunk.end());
        let size = self.next_chunk_bytes;
        self.next_chunk_bytes = (size * 2).min(self.chunk_bytes);
        let resources = self.cache.resources().clone();
        let (buffer, charge) = resources.take_chunk(&self.file, size, &self.cache);
        let chunk = AppendChunk::new(buffer, start);
        self.chunks.push_back(CachedChunk {
            chunk,
            first_batch_at: None,
            straddle_end: 0,
            _charge: Some(charge),
        });
    }

    /// Writes the last chunk, which has just filled: from its own buffer when no part of it was
    /// written before, else from the page a flush left partial.
    fn submit_full_chunk(&mut self) {
        let Some(last) = self.chunks.back_mut() else {
            return;
        };
        let chunk = &mut last.chunk;
        let (source, position) = if chunk.submitted == 0 {
            (chunk.shared_buffer(), chunk.start())
        } else {
            let from = align_down(chunk.submitted as u64, PAGE_SIZE as u64) as usize;
            let mut copy = self.file.alloc(chunk.capacity() - from);
            chunk.copy_filled(from, copy.as_bytes_mut());
            (WriteBuffer::from(copy), chunk.start() + from as u64)
        };
        chunk.submitted = chunk.capacity();
        let covers_until = chunk.end();
        self.submit(source, position, covers_until, false);
    }

    /// Writes whatever of the last chunk is filled but not yet written, padded to the page.
    /// Returns the position every byte of the segment will be written up to once the writes
    /// in flight complete.
    pub(crate) fn submit_tail(&mut self) -> u64 {
        if let Some(last) = self.chunks.back_mut() {
            let chunk = &mut last.chunk;
            if chunk.fill() > chunk.submitted {
                let from = align_down(chunk.submitted as u64, PAGE_SIZE as u64) as usize;
                let to = align_up(chunk.fill() as u64, PAGE_SIZE as u64) as usize;
                let mut copy = self.file.alloc(to - from);
                chunk.copy_filled(from, copy.as_bytes_mut());
                chunk.submitted = chunk.fill();
                let position = chunk.start() + from as u64;
                let covers_until = chunk.end();
                let partial = chunk.fill() % PAGE_SIZE != 0;
                self.submit(copy.into(), position, covers_until, partial);
            }
        }
        self.end_position
    }

    fn submit(&mut self, source: WriteBuffer, position: u64, covers_until: u64, partial: bool) {
        let id = self.tracker.begin(covers_until);
        let must_follow = self.last_partial_write.take();
        if partial {
            self.last_partial_write = Some(id);
        }
        let file = self.file.clone();
        let tracker = self.tracker.clone();
        glommio::spawn_local(async move {
            if let Some(previous) = must_follow {
                tracker
                    .changed
                    .wait_until(|| tracker.is_done(previous))
                    .await;
            }
            let result = file.write(source, position).await;
            tracker.complete(id, result);
        })
        .detach();
    }

    /// Drops the oldest chunks from the tail cache while it is over its budget, keeping every
    /// chunk that is not entirely on disk (and the batch running out of it).
    pub(crate) fn trim_cache(&mut self) {
        let written = self.tracker.written_position();
        let mut cached: usize = self.chunks.iter().map(|c| c.chunk.capacity()).sum();
        while self.chunks.len() > 1 && cached > self.tail_cache_bytes_max {
            let front = &self.chunks[0];
            if front.chunk.end() > written || front.straddle_end > written || !front.chunk.is_full()
            {
                break;
            }
            cached -= front.chunk.capacity();
            self.evict_front();
        }
    }

    /// Drops the oldest chunk, giving its buffer to the core's spares when no reader holds it.
    fn evict_front(&mut self) {
        let Some(evicted) = self.chunks.pop_front() else {
            return;
        };
        let pooled = evicted._charge.is_some();
        if let Some(buffer) = evicted.chunk.into_buffer() {
            if pooled {
                self.cache.resources().give_back(buffer);
            }
        }
    }

    /// Gives back what the cache can give back now: every chunk entirely on disk, and a last
    /// chunk that is partial but on disk shrinks to a copy of its tail page (what the next
    /// write of that page must carry). With `may_write` (an open, healthy log), bytes not yet
    /// written are submitted, so the next call can free them. Readers of the dropped range go
    /// to disk; their slices keep their buffers alive until they drop them.
    pub(crate) fn release_cache(&mut self, may_write: bool) {
        if may_write && self.tracker.failure().is_none() {
            self.submit_tail();
        }
        let written = self.tracker.written_position();
        while self.chunks.len() > 1 {
            let front = &self.chunks[0];
            if front.chunk.end() > written || front.straddle_end > written {
                break;
            }
            self.evict_front();
        }
        let Some(last) = self.chunks.back() else {
            return;
        };
        if self.chunks.len() > 1 || last._charge.is_none() || last.chunk.end() > written {
            return;
        }
        let start = align_down(last.chunk.end(), PAGE_SIZE as u64);
        let tail_len = (last.chunk.end() - start) as usize;
        // Copy the tail out before the chunk goes, so no slice keeps its buffer from the pool.
        let tail_chunk = last
            .chunk
            .slice((start - last.chunk.start()) as usize, tail_len)
            .filter(|tail| !tail.is_empty())
            .map(|tail| tail_page_chunk(&self.file, start, &tail, None));
        self.evict_front();
        self.chunks.extend(tail_chunk);
        self.next_chunk_bytes = CHUNK_FIRST_BYTES.min(self.chunk_bytes);
    }

    /// File position of the first batch readable from memory, if any. Every batch that starts
    /// below it is entirely on disk.
    pub(crate) fn first_cached_batch(&self) -> Option<u64> {
        self.chunks
            .iter()
            .find_map(|c| c.first_batch_at.map(|at| c.chunk.start() + at as u64))
            .filter(|position| *position < self.end_position)
    }

    /// Copies `N` bytes at file position `position` out of the cache (a batch header that may
    /// straddle two chunks). `None` if not all of them are cached.
    pub(crate) fn peek<const N: usize>(&self, position: u64) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        let mut done = 0;
        for cached in &self.chunks {
            let chunk = &cached.chunk;
            let at = position + done as u64;
            if at < chunk.start() || at >= chunk.end() {
                continue;
            }
            let in_chunk = (at - chunk.start()) as usize;
            let take = (N - done).min(chunk.fill() - in_chunk);
            let bytes = chunk.slice(in_chunk, take)?;
            out[done..done + take].copy_from_slice(&bytes);
            done += take;
            if done == N {
                return Some(out);
            }
        }
        None
    }

    /// Shares `[position, position + len)` from the cache: a slice of one chunk when it fits in
    /// one (the common case), else a copy into a fresh aligned buffer.
    pub(crate) fn slice(&self, position: u64, len: usize) -> Option<SharedBytes> {
        let end = position + len as u64;
        if end > self.end_position {
            return None;
        }
        for cached in &self.chunks {
            let chunk = &cached.chunk;
            if position >= chunk.start() && end <= chunk.end() {
                return chunk.slice((position - chunk.start()) as usize, len);
            }
        }
        // Not zeroed: the loop below fills all `len` bytes that the result shows (it is
        // `None` otherwise), and nothing reads the rest of the page.
        let mut copy = self
            .file
            .alloc_chunk(align_up(len as u64, PAGE_SIZE as u64) as usize);
        debug_assert!(copy.len() >= len);
        let mut done = 0usize;
        for cached in &self.chunks {
            let chunk = &cached.chunk;
            let at = position + done as u64;
            if done == len || at < chunk.start() || at >= chunk.end() {
                continue;
            }
            let in_chunk = (at - chunk.start()) as usize;
            let take = (len - done).min(chunk.fill() - in_chunk);
            let bytes = chunk.slice(in_chunk, take)?;
            copy.as_bytes_mut()[done..done + take].copy_from_slice(&bytes);
            done += take;
        }
        (done == len).then(|| SharedBytes::from_buffer(copy, len))
    }
}

/// A page-sized chunk at `start` holding `tail` (the bytes of the log's partial last page,
/// already on disk), uncharged: every idle log holds one at most.
fn tail_page_chunk(
    file: &SegmentFile,
    start: u64,
    tail: &[u8],
    first_batch_at: Option<usize>,
) -> CachedChunk {
    let mut chunk = AppendChunk::new(file.alloc(PAGE_SIZE), start);
    chunk.append(tail);
    chunk.submitted = chunk.fill();
    CachedChunk {
        chunk,
        first_batch_at,
        straddle_end: 0,
        _charge: None,
    }
}

/// Turns a write failure reason into the error a caller sees.
pub(crate) fn poisoned(dir: &std::path::Path, cause: String) -> StorageError {
    StorageError::Poisoned {
        dir: dir.to_path_buf(),
        cause,
    }
}
