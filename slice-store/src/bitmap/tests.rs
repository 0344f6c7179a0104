use super::*;
use crate::error::FormatError;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

const THIS_BOOT: BootId = BootId::from_bytes([0x11; 16]);
const NEXT_BOOT: BootId = BootId::from_bytes([0x22; 16]);
const UNIT: u32 = 4096;
const COUNT: u64 = 100;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dirty.bitmap");
    (dir, path)
}

fn ones(bitmap: &PersistentBitmap) -> Vec<u64> {
    std::iter::successors(bitmap.next_one(0), |&unit| bitmap.next_one(unit + 1)).collect()
}

/// Leaves the bitmap as a killed process would: no flush, no clean mark.
fn crash(bitmap: PersistentBitmap) {
    std::mem::forget(bitmap);
}

fn open(path: &Path, boot: BootId) -> Result<PersistentBitmap> {
    PersistentBitmap::open(path, UNIT, COUNT, boot)
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

#[test]
fn a_new_bitmap_has_no_bit_set() {
    let (_dir, path) = setup();
    let bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::Created);
    assert_eq!(bitmap.count_ones(), 0);
    assert_eq!(bitmap.next_one(0), None);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 48 + 13);
}

#[test]
fn set_reports_the_first_setting_and_counts_it_once() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    assert!(bitmap.set(7).unwrap());
    assert!(!bitmap.set(7).unwrap());
    assert!(bitmap.set(99).unwrap());
    assert!(bitmap.get(7) && bitmap.get(99) && !bitmap.get(8));
    assert_eq!(bitmap.count_ones(), 2);
    assert_eq!(ones(&bitmap), [7, 99]);
}

#[test]
fn units_past_the_end_are_refused_or_clear() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    assert!(matches!(bitmap.set(COUNT), Err(StoreError::UnitOutOfRange { unit: 100, unit_count: 100 })));
    assert!(!bitmap.get(COUNT));
    assert!(!bitmap.get(u64::MAX));
    assert_eq!(bitmap.next_one(u64::MAX), None);
}

#[test]
fn a_process_crash_keeps_every_bit() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(3).unwrap();
    bitmap.flush().unwrap();
    bitmap.set(50).unwrap();
    crash(bitmap);
    let bitmap = open(&path, THIS_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::ProcessCrash);
    assert_eq!(ones(&bitmap), [3, 50]);
    assert_eq!(bitmap.count_ones(), 2);
}

#[test]
fn a_reboot_keeps_flushed_bits_and_drops_later_ones() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(3).unwrap();
    bitmap.set(4).unwrap();
    bitmap.flush().unwrap();
    bitmap.set(50).unwrap();
    crash(bitmap);
    let bitmap = open(&path, NEXT_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::Reboot { dropped_units: 1 });
    assert_eq!(ones(&bitmap), [3, 4]);
    assert_eq!(bitmap.count_ones(), 2);
}

#[test]
fn a_reboot_before_any_flush_drops_every_bit() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(3).unwrap();
    crash(bitmap);
    let bitmap = open(&path, NEXT_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::Reboot { dropped_units: 1 });
    assert_eq!(bitmap.next_one(0), None);
}

#[test]
fn the_restored_bits_survive_a_second_reboot() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(3).unwrap();
    bitmap.flush().unwrap();
    bitmap.set(9).unwrap();
    crash(bitmap);
    crash(open(&path, NEXT_BOOT).unwrap());
    let bitmap = open(&path, THIS_BOOT).unwrap();
    assert_eq!(ones(&bitmap), [3]);
}

#[test]
fn a_clean_close_is_trusted_after_a_reboot() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(1).unwrap();
    bitmap.set(64).unwrap();
    bitmap.close().unwrap();
    let bitmap = open(&path, NEXT_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::CleanShutdown);
    assert_eq!(ones(&bitmap), [1, 64]);
}

#[test]
fn drop_closes_cleanly() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(5).unwrap();
    drop(bitmap);
    let bitmap = open(&path, NEXT_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::CleanShutdown);
    assert_eq!(ones(&bitmap), [5]);
}

#[test]
fn a_clean_file_whose_bits_fail_the_checksum_falls_back_to_the_copy() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(2).unwrap();
    bitmap.close().unwrap();
    // A bit that reached the disk without the header that should have said "open".
    patch(&path, 48 + 5, &[0x01]);
    let bitmap = open(&path, NEXT_BOOT).unwrap();
    assert_eq!(bitmap.recovery(), Recovery::Reboot { dropped_units: 1 });
    assert_eq!(ones(&bitmap), [2]);
}

#[test]
fn flush_rewrites_the_copy_only_after_a_change() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    assert!(bitmap.snapshot().is_none());
    bitmap.set(2).unwrap();
    assert!(bitmap.snapshot().is_some());
    bitmap.flush().unwrap();
    assert!(bitmap.snapshot().is_none());
    bitmap.set(2).unwrap();
    assert!(bitmap.snapshot().is_none());
}

#[test]
fn bad_magic_is_refused_with_the_path() {
    let (_dir, path) = setup();
    PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap().close().unwrap();
    patch(&path, 0, b"NOTABMP!");
    let error = open(&path, THIS_BOOT).unwrap_err();
    assert!(
        matches!(&error, StoreError::CheckBitmap { path: p, source: FormatError::BadMagic { .. } } if *p == path),
        "{error:?}"
    );
    assert!(error.to_string().contains("dirty.bitmap"), "{error}");
}

#[test]
fn a_file_of_the_wrong_length_is_refused() {
    let (_dir, path) = setup();
    PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap().close().unwrap();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(60).unwrap();
    let error = open(&path, THIS_BOOT).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CheckBitmap { source: FormatError::LengthMismatch { found: 60, expected: 61 }, .. }
        ),
        "{error:?}"
    );
}

#[test]
fn a_file_shorter_than_its_header_is_refused() {
    let (_dir, path) = setup();
    std::fs::write(&path, b"JTSLBMP1").unwrap();
    let error = open(&path, THIS_BOOT).unwrap_err();
    assert!(
        matches!(error, StoreError::CheckBitmap { source: FormatError::LengthMismatch { found: 8, .. }, .. }),
        "{error:?}"
    );
}

#[test]
fn an_absurd_count_is_refused_before_reading_the_bits() {
    let (_dir, path) = setup();
    PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap().close().unwrap();
    patch(&path, 16, &u64::MAX.to_le_bytes());
    let error = open(&path, THIS_BOOT).unwrap_err();
    assert!(matches!(error, StoreError::CheckBitmap { source: FormatError::CountTooLarge { .. }, .. }), "{error:?}");
}

#[test]
fn another_geometry_is_refused() {
    let (_dir, path) = setup();
    PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap().close().unwrap();
    let error = PersistentBitmap::open(&path, 512, COUNT, THIS_BOOT).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CheckBitmap { source: FormatError::UnitSizeMismatch { found: 4096, expected: 512 }, .. }
        ),
        "{error:?}"
    );
    let error = PersistentBitmap::open(&path, UNIT, COUNT + 1, THIS_BOOT).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CheckBitmap { source: FormatError::UnitCountMismatch { found: 100, expected: 101 }, .. }
        ),
        "{error:?}"
    );
}

#[test]
fn a_damaged_flushed_copy_is_refused_after_a_reboot() {
    let (_dir, path) = setup();
    let mut bitmap = PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap();
    bitmap.set(3).unwrap();
    bitmap.flush().unwrap();
    crash(bitmap);
    let copy = with_suffix(&path, ".flushed");
    patch(&copy, 48, &[0xff]);
    let error = open(&path, NEXT_BOOT).unwrap_err();
    assert!(
        matches!(&error, StoreError::RecoverBitmap { path: p, source: FormatError::ChecksumMismatch { .. } } if *p == copy),
        "{error:?}"
    );
    assert!(error.to_string().contains("move the store directory aside"), "{error}");
}

#[test]
fn a_missing_flushed_copy_is_refused_after_a_reboot() {
    let (_dir, path) = setup();
    crash(PersistentBitmap::create(&path, UNIT, COUNT, THIS_BOOT).unwrap());
    std::fs::remove_file(with_suffix(&path, ".flushed")).unwrap();
    let error = open(&path, NEXT_BOOT).unwrap_err();
    assert!(matches!(error, StoreError::ReadFlushedCopy { .. }), "{error:?}");
}

#[test]
fn a_zero_unit_size_is_refused() {
    let (_dir, path) = setup();
    let error = PersistentBitmap::create(&path, 0, COUNT, THIS_BOOT).unwrap_err();
    assert!(matches!(error, StoreError::CheckGeometry { .. }), "{error:?}");
}
