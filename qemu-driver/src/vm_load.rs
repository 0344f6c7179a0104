//! Is the VM idle enough to consolidate?
//!
//! The user being away (the activity monitor's job) is not enough: a VM
//! left compiling, indexing or downloading would, on the server, fetch
//! page after page from the desktop and keep waking it, and hand back a
//! large dirty set at reintegration. So before consolidating we also look
//! at the VM itself, with three measures:
//!
//! - **CPU**: QEMU's own CPU time (`utime + stime` in `/proc/<pid>/stat`)
//!   over the last minute, as a percentage of one host core. It counts
//!   vCPU threads and device emulation alike and needs nothing from the
//!   guest.
//! - **Disk I/O**: bytes read and written by the guest's block devices
//!   (QMP `query-blockstats`) over the same minute. Network traffic is not
//!   counted: QEMU exposes no per-NIC byte counters over QMP (the
//!   `query-stats` providers are KVM's and cryptodev's), and a guest
//!   receiving a lot usually shows it in CPU anyway.
//! - **Dirty pages**: QEMU's `calc-dirty-rate` in `page-sampling` mode. It
//!   hashes a random sample of guest pages, waits, hashes them again and
//!   scales the changed fraction to the RAM size. It needs no dirty
//!   logging, so it works under TCG as well as KVM and costs the guest
//!   nothing; its answer is whole MiB/s, so anything under 1 MiB/s reads 0.
//!   This is the measure closest to what partial migration pays for.
//!
//! CPU and I/O are counters, so they are sampled ([`VmLoadSample`]) and
//! differenced over a sliding window ([`VmLoadWindow`]) by whoever
//! watches the VM anyway; the dirty rate is a measurement QEMU makes on
//! request ([`dirty_rate`]), taken once when consolidation is considered.
//! [`judge`] compares the lot with [`IdleThresholds`] and, when it refuses,
//! says which measure was over which limit, by how much, and what to do.
//! A partly filled window can refuse (what it holds is already over a
//! limit) but not accept: a VM is idle over the whole window, and a lull of
//! seconds after it starts or comes home says little. Either way the answer
//! carries the figures so far and how much of the window they cover: an
//! administrator asking "why not?" wants numbers, not "wait a minute".

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::error::{QemuError, Result};
use crate::poll::poll_until;
use crate::qmp::Qmp;

/// The window [`IdleThresholds::default`] judges CPU and I/O over.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Pages `calc-dirty-rate` samples per GiB of guest RAM. QEMU's default is
/// 512; eight times that costs a few milliseconds of hashing and makes one
/// changed sample stand for 256 KiB instead of 2 MiB.
const SAMPLE_PAGES_PER_GIB: u64 = 4096;

/// How long past the requested calculation time QEMU may take to report
/// the dirty rate (it hashes the samples on a thread of its own).
const DIRTY_RATE_SLACK: Duration = Duration::from_secs(10);

/// Clock ticks per second of `/proc/<pid>/stat` when `sysconf` cannot say;
/// Linux fixes USER_HZ at 100 on every architecture.
const FALLBACK_CLK_TCK: u64 = 100;

/// One reading of a running QEMU's activity counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLoadSample {
    /// When the counters were read.
    pub taken: Instant,
    /// CPU time QEMU has used since it started, user and system, all threads.
    pub cpu_time: Duration,
    /// Bytes read plus bytes written by all the guest's block devices since
    /// QEMU started; 0 for a VM without disks.
    pub disk_bytes: u64,
}

impl VmLoadSample {
    /// Reads the counters of the QEMU with process id `pid`, whose monitor
    /// is `qmp` (see [`QemuProcess::pid`](crate::QemuProcess::pid)).
    ///
    /// # Errors
    /// [`QemuError::File`] if `/proc/<pid>/stat` cannot be read or parsed (QEMU
    /// has exited, or `pid` is not QEMU's); QMP errors from
    /// `query-blockstats`.
    pub fn take(pid: u32, qmp: &mut Qmp) -> Result<VmLoadSample> {
        let cpu_time = process_cpu_time(pid)?;
        let disk_bytes = disk_bytes(&qmp.execute("query-blockstats", None)?);
        Ok(VmLoadSample { taken: Instant::now(), cpu_time, disk_bytes })
    }
}

/// CPU time (user plus system, all threads) of process `pid` so far: a
/// QEMU's, or any process the caller watches (the server charges a VM
/// for its storage process's too).
///
/// # Errors
/// [`QemuError::File`] if `/proc/<pid>/stat` cannot be read or parsed (the
/// process has exited).
pub fn process_cpu_time(pid: u32) -> Result<Duration> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let read_error =
        |source| QemuError::File { action: "read the CPU time of a process from", path: path.clone(), source };
    let stat = fs::read_to_string(&path).map_err(read_error)?;
    let ticks = stat_cpu_ticks(&stat).ok_or_else(|| {
        read_error(io::Error::new(io::ErrorKind::InvalidData, format!("no utime and stime fields in {stat:?}")))
    })?;
    Ok(ticks_to_duration(ticks, clock_ticks_per_sec()))
}

/// `utime + stime` from the text of a `/proc/<pid>/stat` file, in clock
/// ticks. They are fields 14 and 15 (proc(5)); the command name before
/// them is in parentheses and may itself hold spaces and parentheses, so
/// counting starts after the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first one after the name.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Clock ticks per second of the kernel's CPU time counters
/// (`/proc/<pid>/stat`, `/proc/stat`): `sysconf(_SC_CLK_TCK)`, 100 if it
/// cannot say.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(FALLBACK_CLK_TCK)
}

fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    let nanos_of_rest = (ticks % hz) * 1_000_000_000 / hz;
    Duration::from_secs(ticks / hz) + Duration::from_nanos(nanos_of_rest)
}

/// Sum of `rd_bytes + wr_bytes` over the devices of a `query-blockstats`
/// reply. Only the top-level entries count: their `parent` and `backing`
/// members describe the same I/O again, one layer down.
fn disk_bytes(blockstats: &Value) -> u64 {
    let Some(devices) = blockstats.as_array() else { return 0 };
    devices
        .iter()
        .map(|device| {
            let counter = |name| device["stats"][name].as_u64().unwrap_or(0);
            counter("rd_bytes").saturating_add(counter("wr_bytes"))
        })
        .fold(0, u64::saturating_add)
}

/// Samples over a sliding window, and CPU and I/O rates over it.
///
/// Rates are taken between the oldest and newest sample kept. The window
/// keeps one sample at or before its start as that baseline, so once it
/// has run for its length the rates cover at least the whole window, not
/// one sampling interval less.
#[derive(Debug, Clone)]
pub struct VmLoadWindow {
    length: Duration,
    samples: VecDeque<VmLoadSample>,
}

impl Default for VmLoadWindow {
    /// An empty window as long as [`IdleThresholds::default`]'s.
    fn default() -> VmLoadWindow {
        VmLoadWindow::new(DEFAULT_WINDOW)
    }
}

impl VmLoadWindow {
    /// An empty window over the last `length`.
    pub fn new(length: Duration) -> VmLoadWindow {
        VmLoadWindow { length, samples: VecDeque::new() }
    }

    /// How far back the window reaches.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Adds `sample` and forgets samples no longer needed as the baseline.
    /// A sample older than the newest one held is ignored.
    pub fn push(&mut self, sample: VmLoadSample) {
        if self.samples.back().is_some_and(|newest| sample.taken < newest.taken) {
            return;
        }
        self.samples.push_back(sample);
        let Some(start) = sample.taken.checked_sub(self.length) else { return };
        while self.samples.get(1).is_some_and(|second| second.taken <= start) {
            self.samples.pop_front();
        }
    }

    /// The samples held, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &VmLoadSample> {
        self.samples.iter()
    }

    /// The time between the oldest and the newest sample held: what the
    /// rates are measured over. Zero with fewer than two samples.
    pub fn span(&self) -> Duration {
        match (self.samples.front(), self.samples.back()) {
            (Some(oldest), Some(newest)) => newest.taken.duration_since(oldest.taken),
            _ => Duration::ZERO,
        }
    }

    /// Whether the samples cover the whole window yet.
    pub fn is_full(&self) -> bool {
        self.span() >= self.length
    }

    /// CPU used over the window, in percent of one host core (a VM keeping
    /// two cores busy shows 200). `None` until two samples some time apart.
    pub fn cpu_percent(&self) -> Option<f64> {
        let (oldest, newest, span) = self.ends()?;
        let used = newest.cpu_time.saturating_sub(oldest.cpu_time);
        Some(used.as_secs_f64() / span * 100.0)
    }

    /// Disk bytes read and written per second over the window. `None` until
    /// two samples some time apart.
    pub fn io_bytes_per_sec(&self) -> Option<f64> {
        let (oldest, newest, span) = self.ends()?;
        // A counter going down (a disk unplugged) counts as no I/O.
        Some(newest.disk_bytes.saturating_sub(oldest.disk_bytes) as f64 / span)
    }

    /// The oldest and newest samples and the seconds between them, if that
    /// is more than zero.
    fn ends(&self) -> Option<(&VmLoadSample, &VmLoadSample, f64)> {
        let span = self.span().as_secs_f64();
        (span > 0.0).then_some((self.samples.front()?, self.samples.back()?, span))
    }
}

/// A dirty-page rate QEMU measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirtyRate {
    /// Guest memory written per second, in MiB/s. QEMU reports whole MiB/s,
    /// rounded down.
    pub mib_per_sec: f64,
    /// How long QEMU measured over.
    pub period: Duration,
}

/// Measures the guest's dirty-page rate over `calc` (50 ms to 60 s) with
/// QMP `calc-dirty-rate` in page-sampling mode, and waits for the result.
///
/// Blocks for about `calc`. The guest keeps running meanwhile.
///
/// # Errors
/// [`QemuError::Command`] if QEMU refuses (a `calc` out of range, or another
/// measurement of this VM still running: try again once it ends);
/// [`QemuError::Timeout`] if no result comes well after `calc`; QMP errors.
pub fn dirty_rate(qmp: &mut Qmp, calc: Duration) -> Result<DirtyRate> {
    let calc_ms = u64::try_from(calc.as_millis()).unwrap_or(u64::MAX);
    let start = json!({
        "calc-time": calc_ms,
        "calc-time-unit": "millisecond",
        "sample-pages": SAMPLE_PAGES_PER_GIB,
        "mode": "page-sampling",
    });
    match qmp.execute("calc-dirty-rate", Some(start.clone())) {
        // One that an earlier caller gave up on still runs: wait for it to
        // end, then measure afresh.
        Err(QemuError::Command { desc, .. }) if desc.contains("already being measured") => {
            poll_until("the earlier dirty-rate measurement to end", DIRTY_RATE_SLACK, || {
                let info = qmp.execute("query-dirty-rate", Some(json!({ "calc-time-unit": "millisecond" })))?;
                Ok((info["status"].as_str() != Some("measuring")).then_some(()))
            })?;
            qmp.execute("calc-dirty-rate", Some(start))?;
        }
        other => {
            other?;
        }
    }
    // The command resets the status to unstarted before it returns, so a
    // result from an earlier measurement cannot be mistaken for this one.
    sleep(calc);
    let what = format!("QEMU's dirty-rate measurement over {calc_ms} ms (query-dirty-rate status measured)");
    poll_until(&what, DIRTY_RATE_SLACK, || {
        let info = qmp.execute("query-dirty-rate", Some(json!({ "calc-time-unit": "millisecond" })))?;
        Ok(measured_dirty_rate(&info))
    })
}

/// The rate in a `query-dirty-rate` reply, once its status is `measured`.
fn measured_dirty_rate(info: &Value) -> Option<DirtyRate> {
    if info["status"].as_str() != Some("measured") {
        return None;
    }
    let mib_per_sec = info["dirty-rate"].as_f64()?;
    // calc-time is the time QEMU actually measured over, in the unit asked.
    let period = Duration::from_millis(info["calc-time"].as_u64()?);
    Some(DirtyRate { mib_per_sec, period })
}

/// The limits under which a VM counts as idle.
///
/// The defaults are for a real office desktop VM under KVM:
///
/// - **CPU 10% of one core** over a minute. An idle Windows or Linux
///   desktop wakes for timers, its clock and background services and
///   stays in the low single digits; a user's program still running
///   (a build, a video, a busy browser tab) is well above 10%.
/// - **Disk I/O 1 MiB/s** over a minute. An idle desktop writes logs and
///   caches, kilobytes per second; an update, an indexer or a virus scan
///   reads or writes megabytes per second, and on the server every block
///   it reads for the first time is a fetch from the desktop.
/// - **Dirty pages 4 MiB/s.** The measure comes in whole MiB/s from a
///   page sample, so the limit sits a few steps above what a quiet guest
///   shows (0 or 1). 4 MiB/s is already 240 MiB a minute: a VM writing
///   more would soon have fetched much of its RAM from the desktop and
///   would hand a large dirty set back at reintegration, which is what
///   partial migration exists to avoid.
/// - **Window 60 s**, the "last minute" CPU and I/O are averaged over:
///   long enough that a short burst (a notification, a cron job) does not
///   veto consolidation, short enough to follow the user's idle timer.
///
/// In a TOML config, all fields are optional (missing ones take these
/// defaults) and the window is given in seconds as `window_secs`:
///
/// ```toml
/// max_cpu_percent = 10.0
/// max_io_bytes_per_sec = 1048576
/// max_dirty_mib_per_sec = 4.0
/// window_secs = 60
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleThresholds {
    /// Highest CPU use over the window, in percent of one host core.
    pub max_cpu_percent: f64,
    /// Highest disk read plus write rate over the window, in bytes/s.
    pub max_io_bytes_per_sec: f64,
    /// Highest dirty-page rate, in MiB/s.
    pub max_dirty_mib_per_sec: f64,
    /// How far back CPU and I/O are averaged (`window_secs` in a config).
    #[serde(rename = "window_secs", deserialize_with = "seconds")]
    pub window: Duration,
}

impl Default for IdleThresholds {
    fn default() -> IdleThresholds {
        IdleThresholds {
            max_cpu_percent: 10.0,
            max_io_bytes_per_sec: 1024.0 * 1024.0,
            max_dirty_mib_per_sec: 4.0,
            window: DEFAULT_WINDOW,
        }
    }
}

/// A duration given as a number of seconds (fractions allowed).
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|err| serde::de::Error::custom(format!("window_secs = {secs}: {err} (give seconds, e.g. 60)")))
}

/// The figures an idleness verdict was based on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// CPU use over [`span`](Self::span), in percent of one host core.
    pub cpu_percent: f64,
    /// Disk bytes read and written per second over [`span`](Self::span).
    pub io_bytes_per_sec: f64,
    /// The dirty-page rate.
    pub dirty: DirtyRate,
    /// What CPU and I/O were measured over.
    pub span: Duration,
    /// What they should have been measured over; more than `span` when
    /// the verdict came before the window filled.
    pub window: Duration,
}

impl Measured {
    /// Whether CPU and I/O were measured over less than the whole window.
    pub fn is_partial(&self) -> bool {
        self.span < self.window
    }
}

impl fmt::Display for Measured {
    /// E.g. `CPU 2.1% of a core and disk I/O 0 B/s over 60 s, dirty pages 0 MiB/s over 1 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU {:.1}% of a core and disk I/O {} over {}, dirty pages {} MiB/s over {}",
            self.cpu_percent,
            Rate(self.io_bytes_per_sec),
            Secs(self.span),
            self.dirty.mib_per_sec,
            Secs(self.dirty.period),
        )?;
        if self.is_partial() {
            write!(f, " (only {} of the {} window measured so far)", Secs(self.span), Secs(self.window))?;
        }
        Ok(())
    }
}

/// Whether a VM may be consolidated.
#[derive(Debug, Clone, PartialEq)]
pub enum IdleVerdict {
    /// Every measure is within its limit over the whole window; the
    /// figures, for the log.
    Idle(Measured),
    /// Some measure is over its limit, or there was too little to judge
    /// on: a sentence naming the VM, the measure, its value and limit, and
    /// what to do.
    Busy(String),
}

impl IdleVerdict {
    /// Whether the verdict allows consolidation.
    pub fn is_idle(&self) -> bool {
        matches!(self, IdleVerdict::Idle(_))
    }
}

/// Judges whether VM `vm` is idle: CPU and I/O over `window` and `dirty`,
/// against `thresholds`.
///
/// A window with fewer than two samples cannot be judged, and one not yet
/// filled cannot be judged idle: both are refused as [`IdleVerdict::Busy`]
/// saying so (the latter with the figures so far and how long to wait).
pub fn judge(vm: &str, window: &VmLoadWindow, dirty: DirtyRate, thresholds: &IdleThresholds) -> IdleVerdict {
    const WHAT_TO_DO: &str = "try again when it is quiet, or use --force";
    let (Some(cpu_percent), Some(io_bytes_per_sec)) = (window.cpu_percent(), window.io_bytes_per_sec()) else {
        return IdleVerdict::Busy(format!(
            "{vm} cannot be judged idle: its CPU and I/O have not been sampled twice yet \
             (the idleness check samples QEMU over {}); try again once it has, or use --force",
            Secs(thresholds.window)
        ));
    };
    let measured = Measured { cpu_percent, io_bytes_per_sec, dirty, span: window.span(), window: thresholds.window };
    let span = Secs(measured.span);
    let mut over = Vec::new();
    if cpu_percent > thresholds.max_cpu_percent {
        over.push(format!(
            "its CPU use is {cpu_percent:.1}% of a core over {span} (limit {}%)",
            thresholds.max_cpu_percent
        ));
    }
    if io_bytes_per_sec > thresholds.max_io_bytes_per_sec {
        over.push(format!(
            "its disk I/O is {} over {span} (limit {})",
            Rate(io_bytes_per_sec),
            Rate(thresholds.max_io_bytes_per_sec)
        ));
    }
    if dirty.mib_per_sec > thresholds.max_dirty_mib_per_sec {
        over.push(format!(
            "its dirty-page rate is {} MiB/s over {} (limit {} MiB/s)",
            dirty.mib_per_sec,
            Secs(dirty.period),
            thresholds.max_dirty_mib_per_sec
        ));
    }
    if over.is_empty() && measured.is_partial() {
        // Within the limits so far, but a VM is idle over the whole window:
        // right after it starts or comes home, a lull of seconds says little.
        let left = thresholds.window.saturating_sub(measured.span);
        return IdleVerdict::Busy(format!(
            "{vm} cannot be judged idle yet: {measured}; it is judged over the whole window: \
             try again in {}, or use --force",
            Secs(Duration::from_secs(left.as_secs_f64().ceil() as u64))
        ));
    }
    if over.is_empty() {
        return IdleVerdict::Idle(measured);
    }
    let partial = if measured.is_partial() {
        format!(" (only {span} of the {} window measured so far)", Secs(measured.window))
    } else {
        String::new()
    };
    IdleVerdict::Busy(format!("{vm} is not idle: {}{partial}; {WHAT_TO_DO}", over.join(", and ")))
}

/// A duration in seconds for messages: `60 s`, `4.5 s`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if (secs - secs.round()).abs() < 0.05 {
            write!(f, "{secs:.0} s")
        } else {
            write!(f, "{secs:.1} s")
        }
    }
}

/// A byte rate for messages, in the largest binary unit under which it is
/// at least 1: `0 B/s`, `12.5 KiB/s`, `3.0 MiB/s`.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB/s", "MiB/s", "GiB/s", "TiB/s"];
        let mut value = self.0;
        if value < 1024.0 {
            return write!(f, "{value:.0} B/s");
        }
        let mut unit = UNITS[0];
        for next in UNITS {
            unit = next;
            value /= 1024.0;
            if value < 1024.0 {
                break;
            }
        }
        write!(f, "{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn sample(start: Instant, at_secs: u64, cpu_ms: u64, disk_bytes: u64) -> VmLoadSample {
        VmLoadSample {
            taken: start + Duration::from_secs(at_secs),
            cpu_time: Duration::from_millis(cpu_ms),
            disk_bytes,
        }
    }

    fn dirty(mib_per_sec: f64) -> DirtyRate {
        DirtyRate { mib_per_sec, period: Duration::from_secs(1) }
    }

    /// A window of `length_secs` fed a sample every 10 s for `until_secs`,
    /// using `cpu_ms_per_sec` of CPU and `io_per_sec` disk bytes each second.
    fn steady(length_secs: u64, until_secs: u64, cpu_ms_per_sec: u64, io_per_sec: u64) -> VmLoadWindow {
        let start = Instant::now();
        let mut window = VmLoadWindow::new(Duration::from_secs(length_secs));
        for t in (0..=until_secs).step_by(10) {
            window.push(sample(start, t, t * cpu_ms_per_sec, t * io_per_sec));
        }
        window
    }

    #[test]
    fn stat_fields_are_found_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 5 0 99 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(stat_cpu_ticks("4242 (qemu) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no name here"), None);
    }

    #[test]
    fn ticks_become_durations_at_the_clock_rate() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(ticks_to_duration(u64::MAX, 100).as_secs(), u64::MAX / 100);
    }

    #[test]
    fn disk_bytes_sum_reads_and_writes_of_top_level_devices_only() {
        let reply = json!([
            { "device": "", "qdev": "vda", "stats": { "rd_bytes": 1000, "wr_bytes": 24 },
              "parent": { "stats": { "rd_bytes": 7777, "wr_bytes": 7777 } } },
            { "device": "", "qdev": "vdb", "stats": { "rd_bytes": 0, "wr_bytes": 2 } },
        ]);
        assert_eq!(disk_bytes(&reply), 1026);
        assert_eq!(disk_bytes(&json!([])), 0);
    }

    #[test]
    fn rates_need_two_samples_apart_in_time() {
        let start = Instant::now();
        let mut window = VmLoadWindow::new(Duration::from_secs(60));
        assert_eq!(window.cpu_percent(), None);
        window.push(sample(start, 5, 100, 0));
        assert_eq!((window.cpu_percent(), window.io_bytes_per_sec()), (None, None));
        window.push(sample(start, 5, 200, 0));
        assert_eq!(window.cpu_percent(), None, "two samples at the same instant span nothing");
    }

    #[test]
    fn cpu_percent_and_io_rate_are_taken_over_the_samples_span() {
        // 250 ms of CPU per second is 25% of a core.
        let window = steady(60, 30, 250, MIB);
        assert_eq!(window.span(), Duration::from_secs(30));
        assert!(!window.is_full());
        assert!((window.cpu_percent().unwrap() - 25.0).abs() < 1e-9);
        assert!((window.io_bytes_per_sec().unwrap() - MIB as f64).abs() < 1e-6);
    }

    #[test]
    fn the_window_slides_but_keeps_a_baseline_at_or_before_its_start() {
        let window = steady(60, 200, 100, 0);
        let kept: Vec<_> = window.samples().map(|s| s.cpu_time.as_millis() / 100).collect();
        // Samples every 10 s up to 200 s, a 60 s window: 140 is its start.
        assert_eq!(kept, [140, 150, 160, 170, 180, 190, 200]);
        assert!(window.is_full());
        assert_eq!(window.span(), Duration::from_secs(60));

        // Between samples the baseline is the last one before the start.
        let start = Instant::now();
        let mut window = VmLoadWindow::new(Duration::from_secs(60));
        for t in [0, 25, 50, 75] {
            window.push(sample(start, t, 0, 0));
        }
        assert_eq!(window.span(), Duration::from_secs(75));
        window.push(sample(start, 100, 0, 0));
        assert_eq!(window.span(), Duration::from_secs(100 - 25));
    }

    #[test]
    fn a_burst_that_left_the_window_no_longer_counts() {
        let start = Instant::now();
        let mut window = VmLoadWindow::new(Duration::from_secs(60));
        // Busy for the first 10 s (one full core), then idle.
        window.push(sample(start, 0, 0, 0));
        window.push(sample(start, 10, 10_000, 0));
        assert!((window.cpu_percent().unwrap() - 100.0).abs() < 1e-9);
        for t in (20..=80).step_by(10) {
            window.push(sample(start, t, 10_000, 0));
        }
        assert_eq!(window.cpu_percent(), Some(0.0));
    }

    #[test]
    fn counters_going_backwards_count_as_nothing_and_old_samples_are_ignored() {
        let start = Instant::now();
        let mut window = VmLoadWindow::new(Duration::from_secs(60));
        window.push(sample(start, 0, 500, 10 * MIB));
        window.push(sample(start, 10, 400, MIB));
        window.push(sample(start, 5, 0, 0));
        assert_eq!(window.samples().count(), 2);
        assert_eq!((window.cpu_percent(), window.io_bytes_per_sec()), (Some(0.0), Some(0.0)));
    }

    #[test]
    fn a_quiet_vm_is_idle_and_the_verdict_carries_the_figures() {
        let window = steady(60, 60, 20, 2048);
        let verdict = judge("vm1", &window, dirty(0.0), &IdleThresholds::default());
        let IdleVerdict::Idle(measured) = verdict else { panic!("expected idle, got {verdict:?}") };
        assert!((measured.cpu_percent - 2.0).abs() < 1e-9);
        assert!(!measured.is_partial());
        assert_eq!(
            measured.to_string(),
            "CPU 2.0% of a core and disk I/O 2.0 KiB/s over 60 s, dirty pages 0 MiB/s over 1 s"
        );
    }

    #[test]
    fn a_quiet_partial_window_is_not_yet_idle_and_says_how_long_to_wait() {
        let window = steady(60, 20, 20, 0);
        let verdict = judge("vm1", &window, dirty(1.0), &IdleThresholds::default());
        assert_eq!(
            verdict,
            IdleVerdict::Busy(
                "vm1 cannot be judged idle yet: CPU 2.0% of a core and disk I/O 0 B/s over 20 s, dirty pages \
                 1 MiB/s over 1 s (only 20 s of the 60 s window measured so far); it is judged over the whole \
                 window: try again in 40 s, or use --force"
                    .into()
            )
        );
    }

    #[test]
    fn a_busy_verdict_names_the_measure_its_value_the_limit_and_what_to_do() {
        let window = steady(60, 60, 20, 0);
        let verdict = judge(
            "vm1",
            &window,
            DirtyRate { mib_per_sec: 38.0, period: Duration::from_secs(1) },
            &IdleThresholds::default(),
        );
        assert_eq!(
            verdict,
            IdleVerdict::Busy(
                "vm1 is not idle: its dirty-page rate is 38 MiB/s over 1 s (limit 4 MiB/s); \
                 try again when it is quiet, or use --force"
                    .into()
            )
        );
    }

    #[test]
    fn a_busy_verdict_lists_every_measure_over_its_limit_and_a_partial_window() {
        let window = steady(60, 30, 875, 3 * MIB);
        let verdict = judge("desk-7", &window, dirty(12.0), &IdleThresholds::default());
        assert!(!verdict.is_idle());
        assert_eq!(
            verdict,
            IdleVerdict::Busy(
                "desk-7 is not idle: its CPU use is 87.5% of a core over 30 s (limit 10%), \
                 and its disk I/O is 3.0 MiB/s over 30 s (limit 1.0 MiB/s), \
                 and its dirty-page rate is 12 MiB/s over 1 s (limit 4 MiB/s) \
                 (only 30 s of the 60 s window measured so far); try again when it is quiet, or use --force"
                    .into()
            )
        );
    }

    #[test]
    fn a_measure_exactly_at_its_limit_is_idle() {
        let window = steady(60, 60, 100, MIB);
        assert!(judge("vm1", &window, dirty(4.0), &IdleThresholds::default()).is_idle());
    }

    #[test]
    fn an_unsampled_vm_is_refused_with_the_reason() {
        let verdict = judge("vm1", &VmLoadWindow::default(), dirty(0.0), &IdleThresholds::default());
        let IdleVerdict::Busy(text) = verdict else { panic!("expected a refusal, got {verdict:?}") };
        assert!(text.starts_with("vm1 cannot be judged idle: its CPU and I/O have not been sampled twice"), "{text}");
        assert!(text.contains("60 s") && text.contains("--force"), "{text}");
    }

    #[test]
    fn the_dirty_rate_is_read_only_once_measured() {
        let measuring = json!({ "status": "measuring", "calc-time": 1000, "sample-pages": 4096 });
        assert_eq!(measured_dirty_rate(&measuring), None);
        let measured =
            json!({ "status": "measured", "dirty-rate": 17, "calc-time": 1003, "calc-time-unit": "millisecond" });
        assert_eq!(
            measured_dirty_rate(&measured),
            Some(DirtyRate { mib_per_sec: 17.0, period: Duration::from_millis(1003) })
        );
    }

    #[test]
    fn thresholds_come_from_a_config_with_defaults_for_missing_fields() {
        let parsed: IdleThresholds =
            serde_json::from_value(json!({ "max_cpu_percent": 25, "window_secs": 90.5 })).unwrap();
        assert_eq!(
            parsed,
            IdleThresholds {
                max_cpu_percent: 25.0,
                window: Duration::from_millis(90_500),
                ..IdleThresholds::default()
            }
        );
        assert!(serde_json::from_value::<IdleThresholds>(json!({ "max_cpu": 25 })).is_err(), "typos are refused");
        let negative = serde_json::from_value::<IdleThresholds>(json!({ "window_secs": -1 })).unwrap_err();
        assert!(negative.to_string().contains("window_secs = -1"), "{negative}");
    }

    #[test]
    fn rates_print_in_binary_units() {
        assert_eq!(Rate(0.0).to_string(), "0 B/s");
        assert_eq!(Rate(1023.0).to_string(), "1023 B/s");
        assert_eq!(Rate(12.5 * 1024.0).to_string(), "12.5 KiB/s");
        assert_eq!(Rate(3.0 * MIB as f64).to_string(), "3.0 MiB/s");
        assert_eq!(Secs(Duration::from_millis(4500)).to_string(), "4.5 s");
        assert_eq!(Secs(Duration::from_millis(60_020)).to_string(), "60 s");
    }
}
