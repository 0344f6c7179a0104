//! Reading a trace back.

use std::path::{Path, PathBuf};

use crate::format::{Fetch, Totals, COLUMNS, FORMAT_VERSION, MAGIC, TOTALS};

/// A trace as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// When it was started, in seconds since the Unix epoch.
    pub started_unix: u64,
    /// When it was started, on `CLOCK_BOOTTIME` (ns).
    pub started_boottime_ns: u64,
    /// The requests, sorted by `asked_ns` (the file holds them in the order
    /// they were answered).
    pub fetches: Vec<Fetch>,
    /// The totals line, if the trace was closed.
    pub totals: Option<Totals>,
    /// What the reader passed over (a torn last line), for the user.
    pub notes: Vec<String>,
}

impl Trace {
    /// The answered requests of `device`.
    pub fn answered(&self, device: crate::Device) -> impl Iterator<Item = &Fetch> {
        self.fetches.iter().filter(move |f| f.device == device && f.answered())
    }

    /// The memory pages this stay's guest faulted on and the desktop
    /// answered: each answered memory fault's first faulting page (the
    /// line's `unit`). The pages a fault's pivot window brought, and a
    /// request's other faulting pages, are not in the trace, so this is
    /// the least the stay needed: what a later stay can be given before
    /// the desktop sleeps.
    pub fn faulted_pages(&self) -> std::collections::BTreeSet<u64> {
        self.answered(crate::Device::Memory).filter(|f| f.cause == crate::Cause::Fault).map(|f| f.unit).collect()
    }

    /// The pages this stay's answered memory faults brought had each taken
    /// `window` pages around its faulting pages (half before, half after,
    /// as memtap's pivot window does), as sorted, disjoint `[start, end)`
    /// runs: with memtap's own window, the pages the stay fetched (those
    /// already on the server or zero included). A push's batches are not
    /// faults and are left out, so a push never feeds the next one.
    pub fn fault_spans(&self, window: u64) -> Vec<(u64, u64)> {
        merge_runs(
            self.answered(crate::Device::Memory)
                .filter(|f| f.cause == crate::Cause::Fault)
                .map(|f| {
                    (
                        f.unit.saturating_sub(window / 2),
                        f.unit.saturating_add(f.faulting.max(1)).saturating_add(window / 2),
                    )
                })
                .collect(),
        )
    }
}

/// `[start, end)` runs of pages, in any order and overlapping, as sorted,
/// disjoint runs: e.g. the union of two stays' [`Trace::fault_spans`].
pub fn merge_runs(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in runs {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The first line is not a trace header.
    #[error("not a fetch trace (its first line is not \"{MAGIC} <version> ...\")")]
    NotATrace,
    /// A version this reader does not know.
    #[error("fetch trace version {0}; this reader knows version {FORMAT_VERSION}")]
    Version(String),
    /// A line that cannot be read (other than a torn last line).
    #[error("line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Reads the trace at `path`.
///
/// # Errors
/// [`TraceError::Read`], or what [`parse`] says (which does not name the file).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let text = std::fs::read(path).map_err(|source| TraceError::Read { path: path.to_owned(), source })?;
    parse(&String::from_utf8_lossy(&text))
}

/// Reads a trace from its text. A last line without its newline (a crash
/// while it was written) is left out, with a note in [`Trace::notes`].
///
/// # Errors
/// [`TraceError::NotATrace`], [`TraceError::Version`], [`TraceError::Line`].
pub fn parse(text: &str) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let torn = &text[complete.len()..];
    if !torn.is_empty() {
        trace.notes.push(format!("the last line ({} bytes, {torn:?}) was torn, ignored", torn.len()));
    }
    let mut lines = complete.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, first) = lines.next().ok_or(TraceError::NotATrace)?;
    let mut words = first.split_whitespace();
    if words.next() != Some(MAGIC) {
        return Err(TraceError::NotATrace);
    }
    match words.next() {
        Some(v) if v == FORMAT_VERSION.to_string() => {}
        other => return Err(TraceError::Version(other.unwrap_or("missing").to_owned())),
    }
    for word in words {
        let bad = |why: String| TraceError::Line { line: 1, why };
        let (key, value) = word.split_once('=').ok_or_else(|| bad(format!("{word:?} is not key=value")))?;
        let value = || value.parse::<u64>().map_err(|e| bad(format!("{key}: {e}")));
        match key {
            "started_unix" => trace.started_unix = value()?,
            "started_boottime_ns" => trace.started_boottime_ns = value()?,
            _ => {}
        }
    }
    match lines.next() {
        Some((_, COLUMNS)) => {}
        Some((line, other)) => {
            return Err(TraceError::Line { line, why: format!("columns {other:?}, not {COLUMNS:?}") })
        }
        None => return Ok(trace),
    }
    for (line, text) in lines {
        if let Some(rest) = text.strip_prefix(TOTALS) {
            trace.totals = Some(Totals::parse_line(rest).map_err(|why| TraceError::Line { line, why })?);
        } else if text.starts_with('#') || text.is_empty() {
            continue;
        } else {
            trace.fetches.push(Fetch::parse_line(text).map_err(|why| TraceError::Line { line, why })?);
        }
    }
    trace.fetches.sort_by_key(|f| f.asked_ns);
    Ok(trace)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Cause, Device, TraceWriter};

    #[test]
    fn fault_spans_are_the_answered_faults_windows_merged() {
        // Pivots 100 and 105 with a 20-page window: [90, 111) and [95, 116);
        // the failed fault, the disk block and the push are left out.
        let fault = |unit, answered| Fetch { unit, ..fetch(Device::Memory, 0, 1, answered) };
        let trace = Trace {
            fetches: vec![
                fault(100, Some(2)),
                fault(105, Some(2)),
                fault(5000, None),
                fetch(Device::Disk, 300, 1, Some(2)),
                Fetch { cause: Cause::Prefetch, ..fault(7000, Some(2)) },
                fault(3, Some(2)),
            ],
            ..Trace::default()
        };
        assert_eq!(trace.fault_spans(20), vec![(0, 14), (90, 116)]);
        assert_eq!(trace.fault_spans(0), vec![(3, 4), (100, 101), (105, 106)]);
    }

    #[test]
    fn runs_merge_into_sorted_disjoint_ones() {
        assert_eq!(merge_runs(vec![(20, 30), (0, 10), (5, 25), (40, 50), (45, 100)]), vec![(0, 30), (40, 100)]);
        assert_eq!(merge_runs(vec![(0, 10), (10, 12)]), vec![(0, 12)], "touching runs join");
        assert!(merge_runs(Vec::new()).is_empty());
    }

    fn fetch(device: Device, unit: u64, asked_ns: u64, answered_ns: Option<u64>) -> Fetch {
        Fetch { device, unit, cause: Cause::Fault, faulting: 1, units: 21, requests: 1, asked_ns, answered_ns }
    }

    #[test]
    fn what_is_written_reads_back_sorted_with_its_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        let writer = TraceWriter::open(&path).unwrap();
        let written = [
            fetch(Device::Memory, 7, 2_000, Some(3_000)),
            fetch(Device::Disk, 9, 1_000, Some(5_000)),
            Fetch { cause: Cause::Prefetch, faulting: 0, ..fetch(Device::Memory, 1 << 40, 4_000, None) },
        ];
        for f in &written {
            writer.record(f);
        }
        let totals =
            Totals { memory_requests: 1, memory_units: 21, disk_requests: 1, disk_units: 21, ..Totals::default() };
        writer.close(totals).unwrap();
        writer.record(&written[0]);
        let trace = read(&path).unwrap();
        assert_eq!(trace.fetches, vec![written[1], written[0], written[2]]);
        let read_totals = trace.totals.unwrap();
        assert_eq!(read_totals, Totals { closed_boottime_ns: read_totals.closed_boottime_ns, ..totals });
        assert!(read_totals.closed_boottime_ns >= trace.started_boottime_ns);
        assert!(trace.notes.is_empty());
        // The prefetch and the disk block are no faulted pages.
        assert_eq!(trace.faulted_pages().into_iter().collect::<Vec<_>>(), [7]);
        assert!(trace.started_unix > 1_600_000_000 && trace.started_boottime_ns > 0, "{trace:?}");
        assert_eq!(trace.answered(Device::Memory).count(), 1);
    }

    #[test]
    fn a_reopened_trace_goes_on_under_its_first_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        TraceWriter::open(&path).unwrap().record(&fetch(Device::Memory, 1, 10, Some(20)));
        TraceWriter::open(&path).unwrap().record(&fetch(Device::Memory, 2, 30, Some(40)));
        let trace = read(&path).unwrap();
        assert_eq!(trace.fetches.len(), 2);
        assert_eq!(trace.totals, None, "never closed");
    }

    #[test]
    fn a_torn_last_line_from_a_crash_is_ignored_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        TraceWriter::open(&path).unwrap().record(&fetch(Device::Disk, 3, 10, Some(20)));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("memory,44,fau");
        let trace = parse(&text).unwrap();
        assert_eq!(trace.fetches, vec![fetch(Device::Disk, 3, 10, Some(20))]);
        assert_eq!(trace.notes.len(), 1, "{:?}", trace.notes);
        assert!(trace.notes[0].contains("torn"));
    }

    #[test]
    fn a_damaged_line_before_the_last_is_an_error_naming_it() {
        let text = format!(
            "{MAGIC} 1 started_unix=1\n{COLUMNS}\nmemory,1,fault,1,1,1,5,6\nmemory,x\ndisk,1,fault,1,1,1,7,8\n"
        );
        assert!(matches!(parse(&text), Err(TraceError::Line { line: 4, .. })));
        for bad in [
            "memory,1,fault,2,1,1,5,6",   // more faulting units than units
            "memory,1,fault,1,1,1,9,6",   // answered before asked
            "floppy,1,fault,1,1,1,5,6",   // unknown device
            "memory,1,whim,1,1,1,5,6",    // unknown cause
            "memory,1,fault,1,1,1,5,6,7", // a field too many
        ] {
            let text = format!("{MAGIC} 1\n{COLUMNS}\n{bad}\n");
            assert!(matches!(parse(&text), Err(TraceError::Line { line: 3, .. })), "{bad}");
        }
    }

    #[test]
    fn another_format_or_version_is_refused() {
        assert!(matches!(parse("device,unit\n"), Err(TraceError::NotATrace)));
        assert!(matches!(parse(""), Err(TraceError::NotATrace)));
        assert!(matches!(parse(&format!("{MAGIC} 2 started_unix=1\n")), Err(TraceError::Version(v)) if v == "2"));
    }

    #[test]
    fn past_its_cap_requests_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        let writer = TraceWriter::with_cap(&path, 300).unwrap();
        for i in 0..20 {
            writer.record(&fetch(Device::Memory, i, i, Some(i + 1)));
        }
        writer.close(Totals::default()).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 300 + 200, "only the totals line may pass the cap");
        let trace = read(&path).unwrap();
        let totals = trace.totals.unwrap();
        assert!(totals.dropped > 0);
        assert_eq!(trace.fetches.len() as u64 + totals.dropped, 20);
    }
}
