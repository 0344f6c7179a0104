//! What a recorded fetch trace says about the working set and its rate,
//! beyond its gaps: how much had been fetched by a given time into the
//! stay, how many distinct pages the same faults would have fetched with
//! another pivot window, and the highest fetch rate over any window of a
//! given length (the figure the server's `max_fetch_mib_per_sec` judges).

use std::path::{Path, PathBuf};

use fetch_trace::{Cause, Device, Trace};

/// Why a recorded trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadTraceError {
    /// `gzip` could not be run.
    #[error("running gzip -dc {} (is gzip installed?)", path.display())]
    Gzip {
        /// The trace.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `gzip` could not decompress the file (missing, or not gzip data).
    #[error("gzip -dc {}: {stderr} (name an existing gzip-compressed fetch trace)", path.display())]
    Gunzip {
        /// The trace.
        path: PathBuf,
        /// What gzip said.
        stderr: String,
    },
    /// The file is not a fetch trace.
    #[error("reading the fetch trace {}", path.display())]
    Parse {
        /// The trace.
        path: PathBuf,
        /// Why.
        #[source]
        source: fetch_trace::TraceError,
    },
}

/// Reads the fetch trace at `path`, through `gzip -dc` when its name ends
/// in `.gz` (as the traces under `bench/traces/` are kept).
///
/// # Errors
/// [`ReadTraceError`], naming the file.
pub fn read_trace(path: &Path) -> Result<Trace, ReadTraceError> {
    let parse = |source| ReadTraceError::Parse { path: path.to_owned(), source };
    if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|source| ReadTraceError::Gzip { path: path.to_owned(), source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(ReadTraceError::Gunzip { path: path.to_owned(), stderr });
        }
        return fetch_trace::parse(&String::from_utf8_lossy(&out.stdout)).map_err(parse);
    }
    fetch_trace::read(path).map_err(parse)
}

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

/// How many distinct pages the trace's memory faults would have fetched had
/// each taken `window` pages around its faulting pages (half before, half
/// after, as memtap's pivot window does), with the same faults. With a
/// larger window some of those faults would not have happened, with a
/// smaller one the guest would have faulted on neighbours it used: so it is
/// the cost of the window on these faults, not a replay of another run.
/// (A push's batches are not faults and are left out.)
pub fn pages_spanned(trace: &Trace, window: u64) -> u64 {
    let mut spans: Vec<(u64, u64)> = trace
        .fetches
        .iter()
        .filter(|f| f.device == Device::Memory && f.cause == Cause::Fault)
        .map(|f| (f.unit.saturating_sub(window / 2), f.unit + f.faulting.max(1) + window / 2))
        .collect();
    spans.sort_unstable();
    let mut spanned = 0;
    let mut reached = 0;
    for (start, end) in spans {
        let start = start.max(reached);
        if end > start {
            spanned += end - start;
            reached = end;
        }
    }
    spanned
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
