//! A VM with two disks, as a desktop with a system disk and a data disk
//! has: both qcow2, the first booted by the firmware (`/dev/vda`), the
//! second written raw by the guest (`/dev/vdb`). It moves to the server
//! and back through the real daemons; on the server the guest reads what
//! the desktop had on the second disk (fetched through the one diskserv)
//! and writes both disks; at home both images hold those writes, each in
//! its own image, both check clean, and `qemu-img compare` finds the data
//! disk identical to a copy of it taken at consolidation with the same
//! write done locally. Then the same
//! through a server crash and the recovery of its last checkpoint, with
//! three disks of a kernel-booted VM (raw, raw, qcow2).
//!
//! Root only (namespaces, taps, FUSE); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_driver::GuestAgent;
use tests::office::{
    last_count, wait_for_count_above, BootDisk, Office, OfficeSpec, EXTRA_DISK_MARK, EXTRA_DISK_PATTERN, VM,
};
use tests::COUNT_TIMEOUT;

const PACE: Duration = Duration::from_secs(1);
const REPLY: Duration = Duration::from_secs(120);
/// What the guest writes on its second disk while on the server, and where.
const SERVER_TEXT: &str = "written on the server, disk 2";
const SERVER_MARK: u64 = 2 << 20;

/// Runs a shell command line in the guest through its agent at `socket`.
fn in_guest(socket: &Path, line: &str, office: &Office) -> String {
    let mut agent = GuestAgent::connect(socket)
        .unwrap_or_else(|e| panic!("the guest agent at {}: {e}\n{}", socket.display(), office.logs()));
    agent
        .run("sh", &["-c", line])
        .unwrap_or_else(|e| panic!("`{line}` in the guest: {e}\n{}", office.logs()))
        .trim()
        .to_owned()
}

/// How many bytes of the desktop's pattern the guest reads in the block at
/// [`EXTRA_DISK_MARK`] of `/dev/vdb`, its page cache dropped first (so the
/// read goes to the disk).
fn pattern_bytes_seen(socket: &Path, office: &Office) -> String {
    let pattern = char::from(EXTRA_DISK_PATTERN);
    let skip = EXTRA_DISK_MARK / 4096;
    in_guest(
        socket,
        &format!(
            "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vdb bs=4096 skip={skip} count=1 2>/dev/null | tr -dc {pattern} | wc -c"
        ),
        office,
    )
}

/// 4 KiB of `image` (in `format`) at `offset`, read through QEMU's block layer.
fn block_of(image: &Path, format: &str, offset: u64) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("qemu-img")
        .args(["dd", "-f", format, "-O", "raw", "bs=4096"])
        // qemu-img dd counts `count` from the start of the input, skip included.
        .arg(format!("skip={}", offset / 4096))
        .arg(format!("count={}", offset / 4096 + 1))
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.path().display()))
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img dd of {}", image.display());
    std::fs::read(out.path()).unwrap()
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str, office: &Office) {
    let deadline = Instant::now() + tests::BOOT_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain for {what}\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The file `name` on the FAT partition of the firmware-booted guest's
/// qcow2 boot disk `image` (at 1 MiB, see `scripts/guest-image`).
fn file_on_boot_disk(image: &Path, name: &str) -> String {
    let raw = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(image)
        .arg(raw.path())
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img convert of {}", image.display());
    let out =
        Command::new("mtype").arg("-i").arg(format!("{}@@1M", raw.path().display())).arg(format!("::{name}")).output();
    String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
}

#[test]
fn a_vm_with_two_qcow2_disks_moves_and_comes_back_with_both_disks_written_as_if_done_locally() {
    let dir = tempfile::tempdir().unwrap();
    let boot = BootDisk { firmware: "bios", format: "qcow2" };
    let spec = OfficeSpec { fill_mib: 32, boot_disk: Some(boot), extra_disks: &["qcow2"], ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let data = office.extra_disks[0].clone();
    let desktop_agent = office.desktop_agent_socket();
    let server_agent = office.server_agent_socket();

    // On the desktop the guest sees its second disk, with what the desktop wrote on it.
    assert_eq!(pattern_bytes_seen(&desktop_agent, &office), "4096", "the guest reads its second disk");
    let client = office.connect_client(PACE);
    client.wait_for(2, REPLY);
    let saved = client.command("save before", REPLY);
    assert!(saved.starts_with("saved "), "{saved}");

    let out = office.consolidate_when_idle(Duration::from_secs(180));
    eprintln!("consolidated: {out}");
    // The data disk as it is now, the VM away: the reference that gets
    // the server's write done locally (as raw: compare reads through
    // each image's format).
    let local = dir.path().join("data-written-locally.raw");
    let copied =
        Command::new("qemu-img").args(["convert", "-U", "-f", "qcow2", "-O", "raw"]).arg(&data).arg(&local).status();
    assert!(copied.unwrap().success(), "qemu-img convert of {}", data.display());
    let left_at = last_count(&office.desktop_serial()).unwrap();
    wait_for_count_above(&office.server_serial(), left_at, COUNT_TIMEOUT);
    // Each disk has its own slices on the server: the first where a VM
    // with one disk has them, the second beside them.
    let slices = office.server_vm_state().join("disk");
    assert!(slices.join(VM).is_dir() && slices.join(format!("{VM}.1")).is_dir(), "slices in {}", slices.display());
    // The daemon sets the guest's clock through the agent after the move;
    // the agent takes one client at a time.
    wait_until(|| office.log("server").contains("guest clock set through its agent"), "the clock set", &office);

    // On the server: the second disk's content comes from the desktop...
    assert_eq!(pattern_bytes_seen(&server_agent, &office), "4096", "the desktop's block, fetched on the server");
    // ...and the guest writes both disks.
    let seek = SERVER_MARK / 4096;
    in_guest(
        &server_agent,
        &format!("printf '{SERVER_TEXT}' | dd of=/dev/vdb bs=4096 seek={seek} conv=sync,fsync 2>/dev/null"),
        &office,
    );
    let saved = client.command("save onserver", REPLY);
    assert!(saved.starts_with("saved "), "{saved}");
    let status = office.jettison_json(&["status", "--daemon", office.server_socket().to_str().unwrap()]);
    eprintln!("on the server: {status}");

    let at = last_count(&office.server_serial()).unwrap();
    let back = office.jettison_json(&["reintegrate", VM, "--socket", office.desktop_socket().to_str().unwrap()]);
    eprintln!("reintegrated: {back}");
    assert!(back["dirty_blocks"].as_u64().unwrap() >= 2, "a block of each disk at least: {back}");
    wait_for_count_above(&office.desktop_serial(), at, COUNT_TIMEOUT);
    let cat = client.command("cat onserver", REPLY);
    assert!(cat.starts_with("cat ") && !cat.ends_with("missing"), "{cat}");
    let (_, broke) = client.finish();
    assert!(broke.is_none(), "the client's connection broke: {broke:?}");

    // The server's write, done locally on the reference: the block the
    // guest's dd wrote (the text, then zeros to 4 KiB: conv=sync).
    {
        use std::os::unix::fs::FileExt;
        let mut block = vec![0u8; 4096];
        block[..SERVER_TEXT.len()].copy_from_slice(SERVER_TEXT.as_bytes());
        std::fs::OpenOptions::new().write(true).open(&local).unwrap().write_all_at(&block, SERVER_MARK).unwrap();
    }

    // Powered off, each image holds what the guest wrote on the server.
    let desktop = office.desktop_socket();
    let out = office.jettison(&["shutdown", VM, "--timeout", "120", "--socket", desktop.to_str().unwrap()]);
    assert!(out.status.success(), "shutdown: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    let check = Command::new("qemu-img").arg("check").arg(&office.disk).output().unwrap();
    assert!(check.status.success(), "qemu-img check: {}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("No errors were found"));
    let check = Command::new("qemu-img").arg("check").arg(&data).output().unwrap();
    assert!(check.status.success(), "qemu-img check of the data disk: {}", String::from_utf8_lossy(&check.stdout));
    let compare =
        Command::new("qemu-img").args(["compare", "-f", "qcow2", "-F", "raw"]).arg(&data).arg(&local).output().unwrap();
    assert!(
        compare.status.success(),
        "the data disk after the round trip differs from the same write done locally: {}{}",
        String::from_utf8_lossy(&compare.stdout),
        String::from_utf8_lossy(&compare.stderr)
    );
    let on_server = file_on_boot_disk(&office.disk, "onserver.txt");
    assert!(!on_server.trim().is_empty(), "the first (qcow2) disk lacks the file written on the server");
    let written = block_of(&data, "qcow2", SERVER_MARK);
    assert!(written.starts_with(SERVER_TEXT.as_bytes()), "the second disk lacks the server's write");
    assert!(written[SERVER_TEXT.len()..].iter().all(|&b| b == 0));
    assert!(block_of(&data, "qcow2", EXTRA_DISK_MARK).iter().all(|&b| b == EXTRA_DISK_PATTERN));
    // The server's write went to the second disk only.
    let first = block_of(&office.disk, "qcow2", SERVER_MARK);
    assert!(!first.starts_with(SERVER_TEXT.as_bytes()), "the second disk's write reached the first");
}

/// The same through a server crash, with three disks (raw, raw, qcow2):
/// the server's checkpoints hold a dirty set per disk, and once the
/// restarted server sends the last one home, each disk's writes on the
/// server are in its own image.
#[test]
fn a_crashed_servers_last_checkpoint_brings_each_disk_home() {
    let dir = tempfile::tempdir().unwrap();
    // A failover to the desktop's own checkpoint must not come first.
    let spec = OfficeSpec {
        fill_mib: 32,
        checkpoint_every_secs: Some(4),
        failover_secs: 120,
        extra_disks: &["raw", "qcow2"],
        ..OfficeSpec::default()
    };
    let Some(mut office) = Office::started(dir.path(), &spec) else { return };
    let server_agent = office.server_agent_socket();
    let client = office.connect_client(PACE);
    client.wait_for(2, REPLY);
    let socket = office.desktop_socket();
    office.jettison_json(&["consolidate", VM, "--force", "--socket", socket.to_str().unwrap()]);
    wait_until(|| office.log("server").contains("guest clock set through its agent"), "the clock set", &office);
    let seek = SERVER_MARK / 4096;
    for (device, text) in [("vdb", "checkpointed, disk 2"), ("vdc", "checkpointed, disk 3")] {
        in_guest(
            &server_agent,
            &format!("printf '{text}' | dd of=/dev/{device} bs=4096 seek={seek} conv=sync,fsync 2>/dev/null"),
            &office,
        );
    }
    let saved = client.command("save on-server", REPLY);
    assert!(saved.starts_with("saved "), "{saved}");
    wait_for_a_new_checkpoint(&office);
    wait_for_a_new_checkpoint(&office);
    let checkpoint = office.server_vm_state().join("checkpoint");
    for file in ["memory.set", "disk.set", "disk.1.set", "disk.2.set"] {
        assert!(checkpoint.join(file).is_file(), "no {file} in {}", checkpoint.display());
        // Durable and read only after a crash: not held in the page cache too.
        let cached = tests::page_cache_bytes(&[checkpoint.join(file)]);
        assert_eq!(cached, 0, "{file} of the checkpoint keeps {cached} bytes in the page cache");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoint.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["disks"], 3, "{manifest}");

    office.crash_server();
    office.start_server();
    office.wait_until_home(Duration::from_secs(120), "the desktop never brought the VM back");
    assert!(office.log("desktop").contains("recovered from the server's last checkpoint"), "{}", office.logs());
    let _ = client.wait_until_broken(Duration::from_secs(90));
    let again = office.connect_client(PACE);
    let cat = again.command("cat on-server", REPLY);
    assert!(cat.starts_with("cat ") && !cat.ends_with("missing"), "{cat}");
    drop(again.finish());

    let out = office.jettison(&["shutdown", VM, "--timeout", "120", "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "shutdown: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    assert!(!tests::file_in_image(&office.disk, "/on-server.txt").trim().is_empty(), "the first disk lacks its file");
    for (image, format, text) in [
        (&office.extra_disks[0], "raw", "checkpointed, disk 2"),
        (&office.extra_disks[1], "qcow2", "checkpointed, disk 3"),
    ] {
        let block = block_of(image, format, SERVER_MARK);
        assert!(block.starts_with(text.as_bytes()), "{} lacks {text:?}", image.display());
        assert!(block_of(image, format, EXTRA_DISK_MARK).iter().all(|&b| b == EXTRA_DISK_PATTERN));
    }
    let check = Command::new("qemu-img").arg("check").arg(&office.extra_disks[1]).output().unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("No errors were found"), "qemu-img check");
}

/// Waits until the server logs one more checkpoint than it has so far.
fn wait_for_a_new_checkpoint(office: &Office) {
    let taken = || office.log("server").matches("checkpoint taken").count();
    let before = taken();
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken() <= before {
        assert!(Instant::now() < deadline, "no checkpoint taken\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}
