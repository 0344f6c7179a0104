//! The memory path end to end with a real guest: a TCG guest counts on its
//! serial console, is stopped and its device state saved with
//! `x-ignore-shared`; a second QEMU resumes it with its RAM being memtap's
//! FUSE file, every page it touches fetched on demand from memserv over the
//! wire. The guest must carry on counting, and memtap must have fetched far
//! less than the guest's RAM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use memtap::{Mount, RamFileConfig};
use migration_formats::zero_map;
use qemu_driver::{resume, save_device_state, VmSpec};
use tests::TestKeys;
use tests::{fuse_available, guest, skip, DesktopServer, BOOT_TIMEOUT, COUNT_TIMEOUT};

const RAM_MIB: u64 = 256;
/// Non-zero data the guest holds but does not touch while it counts: it
/// must stay on the desktop.
const FILL_MIB: u64 = 64;

#[test]
fn guest_resumed_on_memtap_keeps_running_and_fetches_little() {
    let guest = match guest() {
        Ok(g) => g,
        Err(why) => return skip(why),
    };
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let desktop_ram = dir.path().join("desktop-vm1.ram");
    let state = dir.path().join("vm1.state");

    // On the desktop: boot, fill, count, stop and save the descriptor.
    let count_at_stop = {
        let mut desktop = VmSpec::new(&guest, &desktop_ram, dir.path().join("desktop-run"))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.fill={FILL_MIB}"))
            .spawn()
            .unwrap();
        desktop.wait_for_line("JTREADY", BOOT_TIMEOUT).unwrap();
        desktop.wait_for_count_above(3, COUNT_TIMEOUT).unwrap();
        let mut qmp = desktop.connect_qmp().unwrap();
        let bytes = save_device_state(&mut qmp, &state).unwrap();
        eprintln!("descriptor (device state): {bytes} bytes");
        *desktop.serial().counts().unwrap().last().unwrap()
    };
    let before = std::fs::read(&desktop_ram).unwrap();
    let zeros = zero_map::scan_file(&desktop_ram, memtap::PAGE_SIZE as u32).unwrap();
    let zero_pages: u64 = zeros.iter().map(|r| r.end - r.start).sum();
    eprintln!("zero map: {zero_pages} of {} pages are zero on the desktop", (RAM_MIB << 20) / memtap::PAGE_SIZE);

    // On the server: memserv serves the desktop's file, memtap exposes it.
    let key = TestKeys::new();
    let memserv = DesktopServer::memserv(&desktop_ram, "vm1", &key, "127.0.0.1:0");
    let mnt = dir.path().join("memtap");
    std::fs::create_dir(&mnt).unwrap();
    let mut config = RamFileConfig::new("vm1", dir.path().join("slices"), memserv.remote("vm1", &key));
    config.zero_pages = zeros;
    let mount = Mount::start(&mnt, vec![config]).unwrap();
    {
        let spec = VmSpec::new(&guest, mnt.join("vm1.ram"), dir.path().join("server-run"))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.fill={FILL_MIB}"));
        let (mut server, qmp) = resume(spec, &state).unwrap();
        let reached = server.wait_for_count_above(count_at_stop + 5, COUNT_TIMEOUT).unwrap();
        let counts = server.serial().counts().unwrap();
        assert!(
            counts.first().is_some_and(|&c| c > count_at_stop),
            "the guest restarted counting ({counts:?}) instead of going on from {count_at_stop}"
        );
        eprintln!("counter went on from {count_at_stop} to {reached} on memtap");
        let stats = mount.vms()[0].stats();
        eprintln!("{}", stats.summary());
        let ram = RAM_MIB << 20;
        eprintln!(
            "fetched {:.1} MiB of page data ({} pages incl. zero markers) for a {RAM_MIB} MiB guest: {:.1}% of its RAM",
            stats.bytes_fetched as f64 / 1048576.0,
            stats.pages_fetched,
            100.0 * stats.bytes_fetched as f64 / ram as f64
        );
        assert!(stats.faults > 0, "the guest never faulted on memtap: {stats:?}");
        assert!(stats.bytes_fetched < ram / 2, "fetched {} bytes, more than half the RAM", stats.bytes_fetched);
        drop(qmp);
        // `server` (QEMU) is killed here, before memtap unmounts.
    }
    mount.unmount().unwrap();
    drop(memserv);
    assert!(std::fs::read(&desktop_ram).unwrap() == before, "the desktop's RAM file changed");
}
