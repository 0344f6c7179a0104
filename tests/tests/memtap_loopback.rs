//! memserv and memtap on loopback with a real FUSE mount: a process maps
//! the VM's RAM file shared, touches pages, and sees the desktop's bytes;
//! pages it writes land in the dirty slice; the desktop's file is unchanged;
//! a memserv that vanishes makes memtap wait and retry, not fail; holes
//! punched in the RAM file are discarded pages, never fetched, that go home
//! as holes.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapOptions;
use memtap::{Mount, RamFileConfig};
use slice_store::{SliceStore, UnitState};
use tests::TestKeys;
use tests::{fuse_available, skip, DesktopServer};
use wire::WakeHook;

const PAGES: u64 = 4096; // 16 MiB
const PAGE: usize = 4096;

/// The desktop's RAM file: page p holds bytes derived from p, except every
/// 5th page is zero and pages 100..200 are a hole.
fn desktop_ram(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; PAGES as usize * PAGE];
    for p in 0..PAGES as usize {
        if p % 5 == 0 || (100..200).contains(&p) {
            continue;
        }
        for (i, b) in bytes[p * PAGE..(p + 1) * PAGE].iter_mut().enumerate() {
            *b = ((p * 13 + i) % 253) as u8 + 1;
        }
    }
    let path = dir.join("desktop-vm1.ram");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    use std::os::unix::fs::FileExt;
    for p in 0..PAGES as usize {
        if !(100..200).contains(&p) {
            f.write_all_at(&bytes[p * PAGE..(p + 1) * PAGE], (p * PAGE) as u64).unwrap();
        }
    }
    (path, bytes)
}

/// Counts wake-ups.
#[derive(Debug, Default)]
struct CountingWake(AtomicU64);
impl WakeHook for CountingWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn vm_config(dir: &Path, server: &DesktopServer, key: &TestKeys) -> RamFileConfig {
    let mut config = RamFileConfig::new("vm1", dir.join("slices"), server.remote("vm1", key));
    // The descriptor's zero map: the hole (pages 100..200).
    config.zero_pages = std::iter::once(100..200).collect();
    config
}

/// A desktop RAM file served by memserv and mounted through memtap.
struct Fixture {
    dir: tempfile::TempDir,
    ram: std::path::PathBuf,
    bytes: Vec<u8>,
    key: TestKeys,
    server: DesktopServer,
    mnt: std::path::PathBuf,
    wake: Arc<CountingWake>,
    mount: Mount,
}

impl Fixture {
    fn start() -> Fixture {
        Fixture::start_with(|_| {})
    }

    /// As [`Fixture::start`], with `adjust` applied to the VM's configuration.
    fn start_with(adjust: impl FnOnce(&mut RamFileConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (ram, bytes) = desktop_ram(dir.path());
        let key = TestKeys::new();
        let server = DesktopServer::memserv(&ram, "vm1", &key, "127.0.0.1:0");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let wake = Arc::new(CountingWake::default());
        let mut config = vm_config(dir.path(), &server, &key);
        config.wake = wake.clone();
        adjust(&mut config);
        let mount = Mount::start(&mnt, vec![config]).unwrap();
        Fixture { dir, ram, bytes, key, server, mnt, wake, mount }
    }
}

fn stats(mnt: &Path) -> memtap::RamStats {
    serde_json::from_slice(&std::fs::read(mnt.join("vm1.stats")).unwrap()).unwrap()
}

#[test]
fn mapped_pages_match_the_desktop_and_writes_become_dirty() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let Fixture { dir, ram, bytes, server, mnt, wake, mount, .. } = Fixture::start();
    let before = std::fs::read(&ram).unwrap();

    let file = OpenOptions::new().read(true).write(true).open(mnt.join("vm1.ram")).unwrap();
    assert_eq!(file.metadata().unwrap().len(), PAGES * PAGE as u64);
    // SAFETY: the file is ours for the test; nobody truncates it.
    let mut map = unsafe { MmapOptions::new().map_mut(&file) }.unwrap();

    // A stats reader that needs several reads sees one snapshot, taken at
    // open, even while the counters change between its reads.
    let mut stats_file = std::fs::File::open(mnt.join("vm1.stats")).unwrap();
    let mut head = [0u8; 16];
    std::io::Read::read_exact(&mut stats_file, &mut head).unwrap();

    // Touch every 7th page first: each is a fault with its window prefetched.
    for p in (0..PAGES as usize).step_by(7) {
        assert_eq!(map[p * PAGE..(p + 1) * PAGE], bytes[p * PAGE..(p + 1) * PAGE], "page {p}");
    }
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stats_file, &mut rest).unwrap();
    let at_open: memtap::RamStats = serde_json::from_slice(&[&head[..], &rest[..]].concat()).unwrap();
    assert_eq!((at_open.faults, at_open.remote_fetches), (0, 0), "the snapshot is the one taken at open");
    drop(stats_file);
    let s = stats(&mnt);
    assert!(s.remote_fetches > 0 && s.pages_fetched > 0, "{s:?}");
    assert!(s.prefetch_hits > 0, "touching every 7th page should hit the 20-page window: {s:?}");
    // Then every byte.
    assert!(map[..] == bytes[..], "mapped RAM differs from the desktop's");
    let s = stats(&mnt);
    eprintln!("{}", s.summary());
    assert_eq!(s.zero_pages_served, 100, "the hole comes from the zero map: {s:?}");
    assert!(s.pages_fetched <= PAGES - 100, "a page in the zero map was fetched: {s:?}");
    assert!(wake.0.load(Ordering::SeqCst) >= s.remote_fetches, "every fetch asks the wake hook first");

    // Write some pages whole, one partially; flush them to memtap.
    let written: Vec<usize> = vec![3, 150, 1000, 4095];
    for &p in &written {
        map[p * PAGE..(p + 1) * PAGE].fill(0xEE);
    }
    map[2000 * PAGE + 10] = 0x42;
    map.flush().unwrap();
    file.sync_all().unwrap();
    let s = stats(&mnt);
    assert_eq!(s.dirty_pages, written.len() as u64 + 1, "{s:?}");
    drop(map);
    drop(file);
    mount.unmount().unwrap();
    drop(server);

    // The dirty slice holds exactly what the process wrote.
    let store = SliceStore::open(dir.path().join("slices"), PAGE as u32, PAGES * PAGE as u64).unwrap();
    let mut page = vec![0u8; PAGE];
    for &p in &written {
        assert_eq!(store.read_unit(p as u64, &mut page).unwrap(), UnitState::Dirty);
        assert!(page.iter().all(|&b| b == 0xEE), "page {p}");
    }
    assert_eq!(store.read_unit(2000, &mut page).unwrap(), UnitState::Dirty);
    let mut want = bytes[2000 * PAGE..2001 * PAGE].to_vec();
    want[10] = 0x42;
    assert_eq!(page, want);
    assert_eq!(std::fs::read(&ram).unwrap(), before, "the desktop's RAM file changed");
}

#[test]
fn a_vanished_memserv_makes_the_reader_wait_not_fail() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let Fixture { dir: _dir, ram, bytes, key, server, mnt, wake, mount } = Fixture::start();
    let path = mnt.join("vm1.ram");
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: read-only view of our own test file.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    assert_eq!(map[PAGE..2 * PAGE], bytes[PAGE..2 * PAGE]);

    // The desktop goes away.
    let addr = server.addr.clone();
    drop(server);
    let wakes_before = wake.0.load(Ordering::SeqCst);
    let reader = std::thread::spawn(move || {
        let p = 3000;
        let got = map[p * PAGE..(p + 1) * PAGE].to_vec();
        (got, map)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!reader.is_finished(), "the read should wait for the desktop");
    // It comes back on the same address.
    let _server = DesktopServer::memserv(&ram, "vm1", &key, &addr);
    let (got, map) = reader.join().unwrap();
    assert_eq!(got, bytes[3000 * PAGE..3001 * PAGE]);
    drop(map);
    drop(file);
    assert!(wake.0.load(Ordering::SeqCst) > wakes_before + 1, "retries go through the wake hook");
    mount.unmount().unwrap();
}

#[test]
fn a_zero_map_for_another_ram_size_is_refused_naming_the_vm() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let (ram, _) = desktop_ram(dir.path());
    let key = TestKeys::new();
    let server = DesktopServer::memserv(&ram, "vm1", &key, "127.0.0.1:0");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // A map made for a quarter of this RAM: its zero pages are another file's.
    let mut config = vm_config(dir.path(), &server, &key);
    config.zero_map_pages = Some(PAGES / 4);
    let error = Mount::start(&mnt, vec![config]).unwrap_err();
    let text = wire::chain(&error);
    assert!(text.contains("zero map of VM vm1") && text.contains("another RAM file"), "{text}");
    // Ranges past the end are refused too, without a page count.
    let mut config = vm_config(dir.path(), &server, &key);
    config.zero_pages = std::iter::once(PAGES - 1..PAGES + 1).collect();
    assert!(wire::chain(&Mount::start(&mnt, vec![config]).unwrap_err()).contains("zero map"));
    // The right size mounts.
    let mut config = vm_config(dir.path(), &server, &key);
    config.zero_map_pages = Some(PAGES);
    Mount::start(&mnt, vec![config]).unwrap().unmount().unwrap();
}

#[test]
fn an_unmount_ends_even_while_another_mount_namespace_holds_the_mount() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let Fixture { dir: _dir, bytes, mnt, mount, server: _server, .. } = Fixture::start();
    // A process that unshares its mount namespace now gets its own copy of
    // the memtap mount, which keeps the FUSE connection open after ours is
    // unmounted (as `ip netns exec` does to a daemon started after us).
    let mut holder = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "600"])
        .spawn()
        .expect("unshare runs (util-linux)");
    let ns = format!("/proc/{}/ns/mnt", holder.id());
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(&ns).map_or(true, |theirs| theirs == ours) {
        assert!(std::time::Instant::now() < deadline, "unshare did not make a mount namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(mnt.join("vm1.ram")).unwrap()[PAGE..2 * PAGE], bytes[PAGE..2 * PAGE]);
    // Bounded only so that a hang fails instead of stalling the suite.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(mount.unmount().map_err(|e| wire::chain(&e))));
    let unmounted = finished.recv_timeout(Duration::from_secs(120));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(unmounted, Ok(Ok(())), "memtap's unmount must end while another namespace holds the mount");
    assert!(!std::fs::read_to_string("/proc/mounts").unwrap().contains(mnt.to_str().unwrap()));
}

/// Notes the `CLOCK_BOOTTIME` of each wake-up.
#[derive(Debug, Default)]
struct TimedWake(std::sync::Mutex<Vec<u64>>);
impl WakeHook for TimedWake {
    fn wake(&self) {
        self.0.lock().unwrap().push(fetch_trace::boottime_ns());
    }
}

#[test]
fn every_fetch_is_traced_with_its_time_taken_before_the_wake_hook() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let (ram, bytes) = desktop_ram(dir.path());
    let key = TestKeys::new();
    let server = DesktopServer::memserv(&ram, "vm1", &key, "127.0.0.1:0");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let wake = Arc::new(TimedWake::default());
    let trace_path = dir.path().join("fetch-trace.csv");
    let trace = Arc::new(fetch_trace::TraceWriter::open(&trace_path).unwrap());
    let mut config = vm_config(dir.path(), &server, &key);
    config.wake = wake.clone();
    config.trace = Some(Arc::clone(&trace));
    let mount = Mount::start(&mnt, vec![config]).unwrap();

    let file = OpenOptions::new().read(true).open(mnt.join("vm1.ram")).unwrap();
    // SAFETY: the file is ours for the test; nobody truncates it.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    for p in (0..1000).step_by(7) {
        assert_eq!(map[p * PAGE..(p + 1) * PAGE], bytes[p * PAGE..(p + 1) * PAGE], "page {p}");
    }
    let s = stats(&mnt);
    drop(map);
    drop(file);
    mount.unmount().unwrap();
    let totals =
        fetch_trace::Totals { memory_requests: s.remote_fetches, memory_units: s.pages_fetched, ..Default::default() };
    trace.close(totals).unwrap();

    let read = fetch_trace::read(&trace_path).unwrap();
    let memory: Vec<_> = read.answered(fetch_trace::Device::Memory).collect();
    assert!(!memory.is_empty());
    assert_eq!(memory.iter().map(|f| f.requests).sum::<u64>(), s.remote_fetches, "{s:?}");
    assert_eq!(memory.iter().map(|f| f.units).sum::<u64>(), s.pages_fetched, "{s:?}");
    assert!(memory.iter().all(|f| f.faulting >= 1 && f.units >= f.faulting), "{memory:?}");
    let wakes = wake.0.lock().unwrap().clone();
    for fetch in &memory {
        let answered = fetch.answered_ns.unwrap();
        assert!(
            wakes.iter().any(|&at| at >= fetch.asked_ns && at <= answered),
            "no wake-up between the request's time and its answer: {fetch:?}"
        );
    }
}

/// A pushed working set is on the server before the guest touches it: the
/// push asks memserv once (the desktop is awake for it), and reading the
/// pushed pages afterwards asks memserv for none of them and wakes nobody.
#[test]
fn pushed_pages_are_served_without_asking_the_desktop() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let f = Fixture::start();
    let ram = Arc::clone(&f.mount.vms()[0]);
    // Pages 300..400, a page of the zero map's hole, and one past the end.
    let pages: Vec<u64> = (300..400).chain([150, PAGES + 10]).collect();
    assert_eq!(ram.push(&pages).unwrap(), 100, "absent pages only");
    assert_eq!(ram.push(&pages).unwrap(), 0, "what is local is not pushed again");
    let (fetches, wakes) = (stats(&f.mnt).remote_fetches, f.wake.0.load(Ordering::SeqCst));
    assert!(fetches >= 1 && wakes >= 1, "the push asked the desktop");
    let pushed = stats(&f.mnt);
    assert_eq!(pushed.pages_pushed, 100, "the push's pages are counted as pushed");
    assert_eq!(pushed.pushed_untouched, 100, "no pushed page was touched yet");

    let file = OpenOptions::new().read(true).open(f.mnt.join("vm1.ram")).unwrap();
    // SAFETY: the file is ours for the test; nobody truncates it.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    for p in 300..400 {
        assert_eq!(map[p * PAGE..(p + 1) * PAGE], f.bytes[p * PAGE..(p + 1) * PAGE], "page {p}");
    }
    let after = stats(&f.mnt);
    assert_eq!(after.remote_fetches, fetches, "a pushed page was fetched again: {after:?}");
    assert_eq!(f.wake.0.load(Ordering::SeqCst), wakes, "a pushed page woke the desktop");
    assert_eq!(after.pushed_untouched, 0, "the guest read every pushed page, which now counts as its memory");
    drop(map);
    drop(file);
    f.mount.unmount().unwrap();
}

#[test]
fn a_page_evicted_from_the_prefetch_cache_is_never_fetched_again() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    // A cache of two pages: nearly every neighbour a fault brings along is
    // evicted at once.
    let fixture = Fixture::start_with(|config| config.cache_bytes = 2 * PAGE);
    let (bytes, mnt) = (&fixture.bytes, &fixture.mnt);
    let file = std::fs::File::open(mnt.join("vm1.ram")).unwrap();
    // SAFETY: the file is ours for the test; nobody truncates it.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    assert_eq!(map[500 * PAGE..501 * PAGE], bytes[500 * PAGE..501 * PAGE]);
    let after_one = stats(mnt);
    assert_eq!(after_one.remote_fetches, 1, "{after_one:?}");
    // A neighbour the cache could not keep: on the server all the same.
    assert_eq!(map[495 * PAGE..496 * PAGE], bytes[495 * PAGE..496 * PAGE]);
    let s = stats(mnt);
    assert_eq!(s.remote_fetches, 1, "page 495 came with page 500's window and was fetched again: {s:?}");
    // Every page, each fetched once: all but the zero map's hole.
    assert!(map[..] == bytes[..], "mapped RAM differs from the desktop's");
    let s = stats(mnt);
    assert_eq!(s.pages_fetched, PAGES - 100, "a page was fetched twice (or a zero page fetched): {s:?}");
}

#[test]
fn prefetched_pages_the_guest_leaves_alone_move_to_the_fetched_slice() {
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let fixture = Fixture::start();
    let (bytes, mnt) = (&fixture.bytes, &fixture.mnt);
    let file = std::fs::File::open(mnt.join("vm1.ram")).unwrap();
    // SAFETY: the file is ours for the test; nobody truncates it.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    assert_eq!(map[500 * PAGE..501 * PAGE], bytes[500 * PAGE..501 * PAGE]);
    let before = stats(mnt);
    assert!(before.cached_pages > 0, "page 500's window waits in the cache: {before:?}");
    let vm = &fixture.mount.vms()[0];
    assert_eq!(vm.age_prefetched(Duration::from_secs(3600)).unwrap(), 0, "no page is an hour old");
    assert_eq!(vm.age_prefetched(Duration::ZERO).unwrap(), before.cached_pages);
    let after = stats(mnt);
    assert_eq!(after.cached_pages, 0, "{after:?}");
    // A neighbour is in the fetched slice now: read from there, not fetched
    // again, and not a hit of the (empty) cache.
    assert_eq!(vm.slices().state(495).unwrap(), UnitState::Fetched);
    assert_eq!(map[495 * PAGE..496 * PAGE], bytes[495 * PAGE..496 * PAGE]);
    let s = stats(mnt);
    assert_eq!((s.remote_fetches, s.prefetch_hits), (before.remote_fetches, before.prefetch_hits), "{s:?}");
}

/// Punches a hole of `len` bytes at `offset` in `file`, as QEMU does where
/// the guest reported free memory.
fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    let done = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where the next hole (`libc::SEEK_HOLE`) or data (`libc::SEEK_DATA`) of
/// `file` starts, from `offset`.
fn seek(file: &std::fs::File, offset: u64, whence: libc::c_int) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek only reads its integer arguments; the descriptor is open.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    u64::try_from(at).unwrap_or_else(|_| panic!("lseek: {}", std::io::Error::last_os_error()))
}

/// Blocks of 512 bytes a file holds on disk.
fn blocks(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap())
}

/// Free page reporting: QEMU punches holes in the RAM file. The pages read
/// as zeros without asking the desktop, their slice space is given back, a
/// page written again is dirty, and going home the desktop's RAM file gets
/// holes there, not pages of zeros.
#[test]
fn a_punched_hole_reads_as_zeros_without_a_fetch_and_goes_home_as_a_hole() {
    use migration_formats::dirty_set::ApplyTarget;
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    let Fixture { dir, ram, bytes, server, mnt, wake, mount, .. } = Fixture::start();
    let page_bytes = |p: u64| &bytes[p as usize * PAGE..(p as usize + 1) * PAGE];
    let file = OpenOptions::new().read(true).write(true).open(mnt.join("vm1.ram")).unwrap();
    // SAFETY: the file is ours for the test; nobody truncates it.
    let mut map = unsafe { MmapOptions::new().map_mut(&file) }.unwrap();
    // Pages 1000..1010 fetched (their neighbours prefetched), 1005..1009 dirty.
    for p in 1000..1010 {
        assert_eq!(&map[p * PAGE..(p + 1) * PAGE], page_bytes(p as u64), "page {p}");
    }
    map[1005 * PAGE..1009 * PAGE].fill(0xEE);
    map.flush().unwrap();
    file.sync_all().unwrap();
    let slices = dir.path().join("slices");
    let (fetched_blocks, dirty_blocks) = (blocks(&slices.join("fetched.slice")), blocks(&slices.join("dirty.slice")));
    assert!(fetched_blocks >= 10 * 8 && dirty_blocks >= 4 * 8, "{fetched_blocks} and {dirty_blocks} blocks");
    let before = stats(&mnt);
    assert_eq!((before.resident_pages, before.dirty_pages), (10, 4), "{before:?}");
    let wakes = wake.0.load(Ordering::SeqCst);

    // Fetched, dirty, prefetched and absent pages: 1000..1064.
    punch_hole(&file, 1000 * PAGE as u64, 64 * PAGE as u64).unwrap();
    assert!(map[1000 * PAGE..1064 * PAGE].iter().all(|&b| b == 0), "a discarded page is not zeros");
    let after = stats(&mnt);
    assert_eq!(after.remote_fetches, before.remote_fetches, "a discarded page was fetched: {after:?}");
    assert_eq!(wake.0.load(Ordering::SeqCst), wakes, "a discarded page woke the desktop");
    assert_eq!((after.pages_discarded, after.discarded_pages), (64, 64), "{after:?}");
    assert_eq!((after.resident_pages, after.dirty_pages), (0, 0), "{after:?}");
    assert_eq!(blocks(&slices.join("fetched.slice")), 0, "the fetched slice kept discarded pages");
    assert_eq!(blocks(&slices.join("dirty.slice")), 0, "the dirty slice kept discarded pages");
    assert!(
        punch_hole(&file, 0, PAGE as u64 + 1).is_ok(),
        "an unaligned hole zeroes the partial page's bytes as a write would"
    );
    assert!(map[..PAGE + 1].iter().all(|&b| b == 0) && map[PAGE + 1..2 * PAGE] == page_bytes(1)[1..]);
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    let zero_range =
        unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), libc::FALLOC_FL_ZERO_RANGE, 0, 4096) };
    assert_eq!((zero_range, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EOPNOTSUPP)));

    // Written again after the discard: dirty, not discarded.
    map[1040 * PAGE..1041 * PAGE].fill(0x77);
    map.flush().unwrap();
    file.sync_all().unwrap();
    let s = stats(&mnt);
    assert_eq!((s.discarded_pages, s.dirty_pages), (64, 2), "pages 0 and 1000..1064 but 1040; 1 and 1040: {s:?}");
    drop(map);
    drop(file);
    mount.unmount().unwrap();
    drop(server);

    // Going home: the dirty set applied to the desktop's RAM file.
    let store = SliceStore::open(&slices, PAGE as u32, PAGES * PAGE as u64).unwrap();
    let mut set = Vec::new();
    let sent = slice_store::export_dirty_set(&store, &mut set).unwrap();
    // Dirty: pages 1 and 1040. Discarded: page 0, 1000..1040 and 1041..1064.
    assert_eq!((sent.units, sent.discarded), (66, 64), "{sent:?}");
    let desktop_blocks = blocks(&ram);
    let applied = ApplyTarget::new(&ram, PAGE as u32, dir.path().join("staging")).apply(&set[..]).unwrap();
    assert_eq!(applied.discarded, 64, "{applied:?}");
    let home = std::fs::File::open(&ram).unwrap();
    let at = |p: u64| p * PAGE as u64;
    assert_eq!(seek(&home, at(1000), libc::SEEK_HOLE), at(1000), "page 1000 is not a hole");
    assert_eq!(seek(&home, at(1000), libc::SEEK_DATA), at(1040), "the hole ends at the page written again");
    assert_eq!(seek(&home, at(1040), libc::SEEK_HOLE), at(1041));
    assert_eq!(seek(&home, at(1041), libc::SEEK_DATA), at(1064));
    assert_eq!(seek(&home, 0, libc::SEEK_HOLE), 0, "page 0, discarded whole, is a hole");
    assert!(blocks(&ram) < desktop_blocks, "the desktop's RAM file lost no blocks");
    let home_bytes = std::fs::read(&ram).unwrap();
    assert!(home_bytes[at(1000) as usize..at(1040) as usize].iter().all(|&b| b == 0));
    assert!(home_bytes[at(1040) as usize..at(1041) as usize].iter().all(|&b| b == 0x77));
    assert_eq!(home_bytes[PAGE + 1..2 * PAGE], page_bytes(1)[1..], "the rest of the partial page");
    assert!(home_bytes[PAGE..PAGE + 1] == [0]);
}

/// Only root reaches a VM's RAM file: another user cannot open it, even
/// with every directory above it open to all. memtap serves whatever the
/// kernel sends (QEMU's `fallocate` after it dropped to its own user, on
/// the file it opened as root), so this is the kernel's check, kept by
/// mounting without `allow_other`.
#[test]
fn another_user_cannot_open_the_ram_file() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if let Err(why) = fuse_available() {
        return skip(why);
    }
    // memserv must live: a reader waits for it while it is gone.
    let Fixture { dir, mnt, mount, server: _server, .. } = Fixture::start();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ram = mnt.join("vm1.ram");
    let nobody = std::process::Command::new("head").arg("-c1").arg(&ram).uid(65534).gid(65534).output().unwrap();
    let said = String::from_utf8_lossy(&nobody.stderr);
    assert!(!nobody.status.success() && said.contains("Permission denied"), "uid 65534 read {}: {said}", ram.display());
    let listed = std::process::Command::new("ls").arg(&mnt).uid(65534).gid(65534).output().unwrap();
    assert!(!listed.status.success(), "uid 65534 listed the mount: {}", String::from_utf8_lossy(&listed.stdout));
    // The same command as root reads it.
    let root = std::process::Command::new("head").arg("-c1").arg(&ram).output().unwrap();
    assert!(root.status.success() && root.stdout.len() == 1, "{root:?}");
    mount.unmount().unwrap();
}
