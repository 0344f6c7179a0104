//! The file format, version 1: text, one line per request, comma-separated.
//!
//! ```text
//! jettison-fetch-trace 1 started_unix=1764571200 started_boottime_ns=90210000000
//! device,unit,cause,faulting,units,requests,asked_ns,answered_ns
//! memory,52311,fault,1,21,1,90212345678,90212401234
//! disk,8,fault,2,2,1,90213000000,90213004000
//! memory,901,fault,1,21,1,90300000000,failed
//! # totals memory_requests=2 memory_units=21 disk_requests=1 disk_units=2 dropped=0 closed_boottime_ns=90900000000
//! ```
//!
//! - **Header line**: the magic word [`MAGIC`], the format version, when the
//!   trace was started in seconds since the Unix epoch and on
//!   `CLOCK_BOOTTIME` (so a reader can place requests on the wall clock).
//!   A reader refuses a version it does not know.
//! - **Column line**: the names below, as written; a reader checks them.
//! - **A request line** per batch of units sent to the desktop:
//!   - `device`: `memory` (memtap, units are 4 KiB pages) or `disk`
//!     (cownetdisk, units are its blocks);
//!   - `unit`: the first unit that triggered the request (the lowest
//!     faulting page, the lowest block the NBD request lacked);
//!   - `cause`: `fault` (a guest access needed it) or `prefetch` (units
//!     nothing asked for yet; not written by this version of memtap, which
//!     only prefetches inside a fault's request);
//!   - `faulting`: how many units of the request a guest access needed;
//!   - `units`: how many units came in all (faulting plus the pivot window
//!     memtap added around them);
//!   - `requests`: wire requests it took (a large batch is split to stay
//!     within the wire protocol's limits);
//!   - `asked_ns`: `CLOCK_BOOTTIME` in nanoseconds, taken **before** the
//!     wake-up hook ran (the hook may wait seconds for the desktop to
//!     resume: that wait is part of the request);
//!   - `answered_ns`: `CLOCK_BOOTTIME` when the last answer arrived, or
//!     `failed` when the request ended without one (desktop unreachable,
//!     cancelled).
//! - **Comment lines** start with `#`. One is meaningful: the **totals**
//!   line the storage process writes when it closes the trace at the end
//!   of a stay, with the counters memtap and cownetdisk report in `status`
//!   (requests and units fetched), how many request lines were dropped
//!   because the file reached its size cap, and when the trace was closed
//!   on `CLOCK_BOOTTIME` (the end of the stay, which the last request line
//!   does not tell: an idle VM may fetch nothing for hours before it goes
//!   home).
//!
//! Lines are written whole, one `write` each, to a file opened for
//! appending, so a crash leaves at most the last line torn: a reader
//! ignores a last line without its newline, with a note. Any other line it
//! cannot read is an error (the file is not a trace, or is damaged).
//!
//! Several writers (memtap's worker threads, cownetdisk's connections)
//! share one file; their lines are in the order they were *written*
//! (answers), so `asked_ns` is not sorted in the file. A reader sorts.

use std::fmt;
use std::str::FromStr;

/// The first word of a trace file.
pub const MAGIC: &str = "jettison-fetch-trace";
/// The version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The column line.
pub(crate) const COLUMNS: &str = "device,unit,cause,faulting,units,requests,asked_ns,answered_ns";
/// The start of the totals comment.
pub(crate) const TOTALS: &str = "# totals ";

/// What the units of a request are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// Guest RAM pages (memtap).
    Memory,
    /// Disk blocks (cownetdisk).
    Disk,
}

impl Device {
    fn as_str(self) -> &'static str {
        match self {
            Device::Memory => "memory",
            Device::Disk => "disk",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(Device::Memory),
            "disk" => Ok(Device::Disk),
            other => Err(format!("unknown device {other:?}")),
        }
    }
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A guest access needed (some of) its units.
    Fault,
    /// Nothing needed its units yet.
    Prefetch,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Fault => "fault",
            Cause::Prefetch => "prefetch",
        })
    }
}

impl FromStr for Cause {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fault" => Ok(Cause::Fault),
            "prefetch" => Ok(Cause::Prefetch),
            other => Err(format!("unknown cause {other:?}")),
        }
    }
}

/// One request to the desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Memory or disk.
    pub device: Device,
    /// The first unit that triggered it.
    pub unit: u64,
    /// Fault or prefetch.
    pub cause: Cause,
    /// Units a guest access needed.
    pub faulting: u64,
    /// Units that came in all.
    pub units: u64,
    /// Wire requests it took.
    pub requests: u64,
    /// `CLOCK_BOOTTIME` (ns) before the wake-up hook ran.
    pub asked_ns: u64,
    /// `CLOCK_BOOTTIME` (ns) when the answer arrived; `None`: it failed.
    pub answered_ns: Option<u64>,
}

impl Fetch {
    /// The request line, with its newline.
    pub(crate) fn line(&self) -> String {
        let answered = match self.answered_ns {
            Some(ns) => ns.to_string(),
            None => "failed".to_owned(),
        };
        format!(
            "{},{},{},{},{},{},{},{}\n",
            self.device, self.unit, self.cause, self.faulting, self.units, self.requests, self.asked_ns, answered
        )
    }

    /// Reads a request line (without its newline).
    pub(crate) fn parse_line(line: &str) -> Result<Fetch, String> {
        let fields: Vec<&str> = line.split(',').collect();
        let [device, unit, cause, faulting, units, requests, asked, answered] = fields[..] else {
            return Err(format!("{} fields, not 8", fields.len()));
        };
        let number = |name: &str, s: &str| s.parse::<u64>().map_err(|e| format!("{name} {s:?}: {e}"));
        let answered_ns = match answered {
            "failed" => None,
            s => Some(number("answered_ns", s)?),
        };
        let fetch = Fetch {
            device: device.parse()?,
            unit: number("unit", unit)?,
            cause: cause.parse()?,
            faulting: number("faulting", faulting)?,
            units: number("units", units)?,
            requests: number("requests", requests)?,
            asked_ns: number("asked_ns", asked)?,
            answered_ns,
        };
        if fetch.faulting > fetch.units {
            return Err(format!("{} faulting units of {}", fetch.faulting, fetch.units));
        }
        if fetch.answered_ns.is_some_and(|a| a < fetch.asked_ns) {
            return Err("answered before it was asked".to_owned());
        }
        Ok(fetch)
    }

    /// Whether the desktop answered.
    pub fn answered(&self) -> bool {
        self.answered_ns.is_some()
    }
}

/// The counters of the stay as memtap and cownetdisk report them, written
/// when the trace is closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// memtap's requests to memserv (`remote_fetches`).
    pub memory_requests: u64,
    /// Pages memtap received (`pages_fetched`).
    pub memory_units: u64,
    /// cownetdisk's requests to diskserv.
    pub disk_requests: u64,
    /// Blocks cownetdisk received.
    pub disk_units: u64,
    /// Request lines not written: the file had reached its cap.
    pub dropped: u64,
    /// `CLOCK_BOOTTIME` (ns) when the trace was closed: the stay's end.
    pub closed_boottime_ns: u64,
}

impl Totals {
    pub(crate) fn line(&self) -> String {
        format!(
            "{TOTALS}memory_requests={} memory_units={} disk_requests={} disk_units={} dropped={} closed_boottime_ns={}\n",
            self.memory_requests,
            self.memory_units,
            self.disk_requests,
            self.disk_units,
            self.dropped,
            self.closed_boottime_ns
        )
    }

    pub(crate) fn parse_line(rest: &str) -> Result<Totals, String> {
        let mut totals = Totals::default();
        for pair in rest.split_whitespace() {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let value: u64 = value.parse().map_err(|e| format!("{key}: {e}"))?;
            match key {
                "memory_requests" => totals.memory_requests = value,
                "memory_units" => totals.memory_units = value,
                "disk_requests" => totals.disk_requests = value,
                "disk_units" => totals.disk_units = value,
                "dropped" => totals.dropped = value,
                "closed_boottime_ns" => totals.closed_boottime_ns = value,
                // Later versions may add counters: ignored, not refused.
                _ => {}
            }
        }
        Ok(totals)
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: monotonic, and counting the time
/// the machine was suspended.
pub fn boottime_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME exists on every Linux since 2.6.39");
    (now.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec() as u64)
}

/// The header line, with its newline.
pub(crate) fn header(started_unix: u64, started_boottime_ns: u64) -> String {
    format!("{MAGIC} {FORMAT_VERSION} started_unix={started_unix} started_boottime_ns={started_boottime_ns}\n")
}
