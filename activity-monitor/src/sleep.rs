//! Putting the desktop to sleep (S3) and measuring the sleep on resume.
//!
//! The preferred way is logind's `Suspend` method: it runs the system's
//! sleep hooks, honours inhibitors (a user's "don't sleep during this
//! download"), and is allowed to unprivileged sessions by polkit. It is
//! called with `busctl` (systemd's own D-Bus client, a real client of the
//! real service). Where no logind answers, [`SysfsSuspend`] writes `mem` to
//! `/sys/power/state`, the kernel's own interface, which needs root.
//!
//! logind's `Suspend` returns once the request is queued, not after the
//! resume, so the resume is detected with the kernel clocks
//! ([`SuspendClock`]): the gap between `CLOCK_BOOTTIME` and
//! `CLOCK_MONOTONIC` grows by the time slept. A sysfs write returns after
//! the resume and is measured the same way.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clock::SuspendClock;
use crate::logind::client_failure;
use crate::sysfs::SysfsSuspend;

/// How long a sleep lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slept {
    /// Time the machine was suspended.
    pub asleep: Duration,
    /// Time from the request to the return, asleep or not.
    pub elapsed: Duration,
}

impl Slept {
    /// The sleep between two clock readings.
    pub fn between(before: &SuspendClock, after: &SuspendClock) -> Slept {
        Slept { asleep: after.suspended_since(before), elapsed: after.elapsed_since(before) }
    }
}

/// A way to suspend this machine.
pub trait SleepBackend {
    /// The back-end's name as logs print it.
    fn name(&self) -> String;

    /// Suspends the machine and returns after it resumed, with how long it slept.
    ///
    /// # Errors
    /// The machine cannot or may not be suspended this way; the error says
    /// what to do.
    fn suspend(&mut self) -> Result<Slept, SleepError>;
}

/// Why the desktop could not be suspended.
#[derive(Debug, thiserror::Error)]
pub enum SleepError {
    /// No logind answers (or no client for it is installed).
    #[error("no logind on the system bus: {message}")]
    NoLogind {
        /// What the client said.
        message: String,
    },
    /// logind answered but will not suspend.
    #[error("logind refuses to suspend: {message} (check `systemctl status sleep.target`, inhibitors with `systemd-inhibit --list`, and polkit)")]
    LogindRefused {
        /// logind's answer.
        message: String,
    },
    /// logind accepted the request but the machine did not sleep.
    #[error("logind accepted the suspend but the machine did not sleep within {waited:?} (an inhibitor or a failing sleep hook; see `journalctl -u systemd-suspend`)")]
    DidNotSleep {
        /// How long the back-end waited.
        waited: Duration,
    },
    /// The power state file could not be read.
    #[error("cannot read {file} (this kernel has no suspend support, CONFIG_SUSPEND)")]
    StateFileRead {
        /// The file (normally /sys/power/state).
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel does not offer suspend to RAM.
    #[error("{file} lists {listed:?}, not \"mem\": this machine cannot suspend to RAM (enable S3 / suspend to RAM in the firmware setup, or check that the kernel supports it)")]
    NoSuspendToRam {
        /// The file.
        file: PathBuf,
        /// What it lists.
        listed: String,
    },
    /// Writing `mem` was not permitted.
    #[error(
        "writing mem to {file} was refused: run as root (or use logind, which allows the user's session to suspend)"
    )]
    StateFilePermission {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing `mem` failed: the suspend itself failed.
    #[error("writing mem to {file} failed: the kernel could not suspend (a device refused; see `dmesg`)")]
    StateFileWrite {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The gap growth that counts as having slept: more than scheduling noise,
/// less than any real suspend and resume.
const SLEPT_THRESHOLD: Duration = Duration::from_millis(500);

/// Suspend through logind's `Suspend` method, called with `busctl`.
#[derive(Debug, Clone)]
pub struct LogindSuspend {
    program: String,
    resume_timeout: Duration,
}

impl LogindSuspend {
    /// Checks that logind answers and may suspend (`CanSuspend` is `yes`).
    ///
    /// # Errors
    /// No logind, or it says it cannot suspend.
    pub fn connect() -> Result<LogindSuspend, SleepError> {
        Self::with_program("busctl", Duration::from_secs(60))
    }

    /// As [`connect`](Self::connect) with another client program and the
    /// time to wait for the machine to sleep after logind accepted.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn with_program(program: &str, resume_timeout: Duration) -> Result<LogindSuspend, SleepError> {
        let backend = LogindSuspend { program: program.to_owned(), resume_timeout };
        let answer = backend.call("CanSuspend", &[])?;
        // busctl prints `s "yes"`.
        if !answer.contains("\"yes\"") && !answer.contains("\"challenge\"") {
            return Err(SleepError::LogindRefused { message: format!("CanSuspend answered {}", answer.trim()) });
        }
        Ok(backend)
    }

    fn call(&self, method: &str, args: &[&str]) -> Result<String, SleepError> {
        let out = Command::new(&self.program)
            .args(["call", "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager"])
            .arg(method)
            .args(args)
            .output()
            .map_err(|e| SleepError::NoLogind { message: format!("cannot run {}: {e}", self.program) })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let (message, no_service) = client_failure(&out.stderr);
        if no_service {
            Err(SleepError::NoLogind { message })
        } else {
            Err(SleepError::LogindRefused { message })
        }
    }
}

impl SleepBackend for LogindSuspend {
    fn name(&self) -> String {
        "logind".into()
    }

    fn suspend(&mut self) -> Result<Slept, SleepError> {
        let before = SuspendClock::now();
        self.call("Suspend", &["b", "false"])?;
        // The call returns once the suspend is queued; the resume shows as
        // the boottime/monotonic gap growing.
        let deadline = Instant::now() + self.resume_timeout;
        loop {
            let now = SuspendClock::now();
            if now.suspended_since(&before) > SLEPT_THRESHOLD {
                return Ok(Slept::between(&before, &now));
            }
            if Instant::now() >= deadline {
                return Err(SleepError::DidNotSleep { waited: self.resume_timeout });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// logind where it answers, else `/sys/power/state`.
#[derive(Debug)]
pub struct SystemSuspend {
    logind: Option<LogindSuspend>,
    sysfs: SysfsSuspend,
}

impl SystemSuspend {
    /// logind if it answers now (else sysfs), falling back to
    /// `/sys/power/state`.
    pub fn detect() -> SystemSuspend {
        let logind = match LogindSuspend::connect() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::info!("suspend: not through logind ({e}); will write /sys/power/state");
                None
            }
        };
        SystemSuspend { logind, sysfs: SysfsSuspend::new() }
    }

    /// Given back-ends (tests inject a state file).
    pub fn new(logind: Option<LogindSuspend>, sysfs: SysfsSuspend) -> SystemSuspend {
        SystemSuspend { logind, sysfs }
    }
}

impl SleepBackend for SystemSuspend {
    fn name(&self) -> String {
        match &self.logind {
            Some(l) => format!("{} (else {})", l.name(), self.sysfs.name()),
            None => self.sysfs.name(),
        }
    }

    fn suspend(&mut self) -> Result<Slept, SleepError> {
        if let Some(logind) = &mut self.logind {
            match logind.suspend() {
                // logind went away: the kernel interface still works. A
                // refusal is not bypassed: it may be the user's inhibitor.
                Err(SleepError::NoLogind { message }) => {
                    tracing::warn!("suspend: logind gone ({message}); writing {}", self.sysfs.name());
                    self.logind = None;
                }
                other => return other,
            }
        }
        self.sysfs.suspend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_client_is_no_logind() {
        let err = LogindSuspend::with_program("/nonexistent/busctl", Duration::ZERO).unwrap_err();
        assert!(matches!(err, SleepError::NoLogind { .. }), "{err}");
        assert!(err.to_string().starts_with("no logind on the system bus: cannot run /nonexistent/busctl"));
    }

    #[test]
    fn without_logind_the_state_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "freeze mem disk\n").unwrap();
        let mut backend = SystemSuspend::new(None, SysfsSuspend::with_state_file(&file));
        let slept = backend.suspend().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mem");
        assert!(slept.asleep < SLEPT_THRESHOLD, "a file write is no sleep: {slept:?}");
    }

    #[test]
    fn slept_is_measured_between_readings() {
        let before = SuspendClock::from_parts(Duration::from_secs(10), Duration::from_secs(10));
        let after = SuspendClock::from_parts(Duration::from_secs(12), Duration::from_secs(42));
        assert_eq!(
            Slept::between(&before, &after),
            Slept { asleep: Duration::from_secs(30), elapsed: Duration::from_secs(32) }
        );
    }
}
