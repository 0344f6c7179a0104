//! The server daemon's configuration file (TOML), e.g.
//! `/etc/jettison/server.toml`:
//!
//! ```toml
//! name = "server1"
//! listen = "10.0.0.1:7400"          # where desktops reach this daemon
//! key = "/etc/jettison/jettison.key"
//! state_dir = "/var/lib/jettison"   # slices, descriptors, history (kept across restarts)
//! run_dir = "/run/jettison"         # memtap mounts, QEMU sockets, the control socket
//! bridge = "br0"                    # the LAN bridge the VMs' taps join
//! accel = "auto"                   # KVM where /dev/kvm works, else TCG
//! console_port_base = 5900          # consolidated VMs' SPICE consoles, with a ticket each
//! capacity_mib = 8192               # memory for consolidated VMs' working sets
//! max_fetch_mib_per_sec = 4.0       # a VM fetching faster is not idle: send it home
//! checkpoint_every_secs = 600       # a crash of the server loses at most this much of a VM's work
//! wake_broadcast = "10.0.0.255"
//! metrics_listen = "127.0.0.1:9464" # Prometheus metrics on GET /metrics (omit: none)
//! socket_group = "jettison"         # may use the local socket to look (the default; "" = root only)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use daemon_protocol::local_access::{AccessError, SocketAccess};
use qemu_driver::AccelChoice;
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
    /// The key made by `jettison pair`.
    pub key: PathBuf,
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
    #[serde(default)]
    pub max_fetch_mib_per_sec: Option<f64>,
    /// The window for that rate.
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
    /// Where to serve Prometheus metrics (`GET /metrics`); none: nowhere.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The group whose members may use the local socket (status and
    /// screenshots: it takes no moves); none: `jettison` if it exists,
    /// else root only; empty: root only.
    #[serde(default)]
    pub socket_group: Option<String>,
}

fn default_console_port() -> u16 {
    5900
}

fn default_console_ports() -> u16 {
    100
}

fn default_fetch_window() -> u64 {
    10
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
        daemon_protocol::config_file::load(path, |config: &ServerConfig| {
            config.accel.resolve()?;
            if config.console_port_base == 0 || config.console_port_base.checked_add(config.console_ports).is_none() {
                return Err("console_port_base and console_ports must name ports 1 to 65535".to_owned());
            }
            config.socket_access().map_err(|e| e.to_string())?;
            Ok(())
        })
        .map_err(ServerError::Config)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "name = \"s\"\nlisten = \"10.0.0.1:7400\"\nkey = \"/k\"\nstate_dir = \"/s\"\nrun_dir = \"/r\"\n\
             bridge = \"br0\"\nkernel = \"/v\"\ninitrd = \"/i\"\ncapacity_mib = 1024\n",
        )
        .unwrap();
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.accel, AccelChoice::Auto);
        assert_eq!((config.console_port_base, config.console_ports), (5900, 100));
        assert_eq!(config.max_fetch_mib_per_sec, None);
        assert_eq!(config.control_socket(), Path::new("/r/server.sock"));
    }

    #[test]
    fn mistakes_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "name = \"s\"\ncapacity = 3\n").unwrap();
        let err = wire::chain(&ServerConfig::load(&path).unwrap_err());
        assert!(err.contains("server.toml") && err.contains("capacity"), "{err}");
        assert!(wire::chain(&ServerConfig::load(&dir.path().join("missing.toml")).unwrap_err()).contains("cannot read"));
    }

    #[test]
    fn the_packaged_example_loads() {
        // The example names the group the package makes; only it may be
        // missing here.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/server.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("socket_group = \"jettison\""), "the example names the package's group");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("server.toml");
        std::fs::write(&copy, text.replace("socket_group = \"jettison\"", "socket_group = \"root\"")).unwrap();
        ServerConfig::load(&copy).unwrap();
    }
}
