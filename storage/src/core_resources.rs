//! [`CoreResources`]: what the logs of one shard (one core) share instead of each holding its
//! own: the tail-cache budget and a small pool of spare append chunks. Created once per shard
//! ([`CoreResources::install`], by the broker when a shard starts) and handed to every log the
//! shard opens ([`Log::open`](crate::Log::open) takes the installed one; a thread that installed
//! none gets one with the default budget).
//!
//! Memory of a core's logs, with `B` = `tail_cache_bytes` and `N` logs:
//!
//! ```text
//!  appended data kept in memory (chunks)  <= B, plus the chunks not yet on disk (see below)
//!  spare chunks kept for reuse            <= SPARE_CHUNKS_MAX x write_chunk_bytes (8 MiB)
//!  per idle log                           <= one page (its partial tail page) + small state
//!  read-ahead of sequential disk readers  <= B / 4 (64 MiB by default), see `read_ahead`
//! ```
//!
//! When a log needs a new chunk and the core's chunks would pass `B`, the least recently
//! appended logs give theirs up (oldest first): chunks entirely on disk are dropped, a partial
//! last chunk that is on disk shrinks to its tail page, and one not on disk yet is written
//! (so it can go at the next round). Only chunks not yet on disk can take the total past `B`:
//! at most `writes_in_flight_max + 1` chunks per log appending at that moment, each at most
//! `write_chunk_bytes`, and a log starts with small chunks (see `appender::CHUNK_FIRST_BYTES`),
//! so thousands of logs with a little data each hold little.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use crate::io::{AlignedBuffer, SegmentFile};

/// Default tail-cache budget of one core: 256 MiB. With 1 MiB chunks that is the last 256 MiB
/// appended on the core — two seconds of a fast NVMe drive's writes, enough for consumers and
/// followers that keep up — and 24 cores x 256 MiB = 6 GiB on a large host.
pub const TAIL_CACHE_BYTES_PER_CORE_DEFAULT: usize = 256 << 20;

/// Spare chunk buffers kept per core for reuse: 8, i.e. 8 MiB of 1 MiB chunks, enough to refill
/// the writes in flight (4 by default) of two busy logs without going to the allocator.
pub const SPARE_CHUNKS_MAX: usize = 8;

/// The per-core budgets, set by a flag of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardBudget {
    /// Bytes of appended data the core's logs keep in memory for readers, in total.
    pub tail_cache_bytes: usize,
}

impl Default for ShardBudget {
    fn default() -> Self {
        ShardBudget {
            tail_cache_bytes: TAIL_CACHE_BYTES_PER_CORE_DEFAULT,
        }
    }
}

/// Resources shared by the logs of one shard. `!Send`: it lives on its shard's thread.
pub struct CoreResources {
    budget: ShardBudget,
    /// Executor that created it: buffers from one executor's allocator are never handed to
    /// another one's files.
    executor_id: usize,
    cached_bytes: Cell<usize>,
    tick: Cell<u64>,
    accounts: RefCell<Vec<Weak<CacheAccount>>>,
    spare_chunks: RefCell<Vec<AlignedBuffer>>,
    /// Bytes of disk reads ahead in flight or waiting for their reader, at most
    /// [`CoreResources::read_ahead_bytes_max`].
    read_ahead_bytes: Cell<usize>,
    /// Disk reads served from bytes read ahead.
    read_ahead_hits: Cell<u64>,
}

thread_local! {
    static INSTALLED: RefCell<Option<Rc<CoreResources>>> = const { RefCell::new(None) };
}

fn executor_id() -> usize {
    glommio::executor().id()
}

impl CoreResources {
    /// Resources for the logs of the calling shard, with `budget`. Must run inside the shard's
    /// glommio executor.
    pub fn new(budget: ShardBudget) -> Rc<Self> {
        Rc::new(CoreResources {
            budget,
            executor_id: executor_id(),
            cached_bytes: Cell::new(0),
            tick: Cell::new(0),
            accounts: RefCell::new(Vec::new()),
            spare_chunks: RefCell::new(Vec::new()),
            read_ahead_bytes: Cell::new(0),
            read_ahead_hits: Cell::new(0),
        })
    }

    /// Creates the calling shard's resources with `budget` and makes them the ones every log
    /// opened later on this executor uses. Call once when the shard starts.
    pub fn install(budget: ShardBudget) -> Rc<Self> {
        let resources = Self::new(budget);
        INSTALLED.with(|installed| *installed.borrow_mut() = Some(resources.clone()));
        resources
    }

    /// The calling executor's installed resources; installs the default budget if it has none.
    pub fn current() -> Rc<Self> {
        let id = executor_id();
        let existing = INSTALLED.with(|installed| {
            installed
                .borrow()
                .as_ref()
                .filter(|r| r.executor_id == id)
                .cloned()
        });
        existing.unwrap_or_else(|| Self::install(ShardBudget::default()))
    }

    /// The budgets these resources enforce.
    pub fn budget(&self) -> ShardBudget {
        self.budget
    }

    /// Bytes of append chunks the core's logs hold right now.
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes.get()
    }

    /// Most bytes the core's logs read ahead at once: a quarter of the tail-cache budget (64
    /// MiB by default: two 32 MiB fetches read ahead), so read-ahead never takes more than a
    /// fraction of what the core keeps for readers.
    pub fn read_ahead_bytes_max(&self) -> usize {
        self.budget.tail_cache_bytes / 4
    }

    /// Bytes read ahead right now (in flight or waiting for their reader).
    pub fn read_ahead_bytes(&self) -> usize {
        self.read_ahead_bytes.get()
    }

    /// Disk reads of the core's logs served from bytes read ahead, since the start.
    pub fn read_ahead_hits(&self) -> u64 {
        self.read_ahead_hits.get()
    }

    /// Counts `bytes` of read-ahead against the budget, or `None` when they do not fit (the
    /// reader then reads when it asks, as without read-ahead).
    pub(crate) fn charge_read_ahead(self: &Rc<Self>, bytes: usize) -> Option<ReadAheadCharge> {
        let total = self.read_ahead_bytes.get().checked_add(bytes)?;
        if total > self.read_ahead_bytes_max() {
            return None;
        }
        self.read_ahead_bytes.set(total);
        Some(ReadAheadCharge {
            resources: self.clone(),
            bytes,
        })
    }

    /// Opens the cache account of a new log.
    pub(crate) fn open_account(self: &Rc<Self>) -> Rc<CacheAccount> {
        let account = Rc::new(CacheAccount {
            resources: self.clone(),
            last_append_tick: Cell::new(0),
            charged_bytes: Cell::new(0),
            owner: RefCell::new(None),
        });
        let mut accounts = self.accounts.borrow_mut();
        accounts.retain(|a| a.strong_count() > 0);
        accounts.push(Rc::downgrade(&account));
        account
    }

    /// A chunk buffer of `size` bytes for `account`'s log, from the spares or the allocator,
    /// after making room in the budget. The charge gives the bytes back when dropped.
    pub(crate) fn take_chunk(
        &self,
        file: &SegmentFile,
        size: usize,
        account: &Rc<CacheAccount>,
    ) -> (AlignedBuffer, CacheCharge) {
        account.touch();
        self.make_room(size, account);
        let spare = {
            let mut spares = self.spare_chunks.borrow_mut();
            spares
                .iter()
                .position(|b| b.len() == size)
                .map(|at| spares.swap_remove(at))
        };
        let buffer = spare.unwrap_or_else(|| file.alloc_chunk(size));
        self.cached_bytes.set(self.cached_bytes.get() + size);
        account
            .charged_bytes
            .set(account.charged_bytes.get() + size);
        let charge = CacheCharge {
            account: account.clone(),
            bytes: size,
        };
        (buffer, charge)
    }

    /// Keeps a chunk buffer nobody uses any more for reuse, up to [`SPARE_CHUNKS_MAX`].
    pub(crate) fn give_back(&self, buffer: AlignedBuffer) {
        let mut spares = self.spare_chunks.borrow_mut();
        if spares.len() < SPARE_CHUNKS_MAX {
            spares.push(buffer);
        }
    }

    /// Asks the least recently appended other logs to give up chunks until `incoming` more
    /// bytes fit in the budget, or nobody has more to give right now. Runs once per chunk
    /// taken while the core is at its budget: a scan of the core's logs (a few thousand
    /// pointer reads), not per message.
    fn make_room(&self, incoming: usize, requester: &Rc<CacheAccount>) {
        let fits = |cached: usize| cached + incoming <= self.budget.tail_cache_bytes;
        if fits(self.cached_bytes.get()) {
            return;
        }
        let mut victims: Vec<Rc<CacheAccount>> = self
            .accounts
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|a| a.charged_bytes.get() > 0 && !Rc::ptr_eq(a, requester))
            .collect();
        victims.sort_by_key(|a| a.last_append_tick.get());
        for victim in victims {
            if fits(self.cached_bytes.get()) {
                break;
            }
            let owner = victim.owner.borrow().as_ref().and_then(Weak::upgrade);
            if let Some(owner) = owner {
                owner.release_cache();
            }
        }
    }
}

/// A log that holds cached chunks and can give them up on request.
pub(crate) trait CacheOwner {
    /// Drops what the log's cache can drop now, and starts writing what it cannot yet.
    fn release_cache(&self);
}

/// One log's share of its core's cache budget.
pub(crate) struct CacheAccount {
    resources: Rc<CoreResources>,
    last_append_tick: Cell<u64>,
    charged_bytes: Cell<usize>,
    owner: RefCell<Option<Weak<dyn CacheOwner>>>,
}

impl CacheAccount {
    /// The core's resources.
    pub(crate) fn resources(&self) -> &Rc<CoreResources> {
        &self.resources
    }

    /// Records an append, for least-recently-appended eviction.
    pub(crate) fn touch(&self) {
        let tick = self.resources.tick.get() + 1;
        self.resources.tick.set(tick);
        self.last_append_tick.set(tick);
    }

    /// Names the log that releases this account's chunks on request.
    pub(crate) fn set_owner(&self, owner: Weak<dyn CacheOwner>) {
        *self.owner.borrow_mut() = Some(owner);
    }
}

/// The bytes of one chunk counted against the budget until dropped.
pub(crate) struct CacheCharge {
    account: Rc<CacheAccount>,
    bytes: usize,
}

impl Drop for CacheCharge {
    fn drop(&mut self) {
        let account = &self.account;
        account
            .charged_bytes
            .set(account.charged_bytes.get() - self.bytes);
        let resources = &account.resources;
        resources
            .cached_bytes
            .set(resources.cached_bytes.get() - self.bytes);
    }
}

/// Bytes of one read-ahead counted against the core's read-ahead budget until dropped.
pub(crate) struct ReadAheadCharge {
    resources: Rc<CoreResources>,
    bytes: usize,
}

impl ReadAheadCharge {
    /// Counts a reader served by these bytes.
    pub(crate) fn record_hit(&self) {
        let hits = &self.resources.read_ahead_hits;
        hits.set(hits.get() + 1);
    }
}

impl Drop for ReadAheadCharge {
    fn drop(&mut self) {
        let resources = &self.resources;
        resources
            .read_ahead_bytes
            .set(resources.read_ahead_bytes.get() - self.bytes);
    }
}
