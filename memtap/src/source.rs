//! Where pages the server lacks come from: the prefetch cache, else memserv
//! with a pivot window.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use jettison_slice_store::{SliceStore, SourceError, UnitSource, UnitState};
use jettison_wire::protocol::MAX_REQUEST_BYTES;
use jettison_wire::{ByteRange, Chunk, RemoteImage};

use crate::prefetch::{pivot_window, PrefetchCache};
use crate::stats::Counters;

/// A VM's remote memory: answers the overlay's requests for absent pages.
#[derive(Debug)]
pub struct PageSource {
    remote: RemoteImage,
    store: Arc<SliceStore>,
    cache: Mutex<PrefetchCache>,
    window: u64,
    page_size: u64,
    pages: u64,
    counters: Arc<Counters>,
}

impl PageSource {
    /// A source reading from `remote`, fetching `window` pages around each
    /// fault into a cache of `cache_bytes`; `store` tells which pages are
    /// already local so the window skips them.
    pub fn new(
        remote: RemoteImage,
        store: Arc<SliceStore>,
        window: u64,
        cache_bytes: usize,
        counters: Arc<Counters>,
    ) -> Self {
        let page_size = u64::from(remote.unit());
        let pages = remote.size().div_ceil(page_size);
        PageSource {
            cache: Mutex::new(PrefetchCache::new(cache_bytes, page_size as usize)),
            remote,
            store,
            window,
            page_size,
            pages,
            counters,
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

    /// Reads `pages` from memserv as few ranges as possible, each within a
    /// request's byte limit.
    fn fetch_remote(&self, pages: &BTreeSet<u64>) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        let max_pages = MAX_REQUEST_BYTES as u64 / self.page_size;
        let mut out = Vec::with_capacity(pages.len());
        let mut batch: Vec<ByteRange> = Vec::new();
        let mut batch_pages = 0;
        for (first, count) in runs(pages, max_pages) {
            if batch_pages + count > max_pages {
                self.read_batch(&batch, &mut out)?;
                batch.clear();
                batch_pages = 0;
            }
            let offset = first * self.page_size;
            let len = (count * self.page_size).min(self.remote.size() - offset);
            batch.push(ByteRange::new(offset, len as u32));
            batch_pages += count;
        }
        if !batch.is_empty() {
            self.read_batch(&batch, &mut out)?;
        }
        Ok(out)
    }

    fn read_batch(&self, ranges: &[ByteRange], out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SourceError> {
        let chunks = self.remote.read(ranges).map_err(SourceError::new)?;
        Counters::add(&self.counters.remote_fetches, 1);
        for chunk in chunks {
            let first = chunk.offset() / self.page_size;
            let pages = chunk.len().div_ceil(self.page_size);
            Counters::add(&self.counters.pages_fetched, pages);
            match chunk {
                Chunk::Bytes { data, .. } => {
                    Counters::add(&self.counters.bytes_fetched, data.len() as u64);
                    for (i, page) in data.chunks(self.page_size as usize).enumerate() {
                        out.push((first + i as u64, page.to_vec()));
                    }
                }
                Chunk::Zero { len, .. } => {
                    for i in 0..pages {
                        let page_len = (u64::from(len) - i * self.page_size).min(self.page_size);
                        out.push((first + i, vec![0; page_len as usize]));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Splits sorted pages into runs of consecutive pages, none longer than `max`.
fn runs(pages: &BTreeSet<u64>, max: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &page in pages {
        match out.last_mut() {
            Some((first, count)) if *first + *count == page && *count < max => *count += 1,
            _ => out.push((page, 1)),
        }
    }
    out
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
        let want = self.wanted(&missing)?;
        let fetched = self.fetch_remote(&want)?;
        let missing: BTreeSet<u64> = missing.into_iter().collect();
        let mut cache = self.lock_cache();
        for (page, data) in fetched {
            if missing.contains(&page) {
                found.push((page, data));
            } else {
                cache.insert(page, data);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_gaps_and_at_the_limit() {
        let pages: BTreeSet<u64> = [1, 2, 3, 7, 8, 10].into_iter().collect();
        assert_eq!(runs(&pages, 100), vec![(1, 3), (7, 2), (10, 1)]);
        assert_eq!(runs(&pages, 2), vec![(1, 2), (3, 1), (7, 2), (10, 1)]);
        assert!(runs(&BTreeSet::new(), 4).is_empty());
    }
}
