use super::*;

const BOOT: BootId = BootId::from_bytes([0x33; 16]);

fn open(dir: &Path, unit_size: u32, size: u64) -> Result<SliceStore> {
    SliceStore::open_with_boot_id(dir, unit_size, size, BOOT)
}

fn unit_of(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SliceStore>();
}

#[test]
fn states_rank_dirty_then_fetched_then_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Absent);
    store.set_known_zero(1).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Zero);
    store.store_fetched(1, &unit_of(1, 16)).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Fetched);
    store.write_dirty(1, &unit_of(2, 16)).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Dirty);
    assert_eq!(UnitState::Dirty.to_string(), "dirty");
}

#[test]
fn read_unit_serves_by_state_and_leaves_absent_buffers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    let mut buf = unit_of(0xee, 16);
    assert_eq!(store.read_unit(0, &mut buf).unwrap(), UnitState::Absent);
    assert_eq!(buf, unit_of(0xee, 16));

    store.mark_zero_ranges(std::iter::once(1..2)).unwrap();
    assert_eq!(store.read_unit(1, &mut buf).unwrap(), UnitState::Zero);
    assert_eq!(buf, unit_of(0, 16));

    store.store_fetched(2, &unit_of(7, 16)).unwrap();
    assert_eq!(store.read_unit(2, &mut buf).unwrap(), UnitState::Fetched);
    assert_eq!(buf, unit_of(7, 16));

    store.write_dirty(2, &unit_of(9, 16)).unwrap();
    assert_eq!(store.read_unit(2, &mut buf).unwrap(), UnitState::Dirty);
    assert_eq!(buf, unit_of(9, 16));
}

#[test]
fn the_last_unit_may_be_partial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 4096, 10000).unwrap();
    assert_eq!(store.unit_count(), 3);
    assert_eq!(store.unit_len(1).unwrap(), 4096);
    assert_eq!(store.unit_len(2).unwrap(), 1808);
    store.write_dirty(2, &unit_of(5, 1808)).unwrap();
    let mut buf = vec![0; 1808];
    assert_eq!(store.read_unit(2, &mut buf).unwrap(), UnitState::Dirty);
    assert_eq!(buf, unit_of(5, 1808));
    assert!(matches!(
        store.write_dirty(2, &unit_of(5, 4096)),
        Err(StoreError::UnitLength { unit: 2, len: 4096, expected: 1808 })
    ));
}

#[test]
fn units_past_the_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    assert!(matches!(store.state(4), Err(StoreError::UnitOutOfRange { unit: 4, unit_count: 4 })));
    assert!(matches!(store.read_unit(9, &mut [0; 16]), Err(StoreError::UnitOutOfRange { .. })));
    assert!(matches!(store.write_dirty(u64::MAX, &[0; 16]), Err(StoreError::UnitOutOfRange { .. })));
    assert!(matches!(store.set_known_zero(4), Err(StoreError::UnitOutOfRange { .. })));
    assert!(matches!(store.mark_zero_ranges(std::iter::once(2..5)), Err(StoreError::UnitOutOfRange { unit: 4, .. })));
    let (high, low) = (9, 2);
    store.mark_zero_ranges([3..3, high..low]).unwrap();
}

#[test]
fn a_zero_unit_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(open(dir.path(), 0, 64), Err(StoreError::CheckGeometry { .. })));
}

#[test]
fn reopening_keeps_fetched_and_dirty_units_but_not_the_zero_map() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    store.store_fetched(0, &unit_of(1, 16)).unwrap();
    store.write_dirty(3, &unit_of(3, 16)).unwrap();
    store.set_known_zero(2).unwrap();
    store.close().unwrap();

    let store = open(dir.path(), 16, 64).unwrap();
    assert_eq!(store.recovery(), Recovery::CleanShutdown);
    let mut buf = [0; 16];
    assert_eq!(store.read_unit(0, &mut buf).unwrap(), UnitState::Fetched);
    assert_eq!(buf, [1; 16]);
    assert_eq!(store.read_unit(3, &mut buf).unwrap(), UnitState::Dirty);
    assert_eq!(buf, [3; 16]);
    assert_eq!(store.state(2).unwrap(), UnitState::Absent);
    assert_eq!((store.fetched_count(), store.dirty_count()), (1, 1));
}

#[test]
fn reopening_with_another_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), 16, 64).unwrap().close().unwrap();
    let error = open(dir.path(), 16, 60).unwrap_err();
    assert!(matches!(error, StoreError::CheckSlice { found: 64, expected: 60, .. }), "{error:?}");
    assert!(error.to_string().contains("fetched.slice"), "{error}");
}

#[test]
fn reopening_with_another_unit_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), 16, 64).unwrap().close().unwrap();
    let error = open(dir.path(), 32, 64).unwrap_err();
    assert!(matches!(error, StoreError::CheckBitmap { .. }), "{error:?}");
}

#[test]
fn a_second_opener_is_refused_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    let error = open(dir.path(), 16, 64).unwrap_err();
    assert!(matches!(error, StoreError::LockStore { .. }), "{error:?}");
    drop(store);
    open(dir.path(), 16, 64).unwrap();
}

#[test]
fn dirty_units_lists_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 160).unwrap();
    for unit in [9, 0, 4] {
        store.write_dirty(unit, &unit_of(0, 16)).unwrap();
    }
    store.store_fetched(5, &unit_of(0, 16)).unwrap();
    assert_eq!(store.dirty_units().collect::<Vec<_>>(), [0, 4, 9]);
}

#[test]
fn flush_with_nothing_dirty_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    store.flush().unwrap();
    store.write_dirty(1, &unit_of(1, 16)).unwrap();
    store.flush().unwrap();
    store.flush().unwrap();
}

#[test]
fn an_empty_store_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 0).unwrap();
    assert_eq!(store.unit_count(), 0);
    assert_eq!(store.dirty_units().next(), None);
    store.close().unwrap();
}

#[test]
fn a_store_that_must_exist_is_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let error = SliceStore::open_existing(&missing, 4096, 8 * 4096).unwrap_err();
    assert!(matches!(error, StoreError::Missing { .. }), "{error:?}");
    assert!(error.to_string().contains("nowhere"), "{error}");
    assert!(!missing.exists(), "open_existing created the directory");
    SliceStore::open(&missing, 4096, 8 * 4096).unwrap().close().unwrap();
    SliceStore::open_existing(&missing, 4096, 8 * 4096).unwrap();
}

#[test]
fn a_discard_supersedes_fetched_and_dirty_and_a_write_supersedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 96).unwrap();
    store.store_fetched(0, &unit_of(1, 16)).unwrap();
    store.store_fetched(1, &unit_of(1, 16)).unwrap();
    store.write_dirty(1, &unit_of(2, 16)).unwrap();
    store.set_known_zero(3).unwrap();
    // Fetched, dirty, absent and known zero, all discarded.
    store.discard_units(0..4).unwrap();
    let mut buf = unit_of(0xee, 16);
    for unit in 0..4 {
        assert_eq!(store.read_unit(unit, &mut buf).unwrap(), UnitState::Discarded, "unit {unit}");
        assert_eq!(buf, unit_of(0, 16), "unit {unit}");
    }
    assert_eq!((store.fetched_count(), store.dirty_count(), store.discarded_count()), (0, 0, 4));
    assert_eq!(store.dirty_units().next(), None);
    assert_eq!(store.discarded_units().collect::<Vec<_>>(), [0, 1, 2, 3]);

    // A fetch that crossed the discard leaves it discarded.
    store.store_fetched(2, &unit_of(7, 16)).unwrap();
    assert_eq!(store.state(2).unwrap(), UnitState::Discarded);

    // Written again: dirty, with the new content.
    store.write_dirty(1, &unit_of(3, 16)).unwrap();
    store.write_dirty(2, &unit_of(4, 16)).unwrap();
    assert_eq!(store.read_unit(1, &mut buf).unwrap(), UnitState::Dirty);
    assert_eq!(buf, unit_of(3, 16));
    assert_eq!(store.state(2).unwrap(), UnitState::Dirty);
    assert_eq!((store.fetched_count(), store.dirty_count(), store.discarded_count()), (0, 2, 2));
    assert_eq!(store.dirty_units().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.discarded_units().collect::<Vec<_>>(), [0, 3]);
    assert_eq!(UnitState::Discarded.to_string(), "discarded");
}

#[test]
fn a_discard_past_the_end_discards_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    assert!(matches!(store.discard_units(2..5), Err(StoreError::UnitOutOfRange { unit: 4, .. })));
    assert_eq!(store.discarded_count(), 0);
    store.discard_units(3..3).unwrap();
    assert_eq!(store.discarded_count(), 0);
}

#[test]
fn a_discard_gives_the_slices_space_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 4096, 64 * 4096).unwrap();
    for unit in 0..64 {
        store.store_fetched(unit, &unit_of(1, 4096)).unwrap();
        store.write_dirty(unit, &unit_of(2, 4096)).unwrap();
    }
    store.flush().unwrap();
    let blocks = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().blocks();
    let (fetched, dirty) = (blocks("fetched.slice"), blocks("dirty.slice"));
    assert!(fetched >= 64 * 8 && dirty >= 64 * 8, "{fetched} and {dirty} blocks of 512 bytes");
    store.discard_units(0..64).unwrap();
    assert_eq!((blocks("fetched.slice"), blocks("dirty.slice")), (0, 0));
}

#[test]
fn reopening_keeps_discarded_units() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    store.write_dirty(0, &unit_of(1, 16)).unwrap();
    store.write_dirty(1, &unit_of(1, 16)).unwrap();
    store.discard_units(0..3).unwrap();
    store.write_dirty(2, &unit_of(2, 16)).unwrap();
    store.close().unwrap();

    let store = open(dir.path(), 16, 64).unwrap();
    let states: Vec<UnitState> = (0..4).map(|unit| store.state(unit).unwrap()).collect();
    assert_eq!(states, [UnitState::Discarded, UnitState::Discarded, UnitState::Dirty, UnitState::Absent]);
    assert_eq!((store.dirty_count(), store.discarded_count()), (1, 2));
}

#[test]
fn after_a_reboot_discards_and_writes_since_the_last_flush_are_undone() {
    /// Where the state field of a bitmap header is; 1 is open.
    const STATE_AT: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let store = open(dir.path(), 16, 64).unwrap();
    store.write_dirty(1, &unit_of(1, 16)).unwrap();
    store.discard_units(2..3).unwrap();
    store.flush().unwrap();
    let flushed: Vec<(PathBuf, Vec<u8>)> = ["dirty.bitmap.flushed", "discarded.bitmap.flushed"]
        .into_iter()
        .map(|name| (path(name), std::fs::read(path(name)).unwrap()))
        .collect();
    // After the flush: unit 1 discarded, unit 2 written again.
    store.discard_units(1..2).unwrap();
    store.write_dirty(2, &unit_of(2, 16)).unwrap();
    store.close().unwrap();

    // As if the machine had gone down before the next flush: the bitmaps
    // left open, their flushed copies those of the flush.
    for (copy, bytes) in &flushed {
        std::fs::write(copy, bytes).unwrap();
    }
    for name in ["dirty.bitmap", "discarded.bitmap"] {
        let file = OpenOptions::new().write(true).open(path(name)).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &1u32.to_le_bytes(), STATE_AT).unwrap();
    }
    let store = SliceStore::open_with_boot_id(dir.path(), 16, 64, BootId::from_bytes([0x34; 16])).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Dirty, "the discard is undone");
    assert_eq!(store.state(2).unwrap(), UnitState::Discarded, "the write is undone");
    let mut buf = [0; 16];
    store.read_unit(1, &mut buf).unwrap();
    assert!(buf == [1; 16] || buf == [0; 16], "its flushed content or the discard's zeros: {buf:?}");
}

#[test]
fn a_store_made_before_discards_existed_opens_with_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16, 64).unwrap();
    store.write_dirty(1, &unit_of(1, 16)).unwrap();
    store.close().unwrap();
    for name in ["discarded.bitmap", "discarded.bitmap.flushed"] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let store = open(dir.path(), 16, 64).unwrap();
    assert_eq!((store.dirty_count(), store.discarded_count()), (1, 0));
    store.discard_units(1..2).unwrap();
    assert_eq!(store.state(1).unwrap(), UnitState::Discarded);
}
