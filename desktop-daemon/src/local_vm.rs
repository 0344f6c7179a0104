//! One VM of the desktop: where it is, and its QEMU, tap and servers here.
//!
//! Files, per VM:
//!
//! ```text
//! <state_dir>/<vm>/ram                 the RAM file (memory checkpoint while consolidated)
//! <state_dir>/<vm>/checkpoint.state    the descriptor saved at consolidation (the device checkpoint)
//! <state_dir>/<vm>/placement.json      where the VM is: desktop or server, and since when
//! <state_dir>/<vm>/staging/...         a reintegration being received (see `reintegrate`)
//! <run_dir>/<vm>/                      QEMU's QMP socket, serial log and output
//! ```
//!
//! The disk image is where the configuration says. While the VM is on the
//! server, the RAM file and the disk image are not written by anyone here:
//! they are what the VM returns to if the server loses it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identifiers::VmName;
use image_server::{ServeConfig, StopHandle};
use qemu_driver::{
    announce, nic_args, resume, save_device_state, Accel, DiskBackend, GuestImage, QemuProcess, Qmp, Tap, VmLoadSample,
    VmLoadWindow, VmSpec,
};
use serde::{Deserialize, Serialize};
use wire::{Service, SharedKey};

use crate::config::{DesktopConfig, VmDefinition};
use crate::error::DesktopError;

/// Where the VM is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Placement {
    /// Running here.
    Desktop,
    /// Consolidated on the server since `since` (seconds since the epoch).
    Server {
        /// When it left.
        since: u64,
    },
}

/// QEMU and its tap.
#[derive(Debug)]
struct Running {
    qmp: Qmp,
    qemu: QemuProcess,
    _tap: Tap,
}

/// memserv and diskserv serving the checkpoint.
#[derive(Debug)]
struct Serving {
    stops: Vec<StopHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
    guest: GuestImage,
    accel: Accel,
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
        Ok(LocalVm {
            config: config.clone(),
            guest: GuestImage { kernel: desktop.kernel.clone(), initrd: desktop.initrd.clone() },
            accel: if desktop.accel == "kvm" { Accel::Kvm } else { Accel::Tcg },
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

    fn spec(&self) -> VmSpec {
        VmSpec::new(&self.guest, self.ram_file(), &self.run_dir)
            .memory_mib(self.config.memory_mib)
            .accel(self.accel)
            .kernel_args(self.config.kernel_args.as_str())
            .extra_args(DiskBackend::File(self.config.disk.clone()).qemu_args())
    }

    /// Starts QEMU with `start` on our profile plus the NIC on a fresh tap,
    /// and keeps it as the running VM with an empty idleness window.
    fn start(
        &mut self,
        start: impl FnOnce(VmSpec) -> Result<(QemuProcess, Qmp), DesktopError>,
    ) -> Result<(), DesktopError> {
        let tap = Tap::create(&self.config.name.tap_name(), &self.bridge).map_err(|source| DesktopError::Qemu {
            vm: self.config.name.clone(),
            action: "make its tap device",
            source: Box::new(source),
        })?;
        let (qemu, qmp) = start(self.spec().extra_args(nic_args(tap.name(), self.config.mac)))?;
        self.running = Some(Running { qmp, qemu, _tap: tap });
        self.window = VmLoadWindow::new(self.window.length());
        Ok(())
    }

    /// Boots it from its disk and kernel (a fresh start).
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] saying what could not start.
    pub fn boot(&mut self) -> Result<(), DesktopError> {
        let name = self.name().clone();
        let qemu_error = |action| {
            let vm = name.clone();
            move |source| DesktopError::Qemu { vm, action, source: Box::new(source) }
        };
        self.start(|spec| {
            let mut qemu = spec.spawn().map_err(qemu_error("boot it"))?;
            let qmp = qemu.connect_qmp().map_err(qemu_error("talk to its QEMU"))?;
            Ok((qemu, qmp))
        })?;
        tracing::info!(vm = %name, "booted");
        Ok(())
    }

    /// Resumes it here from the descriptor `state` over its RAM file, and
    /// announces its MAC.
    ///
    /// # Errors
    /// [`DesktopError::Qemu`] saying what could not start.
    pub fn resume_from(&mut self, state: &Path) -> Result<(), DesktopError> {
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
        })
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

    /// Serves the checkpoint: memserv for the RAM file, diskserv for the disk.
    ///
    /// # Errors
    /// [`DesktopError::Memserv`] or [`DesktopError::Diskserv`].
    pub fn serve(&mut self, ip: std::net::IpAddr, key: &SharedKey) -> Result<(), DesktopError> {
        if self.serving.is_some() {
            return Ok(());
        }
        let config = |port, service| ServeConfig {
            listen: std::net::SocketAddr::new(ip, port),
            key: key.clone(),
            service,
            export: self.config.name.to_string(),
            events: None,
        };
        let memory = memserv::bind(&self.ram_file(), config(self.config.memserv_port, Service::Memory))
            .map_err(|source| DesktopError::Memserv { vm: self.name().clone(), source: Box::new(source) })?;
        let disk = diskserv::bind(&self.config.disk, config(self.config.diskserv_port, Service::Disk), 4096)
            .map_err(|source| DesktopError::Diskserv { vm: self.name().clone(), source: Box::new(source) })?;
        let mut serving = Serving { stops: Vec::new(), threads: Vec::new() };
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

    /// Ends QEMU (the guest with it) and stops serving.
    pub fn shut_down(&mut self) {
        self.running = None;
        self.serving = None;
    }

    /// The QMP connection of the running VM.
    pub fn qmp(&mut self) -> Option<&mut Qmp> {
        self.running.as_mut().map(|r| &mut r.qmp)
    }

    /// Takes a CPU and I/O sample into the idleness window; notices a QEMU
    /// that died.
    pub fn sample(&mut self) {
        let Some(running) = self.running.as_mut() else { return };
        if let Err(e) = running.qemu.check_running() {
            tracing::error!(vm = %self.config.name, "QEMU died: {e}");
            self.running = None;
            return;
        }
        match VmLoadSample::take(running.qemu.pid(), &mut running.qmp) {
            Ok(sample) => self.window.push(sample),
            Err(e) => tracing::warn!(vm = %self.config.name, "cannot sample its activity: {e}"),
        }
    }

    /// The idleness window.
    pub fn window(&self) -> &VmLoadWindow {
        &self.window
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
