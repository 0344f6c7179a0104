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

/// About how many bytes are read at a time.
const CHUNK_BYTES: u64 = 1 << 20;

/// The units of `unit_size` bytes of the file at `path` that hold only zeros,
/// as increasing, non-adjacent ranges of unit numbers. A partial last unit
/// counts if its bytes are all zeros.
///
/// # Errors
///
/// [`ZeroMapError::Invalid`] for a zero unit size, [`ZeroMapError::Scan`] if
/// the file cannot be opened or read.
pub fn scan_file(path: impl AsRef<Path>, unit_size: u32) -> Result<Vec<Range<u64>>, ZeroMapError> {
    let path = path.as_ref();
    let unit =
        u64::from(NonZeroU32::new(unit_size).ok_or(ZeroMapError::Invalid("the unit size must not be zero"))?.get());
    let scan_error = |offset, source| ZeroMapError::Scan { path: path.to_owned(), offset, source };
    let file = File::open(path).map_err(|source| scan_error(0, source))?;
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
        assert!(matches!(error, ZeroMapError::Scan { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/ram"));
    }
}

/// The zero map as it travels with a VM: the unit size, the number of units,
/// and the ranges of units known to be zero.
///
/// File layout (all little-endian), written by [`ZeroMap::encode`]:
///
/// | bytes | field |
/// |---|---|
/// | 8 | magic `b"JTZEROM1"` |
/// | 4 | format version, 1 |
/// | 4 | unit size |
/// | 8 | unit count |
/// | 8 | number of runs `n` |
/// | 16 × n | runs: first unit (u64), number of units (u64) |
/// | 4 | CRC-32 of everything before it |
///
/// Runs are increasing, non-empty, non-overlapping and inside the unit count;
/// a reader checks the length the header implies before reading the runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeroMap {
    /// Bytes per unit (4096 for RAM pages).
    pub unit_size: u32,
    /// Units in the file the map describes.
    pub units: u64,
    /// Ranges of unit numbers that are all zero.
    pub ranges: Vec<Range<u64>>,
}

/// Why bytes are not a zero map.
#[derive(Debug, thiserror::Error)]
pub enum ZeroMapError {
    /// The file could not be read or written.
    #[error("zero map {}: cannot read or write it", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file to scan could not be opened or read.
    #[error("cannot scan {} for zero units (at offset {offset:#x})", path.display())]
    Scan {
        /// The file.
        path: std::path::PathBuf,
        /// Where the read failed.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a zero map of this version, or are damaged.
    #[error("zero map is invalid: {0}")]
    Invalid(&'static str),
}

const ZERO_MAP_MAGIC: [u8; 8] = *b"JTZEROM1";
const ZERO_MAP_VERSION: u32 = 1;
const ZERO_MAP_HEADER: usize = 8 + 4 + 4 + 8 + 8;
const ZERO_MAP_RUN: usize = 16;
const ZERO_MAP_CRC: usize = 4;
const _: () = assert!(ZERO_MAP_HEADER == 32);

impl ZeroMap {
    /// Scans a file (see [`scan_file`]).
    ///
    /// # Errors
    /// As [`scan_file`].
    pub fn scan(path: impl AsRef<Path>, unit_size: u32) -> Result<Self, ZeroMapError> {
        let path = path.as_ref();
        let ranges = scan_file(path, unit_size)?;
        let len = std::fs::metadata(path)
            .map_err(|source| ZeroMapError::Scan { path: path.to_owned(), offset: 0, source })?
            .len();
        Ok(ZeroMap { unit_size, units: len.div_ceil(u64::from(unit_size)), ranges })
    }

    /// Number of units known to be zero.
    pub fn zero_units(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// The map in its file layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ZERO_MAP_HEADER + self.ranges.len() * ZERO_MAP_RUN + ZERO_MAP_CRC);
        out.extend_from_slice(&ZERO_MAP_MAGIC);
        out.extend_from_slice(&ZERO_MAP_VERSION.to_le_bytes());
        out.extend_from_slice(&self.unit_size.to_le_bytes());
        out.extend_from_slice(&self.units.to_le_bytes());
        out.extend_from_slice(&(self.ranges.len() as u64).to_le_bytes());
        for r in &self.ranges {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&(r.end - r.start).to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a map from its file layout, checking every field.
    ///
    /// # Errors
    /// [`ZeroMapError::Invalid`] naming the first thing wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, ZeroMapError> {
        let invalid = ZeroMapError::Invalid;
        if bytes.len() < ZERO_MAP_HEADER + ZERO_MAP_CRC {
            return Err(invalid("shorter than its header"));
        }
        if bytes[..8] != ZERO_MAP_MAGIC {
            return Err(invalid("bad magic: not a Jettison zero map"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"));
        if u32_at(8) != ZERO_MAP_VERSION {
            return Err(invalid("unknown format version (this build reads version 1)"));
        }
        let unit_size = u32_at(12);
        let units = u64_at(16);
        let runs = u64_at(24);
        if unit_size == 0 || !unit_size.is_power_of_two() {
            return Err(invalid("unit size is not a power of two"));
        }
        // Size cap before reading the runs: the header must agree with the length.
        let expected =
            runs.checked_mul(ZERO_MAP_RUN as u64).and_then(|n| n.checked_add((ZERO_MAP_HEADER + ZERO_MAP_CRC) as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(invalid("length does not match the number of runs"));
        }
        let body = bytes.len() - ZERO_MAP_CRC;
        if crc32fast::hash(&bytes[..body]) != u32_at(body) {
            return Err(invalid("checksum mismatch: the file is damaged"));
        }
        let mut ranges = Vec::with_capacity(runs as usize);
        let mut previous_end = 0;
        for i in 0..runs as usize {
            let at = ZERO_MAP_HEADER + i * ZERO_MAP_RUN;
            let (start, len) = (u64_at(at), u64_at(at + 8));
            let end = start.checked_add(len).ok_or(invalid("run overflows"))?;
            if len == 0 || end > units || (i > 0 && start < previous_end) {
                return Err(invalid("runs must be non-empty, increasing and inside the unit count"));
            }
            previous_end = end;
            ranges.push(start..end);
        }
        Ok(ZeroMap { unit_size, units, ranges })
    }

    /// Writes the map to `path` (replacing it atomically and durably).
    ///
    /// # Errors
    /// [`ZeroMapError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), ZeroMapError> {
        durable_file::replace_file(path, &[&self.encode()])
            .map_err(|source| ZeroMapError::Io { path: path.to_owned(), source })
    }

    /// Reads a map written by [`ZeroMap::save`].
    ///
    /// # Errors
    /// [`ZeroMapError::Io`] or [`ZeroMapError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, ZeroMapError> {
        let bytes = std::fs::read(path).map_err(|source| ZeroMapError::Io { path: path.to_owned(), source })?;
        Self::decode(&bytes)
    }
}

#[cfg(test)]
mod file_format_tests {
    use super::*;

    fn sample() -> ZeroMap {
        ZeroMap { unit_size: 4096, units: 100, ranges: vec![0..3, 10..11, 50..100] }
    }

    #[test]
    fn round_trips_and_counts() {
        let map = sample();
        assert_eq!(map.zero_units(), 54);
        assert_eq!(ZeroMap::decode(&map.encode()).unwrap(), map);
        let empty = ZeroMap { unit_size: 512, units: 0, ranges: vec![] };
        assert_eq!(ZeroMap::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn rejects_damage_and_bad_fields() {
        let good = sample().encode();
        for cut in 0..good.len() {
            assert!(ZeroMap::decode(&good[..cut]).is_err(), "accepted a map cut at {cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(ZeroMap::decode(&bad).is_err(), "accepted a flipped byte at {at}");
        }
        let out_of_range = ZeroMap { unit_size: 4096, units: 10, ranges: std::iter::once(5..11).collect() };
        assert!(ZeroMap::decode(&out_of_range.encode()).is_err());
        let overlapping = ZeroMap { unit_size: 4096, units: 10, ranges: vec![0..5, 4..6] };
        assert!(ZeroMap::decode(&overlapping.encode()).is_err());
        let odd_unit = ZeroMap { unit_size: 3000, units: 10, ranges: vec![] };
        assert!(ZeroMap::decode(&odd_unit.encode()).is_err());
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm1.zeromap");
        sample().save(&path).unwrap();
        assert_eq!(ZeroMap::load(&path).unwrap(), sample());
        let err = ZeroMap::load(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
