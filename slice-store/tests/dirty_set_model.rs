//! Property test of the dirty set: for any geometry and any set of dirty
//! units, exporting a store and applying the set to the base image gives the
//! base with exactly those units replaced, and a reader sees exactly them.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::collections::BTreeMap;
use std::fs;

use migration_formats::dirty_set::{ApplyTarget, DirtySetReader, UnitChange};
use proptest::prelude::*;
use slice_store::export_dirty_set;
use slice_store::SliceStore;

/// A geometry (unit size, image size) and dirty units with a seed for each
/// unit's content.
fn case() -> impl Strategy<Value = (u32, u64, BTreeMap<u64, u8>)> {
    (prop::sample::select(vec![1u32, 64, 512, 4096]), 0u64..24, any::<u16>()).prop_flat_map(
        |(unit_size, whole_units, tail)| {
            let size = whole_units * u64::from(unit_size) + u64::from(tail) % u64::from(unit_size);
            let unit_count = size.div_ceil(u64::from(unit_size));
            let dirty = prop::collection::btree_map(0..unit_count.max(1), any::<u8>(), 0..=unit_count as usize)
                .prop_map(move |units| units.into_iter().filter(|&(unit, _)| unit < unit_count).collect());
            (Just(unit_size), Just(size), dirty)
        },
    )
}

/// Content of a dirty unit: varies within the unit and from one seed to another.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(3) ^ 0x5a).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn export_then_apply_gives_base_plus_dirty_units((unit_size, size, dirty) in case()) {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..size).map(|i| (i % 239) as u8 + 1).collect();
        let image = dir.path().join("ram");
        fs::write(&image, &base).unwrap();

        let store = SliceStore::open(dir.path().join("store"), unit_size, size).unwrap();
        let mut expected = base.clone();
        for (&unit, &seed) in &dirty {
            let data = content(seed, store.unit_len(unit).unwrap() as usize);
            store.write_dirty(unit, &data).unwrap();
            let start = (unit * u64::from(unit_size)) as usize;
            expected[start..start + data.len()].copy_from_slice(&data);
        }
        store.flush().unwrap();
        let mut set = Vec::new();
        let sent = export_dirty_set(&store, &mut set).unwrap();

        let mut reader = DirtySetReader::new(&set[..]).unwrap();
        let mut units = Vec::new();
        while let Some((unit, change)) = reader.next_unit().unwrap() {
            let UnitChange::Data(data) = change else { panic!("unit {unit}: nothing was discarded") };
            let start = (unit * u64::from(unit_size)) as usize;
            prop_assert_eq!(data, &expected[start..start + data.len()]);
            units.push(unit);
        }
        prop_assert_eq!(units, dirty.keys().copied().collect::<Vec<_>>());

        let applied = ApplyTarget::new(&image, unit_size, dir.path().join("staging")).apply(&set[..]).unwrap();
        prop_assert_eq!(
            (applied.transfer_id, applied.units, applied.data_bytes),
            (sent.transfer_id, sent.units, sent.data_bytes)
        );
        prop_assert!(fs::read(&image).unwrap() == expected);
    }
}
