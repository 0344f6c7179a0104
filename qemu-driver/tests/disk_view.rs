//! A qcow2 image (over a raw backing file) seen as a raw file through
//! qemu-storage-daemon's FUSE export: what diskserv reads from it, what
//! writes through it do to the image, the dirty set's apply on it, the
//! errors that name the image, and that no mount or daemon is ever left.
//!
//! Real `qemu-img`, `qemu-io` and `qemu-storage-daemon`, as root (FUSE
//! mounts); everything lives in a temporary directory, and a fixture
//! unmounts whatever a failing test leaves there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the test failing

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use diskserv::DiskImage;
use image_server::Image;
use migration_formats::dirty_set::{ApplyTarget, DirtySetHeader, DirtySetWriter, TransferId};
use qemu_driver::{virtual_size, DiskFormat, DiskView, QemuError, ViewAccess};

const MIB: u64 = 1 << 20;
/// The guest's disk: 8 MiB, 128 qcow2 clusters of 64 KiB.
const DISK: u64 = 8 * MIB;

/// Writes into the base image: (offset, length, byte).
const BASE_WRITES: &[(u64, u64, u8)] = &[(0, MIB, 0x11), (3 * MIB, 64 * 1024, 0x12), (DISK - 4096, 4096, 0x13)];
/// Writes into the top image, over and beside the base's.
const TOP_WRITES: &[(u64, u64, u8)] = &[(512 * 1024, 128 * 1024, 0x21), (6 * MIB, 4096, 0x22)];
/// Writes through a view, at scattered offsets: in clusters only the base
/// holds, in one the top holds, unaligned, where neither has data, and the
/// disk's last block.
const VIEW_WRITES: &[(u64, u64, u8)] = &[
    (4096, 4096, 0x31),
    (512 * 1024 + 8192, 8192, 0x32),
    (2 * MIB + 1536, 3000, 0x33),
    (7 * MIB + 65536 * 3, 65536 * 2, 0x34),
    (DISK - 4096, 4096, 0x35),
];

/// Says why the test cannot run here (and fails under CI, whose machine
/// must have everything), as the workspace's `tests` crate does.
fn cannot_run() -> Option<String> {
    let reason = if is_root() {
        ["qemu-img", "qemu-io", "qemu-storage-daemon"]
            .into_iter()
            .find(|tool| Command::new(tool).arg("--version").output().is_err())
            .map(|tool| format!("{tool} is not installed (scripts/install-deps installs it)"))
            .or_else(|| (!Path::new("/dev/fuse").exists()).then(|| "no /dev/fuse".to_owned()))
    } else {
        Some("FUSE mounts need root".to_owned())
    }?;
    assert!(std::env::var_os("CI").is_none(), "under CI this test must run: {reason}");
    eprintln!("SKIPPED: {}: {reason}", std::thread::current().name().unwrap_or("a test"));
    Some(reason)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A temporary directory with `base.raw` and `top.qcow2` over it. On drop,
/// anything still mounted under it is unmounted and background processes
/// are killed, so a failing test leaves nothing behind.
struct Fixture {
    dir: tempfile::TempDir,
    background: Vec<Child>,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture { dir: tempfile::tempdir().unwrap(), background: Vec::new() };
        run("qemu-img", &["create", "-q", "-f", "raw"], &[&fixture.base()], &[&DISK.to_string()]);
        for &(offset, len, byte) in BASE_WRITES {
            qemu_io(&fixture.base(), "raw", offset, len, byte);
        }
        run("qemu-img", &["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw"], &[&fixture.top()], &[]);
        for &(offset, len, byte) in TOP_WRITES {
            qemu_io(&fixture.top(), "qcow2", offset, len, byte);
        }
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn base(&self) -> PathBuf {
        self.path("base.raw")
    }

    fn top(&self) -> PathBuf {
        self.path("top.qcow2")
    }

    /// The guest-visible content of `image`, as QEMU converts it.
    fn guest_bytes(&self, image: &Path) -> Vec<u8> {
        let out = self.path("expected.raw");
        run("qemu-img", &["convert", "-O", "raw"], &[image, &out], &[]);
        let bytes = fs::read(&out).unwrap();
        fs::remove_file(&out).unwrap();
        bytes
    }

    /// Starts `program` in the background, killed when the fixture drops.
    fn background(&mut self, program: &str, args: &[&str]) {
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.background.push(child);
    }

    /// Mounts under the fixture's directory.
    fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.dir.path())
    }

    fn assert_no_mounts(&self) {
        assert_eq!(self.mounts(), Vec::<PathBuf>::new(), "a mount was left behind");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = child.kill();
            let _ = child.wait();
        }
        for mount in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }
}

/// Mount points in `/proc/self/mountinfo` under `dir` (no escapes in
/// temporary directory names).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(&dir))
        .collect()
}

/// Runs `program` with `args`, then `paths`, then `tail`; panics with its
/// output if it fails.
fn run(program: &str, args: &[&str], paths: &[&Path], tail: &[&str]) -> String {
    let out = Command::new(program).args(args).args(paths).args(tail).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} {paths:?} {tail:?} failed ({}): {text}", out.status);
    text
}

/// Writes `len` bytes of `byte` at `offset` with qemu-io.
fn qemu_io(image: &Path, format: &str, offset: u64, len: u64, byte: u8) {
    let command = format!("write -P {byte:#04x} {offset} {len}");
    run("qemu-io", &["-f", format, "-c", &command], &[image], &[]);
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[], &[path], &[]).split_whitespace().next().unwrap().to_owned()
}

/// Opens a view and says how long it took to come up.
fn open_timed(image: &Path, format: DiskFormat, mountpoint: &Path, access: ViewAccess) -> DiskView {
    let start = Instant::now();
    let view = DiskView::open(image, format, mountpoint, access).unwrap();
    eprintln!("{format} view ({access:?}) of {} up in {:.1} ms", image.display(), start.elapsed().as_secs_f64() * 1e3);
    view
}

/// `bytes` with each write applied.
fn with_writes(mut bytes: Vec<u8>, writes: &[(u64, u64, u8)]) -> Vec<u8> {
    for &(offset, len, byte) in writes {
        bytes[offset as usize..(offset + len) as usize].fill(byte);
    }
    bytes
}

#[test]
fn read_only_view_shows_the_guest_visible_bytes_and_refuses_writes() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let expected = fixture.guest_bytes(&fixture.top());
    assert_eq!(expected, with_writes(with_writes(vec![0; DISK as usize], BASE_WRITES), TOP_WRITES));
    let (base_sum, top_sum) = (sha256(&fixture.base()), sha256(&fixture.top()));
    assert_eq!(virtual_size(&fixture.top(), DiskFormat::Qcow2).unwrap(), DISK);
    assert!(fs::metadata(fixture.top()).unwrap().len() < DISK, "a qcow2 file is smaller than its disk");

    let mountpoint = fixture.path("view.raw");
    let view = open_timed(&fixture.top(), DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadOnly);
    assert_eq!(view.size(), DISK);
    assert_eq!(view.path(), fs::canonicalize(fixture.dir.path()).unwrap().join("view.raw"));
    assert_eq!(fixture.mounts(), [view.path().to_owned()]);
    assert!(fs::read(view.path()).unwrap() == expected, "the view differs from qemu-img convert's output");

    // As diskserv reads it: positional reads of blocks.
    let disk = DiskImage::open(view.path(), 4096).unwrap();
    assert_eq!(disk.size(), DISK);
    for offset in [0, 512 * 1024, 3 * MIB, 6 * MIB, DISK - 4096] {
        let mut block = vec![0; 4096];
        disk.read_at(offset, &mut block).unwrap();
        assert!(block == expected[offset as usize..offset as usize + 4096], "block at {offset:#x}");
    }

    // Root may open it for writing (the kernel does not check the mode for
    // root), but no write reaches the image.
    let write = OpenOptions::new().write(true).open(view.path()).and_then(|file| file.write_at(&[0xee; 4096], 0));
    assert!(write.is_err(), "a write to a read-only view succeeded");
    assert!(fs::read(view.path()).unwrap() == expected);

    view.close().unwrap();
    fixture.assert_no_mounts();
    assert!(!mountpoint.exists(), "the mountpoint file the view created is left");
    assert_eq!((sha256(&fixture.base()), sha256(&fixture.top())), (base_sum, top_sum), "an image changed");
}

#[test]
fn read_write_view_writes_the_top_image_as_qemu_io_does() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    // A twin of the top image, over the same base, given the same writes by qemu-io.
    let twin = fixture.path("twin.qcow2");
    fs::copy(fixture.top(), &twin).unwrap();
    let base_sum = sha256(&fixture.base());
    let before = fixture.guest_bytes(&fixture.top());

    let view = open_timed(&fixture.top(), DiskFormat::Qcow2, &fixture.path("view.raw"), ViewAccess::ReadWrite);
    let file = OpenOptions::new().read(true).write(true).open(view.path()).unwrap();
    for &(offset, len, byte) in VIEW_WRITES {
        file.write_all_at(&vec![byte; len as usize], offset).unwrap();
    }
    // The export's length is the disk's: a write past the end is cut short.
    assert_eq!(file.write_at(&[0xff; 4096], DISK - 100).unwrap(), 100);
    file.write_all_at(&[0x35; 100], DISK - 100).unwrap();
    drop(file);
    view.close().unwrap();
    fixture.assert_no_mounts();

    for &(offset, len, byte) in VIEW_WRITES {
        qemu_io(&twin, "qcow2", offset, len, byte);
    }
    let check = run("qemu-img", &["check"], &[&fixture.top()], &[]);
    assert!(check.contains("No errors were found on the image"), "{check}");
    assert_eq!(sha256(&fixture.base()), base_sum, "the backing file was written");
    let compare = Command::new("qemu-img").arg("compare").arg(fixture.top()).arg(&twin).output().unwrap();
    assert_eq!(compare.status.code(), Some(0), "{}", String::from_utf8_lossy(&compare.stdout));
    assert!(String::from_utf8_lossy(&compare.stdout).contains("Images are identical"));
    assert!(fixture.guest_bytes(&fixture.top()) == with_writes(before, VIEW_WRITES));
}

#[test]
fn a_dirty_set_applies_through_a_read_write_view() {
    if cannot_run().is_some() {
        return;
    }
    const UNIT: u32 = 4096;
    let fixture = Fixture::new();
    let base_sum = sha256(&fixture.base());
    let before = fixture.guest_bytes(&fixture.top());
    let units: [(u64, u8); 4] = [(0, 0x41), (130, 0x42), (1500, 0x43), (DISK / u64::from(UNIT) - 1, 0x44)];

    let view = open_timed(&fixture.top(), DiskFormat::Qcow2, &fixture.path("view.raw"), ViewAccess::ReadWrite);
    let header = DirtySetHeader {
        unit_size: UNIT,
        image_size: view.size(),
        unit_count: units.len() as u64,
        transfer_id: TransferId::random().unwrap(),
    };
    let mut writer = DirtySetWriter::new(Vec::new(), header).unwrap();
    for &(unit, byte) in &units {
        writer.write_unit(unit, &[byte; UNIT as usize]).unwrap();
    }
    let (set, _) = writer.finish().unwrap();
    // It flocks the view, pwrites the units and fsyncs it.
    let summary = ApplyTarget::new(view.path(), UNIT, fixture.path("staging")).apply(&set[..]).unwrap();
    assert_eq!(summary.units, units.len() as u64);
    view.close().unwrap();
    fixture.assert_no_mounts();

    let writes: Vec<(u64, u64, u8)> =
        units.iter().map(|&(unit, byte)| (unit * u64::from(UNIT), u64::from(UNIT), byte)).collect();
    assert!(fixture.guest_bytes(&fixture.top()) == with_writes(before, &writes), "the image lacks the set's units");
    let check = run("qemu-img", &["check"], &[&fixture.top()], &[]);
    assert!(check.contains("No errors were found on the image"), "{check}");
    assert_eq!(sha256(&fixture.base()), base_sum, "the backing file was written");
}

#[test]
fn a_raw_image_is_its_own_view() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let mountpoint = fixture.path("unused.raw");
    assert_eq!(DiskFormat::detect(&fixture.base()).unwrap(), DiskFormat::Raw);
    assert_eq!(DiskFormat::detect(&fixture.top()).unwrap(), DiskFormat::Qcow2);
    let view = open_timed(&fixture.base(), DiskFormat::Raw, &mountpoint, ViewAccess::ReadWrite);
    assert_eq!((view.path(), view.size(), view.daemon_pid()), (fixture.base().as_path(), DISK, None));
    assert!(!mountpoint.exists(), "a raw view touched its mountpoint");
    view.close().unwrap();
    fixture.assert_no_mounts();
}

#[test]
fn a_missing_image_is_named() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let missing = fixture.path("missing.qcow2");
    for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
        let err = DiskView::open(&missing, format, &fixture.path("view.raw"), ViewAccess::ReadOnly).unwrap_err();
        assert!(matches!(err, QemuError::File { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    }
    assert!(DiskFormat::detect(&missing).unwrap_err().to_string().contains(&missing.display().to_string()));
    assert!(!fixture.path("view.raw").exists());
    fixture.assert_no_mounts();
}

#[test]
fn a_raw_file_opened_as_qcow2_is_refused_by_name() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let err = DiskView::open(&fixture.base(), DiskFormat::Qcow2, &fixture.path("view.raw"), ViewAccess::ReadOnly)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, QemuError::ImageInfo { .. }), "{err:?}");
    assert!(message.contains(&fixture.base().display().to_string()) && message.contains("qcow2"), "{message}");
    assert!(message.contains("not in qcow2 format"), "{message}");
    fixture.assert_no_mounts();
}

#[test]
fn an_image_another_process_writes_is_refused_by_name() {
    if cannot_run().is_some() {
        return;
    }
    let mut fixture = Fixture::new();
    // Writers as a running VM holds its disk: qemu-io (waiting on its
    // stdin) on the top image, qemu-storage-daemon with a writable NBD
    // export on a raw image of its own. Not on the top's base: qemu-io
    // opens that as its backing file, and whichever of the two came
    // second would fail to start.
    let top = fixture.top().display().to_string();
    fixture.background("qemu-io", &["-f", "qcow2", &top]);
    let other = fixture.path("other.raw");
    fs::copy(fixture.base(), &other).unwrap();
    let file_node = format!("driver=file,node-name=f,filename={}", other.display());
    let nbd = format!("addr.type=unix,addr.path={}", fixture.path("nbd.sock").display());
    let export = "type=nbd,id=e,node-name=r,writable=on";
    let raw_node = "driver=raw,node-name=r,file=f";
    let args = ["--blockdev", &file_node, "--blockdev", raw_node, "--nbd-server", &nbd, "--export", export];
    fixture.background("qemu-storage-daemon", &args);

    for (image, format) in [(fixture.top(), DiskFormat::Qcow2), (other, DiskFormat::Raw)] {
        assert_refused_as_locked(&fixture, &image, format, ViewAccess::ReadOnly);
    }
    fixture.assert_no_mounts();
}

#[test]
fn a_running_vms_disks_are_refused_by_name() {
    if cannot_run().is_some() {
        return;
    }
    if Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "under CI this test must run: no qemu-system-x86_64");
        eprintln!("SKIPPED: a_running_vms_disks_are_refused_by_name: no qemu-system-x86_64");
        return;
    }
    let mut fixture = Fixture::new();
    let raw = fixture.path("vm.raw");
    fs::copy(fixture.base(), &raw).unwrap();
    // A VM, stopped before its first instruction (-S), with both disks:
    // QEMU holds them as it does for a running guest.
    let raw_drive = format!("file={},format=raw,if=virtio", raw.display());
    let qcow2_drive = format!("file={},format=qcow2,if=virtio", fixture.top().display());
    let args = ["-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg", "-S"];
    fixture.background("qemu-system-x86_64", &[&args[..], &["-drive", &raw_drive, "-drive", &qcow2_drive]].concat());

    for (image, format) in [(raw, DiskFormat::Raw), (fixture.top(), DiskFormat::Qcow2)] {
        for access in [ViewAccess::ReadOnly, ViewAccess::ReadWrite] {
            assert_refused_as_locked(&fixture, &image, format, access);
        }
    }
    fixture.assert_no_mounts();
}

#[test]
fn a_read_write_view_of_an_image_a_view_reads_is_refused_by_name() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    // The reader takes no write lock, but QEMU's qcow2 reader lets nobody
    // write under it: qemu-storage-daemon itself refuses the second view.
    let reader = open_timed(&fixture.top(), DiskFormat::Qcow2, &fixture.path("reader.raw"), ViewAccess::ReadOnly);
    let mountpoint = fixture.path("writer.raw");
    let err = DiskView::open(&fixture.top(), DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadWrite).unwrap_err();
    assert!(matches!(err, QemuError::ImageLocked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&fixture.top().display().to_string()), "{message}");
    assert!(message.contains("is the VM still running?") && message.contains("lock"), "{message}");
    assert!(!mountpoint.exists(), "the refused view left its mountpoint");
    assert_eq!(fixture.mounts(), [reader.path().to_owned()]);
    reader.close().unwrap();
    fixture.assert_no_mounts();
}

/// Opens views of `image` until one is refused (the writer in the
/// background may still be starting) and checks the refusal names it.
/// No view that comes up in the meantime outlives the attempt.
fn assert_refused_as_locked(fixture: &Fixture, image: &Path, format: DiskFormat, access: ViewAccess) {
    let mountpoint = fixture.path("view.raw");
    let start = Instant::now();
    let err = loop {
        match DiskView::open(image, format, &mountpoint, access) {
            Err(err) => break err,
            Ok(view) => view.close().unwrap(),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the writer never held {}", image.display());
        sleep(Duration::from_millis(20));
    };
    let message = err.to_string();
    assert!(matches!(err, QemuError::ImageLocked { .. }), "{err:?}");
    assert!(message.contains(&image.display().to_string()), "{message}");
    assert!(message.contains("is the VM still running?"), "{message}");
    assert!(!mountpoint.exists(), "the refused view left its mountpoint");
}

#[test]
fn a_second_view_at_a_mounted_mountpoint_is_refused() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let mountpoint = fixture.path("view.raw");
    let first = open_timed(&fixture.top(), DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadOnly);
    let err = DiskView::open(&fixture.top(), DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadOnly).unwrap_err();
    assert!(matches!(err, QemuError::ViewMountpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("already mounted"), "{err}");
    // The first view is untouched by the refusal.
    assert_eq!(fs::metadata(first.path()).unwrap().len(), DISK);
    first.close().unwrap();
    fixture.assert_no_mounts();
}

#[test]
fn a_stale_mount_at_the_mountpoint_is_unmounted_before_use() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let mountpoint = fixture.path("view.raw");
    // A daemon killed with its export mounted, as a crash leaves it.
    fs::write(&mountpoint, b"").unwrap();
    let mut crashed = Command::new("qemu-storage-daemon")
        .arg("--blockdev")
        .arg(format!("driver=file,node-name=f,filename={},read-only=on", fixture.base().display()))
        .arg("--blockdev")
        .arg("driver=raw,node-name=r,file=f,read-only=on")
        .arg("--export")
        .arg(format!("type=fuse,id=e,node-name=r,mountpoint={}", mountpoint.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while fs::metadata(&mountpoint).unwrap().len() != DISK {
        assert!(start.elapsed() < Duration::from_secs(10), "the crashing daemon never mounted");
        sleep(Duration::from_millis(10));
    }
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    // stat may answer from the attribute cache; open asks the dead server.
    let stale = fs::File::open(&mountpoint).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN), "{stale}");

    let view = open_timed(&fixture.top(), DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadOnly);
    assert!(fs::read(view.path()).unwrap() == fixture.guest_bytes(&fixture.top()));
    view.close().unwrap();
    fixture.assert_no_mounts();
    // It was there before the view: the view leaves it.
    assert!(mountpoint.exists());
}

#[test]
fn a_view_whose_daemon_was_killed_closes_with_an_error_and_no_mount() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let view = open_timed(&fixture.top(), DiskFormat::Qcow2, &fixture.path("view.raw"), ViewAccess::ReadWrite);
    let pid = view.daemon_pid().unwrap();
    run("kill", &["-KILL", &pid.to_string()], &[], &[]);
    // Whether close still finds it running (its threads take a moment to
    // die) and fails to flush, or finds it gone, it says so.
    let err = view.close().unwrap_err();
    assert!(matches!(err, QemuError::ViewFlush { .. } | QemuError::ViewStop { .. }), "{err:?}");
    assert!(err.to_string().contains(&fixture.top().display().to_string()), "{err}");
    fixture.assert_no_mounts();
}

#[test]
fn a_view_outlives_the_thread_that_opened_it() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let (top, mountpoint) = (fixture.top(), fixture.path("view.raw"));
    let view = std::thread::spawn(move || DiskView::open(&top, DiskFormat::Qcow2, &mountpoint, ViewAccess::ReadOnly))
        .join()
        .unwrap()
        .unwrap();
    // The daemon got PR_SET_PDEATHSIG; had it been forked by the thread
    // that has now ended, it would have been sent SIGTERM.
    sleep(Duration::from_millis(300));
    assert!(fs::read(view.path()).unwrap() == fixture.guest_bytes(&fixture.top()));
    view.close().unwrap();
    fixture.assert_no_mounts();
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

/// Not a test of its own: run by the next test in a child process, which
/// holds a view until it is killed.
#[test]
#[ignore = "run by a_view_dies_with_its_process"]
fn hold_a_view_until_killed() {
    let Some(dir) = std::env::var_os("DISK_VIEW_HOLDER_DIR") else { return };
    let dir = PathBuf::from(dir);
    let view = DiskView::open(&dir.join("top.qcow2"), DiskFormat::Qcow2, &dir.join("view.raw"), ViewAccess::ReadWrite)
        .unwrap();
    println!("daemon {}", view.daemon_pid().unwrap());
    loop {
        sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_view_dies_with_its_process() {
    if cannot_run().is_some() {
        return;
    }
    let fixture = Fixture::new();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hold_a_view_until_killed", "--ignored", "--nocapture", "--test-threads=1"])
        .env("DISK_VIEW_HOLDER_DIR", fixture.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let daemon: u32 = loop {
        let line = lines.next().expect("the holder ended without a view").unwrap();
        // The harness's "test NAME ... " ends without a newline, so ours
        // follows it on the same line.
        if let Some((_, pid)) = line.split_once("daemon ") {
            break pid.parse().unwrap();
        }
    };
    assert_eq!(fixture.mounts().len(), 1);
    holder.kill().unwrap();
    holder.wait().unwrap();

    // PR_SET_PDEATHSIG: the daemon got SIGTERM, flushed, unmounted, exited.
    let start = Instant::now();
    while alive(daemon) || !fixture.mounts().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "the daemon outlived the process that held the view");
        sleep(Duration::from_millis(20));
    }
    let check = run("qemu-img", &["check"], &[&fixture.top()], &[]);
    assert!(check.contains("No errors were found on the image"), "{check}");
}
