//! [`DesktopWaker`]: one desktop's Wake-on-LAN state, the wake itself, and
//! the coalescing of concurrent callers.
//!
//! The lock protects only bookkeeping; nobody holds it while sending or
//! probing. Exactly one caller at a time is the *leader* (`busy` is set):
//! it probes, sends and waits with the lock released; the others sleep on
//! the condition variable until it finishes and then read its outcome
//! (`round` tells them a round they joined has ended).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::WakeError;
use crate::magic::{self, Mac};
use crate::packet_socket::PacketSocket;

/// What the server knows of a desktop and how to wake it.
#[derive(Debug, Clone)]
pub struct WakeTarget {
    /// The desktop's name (for logs and errors).
    pub name: String,
    /// The MAC its NIC wakes for.
    pub mac: Mac,
    /// Broadcast address of its subnet; the UDP magic packet goes to port 9
    /// there.
    pub broadcast: IpAddr,
    /// Also send a raw EtherType 0x0842 frame on this interface.
    pub raw_interface: Option<String>,
    /// memserv's or diskserv's address: the desktop is awake when a TCP
    /// connect here succeeds.
    pub probe: SocketAddr,
    /// Bound on one probe's connect.
    pub probe_timeout: Duration,
    /// How long a successful probe (or fetch) counts as "awake".
    pub awake_validity: Duration,
    /// First pause before re-sending; it doubles up to `max_resend`.
    pub resend: Duration,
    /// Longest pause between re-sends.
    pub max_resend: Duration,
    /// Give up after this long without an answer.
    pub give_up_after: Duration,
}

impl WakeTarget {
    /// Defaults: probe timeout 500 ms, awake for 1 s after a probe, re-send
    /// after 1 s then every 2 s, give up after 60 s, UDP only.
    pub fn new(name: impl Into<String>, mac: Mac, broadcast: IpAddr, probe: SocketAddr) -> Self {
        WakeTarget {
            name: name.into(),
            mac,
            broadcast,
            raw_interface: None,
            probe,
            probe_timeout: Duration::from_millis(500),
            awake_validity: Duration::from_secs(1),
            resend: Duration::from_secs(1),
            max_resend: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// What the server believes of a desktop's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeState {
    /// Answered a probe or a fetch recently (or nothing is known yet, see
    /// [`DesktopWaker::state`]).
    Awake,
    /// Magic packets are out; waiting for it to answer.
    Waking,
    /// Its last probe failed and no wake is in progress.
    Asleep,
}

impl std::fmt::Display for WakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WakeState::Awake => "awake",
            WakeState::Waking => "waking",
            WakeState::Asleep => "asleep",
        })
    }
}

/// Counters of one desktop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeStats {
    /// Wakes: rounds that had to send magic packets.
    pub wakes: u64,
    /// Wakes that gave up.
    pub failed_wakes: u64,
    /// Magic packets sent (each UDP datagram and each raw frame).
    pub magic_packets: u64,
    /// Callers that waited for another caller's wake.
    pub joined: u64,
    /// Time spent waking, summed over wakes, in milliseconds.
    pub total_wait_ms: u64,
}

/// A snapshot of one desktop, for `jettison status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesktopStatus {
    /// The desktop's name.
    pub name: String,
    /// Its MAC.
    pub mac: String,
    /// The probed address.
    pub probe: String,
    /// What the server believes now.
    pub state: WakeState,
    /// Its counters.
    pub stats: WakeStats,
}

/// How a [`DesktopWaker::wake_up`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOutcome {
    /// It was known or found awake; nothing was sent.
    AlreadyAwake,
    /// This call woke it after sending this many magic packets.
    Woken {
        /// Magic packets this wake sent.
        packets: u64,
        /// How long it took.
        waited: Duration,
    },
    /// Another caller's wake finished while this one waited.
    Joined,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the desktop last answered.
    last_awake: Option<Instant>,
    /// A leader is probing or waking.
    busy: bool,
    /// The leader has sent magic packets in its current round.
    sending: bool,
    /// Whether the last probe failed (without a wake since).
    asleep: bool,
    /// Rounds finished, so that waiters know theirs has ended.
    round: u64,
    /// The last round's failure, for the callers that joined it.
    last_failure: Option<String>,
    stats: WakeStats,
}

/// Wakes one desktop; implements [`wire::WakeHook`].
#[derive(Debug)]
pub struct DesktopWaker {
    config: WakeTarget,
    inner: Mutex<Inner>,
    done: Condvar,
}

impl DesktopWaker {
    /// A waker for the desktop `config` describes; nothing is sent yet.
    pub fn new(config: WakeTarget) -> Self {
        DesktopWaker { config, inner: Mutex::new(Inner::default()), done: Condvar::new() }
    }

    /// The desktop's configuration.
    pub fn config(&self) -> &WakeTarget {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("waker lock poisoned: a thread panicked holding it")
    }

    /// Records that the desktop just answered (a fetch succeeded), so that
    /// the next [`DesktopWaker::wake_up`] returns at once.
    pub fn mark_awake(&self) {
        let mut inner = self.lock();
        inner.last_awake = Some(Instant::now());
        inner.asleep = false;
    }

    /// What the server believes now. A desktop never probed counts as
    /// awake: the server only learns otherwise by asking.
    pub fn state(&self) -> WakeState {
        let inner = self.lock();
        if inner.sending {
            WakeState::Waking
        } else if inner.asleep {
            WakeState::Asleep
        } else {
            WakeState::Awake
        }
    }

    /// The counters now.
    pub fn stats(&self) -> WakeStats {
        self.lock().stats
    }

    /// State and counters, serialisable.
    pub fn status(&self) -> DesktopStatus {
        DesktopStatus {
            name: self.config.name.clone(),
            mac: self.config.mac.to_string(),
            probe: self.config.probe.to_string(),
            state: self.state(),
            stats: self.stats(),
        }
    }

    /// Returns once the desktop answers its probe: at once if it answered
    /// within `awake_validity`, else after probing and, if that fails,
    /// sending magic packets until it answers. Concurrent callers share one
    /// wake.
    ///
    /// # Errors
    /// [`WakeError::GaveUp`] after `give_up_after` without an answer;
    /// [`WakeError::JoinedWakeFailed`] for callers that waited for a wake
    /// that gave up. A failed send is logged, not returned: the next
    /// re-send may work.
    pub fn wake_up(&self) -> Result<WakeOutcome, WakeError> {
        let mut inner = self.lock();
        if inner.busy {
            let round = inner.round;
            inner.stats.joined += 1;
            while inner.round == round {
                inner = self.done.wait(inner).expect("waker lock poisoned: a thread panicked holding it");
            }
            return match &inner.last_failure {
                None => Ok(WakeOutcome::Joined),
                Some(reason) => {
                    Err(WakeError::JoinedWakeFailed { desktop: self.config.name.clone(), reason: reason.clone() })
                }
            };
        }
        if inner.last_awake.is_some_and(|t| t.elapsed() < self.config.awake_validity) {
            return Ok(WakeOutcome::AlreadyAwake);
        }
        inner.busy = true;
        drop(inner);

        // Waiters must never be left waiting for a leader that is gone: a
        // panic ends the round as a failure before it goes on unwinding.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.lead())) {
            Ok(result) => result,
            Err(panic) => {
                self.finish(&Err(WakeError::LeaderPanicked { desktop: self.config.name.clone() }));
                std::panic::resume_unwind(panic);
            }
        };
        self.finish(&result);
        result
    }

    /// Ends the leader's round with `result` and wakes the waiters.
    fn finish(&self, result: &Result<WakeOutcome, WakeError>) {
        let mut inner = self.lock();
        inner.busy = false;
        inner.sending = false;
        inner.round += 1;
        match result {
            Ok(outcome) => {
                inner.last_awake = Some(Instant::now());
                inner.asleep = false;
                inner.last_failure = None;
                if let WakeOutcome::Woken { waited, .. } = outcome {
                    inner.stats.total_wait_ms += u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
                }
            }
            Err(e) => {
                inner.asleep = true;
                inner.stats.failed_wakes += 1;
                inner.last_failure = Some(e.to_string());
            }
        }
        drop(inner);
        self.done.notify_all();
    }

    /// The leader's work, with the lock released: probe, then send and
    /// probe until it answers or the give-up time passes.
    fn lead(&self) -> Result<WakeOutcome, WakeError> {
        if self.probe() {
            return Ok(WakeOutcome::AlreadyAwake);
        }
        let started = Instant::now();
        {
            let mut inner = self.lock();
            inner.asleep = true;
            inner.sending = true;
            inner.stats.wakes += 1;
        }
        let config = &self.config;
        tracing::info!(desktop = %config.name, mac = %config.mac, "desktop asleep; sending magic packets");
        // The raw socket is opened once per wake: wakes are rare, and a
        // socket held for ever would pin the interface.
        let raw = config.raw_interface.as_deref().and_then(|interface| match PacketSocket::open(interface) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!(desktop = %config.name, "{}", wire::chain(&e));
                None
            }
        });
        let mut packets = 0u64;
        let mut pause = config.resend;
        loop {
            let (sent, error) = self.send_magic(raw.as_ref());
            packets += sent;
            if let Some(e) = error {
                tracing::warn!("{}", wire::chain(&e));
            }
            let next_send = Instant::now() + pause;
            while Instant::now() < next_send {
                if self.probe() {
                    let waited = started.elapsed();
                    tracing::info!(desktop = %config.name, "awake after {waited:?} and {packets} magic packets");
                    return Ok(WakeOutcome::Woken { packets, waited });
                }
                if started.elapsed() >= config.give_up_after {
                    return Err(WakeError::GaveUp {
                        desktop: config.name.clone(),
                        mac: config.mac,
                        probe: config.probe,
                        broadcast: config.broadcast,
                        waited_secs: started.elapsed().as_secs(),
                        packets,
                    });
                }
                // A refused or unreachable connect returns at once.
                std::thread::sleep(PROBE_PAUSE.min(next_send.saturating_duration_since(Instant::now())));
            }
            tracing::info!(desktop = %config.name, "no answer on {} after {:?}; re-sending", config.probe, started.elapsed());
            pause = (pause * 2).min(config.max_resend);
        }
    }

    /// Sends one round of magic packets now, without probing: the UDP
    /// datagram and, if configured, the raw frame. Returns how many went
    /// out.
    ///
    /// # Errors
    /// [`WakeError::PacketSocket`] when the raw interface cannot be opened;
    /// the send error when nothing went out.
    pub fn send_magic_packets(&self) -> Result<u64, WakeError> {
        let raw = self.config.raw_interface.as_deref().map(PacketSocket::open).transpose()?;
        let (sent, error) = self.send_magic(raw.as_ref());
        match error {
            Some(e) if sent == 0 => Err(e),
            _ => Ok(sent),
        }
    }

    /// Sends one UDP magic packet and, if configured, one raw frame;
    /// returns how many went out and the last send error.
    fn send_magic(&self, raw: Option<&PacketSocket>) -> (u64, Option<WakeError>) {
        let config = &self.config;
        let mut sent = 0;
        let mut error = None;
        match wol::send_wol(wol::MacAddr(config.mac.0), Some(config.broadcast), None) {
            Ok(()) => sent += 1,
            Err(source) => {
                error = Some(WakeError::SendUdp {
                    desktop: config.name.clone(),
                    mac: config.mac,
                    broadcast: config.broadcast,
                    source,
                });
            }
        }
        if let Some(socket) = raw {
            let source_mac = socket.hardware_address().unwrap_or_default();
            match socket.send(&magic::ethernet_frame(source_mac, config.mac)) {
                Ok(()) => sent += 1,
                Err(source) => {
                    error = Some(WakeError::SendRaw {
                        desktop: config.name.clone(),
                        mac: config.mac,
                        interface: socket.interface().to_owned(),
                        source,
                    });
                }
            }
        }
        self.lock().stats.magic_packets += sent;
        (sent, error)
    }

    /// Whether the desktop's service accepts a TCP connection now.
    fn probe(&self) -> bool {
        TcpStream::connect_timeout(&self.config.probe, self.config.probe_timeout).is_ok()
    }
}

/// Pause between probes that fail at once.
const PROBE_PAUSE: Duration = Duration::from_millis(100);

impl wire::WakeHook for DesktopWaker {
    /// Wakes the desktop; a failure is logged, and the caller's fetch then
    /// fails and retries (calling this again), so the guest waits rather
    /// than sees an error.
    fn wake(&self) {
        if let Err(e) = self.wake_up() {
            tracing::error!("{}", wire::chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::Arc;

    fn config(probe: SocketAddr) -> WakeTarget {
        let mut c = WakeTarget::new("desk", Mac([2, 0, 0, 0, 0, 9]), IpAddr::V4(Ipv4Addr::LOCALHOST), probe);
        c.give_up_after = Duration::from_millis(300);
        c.resend = Duration::from_millis(100);
        c
    }

    /// A port on loopback that refuses connections.
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn an_answering_desktop_is_awake_without_packets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let waker = DesktopWaker::new(config(listener.local_addr().unwrap()));
        assert_eq!(waker.wake_up().unwrap(), WakeOutcome::AlreadyAwake);
        assert_eq!(waker.wake_up().unwrap(), WakeOutcome::AlreadyAwake);
        assert_eq!(waker.state(), WakeState::Awake);
        assert_eq!(waker.stats().magic_packets, 0);
        assert_eq!(waker.stats().wakes, 0);
    }

    #[test]
    fn a_silent_desktop_gives_up_naming_it_and_is_asleep() {
        // Magic packets go to 127.0.0.1:9, where nothing listens.
        let waker = DesktopWaker::new(config(closed_port()));
        let err = waker.wake_up().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("desk (02:00:00:00:00:09)"), "{text}");
        assert!(text.contains("wol g"), "{text}");
        let stats = waker.stats();
        assert_eq!((stats.wakes, stats.failed_wakes), (1, 1));
        assert!(stats.magic_packets >= 1);
        assert_eq!(waker.state(), WakeState::Asleep);
        assert_eq!(waker.status().state.to_string(), "asleep");
    }

    #[test]
    fn concurrent_callers_share_one_failed_wake() {
        let waker = Arc::new(DesktopWaker::new(config(closed_port())));
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| waker.wake_up())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stats = waker.stats();
        // Callers that arrived after the round ended start their own; every
        // round is led by one caller and joined by the rest.
        assert_eq!(stats.wakes + stats.joined, 4);
        assert_eq!(stats.failed_wakes, stats.wakes);
        assert!(results.iter().all(Result::is_err));
    }

    #[test]
    fn the_udp_packet_is_the_magic_payload() {
        // Port 9 is privileged: only root can listen there to check.
        let Ok(listener) = std::net::UdpSocket::bind("127.0.0.1:9") else { return };
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let waker = DesktopWaker::new(config(closed_port()));
        assert_eq!(waker.send_magic_packets().unwrap(), 1);
        let mut buf = [0u8; 200];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(buf[..n], magic::payload(waker.config().mac));
        assert_eq!(waker.stats().magic_packets, 1);
    }

    #[test]
    fn status_serialises() {
        let waker = DesktopWaker::new(config(closed_port()));
        let json = serde_json::to_value(waker.status()).unwrap();
        assert_eq!(json["state"], "awake");
        assert_eq!(json["mac"], "02:00:00:00:00:09");
        assert_eq!(json["stats"]["wakes"], 0);
    }
}
