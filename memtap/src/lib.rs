//! Server side: a FUSE filesystem with one file per consolidated VM,
//! `<vm>.ram`, whose pages arrive on demand from the desktop's memserv.
//!
//! QEMU on the server maps `<vm>.ram` as the VM's `memory-backend-file`
//! with `share=on`. A guest touch of a page the kernel has not cached
//! becomes a FUSE read; memtap answers it from, in order, the VM's dirty
//! slice, its fetched slice, its zero map, its prefetch cache, or memserv
//! (waking the desktop first). A remote fault brings a pivot window of
//! neighbours into the prefetch cache, not into the VM. Pages the guest
//! writes come back as FUSE writes (writeback) into the dirty slice; an
//! fsync makes them durable. Memory the guest frees and reports (virtio-balloon
//! free page reporting) comes as a punched hole (FUSE `fallocate`): those
//! pages are discarded, read as zeros without a fetch, give their space back,
//! and go home as holes. `<vm>.stats` shows the VM's counters as JSON.
#![warn(missing_docs)]

mod error;
mod fs;
mod mount;
pub mod prefetch;
mod pushed;
mod source;
pub mod stats;
mod vm;

pub use error::MemtapError;
pub use prefetch::PREFETCH_MAX_AGE;
pub use stats::RamStats;
pub use vm::{RamFileConfig, VmMemory, PAGE_SIZE};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mount::FuseMount;

/// Threads serving FUSE reads: enough for several vCPUs to fault at once
/// while one waits for the desktop.
const READ_WORKERS: usize = 8;

/// A mounted memtap; detached lazily when dropped without [`Mount::unmount`].
#[derive(Debug)]
pub struct Mount {
    fuse: FuseMount,
    mountpoint: PathBuf,
    vms: Vec<Arc<VmMemory>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Mount {
    /// Brings up every VM (connecting to its memserv) and mounts the
    /// filesystem at `mountpoint`.
    ///
    /// # Errors
    /// [`MemtapError`] for the first VM or the mount that failed.
    pub fn start(mountpoint: &Path, vms: Vec<RamFileConfig>) -> Result<Self, MemtapError> {
        let mut memories: Vec<Arc<VmMemory>> = Vec::new();
        for config in vms {
            if memories.iter().any(|m| m.name() == config.name) {
                return Err(MemtapError::DuplicateVm(config.name));
            }
            memories.push(Arc::new(VmMemory::open(config)?));
        }
        let (tx, rx) = crossbeam_channel::unbounded::<fs::Job>();
        let workers = (0..READ_WORKERS)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        let fuse = FuseMount::start(fs::MemtapFs::new(memories.clone(), tx), mountpoint)?;
        tracing::info!(mountpoint = %mountpoint.display(), vms = memories.len(), "memtap mounted");
        Ok(Mount { fuse, mountpoint: mountpoint.to_owned(), vms: memories, workers })
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The VMs served.
    pub fn vms(&self) -> &[Arc<VmMemory>] {
        &self.vms
    }

    /// Flushes every VM's dirty slice, then unmounts and waits for the
    /// FUSE session and the read workers to end (a connection that another
    /// mount namespace keeps open is aborted).
    ///
    /// # Errors
    /// The first flush error, or [`MemtapError::Busy`] when a process (a
    /// VM's QEMU) still has a file open: the mount is then detached lazily
    /// and goes away when the last user closes it.
    pub fn unmount(mut self) -> Result<(), MemtapError> {
        let flushed = self.vms.iter().try_for_each(|vm| vm.flush());
        if let Err(busy) = self.fuse.unmount() {
            return flushed.and(Err(busy));
        }
        // The session has ended and dropped the filesystem, and with it
        // the job sender: the workers finish too.
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a memtap read worker panicked");
            }
        }
        flushed
    }
}
