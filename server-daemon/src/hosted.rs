//! One consolidated VM on the server: its memtap file, its cownetdisk
//! export, its QEMU and its tap, from arrival to departure.
//!
//! Files, per VM:
//!
//! ```text
//! <state_dir>/vms/<desktop>/<vm>/memory/        memtap's fetched and dirty slices of the RAM
//! <state_dir>/vms/<desktop>/<vm>/disk/<vm>/     cownetdisk's slices of the (first) disk
//! <state_dir>/vms/<desktop>/<vm>/disk/<vm>.<n>/ ... of disk n (from 1) of a VM with several
//! <state_dir>/vms/<desktop>/<vm>/descriptor.in  the device state the desktop sent
//! <state_dir>/vms/<desktop>/<vm>/descriptor.out the device state saved for the way back
//! <state_dir>/vms/<desktop>/<vm>/checkpoint/    the last checkpoint: descriptor, memory.set,
//!                                               disk.set, disk.<n>.set (dirty sets at that
//!                                               instant), manifest
//! <state_dir>/vms/<desktop>/<vm>/hosted.json    what a restarted daemon takes it over with
//! <state_dir>/vms/<desktop>/<vm>/fetch-trace.csv every request to the desktop this stay
//!                                               (memtap's and cownetdisk's; `fetch-trace` crate)
//! <state_dir>/history/<desktop>/<vm>/<secs>.csv  the traces of its last stays, kept when it
//!                                               goes home (named for when each stay began)
//! <state_dir>/energy/<desktop>/<vm>.jsonl        each stay's energy account, appended when it
//!                                               goes home ([`crate::energy`])
//! <run_dir>/vms/<desktop>/<vm>/ram/<vm>.ram     memtap's FUSE file, QEMU's guest RAM
//! <run_dir>/vms/<desktop>/<vm>/disk.nbd         cownetdisk's socket, QEMU's (first) disk
//! <run_dir>/vms/<desktop>/<vm>/disk.<n>.nbd     ... for disk n (from 1)
//! <run_dir>/vms/<desktop>/<vm>/qemu/            QEMU's QMP socket and logs
//! ```
//!
//! memtap and cownetdisk run in the VM's storage process ([`crate::storage`]).
//! Both names in those paths are checked types ([`VmKey`]), and a disk's
//! number is an index below the reserved count (at most
//! [`daemon_protocol::MAX_DISKS`]): nothing a desktop sends is joined onto
//! a path as it came. Each disk is a cownetdisk disk of its own, with its
//! own NBD socket, fetching from the desktop's one diskserv under the
//! disk's export ([`disk_export`]), whose name is also its slices'.
//!
//! The state directory outlives the daemon: if the server or its QEMU dies,
//! the VM's dirty slices stay there (an earlier VM's leftovers are renamed
//! `<vm>.orphaned-<time>`, never deleted, when the same VM comes again).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_protocol::{
    disk_export, ChunkWriter, ConsoleAccess, ConsolidateRequest, HostedState, HostedStatus, MachineProfile,
    ReturnHeader,
};
use identifiers::Mac;
use migration_formats::ZeroMap;
use qemu_driver::{announce, nic_args, resume, save_device_state, DiskBackend, QemuProcess, Qmp, Tap};
use qemu_driver::{Accel, Display, VmSpec};
use remote_wakeup::DesktopStatus;
use slice_store::{export_dirty_set, exported_len, SliceStore};
use wire::protocol::Message;
use wire::Channel;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::key::VmKey;
use crate::machine;
use crate::storage::{disk_set_file, disk_socket, StorageSpec, VmStorage, WakeSpec, ZERO_MAP};

/// Memory pages and disk blocks are 4 KiB here.
const UNIT: u32 = 4096;

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

/// A running VM: its QEMU and tap, and the storage process under them.
/// Dropping it ends the fetches, then QEMU, then the storage (declared in
/// that order), unless it was [left running](Running::leave_running).
#[derive(Debug)]
struct Running {
    qmp: QmpLink,
    qemu: QemuProcess,
    tap: Option<Tap>,
    qemu_agent_socket: PathBuf,
    storage: VmStorage,
    left: bool,
}

impl Running {
    /// Leaves QEMU, its tap and its storage process running for the next
    /// daemon.
    fn leave_running(mut self) {
        self.left = true;
        self.qemu.leave_running();
        self.storage.leave_running();
        if let Some(tap) = self.tap.take() {
            tap.keep();
        }
    }

    /// Ends QEMU, then flushes and closes the storage.
    fn end(mut self) -> Result<(), crate::storage::StorageError> {
        self.end_qemu();
        self.storage.shut()
    }

    /// Ends QEMU. A QEMU stuck in a page fault that waits for a desktop
    /// that is gone cannot die until memtap answers; the answer no longer
    /// matters, so the fetches are ended first.
    fn end_qemu(&mut self) {
        if !self.left {
            self.left = true;
            self.storage.cancel_fetches();
            self.qemu.kill();
        }
    }
}

/// How long a taken-over QEMU's greeting is waited for on one connection
/// before a new one is made.
const TAKE_OVER_PATIENCE: Duration = Duration::from_secs(3600);

/// The daemon's QMP connection to a VM's QEMU: ready, or, for a QEMU taken
/// over from an earlier daemon, still waiting for its greeting on a thread
/// of its own. A guest stuck in a fetch from an absent desktop holds
/// QEMU's main loop (under TCG); the daemon serves everyone else meanwhile
/// and reaches this QEMU once the desktop answers.
#[derive(Debug)]
enum QmpLink {
    Ready(Qmp),
    Waiting(std::sync::mpsc::Receiver<Result<Qmp, qemu_driver::QemuError>>, PathBuf),
}

impl QmpLink {
    /// Starts waiting for the greeting on `socket`.
    fn wait_for(socket: &Path) -> QmpLink {
        let (answer, answered) = std::sync::mpsc::channel();
        let waited = socket.to_owned();
        let spawned = std::thread::Builder::new().name("qmp-take-over".into()).spawn(move || {
            let _ = answer.send(Qmp::connect_once(&waited, TAKE_OVER_PATIENCE));
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread to reach QEMU on {}: {e}", socket.display());
        }
        QmpLink::Waiting(answered, socket.to_owned())
    }

    /// The connection, once QEMU has answered.
    ///
    /// # Errors
    /// [`qemu_driver::QemuError::QmpNotYet`] while it waits; the error of
    /// a wait that failed (then a new wait starts).
    fn get(&mut self) -> Result<&mut Qmp, qemu_driver::QemuError> {
        if let QmpLink::Waiting(answered, socket) = self {
            match answered.try_recv() {
                Ok(Ok(qmp)) => {
                    tracing::info!(socket = %socket.display(), "its QEMU answers QMP again");
                    *self = QmpLink::Ready(qmp);
                }
                Ok(Err(e)) => {
                    *self = QmpLink::wait_for(socket);
                    return Err(e);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    return Err(qemu_driver::QemuError::QmpNotYet { socket: socket.clone() })
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let socket = socket.clone();
                    *self = QmpLink::wait_for(&socket);
                    return Err(qemu_driver::QemuError::QmpNotYet { socket });
                }
            }
        }
        match self {
            QmpLink::Ready(qmp) => Ok(qmp),
            QmpLink::Waiting(_, socket) => Err(qemu_driver::QemuError::QmpNotYet { socket: socket.clone() }),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The storage is shut as its field drops, after QEMU is gone.
        self.end_qemu();
    }
}

/// The counters of several disks as one: sizes, connections, bytes,
/// fetches and blocks added up; the name, the block size and the
/// per-command request counts are the first disk's.
fn summed(disks: Vec<cownetdisk::DiskStats>) -> cownetdisk::DiskStats {
    let mut disks = disks.into_iter();
    let mut total = disks.next().unwrap_or_default();
    for disk in disks {
        total.disk_bytes += disk.disk_bytes;
        total.connections += disk.connections;
        total.dropped_connections += disk.dropped_connections;
        total.bytes_read += disk.bytes_read;
        total.bytes_written += disk.bytes_written;
        total.bytes_zeroed += disk.bytes_zeroed;
        total.error_replies += disk.error_replies;
        total.fetch_calls += disk.fetch_calls;
        total.remote_requests += disk.remote_requests;
        total.blocks_fetched += disk.blocks_fetched;
        total.bytes_fetched += disk.bytes_fetched;
        total.whole_block_writes += disk.whole_block_writes;
        total.partial_write_fetches += disk.partial_write_fetches;
        total.fetched_blocks += disk.fetched_blocks;
        total.dirty_blocks += disk.dirty_blocks;
    }
    total
}

/// A VM the server hosts.
#[derive(Debug)]
pub struct HostedVm {
    key: VmKey,
    record: HostedRecord,
    state: PathBuf,
    run: PathBuf,
    started: Instant,
    /// When its last checkpoint was taken.
    checkpointed: Option<Instant>,
    phase: Phase,
    last: (memtap::RamStats, cownetdisk::DiskStats),
    /// Its desktop's power, as its storage process last saw it.
    desktop: Option<DesktopStatus>,
    console: Option<ConsoleAccess>,
}

/// What the server keeps of a hosted VM in its state directory
/// (`hosted.json`), so that a restarted daemon takes it over.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct HostedRecord {
    mac: Mac,
    desktop_control: std::net::SocketAddr,
    ram_bytes: u64,
    /// Its disks' sizes, in the guest's order.
    disk_bytes: Vec<u64>,
    expected: u64,
    /// Pages its zero map of consolidation marked zero.
    zero_pages: u64,
    /// When it arrived, in seconds since the epoch.
    arrived_at: u64,
    /// Its console's port; the ticket stays in QEMU's run directory.
    console_port: Option<u16>,
    /// How to wake its desktop (none: it never sleeps, or a record of a
    /// release before this one).
    #[serde(default)]
    wake: Option<WakeSpec>,
    /// Where its desktop's memserv answers: awake when it does.
    #[serde(default)]
    memserv: Option<std::net::SocketAddr>,
    /// In a fleet, the stay's fencing token (see [`Arrival::fence`]).
    #[serde(default)]
    fence: Option<u64>,
}

/// The record's file in the VM's state directory.
const RECORD: &str = "hosted.json";
/// A console ticket's file in QEMU's run directory.
const TICKET: &str = "spice.ticket";

/// A checkpoint's directory under the VM's state directory, and the one it
/// is written in before it replaces that one.
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_NEW: &str = "checkpoint.new";
/// The file that makes a checkpoint directory complete: written last.
const MANIFEST: &str = "manifest.json";

/// What a checkpoint holds, besides its three files.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CheckpointManifest {
    /// When it was taken, in seconds since the epoch.
    pub taken_at: u64,
    /// Pages the VM had dirtied on the server by then.
    pub dirty_pages: u64,
    /// Disk blocks it had dirtied by then, on all its disks.
    pub dirty_blocks: u64,
    /// How long the VM was stopped for it, in milliseconds.
    pub pause_ms: u64,
    /// Its disks: one disk dirty set each (1 for a checkpoint of a release
    /// that knew only one disk).
    #[serde(default = "one_disk")]
    pub disks: usize,
    /// The stay's fencing token, in a fleet.
    #[serde(default)]
    pub fence: Option<u64>,
}

fn one_disk() -> usize {
    1
}

/// What a VM arrives with: the desktop's request, the machine it reserved,
/// and what this server gives it.
#[derive(Debug)]
pub struct Arrival<'a> {
    /// The desktop's request.
    pub request: &'a ConsolidateRequest,
    /// The device state that followed it.
    pub descriptor: &'a [u8],
    /// Its virtual hardware, from the reservation.
    pub profile: &'a MachineProfile,
    /// Its number of disks, from the reservation (1 to
    /// [`daemon_protocol::MAX_DISKS`], as the decoder checked).
    pub disks: usize,
    /// The accelerator here.
    pub accel: Accel,
    /// The port of its remote console, if it has a display.
    pub console_port: u16,
    /// In a fleet, the stay's fencing token (the revision of this server's
    /// claim of the VM in etcd): its storage process presents it to the
    /// desktop, and the dirty state going home carries it.
    pub fence: Option<u64>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl HostedVm {
    /// Brings `request`'s VM (`key`) up: its storage process (memtap and
    /// cownetdisk, `storage_program`), tap, QEMU from the descriptor,
    /// `cont`, and an announcement of its MAC. With `wake`, its desktop is
    /// woken before every fetch.
    ///
    /// # Errors
    /// The step that failed; whatever was made is undone.
    pub fn start(
        config: &ServerConfig,
        storage_program: &Path,
        key: VmKey,
        arrival: Arrival<'_>,
        wake: Option<WakeSpec>,
        expected: u64,
    ) -> Result<HostedVm, ServerError> {
        let Arrival { request, descriptor: device_state, profile, disks, accel, console_port, fence } = arrival;
        let vm = &key.vm;
        let state = state_dir(config, &key);
        let run = run_dir(config, &key);
        keep_leftovers(&key, &state)?;
        let file_error = |action, path: &Path| {
            let (key, path) = (key.clone(), path.to_owned());
            move |source| ServerError::File { key, action, path, source }
        };
        // A run directory an earlier stay left (its daemon died) holds
        // nothing worth keeping.
        let _ = fs::remove_dir_all(&run);
        for dir in [state.join("memory"), state.join("disk"), run.join("ram"), run.join("qemu")] {
            fs::create_dir_all(&dir).map_err(file_error("create", &dir))?;
        }
        let zero_map = ZeroMap::decode(&request.zero_map)
            .map_err(|source| ServerError::ZeroMap { key: key.clone(), source: Box::new(source) })?;
        if zero_map.unit_size != UNIT {
            let (map_pages, unit) = (zero_map.units, zero_map.unit_size);
            let ram_pages = profile.ram_bytes() / u64::from(UNIT);
            return Err(ServerError::ZeroMapSize { key, map_pages, unit, ram_pages });
        }
        let zero_pages = zero_map.ranges.iter().map(|r| r.end - r.start).sum();
        let zero_map_file = state.join(ZERO_MAP);
        durable_file::replace_file(&zero_map_file, &[&request.zero_map])
            .map_err(file_error("write", &zero_map_file))?;
        let descriptor = state.join("descriptor.in");
        durable_file::replace_file(&descriptor, &[device_state]).map_err(file_error("write", &descriptor))?;

        let spec = StorageSpec {
            desktop: key.desktop.clone(),
            vm: vm.clone(),
            state: state.clone(),
            run: run.clone(),
            memserv: request.memserv,
            diskserv: request.diskserv,
            disks,
            wake: wake.clone(),
            host_key: config.host_key.clone(),
            peers: config.peers.clone(),
            push_from: config.push_working_set.then(|| crate::traces::history_dir(&config.state_dir, &key)),
            push_whole_memory: config.push_whole_memory,
            fence,
        };
        // From here a failed step drops what was made: QEMU is killed, the
        // storage process flushes and exits, the tap goes.
        let mut storage = VmStorage::spawn(storage_program, &spec)
            .map_err(|source| ServerError::Storage { key: key.clone(), source: Box::new(source) })?;
        let stats =
            storage.stats().map_err(|source| ServerError::Storage { key: key.clone(), source: Box::new(source) })?;
        let ram_bytes = stats.memory.ram_bytes;
        let disk_bytes = stats.disks.iter().map(|d| d.disk_bytes).collect();
        let last = (stats.memory, summed(stats.disks));
        let qemu_error = |action| {
            let key = key.clone();
            move |source| ServerError::Qemu { key, action, source: Box::new(source) }
        };
        let tap = Tap::create(&vm.tap_name(), &config.bridge).map_err(qemu_error("make its tap device"))?;
        let boot =
            machine::boot(config, profile, &state).map_err(file_error("make the UEFI variable store in", &state))?;
        let console = profile.display.then(|| ConsoleAccess { port: console_port, ticket: new_ticket() });
        let display = match &console {
            None => Display::None,
            Some(console) => {
                let ticket_file = run.join("qemu").join(TICKET);
                write_secret(&ticket_file, &console.ticket).map_err(file_error("write", &ticket_file))?;
                Display::RemoteSpice { addr: config.listen.ip(), port: console.port, ticket_file }
            }
        };
        let spec = VmSpec::booting(boot, ram_file(&run, vm), run.join("qemu"))
            .memory_mib(profile.memory_mib)
            .vcpus(profile.vcpus)
            .cpu(profile.cpu_model.as_str())
            .accel(accel)
            .display(display)
            .reboot_ends_qemu(false)
            .run_as(config.qemu_user())
            .extra_args(nic_args(tap.name(), request.vm_mac))
            .extra_args((0..disks).flat_map(|index| {
                DiskBackend::NbdUnix { socket: disk_socket(&run, index), export: disk_export(vm, index) }.qemu_args()
            }));
        let qemu_agent_socket = spec.agent_socket();
        let (qemu, qmp) = match resume(spec, &descriptor) {
            Ok(started) => started,
            Err(e) => {
                if let Err(shut) = storage.shut() {
                    tracing::warn!(desktop = %key.desktop, vm = %key.vm, "{}", wire::chain(&shut));
                }
                return Err(qemu_error("resume it from its descriptor")(e));
            }
        };
        let mut qmp = qmp;
        if let Err(e) = announce(&mut qmp) {
            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot announce the VM's MAC: {}", wire::chain(&e));
        }
        let running =
            Running { qmp: QmpLink::Ready(qmp), qemu, tap: Some(tap), qemu_agent_socket, storage, left: false };
        qemu_driver::settle_guest_in_background(
            key.to_string(),
            running.qemu_agent_socket.clone(),
            qemu_driver::Resumed::WhereItStopped,
        );
        let record = HostedRecord {
            mac: request.vm_mac,
            desktop_control: request.desktop_control,
            ram_bytes,
            disk_bytes,
            expected,
            zero_pages,
            arrived_at: now_secs(),
            console_port: console.as_ref().map(|c| c.port),
            wake,
            memserv: Some(request.memserv),
            fence,
        };
        let json = serde_json::to_vec_pretty(&record).expect("a hosted record serialises");
        let record_file = state.join(RECORD);
        if let Err(e) = durable_file::replace_file(&record_file, &[&json]) {
            // It runs; only a restart of this daemon would not find it.
            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot write {}: {e}: a restart of this daemon would send it home from its last checkpoint", record_file.display());
        }
        Ok(HostedVm {
            key,
            record,
            state,
            run,
            started: Instant::now(),
            checkpointed: None,
            phase: Phase::Running(Box::new(running)),
            last,
            desktop: None,
            console,
        })
    }

    /// Takes over `key`'s VM as an earlier daemon left it: its QEMU and its
    /// storage process still run. `None` when there is nothing to take
    /// over (it was never hosted, or went home); whatever of it still runs
    /// alone (a QEMU without its storage, or the reverse) is ended then,
    /// and its slices stay for its desktop's recovery.
    pub fn take_over(config: &ServerConfig, key: VmKey) -> Option<HostedVm> {
        let state = state_dir(config, &key);
        let run = run_dir(config, &key);
        let record: HostedRecord = serde_json::from_slice(&fs::read(state.join(RECORD)).ok()?).ok()?;
        let storage = VmStorage::attach(&run);
        let qemu = QemuProcess::attach_in(&run.join("qemu"));
        let (storage, qemu) = match (storage, qemu) {
            (Some(storage), Some(qemu)) => (storage, qemu),
            (storage, qemu) => {
                tracing::warn!(desktop = %key.desktop, vm = %key.vm, qemu = qemu.is_some(), storage = storage.is_some(), "hosted before this daemon started, but not whole any more: ended; its desktop can recover it from its last checkpoint");
                if let Some(mut qemu) = qemu {
                    qemu.kill();
                }
                if let Some(mut storage) = storage {
                    if let Err(e) = storage.shut() {
                        tracing::warn!(desktop = %key.desktop, vm = %key.vm, "{}", wire::chain(&e));
                    }
                }
                let _ = fs::remove_file(state.join(RECORD));
                return None;
            }
        };
        // Not waited for here: a guest stuck in a fetch from an absent
        // desktop holds QEMU's main loop, and the daemon must serve the
        // others meanwhile.
        let qmp = QmpLink::wait_for(qemu.qmp_socket());
        let console = record
            .console_port
            .and_then(|port| fs::read_to_string(run.join("qemu").join(TICKET)).ok().map(|ticket| (port, ticket)));
        let arrived = Duration::from_secs(now_secs().saturating_sub(record.arrived_at));
        let running = Running {
            qmp,
            qemu,
            tap: Some(Tap::adopt(&key.vm.tap_name())),
            qemu_agent_socket: run.join("qemu").join("qga.sock"),
            storage,
            left: false,
        };
        tracing::info!(desktop = %key.desktop, vm = %key.vm, qemu = running.qemu.pid(), storage = running.storage.pid(), console = ?console.as_ref().map(|c| c.0), "took over its running QEMU and storage");
        let mut vm = HostedVm {
            key,
            record,
            state,
            run,
            started: Instant::now().checked_sub(arrived).unwrap_or_else(Instant::now),
            checkpointed: None,
            phase: Phase::Running(Box::new(running)),
            last: Default::default(),
            desktop: None,
            console: console.map(|(port, ticket)| ConsoleAccess { port, ticket }),
        };
        vm.poll();
        Some(vm)
    }

    /// Has its storage process read the enrolled peers again.
    ///
    /// # Errors
    /// [`ServerError::Storage`]; the old peers stay in force there.
    pub fn reload_peers(&self) -> Result<(), ServerError> {
        match &self.phase {
            Phase::Running(running) => running
                .storage
                .reload_peers()
                .map_err(|source| ServerError::Storage { key: self.key.clone(), source: Box::new(source) }),
            _ => Ok(()),
        }
    }

    /// Leaves its QEMU and storage process running, for the next daemon
    /// (see [`HostedVm::take_over`]).
    pub fn leave_running(mut self) {
        if let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Stopped) {
            running.leave_running();
        }
    }

    /// The port of its remote console, if it has one.
    pub fn console_port(&self) -> Option<u16> {
        self.console.as_ref().map(|c| c.port)
    }

    /// The VM's key (desktop and name).
    pub fn key(&self) -> &VmKey {
        &self.key
    }

    /// Its NIC's MAC.
    pub fn mac(&self) -> Mac {
        self.record.mac
    }

    /// Where its desktop daemon takes `PleaseReintegrate`.
    pub fn desktop_control(&self) -> std::net::SocketAddr {
        self.record.desktop_control
    }

    /// The working set it was expected to need.
    pub fn expected(&self) -> u64 {
        self.record.expected
    }

    /// Bytes it holds on the server: pages fetched and dirtied, less those
    /// a push brought that the guest has not touched (they wait on disk,
    /// not in its memory). What the capacity check counts, and what its
    /// history expects of its next stay.
    pub fn resident(&self) -> u64 {
        let memory = &self.last.0;
        (memory.resident_pages + memory.dirty_pages).saturating_sub(memory.pushed_untouched) * u64::from(UNIT)
    }

    /// Bytes fetched from the desktop so far (memory and disk).
    pub fn fetched(&self) -> u64 {
        self.last.0.bytes_fetched + self.last.1.bytes_fetched
    }

    /// Of [`HostedVm::fetched`], the bytes the guest asked for: what a push
    /// brought at consolidation is the server's doing, not the VM's
    /// activity.
    pub fn fetched_on_demand(&self) -> u64 {
        self.fetched().saturating_sub(self.last.0.bytes_pushed)
    }

    /// CPU time its QEMU and its storage process (memtap and cownetdisk)
    /// have used so far, what the server spends on it; `None` unless it
    /// runs and both can be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        let Phase::Running(running) = &self.phase else { return None };
        let qemu = qemu_driver::process_cpu_time(running.qemu.pid()).ok()?;
        let storage = qemu_driver::process_cpu_time(running.storage.pid()).ok()?;
        Some(qemu + storage)
    }

    /// How long it has been on the server.
    pub fn age(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether a checkpoint is due: the VM runs and its last checkpoint (or
    /// its arrival) is `every` old.
    pub fn checkpoint_due(&self, every: std::time::Duration) -> bool {
        self.is_running() && !every.is_zero() && self.checkpointed.unwrap_or(self.started).elapsed() >= every
    }

    /// Takes a checkpoint: stops the VM, saves its device state, syncs its
    /// RAM file (the guest's last writes reach memtap's dirty slice),
    /// copies the memory and disk dirty sets as they are at that instant,
    /// continues the VM, and only then, with everything durable, puts the
    /// new checkpoint in place of the last one. The VM runs on whatever
    /// happens; a failed checkpoint leaves the last one standing.
    ///
    /// # Errors
    /// [`ServerError::Checkpoint`] naming the step; [`ServerError::NotHosted`]
    /// if QEMU does not run it.
    pub fn checkpoint(&mut self) -> Result<CheckpointManifest, ServerError> {
        let key = self.key.clone();
        let Phase::Running(running) = &mut self.phase else { return Err(ServerError::NotHosted { key }) };
        let failed = |step: &'static str| {
            let key = key.clone();
            move |source: Box<dyn std::error::Error + Send + Sync>| ServerError::Checkpoint { key, step, source }
        };
        let new = self.state.join(CHECKPOINT_NEW);
        let _ = fs::remove_dir_all(&new);
        fs::create_dir_all(&new).map_err(|e| failed("make its directory")(e.into()))?;
        let qmp = running.qmp.get().map_err(|e| failed("reach its QEMU")(e.into()))?;
        let paused = Instant::now();
        let saved = save_device_state(qmp, &new.join("descriptor"))
            .map_err(|e| failed("save its device state")(e.into()))
            .and_then(|_| running.storage.sync_ram().map_err(|e| failed("sync its RAM file")(e.into())))
            .and_then(|()| running.storage.copy_dirty_sets(&new).map_err(|e| failed("copy its dirty sets")(e.into())));
        // The VM goes on whatever happened above.
        let resumed = qmp.execute("cont", None).map_err(|e| failed("continue the VM")(e.into()));
        let pause = paused.elapsed();
        let (dirty_pages, dirty_blocks) = saved?;
        resumed?;
        let manifest = CheckpointManifest {
            taken_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            dirty_pages,
            dirty_blocks,
            pause_ms: pause.as_millis() as u64,
            disks: self.record.disk_bytes.len(),
            fence: self.record.fence,
        };
        let json = serde_json::to_vec(&manifest).map_err(|e| failed("write its manifest")(e.into()))?;
        durable_file::replace_file(&new.join(MANIFEST), &[&json])
            .map_err(|e| failed("write its manifest")(e.into()))?;
        // Swapped in one step, so that a crash leaves either checkpoint
        // whole, never none; the old one, now under the new name, goes.
        let current = self.state.join(CHECKPOINT);
        let swapped = match nix::fcntl::renameat2(None, &new, None, &current, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
        {
            Err(nix::errno::Errno::ENOENT) => fs::rename(&new, &current),
            other => other.map_err(std::io::Error::from),
        };
        swapped.and_then(|()| durable_file::sync_dir(&self.state)).map_err(|e| failed("put it in place")(e.into()))?;
        let _ = fs::remove_dir_all(&new);
        self.checkpointed = Some(Instant::now());
        Ok(manifest)
    }

    /// Its QEMU's process id, while QEMU runs it.
    pub fn qemu_pid(&self) -> Option<u32> {
        match &self.phase {
            Phase::Running(running) => Some(running.qemu.pid()),
            _ => None,
        }
    }

    /// Whether QEMU still runs the guest.
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// Writes the guest's pages still dirty in the page cache of its RAM
    /// file back to memtap (an fsync, as a checkpoint does, without
    /// stopping the VM), so that its dirty count is exact as of now.
    ///
    /// # Errors
    /// The storage process's error of the fsync.
    pub fn write_back(&self) -> Result<(), crate::storage::StorageError> {
        match &self.phase {
            Phase::Running(running) => running.storage.sync_ram(),
            _ => Ok(()),
        }
    }

    /// Refreshes the counters and notices a QEMU, or a storage process,
    /// that died.
    pub fn poll(&mut self) {
        let lost = match &mut self.phase {
            Phase::Running(running) => {
                if let Ok(stats) = running.storage.stats() {
                    self.last = (stats.memory, summed(stats.disks));
                    self.desktop = stats.desktop;
                }
                match running.qemu.check_running() {
                    Err(e) => Some(format!("QEMU died on the server: {e}")),
                    Ok(()) if !running.storage.is_running() => Some(format!(
                        "its storage process (memtap and cownetdisk, pid {}) died on the server",
                        running.storage.pid()
                    )),
                    Ok(()) => None,
                }
            }
            _ => None,
        };
        if let Some(why) = lost {
            tracing::error!(desktop = %self.key.desktop, vm = %self.key.vm, "{why}");
            let _ = fs::remove_file(self.state.join(RECORD));
            if let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Lost(why)) {
                if let Err(e) = running.end() {
                    tracing::error!(desktop = %self.key.desktop, vm = %self.key.vm, "after it was lost: {}", wire::chain(&e));
                }
            }
        }
    }

    /// Writes what its screen shows to `screenshot.png` (or `.ppm`) in its
    /// QEMU run directory, and returns the file.
    ///
    /// # Errors
    /// [`ServerError::Qemu`]; [`ServerError::NotHosted`] when QEMU does not run it.
    pub fn screenshot(&mut self, png: bool) -> Result<PathBuf, ServerError> {
        let file = self.run.join("qemu").join(if png { "screenshot.png" } else { "screenshot.ppm" });
        match &mut self.phase {
            Phase::Running(running) => {
                running.qmp.get().and_then(|qmp| qemu_driver::screendump(qmp, &file)).map(|()| file).map_err(|source| {
                    ServerError::Qemu { key: self.key.clone(), action: "take a screenshot", source: Box::new(source) }
                })
            }
            _ => Err(ServerError::NotHosted { key: self.key.clone() }),
        }
    }

    /// Whether its guest powered off (QEMU keeps it, stopped, in runstate
    /// `shutdown`, so its state can still go home).
    pub fn guest_powered_off(&mut self) -> bool {
        match &mut self.phase {
            Phase::Running(running) => {
                running.qmp.get().is_ok_and(|qmp| matches!(qmp.run_state().as_deref(), Ok("shutdown")))
            }
            _ => false,
        }
    }

    /// Its memtap and cownetdisk counters as of the last [`HostedVm::poll`].
    pub fn counters(&self) -> &(memtap::RamStats, cownetdisk::DiskStats) {
        &self.last
    }

    /// A waker of its desktop, for a request the server sends it (take the
    /// VM back, move it): none when the desktop never sleeps.
    pub fn desktop_waker(&self) -> Option<remote_wakeup::DesktopWaker> {
        let (wake, memserv) = (self.record.wake.as_ref()?, self.record.memserv?);
        Some(remote_wakeup::DesktopWaker::new(wake.target(self.key.desktop.as_str(), memserv)))
    }

    /// Its desktop's power and wakes as its storage process saw them at
    /// the last [`HostedVm::poll`]; `None` for a desktop that never sleeps.
    pub fn desktop_power(&self) -> Option<&DesktopStatus> {
        self.desktop.as_ref()
    }

    /// What `Status` says of it.
    pub fn status(&self) -> HostedStatus {
        let desktop_power = match &self.desktop {
            Some(desktop) => desktop.state.to_string(),
            None => "awake (never sleeps)".to_owned(),
        };
        let (memory, disk) = &self.last;
        HostedStatus {
            vm: self.key.vm.clone(),
            desktop: self.key.desktop.clone(),
            state: match &self.phase {
                Phase::Running(_) => HostedState::Running,
                Phase::Stopped => HostedState::Stopped,
                Phase::Lost(why) => HostedState::Lost(why.clone()),
            },
            seconds: self.started.elapsed().as_secs(),
            ram_bytes: self.record.ram_bytes,
            pages_fetched: memory.pages_fetched,
            zero_pages_served: memory.zero_pages_served,
            zero_pages: self.record.zero_pages,
            dirty_pages: memory.dirty_pages,
            discarded_pages: memory.discarded_pages,
            blocks_fetched: disk.blocks_fetched,
            dirty_blocks: disk.dirty_blocks,
            expected_bytes: self.record.expected,
            desktop_power,
            console: self.console.clone().filter(|_| self.is_running()),
        }
    }

    /// Stops the VM for its way home: `stop`, the descriptor saved, the
    /// RAM file synced (the guest's writes still in the page cache reach
    /// memtap's dirty slice), QEMU ended, memtap and cownetdisk flushed and
    /// closed. Does nothing if already stopped (a retried reintegration).
    ///
    /// # Errors
    /// The step that failed; a lost VM cannot go home.
    pub fn stop(&mut self) -> Result<(), ServerError> {
        self.poll();
        let key = self.key.clone();
        match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Stopped => Ok(()),
            Phase::Lost(why) => {
                self.phase = Phase::Lost(why.clone());
                Err(ServerError::Lost { key, why, dir: self.state.clone() })
            }
            Phase::Running(mut running) => {
                let descriptor = self.state.join("descriptor.out");
                let saved = running
                    .qmp
                    .get()
                    .and_then(|qmp| save_device_state(qmp, &descriptor))
                    .map_err(|source| ServerError::Qemu {
                        key: key.clone(),
                        action: "save its device state",
                        source: Box::new(source),
                    })
                    .and_then(|_| {
                        running
                            .storage
                            .sync_ram()
                            .map_err(|source| ServerError::Storage { key: key.clone(), source: Box::new(source) })
                    });
                if let Err(e) = saved {
                    self.phase = Phase::Running(running);
                    return Err(e);
                }
                if let Ok(stats) = running.storage.stats() {
                    self.last = (stats.memory, summed(stats.disks));
                }
                // Not taken over by a restarted daemon from here: it goes home.
                let _ = fs::remove_file(self.state.join(RECORD));
                running.end().map_err(|source| ServerError::Storage { key, source: Box::new(source) })
            }
        }
    }

    /// Sends the stopped VM home on `channel`: a `Returning` header, then
    /// the descriptor, the memory dirty set and the disk dirty sets (one
    /// per disk, in order) as one stream. Returns the header.
    ///
    /// # Errors
    /// What could not be read or sent.
    pub fn send_home(&self, channel: &mut Channel) -> Result<ReturnHeader, ServerError> {
        let key = &self.key;
        let descriptor_path = self.state.join("descriptor.out");
        let descriptor = fs::read(&descriptor_path).map_err(|source| ServerError::File {
            key: key.clone(),
            action: "read",
            path: descriptor_path,
            source,
        })?;
        // Each store with the length of the set it exports.
        let open = |dir: PathBuf, size: u64| {
            let slices_error =
                |source| ServerError::OpenSlices { key: key.clone(), dir: dir.clone(), source: Box::new(source) };
            let store = SliceStore::open_existing(&dir, UNIT, size).map_err(slices_error)?;
            let set_bytes = exported_len(&store).map_err(slices_error)?;
            Ok::<_, ServerError>((store, set_bytes))
        };
        let (memory, memory_set_bytes) = open(self.state.join("memory"), self.record.ram_bytes)?;
        let mut disks = Vec::with_capacity(self.record.disk_bytes.len());
        for (index, &size) in self.record.disk_bytes.iter().enumerate() {
            disks.push(open(self.state.join("disk").join(disk_export(&key.vm, index)), size)?);
        }
        let header = ReturnHeader {
            descriptor_bytes: descriptor.len() as u64,
            descriptor_crc: crc32fast::hash(&descriptor),
            memory_set_bytes,
            disk_set_bytes: disks.iter().map(|(_, bytes)| bytes).sum(),
            dirty_pages: memory.dirty_count(),
            dirty_blocks: disks.iter().map(|(store, _)| store.dirty_count()).sum(),
            disk_count: disks.len() as u32,
            fence: self.record.fence.unwrap_or(0),
        };
        let export = |store: &SliceStore, what, writer: &mut ChunkWriter<'_>| {
            export_dirty_set(store, writer).map(drop).map_err(|source| ServerError::Export {
                key: key.clone(),
                what,
                source: Box::new(source),
            })
        };
        stream_home(
            key,
            channel,
            header,
            &descriptor,
            |writer| export(&memory, "memory", writer),
            |writer| disks.iter().try_for_each(|(disk, _)| export(disk, "disk", writer)),
        )?;
        Ok(header)
    }

    /// Forgets the VM once it runs at home: deletes its slices and files.
    pub fn discard(self) {
        for dir in [&self.state, &self.run] {
            if let Err(e) = fs::remove_dir_all(dir) {
                tracing::warn!(desktop = %self.key.desktop, vm = %self.key.vm, "cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// memtap's file under the VM's run directory `run` that QEMU maps as the
/// guest's RAM.
pub(crate) fn ram_file(run: &Path, vm: &identifiers::VmName) -> PathBuf {
    run.join("ram").join(format!("{vm}.ram"))
}

/// With QEMU stopped, the guest's last writes sit in the page cache of
/// memtap's RAM file `ram`; fsync sends them to memtap's dirty slice.
pub(crate) fn sync_ram(ram: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new().write(true).open(ram).and_then(|f| f.sync_all())
}

/// Sends `key`'s last checkpoint (under its state directory `state`) home
/// on `channel`, as [`HostedVm::send_home`] sends a stopped VM: a
/// `Returning` header, then the checkpoint's descriptor, memory dirty set
/// and disk dirty sets. For a VM the server lost (its QEMU died, or the
/// whole server did and was restarted). Returns the header and the
/// checkpoint's manifest.
///
/// # Errors
/// [`ServerError::NoCheckpoint`] when there is no complete checkpoint;
/// what could not be read or sent.
pub fn send_checkpoint(
    key: &VmKey,
    state: &Path,
    channel: &mut Channel,
) -> Result<(ReturnHeader, CheckpointManifest), ServerError> {
    let dir = state.join(CHECKPOINT);
    let no_checkpoint = || ServerError::NoCheckpoint { key: key.clone(), dir: dir.clone() };
    let manifest: CheckpointManifest = fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(no_checkpoint)?;
    let read_error = |path: PathBuf| {
        let key = key.clone();
        move |source| ServerError::File { key, action: "read", path, source }
    };
    let descriptor_path = dir.join("descriptor");
    let descriptor = fs::read(&descriptor_path).map_err(read_error(descriptor_path.clone()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        let file = fs::File::open(&path).map_err(read_error(path.clone()))?;
        let len = file.metadata().map_err(read_error(path.clone()))?.len();
        Ok::<_, ServerError>((file, len, path))
    };
    let (memory, memory_set_bytes, memory_path) = open("memory.set")?;
    if !(1..=daemon_protocol::MAX_DISKS).contains(&manifest.disks) {
        return Err(no_checkpoint());
    }
    let disks = (0..manifest.disks).map(|index| open(&disk_set_file(index))).collect::<Result<Vec<_>, _>>()?;
    let header = ReturnHeader {
        descriptor_bytes: descriptor.len() as u64,
        descriptor_crc: crc32fast::hash(&descriptor),
        memory_set_bytes,
        disk_set_bytes: disks.iter().map(|(_, len, _)| len).sum(),
        dirty_pages: manifest.dirty_pages,
        dirty_blocks: manifest.dirty_blocks,
        disk_count: disks.len() as u32,
        fence: manifest.fence.unwrap_or(0),
    };
    let copy = |mut file: &fs::File, path: &Path, writer: &mut ChunkWriter<'_>| {
        std::io::copy(&mut file, writer).map(drop).map_err(read_error(path.to_owned()))
    };
    stream_home(
        key,
        channel,
        header,
        &descriptor,
        |writer| copy(&memory, &memory_path, writer),
        |writer| disks.iter().try_for_each(|(file, _, path)| copy(file, path, writer)),
    )?;
    Ok((header, manifest))
}

/// Sends `header` on `channel`, then, as one stream, `descriptor` and
/// what `memory` and `disks` write (the dirty sets, `header`'s sizes:
/// `disks` writes one per disk, in order).
fn stream_home(
    key: &VmKey,
    channel: &mut Channel,
    header: ReturnHeader,
    descriptor: &[u8],
    memory: impl FnOnce(&mut ChunkWriter<'_>) -> Result<(), ServerError>,
    disks: impl FnOnce(&mut ChunkWriter<'_>) -> Result<(), ServerError>,
) -> Result<(), ServerError> {
    let broke = |source| ServerError::SendHome { key: key.clone(), source };
    channel
        .send(&daemon_protocol::Control::Returning(header).encode_body())
        .map_err(|e| broke(std::io::Error::other(e)))?;
    let mut writer = ChunkWriter::new(channel);
    writer.write_all(descriptor).map_err(broke)?;
    memory(&mut writer)?;
    disks(&mut writer)?;
    writer.finish().map(drop).map_err(broke)
}

/// The state directory of `key`.
pub(crate) fn state_dir(config: &ServerConfig, key: &VmKey) -> PathBuf {
    config.state_dir.join("vms").join(key.desktop.as_str()).join(key.vm.as_str())
}

/// The run directory of `key`.
pub(crate) fn run_dir(config: &ServerConfig, key: &VmKey) -> PathBuf {
    config.run_dir.join("vms").join(key.desktop.as_str()).join(key.vm.as_str())
}

/// Renames what an earlier stay of the VM left in `state` (slices of a VM
/// lost with the server), so that nothing is deleted.
fn keep_leftovers(key: &VmKey, state: &Path) -> Result<(), ServerError> {
    if !state.exists() {
        return Ok(());
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let kept = state.with_extension(format!("orphaned-{secs}"));
    tracing::warn!(from = %state.display(), to = %kept.display(), "keeping an earlier stay's slices");
    fs::rename(state, &kept).map_err(|source| ServerError::File {
        key: key.clone(),
        action: "move aside",
        path: state.to_owned(),
        source,
    })
}

/// A fresh console ticket: 24 hex digits from the kernel's random source.
fn new_ticket() -> String {
    let mut bytes = [0u8; 12];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    read.expect("/dev/urandom is readable on Linux");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `secret` to `path`, readable by root only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(secret.as_bytes())
}
