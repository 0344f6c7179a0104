//! Errors of memtap.

use std::path::PathBuf;

/// Why memtap could not bring up or serve a VM.
#[derive(Debug, thiserror::Error)]
pub enum MemtapError {
    /// The zero map was made for a RAM of another size.
    #[error("memtap: the zero map of VM {vm} is for {map_pages} pages, but memserv serves {ram_pages}: it belongs to another RAM file")]
    ZeroMapSize {
        /// The VM.
        vm: String,
        /// Pages the map covers.
        map_pages: u64,
        /// Pages of the RAM memserv serves.
        ram_pages: u64,
    },
    /// memserv could not be reached or refused the VM.
    #[error("memtap: cannot reach memserv for VM {vm}")]
    Remote {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: wire::WireError,
    },
    /// memserv serves a page size memtap does not use.
    #[error("memtap: memserv serves VM {vm} in {unit}-byte pages; memtap needs 4096")]
    PageSize {
        /// The VM.
        vm: String,
        /// The unit memserv announced.
        unit: u32,
    },
    /// The slice directory could not be created.
    #[error("memtap: cannot create slice directory {} for VM {vm}: is the disk full or read-only?", path.display())]
    SliceDir {
        /// The VM.
        vm: String,
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The slices could not be opened.
    #[error("memtap: cannot open the slices of VM {vm}")]
    Slices {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: slice_store::StoreError,
    },
    /// Reading or writing the VM's memory failed.
    #[error("memtap: I/O on VM {vm} at {offset:#x} failed")]
    Io {
        /// The VM.
        vm: String,
        /// The byte offset.
        offset: u64,
        /// The cause.
        #[source]
        source: slice_store::StoreError,
    },
    /// Pushing a working set failed.
    #[error("memtap: pushing {pages} pages of VM {vm}'s working set from its desktop failed (the guest fetches them on demand instead)")]
    Push {
        /// The VM.
        vm: String,
        /// Pages asked for.
        pages: usize,
        /// The cause.
        #[source]
        source: slice_store::SourceError,
    },
    /// Prefetched pages could not be moved into the fetched slice.
    #[error("memtap: {vm}: cannot move aged prefetched pages into the fetched slice")]
    Age {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: slice_store::SourceError,
    },
    /// Two VMs share a name.
    #[error("memtap: two VMs are named {0}: names must be unique")]
    DuplicateVm(String),
    /// The mount is still in use.
    #[error("memtap: {} is still in use (is a VM's QEMU still running on it?); detached lazily, it goes away when the last user closes it", path.display())]
    Busy {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The FUSE mount failed.
    #[error("memtap: cannot mount at {}: does the directory exist, is /dev/fuse there and fuse3 installed?", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
