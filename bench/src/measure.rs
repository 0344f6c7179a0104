//! Timing and summary helpers shared by the benchmarks: one way to time a
//! piece of work, to turn bytes and time into MB/s, and to reduce per-item
//! samples to percentiles, so every row of a table is computed alike.

use std::time::{Duration, Instant};

/// Runs `work` and returns its result with the wall-clock time it took.
pub fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = work();
    (out, start.elapsed())
}

/// Throughput in MB/s (10^6 bytes per second); 0 for a zero duration.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs == 0.0 {
        return 0.0;
    }
    bytes as f64 / secs / 1e6
}

/// The nearest-rank `pct` percentile (0 < pct <= 100) of `sorted`, which
/// must be in ascending order; `None` when there are no samples.
pub fn percentile(sorted: &[Duration], pct: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Per-item samples reduced to what the tables print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Number of samples.
    pub count: usize,
    /// Sum of the samples: the time spent on the items back to back.
    pub total: Duration,
}

impl Latency {
    /// Summarises `samples` (in any order); `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Latency> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Latency {
            p50: percentile(&sorted, 50.0)?,
            p99: percentile(&sorted, 99.0)?,
            count: sorted.len(),
            total: sorted.iter().sum(),
        })
    }
}

/// A duration in microseconds, for printing.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Pins the calling thread, and every thread and child process it starts
/// afterwards, to `cpu`.
///
/// # Errors
/// The error of `sched_setaffinity`, or "no such CPU" for a number past
/// the kernel's CPU set.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::other("no such CPU"));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t and the size passed is its size;
    // pid 0 means the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(us).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(us(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(us(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(us(100)));
        assert_eq!(percentile(&[us(7)], 99.0), Some(us(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn latency_sorts_and_sums() {
        let l = Latency::of(&[us(30), us(10), us(20)]).unwrap();
        assert_eq!((l.p50, l.p99, l.count, l.total), (us(20), us(30), 3, us(60)));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn throughput_is_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(1)), 2.0);
        assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
    }
}
