//! The server daemon's configuration file (TOML), e.g.
//! `/etc/jettison/server.toml`:
//!
//! ```toml
//! name = "server1"
//! listen = "10.0.0.1:7400"          # where desktops reach this daemon
//! host_key = "/etc/jettison/host.key"  # made by `jettison pair` (the default)
//! peers = "/etc/jettison/peers"         # the desktops enrolled here (the default)
//! state_dir = "/var/lib/jettison"   # slices, descriptors, history (kept across restarts)
//! run_dir = "/run/jettison"         # memtap mounts, QEMU sockets, the control socket
//! bridge = "br0"                    # the LAN bridge the VMs' taps join
//! accel = "auto"                   # KVM where /dev/kvm works, else TCG
//! console_port_base = 5900          # consolidated VMs' SPICE consoles, with a ticket each
//! capacity_mib = 8192               # memory for consolidated VMs' working sets
//! max_fetch_mib_per_sec = 1.0       # a VM fetching faster over fetch_window_secs is not idle: send it home
//! fetch_window_secs = 300
//! checkpoint_every_secs = 600       # a crash of the server loses at most this much of a VM's work
//! wake_broadcast = "10.0.0.255"
//! qemu_user = "jettison-qemu"       # QEMU drops to this user once a VM is set up (omit: root)
//! metrics_listen = "127.0.0.1:9464" # Prometheus metrics on GET /metrics (omit: none)
//! socket_group = "jettison"         # may use the local socket to look (the default; "" = root only)
//! push_working_set = true           # fetch earlier stays' fetched pages at consolidation
//! push_whole_memory = true          # then every other non-zero page: no desktop wake for memory
//!
//! [energy]                          # the server's share of each VM's saving (every key optional)
//! source = "auto"                   # "rapl", "profile", or "auto": RAPL where readable, else the profile
//! idle_watts = 150.7                # this server idle (the paper's)
//! busy_watts = 250.0                # ... with every CPU busy (assumed; measure yours)
//! network_watts_per_gbit = 3.0      # two NICs and a switch port at line rate
//! desktop_profile = "/etc/jettison/desktop-power.json"  # the desktops' power (omit: the paper's Table 1)
//! desktop_wait_secs = 6.0           # the desktops' wait before a microsleep (their power policy's)
//! refuse_unprofitable = false       # refuse a VM whose share would exceed what its desktop saves
//!
//! [fleet]                           # only with several servers (omit: no etcd, as with one server)
//! etcd = ["http://10.0.0.5:2379", "http://10.0.0.6:2379", "http://10.0.0.7:2379"]
//! advertise = "10.0.0.1:7400"       # where desktops reach this daemon (omit: listen)
//! lease_ttl_secs = 10               # a server that stops renewing leaves the registry within this
//! network_mib_per_sec = 110.0       # what the network may carry for fetches (gigabit: about 110)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use daemon_protocol::config_file::ConfigFileError;
use daemon_protocol::local_access::{AccessError, SocketAccess};
use qemu_driver::{AccelChoice, QemuUser};
use serde::Deserialize;

use crate::error::ServerError;

/// The server daemon's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This server's name, shown to desktops.
    pub name: identifiers::HostName,
    /// Where desktops reach the daemon.
    pub listen: SocketAddr,
    /// This host's private key, made by `jettison pair`.
    #[serde(default = "daemon_protocol::config_file::default_host_key")]
    pub host_key: PathBuf,
    /// The directory of enrolled peers (`NAME.pub`, written by `jettison
    /// enroll`): the desktops this server hosts.
    #[serde(default = "daemon_protocol::config_file::default_peers")]
    pub peers: PathBuf,
    /// The one office key of earlier releases: refused with how to upgrade.
    #[serde(default)]
    key: Option<PathBuf>,
    /// Slices, descriptors and history.
    pub state_dir: PathBuf,
    /// Mounts, QEMU run directories and the local control socket.
    pub run_dir: PathBuf,
    /// The bridge the VMs' taps join.
    pub bridge: String,
    /// The kernel of VMs that boot one the hosts supply (the same file as
    /// the desktops': a VM whose kernel differs is refused).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Their initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// OVMF's code, for UEFI VMs.
    #[serde(default = "qemu_driver::default_ovmf_code")]
    pub ovmf_code: PathBuf,
    /// The variable store template (a UEFI VM's own store arrives in its
    /// descriptor; QEMU needs a file of the same size to hold it).
    #[serde(default = "qemu_driver::default_ovmf_vars")]
    pub ovmf_vars: PathBuf,
    /// `auto` (KVM where `/dev/kvm` works, else TCG), `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelChoice,
    /// The first TCP port of consolidated VMs' remote consoles (SPICE with
    /// a ticket, on the `listen` address); each VM takes the next free one.
    #[serde(default = "default_console_port")]
    pub console_port_base: u16,
    /// How many console ports there are.
    #[serde(default = "default_console_ports")]
    pub console_ports: u16,
    /// Memory set aside for consolidated VMs' working sets, in MiB.
    pub capacity_mib: u64,
    /// Send a VM home when it fetches from its desktop faster than this
    /// (MiB/s, averaged over `fetch_window_secs`, counted from one window
    /// after its arrival, when it has its working set); none: never.
    ///
    /// Judged over minutes, not seconds: an idle Debian desktop guest
    /// fetches in bursts (12.8 MiB/s over its worst 10 s after the first
    /// minute, 0.45 MiB/s over its worst minute, 0.06 MiB/s over its worst
    /// 5 minutes; bench/RESULTS.md), and routine events (a daily
    /// `systemd-tmpfiles-clean`, an ssh login) reach 5-6 MiB/s for seconds.
    #[serde(default)]
    pub max_fetch_mib_per_sec: Option<f64>,
    /// The window for that rate, seconds (default 300).
    #[serde(default = "default_fetch_window")]
    pub fetch_window_secs: u64,
    /// Take a checkpoint of each consolidated VM this often (a short stop:
    /// its device state saved and its dirty pages and blocks copied at the
    /// same instant), so that a crash of the server loses at most this
    /// much of the VM's work; 0: never.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every_secs: u64,
    /// Broadcast address for Wake-on-LAN magic packets.
    #[serde(default = "default_broadcast")]
    pub wake_broadcast: IpAddr,
    /// Also send raw 0x0842 wake frames on this interface.
    #[serde(default)]
    pub wake_interface: Option<String>,
    /// The unprivileged user QEMU drops to once a VM is set up (the
    /// package makes `jettison-qemu`); none: QEMU runs as root.
    #[serde(default)]
    pub qemu_user: Option<String>,
    /// `qemu_user`, looked up at load.
    #[serde(skip)]
    resolved_qemu_user: Option<QemuUser>,
    /// Where to serve Prometheus metrics (`GET /metrics`); none: nowhere.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// At consolidation, fetch the pages this VM's kept earlier stays (its
    /// history's fetch traces) fetched for their faults, pivot windows
    /// included, while the desktop is awake anyway, so that touching them
    /// again wakes no desktop. On by default: on the desktop guest it
    /// brought 497 MiB in 16 s at the second consolidation, about what the
    /// stay would have fetched anyway, and the stay's wakes fell from 13 to
    /// 7 (`bench/RESULTS.md`, "Push the working set"). `false` fetches only
    /// on demand (a link billed by the byte).
    #[serde(default = "default_push_working_set")]
    pub push_working_set: bool,
    /// At consolidation, after the working set, fetch every other page of
    /// the VM's memory that its zero map does not cover, while the desktop
    /// is awake anyway: later the VM needs its desktop only for disk
    /// blocks. It costs the bytes of a full copy of the used memory (about
    /// what QEMU's own precopy sends) and the disk to keep them here, but
    /// not memory: pushed pages wait in the fetched slice until touched,
    /// and only touched ones count against `capacity_mib`. On by default:
    /// on the desktop guest it took the saving at 67 minutes from 47% to
    /// 92% (`bench/RESULTS.md`). `false` for a link billed by the byte.
    #[serde(default = "default_push_whole_memory")]
    pub push_whole_memory: bool,
    /// The group whose members may use the local socket (status and
    /// screenshots: it takes no moves); none: `jettison` if it exists,
    /// else root only; empty: root only.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// The server's power and its split across the VMs (`[energy]`).
    #[serde(default)]
    pub energy: EnergyConfig,
    /// Its registration in a fleet of servers (`[fleet]`); none: a single
    /// server, which needs no etcd.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: where the fleet's etcd runs and what this server registers
/// there (see [`crate::fleet`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The client URLs of the etcd cluster's members.
    pub etcd: fleet_registry::EtcdEndpoints,
    /// Where desktops reach this daemon; none: `listen`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The registration's lease: a server that stops renewing it leaves
    /// the registry within this many seconds.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// What the network may carry for fetches from desktops, MiB/s (the
    /// placement keeps its use even with memory and CPU).
    #[serde(default = "default_network")]
    pub network_mib_per_sec: f64,
}

fn default_lease_ttl() -> u64 {
    10
}

fn default_network() -> f64 {
    // Gigabit Ethernet's payload rate.
    110.0
}

impl FleetConfig {
    fn check(&self, listen: SocketAddr) -> Result<(), String> {
        if !(3..=3600).contains(&self.lease_ttl_secs) {
            return Err(format!("[fleet] lease_ttl_secs = {}: must be 3 to 3600", self.lease_ttl_secs));
        }
        if !(self.network_mib_per_sec.is_finite() && self.network_mib_per_sec > 0.0) {
            return Err(format!(
                "[fleet] network_mib_per_sec = {}: must be a positive number",
                self.network_mib_per_sec
            ));
        }
        let advertise = self.advertise.unwrap_or(listen);
        if advertise.ip().is_unspecified() {
            return Err(format!(
                "[fleet]: desktops cannot reach {advertise}; set advertise to the address they reach this server at"
            ));
        }
        Ok(())
    }
}

/// Where the server's active power comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// RAPL where it can be read, else the profile (said in the log).
    #[default]
    Auto,
    /// RAPL, or the daemon does not start.
    Rapl,
    /// The configured idle and busy watts only.
    Profile,
}

/// `[energy]`: the server's power, what moving a byte costs, the desktops'
/// power, and whether a VM that would cost more than it saves is refused
/// (see [`crate::energy`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyConfig {
    /// Where active power comes from.
    pub source: EnergySource,
    /// The server's power with nothing to do, watts (the paper's 150.7 W).
    pub idle_watts: f64,
    /// Its power with every CPU busy, watts (250 W, an assumption: the
    /// paper measured only idle).
    pub busy_watts: f64,
    /// What the network draws per Gbit/s it carries, watts: 3 W, two NICs
    /// and a switch port at gigabit line rate, about 1 W each.
    pub network_watts_per_gbit: f64,
    /// The desktops' power profile (JSON, `power::PowerProfile`'s fields),
    /// for the estimate of what each desktop saves; none: the paper's
    /// Table 1.
    pub desktop_profile: Option<PathBuf>,
    /// The wait after a request before a desktop sleeps again (its power
    /// policy's `t_w`; the paper's 6 s), for the same estimate.
    pub desktop_wait_secs: f64,
    /// Refuse a VM whose expected share of the server would exceed what
    /// its desktop is expected to save.
    pub refuse_unprofitable: bool,
    /// `desktop_profile`, read at load.
    #[serde(skip)]
    pub(crate) resolved_desktop: power::PowerProfile,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        EnergyConfig {
            source: EnergySource::Auto,
            idle_watts: power::server::ServerProfile::PAPER.idle_watts,
            busy_watts: power::server::ServerProfile::PAPER.busy_watts,
            network_watts_per_gbit: 3.0,
            desktop_profile: None,
            desktop_wait_secs: power::DEFAULT_WAIT_SECS,
            refuse_unprofitable: false,
            resolved_desktop: power::PowerProfile::TABLE_1,
        }
    }
}

impl EnergyConfig {
    /// The server's profile.
    pub fn server(&self) -> power::server::ServerProfile {
        power::server::ServerProfile { idle_watts: self.idle_watts, busy_watts: self.busy_watts }
    }

    /// The desktops' profile (read at load).
    pub fn desktop(&self) -> power::PowerProfile {
        self.resolved_desktop
    }

    /// Checks the figures and reads the desktop profile.
    fn resolve(&mut self) -> Result<(), String> {
        const ORIGIN: &str = "[energy]";
        self.server().validate(ORIGIN).map_err(|e| e.to_string())?;
        for (key, value) in
            [("network_watts_per_gbit", self.network_watts_per_gbit), ("desktop_wait_secs", self.desktop_wait_secs)]
        {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{ORIGIN} {key} = {value}: must be a number of at least 0"));
            }
        }
        if let Some(path) = &self.desktop_profile {
            self.resolved_desktop = power::PowerProfile::load(path).map_err(|e| {
                format!("{ORIGIN} desktop_profile: {}; or omit it for the paper's Table 1", wire::chain(&e))
            })?;
        }
        Ok(())
    }
}

fn default_console_port() -> u16 {
    5900
}

fn default_console_ports() -> u16 {
    100
}

fn default_push_working_set() -> bool {
    true
}

fn default_push_whole_memory() -> bool {
    true
}

fn default_fetch_window() -> u64 {
    300
}

fn default_checkpoint_every() -> u64 {
    600
}

fn default_broadcast() -> IpAddr {
    IpAddr::from([255, 255, 255, 255])
}

impl ServerConfig {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`ServerError::Config`], naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let mut config = daemon_protocol::config_file::load(path, |config: &ServerConfig| {
            daemon_protocol::config_file::refuse_office_key(config.key.as_deref())?;
            config.accel.resolve()?;
            if config.console_port_base == 0 || config.console_port_base.checked_add(config.console_ports).is_none() {
                return Err("console_port_base and console_ports must name ports 1 to 65535".to_owned());
            }
            config.qemu_user.as_deref().map(qemu_user).transpose()?;
            config.socket_access().map_err(|e| e.to_string())?;
            config.fleet.as_ref().map(|fleet| fleet.check(config.listen)).transpose()?;
            config.energy.clone().resolve()
        })
        .map_err(ServerError::Config)?;
        config.energy.resolve().map_err(|reason| {
            // Checked a moment ago; only a profile file changed since gets here.
            ServerError::Config(ConfigFileError::Invalid { path: path.to_owned(), reason })
        })?;
        config.resolved_qemu_user = config.qemu_user.as_deref().map(qemu_user).transpose().map_err(|reason| {
            // Checked a moment ago; only a user removed since gets here.
            ServerError::Config(ConfigFileError::Invalid { path: path.to_owned(), reason })
        })?;
        Ok(config)
    }

    /// The user QEMU drops to, if the file names one (looked up at load).
    pub fn qemu_user(&self) -> Option<QemuUser> {
        self.resolved_qemu_user.clone()
    }

    /// The local control socket `jettison status` talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("server.sock")
    }

    /// Who may use the local socket, and a warning if the default group is missing.
    ///
    /// # Errors
    /// A `socket_group` that is not a group here.
    pub fn socket_access(&self) -> Result<(SocketAccess, Option<String>), AccessError> {
        // The server's socket takes no moves.
        SocketAccess::from_setting(self.socket_group.as_deref(), false)
    }
}

/// The user `qemu_user` names, or what is wrong with it and what to do.
fn qemu_user(name: &str) -> Result<QemuUser, String> {
    QemuUser::lookup(name).map_err(|e| format!("qemu_user = {name:?}: {e}; or omit qemu_user to run QEMU as root"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "name = \"s\"\nlisten = \"10.0.0.1:7400\"\nstate_dir = \"/s\"\nrun_dir = \"/r\"\n\
             bridge = \"br0\"\nkernel = \"/v\"\ninitrd = \"/i\"\ncapacity_mib = 1024\n",
        )
        .unwrap();
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.host_key, Path::new("/etc/jettison/host.key"));
        assert_eq!(config.peers, Path::new("/etc/jettison/peers"));
        assert_eq!(config.accel, AccelChoice::Auto);
        assert_eq!((config.console_port_base, config.console_ports), (5900, 100));
        assert_eq!((config.max_fetch_mib_per_sec, config.fetch_window_secs), (None, 300));
        assert_eq!(config.control_socket(), Path::new("/r/server.sock"));
        assert_eq!(config.qemu_user(), None, "no qemu_user: QEMU runs as root");
        assert!(config.push_working_set, "the working set is pushed unless turned off");
        assert!(config.push_whole_memory, "the whole memory is pushed unless turned off");
        assert_eq!(config.energy.source, EnergySource::Auto);
        assert_eq!(config.energy.server(), power::server::ServerProfile::PAPER);
        assert_eq!(config.energy.desktop(), power::PowerProfile::TABLE_1);
        assert!(!config.energy.refuse_unprofitable, "off unless asked for");
        assert!(config.fleet.is_none(), "no [fleet]: a single server, no etcd");
    }

    #[test]
    fn the_fleet_section_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let load = |fleet: &str| load_minimal(dir.path(), &format!("[fleet]\n{fleet}\n"));
        let config = load("etcd = [\"http://127.0.0.1:2379\", \"127.0.0.2:2379\"]").unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!((fleet.etcd.addrs().len(), fleet.lease_ttl_secs, fleet.advertise), (2, 10, None));
        assert!(load("etcd = []").unwrap_err().contains("no endpoint"));
        assert!(load("etcd = [\"etcd1:2379\"]").unwrap_err().contains("\"etcd1:2379\""));
        assert!(load("etcd = [\"127.0.0.1:2379\"]\nlease_ttl_secs = 1").unwrap_err().contains("lease_ttl_secs"));
        let bad = load("etcd = [\"127.0.0.1:2379\"]\nadvertise = \"0.0.0.0:7400\"").unwrap_err();
        assert!(bad.contains("set advertise"), "{bad}");
    }

    /// Loads `server.toml` in `dir`: the keys every configuration needs,
    /// then `extra`; the error as its whole chain.
    fn load_minimal(dir: &Path, extra: &str) -> Result<ServerConfig, String> {
        let path = dir.join("server.toml");
        let needed = "name = \"s\"\nlisten = \"10.0.0.1:7400\"\nstate_dir = \"/s\"\nrun_dir = \"/r\"\n\
                      bridge = \"br0\"\ncapacity_mib = 1024\n";
        std::fs::write(&path, format!("{needed}{extra}")).unwrap();
        ServerConfig::load(&path).map_err(|e| wire::chain(&e))
    }

    #[test]
    fn the_energy_section_is_checked_and_reads_a_desktop_profile() {
        let dir = tempfile::tempdir().unwrap();
        let load = |energy: &str| load_minimal(dir.path(), &format!("[energy]\n{energy}\n"));
        let low = load("idle_watts = 200.0\nbusy_watts = 100.0").unwrap_err();
        assert!(low.contains("busy_watts 100") && low.contains("server.toml"), "{low}");
        let bad = load("network_watts_per_gbit = -1.0").unwrap_err();
        assert!(bad.contains("network_watts_per_gbit"), "{bad}");
        assert!(load("source = \"solar\"").unwrap_err().contains("solar"));
        let missing = load("desktop_profile = \"/nonexistent/desk.json\"").unwrap_err();
        assert!(missing.contains("/nonexistent/desk.json") && missing.contains("Table 1"), "{missing}");
        let profile = dir.path().join("desk.json");
        let fast = power::PowerProfile::TABLE_1.with_transition_secs(2.0, 2.0);
        std::fs::write(&profile, serde_json::to_string(&fast).unwrap()).unwrap();
        let config =
            load(&format!("source = \"profile\"\nrefuse_unprofitable = true\ndesktop_profile = {profile:?}")).unwrap();
        assert_eq!((config.energy.source, config.energy.refuse_unprofitable), (EnergySource::Profile, true));
        assert_eq!(config.energy.desktop(), fast);
    }

    #[test]
    fn qemu_user_must_be_an_unprivileged_user_of_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let load = |user: &str| load_minimal(dir.path(), &format!("qemu_user = \"{user}\"\n"));
        let missing = load("no-such-user-here").unwrap_err();
        assert!(missing.contains("qemu_user = \"no-such-user-here\"") && missing.contains("useradd"), "{missing}");
        let root = load("root").unwrap_err();
        assert!(root.contains("qemu_user = \"root\"") && root.contains("is root"), "{root}");
        assert_eq!(load("nobody").unwrap().qemu_user().map(|u| u.uid()), Some(65534));
    }

    #[test]
    fn mistakes_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "name = \"s\"\ncapacity = 3\n").unwrap();
        let err = wire::chain(&ServerConfig::load(&path).unwrap_err());
        assert!(err.contains("server.toml") && err.contains("capacity"), "{err}");
        assert!(wire::chain(&ServerConfig::load(&dir.path().join("missing.toml")).unwrap_err()).contains("cannot read"));
        // A file from the release with one office key says how to upgrade.
        std::fs::write(
            &path,
            "name = \"s\"\nlisten = \"10.0.0.1:7400\"\nkey = \"/etc/jettison/jettison.key\"\n\
             state_dir = \"/s\"\nrun_dir = \"/r\"\nbridge = \"br0\"\ncapacity_mib = 1024\n",
        )
        .unwrap();
        let err = wire::chain(&ServerConfig::load(&path).unwrap_err());
        assert!(err.contains("no longer used") && err.contains("jettison enroll DESKTOP-NAME KEY"), "{err}");
    }

    #[test]
    fn the_packaged_example_loads() {
        // The example names the group the package makes; only it may be
        // missing here.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/server.toml");
        // The packaged user and group are made by the package; Debian's
        // nobody and root stand in.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("qemu_user = \"jettison-qemu\""), "the example confines QEMU");
        assert!(text.contains("socket_group = \"jettison\""), "the example names the package's group");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("server.toml");
        let text = text.replace("qemu_user = \"jettison-qemu\"", "qemu_user = \"nobody\"");
        std::fs::write(&copy, text.replace("socket_group = \"jettison\"", "socket_group = \"root\"")).unwrap();
        ServerConfig::load(&copy).unwrap();
    }
}
