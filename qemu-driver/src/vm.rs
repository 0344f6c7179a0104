//! Our VM profile: the QEMU command line both sides run the VM with.
//!
//! Guest RAM is a `memory-backend-file` with `share=on`, named as the
//! machine's `memory-backend`. That is the heart of the design: the RAM file
//! *is* the memory checkpoint, the desktop's memserv serves pages from it,
//! the server's memtap provides it through FUSE, and with the migration
//! capability `x-ignore-shared` QEMU leaves it out of the migration stream,
//! so the "descriptor" is only device and vCPU state (see `migration`).
//!
//! Everything else is kept minimal (`-nodefaults`, no display) so that the
//! device state is small and two QEMUs started from the same spec accept
//! each other's migration stream.
//!
//! One device is there for the memory path: a virtio-balloon with free page
//! reporting. The guest (Linux >= 5.7) tells QEMU which memory it has freed,
//! and QEMU discards it from the RAM file, which for a shared file backend
//! means punching a hole. Memory the guest used and gave back then reads as
//! zero, joins the zero map at consolidation and is never fetched: what the
//! paper needed a guest kernel patch for (see `kernel-patches/README.md`).
//! The balloon is never inflated; only its reporting queue is used.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::guest::GuestImage;
use crate::process::QemuProcess;

/// How QEMU runs the guest's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Binary translation; slow but works everywhere. Tests use this.
    Tcg,
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Everything needed to start one QEMU with our VM profile.
///
/// QEMU's files (QMP socket, serial log, its own output) go into a run
/// directory; the RAM file is named separately because it outlives runs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    guest: GuestImage,
    ram_file: PathBuf,
    run_dir: PathBuf,
    memory_mib: u64,
    accel: Accel,
    cpu: String,
    kernel_args: String,
    incoming_defer: bool,
    free_page_reporting: bool,
    extra_args: Vec<OsString>,
}

impl VmSpec {
    /// A 256 MiB TCG VM booting `guest` with its RAM in `ram_file` (created
    /// by QEMU if missing, reused as-is if present) and its other files in
    /// `run_dir`.
    pub fn new(guest: &GuestImage, ram_file: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            guest: guest.clone(),
            ram_file: ram_file.into(),
            run_dir: run_dir.into(),
            memory_mib: 256,
            accel: Accel::Tcg,
            // `max` works under both accelerators. Migration between
            // different hosts needs a named model both of them support.
            cpu: "max".to_owned(),
            kernel_args: String::new(),
            incoming_defer: false,
            free_page_reporting: true,
            extra_args: Vec::new(),
        }
    }

    /// Sets the guest RAM size. A RAM file reused from an earlier run must
    /// have been made with the same size.
    pub fn memory_mib(mut self, mib: u64) -> VmSpec {
        self.memory_mib = mib;
        self
    }

    /// Sets the accelerator.
    pub fn accel(mut self, accel: Accel) -> VmSpec {
        self.accel = accel;
        self
    }

    /// Sets the `-cpu` model.
    pub fn cpu(mut self, model: impl Into<String>) -> VmSpec {
        self.cpu = model.into();
        self
    }

    /// Adds kernel command line arguments after our console settings, e.g.
    /// `jt.mode=shell` or `jt.fill=64` for the test guest.
    pub fn kernel_args(mut self, args: &str) -> VmSpec {
        self.kernel_args = args.to_owned();
        self
    }

    /// Starts QEMU with `-incoming defer`: it waits, paused, for a device
    /// state to load (see `load_device_state`) instead of booting.
    pub fn incoming_defer(mut self) -> VmSpec {
        self.incoming_defer = true;
        self
    }

    /// Turns the virtio-balloon device with free page reporting on (the
    /// default) or leaves the device out (`false`), to measure what
    /// reporting saves. The device is part of the migrated device state,
    /// so a VM must be resumed with the setting it was started with.
    pub fn free_page_reporting(mut self, on: bool) -> VmSpec {
        self.free_page_reporting = on;
        self
    }

    /// Appends raw QEMU arguments, for devices the profile does not have yet
    /// (a virtio-blk disk, a tap NIC with a fixed MAC).
    pub fn extra_args<I, S>(mut self, args: I) -> VmSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The directory for this run's QMP socket and logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The QMP socket QEMU will listen on.
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// The file QEMU will write the guest's serial console to.
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// The file QEMU's own stdout and stderr go to.
    pub fn output_log(&self) -> PathBuf {
        self.run_dir.join("qemu.log")
    }

    /// The full QEMU command line, without the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mib = self.memory_mib;
        let mut append = "console=ttyS0 panic=-1".to_owned();
        if !self.kernel_args.is_empty() {
            append.push(' ');
            append.push_str(&self.kernel_args);
        }
        let mut args: Vec<OsString> = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "none",
            // A guest panic (panic=-1 reboots at once) ends QEMU instead of
            // looping, so a broken guest fails fast.
            "-no-reboot",
            "-machine",
            "q35,memory-backend=ram0",
            "-accel",
            self.accel.name(),
            "-cpu",
            &self.cpu,
            "-m",
            &format!("{mib}M"),
            "-object",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(option_with_path(
            &format!("memory-backend-file,id=ram0,size={mib}M,share=on,mem-path="),
            &self.ram_file,
        ));
        args.extend(["-kernel".into(), self.guest.kernel.clone().into_os_string()]);
        args.extend(["-initrd".into(), self.guest.initrd.clone().into_os_string()]);
        args.extend(["-append".into(), append.into()]);
        args.push("-chardev".into());
        args.push(option_with_path("file,id=ser0,path=", &self.serial_log()));
        args.extend(["-serial".into(), "chardev:ser0".into()]);
        // The -chardev/-mon spelling of `-qmp unix:...`: its path is a plain
        // option value, so a comma in it can be escaped.
        args.push("-chardev".into());
        let mut socket = option_with_path("socket,id=qmp0,path=", &self.qmp_socket());
        socket.push(",server=on,wait=off");
        args.push(socket);
        args.extend(["-mon".into(), "chardev=qmp0,mode=control".into()]);
        if self.free_page_reporting {
            args.extend(["-device".into(), BALLOON_DEVICE.into()]);
        }
        if self.incoming_defer {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts QEMU and returns once its QMP socket exists.
    ///
    /// # Errors
    /// [`QemuError::File`] if the run directory or output log cannot be made,
    /// [`QemuError::Spawn`] if QEMU cannot run, [`QemuError::Exited`] with QEMU's
    /// output if it quits during start-up (e.g. a bad argument).
    ///
    /// [`QemuError::File`]: crate::StoreError::File
    /// [`QemuError::Spawn`]: crate::StoreError::Spawn
    /// [`QemuError::Exited`]: crate::StoreError::Exited
    pub fn spawn(&self) -> Result<QemuProcess> {
        QemuProcess::start(self)
    }
}

/// The balloon of the profile: never inflated, there for its free page
/// reporting queue. A fixed id keeps its device state path stable.
const BALLOON_DEVICE: &str = "virtio-balloon-pci,id=balloon0,free-page-reporting=on";

/// `prefix` followed by `path` with each comma doubled, QEMU's escape for
/// commas inside an option value.
pub(crate) fn option_with_path(prefix: &str, path: &Path) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    for &byte in path.as_os_str().as_bytes() {
        bytes.push(byte);
        if byte == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        let guest = GuestImage { kernel: "/g/vmlinuz".into(), initrd: "/g/initramfs.img".into() };
        VmSpec::new(&guest, "/vm/ram,1", "/run/vm")
    }

    fn joined(spec: &VmSpec) -> String {
        let args: Vec<String> = spec.args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        args.join(" ")
    }

    #[test]
    fn ram_is_a_shared_file_backend_with_commas_escaped() {
        let line = joined(&spec().memory_mib(512));
        assert!(line.contains("-machine q35,memory-backend=ram0"), "{line}");
        assert!(line.contains("-m 512M"), "{line}");
        assert!(line.contains("-object memory-backend-file,id=ram0,size=512M,share=on,mem-path=/vm/ram,,1"), "{line}");
    }

    #[test]
    fn files_live_in_the_run_dir() {
        let spec = spec();
        let line = joined(&spec);
        assert_eq!(spec.qmp_socket(), Path::new("/run/vm/qmp.sock"));
        assert!(line.contains("-chardev file,id=ser0,path=/run/vm/serial.log -serial chardev:ser0"), "{line}");
        assert!(
            line.contains(
                "-chardev socket,id=qmp0,path=/run/vm/qmp.sock,server=on,wait=off -mon chardev=qmp0,mode=control"
            ),
            "{line}"
        );
    }

    #[test]
    fn defaults_are_tcg_max_no_incoming() {
        let line = joined(&spec());
        assert!(line.contains("-accel tcg -cpu max"), "{line}");
        assert!(!line.contains("-incoming"), "{line}");
        assert!(spec().args().contains(&OsString::from("console=ttyS0 panic=-1")));
    }

    #[test]
    fn options_reach_the_command_line() {
        let spec = spec()
            .accel(Accel::Kvm)
            .cpu("host")
            .kernel_args("jt.fill=64")
            .incoming_defer()
            .extra_args(["-device", "virtio-rng-pci"]);
        let args = spec.args();
        let line = joined(&spec);
        assert!(line.contains("-accel kvm -cpu host"), "{line}");
        assert!(args.contains(&OsString::from("console=ttyS0 panic=-1 jt.fill=64")));
        assert!(line.ends_with("-incoming defer -device virtio-rng-pci"), "{line}");
    }

    #[test]
    fn free_page_reporting_is_on_by_default() {
        let line = joined(&spec());
        assert!(line.contains("-device virtio-balloon-pci,id=balloon0,free-page-reporting=on"), "{line}");
        assert_eq!(line.matches("virtio-balloon").count(), 1, "{line}");
    }

    #[test]
    fn free_page_reporting_can_be_turned_off() {
        let line = joined(&spec().free_page_reporting(false));
        assert!(!line.contains("virtio-balloon"), "{line}");
        let line = joined(&spec().free_page_reporting(false).free_page_reporting(true));
        assert!(line.contains("free-page-reporting=on"), "{line}");
    }

    #[test]
    fn option_paths_double_commas_only() {
        assert_eq!(option_with_path("path=", Path::new("/a,b,,c")), OsString::from("path=/a,,b,,,,c"));
        assert_eq!(option_with_path("path=", Path::new("/plain")), OsString::from("path=/plain"));
    }
}
