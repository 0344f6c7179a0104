//! The overlay against a plain model: the source's bytes with the writes
//! and discards applied, and the state each unit should be in, over random
//! operations.
//! Besides the bytes, the model predicts every call to the source exactly.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::{pattern, MemorySource};
use proptest::prelude::*;
use slice_store::{BootId, Overlay, SliceStore, StoreError};

const BOOT: BootId = BootId::from_bytes([0x55; 16]);

#[derive(Clone, Debug)]
enum Op {
    Read {
        offset: u64,
        len: u64,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    /// A punched hole.
    Discard {
        offset: u64,
        len: u64,
    },
    Flush,
    /// Close the store and open it again.
    Reopen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Absent,
    Fetched,
    Dirty,
    Zero,
    Discarded,
}

#[derive(Debug)]
struct Case {
    unit_size: u32,
    size: u64,
    source: Vec<u8>,
    zeros: Vec<u64>,
    ops: Vec<Op>,
}

fn op(size: u64, unit_size: u32) -> impl Strategy<Value = Op> {
    let reach = size + u64::from(unit_size);
    let max_len = 3 * u64::from(unit_size) + 2;
    prop_oneof![
        4 => (0..reach, 0..max_len).prop_map(|(offset, len)| Op::Read { offset, len }),
        4 => (0..reach, proptest::collection::vec(any::<u8>(), 0..max_len as usize))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        2 => (0..reach, 0..max_len).prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (prop_oneof![Just(1u32), Just(4), Just(16), Just(64)], 1u64..12)
        .prop_flat_map(|(unit_size, units)| {
            let full = units * u64::from(unit_size);
            (Just(unit_size), (full - u64::from(unit_size) + 1)..=full)
        })
        .prop_flat_map(|(unit_size, size)| {
            let units = size.div_ceil(u64::from(unit_size));
            (
                Just(unit_size),
                Just(size),
                proptest::collection::btree_set(0..units, 0..=units as usize / 2),
                proptest::collection::vec(op(size, unit_size), 1..40),
            )
        })
        .prop_map(|(unit_size, size, zeros, ops)| {
            let mut source = pattern(size);
            for &unit in &zeros {
                let start = unit as usize * unit_size as usize;
                let end = (start + unit_size as usize).min(source.len());
                source[start..end].fill(0);
            }
            Case { unit_size, size, source, zeros: zeros.into_iter().collect(), ops }
        })
}

struct Model {
    unit_size: u64,
    size: u64,
    bytes: Vec<u8>,
    states: Vec<Expect>,
}

impl Model {
    /// The units a request touches, each with whether it covers it whole.
    fn units(&self, offset: u64, len: u64) -> Vec<(u64, bool)> {
        if len == 0 {
            return Vec::new();
        }
        let end = offset + len;
        (offset / self.unit_size..=(end - 1) / self.unit_size)
            .map(|unit| {
                let start = unit * self.unit_size;
                let stop = (start + self.unit_size).min(self.size);
                (unit, offset <= start && stop <= end)
            })
            .collect()
    }

    /// The units a read fetches, which become fetched.
    fn read(&mut self, offset: u64, len: u64) -> Vec<u64> {
        let absent = self.absent(self.units(offset, len).into_iter().map(|(unit, _)| unit));
        for &unit in &absent {
            self.states[unit as usize] = Expect::Fetched;
        }
        absent
    }

    /// The units a write fetches; every unit it touches becomes dirty.
    fn write(&mut self, offset: u64, data: &[u8]) -> Vec<u64> {
        let touched = self.units(offset, data.len() as u64);
        let absent = self.absent(touched.iter().filter(|(_, whole)| !whole).map(|&(unit, _)| unit));
        for (unit, _) in touched {
            self.states[unit as usize] = Expect::Dirty;
        }
        self.bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        absent
    }

    /// The units a discard fetches (its partial ones, as a write of zeros);
    /// its whole units become discarded.
    fn discard(&mut self, offset: u64, len: u64) -> Vec<u64> {
        let absent = self.write(offset, &vec![0; len as usize]);
        for (unit, whole) in self.units(offset, len) {
            if whole {
                self.states[unit as usize] = Expect::Discarded;
            }
        }
        absent
    }

    fn absent(&self, units: impl Iterator<Item = u64>) -> Vec<u64> {
        units.filter(|&unit| self.states[unit as usize] == Expect::Absent).collect()
    }
}

fn open(dir: &std::path::Path, case: &Case) -> SliceStore {
    let store = SliceStore::open_with_boot_id(dir, case.unit_size, case.size, BOOT).unwrap();
    store.mark_zero_ranges(case.zeros.iter().map(|&unit| unit..unit + 1)).unwrap();
    store
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut overlay = Overlay::new(open(dir.path(), &case), MemorySource::new(case.source.clone(), case.unit_size));
    let units = case.size.div_ceil(u64::from(case.unit_size));
    let mut model = Model {
        unit_size: u64::from(case.unit_size),
        size: case.size,
        bytes: case.source.clone(),
        states: (0..units).map(|unit| if case.zeros.contains(&unit) { Expect::Zero } else { Expect::Absent }).collect(),
    };
    for op in &case.ops {
        let expected_fetch = match op {
            Op::Read { offset, len } if offset + len <= case.size => {
                let mut buf = vec![0; *len as usize];
                overlay.read(*offset, &mut buf).unwrap();
                let (start, end) = (*offset as usize, (*offset + *len) as usize);
                prop_assert_eq!(&buf, &model.bytes[start..end], "{:?}", op);
                model.read(*offset, *len)
            }
            Op::Write { offset, data } if offset + data.len() as u64 <= case.size => {
                overlay.write(*offset, data).unwrap();
                model.write(*offset, data)
            }
            Op::Discard { offset, len } if offset + len <= case.size => {
                overlay.discard(*offset, *len).unwrap();
                model.discard(*offset, *len)
            }
            Op::Discard { offset, len } => {
                let refused = overlay.discard(*offset, *len);
                prop_assert!(matches!(refused, Err(StoreError::OutOfRange { .. })), "{:?}", refused);
                Vec::new()
            }
            Op::Read { offset, len } => {
                let refused = overlay.read(*offset, &mut vec![0; *len as usize]);
                prop_assert!(matches!(refused, Err(StoreError::OutOfRange { .. })), "{:?}", refused);
                Vec::new()
            }
            Op::Write { offset, data } => {
                let refused = overlay.write(*offset, data);
                prop_assert!(matches!(refused, Err(StoreError::OutOfRange { .. })), "{:?}", refused);
                Vec::new()
            }
            Op::Flush => {
                overlay.flush().unwrap();
                Vec::new()
            }
            Op::Reopen => {
                let (store, source) = overlay.into_parts();
                std::sync::Arc::try_unwrap(store).unwrap().close().unwrap();
                overlay = Overlay::new(open(dir.path(), &case), source);
                Vec::new()
            }
        };
        // One call with exactly the absent units, or none: so no unit is ever
        // fetched twice, no known-zero unit is fetched, no whole write fetches.
        let calls = overlay.source().take_calls();
        let expected_calls = if expected_fetch.is_empty() { vec![] } else { vec![expected_fetch] };
        prop_assert_eq!(calls, expected_calls, "{:?}", op);
    }
    let dirty: Vec<u64> = (0..units).filter(|&unit| model.states[unit as usize] == Expect::Dirty).collect();
    prop_assert_eq!(overlay.store().dirty_units().collect::<Vec<_>>(), dirty);
    let discarded: Vec<u64> = (0..units).filter(|&unit| model.states[unit as usize] == Expect::Discarded).collect();
    prop_assert_eq!(overlay.store().discarded_units().collect::<Vec<_>>(), discarded);
    let mut everything = vec![0; case.size as usize];
    overlay.read(0, &mut everything).unwrap();
    prop_assert_eq!(everything, model.bytes);
    Ok(())
}

proptest! {
    #[test]
    fn the_overlay_behaves_like_the_source_with_the_writes_applied(case in case()) {
        run(case)?;
    }
}
