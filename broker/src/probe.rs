//! The per-shard probe: the counters and latency histograms one shard keeps about its own work
//! (requests, bytes, appends, connections, produce/fetch/fsync latency). The request handlers,
//! the connection loop and the partitions' logs write it on the hot path; the metrics endpoint
//! (`crate::metrics`) reads a [`ProbeSnapshot`] of it at scrape time, taken on the shard through
//! the bus. At the bottom of the broker's layers: it imports nothing of the crate.
//!
//! Hot-path cost: counters are `Cell<u64>` (the shard is single-threaded; no atomics, no
//! locks); a histogram is a fixed array of buckets written by the owning shard only, with plain
//! relaxed loads and stores (no read-modify-write instruction, no lock prefix). The histograms
//! are atomics rather than cells only because the log's fsync hook (`storage::SyncObserver`)
//! must be `Send + Sync`; one writer per histogram keeps them uncontended and exact.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (inclusive, in nanoseconds) of the latency buckets, plus an implicit +Inf
/// bucket: 50 µs to 10 s in 1-2.5-5 steps. 18 buckets x 8 bytes = 144 bytes per histogram,
/// and an observation is a linear scan of at most 17 comparisons; requests below 50 µs land in
/// the first bucket, stalls above 10 s in +Inf (their exact time still counts in the sum).
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a [`LatencyHistogram`]: one per bound, and +Inf.
const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_NS.len() + 1;

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKET_BOUNDS_NS`]. Written by one
/// shard only (see the module docs); read from anywhere.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of every observation, in nanoseconds (wraps after 584 years of latency).
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation. Only the owning shard may call this: the increments are a load
    /// and a store, not an atomic add.
    pub fn observe(&self, took: Duration) {
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_NS
            .iter()
            .position(|bound| took_ns <= *bound)
            .unwrap_or(LATENCY_BUCKETS - 1);
        bump(&self.buckets[bucket], 1);
        bump(&self.sum_ns, took_ns);
    }

    /// The histogram as it is now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bucket_counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            count: bucket_counts.iter().sum(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            bucket_counts,
        }
    }
}

/// Adds to a single-writer counter without a read-modify-write instruction.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A copy of a [`LatencyHistogram`] (what crosses to the metrics thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Their sum, in nanoseconds.
    pub sum_ns: u64,
    /// Observations per bucket of [`LATENCY_BUCKET_BOUNDS_NS`], then +Inf (not cumulative).
    pub bucket_counts: Vec<u64>,
}

impl HistogramSnapshot {
    /// `(upper bound in seconds, observations)` per bucket, +Inf last: the shape the
    /// Prometheus encoder takes.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKET_BOUNDS_NS
            .iter()
            .map(|bound| *bound as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.bucket_counts.iter().copied())
            .collect()
    }

    /// The sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

/// What one shard counts about its own work. Lives in the shard; `!Sync` (cells).
#[derive(Debug, Default)]
pub struct ShardProbe {
    /// Produce requests received on this shard's connections.
    pub produce_requests: Cell<u64>,
    /// Record-batch bytes those produce requests carried.
    pub produce_bytes: Cell<u64>,
    /// Fetch requests received on this shard's connections.
    pub fetch_requests: Cell<u64>,
    /// Record-batch bytes fetch responses of this shard's connections carried.
    pub fetch_bytes: Cell<u64>,
    /// Record batches appended to the logs this shard owns (duplicates of idempotent
    /// producers not included).
    pub appended_batches: Cell<u64>,
    /// Bytes of those batches.
    pub appended_bytes: Cell<u64>,
    /// Client connections accepted by this shard since it started.
    pub connections_accepted: Cell<u64>,
    /// Client connections open on this shard now.
    pub connections_open: Cell<u64>,
    /// Produce latency, from the request decoded to its response ready to write (acks and
    /// durability waits included), on the connection's shard.
    pub produce_latency: LatencyHistogram,
    /// Fetch latency, from the request decoded to its response ready (long polls included).
    pub fetch_latency: LatencyHistogram,
    /// fdatasync latency of the logs this shard owns (shared with their sync observers).
    pub fsync_latency: Arc<LatencyHistogram>,
}

/// Adds `by` to a shard-local counter.
pub fn add(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get().wrapping_add(by));
}

impl ShardProbe {
    /// The observer a log of this shard reports its syncs to.
    pub fn sync_observer(&self) -> storage::SyncObserver {
        let fsync_latency = self.fsync_latency.clone();
        storage::SyncObserver(Arc::new(move |took| fsync_latency.observe(took)))
    }

    /// Counts a connection that opened; [`ShardProbe::connection_closed`] when it ends.
    pub fn connection_opened(&self) {
        add(&self.connections_accepted, 1);
        add(&self.connections_open, 1);
    }

    /// Counts a connection that ended.
    pub fn connection_closed(&self) {
        self.connections_open
            .set(self.connections_open.get().saturating_sub(1));
    }

    /// A copy of every counter and histogram.
    pub fn snapshot(&self) -> ProbeSnapshot {
        ProbeSnapshot {
            produce_requests: self.produce_requests.get(),
            produce_bytes: self.produce_bytes.get(),
            fetch_requests: self.fetch_requests.get(),
            fetch_bytes: self.fetch_bytes.get(),
            appended_batches: self.appended_batches.get(),
            appended_bytes: self.appended_bytes.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_open: self.connections_open.get(),
            produce_latency: self.produce_latency.snapshot(),
            fetch_latency: self.fetch_latency.snapshot(),
            fsync_latency: self.fsync_latency.snapshot(),
        }
    }
}

/// A copy of a [`ShardProbe`]; see its fields.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct ProbeSnapshot {
    pub produce_requests: u64,
    pub produce_bytes: u64,
    pub fetch_requests: u64,
    pub fetch_bytes: u64,
    pub appended_batches: u64,
    pub appended_bytes: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub produce_latency: HistogramSnapshot,
    pub fetch_latency: HistogramSnapshot,
    pub fsync_latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each observation lands in the first bucket whose bound holds it (bounds inclusive),
    /// beyond the last bound in +Inf; the count and the sum add up.
    #[test]
    fn observations_land_in_their_buckets() {
        let histogram = LatencyHistogram::default();
        let samples_ns = [1, 50_000, 50_001, 3_000_000, 10_000_000_000, 20_000_000_000];
        for sample in samples_ns {
            histogram.observe(Duration::from_nanos(sample));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, samples_ns.len() as u64);
        assert_eq!(snapshot.sum_ns, samples_ns.iter().sum::<u64>());
        let buckets = snapshot.buckets_seconds();
        assert_eq!(buckets.len(), LATENCY_BUCKET_BOUNDS_NS.len() + 1);
        let count_at = |bound_seconds: f64| {
            buckets
                .iter()
                .find(|(bound, _)| *bound == bound_seconds)
                .map(|(_, count)| *count)
        };
        assert_eq!(count_at(50e-6), Some(2), "1 ns and exactly 50 µs");
        assert_eq!(count_at(100e-6), Some(1), "50.001 µs");
        assert_eq!(count_at(5e-3), Some(1), "3 ms");
        assert_eq!(count_at(10.0), Some(1), "exactly 10 s");
        assert_eq!(count_at(f64::INFINITY), Some(1), "20 s");
        assert_eq!(
            buckets.iter().map(|(_, count)| count).sum::<u64>(),
            snapshot.count
        );
    }

    proptest::proptest! {
        /// Whatever the observations, the histogram accounts for each exactly once: the
        /// count and the sum are theirs, and every bucket holds exactly the observations
        /// above the previous bound and at most its own.
        #[test]
        fn every_observation_is_counted_once_in_its_bucket(
            samples_ns in proptest::collection::vec(0u64..20_000_000_000, 0..200)
        ) {
            let histogram = LatencyHistogram::default();
            for sample in &samples_ns {
                histogram.observe(Duration::from_nanos(*sample));
            }
            let snapshot = histogram.snapshot();
            proptest::prop_assert_eq!(snapshot.count, samples_ns.len() as u64);
            proptest::prop_assert_eq!(snapshot.sum_ns, samples_ns.iter().sum::<u64>());
            let mut lower_ns = None;
            for (index, count) in snapshot.bucket_counts.iter().enumerate() {
                let upper_ns = LATENCY_BUCKET_BOUNDS_NS.get(index).copied();
                let expected = samples_ns
                    .iter()
                    .filter(|sample| lower_ns.is_none_or(|lower| **sample > lower))
                    .filter(|sample| upper_ns.is_none_or(|upper| **sample <= upper))
                    .count() as u64;
                proptest::prop_assert_eq!(*count, expected, "bucket {}", index);
                lower_ns = upper_ns;
            }
        }
    }

    /// The sync observer feeds the probe's fsync histogram.
    #[test]
    fn sync_observer_feeds_fsync_latency() {
        let probe = ShardProbe::default();
        let observer = probe.sync_observer();
        (observer.0)(Duration::from_millis(2));
        (observer.0)(Duration::from_millis(7));
        let snapshot = probe.snapshot().fsync_latency;
        assert_eq!(snapshot.count, 2);
        assert_eq!(snapshot.sum_ns, 9_000_000);
    }

    /// Connections opened and closed move the open gauge both ways, the accepted counter up.
    #[test]
    fn connections_are_counted() {
        let probe = ShardProbe::default();
        probe.connection_opened();
        probe.connection_opened();
        probe.connection_closed();
        let snapshot = probe.snapshot();
        assert_eq!(snapshot.connections_accepted, 2);
        assert_eq!(snapshot.connections_open, 1);
    }
}
