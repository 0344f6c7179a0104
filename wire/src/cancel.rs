//! A token that ends a [`RemoteImage`](crate::RemoteImage)'s retries.
//!
//! A fetch from a desktop that does not answer is retried for ever by
//! design: the guest waits until its desktop is back. When the VM itself is
//! being ended (its server daemon stops, its QEMU is killed) nobody will
//! use the answer, and a retry that never ends would hold a QEMU stuck in
//! a page fault and with it the whole stop. Cancelling the token makes
//! every retry loop of the images it was given to return
//! [`WireError::Cancelled`](crate::WireError::Cancelled) within one
//! attempt's time-out.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Cancels fetches; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Cancel {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Cancels, waking every retry that is waiting for its next attempt.
    pub fn cancel(&self) {
        let (flag, changed) = &*self.state;
        *flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        changed.notify_all();
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sleeps for `pause` unless cancelled first; whether the whole pause
    /// passed without a cancel.
    pub fn sleep(&self, pause: Duration) -> bool {
        let (flag, changed) = &*self.state;
        let until = Instant::now() + pause;
        let mut cancelled = flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*cancelled {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            cancelled = changed.wait_timeout(cancelled, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_passes_whole_unless_cancelled_and_a_cancel_wakes_it() {
        let cancel = Cancel::new();
        assert!(cancel.sleep(Duration::from_millis(10)));
        assert!(!cancel.is_cancelled());
        let other = cancel.clone();
        let started = Instant::now();
        let sleeper = std::thread::spawn(move || other.sleep(Duration::from_secs(600)));
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
        assert!(!sleeper.join().unwrap(), "a cancelled sleep says so");
        assert!(started.elapsed() < Duration::from_secs(600), "the cancel woke the sleeper");
        assert!(cancel.is_cancelled());
        assert!(!cancel.sleep(Duration::from_secs(600)), "a cancelled token does not sleep");
    }
}
