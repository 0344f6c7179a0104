//! The benchmark's office: three network namespaces on one LAN (desktop,
//! server, and a client that talks to the VM), the desktop-server link
//! capped with `tc`, and the VM's network presence, so that the guest can
//! be told to dirty memory while it runs on the server.
//!
//! The desktop and the server bridge their `eth0` and hold a tap for the
//! VM (`tests::vmnet`, the same topology as the end-to-end
//! tests): a QEMU on either host gives the guest the same NIC, with the
//! same MAC, so one device state fits both. The client is a third host,
//! because while the VM is consolidated the desktop is (in a deployment)
//! asleep: the requests to the VM must not cross the measured link. Its
//! `eth0` is not capped.
//!
//! Only one QEMU at a time may hold a host's tap: the caller drops a
//! host's QEMU before it starts the next one there.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use remote_wakeup::netns::run_in;
use serde_json::Value;
use tests::netns::office::{DESKTOP_CIDR, SERVER_CIDR};
use tests::netns::{Host, Lan};
use tests::vmnet::{bridge_host, Nic, NsTap};

use crate::BenchResult;

/// The client host's address on the LAN.
const CLIENT_CIDR: &str = "10.77.0.3/24";
/// The VM's own address (the guest's `jt.net=`).
pub const VM_CIDR: &str = "10.77.0.50/24";
/// The port of the guest's line service (`jt.serve=`).
pub const VM_PORT: u16 = 7000;
/// The VM's MAC, the same on every host.
const VM_MAC: &str = "02:4a:54:00:00:50";
/// The tap's name on the desktop and on the server.
const TAP: &str = "vm0";
/// How long the client waits for a connection to the VM or for a reply
/// (a `dirty` under TCG takes seconds; TCP retransmission after a move
/// adds more).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Which of the two VM hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The user's desktop: where the VM lives, and its checkpoint.
    Desktop,
    /// The consolidation server.
    Server,
}

/// The namespaces, the capped link and the VM's taps. Dropping it deletes
/// the taps, then the namespaces (fields drop in declaration order).
pub struct CappedOffice {
    desktop_tap: NsTap,
    server_tap: NsTap,
    lan: Lan,
    /// Whether `tc` capped the desktop-server link.
    pub capped: bool,
    nic: Nic,
}

impl CappedOffice {
    /// Builds the LAN, caps the desktop's and the server's `eth0` at
    /// `rate_mbit` on egress (so both directions between them), bridges
    /// both hosts and gives each a tap for the VM. If `tc` cannot cap, says
    /// so and goes on uncapped.
    pub fn build(rate_mbit: u64) -> CappedOffice {
        let lan = Lan::build(&[
            Host { role: "desktop", cidr: DESKTOP_CIDR, mac: None },
            Host { role: "server", cidr: SERVER_CIDR, mac: None },
            Host { role: "client", cidr: CLIENT_CIDR, mac: None },
        ]);
        let mut capped = true;
        for ns in [lan.host(0), lan.host(1)] {
            if let Err(why) = cap_link(ns, rate_mbit) {
                println!("NOTE: tc cannot cap the link here ({why}); every figure below is UNCAPPED (veth speed)");
                capped = false;
                break;
            }
        }
        // The qdisc stays on eth0 when eth0 becomes a bridge port.
        bridge_host(lan.host(0), DESKTOP_CIDR);
        bridge_host(lan.host(1), SERVER_CIDR);
        let desktop_tap = NsTap::create(lan.host(0), TAP);
        let server_tap = NsTap::create(lan.host(1), TAP);
        CappedOffice { desktop_tap, server_tap, lan, capped, nic: Nic::new(VM_MAC) }
    }

    /// The desktop's namespace.
    pub fn desktop(&self) -> &str {
        self.lan.host(0)
    }

    /// The server's namespace.
    pub fn server(&self) -> &str {
        self.lan.host(1)
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Desktop => self.desktop(),
            Side::Server => self.server(),
        }
    }

    /// The address of `side` on the LAN, without its prefix.
    pub fn ip(side: Side) -> Ipv4Addr {
        let cidr = match side {
            Side::Desktop => DESKTOP_CIDR,
            Side::Server => SERVER_CIDR,
        };
        cidr.split('/').next().and_then(|ip| ip.parse().ok()).expect("the office CIDRs are IPv4 address/prefix")
    }

    /// QEMU arguments for the VM's NIC on `side`'s tap; the QEMU must be
    /// started inside that side's namespace.
    pub fn nic_args(&self, side: Side) -> Vec<std::ffi::OsString> {
        let tap = match side {
            Side::Desktop => &self.desktop_tap,
            Side::Server => &self.server_tap,
        };
        self.nic.qemu_args(tap)
    }

    /// Bytes the desktop's `eth0` has sent and received so far: everything
    /// that crossed the capped link between desktop and server.
    pub fn link_bytes(&self) -> BenchResult<u64> {
        let out =
            Command::new("ip").args(["-n", self.desktop(), "-s", "-j", "link", "show", "dev", "eth0"]).output()?;
        if !out.status.success() {
            return Err(format!("ip -s link: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let info: Value = serde_json::from_slice(&out.stdout)?;
        let stats = &info[0]["stats64"];
        let (rx, tx) = (stats["rx"]["bytes"].as_u64(), stats["tx"]["bytes"].as_u64());
        Ok(rx.zip(tx).map(|(rx, tx)| rx + tx).ok_or("no byte counters in `ip -s -j link`")?)
    }

    /// Sends `line` to the guest's line service from the client host and
    /// returns the reply line, retrying the connection until the VM answers
    /// (after a move, the LAN has to learn where the VM now is).
    pub fn ask_vm(&self, line: &str) -> BenchResult<String> {
        let ip = VM_CIDR.split('/').next().and_then(|ip| ip.parse::<Ipv4Addr>().ok()).expect("VM_CIDR is IPv4");
        let addr = SocketAddr::from((ip, VM_PORT));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let stream = loop {
            match run_in(Some(self.lan.host(2)), || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))? {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the client cannot reach the VM's service at {addr}: {e}").into())
                }
                Err(_) => sleep(Duration::from_millis(200)),
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut writer = stream.try_clone()?;
        writer.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .map_err(|e| format!("waiting for the VM's reply to {line:?}: {e}"))?;
        if reply.is_empty() {
            return Err(format!("the VM closed the connection without answering {line:?}").into());
        }
        Ok(reply.trim_end().to_owned())
    }
}

/// Caps `eth0` of namespace `ns` at `mbit` on egress; with both ends capped
/// both directions are.
fn cap_link(ns: &str, mbit: u64) -> Result<(), String> {
    let rate = format!("{mbit}mbit");
    // A burst of at least 1 ms at the rate and 64 KiB (a veth GSO packet).
    let burst = format!("{}", (mbit * 1000 / 8).max(64 << 10));
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", &burst])
        .args(["latency", "50ms"])
        .output()
        .map_err(|e| format!("tc does not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
