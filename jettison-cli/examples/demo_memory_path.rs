//! The memory path, end to end on one machine, as `./scripts/demo` runs it.
//!
//! A "desktop" QEMU guest boots, fills part of its RAM with data (as a used
//! desktop's page cache and applications do) and counts on its console. It
//! is stopped and its descriptor (device state with `x-ignore-shared`) and
//! zero map are saved. Then the real daemons run as separate processes:
//! `jettison memserv` serves the desktop's RAM file, `jettison memtap`
//! exposes it over FUSE, and a "server" QEMU resumes the guest from the
//! descriptor with memtap's file as its RAM. The guest keeps counting while
//! its pages arrive on demand; the report says how little had to move.
#![allow(clippy::expect_used)] // a demo: a failed step ends it with the reason

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jettison_qemu::{resume, save_device_state, GuestImage, VmSpec};

const RAM_MIB: u64 = 256;
const FILL_MIB: u64 = 96;
const BOOT: Duration = Duration::from_secs(240);
const RUN: Duration = Duration::from_secs(120);

/// A daemon process stopped with SIGTERM (its clean shutdown) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn jettison(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("run jettison");
    if !out.status.success() {
        panic!("jettison {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn daemon(bin: &Path, args: &[&str], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).expect("create a daemon log");
    let child =
        Command::new(bin).args(args).stdout(Stdio::null()).stderr(log).spawn().expect("start a jettison daemon");
    Daemon(child)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let bin = PathBuf::from(std::env::args().nth(1).expect("usage: demo_memory_path <path to jettison> <repo root>"));
    let repo = PathBuf::from(std::env::args().nth(2).unwrap_or_else(|| ".".into()));
    let guest = GuestImage::build(&repo).expect("build the test guest (scripts/guest-image)");
    let dir = tempfile::Builder::new().prefix("jettison-demo-").tempdir().expect("temp dir");
    let d = dir.path();
    println!("== Jettison memory path demo (work dir {})", d.display());

    let key = d.join("jettison.key");
    jettison(&bin, &["pair", "--out", key.to_str().expect("utf-8 path")]);

    // Desktop: boot, fill, count, stop, save the descriptor.
    let desktop_ram = d.join("desktop-vm1.ram");
    let descriptor = d.join("vm1.descriptor");
    println!("desktop: booting a {RAM_MIB} MiB guest that fills {FILL_MIB} MiB of its RAM (TCG, ~10-20 s)...");
    let (count_at_stop, descriptor_bytes) = {
        let mut vm = VmSpec::new(&guest, &desktop_ram, d.join("desktop-run"))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.fill={FILL_MIB}"))
            .spawn()
            .expect("start the desktop QEMU");
        vm.wait_for_line("JTREADY", BOOT).expect("the guest boots");
        vm.wait_for_count_above(5, RUN).expect("the guest counts");
        let mut qmp = vm.connect_qmp().expect("QMP");
        let bytes = save_device_state(&mut qmp, &descriptor).expect("save the descriptor");
        let count = *vm.serial().counts().expect("serial log").last().expect("a count");
        (count, bytes)
    };
    println!("desktop: guest stopped at count {count_at_stop}; descriptor is {descriptor_bytes} bytes");
    let zero_map = d.join("vm1.zeromap");
    print!(
        "desktop: {}",
        jettison(
            &bin,
            &["zero-map", "--ram", desktop_ram.to_str().expect("utf-8"), "--out", zero_map.to_str().expect("utf-8")]
        )
    );

    // Desktop daemon and server daemon, as real processes.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let _memserv = daemon(
        &bin,
        &[
            "memserv",
            "--vm",
            "vm1",
            "--ram",
            desktop_ram.to_str().expect("utf-8"),
            "--listen",
            &listen,
            "--key",
            key.to_str().expect("utf-8"),
        ],
        &d.join("memserv.log"),
    );
    wait_for("memserv", || std::net::TcpStream::connect(&listen).is_ok());
    let mnt = d.join("memtap");
    std::fs::create_dir(&mnt).expect("mount point");
    let memtap = daemon(
        &bin,
        &[
            "memtap",
            "--mount",
            mnt.to_str().expect("utf-8"),
            "--vm",
            &format!("vm1={listen}"),
            "--zero-map",
            &format!("vm1={}", zero_map.display()),
            "--state-dir",
            d.join("slices").to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
        ],
        &d.join("memtap.log"),
    );
    wait_for("memtap's mount", || mnt.join("vm1.ram").exists());
    println!("server: memtap mounted at {}, memserv on {listen}", mnt.display());

    // Server: resume the guest on memtap's file.
    let started = Instant::now();
    let reached = {
        let spec = VmSpec::new(&guest, mnt.join("vm1.ram"), d.join("server-run"))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.fill={FILL_MIB}"));
        let (mut vm, _qmp) = resume(spec, &descriptor).expect("resume the guest on the server");
        let running = started.elapsed();
        let reached = vm.wait_for_count_above(count_at_stop + 10, RUN).expect("the guest keeps counting on the server");
        let first = *vm.serial().counts().expect("serial").first().expect("a count");
        assert!(first > count_at_stop, "the guest restarted instead of resuming");
        println!(
            "server: guest running {:.2} s after QEMU started; counted on from {count_at_stop} to {reached}",
            running.as_secs_f64()
        );
        reached
    };
    let status = jettison(&bin, &["status", "--memtap", mnt.to_str().expect("utf-8"), "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let vm: memtap::Stats =
        serde_json::from_value(stats["memory"][0].clone()).expect("status --json lists vm1 under \"memory\"");
    print!("server: {}", jettison(&bin, &["status", "--memtap", mnt.to_str().expect("utf-8")]));
    drop(memtap);

    let fetched = vm.bytes_fetched as f64 / 1048576.0;
    println!();
    println!("== Report");
    println!("guest RAM                 {RAM_MIB} MiB ({FILL_MIB} MiB of it filled with data)");
    println!("descriptor moved          {:.1} KiB", descriptor_bytes as f64 / 1024.0);
    println!("guest faults on server    {}", vm.faults);
    println!("remote fetches            {}", vm.remote_fetches);
    println!(
        "pages fetched             {} (prefetch hits {}, misses {})",
        vm.pages_fetched, vm.prefetch_hits, vm.prefetch_misses
    );
    println!(
        "page data fetched         {fetched:.1} MiB = {:.1}% of the guest's RAM",
        100.0 * fetched / RAM_MIB as f64
    );
    println!("zero pages never fetched  {} faults answered from the zero map", vm.zero_pages_served);
    println!("guest kept running        yes: counter {count_at_stop} -> {reached}");
}
