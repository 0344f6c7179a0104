//! Damaged store directories give an error that names the file and says what
//! to do; never a panic, never silently wrong bits.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::error::Error as _;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;
use slice_store::{BootId, FormatError, SliceStore, StoreError};

const THIS_BOOT: BootId = BootId::from_bytes([0x66; 16]);
const NEXT_BOOT: BootId = BootId::from_bytes([0x77; 16]);
const UNIT: u32 = 512;
const SIZE: u64 = 100 * 512;
/// Where the state field of a bitmap header is.
const STATE_AT: u64 = 40;

/// A closed store with unit 3 dirty and flushed.
fn closed_store(dir: &Path) {
    let store = SliceStore::open_with_boot_id(dir, UNIT, SIZE, THIS_BOOT).unwrap();
    store.write_dirty(3, &[1; 512]).unwrap();
    store.flush().unwrap();
    store.close().unwrap();
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

fn open(dir: &Path, boot: BootId) -> Result<SliceStore, StoreError> {
    SliceStore::open_with_boot_id(dir, UNIT, SIZE, boot)
}

/// The message and every cause, as a command line would print them.
fn chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text += &format!(": {next}");
        cause = next.source();
    }
    text
}

#[test]
fn a_bitmap_with_bad_magic_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    patch(&dir.path().join("dirty.bitmap"), 0, b"GARBAGE!");
    let error = open(dir.path(), THIS_BOOT).unwrap_err();
    assert!(matches!(error, StoreError::CheckBitmap { source: FormatError::BadMagic { .. }, .. }), "{error:?}");
    let text = chain(&error);
    assert!(text.contains("dirty.bitmap") && text.contains("bad magic"), "{text}");
    assert!(text.contains("move the store directory aside"), "{text}");
}

#[test]
fn a_bitmap_of_the_wrong_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    let path = dir.path().join("fetched.bitmap");
    OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let error = open(dir.path(), THIS_BOOT).unwrap_err();
    assert!(
        matches!(error, StoreError::CheckBitmap { source: FormatError::LengthMismatch { found: 1048576, .. }, .. }),
        "{error:?}"
    );
}

#[test]
fn a_header_claiming_an_absurd_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    patch(&dir.path().join("dirty.bitmap"), 16, &(1u64 << 62).to_le_bytes());
    let error = open(dir.path(), THIS_BOOT).unwrap_err();
    assert!(matches!(error, StoreError::CheckBitmap { source: FormatError::CountTooLarge { .. }, .. }), "{error:?}");
}

#[test]
fn a_flushed_copy_with_a_bad_checksum_is_refused_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    // As if the machine had gone down with the store open.
    patch(&dir.path().join("dirty.bitmap"), STATE_AT, &1u32.to_le_bytes());
    patch(&dir.path().join("dirty.bitmap.flushed"), 48 + 2, &[0x80]);
    let error = open(dir.path(), NEXT_BOOT).unwrap_err();
    assert!(
        matches!(error, StoreError::RecoverBitmap { source: FormatError::ChecksumMismatch { .. }, .. }),
        "{error:?}"
    );
    let text = chain(&error);
    assert!(text.contains("dirty.bitmap.flushed") && text.contains("checksum"), "{text}");
}

#[test]
fn an_unclean_bitmap_recovers_from_an_intact_copy_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    patch(&dir.path().join("dirty.bitmap"), STATE_AT, &1u32.to_le_bytes());
    let store = open(dir.path(), NEXT_BOOT).unwrap();
    assert_eq!(store.dirty_units().collect::<Vec<_>>(), [3]);
}

#[test]
fn a_missing_slice_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    std::fs::remove_file(dir.path().join("dirty.slice")).unwrap();
    let error = open(dir.path(), THIS_BOOT).unwrap_err();
    assert!(matches!(&error, StoreError::OpenFile { path, .. } if path.ends_with("dirty.slice")), "{error:?}");
}

proptest! {
    #[test]
    fn any_bytes_in_a_bitmap_give_an_error_or_a_store_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        keep_header in any::<bool>(),
        reboot in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        closed_store(dir.path());
        let path = dir.path().join(if reboot { "dirty.bitmap.flushed" } else { "dirty.bitmap" });
        let mut content = std::fs::read(&path).unwrap();
        let keep = if keep_header { 24.min(content.len()) } else { 0 };
        content.truncate(keep);
        content.extend_from_slice(&bytes);
        std::fs::write(&path, &content).unwrap();
        if reboot {
            patch(&dir.path().join("dirty.bitmap"), STATE_AT, &1u32.to_le_bytes());
        }
        if let Ok(store) = open(dir.path(), if reboot { NEXT_BOOT } else { THIS_BOOT }) {
            prop_assert!(store.dirty_count() <= 100);
        }
    }
}
