//! The per-VM prefetch cache: pages fetched with a fault's pivot window but
//! not yet touched by the guest.
//!
//! The paper's "on-demand prefetch": a remote fault brings its neighbours
//! along, because faults cluster (more than 99% arrive within a second of
//! the previous one, and neighbouring pages are often touched together).
//! Neighbours wait here, bounded in size, and move into the fetched slice
//! when the guest touches them. The least recently used goes first when
//! the cache is full, into the fetched slice too ([`PrefetchCache::insert`]
//! hands it back): a page once on the server is never fetched again. A
//! real desktop guest under Xfce and Firefox, with a 50 MiB cache that
//! dropped them instead, fetched 306,888 pages in 5.7 minutes of which at
//! least 163,000 had been fetched before (`bench/RESULTS.md`).

use std::num::NonZeroUsize;

use lru::LruCache;

/// Default size of a VM's prefetch cache (the paper's 50 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 50 * 1024 * 1024;
/// Default pivot window: pages fetched around a faulting page (the paper's 20).
pub const DEFAULT_PIVOT_WINDOW: u64 = 20;

/// Pages fetched ahead of the guest, bounded, least recently used evicted.
#[derive(Debug)]
pub struct PrefetchCache {
    pages: LruCache<u64, Vec<u8>>,
}

impl PrefetchCache {
    /// A cache holding at most `bytes` of pages of `page_size` (at least one page).
    pub fn new(bytes: usize, page_size: usize) -> Self {
        let capacity = NonZeroUsize::new((bytes / page_size).max(1)).expect("max(1) is never zero");
        PrefetchCache { pages: LruCache::new(capacity) }
    }

    /// Takes a page out of the cache (the guest touched it).
    pub fn take(&mut self, page: u64) -> Option<Vec<u8>> {
        self.pages.pop(&page)
    }

    /// Whether the page is cached, without changing its age.
    pub fn contains(&self, page: u64) -> bool {
        self.pages.contains(&page)
    }

    /// Adds a page; when full, evicts the least recently used one and
    /// returns it, for the caller to keep in the fetched slice.
    pub fn insert(&mut self, page: u64, data: Vec<u8>) -> Option<(u64, Vec<u8>)> {
        // `push` also hands back the old data of the same page, which is
        // not an eviction.
        self.pages.push(page, data).filter(|(evicted, _)| *evicted != page)
    }

    /// Forgets a page (the guest wrote or discarded it, so the cached copy is stale).
    pub fn forget(&mut self, page: u64) {
        self.pages.pop(&page);
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page is held.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// The pages of a pivot window of `window` pages centred on `page`, inside
/// `0..pages`, without `page` itself.
pub fn pivot_window(page: u64, window: u64, pages: u64) -> impl Iterator<Item = u64> {
    let before = window / 2;
    let start = page.saturating_sub(before);
    let end = (start + window + 1).min(pages);
    let start = end.saturating_sub(window + 1).min(start);
    (start..end).filter(move |&p| p != page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_evicts_least_recently_used() {
        let mut c = PrefetchCache::new(2 * 4096, 4096);
        assert_eq!(c.insert(1, vec![1]), None);
        assert_eq!(c.insert(2, vec![2]), None);
        assert_eq!(c.insert(2, vec![22]), None, "the same page again evicts nothing");
        assert_eq!(c.insert(3, vec![3]), Some((1, vec![1])), "the least recently used is handed back");
        assert!(!c.contains(1));
        assert_eq!(c.take(2), Some(vec![22]));
        assert_eq!(c.take(2), None);
        c.forget(3);
        assert!(c.is_empty());
    }

    #[test]
    fn window_is_centred_and_clipped() {
        let w: Vec<u64> = pivot_window(100, 20, 1000).collect();
        assert_eq!(w.len(), 20);
        assert_eq!((w[0], w[19]), (90, 110));
        assert!(!w.contains(&100));
        let w: Vec<u64> = pivot_window(0, 20, 1000).collect();
        assert_eq!(w, (1..=20).collect::<Vec<_>>());
        let w: Vec<u64> = pivot_window(999, 20, 1000).collect();
        assert_eq!(w, (979..999).collect::<Vec<_>>());
        let w: Vec<u64> = pivot_window(2, 20, 5).collect();
        assert_eq!(w, vec![0, 1, 3, 4]);
        assert_eq!(pivot_window(7, 0, 100).count(), 0);
    }
}
