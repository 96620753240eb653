//! [`FaultPlan`]: run-time fault injection at the I/O seam, for tests (the storage crate's and
//! the broker's in-process ones). A log whose [`LogConfig::faults`](crate::LogConfig::faults)
//! holds a plan hands it to every file it opens; each file operation asks the plan first
//! whether to fail. The files stay real O_DIRECT files on a real disk: a fault replaces or cuts
//! short one real call, it never simulates the disk.
//!
//! The plan is `Send + Sync` and shared by `Arc`, so a test on another thread (or the broker's
//! test harness) can arm it while shards run. Its `Mutex` is taken only by logs that have a
//! plan, which production logs never do (`faults: None`): the hot path of a real broker pays one
//! `Option` check per file operation.

use std::sync::{Mutex, MutexGuard};

use crate::config::PAGE_SIZE;

/// Faults to inject into the file operations of the logs that share this plan. Every method
/// arms or disarms one kind of fault; the counters say which fired.
///
/// | fault | arm with | the file operation then |
/// |---|---|---|
/// | failed fsync | [`FaultPlan::fail_next_fsyncs`] | returns EIO without syncing |
/// | disk full | [`FaultPlan::no_space_after_bytes`] | writes and fallocate growth beyond the budget return ENOSPC, writing nothing |
/// | short write | [`FaultPlan::short_next_write`] | writes a page-aligned prefix and reports that short count |
/// | torn write | [`FaultPlan::tear_next_write`] | writes a page-aligned prefix, then returns EIO |
/// | read error | [`FaultPlan::fail_reads_of`] | reads of a path containing the pattern return EIO |
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    fsyncs_to_fail: u32,
    /// Bytes that writes and fallocate growth may still take; `None`: unlimited.
    space_left_bytes: Option<u64>,
    next_write: Option<WriteFault>,
    read_patterns: Vec<String>,
    fired: FaultCounts,
}

/// How many faults of each kind have fired so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultCounts {
    /// fsyncs failed.
    pub fsyncs_failed: u32,
    /// Writes or fallocate calls refused with ENOSPC.
    pub no_space: u32,
    /// Writes cut short or torn.
    pub writes_cut: u32,
    /// Reads failed.
    pub reads_failed: u32,
}

/// What the plan decided for one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFault {
    /// Refuse with ENOSPC; nothing reaches the file.
    NoSpace,
    /// Write the first `prefix_bytes` (a multiple of the page) and report that short count.
    Short {
        /// Bytes that reach the file.
        prefix_bytes: usize,
    },
    /// Write the first `prefix_bytes` (a multiple of the page), then fail with EIO.
    Torn {
        /// Bytes that reach the file.
        prefix_bytes: usize,
    },
}

impl FaultPlan {
    /// A plan with no fault armed.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FaultState> {
        // A test thread that panicked while holding the lock leaves valid state behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next `count` fdatasync calls fail with EIO (and sync nothing).
    pub fn fail_next_fsyncs(&self, count: u32) {
        self.state().fsyncs_to_fail = count;
    }

    /// From now on, writes and file growth by fallocate may take `bytes` more bytes in total;
    /// the call that would go past that fails with ENOSPC and changes nothing.
    pub fn no_space_after_bytes(&self, bytes: u64) {
        self.state().space_left_bytes = Some(bytes);
    }

    /// Lifts the space budget of [`FaultPlan::no_space_after_bytes`] (space was freed).
    pub fn restore_space(&self) {
        self.state().space_left_bytes = None;
    }

    /// The next write stores only its first `prefix_bytes` (rounded down to the page, as
    /// O_DIRECT requires) and reports that short count.
    pub fn short_next_write(&self, prefix_bytes: usize) {
        self.state().next_write = Some(WriteFault::Short {
            prefix_bytes: prefix_bytes / PAGE_SIZE * PAGE_SIZE,
        });
    }

    /// The next write stores only its first `prefix_bytes` (rounded down to the page), then
    /// fails with EIO: what a crash or a device error in the middle of a write leaves.
    pub fn tear_next_write(&self, prefix_bytes: usize) {
        self.state().next_write = Some(WriteFault::Torn {
            prefix_bytes: prefix_bytes / PAGE_SIZE * PAGE_SIZE,
        });
    }

    /// Every read of a file whose path contains `pattern` fails with EIO until
    /// [`FaultPlan::clear`].
    pub fn fail_reads_of(&self, pattern: impl Into<String>) {
        self.state().read_patterns.push(pattern.into());
    }

    /// Disarms every fault (the counters stay).
    pub fn clear(&self) {
        let mut state = self.state();
        state.fsyncs_to_fail = 0;
        state.space_left_bytes = None;
        state.next_write = None;
        state.read_patterns.clear();
    }

    /// How many faults fired so far.
    pub fn fired(&self) -> FaultCounts {
        self.state().fired
    }

    /// Whether this fdatasync must fail.
    pub(crate) fn on_fsync(&self) -> bool {
        let mut state = self.state();
        if state.fsyncs_to_fail == 0 {
            return false;
        }
        state.fsyncs_to_fail -= 1;
        state.fired.fsyncs_failed += 1;
        true
    }

    /// What to do with a write of `len` bytes.
    pub(crate) fn on_write(&self, len: usize) -> Option<WriteFault> {
        let mut state = self.state();
        if !Self::take_space(&mut state, len as u64) {
            return Some(WriteFault::NoSpace);
        }
        let fault = state.next_write.take();
        if fault.is_some() {
            state.fired.writes_cut += 1;
        }
        fault
    }

    /// Whether growing a file by `growth_bytes` with fallocate may go ahead.
    pub(crate) fn on_allocate(&self, growth_bytes: u64) -> bool {
        Self::take_space(&mut self.state(), growth_bytes)
    }

    fn take_space(state: &mut FaultState, bytes: u64) -> bool {
        match state.space_left_bytes {
            Some(left) if bytes > left => {
                state.fired.no_space += 1;
                false
            }
            Some(left) => {
                state.space_left_bytes = Some(left - bytes);
                true
            }
            None => true,
        }
    }

    /// Whether a read of `path` must fail.
    pub(crate) fn on_read(&self, path: &std::path::Path) -> bool {
        let mut state = self.state();
        let text = path.to_string_lossy();
        let hit = state
            .read_patterns
            .iter()
            .any(|p| text.contains(p.as_str()));
        if hit {
            state.fired.reads_failed += 1;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The space budget is shared by writes and growth and refuses the call that passes it.
    #[test]
    fn space_budget_refuses_the_call_that_passes_it() {
        let plan = FaultPlan::new();
        plan.no_space_after_bytes(10_000);
        assert_eq!(plan.on_write(4096), None);
        assert!(plan.on_allocate(4096));
        assert_eq!(plan.on_write(4096), Some(WriteFault::NoSpace));
        assert!(!plan.on_allocate(4096));
        assert!(plan.on_allocate(1808));
        assert_eq!(plan.fired().no_space, 2);
        plan.restore_space();
        assert_eq!(plan.on_write(1 << 30), None);
    }

    /// One-shot faults fire once; read patterns stay until cleared.
    #[test]
    fn one_shot_faults_fire_once() {
        let plan = FaultPlan::new();
        plan.fail_next_fsyncs(1);
        assert!(plan.on_fsync());
        assert!(!plan.on_fsync());
        plan.tear_next_write(5000);
        assert_eq!(
            plan.on_write(8192),
            Some(WriteFault::Torn { prefix_bytes: 4096 })
        );
        assert_eq!(plan.on_write(8192), None);
        plan.fail_reads_of("0042.log");
        assert!(plan.on_read(std::path::Path::new("/d/00000000000000000042.log")));
        assert!(!plan.on_read(std::path::Path::new("/d/00000000000000000042.index")));
        plan.clear();
        assert!(!plan.on_read(std::path::Path::new("/d/00000000000000000042.log")));
        assert_eq!(
            plan.fired(),
            FaultCounts {
                fsyncs_failed: 1,
                no_space: 0,
                writes_cut: 1,
                reads_failed: 1
            }
        );
    }
}
