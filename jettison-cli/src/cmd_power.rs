//! `jettison power`: the desktop's power daemon while its VM is consolidated.
//!
//! It listens to memserv's and diskserv's event sockets, suspends the
//! desktop once no request has come for `t_w`, and keeps the energy ledger
//! (`ledger.json`, `power.svg`) in its state directory. The decision and the
//! loop are [`power::daemon`]'s; this file only plugs in the
//! kernel's clock, the event sockets and the sleep back-end.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use activity_monitor::{SleepBackend, SuspendClock, SystemSuspend};
use image_server::events::{subscribe, EventKind};
use power::daemon::{self, Arrival, Clock, DaemonError, Sleeper};
use power::{AdaptiveConfig, LedgerFiles, MicrosleepPolicy, PowerProfile, PowerState, SleepMachine, DEFAULT_WAIT_SECS};
use remote_wakeup::{EmulatedS3, Mac, S3Config, S3State};

use crate::signals::block_stop_signals;
use crate::CmdResult;

/// How the wait time is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// Always `--wait-secs`.
    Fixed,
    /// Learned from the gaps between requests (Eq. 4), `--wait-secs` until then.
    Adaptive,
}

/// How the desktop sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SleepKind {
    /// This machine's S3: logind's Suspend, else /sys/power/state.
    System,
    /// An emulated S3 for tests: stop the daemons, drop the address, wake on a magic packet.
    EmulatedS3,
}

/// Arguments of `jettison power`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An event socket (memserv's or diskserv's `--events`); repeat for each.
    #[arg(long = "events", required = true)]
    events: Vec<PathBuf>,
    /// The desktop's power profile (JSON); default: the paper's Table 1.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// How the wait time t_w is chosen.
    #[arg(long, value_enum, default_value_t = PolicyKind::Fixed)]
    policy: PolicyKind,
    /// t_w: seconds without a request before the desktop sleeps (the adaptive policy's start).
    #[arg(long, default_value_t = DEFAULT_WAIT_SECS)]
    wait_secs: f64,
    /// Seconds of serving power each request counts for in the ledger.
    #[arg(long, default_value_t = 1.0)]
    serve_secs: f64,
    /// How the desktop sleeps.
    #[arg(long, value_enum, default_value_t = SleepKind::System)]
    sleep: SleepKind,
    /// The desktop's LAN interface. system: the NIC that must wake the machine on a magic packet,
    /// checked before anything else (default: the default route's); emulated-s3: listens there
    /// for magic packets.
    #[arg(long)]
    interface: Option<String>,
    /// emulated-s3: the interface's address with prefix (e.g. 10.77.0.2/24), removed while asleep.
    #[arg(long)]
    address: Option<String>,
    /// emulated-s3: the MAC the "NIC" wakes for.
    #[arg(long)]
    mac: Option<String>,
    /// emulated-s3: a daemon (memserv, diskserv) to stop while asleep; repeat for each.
    #[arg(long = "stop-pid")]
    stop_pids: Vec<i32>,
    /// emulated-s3: seconds to go to sleep (default: the profile's).
    #[arg(long)]
    suspend_secs: Option<f64>,
    /// emulated-s3: seconds to wake up (default: the profile's).
    #[arg(long)]
    resume_secs: Option<f64>,
    /// Where ledger.json and power.svg are written.
    #[arg(long)]
    state_dir: PathBuf,
}

/// `CLOCK_BOOTTIME` since the daemon started: it keeps counting while the
/// machine is suspended, so time asleep is in the ledger.
#[derive(Debug, Clone, Copy)]
struct BootClock(SuspendClock);

impl Clock for BootClock {
    fn now(&self) -> f64 {
        SuspendClock::now().elapsed_since(&self.0).as_secs_f64()
    }
}

/// Runs the daemon until SIGINT or SIGTERM, then writes the ledger.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    if args.sleep == SleepKind::System {
        // A desktop whose NIC does not wake it never comes back, and its
        // VM freezes on the server at the next page it needs.
        let interface = match &args.interface {
            Some(interface) => interface.clone(),
            None => default_route_interface()?,
        };
        remote_wakeup::check_wakes_on_magic_packet(&interface)
            .map_err(|e| format!("power: refusing to sleep this desktop: {e}"))?;
    }
    let profile = match &args.profile {
        Some(path) => PowerProfile::load(path)?,
        None => PowerProfile::TABLE_1,
    };
    let policy = match args.policy {
        PolicyKind::Fixed => MicrosleepPolicy::fixed(profile, args.wait_secs)?,
        PolicyKind::Adaptive => MicrosleepPolicy::adaptive(
            profile,
            AdaptiveConfig { initial_wait_secs: args.wait_secs, ..AdaptiveConfig::default() },
        )?,
    };
    let files = LedgerFiles::new(&args.state_dir)?;
    let clock = BootClock(SuspendClock::now());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    for path in &args.events {
        spawn_reader(path, tx.clone(), clock, Arc::clone(&stop))?;
    }
    drop(tx);
    let mut sleeper: Box<dyn Sleeper> = match args.sleep {
        SleepKind::System => Box::new(SystemSleeper { backend: SystemSuspend::detect(), profile }),
        SleepKind::EmulatedS3 => Box::new(EmulatedSleeper::start(&args, &profile)?),
    };
    let stop_on_signal = Arc::clone(&stop);
    std::thread::spawn(move || {
        if let Some(signal) = wait_for_signal() {
            tracing::info!("{signal}: stopping");
        }
        stop_on_signal.store(true, Ordering::Relaxed);
    });
    println!(
        "power: {} on {} event socket(s), sleeping with {}, ledger in {}",
        policy.name(),
        args.events.len(),
        sleeper.name(),
        args.state_dir.display()
    );
    let machine = SleepMachine::start(policy, args.serve_secs, clock.now())?;
    let report = daemon::run(machine, &rx, sleeper.as_mut(), &clock, &files, &stop)?;
    println!(
        "power: stopped after {:.1} min, {} wakes, {:.1}% saved",
        report.wall_secs / 60.0,
        report.wakes,
        report.saved_percent
    );
    Ok(())
}

/// The interface of the default route (`/proc/net/route`): the NIC the
/// server reaches this desktop through, in the usual office.
fn default_route_interface() -> Result<String, String> {
    let routes = std::fs::read_to_string("/proc/net/route").map_err(|e| format!("cannot read /proc/net/route: {e}"))?;
    default_route_in(&routes)
        .ok_or_else(|| "this desktop has no default route: name the NIC that wakes it with --interface".to_owned())
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

/// Connects to `path` now (so a wrong path fails at start) and forwards its
/// events from a thread; if the daemon behind it goes away, reconnects once
/// a second until it is back.
fn spawn_reader(path: &Path, tx: Sender<Arrival>, clock: BootClock, stop: Arc<AtomicBool>) -> CmdResult {
    let first = subscribe(path).map_err(|e| {
        format!(
            "cannot connect to event socket {}: {e} (is memserv or diskserv running with --events?)",
            path.display()
        )
    })?;
    let path = path.to_owned();
    std::thread::Builder::new().name("power-events".into()).spawn(move || {
        let mut events = Some(first);
        while !stop.load(Ordering::Relaxed) {
            if let Some(stream) = events.take() {
                for event in stream {
                    match event {
                        Ok(event) if event.kind == EventKind::Disconnected => {}
                        Ok(_) => {
                            if tx.send(Arrival::Request(clock.now())).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("event socket {}: {e}", path.display());
                            break;
                        }
                    }
                }
                tracing::warn!("event socket {} closed; reconnecting", path.display());
            }
            std::thread::sleep(Duration::from_secs(1));
            events = subscribe(&path).ok();
        }
    })?;
    Ok(())
}

/// This machine's S3 through [`SystemSuspend`], which returns after the
/// resume with how long the machine slept.
struct SystemSleeper {
    backend: SystemSuspend,
    profile: PowerProfile,
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
        let slept = self.backend.suspend()?;
        // Only the total awake part of the round trip is measured; it is
        // split between suspending and resuming as the profile's times are.
        let p = &self.profile;
        let awake = slept.elapsed.saturating_sub(slept.asleep).as_secs_f64();
        let asleep_at = before + awake * p.suspend_secs / (p.suspend_secs + p.resume_secs);
        report(PowerState::Asleep, asleep_at);
        report(PowerState::Resuming, asleep_at + slept.asleep.as_secs_f64());
        Ok(())
    }

    fn failed(&mut self, error: &DaemonError) {
        tracing::warn!("{}; staying awake, trying again after t_w", wire::chain(error));
    }
}

/// The emulated S3 of [`EmulatedS3`]: asleep once its suspend time is up,
/// resuming when a magic packet arrives, awake after its resume time.
struct EmulatedSleeper {
    s3: EmulatedS3,
}

/// How long a wait on the emulated desktop blocks before looking at the stop flag.
const TICK: Duration = Duration::from_millis(100);

impl EmulatedSleeper {
    fn start(args: &Args, profile: &PowerProfile) -> Result<EmulatedSleeper, Box<dyn std::error::Error>> {
        let need = |value: &Option<String>, flag: &str| {
            value.clone().ok_or_else(|| format!("--sleep emulated-s3 needs {flag}"))
        };
        let mac: Mac = need(&args.mac, "--mac")?.parse().map_err(|e| format!("--mac: {e}"))?;
        let address = need(&args.address, "--address")?;
        let ip = address.split('/').next().unwrap_or_default();
        ip.parse::<Ipv4Addr>().map_err(|e| format!("--address {address}: {e} (want an IPv4 address/prefix)"))?;
        let secs = |value: Option<f64>, default: f64| Duration::try_from_secs_f64(value.unwrap_or(default));
        let s3 = EmulatedS3::start(S3Config {
            netns: None,
            interface: need(&args.interface, "--interface")?,
            address,
            mac,
            pids: args.stop_pids.clone(),
            suspend_time: secs(args.suspend_secs, profile.suspend_secs).map_err(|e| format!("--suspend-secs: {e}"))?,
            resume_time: secs(args.resume_secs, profile.resume_secs).map_err(|e| format!("--resume-secs: {e}"))?,
        })?;
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

    struct FixedClock(Cell<f64>);

    impl Clock for FixedClock {
        fn now(&self) -> f64 {
            self.0.get()
        }
    }

    /// Each event socket's requests and connections reach the loop, its
    /// disconnections do not.
    #[test]
    fn a_reader_forwards_requests_from_its_socket() {
        use std::io::Write;

        use image_server::events::RequestEvent;

        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("memserv.events");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("the socket binds");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        spawn_reader(&path, tx, BootClock(SuspendClock::now()), Arc::clone(&stop)).expect("the reader connects");
        let (mut peer, _) = listener.accept().expect("the reader is accepted");
        for kind in [EventKind::Connected, EventKind::Disconnected, EventKind::Request] {
            let event = RequestEvent::now(kind, "memory", "vm1", "10.77.0.1:5000", 1, 4096);
            peer.write_all(&event.to_line()).expect("the event is sent");
        }
        let wait = Duration::from_secs(10);
        for _ in 0..2 {
            assert!(matches!(rx.recv_timeout(wait), Ok(Arrival::Request(_))));
        }
        stop.store(true, Ordering::Relaxed);
        drop(peer);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a disconnection is no request");
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
