//! Counters of an [`Overlay`](crate::Overlay), and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::store::SliceStore;

/// What an overlay has done since it was made, and what its store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OverlayStats {
    /// Read requests served.
    pub reads: u64,
    /// Write requests served.
    pub writes: u64,
    /// Calls to [`UnitSource::fetch`](crate::UnitSource::fetch).
    pub fetch_calls: u64,
    /// Units received from the source.
    pub units_fetched: u64,
    /// Whole units written straight to the dirty slice, with no read or fetch.
    pub whole_unit_promotions: u64,
    /// Units fetched because a partial write touched an absent unit.
    pub partial_write_fetches: u64,
    /// Read pieces answered with zeros from the known-zero map.
    pub zero_units_served: u64,
    /// Discard requests served.
    pub discards: u64,
    /// Units now in the fetched slice, not discarded.
    pub fetched_units: u64,
    /// Units now in the dirty slice, not discarded.
    pub dirty_units: u64,
    /// Units now discarded.
    pub discarded_units: u64,
}

/// The live counters; relaxed atomics, as they order nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) fetch_calls: AtomicU64,
    pub(crate) units_fetched: AtomicU64,
    pub(crate) whole_unit_promotions: AtomicU64,
    pub(crate) partial_write_fetches: AtomicU64,
    pub(crate) zero_units_served: AtomicU64,
    pub(crate) discards: AtomicU64,
}

/// Adds `n` to `counter`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A snapshot of the counters, with the store's unit counts.
    pub(crate) fn snapshot(&self, store: &SliceStore) -> OverlayStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OverlayStats {
            reads: get(&self.reads),
            writes: get(&self.writes),
            fetch_calls: get(&self.fetch_calls),
            units_fetched: get(&self.units_fetched),
            whole_unit_promotions: get(&self.whole_unit_promotions),
            partial_write_fetches: get(&self.partial_write_fetches),
            zero_units_served: get(&self.zero_units_served),
            discards: get(&self.discards),
            fetched_units: store.fetched_count(),
            dirty_units: store.dirty_count(),
            discarded_units: store.discarded_count(),
        }
    }
}
