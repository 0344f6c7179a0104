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

/// CPU time used on the whole machine since [`CpuAccount::start`], split
/// into this process (with the children it has waited for) and everything
/// else, so that a report can say whether other work competed with the
/// benchmark for the CPUs: on a shared 2-CPU machine another test running
/// at the same time moves every figure.
#[derive(Debug, Clone, Copy)]
pub struct CpuAccount {
    machine: Duration,
    own: Duration,
    started: Instant,
}

impl CpuAccount {
    /// Starts counting.
    ///
    /// # Errors
    /// Reading `/proc/stat` failed or it had no `cpu` line.
    pub fn start() -> std::io::Result<CpuAccount> {
        Ok(CpuAccount { machine: machine_cpu_time()?, own: own_cpu_time(), started: Instant::now() })
    }

    /// CPU-seconds per second of wall-clock time that other processes and
    /// kernel threads used since the start: 0 on an otherwise idle machine,
    /// 1 for one other CPU-bound process.
    ///
    /// # Errors
    /// Reading `/proc/stat` failed.
    pub fn others_per_second(&self) -> std::io::Result<f64> {
        let machine = machine_cpu_time()?.saturating_sub(self.machine);
        let own = own_cpu_time().saturating_sub(self.own);
        Ok(machine.saturating_sub(own).as_secs_f64() / self.started.elapsed().as_secs_f64())
    }
}

/// User, nice and system time of all CPUs from `/proc/stat` (interrupt
/// time is left out: the kernel does not charge it to any process).
fn machine_cpu_time() -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| std::io::Error::other("no cpu line"))?;
    let ticks: u64 = line.split_whitespace().skip(1).take(3).filter_map(|t| t.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// User and system time of this process and of its waited-for children.
fn own_cpu_time() -> Duration {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN].into_iter().map(rusage_time).sum()
}

fn rusage_time(who: libc::c_int) -> Duration {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; `who` is one of the
    // two values getrusage accepts here.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
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
    fn the_machine_counts_this_process_time_too() {
        let (machine, own) = (machine_cpu_time().unwrap(), own_cpu_time());
        let deadline = Instant::now() + Duration::from_secs(10);
        while own_cpu_time() - own < Duration::from_millis(100) && Instant::now() < deadline {
            std::hint::black_box(0u64);
        }
        let spent = own_cpu_time() - own;
        assert!(spent >= Duration::from_millis(100), "a busy loop is charged to this process");
        // /proc/stat counts in ticks of 10 ms.
        assert!(machine_cpu_time().unwrap() - machine + Duration::from_millis(20) >= spent);
        assert!(CpuAccount::start().unwrap().others_per_second().unwrap() >= 0.0);
    }

    #[test]
    fn throughput_is_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(1)), 2.0);
        assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
    }
}

/// Where a benchmark's threads run: by default all on one CPU, so that
/// figures do not depend on where the scheduler happens to put each thread
/// (on a small VM, a wake-up across CPUs costs tens of microseconds).
#[derive(Debug, Clone, clap::Args)]
pub struct CpuPinning {
    /// CPU that every thread of the run (and any child it starts) is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Do not pin: let the scheduler spread the threads over the CPUs.
    #[arg(long, conflicts_with = "cpu")]
    pub no_pin: bool,
}

impl CpuPinning {
    /// Pins the calling thread (call it before starting any thread or child,
    /// so that all inherit it), unless `--no-pin` was given.
    ///
    /// # Errors
    /// The CPU cannot be used.
    pub fn apply(&self) -> Result<(), String> {
        if self.no_pin {
            return Ok(());
        }
        pin_to_cpu(self.cpu).map_err(|e| format!("cannot pin to CPU {}: {e}", self.cpu))
    }

    /// How the threads were placed, for a report's header line.
    pub fn describe(&self) -> String {
        if self.no_pin {
            "threads unpinned".to_owned()
        } else {
            format!("all threads pinned to CPU {}", self.cpu)
        }
    }
}
