//! A VM's network presence on the test office LAN: its NIC is a tap device
//! on its host's bridge, with a MAC fixed for the VM's life, so that moving
//! the VM between hosts moves a peer of the LAN and not an address.
//!
//! # Topology
//!
//! ```text
//!  namespace   links
//!  lan         br0 [port0, port1, port2]          the office LAN (veth ends)
//!  desktop     br0 [eth0 = port0's peer, vm0]     vm0: the VM's tap, QEMU before the move
//!  server      br0 [eth0 = port1's peer, vm0]     vm0: the VM's tap, QEMU after the move
//!  client      eth0 = port2's peer                talks to the VM's service
//! ```
//!
//! Each host that runs VMs (desktop, server) gets its own bridge `br0`
//! enslaving its `eth0` (its veth port on the LAN) and, while the VM runs
//! there, the VM's tap. That is how a real desktop or server bridges its
//! VMs, and it is what makes a move real: the tap, and the QEMU that owns
//! it, are on the destination host's side, in its namespace, and the LAN
//! bridge must *learn* that the VM's MAC is now behind another port. QEMU's
//! `announce-self` (RARP from the NIC) teaches it. The alternative, taps
//! directly on the LAN bridge, would make a move invisible to the LAN's
//! forwarding table and prove nothing about the announcement.
//!
//! Enslaving `eth0` means the host's own address moves to `br0` (a bridge
//! port's address would not receive anything); `br0` takes `eth0`'s MAC so
//! the host keeps its identity on the LAN (Wake-on-LAN aims at it).
//!
//! QEMU must open the tap from inside the host's namespace: spawn it on a
//! thread that entered it (`remote_wakeup::netns::run_in`); the child
//! inherits the thread's namespace. After a resume on another host, QMP
//! `announce-self` makes QEMU send RARP frames from the NIC's MAC so that
//! the LAN learns the new port (the caller sends it: QMP arguments are
//! JSON, which this crate does not depend on).

use std::ffi::OsString;
use std::process::Command;

use crate::netns::ip;

/// The host bridge's name in every host namespace.
pub const HOST_BRIDGE: &str = "br0";

/// Makes `ns`'s bridge [`HOST_BRIDGE`]: its `eth0` (already addressed
/// `cidr` by [`crate::netns::Lan::build`]) becomes a bridge port and the
/// address moves to the bridge, which keeps `eth0`'s MAC.
pub fn bridge_host(ns: &str, cidr: &str) {
    let mac = link_mac(ns, "eth0");
    ip(&["-n", ns, "link", "add", HOST_BRIDGE, "address", &mac, "type", "bridge"]);
    ip(&["-n", ns, "addr", "del", cidr, "dev", "eth0"]);
    ip(&["-n", ns, "link", "set", "eth0", "master", HOST_BRIDGE]);
    ip(&["-n", ns, "addr", "add", cidr, "brd", "+", "dev", HOST_BRIDGE]);
    ip(&["-n", ns, "link", "set", HOST_BRIDGE, "up"]);
}

/// The MAC of `link` in namespace `ns`.
fn link_mac(ns: &str, link: &str) -> String {
    // /sys shows the namespace of whoever mounted it; `ip netns exec`
    // remounts it for `ns`.
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &format!("/sys/class/net/{link}/address")])
        .output()
        .expect("ip netns exec runs");
    assert!(out.status.success(), "reading {link}'s MAC in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A persistent tap device on a host's bridge, deleted on drop.
#[derive(Debug)]
pub struct NsTap {
    ns: String,
    name: String,
}

impl NsTap {
    /// Makes tap `name` in namespace `ns`, a port of [`HOST_BRIDGE`], up.
    /// QEMU attaches to it by name (`ifname=`), from inside `ns`.
    pub fn create(ns: &str, name: &str) -> NsTap {
        ip(&["-n", ns, "tuntap", "add", "dev", name, "mode", "tap"]);
        let tap = NsTap { ns: ns.to_owned(), name: name.to_owned() };
        ip(&["-n", ns, "link", "set", name, "master", HOST_BRIDGE]);
        ip(&["-n", ns, "link", "set", name, "up"]);
        tap
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace it lives in (QEMU must run there).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Whether the host's bridge has learned `mac` behind this tap, i.e.
    /// frames from that MAC came out of this tap (the VM sent them here).
    pub fn bridge_learned(&self, mac: &str) -> bool {
        let out = Command::new("bridge")
            .args(["-n", &self.ns, "fdb", "show", "br", HOST_BRIDGE, "brport", &self.name])
            .output()
            .expect("bridge (iproute2) runs");
        assert!(out.status.success(), "bridge fdb show in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.starts_with(&mac.to_ascii_lowercase()) && !line.contains("permanent"))
    }
}

impl Drop for NsTap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["-n", &self.ns, "link", "del", &self.name]).status();
    }
}

/// The VM's NIC: a virtio-net device with a MAC that stays the same on
/// every host.
#[derive(Debug, Clone)]
pub struct Nic {
    /// The NIC's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

impl Nic {
    /// A NIC with MAC `mac`.
    pub fn new(mac: &str) -> Nic {
        Nic { mac: mac.to_owned() }
    }

    /// QEMU arguments connecting this NIC to `tap` (no helper scripts: the
    /// tap is already on the bridge).
    pub fn qemu_args(&self, tap: &NsTap) -> Vec<OsString> {
        qemu_driver::nic_args(tap.name(), self.mac.parse().expect("a test NIC has a valid MAC"))
    }
}
