//! Read-ahead for a reader going through a segment file from start to end: a consumer or
//! follower catching up from disk.
//!
//! O_DIRECT reads get no read-ahead from the kernel, so a reader that fetches one batch range
//! at a time waits for the disk, then the network, then the disk again. When a disk read
//! stops because its byte budget is spent and the file has more, the log starts reading the
//! next fetch's bytes at once (within the core's read-ahead budget) and remembers where they
//! begin; the reader's next fetch, which asks for exactly the offset where the last one
//! stopped, takes those bytes instead of reading them again. The disk then reads while the
//! previous range crosses the network: measured on the consume bench, see `bench/results`.
//!
//! One read-ahead per log, the foremost sequential reader's: a reader behind a read-ahead that
//! is waiting to be taken gets none (it does not replace it), so two readers of one log do not
//! keep discarding each other's, while a reader moving forward replaces its own. One nobody
//! takes is dropped after [`READ_AHEAD_UNTAKEN_MAX`], giving its bytes back to the core's
//! budget. Truncation and reset
//! discard it (the positions get new bytes), and closing the log waits for one in flight (it
//! counts as a read in flight).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core_resources::ReadAheadCharge;
use crate::error::Result;
use crate::io::{SharedBytes, Signal};

/// How long bytes read ahead wait for their reader before they are dropped: a consumer that
/// keeps up with the disk fetches again within milliseconds; one that stopped, moved or left
/// should not hold the core's read-ahead budget.
pub(crate) const READ_AHEAD_UNTAKEN_MAX: Duration = Duration::from_secs(2);

/// The read-ahead slot of one log. See the module documentation.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slot: RefCell<Option<Rc<Prefetch>>>,
}

/// One range being read ahead (or read) from a segment file.
pub(crate) struct Prefetch {
    path: Rc<PathBuf>,
    /// Where the batch the next reader wants begins.
    position: u64,
    /// The base offset of that batch.
    offset: u64,
    /// When the read began (a young prefetch is not replaced by another reader's).
    started: Instant,
    /// `position` rounded down to a page: where the read begins.
    start: u64,
    /// The end of the bytes on disk when the read began: the read's last page may hold bytes
    /// past it that were not written yet, which no reader may take.
    valid_end: u64,
    result: RefCell<Option<Result<SharedBytes>>>,
    /// The read has finished (its result may have been discarded since).
    finished: Cell<bool>,
    done: Signal,
    /// The bytes counted against the core's read-ahead budget, from the start of the read
    /// until a reader takes them (then a fetch response holds them, under the broker's own
    /// budget) or the prefetch is dropped.
    charge: RefCell<Option<ReadAheadCharge>>,
}

/// Where a prefetch begins, for the reader that continues there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResumePoint {
    /// A batch boundary in the file.
    pub(crate) position: u64,
    /// The base offset of the batch there.
    pub(crate) offset: u64,
}

impl ReadAhead {
    /// Where the prefetch of `path` resumes, if there is one and it lies at or before
    /// `from_offset` and at or after `hint` (the index's batch boundary): a better place for a
    /// read of `from_offset` to start.
    pub(crate) fn resume_point(
        &self,
        path: &Path,
        from_offset: u64,
        hint: ResumePoint,
    ) -> Option<ResumePoint> {
        let slot = self.slot.borrow();
        let prefetch = slot.as_ref().filter(|p| p.path.as_path() == path)?;
        (prefetch.offset <= from_offset && prefetch.position >= hint.position).then_some(
            ResumePoint {
                position: prefetch.position,
                offset: prefetch.offset,
            },
        )
    }

    /// Whether a prefetch resuming at `resume` in `path` may take the slot: it is empty, or
    /// holds a prefetch of an earlier offset (left behind by a reader that moved on) or one
    /// older than [`READ_AHEAD_UNTAKEN_MAX`]. Not when the same range is under way already.
    pub(crate) fn has_room_for(&self, path: &Path, resume: ResumePoint) -> bool {
        match self.slot.borrow().as_ref() {
            None => true,
            Some(p) if p.path.as_path() == path && p.position == resume.position => false,
            Some(p) => p.offset < resume.offset || p.started.elapsed() >= READ_AHEAD_UNTAKEN_MAX,
        }
    }

    /// Takes the bytes read ahead from `start` of `path` if they reach `need_end` (the end of
    /// what the reader needs next), waiting for the read if it is still running. `None` when
    /// there is no such prefetch, it failed (the reader's own read reports any error) or it
    /// is too short. The slot is emptied either way once it matched, so each prefetch serves
    /// one reader.
    pub(crate) async fn take(&self, path: &Path, start: u64, need_end: u64) -> Option<SharedBytes> {
        let prefetch = {
            let mut slot = self.slot.borrow_mut();
            match slot.as_ref() {
                Some(p) if p.path.as_path() == path && p.start == start => slot.take(),
                _ => None,
            }
        }?;
        prefetch.done.wait_until(|| prefetch.finished.get()).await;
        let charge = prefetch.charge.borrow_mut().take();
        let bytes = prefetch.result.borrow_mut().take()?.ok()?;
        let usable = (prefetch.valid_end.saturating_sub(start)).min(bytes.len() as u64);
        if start + usable < need_end {
            return None;
        }
        let bytes = bytes.slice(0, usize::try_from(usable).ok()?)?;
        if let Some(charge) = charge {
            charge.record_hit();
        }
        Some(bytes)
    }

    /// Makes `prefetch` the log's read-ahead, discarding any other.
    pub(crate) fn put(&self, prefetch: Rc<Prefetch>) {
        if let Some(old) = self.slot.borrow_mut().replace(prefetch) {
            old.discard();
        }
    }

    /// Discards the read-ahead (a read in flight finishes, unused).
    pub(crate) fn clear(&self) {
        if let Some(old) = self.slot.borrow_mut().take() {
            old.discard();
        }
    }

    /// Discards `prefetch` if it is still the log's read-ahead and nobody took it.
    pub(crate) fn expire(&self, prefetch: &Rc<Prefetch>) {
        let mut slot = self.slot.borrow_mut();
        if slot.as_ref().is_some_and(|p| Rc::ptr_eq(p, prefetch)) {
            slot.take();
        }
        drop(slot);
        prefetch.discard();
    }
}

impl Prefetch {
    /// A prefetch of `path` resuming at `resume`, reading from `start` bytes that are on disk
    /// up to `valid_end`, its memory counted by `charge`.
    pub(crate) fn new(
        path: Rc<PathBuf>,
        resume: ResumePoint,
        start: u64,
        valid_end: u64,
        charge: ReadAheadCharge,
    ) -> Rc<Self> {
        Rc::new(Prefetch {
            path,
            position: resume.position,
            offset: resume.offset,
            start,
            valid_end,
            started: Instant::now(),
            result: RefCell::new(None),
            finished: Cell::new(false),
            done: Signal::default(),
            charge: RefCell::new(Some(charge)),
        })
    }

    /// Hands over the read's outcome (dropped at once if the prefetch was discarded).
    pub(crate) fn complete(&self, result: Result<SharedBytes>) {
        if self.charge.borrow().is_some() {
            *self.result.borrow_mut() = Some(result);
        }
        self.finished.set(true);
        self.done.notify_all();
    }

    /// Gives the bytes and their charge back; a reader waiting for them gets nothing.
    fn discard(&self) {
        self.charge.borrow_mut().take();
        self.result.borrow_mut().take();
    }
}
