//! Where pages the server lacks come from: the prefetch cache, else memserv
//! with a pivot window.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use fetch_trace::{boottime_ns, Cause, Device, Fetch, TraceWriter};
use slice_store::{SliceStore, SourceError, UnitSource, UnitState};
use wire::RemoteImage;

use crate::prefetch::{pivot_window, PrefetchCache};
use crate::stats::Counters;

/// A VM's remote memory: answers the overlay's requests for absent pages.
#[derive(Debug)]
pub struct PageSource {
    remote: RemoteImage,
    store: Arc<SliceStore>,
    cache: Mutex<PrefetchCache>,
    window: u64,
    page_size: u32,
    pages: u64,
    counters: Arc<Counters>,
    trace: Option<Arc<TraceWriter>>,
}

impl PageSource {
    /// A source reading from `remote`, fetching `window` pages around each
    /// fault into a cache of `cache_bytes`; `store` tells which pages are
    /// already local so the window skips them; every request to memserv
    /// is recorded in `trace`, if given.
    pub fn new(
        remote: RemoteImage,
        store: Arc<SliceStore>,
        window: u64,
        cache_bytes: usize,
        counters: Arc<Counters>,
        trace: Option<Arc<TraceWriter>>,
    ) -> Self {
        let page_size = remote.unit();
        let pages = remote.size().div_ceil(u64::from(page_size));
        PageSource {
            cache: Mutex::new(PrefetchCache::new(cache_bytes, page_size as usize)),
            remote,
            store,
            window,
            page_size,
            pages,
            counters,
            trace,
        }
    }

    /// Pages waiting in the prefetch cache.
    pub fn cached_pages(&self) -> usize {
        self.lock_cache().len()
    }

    /// Drops a cached copy of `page`: the guest wrote it.
    pub fn forget(&self, page: u64) {
        self.lock_cache().forget(page);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, PrefetchCache> {
        self.cache.lock().expect("prefetch cache lock poisoned: a thread panicked holding it")
    }

    /// The pages to ask memserv for: the faulting ones and their windows,
    /// less what is local or cached already.
    fn wanted(&self, faulting: &[u64]) -> Result<BTreeSet<u64>, SourceError> {
        let cache = self.lock_cache();
        let mut want: BTreeSet<u64> = faulting.iter().copied().collect();
        for &page in faulting {
            for near in pivot_window(page, self.window, self.pages) {
                if want.contains(&near) || cache.contains(near) {
                    continue;
                }
                if self.store.state(near).map_err(SourceError::new)? == UnitState::Absent {
                    want.insert(near);
                }
            }
        }
        Ok(want)
    }
}

impl UnitSource for PageSource {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        let mut found = Vec::with_capacity(units.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.lock_cache();
            for &page in units {
                match cache.take(page) {
                    Some(data) => found.push((page, data)),
                    None => missing.push(page),
                }
            }
        }
        Counters::add(&self.counters.prefetch_hits, found.len() as u64);
        if missing.is_empty() {
            return Ok(found);
        }
        Counters::add(&self.counters.prefetch_misses, missing.len() as u64);
        let want: Vec<u64> = self.wanted(&missing)?.into_iter().collect();
        // Taken before read_units, whose every wire request asks the wake
        // hook first: the wait for a sleeping desktop is part of the fetch.
        let asked_ns = boottime_ns();
        let asked = std::time::Instant::now();
        let fetched = self.remote.read_units(&want, self.page_size);
        if let Some(trace) = &self.trace {
            trace.record(&Fetch {
                device: Device::Memory,
                unit: missing.iter().copied().min().unwrap_or_default(),
                cause: Cause::Fault,
                faulting: missing.len() as u64,
                units: fetched.as_ref().map_or(want.len(), |f| f.units.len()) as u64,
                requests: fetched.as_ref().map_or(0, |f| f.requests),
                asked_ns,
                answered_ns: fetched.is_ok().then(boottime_ns),
            });
        }
        let fetched = fetched.map_err(SourceError::new)?;
        self.counters.fetch_latency.0.observe(asked.elapsed());
        Counters::add(&self.counters.remote_fetches, fetched.requests);
        Counters::add(&self.counters.pages_fetched, fetched.units.len() as u64);
        Counters::add(&self.counters.bytes_fetched, fetched.data_bytes);
        let missing: BTreeSet<u64> = missing.into_iter().collect();
        let mut cache = self.lock_cache();
        for (page, data) in fetched.units {
            if missing.contains(&page) {
                found.push((page, data));
            } else {
                cache.insert(page, data);
            }
        }
        Ok(found)
    }
}
