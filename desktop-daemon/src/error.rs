//! What can go wrong in the desktop daemon, one variant per step of
//! consolidation, reintegration, running a VM and failover, each naming the
//! VM and carrying its cause as a source. The command prints the whole
//! chain once.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use diskserv::DiskservError;
use identifiers::VmName;
use memserv::MemservError;
use migration_formats::{DirtySetError, ZeroMapError};
use qemu_driver::QemuError;
use wire::{DecodeError, WireError};

/// Everything the desktop daemon can fail at.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The configuration file cannot be used.
    #[error("the desktop configuration")]
    Config(#[source] daemon_protocol::config_file::ConfigFileError),
    /// This host's key or its peers directory cannot be used.
    #[error("cannot load this host's key or its enrolled peers")]
    LoadKey {
        /// Cause.
        #[source]
        source: Box<WireError>,
    },
    /// The control port cannot be opened.
    #[error("cannot listen on {addr}: is another desktop daemon running?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The local socket cannot be opened.
    #[error("the command's local socket")]
    LocalSocket(#[source] daemon_protocol::local::LocalSocketError),
    /// The local socket's group cannot be used.
    #[error("the local socket's group")]
    SocketGroup(#[source] daemon_protocol::local_access::AccessError),
    /// The metrics endpoint cannot be opened.
    #[error("the metrics endpoint")]
    Metrics(#[source] metrics_endpoint::MetricsError),
    /// No VM of that name here.
    #[error("no VM called {vm} on this desktop (it has: {known})")]
    NoSuchVm {
        /// The name asked for.
        vm: VmName,
        /// The VMs it has.
        known: String,
    },
    /// The VM is on the server already.
    #[error("{vm} is already on the server")]
    AlreadyOnServer {
        /// The VM.
        vm: VmName,
    },
    /// The VM runs here already.
    #[error("{vm} already runs on this desktop")]
    AlreadyHome {
        /// The VM.
        vm: VmName,
    },
    /// A recovery was asked for a VM that runs here again: what the
    /// server kept is another branch of its history.
    #[error(
        "{vm} runs on this desktop again (it failed over to its own checkpoint): the server's checkpoint is another \
         branch of its history, and bringing it back would throw away what ran here since; the two are never merged"
    )]
    RecoverAfterFailover {
        /// The VM.
        vm: VmName,
    },
    /// The VM is not running here.
    #[error("{vm} is not running on this desktop (`jettison start {vm}` boots it)")]
    NotRunning {
        /// The VM.
        vm: VmName,
    },
    /// The guest did not power off in time.
    #[error(
        "{vm} did not power off within {secs} s of its power button (does the guest handle ACPI?); it still runs: \
         `jettison destroy {vm}` ends it at once"
    )]
    ShutdownTimeout {
        /// The VM.
        vm: VmName,
        /// How long we waited.
        secs: u64,
    },
    /// The VM is on the server, where this request does not reach.
    #[error("{vm} is on the server: `jettison reintegrate {vm}` brings it back first")]
    OnServer {
        /// The VM.
        vm: VmName,
    },
    /// The VM has no screen.
    #[error("{vm} has no display (display = false in its [[vm]])")]
    NoDisplay {
        /// The VM.
        vm: VmName,
    },
    /// The server did not say where the VM's screen is.
    #[error("the server has no console for {vm} (it is not running there now)")]
    NoRemoteConsole {
        /// The VM.
        vm: VmName,
    },
    /// The idleness check refused.
    #[error("{why}")]
    NotIdle {
        /// The verdict, with its figures and what to do.
        why: String,
    },
    /// A file of the VM cannot be made, read or written.
    #[error("{vm}: cannot {action} {path}")]
    File {
        /// The VM.
        vm: VmName,
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// QEMU failed at a step.
    #[error("{vm}: cannot {action}")]
    Qemu {
        /// The VM.
        vm: VmName,
        /// The step ("boot it", "measure its dirty rate", "save its device state", "make its tap device").
        action: &'static str,
        /// Cause.
        #[source]
        source: Box<QemuError>,
    },
    /// The RAM file cannot be scanned for zero pages.
    #[error("{vm}: cannot scan its RAM file for zero pages")]
    ZeroMap {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<ZeroMapError>,
    },
    /// memserv cannot serve the checkpoint's RAM.
    #[error("{vm}: memserv cannot serve its RAM")]
    Memserv {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<MemservError>,
    },
    /// diskserv cannot serve the checkpoint's disk.
    #[error("{vm}: diskserv cannot serve its disk")]
    Diskserv {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<DiskservError>,
    },
    /// The server daemon cannot be reached.
    #[error("cannot reach the server daemon")]
    ServerUnreachable(#[source] Box<WireError>),
    /// The server refused the connection.
    #[error("the server refused us: {0}")]
    ServerRefusedHello(String),
    /// The peer is not a server daemon.
    #[error("{0} is not a Jettison server daemon")]
    NotAServer(String),
    /// The connection to the server broke.
    #[error("the server connection failed")]
    ServerConnection(#[source] Box<WireError>),
    /// Sending a stream (the descriptor) to the server failed.
    #[error("sending the descriptor to the server failed")]
    SendStream(#[source] std::io::Error),
    /// The server sent something that does not decode.
    #[error("the server sent something unreadable")]
    ServerUnreadable(#[source] Box<DecodeError>),
    /// The dirty state a server sends is not of this desktop's stay.
    #[error(
        "{vm}: the server sends state of fencing token {theirs}, not this stay's ({ours}): it is not applied (the \
         server lost the VM's claim in etcd since; its state stays there)"
    )]
    WrongFence {
        /// The VM.
        vm: VmName,
        /// The token the server's state carries.
        theirs: u64,
        /// This stay's.
        ours: u64,
    },
    /// The server answered out of turn.
    #[error("the server answered {got} to {request}")]
    UnexpectedAnswer {
        /// What was asked.
        request: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The server refused the request; its text says why.
    #[error("{0}")]
    Refused(String),
    /// The server has no room for the VM; its text gives the figures.
    #[error("{0}")]
    NoRoom(String),
    /// The fleet's registry cannot be read.
    #[error("cannot choose a server for {vm}: the fleet's registry in etcd cannot be read")]
    FleetRegistry {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<fleet_registry::EtcdError>,
    },
    /// No server of the fleet can take the VM; the text gives each one's reason.
    #[error("cannot choose a server for {vm}")]
    NoFleetServer {
        /// The VM.
        vm: VmName,
        /// Each server and why it was not chosen.
        #[source]
        source: Box<fleet_registry::NoServer>,
    },
    /// The server could not take the VM; it runs here again.
    #[error("the server could not take {vm} ({why}); it runs on the desktop again")]
    ResumedHere {
        /// The VM.
        vm: VmName,
        /// The server's reason.
        why: String,
    },
    /// The connection broke after the VM was handed over: the heartbeat decides where it runs.
    #[error("{vm}: the connection broke after it was handed over; the heartbeat will find out where it runs")]
    HandOverUnknown {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<DesktopError>,
    },
    /// Receiving the VM broke off; the checkpoint is intact.
    #[error(
        "receiving {vm} broke off; its checkpoint here is intact and the server keeps it stopped: run `jettison \
         reintegrate {vm}` again"
    )]
    Receive {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<ReceiveError>,
    },
    /// A reintegration a crash interrupted cannot be finished.
    #[error("{vm}: cannot finish the reintegration a crash interrupted")]
    FinishPending {
        /// The VM.
        vm: VmName,
        /// Cause.
        #[source]
        source: Box<ReceiveError>,
    },
}

impl DesktopError {
    /// The kind the `jettison` command turns into its exit status.
    pub fn failure_kind(&self) -> daemon_protocol::local::FailureKind {
        use daemon_protocol::local::FailureKind;
        match self {
            DesktopError::NotIdle { .. } => FailureKind::NotIdle,
            DesktopError::NoRoom(_) | DesktopError::NoFleetServer { .. } => FailureKind::NoRoom,
            DesktopError::ServerUnreachable(_)
            | DesktopError::ServerConnection(_)
            | DesktopError::FleetRegistry { .. } => FailureKind::Unreachable,
            _ => FailureKind::Other,
        }
    }
}

/// What can go wrong receiving and applying a VM's way home.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// A staging file cannot be written, renamed or removed.
    #[error("cannot {action} {path}")]
    File {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The descriptor announced is too large.
    #[error("the server announced a {len}-byte descriptor; refusing anything over 64 MiB")]
    DescriptorTooLarge {
        /// Its length.
        len: u64,
    },
    /// The stream broke off in the descriptor.
    #[error("the descriptor broke off")]
    DescriptorBrokeOff(#[source] io::Error),
    /// The descriptor's CRC does not match.
    #[error("the descriptor arrived damaged (CRC mismatch)")]
    DescriptorDamaged,
    /// The server sends dirty sets for another number of disks than the VM has here.
    #[error(
        "the server sends {sent} disk dirty sets, but the VM has {have} disks here: its disks changed in the \
         configuration while it was away; name its disks as they were when it left, then reintegrate it again"
    )]
    DiskCount {
        /// Disk sets announced.
        sent: u32,
        /// Disks configured here.
        have: usize,
    },
    /// A dirty set did not stage.
    #[error("the {what} dirty set")]
    Stage {
        /// "memory", "disk" (the first disk) or "disk N" (N from 2).
        what: String,
        /// Cause.
        #[source]
        source: Box<DirtySetError>,
    },
    /// More came after the last disk set.
    #[error("the stream goes on past the last disk dirty set")]
    TrailingData,
    /// The stream's end could not be read.
    #[error("the stream's end")]
    StreamEnd(#[source] io::Error),
    /// A staged set could not be applied.
    #[error(
        "applying the {what} dirty set failed; it stays staged in {staging} and is applied again before the VM starts"
    )]
    Apply {
        /// "memory", "disk" (the first disk) or "disk N" (N from 2).
        what: String,
        /// The staging directory.
        staging: PathBuf,
        /// Cause.
        #[source]
        source: Box<DirtySetError>,
    },
}
