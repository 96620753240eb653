//! The memory and connection bounds of the network path, and their accounting. Created by the
//! node ([`NetStats`] once per node, a [`ShardNet`] per shard); used by the acceptor threads
//! ([`NetStats::admit`]) and by every connection (its receive buffer's growth and its requests
//! in flight are charged here before the memory is taken).
//!
//! # The bounds and their sum
//!
//! | bound | flag | default |
//! |---|---|---|
//! | connections per node | `--max-connections` | 10 000 |
//! | receive buffer a connection starts with | [`RECEIVE_BUFFER_INITIAL_BYTES`] | 16 KiB |
//! | largest request frame | `--max-frame-bytes` | 64 MiB |
//! | receive-buffer growth of all connections of a shard | `--receive-buffer-budget-bytes` | 256 MiB per shard |
//! | request bytes in flight of a connection | `--max-request-bytes-in-flight` | 80 MiB |
//! | request bytes in flight of all connections of a shard | `--request-budget-bytes` | 256 MiB per shard |
//! | a frame must arrive whole within | `--request-timeout-ms` | 30 s |
//!
//! Memory the network path can hold, per node (`S` shards, `C` = `--max-connections`):
//!
//! ```text
//!   C x RECEIVE_BUFFER_INITIAL_BYTES          every connection's first buffer (10 000 x 16 KiB = 160 MiB)
//! + S x receive-buffer-budget-bytes           buffers grown for frames being received (256 MiB each)
//! + S x request-budget-bytes                  requests read and not yet answered: frame bytes
//!                                             plus the response they may produce (256 MiB each)
//! = 160 MiB + S x 512 MiB                     (2 shards: 1.2 GiB)
//! ```
//!
//! A buffer grows only when it is full of bytes that arrived, to twice its size (at most the
//! frame's length), so a frame announced at 60 MiB of which 4 MiB arrived holds at most 8 MiB.
//! Growth beyond the first buffer is charged both to the shard's receive budget and to the
//! connection's requests in flight; a dispatched request is charged its frame bytes plus the
//! most its response can hold (a fetch's `max_bytes`, else [`SMALL_RESPONSE_BYTES`]) to the
//! connection's and the shard's request budgets until its response is written. A charge that
//! does not fit waits: the connection stops reading and TCP pushes back on its client. Waits
//! cannot last: a frame that does not arrive whole (budget waits included) within the request
//! timeout is dropped with its connection, and a response the client does not read within it
//! closes the connection too, so every charge is given back within a bounded time.
//!
//! Not on this list, bounded elsewhere: a shard's inbox (`--shard-inbox-bytes`, the copies of
//! record bytes forwarded to other shards) and the tail cache (`storage::CoreResources`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use glommio::sync::Semaphore;

use crate::config::Config;

/// Receive buffer a connection starts with: room for a typical small request (metadata, a
/// fetch, a produce of a few KiB) without growing. `--max-connections` x 16 KiB is the memory
/// of idle connections: 160 MiB at the default 10 000.
pub const RECEIVE_BUFFER_INITIAL_BYTES: usize = 16 * 1024;
/// A grown buffer that empties is kept for the next frames while it is at most this large and
/// nobody waits for the shard's receive budget (reallocating and zeroing a buffer per request
/// cost 6 % of the broker's CPU at 256 KiB frames); a larger one is given back at once.
pub const RECEIVE_BUFFER_KEEP_BYTES: usize = 8 * 1024 * 1024;
/// Default of `--max-connections`: 10 000 x 16 KiB first buffers = 160 MiB.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// Default of `--max-request-bytes-in-flight`: one 64 MiB maximal frame plus 16 MiB, so a
/// connection can pipeline a few small requests behind a large one.
pub const MAX_REQUEST_BYTES_IN_FLIGHT_DEFAULT: usize = 80 << 20;
/// Default of `--receive-buffer-budget-bytes` (per shard): four frames of the maximal 64 MiB
/// arriving at once, or 128 connections receiving 2 MiB frames.
pub const RECEIVE_BUFFER_BUDGET_BYTES_DEFAULT: usize = 256 << 20;
/// Default of `--request-budget-bytes` (per shard): 64 consumers each with a 4 MiB fetch in
/// flight, or 1 000 connections each with 256 KiB of produce requests waiting for acks.
pub const REQUEST_BUDGET_BYTES_DEFAULT: usize = 256 << 20;
/// Default of `--request-timeout-ms`: a frame must arrive whole, and a response must be taken
/// by its client, within 30 s.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default of `--spin-before-park-us` (see [`crate::config::Config::spin_before_park`]).
pub const SPIN_BEFORE_PARK_US_DEFAULT: u64 = 0;
/// What a request other than a fetch is charged for its response: metadata of a few hundred
/// partitions, a group's assignment, an error.
pub const SMALL_RESPONSE_BYTES: usize = 64 * 1024;
/// One refused connection in this many is logged (the first always), so a flood of
/// connections does not flood the log.
const REFUSALS_PER_LOG: u64 = 1024;

/// Counters of the network path of a whole node, readable from any thread (for metrics):
/// [`crate::NodeHandle::net_stats`]. The connection counts are the node's (one update per
/// connection); the byte counts are kept per shard, each on its own cache line, so the
/// updates of one request never touch another core's line.
#[derive(Debug)]
pub struct NetStats {
    max_connections: usize,
    connections_open: AtomicUsize,
    connections_refused: AtomicU64,
    shards: Vec<ShardCounters>,
}

/// The byte counters of one shard.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ShardCounters {
    receive_buffer_bytes: AtomicUsize,
    request_bytes_in_flight: AtomicUsize,
}

impl NetStats {
    /// Counters of a node of `shards` shards that serves at most `max_connections`.
    pub fn new(shards: usize, max_connections: usize) -> NetStats {
        NetStats {
            max_connections,
            connections_open: AtomicUsize::new(0),
            connections_refused: AtomicU64::new(0),
            shards: (0..shards.max(1))
                .map(|_| ShardCounters::default())
                .collect(),
        }
    }

    /// A slot for a new connection, or `None` (counted as refused) when the node already
    /// serves `--max-connections`.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let open = self.connections_open.fetch_add(1, Ordering::Relaxed);
        if open < self.max_connections {
            return Some(ConnectionSlot {
                stats: self.clone(),
            });
        }
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        let refused = self.connections_refused.fetch_add(1, Ordering::Relaxed);
        if refused % REFUSALS_PER_LOG == 0 {
            tracing::warn!(
                max_connections = self.max_connections,
                refused = refused + 1,
                "connection limit reached; closing new connections"
            );
        }
        None
    }

    /// Connections being served now.
    pub fn connections_open(&self) -> usize {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because `--max-connections` were open, since start.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused.load(Ordering::Relaxed)
    }

    /// Bytes of receive buffers beyond their first 16 KiB, all shards (what the receive
    /// budgets have handed out).
    pub fn receive_buffer_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.receive_buffer_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Bytes charged for requests read and not yet answered, all shards.
    pub fn request_bytes_in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.request_bytes_in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// The connection slot of one admitted connection; frees it when dropped.
pub struct ConnectionSlot {
    stats: Arc<NetStats>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bounds of one shard's network path: its two byte budgets and the per-connection limits.
/// Lives on its shard (`!Send`, see [`current`]); connections hold an `Rc` of it.
pub struct ShardNet {
    stats: Arc<NetStats>,
    /// This shard's counters in `stats.shards`.
    shard: usize,
    /// Largest request frame (`--max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// Request bytes one connection may have in flight (`--max-request-bytes-in-flight`).
    pub max_request_bytes_in_flight: usize,
    /// How long a frame may take to arrive, and a response to be taken (`--request-timeout-ms`).
    pub request_timeout: std::time::Duration,
    /// How long a connection may stay silent between frames.
    pub idle_timeout: std::time::Duration,
    receive_budget: Semaphore,
    receive_waiters: Cell<usize>,
    request_budget: Semaphore,
    request_budget_bytes: usize,
}

/// A budget was closed: the connection is ending.
#[derive(Debug, Clone, Copy)]
pub struct BudgetClosed;

impl ShardNet {
    /// The network bounds of shard `shard`, counting into the node's `stats`.
    pub fn new(config: &Config, stats: Arc<NetStats>, shard: usize) -> ShardNet {
        ShardNet {
            shard: shard.min(stats.shards.len() - 1),
            stats,
            max_frame_bytes: config.max_frame_bytes,
            max_request_bytes_in_flight: config.max_request_bytes_in_flight,
            request_timeout: config.request_timeout,
            idle_timeout: config.idle_timeout,
            receive_budget: Semaphore::new(config.receive_buffer_budget_bytes as u64),
            receive_waiters: Cell::new(0),
            request_budget: Semaphore::new(config.request_budget_bytes as u64),
            request_budget_bytes: config.request_budget_bytes,
        }
    }

    fn counters(&self) -> &ShardCounters {
        &self.stats.shards[self.shard]
    }

    /// Takes `bytes` of the shard's receive budget, waiting until they are free. A buffer
    /// never grows past `--max-frame-bytes`, which the configuration keeps within the budget,
    /// so the wait ends once other connections give back theirs.
    pub async fn take_receive(&self, bytes: usize) -> Result<(), BudgetClosed> {
        let taken = {
            // Counted as waiting until the wait ends, also when it is given up (dropped).
            let _waiting = Waiting::new(&self.receive_waiters);
            self.receive_budget.acquire(bytes as u64).await
        };
        taken.map_err(|_| BudgetClosed)?;
        self.counters()
            .receive_buffer_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back what [`ShardNet::take_receive`] took.
    pub fn give_receive(&self, bytes: usize) {
        self.receive_budget.signal(bytes as u64);
        self.counters()
            .receive_buffer_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// True while a connection waits for the receive budget: grown buffers that empty are
    /// then given back instead of kept.
    pub fn receive_contended(&self) -> bool {
        self.receive_waiters.get() > 0
    }

    /// The most one request may be charged: all of the shard's request budget (a larger
    /// charge could never be granted).
    pub fn request_charge_max(&self) -> usize {
        self.request_budget_bytes
    }

    /// Takes `bytes` of the shard's request budget, waiting until they are free.
    pub async fn take_request(&self, bytes: usize) -> Result<(), BudgetClosed> {
        self.request_budget
            .acquire(bytes as u64)
            .await
            .map_err(|_| BudgetClosed)?;
        self.counters()
            .request_bytes_in_flight
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back what [`ShardNet::take_request`] took.
    pub fn give_request(&self, bytes: usize) {
        self.request_budget.signal(bytes as u64);
        self.counters()
            .request_bytes_in_flight
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

thread_local! {
    /// The bounds of the shard running on this thread (one glommio executor per thread),
    /// installed by the node when it opens the shard. A connection is handed to its shard as a
    /// work item that only sees the shard's services (a lower layer, which cannot name the
    /// network's types), so it finds its shard's bounds here.
    static SHARD_NET: std::cell::OnceCell<std::rc::Rc<ShardNet>> = const { std::cell::OnceCell::new() };
}

/// Makes `net` the bounds of the shard running on this thread; the first call wins.
pub fn install(net: ShardNet) {
    SHARD_NET.with(|cell| {
        let _ = cell.set(std::rc::Rc::new(net));
    });
}

/// The bounds of the shard running on this thread, once [`install`]ed.
pub fn current() -> Option<std::rc::Rc<ShardNet>> {
    SHARD_NET.with(|cell| cell.get().cloned())
}

/// One waiter counted in a waiters' count for as long as it lives.
struct Waiting<'a> {
    waiters: &'a Cell<usize>,
}

impl<'a> Waiting<'a> {
    fn new(waiters: &'a Cell<usize>) -> Waiting<'a> {
        waiters.set(waiters.get() + 1);
        Waiting { waiters }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.set(self.waiters.get() - 1);
    }
}

#[cfg(test)]
impl ShardNet {
    /// A shard's bounds for unit tests: `budget_bytes` for both shard
    /// budgets, `connection_bytes` of requests in flight per connection.
    pub(crate) fn for_tests(budget_bytes: usize, connection_bytes: usize) -> ShardNet {
        ShardNet {
            stats: Arc::new(NetStats::new(1, 1)),
            shard: 0,
            max_frame_bytes: budget_bytes,
            max_request_bytes_in_flight: connection_bytes,
            request_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            receive_budget: Semaphore::new(budget_bytes as u64),
            receive_waiters: Cell::new(0),
            request_budget: Semaphore::new(budget_bytes as u64),
            request_budget_bytes: budget_bytes,
        }
    }

    /// The node's counters this shard counts into.
    pub(crate) fn stats(&self) -> &NetStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Connections beyond the limit are refused and counted; a closed one frees its slot.
    #[test]
    fn connection_limit_admits_up_to_the_limit() {
        let stats = Arc::new(NetStats::new(1, 2));
        let first = stats.admit().unwrap();
        let _second = stats.admit().unwrap();
        assert!(stats.admit().is_none());
        assert!(stats.admit().is_none());
        assert_eq!(stats.connections_open(), 2);
        assert_eq!(stats.connections_refused(), 2);
        drop(first);
        assert_eq!(stats.connections_open(), 1);
        let _third = stats.admit().unwrap();
        assert_eq!(stats.connections_open(), 2);
    }
}
