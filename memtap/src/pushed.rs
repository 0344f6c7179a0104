//! The pages a push brought that the guest has not touched since. They
//! wait in the fetched slice on the server's disk, not in QEMU's memory, so
//! the server does not count them as memory the VM holds.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per page of a VM's RAM: set when a push finds the page absent
/// and asks for it, cleared when the guest first reads, writes or discards
/// it (or the push fails).
#[derive(Debug)]
pub(crate) struct PushedPages {
    bits: Vec<AtomicU64>,
    untouched: AtomicU64,
}

impl PushedPages {
    /// None pushed yet, for a RAM of `pages` pages.
    pub(crate) fn new(pages: u64) -> PushedPages {
        PushedPages { bits: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(), untouched: AtomicU64::new(0) }
    }

    /// `page` is being pushed (a page past the end is ignored).
    pub(crate) fn mark(&self, page: u64) {
        let Some(word) = self.bits.get((page / 64) as usize) else { return };
        let bit = 1 << (page % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.untouched.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The guest touched `pages`: those pushed and untouched until now are
    /// no longer untouched.
    pub(crate) fn touch(&self, pages: Range<u64>) {
        for page in pages {
            let Some(word) = self.bits.get((page / 64) as usize) else { return };
            let bit = 1 << (page % 64);
            // Most pages were never pushed: a load spares the write.
            if word.load(Ordering::Relaxed) & bit != 0 && word.fetch_and(!bit, Ordering::Relaxed) & bit != 0 {
                self.untouched.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Pages pushed and not touched since.
    pub(crate) fn untouched(&self) -> u64 {
        self.untouched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_page_counts_until_the_guest_touches_it_once() {
        let pushed = PushedPages::new(200);
        for page in [3, 64, 130, 130, 199] {
            pushed.mark(page);
        }
        pushed.mark(500); // past the end: ignored
        assert_eq!(pushed.untouched(), 4, "a page pushed twice counts once");
        pushed.touch(0..65);
        assert_eq!(pushed.untouched(), 2, "pages 3 and 64 were touched");
        pushed.touch(60..70);
        assert_eq!(pushed.untouched(), 2, "a second touch changes nothing");
        pushed.touch(190..400);
        assert_eq!(pushed.untouched(), 1, "only page 130 is left");
    }
}
