//! Where blocks the server lacks come from: the desktop's diskserv.
//!
//! The overlay asks for a set of absent blocks at once (all those one NBD
//! request needs); [`RemoteImage::read_units`] turns them into as few wire
//! requests as the protocol allows. No prefetch: a disk is read in few,
//! large requests that already say what they need, unlike memory faults
//! page by page.

use std::sync::Arc;

use slice_store::{SourceError, UnitSource};
use wire::RemoteImage;

use crate::stats::Counters;

/// A VM's disk on the desktop, block by block. Every read goes through
/// [`RemoteImage::read`], which asks the wake hook first, so a sleeping
/// desktop is woken before each fetch.
#[derive(Debug)]
pub(crate) struct DiskSource {
    remote: RemoteImage,
    block_size: u32,
    counters: Arc<Counters>,
}

impl DiskSource {
    /// Blocks of `block_size` bytes of `remote`; the last may be shorter.
    pub(crate) fn new(remote: RemoteImage, block_size: u32, counters: Arc<Counters>) -> Self {
        DiskSource { remote, block_size, counters }
    }
}

impl UnitSource for DiskSource {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        let fetched = self.remote.read_units(units, self.block_size).map_err(SourceError::new)?;
        Counters::add(&self.counters.remote_requests, fetched.requests);
        Counters::add(&self.counters.bytes_fetched, fetched.data_bytes);
        Ok(fetched.units)
    }
}
