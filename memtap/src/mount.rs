//! The kernel side of a memtap mount, done by memtap itself: `/dev/fuse`
//! opened and mounted here, the FUSE session run on a thread of its own,
//! and an unmount that always ends that session.
//!
//! fuser can mount too, but its unmount-on-drop takes a connection the
//! kernel has already closed for a live one and unmounts a second time
//! (logging `Unmount failed: Invalid argument` on every clean stop), and
//! it cannot end a session whose mount another mount namespace still
//! holds (a process that unshared its namespace after the mount, as
//! `ip netns exec` does): the kernel keeps such a connection open after
//! our unmount, and the session thread would wait for ever. Here the
//! connection is aborted through the FUSE control filesystem
//! (`/sys/fs/fuse/connections/<id>/abort`) when the session has not ended
//! shortly after the unmount.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};

use crate::error::MemtapError;

/// Where the kernel's FUSE control filesystem lives.
const FUSE_CONTROL: &str = "/sys/fs/fuse/connections";
/// How long a session may take to end after its unmount before its
/// connection is aborted.
const SESSION_END: Duration = Duration::from_secs(2);

/// A mounted FUSE filesystem and the thread serving it.
#[derive(Debug)]
pub(crate) struct FuseMount {
    mountpoint: PathBuf,
    /// The connection's name under [`FUSE_CONTROL`].
    connection: u64,
    session: Option<JoinHandle<()>>,
}

impl FuseMount {
    /// Mounts `filesystem` at `mountpoint` (root only; `nosuid`, `nodev`,
    /// `noexec`, permissions checked by the kernel) and serves it.
    pub(crate) fn start<FS: fuser::Filesystem + Send + 'static>(
        filesystem: FS,
        mountpoint: &Path,
    ) -> Result<FuseMount, MemtapError> {
        let error = |source: std::io::Error| MemtapError::Mount { path: mountpoint.to_owned(), source };
        let root_mode = std::fs::metadata(mountpoint).map_err(error)?.permissions().mode();
        let device: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/fuse")
            .map_err(error)?
            .into();
        let data = format!(
            "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
            device.as_raw_fd(),
            nix::unistd::getuid(),
            nix::unistd::getgid()
        );
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        nix::mount::mount(Some("memtap"), mountpoint, Some("fuse.memtap"), flags, Some(data.as_str()))
            .map_err(|errno| error(errno.into()))?;
        // Who may reach the file is the kernel's to decide: without
        // `allow_other` only this user (root) can look it up and open it.
        // fuser's own check would also refuse a request from another uid on
        // a file already open, as QEMU's after it drops to its unprivileged
        // user: its `fallocate` (free page reporting) then failed with
        // EACCES. So fuser lets through whatever the kernel sends.
        let mut session = fuser::Session::from_fd(filesystem, device, fuser::SessionACL::All);
        let thread = std::thread::Builder::new().name("memtap-fuse".into()).spawn(move || {
            if let Err(e) = session.run() {
                tracing::error!("memtap's FUSE session ended: {e}");
            }
        });
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                let _ = nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH);
                return Err(error(e));
            }
        };
        // The mount's device number names its connection; stat asks the
        // session, which runs now.
        let dev = match std::fs::metadata(mountpoint) {
            Ok(meta) => meta.dev(),
            Err(e) => {
                let _ = nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH);
                return Err(error(e));
            }
        };
        let connection = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        Ok(FuseMount { mountpoint: mountpoint.to_owned(), connection, session: Some(thread) })
    }

    /// Unmounts and waits for the session to end, aborting the connection
    /// if another mount namespace keeps it open.
    ///
    /// # Errors
    /// [`MemtapError::Busy`] when a process still has a file open: the
    /// mount is then left to [`Drop`], which detaches it lazily.
    pub(crate) fn unmount(&mut self) -> Result<(), MemtapError> {
        nix::mount::umount(&self.mountpoint)
            .map_err(|errno| MemtapError::Busy { path: self.mountpoint.clone(), source: errno.into() })?;
        let Some(session) = self.session.take() else { return Ok(()) };
        let deadline = Instant::now() + SESSION_END;
        while !session.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !session.is_finished() {
            tracing::warn!(
                mountpoint = %self.mountpoint.display(),
                "the FUSE connection outlived its unmount (another mount namespace holds it): aborting it"
            );
            if let Err(e) = abort_connection(self.connection) {
                tracing::error!(
                    mountpoint = %self.mountpoint.display(),
                    "cannot abort FUSE connection {}: {e}; its session thread stays until that namespace ends",
                    self.connection
                );
                return Ok(());
            }
        }
        if session.join().is_err() {
            tracing::error!("memtap's FUSE session thread panicked");
        }
        Ok(())
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.session.is_none() {
            return;
        }
        // Not unmounted (an error path, or still in use): detach, so the
        // mount disappears once its last user is gone, and do not wait for
        // a session that may be serving that user.
        if let Err(e) = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            tracing::warn!(mountpoint = %self.mountpoint.display(), "cannot detach memtap: {e}");
        }
    }
}

/// Aborts FUSE connection `id`, mounting the control filesystem first if
/// the host has not.
fn abort_connection(id: u64) -> std::io::Result<()> {
    let control = Path::new(FUSE_CONTROL);
    let abort = control.join(id.to_string()).join("abort");
    if !abort.exists() {
        nix::mount::mount(Some("fusectl"), control, Some("fusectl"), MsFlags::empty(), None::<&str>)
            .map_err(std::io::Error::from)?;
    }
    std::fs::write(abort, "1")
}
