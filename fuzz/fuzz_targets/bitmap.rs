//! Writes a bitmap file and its flushed copy (`<file>.flushed`) from the
//! input, in a directory on tmpfs (see `dir`), and opens them with
//! `PersistentBitmap::open`, as memtap and cownetdisk open their slice
//! stores after a restart, a crash or a reboot. The geometry asked for is
//! the one the live file's header claims (so the fuzzer can get past the
//! geometry checks); bit 0 of the first byte says whether the boot id is
//! the header's (a process crash) or another (a reboot, which reads the
//! flushed copy); bit 1 whether the copy exists. Input: flags byte, live
//! file length (u16 LE), live file, copy. Must hold: no panic, nothing read
//! or mapped past what the header's checked count allows; an opened bitmap
//! is consistent (its count of ones, its first one); set one bit, closed
//! and opened again on the same boot it has the same bits, recovered as a
//! clean shutdown.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slice_store::{BootId, PersistentBitmap, Recovery};

/// A directory of this process's own, made once: in `$JETTISON_FUZZ_DIR`
/// (which `scripts/fuzz` makes on tmpfs and removes), else in /dev/shm.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = std::env::var_os("JETTISON_FUZZ_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
        let dir = parent.join(format!("jettison-fuzz-bitmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the bitmap files");
        dir
    })
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N).map(|b| b.try_into().expect("N bytes"))
}

/// The set bits of `bitmap`, in order.
fn ones(bitmap: &PersistentBitmap) -> Vec<u64> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(unit) = bitmap.next_one(from) {
        assert!(unit < bitmap.unit_count() && bitmap.get(unit));
        found.push(unit);
        from = unit + 1;
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let [flags, len_lo, len_hi, rest @ ..] = data else { return };
    let live_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len());
    let (live, copy) = rest.split_at(live_len);
    let unit_size = field::<4>(live, 12).map_or(4096, u32::from_le_bytes);
    let unit_count = field::<8>(live, 16).map_or(8, u64::from_le_bytes);
    let header_boot = field::<16>(live, 24).unwrap_or([0; 16]);
    let boot_id = BootId::from_bytes(if flags & 1 == 1 { header_boot } else { [0x77; 16] });

    let path = dir().join("fuzz.bitmap");
    let copy_path = dir().join("fuzz.bitmap.flushed");
    std::fs::write(&path, live).expect("a file on tmpfs");
    if flags & 2 == 2 {
        std::fs::write(&copy_path, copy).expect("a file on tmpfs");
    } else {
        let _ = std::fs::remove_file(&copy_path);
    }

    let Ok(mut bitmap) = PersistentBitmap::open(&path, unit_size, unit_count, boot_id) else { return };
    assert_eq!((bitmap.unit_size(), bitmap.unit_count()), (unit_size, unit_count));
    let mut set = ones(&bitmap);
    assert_eq!(set.len() as u64, bitmap.count_ones());
    if unit_count > 0 {
        let unit = u64::from(flags >> 2) % unit_count;
        if bitmap.set(unit).expect("a unit inside the bitmap") {
            set.push(unit);
            set.sort_unstable();
        }
    }
    assert!(bitmap.set(unit_count).is_err(), "a unit past the end was set");
    bitmap.close().expect("closing on tmpfs");

    let again = PersistentBitmap::open(&path, unit_size, unit_count, boot_id).expect("a bitmap just closed opens");
    assert_eq!(again.recovery(), Recovery::CleanShutdown);
    assert_eq!(ones(&again), set);
});
