//! A slice: a sparse file as large as the store, unit `n` at byte `n * unit_size`.
//!
//! Positional I/O (`pread`/`pwrite`) needs no seek position, so one file handle
//! serves any number of threads through `&self`.
//!
//! A slice keeps little of itself in the page cache: whoever reads a unit
//! keeps its own copy (memtap's FUSE file, which is the guest's RAM; the
//! guest's own cache of a disk), so a cached slice page would be a second
//! copy of the same bytes on the server. Every [`TRIM_EVERY`] bytes of I/O,
//! a slice asks the kernel to drop its clean pages and to start writing
//! back the dirty ones, which the next round then drops.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};

use crate::error::{Result, StoreError};

/// Bytes read or written through a slice between two trims of its page
/// cache: large enough that the trim's walk over the cache (at most this
/// much) costs nothing beside the I/O, small enough that an idle VM's
/// slices, whose last round is never trimmed, hold about a MiB each (with
/// 8 MiB, ten idle VMs held 4.8 MiB each on average, up to 9.9).
pub(crate) const TRIM_EVERY: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct Slice {
    path: PathBuf,
    file: File,
    /// Bytes read or written since the page cache was last trimmed.
    since_trim: AtomicU64,
}

impl Slice {
    /// Creates an empty (all holes) slice of `size` bytes, replacing any file at `path`.
    pub(crate) fn create(path: &Path, size: u64) -> Result<Self> {
        let create = || -> std::io::Result<File> {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
            file.set_len(size)?;
            file.sync_all()?;
            Ok(file)
        };
        let file = create().map_err(|source| StoreError::CreateFile { path: path.to_owned(), source })?;
        Ok(Self::with_file(path, file))
    }

    fn with_file(path: &Path, file: File) -> Self {
        Self { path: path.to_owned(), file, since_trim: AtomicU64::new(0) }
    }

    /// Opens an existing slice, which must be `size` bytes long.
    pub(crate) fn open(path: &Path, size: u64) -> Result<Self> {
        let open = || -> std::io::Result<(File, u64)> {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        };
        let (file, len) = open().map_err(|source| StoreError::OpenFile { path: path.to_owned(), source })?;
        if len != size {
            return Err(StoreError::CheckSlice { path: path.to_owned(), found: len, expected: size });
        }
        Ok(Self::with_file(path, file))
    }

    /// Reads `unit`, which starts at byte `offset`, into `buf`.
    pub(crate) fn read(&self, unit: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|source| StoreError::ReadUnit {
            path: self.path.clone(),
            unit,
            offset,
            source,
        })?;
        self.count_io(buf.len());
        Ok(())
    }

    /// Writes `data` as `unit`, which starts at byte `offset`.
    pub(crate) fn write(&self, unit: u64, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(|source| StoreError::WriteUnit {
            path: self.path.clone(),
            unit,
            offset,
            source,
        })?;
        self.count_io(data.len());
        Ok(())
    }

    /// Counts `len` bytes of I/O, trimming the page cache every [`TRIM_EVERY`].
    fn count_io(&self, len: usize) {
        let len = len as u64;
        let before = self.since_trim.fetch_add(len, Ordering::Relaxed);
        if before < TRIM_EVERY && before + len >= TRIM_EVERY {
            self.since_trim.store(0, Ordering::Relaxed);
            self.trim_page_cache();
        }
    }

    /// Drops the slice's clean pages from the page cache and starts the
    /// writeback of its dirty ones (`POSIX_FADV_DONTNEED` over the whole
    /// file). Advice only: the data stays in the file, and a failure (none
    /// is expected on a regular file) only leaves the pages cached.
    fn trim_page_cache(&self) {
        let _ = posix_fadvise(self.file.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }

    /// Punches a hole of `len` bytes at byte `offset`, where `unit` starts,
    /// giving its disk space back; the file keeps its size. A file system
    /// that cannot punch holes keeps the bytes: the caller's bits say they
    /// are no longer wanted, so that costs space only.
    pub(crate) fn punch(&self, unit: u64, offset: u64, len: u64) -> Result<()> {
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        // Both are within the file's size, which fits an off_t.
        match fallocate(self.file.as_raw_fd(), mode, offset as nix::libc::off_t, len as nix::libc::off_t) {
            Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
            Err(errno) => {
                Err(StoreError::PunchUnit { path: self.path.clone(), unit, offset, source: io::Error::from(errno) })
            }
        }
    }

    /// Makes every write so far durable (fdatasync).
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| StoreError::SyncSlice { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of `path` in the page cache, as util-linux's `fincore` counts them.
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(out.status.success(), "fincore failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("fincore prints a byte count")
    }

    #[test]
    fn its_page_cache_keeps_only_what_is_not_yet_written_back() {
        const UNIT: usize = 16 << 10;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fetched.slice");
        let slice = Slice::create(&path, 64 << 20).unwrap();
        let data = vec![0x5a; UNIT];
        let write = |units: std::ops::Range<u64>| {
            for unit in units {
                slice.write(unit, unit * UNIT as u64, &data).unwrap();
            }
        };
        // Six rounds of I/O, made clean on disk; then one more round,
        // which ends in a trim that drops all of them.
        let round = TRIM_EVERY / UNIT as u64;
        write(0..6 * round);
        slice.sync().unwrap();
        write(6 * round..7 * round);
        let cached = cached_bytes(&path);
        assert!(
            cached <= TRIM_EVERY,
            "{cached} bytes of the slice are cached after {} bytes of writes",
            7 * TRIM_EVERY
        );
        // Nothing was lost: the dropped pages read back from the file.
        let mut back = vec![0; UNIT];
        slice.read(3, 3 * UNIT as u64, &mut back).unwrap();
        assert_eq!(back, data);
    }
}
