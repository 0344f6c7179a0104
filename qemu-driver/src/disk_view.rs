//! A VM's disk image, in whatever format QEMU reads, seen as a raw file.
//!
//! The desktop serves a consolidated VM's disk block by block (diskserv
//! `pread`s a raw file) and, when the VM comes home, writes its dirty blocks
//! back (the dirty set's `ApplyTarget` `pwrite`s into a raw file and fsyncs
//! it). Users' disks are often qcow2, over a backing chain. We do not parse
//! qcow2 ourselves: `qemu-storage-daemon` opens the image with QEMU's own
//! block layer and exports its guest-visible content as a regular file
//! through FUSE, so both sides work on that file unchanged. A [`DiskView`]
//! owns that daemon and its mount.
//!
//! Why it is built so:
//!
//! - **Read-only means read-only all the way down.** A
//!   [`ViewAccess::ReadOnly`] view opens both the file node and the format
//!   node with `read-only=on`, and exports `writable=off`: neither the top
//!   image nor its backing chain can be written, whatever the reader does.
//!   A [`ViewAccess::ReadWrite`] view writes the top image only; QEMU opens
//!   the backing chain read-only as always.
//! - **QEMU's image locks guard the image.** A view is refused with
//!   [`QemuError::ImageLocked`] ("is the VM still running?") while any QEMU
//!   process (the VM, `qemu-io`, another daemon) holds the image's write
//!   lock. QEMU's own open checks this for qcow2 but not for raw (a raw
//!   reader lets others write, and a VM lets others read its raw disk), so
//!   we also probe that lock ourselves, which covers both. While a qcow2
//!   view is open, its daemon holds the image as a VM would, so the VM
//!   cannot start on it.
//! - **No mount is ever left behind.** [`DiskView::close`] and `Drop` stop
//!   the daemon with SIGTERM (it flushes and unmounts its export), SIGKILL it
//!   after 10 s and unmount lazily; a failed start does the same.
//!   A stale mount found at the mountpoint (a daemon that was killed leaves
//!   one that answers `ENOTCONN`) is unmounted before use.
//! - **The daemon dies with its owner.** It is started with
//!   `PR_SET_PDEATHSIG` = SIGTERM, so if our process dies without dropping
//!   the view (SIGKILL, abort), the daemon flushes, unmounts and exits rather
//!   than holding the image's lock against the VM's next start. The kernel
//!   sends that signal when the *thread* that forked the child ends, not the
//!   process, so the daemon is spawned from one thread kept for the life of
//!   the process: a view opened by a short-lived worker thread lives on.
//! - **A raw image needs no daemon.** For [`DiskFormat::Raw`] the image *is*
//!   the raw view: [`DiskView::open`] checks it (it exists, QEMU can open it,
//!   no VM holds it) and hands back its own path, so callers need not treat
//!   raw images apart, and diskserv reads them at full speed instead of
//!   through FUSE. Such a view holds no lock and enforces no read-only
//!   access: the caller opens the path as it needs.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{QemuError, Result};
use crate::poll::poll_until;
use crate::vm::option_with_path;

/// QEMU's image tool, which reads an image's format and size.
const QEMU_IMG: &str = "qemu-img";

/// The daemon that exports an image through FUSE.
const STORAGE_DAEMON: &str = "qemu-storage-daemon";

/// How long the daemon may take to mount its export.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The format of a disk image, named as QEMU names its drivers (and as a
/// configuration file spells it: `"raw"`, `"qcow2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain image, byte for byte the guest's disk.
    Raw,
    /// QEMU's qcow2, possibly over a backing chain.
    Qcow2,
}

impl DiskFormat {
    /// QEMU's name for this format's block driver.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }

    /// The format QEMU finds when it probes the image at `path`
    /// (`qemu-img info`).
    ///
    /// Probing trusts the image's content: a raw disk whose guest wrote a
    /// qcow2 header at its start probes as qcow2, and that header may name
    /// any host file as its backing file. So use this to *suggest* a format
    /// to a person (a configuration check, an import), never to choose the
    /// format of a disk a guest has written: that comes from configuration.
    ///
    /// # Errors
    /// [`QemuError::File`] if the image is missing; [`QemuError::ImageLocked`]
    /// if a running QEMU writes it; [`QemuError::ImageInfo`] if QEMU cannot
    /// read it or finds a format other than raw and qcow2;
    /// [`QemuError::Spawn`] if `qemu-img` cannot run.
    pub fn detect(path: &Path) -> Result<DiskFormat> {
        let info = image_info(path, None)?;
        match info.format.as_str() {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            other => Err(QemuError::ImageInfo {
                image: path.to_owned(),
                format: "any format",
                detail: format!(
                    "it is in format {other}, and only raw and qcow2 are supported \
                     (convert it: qemu-img convert -O qcow2)"
                ),
            }),
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The size of the disk the guest sees in the image at `path`, read as
/// `format` (`qemu-img info`'s virtual size). A qcow2 file's own size is not
/// its disk's size; QEMU rounds a raw file's size up to 512 bytes.
///
/// # Errors
/// As [`DiskFormat::detect`]; [`QemuError::ImageInfo`] also when the image
/// is not in `format` or a backing file is missing.
pub fn virtual_size(path: &Path, format: DiskFormat) -> Result<u64> {
    Ok(image_info(path, Some(format))?.virtual_size)
}

/// What a view of an image may do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewAccess {
    /// Reads only; the image and its backing chain are never written.
    ReadOnly,
    /// Reads and writes; writes go to the top image, never to its backing
    /// chain, and are flushed into it by [`DiskView::close`].
    ReadWrite,
}

/// A disk image's guest-visible content as a raw file at [`path`](Self::path),
/// [`size`](Self::size) bytes long, for as long as this lives. See the
/// [module doc](self) for how and why.
#[derive(Debug)]
pub struct DiskView {
    image: PathBuf,
    format: DiskFormat,
    access: ViewAccess,
    path: PathBuf,
    size: u64,
    /// The exporting daemon; `None` for a raw image, which is its own view.
    daemon: Option<Daemon>,
    /// Whether [`DiskView::end`] has run.
    ended: bool,
}

impl DiskView {
    /// Opens a raw view of `image`, read as `format`.
    ///
    /// For [`DiskFormat::Qcow2`], `qemu-storage-daemon` exports the image at
    /// `mountpoint` (a regular file, created if missing; a stale mount there
    /// is unmounted first), writing its output to `<mountpoint>.log`, and
    /// this returns once the export shows the disk's virtual size. For
    /// [`DiskFormat::Raw`] no daemon runs: the view is `image` itself, and
    /// `mountpoint` is not touched.
    ///
    /// # Errors
    /// [`QemuError::File`] if the image is missing or the mountpoint or log
    /// cannot be prepared; [`QemuError::ImageLocked`] if a running QEMU (the
    /// VM) writes the image; [`QemuError::ImageInfo`] if it is not in
    /// `format` or its backing chain is broken; [`QemuError::ViewMountpoint`]
    /// if something else is mounted at `mountpoint`;
    /// [`QemuError::ViewStart`] or [`QemuError::Timeout`] if the daemon does
    /// not export it; [`QemuError::Spawn`] if a QEMU tool cannot run.
    pub fn open(image: &Path, format: DiskFormat, mountpoint: &Path, access: ViewAccess) -> Result<DiskView> {
        check_no_qemu_writes(image)?;
        // Checks the format and the backing chain (and, for qcow2, QEMU's
        // own locks again).
        let virtual_size = virtual_size(image, format)?;
        match format {
            DiskFormat::Raw => {
                let size = raw_size(image)?;
                Ok(DiskView {
                    image: image.to_owned(),
                    format,
                    access,
                    path: image.to_owned(),
                    size,
                    daemon: None,
                    ended: false,
                })
            }
            DiskFormat::Qcow2 => {
                let daemon = Daemon::start(image, format, mountpoint, access, virtual_size)?;
                Ok(DiskView {
                    image: image.to_owned(),
                    format,
                    access,
                    path: daemon.mountpoint.clone(),
                    size: virtual_size,
                    daemon: Some(daemon),
                    ended: false,
                })
            }
        }
    }

    /// The raw view: the FUSE export's absolute path, or the image itself
    /// for a raw image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the guest's disk in bytes, which is the view's length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The image this is a view of.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The image's format.
    pub fn format(&self) -> DiskFormat {
        self.format
    }

    /// What the view may do to the image.
    pub fn access(&self) -> ViewAccess {
        self.access
    }

    /// The exporting daemon's process id; `None` for a raw image.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(|daemon| daemon.child.as_ref()).map(Child::id)
    }

    /// The file holding the exporting daemon's output; `None` for a raw
    /// image.
    pub fn log(&self) -> Option<&Path> {
        self.daemon.as_ref().map(|daemon| daemon.log.as_path())
    }

    /// Ends the view: for a writable view, flushes what was written into
    /// the image (through the daemon, or an fsync of a raw image); then
    /// stops the daemon and makes sure its mount is gone, removing the
    /// mountpoint file if [`open`](Self::open) created it. Dropping the view
    /// does the same, logging errors instead of returning them.
    ///
    /// # Errors
    /// [`QemuError::ViewFlush`] if the flush failed (the image may lack the
    /// last writes); [`QemuError::ViewStop`] if the daemon had to be killed
    /// or exited with an error; [`QemuError::ViewUnmount`] if its mount
    /// could not be removed; [`QemuError::File`] if a raw image cannot be
    /// synced. Every cleanup step runs even after an error; the first error
    /// is returned.
    pub fn close(mut self) -> Result<()> {
        self.end()
    }

    /// What [`close`](Self::close) and `Drop` do; nothing the second time.
    fn end(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        match self.daemon.take() {
            Some(mut daemon) => daemon.stop(),
            None if self.access == ViewAccess::ReadWrite => sync_raw(&self.image),
            None => Ok(()),
        }
    }
}

impl Drop for DiskView {
    fn drop(&mut self) {
        if let Err(err) = self.end() {
            tracing::warn!("closing the disk view of {}: {err}", self.image.display());
        }
    }
}

/// A running `qemu-storage-daemon` exporting an image at a mountpoint.
/// Dropping it stops it as [`Daemon::stop`] does.
#[derive(Debug)]
struct Daemon {
    /// `None` once stopped.
    child: Option<Child>,
    image: PathBuf,
    /// Absolute, so that it can be found in `/proc/self/mountinfo`.
    mountpoint: PathBuf,
    log: PathBuf,
    access: ViewAccess,
    /// Whether we created the mountpoint file (and so remove it).
    created_mountpoint: bool,
    /// Whether the export came up (and so may hold writes to flush).
    exported: bool,
}

impl Daemon {
    /// Starts the daemon and waits until its export shows `size` bytes.
    fn start(image: &Path, format: DiskFormat, mountpoint: &Path, access: ViewAccess, size: u64) -> Result<Daemon> {
        let mountpoint = absolute_mountpoint(mountpoint)?;
        let created_mountpoint = prepare_mountpoint(image, &mountpoint)?;
        let unmounted = fs::metadata(&mountpoint).map_err(|source| QemuError::File {
            action: "look at the disk view's mountpoint",
            path: mountpoint.clone(),
            source,
        })?;
        let mut log = mountpoint.clone().into_os_string();
        log.push(".log");
        let log = PathBuf::from(log);
        let mut daemon = Daemon {
            child: None,
            image: image.to_owned(),
            mountpoint,
            log,
            access,
            created_mountpoint,
            exported: false,
        };
        // From here, an error drops `daemon`, which kills it and cleans up.
        let log_error = |source| QemuError::File {
            action: "create qemu-storage-daemon's output log",
            path: daemon.log.clone(),
            source,
        };
        let stdout = File::create(&daemon.log).map_err(log_error)?;
        let stderr = stdout.try_clone().map_err(log_error)?;
        let args = daemon_args(image, format, &daemon.mountpoint, access);
        tracing::debug!(?args, "starting {STORAGE_DAEMON}");
        let mut command = Command::new(STORAGE_DAEMON);
        command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // Its own process group: a terminal's Ctrl-C meant for us does not
        // stop it before we have flushed it.
        command.process_group(0);
        let parent = std::process::id();
        // SAFETY: `die_with_parent` calls pthread_sigmask, prctl and getppid only, all
        // async-signal-safe, and allocates nothing; nothing else runs
        // between fork and exec.
        unsafe {
            command.pre_exec(move || die_with_parent(parent));
        }
        let child = spawn_from_lasting_thread(command)
            .map_err(|source| QemuError::Spawn { binary: STORAGE_DAEMON.into(), source })?;
        daemon.child = Some(child);
        let exported_size = daemon.wait_exported(unmounted.dev())?;
        daemon.exported = true;
        if exported_size != size {
            return Err(QemuError::ViewMountpoint {
                image: daemon.image.clone(),
                mountpoint: daemon.mountpoint.clone(),
                detail: format!(
                    "qemu-storage-daemon exports {exported_size} bytes, but qemu-img info says the disk has {size}"
                ),
            });
        }
        Ok(daemon)
    }

    /// Waits until the mountpoint is no longer on `unmounted_dev` (the FUSE
    /// export is mounted over it); returns the export's size.
    fn wait_exported(&mut self, unmounted_dev: u64) -> Result<u64> {
        let what = format!("qemu-storage-daemon to export {} at {}", self.image.display(), self.mountpoint.display());
        let Daemon { child, image, mountpoint, log, .. } = self;
        let child = child.as_mut().expect("the daemon was just started");
        poll_until(&what, START_TIMEOUT, || {
            if let Some(status) = child.try_wait().expect("waitpid on our own unreaped child cannot fail") {
                return Err(start_error(image, mountpoint, log, status));
            }
            match fs::metadata(&*mountpoint) {
                Ok(meta) if meta.dev() != unmounted_dev => Ok(Some(meta.len())),
                Ok(_) => Ok(None),
                Err(source) => Err(QemuError::File {
                    action: "look at the disk view's mountpoint",
                    path: mountpoint.clone(),
                    source,
                }),
            }
        })
    }

    /// Flushes a writable export, stops the daemon (SIGTERM, then SIGKILL
    /// after [`STOP_TIMEOUT`]), removes its mount if it is still there, and
    /// the mountpoint file if we created it. Runs every step whatever fails;
    /// returns the first error. Does nothing the second time.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let mut first_error = None;
        let mut note = |result: Result<()>| {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        };
        let running = child.try_wait().expect("waitpid on our own unreaped child cannot fail").is_none();
        if running && self.exported && self.access == ViewAccess::ReadWrite {
            note(self.flush());
        }
        note(self.terminate(&mut child));
        note(self.unmount_if_mounted());
        if self.created_mountpoint {
            match fs::remove_file(&self.mountpoint) {
                Err(err) if err.kind() != ErrorKind::NotFound => {
                    tracing::warn!(mountpoint = %self.mountpoint.display(), "cannot remove the view's mountpoint: {err}");
                }
                _ => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// fsyncs the export, which makes the daemon flush the image.
    fn flush(&self) -> Result<()> {
        let flush_error = |source| QemuError::ViewFlush {
            image: self.image.clone(),
            mountpoint: self.mountpoint.clone(),
            log: self.log.clone(),
            source,
        };
        let file = OpenOptions::new().write(true).open(&self.mountpoint).map_err(flush_error)?;
        file.sync_all().map_err(flush_error)
    }

    /// SIGTERM, which makes the daemon flush, unmount and exit; SIGKILL if
    /// it has not exited after [`STOP_TIMEOUT`].
    fn terminate(&self, child: &mut Child) -> Result<()> {
        let stop_error = |detail: String| QemuError::ViewStop {
            image: self.image.clone(),
            mountpoint: self.mountpoint.clone(),
            detail,
            log: self.log.clone(),
            output: crate::process::tail(&self.log),
        };
        if let Some(status) = child.try_wait().expect("waitpid on our own unreaped child cannot fail") {
            // It exited by itself (a failed start, a crash): nothing to stop.
            return if self.exported { Err(stop_error(format!("it had exited ({status})"))) } else { Ok(()) };
        }
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our child,
        // not yet reaped, so it cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let exited =
            poll_until("qemu-storage-daemon to exit", STOP_TIMEOUT, || Ok(child.try_wait().ok().flatten())).ok();
        match exited {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(stop_error(format!("it exited with {status} after SIGTERM"))),
            None => {
                let _ = child.kill();
                let status = child.wait().ok().and_then(|status| status.signal());
                Err(stop_error(format!(
                    "it had not exited {} s after SIGTERM and was killed (signal {status:?})",
                    STOP_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Removes the export's mount if the daemon left it (it was killed).
    fn unmount_if_mounted(&self) -> Result<()> {
        if !is_mounted(&self.mountpoint) {
            return Ok(());
        }
        unmount_lazily(&self.mountpoint)
            .map_err(|detail| QemuError::ViewUnmount { mountpoint: self.mountpoint.clone(), detail })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::warn!("closing the disk view of {}: {err}", self.image.display());
        }
    }
}

/// The daemon's arguments: the image's file and format nodes, and a FUSE
/// export of the format node. Paths go in with commas doubled (QEMU's
/// escape); the file driver is named, so no path is read as a protocol.
fn daemon_args(image: &Path, format: DiskFormat, mountpoint: &Path, access: ViewAccess) -> Vec<OsString> {
    let (read_only, writable) = match access {
        ViewAccess::ReadOnly => (",read-only=on", "off"),
        ViewAccess::ReadWrite => ("", "on"),
    };
    let mut file_node = option_with_path("driver=file,node-name=image-file,filename=", image);
    file_node.push(read_only);
    let format_node = format!("driver={format},node-name=image,file=image-file{read_only}");
    let mut export = option_with_path("type=fuse,id=view,node-name=image,mountpoint=", mountpoint);
    export.push(format!(",writable={writable}"));
    vec!["--blockdev".into(), file_node, "--blockdev".into(), format_node.into(), "--export".into(), export]
}

/// `mountpoint` made absolute, its directory resolved (it cannot itself be
/// canonicalized while a stale mount answers `ENOTCONN`).
fn absolute_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(mountpoint).map_err(|source| QemuError::File {
        action: "resolve the disk view's mountpoint",
        path: mountpoint.to_owned(),
        source,
    })?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(QemuError::File {
            action: "use as the disk view's mountpoint",
            path: mountpoint.to_owned(),
            source: io::Error::new(ErrorKind::InvalidInput, "not a file path"),
        });
    };
    let dir = fs::canonicalize(dir).map_err(|source| QemuError::File {
        action: "find the directory of the disk view's mountpoint",
        path: dir.to_owned(),
        source,
    })?;
    Ok(dir.join(name))
}

/// Makes `mountpoint` a regular file nothing is mounted on: unmounts a
/// stale FUSE mount, refuses a live one, creates the file if missing.
/// Returns whether it created it.
fn prepare_mountpoint(image: &Path, mountpoint: &Path) -> Result<bool> {
    let unusable = |detail: String| QemuError::ViewMountpoint {
        image: image.to_owned(),
        mountpoint: mountpoint.to_owned(),
        detail,
    };
    // A dead mount's attributes may still be cached, so `stat` alone can
    // miss it; opening always asks the FUSE server.
    let metadata = fs::metadata(mountpoint).and_then(|meta| {
        if is_mounted(mountpoint) {
            File::open(mountpoint)?;
        }
        Ok(meta)
    });
    match metadata {
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            // A daemon that was killed left its mount behind.
            tracing::info!(mountpoint = %mountpoint.display(), "unmounting a stale FUSE mount");
            unmount_lazily(mountpoint).map_err(|detail| QemuError::ViewUnmount {
                mountpoint: mountpoint.to_owned(),
                detail: format!("{detail} (a stale mount)"),
            })?;
            prepare_mountpoint(image, mountpoint)
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(mountpoint).map_err(|source| {
                QemuError::File { action: "create the disk view's mountpoint", path: mountpoint.to_owned(), source }
            })?;
            Ok(true)
        }
        Err(source) => {
            Err(QemuError::File { action: "look at the disk view's mountpoint", path: mountpoint.to_owned(), source })
        }
        Ok(_) if is_mounted(mountpoint) => Err(unusable(format!(
            "something is already mounted there (a view another process still serves?); \
             if nothing should be, unmount it: fusermount3 -u {}",
            mountpoint.display()
        ))),
        Ok(meta) if !meta.is_file() => Err(unusable("it is not a regular file".to_owned())),
        Ok(meta) if fs::metadata(image).is_ok_and(|img| (img.dev(), img.ino()) == (meta.dev(), meta.ino())) => {
            Err(unusable("it is the image itself".to_owned()))
        }
        Ok(_) => Ok(false),
    }
}

/// Whether `/proc/self/mountinfo` lists a mount at the absolute `path`.
fn is_mounted(path: &Path) -> bool {
    let Ok(mountinfo) = fs::read("/proc/self/mountinfo") else { return false };
    let wanted = path.as_os_str().as_bytes();
    mountinfo
        .split(|&byte| byte == b'\n')
        .filter_map(|line| line.split(|&byte| byte == b' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

/// A mountinfo path field with its octal escapes (`\040` for a space,
/// `\011`, `\012`, `\134`) decoded.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match (field[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |value, d| value.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Detaches the mount at `path` (`umount -l`); without the right to
/// (not root), through FUSE's setuid helper (`fusermount3 -u -z`).
/// The error is a sentence for [`QemuError::ViewUnmount`].
fn unmount_lazily(path: &Path) -> std::result::Result<(), String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "the path holds a NUL byte".to_owned())?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let umount_error = io::Error::last_os_error();
    if umount_error.raw_os_error() != Some(libc::EPERM) {
        return Err(format!("umount2: {umount_error}"));
    }
    let output = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(path)
        .output()
        .map_err(|err| format!("umount2: {umount_error}; fusermount3 (from fuse3) cannot run: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("umount2: {umount_error}; fusermount3: {}", String::from_utf8_lossy(&output.stderr).trim()))
}

/// Where QEMU's image locks start: a QEMU process that holds a permission
/// on an image (`BLK_PERM_*`, bit `i`) holds a shared lock on byte
/// `100 + i` of the file (`RAW_LOCK_PERM_BASE` in QEMU's `file-posix.c`).
/// QEMU processes of every version since 2.10 read each other's locks so,
/// which makes this layout an interface between them, not an internal.
const QEMU_LOCK_PERM_BASE: i64 = 100;

/// The bit of `BLK_PERM_WRITE` among QEMU's permissions.
const QEMU_PERM_WRITE_BIT: i64 = 1;

/// Fails with [`QemuError::ImageLocked`] if a QEMU process (a running VM,
/// `qemu-io`, `qemu-storage-daemon`) holds `image` open for writing.
///
/// QEMU's own open does not tell us this for a raw image: a reader of a raw
/// image lets others write it, and a VM lets others read its raw disk, so a
/// read-only export of a running VM's raw disk would come up and serve
/// changing bytes. So we ask QEMU's write-permission lock directly
/// (`F_OFD_GETLK`, which takes no lock).
fn check_no_qemu_writes(image: &Path) -> Result<()> {
    let file = File::open(image).map_err(|source| QemuError::File {
        action: "open the disk image",
        path: image.to_owned(),
        source,
    })?;
    // SAFETY: flock is a plain C struct for which all zeroes is valid.
    let mut probe: libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = libc::F_WRLCK as libc::c_short;
    probe.l_whence = libc::SEEK_SET as libc::c_short;
    probe.l_start = QEMU_LOCK_PERM_BASE + QEMU_PERM_WRITE_BIT;
    probe.l_len = 1;
    // SAFETY: the descriptor is open for the call; `probe` is a valid flock
    // that F_OFD_GETLK reads and overwrites, and outlives the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } != 0 {
        // A file system without locks: QEMU cannot lock it either.
        tracing::debug!(image = %image.display(), "cannot probe QEMU's locks: {}", io::Error::last_os_error());
        return Ok(());
    }
    if probe.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(());
    }
    Err(QemuError::ImageLocked {
        image: image.to_owned(),
        detail: "a QEMU process holds its write lock (byte 101 of the file)".to_owned(),
    })
}

/// The error for a daemon that exited while starting: [`QemuError::ImageLocked`]
/// if another process holds the image, else [`QemuError::ViewStart`].
fn start_error(image: &Path, mountpoint: &Path, log: &Path, status: ExitStatus) -> QemuError {
    let output = crate::process::tail(log);
    if is_lock_failure(&output) {
        return QemuError::ImageLocked { image: image.to_owned(), detail: output.trim().to_owned() };
    }
    QemuError::ViewStart {
        image: image.to_owned(),
        mountpoint: mountpoint.to_owned(),
        status,
        log: log.to_owned(),
        output,
    }
}

/// Whether QEMU's message says another process holds the image's lock
/// (`Failed to get "write" lock`, `Failed to get shared "write" lock`).
fn is_lock_failure(message: &str) -> bool {
    message.contains("Failed to get") && message.contains("lock")
}

/// What `qemu-img info --output=json` says of an image, the fields we use.
#[derive(Debug, Deserialize)]
struct ImageInfo {
    /// The format QEMU read it as.
    format: String,
    /// The guest's disk size in bytes.
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
}

/// Runs `qemu-img info` on `image`, as `format` or probing if `None`.
fn image_info(image: &Path, format: Option<DiskFormat>) -> Result<ImageInfo> {
    // An absolute path is never read as an option or a protocol (`nbd:`).
    let absolute = std::path::absolute(image).map_err(|source| QemuError::File {
        action: "resolve the disk image's path",
        path: image.to_owned(),
        source,
    })?;
    fs::metadata(&absolute).map_err(|source| QemuError::File {
        action: "open the disk image",
        path: image.to_owned(),
        source,
    })?;
    let mut command = Command::new(QEMU_IMG);
    command.args(["info", "--output=json"]);
    if let Some(format) = format {
        command.args(["-f", format.as_str()]);
    }
    let output = command
        .arg(&absolute)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| QemuError::Spawn { binary: QEMU_IMG.into(), source })?;
    let format_name = format.map_or("any format", DiskFormat::as_str);
    if !output.status.success() {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if is_lock_failure(&detail) {
            return Err(QemuError::ImageLocked { image: image.to_owned(), detail });
        }
        return Err(QemuError::ImageInfo { image: image.to_owned(), format: format_name, detail });
    }
    serde_json::from_slice(&output.stdout).map_err(|err| QemuError::ImageInfo {
        image: image.to_owned(),
        format: format_name,
        detail: format!("qemu-img info printed JSON we cannot read: {err}"),
    })
}

/// The length of a raw image, as a reader of it sees it (seeking to the
/// end measures block devices too).
fn raw_size(image: &Path) -> Result<u64> {
    let measure = || -> io::Result<u64> { File::open(image)?.seek(SeekFrom::End(0)) };
    measure().map_err(|source| QemuError::File { action: "measure the disk image", path: image.to_owned(), source })
}

/// fsyncs a raw image written through its view.
fn sync_raw(image: &Path) -> Result<()> {
    let sync = || -> io::Result<()> { OpenOptions::new().write(true).open(image)?.sync_all() };
    sync().map_err(|source| QemuError::File { action: "sync the disk image", path: image.to_owned(), source })
}

/// In the child, between fork and exec: asks for SIGTERM when the thread
/// that forked us ends, and fails the exec if our parent is already gone
/// (it died before the request, which then would never fire).
fn die_with_parent(parent: u32) -> io::Result<()> {
    // Our caller may block its stop signals (a daemon waiting for them); the
    // child must see the SIGTERM that stops it.
    crate::process::clear_signal_mask()?;
    // SAFETY: PR_SET_PDEATHSIG with a signal number only sets a flag of
    // this process; prctl is async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// A command to spawn, and where to send the child.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread that spawns daemons; it lives as long as the process.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

/// Spawns `command` from a thread that lives as long as the process, so
/// that `PR_SET_PDEATHSIG` (which fires when the forking *thread* ends)
/// fires when the process ends, not when the caller's thread does.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if spawner.is_none() {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new().name("disk-view-spawner".to_owned()).spawn(move || {
            for (mut command, reply) in incoming {
                let _ = reply.send(command.spawn());
            }
        })?;
        *spawner = Some(requests);
    }
    let (reply, child) = mpsc::channel();
    let gone = || io::Error::other("the thread that starts qemu-storage-daemon is gone");
    spawner.as_ref().expect("set just above").send((command, reply)).map_err(|_| gone())?;
    child.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: Vec<OsString>) -> String {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn read_only_args_open_both_nodes_read_only() {
        let args =
            daemon_args(Path::new("/vm/a,b.qcow2"), DiskFormat::Qcow2, Path::new("/run/v,1"), ViewAccess::ReadOnly);
        assert_eq!(
            line(args),
            "--blockdev driver=file,node-name=image-file,filename=/vm/a,,b.qcow2,read-only=on \
             --blockdev driver=qcow2,node-name=image,file=image-file,read-only=on \
             --export type=fuse,id=view,node-name=image,mountpoint=/run/v,,1,writable=off"
        );
    }

    #[test]
    fn read_write_args_export_writable() {
        let args = daemon_args(Path::new("/vm/a.qcow2"), DiskFormat::Qcow2, Path::new("/run/v"), ViewAccess::ReadWrite);
        assert_eq!(
            line(args),
            "--blockdev driver=file,node-name=image-file,filename=/vm/a.qcow2 \
             --blockdev driver=qcow2,node-name=image,file=image-file \
             --export type=fuse,id=view,node-name=image,mountpoint=/run/v,writable=on"
        );
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo(br"/tmp/a\040b\134c\012"), b"/tmp/a b\\c\n");
        assert_eq!(unescape_mountinfo(br"/tmp/x\04"), br"/tmp/x\04");
        assert_eq!(unescape_mountinfo(br"\\"), br"\\");
    }

    #[test]
    fn lock_failures_are_recognised() {
        assert!(is_lock_failure("qemu-img: Could not open 'x': Failed to get shared \"write\" lock\nIs another"));
        assert!(is_lock_failure("Failed to get \"write\" lock"));
        assert!(!is_lock_failure("Image is not in qcow2 format"));
    }

    #[test]
    fn formats_read_and_write_lowercase() {
        let formats: Vec<DiskFormat> = serde_json::from_str(r#"["raw","qcow2"]"#).expect("valid JSON");
        assert_eq!(formats, [DiskFormat::Raw, DiskFormat::Qcow2]);
        assert_eq!(serde_json::to_string(&DiskFormat::Qcow2).expect("serializes"), r#""qcow2""#);
        assert!(serde_json::from_str::<DiskFormat>(r#""vmdk""#).is_err());
    }
}
