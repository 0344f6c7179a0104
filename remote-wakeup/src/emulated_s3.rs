//! An emulated S3 sleep for a desktop living in a network namespace: the
//! test back-end of DESIGN.md section 4.
//!
//! Suspending takes `suspend_time`; then the desktop's daemons are stopped
//! (SIGSTOP) and its interface loses its IPv4 address, so it answers
//! nothing: no ARP, no TCP handshake (the kernel would otherwise complete
//! handshakes for a stopped daemon's listening socket), no RST. The link
//! stays up and a raw `ETH_P_ALL` socket on it keeps hearing every frame,
//! like a NIC in WoL mode. Only a valid magic packet for the desktop's MAC
//! ([`crate::magic::recognise`]) starts the resume, which takes
//! `resume_time`: then the address comes back and the daemons continue.
//!
//! Why the address and not a firewall rule: removing the address needs only
//! iproute2, which the project already requires, while `nft`/`iptables` are
//! not installed everywhere and tc's drop action is often not built into
//! the kernel; the effect on the wire is the same (nothing answers), and
//! established connections survive, as they do across a real S3.
//!
//! [`EmulatedS3::suspend_when_idle`] adds the desktop's microsleep in its
//! simplest form: sleep once no memserv/diskserv event has arrived for t_w.

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::error::WakeError;
use crate::magic::{self, Mac};
use crate::netns;
use crate::packet_socket::PacketSocket;

/// The emulated desktop.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The desktop's network namespace (`None`: the caller's own).
    pub netns: Option<String>,
    /// Its interface on the LAN.
    pub interface: String,
    /// The interface's address with prefix (`10.77.0.2/24`), removed while
    /// asleep.
    pub address: String,
    /// The MAC its "NIC" wakes for.
    pub mac: Mac,
    /// The daemons (memserv, diskserv) to stop while asleep.
    pub pids: Vec<i32>,
    /// From the decision to sleep to being asleep.
    pub suspend_time: Duration,
    /// From the magic packet to answering again.
    pub resume_time: Duration,
}

/// The emulated desktop's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum S3State {
    /// Running and answering.
    On,
    /// Going to sleep; still answering.
    Suspending,
    /// Asleep: answers nothing, listens for magic packets.
    Asleep,
    /// A magic packet arrived; not answering yet.
    Resuming,
}

impl std::fmt::Display for S3State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            S3State::On => "on",
            S3State::Suspending => "suspending",
            S3State::Asleep => "asleep",
            S3State::Resuming => "resuming",
        })
    }
}

/// Counters of the emulated desktop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct S3Stats {
    /// Times it went to sleep.
    pub suspends: u64,
    /// Times a magic packet woke it.
    pub resumes: u64,
    /// Valid magic packets for its MAC heard, in any state.
    pub magic_packets: u64,
    /// Frames heard that were not (a magic packet for its MAC).
    pub other_frames: u64,
}

#[derive(Debug)]
struct Power {
    state: S3State,
    /// When the current Suspending or Resuming ends; when On began.
    since: Instant,
    stats: S3Stats,
    /// The last failure of a suspend or resume step.
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    config: S3Config,
    power: Mutex<Power>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Power> {
        self.power.lock().expect("power lock poisoned: a thread panicked holding it")
    }
}

/// A desktop that sleeps on request and wakes on a magic packet; resumes
/// (and stops its threads) when dropped.
#[derive(Debug)]
pub struct EmulatedS3 {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How long the listener blocks before looking at the clock and the stop
/// flag.
const TICK: Duration = Duration::from_millis(50);

impl EmulatedS3 {
    /// Opens the listener on `config.interface` (inside `config.netns`) and
    /// starts it; the desktop is on.
    ///
    /// # Errors
    /// [`WakeError::Netns`], [`WakeError::PacketSocket`] or
    /// [`WakeError::Thread`].
    pub fn start(config: S3Config) -> Result<Self, WakeError> {
        let socket = netns::run_in(config.netns.as_deref(), || PacketSocket::open(&config.interface))??;
        let power = Power { state: S3State::On, since: Instant::now(), stats: S3Stats::default(), last_error: None };
        let shared = Arc::new(Shared {
            config,
            power: Mutex::new(power),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let listener = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("s3-listener".into())
            .spawn(move || listen(&listener, &socket))
            .map_err(|source| WakeError::Thread { what: "s3-listener", source })?;
        Ok(EmulatedS3 { shared, threads: vec![thread] })
    }

    /// Starts going to sleep (if on); asleep after `suspend_time`.
    pub fn suspend(&self) {
        request_suspend(&self.shared);
    }

    /// The power state now.
    pub fn state(&self) -> S3State {
        self.shared.lock().state
    }

    /// The counters now.
    pub fn stats(&self) -> S3Stats {
        self.shared.lock().stats
    }

    /// The last failure of a suspend or resume step, if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// Waits up to `timeout` until `done` holds for the state and counters;
    /// returns whether it did.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(S3State, &S3Stats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut power = self.shared.lock();
        while !done(power.state, &power.stats) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            power = self
                .shared
                .changed
                .wait_timeout(power, left)
                .expect("power lock poisoned: a thread panicked holding it")
                .0;
        }
        true
    }

    /// Sleeps whenever the daemon whose event socket is `events` has
    /// reported nothing for `wait` (t_w) while the desktop is on. Any event
    /// counts: a connection or a request means the desktop is needed.
    ///
    /// # Errors
    /// [`WakeError::Events`] or [`WakeError::Thread`].
    pub fn suspend_when_idle(&mut self, events: &Path, wait: Duration) -> Result<(), WakeError> {
        let err = |source| WakeError::Events { path: events.to_owned(), source };
        let stream = UnixStream::connect(events).map_err(err)?;
        stream.set_read_timeout(Some(TICK)).map_err(err)?;
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("s3-idle".into())
            .spawn(move || sleep_when_idle(&shared, stream, wait))
            .map_err(|source| WakeError::Thread { what: "idle-sleep", source })?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for EmulatedS3 {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Leave the desktop running whatever state it was in: stopped
        // daemons would outlive the test.
        let state = self.shared.lock().state;
        if matches!(state, S3State::Asleep | S3State::Resuming) {
            if let Err(e) = resume_now(&self.shared.config) {
                tracing::warn!("emulated S3: resuming on drop: {}", wire::chain(&e));
            }
        }
    }
}

fn request_suspend(shared: &Shared) {
    let mut power = shared.lock();
    if power.state == S3State::On {
        power.state = S3State::Suspending;
        power.since = Instant::now() + shared.config.suspend_time;
        tracing::info!(interface = %shared.config.interface, "emulated S3: suspending");
        drop(power);
        shared.changed.notify_all();
    }
}

/// The listener: hears frames, and moves between states when their times
/// are up.
fn listen(shared: &Shared, socket: &PacketSocket) {
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::SeqCst) {
        step_clock(shared);
        match socket.recv_incoming(&mut buf, TICK) {
            Ok(Some(n)) => heard(shared, &buf[..n]),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(interface = %socket.interface(), "emulated S3: receive failed: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Counts a frame; a magic packet wakes a sleeping desktop.
fn heard(shared: &Shared, frame: &[u8]) {
    let mut power = shared.lock();
    match magic::recognise(frame, shared.config.mac) {
        Some(kind) => {
            power.stats.magic_packets += 1;
            tracing::info!(interface = %shared.config.interface, "emulated S3: magic packet ({kind}) while {}", power.state);
            if power.state == S3State::Asleep {
                power.state = S3State::Resuming;
                power.since = Instant::now() + shared.config.resume_time;
            }
        }
        None => power.stats.other_frames += 1,
    }
    drop(power);
    shared.changed.notify_all();
}

/// Finishes a suspend or resume whose time is up.
fn step_clock(shared: &Shared) {
    let state = {
        let power = shared.lock();
        if Instant::now() < power.since {
            return;
        }
        power.state
    };
    let (result, next) = match state {
        S3State::Suspending => (suspend_now(&shared.config), S3State::Asleep),
        S3State::Resuming => (resume_now(&shared.config), S3State::On),
        S3State::On | S3State::Asleep => return,
    };
    let mut power = shared.lock();
    if let Err(e) = result {
        let text = wire::chain(&e);
        tracing::error!("emulated S3: {text}");
        power.last_error = Some(text);
    }
    power.state = next;
    power.since = Instant::now();
    match next {
        S3State::Asleep => power.stats.suspends += 1,
        _ => power.stats.resumes += 1,
    }
    tracing::info!(interface = %shared.config.interface, "emulated S3: {next}");
    drop(power);
    shared.changed.notify_all();
}

/// Stops the daemons, then silences the interface.
fn suspend_now(config: &S3Config) -> Result<(), WakeError> {
    signal_all(&config.pids, Signal::SIGSTOP)?;
    ip(config, &["addr", "del", &config.address, "dev", &config.interface])
}

/// Gives the interface its address back, then continues the daemons.
fn resume_now(config: &S3Config) -> Result<(), WakeError> {
    let address = ip(config, &["addr", "add", &config.address, "brd", "+", "dev", &config.interface]);
    signal_all(&config.pids, Signal::SIGCONT)?;
    address
}

fn signal_all(pids: &[i32], signal: Signal) -> Result<(), WakeError> {
    for &pid in pids {
        kill(Pid::from_raw(pid), signal).map_err(|source| WakeError::Signal {
            pid,
            signal: signal.as_str(),
            source,
        })?;
    }
    Ok(())
}

/// Runs `ip [-n NETNS] ARGS`.
fn ip(config: &S3Config, args: &[&str]) -> Result<(), WakeError> {
    let mut command = Command::new("ip");
    if let Some(ns) = &config.netns {
        command.args(["-n", ns]);
    }
    command.args(args);
    let line =
        format!("ip {}{}", config.netns.as_deref().map(|n| format!("-n {n} ")).unwrap_or_default(), args.join(" "));
    let out = command.output().map_err(|e| WakeError::Command { command: line.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(WakeError::Command {
            command: line,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Reads the event stream and asks for sleep after `wait` without events
/// while on. Ends when the daemon closes the stream or on stop.
fn sleep_when_idle(shared: &Shared, stream: UnixStream, wait: Duration) {
    let mut reader = std::io::BufReader::new(stream);
    let mut line = Vec::new();
    let mut last_event = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.clear();
                    last_event = Instant::now();
                }
            }
            // A timeout keeps what was read of a line in `line`.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("emulated S3: event stream failed: {e}");
                return;
            }
        }
        let power = shared.lock();
        // Idle time counts from the last event or from the resume,
        // whichever is later.
        let idle_since = last_event.max(power.since);
        if power.state == S3State::On && idle_since.elapsed() >= wait {
            drop(power);
            request_suspend(shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_print() {
        let all = [S3State::On, S3State::Suspending, S3State::Asleep, S3State::Resuming];
        let names: Vec<_> = all.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["on", "suspending", "asleep", "resuming"]);
    }

    #[test]
    fn a_magic_packet_moves_asleep_to_resuming_only() {
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let config = S3Config {
            netns: None,
            interface: "lo".into(),
            address: "127.0.0.9/8".into(),
            mac,
            pids: vec![],
            suspend_time: Duration::ZERO,
            resume_time: Duration::from_secs(3600),
        };
        let power = Power { state: S3State::On, since: Instant::now(), stats: S3Stats::default(), last_error: None };
        let shared = Shared { config, power: Mutex::new(power), changed: Condvar::new(), stop: AtomicBool::new(false) };
        let frame = magic::ethernet_frame(Mac([2, 0, 0, 0, 0, 1]), mac);
        heard(&shared, &frame);
        assert_eq!(shared.lock().state, S3State::On);
        shared.lock().state = S3State::Asleep;
        heard(&shared, &frame[..frame.len() - 1]);
        assert_eq!(shared.lock().state, S3State::Asleep);
        heard(&shared, &frame);
        assert_eq!(shared.lock().state, S3State::Resuming);
        let stats = shared.lock().stats;
        assert_eq!((stats.magic_packets, stats.other_frames), (2, 1));
        // The resume is an hour away: the clock does not finish it yet.
        step_clock(&shared);
        assert_eq!(shared.lock().state, S3State::Resuming);
    }
}
