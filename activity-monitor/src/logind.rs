//! The session's idle hint, from logind.
//!
//! Read by running `loginctl show-session --property=IdleHint
//! --property=IdleSinceHint <session>`: a real client of the real service,
//! and two properties do not justify a D-Bus stack in the desktop daemon.
//! Each query is a process, so this source is polled once a second.
//!
//! `IdleHint=no` means the user is active (idle time zero); `IdleHint=yes`
//! means idle since `IdleSinceHint` (microseconds of wall-clock time).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::idle::{IdleError, IdleSource};

/// Idle time from logind's `IdleHint` for one session.
#[derive(Debug)]
pub struct LogindSource {
    session: String,
    program: String,
}

impl LogindSource {
    /// Queries `session` (`None`: `$XDG_SESSION_ID`, else logind's "auto",
    /// the caller's own session) once, to check that logind answers.
    ///
    /// # Errors
    /// loginctl is missing, logind does not answer, or the session is unknown.
    pub fn connect(session: Option<&str>) -> Result<LogindSource, IdleError> {
        Self::with_program("loginctl", session)
    }

    /// As [`connect`](Self::connect), running `program` instead of `loginctl`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn with_program(program: &str, session: Option<&str>) -> Result<LogindSource, IdleError> {
        let session = match session {
            Some(s) => s.to_owned(),
            None => std::env::var("XDG_SESSION_ID").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "auto".into()),
        };
        let mut source = LogindSource { session, program: program.to_owned() };
        source.idle_for()?;
        Ok(source)
    }

    fn query(&self) -> Result<String, IdleError> {
        let out = Command::new(&self.program)
            .args(["show-session", "--property=IdleHint", "--property=IdleSinceHint", &self.session])
            .output()
            .map_err(|source| IdleError::LoginctlSpawn { program: self.program.clone(), source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let (message, no_service) = client_failure(&out.stderr);
        if no_service {
            Err(IdleError::NoLogind { message })
        } else {
            Err(IdleError::LogindSession { session: self.session.clone(), message })
        }
    }
}

impl IdleSource for LogindSource {
    fn name(&self) -> String {
        format!("logind session {}", self.session)
    }

    fn idle_for(&mut self) -> Result<Duration, IdleError> {
        let output = self.query()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        parse_idle(&output, now)
            .ok_or_else(|| IdleError::LogindParse { session: self.session.clone(), output: output.clone() })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// What a failed systemd client (loginctl, busctl) printed, on one line,
/// and whether it says that no logind answers at all.
pub(crate) fn client_failure(stderr: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(stderr);
    let message = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    let no_service = ["Failed to connect to bus", "not been booted with systemd", "was not provided by any"]
        .iter()
        .any(|m| message.contains(m));
    (message, no_service)
}

/// The idle time in loginctl's `IdleHint=`/`IdleSinceHint=` answer, given
/// the wall-clock time now (since the Unix epoch); `None` if either is missing.
fn parse_idle(output: &str, now: Duration) -> Option<Duration> {
    let mut hint = None;
    let mut since_us = None;
    for line in output.lines() {
        match line.trim().split_once('=') {
            Some(("IdleHint", v)) => hint = Some(v == "yes"),
            Some(("IdleSinceHint", v)) => since_us = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    if !hint? {
        return Some(Duration::ZERO);
    }
    Some(now.saturating_sub(Duration::from_micros(since_us?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_session_is_not_idle() {
        let out = "IdleHint=no\nIdleSinceHint=1700000000000000\n";
        assert_eq!(parse_idle(out, Duration::from_secs(1_800_000_000)), Some(Duration::ZERO));
    }

    #[test]
    fn idle_session_counts_from_idle_since_hint() {
        let out = "IdleHint=yes\nIdleSinceHint=1700000000500000\n";
        assert_eq!(parse_idle(out, Duration::from_secs(1_700_000_030)), Some(Duration::from_millis(29_500)));
    }

    #[test]
    fn hint_in_the_future_is_zero_idle() {
        let out = "IdleSinceHint=1700000100000000\nIdleHint=yes\n";
        assert_eq!(parse_idle(out, Duration::from_secs(1_700_000_000)), Some(Duration::ZERO));
    }

    #[test]
    fn missing_properties_are_rejected() {
        assert_eq!(parse_idle("", Duration::ZERO), None);
        assert_eq!(parse_idle("IdleHint=yes\n", Duration::ZERO), None);
        assert_eq!(parse_idle("IdleSinceHint=5\n", Duration::ZERO), None);
    }

    #[test]
    fn client_failures_without_a_bus_are_no_logind() {
        let stderr = b"System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n";
        let (message, no_service) = client_failure(stderr);
        assert!(no_service);
        assert_eq!(message, "System has not been booted with systemd as init system (PID 1). Can't operate.; Failed to connect to bus: Host is down");
        assert!(!client_failure(b"Could not get properties: No session '9' known\n").1);
    }

    #[test]
    fn no_logind_here_fails_clearly() {
        // Where logind runs this connects; where it does not, the error says so.
        match LogindSource::connect(None) {
            Ok(_) => {}
            Err(IdleError::NoLogind { .. }) | Err(IdleError::LogindSession { .. }) => {}
            Err(IdleError::LoginctlSpawn { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
