//! Feeds bytes to `DirtySetReader`, through a `std::io::Cursor`, as the
//! desktop stages a dirty set arriving from the server and re-reads a
//! staged one before it applies it. Must hold: no panic, never more than
//! one unit held; units come out strictly increasing, inside the image, of
//! their unit's length (or discards); a set of the current version read to
//! its end (trailer verified) written again by `DirtySetWriter` with the
//! same header and units is exactly the bytes the reader consumed, and the
//! reader consumed nothing past it.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use migration_formats::dirty_set::{UnitChange, MAX_UNIT_SIZE, VERSION};
use migration_formats::{DirtySetReader, DirtySetWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = DirtySetReader::new(Cursor::new(data)) else { return };
    let header = *reader.header();
    assert!(header.unit_size >= 1 && header.unit_size <= MAX_UNIT_SIZE);
    // `None` for a discard.
    let mut units: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
    loop {
        match reader.next_unit() {
            Ok(Some((unit, change))) => {
                assert!(units.last().is_none_or(|(previous, _)| *previous < unit));
                let offset = header.offset(unit);
                assert!(offset < header.image_size);
                let expected = (header.image_size - offset).min(u64::from(header.unit_size));
                let data = match change {
                    UnitChange::Data(bytes) => {
                        assert_eq!(bytes.len() as u64, expected);
                        Some(bytes.to_vec())
                    }
                    UnitChange::Discard => None,
                };
                units.push((unit, data));
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    assert_eq!(units.len() as u64, header.unit_count);
    assert_eq!(reader.data_bytes(), units.iter().map(|(_, d)| d.as_ref().map_or(0, Vec::len) as u64).sum::<u64>());
    if reader.version() != VERSION {
        return;
    }
    let consumed = reader.into_inner().position() as usize;
    let mut writer = DirtySetWriter::new(Vec::new(), header).expect("a header the reader took");
    for (unit, bytes) in &units {
        match bytes {
            Some(bytes) => writer.write_unit(*unit, bytes).expect("a unit the reader took"),
            None => writer.write_discard(*unit).expect("a discard the reader took"),
        }
    }
    let (written, summary) = writer.finish().expect("all the units announced");
    assert_eq!(summary.stream_bytes as usize, written.len());
    assert_eq!(written, data[..consumed]);
});
