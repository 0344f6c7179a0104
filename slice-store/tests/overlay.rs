//! The overlay's behaviour, one behaviour per test, against an in-memory source.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::error::Error as _;

use common::{pattern, MemorySource};
use slice_store::{
    BootId, Overlay, OverlayStats, ReplyError, SliceStore, SourceError, StoreError, UnitSource, UnitState,
};

const UNIT: u32 = 16;
const BOOT: BootId = BootId::from_bytes([0x44; 16]);

struct Setup {
    _dir: tempfile::TempDir,
    overlay: Overlay<MemorySource>,
    /// What the source holds.
    source: Vec<u8>,
}

/// An overlay of `size` bytes over a patterned source whose units `zeros` are
/// zero and known to be.
fn setup(size: u64, zeros: &[u64]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = SliceStore::open_with_boot_id(dir.path(), UNIT, size, BOOT).unwrap();
    let mut data = pattern(size);
    for &unit in zeros {
        let start = (unit * u64::from(UNIT)) as usize;
        let end = (start + UNIT as usize).min(data.len());
        data[start..end].fill(0);
        store.set_known_zero(unit).unwrap();
    }
    let overlay = Overlay::new(store, MemorySource::new(data.clone(), UNIT));
    Setup { _dir: dir, overlay, source: data }
}

fn read(overlay: &Overlay<impl UnitSource>, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    overlay.read(offset, &mut buf).unwrap();
    buf
}

fn bytes(source: &[u8], offset: u64, len: usize) -> Vec<u8> {
    source[offset as usize..offset as usize + len].to_vec()
}

#[test]
fn reading_absent_units_fetches_exactly_those_units_in_one_call() {
    let Setup { overlay, source, .. } = setup(160, &[5]);
    overlay.store().store_fetched(2, &bytes(&source, 32, 16)).unwrap();
    overlay.store().write_dirty(7, &[9; 16]).unwrap();

    let all = read(&overlay, 0, 160);
    assert_eq!(overlay.source().take_calls(), [vec![0, 1, 3, 4, 6, 8, 9]]);
    let mut expected = bytes(&source, 0, 160);
    expected[112..128].fill(9);
    assert_eq!(all, expected);
}

#[test]
fn reading_again_fetches_nothing() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    let first = read(&overlay, 10, 100);
    overlay.source().take_calls();
    assert_eq!(read(&overlay, 10, 100), first);
    assert_eq!(read(&overlay, 0, 160), bytes(&source, 0, 160));
    assert_eq!(overlay.source().take_calls(), [vec![7, 8, 9]]);
}

#[test]
fn a_read_inside_one_unit_fetches_that_unit_only() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    assert_eq!(read(&overlay, 35, 5), bytes(&source, 35, 5));
    assert_eq!(overlay.source().take_calls(), [vec![2]]);
    assert_eq!(overlay.store().state(2).unwrap(), UnitState::Fetched);
}

#[test]
fn whole_unit_writes_fetch_nothing() {
    let Setup { overlay, .. } = setup(160, &[]);
    overlay.write(32, &[7; 32]).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    assert_eq!(read(&overlay, 32, 32), [7; 32]);
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    let stats = overlay.stats();
    assert_eq!((stats.whole_unit_promotions, stats.fetch_calls, stats.dirty_units), (2, 0, 2));
}

#[test]
fn a_partial_write_to_an_absent_unit_fetches_it_once() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    overlay.write(20, &[1, 2, 3]).unwrap();
    assert_eq!(overlay.source().take_calls(), [vec![1]]);
    let mut expected = bytes(&source, 16, 16);
    expected[4..7].copy_from_slice(&[1, 2, 3]);
    assert_eq!(read(&overlay, 16, 16), expected);
    overlay.write(30, &[4]).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    assert_eq!(overlay.stats().partial_write_fetches, 1);
    assert_eq!(overlay.store().state(1).unwrap(), UnitState::Dirty);
}

#[test]
fn the_head_and_tail_of_a_write_are_fetched_in_one_call() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    overlay.write(8, &[5; 32]).unwrap();
    assert_eq!(overlay.source().take_calls(), [vec![0, 2]]);
    let mut expected = bytes(&source, 0, 48);
    expected[8..40].fill(5);
    assert_eq!(read(&overlay, 0, 48), expected);
    let stats = overlay.stats();
    assert_eq!((stats.whole_unit_promotions, stats.partial_write_fetches), (1, 2));
}

#[test]
fn partial_writes_to_present_units_fetch_nothing() {
    let Setup { overlay, source, .. } = setup(160, &[3]);
    read(&overlay, 0, 16);
    overlay.write(32, &[1; 16]).unwrap();
    overlay.source().take_calls();
    overlay.write(4, &[2; 4]).unwrap(); // fetched
    overlay.write(36, &[3; 4]).unwrap(); // dirty
    overlay.write(52, &[4; 4]).unwrap(); // zero
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    let mut expected = bytes(&source, 0, 16);
    expected[4..8].fill(2);
    assert_eq!(read(&overlay, 0, 16), expected);
    assert_eq!(read(&overlay, 32, 16), [1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(read(&overlay, 48, 16), [0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn zero_units_are_never_fetched() {
    let Setup { overlay, source, .. } = setup(160, &[0, 4, 5]);
    assert_eq!(read(&overlay, 0, 16), [0; 16]);
    assert_eq!(read(&overlay, 60, 40), bytes(&source, 60, 40));
    assert_eq!(read(&overlay, 64, 32), [0; 32]);
    overlay.write(66, &[1]).unwrap();
    assert_eq!(overlay.source().take_calls(), [vec![3, 6]]);
    assert_eq!(overlay.stats().zero_units_served, 5);
    assert_eq!(overlay.store().state(5).unwrap(), UnitState::Zero);
}

#[test]
fn the_last_partial_unit_is_read_and_written() {
    let Setup { overlay, source, .. } = setup(40, &[]);
    assert_eq!(overlay.store().unit_len(2).unwrap(), 8);
    assert_eq!(read(&overlay, 30, 10), bytes(&source, 30, 10));
    assert_eq!(overlay.source().take_calls(), [vec![1, 2]]);
    overlay.write(34, &[9; 2]).unwrap();
    assert_eq!(read(&overlay, 32, 8), {
        let mut expected = bytes(&source, 32, 8);
        expected[2..4].fill(9);
        expected
    });
}

#[test]
fn writing_the_whole_last_partial_unit_fetches_nothing() {
    let Setup { overlay, .. } = setup(40, &[]);
    overlay.write(32, &[6; 8]).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    assert_eq!(read(&overlay, 32, 8), [6; 8]);
    assert_eq!(overlay.stats().whole_unit_promotions, 1);
}

#[test]
fn requests_past_the_end_are_refused() {
    let Setup { overlay, .. } = setup(40, &[]);
    let error = overlay.read(39, &mut [0; 2]).unwrap_err();
    assert!(matches!(error, StoreError::OutOfRange { offset: 39, len: 2, size: 40 }), "{error:?}");
    assert_eq!(error.to_string(), "accessing 0x2 bytes at offset 0x27: beyond the end of the store (0x28 bytes)");
    assert!(matches!(overlay.write(40, &[1]), Err(StoreError::OutOfRange { .. })));
    assert!(matches!(overlay.read(u64::MAX, &mut [0; 1]), Err(StoreError::OutOfRange { .. })));
    overlay.read(40, &mut []).unwrap();
    overlay.write(40, &[]).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
}

#[test]
fn a_failing_source_is_reported_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let store = SliceStore::open_with_boot_id(dir.path(), UNIT, 64, BOOT).unwrap();
    let overlay = Overlay::new(store, Reply(|_: &[u64]| Err(SourceError::new("desktop asleep"))));
    let error = overlay.read(20, &mut [0; 20]).unwrap_err();
    assert!(matches!(error, StoreError::Fetch { first: 1, count: 2, .. }), "{error:?}");
    assert_eq!(error.source().unwrap().to_string(), "desktop asleep");
    assert_eq!(overlay.store().state(1).unwrap(), UnitState::Absent);
}

#[test]
fn a_bad_reply_is_refused_and_nothing_is_stored() {
    type Answer = fn(&[u64]) -> Vec<(u64, Vec<u8>)>;
    let cases: [(Answer, ReplyError); 4] = [
        (|_| vec![(1, vec![0; 16])], ReplyError::Missing),
        (|_| vec![(1, vec![0; 16]), (2, vec![0; 16]), (3, vec![0; 16])], ReplyError::NotRequested),
        (|_| vec![(1, vec![0; 16]), (1, vec![0; 16])], ReplyError::Duplicate),
        (|_| vec![(1, vec![0; 16]), (2, vec![0; 15])], ReplyError::Length { found: 15, expected: 16 }),
    ];
    for (reply, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = SliceStore::open_with_boot_id(dir.path(), UNIT, 64, BOOT).unwrap();
        let overlay = Overlay::new(store, Reply(|units: &[u64]| Ok(reply(units))));
        match overlay.read(16, &mut [0; 32]) {
            Err(StoreError::CheckFetchReply { source, .. }) => assert_eq!(source, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
        assert_eq!(overlay.stats().fetched_units, 0);
    }
}

#[test]
fn concurrent_partial_writes_to_one_unit_all_land() {
    let Setup { overlay, .. } = setup(64, &[]);
    std::thread::scope(|scope| {
        for thread in 0..8u8 {
            let overlay = &overlay;
            scope.spawn(move || {
                for round in 0..50u64 {
                    // Thread t owns bytes t and t + 8 of units 0..4.
                    let unit = round % 4;
                    overlay.write(unit * 16 + u64::from(thread), &[thread + 100]).unwrap();
                    overlay.write(unit * 16 + u64::from(thread) + 8, &[thread + 200]).unwrap();
                }
            });
        }
    });
    for unit in 0..4 {
        let expected: Vec<u8> = (0..8).map(|t| t + 100).chain((0..8).map(|t| t + 200)).collect();
        assert_eq!(read(&overlay, unit * 16, 16), expected, "unit {unit}");
    }
}

#[test]
fn stats_count_requests_and_fetches() {
    let Setup { overlay, .. } = setup(160, &[]);
    read(&overlay, 0, 48);
    overlay.write(100, &[1; 30]).unwrap();
    assert_eq!(
        overlay.stats(),
        OverlayStats {
            reads: 1,
            writes: 1,
            fetch_calls: 2,
            units_fetched: 5,
            whole_unit_promotions: 1,
            partial_write_fetches: 2,
            zero_units_served: 0,
            discards: 0,
            fetched_units: 5,
            dirty_units: 3,
            discarded_units: 0,
        }
    );
}

#[test]
fn a_discard_reads_as_zeros_and_never_fetches_its_whole_units() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    overlay.store().store_fetched(2, &bytes(&source, 32, 16)).unwrap();
    overlay.write(48, &[9; 16]).unwrap();
    // Units 1 to 4 whole; no fetch for any of them, absent, fetched or dirty.
    overlay.discard(16, 64).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new());
    assert_eq!(read(&overlay, 16, 64), vec![0; 64]);
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new(), "reading them fetches nothing");
    for unit in 1..5 {
        assert_eq!(overlay.store().state(unit).unwrap(), UnitState::Discarded, "unit {unit}");
    }
    let stats = overlay.stats();
    assert_eq!((stats.discards, stats.discarded_units, stats.fetched_units, stats.dirty_units), (1, 4, 0, 0));
}

#[test]
fn a_discard_zeroes_the_bytes_of_partial_units_as_a_write_would() {
    let Setup { overlay, source, .. } = setup(160, &[]);
    // The end of unit 0, all of unit 1 and the start of unit 2.
    overlay.discard(10, 30).unwrap();
    assert_eq!(overlay.source().take_calls(), [vec![0, 2]], "the partial units, in one call");
    let mut expected = bytes(&source, 0, 48);
    expected[10..40].fill(0);
    assert_eq!(read(&overlay, 0, 48), expected);
    let states: Vec<UnitState> = (0..3).map(|unit| overlay.store().state(unit).unwrap()).collect();
    assert_eq!(states, [UnitState::Dirty, UnitState::Discarded, UnitState::Dirty]);
}

#[test]
fn a_write_after_a_discard_is_dirty_and_keeps_the_zeros_around_it() {
    let Setup { overlay, .. } = setup(160, &[]);
    overlay.discard(0, 32).unwrap();
    overlay.write(20, &[5; 4]).unwrap();
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new(), "a discarded unit is not fetched");
    let mut expected = vec![0; 32];
    expected[20..24].fill(5);
    assert_eq!(read(&overlay, 0, 32), expected);
    assert_eq!(overlay.store().state(0).unwrap(), UnitState::Discarded);
    assert_eq!(overlay.store().state(1).unwrap(), UnitState::Dirty);
    assert!(matches!(overlay.discard(150, 20), Err(StoreError::OutOfRange { .. })));
}

#[test]
fn a_boxed_trait_object_is_a_source() {
    fn check<S: serde::Serialize>(_: &S) {}
    let dir = tempfile::tempdir().unwrap();
    let store = SliceStore::open_with_boot_id(dir.path(), UNIT, 64, BOOT).unwrap();
    let source: Box<dyn UnitSource + Send + Sync> = Box::new(MemorySource::new(pattern(64), UNIT));
    let overlay = Overlay::new(store, source);
    assert_eq!(read(&overlay, 0, 64), pattern(64));
    check(&overlay.stats());
}

/// A source that answers with a closure.
struct Reply<F>(F);

impl<F: Fn(&[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError>> UnitSource for Reply<F> {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        (self.0)(units)
    }
}
