//! Crash recovery with a real crash: a child process (this test binary run
//! again, on one test, with an environment variable) writes and discards
//! through an overlay and is killed with SIGKILL, so no flush and no destructor runs. The parent
//! then reopens the store directory.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{pattern, MemorySource};
use slice_store::{BootId, Overlay, Recovery, SliceStore, UnitState};

/// Set in the child to the store directory.
const CHILD_DIR: &str = "JETTISON_SLICE_STORE_CRASH_CHILD_DIR";
const UNIT: u32 = 4096;
/// 17 units, the last one 1000 bytes long.
const SIZE: u64 = 16 * 4096 + 1000;
/// Printed by the child once its writes are done.
const READY: &str = "child: writes done";

/// Writes that leave units 0, 3, 4, 5, 7, 8, 9 and 16 dirty, whole and partial,
/// with the head, body and tail of one request, and the partial last unit.
fn first_batch() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, vec![0xa0; 4096]),
        (3 * 4096, vec![0xa3; 2 * 4096]),
        (5 * 4096 + 100, vec![0xa5; 50]),
        (7 * 4096 + 4000, vec![0xa7; 96 + 4096 + 10]),
        (16 * 4096 + 10, vec![0xaf; 20]),
    ]
}

/// Writes to units no write of the first batch touched: 11, 12 and 13.
fn second_batch() -> Vec<(u64, Vec<u8>)> {
    vec![(11 * 4096, vec![0xb1; 4096]), (12 * 4096 + 7, vec![0xb2; 4096])]
}

fn units_of(batch: &[(u64, Vec<u8>)]) -> Vec<u64> {
    let mut units: Vec<u64> =
        batch.iter().flat_map(|(offset, data)| offset / 4096..=(offset + data.len() as u64 - 1) / 4096).collect();
    units.sort_unstable();
    units.dedup();
    units
}

fn apply(bytes: &mut [u8], batch: &[(u64, Vec<u8>)]) {
    for (offset, data) in batch {
        bytes[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
}

/// The child: writes the first batch, flushes if asked, writes the second
/// batch, says so, and waits to be killed.
fn child(dir: &Path, flush_between: bool) -> ! {
    let store = SliceStore::open(dir, UNIT, SIZE).unwrap();
    let overlay = Overlay::new(store, MemorySource::new(pattern(SIZE), UNIT));
    for (offset, data) in first_batch() {
        overlay.write(offset, &data).unwrap();
    }
    if flush_between {
        overlay.flush().unwrap();
    }
    for (offset, data) in second_batch() {
        overlay.write(offset, &data).unwrap();
    }
    println!("{READY}");
    loop {
        std::thread::park();
    }
}

/// Runs `test` in a child process on `dir`, waits until its writes are done,
/// and kills it with SIGKILL.
fn run_child_and_kill(test: &str, dir: &Path) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout.lines().any(|line| line.unwrap().contains(READY));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(ready, "the child ended before its writes were done: {status}");
    assert_eq!(status.signal(), Some(nix::sys::signal::Signal::SIGKILL as i32));
}

/// Checks through a fresh overlay that the store holds `expected` and that the
/// dirty units are exactly `dirty`.
fn check(store: SliceStore, dirty: &[u64], expected: &[u8]) {
    assert_eq!(store.dirty_units().collect::<Vec<_>>(), dirty);
    for &unit in dirty {
        let start = unit as usize * UNIT as usize;
        let mut buf = vec![0; store.unit_len(unit).unwrap() as usize];
        assert_eq!(store.read_unit(unit, &mut buf).unwrap(), UnitState::Dirty);
        assert_eq!(buf, expected[start..start + buf.len()], "unit {unit}");
    }
    let overlay = Overlay::new(store, MemorySource::new(pattern(SIZE), UNIT));
    let mut everything = vec![0; SIZE as usize];
    overlay.read(0, &mut everything).unwrap();
    assert!(everything == expected, "the device differs from the expected content");
    let fetched: Vec<u64> = overlay.source().take_calls().concat();
    assert!(fetched.iter().all(|unit| !dirty.contains(unit)), "fetched a dirty unit: {fetched:?}");
}

#[test]
fn dirty_units_survive_a_killed_process() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir), false);
    }
    let dir = tempfile::tempdir().unwrap();
    run_child_and_kill("dirty_units_survive_a_killed_process", dir.path());

    let store = SliceStore::open(dir.path(), UNIT, SIZE).unwrap();
    assert_eq!(store.recovery(), Recovery::ProcessCrash);
    let mut expected = pattern(SIZE);
    apply(&mut expected, &first_batch());
    apply(&mut expected, &second_batch());
    let mut dirty = units_of(&first_batch());
    dirty.extend(units_of(&second_batch()));
    dirty.sort_unstable();
    assert_eq!(dirty, [0, 3, 4, 5, 7, 8, 9, 11, 12, 13, 16]);
    check(store, &dirty, &expected);
}

#[test]
fn after_a_reboot_flushed_units_are_kept_and_later_ones_dropped() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir), true);
    }
    let dir = tempfile::tempdir().unwrap();
    run_child_and_kill("after_a_reboot_flushed_units_are_kept_and_later_ones_dropped", dir.path());

    let next_boot = BootId::from_bytes(BootId::current().unwrap().as_bytes().map(|byte| !byte));
    let store = SliceStore::open_with_boot_id(dir.path(), UNIT, SIZE, next_boot).unwrap();
    assert_eq!(store.recovery(), Recovery::Reboot { dropped_units: 3 });
    for unit in units_of(&second_batch()) {
        assert_eq!(store.state(unit).unwrap(), UnitState::Absent, "unit {unit}");
    }
    let mut expected = pattern(SIZE);
    apply(&mut expected, &first_batch());
    check(store, &units_of(&first_batch()), &expected);
}

/// The child of the discard tests: writes units 3 and 4, discards units 2 to
/// 5, flushes, discards units 10 and 11, says so, and waits to be killed.
fn discarding_child(dir: &Path) -> ! {
    let store = SliceStore::open(dir, UNIT, SIZE).unwrap();
    let overlay = Overlay::new(store, MemorySource::new(pattern(SIZE), UNIT));
    overlay.write(3 * 4096, &[0xd3; 2 * 4096]).unwrap();
    overlay.discard(2 * 4096, 4 * 4096).unwrap();
    overlay.flush().unwrap();
    overlay.discard(10 * 4096, 2 * 4096).unwrap();
    println!("{READY}");
    loop {
        std::thread::park();
    }
}

/// Checks that the store's discarded units are `discarded`, that nothing is
/// dirty, and that they read as zeros without a fetch.
fn check_discarded(store: SliceStore, discarded: &[u64]) {
    assert_eq!(store.discarded_units().collect::<Vec<_>>(), discarded);
    assert_eq!(store.dirty_units().next(), None, "a discarded unit is not dirty");
    let overlay = Overlay::new(store, MemorySource::new(pattern(SIZE), UNIT));
    for &unit in discarded {
        let mut buf = vec![0xff; 4096];
        overlay.read(unit * 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&byte| byte == 0), "unit {unit}");
    }
    assert_eq!(overlay.source().take_calls(), Vec::<Vec<u64>>::new(), "a discarded unit was fetched");
}

#[test]
fn discards_survive_a_killed_process() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        discarding_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    run_child_and_kill("discards_survive_a_killed_process", dir.path());
    let store = SliceStore::open(dir.path(), UNIT, SIZE).unwrap();
    check_discarded(store, &[2, 3, 4, 5, 10, 11]);
}

#[test]
fn after_a_reboot_flushed_discards_are_kept_and_later_ones_undone() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        discarding_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    run_child_and_kill("after_a_reboot_flushed_discards_are_kept_and_later_ones_undone", dir.path());
    let next_boot = BootId::from_bytes(BootId::current().unwrap().as_bytes().map(|byte| !byte));
    let store = SliceStore::open_with_boot_id(dir.path(), UNIT, SIZE, next_boot).unwrap();
    for unit in [10, 11] {
        assert_eq!(store.state(unit).unwrap(), UnitState::Absent, "unit {unit}");
    }
    check_discarded(store, &[2, 3, 4, 5]);
}
