//! Handing the writes back: a store's dirty units exported as a dirty set and
//! applied to a copy of the desktop's image, and every way a transfer can break
//! leaving that image byte-for-byte as it was.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

#[allow(dead_code)] // only `pattern` is used here
mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::pattern;
use migration_formats::dirty_set::{ApplyTarget, DirtySetError, ImageState, StreamError};
use slice_store::export_dirty_set;
use slice_store::SliceStore;

const UNIT: u32 = 512;
/// Nine units, the last one 100 bytes long.
const SIZE: u64 = 8 * 512 + 100;

/// A desktop image (the checkpoint), a staging directory, and a server store
/// for the same image.
struct Fixture {
    dir: tempfile::TempDir,
    base: Vec<u8>,
    image: PathBuf,
    staging: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(SIZE);
        let image = dir.path().join("disk.img");
        fs::write(&image, &base).unwrap();
        let staging = dir.path().join("staging");
        Self { dir, base, image, staging }
    }

    fn target(&self) -> ApplyTarget {
        ApplyTarget::new(&self.image, UNIT, &self.staging)
    }

    fn image_bytes(&self) -> Vec<u8> {
        fs::read(&self.image).unwrap()
    }

    /// Exports a store in which each `(unit, byte)` was written whole with
    /// `byte`; returns the set and the image it should produce.
    fn export_dirty_set(&self, dirty: &[(u64, u8)]) -> (Vec<u8>, Vec<u8>) {
        let store_dir = tempfile::tempdir_in(self.dir.path()).unwrap();
        let store = SliceStore::open(store_dir.path(), UNIT, SIZE).unwrap();
        let mut expected = self.base.clone();
        for &(unit, byte) in dirty {
            let data = vec![byte; store.unit_len(unit).unwrap() as usize];
            store.write_dirty(unit, &data).unwrap();
            let start = unit as usize * UNIT as usize;
            expected[start..start + data.len()].copy_from_slice(&data);
        }
        store.flush().unwrap();
        let mut set = Vec::new();
        let summary = export_dirty_set(&store, &mut set).unwrap();
        assert_eq!(summary.units, dirty.len() as u64);
        assert_eq!(summary.stream_bytes, set.len() as u64);
        (set, expected)
    }

    /// Asserts the image is the checkpoint, untouched, and nothing is staged.
    fn assert_untouched(&self, what: &str) {
        assert!(self.image_bytes() == self.base, "{what}: the image changed");
        assert_eq!(staged_files(&self.staging), Vec::<String>::new(), "{what}: staged files left");
    }
}

/// Names of the files in the staging directory (none if it does not exist).
fn staged_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// A set of format `version` built straight from the format tables of the
/// module doc, independently of the crate's writer, so that sets the writer
/// refuses can be made too. A record with no data is a discard.
fn spec_set_of_version(
    version: u32,
    unit_size: u32,
    image_size: u64,
    id: [u8; 16],
    records: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"JTDIRTY1");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&unit_size.to_le_bytes());
    out.extend_from_slice(&image_size.to_le_bytes());
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(&id);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let mut data_bytes = 0;
    for (unit, data) in records {
        let start = out.len();
        out.extend_from_slice(&unit.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        data_bytes += data.len() as u64;
    }
    out.extend_from_slice(b"JTDIRTYE");
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(&data_bytes.to_le_bytes());
    out.extend_from_slice(&id);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    out
}

/// A set of the version this build writes, as [`spec_set_of_version`].
fn spec_set(unit_size: u32, image_size: u64, id: [u8; 16], records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    spec_set_of_version(2, unit_size, image_size, id, records)
}

/// Whole units, the partial last unit, and a unit between them.
const DIRTY: [(u64, u8); 3] = [(0, 0xa0), (3, 0xa3), (8, 0xa8)];

#[test]
fn whole_and_partial_units_round_trip_onto_the_image() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    let summary = fixture.target().apply(&set[..]).unwrap();
    assert_eq!((summary.units, summary.data_bytes, summary.resumed), (3, 2 * 512 + 100, false));
    assert!(fixture.image_bytes() == expected);
    assert_eq!(staged_files(&fixture.staging), Vec::<String>::new());
    assert_eq!(fixture.target().resume_pending().unwrap(), None);
}

#[test]
fn an_empty_set_changes_nothing() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&[]);
    let summary = fixture.target().apply(&set[..]).unwrap();
    assert_eq!(summary.units, 0);
    fixture.assert_untouched("empty set");
}

#[test]
fn the_exported_stream_is_the_documented_format() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&DIRTY);
    let id: [u8; 16] = set[32..48].try_into().unwrap();
    let records: Vec<(u64, Vec<u8>)> =
        DIRTY.iter().map(|&(unit, byte)| (unit, vec![byte; if unit == 8 { 100 } else { 512 }])).collect();
    assert!(set == spec_set(UNIT, SIZE, id, &records));
}

#[test]
fn a_set_of_version_1_is_still_applied() {
    let fixture = Fixture::new();
    let records = vec![(2, vec![0xb2; 512]), (8, vec![0xb8; 100])];
    let set = spec_set_of_version(1, UNIT, SIZE, [5; 16], &records);
    let summary = fixture.target().apply(&set[..]).unwrap();
    assert_eq!((summary.units, summary.discarded), (2, 0));
    let mut expected = fixture.base.clone();
    expected[2 * 512..3 * 512].fill(0xb2);
    expected[8 * 512..].fill(0xb8);
    assert!(fixture.image_bytes() == expected);
}

#[test]
fn a_set_of_version_1_with_a_discard_record_is_refused() {
    let fixture = Fixture::new();
    let set = spec_set_of_version(1, UNIT, SIZE, [5; 16], &[(2, Vec::new())]);
    let error = fixture.target().apply(&set[..]).unwrap_err();
    assert!(
        matches!(error, DirtySetError::Rejected { source: StreamError::RecordLength { found: 0, .. }, .. }),
        "{error:?}"
    );
    fixture.assert_untouched("a discard in version 1");
}

#[test]
fn a_set_of_an_unknown_version_is_refused_saying_which_it_reads() {
    let fixture = Fixture::new();
    let set = spec_set_of_version(3, UNIT, SIZE, [5; 16], &[]);
    let error = fixture.target().apply(&set[..]).unwrap_err();
    let text = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(text.contains("format version 3, this build reads versions 1 to 2"), "{text}");
    fixture.assert_untouched("version 3");
}

#[test]
fn discarded_units_become_holes_in_the_image() {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    const PAGE: u32 = 4096;
    const PAGES: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ram");
    fs::write(&image, vec![0x5a; (PAGES * u64::from(PAGE)) as usize]).unwrap();
    let store = SliceStore::open(dir.path().join("store"), PAGE, PAGES * u64::from(PAGE)).unwrap();
    store.write_dirty(3, &[0x33; 4096]).unwrap();
    store.write_dirty(4, &[0x44; 4096]).unwrap();
    store.discard_units(4..12).unwrap();
    let mut set = Vec::new();
    let sent = export_dirty_set(&store, &mut set).unwrap();
    assert_eq!((sent.units, sent.discarded), (9, 8));
    let blocks_before = fs::metadata(&image).unwrap().blocks();

    let applied = ApplyTarget::new(&image, PAGE, dir.path().join("staging")).apply(&set[..]).unwrap();
    assert_eq!((applied.units, applied.discarded, applied.data_bytes), (9, 8, 4096));
    let bytes = fs::read(&image).unwrap();
    let page = |n: usize| &bytes[n * 4096..(n + 1) * 4096];
    assert!(page(3).iter().all(|&b| b == 0x33));
    assert!((4..12).all(|n| page(n).iter().all(|&b| b == 0)), "discarded pages read as zeros");
    assert!(page(12).iter().all(|&b| b == 0x5a));
    let file = fs::File::open(&image).unwrap();
    let hole = lseek(file.as_raw_fd(), 0, Whence::SeekHole).unwrap();
    assert_eq!(hole, 4 * 4096, "the first hole is the first discarded page");
    let data = lseek(file.as_raw_fd(), hole, Whence::SeekData).unwrap();
    assert_eq!(data, 12 * 4096, "and it runs to the last one");
    let blocks_after = fs::metadata(&image).unwrap().blocks();
    assert_eq!(blocks_before - blocks_after, 8 * 8, "eight pages of 512-byte blocks given back");
}

#[test]
fn every_truncation_leaves_the_image_unchanged_and_nothing_staged() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    for cut in 0..set.len() {
        let error = fixture.target().apply(&set[..cut]).unwrap_err();
        assert!(matches!(error, DirtySetError::Incomplete { .. }), "cut at {cut}: {error}");
        fixture.assert_untouched(&format!("cut at {cut}"));
    }
    // Cut after the first record: the message names the image and the count.
    let error = fixture.target().apply(&set[..52 + 12 + 512 + 4]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "dirty set for {} is incomplete: 1 of 3 units arrived; the image was not changed",
            fixture.image.display()
        )
    );
    fixture.target().apply(&set[..]).unwrap();
    assert!(fixture.image_bytes() == expected);
}

#[test]
fn a_flipped_byte_anywhere_is_rejected_and_the_image_unchanged() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&DIRTY);
    for at in 0..set.len() {
        let mut bad = set.clone();
        bad[at] ^= 0x20;
        let error = fixture.target().apply(&bad[..]).unwrap_err();
        assert!(matches!(error, DirtySetError::Rejected { .. }), "flip at {at}: {error}");
        fixture.assert_untouched(&format!("flip at {at}"));
    }
    let source_of = |at: usize| {
        let mut bad = set.clone();
        bad[at] ^= 0x01;
        match fixture.target().apply(&bad[..]).unwrap_err() {
            DirtySetError::Rejected { source, .. } => source,
            other => panic!("flip at {at}: {other}"),
        }
    };
    let trailer = set.len() - 44;
    assert!(matches!(source_of(20), StreamError::HeaderChecksum { .. }));
    assert!(matches!(source_of(52 + 12 + 7), StreamError::RecordChecksum { index: 0, unit: 0, .. }));
    assert!(matches!(source_of(trailer + 8), StreamError::TrailerCount { found: 2, expected: 3 }));
    assert!(matches!(source_of(trailer + 30), StreamError::TrailerTransferId { .. }));
    assert!(matches!(source_of(set.len() - 1), StreamError::StreamChecksum { .. }));
}

#[test]
fn records_out_of_order_or_repeated_are_rejected() {
    let fixture = Fixture::new();
    let id = [1; 16];
    for units in [[3, 1], [1, 1]] {
        let records: Vec<(u64, Vec<u8>)> = units.iter().map(|&unit| (unit, vec![0xee; 512])).collect();
        let error = fixture.target().apply(&spec_set(UNIT, SIZE, id, &records)[..]).unwrap_err();
        match &error {
            DirtySetError::Rejected { arrived: 1, expected: Some(2), source, .. } => {
                assert!(matches!(source, StreamError::UnitOutOfOrder { index: 1, .. }), "{units:?}: {source}")
            }
            other => panic!("{units:?}: {other}"),
        }
        fixture.assert_untouched(&format!("units {units:?}"));
    }
}

#[test]
fn a_set_for_another_unit_size_or_image_size_is_refused() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&DIRTY);
    let error = ApplyTarget::new(&fixture.image, 4096, &fixture.staging).apply(&set[..]).unwrap_err();
    assert!(matches!(error, DirtySetError::WrongImage { set_unit_size: 512, unit_size: 4096, .. }), "{error}");
    assert!(error.to_string().contains("the image was not changed"), "{error}");
    fixture.assert_untouched("wrong unit size");

    let shorter = fixture.dir.path().join("shorter.img");
    fs::write(&shorter, &fixture.base[..fixture.base.len() - 1]).unwrap();
    let error = ApplyTarget::new(&shorter, UNIT, &fixture.staging).apply(&set[..]).unwrap_err();
    assert!(matches!(error, DirtySetError::WrongImage { image_size, .. } if image_size == SIZE - 1), "{error}");
    assert!(fs::read(&shorter).unwrap() == fixture.base[..fixture.base.len() - 1]);
    fixture.assert_untouched("wrong image size");
}

#[test]
fn a_crash_during_the_apply_is_finished_by_resume_pending() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    let staged = fixture.target().stage(&set[..]).unwrap();
    assert!(fixture.image_bytes() == fixture.base, "staging does not touch the image");
    let name = staged.path().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("disk.img-") && name.ends_with(".verified"), "{name}");
    assert_eq!(staged_files(&fixture.staging), [name]);

    // The process dies mid-commit: unit 0 reached the image, unit 3 half of it.
    drop(staged);
    let file = fs::OpenOptions::new().write(true).open(&fixture.image).unwrap();
    file.write_all_at(&[0xa0; 512], 0).unwrap();
    file.write_all_at(&[0xa3; 200], 3 * 512).unwrap();
    drop(file);

    // No new set may overtake the pending one.
    let error = fixture.target().stage(&set[..]).unwrap_err();
    assert!(matches!(error, DirtySetError::Pending { .. }), "{error}");

    let summary = fixture.target().resume_pending().unwrap().unwrap();
    assert!(summary.resumed);
    assert_eq!(summary.units, 3);
    assert!(fixture.image_bytes() == expected);
    assert_eq!(staged_files(&fixture.staging), Vec::<String>::new());
    assert_eq!(fixture.target().resume_pending().unwrap(), None, "applied once");
}

#[test]
fn stage_and_commit_are_separate_steps() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    let staged = fixture.target().stage(&set[..]).unwrap();
    assert_eq!(staged.header().unit_count, 3);
    // The lock is held from stage to commit.
    let error = fixture.target().resume_pending().unwrap_err();
    assert!(matches!(error, DirtySetError::LockImage { .. }), "{error}");
    let summary = staged.commit().unwrap();
    assert!(!summary.resumed);
    assert!(fixture.image_bytes() == expected);
    assert_eq!(staged_files(&fixture.staging), Vec::<String>::new());
}

#[test]
fn a_staged_set_damaged_on_disk_is_never_written() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&DIRTY);
    // In the data of the last record, so that a commit writing as it verifies
    // would have written the first two units before finding it.
    let last_record = (set.len() - 44 - 50) as u64;

    // Damaged between stage and commit: refused, removed, the image unchanged.
    let staged = fixture.target().stage(&set[..]).unwrap();
    damage(staged.path(), last_record);
    let error = staged.commit().unwrap_err();
    assert!(matches!(error, DirtySetError::CheckStaged { image_state: ImageState::Unchanged, .. }), "{error}");
    fixture.assert_untouched("damaged before commit");

    // Damaged before a resume: refused and kept, as the image may be half written.
    let staged = fixture.target().stage(&set[..]).unwrap();
    let path = staged.path().to_owned();
    drop(staged);
    damage(&path, last_record);
    let error = fixture.target().resume_pending().unwrap_err();
    assert!(matches!(error, DirtySetError::CheckStaged { image_state: ImageState::MaybePartlyUpdated, .. }), "{error}");
    assert!(error.to_string().contains("must not start"), "{error}");
    assert!(fixture.image_bytes() == fixture.base);
    assert!(path.exists());
}

fn damage(path: &Path, at: u64) {
    let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
}

/// Gives `bytes` up to `stop_at`, then records the staged files and fails as
/// a dropped connection does.
struct BrokenLink<'a> {
    bytes: &'a [u8],
    at: usize,
    stop_at: usize,
    staging: PathBuf,
    seen: Vec<String>,
}

impl Read for BrokenLink<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.stop_at {
            self.seen = staged_files(&self.staging);
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "link down"));
        }
        let n = buf.len().min(self.stop_at - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_partial_copy_is_removed_on_error_and_after_a_crash() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    let mut link = BrokenLink { bytes: &set, at: 0, stop_at: 700, staging: fixture.staging.clone(), seen: Vec::new() };
    let error = fixture.target().apply(&mut link).unwrap_err();
    assert!(matches!(error, DirtySetError::Incomplete { arrived: 1, expected: Some(3), .. }), "{error}");
    assert_eq!(link.seen.len(), 1);
    assert!(link.seen[0].ends_with(".partial"), "{:?}", link.seen);
    fixture.assert_untouched("broken link");

    // A process that died while receiving leaves its partial copy: it is
    // never applied, and the next call removes it.
    fs::write(fixture.staging.join(&link.seen[0]), &set[..700]).unwrap();
    assert_eq!(fixture.target().resume_pending().unwrap(), None);
    fixture.assert_untouched("stale partial copy");
    fs::write(fixture.staging.join(&link.seen[0]), &set[..700]).unwrap();
    fixture.target().apply(&set[..]).unwrap();
    assert!(fixture.image_bytes() == expected);
    assert_eq!(staged_files(&fixture.staging), Vec::<String>::new());
}

#[test]
fn images_sharing_a_staging_directory_keep_their_sets_apart() {
    let fixture = Fixture::new();
    let (set, expected) = fixture.export_dirty_set(&DIRTY);
    let other_dir = fixture.dir.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let other = other_dir.join("disk.img"); // same file name, same size
    fs::write(&other, &fixture.base).unwrap();
    let other_target = ApplyTarget::new(&other, UNIT, &fixture.staging);

    drop(fixture.target().stage(&set[..]).unwrap());
    drop(other_target.stage(&set[..]).unwrap());
    assert_eq!(staged_files(&fixture.staging).len(), 2);

    assert!(fixture.target().resume_pending().unwrap().is_some());
    assert!(fixture.image_bytes() == expected);
    assert!(fs::read(&other).unwrap() == fixture.base, "the other image's set is still pending");
    assert!(other_target.resume_pending().unwrap().is_some());
    assert!(fs::read(&other).unwrap() == expected);
    assert_eq!(staged_files(&fixture.staging), Vec::<String>::new());
}

#[test]
fn a_missing_image_is_an_error_naming_it() {
    let fixture = Fixture::new();
    let (set, _) = fixture.export_dirty_set(&DIRTY);
    let missing = fixture.dir.path().join("missing.img");
    let error = ApplyTarget::new(&missing, UNIT, &fixture.staging).apply(&set[..]).unwrap_err();
    assert!(matches!(error, DirtySetError::OpenImage { .. }), "{error}");
    assert!(error.to_string().contains("missing.img"), "{error}");
}
