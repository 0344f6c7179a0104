//! Our VM profile: the QEMU command line both sides run the VM with.
//!
//! Guest RAM is a `memory-backend-file` with `share=on`, named as the
//! machine's `memory-backend`. That is the heart of the design: the RAM file
//! *is* the memory checkpoint, the desktop's memserv serves pages from it,
//! the server's memtap provides it through FUSE, and with the migration
//! capability `x-ignore-shared` QEMU leaves it out of the migration stream,
//! so the "descriptor" is only device and vCPU state (see `migration`).
//!
//! Everything else is kept to what a desktop needs (`-nodefaults`; a VGA
//! screen with USB keyboard and tablet and a sound card where the VM has a
//! [`Display`]; a
//! virtio-serial channel for the guest agent) so that the device state is
//! small and two QEMUs started from the same spec accept each other's
//! migration stream. How the VM boots ([`Boot`]) is the user's: its own
//! bootloader through SeaBIOS or OVMF, or a kernel the host supplies.
//!
//! One device is there for the memory path: a virtio-balloon with free page
//! reporting. The guest (Linux >= 5.7) tells QEMU which memory it has freed,
//! and QEMU discards it from the RAM file, which for a shared file backend
//! means punching a hole (on the server, memtap's FUSE `fallocate`, which
//! sends the hole home with the dirty set). Memory the guest used and gave
//! back then reads as zero, joins the zero map at consolidation and is never
//! fetched: what the
//! paper needed a guest kernel patch for (see `kernel-patches/README.md`).
//! The balloon is never inflated; only its reporting queue is used.
//!
//! QEMU runs confined by its own seccomp filter ([`SANDBOX`]): a guest that
//! takes over QEMU cannot start programs, gain privileges or change
//! scheduling, and obsolete system calls are refused. Nothing the project
//! asks of QEMU needs those: the descriptor goes to a file through a
//! migration channel, taps are opened by name, no helper is spawned. Given
//! a [`QemuUser`] ([`VmSpec::run_as`]), QEMU also drops to that user once
//! the VM is set up ([`SANDBOX_DROPPING`] says how the two fit).

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::guest::GuestImage;
use crate::process::QemuProcess;
use crate::user::QemuUser;

/// QEMU's `-sandbox` setting for a QEMU that stays root: its seccomp filter
/// with every optional deny list on.
const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// QEMU's `-sandbox` setting for a QEMU that drops to an unprivileged user
/// (`-run-with user=`): as [`SANDBOX`] but `elevateprivileges=allow`.
///
/// QEMU installs its filter while it parses its options and drops to the
/// user only at the end of its set-up, through `setgid`, `setgroups` and
/// `setuid`: exactly the calls `elevateprivileges=deny` (and `children`,
/// which adds no-new-privs to it) makes fatal, so QEMU 10 dies of SIGSYS
/// (`Bad system call`) before the guest starts. `allow` is the only
/// setting QEMU takes with `-run-with user=`, and it gives a guest nothing:
/// after the drop QEMU's real, effective and saved ids are the user's and
/// it holds no capability, so a `set*id` call can no longer raise it; the
/// only other way up, exec of a set-user-ID program, is closed twice, by
/// `spawn=deny` and by the no-new-privs bit our own filter
/// (`no_hugepage`) sets before exec.
const SANDBOX_DROPPING: &str = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny";

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

/// How the VM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// SeaBIOS (QEMU's default firmware), from the first disk's bootloader.
    Bios,
    /// UEFI (OVMF): its code read-only and shared, and this VM's own
    /// variable store (boot entries, Secure Boot keys), written by the guest.
    Uefi {
        /// OVMF's code, e.g. `/usr/share/OVMF/OVMF_CODE_4M.fd`.
        code: PathBuf,
        /// This VM's copy of the variable store template.
        vars: PathBuf,
    },
    /// Direct kernel boot: the host's kernel and initramfs, with
    /// `console=ttyS0 panic=-1` and `args` on the kernel command line.
    Kernel {
        /// The kernel and initramfs.
        image: GuestImage,
        /// Kernel arguments after ours (the test guest's `jt.*`).
        args: String,
    },
}

/// Where Debian's `ovmf` package puts OVMF's code: the default of both
/// daemons' `ovmf_code`.
pub fn default_ovmf_code() -> PathBuf {
    "/usr/share/OVMF/OVMF_CODE_4M.fd".into()
}

/// Where Debian's `ovmf` package puts the variable store template: the
/// default of both daemons' `ovmf_vars`.
pub fn default_ovmf_vars() -> PathBuf {
    "/usr/share/OVMF/OVMF_VARS_4M.fd".into()
}

/// The VM's screen and input, and who may see them.
///
/// Every variant but [`Display::None`] gives the guest the same devices (a
/// standard VGA, USB keyboard and tablet, an HD Audio sound card whose
/// sound goes to the SPICE client), so a VM moves between a desk and
/// a server with its screen; only the SPICE server in front of it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Display {
    /// No display device and no USB input (the headless test guest).
    None,
    /// SPICE on a Unix socket, for a viewer on this host (the desk).
    LocalSpice {
        /// The socket `remote-viewer spice+unix://...` opens.
        socket: PathBuf,
    },
    /// SPICE on a TCP port, for a remote viewer that knows the ticket.
    RemoteSpice {
        /// The address to listen on.
        addr: IpAddr,
        /// The port.
        port: u16,
        /// A file holding the ticket (the password), read by QEMU at start.
        ticket_file: PathBuf,
    },
}

/// Everything needed to start one QEMU with our VM profile.
///
/// QEMU's files (QMP socket, serial log, its own output) go into a run
/// directory; the RAM file is named separately because it outlives runs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    boot: Boot,
    ram_file: PathBuf,
    run_dir: PathBuf,
    memory_mib: u64,
    vcpus: u32,
    accel: Accel,
    cpu: String,
    display: Display,
    reboot_ends_qemu: bool,
    incoming_defer: bool,
    free_page_reporting: bool,
    run_as: Option<QemuUser>,
    extra_args: Vec<OsString>,
}

impl VmSpec {
    /// A 256 MiB, one-vCPU TCG VM booting `guest` directly (no display),
    /// with its RAM in `ram_file` (created by QEMU if missing, reused as-is
    /// if present) and its other files in `run_dir`. A reboot inside the
    /// guest ends QEMU (see [`VmSpec::reboot_ends_qemu`]).
    pub fn new(guest: &GuestImage, ram_file: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> VmSpec {
        VmSpec::booting(Boot::Kernel { image: guest.clone(), args: String::new() }, ram_file, run_dir)
    }

    /// As [`VmSpec::new`], booting as `boot` says.
    pub fn booting(boot: Boot, ram_file: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            boot,
            ram_file: ram_file.into(),
            run_dir: run_dir.into(),
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            // `max` works under both accelerators. Migration between
            // different hosts needs a named model both of them support.
            cpu: "max".to_owned(),
            display: Display::None,
            reboot_ends_qemu: true,
            incoming_defer: false,
            free_page_reporting: true,
            run_as: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets the guest RAM size. A RAM file reused from an earlier run must
    /// have been made with the same size.
    pub fn memory_mib(mut self, mib: u64) -> VmSpec {
        self.memory_mib = mib;
        self
    }

    /// Sets the number of vCPUs.
    pub fn vcpus(mut self, vcpus: u32) -> VmSpec {
        self.vcpus = vcpus.max(1);
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

    /// Sets the display (none by default).
    pub fn display(mut self, display: Display) -> VmSpec {
        self.display = display;
        self
    }

    /// Whether a reboot inside the guest ends QEMU (`-no-reboot`, the
    /// default: a panicking test guest fails fast) or resets the VM in
    /// place, as a PC would (`false`: what users' VMs get; a poweroff
    /// inside the guest then leaves QEMU in runstate `shutdown`).
    pub fn reboot_ends_qemu(mut self, ends: bool) -> VmSpec {
        self.reboot_ends_qemu = ends;
        self
    }

    /// Adds kernel command line arguments after our console settings, e.g.
    /// `jt.mode=shell` or `jt.fill=64` for the test guest. Only a VM that
    /// boots its kernel directly has them.
    pub fn kernel_args(mut self, extra: &str) -> VmSpec {
        if let Boot::Kernel { args, .. } = &mut self.boot {
            extra.clone_into(args);
        }
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

    /// Has QEMU drop to `user` once it has opened everything the VM needs
    /// and before the guest runs (see `user`); `None` (the default): QEMU
    /// runs as the caller.
    pub fn run_as(mut self, user: Option<QemuUser>) -> VmSpec {
        self.run_as = user;
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
        VmSpec::qmp_socket_in(&self.run_dir)
    }

    pub(crate) fn qmp_socket_in(run_dir: &Path) -> PathBuf {
        run_dir.join("qmp.sock")
    }

    /// The socket of the guest agent's channel (see [`crate::GuestAgent`]).
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir.join("qga.sock")
    }

    /// The socket of the guest's serial console, for an interactive user.
    pub fn console_socket(&self) -> PathBuf {
        self.run_dir.join("console.sock")
    }

    /// The file QEMU writes the guest's serial console to, appending: a
    /// reboot inside the guest keeps the earlier boot's lines. Each start of
    /// QEMU first moves the previous run's log to `serial.log.1` (and so on,
    /// see [`crate::SerialLog::rotate`]).
    pub fn serial_log(&self) -> PathBuf {
        VmSpec::serial_log_in(&self.run_dir)
    }

    pub(crate) fn serial_log_in(run_dir: &Path) -> PathBuf {
        run_dir.join("serial.log")
    }

    /// The file QEMU writes its process id to (how a restarted daemon finds it).
    pub fn pid_file(&self) -> PathBuf {
        VmSpec::pid_file_in(&self.run_dir)
    }

    pub(crate) fn pid_file_in(run_dir: &Path) -> PathBuf {
        run_dir.join("qemu.pid")
    }

    /// The file QEMU's own stdout and stderr go to.
    pub fn output_log(&self) -> PathBuf {
        VmSpec::output_log_in(&self.run_dir)
    }

    pub(crate) fn output_log_in(run_dir: &Path) -> PathBuf {
        run_dir.join("qemu.log")
    }

    /// The full QEMU command line, without the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mib = self.memory_mib;
        let sandbox = if self.run_as.is_some() { SANDBOX_DROPPING } else { SANDBOX };
        let mut args: Vec<OsString> =
            ["-nodefaults", "-no-user-config", "-sandbox", sandbox, "-machine", "q35,memory-backend=ram0"]
                .iter()
                .map(OsString::from)
                .collect();
        if let Some(user) = &self.run_as {
            args.extend(["-run-with".into(), user.run_with().into()]);
        }
        if self.reboot_ends_qemu {
            // A guest panic (panic=-1 reboots at once) ends QEMU instead of
            // looping, so a broken test guest fails fast.
            args.push("-no-reboot".into());
        } else {
            // A poweroff inside the guest stops it and QEMU stays (runstate
            // `shutdown`): its owner notices, and on a server can still
            // send the VM's state home before ending QEMU.
            args.extend(["-action".into(), "shutdown=pause".into()]);
        }
        args.extend(
            ["-accel", self.accel.name(), "-cpu", &self.cpu, "-smp", &self.vcpus.to_string(), "-m", &format!("{mib}M")]
                .map(OsString::from),
        );
        args.push("-object".into());
        args.push(option_with_path(
            &format!("memory-backend-file,id=ram0,size={mib}M,share=on,mem-path="),
            &self.ram_file,
        ));
        args.extend(self.boot_args());
        args.extend(self.display_args());
        // The serial console: a socket for `jettison console`, logged to a
        // file whether or not anyone is connected.
        args.push("-chardev".into());
        let mut console = option_with_path("socket,id=ser0,server=on,wait=off,path=", &self.console_socket());
        console.push(option_with_path(",logappend=on,logfile=", &self.serial_log()));
        args.push(console);
        args.extend(["-serial".into(), "chardev:ser0".into()]);
        // The -chardev/-mon spelling of `-qmp unix:...`: its path is a plain
        // option value, so a comma in it can be escaped.
        args.push("-chardev".into());
        let mut socket = option_with_path("socket,id=qmp0,path=", &self.qmp_socket());
        socket.push(",server=on,wait=off");
        args.push(socket);
        args.extend(["-mon".into(), "chardev=qmp0,mode=control".into()]);
        // The guest agent's channel: the daemon sets the guest's clock
        // through it after every move.
        args.extend(["-device".into(), "virtio-serial-pci,id=vser0".into(), "-chardev".into()]);
        args.push(option_with_path("socket,id=qga0,server=on,wait=off,path=", &self.agent_socket()));
        args.extend(["-device".into(), AGENT_PORT.into()]);
        if self.free_page_reporting {
            args.extend(["-device".into(), BALLOON_DEVICE.into()]);
        }
        if self.incoming_defer {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn boot_args(&self) -> Vec<OsString> {
        match &self.boot {
            Boot::Bios => Vec::new(),
            Boot::Uefi { code, vars } => {
                // The variable store read-write at once, as the disk (see
                // `DiskBackend::qemu_args`): not reopened by path at `cont`.
                let mut vars_drive = option_with_path("if=pflash,unit=1,format=raw,file=", vars);
                vars_drive.push(",auto-read-only=off");
                vec![
                    "-drive".into(),
                    option_with_path("if=pflash,unit=0,format=raw,readonly=on,file=", code),
                    "-drive".into(),
                    vars_drive,
                ]
            }
            Boot::Kernel { image, args } => {
                let mut append = "console=ttyS0 panic=-1".to_owned();
                if !args.is_empty() {
                    append.push(' ');
                    append.push_str(args);
                }
                vec![
                    "-kernel".into(),
                    image.kernel.clone().into_os_string(),
                    "-initrd".into(),
                    image.initrd.clone().into_os_string(),
                    "-append".into(),
                    append.into(),
                ]
            }
        }
    }

    fn display_args(&self) -> Vec<OsString> {
        let spice = match &self.display {
            Display::None => return ["-display", "none", "-vga", "none"].map(OsString::from).to_vec(),
            Display::LocalSpice { socket } => {
                vec!["-spice".into(), option_with_path("unix=on,disable-ticketing=on,addr=", socket)]
            }
            Display::RemoteSpice { addr, port, ticket_file } => vec![
                "-object".into(),
                option_with_path("secret,id=spice-ticket,format=raw,file=", ticket_file),
                "-spice".into(),
                format!("addr={addr},port={port},password-secret=spice-ticket").into(),
            ],
        };
        let mut args: Vec<OsString> = ["-display", "none", "-vga", "none"].map(OsString::from).to_vec();
        for device in DISPLAY_DEVICES {
            args.extend(["-device".into(), (*device).into()]);
        }
        args.extend(spice);
        args.extend(["-audiodev".into(), AUDIO_BACKEND.into()]);
        for device in SOUND_DEVICES {
            args.extend(["-device".into(), (*device).into()]);
        }
        args
    }

    /// Starts QEMU and returns once its QMP socket exists.
    ///
    /// # Errors
    /// [`QemuError::File`] if the run directory or output log cannot be made,
    /// [`QemuError::Spawn`] if QEMU cannot run, [`QemuError::Exited`] with QEMU's
    /// output if it quits during start-up (e.g. a bad argument).
    ///
    /// [`QemuError::File`]: crate::QemuError::File
    /// [`QemuError::Spawn`]: crate::QemuError::Spawn
    /// [`QemuError::Exited`]: crate::QemuError::Exited
    pub fn spawn(&self) -> Result<QemuProcess> {
        QemuProcess::start(self)
    }
}

/// The screen and input devices of a VM with a display: a standard VGA
/// (its video RAM travels in the descriptor, see `bench/RESULTS.md`), and a
/// USB keyboard and tablet (absolute pointer: the viewer's cursor is the
/// guest's) on an xHCI controller. Fixed ids keep their device state paths
/// stable across hosts.
const DISPLAY_DEVICES: &[&str] =
    &["VGA,id=video0", "qemu-xhci,id=usb0", "usb-kbd,id=kbd0,bus=usb0.0", "usb-tablet,id=tablet0,bus=usb0.0"];

/// Where the guest's sound goes: to the SPICE client, beside its screen.
/// QEMU runs as a system service that outlives the desk's session, so it
/// cannot play into that session's PipeWire or PulseAudio; the viewer
/// (`remote-viewer`) is the session's own program and plays it there. On
/// the server the remote console's viewer gets it the same way.
const AUDIO_BACKEND: &str = "spice,id=snd0";

/// The sound card of a VM with a display: an ICH9 HD Audio controller
/// with a line-out and line-in codec, which every desktop OS drives
/// (virtio-sound would be lighter but QEMU 10 refuses to migrate it). Its
/// fixed PCI address (00:1b.0, where a real ICH9 has it) keeps the other
/// devices where they were before it existed, so a descriptor saved
/// without it (an older release's checkpoint) still loads: QEMU leaves a
/// device the stream does not mention in its reset state. It adds about
/// 23 KiB to the descriptor (`bench/RESULTS.md`).
const SOUND_DEVICES: &[&str] =
    &["ich9-intel-hda,id=sound0,addr=0x1b", "hda-duplex,id=sound0-codec0,bus=sound0.0,audiodev=snd0"];

/// The guest agent's port on the virtio-serial bus, under the name
/// `qemu-ga` looks for.
const AGENT_PORT: &str = "virtserialport,id=qga-port,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0";

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
        assert!(
            line.contains(
                "-chardev socket,id=ser0,server=on,wait=off,path=/run/vm/console.sock,\
                 logappend=on,logfile=/run/vm/serial.log -serial chardev:ser0"
            ),
            "{line}"
        );
        assert!(line.contains("-chardev socket,id=qga0,server=on,wait=off,path=/run/vm/qga.sock"), "{line}");
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
        assert!(line.contains("-accel tcg -cpu max -smp 1"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
        assert!(line.contains("-display none -vga none"), "{line}");
        assert!(!line.contains("-device VGA"), "{line}");
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
    fn firmware_boot_has_no_kernel_and_its_own_vars() {
        let uefi = Boot::Uefi { code: "/fw/CODE.fd".into(), vars: "/vm/vars,1.fd".into() };
        let line = joined(
            &VmSpec::booting(uefi, "/vm/ram,1", "/run/vm").kernel_args("ignored").vcpus(4).reboot_ends_qemu(false),
        );
        assert!(!line.contains("-kernel") && !line.contains("ignored") && !line.contains("-no-reboot"), "{line}");
        assert!(line.contains("-drive if=pflash,unit=0,format=raw,readonly=on,file=/fw/CODE.fd"), "{line}");
        assert!(line.contains("-drive if=pflash,unit=1,format=raw,file=/vm/vars,,1.fd,auto-read-only=off"), "{line}");
        assert!(line.contains("-smp 4") && line.contains("-action shutdown=pause"), "{line}");
        let bios = joined(&VmSpec::booting(Boot::Bios, "/vm/ram", "/run/vm"));
        assert!(!bios.contains("-kernel") && !bios.contains("pflash"), "{bios}");
    }

    #[test]
    fn a_display_is_the_same_devices_behind_either_spice() {
        let local = joined(&spec().display(Display::LocalSpice { socket: "/run/vm/spice.sock".into() }));
        let remote = joined(&spec().display(Display::RemoteSpice {
            addr: "10.0.0.1".parse().unwrap(),
            port: 5930,
            ticket_file: "/run/vm/ticket".into(),
        }));
        for line in [&local, &remote] {
            assert!(line.contains("-device VGA,id=video0 -device qemu-xhci,id=usb0"), "{line}");
            assert!(line.contains("-device usb-tablet,id=tablet0,bus=usb0.0"), "{line}");
        }
        assert!(local.contains("-spice unix=on,disable-ticketing=on,addr=/run/vm/spice.sock"), "{local}");
        assert!(remote.contains("-object secret,id=spice-ticket,format=raw,file=/run/vm/ticket"), "{remote}");
        assert!(remote.contains("-spice addr=10.0.0.1,port=5930,password-secret=spice-ticket"), "{remote}");
        for line in [&local, &remote] {
            assert!(
                line.contains(
                    "-audiodev spice,id=snd0 -device ich9-intel-hda,id=sound0,addr=0x1b \
                     -device hda-duplex,id=sound0-codec0,bus=sound0.0,audiodev=snd0"
                ),
                "{line}"
            );
        }
        let headless = joined(&spec());
        assert!(!headless.contains("-audiodev") && !headless.contains("intel-hda"), "{headless}");
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
    fn a_qemu_that_drops_to_a_user_allows_the_drop_in_its_sandbox() {
        let root = joined(&spec());
        assert!(root.contains(&format!("-sandbox {SANDBOX}")) && !root.contains("-run-with"), "{root}");
        let nobody = QemuUser::lookup("nobody").expect("nobody exists on Debian");
        let dropping = joined(&spec().run_as(Some(nobody)));
        assert!(dropping.contains(&format!("-sandbox {SANDBOX_DROPPING} ")), "{dropping}");
        assert!(dropping.contains("-run-with user=65534:65534"), "{dropping}");
        assert_eq!(SANDBOX_DROPPING.replace("elevateprivileges=allow", "elevateprivileges=deny"), SANDBOX);
    }

    #[test]
    fn option_paths_double_commas_only() {
        assert_eq!(option_with_path("path=", Path::new("/a,b,,c")), OsString::from("path=/a,,b,,,,c"));
        assert_eq!(option_with_path("path=", Path::new("/plain")), OsString::from("path=/plain"));
    }
}
