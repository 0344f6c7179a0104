//! The desktop daemon's configuration file (TOML), e.g.
//! `/etc/jettison/desktop.toml`:
//!
//! ```toml
//! name = "desk1"
//! key = "/etc/jettison/jettison.key"
//! server = "10.0.0.1:7400"            # the server daemon
//! control_listen = "10.0.0.2:7400"    # where the server asks us to take a VM back
//! serve_ip = "10.0.0.2"               # memserv and diskserv listen here
//! mac = "52:54:00:12:34:56"           # this desktop's NIC, for Wake-on-LAN (omit: never sleeps)
//! state_dir = "/var/lib/jettison"     # RAM files, descriptors, staging
//! run_dir = "/run/jettison"           # QEMU sockets, the control socket
//! bridge = "br0"
//! kernel = "/var/lib/jettison/guest/vmlinuz"
//! initrd = "/var/lib/jettison/guest/initramfs.img"
//! accel = "kvm"
//! failover_after_secs = 30            # server unreachable this long: resume from the checkpoint
//!
//! [idle]                              # see qemu_driver::IdleThresholds
//! max_cpu_percent = 10.0
//!
//! [[vm]]
//! name = "vm1"
//! memory_mib = 2048
//! disk = "/var/lib/jettison/vm1.img"
//! mac = "02:4a:54:00:00:01"
//! memserv_port = 7410
//! diskserv_port = 7411
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use daemon_protocol::KernelArgs;
use identifiers::{HostName, Mac, VmName};
use qemu_driver::IdleThresholds;
use serde::Deserialize;

use crate::error::DesktopError;

/// The desktop daemon's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopConfig {
    /// This desktop's name, shown on the server.
    pub name: HostName,
    /// The key made by `jettison pair`.
    pub key: PathBuf,
    /// The server daemon, `host:port`.
    pub server: String,
    /// Where the server reaches this daemon.
    pub control_listen: SocketAddr,
    /// The address memserv and diskserv listen on (the server fetches from it).
    pub serve_ip: IpAddr,
    /// This desktop's MAC for Wake-on-LAN; none: it never sleeps.
    #[serde(default)]
    pub mac: Option<Mac>,
    /// RAM files, descriptors and staging.
    pub state_dir: PathBuf,
    /// QEMU run directories and the local control socket.
    pub run_dir: PathBuf,
    /// The bridge the VMs' taps join.
    pub bridge: String,
    /// The VM profile's kernel.
    pub kernel: PathBuf,
    /// The VM profile's initrd.
    pub initrd: PathBuf,
    /// `kvm` or `tcg`.
    #[serde(default = "default_accel")]
    pub accel: String,
    /// How long the server may be unreachable before a consolidated VM is
    /// resumed from its checkpoint.
    #[serde(default = "default_failover")]
    pub failover_after_secs: u64,
    /// When a VM counts as idle.
    #[serde(default)]
    pub idle: IdleThresholds,
    /// The VMs.
    #[serde(rename = "vm")]
    pub vms: Vec<VmDefinition>,
}

/// One VM of the desktop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    /// Its name.
    pub name: VmName,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Its raw disk image.
    pub disk: PathBuf,
    /// Its NIC's MAC, the same on every host.
    pub mac: Mac,
    /// Extra kernel arguments (the test guest's `jt.*`).
    #[serde(default)]
    pub kernel_args: KernelArgs,
    /// memserv's port while it is consolidated.
    pub memserv_port: u16,
    /// diskserv's port while it is consolidated.
    pub diskserv_port: u16,
}

fn default_accel() -> String {
    "kvm".to_owned()
}

fn default_failover() -> u64 {
    30
}

impl DesktopConfig {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`DesktopError::Config`], naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Self, DesktopError> {
        daemon_protocol::config_file::load(path, DesktopConfig::check).map_err(DesktopError::Config)
    }

    fn check(&self) -> Result<(), String> {
        if !matches!(self.accel.as_str(), "kvm" | "tcg") {
            return Err(format!("accel must be \"kvm\" or \"tcg\", not {:?}", self.accel));
        }
        if let Some(mac) = self.mac {
            mac.unicast().map_err(|e| format!("mac: {e}"))?;
        }
        for (i, vm) in self.vms.iter().enumerate() {
            vm.mac.unicast().map_err(|e| format!("VM {}: mac: {e}", vm.name))?;
            if self.vms[..i].iter().any(|other| other.name == vm.name) {
                return Err(format!("VM {:?} is listed twice", vm.name));
            }
        }
        Ok(())
    }

    /// The local control socket the `jettison` command talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("desktop.sock")
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&VmDefinition> {
        self.vms.iter().find(|vm| vm.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"d\"\nkey = \"/k\"\nserver = \"s:1\"\ncontrol_listen = \"10.0.0.2:7400\"\n\
        serve_ip = \"10.0.0.2\"\nstate_dir = \"/s\"\nrun_dir = \"/r\"\nbridge = \"br0\"\nkernel = \"/v\"\n\
        initrd = \"/i\"\n";
    const VM: &str = "[[vm]]\nname = \"vm1\"\nmemory_mib = 256\ndisk = \"/d.img\"\nmac = \"02:00:00:00:00:01\"\n\
        memserv_port = 7410\ndiskserv_port = 7411\n";

    fn load(text: &str) -> Result<DesktopConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desktop.toml");
        std::fs::write(&path, text).unwrap();
        DesktopConfig::load(&path).map_err(|e| wire::chain(&e))
    }

    #[test]
    fn a_file_loads_with_defaults() {
        let config = load(&format!("{BASE}[idle]\nmax_cpu_percent = 20.0\n{VM}")).unwrap();
        assert_eq!(config.failover_after_secs, 30);
        assert_eq!(config.idle.max_cpu_percent, 20.0);
        assert_eq!(config.vm("vm1").unwrap().memory_mib, 256);
        assert_eq!(config.control_socket(), Path::new("/r/desktop.sock"));
    }

    #[test]
    fn bad_names_and_twins_are_refused() {
        let long = VM.replace("vm1", "a-very-long-vm-name");
        assert!(load(&format!("{BASE}{long}")).unwrap_err().contains("tap device"));
        let multicast = VM.replace("02:00:00:00:00:01", "01:00:5e:00:00:01");
        assert!(load(&format!("{BASE}{multicast}")).unwrap_err().contains("unicast"));
        let hostile = VM.replace("02:00:00:00:00:01", "52:54:00:00:00:01,romfile=/etc/shadow");
        assert!(load(&format!("{BASE}{hostile}")).unwrap_err().contains("not a valid MAC address"));
        assert!(load(&format!("{BASE}{VM}{VM}")).unwrap_err().contains("listed twice"));
        assert!(load(&format!("{BASE}accel = \"xen\"\n{VM}")).unwrap_err().contains("accel"));
    }

    #[test]
    fn the_packaged_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/desktop.toml");
        DesktopConfig::load(&path).unwrap();
    }
}
