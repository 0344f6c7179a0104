//! Helpers shared by the integration tests: an in-memory source that records
//! what it was asked for.

use std::sync::Mutex;

use slice_store::{SourceError, UnitSource};

/// `size` bytes of a non-zero pattern that differs from one unit to the next.
pub fn pattern(size: u64) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 + 1).collect()
}

/// A remote device held in memory; every `fetch` call is recorded.
#[derive(Debug)]
pub struct MemorySource {
    data: Vec<u8>,
    unit_size: usize,
    calls: Mutex<Vec<Vec<u64>>>,
}

impl MemorySource {
    /// A source serving `data` in units of `unit_size` bytes.
    pub fn new(data: Vec<u8>, unit_size: u32) -> Self {
        Self { data, unit_size: unit_size as usize, calls: Mutex::new(Vec::new()) }
    }

    /// The units asked for by each call since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl UnitSource for MemorySource {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        self.calls.lock().unwrap().push(units.to_vec());
        Ok(units
            .iter()
            .map(|&unit| {
                let start = unit as usize * self.unit_size;
                let end = (start + self.unit_size).min(self.data.len());
                (unit, self.data[start..end].to_vec())
            })
            .collect())
    }
}
