//! One consolidated VM on the server: its memtap file, its cownetdisk
//! export, its QEMU and its tap, from arrival to departure.
//!
//! Files, per VM:
//!
//! ```text
//! <state_dir>/vms/<vm>/memory/        memtap's fetched and dirty slices of the RAM
//! <state_dir>/vms/<vm>/disk/<vm>/     cownetdisk's slices of the disk
//! <state_dir>/vms/<vm>/descriptor.in  the device state the desktop sent
//! <state_dir>/vms/<vm>/descriptor.out the device state saved for the way back
//! <run_dir>/vms/<vm>/ram/<vm>.ram     memtap's FUSE file, QEMU's guest RAM
//! <run_dir>/vms/<vm>/disk.nbd         cownetdisk's socket, QEMU's disk
//! <run_dir>/vms/<vm>/qemu/            QEMU's QMP socket and logs
//! ```
//!
//! The state directory outlives the daemon: if the server or its QEMU dies,
//! the VM's dirty slices stay there (an earlier VM's leftovers are renamed
//! `<vm>.orphaned-<time>`, never deleted, when the same VM comes again).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cownetdisk::{Disk, DiskConfig, Listen, NbdServer, StopHandle};
use daemon_protocol::{ChunkWriter, ConsolidateRequest, HostedStatus, ReturnHeader};
use migration_formats::ZeroMap;
use qemu_driver::{
    announce, nic_args, resume, save_device_state, vm_tap_name, DiskBackend, GuestImage, QemuProcess, Qmp, Tap,
};
use qemu_driver::{Accel, VmSpec};
use slice_store::export_dirty_set;
use slice_store::SliceStore;
use wire::protocol::Message;
use wire::{Channel, Hello, RemoteConfig, Service, SharedKey, WakeHook};

use crate::config::ServerConfig;

/// Memory pages and disk blocks are 4 KiB here.
const UNIT: u32 = 4096;
/// Bytes of a dirty set's header and trailer (see `dirty_set`).
const SET_OVERHEAD: u64 = 52 + 44;
/// Bytes a record adds to its unit's data.
const RECORD_OVERHEAD: u64 = 16;

/// Where a hosted VM is in its life.
#[derive(Debug)]
enum Phase {
    /// QEMU runs the guest.
    Running(Box<Running>),
    /// Stopped and flushed; waiting to be sent home.
    Stopped,
    /// QEMU died; the text says how.
    Lost(String),
}

/// A running VM: its QEMU and tap, and the storage under them.
#[derive(Debug)]
struct Running {
    vm: VmProcess,
    storage: Storage,
}

/// QEMU and its tap. Dropping it ends QEMU and deletes the tap.
#[derive(Debug)]
struct VmProcess {
    qmp: Qmp,
    qemu: QemuProcess,
    _tap: Tap,
}

/// memtap and cownetdisk for one VM.
#[derive(Debug)]
struct Storage {
    disk: Arc<Disk>,
    nbd_stop: StopHandle,
    nbd_thread: Option<std::thread::JoinHandle<()>>,
    mount: Option<memtap::Mount>,
}

impl Storage {
    fn stats(&self) -> (memtap::RamStats, cownetdisk::DiskStats) {
        let memory = self.mount.as_ref().and_then(|m| m.vms().first().map(|vm| vm.stats()));
        (memory.unwrap_or_default(), self.disk.stats())
    }

    /// Stops the NBD server and memtap, flushing both.
    fn shut(&mut self) -> Result<(), String> {
        self.nbd_stop.stop();
        if let Some(thread) = self.nbd_thread.take() {
            let _ = thread.join();
        }
        self.disk.flush().map_err(|e| format!("cannot flush the disk's slices: {}", wire::chain(&e)))?;
        if let Some(mount) = self.mount.take() {
            mount.unmount().map_err(|e| format!("cannot unmount memtap: {}", wire::chain(&e)))?;
        }
        Ok(())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Err(e) = self.shut() {
            tracing::error!("closing a VM's storage: {e}");
        }
    }
}

/// A VM the server hosts.
#[derive(Debug)]
pub struct HostedVm {
    name: String,
    desktop: String,
    desktop_control: String,
    state: PathBuf,
    run: PathBuf,
    ram_bytes: u64,
    disk_bytes: u64,
    expected: u64,
    started: Instant,
    phase: Phase,
    last: (memtap::RamStats, cownetdisk::DiskStats),
}

impl HostedVm {
    /// Brings `request`'s VM up: memtap, cownetdisk, tap, QEMU from the
    /// descriptor, `cont`, and an announcement of its MAC. `wake` runs
    /// before every fetch from its desktop.
    ///
    /// # Errors
    /// A text saying which step failed; whatever was made is undone.
    pub fn start(
        config: &ServerConfig,
        key: &SharedKey,
        request: &ConsolidateRequest,
        wake: Arc<dyn WakeHook>,
        expected: u64,
    ) -> Result<HostedVm, String> {
        let vm = &request.vm;
        let state = state_dir(config, vm);
        let run = config.run_dir.join("vms").join(vm);
        keep_leftovers(&state)?;
        for dir in [state.join("memory"), state.join("disk"), run.join("ram"), run.join("qemu")] {
            fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let zero_map = ZeroMap::decode(&request.zero_map).map_err(|e| format!("the zero map of {vm} is bad: {e}"))?;
        let descriptor = state.join("descriptor.in");
        fs::write(&descriptor, &request.descriptor)
            .map_err(|e| format!("cannot write {}: {e}", descriptor.display()))?;

        let remote = |addr: &str, service| RemoteConfig::new(addr, key.clone(), Hello { service, export: vm.clone() });
        let mut memory =
            memtap::RamFileConfig::new(vm, state.join("memory"), remote(&request.memserv, Service::Memory));
        memory.zero_pages = zero_map.ranges;
        memory.wake = Arc::clone(&wake);
        let mount = memtap::Mount::start(&run.join("ram"), vec![memory])
            .map_err(|e| format!("memtap cannot serve {vm}'s RAM: {}", wire::chain(&e)))?;
        let ram_bytes = mount.vms().first().map(|m| m.size()).unwrap_or(0);
        let disk_config = DiskConfig::new(vm, state.join("disk"), remote(&request.diskserv, Service::Disk));
        let disk = Arc::new(
            Disk::open(disk_config, wake)
                .map_err(|e| format!("cownetdisk cannot serve {vm}'s disk: {}", wire::chain(&e)))?,
        );
        let socket = run.join("disk.nbd");
        let listen = Listen { unix: Some(socket.clone()), tcp: None };
        let nbd = NbdServer::bind(Arc::clone(&disk), &listen)
            .map_err(|e| format!("cannot serve {vm}'s disk on {}: {}", socket.display(), wire::chain(&e)))?;
        let nbd_stop = nbd.stop_handle();
        let vm_name = vm.clone();
        let nbd_thread = std::thread::spawn(move || {
            if let Err(e) = nbd.run() {
                tracing::error!(vm = %vm_name, "cownetdisk stopped: {}", wire::chain(&e));
            }
        });
        let disk_bytes = disk.size();
        // From here a failed step drops the storage, which stops cownetdisk
        // and unmounts memtap.
        let storage = Storage { disk, nbd_stop, nbd_thread: Some(nbd_thread), mount: Some(mount) };
        let tap = Tap::create(&vm_tap_name(vm), &config.bridge).map_err(|e| format!("{vm}: {e}"))?;
        let guest = GuestImage { kernel: config.kernel.clone(), initrd: config.initrd.clone() };
        let accel = if config.accel == "kvm" { Accel::Kvm } else { Accel::Tcg };
        let spec = VmSpec::new(&guest, run.join("ram").join(format!("{vm}.ram")), run.join("qemu"))
            .memory_mib(request.memory_mib)
            .accel(accel)
            .kernel_args(&request.kernel_args)
            .extra_args(nic_args(tap.name(), &request.vm_mac))
            .extra_args(DiskBackend::NbdUnix { socket, export: vm.clone() }.qemu_args());
        let (qemu, qmp) =
            resume(spec, &descriptor).map_err(|e| format!("QEMU cannot resume {vm} from its descriptor: {e}"))?;
        let mut running = Running { vm: VmProcess { qmp, qemu, _tap: tap }, storage };
        if let Err(e) = announce(&mut running.vm.qmp) {
            tracing::warn!(vm = %vm, "cannot announce the VM's MAC: {e}");
        }
        let last = running.storage.stats();
        Ok(HostedVm {
            name: vm.clone(),
            desktop: request.desktop.clone(),
            desktop_control: request.desktop_control.clone(),
            state,
            run,
            ram_bytes,
            disk_bytes,
            expected,
            started: Instant::now(),
            phase: Phase::Running(Box::new(running)),
            last,
        })
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its desktop's name.
    pub fn desktop(&self) -> &str {
        &self.desktop
    }

    /// Where its desktop daemon takes `PleaseReintegrate`.
    pub fn desktop_control(&self) -> &str {
        &self.desktop_control
    }

    /// The working set it was expected to need.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Bytes it holds on the server: pages fetched and dirtied.
    pub fn resident(&self) -> u64 {
        (self.last.0.resident_pages + self.last.0.dirty_pages) * u64::from(UNIT)
    }

    /// Bytes fetched from the desktop so far (memory and disk).
    pub fn fetched(&self) -> u64 {
        self.last.0.bytes_fetched + self.last.1.bytes_fetched
    }

    /// How long it has been on the server.
    pub fn age(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether QEMU still runs the guest.
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// Refreshes the counters and notices a QEMU that died.
    pub fn poll(&mut self) {
        let lost = match &mut self.phase {
            Phase::Running(running) => {
                self.last = running.storage.stats();
                running.vm.qemu.check_running().err().map(|e| e.to_string())
            }
            _ => None,
        };
        if let Some(why) = lost {
            tracing::error!(vm = %self.name, "QEMU died on the server: {why}");
            if let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Lost(why)) {
                let Running { vm, mut storage } = *running;
                drop(vm);
                if let Err(e) = storage.shut() {
                    tracing::error!(vm = %self.name, "after QEMU died: {e}");
                }
            }
        }
    }

    /// What `Status` says of it.
    pub fn status(&self, desktop_power: String) -> HostedStatus {
        let (memory, disk) = &self.last;
        HostedStatus {
            vm: self.name.clone(),
            desktop: self.desktop.clone(),
            state: match &self.phase {
                Phase::Running(_) => "running".to_owned(),
                Phase::Stopped => "stopped, waiting to go home".to_owned(),
                Phase::Lost(why) => format!("lost: {why}"),
            },
            seconds: self.started.elapsed().as_secs(),
            ram_bytes: self.ram_bytes,
            pages_fetched: memory.pages_fetched,
            zero_pages_served: memory.zero_pages_served,
            dirty_pages: memory.dirty_pages,
            blocks_fetched: disk.blocks_fetched,
            dirty_blocks: disk.dirty_blocks,
            expected_bytes: self.expected,
            desktop_power,
        }
    }

    /// Stops the VM for its way home: `stop`, the descriptor saved, the
    /// RAM file synced (the guest's writes still in the page cache reach
    /// memtap's dirty slice), QEMU ended, memtap and cownetdisk flushed and
    /// closed. Does nothing if already stopped (a retried reintegration).
    ///
    /// # Errors
    /// A text naming the step that failed; a lost VM cannot go home.
    pub fn stop(&mut self) -> Result<(), String> {
        self.poll();
        let vm = self.name.clone();
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Stopped => Ok(()),
            Phase::Lost(why) => {
                let text = format!(
                    "{vm} was lost on the server ({why}); its slices are kept in {}; resume it from the desktop's \
                     checkpoint",
                    self.state.display()
                );
                self.phase = Phase::Lost(why);
                Err(text)
            }
            Phase::Running(mut running) => {
                let descriptor = self.state.join("descriptor.out");
                let saved = save_device_state(&mut running.vm.qmp, &descriptor)
                    .map_err(|e| format!("cannot save {vm}'s device state: {e}"))
                    .and_then(|_| {
                        // QEMU is stopped: the guest's last writes sit in the
                        // page cache of memtap's file; fsync sends them to
                        // memtap's dirty slice.
                        let ram = self.run.join("ram").join(format!("{vm}.ram"));
                        fs::OpenOptions::new()
                            .write(true)
                            .open(&ram)
                            .and_then(|f| f.sync_all())
                            .map_err(|e| format!("cannot sync {} (the guest's last writes): {e}", ram.display()))
                    });
                if let Err(e) = saved {
                    self.phase = Phase::Running(running);
                    return Err(e);
                }
                self.last = running.storage.stats();
                let Running { vm: process, mut storage } = *running;
                drop(process);
                storage.shut().map_err(|e| format!("{vm}: {e}"))
            }
        }
    }

    /// Sends the stopped VM home on `channel`: a `Returning` header, then
    /// the descriptor, the memory dirty set and the disk dirty set as one
    /// stream. Returns the header.
    ///
    /// # Errors
    /// A text naming what could not be read or sent.
    pub fn send_home(&self, channel: &mut Channel) -> Result<ReturnHeader, String> {
        let vm = &self.name;
        let descriptor_path = self.state.join("descriptor.out");
        let descriptor =
            fs::read(&descriptor_path).map_err(|e| format!("cannot read {}: {e}", descriptor_path.display()))?;
        let open = |dir: PathBuf, size: u64| {
            SliceStore::open(&dir, UNIT, size).map_err(|e| format!("cannot open {}: {e}", dir.display()))
        };
        let memory = open(self.state.join("memory"), self.ram_bytes)?;
        let disk = open(self.state.join("disk").join(vm), self.disk_bytes)?;
        let header = ReturnHeader {
            descriptor_bytes: descriptor.len() as u64,
            descriptor_crc: crc32fast::hash(&descriptor),
            memory_set_bytes: set_bytes(&memory)?,
            disk_set_bytes: set_bytes(&disk)?,
            dirty_pages: memory.dirty_count(),
            dirty_blocks: disk.dirty_count(),
        };
        channel
            .send(&daemon_protocol::Control::Returning(header).encode_body())
            .map_err(|e| format!("cannot send {vm} home: {}", wire::chain(&e)))?;
        let mut writer = ChunkWriter::new(channel);
        let sent = (|| -> Result<(), String> {
            writer.write_all(&descriptor).map_err(|e| e.to_string())?;
            export_dirty_set(&memory, &mut writer).map_err(|e| format!("memory: {}", wire::chain(&e)))?;
            export_dirty_set(&disk, &mut writer).map_err(|e| format!("disk: {}", wire::chain(&e)))?;
            Ok(())
        })();
        sent.map_err(|e| format!("sending {vm} home broke off: {e}"))?;
        writer.finish().map_err(|e| format!("sending {vm} home broke off at the end: {e}"))?;
        Ok(header)
    }

    /// Forgets the VM once it runs at home: deletes its slices and files.
    pub fn discard(self) {
        for dir in [&self.state, &self.run] {
            if let Err(e) = fs::remove_dir_all(dir) {
                tracing::warn!(vm = %self.name, "cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// The state directory of `vm`.
fn state_dir(config: &ServerConfig, vm: &str) -> PathBuf {
    config.state_dir.join("vms").join(vm)
}

/// Bytes `export` will write for `store`.
fn set_bytes(store: &SliceStore) -> Result<u64, String> {
    let mut total = SET_OVERHEAD;
    for unit in store.dirty_units() {
        total += RECORD_OVERHEAD + u64::from(store.unit_len(unit).map_err(|e| e.to_string())?);
    }
    Ok(total)
}

/// Renames what an earlier stay of the VM left in `state` (slices of a VM
/// lost with the server), so that nothing is deleted.
fn keep_leftovers(state: &Path) -> Result<(), String> {
    if !state.exists() {
        return Ok(());
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let kept = state.with_extension(format!("orphaned-{secs}"));
    tracing::warn!(from = %state.display(), to = %kept.display(), "keeping an earlier stay's slices");
    fs::rename(state, &kept).map_err(|e| format!("cannot move {} aside: {e}", state.display()))
}
