//! memtap's counters for one VM, and their printable snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics_endpoint::{Histogram, HistogramSnapshot};
use serde::{Deserialize, Serialize};

/// Live counters, updated by the FUSE handlers.
#[derive(Debug, Default)]
pub struct Counters {
    /// FUSE read requests (with kernel readahead off, one per fault).
    pub read_requests: AtomicU64,
    /// Pages the guest read through FUSE (page-cache misses: its faults).
    pub faults: AtomicU64,
    /// Requests sent to memserv.
    pub remote_fetches: AtomicU64,
    /// Pages received from memserv (faulting pages and prefetched ones).
    pub pages_fetched: AtomicU64,
    /// Bytes of page data received from memserv (zero markers excluded).
    pub bytes_fetched: AtomicU64,
    /// Of [`Counters::pages_fetched`], those a push brought, before any
    /// guest access asked for them.
    pub pages_pushed: AtomicU64,
    /// Of [`Counters::bytes_fetched`], those a push brought.
    pub bytes_pushed: AtomicU64,
    /// Faults answered from the prefetch cache.
    pub prefetch_hits: AtomicU64,
    /// Faults that had to go to memserv.
    pub prefetch_misses: AtomicU64,
    /// Faults answered as zero from the VM's zero map or a zero marker.
    pub zero_pages_served: AtomicU64,
    /// Pages written by the guest (page-cache writeback).
    pub pages_written: AtomicU64,
    /// Whole pages discarded (holes QEMU punched as the guest reported
    /// free memory).
    pub pages_discarded: AtomicU64,
    /// How long each fault that went to memserv waited for its pages
    /// (a wake of the desktop included).
    pub fetch_latency: FetchLatency,
}

/// Upper bounds, in seconds, of the fetch latency buckets: a page from an
/// awake desktop on the LAN takes about a millisecond; one that waits for
/// the desktop to wake from S3 takes seconds (8.6 s in the paper's Table 1).
pub const FETCH_LATENCY_BOUNDS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The histogram of fetch latencies, over [`FETCH_LATENCY_BOUNDS`].
#[derive(Debug)]
pub struct FetchLatency(pub Histogram);

impl Default for FetchLatency {
    fn default() -> Self {
        FetchLatency(Histogram::new(FETCH_LATENCY_BOUNDS))
    }
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A point-in-time copy of a VM's counters, as shown by `<vm>.stats` and
/// `jettison status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RamStats {
    /// The VM's name.
    pub vm: String,
    /// Size of its RAM in bytes.
    pub ram_bytes: u64,
    /// See [`Counters::read_requests`].
    pub read_requests: u64,
    /// See [`Counters::faults`].
    pub faults: u64,
    /// See [`Counters::remote_fetches`].
    pub remote_fetches: u64,
    /// See [`Counters::pages_fetched`].
    pub pages_fetched: u64,
    /// See [`Counters::bytes_fetched`].
    pub bytes_fetched: u64,
    /// See [`Counters::pages_pushed`].
    #[serde(default)]
    pub pages_pushed: u64,
    /// See [`Counters::bytes_pushed`].
    #[serde(default)]
    pub bytes_pushed: u64,
    /// Pages a push brought that the guest has not touched since: in the
    /// fetched slice on disk, not in the guest's memory.
    #[serde(default)]
    pub pushed_untouched: u64,
    /// See [`Counters::prefetch_hits`].
    pub prefetch_hits: u64,
    /// See [`Counters::prefetch_misses`].
    pub prefetch_misses: u64,
    /// See [`Counters::zero_pages_served`].
    pub zero_pages_served: u64,
    /// See [`Counters::pages_written`].
    pub pages_written: u64,
    /// See [`Counters::pages_discarded`].
    #[serde(default)]
    pub pages_discarded: u64,
    /// Pages in the dirty slice now, not discarded.
    pub dirty_pages: u64,
    /// Pages discarded now (written since excluded): they go home as holes.
    #[serde(default)]
    pub discarded_pages: u64,
    /// Pages in the fetched slice now.
    pub resident_pages: u64,
    /// Pages waiting in the prefetch cache now.
    pub cached_pages: u64,
    /// See [`Counters::fetch_latency`].
    #[serde(default)]
    pub fetch_latency: HistogramSnapshot,
}

impl RamStats {
    /// One line for `jettison status`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} MiB RAM, {} faults in {} reads, {} fetches, {} pages ({:.1} MiB) fetched ({} pushed), prefetch {} hits / {} misses, {} zero pages, {} dirty pages, {} discarded pages",
            self.vm,
            self.ram_bytes >> 20,
            self.faults,
            self.read_requests,
            self.remote_fetches,
            self.pages_fetched,
            self.bytes_fetched as f64 / (1024.0 * 1024.0),
            self.pages_pushed,
            self.prefetch_hits,
            self.prefetch_misses,
            self.zero_pages_served,
            self.dirty_pages,
            self.discarded_pages,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_counter() {
        let s = RamStats {
            vm: "vm1".into(),
            ram_bytes: 256 << 20,
            faults: 3,
            dirty_pages: 2,
            discarded_pages: 5,
            ..RamStats::default()
        };
        let line = s.summary();
        assert!(line.starts_with("vm1: 256 MiB RAM, 3 faults in 0 reads"), "{line}");
        assert!(line.ends_with("2 dirty pages, 5 discarded pages"), "{line}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RamStats>(&json).unwrap(), s);
    }
}
