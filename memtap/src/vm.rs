//! One consolidated VM's memory: its slices, its remote source and its
//! counters, behind the byte-level calls the FUSE handlers make.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use slice_store::{Overlay, SliceStore};
use wire::{NoWake, RemoteConfig, RemoteImage, WakeHook};

use crate::error::MemtapError;
use crate::prefetch::{DEFAULT_CACHE_BYTES, DEFAULT_PIVOT_WINDOW};
use crate::source::PageSource;
use crate::stats::{Counters, RamStats};

/// The page size memtap works in.
pub const PAGE_SIZE: u64 = 4096;

/// How to bring up one VM's memory.
#[derive(Debug, Clone)]
pub struct RamFileConfig {
    /// The VM's name: the file is `<name>.ram`.
    pub name: String,
    /// Directory for the VM's fetched and dirty slices (kept across restarts).
    pub slices: PathBuf,
    /// Where memserv is and how to talk to it.
    pub remote: RemoteConfig,
    /// Page ranges known to be zero on the desktop (the descriptor's zero
    /// map): they are served as zero and never fetched.
    pub zero_pages: Vec<Range<u64>>,
    /// How many pages the zero map was made for, when it came from a zero
    /// map file: memtap refuses it for a RAM of another size (its zero
    /// pages would be another file's, and real data would read as zeros).
    pub zero_map_pages: Option<u64>,
    /// Pages fetched around each fault, besides the faulting page.
    pub pivot_window: u64,
    /// Size of the prefetch cache in bytes.
    pub cache_bytes: usize,
    /// Asked before every fetch from this VM's desktop (Wake-on-LAN in a
    /// deployment; [`NoWake`] for a desktop that never sleeps).
    pub wake: Arc<dyn WakeHook>,
    /// Where every request to memserv is recorded, if anywhere.
    pub trace: Option<Arc<fetch_trace::TraceWriter>>,
}

impl RamFileConfig {
    /// A VM with the paper's defaults: a 20-page pivot window, a 50 MiB
    /// cache, and a desktop that is always awake.
    pub fn new(name: impl Into<String>, slices: impl Into<PathBuf>, remote: RemoteConfig) -> Self {
        RamFileConfig {
            name: name.into(),
            slices: slices.into(),
            remote,
            zero_pages: Vec::new(),
            zero_map_pages: None,
            pivot_window: DEFAULT_PIVOT_WINDOW,
            cache_bytes: DEFAULT_CACHE_BYTES,
            wake: Arc::new(NoWake),
            trace: None,
        }
    }
}

/// A VM's memory as memtap serves it.
#[derive(Debug)]
pub struct VmMemory {
    name: String,
    overlay: Overlay<Arc<PageSource>>,
    source: Arc<PageSource>,
    counters: Arc<Counters>,
}

impl VmMemory {
    /// Connects to memserv (waking the desktop if needed), opens or creates
    /// the VM's slices at the RAM's size and loads its zero map.
    ///
    /// # Errors
    /// [`MemtapError`] naming the VM and what failed.
    pub fn open(config: RamFileConfig) -> Result<Self, MemtapError> {
        let name = config.name.clone();
        let remote = RemoteImage::connect(config.remote, config.wake)
            .map_err(|source| MemtapError::Remote { vm: name.clone(), source })?;
        if u64::from(remote.unit()) != PAGE_SIZE {
            return Err(MemtapError::PageSize { vm: name, unit: remote.unit() });
        }
        let ram_pages = remote.size().div_ceil(PAGE_SIZE);
        let past_end = config.zero_pages.iter().map(|r| r.end).max().is_some_and(|end| end > ram_pages);
        if past_end || config.zero_map_pages.is_some_and(|pages| pages != ram_pages) {
            let map_pages = config.zero_map_pages.or(config.zero_pages.iter().map(|r| r.end).max()).unwrap_or(0);
            return Err(MemtapError::ZeroMapSize { vm: name, map_pages, ram_pages });
        }
        std::fs::create_dir_all(&config.slices).map_err(|source| MemtapError::SliceDir {
            vm: name.clone(),
            path: config.slices.clone(),
            source,
        })?;
        let store = Arc::new(
            SliceStore::open(&config.slices, PAGE_SIZE as u32, remote.size())
                .map_err(|source| MemtapError::Slices { vm: name.clone(), source })?,
        );
        store
            .mark_zero_ranges(config.zero_pages.iter().cloned())
            .map_err(|source| MemtapError::Slices { vm: name.clone(), source })?;
        let counters = Arc::new(Counters::default());
        let source = Arc::new(PageSource::new(
            remote,
            Arc::clone(&store),
            config.pivot_window,
            config.cache_bytes,
            Arc::clone(&counters),
            config.trace,
        ));
        let overlay = Overlay::new(store, Arc::clone(&source));
        Ok(VmMemory { name, overlay, source, counters })
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the VM's RAM in bytes.
    pub fn size(&self) -> u64 {
        self.overlay.size()
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the RAM).
    ///
    /// # Errors
    /// [`MemtapError::Io`] when the slices or memserv fail.
    pub fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, MemtapError> {
        let end = offset.saturating_add(u64::from(len)).min(self.size());
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        Counters::add(&self.counters.read_requests, 1);
        Counters::add(&self.counters.faults, pages_touched(offset, buf.len() as u64));
        self.overlay.read(offset, &mut buf).map_err(|source| self.io_error(offset, source))?;
        self.source.touched(offset / PAGE_SIZE..end.div_ceil(PAGE_SIZE));
        Ok(buf)
    }

    /// Writes `data` at `offset` into the dirty slice.
    ///
    /// # Errors
    /// [`MemtapError::Io`] when the range passes the end or the slices fail.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MemtapError> {
        let pages = pages_touched(offset, data.len() as u64);
        self.overlay.write(offset, data).map_err(|source| self.io_error(offset, source))?;
        let first = offset / PAGE_SIZE;
        self.source.forget(first..first + pages);
        Counters::add(&self.counters.pages_written, pages);
        Ok(())
    }

    /// Discards `len` bytes at `offset` (a punched hole: the guest freed
    /// that memory and QEMU gave it back), clipped to the RAM's end. Whole
    /// pages become discarded: they read as zeros, are never fetched, give
    /// their slice space and prefetched copies back, and go home as holes.
    /// The bytes of a partial page at either end are zeroed as a write would.
    ///
    /// # Errors
    /// [`MemtapError::Io`] when the slices, or memserv for a partial page, fail.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), MemtapError> {
        let end = offset.saturating_add(len).min(self.size());
        if end <= offset {
            return Ok(());
        }
        self.overlay.discard(offset, end - offset).map_err(|source| self.io_error(offset, source))?;
        self.source.forget(offset / PAGE_SIZE..end.div_ceil(PAGE_SIZE));
        let whole = (end / PAGE_SIZE).saturating_sub(offset.div_ceil(PAGE_SIZE));
        Counters::add(&self.counters.pages_discarded, whole);
        Ok(())
    }

    /// Fetches those of `pages` the server lacks now, so that the guest's
    /// first touch of them wakes no desktop (see [`PageSource::push`]);
    /// returns how many came.
    ///
    /// # Errors
    /// [`MemtapError::Push`] when memserv or the slices fail.
    pub fn push(&self, pages: &[u64]) -> Result<u64, MemtapError> {
        self.source.push(pages).map_err(|source| MemtapError::Push {
            vm: self.name.clone(),
            pages: pages.len(),
            source,
        })
    }

    /// Moves the pages that waited in the prefetch cache for `age` or more
    /// into the fetched slice, giving their memory back; returns how many
    /// (see [`crate::prefetch`]).
    ///
    /// # Errors
    /// [`MemtapError::Age`] when the fetched slice cannot be written.
    pub fn age_prefetched(&self, age: std::time::Duration) -> Result<u64, MemtapError> {
        self.source.age(age).map_err(|source| MemtapError::Age { vm: self.name.clone(), source })
    }

    /// Makes the dirty slice and its bitmap durable.
    ///
    /// # Errors
    /// [`MemtapError::Io`] when syncing fails.
    pub fn flush(&self) -> Result<(), MemtapError> {
        self.overlay.flush().map_err(|source| self.io_error(0, source))
    }

    /// The VM's slices, e.g. to export the dirty set of a checkpoint while
    /// the VM is stopped.
    pub fn slices(&self) -> &SliceStore {
        self.overlay.store()
    }

    /// The VM's counters now.
    pub fn stats(&self) -> RamStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let overlay = self.overlay.stats();
        RamStats {
            vm: self.name.clone(),
            ram_bytes: self.size(),
            read_requests: get(&c.read_requests),
            faults: get(&c.faults),
            remote_fetches: get(&c.remote_fetches),
            pages_fetched: get(&c.pages_fetched),
            bytes_fetched: get(&c.bytes_fetched),
            pages_pushed: get(&c.pages_pushed),
            bytes_pushed: get(&c.bytes_pushed),
            pushed_untouched: self.source.pushed_untouched(),
            prefetch_hits: get(&c.prefetch_hits),
            prefetch_misses: get(&c.prefetch_misses),
            zero_pages_served: overlay.zero_units_served,
            pages_written: get(&c.pages_written),
            pages_discarded: get(&c.pages_discarded),
            dirty_pages: overlay.dirty_units,
            discarded_pages: overlay.discarded_units,
            resident_pages: overlay.fetched_units,
            cached_pages: self.source.cached_pages() as u64,
            fetch_latency: c.fetch_latency.0.snapshot(),
        }
    }

    fn io_error(&self, offset: u64, source: slice_store::StoreError) -> MemtapError {
        MemtapError::Io { vm: self.name.clone(), offset, source }
    }
}

/// Number of pages the byte range touches.
fn pages_touched(offset: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (offset + len - 1) / PAGE_SIZE - offset / PAGE_SIZE + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_touched_counts_partial_pages() {
        assert_eq!(pages_touched(0, 4096), 1);
        assert_eq!(pages_touched(4095, 2), 2);
        assert_eq!(pages_touched(8192, 3 * 4096), 3);
        assert_eq!(pages_touched(10, 0), 0);
    }
}
