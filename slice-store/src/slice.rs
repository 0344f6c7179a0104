//! A slice: a sparse file as large as the store, unit `n` at byte `n * unit_size`.
//!
//! Positional I/O (`pread`/`pwrite`) needs no seek position, so one file handle
//! serves any number of threads through `&self`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fallocate, FallocateFlags};

use crate::error::{Result, StoreError};

#[derive(Debug)]
pub(crate) struct Slice {
    path: PathBuf,
    file: File,
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
        Ok(Self { path: path.to_owned(), file })
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
        Ok(Self { path: path.to_owned(), file })
    }

    /// Reads `unit`, which starts at byte `offset`, into `buf`.
    pub(crate) fn read(&self, unit: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|source| StoreError::ReadUnit {
            path: self.path.clone(),
            unit,
            offset,
            source,
        })
    }

    /// Writes `data` as `unit`, which starts at byte `offset`.
    pub(crate) fn write(&self, unit: u64, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(|source| StoreError::WriteUnit {
            path: self.path.clone(),
            unit,
            offset,
            source,
        })
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
