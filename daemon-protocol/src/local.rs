//! The local control socket between the `jettison` command and a daemon on
//! the same host: one JSON object per line.
//!
//! The command sends one [`LocalRequest`]; the daemon answers with any
//! number of [`LocalReply::Progress`] and [`LocalReply::Log`] lines and one
//! final [`LocalReply::Done`] carrying a typed [`Report`], or
//! [`LocalReply::Failed`], then closes. JSON so that a script or `socat`
//! can talk to a daemon too. Who may connect, and ask what, is
//! [`crate::local_access`]'s: root, and a group. The command deserialises each report into its type,
//! so a renamed or missing field is an error, never a silent zero.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use identifiers::{HostName, VmName};
use serde::{Deserialize, Serialize};

use crate::local_access::{Peer, SocketAccess};
use crate::protocol::HostedStatus;

/// How long a daemon's status answer waits for a VM another thread holds
/// (a load sample or a poll holds it for milliseconds) before it says the
/// VM is moving (a consolidation or a reintegration holds it for seconds).
pub const STATUS_PATIENCE: Duration = Duration::from_secs(2);

/// Locks `vm` to report on it: waits up to [`STATUS_PATIENCE`]; `None`
/// means a move holds it, and the answer says "moving". A lock a panicking
/// thread poisoned is still read: a status answer only looks.
pub fn lock_for_status<T>(vm: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    let deadline = Instant::now() + STATUS_PATIENCE;
    loop {
        match vm.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// What the command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    /// Where every VM runs and what it has moved.
    Status,
    /// Move a VM to the server.
    Consolidate {
        /// The VM.
        vm: VmName,
        /// Skip the idleness check.
        force: bool,
    },
    /// Bring a VM back from the server.
    Reintegrate {
        /// The VM.
        vm: VmName,
        /// Bring it back from the server's last checkpoint of it (the
        /// server lost the VM itself: its QEMU died, or it restarted).
        #[serde(default)]
        recover: bool,
    },
    /// Boot a VM that is off (or take over its QEMU if one runs).
    Start {
        /// The VM.
        vm: VmName,
    },
    /// Press a VM's power button and wait for its guest to power off.
    Shutdown {
        /// The VM.
        vm: VmName,
        /// How long to wait before giving up (the VM then keeps running).
        timeout_secs: u64,
    },
    /// End a VM's QEMU at once, as pulling the plug.
    Destroy {
        /// The VM.
        vm: VmName,
    },
    /// A host shutdown. On a desktop: save every running VM to its
    /// checkpoint and end its QEMU; the daemon resumes them when it next
    /// starts. On the server: send every hosted VM home.
    SaveAll,
    /// Where to look at a VM's screen.
    View {
        /// The VM.
        vm: VmName,
    },
    /// Write what a VM's screen shows to a file of the daemon's own (in the
    /// VM's run directory: a client never names a path the daemon writes),
    /// on whichever host runs it: the desktop's daemon or the server's.
    Screenshot {
        /// The VM.
        vm: VmName,
        /// PNG (else PPM, binary `P6`).
        png: bool,
    },
}

/// How to reach a VM's screen with a SPICE viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum ViewTarget {
    /// On this desktop, through a Unix socket only root can open.
    Local {
        /// The `spice+unix://` URI.
        uri: String,
    },
    /// On the server while the VM is consolidated: a TCP port and a ticket.
    Remote {
        /// The server's host.
        host: String,
        /// The SPICE port.
        port: u16,
        /// The ticket (password) of this stay on the server.
        ticket: String,
    },
}

/// What a consolidation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsolidateReport {
    /// The VM.
    pub vm: VmName,
    /// Bytes of the descriptor sent to the server.
    pub descriptor_bytes: u64,
    /// Pages of the RAM file that are zero (never fetched).
    pub zero_pages: u64,
    /// The working set the server expects of it, in bytes.
    pub expected_bytes: u64,
    /// Seconds from `stop` here to `cont` on the server.
    pub downtime_secs: f64,
    /// Seconds from the request to the VM running on the server.
    pub total_secs: f64,
    /// Milliseconds the server took from the request to `cont`.
    pub server_ms: u64,
}

/// What a reintegration brought back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReintegrateReport {
    /// The VM.
    pub vm: VmName,
    /// Bytes received: descriptor, memory and disk dirty sets.
    pub bytes: u64,
    /// Pages written into the RAM file.
    pub dirty_pages: u64,
    /// Blocks written into the disk images (all the VM's disks together).
    pub dirty_blocks: u64,
    /// Seconds until the server had stopped it.
    pub server_stop_secs: f64,
    /// Seconds of the transfer.
    pub transfer_secs: f64,
    /// Seconds from the request to the VM running here.
    pub total_secs: f64,
}

/// Where a desktop's VM is, as the desktop daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmLocation {
    /// Here.
    Desktop,
    /// On the server.
    Server,
    /// Being moved now.
    Moving,
    /// Here, powered off.
    Off,
    /// Here, saved to its checkpoint (a host shutdown); resumed at the next daemon start.
    Saved,
}

/// One VM of a desktop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesktopVmStatus {
    /// The VM.
    pub vm: VmName,
    /// Where it is.
    pub on: VmLocation,
    /// When it left for the server (seconds since the epoch).
    pub since: Option<u64>,
    /// Whether QEMU runs it here.
    pub running_here: bool,
    /// Why its last start or run here failed, with QEMU's own words.
    pub error: Option<String>,
    /// The server's view of it, when it is there and the server answered.
    pub server: Option<HostedStatus>,
}

/// The desktop daemon's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesktopStatus {
    /// This desktop.
    pub desktop: HostName,
    /// Its server, `host:port`.
    pub server: String,
    /// Whether the server answered.
    pub server_reachable: bool,
    /// Why not, if it did not.
    pub server_error: Option<String>,
    /// Its VMs.
    pub vms: Vec<DesktopVmStatus>,
    /// How it sleeps while its VMs are away; absent without `[power]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<DesktopPower>,
    /// How it watches the user; absent without `[activity]` (boxed: a
    /// status is the largest report as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Box<DesktopActivity>>,
}

/// Where the desktop's activity monitor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopActivityState {
    /// No idle source answers yet (no user session): see `source_error`.
    NoSource,
    /// Watching the user, who is here (or not idle long enough yet).
    Watching,
    /// The user has been idle long enough and is being warned.
    Warned,
    /// The user is away; the monitor moved `moved` to the server (or is
    /// moving them) and waits for the user's return.
    Away,
    /// The user is back; the monitor is bringing `moved` home.
    Returning,
}

/// The desktop's activity monitor, for `jettison status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesktopActivity {
    /// Where it is now.
    pub state: DesktopActivityState,
    /// The idle source it reads ("x11 :0", "logind session 2", ...), if one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why no source answers, while none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// Seconds since the user's last input, as the source last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_secs: Option<f64>,
    /// When that input was (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<u64>,
    /// The idle threshold before the warning (`idle_secs` in `[activity]`).
    pub idle_limit_secs: u64,
    /// How long the warning lasts (`warn_secs`).
    pub warn_secs: u64,
    /// Whether the warning shows as a window on the user's display (else
    /// only in the log: the display does not answer).
    pub warning_window: bool,
    /// The VMs the monitor moved to the server and brings back at the
    /// user's return.
    pub moved: Vec<VmName>,
    /// VMs brought back by hand, which the monitor leaves here until the
    /// user has been at the desk again.
    pub held: Vec<VmName>,
}

/// Where the desktop is in its sleep cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopPowerState {
    /// No power session: a VM runs here, or none is away.
    NotSleeping,
    /// A session runs and the desktop is awake (waiting for t_w or serving).
    Awake,
    /// Going to sleep.
    Suspending,
    /// Asleep.
    Asleep,
    /// Waking up for a request.
    Resuming,
    /// It would sleep, but refused: see `refused`.
    Refused,
}

/// The desktop's sleep, for `jettison status`: the current power session's
/// figures, or the last one's once it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesktopPower {
    /// Where it is now.
    pub state: DesktopPowerState,
    /// Why it refuses to sleep (its NIC would not wake it), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Times it fell asleep in the session.
    pub sleeps: u64,
    /// Times a request woke it in the session.
    pub wakes: u64,
    /// Seconds asleep in the session (the ledger, as of its last state change).
    pub asleep_secs: f64,
    /// Energy saved against staying idle, joules (the ledger).
    pub saved_joules: f64,
    /// The same as a percentage of staying idle.
    pub saved_percent: f64,
    /// The ledger's directory (`ledger.json`, `power.svg`).
    pub ledger_dir: PathBuf,
}

/// The server daemon's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// This server.
    pub server: HostName,
    /// The VMs it hosts.
    pub vms: Vec<HostedStatus>,
    /// Its energy ledger: each VM's share of the server against what its
    /// desktop saves (absent from a daemon of a release without one).
    #[serde(default)]
    pub energy: Option<ServerEnergy>,
}

/// The server's power, split across the VMs it hosts (`[energy]` in
/// server.toml), and each VM's net saving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnergy {
    /// Where its active power comes from: `profile` or `rapl`.
    pub source: String,
    /// The server's idle power, watts.
    pub idle_watts: f64,
    /// Its power with every CPU busy, watts.
    pub busy_watts: f64,
    /// What a desktop saves while asleep (its idle minus its sleep power), watts.
    pub desktop_saving_watts: f64,
    /// How many VMs must share the server before each one's share of its
    /// idle power is below what its desktop saves asleep.
    pub break_even_vms: u32,
    /// Whether a VM that would cost more than it saves is refused.
    pub refuse_unprofitable: bool,
    /// Each hosted VM's account of its stay so far.
    pub vms: Vec<VmEnergy>,
}

/// One VM's stay, in joules: its share of the server, what its desktop
/// saved, and the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmEnergy {
    /// Its desktop.
    pub desktop: HostName,
    /// The VM.
    pub vm: VmName,
    /// Seconds accounted (since it came, or since this daemon took it over).
    pub seconds: f64,
    /// CPU seconds of its QEMU and its storage process (memtap, cownetdisk).
    pub cpu_secs: f64,
    /// Bytes moved between the server and its desktop.
    pub network_bytes: u64,
    /// Its share of the server's energy above idle, by CPU time.
    pub active_joules: f64,
    /// Its share of the server's idle energy, by memory.
    pub idle_joules: f64,
    /// The network's energy for its bytes.
    pub network_joules: f64,
    /// The three together.
    pub server_joules: f64,
    /// Whether its desktop sleeps while it is away (the server wakes it
    /// for fetches); a desktop that never sleeps saves nothing.
    pub desktop_sleeps: bool,
    /// What its desktop saved against staying idle, estimated from the
    /// requests that reached it (the desktops' profile and wait).
    pub desktop_saved_joules: f64,
    /// `desktop_saved_joules - server_joules`: negative while it costs more
    /// than it saves.
    pub net_joules: f64,
}

/// The final answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// To `Consolidate`.
    Consolidated(ConsolidateReport),
    /// To `Reintegrate`.
    Reintegrated(ReintegrateReport),
    /// To `Status`, from a desktop daemon.
    DesktopStatus(DesktopStatus),
    /// To `Status`, from the server daemon.
    ServerStatus(ServerStatus),
    /// To `Start`, `Shutdown` and `Destroy`: where the VM is now.
    VmState {
        /// The VM.
        vm: VmName,
        /// Where it is.
        on: VmLocation,
    },
    /// To `SaveAll`: the VMs saved.
    Saved {
        /// The VMs.
        vms: Vec<VmName>,
    },
    /// To `SaveAll`, from the server daemon: the VMs (`desktop/vm`) sent
    /// home, and those that did not go (their desktops resume them from
    /// their checkpoints).
    SentHome {
        /// Gone home.
        home: Vec<String>,
        /// Still here.
        stayed: Vec<String>,
    },
    /// To `View`.
    View(ViewTarget),
    /// To `Screenshot`: the file written, readable by the socket's users.
    Screenshot {
        /// The file.
        file: PathBuf,
    },
}

impl Report {
    /// Its kind, for error texts.
    pub fn kind(&self) -> &'static str {
        match self {
            Report::Consolidated(_) => "consolidation report",
            Report::Reintegrated(_) => "reintegration report",
            Report::DesktopStatus(_) => "desktop status",
            Report::ServerStatus(_) => "server status",
            Report::VmState { .. } => "VM state",
            Report::Saved { .. } => "list of saved VMs",
            Report::SentHome { .. } => "list of VMs sent home",
            Report::View(_) => "viewer address",
            Report::Screenshot { .. } => "screenshot",
        }
    }
}

/// What the daemon answers, line by line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum LocalReply {
    /// Part of a transfer is done.
    Progress {
        /// What is moving.
        what: String,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Something the user should read while waiting.
    Log {
        /// The line.
        line: String,
    },
    /// It worked; the report, for `--json` and people.
    Done {
        /// The report.
        result: Report,
    },
    /// It did not; why and what to do.
    Failed {
        /// The text for the user.
        error: String,
        /// What kind of failure, for the command's exit status (absent
        /// from daemons that predate it: [`FailureKind::Other`]).
        #[serde(default)]
        kind: FailureKind,
    },
}

/// What kind of failure a daemon reports, so that a script can tell them
/// apart (the `jettison` command's exit status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The VM is not idle enough to move (`--force` skips the check).
    NotIdle,
    /// The server has no room for the VM's expected working set.
    NoRoom,
    /// The desktop daemon cannot reach the server daemon.
    Unreachable,
    /// The peer may not make this request (see [`crate::local_access`]).
    Denied,
    /// Anything else: the text says what.
    #[default]
    Other,
}

/// A request a daemon refused or failed: the kind and the text for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The kind.
    pub kind: FailureKind,
    /// Why, and what to do.
    pub message: String,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal { kind: FailureKind::Other, message }
    }
}

/// Longest request line a client may send.
const MAX_REQUEST_LINE: u64 = 64 * 1024;
/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `listener` for ever, one thread per client, calling `handle` with
/// each request `access` lets the client make and a sink for its interim
/// replies; `handle`'s result is the final reply. A client that sends
/// garbage, or asks what it may not, gets a `Failed` line.
pub fn serve<H>(listener: UnixListener, access: SocketAccess, handle: H)
where
    H: Fn(LocalRequest, &mut dyn FnMut(LocalReply)) -> Result<Report, Refusal> + Send + Sync + 'static,
{
    let handle = std::sync::Arc::new(handle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handle = std::sync::Arc::clone(&handle);
        let access = access.clone();
        std::thread::spawn(move || {
            let peer = Peer::of(&stream);
            let mut writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            // A request is one short line: a client (any member of the
            // socket's group) that sends more, or nothing, costs a bounded
            // buffer and a bounded wait, then its thread ends.
            let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
            let mut line = String::new();
            if BufReader::new(stream).take(MAX_REQUEST_LINE).read_line(&mut line).is_err() {
                return;
            }
            let mut send = |reply: LocalReply| {
                let mut text = serde_json::to_string(&reply).expect("replies serialise");
                text.push('\n');
                // A client that went away stops caring; the work goes on.
                let _ = writer.write_all(text.as_bytes());
            };
            let last = match serde_json::from_str::<LocalRequest>(&line) {
                Err(_) if !line.ends_with('\n') && line.len() as u64 == MAX_REQUEST_LINE => LocalReply::Failed {
                    error: format!("a request longer than {MAX_REQUEST_LINE} bytes: not one this daemon knows"),
                    kind: FailureKind::Other,
                },
                Ok(request) => {
                    let allowed = peer
                        .map_err(|e| format!("cannot read the caller's credentials: {e}"))
                        .and_then(|peer| access.check(&peer, &request));
                    match allowed.map(|()| handle(request, &mut send)) {
                        Ok(Ok(result)) => LocalReply::Done { result },
                        Ok(Err(Refusal { kind, message })) => LocalReply::Failed { error: message, kind },
                        Err(error) => LocalReply::Failed { error, kind: FailureKind::Denied },
                    }
                }
                Err(e) => LocalReply::Failed {
                    error: format!("not a request this daemon knows: {e}"),
                    kind: FailureKind::Other,
                },
            };
            send(last);
        });
    }
}

/// What can go wrong on the local socket, for the command and the daemons.
#[derive(Debug, thiserror::Error)]
pub enum LocalSocketError {
    /// The socket's permissions keep the caller out.
    #[error(
        "{path} is open only to root and the members of the group {group} (adduser $USER {group}, then log in again)"
    )]
    NotAllowed {
        /// The socket.
        path: PathBuf,
        /// Its group.
        group: String,
    },
    /// The daemon is not there.
    #[error("cannot reach the daemon at {path}: is `jettison desktop` or `jettison server` running?")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The connection broke.
    #[error("lost the daemon at {path}")]
    Lost {
        /// The socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The daemon sent a line that is not a reply.
    #[error("the daemon at {path} sent a line that is not a reply: {line}")]
    Unreadable {
        /// The socket.
        path: PathBuf,
        /// The line.
        line: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The daemon closed without a final reply.
    #[error("the daemon at {path} closed the connection without an answer; see its log")]
    NoAnswer {
        /// The socket.
        path: PathBuf,
    },
    /// The daemon refused or failed; its text says why and what to do.
    #[error("{message}")]
    Failed {
        /// The kind of failure.
        kind: FailureKind,
        /// The daemon's text.
        message: String,
    },
    /// Another daemon listens on the socket.
    #[error("another daemon is already listening on {path}")]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The socket cannot be made.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket (or its directory).
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Sends `request` to the daemon at `socket`, passing interim replies to
/// `on_reply`, and returns the final report.
///
/// # Errors
/// [`LocalSocketError::Failed`] with the daemon's text, or the error of
/// reaching it.
pub fn call(
    socket: &Path,
    request: &LocalRequest,
    mut on_reply: impl FnMut(&LocalReply),
) -> Result<Report, LocalSocketError> {
    let path = || socket.to_owned();
    let mut stream = UnixStream::connect(socket).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            if let Some(group) = socket_group(socket) {
                return LocalSocketError::NotAllowed { path: path(), group };
            }
        }
        LocalSocketError::Connect { path: path(), source }
    })?;
    let mut text = serde_json::to_string(request).expect("requests serialise");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(|source| LocalSocketError::Lost { path: path(), source })?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|source| LocalSocketError::Lost { path: path(), source })?;
        match serde_json::from_str::<LocalReply>(&line) {
            Ok(LocalReply::Done { result }) => return Ok(result),
            Ok(LocalReply::Failed { error, kind }) => return Err(LocalSocketError::Failed { kind, message: error }),
            Ok(other) => on_reply(&other),
            Err(source) => return Err(LocalSocketError::Unreadable { path: path(), line, source }),
        }
    }
    Err(LocalSocketError::NoAnswer { path: path() })
}

/// The name of the group `socket` belongs to, if it has one.
fn socket_group(socket: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(socket).ok()?.gid();
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok().flatten().map(|g| g.name)
}

/// Binds `socket`, replacing a stale socket file left by a daemon that
/// died, and gives it the owner and mode `access` asks for.
///
/// # Errors
/// [`LocalSocketError::InUse`] or [`LocalSocketError::Bind`].
pub fn bind(socket: &Path, access: &SocketAccess) -> Result<UnixListener, LocalSocketError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LocalSocketError::Bind { path: dir.to_owned(), source })?;
    }
    if UnixStream::connect(socket).is_ok() {
        return Err(LocalSocketError::InUse { path: socket.to_owned() });
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|source| LocalSocketError::Bind { path: socket.to_owned(), source })?;
    access.apply(socket).map_err(|source| LocalSocketError::Bind { path: socket.to_owned(), source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server status from a daemon without an energy ledger reads as
    /// none.
    #[test]
    fn a_server_status_reads_without_energy() {
        let old = r#"{"server":"server1","vms":[]}"#;
        let status: ServerStatus = serde_json::from_str(old).unwrap();
        assert_eq!(status.energy, None);
    }

    /// A status from a daemon without `[power]` (or from before it) reads
    /// as no power, and one with it round-trips.
    #[test]
    fn a_desktop_status_reads_with_and_without_power() {
        let old =
            r#"{"desktop":"desk1","server":"10.0.0.1:7400","server_reachable":true,"server_error":null,"vms":[]}"#;
        let status: DesktopStatus = serde_json::from_str(old).expect("an old status");
        assert_eq!(status.power, None);
        assert!(!serde_json::to_string(&status).expect("serialises").contains("power"));
        let power = DesktopPower {
            state: DesktopPowerState::Asleep,
            refused: None,
            sleeps: 2,
            wakes: 1,
            asleep_secs: 30.5,
            saved_joules: 1200.0,
            saved_percent: 40.0,
            ledger_dir: PathBuf::from("/var/lib/jettison/power"),
        };
        let with = DesktopStatus { power: Some(power), ..status };
        let text = serde_json::to_string(&with).expect("serialises");
        assert!(text.contains(r#""state":"asleep""#), "{text}");
        assert_eq!(serde_json::from_str::<DesktopStatus>(&text).expect("reads back"), with);
    }

    /// A status without `[activity]` reads as no activity, and one with it
    /// round-trips with its state in snake case.
    #[test]
    fn a_desktop_status_reads_with_and_without_activity() {
        let old =
            r#"{"desktop":"desk1","server":"10.0.0.1:7400","server_reachable":true,"server_error":null,"vms":[]}"#;
        let status: DesktopStatus = serde_json::from_str(old).expect("an old status");
        assert_eq!(status.activity, None);
        assert!(!serde_json::to_string(&status).expect("serialises").contains("activity"));
        let activity = DesktopActivity {
            state: DesktopActivityState::NoSource,
            source: None,
            source_error: Some("x11: cannot connect to display \":0\"".to_owned()),
            idle_secs: None,
            idle_since: None,
            idle_limit_secs: 15,
            warn_secs: 5,
            warning_window: false,
            moved: vec!["vm1".parse().expect("a VM name")],
            held: Vec::new(),
        };
        let with = DesktopStatus { activity: Some(Box::new(activity)), ..status };
        let text = serde_json::to_string(&with).expect("serialises");
        assert!(text.contains(r#""state":"no_source""#), "{text}");
        assert_eq!(serde_json::from_str::<DesktopStatus>(&text).expect("reads back"), with);
    }

    #[test]
    fn a_status_waits_out_a_short_hold_and_calls_a_long_one_moving() {
        let vm = std::sync::Arc::new(Mutex::new(7));
        let holder = std::sync::Arc::clone(&vm);
        let (held, wait_held) = std::sync::mpsc::channel();
        let short = std::thread::spawn(move || {
            let _guard = holder.lock().unwrap();
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        wait_held.recv().unwrap();
        assert_eq!(lock_for_status(&vm).map(|v| *v), Some(7), "a sample's hold is waited out");
        short.join().unwrap();
        let _moving = vm.lock().unwrap();
        let other = std::sync::Arc::clone(&vm);
        assert!(
            std::thread::spawn(move || lock_for_status(&other).is_none()).join().unwrap(),
            "a move's hold is 'moving'"
        );
    }

    #[test]
    fn a_request_gets_progress_then_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let listener = bind(&socket, &SocketAccess::root_only()).unwrap();
        assert!(bind(&socket, &SocketAccess::root_only()).unwrap_err().to_string().contains("already listening"));
        std::thread::spawn(move || {
            serve(listener, SocketAccess::root_only(), |request, send| match request {
                LocalRequest::Consolidate { vm, .. } => {
                    send(LocalReply::Progress { what: vm.to_string(), done: 1, total: 2 });
                    Ok(Report::Consolidated(ConsolidateReport {
                        vm,
                        descriptor_bytes: 1,
                        zero_pages: 2,
                        expected_bytes: 3,
                        downtime_secs: 0.5,
                        total_secs: 1.5,
                        server_ms: 4,
                    }))
                }
                LocalRequest::Start { .. } => Err(Refusal { kind: FailureKind::NotIdle, message: "busy".into() }),
                _ => Err(String::from("no").into()),
            })
        });
        let mut seen = Vec::new();
        let request = LocalRequest::Consolidate { vm: "vm1".parse().unwrap(), force: false };
        let Report::Consolidated(report) = call(&socket, &request, |r| seen.push(r.clone())).unwrap() else {
            panic!("not a consolidation report")
        };
        assert_eq!((report.vm.as_str(), report.downtime_secs), ("vm1", 0.5));
        assert_eq!(seen, vec![LocalReply::Progress { what: "vm1".into(), done: 1, total: 2 }]);
        assert_eq!(call(&socket, &LocalRequest::Status, |_| {}).unwrap_err().to_string(), "no");
        let start = LocalRequest::Start { vm: "vm1".parse().unwrap() };
        assert!(matches!(
            call(&socket, &start, |_| {}).unwrap_err(),
            LocalSocketError::Failed { kind: FailureKind::NotIdle, message } if message == "busy"
        ));
        // A daemon that sends no kind: "other".
        let old: LocalReply = serde_json::from_str(r#"{"reply":"failed","error":"x"}"#).unwrap();
        assert_eq!(old, LocalReply::Failed { error: "x".into(), kind: FailureKind::Other });
        let mut raw = UnixStream::connect(&socket).unwrap();
        raw.write_all(b"{\"op\":\"fly\"}\n").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("not a request this daemon knows"), "{answer}");
        let mut raw = UnixStream::connect(&socket).unwrap();
        raw.write_all(b"{\"op\":\"consolidate\",\"vm\":\"../x\",\"force\":true}\n").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("not a valid VM name"), "{answer}");
        // A line without end is cut at the limit and refused; the daemon
        // serves the next client.
        let mut raw = UnixStream::connect(&socket).unwrap();
        let endless = vec![b'{'; 2 * MAX_REQUEST_LINE as usize];
        let _ = raw.write_all(&endless);
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("a request longer than 65536 bytes"), "{answer}");
        assert!(call(&socket, &request, |_| {}).is_ok());
        assert!(call(&dir.path().join("none.sock"), &LocalRequest::Status, |_| {})
            .unwrap_err()
            .to_string()
            .contains("is `jettison"));
    }
}
