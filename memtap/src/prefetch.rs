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
//!
//! A page left untouched in the cache for [`PREFETCH_MAX_AGE`] moves into
//! the fetched slice too ([`PrefetchCache::take_older_than`]): faults come
//! in bursts (more than 99% within a second of the previous one), so a
//! neighbour not touched within its burst is unlikely to be touched soon,
//! and the cache's memory is the server's, per VM, for the whole stay. An
//! idle VM's cache then empties between bursts; a touch of an aged page
//! costs a read of the local slice, never a fetch.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Default size of a VM's prefetch cache (the paper's 50 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 50 * 1024 * 1024;
/// Default pivot window: pages fetched around a faulting page (the paper's 20).
pub const DEFAULT_PIVOT_WINDOW: u64 = 20;
/// How long a prefetched page waits in the cache for the guest before it
/// moves to the fetched slice.
pub const PREFETCH_MAX_AGE: Duration = Duration::from_secs(30);

/// Pages fetched ahead of the guest, bounded, least recently used evicted,
/// each with when it came.
#[derive(Debug)]
pub struct PrefetchCache {
    pages: LruCache<u64, (Instant, Vec<u8>)>,
}

impl PrefetchCache {
    /// A cache holding at most `bytes` of pages of `page_size` (at least one page).
    pub fn new(bytes: usize, page_size: usize) -> Self {
        let capacity = NonZeroUsize::new((bytes / page_size).max(1)).expect("max(1) is never zero");
        PrefetchCache { pages: LruCache::new(capacity) }
    }

    /// Takes a page out of the cache (the guest touched it).
    pub fn take(&mut self, page: u64) -> Option<Vec<u8>> {
        self.pages.pop(&page).map(|(_, data)| data)
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
        self.pages
            .push(page, (Instant::now(), data))
            .filter(|(evicted, _)| *evicted != page)
            .map(|(evicted, (_, data))| (evicted, data))
    }

    /// Takes out every page that came at least `age` before `now`, oldest
    /// first, for the caller to keep in the fetched slice. A page is never
    /// promoted while cached (a touch takes it out), so the least recently
    /// used is the oldest, and the walk stops at the first younger one.
    pub fn take_older_than(&mut self, age: Duration, now: Instant) -> Vec<(u64, Vec<u8>)> {
        let mut old = Vec::new();
        while self.pages.peek_lru().is_some_and(|(_, (came, _))| now.saturating_duration_since(*came) >= age) {
            old.extend(self.pages.pop_lru().map(|(page, (_, data))| (page, data)));
        }
        old
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
    fn pages_older_than_the_age_come_out_oldest_first() {
        let mut c = PrefetchCache::new(8 * 4096, 4096);
        c.insert(5, vec![5]);
        c.insert(6, vec![6]);
        let between = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        c.insert(7, vec![7]);
        let at = between + Duration::from_secs(30);
        assert_eq!(c.take_older_than(Duration::from_secs(31), at), vec![], "none that old yet");
        assert_eq!(c.take_older_than(Duration::from_secs(30), at), vec![(5, vec![5]), (6, vec![6])]);
        assert_eq!(c.len(), 1, "the younger page stays");
        assert_eq!(c.take_older_than(Duration::ZERO, Instant::now()), vec![(7, vec![7])]);
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
