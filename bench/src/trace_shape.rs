//! What a recorded fetch trace says about the working set and its rate,
//! beyond its gaps: how much had been fetched by a given time into the
//! stay, how many distinct pages the same faults would have fetched with
//! another pivot window, and the highest fetch rate over any window of a
//! given length (the figure the server's `max_fetch_mib_per_sec` judges).

use fetch_trace::{Device, Trace};

/// Bytes of a memory unit (a page) in a fetch trace.
pub const PAGE_BYTES: u64 = 4096;

/// What a stay had fetched by some time into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchedBy {
    /// Memory pages fetched (faults' windows and pushes).
    pub pages: u64,
    /// Disk blocks fetched.
    pub blocks: u64,
    /// Requests sent to the desktop.
    pub requests: u64,
}

/// What `trace` had fetched by `secs` seconds into the stay (requests asked
/// before then).
pub fn fetched_by(trace: &Trace, secs: f64) -> FetchedBy {
    let until = trace.started_boottime_ns.saturating_add((secs * 1e9) as u64);
    let mut by = FetchedBy::default();
    for fetch in trace.fetches.iter().filter(|f| f.asked_ns < until) {
        by.requests += 1;
        match fetch.device {
            Device::Memory => by.pages += fetch.units,
            Device::Disk => by.blocks += fetch.units,
        }
    }
    by
}

/// How many distinct pages [`Trace::fault_spans`] holds: what the same faults would
/// have fetched with another window. With a larger window some of those
/// faults would not have happened, with a smaller one the guest would have
/// faulted on neighbours it used: so it is the cost of the window on these
/// faults, not a replay of another run.
pub fn pages_spanned(trace: &Trace, window: u64) -> u64 {
    count(&trace.fault_spans(window))
}

/// Pages in sorted, disjoint runs.
pub fn count(runs: &[(u64, u64)]) -> u64 {
    runs.iter().map(|(start, end)| end - start).sum()
}

/// Pages in both of two sorted, disjoint lists of runs.
pub fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        both += end.saturating_sub(start);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    both
}

/// The highest rate, in bytes per second, at which the trace fetched over
/// any `window_secs` window that starts at least one window after the
/// stay's start (the server daemon's rule ignores the first window, when
/// a VM pulls its working set), memory and disk together, with disk blocks
/// of `block_bytes`; with the second into the stay at which that window
/// starts. None when the stay is shorter than two windows.
pub fn highest_rate(trace: &Trace, window_secs: f64, block_bytes: u64) -> Option<(f64, f64)> {
    let start = trace.started_boottime_ns;
    let at = |ns: u64| ns.saturating_sub(start) as f64 / 1e9;
    let end = trace
        .totals
        .map(|t| at(t.closed_boottime_ns))
        .unwrap_or_else(|| trace.fetches.last().map_or(0.0, |f| at(f.asked_ns)));
    if end < 2.0 * window_secs {
        return None;
    }
    let bytes = |f: &fetch_trace::Fetch| match f.device {
        Device::Memory => f.units * PAGE_BYTES,
        Device::Disk => f.units * block_bytes,
    };
    let fetches: Vec<(f64, u64)> =
        trace.fetches.iter().map(|f| (at(f.asked_ns), bytes(f))).filter(|&(t, _)| t >= window_secs).collect();
    // Two pointers: the window that starts at each fetch holds the most a
    // window starting between two fetches can (it only loses fetches by
    // starting later, until the next one).
    let mut best = (0.0, window_secs);
    let mut sum = 0;
    let mut last = 0;
    for (first, &(from, _)) in fetches.iter().enumerate() {
        while last < fetches.len() && fetches[last].0 < from + window_secs {
            sum += fetches[last].1;
            last += 1;
        }
        let rate = sum as f64 / window_secs;
        if rate > best.0 {
            best = (rate, from);
        }
        sum -= fetches[first].1;
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(lines: &[&str], closed_secs: u64) -> Trace {
        let mut text = String::from(
            "jettison-fetch-trace 1 started_unix=1 started_boottime_ns=1000000000\n\
             device,unit,cause,faulting,units,requests,asked_ns,answered_ns\n",
        );
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!(
            "# totals memory_requests=0 memory_units=0 disk_requests=0 disk_units=0 dropped=0 closed_boottime_ns={}\n",
            1_000_000_000 + closed_secs * 1_000_000_000
        ));
        fetch_trace::parse(&text).unwrap()
    }

    #[test]
    fn fetched_by_counts_what_was_asked_before_then() {
        let t = trace(
            &[
                "memory,100,fault,1,21,1,1500000000,1600000000",
                "disk,7,fault,1,2,1,3000000000,3100000000",
                "memory,500,fault,1,21,1,12000000000,12100000000",
            ],
            20,
        );
        assert_eq!(fetched_by(&t, 1.0), FetchedBy { pages: 21, blocks: 0, requests: 1 });
        assert_eq!(fetched_by(&t, 10.0), FetchedBy { pages: 21, blocks: 2, requests: 2 });
        assert_eq!(fetched_by(&t, 60.0), FetchedBy { pages: 42, blocks: 2, requests: 3 });
    }

    #[test]
    fn overlapping_windows_are_counted_once() {
        // Pivots 100 and 105 with a 20-page window: [90, 111) and [95, 116).
        let t = trace(
            &["memory,100,fault,1,21,1,1500000000,1600000000", "memory,105,fault,1,5,1,1700000000,1800000000"],
            5,
        );
        assert_eq!(pages_spanned(&t, 20), 26);
        assert_eq!(pages_spanned(&t, 0), 2);
    }

    #[test]
    fn overlap_counts_the_pages_in_both() {
        let a = [(0, 10), (20, 30), (40, 50)];
        let b = [(5, 25), (45, 100)];
        assert_eq!(overlap(&a, &b), 5 + 5 + 5);
        assert_eq!(overlap(&b, &a), 15);
        assert_eq!(overlap(&a, &[]), 0);
        assert_eq!(count(&a), 30);
    }

    #[test]
    fn the_highest_rate_skips_the_first_window_and_finds_the_burst() {
        // 10 s windows; a burst of 100 pages in the first window does not
        // count, one of 50 pages at 25-27 s into the stay does, more than the 10
        // at 14 s.
        let t = trace(
            &[
                "memory,0,fault,1,100,1,2000000000,2100000000",
                "memory,1000,fault,1,10,1,15000000000,15100000000",
                "memory,2000,fault,1,25,1,26000000000,26100000000",
                "memory,3000,fault,1,25,1,28000000000,28100000000",
            ],
            60,
        );
        let (rate, from) = highest_rate(&t, 10.0, 4096).unwrap();
        assert_eq!((rate, from), ((50 * PAGE_BYTES) as f64 / 10.0, 25.0));
        assert!(highest_rate(&t, 40.0, 4096).is_none(), "a 60 s stay has no second 40 s window");
    }
}
