//! Where blocks the server lacks come from: the desktop's diskserv.
//!
//! The overlay asks for a set of absent blocks at once (all those one NBD
//! request needs); [`RemoteImage::read_units`] turns them into as few wire
//! requests as the protocol allows. No prefetch: a disk is read in few,
//! large requests that already say what they need, unlike memory faults
//! page by page.

use std::sync::Arc;

use fetch_trace::{boottime_ns, Cause, Device, Fetch, TraceWriter};
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
    trace: Option<Arc<TraceWriter>>,
}

impl DiskSource {
    /// Blocks of `block_size` bytes of `remote`; the last may be shorter.
    /// Every request to diskserv is recorded in `trace`, if given.
    pub(crate) fn new(
        remote: RemoteImage,
        block_size: u32,
        counters: Arc<Counters>,
        trace: Option<Arc<TraceWriter>>,
    ) -> Self {
        DiskSource { remote, block_size, counters, trace }
    }
}

impl UnitSource for DiskSource {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        // Taken before read_units, whose every wire request asks the wake
        // hook first: the wait for a sleeping desktop is part of the fetch.
        let asked_ns = boottime_ns();
        let fetched = self.remote.read_units(units, self.block_size);
        if let Some(trace) = &self.trace {
            trace.record(&Fetch {
                device: Device::Disk,
                unit: units.iter().copied().min().unwrap_or_default(),
                cause: Cause::Fault,
                faulting: units.len() as u64,
                units: units.len() as u64,
                requests: fetched.as_ref().map_or(0, |f| f.requests),
                asked_ns,
                answered_ns: fetched.is_ok().then(boottime_ns),
            });
        }
        let fetched = fetched.map_err(SourceError::new)?;
        Counters::add(&self.counters.remote_requests, fetched.requests);
        Counters::add(&self.counters.bytes_fetched, fetched.data_bytes);
        Ok(fetched.units)
    }
}
