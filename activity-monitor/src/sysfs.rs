//! Suspend to RAM by writing `mem` to `/sys/power/state`: the kernel's own
//! interface, for machines without logind. Needs root. The write returns
//! after the resume.
//!
//! What `mem` means is chosen in `mem_sleep` beside it: `deep` is S3, the
//! state the paper's power profile measures; `s2idle` is a much shallower
//! software sleep that draws more. The back-end says which it will get.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::clock::SuspendClock;
use crate::sleep::{SleepBackend, SleepError, Slept};

/// The kernel's power state file.
pub const SYS_POWER_STATE: &str = "/sys/power/state";

/// Suspend by writing `mem` to a power state file.
#[derive(Debug, Clone)]
pub struct SysfsSuspend {
    state_file: PathBuf,
}

impl Default for SysfsSuspend {
    fn default() -> Self {
        Self::new()
    }
}

impl SysfsSuspend {
    /// Writes `/sys/power/state`.
    pub fn new() -> SysfsSuspend {
        Self::with_state_file(Path::new(SYS_POWER_STATE))
    }

    /// Writes `file` instead: tests give a file in a temporary directory
    /// and read what would have been written.
    pub fn with_state_file(file: &Path) -> SysfsSuspend {
        SysfsSuspend { state_file: file.to_owned() }
    }

    /// What `mem` means here, from `mem_sleep` beside the state file (the
    /// bracketed entry of e.g. `s2idle [deep]`); `None` where there is no
    /// such file (older kernels: `mem` is S3).
    pub fn mem_sleep(&self) -> Option<String> {
        let file = self.state_file.with_file_name("mem_sleep");
        let listed = std::fs::read_to_string(file).ok()?;
        selected(&listed).map(str::to_owned)
    }

    /// Checks that the file lists `mem` (suspend to RAM).
    ///
    /// # Errors
    /// The file cannot be read or does not list `mem`.
    pub fn check(&self) -> Result<(), SleepError> {
        let listed = std::fs::read_to_string(&self.state_file)
            .map_err(|source| SleepError::StateFileRead { file: self.state_file.clone(), source })?;
        if listed.split_whitespace().any(|s| s == "mem") {
            Ok(())
        } else {
            Err(SleepError::NoSuspendToRam { file: self.state_file.clone(), listed: listed.trim().to_owned() })
        }
    }
}

impl SleepBackend for SysfsSuspend {
    fn name(&self) -> String {
        self.state_file.display().to_string()
    }

    fn suspend(&mut self) -> Result<Slept, SleepError> {
        self.check()?;
        let file = || self.state_file.clone();
        let mut state = OpenOptions::new().write(true).truncate(true).open(&self.state_file).map_err(|source| {
            if source.kind() == ErrorKind::PermissionDenied {
                SleepError::StateFilePermission { file: file(), source }
            } else {
                SleepError::StateFileWrite { file: file(), source }
            }
        })?;
        match self.mem_sleep().as_deref() {
            Some("deep") | None => {}
            Some(other) => tracing::warn!(
                "suspend: mem means {other} here, not S3 (deep); the desktop will draw more than the power profile \
                 says (write deep to {} if it is listed)",
                self.state_file.with_file_name("mem_sleep").display()
            ),
        }
        let before = SuspendClock::now();
        state.write_all(b"mem").map_err(|source| SleepError::StateFileWrite { file: file(), source })?;
        let after = SuspendClock::now();
        let slept = Slept::between(&before, &after);
        tracing::info!("resumed after {:.1} s asleep ({})", slept.asleep.as_secs_f64(), self.state_file.display());
        Ok(slept)
    }
}

/// The bracketed (selected) entry of a sysfs choice list.
fn selected(listed: &str) -> Option<&str> {
    listed.split_whitespace().find_map(|s| s.strip_prefix('[')?.strip_suffix(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, content).unwrap();
        (dir, file)
    }

    #[test]
    fn writes_mem_where_listed() {
        let (_dir, file) = state_file("freeze mem disk\n");
        SysfsSuspend::with_state_file(&file).suspend().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mem");
    }

    #[test]
    fn refuses_without_mem_naming_the_file_and_the_fix() {
        let (_dir, file) = state_file("freeze disk\n");
        let err = SysfsSuspend::with_state_file(&file).suspend().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SleepError::NoSuspendToRam { .. }), "{msg}");
        assert!(msg.contains(&file.display().to_string()) && msg.contains("firmware"), "{msg}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "freeze disk\n", "nothing written");
    }

    #[test]
    fn reads_which_sleep_mem_means() {
        let (dir, file) = state_file("freeze mem\n");
        let backend = SysfsSuspend::with_state_file(&file);
        assert_eq!(backend.mem_sleep(), None);
        std::fs::write(dir.path().join("mem_sleep"), "s2idle [deep]\n").unwrap();
        assert_eq!(backend.mem_sleep().as_deref(), Some("deep"));
        std::fs::write(dir.path().join("mem_sleep"), "[s2idle]\n").unwrap();
        assert_eq!(backend.mem_sleep().as_deref(), Some("s2idle"));
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nope");
        let err = SysfsSuspend::with_state_file(&file).check().unwrap_err();
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    }
}
