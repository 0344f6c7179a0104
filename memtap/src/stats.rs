//! memtap's counters for one VM, and their printable snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Faults answered from the prefetch cache.
    pub prefetch_hits: AtomicU64,
    /// Faults that had to go to memserv.
    pub prefetch_misses: AtomicU64,
    /// Faults answered as zero from the VM's zero map or a zero marker.
    pub zero_pages_served: AtomicU64,
    /// Pages written by the guest (page-cache writeback).
    pub pages_written: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A point-in-time copy of a VM's counters, as shown by `<vm>.stats` and
/// `jettison status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// See [`Counters::prefetch_hits`].
    pub prefetch_hits: u64,
    /// See [`Counters::prefetch_misses`].
    pub prefetch_misses: u64,
    /// See [`Counters::zero_pages_served`].
    pub zero_pages_served: u64,
    /// See [`Counters::pages_written`].
    pub pages_written: u64,
    /// Pages in the dirty slice now.
    pub dirty_pages: u64,
    /// Pages in the fetched slice now.
    pub resident_pages: u64,
    /// Pages waiting in the prefetch cache now.
    pub cached_pages: u64,
}

impl RamStats {
    /// One line for `jettison status`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} MiB RAM, {} faults in {} reads, {} fetches, {} pages ({:.1} MiB) fetched, prefetch {} hits / {} misses, {} zero pages, {} dirty pages",
            self.vm,
            self.ram_bytes >> 20,
            self.faults,
            self.read_requests,
            self.remote_fetches,
            self.pages_fetched,
            self.bytes_fetched as f64 / (1024.0 * 1024.0),
            self.prefetch_hits,
            self.prefetch_misses,
            self.zero_pages_served,
            self.dirty_pages,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_counter() {
        let s = RamStats { vm: "vm1".into(), ram_bytes: 256 << 20, faults: 3, dirty_pages: 2, ..RamStats::default() };
        let line = s.summary();
        assert!(line.starts_with("vm1: 256 MiB RAM, 3 faults in 0 reads"), "{line}");
        assert!(line.ends_with("2 dirty pages"), "{line}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RamStats>(&json).unwrap(), s);
    }
}
