//! The ledger on disk: `ledger.json` (a [`LedgerSummary`]) and `power.svg`
//! (the power over time, like the paper's Figure 8), in one state
//! directory, for `jettison status` and for people.
//!
//! Each file is written to a temporary name in the same directory and
//! renamed over the old one, so a reader sees either the old file or the
//! new one, never a part.

use std::path::{Path, PathBuf};

use crate::svg::{power_chart, ChartLabels};
use crate::LedgerSummary;

/// The summary's file name in the state directory.
pub const LEDGER_FILE: &str = "ledger.json";
/// The chart's file name in the state directory.
pub const CHART_FILE: &str = "power.svg";

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

/// The ledger files of one desktop.
#[derive(Debug, Clone)]
pub struct LedgerFiles {
    dir: PathBuf,
}

impl LedgerFiles {
    /// Files in `dir`, which is created if missing.
    ///
    /// # Errors
    ///
    /// [`FilesError::CreateDir`].
    pub fn new(dir: &Path) -> Result<LedgerFiles, FilesError> {
        std::fs::create_dir_all(dir).map_err(|source| FilesError::CreateDir { dir: dir.to_owned(), source })?;
        Ok(LedgerFiles { dir: dir.to_owned() })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `summary` and the chart of `trace` (`(seconds, watts)` steps).
    ///
    /// # Errors
    ///
    /// [`FilesError::Write`] naming the file.
    pub fn write(&self, summary: &LedgerSummary, trace: &[(f64, f64)]) -> Result<(), FilesError> {
        let json = serde_json::to_vec_pretty(summary).map_err(|e| FilesError::Write {
            file: self.dir.join(LEDGER_FILE),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        self.replace(LEDGER_FILE, &json)?;
        let labels = ChartLabels {
            title: "Desktop power while consolidated".to_owned(),
            idle_watts: summary.profile.idle_watts,
            saved_percent: summary.total.map_or(0.0, |total| total.saved_percent),
        };
        self.replace(CHART_FILE, power_chart(trace, &labels).as_bytes())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnergyLedger, PowerProfile, PowerState};

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("power");
        let files = LedgerFiles::new(&state).unwrap();
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
}
