//! Opening and checking bitmap files: nothing is read or mapped before the
//! header and the length have been checked against the expected geometry.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::MmapMut;

use super::header::{file_len, Header, State, HEADER_LEN, MAX_UNITS};
use super::FLUSHED_SUFFIX;
use crate::error::{FormatError, Result, StoreError};
use durable_file::with_suffix;

/// Checks that `unit_count` bits can be held, returning the count as a `usize`.
pub(super) fn check_geometry(unit_size: u32, unit_count: u64) -> Result<usize> {
    let refuse =
        |reason| StoreError::CheckGeometry { unit_size, size: unit_count.saturating_mul(u64::from(unit_size)), reason };
    if unit_size == 0 {
        return Err(refuse("the unit size must not be zero"));
    }
    if unit_count > MAX_UNITS {
        return Err(refuse("more units than a bitmap may hold"));
    }
    usize::try_from(unit_count).map_err(|_| refuse("more units than this machine can address"))
}

/// Opens an existing bitmap file for reading and writing.
pub(super) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::OpenFile { path: path.to_owned(), source })
}

/// Maps a checked bitmap file shared and writable.
pub(super) fn map_file(file: &File, path: &Path, unit_count: u64) -> Result<MmapMut> {
    // SAFETY: the mapping is only accessed through `&[u8]`/`&mut [u8]` borrowed
    // from the `MmapMut`, within its length. The file belongs to this bitmap:
    // nobody else truncates it while it is mapped (the store holds a lock on its
    // directory), which is what would turn an access into SIGBUS. Other writers
    // to the same pages can only change bit values, never memory safety.
    let map =
        unsafe { MmapMut::map_mut(file) }.map_err(|source| StoreError::MapBitmap { path: path.to_owned(), source })?;
    let expected = file_len(unit_count);
    if map.len() as u64 != expected {
        // The file changed length between the check and the mapping.
        return Err(StoreError::CheckBitmap {
            path: path.to_owned(),
            source: FormatError::LengthMismatch { found: map.len() as u64, expected },
        });
    }
    Ok(map)
}

/// Why a bitmap file could not be accepted.
pub(super) enum Fault {
    Io(io::Error),
    Format(FormatError),
}

impl From<io::Error> for Fault {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<FormatError> for Fault {
    fn from(error: FormatError) -> Self {
        Self::Format(error)
    }
}

/// Reads and checks the header of a bitmap file, and its length, before
/// anything else of it is read or mapped.
pub(super) fn inspect(file: &File, unit_size: u32, unit_count: u64) -> Result<Header, Fault> {
    let len = file.metadata()?.len();
    let expected = file_len(unit_count);
    if len < HEADER_LEN as u64 {
        return Err(FormatError::LengthMismatch { found: len, expected }.into());
    }
    let mut bytes = [0; HEADER_LEN];
    file.read_exact_at(&mut bytes, 0)?;
    let header = Header::decode(&bytes)?;
    if header.unit_size != unit_size {
        return Err(FormatError::UnitSizeMismatch { found: header.unit_size, expected: unit_size }.into());
    }
    if header.unit_count != unit_count {
        return Err(FormatError::UnitCountMismatch { found: header.unit_count, expected: unit_count }.into());
    }
    if len != expected {
        return Err(FormatError::LengthMismatch { found: len, expected }.into());
    }
    Ok(header)
}

/// Reads and verifies the bits of the flushed copy of the bitmap at `path`.
pub(super) fn read_flushed_copy(path: &Path, unit_size: u32, unit_count: u64) -> Result<Vec<u8>> {
    let copy_path = with_suffix(path, FLUSHED_SUFFIX);
    let read = || -> Result<Vec<u8>, Fault> {
        let file = File::open(&copy_path)?;
        let header = inspect(&file, unit_size, unit_count)?;
        if header.state != State::Clean {
            return Err(FormatError::NotClean.into());
        }
        // The length was checked against the count, itself capped.
        let mut bits = vec![0; (file_len(unit_count) - HEADER_LEN as u64) as usize];
        file.read_exact_at(&mut bits, HEADER_LEN as u64)?;
        let computed = crc32fast::hash(&bits);
        if computed != header.crc {
            return Err(FormatError::ChecksumMismatch { stored: header.crc, computed }.into());
        }
        Ok(bits)
    };
    read().map_err(|fault| match fault {
        Fault::Io(source) => StoreError::ReadFlushedCopy { path: copy_path.clone(), source },
        Fault::Format(source) => StoreError::RecoverBitmap { path: copy_path.clone(), source },
    })
}
