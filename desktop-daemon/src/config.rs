//! The desktop daemon's configuration file (TOML), e.g.
//! `/etc/jettison/desktop.toml`:
//!
//! ```toml
//! name = "desk1"
//! host_key = "/etc/jettison/host.key" # made by `jettison pair` (the default)
//! peers = "/etc/jettison/peers"       # the servers enrolled here (the default)
//! server = "10.0.0.1:7400"            # the server daemon
//! control_listen = "10.0.0.2:7400"    # where the server asks us to take a VM back
//! serve_ip = "10.0.0.2"               # memserv and diskserv listen here
//! mac = "52:54:00:12:34:56"           # this desktop's NIC, for Wake-on-LAN (omit: never sleeps)
//! state_dir = "/var/lib/jettison"     # RAM files, descriptors, staging
//! run_dir = "/run/jettison"           # QEMU sockets, the control socket
//! bridge = "br0"
//! accel = "auto"                     # KVM where /dev/kvm works, else TCG
//! cpu_model = "Skylake-Client-v4"     # the office's oldest CPU; the same on the server
//! failover_after_secs = 30            # server unreachable this long: resume from the checkpoint
//! qemu_user = "jettison-qemu"         # QEMU drops to this user once a VM is set up (omit: root)
//! socket_group = "jettison"           # may use the local socket (the default; "" = root only)
//! group_may_move = true               # ...and move VMs, not only look (the default)
//! metrics_listen = "127.0.0.1:9464"   # Prometheus metrics on GET /metrics (omit: none)
//!
//! [power]                             # sleep while the VMs are away (omit: never); see power_config
//! policy = "adaptive"
//!
//! [activity]                          # watch the user, move the VMs while away (omit: never); see activity_config
//! xauthority = "/var/run/lightdm/root/:0"
//!
//! [idle]                              # see qemu_driver::IdleThresholds
//! max_cpu_percent = 10.0
//!
//! [fleet]                             # several servers (omit: `server` above, no etcd)
//! etcd = ["http://10.0.0.5:2379", "http://10.0.0.6:2379", "http://10.0.0.7:2379"]
//! high_water = 0.9                    # a server that would be fuller than this on any resource is not chosen
//!
//! [[vm]]
//! name = "vm1"
//! memory_mib = 2048
//! vcpus = 2
//! firmware = "uefi"                   # or "bios" (SeaBIOS), or "kernel" (kernel = / initrd = above)
//! disk = "/var/lib/jettison/vm1.qcow2"
//! disk_format = "qcow2"               # or "raw" (the default); never guessed
//! display = true                      # a screen, USB input and sound (the default)
//! mac = "02:4a:54:00:00:01"
//! memserv_port = 7410
//! diskserv_port = 7411                # one port serves all the VM's disks
//!
//! [[vm]]                              # a VM with several disks: one table each, in
//! name = "vm2"                        # the order the guest sees them (vda, vdb, ...),
//! memory_mib = 2048                   # instead of disk = and disk_format =
//! mac = "02:4a:54:00:00:02"
//! memserv_port = 7420
//! diskserv_port = 7421
//! [[vm.disks]]
//! path = "/var/lib/jettison/vm2.qcow2"
//! format = "qcow2"                    # or "raw" (the default); never guessed
//! [[vm.disks]]
//! path = "/var/lib/jettison/vm2-data.img"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use daemon_protocol::local_access::{AccessError, SocketAccess};
use daemon_protocol::protocol::MAX_MEMORY_MIB;
use daemon_protocol::{CpuModel, KernelArgs, MAX_DISKS, MAX_VCPUS};
use identifiers::{HostName, Mac, VmName};
use qemu_driver::{Accel, AccelChoice, DiskFormat, IdleThresholds, QemuUser};
use serde::Deserialize;

use crate::activity_config::ActivityConfig;
use crate::error::DesktopError;
use crate::power_config::PowerConfig;

/// The CPU model under KVM when the file names none: Nehalem is
/// x86-64-v2, which every x86-64 desktop and server of the last fifteen
/// years runs. Name the office's oldest CPU instead to give guests more.
pub const DEFAULT_KVM_CPU_MODEL: &str = "Nehalem";
/// Smallest RAM a VM may have: a desktop OS needs more, but the test guest
/// runs in this.
pub const MIN_MEMORY_MIB: u64 = 64;

/// The desktop daemon's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopConfig {
    /// This desktop's name, shown on the server.
    pub name: HostName,
    /// This host's private key, made by `jettison pair`.
    #[serde(default = "daemon_protocol::config_file::default_host_key")]
    pub host_key: PathBuf,
    /// The directory of enrolled peers (`NAME.pub`, written by `jettison
    /// enroll`): the servers this desktop moves to.
    #[serde(default = "daemon_protocol::config_file::default_peers")]
    pub peers: PathBuf,
    /// The one office key of earlier releases: refused with how to upgrade.
    #[serde(default)]
    key: Option<PathBuf>,
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
    /// The kernel of VMs that boot one the host supplies (`firmware = "kernel"`).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Their initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// OVMF's code, for VMs with `firmware = "uefi"`.
    #[serde(default = "qemu_driver::default_ovmf_code")]
    pub ovmf_code: PathBuf,
    /// The variable store template each UEFI VM's own store is copied from.
    #[serde(default = "qemu_driver::default_ovmf_vars")]
    pub ovmf_vars: PathBuf,
    /// `auto` (KVM where `/dev/kvm` works, else TCG), `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelChoice,
    /// The CPU model every VM runs with, here and on the server: the same
    /// for the whole office. Default: `max` under TCG, [`DEFAULT_KVM_CPU_MODEL`] under KVM.
    #[serde(default)]
    pub cpu_model: Option<CpuModel>,
    /// The group (the desk's user) that may open the VMs' screens; none:
    /// root only.
    #[serde(default)]
    pub viewer_group: Option<String>,
    /// The group whose members may use the local socket (see
    /// [`daemon_protocol::local_access`]); none: `jettison` if it exists,
    /// else root only; empty: root only.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Whether `socket_group`'s members may also move, start and stop VMs
    /// (the desk's user's session consolidates and reintegrates), not only
    /// look.
    #[serde(default = "yes")]
    pub group_may_move: bool,
    /// How long the server may be unreachable before a consolidated VM is
    /// resumed from its checkpoint.
    #[serde(default = "default_failover")]
    pub failover_after_secs: u64,
    /// The unprivileged user QEMU drops to once a VM is set up (the
    /// package makes `jettison-qemu`); none: QEMU runs as root.
    #[serde(default)]
    pub qemu_user: Option<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`); none: nowhere.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// When a VM counts as idle.
    #[serde(default)]
    pub idle: IdleThresholds,
    /// How the desktop sleeps while its VMs are consolidated; none: it never sleeps.
    #[serde(default)]
    pub power: Option<PowerConfig>,
    /// Whether and how the daemon watches the user; none: it never moves a
    /// VM on its own.
    #[serde(default)]
    pub activity: Option<ActivityConfig>,
    /// Where the fleet of servers registers (`[fleet]`); none: `server`
    /// is the one server, and no etcd is needed.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// The VMs.
    #[serde(rename = "vm")]
    pub vms: Vec<VmDefinition>,
    /// The accelerator chosen at load.
    #[serde(skip, default = "unresolved")]
    resolved_accel: Accel,
    /// `qemu_user`, looked up at load.
    #[serde(skip)]
    resolved_qemu_user: Option<QemuUser>,
}

/// How a VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareChoice {
    /// SeaBIOS, then the disk's own bootloader.
    Bios,
    /// UEFI (OVMF), with this VM's own variable store.
    Uefi,
    /// The host's `kernel` and `initrd` (the test guest).
    Kernel,
}

/// One VM of the desktop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    /// Its name.
    pub name: VmName,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// How it boots; default: `kernel` when the file names a kernel, else `bios`.
    #[serde(default)]
    pub firmware: Option<FirmwareChoice>,
    /// Its disk image, for a VM with one disk written the short way; see
    /// [`VmDefinition::disks`].
    #[serde(default)]
    disk: Option<PathBuf>,
    /// That image's format (`raw` unless it says `qcow2`).
    #[serde(default)]
    disk_format: Option<DiskFormat>,
    /// Its disks written as `[[vm.disks]]` tables, in the order the guest
    /// sees them: for a VM with several, instead of `disk`.
    #[serde(default, rename = "disks")]
    disk_tables: Vec<DiskDefinition>,
    /// Whether it has a screen, USB keyboard and tablet, and a sound card.
    #[serde(default = "yes")]
    pub display: bool,
    /// Its NIC's MAC, the same on every host.
    pub mac: Mac,
    /// Extra kernel arguments, for `firmware = "kernel"` (the test guest's `jt.*`).
    #[serde(default)]
    pub kernel_args: KernelArgs,
    /// memserv's port while it is consolidated.
    pub memserv_port: u16,
    /// diskserv's port while it is consolidated.
    pub diskserv_port: u16,
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDefinition {
    /// The image (a file, or a block device).
    pub path: PathBuf,
    /// Its format (`raw` unless it says `qcow2`): never guessed from the
    /// file's content, which the guest writes.
    #[serde(default = "raw")]
    pub format: DiskFormat,
}

impl VmDefinition {
    /// Its disks, in the order the guest sees them (`vda`, `vdb`, ...):
    /// `disk` and `disk_format`, or the `[[vm.disks]]` tables. A checked
    /// configuration has 1 to [`MAX_DISKS`].
    pub fn disks(&self) -> Vec<DiskDefinition> {
        match &self.disk {
            Some(path) => {
                vec![DiskDefinition { path: path.clone(), format: self.disk_format.unwrap_or(DiskFormat::Raw) }]
            }
            None => self.disk_tables.clone(),
        }
    }

    /// The key a configuration file names disk `index` with, for messages.
    fn disk_keys(&self, index: usize) -> (String, &'static str) {
        if self.disk.is_some() {
            ("disk".to_owned(), "disk_format")
        } else {
            (format!("[[vm.disks]] number {}: path", index + 1), "format")
        }
    }

    /// How it boots, with the default applied.
    pub fn firmware(&self, desktop: &DesktopConfig) -> FirmwareChoice {
        self.firmware.unwrap_or(if desktop.kernel.is_some() { FirmwareChoice::Kernel } else { FirmwareChoice::Bios })
    }
}

fn default_failover() -> u64 {
    30
}

fn unresolved() -> Accel {
    Accel::Tcg
}

fn raw() -> DiskFormat {
    DiskFormat::Raw
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// `[fleet]`: where the servers of a fleet register, and how one is chosen
/// for a VM (see [`fleet_registry::placement`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The client URLs of the etcd cluster's members.
    pub etcd: fleet_registry::EtcdEndpoints,
    /// A server that would be fuller than this fraction on any resource
    /// with the VM is not chosen (omit: 0.9).
    #[serde(default)]
    high_water: Option<f64>,
}

impl FleetConfig {
    /// The placement policy it sets.
    ///
    /// # Errors
    /// A `high_water` that is not a fraction above 0 and at most 1.
    pub fn policy(&self) -> Result<fleet_registry::Policy, String> {
        let mut policy = fleet_registry::Policy::default();
        if let Some(mark) = self.high_water {
            if !(mark > 0.0 && mark <= 1.0) {
                return Err(format!("[fleet] high_water = {mark}: write a fraction above 0 and at most 1, e.g. 0.9"));
            }
            policy.high_water = mark;
        }
        Ok(policy)
    }
}

impl DesktopConfig {
    /// Reads and checks the file at `path`: every value, the files it
    /// names, the accelerator and the CPU model against this host's QEMU.
    ///
    /// # Errors
    /// [`DesktopError::Config`], naming the file, the key, what is wrong and
    /// what to write instead.
    pub fn load(path: &Path) -> Result<Self, DesktopError> {
        let mut config =
            daemon_protocol::config_file::load(path, DesktopConfig::check).map_err(DesktopError::Config)?;
        config.resolved_accel = config.accel.resolve().expect("checked at load");
        config.resolved_qemu_user = config.qemu_user.as_deref().map(qemu_user).transpose().map_err(|e| {
            // Checked a moment ago; only a user removed since gets here.
            DesktopError::Config(daemon_protocol::config_file::ConfigFileError::Invalid {
                path: path.to_owned(),
                reason: e,
            })
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        daemon_protocol::config_file::refuse_office_key(self.key.as_deref())?;
        let accel = self.accel.resolve()?;
        let model = self.cpu_model_for(accel);
        if accel == Accel::Kvm && model.is_host_dependent() {
            return Err(format!(
                "cpu_model = \"{model}\" differs from host to host under KVM, so a VM cannot move safely: \
                 name the office's oldest CPU, e.g. cpu_model = \"Skylake-Client-v4\" (see qemu-system-x86_64 -cpu help)"
            ));
        }
        let known = qemu_driver::cpu_models().map_err(|e| format!("cannot ask QEMU for its CPU models: {e}"))?;
        if !known.iter().any(|m| m == model.as_str()) {
            return Err(format!(
                "cpu_model = \"{model}\" is not a CPU model this QEMU knows: pick one from \
                 `qemu-system-x86_64 -cpu help`"
            ));
        }
        if let Some(mac) = self.mac {
            mac.unicast().map_err(|e| format!("mac: {e}"))?;
        }
        if let Some(user) = &self.qemu_user {
            qemu_user(user)?;
        }
        if let Some(power) = &self.power {
            power.check(self.mac)?;
        }
        if let Some(activity) = &self.activity {
            activity.check()?;
        }
        if let Some(fleet) = &self.fleet {
            fleet.policy()?;
        }
        if let Some(group) = &self.viewer_group {
            match nix::unistd::Group::from_name(group) {
                Ok(Some(_)) => {}
                _ => {
                    return Err(format!(
                        "viewer_group = {group:?} is not a group of this host: create it or name another"
                    ))
                }
            }
        }
        self.socket_access().map_err(|e| e.to_string())?;
        let mut ports = vec![("control_listen", self.control_listen.port())];
        let mut images: Vec<(ImageId, String)> = Vec::new();
        for (i, vm) in self.vms.iter().enumerate() {
            if self.vms[..i].iter().any(|other| other.name == vm.name) {
                return Err(format!("VM {:?} is listed twice: give each [[vm]] its own name", vm.name));
            }
            self.check_vm(vm).map_err(|e| format!("[[vm]] {}: {e}", vm.name))?;
            for (index, disk) in vm.disks().iter().enumerate() {
                let (key, _) = vm.disk_keys(index);
                let Some(id) = ImageId::of(&disk.path) else { continue };
                if let Some((_, other)) = images.iter().find(|(seen, _)| *seen == id) {
                    return Err(format!(
                        "[[vm]] {}: {key} = {:?} is the same image as {other}: give each disk its own image",
                        vm.name, disk.path
                    ));
                }
                images.push((id, format!("disk {} of [[vm]] {}", index + 1, vm.name)));
            }
            for (key, port) in [("memserv_port", vm.memserv_port), ("diskserv_port", vm.diskserv_port)] {
                if let Some((other, _)) = ports.iter().find(|(_, p)| *p == port) {
                    return Err(format!(
                        "[[vm]] {}: {key} = {port} is already {other}: give every port its own number",
                        vm.name
                    ));
                }
                ports.push((if key == "memserv_port" { "a memserv_port" } else { "a diskserv_port" }, port));
            }
        }
        Ok(())
    }

    fn check_vm(&self, vm: &VmDefinition) -> Result<(), String> {
        vm.mac.unicast().map_err(|e| format!("mac: {e}"))?;
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&vm.memory_mib) {
            return Err(format!("memory_mib = {}: write {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}", vm.memory_mib));
        }
        if !(1..=MAX_VCPUS).contains(&vm.vcpus) {
            return Err(format!("vcpus = {}: write 1 to {MAX_VCPUS}", vm.vcpus));
        }
        for port in [vm.memserv_port, vm.diskserv_port] {
            if port == 0 {
                return Err("memserv_port and diskserv_port must be fixed ports, not 0".to_owned());
            }
        }
        self.check_disks(vm)?;
        match vm.firmware(self) {
            FirmwareChoice::Kernel => {
                let kernel = self.kernel.as_ref().ok_or(
                    "firmware = \"kernel\" but the file names no kernel: \
                     add kernel = \"...\" and initrd = \"...\" at the top, or write firmware = \"bios\"",
                )?;
                let initrd = self.initrd.as_ref().ok_or(
                    "firmware = \"kernel\" but the file names no initrd: \
                     add initrd = \"...\" at the top",
                )?;
                expect_file("kernel", kernel, false)?;
                expect_file("initrd", initrd, false)?;
            }
            FirmwareChoice::Uefi => {
                expect_file("ovmf_code", &self.ovmf_code, false)?;
                expect_file("ovmf_vars", &self.ovmf_vars, false)?;
            }
            FirmwareChoice::Bios => {}
        }
        if !vm.kernel_args.as_str().is_empty() && vm.firmware(self) != FirmwareChoice::Kernel {
            return Err("kernel_args only apply to firmware = \"kernel\": put the guest's kernel arguments in \
                 its own bootloader configuration"
                .to_owned());
        }
        Ok(())
    }

    /// Checks that the VM names its disks one way, 1 to [`MAX_DISKS`] of
    /// them, and each as [`expect_file`] and [`check_disk_format`] do.
    fn check_disks(&self, vm: &VmDefinition) -> Result<(), String> {
        match (&vm.disk, vm.disk_format, vm.disk_tables.is_empty()) {
            (Some(disk), _, false) => {
                return Err(format!(
                    "disk = {disk:?} and [[vm.disks]] both name disks: write each disk, the first one first, \
                     as a [[vm.disks]] table (path = \"...\" and format = \"raw\" or \"qcow2\"), \
                     and remove disk and disk_format"
                ))
            }
            (None, Some(_), false) => {
                return Err("disk_format applies to disk = only: with [[vm.disks]], write format = \"...\" \
                     in each table and remove disk_format"
                    .to_owned())
            }
            (None, _, true) => {
                return Err("it has no disk: write disk = \"/path/to/image\" (with disk_format = \"qcow2\" \
                     for a qcow2 image), or one [[vm.disks]] table (path = and format =) per disk"
                    .to_owned())
            }
            _ => {}
        }
        let disks = vm.disks();
        if disks.len() > MAX_DISKS {
            return Err(format!(
                "{} [[vm.disks]] tables: a VM has at most {MAX_DISKS} disks; put the data of the others on these",
                disks.len()
            ));
        }
        for (index, disk) in disks.iter().enumerate() {
            let (path_key, format_key) = vm.disk_keys(index);
            expect_file(&path_key, &disk.path, true)?;
            check_disk_format(&disk.path, disk.format, &path_key, format_key)?;
        }
        Ok(())
    }

    /// The accelerator the VMs run with.
    pub fn accel(&self) -> Accel {
        self.resolved_accel
    }

    /// The CPU model the VMs run with.
    pub fn cpu_model(&self) -> CpuModel {
        self.cpu_model_for(self.resolved_accel)
    }

    fn cpu_model_for(&self, accel: Accel) -> CpuModel {
        self.cpu_model.clone().unwrap_or_else(|| {
            let default = if accel == Accel::Kvm { DEFAULT_KVM_CPU_MODEL } else { "max" };
            default.parse().expect("the default models are valid names")
        })
    }

    /// The user QEMU drops to, if the file names one (looked up at load).
    pub fn qemu_user(&self) -> Option<QemuUser> {
        self.resolved_qemu_user.clone()
    }

    /// The id of `viewer_group`, if the file names one.
    pub fn viewer_gid(&self) -> Option<nix::unistd::Gid> {
        let group = self.viewer_group.as_ref()?;
        nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid)
    }

    /// The local control socket the `jettison` command talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("desktop.sock")
    }

    /// Who may use the local socket, and a warning if the default group is missing.
    ///
    /// # Errors
    /// A `socket_group` that is not a group here.
    pub fn socket_access(&self) -> Result<(SocketAccess, Option<String>), AccessError> {
        SocketAccess::from_setting(self.socket_group.as_deref(), self.group_may_move)
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&VmDefinition> {
        self.vms.iter().find(|vm| vm.name.as_str() == name)
    }
}

/// The user `qemu_user` names, or what is wrong with it and what to do.
fn qemu_user(name: &str) -> Result<QemuUser, String> {
    QemuUser::lookup(name).map_err(|e| format!("qemu_user = {name:?}: {e}; or omit qemu_user to run QEMU as root"))
}

/// Checks that the disk (the value of `key`, its format that of
/// `format_key`) reads as `format`, and, for a raw disk, that it does not
/// look like a qcow2 image the file forgot to name as one. (The format
/// still comes from the file, never from the probe: the probe only catches
/// a mistake.)
fn check_disk_format(disk: &Path, format: DiskFormat, key: &str, format_key: &str) -> Result<(), String> {
    match (format, DiskFormat::detect(disk)) {
        (DiskFormat::Raw, Ok(DiskFormat::Qcow2)) => Err(format!(
            "{key} = {disk:?} is a qcow2 image but {format_key} is raw: write {format_key} = \"qcow2\""
        )),
        // In use by a running VM (its QEMU holds the lock): checked when it was started.
        (_, Err(qemu_driver::QemuError::ImageLocked { .. })) => Ok(()),
        (_, Err(e)) if format == DiskFormat::Qcow2 => Err(format!("{key} = {disk:?}: {e}")),
        (DiskFormat::Qcow2, Ok(DiskFormat::Raw)) => Err(format!(
            "{key} = {disk:?} is not a qcow2 image: write {format_key} = \"raw\", or convert it (qemu-img convert -O qcow2)"
        )),
        _ => Ok(()),
    }
}

/// What makes two paths the same image: the block device they are, or the
/// file (device and inode), whatever links lead to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageId {
    Device(u64),
    File(u64, u64),
}

impl ImageId {
    /// The image at `path`; none if it cannot be read (reported elsewhere).
    fn of(path: &Path) -> Option<ImageId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(if meta.file_type().is_block_device() {
            ImageId::Device(meta.rdev())
        } else {
            ImageId::File(meta.dev(), meta.ino())
        })
    }
}

/// Checks that `path` (the value of `key`) is a regular file, or a block
/// device where `device_ok`.
fn expect_file(key: &str, path: &Path, device_ok: bool) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{key} = {:?}: {e}: write the path of an existing file", path))?;
    let kind = meta.file_type();
    if kind.is_file() || (device_ok && kind.is_block_device()) {
        return Ok(());
    }
    let wanted = if device_ok { "a disk image file or a block device" } else { "a regular file" };
    Err(format!("{key} = {path:?} is not {wanted}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file's text with real files under `dir` for it to name.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for file in ["vmlinuz", "initrd", "d.img"] {
                std::fs::write(dir.path().join(file), b"x").unwrap();
            }
            Fixture { dir }
        }

        fn base(&self) -> String {
            let d = self.dir.path().display();
            format!(
                "name = \"d\"\nserver = \"s:1\"\ncontrol_listen = \"10.0.0.2:7400\"\n\
                 serve_ip = \"10.0.0.2\"\nstate_dir = \"/s\"\nrun_dir = \"/r\"\nbridge = \"br0\"\n\
                 kernel = \"{d}/vmlinuz\"\ninitrd = \"{d}/initrd\"\naccel = \"tcg\"\n"
            )
        }

        fn vm(&self) -> String {
            format!(
                "[[vm]]\nname = \"vm1\"\nmemory_mib = 256\ndisk = \"{}/d.img\"\nmac = \"02:00:00:00:00:01\"\n\
                 memserv_port = 7410\ndiskserv_port = 7411\n",
                self.dir.path().display()
            )
        }

        fn load(&self, text: &str) -> Result<DesktopConfig, String> {
            let path = self.dir.path().join("desktop.toml");
            std::fs::write(&path, text).unwrap();
            DesktopConfig::load(&path).map_err(|e| wire::chain(&e))
        }

        /// The error for the base file with `old` replaced by `new` in its VM.
        fn refusal(&self, old: &str, new: &str) -> String {
            let vm = self.vm();
            assert!(vm.contains(old), "{old} is not in the VM");
            self.load(&format!("{}{}", self.base(), vm.replace(old, new))).unwrap_err()
        }
    }

    #[test]
    fn the_office_key_of_earlier_releases_is_refused_with_the_way_up() {
        let f = Fixture::new();
        let err = f.load(&format!("key = \"/etc/jettison/jettison.key\"\n{}{}", f.base(), f.vm())).unwrap_err();
        assert!(err.contains("key = \"/etc/jettison/jettison.key\": one office key"), "{err}");
        assert!(err.contains("jettison pair") && err.contains("host_key = "), "{err}");
    }

    #[test]
    fn a_file_loads_with_defaults() {
        let f = Fixture::new();
        let config = f.load(&format!("{}[idle]\nmax_cpu_percent = 20.0\n{}", f.base(), f.vm())).unwrap();
        assert_eq!(config.failover_after_secs, 30);
        assert_eq!(config.idle.max_cpu_percent, 20.0);
        let vm = config.vm("vm1").unwrap();
        assert_eq!((vm.memory_mib, vm.vcpus, vm.display, vm.disks()[0].format), (256, 1, true, DiskFormat::Raw));
        assert_eq!(vm.disks().len(), 1);
        let qcow2 = f.dir.path().join("d.qcow2");
        let made =
            std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&qcow2).arg("1M").status();
        assert!(made.unwrap().success());
        let text = f.vm().replace("d.img", "d.qcow2");
        let error = f.load(&format!("{}{text}", f.base())).unwrap_err();
        assert!(error.contains("is a qcow2 image but disk_format is raw"), "{error}");
        let config =
            f.load(&format!("{}{}", f.base(), text.replace("disk = ", "disk_format = \"qcow2\"\ndisk = "))).unwrap();
        assert_eq!(config.vm("vm1").unwrap().disks()[0].format, DiskFormat::Qcow2);
        let error = f
            .load(&format!("{}{}", f.base(), f.vm().replace("disk = ", "disk_format = \"qcow2\"\ndisk = ")))
            .unwrap_err();
        assert!(error.contains("is not a qcow2 image"), "{error}");
        assert_eq!(vm.firmware(&config), FirmwareChoice::Kernel, "a file with a kernel keeps booting it");
        assert_eq!(config.accel(), Accel::Tcg);
        assert_eq!(config.cpu_model().as_str(), "max");
        assert_eq!(config.control_socket(), Path::new("/r/desktop.sock"));
    }

    #[test]
    fn the_fleet_section_is_optional_and_checked() {
        let f = Fixture::new();
        let single = f.load(&format!("{}{}", f.base(), f.vm())).unwrap();
        assert!(single.fleet.is_none(), "no [fleet]: the one server, no etcd");
        let fleet = |keys: &str| f.load(&format!("{}[fleet]\n{keys}\n{}", f.base(), f.vm()));
        let config = fleet("etcd = [\"http://10.0.0.5:2379\", \"10.0.0.6:2379\"]").unwrap().fleet.unwrap();
        assert_eq!((config.etcd.addrs().len(), config.policy().unwrap().high_water), (2, 0.9));
        let lower = fleet("etcd = [\"10.0.0.5:2379\"]\nhigh_water = 0.75").unwrap().fleet.unwrap();
        assert_eq!(lower.policy().unwrap().high_water, 0.75);
        assert!(fleet("etcd = [\"10.0.0.5:2379\"]\nhigh_water = 1.5").unwrap_err().contains("high_water = 1.5"));
        assert!(fleet("etcd = [\"https://10.0.0.5:2379\"]").unwrap_err().contains("only plain http"));
    }

    #[test]
    fn a_firmware_vm_needs_no_kernel() {
        let f = Fixture::new();
        let base: String = f
            .base()
            .lines()
            .filter(|l| !l.starts_with("kernel") && !l.starts_with("initrd"))
            .collect::<Vec<_>>()
            .join("\n");
        let config = f.load(&format!("{base}\n{}", f.vm())).unwrap();
        assert_eq!(config.vm("vm1").unwrap().firmware(&config), FirmwareChoice::Bios);
        let error = f.load(&format!("{base}\n{}firmware = \"kernel\"\n", f.vm())).unwrap_err();
        assert!(error.contains("names no kernel") && error.contains("[[vm]] vm1"), "{error}");
    }

    #[test]
    fn each_kind_of_mistake_is_refused_naming_the_key() {
        let f = Fixture::new();
        let long = f.refusal("\"vm1\"", "\"a-very-long-vm-name\"");
        assert!(long.contains("tap device"), "{long}");
        assert!(f.refusal("02:00:00:00:00:01", "01:00:5e:00:00:01").contains("unicast"));
        let hostile = f.refusal("02:00:00:00:00:01", "52:54:00:00:00:01,romfile=/etc/shadow");
        assert!(hostile.contains("not a valid MAC address"), "{hostile}");
        let twice = f.load(&format!("{}{}{}", f.base(), f.vm(), f.vm())).unwrap_err();
        assert!(twice.contains("listed twice"), "{twice}");
        let group = f.load(&format!("{}viewer_group = \"no-such-group-here\"\n{}", f.base(), f.vm())).unwrap_err();
        assert!(group.contains("is not a group of this host"), "{group}");
        let root = f.load(&format!("{}viewer_group = \"root\"\n{}", f.base(), f.vm())).unwrap();
        assert_eq!(root.viewer_gid(), Some(nix::unistd::Gid::from_raw(0)));
        assert_eq!(root.qemu_user(), None, "no qemu_user: QEMU runs as root");
        let user = f.load(&format!("{}qemu_user = \"no-such-user-here\"\n{}", f.base(), f.vm())).unwrap_err();
        assert!(user.contains("qemu_user = \"no-such-user-here\"") && user.contains("useradd --system"), "{user}");
        let root_user = f.load(&format!("{}qemu_user = \"root\"\n{}", f.base(), f.vm())).unwrap_err();
        assert!(root_user.contains("qemu_user = \"root\"") && root_user.contains("is root"), "{root_user}");
        let nobody = f.load(&format!("{}qemu_user = \"nobody\"\n{}", f.base(), f.vm())).unwrap();
        assert_eq!(nobody.qemu_user().map(|u| u.uid()), Some(65534));
        let accel = f.load(&format!("{}{}", f.base().replace("\"tcg\"", "\"xen\""), f.vm())).unwrap_err();
        assert!(accel.contains("accel") && accel.contains("auto"), "{accel}");
        let port = f.refusal("diskserv_port = 7411", "diskserv_port = 7410");
        assert!(port.contains("diskserv_port = 7410 is already a memserv_port"), "{port}");
        let control = f.refusal("memserv_port = 7410", "memserv_port = 7400");
        assert!(control.contains("is already control_listen"), "{control}");
        let missing = f.refusal("d.img", "nowhere.img");
        assert!(missing.contains("disk = ") && missing.contains("nowhere.img"), "{missing}");
        let directory = f.refusal("/d.img", "");
        assert!(directory.contains("is not a disk image file or a block device"), "{directory}");
        let memory = f.refusal("memory_mib = 256", "memory_mib = 1");
        assert!(memory.contains("memory_mib = 1: write 64 to"), "{memory}");
        let vcpus = f.refusal("memory_mib = 256", "memory_mib = 256\nvcpus = 0");
        assert!(vcpus.contains("vcpus = 0: write 1 to 256"), "{vcpus}");
        let model = f.load(&format!("{}cpu_model = \"Pentium9000\"\n{}", f.base(), f.vm())).unwrap_err();
        assert!(model.contains("not a CPU model this QEMU knows"), "{model}");
        let hostile_model = f.load(&format!("{}cpu_model = \"max,+vmx\"\n{}", f.base(), f.vm())).unwrap_err();
        assert!(hostile_model.contains("not a valid CPU model"), "{hostile_model}");
        let uefi =
            f.load(&format!("{}ovmf_vars = \"/nope.fd\"\n{}firmware = \"uefi\"\n", f.base(), f.vm())).unwrap_err();
        assert!(uefi.contains("ovmf_vars = \"/nope.fd\""), "{uefi}");
        let args =
            f.load(&format!("{}{}firmware = \"bios\"\nkernel_args = \"quiet\"\n", f.base(), f.vm())).unwrap_err();
        assert!(args.contains("kernel_args only apply"), "{args}");
        let activity = f.load(&format!("{}{}[activity]\nwarn_secs = 0\n", f.base(), f.vm())).unwrap_err();
        assert!(activity.contains("[activity] warn_secs = 0"), "{activity}");
        let watched = f.load(&format!("{}{}[activity]\nsource = \"x11\"\n", f.base(), f.vm())).unwrap();
        assert_eq!(watched.activity.map(|a| a.idle_secs), Some(15));
        let format = f.refusal("disk = ", "disk_format = \"vmdk\"\ndisk = ");
        assert!(format.contains("disk_format"), "{format}");
    }

    #[test]
    fn several_disks_load_in_order_and_each_mistake_is_refused_naming_the_key() {
        let f = Fixture::new();
        let d = f.dir.path().display().to_string();
        std::fs::write(f.dir.path().join("e.img"), b"y").unwrap();
        let qcow2 = f.dir.path().join("e.qcow2");
        let made =
            std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&qcow2).arg("1M").status();
        assert!(made.unwrap().success());
        let one_disk = f.vm();
        let disk_line = format!("disk = \"{d}/d.img\"\n");
        assert!(one_disk.contains(&disk_line));
        let without_disk = one_disk.replace(&disk_line, "");
        let table = |path: &str, format: &str| format!("[[vm.disks]]\npath = \"{d}/{path}\"\n{format}");
        let load = |tables: &[String]| f.load(&format!("{}{without_disk}{}", f.base(), tables.concat()));

        let config = load(&[table("d.img", ""), table("e.qcow2", "format = \"qcow2\"\n")]).unwrap();
        let disks = config.vm("vm1").unwrap().disks();
        assert_eq!(disks.len(), 2);
        assert_eq!((disks[0].path.clone(), disks[0].format), (f.dir.path().join("d.img"), DiskFormat::Raw));
        assert_eq!((disks[1].path.clone(), disks[1].format), (qcow2.clone(), DiskFormat::Qcow2));

        let both = f.load(&format!("{}{one_disk}{}", f.base(), table("e.img", ""))).unwrap_err();
        assert!(both.contains("both name disks") && both.contains("as a [[vm.disks]] table"), "{both}");
        let format = f
            .load(&format!("{}{without_disk}disk_format = \"qcow2\"\n{}", f.base(), table("e.qcow2", "")))
            .unwrap_err();
        assert!(format.contains("disk_format applies to disk = only"), "{format}");
        let none = load(&[]).unwrap_err();
        assert!(none.contains("it has no disk") && none.contains("[[vm.disks]]"), "{none}");
        let twice = load(&[table("d.img", ""), table("d.img", "")]).unwrap_err();
        assert!(twice.contains("[[vm.disks]] number 2: path = ") && twice.contains("same image as disk 1"), "{twice}");
        std::os::unix::fs::symlink(f.dir.path().join("d.img"), f.dir.path().join("link.img")).unwrap();
        let linked = load(&[table("d.img", ""), table("link.img", "")]).unwrap_err();
        assert!(linked.contains("same image as disk 1 of [[vm]] vm1"), "{linked}");
        let second_vm = format!("{}name = \"vm2\"\n", one_disk.replace("name = \"vm1\"\n", ""))
            .replace("7410", "7420")
            .replace("7411", "7421")
            .replace("00:01\"", "00:02\"");
        let shared = f.load(&format!("{}{one_disk}{second_vm}", f.base())).unwrap_err();
        assert!(
            shared.contains("[[vm]] vm2: disk = ") && shared.contains("same image as disk 1 of [[vm]] vm1"),
            "{shared}"
        );
        let many: Vec<String> = (0..=MAX_DISKS)
            .map(|i| {
                std::fs::write(f.dir.path().join(format!("m{i}.img")), b"z").unwrap();
                table(&format!("m{i}.img"), "")
            })
            .collect();
        let too_many = load(&many).unwrap_err();
        assert!(too_many.contains("9 [[vm.disks]] tables: a VM has at most 8 disks"), "{too_many}");
        assert!(load(&many[..MAX_DISKS]).is_ok(), "8 disks are fine");
        let missing = load(&[table("d.img", ""), table("nowhere.img", "")]).unwrap_err();
        assert!(missing.contains("[[vm.disks]] number 2: path = ") && missing.contains("nowhere.img"), "{missing}");
        let raw_as_qcow2 = load(&[table("d.img", ""), table("e.img", "format = \"qcow2\"\n")]).unwrap_err();
        assert!(raw_as_qcow2.contains("is not a qcow2 image: write format = \"raw\""), "{raw_as_qcow2}");
        let qcow2_as_raw = load(&[table("d.img", ""), table("e.qcow2", "")]).unwrap_err();
        assert!(
            qcow2_as_raw.contains("is a qcow2 image but format is raw: write format = \"qcow2\""),
            "{qcow2_as_raw}"
        );
        let unknown = load(&[table("d.img", "size = 3\n")]).unwrap_err();
        assert!(unknown.contains("size"), "{unknown}");
    }

    #[test]
    fn kvm_is_refused_where_it_cannot_work_and_max_is_refused_under_it() {
        let f = Fixture::new();
        let kvm = f.load(&format!("{}{}", f.base().replace("\"tcg\"", "\"kvm\""), f.vm()));
        if qemu_driver::kvm_usable() {
            let error = f.load(&format!("{}cpu_model = \"max\"\n{}", f.base().replace("\"tcg\"", "\"kvm\""), f.vm()));
            assert!(error.unwrap_err().contains("differs from host to host"));
            assert_eq!(kvm.unwrap().cpu_model().as_str(), DEFAULT_KVM_CPU_MODEL);
        } else {
            assert!(kvm.unwrap_err().contains("/dev/kvm cannot be opened"));
        }
    }

    #[test]
    fn the_packaged_example_loads_apart_from_its_files() {
        // The example names a group, a user and files of a real install;
        // only the files may be missing here.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/desktop.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("viewer_group = \"jettison\"", "viewer_group = \"root\"")
            .replace("socket_group = \"jettison\"", "socket_group = \"root\"");
        // The packaged user is made by the package; Debian's nobody stands in.
        assert!(text.contains("qemu_user = \"jettison-qemu\""), "the example confines QEMU");
        let text = text.replace("qemu_user = \"jettison-qemu\"", "qemu_user = \"nobody\"");
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("desktop.toml");
        std::fs::write(&copy, text).unwrap();
        match DesktopConfig::load(&copy) {
            Ok(_) => {}
            Err(e) => {
                let e = wire::chain(&e);
                assert!(e.contains("No such file") && e.contains("write the path of an existing file"), "{e}");
            }
        }
    }
}
