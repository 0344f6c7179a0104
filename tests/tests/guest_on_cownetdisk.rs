//! A real guest whose virtio-blk disk is cownetdisk: QEMU on the "server"
//! reaches the desktop's ext4 image only through cownetdisk and diskserv.
//! The guest mounts the file system, reads a file that exists only in the
//! desktop's image, writes a new one and syncs. Then the writes are handed
//! back: the dirty set is exported from cownetdisk's slices and applied to
//! the desktop's image, where the new file now is.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::io::{BufReader, Cursor};

use migration_formats::dirty_set::ApplyTarget;
use qemu_driver::VmSpec;
use slice_store::export_dirty_set;
use slice_store::SliceStore;
use tests::TestKeys;
use tests::{ext4_image, file_in_image, guest, skip, Cownetdisk, DesktopServer, BOOT_TIMEOUT, COUNT_TIMEOUT};

const DESKTOP_TEXT: &str = "written on the desktop before consolidation";
const DISK_MIB: u64 = 32;
const BLOCK: u32 = 4096;

#[test]
fn guest_mounts_reads_and_writes_a_disk_served_by_cownetdisk() {
    let guest = match guest() {
        Ok(g) => g,
        Err(why) => return skip(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let image = match ext4_image(dir.path(), &[("desktop-only.txt", DESKTOP_TEXT)], DISK_MIB) {
        Ok(i) => i,
        Err(why) => return skip(why),
    };
    let before = std::fs::read(&image).unwrap();
    let key = TestKeys::new();
    let diskserv = DesktopServer::diskserv(&image, "vm1", &key, "127.0.0.1:0", BLOCK);
    let state = dir.path().join("state");
    let nbd = Cownetdisk::start(&state, &dir.path().join("vm1.nbd"), &diskserv, "vm1", &key);

    {
        let drive = format!("file=nbd+unix:///vm1?socket={},format=raw,if=virtio,cache=none", nbd.socket().display());
        let mut vm = VmSpec::new(&guest, dir.path().join("ram"), dir.path().join("run"))
            .memory_mib(256)
            .kernel_args("jt.disk=server")
            .extra_args(["-drive", drive.as_str()])
            .spawn()
            .unwrap();
        let read = vm.wait_for_line("JTDISKREAD", BOOT_TIMEOUT).unwrap();
        assert!(read.contains(DESKTOP_TEXT), "the guest read {read:?} from the desktop-only file");
        vm.wait_for_line("JTDISKWROTE server", COUNT_TIMEOUT).unwrap();
        vm.wait_for_count_above(2, COUNT_TIMEOUT).unwrap();
        // QEMU is killed here; the guest synced, so its writes reached cownetdisk.
    }
    let stats = nbd.stats();
    eprintln!("{}", stats.summary());
    let disk_bytes = DISK_MIB << 20;
    assert!(stats.blocks_fetched > 0, "the guest read nothing through cownetdisk: {stats:?}");
    assert!(stats.dirty_blocks > 0, "the guest's writes did not reach the dirty slice: {stats:?}");
    assert!(
        stats.blocks_fetched * u64::from(BLOCK) < disk_bytes,
        "fetched the whole disk: {} blocks",
        stats.blocks_fetched
    );
    drop(nbd); // stops, flushes and releases the slices
    drop(diskserv);
    assert!(std::fs::read(&image).unwrap() == before, "the desktop's image changed while the VM was away");

    // Hand the writes back.
    let store = SliceStore::open(state.join("vm1"), BLOCK, disk_bytes).unwrap();
    let mut set = Vec::new();
    let exported = export_dirty_set(&store, &mut set).unwrap();
    drop(store);
    eprintln!("dirty set: {} blocks, {} bytes on the wire for a {DISK_MIB} MiB disk", exported.units, set.len());
    let applied =
        ApplyTarget::new(&image, BLOCK, dir.path().join("staging")).apply(BufReader::new(Cursor::new(set))).unwrap();
    assert_eq!(applied.units, exported.units);
    assert_eq!(file_in_image(&image, "/written-by-server.txt").trim(), "written by server");
    assert_eq!(file_in_image(&image, "/desktop-only.txt").trim(), DESKTOP_TEXT);
}
