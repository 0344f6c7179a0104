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
//! kernel = "/var/lib/jettison/guest/vmlinuz"
//! initrd = "/var/lib/jettison/guest/initramfs.img"
//! accel = "kvm"
//! capacity_mib = 8192               # memory for consolidated VMs' working sets
//! max_fetch_mib_per_sec = 4.0       # a VM fetching faster is not idle: send it home
//! wake_broadcast = "10.0.0.255"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// The VM profile's kernel (the same file the desktops boot).
    pub kernel: PathBuf,
    /// The VM profile's initrd.
    pub initrd: PathBuf,
    /// `kvm` or `tcg`.
    #[serde(default = "default_accel")]
    pub accel: String,
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
    /// Broadcast address for Wake-on-LAN magic packets.
    #[serde(default = "default_broadcast")]
    pub wake_broadcast: IpAddr,
    /// Also send raw 0x0842 wake frames on this interface.
    #[serde(default)]
    pub wake_interface: Option<String>,
}

fn default_accel() -> String {
    "kvm".to_owned()
}

fn default_fetch_window() -> u64 {
    10
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
            if matches!(config.accel.as_str(), "kvm" | "tcg") {
                Ok(())
            } else {
                Err(format!("accel must be \"kvm\" or \"tcg\", not {:?}", config.accel))
            }
        })
        .map_err(ServerError::Config)
    }

    /// The local control socket `jettison status` talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("server.sock")
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
        assert_eq!(config.accel, "kvm");
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/server.toml");
        ServerConfig::load(&path).unwrap();
    }
}
