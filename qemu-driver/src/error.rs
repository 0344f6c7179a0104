//! The one error type of this crate.
//!
//! Each variant is named for the operation that failed and carries what a
//! reader needs to act on it: the binary, the socket, the QMP command, and
//! QEMU's own description of the problem.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// What went wrong while starting or driving QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A program (QEMU, the guest image script) could not be started.
    #[error("could not run {binary}: is it installed and executable? (scripts/install-deps installs QEMU)")]
    Spawn {
        /// The binary we tried to run.
        binary: PathBuf,
        /// Why the operating system refused.
        source: io::Error,
    },

    /// QEMU exited while we were waiting for it.
    #[error("QEMU exited unexpectedly ({status}) while {during}; its output ({log}):\n{output}")]
    Exited {
        /// What we were waiting for.
        during: String,
        /// How it exited.
        status: ExitStatus,
        /// The file holding QEMU's stdout and stderr.
        log: PathBuf,
        /// The end of that file.
        output: String,
    },

    /// A QEMU adopted from an earlier daemon exited.
    #[error("QEMU (pid {pid}, started by an earlier daemon) is gone while {during}; its output ({log}):\n{output}")]
    Gone {
        /// Its process id.
        pid: u32,
        /// What we were doing.
        during: String,
        /// The file holding QEMU's stdout and stderr.
        log: PathBuf,
        /// The end of that file.
        output: String,
    },

    /// A file QEMU needs could not be prepared, or one it wrote could not be read.
    #[error("could not {action} {path}")]
    File {
        /// What we were doing, e.g. "create the QEMU output log".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The QMP socket did not accept a connection.
    #[error("could not connect to QMP socket {socket}: is QEMU running with -qmp on it?")]
    QmpConnect {
        /// The Unix socket path.
        socket: PathBuf,
        /// The last connection error.
        source: io::Error,
    },

    /// QEMU has not greeted on its QMP socket yet (see [`crate::Qmp::connect_once`]).
    #[error(
        "QEMU has not answered on {socket} yet: its main loop is held, most likely by a guest \
         waiting for a page or block from a desktop that is asleep or gone; it answers once that \
         read is served"
    )]
    QmpNotYet {
        /// The Unix socket path.
        socket: PathBuf,
    },

    /// Reading from or writing to an established QMP connection failed.
    #[error("QMP I/O on {socket} failed (did QEMU exit?)")]
    QmpIo {
        /// The Unix socket path.
        socket: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// QEMU sent something that is not QMP as we know it.
    #[error("unexpected QMP message on {socket}: {detail}")]
    QmpProtocol {
        /// The Unix socket path.
        socket: PathBuf,
        /// What was wrong with it.
        detail: String,
    },

    /// QEMU answered a QMP command with an error.
    #[error("QEMU rejected QMP command {command}: {desc} ({class})")]
    Command {
        /// The command name.
        command: String,
        /// QEMU's error class, e.g. `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },

    /// A migration (save or load of the device state) failed inside QEMU.
    #[error("{direction} of the device state {path} failed: {desc} (QEMU's output may say more)")]
    MigrationFailed {
        /// "save" or "load".
        direction: &'static str,
        /// The device state file.
        path: PathBuf,
        /// QEMU's `error-desc`.
        desc: String,
    },

    /// Something did not happen in time.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// What we waited for, with enough context to look for it.
        what: String,
        /// How long we waited.
        secs: f64,
    },

    /// The script that builds the test guest failed.
    #[error("{script} failed ({status}); its output says what is missing:\n{output}")]
    GuestImage {
        /// The script path.
        script: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },

    /// The guest agent channel exists but no agent answers on it.
    #[error(
        "no guest agent answers on {socket} ({detail}): the guest does not run qemu-ga \
         (install qemu-guest-agent in the guest to have its clock set after moves)"
    )]
    NoGuestAgent {
        /// The channel's socket.
        socket: PathBuf,
        /// What happened instead of an answer.
        detail: String,
    },

    /// A program run in the guest through its agent failed.
    #[error("{program} in the guest {outcome}")]
    GuestProgram {
        /// The program and its arguments.
        program: String,
        /// How it ended: its exit status and what it printed on stderr,
        /// or that it did not end in time.
        outcome: String,
    },

    /// Making or wiring the VM's tap device failed.
    #[error("cannot set up tap {tap} for the VM's NIC: {detail} (is the bridge there, and are we root?)")]
    Network {
        /// The tap's name.
        tap: String,
        /// What failed, with `ip`'s message.
        detail: String,
    },

    /// `qemu-img info` could not read a disk image: it is not in the
    /// format given, its backing chain is broken, or its format is not one
    /// we support.
    #[error("cannot read the disk image {image} as {format}: {detail}")]
    ImageInfo {
        /// The image.
        image: PathBuf,
        /// The format we read it as (`raw`, `qcow2`, or `any format`).
        format: &'static str,
        /// QEMU's message, or what was wrong with its answer.
        detail: String,
    },

    /// Another QEMU process (a running VM) holds a disk image in a way that
    /// excludes us: it writes it, or reads it and lets nobody write.
    #[error(
        "the disk image {image} is in use by another QEMU process: is the VM still running? \
         (stop it, or close whatever else has the image open) ({detail})"
    )]
    ImageLocked {
        /// The image.
        image: PathBuf,
        /// QEMU's message, or which of its locks is held.
        detail: String,
    },

    /// A disk view's mountpoint cannot be used.
    #[error("cannot export the disk image {image} at {mountpoint}: {detail}")]
    ViewMountpoint {
        /// The image.
        image: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// qemu-storage-daemon exited before exporting a disk image.
    #[error("qemu-storage-daemon could not export the disk image {image} at {mountpoint} ({status}); its output ({log}):\n{output}")]
    ViewStart {
        /// The image.
        image: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// The file holding its output.
        log: PathBuf,
        /// The end of that file.
        output: String,
    },

    /// Flushing a writable disk view into its image failed.
    #[error("could not flush the disk view {mountpoint} into the image {image}, which may lack the last writes (qemu-storage-daemon's output is in {log})")]
    ViewFlush {
        /// The image.
        image: PathBuf,
        /// The view.
        mountpoint: PathBuf,
        /// The file holding qemu-storage-daemon's output.
        log: PathBuf,
        /// The fsync's error.
        source: io::Error,
    },

    /// qemu-storage-daemon did not stop cleanly.
    #[error("qemu-storage-daemon serving the disk image {image} at {mountpoint} did not stop cleanly: {detail}; check the image with qemu-img check; its output ({log}):\n{output}")]
    ViewStop {
        /// The image.
        image: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What happened.
        detail: String,
        /// The file holding its output.
        log: PathBuf,
        /// The end of that file.
        output: String,
    },

    /// The user QEMU is to run as does not exist on this host.
    #[error(
        "there is no user {name:?} on this host for QEMU to run as: create it \
         (useradd --system --no-create-home {name}) or name another"
    )]
    NoSuchUser {
        /// The user's name.
        name: String,
    },

    /// The user QEMU is to run as is root, which would drop nothing.
    #[error("user {name:?} is root (uid 0): QEMU would keep every privilege; name an unprivileged user")]
    RootUser {
        /// The user's name.
        name: String,
    },

    /// The user database could not be read.
    #[error("cannot look user {name:?} up in the user database")]
    UserLookup {
        /// The user's name.
        name: String,
        /// The system's error.
        source: io::Error,
    },

    /// A FUSE mount of a disk view could not be removed.
    #[error("could not unmount the disk view at {mountpoint}: {detail}; unmount it by hand: umount -l {mountpoint}")]
    ViewUnmount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Why, with the system's messages.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub(crate) type Result<T> = std::result::Result<T, QemuError>;
