//! Where pages the server lacks come from: the prefetch cache, else memserv
//! with a pivot window; and the push of a working set at consolidation
//! ([`PageSource::push`]).

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use fetch_trace::{boottime_ns, Cause, Device, Fetch, TraceWriter};
use slice_store::{SliceStore, SourceError, UnitSource, UnitState};
use wire::RemoteImage;

use crate::prefetch::{pivot_window, PrefetchCache};
use crate::pushed::PushedPages;
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
    /// What pushes brought and the guest has not touched yet.
    pushed: PushedPages,
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
            pushed: PushedPages::new(pages),
        }
    }

    /// The guest read `pages`: pushed ones among them are touched now (see
    /// [`PageSource::pushed_untouched`]; a write or a discard touches them
    /// through [`PageSource::forget`]).
    pub fn touched(&self, pages: Range<u64>) {
        self.pushed.touch(pages);
    }

    /// Pages a push brought that the guest has not touched since: they
    /// are in the fetched slice, not in the guest's memory.
    pub fn pushed_untouched(&self) -> u64 {
        self.pushed.untouched()
    }

    /// Pages waiting in the prefetch cache.
    pub fn cached_pages(&self) -> usize {
        self.lock_cache().len()
    }

    /// Moves the pages that waited in the prefetch cache for `age` or more
    /// into the fetched slice (see [`crate::prefetch`]); returns how many.
    ///
    /// # Errors
    /// [`SourceError`] when the fetched slice cannot be written; the pages
    /// before the failing one are kept, the rest are dropped (a later touch
    /// fetches them again).
    pub fn age(&self, age: std::time::Duration) -> Result<u64, SourceError> {
        let old = self.lock_cache().take_older_than(age, std::time::Instant::now());
        self.keep_fetched(old)
    }

    /// Keeps `pages`, taken out of the prefetch cache untouched (evicted,
    /// or aged), in the fetched slice, so that a later fault does not fetch
    /// them again; returns how many. A page the guest wrote or discarded
    /// meanwhile keeps its dirty or discarded state, which wins over this
    /// copy.
    fn keep_fetched(&self, pages: Vec<(u64, Vec<u8>)>) -> Result<u64, SourceError> {
        let mut kept = 0;
        for (page, data) in pages {
            self.store.store_fetched(page, &data).map_err(SourceError::new)?;
            kept += 1;
        }
        Ok(kept)
    }

    /// Drops the cached copies of `pages`: the guest wrote or discarded
    /// them, so pushed ones among them are touched too.
    pub fn forget(&self, pages: Range<u64>) {
        let mut cache = self.lock_cache();
        for page in pages.clone() {
            cache.forget(page);
        }
        self.pushed.touch(pages);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, PrefetchCache> {
        self.cache.lock().expect("prefetch cache lock poisoned: a thread panicked holding it")
    }

    /// Whether `page` is neither waiting in `cache` nor in the slices
    /// (fetched, dirty or known zero): only such a page is asked for.
    fn absent(&self, cache: &PrefetchCache, page: u64) -> Result<bool, SourceError> {
        Ok(!cache.contains(page) && self.store.state(page).map_err(SourceError::new)? == UnitState::Absent)
    }

    /// The pages to ask memserv for: the faulting ones and their windows,
    /// less what is local or cached already.
    fn wanted(&self, faulting: &[u64]) -> Result<BTreeSet<u64>, SourceError> {
        let cache = self.lock_cache();
        let mut want: BTreeSet<u64> = faulting.iter().copied().collect();
        for &page in faulting {
            for near in pivot_window(page, self.window, self.pages) {
                if !want.contains(&near) && self.absent(&cache, near)? {
                    want.insert(near);
                }
            }
        }
        Ok(want)
    }
}

impl PageSource {
    /// Fetches those of `pages` still absent (not local, not cached) into
    /// the fetched slice now, [`PUSH_BATCH_PAGES`] at a time, each batch a
    /// `prefetch` line of the trace; returns how many pages came. This is
    /// the push of the working set: the pages earlier stays faulted on,
    /// fetched at consolidation while the desktop is awake anyway, so the
    /// guest's first touch of one needs no wake. Pages past the end of the
    /// RAM are ignored.
    ///
    /// The guest runs meanwhile, and events can cross: a page it writes
    /// while its batch is on the wire becomes dirty, and a dirty page is
    /// read before a fetched one, so the pushed copy is never seen; a page
    /// it faults on meanwhile is fetched by the fault too, and both store
    /// the desktop's same bytes.
    ///
    /// # Errors
    ///
    /// [`SourceError`]: memserv or the slices failed; the batches before
    /// are kept.
    pub fn push(&self, pages: &[u64]) -> Result<u64, SourceError> {
        let mut want: Vec<u64> = pages.iter().copied().filter(|&page| page < self.pages).collect();
        want.sort_unstable();
        want.dedup();
        let mut pushed = 0;
        for batch in want.chunks(PUSH_BATCH_PAGES) {
            pushed += self.push_batch(batch)?;
        }
        Ok(pushed)
    }

    /// Fetches and stores those of `batch` still absent; returns how many.
    /// They are marked pushed as they are found absent, under the cache
    /// lock a write's `forget` also takes, and before a fault of the
    /// guest's own can store them: any later touch, a read, a write or a
    /// discard, clears the mark. If the batch fails, none of it stays
    /// marked (the claim on capacity errs on the side of more).
    fn push_batch(&self, batch: &[u64]) -> Result<u64, SourceError> {
        let asked = {
            let cache = self.lock_cache();
            let mut asked = Vec::with_capacity(batch.len());
            for &page in batch {
                if self.absent(&cache, page)? {
                    asked.push(page);
                }
            }
            asked.iter().for_each(|&page| self.pushed.mark(page));
            asked
        };
        let Some(&first) = asked.first() else { return Ok(0) };
        let stored = self.fetch_from_remote(&asked, first, Cause::Prefetch, 0).and_then(|fetched| {
            for (page, data) in &fetched {
                self.store.store_fetched(*page, data).map_err(SourceError::new)?;
            }
            Ok(fetched.len() as u64)
        });
        if stored.is_err() {
            asked.iter().for_each(|&page| self.pushed.touch(page..page + 1));
        }
        stored
    }

    /// Asks memserv for `want`, traced as a request for `unit` of `cause`
    /// with `faulting` pages a guest access needed, and counted.
    fn fetch_from_remote(
        &self,
        want: &[u64],
        unit: u64,
        cause: Cause,
        faulting: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        // Taken before read_units, whose every wire request asks the wake
        // hook first: the wait for a sleeping desktop is part of the fetch.
        let asked_ns = boottime_ns();
        let asked = std::time::Instant::now();
        let fetched = self.remote.read_units(want, self.page_size);
        if let Some(trace) = &self.trace {
            trace.record(&Fetch {
                device: Device::Memory,
                unit,
                cause,
                faulting,
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
        if cause == Cause::Prefetch {
            Counters::add(&self.counters.pages_pushed, fetched.units.len() as u64);
            Counters::add(&self.counters.bytes_pushed, fetched.data_bytes);
        }
        Ok(fetched.units)
    }
}

/// Pages a push asks memserv for at once (4 MiB): a bound on the memory a
/// batch holds, and a trace line per batch.
pub const PUSH_BATCH_PAGES: usize = 1024;

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
        let first = missing.iter().copied().min().unwrap_or_default();
        let fetched = self.fetch_from_remote(&want, first, Cause::Fault, missing.len() as u64)?;
        let missing: BTreeSet<u64> = missing.into_iter().collect();
        let mut evicted = Vec::new();
        {
            let mut cache = self.lock_cache();
            for (page, data) in fetched {
                if missing.contains(&page) {
                    found.push((page, data));
                } else {
                    evicted.extend(cache.insert(page, data));
                }
            }
        }
        self.keep_fetched(evicted)?;
        Ok(found)
    }
}
