//! Feeds bytes to `DirtySetReader`, through a `std::io::Cursor`, as the
//! desktop stages a dirty set arriving from the server and re-reads a
//! staged one before it applies it. Must hold: no panic, never more than
//! one unit held; units come out strictly increasing, inside the image, of
//! their unit's length; a set read to its end (trailer verified) written
//! again by `DirtySetWriter` with the same header and units is exactly the
//! bytes the reader consumed, and the reader consumed nothing past it.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use migration_formats::dirty_set::MAX_UNIT_SIZE;
use migration_formats::{DirtySetReader, DirtySetWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = DirtySetReader::new(Cursor::new(data)) else { return };
    let header = *reader.header();
    assert!(header.unit_size >= 1 && header.unit_size <= MAX_UNIT_SIZE);
    let mut units: Vec<(u64, Vec<u8>)> = Vec::new();
    loop {
        match reader.next_unit() {
            Ok(Some((unit, bytes))) => {
                assert!(units.last().is_none_or(|(previous, _)| *previous < unit));
                let offset = header.offset(unit);
                assert!(offset < header.image_size);
                let expected = (header.image_size - offset).min(u64::from(header.unit_size));
                assert_eq!(bytes.len() as u64, expected);
                units.push((unit, bytes.to_vec()));
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    assert_eq!(units.len() as u64, header.unit_count);
    assert_eq!(reader.data_bytes(), units.iter().map(|(_, d)| d.len() as u64).sum::<u64>());
    let consumed = reader.into_inner().position() as usize;
    let mut writer = DirtySetWriter::new(Vec::new(), header).expect("a header the reader took");
    for (unit, bytes) in &units {
        writer.write_unit(*unit, bytes).expect("a unit the reader took");
    }
    let (written, summary) = writer.finish().expect("all the units announced");
    assert_eq!(summary.stream_bytes as usize, written.len());
    assert_eq!(written, data[..consumed]);
});
