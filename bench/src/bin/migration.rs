//! Migration benchmark (issue 4, item 9, partial): moving the same idle,
//! used-looking guest from a "desktop" to a "server" network namespace
//! three ways, over one link capped with `tc` at the same rate for all:
//!
//! 1. **QEMU precopy** live migration over TCP (`migrate tcp:`) to a QEMU
//!    started `-incoming` in the server's namespace. Each side has its own
//!    RAM file and `x-ignore-shared` is off, so all non-zero RAM crosses.
//! 2. **QEMU postcopy**: the same with `postcopy-ram` on both sides and
//!    `migrate-start-postcopy` right after `migrate`: the VM runs on the
//!    server at once and the rest of RAM follows, pushed and on demand.
//! 3. **Jettison**: the device state saved with `x-ignore-shared`, sent with
//!    the zero-page map over one TCP connection, memserv started on the
//!    desktop and memtap on the server, and the guest resumed on memtap's
//!    file: RAM follows only as the guest touches it.
//!
//! Why it is built so:
//!
//! - **A used desktop, not a fresh boot.** The guest fills `--fill-percent`
//!   of its RAM with random data (`jt.fill`, a tmpfs in the guest) before
//!   it idles, counting on its serial console. QEMU skips zero pages, so an
//!   empty guest would make every method look alike.
//! - **The same starting point for every method.** The guest boots once per
//!   RAM size; its device state (with `x-ignore-shared`) and RAM file are
//!   the checkpoint. Each method starts from a fresh copy of that RAM file,
//!   resumed on the desktop, and idles a few seconds before it is moved.
//! - **One way of counting bytes.** Every method's bytes are the desktop's
//!   `eth0` counters (sent plus received, headers included), read before it
//!   starts and when it is measured; QEMU's own `ram.transferred` and
//!   memtap's `bytes_fetched` are printed beside them as cross-checks.
//! - **"Runs at the destination"** means the guest's counter printed a line
//!   on the server's serial console: the VM executes there, not just
//!   "QEMU says running". The counter ticks every 0.2 s, so this can be up
//!   to 0.2 s late for every method alike.
//! - **A baseline in the same run**: a plain TCP stream over the same capped
//!   link, the most any method can move per second.
//!
//! Not measured, and said so in the output: the way back. Jettison's
//! reintegration is not built yet, and QEMU's way back would need the guest
//! to dirty a known amount on the server, which the test guest (it takes no
//! input) cannot be told to do.
//!
//! Needs root (namespaces, `tc`), FUSE, QEMU and the test guest; without
//! them it prints a `SKIPPED` line and exits 0. Everything it makes
//! (QEMUs, the mount, namespaces, files in `/dev/shm`) is removed by drop
//! guards, also on an error.
//!
//! `cargo run --release -p jettison-bench --bin migration [-- --ram-mib 256,1024 --fill-percent 60 --rate-mbit 1000]`

use std::error::Error;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser;
use jettison_bench::measure::timed;
use jettison_qemu::{resume, save_device_state, GuestImage, QemuProcess, Qmp, VmSpec};
use jettison_slice_store::zero_map;
use jettison_tests::netns::office::{DESKTOP_CIDR, MEMSERV, SERVER_CIDR};
use jettison_tests::netns::{self, Host, Lan};
use jettison_tests::{fuse_available, guest, skip, DesktopServer, BOOT_TIMEOUT, COUNT_TIMEOUT};
use jettison_wire::SharedKey;
use memtap::{Mount, VmConfig};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use remote_wakeup::netns::run_in;
use serde_json::{json, Value};

/// The VM's name: memserv's export and memtap's `vm1.ram`.
const VM: &str = "vm1";
/// Where the server's QEMU listens for QEMU's own migration stream.
const MIGRATION_PORT: u16 = 4444;
/// Where the server receives Jettison's descriptor.
const DESCRIPTOR_PORT: u16 = 4445;
/// One MiB.
const MIB: u64 = 1 << 20;
/// The bytes of the raw TCP baseline.
const RAW_STREAM_BYTES: usize = 128 << 20;
/// How long a migration may take before the run gives up.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a running migration and the destination's console are polled.
const POLL: Duration = Duration::from_millis(10);
/// The paper's full live migration of a 4 GiB desktop VM (Xen, 813 Mbit/s).
const PAPER_FULL_SECS: f64 = 38.59;
/// The bytes that migration moved, in GiB.
const PAPER_FULL_GIB: f64 = 4.27;
/// The paper's Jettison consolidation of the same VM.
const PAPER_CONSOLIDATION_SECS: f64 = 3.78;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// QEMU precopy, QEMU postcopy and Jettison moving the same idle guest
/// between two network namespaces over one capped link.
#[derive(Debug, Parser)]
struct Args {
    /// Guest RAM sizes in MiB, comma-separated; one guest (and one row per
    /// method) for each.
    #[arg(long, value_delimiter = ',', default_values_t = [256u64, 1024])]
    ram_mib: Vec<u64>,
    /// Share of guest RAM the guest fills with random data before it idles.
    #[arg(long, default_value_t = 60)]
    fill_percent: u64,
    /// The link's cap in Mbit/s, each direction (`tc` tbf on both ends).
    #[arg(long, default_value_t = 1000)]
    rate_mbit: u64,
    /// Seconds the guest idles on the desktop before each move.
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
    /// Seconds of running on the server over which Jettison's on-demand
    /// fetches are counted.
    #[arg(long, default_value_t = 10)]
    run_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let guest = match preflight() {
        Ok(guest) => guest,
        Err(why) => {
            skip(format!("migration: {why}"));
            return ExitCode::SUCCESS;
        }
    };
    match run(&args, &guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migration failed: {}", jettison_wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The test guest, or why this machine cannot run the benchmark.
fn preflight() -> Result<GuestImage, String> {
    netns::available()?;
    fuse_available()?;
    if !Path::new("/dev/shm").is_dir() {
        return Err("/dev/shm is missing (the RAM files live there: postcopy needs shmem)".into());
    }
    guest()
}

/// One method's result.
#[derive(Debug)]
struct Row {
    ram_mib: u64,
    method: &'static str,
    /// Bytes on the link (both directions) until the VM ran on the server.
    bytes_to_run: u64,
    /// Bytes on the link until the source was no longer needed, or after
    /// `run_secs` of running for Jettison.
    bytes_total: u64,
    /// From the start of the move until the counter ticked on the server.
    to_run: Duration,
    /// From the start of the move until the desktop was no longer needed;
    /// `None` for Jettison, whose desktop serves pages for as long as the
    /// VM stays consolidated.
    to_release: Option<Duration>,
    /// A cross-check from the method's own counters.
    note: String,
}

/// The two namespaces, the capped link and the rate it really carries.
struct Office {
    lan: Lan,
    capped: bool,
}

impl Office {
    fn desktop(&self) -> &str {
        self.lan.host(0)
    }

    fn server(&self) -> &str {
        self.lan.host(1)
    }

    /// Bytes the desktop's `eth0` has sent and received so far.
    fn link_bytes(&self) -> BenchResult<u64> {
        let out =
            Command::new("ip").args(["-n", self.desktop(), "-s", "-j", "link", "show", "dev", "eth0"]).output()?;
        if !out.status.success() {
            return Err(format!("ip -s link: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let info: Value = serde_json::from_slice(&out.stdout)?;
        let stats = &info[0]["stats64"];
        let (rx, tx) = (stats["rx"]["bytes"].as_u64(), stats["tx"]["bytes"].as_u64());
        Ok(rx.zip(tx).map(|(rx, tx)| rx + tx).ok_or("no byte counters in `ip -s -j link`")?)
    }
}

fn run(args: &Args, guest: &GuestImage) -> BenchResult<()> {
    if args.fill_percent >= 90 {
        return Err("--fill-percent must be below 90: the guest's kernel needs the rest".into());
    }
    let started = Instant::now();
    let lan = Lan::build(&[
        Host { role: "desktop", cidr: DESKTOP_CIDR, mac: None },
        Host { role: "server", cidr: SERVER_CIDR, mac: None },
    ]);
    let mut office = Office { lan, capped: true };
    for ns in [office.desktop().to_owned(), office.server().to_owned()] {
        if let Err(why) = cap_link(&ns, args.rate_mbit) {
            println!("NOTE: tc cannot cap the link here ({why}); every figure below is UNCAPPED (veth speed)");
            office.capped = false;
            break;
        }
    }
    let (raw_secs, raw_bytes) = raw_stream(&office)?;
    let mut rows = Vec::new();
    for &ram_mib in &args.ram_mib {
        rows.extend(run_size(args, guest, &office, ram_mib)?);
    }
    print_report(args, &office, raw_secs, raw_bytes, &rows, started.elapsed());
    Ok(())
}

/// Caps `eth0` of namespace `ns` at `mbit` on egress; with both ends capped
/// both directions are.
fn cap_link(ns: &str, mbit: u64) -> Result<(), String> {
    let rate = format!("{mbit}mbit");
    // A burst of at least 1 ms at the rate and 64 KiB (a veth GSO packet).
    let burst = format!("{}", (mbit * 1000 / 8).max(64 << 10));
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", &burst])
        .args(["latency", "50ms"])
        .output()
        .map_err(|e| format!("tc does not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Baseline: a plain TCP stream of random bytes from the desktop to the
/// server; its time and the link bytes it took.
fn raw_stream(office: &Office) -> BenchResult<(f64, u64)> {
    let listener = run_in(Some(office.server()), || TcpListener::bind((server_ip(), 0)))??;
    let addr = listener.local_addr()?;
    let mut data = vec![0u8; RAW_STREAM_BYTES];
    StdRng::seed_from_u64(4).fill_bytes(&mut data);
    let before = office.link_bytes()?;
    let start = Instant::now();
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = listener.accept()?;
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink)
    });
    run_in(Some(office.desktop()), || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(&data)?;
        stream.shutdown(Shutdown::Write)
    })??;
    let received = receiver.join().map_err(|_| "the raw stream's receiver panicked")??;
    let secs = start.elapsed().as_secs_f64();
    if received != RAW_STREAM_BYTES {
        return Err(format!("raw stream: received {received} of {RAW_STREAM_BYTES} bytes").into());
    }
    Ok((secs, office.link_bytes()? - before))
}

/// The server's address without its prefix.
fn server_ip() -> std::net::Ipv4Addr {
    SERVER_CIDR.split('/').next().and_then(|ip| ip.parse().ok()).expect("SERVER_CIDR is an IPv4 address/prefix")
}

/// What every method of one RAM size starts from.
struct Checkpoint {
    dir: tempfile::TempDir,
    ram_mib: u64,
    kernel_args: String,
    ram: PathBuf,
    state: PathBuf,
    count: u64,
}

impl Checkpoint {
    fn spec(&self, guest: &GuestImage, ram: &Path, run: &str) -> VmSpec {
        VmSpec::new(guest, ram, self.dir.path().join(run)).memory_mib(self.ram_mib).kernel_args(&self.kernel_args)
    }

    /// A fresh copy of the checkpoint's RAM resumed on the desktop, counted
    /// past the checkpoint and left idle for `idle`.
    fn resume_on_desktop(
        &self,
        guest: &GuestImage,
        office: &Office,
        method: &str,
        idle: Duration,
    ) -> BenchResult<(QemuProcess, Qmp, PathBuf)> {
        let ram = self.dir.path().join(format!("{method}-desktop.ram"));
        fs::copy(&self.ram, &ram)?;
        let spec = self.spec(guest, &ram, &format!("{method}-desktop"));
        let (mut qemu, qmp) = run_in(Some(office.desktop()), || resume(spec, &self.state))??;
        qemu.wait_for_count_above(self.count, COUNT_TIMEOUT)?;
        sleep(idle);
        Ok((qemu, qmp, ram))
    }
}

/// Boots the guest, lets it fill its RAM and idle, and saves the checkpoint.
fn checkpoint(args: &Args, guest: &GuestImage, office: &Office, ram_mib: u64) -> BenchResult<Checkpoint> {
    let dir = tempfile::Builder::new().prefix("jt-migration-").tempdir_in("/dev/shm")?;
    let fill = ram_mib * args.fill_percent / 100;
    let mut cp = Checkpoint {
        ram: dir.path().join("checkpoint.ram"),
        state: dir.path().join("checkpoint.state"),
        dir,
        ram_mib,
        kernel_args: format!("jt.fill={fill}"),
        count: 0,
    };
    let spec = cp.spec(guest, &cp.ram, "boot");
    let mut qemu = run_in(Some(office.desktop()), || spec.spawn())??;
    let boot = Instant::now();
    qemu.wait_for_line("JTREADY", BOOT_TIMEOUT + Duration::from_secs(fill / 4))?;
    println!("  {ram_mib} MiB guest booted and filled {fill} MiB in {:.1} s", boot.elapsed().as_secs_f64());
    qemu.wait_for_count_above(3, COUNT_TIMEOUT)?;
    sleep(Duration::from_secs(args.idle_secs));
    let mut qmp = qemu.connect_qmp()?;
    save_device_state(&mut qmp, &cp.state)?;
    cp.count = qemu.serial().counts()?.last().copied().ok_or("no JTCOUNT before the checkpoint")?;
    Ok(cp)
}

fn run_size(args: &Args, guest: &GuestImage, office: &Office, ram_mib: u64) -> BenchResult<Vec<Row>> {
    println!("{ram_mib} MiB guest:");
    let cp = checkpoint(args, guest, office, ram_mib)?;
    let idle = Duration::from_secs(args.idle_secs);
    let mut rows = Vec::new();
    for postcopy in [false, true] {
        let row = qemu_migration(guest, office, &cp, idle, postcopy)?;
        println!("  {}: {}", row.method, row.note);
        rows.push(row);
    }
    let row = jettison(guest, office, &cp, idle, Duration::from_secs(args.run_secs))?;
    println!("  {}: {}", row.method, row.note);
    rows.push(row);
    Ok(rows)
}

/// Sets migration capabilities on one QEMU.
fn set_capabilities(qmp: &mut Qmp, postcopy: bool) -> jettison_qemu::Result<()> {
    let caps = json!([
        { "capability": "x-ignore-shared", "state": false },
        { "capability": "postcopy-ram", "state": postcopy },
    ]);
    qmp.execute("migrate-set-capabilities", Some(json!({ "capabilities": caps })))?;
    Ok(())
}

/// QEMU's own migration, precopy or postcopy, from a resumed copy of the
/// checkpoint on the desktop to a QEMU `-incoming` on the server with a RAM
/// file of its own.
fn qemu_migration(
    guest: &GuestImage,
    office: &Office,
    cp: &Checkpoint,
    idle: Duration,
    postcopy: bool,
) -> BenchResult<Row> {
    let method = if postcopy { "QEMU postcopy" } else { "QEMU precopy" };
    let tag = if postcopy { "postcopy" } else { "precopy" };
    let server_ram = cp.dir.path().join(format!("{tag}-server.ram"));
    let spec = cp.spec(guest, &server_ram, &format!("{tag}-server")).incoming_defer();
    let uri = format!("tcp:{}:{MIGRATION_PORT}", server_ip());
    let (mut dest, dest_qmp) = run_in(Some(office.server()), || -> jettison_qemu::Result<_> {
        let mut qemu = spec.spawn()?;
        let mut qmp = qemu.connect_qmp()?;
        set_capabilities(&mut qmp, postcopy)?;
        qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))?;
        Ok((qemu, qmp))
    })??;
    let (source, mut qmp, source_ram) = cp.resume_on_desktop(guest, office, tag, idle)?;
    // The resumed source still has x-ignore-shared from loading the
    // checkpoint: turned off here, so all of RAM goes into the stream.
    set_capabilities(&mut qmp, postcopy)?;
    // QEMU's default cap (128 MiB/s) would be the limit on an uncapped link.
    qmp.execute("migrate-set-parameters", Some(json!({ "max-bandwidth": 100u64 << 30 })))?;

    let before = office.link_bytes()?;
    let start = Instant::now();
    qmp.execute("migrate", Some(json!({ "uri": uri })))?;
    if postcopy {
        qmp.execute("migrate-start-postcopy", None)?;
    }
    let (mut to_run, mut bytes_to_run, mut done) = (None, 0, None);
    let mut info = Value::Null;
    while to_run.is_none() || done.is_none() {
        if start.elapsed() > MIGRATION_TIMEOUT {
            return Err(format!("{method}: not finished after {MIGRATION_TIMEOUT:?}: {info}").into());
        }
        if to_run.is_none() && dest.serial().counts()?.last().is_some_and(|&n| n > cp.count) {
            to_run = Some(start.elapsed());
            bytes_to_run = office.link_bytes()? - before;
        }
        if done.is_none() {
            info = qmp.execute("query-migrate", None)?;
            match info["status"].as_str() {
                Some("completed") => done = Some((start.elapsed(), office.link_bytes()? - before)),
                Some("failed" | "cancelled") => {
                    return Err(format!("{method} failed: {}", info["error-desc"].as_str().unwrap_or("?")).into())
                }
                _ => {}
            }
        }
        sleep(POLL);
    }
    let (to_release, bytes_total) = done.expect("the loop ends only once the migration completed");
    let to_run = to_run.expect("the loop ends only once the destination ran");
    // The counter must go on from the source's, on the server.
    dest.wait_for_count_above(cp.count + 2, COUNT_TIMEOUT)?;
    let ram = &info["ram"];
    let note = format!(
        "QEMU counted {:.1} MiB of RAM transferred ({} normal pages, {} zero pages), downtime {} ms; link {:.1} MiB",
        ram["transferred"].as_u64().unwrap_or(0) as f64 / MIB as f64,
        ram["normal"].as_u64().unwrap_or(0),
        ram["duplicate"].as_u64().unwrap_or(0),
        info["downtime"].as_u64().map_or("?".into(), |d| d.to_string()),
        bytes_total as f64 / MIB as f64,
    );
    drop((qmp, source, dest_qmp, dest));
    fs::remove_file(source_ram)?;
    fs::remove_file(server_ram)?;
    Ok(Row { ram_mib: cp.ram_mib, method, bytes_to_run, bytes_total, to_run, to_release: Some(to_release), note })
}

/// Jettison's consolidation: descriptor and zero map across the link,
/// memserv on the desktop, memtap and the resumed QEMU on the server.
fn jettison(
    guest: &GuestImage,
    office: &Office,
    cp: &Checkpoint,
    idle: Duration,
    window: Duration,
) -> BenchResult<Row> {
    let dir = cp.dir.path();
    let (source, mut qmp, desktop_ram) = cp.resume_on_desktop(guest, office, "jettison", idle)?;
    let listener = run_in(Some(office.server()), || TcpListener::bind((server_ip(), DESCRIPTOR_PORT)))??;
    let received = dir.join("jettison-server.state");

    let before = office.link_bytes()?;
    let start = Instant::now();
    // On the desktop: stop, save the descriptor, map the zero pages.
    let descriptor = dir.join("jettison-desktop.state");
    let descriptor_bytes = save_device_state(&mut qmp, &descriptor)?;
    drop((qmp, source));
    let (zeros, scan_time) = timed(|| zero_map::scan_file(&desktop_ram, memtap::PAGE_SIZE as u32));
    let zeros = zeros?;
    let zero_pages: u64 = zeros.iter().map(|r| r.end - r.start).sum();
    // Across the link: the descriptor, then the zero map as little-endian
    // (start, end) page pairs.
    let mut message = fs::read(&descriptor)?;
    for range in &zeros {
        message.extend_from_slice(&range.start.to_le_bytes());
        message.extend_from_slice(&range.end.to_le_bytes());
    }
    let sent = message.len();
    let receiver = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut stream, _) = listener.accept()?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    run_in(Some(office.desktop()), || -> std::io::Result<()> {
        let mut stream = TcpStream::connect((server_ip(), DESCRIPTOR_PORT))?;
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)
    })??;
    let bytes = receiver.join().map_err(|_| "the descriptor's receiver panicked")??;
    if bytes.len() != sent {
        return Err(format!("descriptor: received {} of {sent} bytes", bytes.len()).into());
    }
    fs::write(&received, &bytes[..descriptor_bytes as usize])?;
    // The desktop serves its RAM file; the server mounts memtap over it.
    let key = SharedKey::generate();
    let memserv = run_in(Some(office.desktop()), || DesktopServer::memserv(&desktop_ram, VM, &key, MEMSERV))?;
    let mountpoint = dir.join("memtap");
    fs::create_dir_all(&mountpoint)?;
    let mut config = VmConfig::new(VM, dir.join("slices"), memserv.remote(VM, &key));
    config.zero_pages = zeros;
    let mount = run_in(Some(office.server()), || Mount::start(&mountpoint, vec![config]))??;
    let spec = cp.spec(guest, &mountpoint.join(format!("{VM}.ram")), "jettison-server");
    let (dest, _dest_qmp) = run_in(Some(office.server()), || resume(spec, &received))??;
    let to_run = loop {
        if dest.serial().counts()?.last().is_some_and(|&n| n > cp.count) {
            break start.elapsed();
        }
        if start.elapsed() > MIGRATION_TIMEOUT {
            return Err("Jettison: the guest never counted on the server".into());
        }
        sleep(POLL);
    };
    let bytes_to_run = office.link_bytes()? - before;
    let fetched_at_run = mount.vms()[0].stats().bytes_fetched;
    sleep(window.saturating_sub(start.elapsed() - to_run));
    let bytes_total = office.link_bytes()? - before;
    let stats = mount.vms()[0].stats();
    let note = format!(
        "descriptor {:.1} KiB + zero map of {} ranges ({zero_pages} zero pages) = {:.1} KiB sent (zero map scanned in {:.2} s); memtap fetched {:.2} MiB \
         of page data by the first count, {:.2} MiB after {} s ({} pages, {} remote fetches); link {:.2} MiB",
        descriptor_bytes as f64 / 1024.0,
        (sent - descriptor_bytes as usize) / 16,
        sent as f64 / 1024.0,
        scan_time.as_secs_f64(),
        fetched_at_run as f64 / MIB as f64,
        stats.bytes_fetched as f64 / MIB as f64,
        window.as_secs(),
        stats.pages_fetched,
        stats.remote_fetches,
        bytes_total as f64 / MIB as f64,
    );
    drop(dest);
    mount.unmount()?;
    drop(memserv);
    fs::remove_file(desktop_ram)?;
    Ok(Row {
        ram_mib: cp.ram_mib,
        method: "Jettison (partial)",
        bytes_to_run,
        bytes_total,
        to_run,
        to_release: None,
        note,
    })
}

fn print_report(args: &Args, office: &Office, raw_secs: f64, raw_bytes: u64, rows: &[Row], elapsed: Duration) {
    let link = if office.capped {
        format!("veth/bridge link capped by tc tbf at {} Mbit/s each way", args.rate_mbit)
    } else {
        "UNCAPPED veth/bridge link (tc unavailable)".to_owned()
    };
    let raw_mbit = RAW_STREAM_BYTES as f64 * 8.0 / raw_secs / 1e6;
    println!();
    println!(
        "migration: guest fills {}% of RAM with random data, idles {} s on the desktop, then moves; {link}; \
         TCG guest, {} CPUs; run took {:.0} s",
        args.fill_percent,
        args.idle_secs,
        std::thread::available_parallelism().map_or(0, usize::from),
        elapsed.as_secs_f64()
    );
    println!(
        "baseline: raw TCP stream desktop -> server, {} MiB in {raw_secs:.2} s = {raw_mbit:.0} Mbit/s of payload; \
         link counters {:.1} MiB",
        RAW_STREAM_BYTES as u64 / MIB,
        raw_bytes as f64 / MIB as f64
    );
    println!();
    println!("| RAM | method | MiB on link until VM runs on server | MiB on link in all | s until VM runs on server | s until desktop not needed |");
    println!("|---:|---|---:|---:|---:|---|");
    for row in rows {
        let (total, release) = match row.to_release {
            Some(d) => (format!("{:.1}", row.bytes_total as f64 / MIB as f64), format!("{:.2}", d.as_secs_f64())),
            None => (
                format!("{:.1} (after {} s running)", row.bytes_total as f64 / MIB as f64, args.run_secs),
                "never while consolidated: desktop stays needed (on demand)".to_owned(),
            ),
        };
        println!(
            "| {} MiB | {} | {:.1} | {total} | {:.2} | {release} |",
            row.ram_mib,
            row.method,
            row.bytes_to_run as f64 / MIB as f64,
            row.to_run.as_secs_f64()
        );
    }
    println!(
        "| 4 GiB | paper: full live migration (Xen 3.4, 813 Mbit/s) | - | {:.1} ({PAPER_FULL_GIB} GiB) | - | {PAPER_FULL_SECS} |",
        PAPER_FULL_GIB * 1024.0
    );
    println!("| 4 GiB | paper: Jettison consolidation (813 Mbit/s) | - | - | {PAPER_CONSOLIDATION_SECS} | never while consolidated |");
    println!();
    if !args.ram_mib.contains(&4096) {
        println!(
            "4 GiB not run by default: under TCG, filling {} MiB in the guest and moving it by precopy and \
             postcopy about doubles the run, and it needs about 12 GiB free in /dev/shm (checkpoint, source and \
             destination RAM files); pass --ram-mib 4096 to run it.",
            4096 * args.fill_percent / 100
        );
    }
    println!(
        "way back: NOT measured. Jettison's reintegration is not built yet; QEMU's way back would need the guest \
         to dirty a known amount on the server, and the test guest takes no input to be told to."
    );
}
