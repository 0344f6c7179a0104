//! A request schedule replayed twice: through the simulator
//! ([`power::simulate`]) and against a real desktop that sleeps, so that
//! the simulator's figures can be checked against the thing it models
//! (issue 12, point 3).
//!
//! # The real desktop, and why this one
//!
//! Three network namespaces (a bridge, the desktop, the server; the
//! office of [`tests::netns`]). In the desktop's: the real `jettison
//! memserv` and `jettison diskserv` serving a RAM file and a disk image,
//! and the real `jettison power` following their event sockets with the
//! emulated S3 ([`remote_wakeup::EmulatedS3`]: after the suspend time the
//! daemons are stopped and the address dropped; only a magic packet for
//! the desktop's MAC resumes it, after the resume time). That is the
//! power session the desktop daemon runs with `[power] sleep =
//! "emulated-s3"`, without a VM on either side: the replay needs the
//! requests at the trace's times, which a guest would not make.
//!
//! In the server's namespace the requests go out as the server's storage
//! process sends them: authenticated reads through [`wire::RemoteImage`],
//! one for memory and one for the disk, both with the same
//! [`DesktopWaker`] as their wake hook, with the storage process's
//! defaults ([`WakeTarget::new`], [`RemoteConfig::new`]). A request for a
//! sleeping desktop probes it, sends magic packets and waits, as memtap's
//! fault does.
//!
//! # What differs from the simulator by construction
//!
//! - **Requests go out one after another**, at the trace's times: one
//!   held up by a wake holds up those due meanwhile (they go out late, as
//!   a guest's vCPU waiting for a page stops making new faults). The
//!   simulator queues them at their own times.
//! - **A real suspend still answers**: the emulated S3 serves requests
//!   while suspending and then sleeps anyway (the session does not cancel
//!   a suspend), while the simulator holds them for the suspend and a
//!   whole resume.
//! - **A real wake takes longer than the resume**: the waker's first probe
//!   waits for its timeout, and once the desktop resumes the waker notices
//!   only at its next probe.
//! - **Service**: the simulator serves one request at a time for its
//!   `serve_secs`, so a burst of requests closer than that queues and
//!   pushes the end of service, and so the next sleep, later; the
//!   session's ledger counts `serve_secs` of serving power from each
//!   request's arrival, overlapping, and memserv answers in the time it
//!   takes.
//! - **The session's clock** starts a few milliseconds before the replay's
//!   (the replay starts once `ledger.json` appears), and the session
//!   counts `t_w` from a request's arrival, the simulator from the end of
//!   its service.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::tests::netns::office::{BROADCAST, DESKTOP_CIDR, DESKTOP_MAC, DISKSERV, MEMSERV, SERVER_CIDR};
use ::tests::netns::{Daemon, EmulatedPower, Host, Lan};
use desktop_daemon::microsleep::{MicrosleepError, WaitPolicy};
use fetch_trace::{Device, Trace};
use power::simulate::{simulate, SimConfig, SimReport};
use power::trace::RequestTrace;
use power::{EnergyReport, FilesError, LedgerFiles, PowerError, PowerProfile};
use remote_wakeup::{DesktopWaker, Mac, WakeTarget};
use wire::{ByteRange, Hello, RemoteConfig, RemoteImage, Service, WakeHook, WireError};

use crate::trace_shape::PAGE_BYTES;

/// Bytes of a disk unit (a block) in a fetch trace.
pub const BLOCK_BYTES: u64 = cownetdisk::DEFAULT_BLOCK_SIZE as u64;
/// Bound on a request that never gets an answer (the server's storage
/// process retries for ever; a benchmark must end).
const GIVE_UP: Duration = Duration::from_secs(300);
/// Bound on `jettison power` writing its first ledger.
const START_LIMIT: Duration = Duration::from_secs(60);

/// One request to the desktop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// When it is due, seconds from the start of the stay.
    pub at_secs: f64,
    /// Memory (memserv) or disk (diskserv).
    pub device: Device,
    /// The bytes asked for.
    pub range: ByteRange,
}

/// Requests at their times, and when the user returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The requests, by time.
    pub requests: Vec<Request>,
    /// When the user returns (the stay ends), seconds.
    pub duration_secs: f64,
}

impl Schedule {
    /// Every request of `trace` (answered or not: the desktop had to be
    /// awake for each) at its `asked_ns`, for the first `first_secs` of the
    /// stay, or all of it. Each asks for the units its line fetched, from
    /// its first faulting unit on. A trace without its totals line (not
    /// closed) is taken to end a millisecond after its last request.
    pub fn from_trace(trace: &Trace, first_secs: Option<f64>) -> Schedule {
        let secs = |ns: u64| ns.saturating_sub(trace.started_boottime_ns) as f64 / 1e9;
        let last = trace.fetches.last().map_or(0.0, |f| secs(f.asked_ns));
        let stay = trace.totals.map_or(last + 1e-3, |t| secs(t.closed_boottime_ns).max(last + 1e-3));
        let duration_secs = first_secs.map_or(stay, |first| first.min(stay));
        let requests = trace
            .fetches
            .iter()
            .filter(|f| secs(f.asked_ns) < duration_secs)
            .map(|f| {
                let unit = match f.device {
                    Device::Memory => PAGE_BYTES,
                    Device::Disk => BLOCK_BYTES,
                };
                let len = u32::try_from(f.units.max(1) * unit).unwrap_or(u32::MAX);
                Request { at_secs: secs(f.asked_ns), device: f.device, range: ByteRange::new(f.unit * unit, len) }
            })
            .collect();
        Schedule { requests, duration_secs }
    }

    /// The arrival times, as the simulator reads them.
    pub fn arrivals(&self) -> RequestTrace {
        RequestTrace::new(self.duration_secs, self.requests.iter().map(|r| r.at_secs).collect())
    }

    /// The same requests at the times `run` sent them (later than due when
    /// one waited for a wake), for the simulator: what it says of the
    /// shifted times isolates its model from the shift.
    pub fn as_sent(&self, run: &RealRun) -> Schedule {
        let requests: Vec<Request> =
            self.requests.iter().zip(&run.sent_secs).map(|(r, &at_secs)| Request { at_secs, ..*r }).collect();
        let last = requests.last().map_or(0.0, |r| r.at_secs + 1e-3);
        Schedule { requests, duration_secs: self.duration_secs.max(last) }
    }

    /// Bytes the `device` export must hold for every request, rounded up
    /// to a unit (at least one).
    fn export_bytes(&self, device: Device, unit: u64) -> u64 {
        let end = self.requests.iter().filter(|r| r.device == device).filter_map(|r| r.range.end()).max();
        end.unwrap_or(unit).div_ceil(unit) * unit
    }
}

/// The desktop both replays run: its power profile and wait policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Desktop {
    /// Power and transition times; the emulated S3 takes the same times.
    pub profile: PowerProfile,
    /// Fixed or adaptive t_w.
    pub policy: WaitPolicy,
    /// t_w, or the adaptive policy's start.
    pub wait_secs: f64,
    /// Seconds of serving power each request counts for, in both.
    pub serve_secs: f64,
}

impl Desktop {
    /// The simulator's report on `schedule`.
    ///
    /// # Errors
    /// [`ReplayError::Policy`] or [`ReplayError::Simulate`].
    pub fn simulate(&self, schedule: &Schedule) -> Result<SimReport, ReplayError> {
        let mut policy = self.policy.build(self.profile, self.wait_secs)?;
        let config = SimConfig { serve_secs: self.serve_secs };
        Ok(simulate(&schedule.arrivals(), &mut policy, config)?.0)
    }

    /// `--policy` of `jettison power`.
    fn policy_arg(&self) -> &'static str {
        match self.policy {
            WaitPolicy::Fixed => "fixed",
            WaitPolicy::Adaptive => "adaptive",
        }
    }
}

/// What the real desktop did.
#[derive(Debug, Clone, PartialEq)]
pub struct RealRun {
    /// Requests sent and answered.
    pub requests: u64,
    /// The wakes the server's waker had to send magic packets for.
    pub woken_by_requests: u64,
    /// Requests that waited for a wake: those that woke the desktop and
    /// those due before the wake was over.
    pub waited_for_wake: u64,
    /// Sum over requests of the time from when each was due to its answer.
    pub total_wait_secs: f64,
    /// The longest such time.
    pub max_wait_secs: f64,
    /// When each request went out, seconds from the start of the session.
    pub sent_secs: Vec<f64>,
    /// Sum over requests of the time from sending each to its answer
    /// without a wake: the desktop's service time as the server sees it.
    pub served_secs: f64,
    /// The session's own account, from its `ledger.json`.
    pub energy: EnergyReport,
    /// Where the daemons' logs and the ledger are.
    pub dir: PathBuf,
}

/// Why a replay could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// This machine cannot make the namespaces.
    #[error("the real replay cannot run here: {0}")]
    NotHere(String),
    /// The wait policy was refused.
    #[error("the wait policy")]
    Policy(#[from] MicrosleepError),
    /// The simulator refused the schedule.
    #[error("simulating the schedule")]
    Simulate(#[from] PowerError),
    /// A file of the desktop could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's namespace could not be entered.
    #[error("entering the server's namespace")]
    Namespace(#[source] remote_wakeup::WakeError),
    /// The server could not reach an export while the desktop was awake.
    #[error("connecting to {service} at {addr} from the server's namespace (see its log in {})", dir.display())]
    Connect {
        /// memserv or diskserv.
        service: &'static str,
        /// Where it listens.
        addr: &'static str,
        /// The run's directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<WireError>,
    },
    /// `jettison power` wrote no ledger.
    #[error("jettison power wrote no ledger within {START_LIMIT:?}: see {}", log.display())]
    PowerNeverStarted {
        /// Its log.
        log: PathBuf,
    },
    /// A request got no answer.
    #[error("request {index} ({device} {range:?}, due at {at_secs:.3} s) got no answer (see the logs in {})", dir.display())]
    Read {
        /// Its place in the schedule.
        index: usize,
        /// Its device.
        device: Device,
        /// Its bytes.
        range: ByteRange,
        /// When it was due.
        at_secs: f64,
        /// The run's directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<WireError>,
    },
    /// `jettison power` did not stop cleanly on SIGTERM.
    #[error("jettison power failed or hung on SIGTERM: see {}", log.display())]
    PowerStop {
        /// Its log.
        log: PathBuf,
    },
    /// The session's ledger could not be read.
    #[error("reading the session's ledger")]
    Ledger(#[from] FilesError),
    /// The session's ledger holds no stay.
    #[error("the session's ledger in {} holds no stay: see the power log there", dir.display())]
    NoStay {
        /// The ledger's directory.
        dir: PathBuf,
    },
    /// The replay's thread panicked.
    #[error("the replay's thread panicked (a bug: see its message above)")]
    Panicked,
}

/// Replays `schedule` against a real desktop that sleeps as `desktop`
/// says, in namespaces made for it and deleted after, its files in `dir`.
///
/// # Errors
/// [`ReplayError`]; [`ReplayError::NotHere`] when not root.
pub fn replay_real(schedule: &Schedule, desktop: &Desktop, dir: &Path) -> Result<RealRun, ReplayError> {
    ::tests::netns::available().map_err(ReplayError::NotHere)?;
    let lan = Lan::build(&[
        Host { role: "desktop", cidr: DESKTOP_CIDR, mac: Some(DESKTOP_MAC) },
        Host { role: "server", cidr: SERVER_CIDR, mac: None },
    ]);
    let (desktop_ns, server_ns) = (lan.host(0), lan.host(1));

    let ram = dir.join("vm1.ram");
    write_patterned(&ram, schedule.export_bytes(Device::Memory, PAGE_BYTES))?;
    let image = dir.join("vm1.disk");
    write_patterned(&image, schedule.export_bytes(Device::Disk, BLOCK_BYTES))?;
    let profile = dir.join("profile.json");
    let json = serde_json::to_vec_pretty(&desktop.profile).expect("a power profile serialises");
    std::fs::write(&profile, json).map_err(|source| ReplayError::Write { path: profile.clone(), source })?;
    let keys = ::tests::TestKeys::new();
    let (key_files, _) = keys.write(dir);
    let memory_events = dir.join("memserv.events");
    let disk_events = dir.join("diskserv.events");
    let memserv = Daemon::memserv(desktop_ns, server_ns, dir, &ram, &key_files, &memory_events);
    let diskserv = Daemon::diskserv(desktop_ns, server_ns, dir, &image, &key_files, &disk_events);

    let state_dir = dir.join("power");
    let log = dir.join("power.log");
    let power = EmulatedPower {
        events: vec![&memory_events, &disk_events],
        stop_pids: vec![memserv.pid(), diskserv.pid()],
        state_dir: &state_dir,
        policy: desktop.policy_arg(),
        wait_secs: desktop.wait_secs,
        profile: Some(&profile),
        serve_secs: Some(desktop.serve_secs),
        transition_secs: None,
    };
    let server = Server { credentials: keys.server(), dir, power, log: &log, desktop_ns };
    let run = std::thread::scope(|s| s.spawn(|| server.replay(server_ns, schedule)).join());
    let mut run = run.map_err(|_| ReplayError::Panicked)??;
    let ledger = LedgerFiles::read(&state_dir)?;
    let stay = ledger.and_then(|summary| summary.consolidations.last().copied());
    run.energy = stay.ok_or_else(|| ReplayError::NoStay { dir: state_dir.clone() })?;
    Ok(run)
}

/// A file of `bytes` bytes, each 4 KiB filled with a byte of its own
/// (never zero, so nothing travels as a zero marker).
fn write_patterned(path: &Path, bytes: u64) -> Result<(), ReplayError> {
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        for page in 0..bytes / PAGE_BYTES {
            file.write_all(&[(page % 251) as u8 + 1; PAGE_BYTES as usize])?;
        }
        file.flush()
    };
    write().map_err(|source| ReplayError::Write { path: path.to_owned(), source })
}

/// The server's side of a real replay.
struct Server<'a> {
    credentials: Arc<wire::Credentials>,
    dir: &'a Path,
    power: EmulatedPower<'a>,
    log: &'a Path,
    desktop_ns: &'a str,
}

impl Server<'_> {
    /// Connects to both exports, starts the power session, sends the
    /// requests at their times, and stops the session when the user
    /// returns. The thread stays in the server's namespace.
    fn replay(&self, server_ns: &str, schedule: &Schedule) -> Result<RealRun, ReplayError> {
        remote_wakeup::netns::enter(server_ns).map_err(ReplayError::Namespace)?;
        let broadcast: IpAddr = BROADCAST.parse().expect("the office's broadcast is an address");
        let mac: Mac = DESKTOP_MAC.parse().expect("the office's desktop MAC is a MAC");
        let probe = MEMSERV.parse().expect("the office's memserv address is an address");
        let waker = Arc::new(DesktopWaker::new(WakeTarget::new("desktop", mac, broadcast, probe)));
        let memory = self.connect(&waker, "memserv", MEMSERV, Service::Memory)?;
        let disk = self.connect(&waker, "diskserv", DISKSERV, Service::Disk)?;

        let mut power = self.power.spawn(self.desktop_ns, self.log);
        let ledger = self.power.state_dir.join(power::LEDGER_FILE);
        let deadline = Instant::now() + START_LIMIT;
        while !ledger.exists() {
            if Instant::now() >= deadline {
                return Err(ReplayError::PowerNeverStarted { log: self.log.to_owned() });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let origin = Instant::now();
        let now = || origin.elapsed().as_secs_f64();

        let mut run = RealRun {
            requests: 0,
            woken_by_requests: 0,
            waited_for_wake: 0,
            total_wait_secs: 0.0,
            max_wait_secs: 0.0,
            served_secs: 0.0,
            sent_secs: Vec::with_capacity(schedule.requests.len()),
            energy: EnergyReport::default(),
            dir: self.dir.to_owned(),
        };
        // When the last wake's request was answered: requests due before
        // then waited for that wake.
        let mut wake_over = f64::NEG_INFINITY;
        for (index, request) in schedule.requests.iter().enumerate() {
            let due = Duration::from_secs_f64(request.at_secs);
            std::thread::sleep(due.saturating_sub(origin.elapsed()));
            let wakes = waker.stats().wakes;
            let sent = now();
            run.sent_secs.push(sent);
            let image = match request.device {
                Device::Memory => &memory,
                Device::Disk => &disk,
            };
            // The client checks that the answer covers the range.
            image.read(&[request.range]).map_err(|source| ReplayError::Read {
                index,
                device: request.device,
                range: request.range,
                at_secs: request.at_secs,
                dir: self.dir.to_owned(),
                source: Box::new(source),
            })?;
            let answered = now();
            if waker.stats().wakes > wakes {
                wake_over = answered;
            } else {
                run.served_secs += answered - sent;
            }
            if request.at_secs < wake_over {
                run.waited_for_wake += 1;
            }
            let wait = answered - request.at_secs;
            run.requests += 1;
            run.total_wait_secs += wait;
            run.max_wait_secs = run.max_wait_secs.max(wait);
        }
        std::thread::sleep(Duration::from_secs_f64(schedule.duration_secs).saturating_sub(origin.elapsed()));
        if !power.terminate() {
            return Err(ReplayError::PowerStop { log: self.log.to_owned() });
        }
        run.woken_by_requests = waker.stats().wakes;
        Ok(run)
    }

    /// A reader of `service`'s export vm1, as the storage process makes
    /// it (its retries bounded by [`GIVE_UP`]), waking through `waker`.
    fn connect(
        &self,
        waker: &Arc<DesktopWaker>,
        service: &'static str,
        addr: &'static str,
        kind: Service,
    ) -> Result<RemoteImage, ReplayError> {
        let mut remote = RemoteConfig::new(addr, Arc::clone(&self.credentials), Hello::new(kind, "vm1"));
        remote.give_up_after = Some(GIVE_UP);
        let hook = Arc::clone(waker) as Arc<dyn WakeHook>;
        RemoteImage::connect(remote, hook).map_err(|source| ReplayError::Connect {
            service,
            addr,
            dir: self.dir.to_owned(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_keeps_the_first_seconds_and_sizes_each_export() {
        let fetch = |device, unit, units, secs: u64| fetch_trace::Fetch {
            device,
            unit,
            cause: fetch_trace::Cause::Fault,
            faulting: 1,
            units,
            requests: 1,
            asked_ns: 1_000_000_000 + secs * 1_000_000_000,
            answered_ns: None,
        };
        let trace = Trace {
            started_boottime_ns: 1_000_000_000,
            fetches: vec![
                fetch(Device::Memory, 3, 2, 1),
                fetch(Device::Disk, 7, 1, 5),
                fetch(Device::Memory, 90, 1, 30),
            ],
            ..Trace::default()
        };
        let first = Schedule::from_trace(&trace, Some(10.0));
        assert_eq!(first.duration_secs, 10.0);
        assert_eq!(first.requests.len(), 2);
        assert_eq!(first.requests[0].range, ByteRange::new(3 * PAGE_BYTES, 2 * PAGE_BYTES as u32));
        assert_eq!(first.export_bytes(Device::Memory, PAGE_BYTES), 5 * PAGE_BYTES);
        assert_eq!(first.export_bytes(Device::Disk, BLOCK_BYTES), 8 * BLOCK_BYTES);
        // Without a totals line the stay ends just after its last request.
        let whole = Schedule::from_trace(&trace, None);
        assert_eq!(whole.duration_secs, 30.001);
        assert_eq!(whole.arrivals().arrivals, vec![1.0, 5.0, 30.0]);
    }
}
