//! The server's energy ledger: its power split across the VMs it hosts,
//! each VM's net saving, and the check that refuses a VM that would cost
//! more than it saves (`[energy]` in server.toml).
//!
//! Every watch tick the daemon samples each running VM ([`VmSample`]): the
//! CPU time of its QEMU and its storage process (memtap and cownetdisk)
//! from `/proc/<pid>/stat`, the memory it claims (the larger of what it
//! holds and what it was expected to need, as the capacity check counts
//! it), and the bytes fetched from its desktop. [`ServerLedger::tick`]
//! splits the tick's energy across them with [`power::server::split`]:
//! active by CPU time (modelled from the profile, or measured by RAPL,
//! [`crate::rapl`]), idle by memory, network by bytes. The bytes sent home
//! at reintegration are charged as they go.
//!
//! What a desktop saved is estimated, not measured: the server sees only
//! the requests that reach the desktop. Each tick in which the VM fetched
//! is one request at that tick; at report time the stay's requests are
//! replayed through the desktops' profile and wait
//! ([`power::simulate::simulate`]), the same simulated desktop the energy
//! benchmark uses. A desktop the server has no way to wake (its daemon
//! sent no MAC) never sleeps and saves nothing. The estimate is coarse in
//! time (a tick, 2 s, against a 6 s wait) and exact in its rules.
//!
//! Each stay's account is appended, when the VM goes home, to
//!
//! ```text
//! <state_dir>/energy/<desktop>/<vm>.jsonl     one JSON object per stay (StayRecord)
//! ```
//!
//! kept with the server's other history and read back by the profitability
//! check: a VM's past stays say what it costs and saves per second. The
//! account of a stay still open lives in memory: a daemon restarted while
//! a VM is here accounts it from the restart on.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_protocol::local::{ServerEnergy, VmEnergy};
use power::server::{self, ActiveEnergy, Interval, ServerProfile, ServerShare, VmUsage};
use power::simulate::{simulate, SimConfig};
use power::trace::RequestTrace;
use power::{MicrosleepPolicy, PowerProfile};
use serde::{Deserialize, Serialize};

use crate::config::{EnergyConfig, EnergySource};
use crate::error::ServerError;
use crate::key::VmKey;
use crate::rapl::{self, Rapl};

const MIB: f64 = 1024.0 * 1024.0;

/// One running VM at a watch tick.
#[derive(Debug, Clone)]
pub struct VmSample {
    /// The VM.
    pub key: VmKey,
    /// CPU time of its QEMU and its storage process so far; `None` when
    /// either could not be read (the tick charges it none).
    pub cpu: Option<Duration>,
    /// Memory it claims on the server, bytes.
    pub memory_bytes: u64,
    /// Bytes fetched from its desktop so far in this stay.
    pub fetched_bytes: u64,
    /// Whether the server wakes its desktop before fetches (so it sleeps).
    pub desktop_sleeps: bool,
}

/// Where the active energy of a tick comes from.
#[derive(Debug)]
enum Meter {
    /// The profile: a CPU-second costs this many joules.
    Profile { joules_per_cpu_second: f64 },
    /// RAPL: the packages' energy above the lowest power seen, split by
    /// the VMs' part of the host's busy CPU time.
    Rapl { rapl: Rapl, floor_watts: Option<f64>, host_busy: Option<f64> },
}

/// One VM's stay so far.
#[derive(Debug)]
struct Stay {
    began_unix: u64,
    began: Instant,
    /// The CPU time and fetched bytes of the last sample.
    cpu_seen: Duration,
    fetched_seen: u64,
    cpu_secs: f64,
    network_bytes: u64,
    share: ServerShare,
    /// Seconds from `began` of the ticks in which the desktop was asked
    /// for something.
    requests: Vec<f64>,
    desktop_sleeps: bool,
}

impl Stay {
    fn new(began: Instant, sample: Option<&VmSample>, desktop_sleeps: bool) -> Stay {
        Stay {
            began_unix: unix_now(),
            began,
            cpu_seen: sample.and_then(|s| s.cpu).unwrap_or_default(),
            fetched_seen: sample.map_or(0, |s| s.fetched_bytes),
            cpu_secs: 0.0,
            network_bytes: 0,
            share: ServerShare::default(),
            requests: Vec::new(),
            desktop_sleeps,
        }
    }
}

/// One stay as kept in the VM's energy history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StayRecord {
    /// When it began, seconds since the epoch.
    pub began_unix: u64,
    /// When it ended.
    pub ended_unix: u64,
    /// `profile` or `rapl`.
    pub source: String,
    /// Its account.
    #[serde(flatten)]
    pub energy: VmEnergy,
}

/// Why a VM is refused as unprofitable: the figures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "it would cost more than it saves: its share of this server would be {share:.2} W ({idle:.2} W of the \
     {server_idle:.1} W idle power for its {expected:.1} MiB of the {total:.1} MiB the hosted VMs would claim, \
     {variable:.2} W of CPU and network {variable_from}), against {saving:.2} W its desktop saves ({saving_from}); \
     each VM pays off once about {break_even} share the server; set refuse_unprofitable = false in [energy] to \
     take it anyway",
    expected = *expected_bytes as f64 / MIB,
    total = *total_bytes as f64 / MIB,
    variable_from = if *from_history { "from its past stays" } else { "(none known: no past stays here)" },
    saving_from = if *from_history { "from its past stays" } else { "asleep all the time, the best case" }
)]
pub struct Unprofitable {
    /// Its expected share, watts.
    pub share: f64,
    /// Of which idle, watts.
    pub idle: f64,
    /// The server's idle power, watts.
    pub server_idle: f64,
    /// The memory it is expected to claim, bytes.
    pub expected_bytes: u64,
    /// All VMs' claims with it, bytes.
    pub total_bytes: u64,
    /// Its CPU and network share, watts.
    pub variable: f64,
    /// What its desktop is expected to save, watts.
    pub saving: f64,
    /// Whether the figures come from its past stays.
    pub from_history: bool,
    /// VMs that must share the server before each pays off.
    pub break_even: u32,
}

/// The server's energy ledger.
#[derive(Debug)]
pub struct ServerLedger {
    server: ServerProfile,
    desktop: PowerProfile,
    desktop_wait_secs: f64,
    joules_per_byte: f64,
    refuse_unprofitable: bool,
    meter: Meter,
    last_tick: Option<Instant>,
    stays: BTreeMap<VmKey, Stay>,
    dir: PathBuf,
}

impl ServerLedger {
    /// A ledger for `config`, keeping its history under `state_dir`;
    /// RAPL is looked for in `powercap` ([`rapl::POWERCAP_DIR`]).
    ///
    /// # Errors
    /// [`ServerError::Rapl`] when `source = "rapl"` and RAPL cannot be read.
    pub fn new(config: &EnergyConfig, state_dir: &Path, powercap: &Path) -> Result<ServerLedger, ServerError> {
        let server = config.server();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let profile = Meter::Profile { joules_per_cpu_second: server.joules_per_cpu_second(cpus) };
        let measured = |rapl| Meter::Rapl { rapl, floor_watts: None, host_busy: rapl::host_busy_cpu_secs() };
        let meter = match config.source {
            EnergySource::Profile => profile,
            EnergySource::Rapl => {
                measured(Rapl::open(powercap).map_err(|source| ServerError::Rapl { source: Box::new(source) })?)
            }
            EnergySource::Auto => match Rapl::open(powercap) {
                Ok(found) => measured(found),
                Err(e) => {
                    tracing::info!(
                        "energy: no RAPL here ({}): the server's active power is modelled from busy_watts",
                        wire::chain(&e)
                    );
                    profile
                }
            },
        };
        let ledger = ServerLedger {
            server,
            desktop: config.desktop(),
            desktop_wait_secs: config.desktop_wait_secs,
            joules_per_byte: server::joules_per_byte(config.network_watts_per_gbit),
            refuse_unprofitable: config.refuse_unprofitable,
            meter,
            last_tick: None,
            stays: BTreeMap::new(),
            dir: state_dir.join("energy"),
        };
        tracing::info!(
            source = ledger.source(),
            idle_watts = server.idle_watts,
            busy_watts = server.busy_watts,
            "energy: {}",
            ledger.break_even_text()
        );
        Ok(ledger)
    }

    /// `profile` or `rapl`.
    pub fn source(&self) -> &'static str {
        match self.meter {
            Meter::Profile { .. } => "profile",
            Meter::Rapl { .. } => "rapl",
        }
    }

    /// "With 150.7 W idle, a VM pays off once about 3 share the server".
    pub fn break_even_text(&self) -> String {
        format!(
            "with {:.1} W idle, a VM pays off once about {} share the server (each desktop saves at most {:.2} W asleep)",
            self.server.idle_watts,
            self.server.break_even_vms(&self.desktop),
            self.desktop.idle_watts - self.desktop.sleep_watts
        )
    }

    /// `key`'s VM came at `now`: a new stay, its counters from zero.
    pub fn arrived(&mut self, key: &VmKey, desktop_sleeps: bool, now: Instant) {
        self.stays.insert(key.clone(), Stay::new(now, None, desktop_sleeps));
    }

    /// One watch tick at `now` with the running VMs' `samples`: the energy
    /// since the last tick split across them. A VM not seen before (taken
    /// over from an earlier daemon) starts its stay here, charged from the
    /// next tick.
    pub fn tick(&mut self, now: Instant, samples: &[VmSample]) {
        let secs = self.last_tick.map_or(0.0, |last| now.saturating_duration_since(last).as_secs_f64());
        self.last_tick = Some(now);
        let active = self.active_energy(secs);
        let mut charged = Vec::new();
        let mut usages = Vec::new();
        for sample in samples {
            let Some(stay) = self.stays.get_mut(&sample.key) else {
                self.stays.insert(sample.key.clone(), Stay::new(now, Some(sample), sample.desktop_sleeps));
                continue;
            };
            stay.desktop_sleeps = sample.desktop_sleeps;
            let cpu = sample.cpu.map_or(Duration::ZERO, |cpu| cpu.saturating_sub(stay.cpu_seen));
            stay.cpu_seen = sample.cpu.unwrap_or(stay.cpu_seen);
            let fetched = sample.fetched_bytes.saturating_sub(stay.fetched_seen);
            stay.fetched_seen = sample.fetched_bytes;
            if fetched > 0 {
                stay.requests.push(now.saturating_duration_since(stay.began).as_secs_f64());
            }
            charged.push(sample.key.clone());
            usages.push(VmUsage {
                cpu_secs: cpu.as_secs_f64(),
                memory_bytes: sample.memory_bytes,
                network_bytes: fetched,
            });
        }
        if secs <= 0.0 || usages.is_empty() {
            return;
        }
        let interval = Interval {
            idle_joules: self.server.idle_watts * secs,
            active,
            network_joules_per_byte: self.joules_per_byte,
        };
        for ((key, usage), share) in charged.iter().zip(&usages).zip(server::split(&interval, &usages)) {
            if let Some(stay) = self.stays.get_mut(key) {
                stay.cpu_secs += usage.cpu_secs;
                stay.network_bytes += usage.network_bytes;
                stay.share.add(&share);
            }
        }
    }

    /// The active energy of a tick of `secs`, from the meter.
    fn active_energy(&mut self, secs: f64) -> ActiveEnergy {
        match &mut self.meter {
            Meter::Profile { joules_per_cpu_second } => ActiveEnergy::PerCpuSecond(*joules_per_cpu_second),
            Meter::Rapl { rapl, floor_watts, host_busy } => {
                let busy_now = rapl::host_busy_cpu_secs();
                let host_cpu_secs = match (busy_now, *host_busy) {
                    (Some(now), Some(before)) => (now - before).max(0.0),
                    _ => 0.0,
                };
                *host_busy = busy_now.or(*host_busy);
                let joules = match rapl.joules_since_last() {
                    Ok(joules) => joules,
                    Err(e) => {
                        tracing::warn!("energy: {}; this tick charges no active energy", wire::chain(&e));
                        0.0
                    }
                };
                if secs <= 0.0 {
                    return ActiveEnergy::Measured { joules: 0.0, host_cpu_secs };
                }
                let floor = floor_watts.map_or(joules / secs, |floor| floor.min(joules / secs));
                *floor_watts = Some(floor);
                ActiveEnergy::Measured { joules: (joules - floor * secs).max(0.0), host_cpu_secs }
            }
        }
    }

    /// `bytes` sent home for `key` (its dirty state at reintegration).
    pub fn sent_home(&mut self, key: &VmKey, bytes: u64) {
        if let Some(stay) = self.stays.get_mut(key) {
            stay.network_bytes += bytes;
            stay.share.network_joules += bytes as f64 * self.joules_per_byte;
        }
    }

    /// Ends `key`'s stay at `now` and appends it to its history.
    ///
    /// # Errors
    /// [`ServerError::SaveEnergy`] naming the file; the stay is dropped.
    pub fn close(&mut self, key: &VmKey, now: Instant) -> Result<Option<StayRecord>, ServerError> {
        let Some(energy) = self.vm_energy(key, now) else { return Ok(None) };
        let stay = self.stays.remove(key).expect("vm_energy found it");
        let record = StayRecord {
            began_unix: stay.began_unix,
            ended_unix: unix_now(),
            source: self.source().to_owned(),
            energy,
        };
        let path = self.history_file(key);
        append_line(&path, &serde_json::to_vec(&record).expect("a stay record serialises"))
            .map_err(|source| ServerError::SaveEnergy { path, source })?;
        Ok(Some(record))
    }

    /// `key`'s stays kept so far, oldest first; lines that do not parse
    /// are skipped with a warning.
    pub fn history(&self, key: &VmKey) -> Vec<StayRecord> {
        let path = self.history_file(key);
        let Ok(file) = fs::File::open(&path) else { return Vec::new() };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| !line.trim().is_empty())
            .filter_map(|line| match serde_json::from_str(&line) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "energy: skipping an unreadable stay: {e}");
                    None
                }
            })
            .collect()
    }

    fn history_file(&self, key: &VmKey) -> PathBuf {
        self.dir.join(key.desktop.as_str()).join(format!("{}.jsonl", key.vm))
    }

    /// `key`'s account of its stay up to `now`.
    pub fn vm_energy(&self, key: &VmKey, now: Instant) -> Option<VmEnergy> {
        let stay = self.stays.get(key)?;
        let seconds = now.saturating_duration_since(stay.began).as_secs_f64();
        let desktop_saved_joules = if stay.desktop_sleeps { self.desktop_saved(seconds, &stay.requests) } else { 0.0 };
        let server_joules = stay.share.total();
        Some(VmEnergy {
            desktop: key.desktop.clone(),
            vm: key.vm.clone(),
            seconds,
            cpu_secs: stay.cpu_secs,
            network_bytes: stay.network_bytes,
            active_joules: stay.share.active_joules,
            idle_joules: stay.share.idle_joules,
            network_joules: stay.share.network_joules,
            server_joules,
            desktop_sleeps: stay.desktop_sleeps,
            desktop_saved_joules,
            net_joules: desktop_saved_joules - server_joules,
        })
    }

    /// What a desktop asked at `requests` (seconds) over `seconds` saved,
    /// by the simulated desktop with the desktops' profile and wait.
    fn desktop_saved(&self, seconds: f64, requests: &[f64]) -> f64 {
        let trace = RequestTrace::new(seconds, requests.to_vec());
        let replayed = MicrosleepPolicy::fixed(self.desktop, self.desktop_wait_secs)
            .and_then(|mut policy| simulate(&trace, &mut policy, SimConfig::default()));
        match replayed {
            Ok((report, _)) => report.energy.saved_joules,
            Err(e) => {
                // The wait was checked at load and the times are ours.
                tracing::warn!("energy: cannot estimate a desktop's saving: {e}");
                0.0
            }
        }
    }

    /// The status: the figures and every VM's account up to `now`.
    pub fn report(&self, now: Instant) -> ServerEnergy {
        ServerEnergy {
            source: self.source().to_owned(),
            idle_watts: self.server.idle_watts,
            busy_watts: self.server.busy_watts,
            desktop_saving_watts: self.desktop.idle_watts - self.desktop.sleep_watts,
            break_even_vms: self.server.break_even_vms(&self.desktop),
            refuse_unprofitable: self.refuse_unprofitable,
            vms: self.stays.keys().filter_map(|key| self.vm_energy(key, now)).collect(),
        }
    }

    /// With `refuse_unprofitable`: whether `key`'s VM, expected to claim
    /// `expected` bytes beside VMs claiming `others`, would save more than
    /// its share costs. Its share of the idle power is by memory; its CPU
    /// and network power and its desktop's saving per second come from
    /// its past stays, or, for a VM never here, none and the best case
    /// (its desktop asleep all the time).
    ///
    /// # Errors
    /// [`Unprofitable`] with the figures.
    pub fn check(&self, key: &VmKey, expected: u64, others: u64) -> Result<(), Unprofitable> {
        if !self.refuse_unprofitable {
            return Ok(());
        }
        let past = self.history(key);
        let seconds: f64 = past.iter().map(|r| r.energy.seconds).sum();
        let from_history = seconds > 0.0;
        let (variable, saving) = if from_history {
            let variable: f64 = past.iter().map(|r| r.energy.active_joules + r.energy.network_joules).sum();
            let saved: f64 = past.iter().map(|r| r.energy.desktop_saved_joules).sum();
            (variable / seconds, saved / seconds)
        } else {
            (0.0, self.desktop.idle_watts - self.desktop.sleep_watts)
        };
        let total_bytes = others.saturating_add(expected);
        let idle = if total_bytes > 0 { self.server.idle_watts * expected as f64 / total_bytes as f64 } else { 0.0 };
        let share = idle + variable;
        if share <= saving {
            return Ok(());
        }
        Err(Unprofitable {
            share,
            idle,
            server_idle: self.server.idle_watts,
            expected_bytes: expected,
            total_bytes,
            variable,
            saving,
            from_history,
            break_even: self.server.break_even_vms(&self.desktop),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Appends `line` to the log at `path`, made with its directory if
/// missing ([`durable_file::append_line`]).
fn append_line(path: &Path, line: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(durable_file::parent_dir(path))?;
    durable_file::append_line(path, line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(vm: &str) -> VmKey {
        VmKey { desktop: "desk1".parse().unwrap(), vm: vm.parse().unwrap() }
    }

    fn config(source: EnergySource, refuse: bool) -> EnergyConfig {
        EnergyConfig { source, refuse_unprofitable: refuse, ..EnergyConfig::default() }
    }

    fn sample(vm: &str, cpu_ms: u64, memory_mib: u64, fetched: u64) -> VmSample {
        VmSample {
            key: key(vm),
            cpu: Some(Duration::from_millis(cpu_ms)),
            memory_bytes: memory_mib << 20,
            fetched_bytes: fetched,
            desktop_sleeps: true,
        }
    }

    #[test]
    fn a_tick_charges_idle_by_memory_and_cpu_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = ServerLedger::new(&config(EnergySource::Profile, false), dir.path(), dir.path()).unwrap();
        assert_eq!(ledger.source(), "profile");
        let t0 = Instant::now();
        ledger.arrived(&key("a"), true, t0);
        ledger.arrived(&key("b"), false, t0);
        ledger.tick(t0, &[sample("a", 0, 100, 0), sample("b", 0, 300, 0)]);
        let t1 = t0 + Duration::from_secs(2);
        ledger.tick(t1, &[sample("a", 1000, 100, 125_000_000), sample("b", 0, 300, 0)]);
        let a = ledger.vm_energy(&key("a"), t1).unwrap();
        let b = ledger.vm_energy(&key("b"), t1).unwrap();
        // 2 s of 150.7 W idle: a quarter to a (100 of 400 MiB).
        assert!((a.idle_joules - 150.7 * 2.0 / 4.0).abs() < 1e-9, "{a:?}");
        assert!((b.idle_joules - 150.7 * 2.0 * 3.0 / 4.0).abs() < 1e-9, "{b:?}");
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        assert!((a.active_joules - (250.0 - 150.7) / cpus).abs() < 1e-9, "one CPU-second: {a:?}");
        assert_eq!(b.active_joules, 0.0);
        // 125 MB at 3 W per Gbit/s: 3 J.
        assert!((a.network_joules - 3.0).abs() < 1e-9 && a.network_bytes == 125_000_000);
        assert!((a.server_joules - a.idle_joules - a.active_joules - a.network_joules).abs() < 1e-9);
        assert_eq!(b.desktop_saved_joules, 0.0, "a desktop the server cannot wake never sleeps");
        assert!((b.net_joules + b.server_joules).abs() < 1e-9);
        let report = ledger.report(t1);
        assert_eq!((report.break_even_vms, report.vms.len()), (3, 2));
        assert!(ledger.break_even_text().contains("with 150.7 W idle, a VM pays off once about 3 share the server"));
    }

    #[test]
    fn a_desktop_asked_nothing_saves_what_the_simulated_desktop_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = ServerLedger::new(&config(EnergySource::Profile, false), dir.path(), dir.path()).unwrap();
        let t0 = Instant::now();
        ledger.arrived(&key("a"), true, t0);
        let hour = t0 + Duration::from_secs(3600);
        let saved = ledger.vm_energy(&key("a"), hour).unwrap().desktop_saved_joules;
        // Table 1 by hand: awake 6 s at idle, suspend, asleep, resume for
        // the user's return (the hour is stretched by the resume).
        let p = PowerProfile::TABLE_1;
        let asleep = 3600.0 - 6.0 - p.suspend_secs;
        let used = 6.0 * p.idle_watts
            + p.suspend_secs * p.suspend_watts
            + asleep * p.sleep_watts
            + p.resume_secs * p.resume_watts;
        let baseline = (3600.0 + p.resume_secs) * p.idle_watts;
        assert!((saved - (baseline - used)).abs() < 1e-6, "{saved} against {}", baseline - used);
    }

    #[test]
    fn a_closed_stay_is_appended_and_a_taken_over_vm_counts_from_its_first_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = ServerLedger::new(&config(EnergySource::Profile, false), dir.path(), dir.path()).unwrap();
        let t0 = Instant::now();
        // Taken over: 50 s of CPU before this daemon are not charged.
        ledger.tick(t0, &[sample("a", 50_000, 100, 4096)]);
        ledger.tick(t0 + Duration::from_secs(2), &[sample("a", 50_500, 100, 4096)]);
        ledger.sent_home(&key("a"), 1000);
        let first = ledger.close(&key("a"), t0 + Duration::from_secs(2)).unwrap().unwrap();
        assert!((first.energy.cpu_secs - 0.5).abs() < 1e-9 && first.energy.network_bytes == 1000);
        ledger.arrived(&key("a"), true, t0);
        ledger.close(&key("a"), t0).unwrap();
        assert_eq!(ledger.close(&key("a"), t0).unwrap(), None, "closed once");
        let kept = ledger.history(&key("a"));
        assert_eq!(kept.len(), 2, "appended, not overwritten");
        assert_eq!(kept[0], first);
        assert!(dir.path().join("energy/desk1/a.jsonl").exists());
    }

    #[test]
    fn an_unprofitable_vm_is_refused_with_the_figures_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let lenient = ServerLedger::new(&config(EnergySource::Profile, false), dir.path(), dir.path()).unwrap();
        assert!(lenient.check(&key("a"), 100 << 20, 0).is_ok(), "off by default");
        let ledger = ServerLedger::new(&config(EnergySource::Profile, true), dir.path(), dir.path()).unwrap();
        // Alone it would pay all 150.7 W against at most 59.45 W saved.
        let err = ledger.check(&key("a"), 100 << 20, 0).unwrap_err();
        assert!((err.share - 150.7).abs() < 1e-9 && !err.from_history);
        let text = err.to_string();
        assert!(text.contains("150.70 W") && text.contains("59.45 W") && text.contains("about 3 share"), "{text}");
        assert!(text.contains("refuse_unprofitable = false"), "{text}");
        // Beside two VMs of the same size: 50.2 W, below 59.45 W.
        assert!(ledger.check(&key("a"), 100 << 20, 200 << 20).is_ok());
        // A VM whose past stays saved little is refused even then.
        let mut past = ServerLedger::new(&config(EnergySource::Profile, true), dir.path(), dir.path()).unwrap();
        let t0 = Instant::now();
        past.arrived(&key("b"), false, t0);
        past.close(&key("b"), t0 + Duration::from_secs(60)).unwrap();
        let err = past.check(&key("b"), 100 << 20, 200 << 20).unwrap_err();
        assert!(err.from_history && err.saving == 0.0, "{err}");
    }

    #[test]
    fn rapl_is_required_only_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let auto = ServerLedger::new(&config(EnergySource::Auto, false), dir.path(), dir.path()).unwrap();
        assert_eq!(auto.source(), "profile");
        let err = ServerLedger::new(&config(EnergySource::Rapl, false), dir.path(), dir.path()).unwrap_err();
        assert!(wire::chain(&err).contains("intel-rapl"), "{}", wire::chain(&err));
        let zone = dir.path().join("intel-rapl:0");
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("energy_uj"), "0").unwrap();
        fs::write(zone.join("max_energy_range_uj"), "1000000000").unwrap();
        let mut ledger = ServerLedger::new(&config(EnergySource::Auto, false), dir.path(), dir.path()).unwrap();
        assert_eq!(ledger.source(), "rapl");
        let t0 = Instant::now();
        ledger.arrived(&key("a"), true, t0);
        ledger.tick(t0, &[sample("a", 0, 100, 0)]);
        // 2 s at 20 W (the floor), then 2 s at 30 W: 20 J above the floor.
        fs::write(zone.join("energy_uj"), "40000000").unwrap();
        ledger.tick(t0 + Duration::from_secs(2), &[sample("a", 0, 100, 0)]);
        fs::write(zone.join("energy_uj"), "100000000").unwrap();
        let measured = ledger.active_energy(2.0);
        let ActiveEnergy::Measured { joules, .. } = measured else { panic!("{measured:?}") };
        assert!((joules - 20.0).abs() < 1e-9, "{joules}");
    }
}
