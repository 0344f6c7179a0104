//! The host's measured CPU energy: Intel RAPL through the kernel's powercap
//! interface, and the host's busy CPU time it paid for.
//!
//! Each CPU package is a zone `intel-rapl:<n>` under `/sys/class/powercap`
//! with a counter `energy_uj` (microjoules since some origin) that wraps at
//! `max_energy_range_uj`. Sub-zones (`intel-rapl:<n>:<m>`: cores, DRAM)
//! are parts of their package and are not added again. The counters are
//! root-only readable on kernels since 5.10 (CVE-2020-8694); a server
//! daemon that runs as root reads them, anything else falls back to the
//! configured profile.
//!
//! RAPL sees the processors (and on some parts the DRAM), not the power
//! supply, fans and disks: the server ledger takes only the *active* part
//! from it (the energy above the lowest power seen) and keeps the profile's
//! idle power for the whole box.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel shows its power-capping zones.
pub const POWERCAP_DIR: &str = "/sys/class/powercap";

/// One package's counter and its last reading.
#[derive(Debug)]
struct Zone {
    energy: PathBuf,
    max_range_uj: u64,
    last_uj: u64,
}

/// The CPU packages' energy counters.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<Zone>,
}

/// Why RAPL cannot be read here.
#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    /// The powercap directory cannot be listed.
    #[error("cannot list {dir} (no powercap support in this kernel?)")]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No package zone is there.
    #[error(
        "{dir} has no intel-rapl:<n> package zone (no RAPL on this CPU, or the intel_rapl_common module is not loaded)"
    )]
    NoZone {
        /// The directory.
        dir: PathBuf,
    },
    /// A zone's counter cannot be read.
    #[error(
        "cannot read {path} (it is root-only readable: run the server daemon as root, or set source = \"profile\")"
    )]
    ReadCounter {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl Rapl {
    /// Opens every package zone under `dir` (normally [`POWERCAP_DIR`])
    /// and takes a first reading of each.
    ///
    /// # Errors
    /// [`RaplError`] naming the directory or the counter that failed.
    pub fn open(dir: &Path) -> Result<Rapl, RaplError> {
        let entries = fs::read_dir(dir).map_err(|source| RaplError::ListDir { dir: dir.to_owned(), source })?;
        let mut packages: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("intel-rapl:").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|e| e.path())
            .collect();
        packages.sort();
        if packages.is_empty() {
            return Err(RaplError::NoZone { dir: dir.to_owned() });
        }
        let zones = packages
            .into_iter()
            .map(|zone| {
                let energy = zone.join("energy_uj");
                let max_range_uj = read_counter(&zone.join("max_energy_range_uj"))?;
                let last_uj = read_counter(&energy)?;
                Ok(Zone { energy, max_range_uj, last_uj })
            })
            .collect::<Result<_, RaplError>>()?;
        Ok(Rapl { zones })
    }

    /// Joules all packages used since the last reading (or the opening). A
    /// counter that went down wrapped at its range once.
    ///
    /// # Errors
    /// [`RaplError::ReadCounter`]; the readings of the other zones are kept.
    pub fn joules_since_last(&mut self) -> Result<f64, RaplError> {
        let mut microjoules = 0u64;
        for zone in &mut self.zones {
            let now = read_counter(&zone.energy)?;
            let used = if now >= zone.last_uj {
                now - zone.last_uj
            } else {
                zone.max_range_uj.saturating_sub(zone.last_uj).saturating_add(now)
            };
            zone.last_uj = now;
            microjoules = microjoules.saturating_add(used);
        }
        Ok(microjoules as f64 / 1e6)
    }
}

fn read_counter(path: &Path) -> Result<u64, RaplError> {
    let error = |source| RaplError::ReadCounter { path: path.to_owned(), source };
    fs::read_to_string(path)
        .map_err(error)?
        .trim()
        .parse()
        .map_err(|e| error(io::Error::new(io::ErrorKind::InvalidData, format!("not a counter: {e}"))))
}

/// The host's busy CPU time so far, seconds: every state of the `cpu` line
/// of `/proc/stat` but idle and iowait (guest time is already counted in
/// user time). `None` if it cannot be read.
pub fn host_busy_cpu_secs() -> Option<f64> {
    busy_from_proc_stat(&fs::read_to_string("/proc/stat").ok()?, qemu_driver::clock_ticks_per_sec() as f64)
}

fn busy_from_proc_stat(stat: &str, hz: f64) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy as f64 / hz)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn zone(dir: &Path, name: &str, energy: u64, range: u64) -> PathBuf {
        let zone = dir.join(name);
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("energy_uj"), format!("{energy}\n")).unwrap();
        fs::write(zone.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
        zone
    }

    #[test]
    fn packages_add_up_and_a_wrapped_counter_counts_once_round() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = zone(dir.path(), "intel-rapl:0", 1_000_000, 10_000_000);
        let p1 = zone(dir.path(), "intel-rapl:1", 9_500_000, 10_000_000);
        // A sub-zone is part of package 0: never added again.
        zone(dir.path(), "intel-rapl:0:0", 0, 10_000_000);
        let mut rapl = Rapl::open(dir.path()).unwrap();
        fs::write(p0.join("energy_uj"), "3000000").unwrap();
        // 9.5 J -> wraps at 10 J -> 1.5 J: 2 J used.
        fs::write(p1.join("energy_uj"), "1500000").unwrap();
        assert_eq!(rapl.joules_since_last().unwrap(), 4.0);
        assert_eq!(rapl.joules_since_last().unwrap(), 0.0, "no use since");
    }

    #[test]
    fn no_zone_or_an_unreadable_counter_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Rapl::open(dir.path()).unwrap_err();
        assert!(matches!(err, RaplError::NoZone { .. }), "{err}");
        let p0 = zone(dir.path(), "intel-rapl:0", 1, 10);
        fs::remove_file(p0.join("energy_uj")).unwrap();
        let err = Rapl::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("intel-rapl:0/energy_uj") && err.contains("source = \"profile\""), "{err}");
        assert!(matches!(Rapl::open(&dir.path().join("absent")), Err(RaplError::ListDir { .. })));
    }

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 5000 40 5 5 0 0 0\ncpu0 50 10 15 2500 20 2 3 0 0 0\n";
        assert_eq!(busy_from_proc_stat(stat, 100.0), Some(1.6));
        assert_eq!(busy_from_proc_stat("intr 1 2\n", 100.0), None);
    }
}
