//! What can go wrong in the server daemon, one variant per step of hosting a
//! VM and sending it home, each naming the VM (`desktop/vm`) and carrying
//! its cause as a source. A desktop gets the whole chain as its refusal.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use migration_formats::ZeroMapError;
use qemu_driver::QemuError;
use slice_store::{ExportError, StoreError};
use wire::WireError;

use crate::capacity::NoRoom;
use crate::key::VmKey;

/// Everything the server daemon can fail at.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration file cannot be used.
    #[error("the server configuration")]
    Config(#[source] daemon_protocol::config_file::ConfigFileError),
    /// This host's key or its peers directory cannot be used.
    #[error("cannot load this host's key or its enrolled peers")]
    LoadKey {
        /// Cause.
        #[source]
        source: Box<WireError>,
    },
    /// A directory of the daemon cannot be made.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The control port cannot be opened.
    #[error("cannot listen on {addr}: is another server daemon running?")]
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
    /// Only a desktop daemon may move VMs.
    #[error("only a desktop daemon may ask for {request}; this connection said hello as {peer}")]
    NotADesktop {
        /// The request.
        request: &'static str,
        /// Who said hello.
        peer: String,
    },
    /// The VM is here already.
    #[error("{key} is already on this server; reintegrate it first")]
    AlreadyHosted {
        /// The VM.
        key: VmKey,
    },
    /// Another connection holds a reservation for the VM.
    #[error("{key} is already being consolidated (another connection reserved it); wait for it to finish")]
    AlreadyReserved {
        /// The VM.
        key: VmKey,
    },
    /// Another desktop's VM has the same name (it names the tap device).
    #[error(
        "{key} cannot come: {other} is here or on its way, and VM names must differ on one server (they name the \
         tap device jt-<name>); rename one of them in its desktop.toml"
    )]
    NameInUse {
        /// The VM that asked.
        key: VmKey,
        /// The VM that has the name.
        other: VmKey,
    },
    /// Another VM here has the same MAC.
    #[error("{key}'s MAC {mac} is already used by {other} on this server; give each VM its own MAC")]
    MacInUse {
        /// The VM that asked.
        key: VmKey,
        /// The MAC.
        mac: identifiers::Mac,
        /// The VM that has it.
        other: VmKey,
    },
    /// The capacity check refused the VM.
    #[error("the server has no room for {key}")]
    NoRoom {
        /// The VM.
        key: VmKey,
        /// The figures.
        #[source]
        source: Box<NoRoom>,
    },
    /// The server is being drained (`jettison drain`): it takes no VM.
    #[error(
        "the server {server} is being drained and takes no VM ({key} stays on its desktop, or another server \
         of the fleet takes it; `jettison drain --undo {server}` ends the drain)"
    )]
    Draining {
        /// The VM.
        key: VmKey,
        /// This server.
        server: identifiers::HostName,
    },
    /// In a fleet, the VM could not be claimed in etcd.
    #[error("{key} cannot come to this server")]
    Claim {
        /// The VM.
        key: VmKey,
        /// Why.
        #[source]
        source: Box<crate::fleet::ClaimError>,
    },
    /// A request to a VM's desktop daemon (take it back, move it) did not
    /// reach it.
    #[error("{key}: cannot ask its desktop's daemon (is the desktop up and its daemon running?)")]
    AskDesktop {
        /// The VM.
        key: VmKey,
        /// What failed.
        #[source]
        source: Box<wire::WireError>,
    },
    /// The desktop daemon refused such a request.
    #[error("{key}: its desktop refused: {why}")]
    DesktopRefused {
        /// The VM.
        key: VmKey,
        /// Its answer.
        why: String,
    },
    /// The VM would cost more than it saves (`refuse_unprofitable`).
    #[error("the server refuses {key}")]
    Unprofitable {
        /// The VM.
        key: VmKey,
        /// The figures.
        #[source]
        source: Box<crate::energy::Unprofitable>,
    },
    /// `source = "rapl"` in `[energy]`, and RAPL cannot be read.
    #[error("[energy] source = \"rapl\", but RAPL cannot be read here (source = \"auto\" falls back to the profile)")]
    Rapl {
        /// Why.
        #[source]
        source: Box<crate::rapl::RaplError>,
    },
    /// A stay's energy account cannot be appended to its VM's history.
    #[error("cannot append a stay's energy account to {path}")]
    SaveEnergy {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The descriptor stream after a Consolidate was not what it announced.
    #[error("{key}: the descriptor did not arrive whole")]
    Descriptor {
        /// The VM.
        key: VmKey,
        /// What was wrong.
        source: std::io::Error,
    },
    /// No hosted VM has that name.
    #[error("no VM called {vm} runs on this server")]
    NoSuchVm {
        /// The name asked for.
        vm: identifiers::VmName,
    },
    /// QEMU cannot be asked what it runs.
    #[error("cannot ask QEMU for its CPU models")]
    NoQemu(#[source] Box<qemu_driver::QemuError>),
    /// This server cannot run the VM's virtual hardware.
    #[error("{key} cannot run on this server: {why}")]
    CannotRun {
        /// The VM.
        key: VmKey,
        /// Why, and what to change.
        why: String,
    },
    /// `Consolidate` without a `Reserve` on the same connection.
    #[error("{key} has no reservation on this connection; send Reserve first")]
    NotReserved {
        /// The VM.
        key: VmKey,
    },
    /// The zero map does not decode.
    #[error("the zero map of {key} is bad")]
    ZeroMap {
        /// The VM.
        key: VmKey,
        /// Cause.
        #[source]
        source: Box<ZeroMapError>,
    },
    /// The zero map was made for another RAM size.
    #[error(
        "the zero map of {key} covers {map_pages} pages of {unit} bytes, but its RAM is {ram_pages} pages of 4096"
    )]
    ZeroMapSize {
        /// The VM.
        key: VmKey,
        /// Units in the map.
        map_pages: u64,
        /// The map's unit size.
        unit: u32,
        /// Pages of RAM.
        ram_pages: u64,
    },
    /// A file of the VM cannot be written, read or moved.
    #[error("{key}: cannot {action} {path}")]
    File {
        /// The VM.
        key: VmKey,
        /// What was done ("write", "read", "move aside", "create").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The VM's storage process (memtap and cownetdisk) failed.
    #[error("{key}: memory and disk")]
    Storage {
        /// The VM.
        key: VmKey,
        /// Cause.
        #[source]
        source: Box<crate::storage::StorageError>,
    },
    /// QEMU failed at a step.
    #[error("{key}: cannot {action}")]
    Qemu {
        /// The VM.
        key: VmKey,
        /// The step ("make its tap device", "resume it from its descriptor", "save its device state").
        action: &'static str,
        /// Cause.
        #[source]
        source: Box<QemuError>,
    },
    /// The VM is not here.
    #[error("{key} is not on this server")]
    NotHosted {
        /// The VM.
        key: VmKey,
    },
    /// QEMU died on the server: the VM cannot go home from here.
    #[error(
        "{key} was lost on the server ({why}); its slices are kept in {dir}; resume it from the desktop's checkpoint"
    )]
    Lost {
        /// The VM.
        key: VmKey,
        /// How.
        why: String,
        /// Where its slices are.
        dir: PathBuf,
    },
    /// The slices cannot be opened for the way home.
    #[error("{key}: cannot open its slices in {dir}")]
    OpenSlices {
        /// The VM.
        key: VmKey,
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: Box<StoreError>,
    },
    /// A dirty set cannot be written home.
    #[error("{key}: sending its {what} dirty set home broke off")]
    Export {
        /// The VM.
        key: VmKey,
        /// "memory" or "disk".
        what: &'static str,
        /// Cause.
        #[source]
        source: Box<ExportError>,
    },
    /// A checkpoint of a running VM could not be taken; the VM runs on
    /// and the previous checkpoint stands.
    #[error("{key}: checkpoint not taken: cannot {step}")]
    Checkpoint {
        /// The VM.
        key: VmKey,
        /// The step that failed.
        step: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A recovery was asked for a VM the server has no checkpoint of.
    #[error("{key}: this server has no checkpoint of it in {} (checkpoint_every_secs is 0, or it was lost before the first one): its desktop resumes it from its own checkpoint", dir.display())]
    NoCheckpoint {
        /// The VM.
        key: VmKey,
        /// Where the checkpoint would be.
        dir: PathBuf,
    },
    /// A recovery was asked for a VM that runs here.
    #[error("{key} runs on this server: reintegrate it (without --recover)")]
    RunsHere {
        /// The VM.
        key: VmKey,
    },
    /// The connection home broke.
    #[error("{key}: sending it home broke off")]
    SendHome {
        /// The VM.
        key: VmKey,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The working-set history cannot be saved.
    #[error("cannot save the working-set history {path}")]
    SaveHistory {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}
