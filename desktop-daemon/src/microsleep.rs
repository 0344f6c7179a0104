//! The desktop's microsleep: the pieces that plug the power crate's loop
//! ([`power::daemon::run`]) into this machine, shared by the desktop
//! daemon's power session ([`crate::power_session`]) and the standalone
//! `jettison power`.
//!
//! - [`BootClock`]: `CLOCK_BOOTTIME`, which keeps counting while the machine
//!   is suspended (unlike `Instant`), so time asleep reaches the ledger.
//! - [`spawn_event_reader`]: one thread per memserv or diskserv event
//!   socket, turning each authenticated request into an [`Arrival`]. It
//!   reconnects once a second, because a socket only exists while its VM
//!   is served, and looks at the stop flag between reads so it can be
//!   joined.
//! - [`SystemSleeper`] (this machine's S3 through logind or sysfs) and
//!   [`EmulatedSleeper`] (remote-wakeup's emulated S3, for tests), the two
//!   [`Sleeper`] back-ends, and [`check_nic`], the check that the NIC will
//!   wake the machine on a magic packet, without which a suspended desktop
//!   never comes back.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use activity_monitor::{SleepBackend, SuspendClock, SystemSuspend};
use image_server::events::{EventKind, RequestEvent};
use power::daemon::{Arrival, Clock, DaemonError, Sleeper};
use power::{AdaptiveConfig, MicrosleepPolicy, PowerError, PowerProfile, PowerState};
use remote_wakeup::{EmulatedS3, Mac, NicWakeError, S3Config, S3State, WakeError};
use serde::Deserialize;

/// How long a blocking wait (an event socket, the emulated desktop) lasts
/// before the stop flag is looked at again.
const TICK: Duration = Duration::from_millis(100);
/// How long a reader waits before connecting again to a missing socket.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Why the microsleep could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MicrosleepError {
    /// `/proc/net/route` could not be read.
    #[error("reading /proc/net/route to find the NIC that wakes this desktop")]
    ReadRoutes(#[source] std::io::Error),
    /// No default route, so no NIC to check.
    #[error("this desktop has no default route: name the NIC that wakes it ([power] interface = \"...\")")]
    NoDefaultRoute,
    /// The NIC would not wake the machine on a magic packet.
    #[error("refusing to sleep this desktop: its NIC {interface} would not wake it on a magic packet")]
    NicCannotWake {
        /// The NIC.
        interface: String,
        /// What is missing and how to set it.
        #[source]
        source: NicWakeError,
    },
    /// The emulated S3's address is not `IPv4/prefix`.
    #[error("emulated S3: address {address:?} is not an IPv4 address with its prefix: write e.g. \"10.77.0.2/24\"")]
    BadAddress {
        /// What was given.
        address: String,
    },
    /// A suspend or resume time is negative or not finite.
    #[error("emulated S3: {what} = {secs} is not a duration: write seconds, 0 or more")]
    BadDuration {
        /// Which time.
        what: &'static str,
        /// What was given.
        secs: f64,
    },
    /// The emulated S3 could not listen on its interface.
    #[error("emulated S3 on {interface}")]
    EmulatedS3 {
        /// Its interface.
        interface: String,
        /// Why.
        #[source]
        source: WakeError,
    },
    /// The power profile or the policy's wait was refused.
    #[error("the microsleep policy")]
    Policy(#[from] PowerError),
    /// A reader thread could not be started.
    #[error("starting the reader of event socket {path}")]
    Reader {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the wait time t_w is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitPolicy {
    /// Always the configured wait.
    #[default]
    Fixed,
    /// Learned from the gaps between requests (Eq. 4), the configured wait until then.
    Adaptive,
}

impl WaitPolicy {
    /// The policy over `profile` starting from `wait_secs`.
    ///
    /// # Errors
    /// [`MicrosleepError::Policy`]: the wait is negative or not finite.
    pub fn build(self, profile: PowerProfile, wait_secs: f64) -> Result<MicrosleepPolicy, MicrosleepError> {
        Ok(match self {
            WaitPolicy::Fixed => MicrosleepPolicy::fixed(profile, wait_secs)?,
            WaitPolicy::Adaptive => MicrosleepPolicy::adaptive(
                profile,
                AdaptiveConfig { initial_wait_secs: wait_secs, ..AdaptiveConfig::default() },
            )?,
        })
    }
}

/// `CLOCK_BOOTTIME` since the clock was made: it keeps counting while the
/// machine is suspended, so time asleep is in the ledger.
#[derive(Debug, Clone, Copy)]
pub struct BootClock(SuspendClock);

impl BootClock {
    /// A clock whose origin is now.
    pub fn start() -> BootClock {
        BootClock(SuspendClock::now())
    }
}

impl Clock for BootClock {
    fn now(&self) -> f64 {
        SuspendClock::now().elapsed_since(&self.0).as_secs_f64()
    }
}

/// The interface of the default route (`/proc/net/route`): the NIC the
/// server reaches this desktop through, in the usual office.
///
/// # Errors
/// [`MicrosleepError::ReadRoutes`] or [`MicrosleepError::NoDefaultRoute`].
pub fn default_route_interface() -> Result<String, MicrosleepError> {
    let routes = std::fs::read_to_string("/proc/net/route").map_err(MicrosleepError::ReadRoutes)?;
    default_route_in(&routes).ok_or(MicrosleepError::NoDefaultRoute)
}

/// The interface of the default route in the text of `/proc/net/route`
/// (destination and mask 0).
fn default_route_in(routes: &str) -> Option<String> {
    routes
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000"))
        .and_then(|fields| fields.first().map(|name| (*name).to_owned()))
}

/// A NIC checked to wake this machine on a magic packet: the only way to
/// ask for this machine's S3 ([`crate::power_session::SleepWith::System`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakingNic(String);

impl WakingNic {
    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Checks that `interface` (else the default route's) will wake this
/// machine on a magic packet.
///
/// # Errors
/// [`MicrosleepError::NicCannotWake`] naming what to set, or no interface.
pub fn check_nic(interface: Option<&str>) -> Result<WakingNic, MicrosleepError> {
    let interface = match interface {
        Some(interface) => interface.to_owned(),
        None => default_route_interface()?,
    };
    remote_wakeup::check_wakes_on_magic_packet(&interface)
        .map_err(|source| MicrosleepError::NicCannotWake { interface: interface.clone(), source })?;
    Ok(WakingNic(interface))
}

/// Follows the event socket at `path` from a thread until `stop` is set:
/// each request (and connection) becomes an [`Arrival`] at `clock`'s time,
/// disconnections do not. A missing or closed socket is connected again
/// once a second (it exists only while its VM is served).
///
/// # Errors
/// [`MicrosleepError::Reader`]: the thread could not start.
pub fn spawn_event_reader(
    path: &Path,
    tx: Sender<Arrival>,
    clock: BootClock,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, MicrosleepError> {
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("power-events".into())
        .spawn(move || {
            let mut missing_logged = false;
            while !stop.load(Ordering::Relaxed) {
                match UnixStream::connect(&owned) {
                    Ok(stream) => {
                        missing_logged = false;
                        tracing::debug!("following event socket {}", owned.display());
                        if !forward(stream, &owned, &tx, &clock, &stop) {
                            return;
                        }
                    }
                    Err(e) if !missing_logged => {
                        tracing::debug!("event socket {}: {e}; trying again every second", owned.display());
                        missing_logged = true;
                    }
                    Err(_) => {}
                }
                std::thread::sleep(RECONNECT_EVERY);
            }
        })
        .map_err(|source| MicrosleepError::Reader { path: path.to_owned(), source })
}

/// Forwards one connection's requests until it closes or `stop` is set;
/// false once the loop is gone (nobody left to tell).
fn forward(stream: UnixStream, path: &Path, tx: &Sender<Arrival>, clock: &BootClock, stop: &AtomicBool) -> bool {
    if let Err(e) = stream.set_read_timeout(Some(TICK)) {
        tracing::warn!("event socket {}: {e}", path.display());
        return true;
    }
    let mut reader = BufReader::new(stream);
    // A read that times out mid-line keeps what it read in `line`.
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                tracing::debug!("event socket {} closed; reconnecting", path.display());
                return true;
            }
            Ok(_) => {
                match serde_json::from_slice::<RequestEvent>(&line) {
                    Ok(event) if event.kind == EventKind::Disconnected => {}
                    Ok(_) => {
                        if tx.send(Arrival::Request(clock.now())).is_err() {
                            return false;
                        }
                    }
                    Err(e) => tracing::warn!("event socket {}: not an event: {e}", path.display()),
                }
                line.clear();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                tracing::warn!("event socket {}: {e}; reconnecting", path.display());
                return true;
            }
        }
    }
    true
}

/// This machine's S3 through [`SystemSuspend`], which returns after the
/// resume.
#[derive(Debug)]
pub struct SystemSleeper {
    backend: SystemSuspend,
    profile: PowerProfile,
}

impl SystemSleeper {
    /// logind's Suspend, else `/sys/power/state`; each round trip is
    /// charged `profile`'s suspend and resume times
    /// ([`PowerProfile::round_trip`]).
    pub fn new(profile: PowerProfile) -> SystemSleeper {
        SystemSleeper { backend: SystemSuspend::detect(), profile }
    }
}

impl Sleeper for SystemSleeper {
    fn name(&self) -> String {
        self.backend.name()
    }

    fn sleep(
        &mut self,
        clock: &dyn Clock,
        _stop: &AtomicBool,
        report: &mut dyn FnMut(PowerState, f64),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let before = clock.now();
        self.backend.suspend()?;
        // The kernel's time asleep holds the firmware's resume, which draws
        // resume power: the profile's suspend and resume times are charged.
        let (asleep_at, resuming_at) = self.profile.round_trip(before, clock.now());
        report(PowerState::Asleep, asleep_at);
        report(PowerState::Resuming, resuming_at);
        Ok(())
    }

    fn failed(&mut self, error: &DaemonError) {
        tracing::warn!("{}; staying awake, trying again after t_w", wire::chain(error));
    }
}

/// What the emulated S3 needs (see [`remote_wakeup::EmulatedS3`]).
#[derive(Debug, Clone)]
pub struct EmulatedSettings {
    /// The desktop's LAN interface: its address is dropped while asleep,
    /// and magic packets are heard there.
    pub interface: String,
    /// That interface's address with prefix (`10.77.0.2/24`).
    pub address: String,
    /// The MAC the "NIC" wakes for: the desktop's own `mac`.
    pub mac: Mac,
    /// Daemons to stop (SIGSTOP) while asleep; none when memserv and
    /// diskserv are threads of the desktop daemon: dropping the address is
    /// then what makes the desktop unreachable.
    pub pids: Vec<i32>,
    /// Seconds to fall asleep.
    pub suspend_secs: f64,
    /// Seconds to wake up after the magic packet.
    pub resume_secs: f64,
}

/// Checks that `address` is an IPv4 address with its prefix.
///
/// # Errors
/// [`MicrosleepError::BadAddress`].
pub fn check_address(address: &str) -> Result<(), MicrosleepError> {
    let bad = || MicrosleepError::BadAddress { address: address.to_owned() };
    let (ip, prefix) = address.split_once('/').ok_or_else(bad)?;
    ip.parse::<Ipv4Addr>().map_err(|_| bad())?;
    match prefix.parse::<u8>() {
        Ok(0..=32) => Ok(()),
        _ => Err(bad()),
    }
}

/// A duration of `secs` seconds, named `what` in the error.
///
/// # Errors
/// [`MicrosleepError::BadDuration`].
pub fn duration(what: &'static str, secs: f64) -> Result<Duration, MicrosleepError> {
    Duration::try_from_secs_f64(secs).map_err(|_| MicrosleepError::BadDuration { what, secs })
}

/// The emulated S3 of [`EmulatedS3`]: asleep once its suspend time is up,
/// resuming when a magic packet arrives, awake after its resume time.
/// Dropping it wakes the desktop if it sleeps.
#[derive(Debug)]
pub struct EmulatedSleeper {
    s3: EmulatedS3,
}

impl EmulatedSleeper {
    /// Starts listening for magic packets on the interface; the desktop is on.
    ///
    /// # Errors
    /// [`MicrosleepError::BadAddress`], [`MicrosleepError::BadDuration`] or
    /// [`MicrosleepError::EmulatedS3`].
    pub fn start(settings: &EmulatedSettings) -> Result<EmulatedSleeper, MicrosleepError> {
        check_address(&settings.address)?;
        let s3 = EmulatedS3::start(S3Config {
            netns: None,
            interface: settings.interface.clone(),
            address: settings.address.clone(),
            mac: settings.mac,
            pids: settings.pids.clone(),
            suspend_time: duration("suspend_secs", settings.suspend_secs)?,
            resume_time: duration("resume_secs", settings.resume_secs)?,
        })
        .map_err(|source| MicrosleepError::EmulatedS3 { interface: settings.interface.clone(), source })?;
        Ok(EmulatedSleeper { s3 })
    }

    /// Waits until the state is one of `states`; false if stopped first.
    fn wait_for(&self, stop: &AtomicBool, states: &[S3State]) -> bool {
        while !stop.load(Ordering::Relaxed) {
            if self.s3.wait_until(TICK, |state, _| states.contains(&state)) {
                return true;
            }
        }
        false
    }
}

impl Sleeper for EmulatedSleeper {
    fn name(&self) -> String {
        "emulated S3".into()
    }

    fn sleep(
        &mut self,
        clock: &dyn Clock,
        stop: &AtomicBool,
        report: &mut dyn FnMut(PowerState, f64),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        tracing::info!("no request for t_w: suspending (emulated S3)");
        self.s3.suspend();
        if !self.wait_for(stop, &[S3State::Asleep, S3State::Resuming, S3State::On]) {
            return Ok(());
        }
        if let Some(error) = self.s3.last_error() {
            tracing::warn!("emulated S3: {error}");
        }
        report(PowerState::Asleep, clock.now());
        if !self.wait_for(stop, &[S3State::Resuming, S3State::On]) {
            return Ok(());
        }
        report(PowerState::Resuming, clock.now());
        if self.wait_for(stop, &[S3State::On]) {
            tracing::info!("awake again (emulated S3)");
        }
        Ok(())
    }

    fn failed(&mut self, error: &DaemonError) {
        tracing::warn!("{}; staying awake, trying again after t_w", wire::chain(error));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::sync::mpsc;

    use activity_monitor::SysfsSuspend;

    use super::*;

    #[test]
    fn the_default_route_names_its_interface() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      br0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                      br0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in(routes).as_deref(), Some("br0"));
        assert_eq!(default_route_in(&routes.lines().take(2).collect::<Vec<_>>().join("\n")), None);
    }

    #[test]
    fn an_address_needs_its_prefix() {
        assert!(check_address("10.77.0.2/24").is_ok());
        for bad in ["10.77.0.2", "10.77.0.2/33", "desk/24", "fe80::1/64"] {
            assert!(matches!(check_address(bad), Err(MicrosleepError::BadAddress { .. })), "{bad}");
        }
    }

    struct FixedClock(Cell<f64>);

    impl Clock for FixedClock {
        fn now(&self) -> f64 {
            self.0.get()
        }
    }

    /// A socket that appears after the reader started is followed; its
    /// requests and connections reach the loop, its disconnections do not;
    /// when it goes away and comes back, the reader follows the new one.
    #[test]
    fn a_reader_follows_a_socket_that_comes_and_goes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("memserv.events");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_event_reader(&path, tx, BootClock::start(), Arc::clone(&stop)).expect("the reader starts");
        let wait = Duration::from_secs(10);
        for _ in 0..2 {
            let _ = std::fs::remove_file(&path);
            let listener = std::os::unix::net::UnixListener::bind(&path).expect("the socket binds");
            let (mut peer, _) = listener.accept().expect("the reader connects");
            for kind in [EventKind::Connected, EventKind::Disconnected, EventKind::Request] {
                let event = RequestEvent::now(kind, "memory", "vm1", "10.77.0.1:5000", 1, 4096);
                peer.write_all(&event.to_line()).expect("the event is sent");
            }
            for _ in 0..2 {
                assert!(matches!(rx.recv_timeout(wait), Ok(Arrival::Request(_))));
            }
            assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a disconnection is no request");
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader stops when told");
    }

    /// The system back-end with a state file of the test's: nothing sleeps,
    /// and the reported transitions are in order at the clock's time.
    #[test]
    fn system_sleeper_reports_asleep_then_resuming() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("state");
        std::fs::write(&file, "freeze mem\n").expect("the fake state file is written");
        let mut sleeper = SystemSleeper {
            backend: SystemSuspend::new(None, SysfsSuspend::with_state_file(&file)),
            profile: PowerProfile::TABLE_1,
        };
        let clock = FixedClock(Cell::new(10.0));
        let mut seen = Vec::new();
        sleeper.sleep(&clock, &AtomicBool::new(false), &mut |state, at| seen.push((state, at))).expect("a file write");
        assert_eq!(std::fs::read_to_string(&file).expect("the state file"), "mem");
        assert_eq!(
            seen.iter().map(|&(state, _)| state).collect::<Vec<_>>(),
            [PowerState::Asleep, PowerState::Resuming]
        );
        assert!(seen[0].1 >= 10.0 && seen[1].1 >= seen[0].1, "{seen:?}");
    }
}
