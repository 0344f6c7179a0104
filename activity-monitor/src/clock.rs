//! The kernel clocks the monitor and the sleep back-ends read.
//!
//! `CLOCK_MONOTONIC` stops while the machine is suspended; `CLOCK_BOOTTIME`
//! does not. Their difference therefore grows by exactly the time spent
//! suspended, which is how a resume is detected and the sleep measured,
//! whoever suspended the machine and whenever the request returned.

use std::time::Duration;

/// Reads `clock` as a duration since its origin (zero if it cannot be read,
/// which Linux never does for these two clocks).
fn read(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// `CLOCK_MONOTONIC` now: the clock evdev timestamps are set to.
pub(crate) fn monotonic_now() -> Duration {
    read(libc::CLOCK_MONOTONIC)
}

/// Both clocks read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspendClock {
    monotonic: Duration,
    boottime: Duration,
}

impl SuspendClock {
    /// The clocks now.
    pub fn now() -> SuspendClock {
        SuspendClock { monotonic: read(libc::CLOCK_MONOTONIC), boottime: read(libc::CLOCK_BOOTTIME) }
    }

    /// A reading from given values (for tests and replays).
    pub fn from_parts(monotonic: Duration, boottime: Duration) -> SuspendClock {
        SuspendClock { monotonic, boottime }
    }

    /// Time spent suspended between `earlier` and this reading.
    pub fn suspended_since(&self, earlier: &SuspendClock) -> Duration {
        let boot = self.boottime.saturating_sub(earlier.boottime);
        let mono = self.monotonic.saturating_sub(earlier.monotonic);
        boot.saturating_sub(mono)
    }

    /// Time elapsed (suspended or not) between `earlier` and this reading.
    pub fn elapsed_since(&self, earlier: &SuspendClock) -> Duration {
        self.boottime.saturating_sub(earlier.boottime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspension_is_boottime_minus_monotonic_growth() {
        let before = SuspendClock::from_parts(Duration::from_secs(100), Duration::from_secs(120));
        let after = SuspendClock::from_parts(Duration::from_secs(110), Duration::from_secs(190));
        assert_eq!(after.suspended_since(&before), Duration::from_secs(60));
        assert_eq!(after.elapsed_since(&before), Duration::from_secs(70));
    }

    #[test]
    fn no_suspension_without_a_sleep() {
        let before = SuspendClock::now();
        let after = SuspendClock::now();
        assert!(after.suspended_since(&before) < Duration::from_millis(50));
    }
}
