//! Latency histograms: one HDR histogram (hdrhistogram crate) per task and per kind of latency,
//! recorded without locks on the task that measures, merged once at the end of a point
//! ([`Latency::merge`]) and summarised as [`Percentiles`].
//!
//! Values are nanoseconds. The range is 1 ns to [`LATENCY_NS_MAX`] at 3 significant digits: a
//! recorded value is within 0.1 % of the true one. Longer values are clamped to the maximum
//! (and counted in [`Latency::clamped`]), never dropped, so a stall always shows.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds: 1000 s in nanoseconds. A point lasts seconds to minutes,
/// so a longer latency means something is broken; it is clamped, and counted.
pub const LATENCY_NS_MAX: u64 = 1_000_000_000_000;

/// Significant decimal digits kept (3: 0.1 % resolution, about 500 KiB per histogram).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Significant digits of [`Latency::coarse`] (2: 1 % resolution).
const COARSE_SIGNIFICANT_DIGITS: u8 = 2;

/// One latency distribution in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    clamped: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 ns to [`LATENCY_NS_MAX`].
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, digits <= 5).
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Latency {
            histogram,
            clamped: 0,
        }
    }

    /// An empty histogram at 2 significant digits (1 % resolution, about 35 KiB instead of
    /// 500): for the medians of the slices of a window ([`crate::held`]), eight per task.
    pub fn coarse() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, COARSE_SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Latency {
            histogram,
            clamped: 0,
        }
    }

    /// Records one latency. Zero is recorded as 1 ns (the histogram's floor); values above
    /// [`LATENCY_NS_MAX`] as the maximum.
    pub fn record(&mut self, latency_ns: u64) {
        if latency_ns > LATENCY_NS_MAX {
            self.clamped += 1;
        }
        self.histogram
            .saturating_record(latency_ns.clamp(1, LATENCY_NS_MAX));
    }

    /// Adds every value of `other` to this histogram (the histograms of several tasks become
    /// one distribution).
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so `add` cannot fail with an out-of-range count.
        if self.histogram.add(&other.histogram).is_err() {
            for value in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
        self.clamped += other.clamped;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Values above [`LATENCY_NS_MAX`] recorded as the maximum.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The value at quantile `q` (0..=1) in nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(q)
    }

    /// The summary of the report: p50 to p99.99 and max, in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            count: self.count(),
            p50_ms: ms(self.quantile_ns(0.50)),
            p90_ms: ms(self.quantile_ns(0.90)),
            p99_ms: ms(self.quantile_ns(0.99)),
            p999_ms: ms(self.quantile_ns(0.999)),
            p9999_ms: ms(self.quantile_ns(0.9999)),
            max_ms: if self.histogram.is_empty() {
                0.0
            } else {
                ms(self.histogram.max())
            },
            mean_ms: if self.histogram.is_empty() {
                0.0
            } else {
                self.histogram.mean() / 1e6
            },
        }
    }
}

/// A latency distribution's summary, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of values.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// 99.99th percentile.
    pub p9999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Percentiles {
    /// `p50 / p99 / p99.9 / max` in ms, for tables; `-` when empty.
    pub fn short(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        format!(
            "{} / {} / {} / {}",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.p999_ms),
            fmt_ms(self.max_ms)
        )
    }
}

/// A latency in ms with 2-3 significant digits: `0.085`, `1.6`, `42`, `1234`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 0.1 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks' histograms merged give the distribution of all their values together: the
    /// same count, percentiles and max as one histogram that saw everything.
    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        let mut all = Latency::new();
        for i in 1..=10_000u64 {
            let value = i * 1_000; // 1 µs .. 10 ms
            if i % 3 == 0 {
                a.record(value);
            } else {
                b.record(value);
            }
            all.record(value);
        }
        b.record(2_000_000_000); // one 2 s outlier in one task only
        all.record(2_000_000_000);
        let mut merged = Latency::new();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.count(), 10_001);
        assert_eq!(merged.percentiles(), all.percentiles());
        // The outlier of one task is the max of the merge.
        let max = merged.percentiles().max_ms;
        assert!((max - 2000.0).abs() / 2000.0 < 0.001, "{max}");
        // Medians of the parts differ from the merged median, which sits in the middle.
        let p50 = merged.percentiles().p50_ms;
        assert!((p50 - 5.0).abs() / 5.0 < 0.01, "{p50}");
    }

    /// Merging an empty histogram changes nothing; an empty one summarises as zeros.
    #[test]
    fn empty_histograms() {
        let mut a = Latency::new();
        assert_eq!(a.percentiles(), Percentiles::default());
        assert_eq!(a.percentiles().short(), "-");
        a.record(5_000);
        let before = a.percentiles();
        a.merge(&Latency::new());
        assert_eq!(a.percentiles(), before);
    }

    /// Values outside the range are clamped and counted, never lost.
    #[test]
    fn out_of_range_values_are_clamped_and_counted() {
        let mut a = Latency::new();
        a.record(0);
        a.record(LATENCY_NS_MAX * 10);
        assert_eq!(a.count(), 2);
        assert_eq!(a.clamped(), 1);
        let mut b = Latency::new();
        b.merge(&a);
        assert_eq!(b.clamped(), 1);
        assert!(b.quantile_ns(1.0) >= LATENCY_NS_MAX / 1001 * 1000);
    }

    /// Milliseconds print with three significant digits below 1000 and as whole numbers above.
    #[test]
    fn ms_formatting() {
        assert_eq!(fmt_ms(0.0123), "0.012");
        assert_eq!(fmt_ms(1.234), "1.23");
        assert_eq!(fmt_ms(42.42), "42.4");
        assert_eq!(fmt_ms(1234.4), "1234");
    }
}
