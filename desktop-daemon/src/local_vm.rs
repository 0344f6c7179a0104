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

use image_server::{ServeConfig, StopHandle};
use qemu_driver::{
    announce, nic_args, resume, save_device_state, vm_tap_name, Accel, DiskBackend, GuestImage, QemuProcess, Qmp, Tap,
    VmLoadSample, VmLoadWindow, VmSpec,
};
use serde::{Deserialize, Serialize};
use wire::{Service, SharedKey};

use crate::config::{DesktopConfig, VmDefinition};

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
    /// A text when its directory cannot be made.
    pub fn new(desktop: &DesktopConfig, config: &VmDefinition) -> Result<LocalVm, String> {
        let dir = desktop.state_dir.join(&config.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
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
            run_dir: desktop.run_dir.join(&config.name),
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
    pub fn name(&self) -> &str {
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
    /// A text naming the file.
    pub fn set_placement(&mut self, placement: Placement) -> Result<(), String> {
        let path = self.dir.join("placement.json");
        let text = serde_json::to_vec(&placement).expect("a placement serialises");
        durable_file::replace_file(&path, &[&text])
            .map_err(|e| format!("cannot record where {} is in {}: {e}", self.name(), path.display()))?;
        self.placement = placement;
        Ok(())
    }

    fn spec(&self) -> VmSpec {
        VmSpec::new(&self.guest, self.ram_file(), &self.run_dir)
            .memory_mib(self.config.memory_mib)
            .accel(self.accel)
            .kernel_args(&self.config.kernel_args)
            .extra_args(DiskBackend::File(self.config.disk.clone()).qemu_args())
    }

    /// Starts QEMU with `start` on our profile plus the NIC on a fresh tap,
    /// and keeps it as the running VM with an empty idleness window.
    fn start(&mut self, start: impl FnOnce(VmSpec) -> Result<(QemuProcess, Qmp), String>) -> Result<(), String> {
        let tap = Tap::create(&vm_tap_name(&self.config.name), &self.bridge).map_err(|e| e.to_string())?;
        let (qemu, qmp) = start(self.spec().extra_args(nic_args(tap.name(), &self.config.mac)))?;
        self.running = Some(Running { qmp, qemu, _tap: tap });
        self.window = VmLoadWindow::new(self.window.length());
        Ok(())
    }

    /// Boots it from its disk and kernel (a fresh start).
    ///
    /// # Errors
    /// A text saying what could not start.
    pub fn boot(&mut self) -> Result<(), String> {
        let name = self.name().to_owned();
        self.start(|spec| {
            let mut qemu = spec.spawn().map_err(|e| format!("cannot boot {name}: {e}"))?;
            let qmp = qemu.connect_qmp().map_err(|e| format!("cannot talk to {name}'s QEMU: {e}"))?;
            Ok((qemu, qmp))
        })?;
        tracing::info!(vm = %name, "booted");
        Ok(())
    }

    /// Resumes it here from the descriptor `state` over its RAM file, and
    /// announces its MAC.
    ///
    /// # Errors
    /// A text saying what could not start.
    pub fn resume_from(&mut self, state: &Path) -> Result<(), String> {
        self.serving = None;
        let name = self.name().to_owned();
        self.start(|spec| {
            let (qemu, mut qmp) =
                resume(spec, state).map_err(|e| format!("cannot resume {name} from {}: {e}", state.display()))?;
            if let Err(e) = announce(&mut qmp) {
                tracing::warn!(vm = %name, "cannot announce its MAC: {e}");
            }
            Ok((qemu, qmp))
        })
    }

    /// Stops it, saves its descriptor as the checkpoint, and ends QEMU.
    /// Returns the descriptor's size.
    ///
    /// # Errors
    /// A text; on failure the VM is left running.
    pub fn stop_and_save(&mut self) -> Result<u64, String> {
        let running = self.running.as_mut().ok_or_else(|| format!("{} is not running here", self.config.name))?;
        let bytes = save_device_state(&mut running.qmp, &self.dir.join("checkpoint.state"))
            .map_err(|e| format!("cannot save {}'s device state: {e}", self.config.name))?;
        self.running = None;
        Ok(bytes)
    }

    /// Serves the checkpoint: memserv for the RAM file, diskserv for the disk.
    ///
    /// # Errors
    /// A text naming the server that could not start.
    pub fn serve(&mut self, ip: std::net::IpAddr, key: &SharedKey) -> Result<(), String> {
        if self.serving.is_some() {
            return Ok(());
        }
        let config = |port, service| ServeConfig {
            listen: std::net::SocketAddr::new(ip, port),
            key: key.clone(),
            service,
            export: self.config.name.clone(),
            events: None,
        };
        let memory = memserv::bind(&self.ram_file(), config(self.config.memserv_port, Service::Memory))
            .map_err(|e| format!("memserv cannot serve {}: {}", self.name(), wire::chain(&e)))?;
        let disk = diskserv::bind(&self.config.disk, config(self.config.diskserv_port, Service::Disk), 4096)
            .map_err(|e| format!("diskserv cannot serve {}: {}", self.name(), wire::chain(&e)))?;
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
