//! Waiting for a condition with a deadline.
//!
//! QEMU tells us little by itself: a socket appears, a log file grows, a
//! migration's status changes. Polling each at a short interval is simpler
//! and more robust than subscribing to every source, and the waits are short.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{QemuError, Result};

/// How often a condition is re-checked.
const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `probe` until it yields a value, fails, or `timeout` has passed.
///
/// `what` names the awaited thing for the [`QemuError::Timeout`] message.
pub(crate) fn poll_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            return Err(QemuError::Timeout { what: what.to_owned(), secs: timeout.as_secs_f64() });
        }
        sleep(INTERVAL);
    }
}
