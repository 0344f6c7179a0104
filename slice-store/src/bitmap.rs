//! A bitmap file, one bit per unit, that survives the crash of its process.
//!
//! The bits live in a file mapped `MAP_SHARED`. Setting a bit is a plain store
//! into the mapping, so it costs no system call; and because the mapping *is*
//! the page cache, the bit outlives the process the moment it is stored: if the
//! process is killed, the next process to map the file sees it.
//!
//! A reboot is different: the page cache is lost, and the kernel may have
//! written back any subset of the bitmap's pages before it went. The live file
//! is then trusted only if it was closed cleanly (state clean, CRC matching).
//! Otherwise the bitmap falls back to its *flushed copy* `<file>.flushed`,
//! written atomically (temporary file, fsync, rename, fsync of the directory)
//! by every [`flush`](PersistentBitmap::flush). Units set after that flush are
//! dropped (and bits cleared since come back), and a warning says so. A
//! caller that syncs its data before each flush (as
//! [`SliceStore`](crate::SliceStore) does) thus never finds a bit whose data
//! is not on disk.
//!
//! To tell the two cases apart, the header records the boot id of the last
//! process that opened the file (see [`BootId`]): same boot id, only the process
//! died; different boot id, the machine rebooted.
//!
//! The on-disk layout is in the `header` module.

mod check;
mod header;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bitvec::order::Lsb0;
use bitvec::slice::BitSlice;
use memmap2::MmapMut;

use crate::bootid::BootId;
use crate::error::{Result, StoreError};
use check::{check_geometry, inspect, map_file, open_rw, read_flushed_copy, Fault};
use durable_file::{replace_file, with_suffix};
use header::{Header, State, HEADER_LEN};

/// Suffix of the durable copy written at each flush.
const FLUSHED_SUFFIX: &str = ".flushed";

/// How a bitmap came to hold its bits when it was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The file was just created; no bit is set.
    Created,
    /// The last process closed it cleanly; every bit is kept.
    CleanShutdown,
    /// The last process died on this boot; the page cache kept every bit it set.
    ProcessCrash,
    /// The machine rebooted while the bitmap was open; the bits of the last
    /// flush were restored and later ones dropped.
    Reboot {
        /// Bits set in the live file but not in the flushed copy, as far as the
        /// live file reached the disk before the reboot (a lower bound).
        dropped_units: u64,
    },
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::CleanShutdown => f.write_str("clean shutdown, all units kept"),
            Self::ProcessCrash => f.write_str("process crash, all units kept"),
            Self::Reboot { dropped_units } => {
                write!(f, "reboot, at least {dropped_units} units set after the last flush dropped")
            }
        }
    }
}

/// A persistent bitmap of `unit_count` bits in a memory-mapped file.
///
/// Dropping it does what [`close`](Self::close) does and logs a failure.
/// Only one `PersistentBitmap` may have a file open at a time, and nobody else
/// may truncate the file meanwhile; [`SliceStore`](crate::SliceStore) ensures
/// both with a lock on its directory.
#[derive(Debug)]
pub struct PersistentBitmap {
    path: PathBuf,
    map: MmapMut,
    unit_size: u32,
    /// Number of bits; fits the address space (checked when opening).
    unit_count: usize,
    boot_id: BootId,
    recovery: Recovery,
    /// Number of bits set.
    ones: u64,
    /// Bumped each time a bit changes.
    generation: u64,
    /// Generation of the bits in the flushed copy.
    persisted: u64,
    /// Whether `finish` or `leave_open` has run, so that `Drop` does nothing.
    closed: bool,
}

impl PersistentBitmap {
    /// Creates a bitmap with no bit set at `path`, and its flushed copy,
    /// replacing any file there.
    ///
    /// # Errors
    ///
    /// [`StoreError::CheckGeometry`] for a zero unit size or a count above the cap,
    /// [`StoreError::CreateFile`], [`StoreError::OpenFile`] or [`StoreError::MapBitmap`] if the
    /// files cannot be written or mapped.
    pub fn create(path: impl AsRef<Path>, unit_size: u32, unit_count: u64, boot_id: BootId) -> Result<Self> {
        let path = path.as_ref();
        let bit_count = check_geometry(unit_size, unit_count)?;
        let bits = vec![0; bit_count.div_ceil(8)];
        let header = Header { unit_size, unit_count, boot_id, state: State::Clean, crc: crc32fast::hash(&bits) };
        // The copy first: a live file never exists without its copy.
        let copy_path = with_suffix(path, FLUSHED_SUFFIX);
        replace_file(&copy_path, &[&header.encode(), &bits])
            .map_err(|source| StoreError::CreateFile { path: copy_path, source })?;
        let live = Header { state: State::Open, crc: 0, ..header };
        replace_file(path, &[&live.encode(), &bits])
            .map_err(|source| StoreError::CreateFile { path: path.to_owned(), source })?;
        let file = open_rw(path)?;
        let map = map_file(&file, path, unit_count)?;
        tracing::debug!(path = %path.display(), unit_count, "created bitmap");
        Ok(Self {
            path: path.to_owned(),
            map,
            unit_size,
            unit_count: bit_count,
            boot_id,
            recovery: Recovery::Created,
            ones: 0,
            generation: 0,
            persisted: 0,
            closed: false,
        })
    }

    /// Opens an existing bitmap, deciding which bits to trust (see the module
    /// doc), then stamps it with `boot_id` (normally [`BootId::current`]) and
    /// the open state.
    ///
    /// # Errors
    ///
    /// [`StoreError::CheckGeometry`] as for [`create`](Self::create);
    /// [`StoreError::OpenFile`], [`StoreError::ReadBitmap`], [`StoreError::MapBitmap`] or
    /// [`StoreError::SyncBitmap`] for I/O failures; [`StoreError::CheckBitmap`] if the file
    /// is not a bitmap of this geometry (bad magic, version, unit size, count or
    /// length); after a reboot, [`StoreError::ReadFlushedCopy`] or
    /// [`StoreError::RecoverBitmap`] if the flushed copy is missing or damaged.
    pub fn open(path: impl AsRef<Path>, unit_size: u32, unit_count: u64, boot_id: BootId) -> Result<Self> {
        let path = path.as_ref();
        let bit_count = check_geometry(unit_size, unit_count)?;
        let file = open_rw(path)?;
        let header = inspect(&file, unit_size, unit_count).map_err(|fault| match fault {
            Fault::Io(source) => StoreError::ReadBitmap { path: path.to_owned(), source },
            Fault::Format(source) => StoreError::CheckBitmap { path: path.to_owned(), source },
        })?;
        let mut map = map_file(&file, path, unit_count)?;
        let bits = &mut map[HEADER_LEN..];
        let recovery = if header.boot_id == boot_id {
            match header.state {
                State::Clean => Recovery::CleanShutdown,
                State::Open => Recovery::ProcessCrash,
            }
        } else if header.state == State::Clean && crc32fast::hash(bits) == header.crc {
            Recovery::CleanShutdown
        } else {
            let copy = read_flushed_copy(path, unit_size, unit_count)?;
            let dropped_units = bits.iter().zip(&copy).map(|(live, kept)| u64::from((live & !kept).count_ones())).sum();
            bits.copy_from_slice(&copy);
            tracing::warn!(
                path = %path.display(),
                dropped_units,
                "the machine rebooted while this bitmap was open: restored the bits of its last \
                 flush; units set after that flush were dropped"
            );
            Recovery::Reboot { dropped_units }
        };
        let mut bitmap = Self {
            path: path.to_owned(),
            map,
            unit_size,
            unit_count: bit_count,
            boot_id,
            recovery,
            ones: 0,
            // After a process crash the live bits may be ahead of the flushed copy.
            generation: u64::from(recovery == Recovery::ProcessCrash),
            persisted: 0,
            // Until it is stamped open, dropping it must not mark it clean.
            closed: true,
        };
        bitmap.ones = bitmap.bits().count_ones() as u64;
        bitmap.write_header(State::Open, 0)?;
        bitmap.closed = false;
        Ok(bitmap)
    }

    /// The bitmap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes of the units the bits stand for (recorded, not used).
    pub fn unit_size(&self) -> u32 {
        self.unit_size
    }

    /// Number of bits.
    pub fn unit_count(&self) -> u64 {
        self.unit_count as u64
    }

    /// How the bits were recovered when the bitmap was opened.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Whether the bit of `unit` is set; units past the end are never set.
    pub fn get(&self, unit: u64) -> bool {
        usize::try_from(unit).ok().and_then(|index| self.bits().get(index).map(|bit| *bit)).unwrap_or(false)
    }

    /// Sets the bit of `unit`; returns whether it was clear before. The bit
    /// survives a crash of this process at once, a reboot only after a flush.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] if `unit` is past the end.
    pub fn set(&mut self, unit: u64) -> Result<bool> {
        let index = self.index(unit)?;
        let newly_set = !self.bits_mut().replace(index, true);
        if newly_set {
            self.ones += 1;
            self.generation += 1;
        }
        Ok(newly_set)
    }

    /// Clears the bit of `unit`; returns whether it was set before. Like
    /// [`set`](Self::set), the change survives a crash of this process at
    /// once, a reboot only after a flush (until then a reboot brings the bit
    /// back).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] if `unit` is past the end.
    pub fn clear(&mut self, unit: u64) -> Result<bool> {
        let index = self.index(unit)?;
        let was_set = self.bits_mut().replace(index, false);
        if was_set {
            self.ones -= 1;
            self.generation += 1;
        }
        Ok(was_set)
    }

    /// Number of bits set.
    pub fn count_ones(&self) -> u64 {
        self.ones
    }

    /// The first set bit at or after `from`.
    pub fn next_one(&self, from: u64) -> Option<u64> {
        let start = usize::try_from(from).ok()?;
        let found = self.bits().get(start..)?.first_one()?;
        Some((start + found) as u64)
    }

    /// Writes the mapping back to the file (msync) and, if a bit changed since
    /// the last flush, replaces the flushed copy with the current bits. After a
    /// reboot, every bit set before this call is kept.
    ///
    /// # Errors
    ///
    /// [`StoreError::SyncBitmap`] or [`StoreError::WriteFlushedCopy`]; the previous
    /// flushed copy is then still in place.
    pub fn flush(&mut self) -> Result<()> {
        self.map.flush().map_err(|source| self.sync_error(source))?;
        if let Some(snapshot) = self.snapshot() {
            snapshot.persist()?;
            self.mark_persisted(snapshot.generation);
        }
        Ok(())
    }

    /// Flushes, then marks the file clean with the CRC of its bits, so that it
    /// is trusted as it is even after a reboot.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush); the file then stays marked open and the next
    /// open after a reboot uses the flushed copy.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    /// What `close` does, for owners that cannot move the bitmap out.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.flush()?;
        let crc = crc32fast::hash(&self.map[HEADER_LEN..]);
        self.write_header(State::Clean, crc)
    }

    /// Gives up on closing: the file stays marked open, so after a reboot the
    /// flushed copy is used. For owners whose data sync failed.
    pub(crate) fn leave_open(&mut self) {
        self.closed = true;
    }

    /// A copy of the bits to persist later without holding `&mut self`, or
    /// `None` if the flushed copy is already up to date.
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        if self.generation == self.persisted {
            return None;
        }
        let bits = self.map[HEADER_LEN..].to_vec();
        let header = Header {
            unit_size: self.unit_size,
            unit_count: self.unit_count as u64,
            boot_id: self.boot_id,
            state: State::Clean,
            crc: crc32fast::hash(&bits),
        };
        Some(Snapshot {
            path: with_suffix(&self.path, FLUSHED_SUFFIX),
            header: header.encode(),
            bits,
            generation: self.generation,
        })
    }

    /// Records that a snapshot taken at `generation` is now the flushed copy.
    pub(crate) fn mark_persisted(&mut self, generation: u64) {
        self.persisted = self.persisted.max(generation);
    }

    fn bits(&self) -> &BitSlice<u8, Lsb0> {
        // In bounds: the mapping was checked to hold `unit_count` bits.
        &BitSlice::from_slice(&self.map[HEADER_LEN..])[..self.unit_count]
    }

    fn bits_mut(&mut self) -> &mut BitSlice<u8, Lsb0> {
        // In bounds, as for `bits`.
        &mut BitSlice::from_slice_mut(&mut self.map[HEADER_LEN..])[..self.unit_count]
    }

    /// The index of `unit`'s bit, checked.
    fn index(&self, unit: u64) -> Result<usize> {
        usize::try_from(unit)
            .ok()
            .filter(|&index| index < self.unit_count)
            .ok_or(StoreError::UnitOutOfRange { unit, unit_count: self.unit_count as u64 })
    }

    /// Writes the header into the mapping and syncs it to the file.
    fn write_header(&mut self, state: State, crc: u32) -> Result<()> {
        let header =
            Header { unit_size: self.unit_size, unit_count: self.unit_count as u64, boot_id: self.boot_id, state, crc };
        self.map[..HEADER_LEN].copy_from_slice(&header.encode());
        self.map.flush_range(0, HEADER_LEN).map_err(|source| self.sync_error(source))
    }

    fn sync_error(&self, source: io::Error) -> StoreError {
        StoreError::SyncBitmap { path: self.path.clone(), source }
    }
}

impl Drop for PersistentBitmap {
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::warn!(
                path = %self.path.display(),
                error = &error as &dyn std::error::Error,
                "closing the bitmap failed; after a reboot its flushed copy will be used"
            );
        }
    }
}

/// The bits of a bitmap at one moment, ready to become its flushed copy.
#[derive(Debug)]
pub(crate) struct Snapshot {
    path: PathBuf,
    header: [u8; HEADER_LEN],
    bits: Vec<u8>,
    pub(crate) generation: u64,
}

impl Snapshot {
    /// Replaces the flushed copy with these bits, atomically and durably.
    pub(crate) fn persist(&self) -> Result<()> {
        replace_file(&self.path, &[&self.header, &self.bits])
            .map_err(|source| StoreError::WriteFlushedCopy { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests;
