//! Finding the units of a file that are all zeros, to build the known-zero map
//! ([`SliceStore::mark_zero_ranges`](crate::SliceStore::mark_zero_ranges)).
//!
//! The desktop side scans its VM's RAM file (or disk image) once, and the
//! server marks those units zero so that it never fetches them. An idle VM's
//! RAM is mostly free pages, which are holes in a sparse file or zero-filled
//! pages: holes are skipped with `SEEK_DATA` without reading them, and the rest
//! is read in chunks of about a megabyte.

use std::fs::File;
use std::io;
use std::num::NonZeroU32;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use crate::error::{Error, Result};

/// About how many bytes are read at a time.
const CHUNK_BYTES: u64 = 1 << 20;

/// The units of `unit_size` bytes of the file at `path` that hold only zeros,
/// as increasing, non-adjacent ranges of unit numbers. A partial last unit
/// counts if its bytes are all zeros.
///
/// # Errors
///
/// [`Error::CheckGeometry`] for a zero unit size, [`Error::OpenFile`] if the
/// file cannot be opened, [`Error::ScanFile`] if it cannot be read.
pub fn scan_file(path: impl AsRef<Path>, unit_size: u32) -> Result<Vec<Range<u64>>> {
    let path = path.as_ref();
    let unit = u64::from(
        NonZeroU32::new(unit_size)
            .ok_or(Error::CheckGeometry { unit_size, size: 0, reason: "the unit size must not be zero" })?
            .get(),
    );
    let file = File::open(path).map_err(|source| Error::OpenFile { path: path.to_owned(), source })?;
    let scan_error = |offset, source| Error::ScanFile { path: path.to_owned(), offset, source };
    let len = file.metadata().map_err(|source| scan_error(0, source))?.len();
    let units = len.div_ceil(unit);
    let chunk_units = (CHUNK_BYTES / unit).max(1);
    let mut buf = Vec::new();
    let zeros = vec![0; unit_size as usize];
    let mut ranges = Ranges::default();
    let mut next = 0;
    while next < units {
        let start = next * unit;
        let data = next_data(&file, start).map_err(|source| scan_error(start, source))?;
        // Every unit that ends before the next data is a hole.
        let first_data_unit = data.map_or(units, |offset| offset / unit);
        if first_data_unit > next {
            ranges.push(next..first_data_unit);
            next = first_data_unit;
            continue;
        }
        let end = (next + chunk_units).min(units);
        // At most CHUNK_BYTES or one unit, both of which fit memory.
        buf.resize(((end * unit).min(len) - start) as usize, 0);
        file.read_exact_at(&mut buf, start).map_err(|source| scan_error(start, source))?;
        for (index, bytes) in (next..).zip(buf.chunks(unit_size as usize)) {
            if bytes == &zeros[..bytes.len()] {
                ranges.push(index..index + 1);
            }
        }
        next = end;
    }
    Ok(ranges.0)
}

/// The first offset at or after `offset` that holds data, or `None` if only a
/// hole follows. A filesystem that does not know holes reports data everywhere.
fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let position = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match lseek(file.as_raw_fd(), position, Whence::SeekData) {
        // Never negative: lseek reports failures as errors.
        Ok(found) => Ok(Some(found as u64)),
        Err(Errno::ENXIO) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// Ranges of units, merged as they are pushed in increasing order.
#[derive(Default)]
struct Ranges(Vec<Range<u64>>);

impl Ranges {
    fn push(&mut self, range: Range<u64>) {
        match self.0.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => self.0.push(range),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    const UNIT: u32 = 4096;

    /// A file whose units hold `content[i]` (0 for zeros), `None` for a hole.
    fn file(dir: &Path, content: &[Option<u8>], len: u64) -> std::path::PathBuf {
        let path = dir.join("ram");
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        for (unit, byte) in content.iter().enumerate() {
            if let Some(byte) = byte {
                let offset = unit as u64 * u64::from(UNIT);
                let bytes = (u64::from(UNIT).min(len - offset)) as usize;
                file.write_all_at(&vec![*byte; bytes], offset).unwrap();
            }
        }
        path
    }

    fn scan(path: &Path) -> Vec<(u64, u64)> {
        scan_file(path, UNIT).unwrap().into_iter().map(|range| (range.start, range.end)).collect()
    }

    #[test]
    fn finds_holes_and_zero_filled_units() {
        let dir = tempfile::tempdir().unwrap();
        let content = [Some(1), Some(0), None, None, Some(0), Some(2), None, Some(3)];
        let path = file(dir.path(), &content, 8 * 4096);
        assert_eq!(scan(&path), [(1, 5), (6, 7)]);
    }

    #[test]
    fn a_file_that_is_one_hole_is_one_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), &[], 300 * 4096);
        assert_eq!(scan(&path), [(0, 300)]);
    }

    #[test]
    fn scans_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut content = vec![Some(0); 600];
        content[300] = Some(9);
        let path = file(dir.path(), &content, 600 * 4096);
        assert_eq!(scan(&path), [(0, 300), (301, 600)]);
    }

    #[test]
    fn a_partial_last_unit_counts_by_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), &[Some(0), Some(0)], 4096 + 100);
        assert_eq!(scan(&path), [(0, 2)]);
        let path = file(dir.path(), &[Some(0), Some(5)], 4096 + 100);
        assert_eq!(scan(&path), [(0, 1)]);
    }

    #[test]
    fn an_empty_file_has_no_zero_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), &[], 0);
        assert_eq!(scan(&path), []);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = scan_file("/nonexistent/ram", UNIT).unwrap_err();
        assert!(matches!(error, Error::OpenFile { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/ram"));
    }
}
