//! Recorded fetch traces as the benchmarks read them: plain, or
//! gzip-compressed as `bench/traces/` keeps them (read through `gzip -dc`,
//! so the benchmarks need no decompression crate).

use std::path::{Path, PathBuf};

/// Why a recorded trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordedTraceError {
    /// `gzip -dc` could not be started.
    #[error("cannot run gzip -dc {}", path.display())]
    StartGzip {
        /// The trace.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `gzip -dc` failed.
    #[error("gzip -dc {} failed: {stderr}", path.display())]
    Gzip {
        /// The trace.
        path: PathBuf,
        /// What gzip said.
        stderr: String,
    },
    /// The (decompressed) text is not a fetch trace.
    #[error("reading the fetch trace {}", path.display())]
    Parse {
        /// The trace.
        path: PathBuf,
        /// Cause.
        #[source]
        source: fetch_trace::TraceError,
    },
}

/// Reads a fetch trace, through `gzip -dc` when its name ends in `.gz`.
///
/// # Errors
///
/// [`RecordedTraceError`]: gzip could not run or failed, or the text is not
/// a fetch trace (a missing plain file included).
pub fn read_trace(path: &Path) -> Result<fetch_trace::Trace, RecordedTraceError> {
    let parse_error = |source| RecordedTraceError::Parse { path: path.to_owned(), source };
    if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|source| RecordedTraceError::StartGzip { path: path.to_owned(), source })?;
        if !out.status.success() {
            return Err(RecordedTraceError::Gzip {
                path: path.to_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        return fetch_trace::parse(&String::from_utf8_lossy(&out.stdout)).map_err(parse_error);
    }
    fetch_trace::read(path).map_err(parse_error)
}
