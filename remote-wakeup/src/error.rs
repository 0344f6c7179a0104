//! What can go wrong while waking a desktop or emulating its sleep.

use std::net::{IpAddr, SocketAddr};

use crate::magic::Mac;

/// Errors of remote-wakeup; each names the desktop (or interface) and what
/// to check.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The UDP broadcast of a magic packet could not be sent.
    #[error("remote-wakeup: {desktop} ({mac}): sending the magic packet to {broadcast}:9 failed (is there a route to that broadcast address?)")]
    SendUdp {
        /// The desktop's name.
        desktop: String,
        /// Its MAC.
        mac: Mac,
        /// Where the packet was sent.
        broadcast: IpAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// A raw frame could not be sent.
    #[error("remote-wakeup: {desktop} ({mac}): sending the 0x0842 frame on {interface} failed")]
    SendRaw {
        /// The desktop's name.
        desktop: String,
        /// Its MAC.
        mac: Mac,
        /// The interface.
        interface: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// An AF_PACKET socket could not be opened or bound.
    #[error("remote-wakeup: cannot open a raw packet socket on interface {interface} (it needs root or CAP_NET_RAW, and the interface must exist)")]
    PacketSocket {
        /// The interface.
        interface: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The desktop never answered the probe.
    #[error("remote-wakeup: {desktop} ({mac}) did not answer on {probe} within {waited_secs} s after {packets} magic packets: is Wake-on-LAN enabled in its firmware and NIC (ethtool -s <nic> wol g), and is {broadcast} its subnet's broadcast address?")]
    GaveUp {
        /// The desktop's name.
        desktop: String,
        /// Its MAC.
        mac: Mac,
        /// The probed address.
        probe: SocketAddr,
        /// Where the packets went.
        broadcast: IpAddr,
        /// Seconds waited.
        waited_secs: u64,
        /// Magic packets sent.
        packets: u64,
    },
    /// Another caller was waking the desktop and failed; this caller waited
    /// for it.
    #[error("remote-wakeup: {desktop}: the wake this request joined failed: {reason}")]
    JoinedWakeFailed {
        /// The desktop's name.
        desktop: String,
        /// The leader's error, as text.
        reason: String,
    },
    /// The caller that was waking the desktop panicked.
    #[error("remote-wakeup: {desktop}: the thread waking it panicked (a bug: see its panic message)")]
    LeaderPanicked {
        /// The desktop's name.
        desktop: String,
    },
    /// Entering a network namespace failed.
    #[error("remote-wakeup: cannot enter network namespace {name} (does /run/netns/{name} exist? it needs root)")]
    Netns {
        /// The namespace's name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (`ip`) failed.
    #[error("remote-wakeup: `{command}` failed: {detail} (is iproute2 installed? run scripts/install-deps)")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or spawn error.
        detail: String,
    },
    /// Stopping or continuing a desktop daemon failed.
    #[error("remote-wakeup: sending {signal} to the desktop daemon {pid} failed (has it exited?)")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal's name.
        signal: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The daemon's event socket could not be used.
    #[error("remote-wakeup: cannot follow the event socket {path} (is memserv or diskserv running with --events?)")]
    Events {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("remote-wakeup: cannot start the {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
