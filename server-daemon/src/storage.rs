//! A hosted VM's storage in a process of its own: memtap (its RAM, a FUSE
//! file QEMU maps) and cownetdisk (its disk, an NBD socket QEMU reads),
//! both fetching from the VM's desktop.
//!
//! They run apart from the daemon so that a restart or an upgrade of the
//! server daemon does not take the guest's memory and disk from under
//! QEMU: QEMU and this process run on, each in its own process group, and
//! the next daemon finds them again ([`VmStorage::attach`]). The daemon
//! starts it as `jettison vm-storage --spec FILE` ([`run`]) and talks to
//! it on a Unix socket in the VM's run directory, one JSON request and one
//! JSON reply a connection ([`StorageRequest`], [`StorageReply`]).
//!
//! Everything that goes through the FUSE file happens here too (syncing
//! the guest's last writes into memtap): the mount lives in this process's
//! mount namespace, which a restarted daemon may not share (systemd's
//! `PrivateMounts=`, `ip netns exec`).
//!
//! ```text
//! <run_dir>/vms/<desktop>/<vm>/storage.json   the spec it was started with
//! <run_dir>/vms/<desktop>/<vm>/storage.sock   its requests
//! <run_dir>/vms/<desktop>/<vm>/storage.pid    its pid
//! <state_dir>/vms/<desktop>/<vm>/fetch-trace.csv   every request memtap and cownetdisk
//!                                                  sent to the desktop this stay
//! ```
//!
//! The fetch trace is one file for both, opened here so that memory and
//! disk requests share one clock and one order; it is closed, with
//! memtap's and cownetdisk's final counters, when the process is shut.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cownetdisk::{Disk, DiskConfig, Listen, NbdServer};
use daemon_protocol::disk_export;
use identifiers::Mac;
use migration_formats::ZeroMap;
use remote_wakeup::{DesktopStatus, DesktopWaker, WakeTarget};
use slice_store::export_dirty_set;
use wire::{Cancel, Credentials, Hello, NoWake, RemoteConfig, Service, WakeHook};

use crate::key::VmKey;

/// The hidden subcommand of `jettison` that runs [`run`].
pub const SUBCOMMAND: &str = "vm-storage";
/// Its spec, socket and pid files in the VM's run directory.
const SPEC: &str = "storage.json";
const SOCKET: &str = "storage.sock";
const PID: &str = "storage.pid";
/// How long it may take to mount memtap and open cownetdisk.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a quick request (counters, a cancel) may take.
const QUICK: Duration = Duration::from_secs(10);
/// How long a request that writes data (a sync, the dirty sets, the
/// final flush) may take.
const SLOW: Duration = Duration::from_secs(300);
/// The fetch trace's file in the VM's state directory.
pub(crate) const FETCH_TRACE: &str = "fetch-trace.csv";
/// The longest request or reply line read.
const MAX_LINE: u64 = 1 << 20;
/// How often the prefetch cache's old pages move to the fetched slice
/// (those older than [`memtap::PREFETCH_MAX_AGE`]).
const AGE_EVERY: Duration = Duration::from_secs(10);

/// What the storage process of one VM is started with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StorageSpec {
    /// Its desktop.
    pub desktop: identifiers::HostName,
    /// The VM.
    pub vm: identifiers::VmName,
    /// Its state directory: memtap's and cownetdisk's slices, its zero map.
    pub state: PathBuf,
    /// Its run directory: the RAM file's mount point and the NBD socket.
    pub run: PathBuf,
    /// The desktop's memserv.
    pub memserv: SocketAddr,
    /// The desktop's diskserv.
    pub diskserv: SocketAddr,
    /// How many disks the VM has (1 to [`daemon_protocol::MAX_DISKS`]).
    pub disks: usize,
    /// How to wake the desktop before a fetch, if it sleeps.
    pub wake: Option<WakeSpec>,
    /// This server's key.
    pub host_key: PathBuf,
    /// The enrolled desktops.
    pub peers: PathBuf,
    /// The VM's history of fetch traces, whose working set
    /// ([`crate::traces::working_set`]) is pushed at start; none: no push.
    #[serde(default)]
    pub push_from: Option<PathBuf>,
    /// After the working set, push every other page the zero map does not
    /// cover: the VM then needs its desktop only for disk blocks.
    #[serde(default)]
    pub push_whole_memory: bool,
    /// In a fleet, the stay's fencing token, presented to memserv and
    /// diskserv in every hello.
    #[serde(default)]
    pub fence: Option<u64>,
}

/// How to wake a desktop: [`WakeTarget`]'s settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WakeSpec {
    /// The desktop's MAC.
    pub mac: Mac,
    /// Where magic packets are broadcast.
    pub broadcast: IpAddr,
    /// The interface for raw magic frames, if any.
    pub interface: Option<String>,
}

impl WakeSpec {
    /// The wake-up of `desktop`, awake when `probe` (its memserv) accepts a
    /// connection.
    pub fn target(&self, desktop: &str, probe: std::net::SocketAddr) -> WakeTarget {
        let mut target = WakeTarget::new(desktop, self.mac, self.broadcast, probe);
        target.raw_interface = self.interface.clone();
        target
    }
}

/// A request to the storage process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum StorageRequest {
    /// Its counters and the desktop's power, as this process sees them.
    Stats,
    /// Write the guest's pages still in the RAM file's page cache to
    /// memtap (an fsync of the file).
    SyncRam,
    /// Write the memory and disk dirty sets as they are now into the
    /// directory (`memory.set`, and per disk [`disk_set_file`]), durably.
    CopyDirtySets(PathBuf),
    /// End the fetches still waiting for the desktop: QEMU is being ended.
    Cancel,
    /// Read the enrolled peers again (`systemctl reload` of the daemon).
    ReloadPeers,
    /// Flush and close everything, then exit.
    Shut,
}

/// The storage process's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum StorageReply {
    /// Counters.
    Stats(Box<StorageStats>),
    /// Done.
    Done,
    /// The dirty sets were written: pages and blocks in them.
    DirtySets {
        /// Dirty memory pages.
        pages: u64,
        /// Dirty disk blocks.
        blocks: u64,
    },
    /// The request failed; why.
    Failed(String),
}

/// memtap's and cownetdisk's counters, and what the process knows of the
/// desktop's power.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StorageStats {
    /// memtap's.
    pub memory: memtap::RamStats,
    /// cownetdisk's, one per disk in the guest's order.
    pub disks: Vec<cownetdisk::DiskStats>,
    /// The desktop's power and wakes, when it can sleep.
    pub desktop: Option<DesktopStatus>,
}

/// What went wrong with a VM's storage process.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Its spec could not be written or read.
    #[error("cannot {action} {}", path.display())]
    File {
        /// "write", "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start {} {SUBCOMMAND}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It started but could not serve the VM.
    #[error("its storage process could not start: {0}")]
    Startup(String),
    /// A request could not be sent or its answer read.
    #[error("no answer from its storage process ({}) to {request}", socket.display())]
    Ask {
        /// The request.
        request: &'static str,
        /// The socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It answered that the request failed.
    #[error("its storage process failed to {request}: {why}")]
    Failed {
        /// The request.
        request: &'static str,
        /// Its words.
        why: String,
    },
}

/// The daemon's handle on one VM's storage process. Dropping it ends the
/// fetches and shuts the process (QEMU must be gone by then), unless it
/// was [left running](VmStorage::leave_running) or already shut.
#[derive(Debug)]
pub struct VmStorage {
    /// The process, when this daemon started it (to reap it).
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    /// Shut, killed or left running: nothing left to do on drop.
    done: bool,
}

impl Drop for VmStorage {
    fn drop(&mut self) {
        if !self.done {
            self.cancel_fetches();
            if let Err(e) = self.shut() {
                tracing::error!("closing a VM's storage: {}", wire::chain(&e));
            }
        }
    }
}

impl VmStorage {
    /// Starts `program SUBCOMMAND --spec <run>/storage.json` for `spec`
    /// and waits until memtap is mounted and cownetdisk listens.
    ///
    /// # Errors
    /// [`StorageError::Spawn`], [`StorageError::File`], or
    /// [`StorageError::Startup`] with the process's own words.
    pub fn spawn(program: &Path, spec: &StorageSpec) -> Result<VmStorage, StorageError> {
        let spec_file = spec.run.join(SPEC);
        let json = serde_json::to_vec_pretty(spec).expect("a storage spec serialises");
        durable_file::replace_file(&spec_file, &[&json]).map_err(|source| StorageError::File {
            action: "write",
            path: spec_file.clone(),
            source,
        })?;
        let mut command = Command::new(program);
        command.arg(SUBCOMMAND).arg("--spec").arg(&spec_file);
        // Its own process group: a signal meant for the daemon (Ctrl-C at
        // a terminal, systemd's KillMode=process) does not reach it.
        command.process_group(0);
        // SAFETY: clear_signal_mask is async-signal-safe; nothing else runs
        // between fork and exec. The daemon blocks the signals it waits
        // for; the child must get them as usual.
        unsafe {
            command.pre_exec(qemu_driver::clear_signal_mask);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| StorageError::Spawn { program: program.to_owned(), source })?;
        let stdout = child.stdout.take().expect("stdout was piped");
        // One line: "ready", or "failed: why". A reader thread, so that a
        // process that hangs is given up on after START_TIMEOUT.
        let (said, heard) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout.take(MAX_LINE)).read_line(&mut line);
            let _ = said.send(line);
        });
        let line = heard.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let mut storage = VmStorage { pid: child.id(), child: Some(child), socket: spec.run.join(SOCKET), done: false };
        match line.trim_end() {
            "ready" => Ok(storage),
            other => {
                let why = match other.strip_prefix("failed: ") {
                    Some(why) => why.to_owned(),
                    None if other.is_empty() => {
                        format!("it said nothing within {} s", START_TIMEOUT.as_secs())
                    }
                    None => format!("it said {other:?}"),
                };
                storage.kill();
                Err(StorageError::Startup(why))
            }
        }
    }

    /// The storage process an earlier daemon started for the VM whose run
    /// directory is `run`, if it still runs.
    pub fn attach(run: &Path) -> Option<VmStorage> {
        let pid: u32 = fs::read_to_string(run.join(PID)).ok()?.trim().parse().ok()?;
        // Ours by its command line: the subcommand and this VM's spec.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let spec = run.join(SPEC);
        let ours = args.contains(&SUBCOMMAND.as_bytes()) && args.contains(&spec.as_os_str().as_encoded_bytes());
        (ours && qemu_driver::process_alive(pid)).then(|| VmStorage {
            child: None,
            pid,
            socket: run.join(SOCKET),
            done: false,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => qemu_driver::process_alive(self.pid),
        }
    }

    /// Its counters.
    ///
    /// # Errors
    /// [`StorageError::Ask`] or [`StorageError::Failed`].
    pub fn stats(&self) -> Result<StorageStats, StorageError> {
        match self.ask(&StorageRequest::Stats, "report its counters", QUICK)? {
            StorageReply::Stats(stats) => Ok(*stats),
            other => Err(unexpected("report its counters", &other)),
        }
    }

    /// Has the guest's last writes in the RAM file's page cache written to
    /// memtap.
    ///
    /// # Errors
    /// [`StorageError::Ask`] or [`StorageError::Failed`].
    pub fn sync_ram(&self) -> Result<(), StorageError> {
        self.ask_done(&StorageRequest::SyncRam, "sync the RAM file", SLOW)
    }

    /// Has the dirty sets written into `dir`; returns the dirty pages and
    /// blocks.
    ///
    /// # Errors
    /// [`StorageError::Ask`] or [`StorageError::Failed`].
    pub fn copy_dirty_sets(&self, dir: &Path) -> Result<(u64, u64), StorageError> {
        match self.ask(&StorageRequest::CopyDirtySets(dir.to_owned()), "copy its dirty sets", SLOW)? {
            StorageReply::DirtySets { pages, blocks } => Ok((pages, blocks)),
            other => Err(unexpected("copy its dirty sets", &other)),
        }
    }

    /// Has the enrolled peers read again.
    ///
    /// # Errors
    /// [`StorageError::Ask`] or [`StorageError::Failed`] (the old peers
    /// stay in force then).
    pub fn reload_peers(&self) -> Result<(), StorageError> {
        self.ask_done(&StorageRequest::ReloadPeers, "read the enrolled peers again", QUICK)
    }

    /// Ends the fetches still waiting for the desktop (QEMU is being
    /// ended); a process that does not answer is logged, not waited for.
    pub fn cancel_fetches(&self) {
        if let Err(e) = self.ask_done(&StorageRequest::Cancel, "cancel its fetches", QUICK) {
            tracing::warn!("{}", wire::chain(&e));
        }
    }

    /// Lets the process run on after this handle is gone, for the next
    /// daemon ([`VmStorage::attach`]).
    pub fn leave_running(&mut self) {
        self.done = true;
    }

    /// Flushes and closes memtap and cownetdisk and waits for the process
    /// to exit. QEMU must be gone.
    ///
    /// # Errors
    /// [`StorageError::Ask`] or [`StorageError::Failed`]; the process is
    /// killed then, what it had flushed stays.
    pub fn shut(&mut self) -> Result<(), StorageError> {
        if self.done {
            return Ok(());
        }
        let asked = self.ask_done(&StorageRequest::Shut, "flush and close", SLOW);
        if asked.is_err() {
            self.kill();
            return asked;
        }
        for _ in 0..100 {
            if !self.is_running() {
                self.done = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Ok(())
    }

    /// Kills it (SIGKILL) and reaps it if it is ours.
    fn kill(&mut self) {
        self.done = true;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), nix::sys::signal::SIGKILL);
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
    }

    fn ask_done(&self, request: &StorageRequest, what: &'static str, within: Duration) -> Result<(), StorageError> {
        match self.ask(request, what, within)? {
            StorageReply::Done => Ok(()),
            other => Err(unexpected(what, &other)),
        }
    }

    fn ask(
        &self,
        request: &StorageRequest,
        what: &'static str,
        within: Duration,
    ) -> Result<StorageReply, StorageError> {
        let broke = |source| StorageError::Ask { request: what, socket: self.socket.clone(), source };
        let mut stream = UnixStream::connect(&self.socket).map_err(broke)?;
        stream.set_read_timeout(Some(within)).map_err(broke)?;
        stream.set_write_timeout(Some(QUICK)).map_err(broke)?;
        let mut line = serde_json::to_vec(request).expect("a storage request serialises");
        line.push(b'\n');
        stream.write_all(&line).map_err(broke)?;
        let reply = read_line(&stream).map_err(broke)?;
        match serde_json::from_str(&reply).map_err(|e| broke(std::io::Error::other(e)))? {
            StorageReply::Failed(why) => Err(StorageError::Failed { request: what, why }),
            reply => Ok(reply),
        }
    }
}

fn unexpected(request: &'static str, reply: &StorageReply) -> StorageError {
    StorageError::Failed { request, why: format!("unexpected answer {reply:?}") }
}

/// The processes that still map or hold open a file under `dir`, as
/// `pid (command)` entries, for the log.
fn holders_of(dir: &Path) -> String {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let maps = fs::read_to_string(entry.path().join("maps")).unwrap_or_default().contains(&needle);
        let fds = fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy().contains(&needle)));
        if maps || fds {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} ({})", comm.trim()));
        }
    }
    if found.is_empty() {
        "none found in this PID namespace".to_owned()
    } else {
        found.join(", ")
    }
}

/// One line (without its newline) of at most [`MAX_LINE`] bytes.
fn read_line(stream: &UnixStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE)).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the line ended early"));
    }
    line.pop();
    Ok(line)
}

/// The storage process itself (`jettison vm-storage --spec FILE`): mounts
/// memtap, serves cownetdisk, says "ready" on stdout (or "failed: why"),
/// then answers the daemon until it is told to [shut](StorageRequest::Shut).
///
/// # Errors
/// What kept it from starting, or from serving its socket.
pub fn run(spec_file: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let started = start(spec_file);
    let mut stdout = std::io::stdout();
    let (storage, listener) = match started {
        Ok(started) => {
            let _ = stdout.write_all(b"ready\n").and_then(|()| stdout.flush());
            started
        }
        Err(e) => {
            let _ = writeln!(stdout, "failed: {}", wire::chain(&*e)).and_then(|()| stdout.flush());
            return Err(e);
        }
    };
    tracing::info!(desktop = %storage.key.desktop, vm = %storage.key.vm, pid = std::process::id(), "serving the VM's memory and disk");
    let storage = Arc::new(storage);
    let ager = Arc::clone(&storage);
    std::thread::spawn(move || ager.age_prefetched());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(QUICK));
        let reply = match read_line(&stream)
            .map_err(|e| e.to_string())
            .and_then(|line| serde_json::from_str::<StorageRequest>(&line).map_err(|e| format!("not a request: {e}")))
        {
            Ok(StorageRequest::Shut) => {
                let reply = match storage.shut() {
                    Ok(()) => StorageReply::Done,
                    Err(e) => StorageReply::Failed(e),
                };
                answer(&stream, &reply);
                let _ = fs::remove_file(storage.spec.run.join(SOCKET));
                let _ = fs::remove_file(storage.spec.run.join(PID));
                tracing::info!(desktop = %storage.key.desktop, vm = %storage.key.vm, "memory and disk closed");
                return Ok(());
            }
            Ok(request) => storage.serve(request),
            Err(why) => StorageReply::Failed(why),
        };
        answer(&stream, &reply);
    }
    Ok(())
}

fn answer(mut stream: &UnixStream, reply: &StorageReply) {
    let mut line = serde_json::to_vec(reply).expect("a storage reply serialises");
    line.push(b'\n');
    let _ = stream.write_all(&line);
}

/// What the storage process serves.
struct Serving {
    key: VmKey,
    spec: StorageSpec,
    mount: std::sync::Mutex<Option<memtap::Mount>>,
    /// Its disks, in the guest's order.
    disks: std::sync::Mutex<Vec<HostedDisk>>,
    fetches: Cancel,
    waker: Option<Arc<DesktopWaker>>,
    credentials: Arc<Credentials>,
    trace: Option<Arc<fetch_trace::TraceWriter>>,
}

/// Reads the spec, mounts memtap, opens and serves cownetdisk, and binds
/// the request socket.
fn start(spec_file: &Path) -> Result<(Serving, UnixListener), Box<dyn std::error::Error + Send + Sync>> {
    let json = fs::read(spec_file).map_err(|source| StorageError::File {
        action: "read",
        path: spec_file.to_owned(),
        source,
    })?;
    let spec: StorageSpec = serde_json::from_slice(&json)?;
    let key = VmKey { desktop: spec.desktop.clone(), vm: spec.vm.clone() };
    let vm = &spec.vm;
    let credentials = Arc::new(Credentials::load(&spec.host_key, &spec.peers)?);
    let zero_map_file = spec.state.join(ZERO_MAP);
    let zero_map = ZeroMap::decode(&fs::read(&zero_map_file)?)?;
    let waker =
        spec.wake.as_ref().map(|wake| Arc::new(DesktopWaker::new(wake.target(spec.desktop.as_str(), spec.memserv))));
    let wake: Arc<dyn WakeHook> = match &waker {
        Some(waker) => Arc::clone(waker) as Arc<dyn WakeHook>,
        None => Arc::new(NoWake),
    };
    // A VM runs without its trace rather than not at all.
    let trace_file = spec.state.join(FETCH_TRACE);
    let trace = match fetch_trace::TraceWriter::open(&trace_file) {
        Ok(trace) => Some(Arc::new(trace)),
        Err(e) => {
            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot open {}, fetches go unrecorded: {e}", trace_file.display());
            None
        }
    };
    let fetches = Cancel::new();
    let remote = |addr: SocketAddr, service, export: String| {
        let hello = Hello::new(service, export).with_fence(spec.fence);
        let mut remote = RemoteConfig::new(addr.to_string(), Arc::clone(&credentials), hello);
        // The desktop that moved the VM here, and no other, serves it.
        remote.peer = Some(spec.desktop.clone());
        remote.cancel = fetches.clone();
        remote
    };
    let mut memory = memtap::RamFileConfig::new(
        vm.as_str(),
        spec.state.join("memory"),
        remote(spec.memserv, Service::Memory, vm.to_string()),
    );
    memory.zero_pages = zero_map.ranges;
    memory.zero_map_pages = Some(zero_map.units);
    memory.wake = Arc::clone(&wake);
    memory.trace = trace.clone();
    let memory_window = memory.pivot_window;
    let mount = memtap::Mount::start(&spec.run.join("ram"), vec![memory])?;
    if let Some(ram) = mount.vms().first() {
        if spec.push_from.is_some() || spec.push_whole_memory {
            let push =
                Push { history: spec.push_from.clone(), whole_memory: spec.push_whole_memory, window: memory_window };
            push.start(&key, Arc::clone(ram));
        }
    }
    if !(1..=daemon_protocol::MAX_DISKS).contains(&spec.disks) {
        return Err(format!("{} disks: a VM has 1 to {}", spec.disks, daemon_protocol::MAX_DISKS).into());
    }
    let mut disks = Vec::with_capacity(spec.disks);
    for index in 0..spec.disks {
        let remote = remote(spec.diskserv, Service::Disk, disk_export(vm, index));
        disks.push(HostedDisk::serve(&key, index, &spec.state, &spec.run, remote, Arc::clone(&wake), trace.clone())?);
    }
    let serving = Serving {
        key,
        mount: std::sync::Mutex::new(Some(mount)),
        disks: std::sync::Mutex::new(disks),
        fetches,
        waker,
        spec,
        credentials,
        trace,
    };
    let socket = serving.spec.run.join(SOCKET);
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))?;
    durable_file::replace_file(&serving.spec.run.join(PID), &[std::process::id().to_string().as_bytes()])?;
    Ok((serving, listener))
}

/// What the storage process fetches at consolidation, before the guest
/// asks, while the desktop is still awake from the move: the working set of
/// the VM's kept stays, then (with `whole_memory`) every other page.
struct Push {
    /// The VM's history of fetch traces, whose working set goes first.
    history: Option<PathBuf>,
    /// Then every page not yet here that the zero map does not cover.
    whole_memory: bool,
    /// memtap's pivot window, with which the history's faults fetched.
    window: u64,
}

/// Pages asked of memtap's push at once when the whole memory is pushed:
/// 256 MiB, so that the list stays small whatever the VM's size.
const WHOLE_MEMORY_STEP: u64 = 65_536;

impl Push {
    /// Pushes into `ram` from a thread of its own; the guest runs meanwhile
    /// and faults as usual. A failed push is logged: the pages then come on
    /// demand.
    fn start(self, key: &VmKey, ram: Arc<memtap::VmMemory>) {
        let key = key.clone();
        // The traces are read on the push's thread too: the storage process
        // says it is ready (and the consolidation goes on) without waiting.
        let spawned = std::thread::Builder::new().name("push".into()).spawn(move || {
            let ram_pages = ram.size() / memtap::PAGE_SIZE;
            let started = std::time::Instant::now();
            if let Some(dir) = &self.history {
                let pages = crate::traces::working_set(dir, self.window, ram_pages);
                if !pages.is_empty() {
                    match ram.push(&pages) {
                        Ok(pushed) => tracing::info!(
                            desktop = %key.desktop, vm = %key.vm, pushed, known = pages.len(),
                            "working set of earlier stays pushed in {:.1} s",
                            started.elapsed().as_secs_f64()
                        ),
                        Err(e) => return tracing::warn!(desktop = %key.desktop, vm = %key.vm, "{}", wire::chain(&e)),
                    }
                }
            }
            if self.whole_memory {
                let mut pushed = 0;
                for from in (0..ram_pages).step_by(WHOLE_MEMORY_STEP as usize) {
                    let pages: Vec<u64> = (from..ram_pages.min(from + WHOLE_MEMORY_STEP)).collect();
                    match ram.push(&pages) {
                        Ok(n) => pushed += n,
                        Err(e) => return tracing::warn!(desktop = %key.desktop, vm = %key.vm, "{}", wire::chain(&e)),
                    }
                }
                tracing::info!(
                    desktop = %key.desktop, vm = %key.vm, pushed,
                    "whole memory pushed in {:.1} s: the VM needs its desktop only for disk blocks now",
                    started.elapsed().as_secs_f64()
                );
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the push, the pages come on demand: {e}");
        }
    }
}

/// The zero map of consolidation, in the VM's state directory.
pub(crate) const ZERO_MAP: &str = "zero.map";
/// The NBD socket under the VM's run directory `run` of its disk `index`.
pub(crate) fn disk_socket(run: &Path, index: usize) -> PathBuf {
    run.join(if index == 0 { "disk.nbd".to_owned() } else { format!("disk.{index}.nbd") })
}

/// The file of a checkpoint that holds disk `index`'s dirty set.
pub(crate) fn disk_set_file(index: usize) -> String {
    if index == 0 {
        "disk.set".to_owned()
    } else {
        format!("disk.{index}.set")
    }
}

/// One disk of a hosted VM: a cownetdisk [`Disk`] over its slices, served
/// to QEMU by an NBD server of its own.
struct HostedDisk {
    disk: Arc<Disk>,
    nbd_stop: cownetdisk::StopHandle,
    nbd_thread: Option<std::thread::JoinHandle<()>>,
}

impl HostedDisk {
    /// Opens disk `index` of `key` (slices under `<state>/disk/<export>`,
    /// fetched from `remote`, the desktop's diskserv under the disk's
    /// export) and serves it on its socket under `run`; its fetches go in
    /// `trace`.
    fn serve(
        key: &VmKey,
        index: usize,
        state: &Path,
        run: &Path,
        remote: RemoteConfig,
        wake: Arc<dyn WakeHook>,
        trace: Option<Arc<fetch_trace::TraceWriter>>,
    ) -> Result<HostedDisk, cownetdisk::CownetdiskError> {
        let mut config = DiskConfig::new(disk_export(&key.vm, index), state.join("disk"), remote);
        config.trace = trace;
        let disk = Arc::new(Disk::open(config, wake)?);
        let nbd = NbdServer::bind(Arc::clone(&disk), &Listen { unix: Some(disk_socket(run, index)), tcp: None })?;
        let nbd_stop = nbd.stop_handle();
        let nbd_key = key.clone();
        let nbd_thread = std::thread::spawn(move || {
            if let Err(e) = nbd.run() {
                tracing::error!(desktop = %nbd_key.desktop, vm = %nbd_key.vm, disk = index, "cownetdisk stopped: {}", wire::chain(&e));
            }
        });
        Ok(HostedDisk { disk, nbd_stop, nbd_thread: Some(nbd_thread) })
    }

    /// Stops its NBD server and flushes it.
    fn stop(&mut self) -> Result<(), cownetdisk::CownetdiskError> {
        self.nbd_stop.stop();
        if let Some(thread) = self.nbd_thread.take() {
            let _ = thread.join();
        }
        self.disk.flush()
    }
}

impl Serving {
    fn ram_file(&self) -> PathBuf {
        crate::hosted::ram_file(&self.spec.run, &self.spec.vm)
    }

    fn serve(&self, request: StorageRequest) -> StorageReply {
        let failed = |e: &dyn std::error::Error| StorageReply::Failed(wire::chain(e));
        match request {
            StorageRequest::Stats => {
                let memory = self.with_ram(|ram| Ok(ram.stats())).unwrap_or_default();
                let desktop = self.waker.as_ref().map(|w| w.status());
                let disks = self.lock_disks().iter().map(|d| d.disk.stats()).collect();
                StorageReply::Stats(Box::new(StorageStats { memory, disks, desktop }))
            }
            StorageRequest::SyncRam => match crate::hosted::sync_ram(&self.ram_file()) {
                Ok(()) => StorageReply::Done,
                Err(e) => failed(&e),
            },
            StorageRequest::CopyDirtySets(dir) => match self.copy_dirty_sets(&dir) {
                Ok((pages, blocks)) => StorageReply::DirtySets { pages, blocks },
                Err(e) => failed(&*e),
            },
            StorageRequest::Cancel => {
                self.fetches.cancel();
                StorageReply::Done
            }
            StorageRequest::ReloadPeers => match self.credentials.reload_peers() {
                Ok(_) => StorageReply::Done,
                Err(e) => failed(&e),
            },
            StorageRequest::Shut => unreachable!("answered by run"),
        }
    }

    fn lock_disks(&self) -> std::sync::MutexGuard<'_, Vec<HostedDisk>> {
        self.disks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every [`AGE_EVERY`], until memtap is unmounted: moves the pages
    /// that waited in the prefetch cache for [`memtap::PREFETCH_MAX_AGE`]
    /// into the fetched slice, so that an idle VM holds no copy of them in
    /// this process's memory.
    fn age_prefetched(&self) {
        loop {
            std::thread::sleep(AGE_EVERY);
            if self.mount.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none() {
                return;
            }
            match self.with_ram(|ram| Ok(ram.age_prefetched(memtap::PREFETCH_MAX_AGE)?)) {
                Ok(0) => {}
                Ok(pages) => {
                    tracing::debug!(desktop = %self.key.desktop, vm = %self.key.vm, pages, "aged prefetched pages into the fetched slice");
                    // The pages' buffers were freed, but glibc's allocator
                    // keeps freed small blocks in its arenas: give them back
                    // to the kernel, or the process's memory never shrinks.
                    // SAFETY: malloc_trim only walks the allocator's own state.
                    unsafe { libc::malloc_trim(0) };
                }
                Err(e) => tracing::warn!(desktop = %self.key.desktop, vm = %self.key.vm, "{}", wire::chain(&*e)),
            }
        }
    }

    fn with_ram<T>(
        &self,
        f: impl FnOnce(&memtap::VmMemory) -> Result<T, Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
        let mount = self.mount.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ram = mount.as_ref().and_then(|m| m.vms().first()).ok_or("memtap serves no RAM")?;
        f(ram)
    }

    /// Writes the memory and disk dirty sets as they are now into `dir`
    /// (`memory.set`, and per disk [`disk_set_file`]), durably; the VM
    /// must be stopped. Returns the dirty pages and blocks (of all disks).
    fn copy_dirty_sets(&self, dir: &Path) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
        self.with_ram(|memory| {
            memory.flush()?;
            let disks = self.lock_disks();
            let mut sets = vec![(memory.slices(), "memory.set".to_owned())];
            for (index, disk) in disks.iter().enumerate() {
                disk.disk.flush()?;
                sets.push((disk.disk.slices(), disk_set_file(index)));
            }
            let mut counts = Vec::new();
            for (store, file) in sets {
                let out = fs::File::create(dir.join(file))?;
                export_dirty_set(store, &out)?;
                out.sync_all()?;
                // On disk now, and read only if this server crashes: its
                // page cache would be a third copy of the dirty pages.
                let _ = nix::fcntl::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&out),
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
                counts.push(store.dirty_count());
            }
            durable_file::sync_dir(dir)?;
            Ok((counts[0], counts[1..].iter().sum()))
        })
    }

    /// Stops the NBD server and memtap, flushing both; a fetch still
    /// waiting for the desktop is given up (QEMU, its only reader, is gone).
    fn shut(&self) -> Result<(), String> {
        self.fetches.cancel();
        let mut flushed = Ok(());
        for (index, disk) in self.lock_disks().iter_mut().enumerate() {
            let stopped = disk.stop().map_err(|e| format!("cownetdisk cannot flush disk {index}: {}", wire::chain(&e)));
            if flushed.is_ok() {
                flushed = stopped;
            }
        }
        flushed?;
        let memory = self.with_ram(|ram| Ok(ram.stats())).unwrap_or_default();
        let mount = self.mount.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(mount) = mount {
            match mount.unmount() {
                // Flushed first, then detached lazily: the slices are
                // whole; only the mount lingers while its holder lives.
                Err(e @ memtap::MemtapError::Busy { .. }) => {
                    let holders = holders_of(&self.spec.run.join("ram"));
                    tracing::warn!(desktop = %self.key.desktop, vm = %self.key.vm, holders = %holders, "{}", wire::chain(&e));
                }
                other => other.map_err(|e| format!("memtap cannot unmount its RAM: {}", wire::chain(&e)))?,
            }
        }
        if let Some(trace) = &self.trace {
            let disks: Vec<_> = self.lock_disks().iter().map(|d| d.disk.stats()).collect();
            let totals = fetch_trace::Totals {
                memory_requests: memory.remote_fetches,
                memory_units: memory.pages_fetched,
                disk_requests: disks.iter().map(|d| d.remote_requests).sum(),
                disk_units: disks.iter().map(|d| d.blocks_fetched).sum(),
                ..fetch_trace::Totals::default()
            };
            if let Err(e) = trace.close(totals) {
                tracing::warn!(desktop = %self.key.desktop, vm = %self.key.vm, "cannot close {}: {e}", trace.path().display());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_that_names_another_program_is_not_taken_over() {
        let run = tempfile::tempdir().unwrap();
        // This test's own process: alive, but not `jettison vm-storage`.
        fs::write(run.path().join(PID), std::process::id().to_string()).unwrap();
        assert!(VmStorage::attach(run.path()).is_none());
        fs::write(run.path().join(PID), "not a pid").unwrap();
        assert!(VmStorage::attach(run.path()).is_none());
        fs::remove_file(run.path().join(PID)).unwrap();
        assert!(VmStorage::attach(run.path()).is_none());
    }

    #[test]
    fn a_line_without_its_end_within_the_limit_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let mut b = b;
            let _ = b.write_all(&vec![b'x'; MAX_LINE as usize + 10]);
        });
        assert!(read_line(&a).is_err());
        drop(a);
        writer.join().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"Stats\":null}\n").unwrap();
        assert_eq!(read_line(&a).unwrap(), "{\"Stats\":null}");
    }
}
