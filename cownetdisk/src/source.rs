//! Where blocks the server lacks come from: the desktop's diskserv.
//!
//! The overlay asks for a set of absent blocks at once (all those one NBD
//! request needs). They become as few wire requests as the protocol's
//! limits allow: runs of consecutive blocks are one byte range each, and
//! ranges are packed into requests of at most `MAX_REQUEST_BYTES` and
//! `MAX_RANGES`. No prefetch: a disk is read in few, large requests that
//! already say what they need, unlike memory faults page by page.

use std::sync::Arc;

use jettison_slice_store::{SourceError, UnitSource};
use jettison_wire::protocol::{MAX_RANGES, MAX_REQUEST_BYTES};
use jettison_wire::{ByteRange, Chunk, RemoteImage};

use crate::stats::Counters;

/// A VM's disk on the desktop, block by block. Every read goes through
/// [`RemoteImage::read`], which asks the wake hook first, so a sleeping
/// desktop is woken before each fetch.
#[derive(Debug)]
pub(crate) struct DiskSource {
    remote: RemoteImage,
    block_size: u64,
    counters: Arc<Counters>,
}

impl DiskSource {
    /// Blocks of `block_size` bytes of `remote`; the last may be shorter.
    pub(crate) fn new(remote: RemoteImage, block_size: u32, counters: Arc<Counters>) -> Self {
        DiskSource { remote, block_size: u64::from(block_size), counters }
    }

    /// Splits the answer to `ranges` into blocks, appending them to `out`.
    /// The client has checked that `chunks` cover `ranges` exactly and in
    /// order; a chunk that still falls outside its range is refused rather
    /// than trusted.
    fn unpack(&self, ranges: &[ByteRange], chunks: &[Chunk], out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SourceError> {
        let mut chunks = chunks.iter().peekable();
        for range in ranges {
            let end = range.offset + u64::from(range.len);
            let mut data = vec![0u8; range.len as usize];
            while let Some(chunk) = chunks.next_if(|c| c.offset() >= range.offset && c.offset() < end) {
                if let Chunk::Bytes { offset, data: bytes } = chunk {
                    let at = (offset - range.offset) as usize;
                    let target = data.get_mut(at..at + bytes.len()).ok_or_else(|| {
                        SourceError::new(format!(
                            "diskserv sent {} bytes at {offset:#x}, outside the range asked",
                            bytes.len()
                        ))
                    })?;
                    target.copy_from_slice(bytes);
                    Counters::add(&self.counters.bytes_fetched, bytes.len() as u64);
                }
            }
            let first = range.offset / self.block_size;
            for (i, block) in data.chunks(self.block_size as usize).enumerate() {
                out.push((first + i as u64, block.to_vec()));
            }
        }
        Ok(())
    }
}

impl UnitSource for DiskSource {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        let mut out = Vec::with_capacity(units.len());
        for ranges in plan(units, self.block_size, self.remote.size()) {
            let chunks = self.remote.read(&ranges).map_err(SourceError::new)?;
            Counters::add(&self.counters.remote_requests, 1);
            self.unpack(&ranges, &chunks, &mut out)?;
        }
        Ok(out)
    }
}

/// The byte ranges covering `blocks` (sorted, distinct) of a disk of
/// `size` bytes, consecutive blocks merged into one range, grouped into wire
/// requests within the protocol's limits.
fn plan(blocks: &[u64], block_size: u64, size: u64) -> Vec<Vec<ByteRange>> {
    let max_bytes = MAX_REQUEST_BYTES as u64;
    let mut ranges: Vec<ByteRange> = Vec::new();
    for &block in blocks {
        let offset = block * block_size;
        // The last block of the disk may be short; none is longer than 1 MiB.
        let len = block_size.min(size - offset) as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_blocks_become_one_range_and_the_last_block_is_short() {
        let plan = plan(&[0, 1, 2, 5, 6, 9], 4096, 9 * 4096 + 100);
        assert_eq!(
            plan,
            [vec![ByteRange::new(0, 3 * 4096), ByteRange::new(5 * 4096, 2 * 4096), ByteRange::new(9 * 4096, 100)]]
        );
        assert!(super::plan(&[], 4096, 4096).is_empty());
    }

    #[test]
    fn requests_stay_within_the_wire_limits() {
        let block = 4096u64;
        let per_request = MAX_REQUEST_BYTES as u64 / block;
        // A long run is cut at the byte limit.
        let run: Vec<u64> = (0..per_request + 3).collect();
        let plan = plan(&run, block, 1 << 30);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0], [ByteRange::new(0, MAX_REQUEST_BYTES as u32)]);
        assert_eq!(plan[1], [ByteRange::new(per_request * block, 3 * block as u32)]);
        // Scattered blocks are cut at the range limit.
        let scattered: Vec<u64> = (0..MAX_RANGES as u64 + 1).map(|i| i * 2).collect();
        let plan = super::plan(&scattered, block, 1 << 30);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_RANGES, 1]);
    }
}
