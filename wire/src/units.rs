//! Reading whole units (pages, blocks) of a remote image: what memtap's and
//! cownetdisk's sources both need from the wire.
//!
//! A slice store asks for a sorted set of absent units. They become as few
//! wire requests as the protocol's limits allow: runs of consecutive units
//! are one byte range each, and ranges are packed into requests of at most
//! [`MAX_REQUEST_BYTES`] and [`MAX_RANGES`]. The answers are cut back into
//! units, a zero marker becoming zeroed units.

use crate::client::RemoteImage;
use crate::error::WireError;
use crate::protocol::{ByteRange, Chunk, MAX_RANGES, MAX_REQUEST_BYTES};

/// Units read from a remote image, and what it took.
#[derive(Debug, Default)]
pub struct FetchedUnits {
    /// Each unit asked for, with its bytes (the last unit of the image may
    /// be short), in increasing unit order.
    pub units: Vec<(u64, Vec<u8>)>,
    /// Wire requests sent.
    pub requests: u64,
    /// Bytes of data received (zero markers excluded).
    pub data_bytes: u64,
}

impl RemoteImage {
    /// Reads `units` (sorted, distinct) of `unit_size` bytes.
    ///
    /// # Errors
    /// As [`RemoteImage::read`].
    pub fn read_units(&self, units: &[u64], unit_size: u32) -> Result<FetchedUnits, WireError> {
        let unit_size = u64::from(unit_size);
        let mut fetched = FetchedUnits { units: Vec::with_capacity(units.len()), ..FetchedUnits::default() };
        for ranges in plan(units, unit_size, self.size()) {
            let chunks = self.read(&ranges)?;
            fetched.requests += 1;
            fetched.data_bytes += unpack(&ranges, &chunks, unit_size, &mut fetched.units);
        }
        Ok(fetched)
    }
}

/// The byte ranges covering `units` (sorted, distinct) of an image of
/// `size` bytes, consecutive units merged into one range, grouped into wire
/// requests within the protocol's limits.
fn plan(units: &[u64], unit_size: u64, size: u64) -> Vec<Vec<ByteRange>> {
    let max_bytes = MAX_REQUEST_BYTES as u64;
    let mut ranges: Vec<ByteRange> = Vec::new();
    for &unit in units {
        let offset = unit * unit_size;
        // The last unit of the image may be short.
        let len = unit_size.min(size - offset) as u32;
        match ranges.last_mut() {
            Some(range) if range.end() == Some(offset) && u64::from(range.len + len) <= max_bytes => range.len += len,
            _ => ranges.push(ByteRange::new(offset, len)),
        }
    }
    let mut requests: Vec<Vec<ByteRange>> = Vec::new();
    let mut bytes_in_last = 0;
    for range in ranges {
        let len = u64::from(range.len);
        match requests.last_mut() {
            Some(request) if request.len() < MAX_RANGES && bytes_in_last + len <= max_bytes => {
                request.push(range);
                bytes_in_last += len;
            }
            _ => {
                requests.push(vec![range]);
                bytes_in_last = len;
            }
        }
    }
    requests
}

/// Cuts the answer to `ranges` into units appended to `out`; returns the
/// data bytes it held. [`crate::Client::read`] has checked that `chunks`
/// cover `ranges` exactly and in order.
fn unpack(ranges: &[ByteRange], chunks: &[Chunk], unit_size: u64, out: &mut Vec<(u64, Vec<u8>)>) -> u64 {
    let mut chunks = chunks.iter().peekable();
    let mut data_bytes = 0;
    for range in ranges {
        let end = range.offset + u64::from(range.len);
        let mut data = vec![0u8; range.len as usize];
        while let Some(chunk) = chunks.next_if(|c| c.offset() >= range.offset && c.offset() < end) {
            if let Chunk::Bytes { offset, data: bytes } = chunk {
                let at = (offset - range.offset) as usize;
                data[at..at + bytes.len()].copy_from_slice(bytes);
                data_bytes += bytes.len() as u64;
            }
        }
        let first = range.offset / unit_size;
        out.extend(data.chunks(unit_size as usize).enumerate().map(|(i, unit)| (first + i as u64, unit.to_vec())));
    }
    data_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_units_become_one_range_and_the_last_unit_is_short() {
        let plan = plan(&[0, 1, 2, 5, 6, 9], 4096, 9 * 4096 + 100);
        assert_eq!(
            plan,
            [vec![ByteRange::new(0, 3 * 4096), ByteRange::new(5 * 4096, 2 * 4096), ByteRange::new(9 * 4096, 100)]]
        );
        assert!(super::plan(&[], 4096, 4096).is_empty());
    }

    #[test]
    fn requests_stay_within_the_wire_limits() {
        let unit = 4096u64;
        let per_request = MAX_REQUEST_BYTES as u64 / unit;
        // A long run is cut at the byte limit.
        let run: Vec<u64> = (0..per_request + 3).collect();
        let plan = plan(&run, unit, 1 << 30);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0], [ByteRange::new(0, MAX_REQUEST_BYTES as u32)]);
        assert_eq!(plan[1], [ByteRange::new(per_request * unit, 3 * unit as u32)]);
        // Scattered units are cut at the range limit.
        let scattered: Vec<u64> = (0..MAX_RANGES as u64 + 1).map(|i| i * 2).collect();
        let plan = super::plan(&scattered, unit, 1 << 30);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_RANGES, 1]);
    }

    #[test]
    fn answers_are_cut_into_units_with_zero_markers_as_zeros() {
        let ranges = [ByteRange::new(0, 3 * 4096), ByteRange::new(9 * 4096, 100)];
        let chunks = [
            Chunk::Bytes { offset: 0, data: vec![7; 4096] },
            Chunk::Zero { offset: 4096, len: 4096 },
            Chunk::Bytes { offset: 8192, data: vec![8; 4096] },
            Chunk::Bytes { offset: 9 * 4096, data: vec![9; 100] },
        ];
        let mut out = Vec::new();
        assert_eq!(unpack(&ranges, &chunks, 4096, &mut out), 2 * 4096 + 100);
        assert_eq!(
            out.iter().map(|(u, d)| (*u, d.len())).collect::<Vec<_>>(),
            [(0, 4096), (1, 4096), (2, 4096), (9, 100)]
        );
        assert!(
            out[0].1.iter().all(|&b| b == 7) && out[1].1.iter().all(|&b| b == 0) && out[2].1.iter().all(|&b| b == 8)
        );
        assert!(out[3].1.iter().all(|&b| b == 9));
    }
}
