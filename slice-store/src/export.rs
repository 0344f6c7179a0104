//! The dirty slice and the discarded units written out as a dirty set (the
//! format and its staged apply live in `migration-formats`, which the desktop
//! uses without this engine).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use migration_formats::dirty_set::{
    encoded_len, DirtySetHeader, DirtySetWriter, ExportSummary, StreamError, TransferId,
};

use crate::error::StoreError;
use crate::store::{SliceStore, UnitState};

/// Output buffer of [`export_dirty_set`]: large enough that a socket sees few writes.
const EXPORT_BUFFER: usize = 256 * 1024;

/// What can go wrong writing a store's dirty set.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Drawing a random transfer id failed.
    #[error("drawing a random transfer id for the dirty set of {dir}")]
    RandomId {
        /// The store directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading a dirty unit from the store failed.
    #[error("reading dirty unit {unit} of the store {dir} for dirty set {transfer_id}")]
    ReadStore {
        /// The store directory.
        dir: PathBuf,
        /// The unit.
        unit: u64,
        /// The transfer.
        transfer_id: TransferId,
        /// Cause.
        #[source]
        source: StoreError,
    },
    /// The set could not be written (the output failed, or the store's
    /// unit size is beyond the format's limit).
    #[error("sending dirty set {transfer_id} of the store {dir}")]
    Write {
        /// The store directory.
        dir: PathBuf,
        /// The transfer.
        transfer_id: TransferId,
        /// Cause.
        #[source]
        source: StreamError,
    },
}

/// Streams the dirty units of `store` to `out` as a dirty set with a fresh
/// random transfer id, one unit in memory at a time, and flushes `out`. Its
/// discarded units go as discard records, so that the desktop punches holes
/// there rather than receiving zeros.
///
/// The set holds the units that are dirty when the export starts, read as they
/// are while it runs: stop the VM first, and (for durability on the server)
/// call [`SliceStore::flush`] before. It is exactly [`exported_len`] bytes
/// long.
///
/// # Errors
///
/// [`ExportError::RandomId`]; [`ExportError::ReadStore`] if a unit cannot be
/// read; [`ExportError::Write`] if `out` fails, or for a store whose unit
/// size is above the format's limit.
pub fn export_dirty_set(store: &SliceStore, out: impl Write) -> Result<ExportSummary, ExportError> {
    let dir = || store.dir().to_owned();
    let transfer_id = TransferId::random().map_err(|source| ExportError::RandomId { dir: dir(), source })?;
    // Sixteen bytes per unit: the list is a small fraction of the data.
    let units = changed_units(store);
    let header = DirtySetHeader {
        unit_size: store.unit_size().get(),
        image_size: store.size(),
        unit_count: units.len() as u64,
        transfer_id,
    };
    let write_error = |source| ExportError::Write { dir: dir(), transfer_id, source };
    let mut writer = DirtySetWriter::new(BufWriter::with_capacity(EXPORT_BUFFER, out), header).map_err(write_error)?;
    // The writer accepted the unit size, which is at most MAX_UNIT_SIZE.
    let mut buf = vec![0; header.unit_size as usize];
    for (unit, state) in units {
        if state == UnitState::Discarded {
            writer.write_discard(unit).map_err(write_error)?;
            continue;
        }
        let read_error = |source| ExportError::ReadStore { dir: dir(), unit, transfer_id, source };
        let data = &mut buf[..store.unit_len(unit).map_err(read_error)? as usize];
        // Read as it is now: discarded since the list was made, it reads as
        // zeros, which is its content too.
        store.read_unit(unit, data).map_err(read_error)?;
        writer.write_unit(unit, data).map_err(write_error)?;
    }
    let (_, summary) = writer.finish().map_err(write_error)?;
    tracing::info!(
        dir = %store.dir().display(),
        transfer = %summary.transfer_id,
        units = summary.units,
        discarded = summary.discarded,
        bytes = summary.stream_bytes,
        "exported dirty set"
    );
    Ok(summary)
}

/// The bytes [`export_dirty_set`] writes for `store` as it is now.
///
/// # Errors
/// The store's error for a dirty unit beyond its size (a damaged bitmap).
pub fn exported_len(store: &SliceStore) -> Result<u64, StoreError> {
    let lens = changed_units(store)
        .into_iter()
        .map(|(unit, state)| if state == UnitState::Discarded { Ok(0) } else { store.unit_len(unit) })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(encoded_len(lens))
}

/// The units a dirty set of `store` carries, dirty or discarded, in
/// increasing order.
fn changed_units(store: &SliceStore) -> Vec<(u64, UnitState)> {
    let mut units: Vec<(u64, UnitState)> = store
        .dirty_units()
        .map(|unit| (unit, UnitState::Dirty))
        .chain(store.discarded_units().map(|unit| (unit, UnitState::Discarded)))
        .collect();
    // A unit that changed state between the two walks may be listed twice:
    // the data record is kept, which is right either way (discarded, it
    // reads as zeros).
    units.sort_unstable_by_key(|&(unit, state)| (unit, state == UnitState::Discarded));
    units.dedup_by_key(|&mut (unit, _)| unit);
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use migration_formats::dirty_set::{DirtySetReader, UnitChange};

    #[test]
    fn the_announced_length_is_what_export_writes() {
        let dir = tempfile::tempdir().unwrap();
        // A partial last unit: 5 units of 4 KiB and one of 100 bytes.
        let store = SliceStore::open(dir.path(), 4096, 5 * 4096 + 100).unwrap();
        let mut out = Vec::new();
        export_dirty_set(&store, &mut out).unwrap();
        assert_eq!(exported_len(&store).unwrap(), out.len() as u64, "an empty set");
        for unit in [0, 3, 5] {
            let len = store.unit_len(unit).unwrap() as usize;
            store.write_dirty(unit, &vec![unit as u8 + 1; len]).unwrap();
        }
        // Unit 3 dirty then discarded, 1 and 2 discarded without being dirty.
        store.discard_units(1..4).unwrap();
        let mut out = Vec::new();
        let summary = export_dirty_set(&store, &mut out).unwrap();
        assert_eq!(exported_len(&store).unwrap(), out.len() as u64);
        assert_eq!(summary.stream_bytes, out.len() as u64);
        assert_eq!((summary.units, summary.discarded), (5, 3));
    }

    #[test]
    fn discarded_units_go_as_discards_and_written_ones_as_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = SliceStore::open(dir.path(), 16, 6 * 16).unwrap();
        store.write_dirty(0, &[1; 16]).unwrap();
        store.discard_units(0..3).unwrap();
        store.write_dirty(2, &[2; 16]).unwrap();
        let mut out = Vec::new();
        export_dirty_set(&store, &mut out).unwrap();
        let mut reader = DirtySetReader::new(&out[..]).unwrap();
        let mut records = Vec::new();
        while let Some((unit, change)) = reader.next_unit().unwrap() {
            records.push((unit, change == UnitChange::Discard));
        }
        assert_eq!(records, [(0, true), (1, true), (2, false)]);
    }
}
