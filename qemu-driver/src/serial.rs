//! Reading the guest's serial console log.
//!
//! QEMU writes the guest's ttyS0 to a plain file (the console chardev's
//! log, appended to across reboots inside the guest; each QEMU start
//! rotates the previous run's file, see [`SerialLog::rotate`]). The test
//! guest (`scripts/guest-image`) reports on it with line markers: `JTFILLED
//! <MiB>`, `JTREADY`, then `JTCOUNT <n>` about five times a second. Only
//! complete lines count: the guest may be stopped, or the file read, in the
//! middle of one.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{QemuError, Result};
use crate::poll::poll_until;

/// The marker of the guest's counter lines.
const COUNT_PREFIX: &str = "JTCOUNT ";

/// The serial console log of one QEMU run.
#[derive(Debug, Clone)]
pub struct SerialLog {
    path: PathBuf,
}

impl SerialLog {
    /// A log at `path`; the file need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> SerialLog {
        SerialLog { path: path.into() }
    }

    /// How many earlier runs' logs [`SerialLog::rotate`] keeps.
    pub const KEPT_RUNS: u32 = 5;

    /// Moves the log of the previous QEMU run aside, to `<log>.1`, shifting
    /// older ones up to `<log>.5` and dropping the oldest: a new run starts
    /// an empty log and the earlier boots stay readable.
    ///
    /// # Errors
    /// [`QemuError::File`] naming the file that could not be moved.
    pub fn rotate(&self) -> Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..SerialLog::KEPT_RUNS).rev() {
            rename_if_there(&numbered(n), &numbered(n + 1))?;
        }
        rename_if_there(&self.path, &numbered(1))
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole log so far (empty if QEMU has not created it yet), with
    /// invalid UTF-8 replaced: kernel output can contain anything.
    ///
    /// # Errors
    /// [`QemuError::File`] when the file exists but cannot be read.
    pub fn read(&self) -> Result<String> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(QemuError::File { action: "read the serial log", path: self.path.clone(), source }),
        }
    }

    /// Every `JTCOUNT` value in the log so far, in order.
    ///
    /// # Errors
    /// As [`SerialLog::read`].
    pub fn counts(&self) -> Result<Vec<u64>> {
        Ok(counts(&self.read()?).collect())
    }

    /// Waits until `find` picks something out of the log. `check` runs on
    /// every round first, so the caller can give up early (e.g. when QEMU
    /// has exited).
    ///
    /// # Errors
    /// [`QemuError::Timeout`] naming `what` and the log after `timeout`; any
    /// error from `check` or from reading the log.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<()>,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let what = format!("{what} in serial log {}", self.path.display());
        poll_until(&what, timeout, || {
            check()?;
            Ok(find(&self.read()?))
        })
    }
}

fn rename_if_there(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(QemuError::File { action: "rotate the serial log", path: from.to_owned(), source: err })
        }
        _ => Ok(()),
    }
}

/// The complete lines of `text`, without line endings (the tty adds `\r`).
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|line| line.trim_end_matches('\r'))
}

/// The first complete line of `text` that starts with `prefix`.
pub(crate) fn find_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    complete_lines(text).find(|line| line.starts_with(prefix))
}

/// The values of the complete `JTCOUNT <n>` lines of `text`.
pub(crate) fn counts(text: &str) -> impl Iterator<Item = u64> + '_ {
    complete_lines(text).filter_map(|line| line.strip_prefix(COUNT_PREFIX)).filter_map(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_line_ignores_an_unfinished_last_line() {
        let text = "[    0.1] boot\r\nJTREADY\r\nJTCOUNT 1\r\nJTCOU";
        assert_eq!(find_line(text, "JTREADY"), Some("JTREADY"));
        assert_eq!(find_line(text, "JTCOUNT"), Some("JTCOUNT 1"));
        assert_eq!(find_line("JTREADY", "JTREADY"), None);
        assert_eq!(find_line("", "JTREADY"), None);
    }

    #[test]
    fn counts_skip_noise_and_partial_lines() {
        let text = "JTCOUNT 7\r\n[  3.2] kernel says hi\nJTCOUNT 8\nJTCOUNT x\nJTCOUNT 9";
        assert_eq!(counts(text).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(counts(text).last(), Some(8));
        assert_eq!(counts("JTREADY\n").next(), None);
    }

    #[test]
    fn counts_ignore_a_line_the_restore_split() {
        // The guest stopped after writing "JTCOUNT 1"; the restored guest
        // writes the rest, "2\r\n", into a new log.
        assert_eq!(counts("2\r\nJTCOUNT 13\r\n").collect::<Vec<_>>(), [13]);
    }

    #[test]
    fn rotation_keeps_the_last_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = SerialLog::new(dir.path().join("serial.log"));
        log.rotate().expect("nothing to rotate is fine");
        for run in 0..7 {
            fs::write(log.path(), format!("run {run}\n")).unwrap();
            log.rotate().unwrap();
        }
        assert!(!log.path().exists());
        assert_eq!(fs::read_to_string(dir.path().join("serial.log.1")).unwrap(), "run 6\n");
        assert_eq!(fs::read_to_string(dir.path().join("serial.log.5")).unwrap(), "run 2\n");
        assert!(!dir.path().join("serial.log.6").exists());
    }

    #[test]
    fn read_of_a_missing_log_is_empty() {
        let log = SerialLog::new("/nonexistent/jettison/serial.log");
        assert_eq!(log.read().expect("a missing log reads as empty"), "");
    }
}
