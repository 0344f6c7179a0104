//! One VM of the desktop: where it is, and its QEMU, tap and servers here.
//!
//! Files, per VM:
//!
//! ```text
//! <state_dir>/<vm>/ram                 the RAM file (memory checkpoint while consolidated)
//! <state_dir>/<vm>/checkpoint.state    the descriptor saved at consolidation (the device checkpoint)
//! <state_dir>/<vm>/placement.json      where the VM is: desktop or server, and since when
//! <state_dir>/<vm>/staging/...         a reintegration being received (see `reintegrate`)
//! <state_dir>/<vm>/wait-gaps.json      the gaps the adaptive wait learned in its stays (`power_slot`)
//! <run_dir>/<vm>/                      QEMU's QMP socket, serial log and output; while the VM
//!                                       is on the server, memserv.events and diskserv.events
//! ```
//!
//! The disk images are where the configuration says (one or more, in the
//! order the guest sees them). While the VM is on the server, the RAM file
//! and the disk images are not written by anyone here: they are what the VM
//! returns to if the server loses it. One diskserv serves all of them on
//! the VM's `diskserv_port`, each as its own export
//! ([`daemon_protocol::disk_export`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use daemon_protocol::{disk_export, CpuModel, Firmware, MachineProfile};
use identifiers::VmName;
use image_server::{ServeConfig, StopHandle};
use qemu_driver::{
    announce, nic_args, resume, save_device_state, Accel, Boot, DiskBackend, DiskFormat, DiskView, Display, GuestImage,
    QemuProcess, QemuUser, Qmp, Resumed, Tap, ViewAccess, VmLoadSample, VmLoadWindow, VmSpec,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use wire::{Credentials, Service};

use crate::config::{DesktopConfig, FirmwareChoice, VmDefinition};
use crate::error::DesktopError;

/// Where the VM is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Placement {
    /// Here, running (or to be started when the daemon starts).
    Desktop,
    /// Here, powered off (by its guest, `shutdown` or `destroy`); started
    /// again by `jettison start` only.
    Off,
    /// Here, saved to its checkpoint at a host shutdown; resumed from it
    /// when the daemon starts.
    Saved,
    /// Consolidated on a server since `since` (seconds since the epoch).
    Server {
        /// When it left.
        since: u64,
        /// The server of the fleet that holds it; none: the configured
        /// `server` (and every placement file written before fleets).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fleet: Option<FleetServer>,
        /// In a fleet, the stay's fencing token (the revision of the
        /// server's claim in etcd): memserv and diskserv serve only it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<u64>,
    },
}

/// A server of the fleet, as the placement chose it: its name (the one its
/// key is enrolled under here) and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FleetServer {
    /// Its name.
    pub name: identifiers::HostName,
    /// Its daemon's address.
    pub address: std::net::SocketAddr,
}

impl Placement {
    /// The fleet server holding it, when one does (see [`Placement::Server`]).
    pub fn fleet_server(&self) -> Option<&FleetServer> {
        match self {
            Placement::Server { fleet, .. } => fleet.as_ref(),
            _ => None,
        }
    }

    /// Whether it is on a server, and on `server` if named (outside a
    /// fleet every VM away is on the configured server).
    pub fn is_on(&self, server: Option<&identifiers::HostName>) -> bool {
        match (self, server) {
            (Placement::Server { fleet: Some(on), .. }, Some(server)) => on.name == *server,
            (Placement::Server { .. }, _) => true,
            _ => false,
        }
    }

    /// The stay's fencing token, in a fleet (see [`Placement::Server`]).
    pub fn fence(&self) -> Option<u64> {
        match self {
            Placement::Server { fence, .. } => *fence,
            _ => None,
        }
    }
}

/// QEMU and its tap.
#[derive(Debug)]
struct Running {
    qmp: Qmp,
    qemu: QemuProcess,
    tap: Tap,
}

/// memserv and diskserv serving the checkpoint.
#[derive(Debug)]
struct Serving {
    stops: Vec<StopHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The disks diskserv reads (declared last: dropped after the threads stop).
    _disks: Vec<DiskView>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.stop();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A VM of this desktop.
#[derive(Debug)]
pub struct LocalVm {
    config: VmDefinition,
    boot: Boot,
    accel: Accel,
    cpu_model: CpuModel,
    /// The variable store template a UEFI VM's own store starts as.
    ovmf_vars_template: PathBuf,
    /// Why the last start failed, for `status`.
    start_error: Option<String>,
    /// The group that may open its screen.
    viewer_gid: Option<nix::unistd::Gid>,
    /// The user its QEMU drops to; none: root.
    qemu_user: Option<QemuUser>,
    bridge: String,
    dir: PathBuf,
    run_dir: PathBuf,
    placement: Placement,
    running: Option<Running>,
    serving: Option<Serving>,
    window: VmLoadWindow,
}

impl LocalVm {
    /// The VM `config` of `desktop`, where its placement file says it is
    /// (on the desktop if it has none). Nothing is started.
    ///
    /// # Errors
    /// [`DesktopError::File`] when its directory cannot be made.
    pub fn new(desktop: &DesktopConfig, config: &VmDefinition) -> Result<LocalVm, DesktopError> {
        let dir = desktop.state_dir.join(config.name.as_str());
        std::fs::create_dir_all(&dir).map_err(|source| DesktopError::File {
            vm: config.name.clone(),
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let placement = std::fs::read(dir.join("placement.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Placement::Desktop);
        let boot = match config.firmware(desktop) {
            FirmwareChoice::Bios => Boot::Bios,
            FirmwareChoice::Uefi => Boot::Uefi { code: desktop.ovmf_code.clone(), vars: dir.join("efivars.fd") },
            FirmwareChoice::Kernel => Boot::Kernel {
                // The configuration was checked at load: a kernel VM has both.
                image: GuestImage {
                    kernel: desktop.kernel.clone().unwrap_or_default(),
                    initrd: desktop.initrd.clone().unwrap_or_default(),
                },
                args: config.kernel_args.to_string(),
            },
        };
        Ok(LocalVm {
            config: config.clone(),
            boot,
            accel: desktop.accel(),
            cpu_model: desktop.cpu_model(),
            ovmf_vars_template: desktop.ovmf_vars.clone(),
            start_error: None,
            viewer_gid: desktop.viewer_gid(),
            qemu_user: desktop.qemu_user(),
            bridge: desktop.bridge.clone(),
            dir,
            run_dir: desktop.run_dir.join(config.name.as_str()),
            placement,
            running: None,
            serving: None,
            window: VmLoadWindow::new(desktop.idle.window),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &VmDefinition {
        &self.config
    }

    /// Its name.
    pub fn name(&self) -> &VmName {
        &self.config.name
    }

    /// Where it is.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The RAM file.
    pub fn ram_file(&self) -> PathBuf {
        self.dir.join("ram")
    }

    /// The descriptor saved when it left (its device checkpoint).
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.state")
    }

    /// Its state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether QEMU runs it here.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Records where it is, durably.
    ///
    /// # Errors
    /// [`DesktopError::File`] naming the file.
    pub fn set_placement(&mut self, placement: Placement) -> Result<(), DesktopError> {
        let path = self.dir.join("placement.json");
        let text = serde_json::to_vec(&placement).expect("a placement serialises");
        durable_file::replace_file(&path, &[&text]).map_err(|source| DesktopError::File {
            vm: self.name().clone(),
            action: "record where it is in",
            path,
            source,
        })?;
        self.placement = placement;
        Ok(())
    }

    /// Its virtual hardware, as the server must run it.
    ///
    /// # Errors
    /// [`DesktopError::File`] when the kernel or initramfs of a VM that
    /// boots them cannot be read.
    pub fn profile(&self) -> Result<MachineProfile, DesktopError> {
        let firmware = match &self.boot {
            Boot::Bios => Firmware::Bios,
            Boot::Uefi { .. } => Firmware::Uefi,
            Boot::Kernel { image, .. } => {
                let digest = |path: &Path| {
                    daemon_protocol::file_sha256(path).map_err(|source| DesktopError::File {
                        vm: self.name().clone(),
                        action: "read",
                        path: path.to_owned(),
                        source,
                    })
                };
                Firmware::Kernel {
                    kernel_sha256: digest(&image.kernel)?,
                    initrd_sha256: digest(&image.initrd)?,
                    args: self.config.kernel_args.clone(),
                }
            }
        };
        Ok(MachineProfile {
            memory_mib: self.config.memory_mib,
            vcpus: self.config.vcpus,
            cpu_model: self.cpu_model.clone(),
            firmware,
            display: self.config.display,
        })
    }

    /// The guest-visible sizes of its disks, in order (for a qcow2 image,
    /// not the file's size): QEMU's figures while it runs, the images'
    /// otherwise.
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] when neither can say, or QEMU shows another
    /// number of disks than the configuration names.
    pub fn disk_sizes(&mut self) -> Result<Vec<u64>, DesktopError> {
        let disks = self.config.disks();
        let sizes = match self.running.as_mut() {
            Some(running) => qemu_driver::disk_virtual_sizes(&mut running.qmp).and_then(|sizes| {
                if sizes.len() == disks.len() {
                    Ok(sizes)
                } else {
                    Err(qemu_driver::QemuError::QmpProtocol {
                        socket: running.qmp.socket().to_owned(),
                        detail: format!(
                            "QEMU shows {} virtio disks, the configuration names {}",
                            sizes.len(),
                            disks.len()
                        ),
                    })
                }
            }),
            None => disks.iter().map(|disk| qemu_driver::virtual_size(&disk.path, disk.format)).collect(),
        };
        sizes.map_err(|source| DesktopError::Qemu {
            vm: self.config.name.clone(),
            action: "measure its disks",
            source: Box::new(source),
        })
    }

    /// Its disks, in order, as raw files for as long as the result lives:
    /// each image itself when it is raw, else a view of its guest-visible
    /// content through QEMU's block layer (read-only while it is served,
    /// writable while a reintegration writes its dirty blocks back).
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] when a view cannot be made (those made
    /// already are closed).
    pub fn raw_disks(&self, access: ViewAccess) -> Result<Vec<DiskView>, DesktopError> {
        let disks = self.config.disks();
        let mut views = Vec::with_capacity(disks.len());
        for (index, disk) in disks.iter().enumerate() {
            views.push(raw_disk(&self.config.name, index, &disk.path, disk.format, &self.run_dir, access)?);
        }
        Ok(views)
    }

    /// The SPICE socket a viewer on this desktop opens, if it has a screen.
    pub fn spice_socket(&self) -> Option<PathBuf> {
        self.config.display.then(|| self.run_dir.join("spice.sock"))
    }

    /// The guest's serial console socket.
    pub fn console_socket(&self) -> PathBuf {
        self.spec().console_socket()
    }

    fn spec(&self) -> VmSpec {
        let display = match self.spice_socket() {
            Some(socket) => Display::LocalSpice { socket },
            None => Display::None,
        };
        VmSpec::booting(self.boot.clone(), self.ram_file(), &self.run_dir)
            .memory_mib(self.config.memory_mib)
            .vcpus(self.config.vcpus)
            .accel(self.accel)
            .cpu(self.cpu_model.as_str())
            .display(display)
            .reboot_ends_qemu(false)
            .run_as(self.qemu_user.clone())
            .extra_args(
                self.config
                    .disks()
                    .into_iter()
                    .flat_map(|disk| DiskBackend::Image { path: disk.path, format: disk.format }.qemu_args()),
            )
    }

    /// Starts QEMU with `start` on our profile plus the NIC on a fresh tap,
    /// and keeps it as the running VM with an empty idleness window. A
    /// failure is kept for `status`.
    fn start(
        &mut self,
        start: impl FnOnce(VmSpec) -> Result<(QemuProcess, Qmp), DesktopError>,
    ) -> Result<(), DesktopError> {
        let started = self.try_start(start);
        self.start_error = started.as_ref().err().map(|e| wire::chain(e));
        started
    }

    fn try_start(
        &mut self,
        start: impl FnOnce(VmSpec) -> Result<(QemuProcess, Qmp), DesktopError>,
    ) -> Result<(), DesktopError> {
        self.make_efi_vars()?;
        let tap = Tap::create(&self.config.name.tap_name(), &self.bridge).map_err(|source| DesktopError::Qemu {
            vm: self.config.name.clone(),
            action: "make its tap device",
            source: Box::new(source),
        })?;
        let (qemu, qmp) = start(self.spec().extra_args(nic_args(tap.name(), self.config.mac)))?;
        self.running = Some(Running { qmp, qemu, tap });
        self.let_viewers_in();
        self.window = VmLoadWindow::new(self.window.length());
        Ok(())
    }

    /// Lets `viewer_group` open the screen's socket (QEMU makes it root's):
    /// the run directory and the socket become the group's. A failure is
    /// logged; the VM runs on, its screen root's only.
    fn let_viewers_in(&self) {
        let (Some(gid), Some(socket)) = (self.viewer_gid, self.spice_socket()) else { return };
        if let Err(e) = grant_to_group(&self.run_dir, gid, 0o750).and_then(|()| grant_to_group(&socket, gid, 0o660)) {
            tracing::warn!(vm = %self.name(), "cannot let the viewer group open {}: {e}", socket.display());
        }
    }

    /// A UEFI VM's own variable store, copied from the template at its
    /// first start.
    fn make_efi_vars(&self) -> Result<(), DesktopError> {
        let Boot::Uefi { vars, .. } = &self.boot else { return Ok(()) };
        if vars.exists() {
            return Ok(());
        }
        let file_error = |path: &Path| {
            let (vm, path) = (self.name().clone(), path.to_owned());
            move |source| DesktopError::File { vm, action: "make its UEFI variable store from", path, source }
        };
        let template = std::fs::read(&self.ovmf_vars_template).map_err(file_error(&self.ovmf_vars_template))?;
        durable_file::replace_file(vars, &[&template]).map_err(file_error(vars))
    }

    /// Takes over the QEMU an earlier daemon left running for this VM, if
    /// there is one; `true` if so.
    pub fn attach(&mut self) -> bool {
        let spec = self.spec();
        let Some(mut qemu) = QemuProcess::attach(&spec) else { return false };
        match qemu.connect_qmp() {
            Ok(qmp) => {
                let tap = Tap::adopt(&self.config.name.tap_name());
                self.running = Some(Running { qmp, qemu, tap });
                self.window = VmLoadWindow::new(self.window.length());
                self.start_error = None;
                tracing::info!(vm = %self.name(), pid = self.running.as_ref().map(|r| r.qemu.pid()), "took over its running QEMU");
                true
            }
            Err(e) => {
                // Our QEMU, but it does not answer: leave it alone rather
                // than start a second VM on the same disk.
                self.start_error = Some(format!("its QEMU (pid {}) runs but does not answer QMP: {e}", qemu.pid()));
                qemu.leave_running();
                tracing::error!(vm = %self.name(), "{}", self.start_error.as_deref().unwrap_or_default());
                true
            }
        }
    }

    /// Boots it from its disk (a fresh start), or takes over its QEMU if
    /// an earlier daemon left it running.
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] saying what could not start, with QEMU's own
    /// words.
    pub fn boot(&mut self) -> Result<(), DesktopError> {
        if self.running.is_some() || self.attach() {
            return Ok(());
        }
        let name = self.name().clone();
        let qemu_error = |action| {
            let vm = name.clone();
            move |source| DesktopError::Qemu { vm, action, source: Box::new(source) }
        };
        self.start(|spec| {
            let mut qemu = spec.spawn().map_err(qemu_error("boot it"))?;
            // A QEMU that fails at once (a bad kernel, firmware or disk) is
            // caught here, with its own words, rather than by the next sample.
            let qmp = qemu.connect_qmp().and_then(|mut qmp| qmp.run_state().map(|_| qmp));
            let qmp = qmp.map_err(|e| qemu.explain(e)).map_err(qemu_error("boot it"))?;
            Ok((qemu, qmp))
        })?;
        tracing::info!(vm = %name, "booted");
        Ok(())
    }

    /// Resumes it here from the descriptor `state` over its RAM file,
    /// announces its MAC and sets the guest's clock (and, for a guest
    /// `resumed` from an older state, resets its TCP connections).
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] saying what could not start.
    pub fn resume_from(&mut self, state: &Path, resumed: Resumed) -> Result<(), DesktopError> {
        self.serving = None;
        let name = self.name().clone();
        self.start(|spec| {
            let (qemu, mut qmp) = resume(spec, state).map_err(|source| DesktopError::Qemu {
                vm: name.clone(),
                action: "resume it from its checkpoint",
                source: Box::new(source),
            })?;
            if let Err(e) = announce(&mut qmp) {
                tracing::warn!(vm = %name, "cannot announce its MAC: {}", wire::chain(&e));
            }
            Ok((qemu, qmp))
        })?;
        qemu_driver::settle_guest_in_background(name.to_string(), self.spec().agent_socket(), resumed);
        Ok(())
    }

    /// Stops it, saves its descriptor as the checkpoint, and ends QEMU.
    /// Returns the descriptor's size.
    ///
    /// # Errors
    /// [`DesktopError::NotRunning`] or [`DesktopError::Qemu`]; on failure the VM is left running.
    pub fn stop_and_save(&mut self) -> Result<u64, DesktopError> {
        let vm = self.config.name.clone();
        let running = self.running.as_mut().ok_or_else(|| DesktopError::NotRunning { vm: vm.clone() })?;
        let bytes = save_device_state(&mut running.qmp, &self.dir.join("checkpoint.state"))
            .map_err(|source| DesktopError::Qemu { vm, action: "save its device state", source: Box::new(source) })?;
        self.running = None;
        Ok(bytes)
    }

    /// Serves the checkpoint: memserv for the RAM file, diskserv for the
    /// disks (one export each, on the one port); in a fleet only to a
    /// server presenting the stay's `fence`.
    ///
    /// # Errors
    /// [`DesktopError::Memserv`] or [`DesktopError::Diskserv`].
    pub fn serve(
        &mut self,
        ip: std::net::IpAddr,
        credentials: &Arc<Credentials>,
        fence: Option<u64>,
    ) -> Result<(), DesktopError> {
        if self.serving.is_some() {
            return Ok(());
        }
        // Each authenticated request is published on a local event socket,
        // which the power session follows to sleep between requests.
        let config = |port, service| ServeConfig {
            listen: std::net::SocketAddr::new(ip, port),
            credentials: Arc::clone(credentials),
            service,
            export: self.config.name.to_string(),
            events: Some(events_socket(&self.run_dir, service)),
            fence,
        };
        let memory = memserv::bind(&self.ram_file(), config(self.config.memserv_port, Service::Memory))
            .map_err(|source| DesktopError::Memserv { vm: self.name().clone(), source: Box::new(source) })?;
        let views = self.raw_disks(ViewAccess::ReadOnly)?;
        let diskserv_error = |source| DesktopError::Diskserv { vm: self.name().clone(), source: Box::new(source) };
        let mut disk = diskserv::bind(views[0].path(), config(self.config.diskserv_port, Service::Disk), 4096)
            .map_err(diskserv_error)?;
        for (index, view) in views.iter().enumerate().skip(1) {
            diskserv::add_disk(&mut disk, disk_export(self.name(), index), view.path(), 4096)
                .map_err(diskserv_error)?;
        }
        let mut serving = Serving { stops: Vec::new(), threads: Vec::new(), _disks: views };
        for server in [memory, disk] {
            serving.stops.push(server.stop_handle());
            let vm = self.config.name.clone();
            serving.threads.push(std::thread::spawn(move || {
                if let Err(e) = server.run() {
                    tracing::error!(vm = %vm, "a checkpoint server stopped: {}", wire::chain(&e));
                }
            }));
        }
        self.serving = Some(serving);
        Ok(())
    }

    /// Stops memserv and diskserv.
    pub fn stop_serving(&mut self) {
        self.serving = None;
    }

    /// Ends QEMU at once (the guest with it, as pulling the plug) and
    /// stops serving.
    pub fn shut_down(&mut self) {
        self.running = None;
        self.serving = None;
    }

    /// Stops serving and lets QEMU run on without this daemon: a later
    /// daemon takes it over ([`LocalVm::attach`]).
    pub fn leave_running(&mut self) {
        self.serving = None;
        if let Some(Running { mut qemu, tap, .. }) = self.running.take() {
            tap.keep();
            qemu.leave_running();
        }
    }

    /// Writes what its screen shows to `screenshot.png` (or `.ppm`) in its
    /// run directory, readable by `viewer_group`, and returns the file.
    ///
    /// # Errors
    /// [`DesktopError::NotRunning`] when QEMU does not run it here (on the
    /// server, ask the server's daemon); [`DesktopError::Qemu`] otherwise.
    pub fn screenshot(&mut self, png: bool) -> Result<PathBuf, DesktopError> {
        let vm = self.config.name.clone();
        let file = self.run_dir.join(if png { "screenshot.png" } else { "screenshot.ppm" });
        let running = self.running.as_mut().ok_or_else(|| DesktopError::NotRunning { vm: vm.clone() })?;
        qemu_driver::screendump(&mut running.qmp, &file).map_err(|source| DesktopError::Qemu {
            vm,
            action: "take a screenshot",
            source: Box::new(source),
        })?;
        if let Some(gid) = self.viewer_gid {
            if let Err(e) = grant_to_group(&file, gid, 0o640) {
                tracing::warn!(vm = %self.name(), "cannot let the viewer group read {}: {e}", file.display());
            }
        }
        Ok(file)
    }

    /// Why its last start failed, if it did.
    pub fn start_error(&self) -> Option<&str> {
        self.start_error.as_deref()
    }

    /// The QMP connection of the running VM.
    pub fn qmp(&mut self) -> Option<&mut Qmp> {
        self.running.as_mut().map(|r| &mut r.qmp)
    }

    /// Takes a CPU and I/O sample into the idleness window; notices a QEMU
    /// that died and a guest that powered off (QEMU is then ended and the
    /// VM stays off until `jettison start`).
    pub fn sample(&mut self) {
        let Some(running) = self.running.as_mut() else { return };
        if let Err(e) = running.qemu.check_running() {
            tracing::error!(vm = %self.config.name, "QEMU died: {e}");
            self.start_error = Some(format!("QEMU died: {}", wire::chain(&e)));
            self.running = None;
            return;
        }
        if matches!(running.qmp.run_state().as_deref(), Ok("shutdown")) {
            tracing::info!(vm = %self.config.name, "the guest powered off");
            self.power_off_recorded();
            return;
        }
        match VmLoadSample::take(running.qemu.pid(), &mut running.qmp) {
            Ok(sample) => self.window.push(sample),
            Err(e) => tracing::warn!(vm = %self.config.name, "cannot sample its activity: {e}"),
        }
    }

    /// Ends QEMU and records the VM as off.
    fn power_off_recorded(&mut self) {
        self.running = None;
        if let Err(e) = self.set_placement(Placement::Off) {
            tracing::error!(vm = %self.config.name, "{}", wire::chain(&e));
        }
    }

    /// Asks the guest to power off (the ACPI power button) and waits up to
    /// `timeout` for it to do so.
    ///
    /// # Errors
    /// [`DesktopError::NotRunning`]; [`DesktopError::ShutdownTimeout`] when
    /// the guest did not power off in time (it keeps running).
    pub fn shutdown_guest(&mut self, timeout: Duration) -> Result<(), DesktopError> {
        let vm = self.config.name.clone();
        let running = self.running.as_mut().ok_or_else(|| DesktopError::NotRunning { vm: vm.clone() })?;
        running.qmp.execute("system_powerdown", None).map_err(|source| DesktopError::Qemu {
            vm: vm.clone(),
            action: "press its power button",
            source: Box::new(source),
        })?;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let state = running.qmp.run_state();
            if matches!(state.as_deref(), Ok("shutdown")) || running.qemu.check_running().is_err() {
                self.power_off_recorded();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(DesktopError::ShutdownTimeout { vm, secs: timeout.as_secs() })
    }

    /// Ends its QEMU at once and records it as off (`jettison destroy`).
    ///
    /// # Errors
    /// [`DesktopError::NotRunning`] when QEMU does not run it here.
    pub fn destroy(&mut self) -> Result<(), DesktopError> {
        if self.running.is_none() {
            return Err(DesktopError::NotRunning { vm: self.config.name.clone() });
        }
        self.power_off_recorded();
        Ok(())
    }

    /// The idleness window.
    pub fn window(&self) -> &VmLoadWindow {
        &self.window
    }
}

/// The event socket on which the VM's `service` (memserv or diskserv)
/// publishes each authenticated request while the VM is on the server, in
/// the VM's run directory `vm_run_dir`.
pub(crate) fn events_socket(vm_run_dir: &Path, service: Service) -> PathBuf {
    vm_run_dir.join(match service {
        Service::Memory => "memserv.events",
        Service::Disk => "diskserv.events",
    })
}

/// Gives `path` to group `gid` with permissions `mode`.
///
/// # Errors
/// The chown or chmod failed.
fn grant_to_group(path: &Path, gid: nix::unistd::Gid, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `vm`'s disk number `index` (from 0), `image` in `format`, as a raw
/// file: the image itself when it is raw, else a view through QEMU's block
/// layer whose mount point is in `run_dir` (`disk-view.raw` for the first
/// disk, `disk-view.<index>.raw` for the others; see `qemu_driver::DiskView`).
///
/// # Errors
/// [`DesktopError::Qemu`] naming what failed (a VM still running on the
/// image, a missing backing file).
pub fn raw_disk(
    vm: &VmName,
    index: usize,
    image: &Path,
    format: DiskFormat,
    run_dir: &Path,
    access: ViewAccess,
) -> Result<DiskView, DesktopError> {
    let qemu_error = |source| DesktopError::Qemu {
        vm: vm.clone(),
        action: "open its disk image through QEMU's block layer",
        source: Box::new(source),
    };
    std::fs::create_dir_all(run_dir).map_err(|source| {
        qemu_error(qemu_driver::QemuError::File { action: "create", path: run_dir.to_owned(), source })
    })?;
    let mountpoint = if index == 0 { "disk-view.raw".to_owned() } else { format!("disk-view.{index}.raw") };
    DiskView::open(image, format, &run_dir.join(mountpoint), access).map_err(qemu_error)
}

/// Ends `vm`'s disk views, flushing what was written through each into its
/// image. Every view is closed, whatever happens to the others.
///
/// # Errors
/// [`DesktopError::Qemu`] for the first that failed: its flush or its stop
/// failed, and its image may lack the last writes.
pub fn close_disks(vm: &VmName, disks: Vec<DiskView>) -> Result<(), DesktopError> {
    let mut first = Ok(());
    for disk in disks {
        let closed = disk.close().map_err(|source| DesktopError::Qemu {
            vm: vm.clone(),
            action: "write its dirty blocks back into its disk image",
            source: Box::new(source),
        });
        if first.is_ok() {
            first = closed;
        }
    }
    first
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_remembers_its_fleet_server_and_old_files_still_read() {
        let old: Placement = serde_json::from_str(r#"{"on":"server","since":5}"#).unwrap();
        assert_eq!(old, Placement::Server { since: 5, fleet: None, fence: None });
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"on":"server","since":5}"#, "written as before");
        let server = FleetServer { name: "server2".parse().unwrap(), address: "10.0.0.2:7400".parse().unwrap() };
        let placed = Placement::Server { since: 6, fleet: Some(server.clone()), fence: Some(56) };
        let text = serde_json::to_string(&placed).unwrap();
        assert_eq!(serde_json::from_str::<Placement>(&text).unwrap(), placed);
        assert_eq!((placed.fleet_server(), placed.fence()), (Some(&server), Some(56)));
        let (server2, other) = ("server2".parse().unwrap(), "server3".parse().unwrap());
        assert!(placed.is_on(Some(&server2)) && placed.is_on(None) && !placed.is_on(Some(&other)));
        assert!(old.is_on(Some(&other)), "outside a fleet any server holds a VM that is away");
        assert!(!Placement::Desktop.is_on(None));
        assert!(
            serde_json::from_str::<Placement>(
                r#"{"on":"server","since":6,"fleet":{"name":"../x","address":"10.0.0.2:7400"}}"#
            )
            .is_err(),
            "a name that is no host name is refused"
        );
    }
}
