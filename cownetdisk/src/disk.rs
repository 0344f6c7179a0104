//! One consolidated VM's disk: its slices, its diskserv source and its
//! counters, behind the byte-level calls the NBD connections make.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use slice_store::{Overlay, SliceStore};
use wire::{RemoteConfig, RemoteImage, WakeHook};

use crate::error::CownetdiskError;
use crate::protocol::{BlockSizes, MAX_PAYLOAD};
use crate::source::DiskSource;
use crate::stats::{get, Counters, DiskStats};

/// The default block size (the slices' unit): a filesystem block.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// The smallest block size: a sector.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// `WRITE_ZEROES` is carried out in pieces this large, aligned to it, so
/// that a large request needs a bounded buffer and only its own head and
/// tail can be partial blocks.
const ZERO_PIECE: u64 = 1 << 20;
const _: () = assert!(ZERO_PIECE % MAX_BLOCK_SIZE as u64 == 0);

/// How to bring up one VM's disk.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The VM's name: the NBD export's name.
    pub name: String,
    /// The slices live in `<state_dir>/<name>/`, the stats in
    /// `<state_dir>/<name>.stats`; both are kept across restarts.
    pub state_dir: PathBuf,
    /// Where diskserv is and how to talk to it.
    pub remote: RemoteConfig,
    /// The block size: the slices' unit, NBD's preferred block size.
    pub block_size: u32,
    /// Where every request to diskserv is recorded, if anywhere.
    pub trace: Option<Arc<fetch_trace::TraceWriter>>,
}

impl DiskConfig {
    /// A disk with [`DEFAULT_BLOCK_SIZE`] blocks.
    pub fn new(name: impl Into<String>, state_dir: impl Into<PathBuf>, remote: RemoteConfig) -> Self {
        DiskConfig {
            name: name.into(),
            state_dir: state_dir.into(),
            remote,
            block_size: DEFAULT_BLOCK_SIZE,
            trace: None,
        }
    }
}

/// A VM's disk as cownetdisk serves it: reads of blocks not yet here fetch
/// them from diskserv into the fetched slice; writes go to the dirty slice
/// (whole blocks without a fetch, partial ones after fetching the block
/// once); a flush makes the dirty slice and its bitmap durable.
#[derive(Debug)]
pub struct Disk {
    name: String,
    block_sizes: BlockSizes,
    overlay: Overlay<DiskSource>,
    counters: Arc<Counters>,
    stats_path: PathBuf,
}

impl Disk {
    /// Connects to diskserv (through the wake hook) to learn the disk's
    /// size, then opens or creates the slices at that size.
    ///
    /// # Errors
    /// [`CownetdiskError::BlockSize`], [`CownetdiskError::Remote`] or
    /// [`CownetdiskError::Slices`], naming the VM.
    pub fn open(config: DiskConfig, wake: Arc<dyn WakeHook>) -> Result<Self, CownetdiskError> {
        let DiskConfig { name, state_dir, remote, block_size, trace } = config;
        let bad_size = || CownetdiskError::BlockSize { vm: name.clone(), block_size };
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(bad_size());
        }
        // Minimum 1: any alignment works, partial blocks being
        // read-modify-written; preferred: whole blocks skip the fetch.
        let block_sizes = BlockSizes::new(1, block_size, MAX_PAYLOAD).map_err(|_| bad_size())?;
        let remote = RemoteImage::connect(remote, wake)
            .map_err(|source| CownetdiskError::Remote { vm: name.clone(), source })?;
        if remote.unit() != block_size {
            tracing::info!(
                vm = %name,
                diskserv_unit = remote.unit(),
                block_size,
                "diskserv marks zero runs in other units than the block size; they arrive as zero data"
            );
        }
        let dir = state_dir.join(&name);
        let store = SliceStore::open(&dir, block_size, remote.size()).map_err(|source| CownetdiskError::Slices {
            vm: name.clone(),
            dir: dir.clone(),
            source,
        })?;
        tracing::info!(vm = %name, size = remote.size(), block_size, recovery = %store.recovery(), "disk opened");
        let counters = Arc::new(Counters::default());
        let source = DiskSource::new(remote, block_size, Arc::clone(&counters), trace);
        let stats_path = state_dir.join(format!("{name}.stats"));
        Ok(Disk { name, block_sizes, overlay: Overlay::new(store, source), counters, stats_path })
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the disk in bytes: the size diskserv announced.
    pub fn size(&self) -> u64 {
        self.overlay.size()
    }

    /// The block size constraints advertised to NBD clients.
    pub fn block_sizes(&self) -> BlockSizes {
        self.block_sizes
    }

    /// Fills `buf` with the disk's bytes at `offset`, fetching blocks not
    /// yet here.
    ///
    /// # Errors
    /// [`CownetdiskError::Io`] when the range passes the end, the slices
    /// fail or diskserv does.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CownetdiskError> {
        self.overlay.read(offset, buf).map_err(|source| self.io_error("read", offset, source))
    }

    /// Writes `data` at `offset` into the dirty slice.
    ///
    /// # Errors
    /// [`CownetdiskError::Io`] when the range passes the end, a needed
    /// fetch fails or the slices do.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), CownetdiskError> {
        self.overlay.write(offset, data).map_err(|source| self.io_error("write", offset, source))
    }

    /// Writes `len` zero bytes at `offset`, in aligned pieces of at most
    /// 1 MiB: whole blocks are promoted without a fetch, like any write.
    ///
    /// # Errors
    /// As [`Disk::write`]; the pieces before the failing one are written.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), CownetdiskError> {
        let size = self.size();
        let out_of_range = slice_store::StoreError::OutOfRange { offset, len, size };
        let Some(end) = offset.checked_add(len).filter(|&end| end <= size) else {
            return Err(self.io_error("write zeroes", offset, out_of_range));
        };
        let zeros = vec![0u8; ZERO_PIECE.min(len) as usize];
        let mut at = offset;
        while at < end {
            let piece_end = ((at / ZERO_PIECE + 1) * ZERO_PIECE).min(end);
            let piece = &zeros[..(piece_end - at) as usize];
            self.overlay.write(at, piece).map_err(|source| self.io_error("write zeroes", at, source))?;
            at = piece_end;
        }
        Ok(())
    }

    /// Makes every write so far survive a reboot: the dirty slice's data,
    /// then its bitmap.
    ///
    /// # Errors
    /// [`CownetdiskError::Io`] when syncing fails; the previous flush then
    /// still holds.
    pub fn flush(&self) -> Result<(), CownetdiskError> {
        self.overlay.flush().map_err(|source| self.io_error("flush", 0, source))
    }

    /// The disk's slices, e.g. to export the dirty set of a checkpoint
    /// while nothing writes.
    pub fn slices(&self) -> &SliceStore {
        self.overlay.store()
    }

    /// The disk's counters now.
    pub fn stats(&self) -> DiskStats {
        let c = &self.counters;
        let overlay = self.overlay.stats();
        DiskStats {
            vm: self.name.clone(),
            disk_bytes: self.size(),
            block_size: self.block_sizes.preferred,
            connections: get(&c.connections),
            dropped_connections: get(&c.dropped_connections),
            requests: c.requests(),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
            bytes_zeroed: get(&c.bytes_zeroed),
            error_replies: get(&c.error_replies),
            fetch_calls: overlay.fetch_calls,
            remote_requests: get(&c.remote_requests),
            blocks_fetched: overlay.units_fetched,
            bytes_fetched: get(&c.bytes_fetched),
            whole_block_writes: overlay.whole_unit_promotions,
            partial_write_fetches: overlay.partial_write_fetches,
            fetched_blocks: overlay.fetched_units,
            dirty_blocks: overlay.dirty_units,
        }
    }

    /// Where the stats file is: `<state_dir>/<name>.stats`.
    pub fn stats_path(&self) -> &Path {
        &self.stats_path
    }

    /// Writes the stats file now and returns what it holds.
    ///
    /// # Errors
    /// [`CownetdiskError::WriteStats`] naming the file.
    pub fn publish_stats(&self) -> Result<DiskStats, CownetdiskError> {
        let stats = self.stats();
        stats
            .write_atomically(&self.stats_path)
            .map_err(|source| CownetdiskError::WriteStats { path: self.stats_path.clone(), source })?;
        Ok(stats)
    }

    /// The live counters, for the connections to update.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    fn io_error(&self, operation: &'static str, offset: u64, source: slice_store::StoreError) -> CownetdiskError {
        CownetdiskError::Io { vm: self.name.clone(), operation, offset, source }
    }
}
