//! A whole office in network namespaces: a desktop and a server, each with
//! its bridge and its `jettison` daemon, and a client host, on one LAN; one
//! VM on the desktop serving a TCP line service to the client. The
//! end-to-end tests and `scripts/demo` drive it with the real `jettison`
//! command.
//!
//! ```text
//!  lan      br0 [port0, port1, port2]
//!  desktop  br0 [eth0, jt-vm1 while the VM runs here]   jettison desktop   10.77.0.2
//!  server   br0 [eth0, jt-vm1 while the VM runs there]  jettison server    10.77.0.1
//!  client   eth0                                         the line client   10.77.0.3
//!  the VM   10.77.0.50, MAC 02:4a:54:00:00:50, line service on port 7000
//! ```
//!
//! Both daemons have QEMU drop to the unprivileged [`crate::QEMU_USER`]
//! (`qemu_user`), as the packaged configurations do, so every test of the
//! office runs its VM that way; an office cannot be built without the user.
//!
//! With [`OfficeSpec::desktops`] above one, more desktops join the LAN,
//! each with its own daemon and VM, numbered after the first
//! ([`OfficeDesktop::nth`]): `desktop2` at 10.77.0.101 with `vm2` at
//! 10.77.0.51, and so on, all consolidating to the one server.
//!
//! Everything lives under one directory the caller owns; on drop the
//! daemons get SIGTERM (the desktop's leaves its QEMU running, as for a
//! restart), and any QEMU or mount still naming that directory is killed
//! or detached, so a failed test leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::office::{DESKTOP_CIDR, SERVER_CIDR};
use crate::netns::{Daemon, Host, Lan};
use crate::vmnet::bridge_host;

/// The client's address.
pub const CLIENT_CIDR: &str = "10.77.0.3/24";
/// The VM's address and its line service.
pub const VM_SERVICE: &str = "10.77.0.50:7000";
/// Where the client host listens for the desktop guest's always-on client
/// ([`OfficeSpec::desktop_guest`], its `jt.peer=`): that guest dials out, as
/// an IM or mail client does, and answers lines as the small guest's service.
pub const CLIENT_PEER: &str = "10.77.0.3:7100";
/// The VM's MAC on both hosts.
pub const VM_MAC: &str = "02:4a:54:00:00:50";
/// The desktop's own MAC, which the server wakes it by (with `power`).
pub const DESKTOP_MAC: &str = "02:4a:57:00:00:02";
/// The desktop's interface on the LAN and its address (see the diagram).
pub const DESKTOP_LAN: (&str, &str) = ("br0", DESKTOP_CIDR);
/// The VM's name.
pub const VM: &str = "vm1";
/// The desktop's name (the server keeps its VMs under it).
pub const DESKTOP: &str = "desktop";
/// The VM's tap on either host.
pub const VM_TAP: &str = "jt-vm1";
/// Where each daemon serves its metrics, inside its host's namespace.
pub const METRICS: &str = "127.0.0.1:9464";
/// Text in the desktop-only file of the VM's disk.
pub const DESKTOP_TEXT: &str = "made on the desktop";

/// Size of `bulk.txt` on the VM's disk: data the guest leaves alone until
/// told to read it (`readall`).
pub const BULK_MIB: usize = 24;

/// `mib` MiB of pseudo-random hex text (nothing in it is zero or repeats).
fn bulk_text(mib: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = String::with_capacity(mib << 20);
    while text.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{x:016x}"));
    }
    text
}

/// What to build.
#[derive(Debug, Clone)]
pub struct OfficeSpec {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// RAM the guest fills with random data at boot (a used desktop).
    pub fill_mib: u64,
    /// The server's `capacity_mib`.
    pub capacity_mib: u64,
    /// The desktop's `failover_after_secs`.
    pub failover_secs: u64,
    /// The VM's disk in MiB.
    pub disk_mib: u64,
    /// The server's `max_fetch_mib_per_sec`, if any, over a 10 s
    /// `fetch_window_secs` (short, so that a test sees the rule act in
    /// seconds; the packaged window is 300 s).
    pub max_fetch_mib_per_sec: Option<f64>,
    /// The server's `checkpoint_every_secs` (its default, 600, if none).
    pub checkpoint_every_secs: Option<u64>,
    /// The server's `push_working_set` (on, as packaged).
    pub push_working_set: bool,
    /// The server's `push_whole_memory` (on as packaged; off here unless a
    /// test asks, so that the tests see the guest's own faults and the
    /// wakes they cause).
    pub push_whole_memory: bool,
    /// How the VM boots: the hosts' kernel (`None`, an ext4 data disk), or
    /// its own disk through firmware, as a user's desktop VM does.
    pub boot_disk: Option<BootDisk>,
    /// Whether the VM has a screen and USB input (the default, as in
    /// `desktop.toml`); `false`: headless.
    pub display: bool,
    /// The VM's `vcpus`.
    pub vcpus: u32,
    /// The office's `cpu_model` in `desktop.toml`, if it names one (else
    /// the default under TCG, `max`).
    pub cpu_model: Option<&'static str>,
    /// The keys of the desktop's `[power]` section, if it sleeps while its
    /// VM is away; the desktop's `mac` ([`DESKTOP_MAC`]) and the server's
    /// `wake_broadcast` come with it.
    pub power: Option<String>,
    /// The formats (`raw`, `qcow2`) of further disks of the VM, after its
    /// first: blank images of [`EXTRA_DISK_MIB`] MiB each (`/dev/vdb`, ...
    /// in the guest), written in the configuration as `[[vm.disks]]` tables
    /// with the first disk. Each has [`EXTRA_DISK_PATTERN`] in its block at
    /// [`EXTRA_DISK_MARK`], written on the desktop before the VM boots.
    pub extra_disks: &'static [&'static str],
    /// The keys of the desktop's `[activity]` section, if its daemon
    /// watches the user.
    pub activity: Option<String>,
    /// The VM is the Debian desktop guest (`scripts/desktop-guest-image`:
    /// Xfce, Firefox ESR, an always-on client dialling [`CLIENT_PEER`])
    /// instead of the small one: a qcow2 copy of its disk, booted through
    /// SeaBIOS. `boot_disk`, `fill_mib`, `disk_mib` and `extra_disks` do not
    /// apply; its serial console has `JTCOUNT` lines every 5 s once it is up.
    pub desktop_guest: bool,
    /// Words added to the desktop guest's kernel command line (after the
    /// image's own, so they win: `transparent_hugepage=always`).
    pub desktop_guest_args: String,
    /// A fleet: a second server ([`SERVER2`], `capacity_mib` [`SERVER2_CAPACITY_MIB`])
    /// and a 3-member etcd cluster on the LAN, both servers registering
    /// and the desktop choosing between them (`[fleet]` in each file).
    /// The desktop enrolls both; its `server` stays the first.
    pub fleet: bool,
    /// How many desktops, each with its daemon and one VM
    /// ([`OfficeDesktop::nth`]); the first is [`DESKTOP`] with [`VM`]. More
    /// than one only with the small guest booted from the hosts' kernel,
    /// without `extra_disks`, `power` or `activity`.
    pub desktops: usize,
}

/// The most desktops an office has room for in its address plan.
pub const MAX_DESKTOPS: usize = 48;

/// One desktop of the office and its VM: names, addresses and MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeDesktop {
    /// Its place, from 0.
    pub index: usize,
    /// Its name: [`DESKTOP`], then `desktop2`, `desktop3`, ...
    pub name: String,
    /// Its address with prefix: [`DESKTOP_CIDR`], then 10.77.0.(100 + index).
    pub cidr: String,
    /// Its MAC in `desktop.toml`: [`DESKTOP_MAC`], then the same with the index.
    pub mac: String,
    /// Its VM's name: [`VM`] (`vm1`), then `vm2`, ...
    pub vm: String,
    /// Its VM's MAC: [`VM_MAC`], then the same with the index.
    pub vm_mac: String,
    /// Its VM's address with prefix: 10.77.0.(50 + index)/24.
    pub vm_cidr: String,
}

impl OfficeDesktop {
    /// The `index`th desktop (from 0, below [`MAX_DESKTOPS`]).
    pub fn nth(index: usize) -> OfficeDesktop {
        assert!(index < MAX_DESKTOPS, "an office has room for {MAX_DESKTOPS} desktops, not {}", index + 1);
        let (name, cidr) = match index {
            0 => (DESKTOP.to_owned(), DESKTOP_CIDR.to_owned()),
            i => (format!("{DESKTOP}{}", i + 1), format!("10.77.0.{}/24", 100 + i)),
        };
        OfficeDesktop {
            index,
            name,
            cidr,
            mac: format!("02:4a:57:00:{index:02x}:02"),
            vm: format!("vm{}", index + 1),
            vm_mac: format!("02:4a:54:00:{index:02x}:50"),
            vm_cidr: format!("10.77.0.{}/24", 50 + index),
        }
    }

    /// Its address without the prefix.
    pub fn ip(&self) -> &str {
        self.cidr.split('/').next().unwrap_or_default()
    }

    /// Its VM's address without the prefix.
    pub fn vm_ip(&self) -> &str {
        self.vm_cidr.split('/').next().unwrap_or_default()
    }
}

/// The second server of a fleet ([`OfficeSpec::fleet`]): its name, namespace
/// index ([`Office::host`]) and address.
pub const SERVER2: (&str, usize, &str) = ("server2", 3, "10.77.0.4/24");
/// Its `capacity_mib`.
pub const SERVER2_CAPACITY_MIB: u64 = 4096;
/// The etcd members' hosts of a fleet (after the second server).
const ETCD_HOSTS: [&str; 3] = ["10.77.0.11/24", "10.77.0.12/24", "10.77.0.13/24"];

/// Size of each of [`OfficeSpec::extra_disks`].
pub const EXTRA_DISK_MIB: u64 = 16;
/// The byte that fills a block of each extra disk before the VM boots (`Z`).
pub const EXTRA_DISK_PATTERN: u8 = 0x5a;
/// The offset of that block.
pub const EXTRA_DISK_MARK: u64 = 1 << 20;

/// A VM that boots from its own disk (`scripts/guest-image --disk`):
/// syslinux on a FAT partition, which the guest also mounts as its data
/// disk (`jt.diskdev=/dev/vda1`), and paints its screen (`jt.screen=1`).
#[derive(Debug, Clone, Copy)]
pub struct BootDisk {
    /// `bios` or `uefi`.
    pub firmware: &'static str,
    /// `raw`, `qcow2`, or `qcow2-backed` (a qcow2 overlay over a base
    /// image, see [`crate::boot_disk`]).
    pub format: &'static str,
}

impl Default for OfficeSpec {
    fn default() -> Self {
        OfficeSpec {
            memory_mib: 256,
            fill_mib: 64,
            capacity_mib: 4096,
            failover_secs: 8,
            disk_mib: 64,
            max_fetch_mib_per_sec: None,
            checkpoint_every_secs: None,
            push_working_set: true,
            push_whole_memory: false,
            boot_disk: None,
            display: true,
            vcpus: 1,
            cpu_model: None,
            power: None,
            extra_disks: &[],
            activity: None,
            desktop_guest: false,
            desktop_guest_args: String::new(),
            fleet: false,
            desktops: 1,
        }
    }
}

/// The office.
#[derive(Debug)]
pub struct Office {
    dir: PathBuf,
    lan: Lan,
    /// Each desktop's host index on the LAN, in [`OfficeDesktop::nth`] order.
    desktop_hosts: Vec<usize>,
    /// Each desktop's daemon while it runs, in the same order.
    desktop_daemons: Vec<Option<Daemon>>,
    server_daemon: Option<Daemon>,
    /// A fleet's second server and etcd ([`OfficeSpec::fleet`]).
    server2_daemon: Option<Daemon>,
    _etcd: Option<crate::etcd::EtcdCluster>,
    /// The VM's disk image on the desktop (the first desktop's).
    pub disk: PathBuf,
    /// Its further disks' images ([`OfficeSpec::extra_disks`]).
    pub extra_disks: Vec<PathBuf>,
}

/// Writes `text` to `path`, panicking with the path on failure.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Gives each desktop and the server its key under `dir` (`desktop/`, ...
/// and `server/`) and enrolls each desktop at the server and the server at
/// it, with `jettison pair` and `jettison enroll` as an administrator would.
fn pair_and_enroll(dir: &Path, desktops: &[OfficeDesktop], fleet: bool) -> Result<(), String> {
    let run = |args: &[&std::ffi::OsStr]| -> Result<String, String> {
        let out = Command::new(crate::jettison_binary()).args(args).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("jettison {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let public_key = |host: &str| -> Result<String, String> {
        let key = dir.join(host).join("host.key");
        run(&["pair".as_ref(), "--key".as_ref(), key.as_os_str()])
    };
    let server = public_key("server")?;
    let server2 = if fleet { Some(public_key(SERVER2.0)?) } else { None };
    let enroll = |at: &str, name: &str, key: &str| {
        let peers = dir.join(at).join("peers");
        run(&["enroll".as_ref(), name.as_ref(), key.as_ref(), "--peers".as_ref(), peers.as_os_str()]).map(drop)
    };
    for desktop in desktops {
        let key = public_key(&desktop.name)?;
        enroll("server", &desktop.name, &key)?;
        enroll(&desktop.name, "server", &server)?;
        if let Some(server2) = &server2 {
            enroll(SERVER2.0, &desktop.name, &key)?;
            enroll(&desktop.name, SERVER2.0, server2)?;
        }
    }
    Ok(())
}

/// The VM of `desktop` as `spec` has it: its first disk (made in `dir`) and
/// the lines of its `[[vm]]` table that say how it boots and which disks it
/// has (`extra_disks` after the first, for the first desktop only).
fn vm_disks(
    dir: &Path,
    spec: &OfficeSpec,
    desktop: &OfficeDesktop,
    extra_disks: &[PathBuf],
) -> Result<(PathBuf, String), String> {
    let net = &desktop.vm_cidr;
    let guest_args = format!("jt.fill={} jt.disk={} jt.net={net} jt.serve=7000", spec.fill_mib, desktop.name);
    let (disk, format, vm_boot) = match spec.boot_disk {
        _ if spec.desktop_guest => {
            let args = format!("jt.net={net} jt.peer={CLIENT_PEER} {}", spec.desktop_guest_args);
            (crate::desktop_guest_disk(dir, &args)?, "qcow2", "firmware = \"bios\"\n".to_owned())
        }
        None => {
            let bulk = bulk_text(BULK_MIB);
            let files = [("desktop-only.txt", DESKTOP_TEXT), ("bulk.txt", &bulk)];
            (crate::ext4_image(dir, &files, spec.disk_mib)?, "raw", format!("kernel_args = \"{guest_args}\"\n"))
        }
        Some(boot) => {
            let args = format!("{guest_args} jt.diskdev=/dev/vda1 jt.screen=1");
            let disk = crate::boot_disk(dir, &args, &[("desktop-only.txt", DESKTOP_TEXT)], boot.format)?;
            let format = if boot.format == "qcow2-backed" { "qcow2" } else { boot.format };
            (disk, format, format!("firmware = \"{}\"\n", boot.firmware))
        }
    };
    // One disk the short way, as most files have it; several as tables.
    let disks = if extra_disks.is_empty() || desktop.index > 0 {
        format!("disk = \"{}\"\ndisk_format = \"{format}\"\n", disk.display())
    } else {
        let formats = std::iter::once(format).chain(spec.extra_disks.iter().copied());
        std::iter::once(&disk)
            .chain(extra_disks)
            .zip(formats)
            .map(|(image, format)| format!("[[vm.disks]]\npath = \"{}\"\nformat = \"{format}\"\n", image.display()))
            .collect()
    };
    Ok((disk, format!("{vm_boot}{disks}")))
}

impl Office {
    /// Builds the LAN, the key, the VM's disk and both configuration files
    /// under `dir`. Nothing runs yet.
    ///
    /// # Errors
    /// Why this machine cannot run it (no root, no mkfs.ext4, no guest, no
    /// [`crate::QEMU_USER`]).
    pub fn build(dir: &Path, spec: &OfficeSpec) -> Result<Office, String> {
        crate::netns::available()?;
        crate::fuse_available()?;
        crate::qemu_user_available()?;
        if spec.fleet {
            crate::etcd::available()?;
        }
        if !(1..=MAX_DESKTOPS).contains(&spec.desktops) {
            return Err(format!("an office has 1 to {MAX_DESKTOPS} desktops, not {}", spec.desktops));
        }
        let single_only = spec.desktop_guest
            || spec.boot_disk.is_some()
            || !spec.extra_disks.is_empty()
            || spec.power.is_some()
            || spec.activity.is_some();
        if spec.desktops > 1 && single_only {
            return Err("an office of several desktops runs the small guest from the hosts' kernel, without \
                        desktop_guest, boot_disk, extra_disks, power or activity: set desktops = 1 for those"
                .to_owned());
        }
        let guest = crate::guest()?;
        let desktops: Vec<OfficeDesktop> = (0..spec.desktops).map(OfficeDesktop::nth).collect();
        let mut extra_disks = Vec::new();
        for (i, format) in spec.extra_disks.iter().enumerate() {
            let image = dir.join(format!("extra-disk{}.{format}", i + 1));
            crate::run(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", format])
                    .arg(&image)
                    .arg(format!("{EXTRA_DISK_MIB}M")),
            )?;
            let write = format!("write -P {EXTRA_DISK_PATTERN} {EXTRA_DISK_MARK} 4096");
            crate::run(Command::new("qemu-io").args(["-f", format, "-c", &write]).arg(&image))?;
            extra_disks.push(image);
        }
        // Each desktop's VM: its first disk and the lines of its [[vm]]
        // table that say how it boots and what disks it has.
        let mut vms = Vec::new();
        for desktop in &desktops {
            let disk_dir = match desktop.index {
                0 => dir.to_owned(),
                _ => dir.join(format!("{}-vm", desktop.name)),
            };
            std::fs::create_dir_all(&disk_dir).map_err(|e| format!("cannot create {}: {e}", disk_dir.display()))?;
            let (disk, vm_lines) = vm_disks(&disk_dir, spec, desktop, &extra_disks)?;
            vms.push((disk, vm_lines));
        }
        pair_and_enroll(dir, &desktops, spec.fleet)?;
        let mut hosts = vec![
            Host { role: "desktop", cidr: DESKTOP_CIDR, mac: None },
            Host { role: "server", cidr: SERVER_CIDR, mac: None },
            Host { role: "client", cidr: CLIENT_CIDR, mac: None },
        ];
        if spec.fleet {
            hosts.push(Host { role: SERVER2.0, cidr: SERVER2.2, mac: None });
            hosts.extend(ETCD_HOSTS.iter().zip(["etcd1", "etcd2", "etcd3"]).map(|(cidr, role)| Host {
                role,
                cidr,
                mac: None,
            }));
        }
        // The further desktops after every other host, so that the first
        // hosts keep their indices ([`Office::host`]).
        let mut desktop_hosts = vec![0];
        for desktop in &desktops[1..] {
            desktop_hosts.push(hosts.len());
            hosts.push(Host { role: &desktop.name, cidr: &desktop.cidr, mac: None });
        }
        let lan = Lan::build(&hosts);
        for (desktop, &host) in desktops.iter().zip(&desktop_hosts) {
            bridge_host(lan.host(host), &desktop.cidr);
        }
        bridge_host(lan.host(1), SERVER_CIDR);
        let etcd = spec.fleet.then(|| {
            bridge_host(lan.host(SERVER2.1), SERVER2.2);
            let members: Vec<(&str, std::net::IpAddr)> = ETCD_HOSTS
                .iter()
                .enumerate()
                .map(|(i, cidr)| {
                    (
                        lan.host(SERVER2.1 + 1 + i),
                        cidr.split('/').next().unwrap_or_default().parse().expect("an address"),
                    )
                })
                .collect();
            crate::etcd::EtcdCluster::start(dir, &members)
        });
        let fleet = etcd.as_ref().map(|etcd| format!("\n[fleet]\n{}\n", etcd.fleet_line())).unwrap_or_default();
        let (kernel, initrd) = (guest.kernel.display(), guest.initrd.display());
        let d = dir.display();
        let mut rate = spec
            .max_fetch_mib_per_sec
            .map(|r| format!("max_fetch_mib_per_sec = {r:?}\nfetch_window_secs = 10\n"))
            .unwrap_or_default();
        if let Some(every) = spec.checkpoint_every_secs {
            rate.push_str(&format!("checkpoint_every_secs = {every}\n"));
        }
        rate.push_str(&format!("push_working_set = {}\n", spec.push_working_set));
        rate.push_str(&format!("push_whole_memory = {}\n", spec.push_whole_memory));
        // Only one desktop sleeps ([`OfficeSpec::desktops`]): it has [`DESKTOP_MAC`].
        let (mac, power) = match &spec.power {
            Some(keys) => {
                rate.push_str(&format!("wake_broadcast = \"{}\"\n", crate::netns::office::BROADCAST));
                (format!("mac = \"{DESKTOP_MAC}\"\n"), format!("\n[power]\n{keys}\n"))
            }
            None => (String::new(), String::new()),
        };
        let power = match &spec.activity {
            Some(keys) => format!("{power}\n[activity]\n{keys}\n"),
            None => power,
        };
        let cpu_model = spec.cpu_model.map(|m| format!("cpu_model = \"{m}\"\n")).unwrap_or_default();
        let server_toml = |name: &str, cidr: &str, capacity_mib: u64| {
            let ip = cidr.split('/').next().unwrap_or_default();
            let lease = if fleet.is_empty() { "" } else { "lease_ttl_secs = 5\n" };
            write(
                &dir.join(format!("{name}.toml")),
                &format!(
                    "name = \"{name}\"\nlisten = \"{ip}:7400\"\nhost_key = \"{d}/{name}/host.key\"\n\
                     peers = \"{d}/{name}/peers\"\nstate_dir = \"{d}/{name}/state\"\n\
                     run_dir = \"{d}/{name}/run\"\nbridge = \"br0\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\n\
                     accel = \"tcg\"\ncapacity_mib = {capacity_mib}\nqemu_user = \"{}\"\nmetrics_listen = \"{METRICS}\"\n{rate}{fleet}{lease}",
                    crate::QEMU_USER,
                ),
            );
        };
        server_toml("server", SERVER_CIDR, spec.capacity_mib);
        if spec.fleet {
            server_toml(SERVER2.0, SERVER2.2, SERVER2_CAPACITY_MIB);
        }
        // The idle limits are the defaults but for CPU: a TCG guest that
        // only counts costs 5-7% of a core, and the machine is shared.
        for (desktop, (_, vm_lines)) in desktops.iter().zip(&vms) {
            let (name, ip) = (&desktop.name, desktop.ip());
            write(
                &dir.join(format!("{name}.toml")),
                &format!(
                    "name = \"{name}\"\nhost_key = \"{d}/{name}/host.key\"\npeers = \"{d}/{name}/peers\"\nserver = \"10.77.0.1:7400\"\n\
                     control_listen = \"{ip}:7400\"\nserve_ip = \"{ip}\"\nstate_dir = \"{d}/{name}/state\"\n\
                     run_dir = \"{d}/{name}/run\"\nbridge = \"br0\"\nkernel = \"{kernel}\"\ninitrd = \"{initrd}\"\n\
                     accel = \"tcg\"\nfailover_after_secs = {}\nqemu_user = \"{}\"\nmetrics_listen = \"{METRICS}\"\n{mac}{cpu_model}\n\
                     [idle]\nmax_cpu_percent = 50.0\n{power}{fleet}\n[[vm]]\n\
                     name = \"{}\"\nmemory_mib = {}\nvcpus = {}\nmac = \"{}\"\ndisplay = {}\n\
                     memserv_port = 7410\ndiskserv_port = 7411\n{vm_lines}",
                    spec.failover_secs,
                    crate::QEMU_USER,
                    desktop.vm,
                    spec.memory_mib,
                    spec.vcpus,
                    desktop.vm_mac,
                    spec.display,
                ),
            );
        }
        let disk = vms.swap_remove(0).0;
        Ok(Office {
            dir: dir.to_owned(),
            lan,
            desktop_hosts,
            desktop_daemons: desktops.iter().map(|_| None).collect(),
            server_daemon: None,
            server2_daemon: None,
            _etcd: etcd,
            disk,
            extra_disks,
        })
    }

    /// Builds the office, starts the daemons and waits until every VM counts
    /// on its desktop; `None` (after saying why, see [`crate::skip`]) where
    /// this machine cannot run it.
    pub fn started(dir: &Path, spec: &OfficeSpec) -> Option<Office> {
        let mut office = match Office::build(dir, spec) {
            Ok(office) => office,
            Err(why) => {
                crate::skip(why);
                return None;
            }
        };
        office.start_server();
        if spec.fleet {
            let config = office.dir.join(format!("{}.toml", SERVER2.0));
            let log = office.dir.join(format!("{}.log", SERVER2.0));
            let args = ["server".as_ref(), "--config".as_ref(), config.as_os_str()];
            office.server2_daemon = Some(Daemon::spawn_notifying(office.lan.host(SERVER2.1), &log, &args));
        }
        for i in 0..office.desktops() {
            office.start_desktop_at(i);
        }
        for i in 0..office.desktops() {
            wait_for_count_above(&office.desktop_serial_at(i), 0, crate::BOOT_TIMEOUT);
        }
        Some(office)
    }

    /// The namespace of the desktop (0), the server (1) or the client (2).
    pub fn host(&self, i: usize) -> &str {
        self.lan.host(i)
    }

    /// Starts `jettison server` as systemd would (`Type=notify`) and
    /// returns once it says it is ready; its local socket then answers.
    pub fn start_server(&mut self) {
        let config = self.dir.join("server.toml");
        let log = self.dir.join("server.log");
        let args = ["server".as_ref(), "--config".as_ref(), config.as_os_str()];
        self.server_daemon = Some(Daemon::spawn_notifying(self.lan.host(1), &log, &args));
        assert!(std::os::unix::net::UnixStream::connect(self.server_socket()).is_ok(), "ready, but its socket is not");
    }

    /// Starts `jettison desktop` (which boots the VM) as systemd would and
    /// returns once it says it is ready; its local socket then answers.
    pub fn start_desktop(&mut self) {
        self.start_desktop_at(0);
    }

    /// [`Office::start_desktop`] for the `i`th desktop ([`OfficeDesktop::nth`]).
    pub fn start_desktop_at(&mut self, i: usize) {
        let name = OfficeDesktop::nth(i).name;
        let config = self.dir.join(format!("{name}.toml"));
        let log = self.dir.join(format!("{name}.log"));
        let args = ["desktop".as_ref(), "--config".as_ref(), config.as_os_str()];
        self.desktop_daemons[i] = Some(Daemon::spawn_notifying(self.lan.host(self.desktop_hosts[i]), &log, &args));
        assert!(
            std::os::unix::net::UnixStream::connect(self.desktop_socket_at(i)).is_ok(),
            "ready, but the socket of {name} is not"
        );
    }

    /// How many desktops the office has ([`OfficeSpec::desktops`]).
    pub fn desktops(&self) -> usize {
        self.desktop_hosts.len()
    }

    /// The namespace of the `i`th desktop (the first is [`Office::host`] 0).
    pub fn desktop_host(&self, i: usize) -> &str {
        self.lan.host(self.desktop_hosts[i])
    }

    /// The LAN's bridge namespace: its port `portK` leads to host `K`.
    pub fn lan_bridge(&self) -> &str {
        self.lan.bridge()
    }

    /// Stops `jettison desktop` with SIGTERM, as `systemctl stop` does; its
    /// VM's QEMU runs on.
    pub fn stop_desktop(&mut self) {
        let mut daemon = self.desktop_daemons[0].take().expect("the desktop daemon runs");
        assert!(daemon.terminate(), "the desktop daemon exits cleanly on SIGTERM\n{}", self.logs());
        assert!(daemon.notified().contains(&"STOPPING=1".to_owned()), "it told systemd it was stopping");
    }

    /// Sends the desktop daemon SIGHUP, as `systemctl reload` does.
    pub fn reload_desktop(&self) {
        hang_up(self.desktop_daemons[0].as_ref().expect("the desktop daemon runs"));
    }

    /// Sends the server daemon SIGHUP, as `systemctl reload` does.
    pub fn reload_server(&self) {
        hang_up(self.server_daemon.as_ref().expect("the server daemon runs"));
    }

    /// Stops `jettison server` with SIGTERM, as `systemctl stop` does; its
    /// VMs' QEMUs and storage processes run on.
    pub fn stop_server(&mut self) {
        let mut daemon = self.server_daemon.take().expect("the server daemon runs");
        assert!(daemon.terminate(), "the server daemon exits cleanly on SIGTERM\n{}", self.logs());
    }

    /// The pid of the VM's QEMU on the desktop, if one runs.
    pub fn desktop_qemu_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join("desktop/run").join(VM).join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The VM's run directory on the server (its storage process's and
    /// QEMU's files).
    pub fn server_vm_run(&self) -> PathBuf {
        self.server_vm_run_at(0)
    }

    /// [`Office::server_vm_run`] of the `i`th desktop's VM.
    pub fn server_vm_run_at(&self, i: usize) -> PathBuf {
        let desktop = OfficeDesktop::nth(i);
        self.dir.join("server/run/vms").join(desktop.name).join(desktop.vm)
    }

    /// The guest agent's socket of the VM while it runs on the desktop.
    pub fn desktop_agent_socket(&self) -> PathBuf {
        self.dir.join("desktop/run").join(VM).join("qga.sock")
    }

    /// The guest agent's socket of the VM while it runs on the server.
    pub fn server_agent_socket(&self) -> PathBuf {
        self.server_vm_run().join("qemu/qga.sock")
    }

    /// The pid of the server daemon, while it runs.
    pub fn server_daemon_pid(&self) -> Option<u32> {
        self.server_daemon.as_ref().and_then(|d| u32::try_from(d.pid()).ok())
    }

    /// The pid of the VM's QEMU on the server, if one runs.
    pub fn server_qemu_pid(&self) -> Option<u32> {
        let pid_file = self.server_vm_run().join("qemu/qemu.pid");
        let pid: u32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The VM's line in `jettison list`: its state and last failure.
    pub fn list_line(&self) -> String {
        let out = self.jettison(&["list", "--socket", self.desktop_socket().to_str().expect("a UTF-8 path")]);
        assert!(out.status.success(), "jettison list: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find(|l| l.starts_with(VM)).unwrap_or_default().to_owned()
    }

    /// Kills the server daemon and its QEMU with SIGKILL, as a crash would.
    pub fn crash_server(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-f"]).arg(self.dir.join("server/run").as_os_str()).status();
        if let Some(mut daemon) = self.server_daemon.take() {
            daemon.kill();
        }
    }

    /// The desktop daemon's local socket.
    pub fn desktop_socket(&self) -> PathBuf {
        self.desktop_socket_at(0)
    }

    /// The `i`th desktop's local socket.
    pub fn desktop_socket_at(&self, i: usize) -> PathBuf {
        self.dir.join(OfficeDesktop::nth(i).name).join("run/desktop.sock")
    }

    /// The server daemon's local socket.
    pub fn server_socket(&self) -> PathBuf {
        self.dir.join("server/run/server.sock")
    }

    /// The guest's serial console while it runs on the desktop.
    pub fn desktop_serial(&self) -> PathBuf {
        self.desktop_serial_at(0)
    }

    /// The `i`th desktop's VM's serial console while it runs on its desktop.
    pub fn desktop_serial_at(&self, i: usize) -> PathBuf {
        let desktop = OfficeDesktop::nth(i);
        self.dir.join(desktop.name).join("run").join(desktop.vm).join("serial.log")
    }

    /// The guest's serial console while it runs on the server.
    pub fn server_serial(&self) -> PathBuf {
        self.dir.join("server/run/vms").join(DESKTOP).join(VM).join("qemu/serial.log")
    }

    /// The server's state directory of the VM (its slices).
    pub fn server_vm_state(&self) -> PathBuf {
        self.server_vm_state_at(0)
    }

    /// [`Office::server_vm_state`] of the `i`th desktop's VM.
    pub fn server_vm_state_at(&self, i: usize) -> PathBuf {
        let desktop = OfficeDesktop::nth(i);
        self.dir.join("server/state/vms").join(desktop.name).join(desktop.vm)
    }

    /// The server's history of the VM: the fetch traces of its past stays.
    pub fn server_vm_history(&self) -> PathBuf {
        self.dir.join("server/state/history").join(DESKTOP).join(VM)
    }

    /// A daemon's log: `desktop` or `server`.
    pub fn log(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{which}.log"))).unwrap_or_default()
    }

    /// Waits up to `limit` for `which`'s log to contain `text`.
    ///
    /// # Panics
    /// When it does not, with the daemons' logs.
    pub fn wait_for_log(&self, which: &str, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log(which).contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in the {which} log\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemons' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for desktop in (0..self.desktops()).map(OfficeDesktop::nth) {
            logs.push_str(&format!("--- {0} log ---\n{1}\n", desktop.name, self.log(&desktop.name)));
        }
        logs.push_str(&format!("--- server log ---\n{}", self.log("server")));
        if self.server2_daemon.is_some() {
            logs.push_str(&format!("\n--- {0} log ---\n{1}", SERVER2.0, self.log(SERVER2.0)));
        }
        logs
    }

    /// The metrics page of the desktop's daemon (0) or the server's (1):
    /// `GET /metrics` at [`METRICS`] in its namespace, as Prometheus asks.
    ///
    /// # Panics
    /// If the daemon does not answer 200 with a page.
    pub fn scrape(&self, host: usize) -> Metrics {
        let ns = self.lan.host(host);
        let answer = remote_wakeup::netns::run_in(Some(ns), || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(METRICS)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            let mut answer = String::new();
            std::io::Read::read_to_string(&mut stream, &mut answer)?;
            Ok(answer)
        })
        .expect("the daemon's namespace can be entered")
        .unwrap_or_else(|e| panic!("cannot scrape {METRICS} in {ns}: {e}\n{}", self.logs()));
        let (head, page) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with("HTTP/1.1 200 "), "the scrape got {head}");
        Metrics(page.to_owned())
    }

    /// Runs `jettison ARGS` (it talks to the daemons through their sockets).
    ///
    /// # Panics
    /// If it runs past [`crate::COMMAND_LIMIT`]: a command that hangs is a
    /// failure, with both daemons' logs.
    pub fn jettison(&self, args: &[&str]) -> Output {
        let mut command = Command::new(crate::jettison_binary());
        command.args(args);
        crate::output_within(&mut command, crate::COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// Runs `jettison ARGS` in the namespace of host `i` ([`Office::host`]):
    /// for a command that talks to etcd or a daemon over the LAN.
    ///
    /// # Panics
    /// As [`Office::jettison`].
    pub fn jettison_on(&self, i: usize, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.lan.host(i)]).arg(crate::jettison_binary()).args(args);
        crate::output_within(&mut command, crate::COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// `jettison ARGS --json` that must succeed; its JSON.
    pub fn jettison_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.jettison(&all);
        assert!(
            out.status.success(),
            "jettison {} failed: {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).expect("jettison --json prints JSON")
    }

    /// Consolidates the VM as soon as the desktop daemon's own idleness
    /// check says it is idle: a freshly booted TCG guest is busy for a
    /// while, and how long depends on the machine. Asks every few seconds
    /// until `timeout`, then fails with the last refusal.
    pub fn consolidate_when_idle(&self, timeout: Duration) -> serde_json::Value {
        self.consolidate_when_idle_at(0, timeout)
    }

    /// [`Office::consolidate_when_idle`] for the `i`th desktop's VM.
    pub fn consolidate_when_idle_at(&self, i: usize, timeout: Duration) -> serde_json::Value {
        let socket = self.desktop_socket_at(i);
        let socket = socket.to_str().expect("a UTF-8 path");
        let vm = OfficeDesktop::nth(i).vm;
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.jettison(&["consolidate", &vm, "--socket", socket, "--json"]);
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("jettison --json prints JSON");
            if out.status.success() {
                return answer;
            }
            let why = answer["error"]["message"].as_str().unwrap_or_default().to_owned();
            // Busy, or not sampled long enough yet (a daemon that just
            // started or took a QEMU over has an empty window): exit status 5.
            let not_yet = out.status.code() == Some(5) && answer["error"]["kind"] == "not_idle";
            assert!(not_yet && Instant::now() < deadline, "jettison consolidate {vm} failed: {why}\n{}", self.logs());
            eprintln!("{vm} not idle yet, asking again: {}", why.trim());
            std::thread::sleep(Duration::from_secs(5));
        }
    }

    /// Waits until the VM runs on the desktop again (`jettison status`
    /// says so); `what` names the failure for the panic.
    pub fn wait_until_home(&self, timeout: Duration, what: &str) {
        let socket = self.desktop_socket();
        let socket = socket.to_str().expect("a UTF-8 path");
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.jettison_json(&["status", "--daemon", socket]);
            if status["vms"][0]["location"] == "desktop" && status["vms"][0]["running"] == true {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {status}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Connects the client host to the VM's service and starts exchanging
    /// a line every `pace`.
    pub fn connect_client(&self, pace: Duration) -> LineClient {
        LineClient::connect(self.lan.host(2), VM_SERVICE, pace)
    }

    /// Listens on the client host at [`CLIENT_PEER`] until the desktop
    /// guest's always-on client connects (it dials again every 2 s), then
    /// starts exchanging a line every `pace` on that connection.
    ///
    /// # Panics
    /// If no connection comes within `timeout`, with both daemons' logs.
    pub fn accept_client(&self, pace: Duration, timeout: Duration) -> LineClient {
        LineClient::accept(self.lan.host(2), CLIENT_PEER, pace, timeout)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }
}

impl Drop for Office {
    fn drop(&mut self) {
        for daemon in self
            .desktop_daemons
            .iter_mut()
            .chain([&mut self.server_daemon, &mut self.server2_daemon])
            .filter_map(Option::take)
        {
            let mut daemon = daemon;
            daemon.terminate();
        }
        // Whatever a crash left: QEMUs and memtap mounts under our directory.
        let _ = Command::new("pkill").args(["-KILL", "-f"]).arg(self.dir.as_os_str()).status();
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let ours = self.dir.to_string_lossy().into_owned();
            for mount in mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&ours)) {
                let _ = Command::new("umount").args(["-l", mount]).status();
            }
        }
    }
}

/// Sends `daemon` SIGHUP.
fn hang_up(daemon: &Daemon) {
    // SAFETY: kill has no memory preconditions; the pid is our child.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
}

/// The last `JTCOUNT` the guest printed in `serial`, if any.
pub fn last_count(serial: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(serial).ok()?;
    text.lines().rev().find_map(|l| l.strip_prefix("JTCOUNT ").and_then(|n| n.trim().parse().ok()))
}

/// The first `JTCOUNT` the guest printed in `serial`, if any.
pub fn first_count(serial: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(serial).ok()?;
    text.lines().find_map(|l| l.strip_prefix("JTCOUNT ").and_then(|n| n.trim().parse().ok()))
}

/// Waits until the guest's count in `serial` passes `min`; returns it.
pub fn wait_for_count_above(serial: &Path, min: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(n) = last_count(serial).filter(|&n| n > min) {
            return n;
        }
        assert!(Instant::now() < deadline, "the guest did not count past {min} in {}", serial.display());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line sent and its reply.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The line sent.
    pub sent: String,
    /// The reply.
    pub reply: String,
    /// When it was sent.
    pub at: Instant,
    /// How long the reply took.
    pub took: Duration,
}

/// A client holding one connection to the VM's service, sending a line
/// every `pace`: `ping <k>`, or a command queued with [`LineClient::command`].
#[derive(Debug)]
pub struct LineClient {
    stop: Arc<AtomicBool>,
    queue: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<Vec<Exchange>>>,
    thread: Option<JoinHandle<Option<String>>>,
}

impl LineClient {
    /// Connects from namespace `ns` to the line service at `addr` (waiting
    /// for it to listen: a guest starts it late in its boot) and starts
    /// exchanging a line every `pace`.
    pub fn connect(ns: &str, addr: &str, pace: Duration) -> LineClient {
        let sockaddr: SocketAddr = addr.parse().expect("the service's address is an address");
        let deadline = Instant::now() + Duration::from_secs(90);
        let stream = loop {
            let tried = remote_wakeup::netns::run_in(Some(ns), || {
                TcpStream::connect_timeout(&sockaddr, Duration::from_secs(2))
            })
            .expect("the client namespace can be entered");
            match tried {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        };
        LineClient::start(stream, pace)
    }

    /// Listens in namespace `ns` at `addr` for the one connection a guest's
    /// client makes (waiting up to `timeout`: a guest dials late in its
    /// boot) and starts exchanging a line every `pace` on it.
    ///
    /// # Errors
    /// A text saying what failed: the listen, or no connection in time.
    pub fn accept(ns: &str, addr: &str, pace: Duration, timeout: Duration) -> Result<LineClient, String> {
        let sockaddr: SocketAddr = addr.parse().map_err(|e| format!("{addr} is not an address: {e}"))?;
        let listener = remote_wakeup::netns::run_in(Some(ns), || std::net::TcpListener::bind(sockaddr))
            .map_err(|e| format!("cannot enter namespace {ns}: {e}"))?
            .map_err(|e| format!("cannot listen at {addr} in {ns}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("listener at {addr}: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(|e| format!("connection at {addr}: {e}"))?;
                    return Ok(LineClient::start(stream, pace));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(format!("no guest connected to {addr} in {ns} within {timeout:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("accepting at {addr} in {ns}: {e}")),
            }
        }
    }

    fn start(stream: TcpStream, pace: Duration) -> LineClient {
        let stop = Arc::new(AtomicBool::new(false));
        let queue = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, q, l) = (Arc::clone(&stop), Arc::clone(&queue), Arc::clone(&log));
        let thread = std::thread::spawn(move || exchange_lines(stream, pace, &s, &q, &l));
        LineClient { stop, queue, log, thread: Some(thread) }
    }

    /// Exchanges so far.
    pub fn count(&self) -> usize {
        self.log.lock().expect("client log lock").len()
    }

    /// Waits for `n` exchanges in all.
    pub fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(
                self.thread.as_ref().is_some_and(|t| !t.is_finished()),
                "the client's connection ended after {} exchanges",
                self.count()
            );
            assert!(Instant::now() < deadline, "only {} of {n} exchanges", self.count());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Queues `line` as the next exchange, without waiting for its reply.
    pub fn send(&self, line: &str) {
        self.queue.lock().expect("client queue lock").push(line.to_owned());
    }

    /// Sends `line` as the next exchange and returns the reply.
    pub fn command(&self, line: &str, timeout: Duration) -> String {
        let from = self.count();
        self.send(line);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.log.lock().expect("client log lock")[from..].iter().find(|e| e.sent == line) {
                return e.reply.clone();
            }
            assert!(Instant::now() < deadline, "no reply to {line:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `timeout` for the connection to break (the service's
    /// side reset or closed it) and returns why it broke.
    ///
    /// # Panics
    /// If it still works after `timeout`.
    pub fn wait_until_broken(self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            assert!(Instant::now() < deadline, "the connection still works after {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.finish().1.unwrap_or_else(|| "the client stopped".to_owned())
    }

    /// Stops and returns every exchange and, if the connection broke, why.
    pub fn finish(mut self) -> (Vec<Exchange>, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let broken = self.thread.take().map(|t| t.join().expect("the client thread does not panic")).unwrap_or(None);
        let log = self.log.lock().expect("client log lock").clone();
        (log, broken)
    }
}

/// The client's loop; returns why the connection broke, if it did.
fn exchange_lines(
    stream: TcpStream,
    pace: Duration,
    stop: &AtomicBool,
    queue: &Mutex<Vec<String>>,
    log: &Mutex<Vec<Exchange>>,
) -> Option<String> {
    if let Err(e) = stream.set_read_timeout(Some(Duration::from_secs(120))) {
        return Some(e.to_string());
    }
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return Some(e.to_string()),
    };
    let mut reader = BufReader::new(stream);
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let queued = {
            let mut q = queue.lock().expect("client queue lock");
            (!q.is_empty()).then(|| q.remove(0))
        };
        let line = queued.unwrap_or_else(|| {
            k += 1;
            format!("ping {k}")
        });
        if let Err(e) = writer.write_all(format!("{line}\n").as_bytes()) {
            return Some(format!("sending {line:?}: {e}"));
        }
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(0) => return Some(format!("the service closed the connection after {line:?}")),
            Ok(_) => {}
            Err(e) => return Some(format!("waiting for the reply to {line:?}: {e}")),
        }
        let exchange = Exchange { sent: line, reply: reply.trim_end().to_owned(), at, took: at.elapsed() };
        log.lock().expect("client log lock").push(exchange);
        std::thread::sleep(pace.saturating_sub(at.elapsed()));
    }
    None
}

/// Checks that the service answered every line exactly once, in order,
/// its counter going up by one each time; returns the exchanges' count.
///
/// # Panics
/// With the first exchange that breaks that.
pub fn assert_continuous(log: &[Exchange]) -> usize {
    let first: u64 = reply_number(&log[0]);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(reply_number(e), first + i as u64, "exchange {i} ({:?} -> {:?}) is out of step", e.sent, e.reply);
        if e.sent.starts_with("ping") {
            assert!(e.reply.ends_with(&e.sent), "exchange {i}: {:?} answered {:?}", e.sent, e.reply);
        }
    }
    log.len()
}

fn reply_number(e: &Exchange) -> u64 {
    e.reply.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("reply {:?} has no count", e.reply))
}

/// A metrics page in the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `series` (its name and labels exactly as
    /// printed, e.g. `jettison_vm_on_server{vm="vm1"}`).
    ///
    /// # Panics
    /// If the page has no such sample, with the page.
    pub fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in the metrics:\n{}", self.0))
    }
}
