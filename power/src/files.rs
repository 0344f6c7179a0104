//! The ledger on disk, in one state directory, for `jettison status` and
//! for people:
//!
//! - `stays.jsonl`: every finished stay (one [`Stay`] a line), appended and
//!   fsynced when the stay ends, never rewritten, so the desktop's history
//!   outlives daemon restarts;
//! - `stay.json`: the open stay as of its last change, so that a daemon
//!   that dies without ending its stay loses none of it: the next
//!   [`LedgerFiles::open`] appends it to `stays.jsonl` (once: a stay is
//!   known by its id);
//! - `ledger.json`: a [`LedgerSummary`] of every stay in `stays.jsonl` and
//!   the open one, and their total;
//! - `power.svg`: the power over time of the latest stay, like the paper's
//!   Figure 8.
//!
//! `ledger.json`, `stay.json` and `power.svg` are written to a temporary
//! name in the same directory and renamed over the old one, so a reader
//! sees either the old file or the new one, never a part. A line of
//! `stays.jsonl` cut short by a power cut is left out when the log is
//! read, and cut off when it is next opened for a stay.
//!
//! The total is computed with the current profile over every stay's
//! seconds in each state, so a profile changed between stays is applied to
//! the earlier ones too.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::svg::{power_chart, ChartLabels};
use crate::{EnergyReport, LedgerSummary};

/// The summary's file name in the state directory.
pub const LEDGER_FILE: &str = "ledger.json";
/// The chart's file name in the state directory.
pub const CHART_FILE: &str = "power.svg";
/// The log of finished stays in the state directory.
pub const STAYS_FILE: &str = "stays.jsonl";
/// The open stay's file in the state directory.
pub const OPEN_STAY_FILE: &str = "stay.json";

/// One stay of the desktop's VMs away (one power session) as the log
/// keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stay {
    /// When the stay began, milliseconds since the Unix epoch: its
    /// identity in the log, and a date for people (the report's own times
    /// are on the session's clock).
    pub id: u64,
    /// Its energy.
    pub report: EnergyReport,
}

/// Why the ledger files could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The state directory could not be created.
    #[error(
        "creating the power state directory {dir} (check the path and its permissions, or pass another --state-dir)"
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written or renamed into place.
    #[error("writing {file} (is its file system full or read-only?)")]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The summary file could not be read.
    #[error("reading {file} (is `jettison power --state-dir` writing this directory?)")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stay log could not be appended to or read.
    #[error("appending to or reading the stay log {file} (is its file system full or read-only?)")]
    Log {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the stay log is not a stay.
    #[error("parsing line {line} of the stay log {file}: not a stay (move the file aside to start a new log)")]
    LogLine {
        /// The file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The summary file is not a ledger summary.
    #[error("parsing {file}: not a power ledger summary")]
    Parse {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The ledger files of one desktop, opened for one stay.
#[derive(Debug, Clone)]
pub struct LedgerFiles {
    dir: PathBuf,
    /// The stays finished before this one, from the log.
    earlier: Vec<EnergyReport>,
    /// This stay's id.
    id: u64,
}

impl LedgerFiles {
    /// Opens `dir` (created if missing) for a stay beginning now: an open
    /// stay a dead daemon left is appended to the log first, then the log
    /// is read.
    ///
    /// # Errors
    ///
    /// [`FilesError::CreateDir`], [`FilesError::Log`], [`FilesError::LogLine`],
    /// [`FilesError::Read`] or [`FilesError::Parse`] (of a left open stay).
    pub fn open(dir: &Path) -> Result<LedgerFiles, FilesError> {
        std::fs::create_dir_all(dir).map_err(|source| FilesError::CreateDir { dir: dir.to_owned(), source })?;
        let log = dir.join(STAYS_FILE);
        let (mut stays, whole) = read_log(&log)?;
        if log.exists() && std::fs::metadata(&log).map_or(0, |m| m.len()) > whole {
            truncate(&log, whole)?;
        }
        let open = dir.join(OPEN_STAY_FILE);
        if open.exists() {
            let bytes = std::fs::read(&open).map_err(|source| FilesError::Read { file: open.clone(), source })?;
            let stay: Stay =
                serde_json::from_slice(&bytes).map_err(|source| FilesError::Parse { file: open.clone(), source })?;
            if !stays.iter().any(|s| s.id == stay.id) {
                append(&log, &stay)?;
                stays.push(stay);
            }
            remove(&open)?;
        }
        // A new stay never shares an id with an earlier one.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let id = stays.iter().map(|s| s.id + 1).max().map_or(now, |next| next.max(now));
        Ok(LedgerFiles { dir: dir.to_owned(), earlier: stays.into_iter().map(|s| s.report).collect(), id })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes this stay's `summary` (one consolidation, the stay, open or
    /// not) as the open stay, `ledger.json` with every earlier stay before
    /// it, and the chart of `trace` (`(seconds, watts)` steps).
    ///
    /// # Errors
    ///
    /// [`FilesError::Write`] naming the file.
    pub fn write(&self, summary: &LedgerSummary, trace: &[(f64, f64)]) -> Result<(), FilesError> {
        if let Some(&report) = summary.consolidations.last() {
            self.replace(OPEN_STAY_FILE, &json(&self.dir.join(OPEN_STAY_FILE), &Stay { id: self.id, report })?)?;
        }
        let all = self.earlier.iter().chain(&summary.consolidations).copied().collect();
        let whole = LedgerSummary::of(summary.profile, all);
        self.replace(LEDGER_FILE, &json(&self.dir.join(LEDGER_FILE), &whole)?)?;
        let labels = ChartLabels {
            title: "Desktop power while consolidated".to_owned(),
            idle_watts: summary.profile.idle_watts,
            saved_percent: summary.total.map_or(0.0, |total| total.saved_percent),
        };
        self.replace(CHART_FILE, power_chart(trace, &labels).as_bytes())
    }

    /// Ends this stay with its final `report`: appended to the log (after
    /// a last [`LedgerFiles::write`]), the open stay's file removed.
    ///
    /// # Errors
    ///
    /// [`FilesError::Log`] naming the file.
    pub fn finish(&self, report: &EnergyReport) -> Result<(), FilesError> {
        append(&self.dir.join(STAYS_FILE), &Stay { id: self.id, report: *report })?;
        remove(&self.dir.join(OPEN_STAY_FILE))
    }

    /// Replaces `name` with `bytes`, atomically and durably.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), FilesError> {
        let file = self.dir.join(name);
        durable_file::replace_file(&file, &[bytes]).map_err(|source| FilesError::Write { file, source })
    }

    /// Reads `dir`'s summary; `None` if the directory does not exist.
    ///
    /// # Errors
    ///
    /// [`FilesError::Read`] (the directory exists but not the file
    /// included) or [`FilesError::Parse`].
    pub fn read(dir: &Path) -> Result<Option<LedgerSummary>, FilesError> {
        if !dir.exists() {
            return Ok(None);
        }
        let file = dir.join(LEDGER_FILE);
        let bytes = std::fs::read(&file).map_err(|source| FilesError::Read { file: file.clone(), source })?;
        serde_json::from_slice(&bytes).map(Some).map_err(|source| FilesError::Parse { file, source })
    }

    /// Every finished stay in `dir`'s log, oldest first (none without a log).
    ///
    /// # Errors
    ///
    /// [`FilesError::Log`] or [`FilesError::LogLine`].
    pub fn stays(dir: &Path) -> Result<Vec<Stay>, FilesError> {
        read_log(&dir.join(STAYS_FILE)).map(|(stays, _)| stays)
    }
}

fn json(file: &Path, value: &impl Serialize) -> Result<Vec<u8>, FilesError> {
    serde_json::to_vec_pretty(value).map_err(|e| FilesError::Write {
        file: file.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The stays in the log at `file`, and the length of its whole lines: a
/// last line without its newline is an append cut short by a power cut,
/// and is left out.
fn read_log(file: &Path) -> Result<(Vec<Stay>, u64), FilesError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => return Err(FilesError::Log { file: file.to_owned(), source }),
    };
    let whole = text.rfind('\n').map_or(0, |end| end + 1);
    let mut stays = Vec::new();
    for (n, line) in text[..whole].lines().enumerate() {
        let stay = serde_json::from_str(line).map_err(|source| FilesError::LogLine {
            file: file.to_owned(),
            line: n + 1,
            source,
        })?;
        stays.push(stay);
    }
    Ok((stays, whole as u64))
}

/// Cuts the log at `file` back to its first `len` bytes (its whole lines).
fn truncate(file: &Path, len: u64) -> Result<(), FilesError> {
    let log = |source| FilesError::Log { file: file.to_owned(), source };
    let out = std::fs::OpenOptions::new().write(true).open(file).map_err(log)?;
    out.set_len(len).and_then(|()| out.sync_all()).map_err(log)
}

/// Appends `stay` as one line to the log at `file` and fsyncs it (and the
/// directory, for a new log).
fn append(file: &Path, stay: &Stay) -> Result<(), FilesError> {
    let log = |source| FilesError::Log { file: file.to_owned(), source };
    let line = serde_json::to_vec(stay).map_err(|e| log(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    durable_file::append_line(file, &line).map_err(log)
}

/// Removes `file` if it is there.
fn remove(file: &Path) -> Result<(), FilesError> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(FilesError::Write { file: file.to_owned(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnergyLedger, PowerProfile, PowerState};

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("power");
        let files = LedgerFiles::open(&state).unwrap();
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        ledger.begin(PowerState::Idle, 0.0).unwrap();
        ledger.enter(PowerState::Asleep, 6.0).unwrap();
        files.write(&ledger.summary(60.0), &ledger.power_trace()).unwrap();
        let back = LedgerFiles::read(&state).unwrap().unwrap();
        assert_eq!(back, ledger.summary(60.0));
        assert!(std::fs::read_to_string(state.join(CHART_FILE)).unwrap().contains("<path"));
        assert!(LedgerFiles::read(&dir.path().join("missing")).unwrap().is_none());
        std::fs::write(state.join(LEDGER_FILE), "{").unwrap();
        assert!(matches!(LedgerFiles::read(&state), Err(FilesError::Parse { .. })));
    }

    /// One stay of `asleep` seconds out of 100, finished or left open.
    fn stay(state: &Path, asleep: f64, finish: bool) -> EnergyReport {
        let files = LedgerFiles::open(state).unwrap();
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        ledger.begin(PowerState::Idle, 0.0).unwrap();
        ledger.enter(PowerState::Asleep, 100.0 - asleep).unwrap();
        let report = ledger.end(100.0).unwrap();
        files.write(&ledger.summary(100.0), &ledger.power_trace()).unwrap();
        if finish {
            files.finish(&report).unwrap();
        }
        report
    }

    #[test]
    fn every_stay_is_kept_across_opens_and_in_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let first = stay(dir.path(), 50.0, true);
        let second = stay(dir.path(), 80.0, true);
        let stays = LedgerFiles::stays(dir.path()).unwrap();
        assert_eq!(stays.iter().map(|s| s.report).collect::<Vec<_>>(), [first, second]);
        assert!(stays[0].id < stays[1].id);
        assert!(!dir.path().join(OPEN_STAY_FILE).exists());
        let summary = LedgerFiles::read(dir.path()).unwrap().unwrap();
        assert_eq!(summary.consolidations, [first, second]);
        let total = summary.total.unwrap();
        assert_eq!(total.secs.asleep, 130.0);
        assert_eq!(total.wall_secs, 200.0);
        assert!((total.saved_joules - first.saved_joules - second.saved_joules).abs() < 1e-6);
    }

    #[test]
    fn a_stay_left_open_by_a_dead_daemon_is_logged_once() {
        let dir = tempfile::tempdir().unwrap();
        let lost = stay(dir.path(), 50.0, false);
        assert!(dir.path().join(OPEN_STAY_FILE).exists());
        let files = LedgerFiles::open(dir.path()).unwrap();
        assert!(!dir.path().join(OPEN_STAY_FILE).exists());
        assert_eq!(LedgerFiles::stays(dir.path()).unwrap().iter().map(|s| s.report).collect::<Vec<_>>(), [lost]);
        // Died between the append and the removal: not logged twice.
        files.finish(&lost).unwrap();
        let stays = LedgerFiles::stays(dir.path()).unwrap();
        std::fs::write(dir.path().join(OPEN_STAY_FILE), serde_json::to_vec(&stays[1]).unwrap()).unwrap();
        LedgerFiles::open(dir.path()).unwrap();
        assert_eq!(LedgerFiles::stays(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn an_append_cut_short_is_cut_off_and_a_bad_line_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kept = stay(dir.path(), 50.0, true);
        let log = dir.path().join(STAYS_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(b"{\"id\": 12");
        std::fs::write(&log, &bytes).unwrap();
        assert_eq!(LedgerFiles::stays(dir.path()).unwrap().len(), 1);
        let next = stay(dir.path(), 10.0, true);
        assert_eq!(std::fs::read(&log).unwrap()[..whole], bytes[..whole]);
        let reports: Vec<_> = LedgerFiles::stays(dir.path()).unwrap().iter().map(|s| s.report).collect();
        assert_eq!(reports, [kept, next]);
        std::fs::write(&log, b"not a stay\n").unwrap();
        assert!(matches!(LedgerFiles::open(dir.path()), Err(FilesError::LogLine { line: 1, .. })));
    }
}
