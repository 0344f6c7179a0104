//! What the adaptive wait learned about one VM, kept on disk between its
//! consolidations.
//!
//! # Why the gaps, and which prior
//!
//! The adaptive policy ([`crate::MicrosleepPolicy::adaptive`]) minimises
//! Eq. 4 over the gaps between the VM's requests. Those gaps are a
//! property of the guest (its timers, its daemons' polling), not of one
//! stay, so a stay that starts from scratch relearns them, at the fixed
//! wait, for its first [`crate::AdaptiveConfig::min_gaps`] gaps, which is
//! the part of a stay that wakes the desktop most. The file keeps the last
//! gaps themselves (at most the policy's history), not a chosen wait: a
//! later stay then goes on forgetting at the same rate as one long stay,
//! and a changed power profile or grid is applied to what was seen.
//!
//! The prior for gaps not yet seen is the paper's fixed 6 s (the
//! minimiser of Eq. 4 over its traces): until `min_gaps` gaps are known,
//! counting the stored ones, the wait stays there, because Eq. 4 over a
//! handful of gaps puts all their probability on a few bins and its
//! minimiser jumps between 0 and the longest wait considered. The gap
//! from a stay's last request to the next stay's first is never recorded.
//!
//! The file is JSON with a format name and a version, read only up to
//! [`MAX_LEARNED_BYTES`], and written with the durable atomic replace.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The format name in every file.
const FORMAT: &str = "jettison-wait-gaps";
/// The version this build writes and reads.
const VERSION: u32 = 1;
/// The largest file read: far above 4096 gaps of JSON.
pub const MAX_LEARNED_BYTES: u64 = 1 << 20;

/// Why a learned-gaps file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    /// Reading or writing the file failed.
    #[error("{operation} the learned wait-time gaps {file} (check the state directory's permissions and space)")]
    Io {
        /// "reading" or "writing".
        operation: &'static str,
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a learned-gaps file of this version.
    #[error("the learned wait-time gaps {file}: {reason} (remove the file: the VM's next stay relearns them)")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    format: String,
    version: u32,
    gaps: Vec<f64>,
}

/// Reads the gaps learned for a VM, oldest first; none if the file does
/// not exist.
///
/// # Errors
///
/// [`LearnedError::Io`], or [`LearnedError::Invalid`]: too large, not
/// JSON, another format or version, or a gap negative or not finite.
pub fn load_gaps(file: &Path) -> Result<Vec<f64>, LearnedError> {
    let io = |source| LearnedError::Io { operation: "reading", file: file.to_owned(), source };
    let invalid = |reason: String| LearnedError::Invalid { file: file.to_owned(), reason };
    let len = match std::fs::metadata(file) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    if len > MAX_LEARNED_BYTES {
        return Err(invalid(format!("{len} bytes, more than the {MAX_LEARNED_BYTES} allowed")));
    }
    let bytes = std::fs::read(file).map_err(io)?;
    let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON of gaps: {e}")))?;
    if on_disk.format != FORMAT || on_disk.version != VERSION {
        return Err(invalid(format!(
            "format {:?} version {}, this build reads {FORMAT:?} version {VERSION}",
            on_disk.format, on_disk.version
        )));
    }
    if let Some(bad) = on_disk.gaps.iter().find(|gap| !(gap.is_finite() && **gap >= 0.0)) {
        return Err(invalid(format!("gap {bad} is not a duration")));
    }
    Ok(on_disk.gaps)
}

/// Writes `gaps` (oldest first) as the VM's learned gaps, replacing the
/// file atomically and durably.
///
/// # Errors
///
/// [`LearnedError::Io`].
pub fn save_gaps(file: &Path, gaps: &[f64]) -> Result<(), LearnedError> {
    let on_disk = OnDisk { format: FORMAT.to_owned(), version: VERSION, gaps: gaps.to_vec() };
    let bytes = serde_json::to_vec(&on_disk).expect("a list of finite numbers is JSON");
    durable_file::replace_file(file, &[&bytes]).map_err(|source| LearnedError::Io {
        operation: "writing",
        file: file.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wait-gaps.json");
        assert!(load_gaps(&file).unwrap().is_empty());
        save_gaps(&file, &[0.5, 7.25, 120.0]).unwrap();
        assert_eq!(load_gaps(&file).unwrap(), [0.5, 7.25, 120.0]);
        for bad in [
            r#"{"format":"jettison-wait-gaps","version":2,"gaps":[]}"#,
            r#"{"format":"other","version":1,"gaps":[]}"#,
            r#"{"format":"jettison-wait-gaps","version":1,"gaps":[-1.0]}"#,
            "[",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(matches!(load_gaps(&file), Err(LearnedError::Invalid { .. })), "{bad}");
        }
        std::fs::write(&file, vec![b' '; MAX_LEARNED_BYTES as usize + 1]).unwrap();
        assert!(matches!(load_gaps(&file), Err(LearnedError::Invalid { .. })));
    }
}
