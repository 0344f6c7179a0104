//! A histogram of durations whose buckets are fixed when it is made, safe
//! to observe from many threads at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds, in seconds, for a VM's moves (a consolidation or a
/// reintegration: about 4 s in the paper, up to minutes for a large dirty set).
pub const MOVE_SECONDS_BOUNDS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Live bucket counts; [`Histogram::observe`] takes `&self`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the count above the last bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with buckets up to each of `bounds` (seconds, ascending)
    /// and one above the last.
    ///
    /// # Panics
    /// If `bounds` is not strictly ascending: that is a bug in the caller.
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram bounds must ascend: {bounds:?}");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one event that took `took`.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = self.bounds.iter().position(|&bound| secs <= bound).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram's counts at one instant, printable and serialisable (memtap
/// writes it into its `<vm>.stats` files).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds in seconds.
    pub bounds: Vec<f64>,
    /// Events in each bucket (not cumulative), then those above the last bound.
    pub counts: Vec<u64>,
    /// The observed durations summed, in seconds.
    pub sum_secs: f64,
}

impl HistogramSnapshot {
    /// Events observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&[0.001, 0.01, 1.0]);
        for ms in [0, 1, 2, 10, 11, 999, 1000, 1001, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 3, 2]);
        assert_eq!(s.count(), 9);
        assert!((s.sum_secs - 63.024).abs() < 1e-9, "{}", s.sum_secs);
    }

    #[test]
    #[should_panic(expected = "must ascend")]
    fn unordered_bounds_are_a_bug() {
        Histogram::new(&[1.0, 0.5]);
    }
}
