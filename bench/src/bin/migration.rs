//! Migration benchmark (issue 4, item 9): moving the same idle,
//! used-looking guest from a "desktop" to a "server" network namespace and
//! back three ways, over one link capped with `tc` at the same rate for all:
//!
//! 1. **QEMU precopy** live migration over TCP (`migrate tcp:`) to a QEMU
//!    started `-incoming` on the other host. Each QEMU has its own RAM file
//!    and `x-ignore-shared` is off, so all non-zero RAM crosses, each way.
//! 2. **QEMU postcopy**: the same with `postcopy-ram` on both sides and
//!    `migrate-start-postcopy` right after `migrate`: the VM runs on the
//!    destination at once and the rest of RAM follows, pushed and on demand.
//! 3. **Jettison**: out, the device state saved with `x-ignore-shared`,
//!    sent with the zero-page map over one TCP connection, memserv started
//!    on the desktop and memtap on the server, and the guest resumed on
//!    memtap's file: RAM follows only as the guest touches it. Back
//!    (reintegration, [`reintegrate`]): the descriptor and the dirty set of
//!    memtap's slice store over one connection, staged and verified on the
//!    desktop, then committed into the desktop's RAM file, where the guest
//!    resumes. Memory only: the small guest has no disk here, the desktop
//!    guest's disk is shared storage.
//!
//! Two guests (`--guest`, the parts that differ in [`guest`]):
//!
//! - **`small`** (the default): the busybox test guest, booted directly,
//!   filled with random data; sizes 256, 1024 and 4096 MiB by default.
//! - **`desktop`**: the Debian desktop guest of
//!   `scripts/desktop-guest-image` (systemd, Xorg, Xfce, Firefox ESR on
//!   local pages, qemu-ga), 2 vCPUs, SeaBIOS, a VGA screen, 2048 MiB by
//!   default. It boots once per RAM size until its guest agent answers and
//!   its screen shows the session with Firefox, idles `--settle-secs`
//!   (default 60) so it is an idle desktop, and is checkpointed. Its disk is
//!   **shared storage**, as QEMU live migration is usually run: one qcow2
//!   file both namespaces see (network namespaces do not isolate files), an
//!   overlay per method over the disk the checkpoint saw. Only memory and
//!   device state cross the link, for every method. (The real daemons also
//!   fetch disk blocks on demand through cownetdisk and send the dirty ones
//!   back; those figures come from the `desktop_guest` end-to-end test.)
//!   On the server it runs `--run-secs` (default 60) as an idle desktop
//!   does, instead of dirtying a known amount; Jettison's way back then
//!   sends the dirty set it really made.
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
//! - **A known amount dirtied on the server** (the small guest). The guest
//!   has a NIC (a tap
//!   on each host's bridge, the same MAC everywhere: [`office`]) and a TCP
//!   line service; once it runs on the server, a client host sends it
//!   `dirty <MiB>` and waits for `dirtied`: the guest writes that much
//!   random data to a tmpfs. After `--idle-secs` more it goes back. Once
//!   back, the client's next line must get the service's next number: the
//!   state the guest wrote on the server came back with it.
//! - **One way of counting bytes.** Every method's bytes are the desktop's
//!   `eth0` counters (sent plus received, headers included), read before it
//!   starts and when it is measured; QEMU's own `ram.transferred`, memtap's
//!   `bytes_fetched` and the dirty set's size are printed beside them as
//!   cross-checks.
//! - **"Runs at the destination"** means the guest executes there, not just
//!   "QEMU says running". For the small guest: its counter printed a line
//!   on the destination's serial console (it ticks every 0.2 s, so this can
//!   be up to 0.2 s late for every method alike). For the desktop guest: its
//!   guest agent answered a sync on the destination's channel (`qemu-ga`
//!   runs in the guest; a request waits there from the start of the move).
//!   After each move the desktop guest's agent must also find Xorg,
//!   xfce4-session and firefox-esr running and its screen must show the
//!   session; the small guest's line service must answer. **"Source not
//!   needed"**: for
//!   QEMU, `query-migrate` on the source says `completed`; for Jettison's
//!   way back, the desktop has staged and verified the whole dirty set; for
//!   Jettison's way out, never while the VM is consolidated (the desktop
//!   serves pages on demand).
//! - **Destination QEMUs start before the clock**, for QEMU's migrations and
//!   for Jettison's way back alike; Jettison's way out starts its server
//!   QEMU inside the clock (memtap must be mounted first).
//! - **A baseline in the same run**: a plain TCP stream over the same capped
//!   link, the most any method can move per second.
//!
//! Needs root (namespaces, taps, `tc`), FUSE, QEMU and the test guest (and
//! for `--guest desktop` the desktop guest's disk, built by
//! `scripts/desktop-guest-image`); without them it prints a `SKIPPED` line
//! and exits 0. Everything it
//! makes (QEMUs, the mount, taps, namespaces, files in `/dev/shm`, the
//! desktop guest's disks in the temporary directory) is removed by drop
//! guards, also on an error.
//!
//! 4 GiB is in the default run: under TCG its guest fills 2.4 GiB in about
//! 55 s, and the whole size takes about 4 minutes; it needs about 12 GiB
//! free in `/dev/shm` (the checkpoint and two RAM files at a time).
//!
//! `cargo run --release -p bench --bin migration [-- --guest small|desktop --ram-mib 256,1024,4096 --dirty-mib 4,32,32 --fill-percent 60 --rate-mbit 1000 --idle-secs 3 --settle-secs N --run-secs N --methods precopy,postcopy,jettison]`

// Beside the crate root, a file under src/bin/ would be a binary of its own.
#[path = "migration/guest.rs"]
mod guest;
#[path = "migration/office.rs"]
mod office;
#[path = "migration/reintegrate.rs"]
mod reintegrate;

use std::error::Error;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bench::measure::timed;
use clap::Parser;
use memtap::{Mount, RamFileConfig};
use migration_formats::zero_map;
use qemu_driver::{announce, resume, save_device_state, GuestImage, QemuProcess, Qmp, VmSpec};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use remote_wakeup::netns::run_in;
use serde_json::{json, Value};
use tests::netns::office::MEMSERV;
use tests::TestKeys;
use tests::{fuse_available, guest, netns, skip, DesktopServer};

use guest::{Arrival, Guest, GuestKind};
use office::{CappedOffice, Side};
use reintegrate::{reintegrate, Consolidated};

/// The VM's name: memserv's export and memtap's `vm1.ram`.
const VM: &str = "vm1";
/// Where a destination QEMU listens for QEMU's own migration stream.
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
/// The paper's reintegration of the same VM.
const PAPER_REINTEGRATION_SECS: f64 = 4.11;
/// Memory the paper's deployment sent back to the desktop, MiB.
const PAPER_REINTEGRATION_MIB: f64 = 114.68;

/// Errors of the benchmark; `Send` so the receiving ends on other threads
/// can return them.
type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// QEMU precopy, QEMU postcopy and Jettison moving the same idle guest
/// between two network namespaces over one capped link, and back.
#[derive(Debug, Parser)]
struct Args {
    /// The guest to move: the small test guest, or the Debian desktop
    /// guest of `scripts/desktop-guest-image`.
    #[arg(long, value_enum, default_value_t = GuestKind::Small)]
    guest: GuestKind,
    /// Guest RAM sizes in MiB, comma-separated; one guest (and two rows per
    /// method, out and back) for each. By default 256,1024,4096 for the
    /// small guest, 2048 for the desktop guest.
    #[arg(long, value_delimiter = ',')]
    ram_mib: Vec<u64>,
    /// Share of guest RAM the small guest fills with random data before it
    /// idles.
    #[arg(long, default_value_t = 60)]
    fill_percent: u64,
    /// MiB of random data the small guest writes while it runs on the server,
    /// before it goes back: one value per RAM size, or one for all; by
    /// default 4 below 1 GiB, else 32. A 256 MiB guest 60% full has room for
    /// little more than 4 MiB: its kernel keeps about 60 MiB of the 256, and
    /// its initramfs, grown since by USB, display and agent modules, most of
    /// the rest (8 MiB, the default of the figures in `bench/RESULTS.md`,
    /// now fails: "cannot dirty 8 MiB").
    #[arg(long, value_delimiter = ',')]
    dirty_mib: Vec<u64>,
    /// The link's cap in Mbit/s, each direction (`tc` tbf on both ends).
    #[arg(long, default_value_t = 1000)]
    rate_mbit: u64,
    /// Seconds the guest idles before each move (on the desktop before the
    /// way out, on the server after dirtying before the way back).
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
    /// The methods to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Method::Precopy, Method::Postcopy, Method::Jettison])]
    methods: Vec<Method>,
    /// Seconds of running on the server: for the small guest, over which
    /// Jettison's on-demand fetches are counted before it dirties (default
    /// 10); for the desktop guest, its whole stay there, every method alike
    /// (default 60).
    #[arg(long)]
    run_secs: Option<u64>,
    /// Seconds the guest idles after its first boot before the checkpoint
    /// is saved: default `--idle-secs` for the small guest, 60 for the
    /// desktop guest (an idle desktop, its session settled).
    #[arg(long)]
    settle_secs: Option<u64>,
}

/// A way of moving the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// QEMU's precopy live migration.
    Precopy,
    /// QEMU's postcopy live migration.
    Postcopy,
    /// Jettison's partial migration and reintegration.
    Jettison,
}

impl Method {
    /// The method's name in its files: run directories, RAM files, disks.
    fn tag(self) -> &'static str {
        match self {
            Method::Precopy => "precopy",
            Method::Postcopy => "postcopy",
            Method::Jettison => "jettison",
        }
    }
}

impl Args {
    /// The RAM sizes to run.
    fn sizes(&self) -> Vec<u64> {
        match (self.ram_mib.is_empty(), self.guest) {
            (false, _) => self.ram_mib.clone(),
            (true, GuestKind::Small) => vec![256, 1024, 4096],
            (true, GuestKind::Desktop) => vec![2048],
        }
    }

    /// How long the guest runs on the server (see `--run-secs`).
    fn run_time(&self) -> Duration {
        let default = match self.guest {
            GuestKind::Small => 10,
            GuestKind::Desktop => 60,
        };
        Duration::from_secs(self.run_secs.unwrap_or(default))
    }

    /// How long the guest idles before the checkpoint (see `--settle-secs`).
    fn settle_time(&self) -> Duration {
        let default = match self.guest {
            GuestKind::Small => self.idle_secs,
            GuestKind::Desktop => 60,
        };
        Duration::from_secs(self.settle_secs.unwrap_or(default))
    }

    /// How long Jettison's way out is measured after the guest first runs
    /// on the server: `--run-secs` for the small guest; none for the
    /// desktop guest, whose stay (the same for every method) counts its
    /// on-demand fetches.
    fn jettison_window(&self) -> Duration {
        match self.guest {
            GuestKind::Small => self.run_time(),
            GuestKind::Desktop => Duration::ZERO,
        }
    }

    /// The MiB the small guest of the `i`th RAM size dirties on the server.
    fn dirty(&self, i: usize) -> u64 {
        match self.dirty_mib[..] {
            [] if self.sizes()[i] < 1024 => 4,
            [] => 32,
            [all] => all,
            ref each => each[i],
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let guest = match preflight(args.guest) {
        Ok(guest) => guest,
        Err(why) => {
            skip(format!("migration: {why}"));
            return ExitCode::SUCCESS;
        }
    };
    match run(&args, &guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migration failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The test guest, or why this machine cannot run the benchmark.
fn preflight(kind: GuestKind) -> Result<GuestImage, String> {
    netns::available()?;
    fuse_available()?;
    if !Path::new("/dev/shm").is_dir() {
        return Err("/dev/shm is missing (the RAM files live there: postcopy needs shmem)".into());
    }
    let desktop_disk = tests::repo_root().join(".cache/desktop-guest/disk.raw");
    if kind == GuestKind::Desktop && !desktop_disk.is_file() {
        return Err(format!(
            "no desktop guest at {}: build it with scripts/desktop-guest-image (about 10 minutes)",
            desktop_disk.display()
        ));
    }
    guest()
}

/// Which way a move goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Desktop to server (consolidation).
    Out,
    /// Server to desktop (reintegration).
    Back,
}

/// One move, measured.
#[derive(Debug)]
struct Move {
    /// Bytes on the link (both directions) until the VM ran at the
    /// destination.
    bytes_to_run: u64,
    /// Bytes on the link until the VM ran and the source was no longer
    /// needed, or after `run_secs` of running for Jettison's way out.
    bytes_total: u64,
    /// From the start of the move until the guest executed at the
    /// destination.
    to_run: Duration,
    /// From the start of the move until the source was no longer needed;
    /// `None` for Jettison's way out, whose desktop serves pages for as long
    /// as the VM stays consolidated.
    to_release: Option<Duration>,
    /// A cross-check from the method's own counters.
    note: String,
}

/// The guest's stay on the server between the two moves.
#[derive(Debug)]
struct Stay {
    /// What the guest did there, for the report.
    what: String,
    /// How long that took (for the small guest, until it answered
    /// `dirtied`).
    took: Duration,
    /// Bytes on the link meanwhile (Jettison's on-demand fetches).
    link_bytes: u64,
    /// The small guest's service number in its `dirtied` reply, checked
    /// once it is back.
    serial: Option<u64>,
}

/// One method's result at one RAM size.
#[derive(Debug)]
struct Row {
    ram_mib: u64,
    method: &'static str,
    out: Move,
    stay: Stay,
    back: Move,
}

fn run(args: &Args, image: &GuestImage) -> BenchResult<()> {
    if args.fill_percent >= 90 {
        return Err("--fill-percent must be below 90: the guest's kernel needs the rest".into());
    }
    if args.dirty_mib.len() > 1 && args.dirty_mib.len() != args.sizes().len() {
        return Err("--dirty-mib needs one value, or one per --ram-mib size".into());
    }
    let started = Instant::now();
    let office = CappedOffice::build(args.rate_mbit);
    let (raw_secs, raw_bytes) = raw_stream(&office)?;
    let mut rows = Vec::new();
    for (i, ram_mib) in args.sizes().into_iter().enumerate() {
        rows.extend(run_size(args, image, &office, ram_mib, args.dirty(i))?);
    }
    print_report(args, &office, raw_secs, raw_bytes, &rows, started.elapsed());
    Ok(())
}

/// Baseline: a plain TCP stream of random bytes from the desktop to the
/// server; its time and the link bytes it took.
fn raw_stream(office: &CappedOffice) -> BenchResult<(f64, u64)> {
    let listener = run_in(Some(office.server()), || TcpListener::bind((CappedOffice::ip(Side::Server), 0)))??;
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

/// What every method of one RAM size starts from.
struct Checkpoint {
    dir: tempfile::TempDir,
    ram_mib: u64,
    guest: Guest,
    ram: PathBuf,
    state: PathBuf,
    /// The small guest's last count before the checkpoint.
    count: u64,
}

impl Checkpoint {
    /// The VM of method `tag` on RAM file `ram`, with its NIC on `side`'s
    /// tap, logging into run directory `{tag}-{role}`.
    fn spec(&self, office: &CappedOffice, side: Side, ram: &Path, tag: &str, role: &str) -> VmSpec {
        let run_dir = self.dir.path().join(format!("{tag}-{role}"));
        self.guest.spec(ram, run_dir, tag, self.ram_mib).extra_args(office.nic_args(side))
    }

    /// A fresh copy of the checkpoint's RAM resumed on the desktop for
    /// method `tag`, running there and left idle for `idle`.
    fn resume_on_desktop(
        &self,
        office: &CappedOffice,
        tag: &str,
        idle: Duration,
    ) -> BenchResult<(QemuProcess, Qmp, PathBuf)> {
        let ram = self.dir.path().join(format!("{tag}-desktop.ram"));
        fs::copy(&self.ram, &ram)?;
        let spec = self.spec(office, Side::Desktop, &ram, tag, "desktop");
        let (qemu, mut qmp) = run_in(Some(office.desktop()), || resume(spec, &self.state))??;
        announce(&mut qmp)?;
        let arrival = self.guest.watch(self.count, &qemu);
        wait_until_runs(office, arrival, &qemu, Instant::now(), "resumed on the desktop")?;
        sleep(idle);
        Ok((qemu, qmp, ram))
    }
}

/// Boots the guest, waits until it is ready (the small guest filled its
/// RAM; the desktop guest shows its session), lets it settle, and saves the
/// checkpoint.
fn checkpoint(args: &Args, image: &GuestImage, office: &CappedOffice, ram_mib: u64) -> BenchResult<Checkpoint> {
    let dir = tempfile::Builder::new().prefix("jt-migration-").tempdir_in("/dev/shm")?;
    let fill = ram_mib * args.fill_percent / 100;
    let guest = match args.guest {
        GuestKind::Small => Guest::small(image.clone(), fill),
        GuestKind::Desktop => Guest::desktop()?,
    };
    let mut cp = Checkpoint {
        ram: dir.path().join("checkpoint.ram"),
        state: dir.path().join("checkpoint.state"),
        dir,
        ram_mib,
        guest,
        count: 0,
    };
    let spec = cp.spec(office, Side::Desktop, &cp.ram, "boot", "desktop");
    let mut qemu = run_in(Some(office.desktop()), || spec.spawn())??;
    let mut qmp = qemu.connect_qmp()?;
    let ready = cp.guest.wait_ready(&mut qemu, &mut qmp, fill)?;
    println!("  {ram_mib} MiB guest {ready}");
    sleep(args.settle_time());
    // Stopping flushes the disk; ending QEMU leaves the boot disk to the
    // methods' overlays.
    save_device_state(&mut qmp, &cp.state)?;
    cp.count = cp.guest.last_count(&qemu)?;
    drop((qmp, qemu));
    Ok(cp)
}

fn run_size(
    args: &Args,
    image: &GuestImage,
    office: &CappedOffice,
    ram_mib: u64,
    dirty_mib: u64,
) -> BenchResult<Vec<Row>> {
    println!("{ram_mib} MiB guest:");
    let cp = checkpoint(args, image, office, ram_mib)?;
    let mut rows = Vec::new();
    for &method in &args.methods {
        cp.guest.fresh_disk(method.tag())?;
        let row = match method {
            Method::Precopy => qemu_round_trip(args, office, &cp, dirty_mib, false)?,
            Method::Postcopy => qemu_round_trip(args, office, &cp, dirty_mib, true)?,
            Method::Jettison => jettison_round_trip(args, office, &cp, dirty_mib)?,
        };
        print_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

fn print_row(row: &Row) {
    println!("  {} out: {}", row.method, row.out.note);
    println!(
        "  {} on the server: {} in {:.2} s, {:.2} MiB on the link meanwhile",
        row.method,
        row.stay.what,
        row.stay.took.as_secs_f64(),
        row.stay.link_bytes as f64 / MIB as f64
    );
    println!("  {} back: {}", row.method, row.back.note);
}

/// The guest's stay on the server, running on `qemu` (see
/// [`Guest::stay`]); the small guest then idles `--idle-secs`.
fn stay_on_server(
    args: &Args,
    office: &CappedOffice,
    cp: &Checkpoint,
    server: (&QemuProcess, &mut Qmp),
    dirty_mib: u64,
) -> BenchResult<Stay> {
    let before = office.link_bytes()?;
    let start = Instant::now();
    let (what, serial) = cp.guest.stay(office, server, dirty_mib, args.run_time())?;
    let took = start.elapsed();
    let link_bytes = office.link_bytes()? - before;
    if cp.guest.is_small() {
        sleep(Duration::from_secs(args.idle_secs));
    }
    Ok(Stay { what, took, link_bytes, serial })
}

/// Sets migration capabilities on one QEMU.
fn set_capabilities(qmp: &mut Qmp, postcopy: bool) -> Result<(), qemu_driver::QemuError> {
    let caps = json!([
        { "capability": "x-ignore-shared", "state": false },
        { "capability": "postcopy-ram", "state": postcopy },
    ]);
    qmp.execute("migrate-set-capabilities", Some(json!({ "capabilities": caps })))?;
    Ok(())
}

/// A QEMU started `-incoming` on `side`, on its own RAM file `ram`,
/// listening for the migration stream.
fn incoming(
    office: &CappedOffice,
    cp: &Checkpoint,
    side: Side,
    ram: &Path,
    (tag, role): (&str, &str),
    postcopy: bool,
) -> BenchResult<(QemuProcess, Qmp)> {
    let spec = cp.spec(office, side, ram, tag, role).incoming_defer();
    let uri = migration_uri(side);
    Ok(run_in(Some(office.ns(side)), || -> Result<_, qemu_driver::QemuError> {
        let mut qemu = spec.spawn()?;
        let mut qmp = qemu.connect_qmp()?;
        set_capabilities(&mut qmp, postcopy)?;
        qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))?;
        Ok((qemu, qmp))
    })??)
}

/// Where a destination QEMU on `side` listens.
fn migration_uri(side: Side) -> String {
    format!("tcp:{}:{MIGRATION_PORT}", CappedOffice::ip(side))
}

/// Polls until `arrival` sees the guest execute on `dest`; the time since
/// `start` and the link counters at that moment.
fn wait_until_runs(
    office: &CappedOffice,
    mut arrival: Arrival,
    dest: &QemuProcess,
    start: Instant,
    what: &str,
) -> BenchResult<(Duration, u64)> {
    loop {
        if arrival.poll(dest)? {
            return Ok((start.elapsed(), office.link_bytes()?));
        }
        if start.elapsed() > MIGRATION_TIMEOUT {
            return Err(format!("{what}: the guest never ran at the destination").into());
        }
        sleep(POLL);
    }
}

/// QEMU's own migration from the QEMU behind `source` to `dest` (already
/// listening on `to`), measured from `migrate` on.
fn qemu_move(
    office: &CappedOffice,
    guest: &Guest,
    source: (&QemuProcess, &mut Qmp),
    dest: &QemuProcess,
    to: Side,
    postcopy: bool,
    what: &str,
) -> BenchResult<Move> {
    let (source, qmp) = source;
    // A source resumed from the checkpoint still has x-ignore-shared from
    // loading it: turned off here, so all of RAM goes into the stream.
    set_capabilities(qmp, postcopy)?;
    // QEMU's default cap (128 MiB/s) would be the limit on an uncapped link.
    qmp.execute("migrate-set-parameters", Some(json!({ "max-bandwidth": 100u64 << 30 })))?;
    let mut arrival = guest.watch(guest.last_count(source)?, dest);

    let before = office.link_bytes()?;
    let start = Instant::now();
    qmp.execute("migrate", Some(json!({ "uri": migration_uri(to) })))?;
    if postcopy {
        qmp.execute("migrate-start-postcopy", None)?;
    }
    let (mut to_run, mut bytes_to_run, mut done) = (None, 0, None);
    let mut info = Value::Null;
    while to_run.is_none() || done.is_none() {
        if start.elapsed() > MIGRATION_TIMEOUT {
            return Err(format!("{what}: not finished after {MIGRATION_TIMEOUT:?}: {info}").into());
        }
        if to_run.is_none() && arrival.poll(dest)? {
            to_run = Some(start.elapsed());
            bytes_to_run = office.link_bytes()? - before;
        }
        if done.is_none() {
            info = qmp.execute("query-migrate", None)?;
            match info["status"].as_str() {
                Some("completed") => done = Some((start.elapsed(), office.link_bytes()? - before)),
                Some("failed" | "cancelled") => {
                    return Err(format!("{what} failed: {}", info["error-desc"].as_str().unwrap_or("?")).into())
                }
                _ => {}
            }
        }
        sleep(POLL);
    }
    let (to_release, bytes_done) = done.expect("the loop ends only once the migration completed");
    let to_run = to_run.expect("the loop ends only once the destination ran");
    let bytes_total = bytes_done.max(bytes_to_run);
    let ram = &info["ram"];
    let note = format!(
        "QEMU counted {:.1} MiB of RAM transferred ({} normal pages, {} zero pages), downtime {} ms; link {:.1} MiB",
        ram["transferred"].as_u64().unwrap_or(0) as f64 / MIB as f64,
        ram["normal"].as_u64().unwrap_or(0),
        ram["duplicate"].as_u64().unwrap_or(0),
        info["downtime"].as_u64().map_or("?".into(), |d| d.to_string()),
        bytes_total as f64 / MIB as f64,
    );
    Ok(Move { bytes_to_run, bytes_total, to_run, to_release: Some(to_release), note })
}

/// QEMU's own migration, precopy or postcopy, from a resumed copy of the
/// checkpoint on the desktop to a QEMU `-incoming` on the server with a RAM
/// file of its own; the guest dirties; then the same way back to a fresh
/// QEMU `-incoming` on the desktop, on a RAM file of its own.
fn qemu_round_trip(
    args: &Args,
    office: &CappedOffice,
    cp: &Checkpoint,
    dirty_mib: u64,
    postcopy: bool,
) -> BenchResult<Row> {
    let method = if postcopy { "QEMU postcopy" } else { "QEMU precopy" };
    let tag = if postcopy { "postcopy" } else { "precopy" };
    let idle = Duration::from_secs(args.idle_secs);
    let dir = cp.dir.path();

    let server_ram = dir.join(format!("{tag}-server.ram"));
    let (server, mut server_qmp) = incoming(office, cp, Side::Server, &server_ram, (tag, "server"), postcopy)?;
    let (desktop, mut desktop_qmp, desktop_ram) = cp.resume_on_desktop(office, tag, idle)?;
    let out = qemu_move(office, &cp.guest, (&desktop, &mut desktop_qmp), &server, Side::Server, postcopy, method)?;
    // The desktop's QEMU and RAM file are done with; its tap is free for
    // the way back.
    drop((desktop_qmp, desktop));
    fs::remove_file(desktop_ram)?;
    announce(&mut server_qmp)?;

    let stay = stay_on_server(args, office, cp, (&server, &mut server_qmp), dirty_mib)?;

    let back_ram = dir.join(format!("{tag}-back.ram"));
    let (back, mut back_qmp) = incoming(office, cp, Side::Desktop, &back_ram, (tag, "back"), postcopy)?;
    let back_move = qemu_move(office, &cp.guest, (&server, &mut server_qmp), &back, Side::Desktop, postcopy, method)?;
    drop((server_qmp, server));
    fs::remove_file(server_ram)?;
    announce(&mut back_qmp)?;
    cp.guest.check_back(office, stay.serial, (&back, &mut back_qmp), method)?;
    drop((back_qmp, back));
    fs::remove_file(back_ram)?;
    Ok(Row { ram_mib: cp.ram_mib, method, out, stay, back: back_move })
}

/// Jettison: consolidation (descriptor and zero map across the link,
/// memserv on the desktop, memtap and the resumed QEMU on the server); the
/// guest runs `run_secs` and dirties; then reintegration.
fn jettison_round_trip(args: &Args, office: &CappedOffice, cp: &Checkpoint, dirty_mib: u64) -> BenchResult<Row> {
    let idle = Duration::from_secs(args.idle_secs);
    let (out, mut vm) = consolidate(office, cp, idle, args.jettison_window())?;
    let stay = stay_on_server(args, office, cp, (&vm.qemu, &mut vm.qmp), dirty_mib)?;
    let (back, qemu, mut qmp) = reintegrate(office, cp, vm)?;
    cp.guest.check_back(office, stay.serial, (&qemu, &mut qmp), "Jettison")?;
    drop((qmp, qemu));
    fs::remove_file(cp.dir.path().join("jettison-desktop.ram"))?;
    Ok(Row { ram_mib: cp.ram_mib, method: "Jettison", out, stay, back })
}

/// Jettison's consolidation: descriptor and zero map across the link,
/// memserv on the desktop, memtap and the resumed QEMU on the server.
/// Returns the move measured over `window` of running, and the VM as it
/// runs on the server.
fn consolidate(
    office: &CappedOffice,
    cp: &Checkpoint,
    idle: Duration,
    window: Duration,
) -> BenchResult<(Move, Consolidated)> {
    let dir = cp.dir.path();
    let (source, mut qmp, desktop_ram) = cp.resume_on_desktop(office, "jettison", idle)?;
    let listener =
        run_in(Some(office.server()), || TcpListener::bind((CappedOffice::ip(Side::Server), DESCRIPTOR_PORT)))??;
    let received = dir.join("jettison-server.state");

    let before = office.link_bytes()?;
    let start = Instant::now();
    // On the desktop: stop, save the descriptor, map the zero pages.
    let descriptor = dir.join("jettison-desktop.state");
    let descriptor_bytes = save_device_state(&mut qmp, &descriptor)?;
    let after = cp.guest.last_count(&source)?;
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
        let mut stream = TcpStream::connect((CappedOffice::ip(Side::Server), DESCRIPTOR_PORT))?;
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)
    })??;
    let bytes = receiver.join().map_err(|_| "the descriptor's receiver panicked")??;
    if bytes.len() != sent {
        return Err(format!("descriptor: received {} of {sent} bytes", bytes.len()).into());
    }
    fs::write(&received, &bytes[..descriptor_bytes as usize])?;
    // The desktop serves its RAM file; the server mounts memtap over it.
    let key = TestKeys::new();
    let memserv = run_in(Some(office.desktop()), || DesktopServer::memserv(&desktop_ram, VM, &key, MEMSERV))?;
    let mountpoint = dir.join("memtap");
    fs::create_dir_all(&mountpoint)?;
    let slices = dir.join("slices");
    let mut config = RamFileConfig::new(VM, &slices, memserv.remote(VM, &key));
    config.zero_pages = zeros;
    let mount = run_in(Some(office.server()), || Mount::start(&mountpoint, vec![config]))??;
    let spec = cp.spec(office, Side::Server, &mountpoint.join(format!("{VM}.ram")), "jettison", "server");
    let (dest, mut dest_qmp) = run_in(Some(office.server()), || resume(spec, &received))??;
    let arrival = cp.guest.watch(after, &dest);
    let (to_run, at_run) = wait_until_runs(office, arrival, &dest, start, "Jettison out")?;
    let bytes_to_run = at_run - before;
    announce(&mut dest_qmp)?;
    let fetched_at_run = mount.vms()[0].stats().bytes_fetched;
    sleep(window.saturating_sub(start.elapsed() - to_run));
    let bytes_total = office.link_bytes()? - before;
    let stats = mount.vms()[0].stats();
    let note = format!(
        "descriptor {:.1} KiB + zero map of {} ranges ({zero_pages} zero pages) = {:.1} KiB sent (zero map scanned in {:.2} s); memtap fetched {:.2} MiB \
         of page data by the time the guest ran, {:.2} MiB after {} s ({} pages, {} remote fetches); link {:.2} MiB",
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
    let out = Move { bytes_to_run, bytes_total, to_run, to_release: None, note };
    Ok((out, Consolidated { qemu: dest, qmp: dest_qmp, mount, slices, memserv, desktop_ram }))
}

fn print_report(args: &Args, office: &CappedOffice, raw_secs: f64, raw_bytes: u64, rows: &[Row], elapsed: Duration) {
    let link = if office.capped {
        format!("veth/bridge link capped by tc tbf at {} Mbit/s each way", args.rate_mbit)
    } else {
        "UNCAPPED veth/bridge link (tc unavailable)".to_owned()
    };
    let raw_mbit = RAW_STREAM_BYTES as f64 * 8.0 / raw_secs / 1e6;
    let mib = |bytes: u64| bytes as f64 / MIB as f64;
    println!();
    let guest = match args.guest {
        GuestKind::Small => format!(
            "the small test guest fills {}% of RAM with random data, idles {} s on the desktop, moves out, dirties \
             a known amount on the server (below), idles {} s, moves back",
            args.fill_percent, args.idle_secs, args.idle_secs
        ),
        GuestKind::Desktop => format!(
            "the Debian desktop guest (2 vCPUs, SeaBIOS, qcow2 disk on shared storage: only memory and device \
             state cross the link) boots to its Xfce session with Firefox, settles {} s, is checkpointed; each \
             method resumes it on the desktop, idles {} s, moves out, runs {} s on the server as an idle desktop, \
             moves back",
            args.settle_time().as_secs(),
            args.idle_secs,
            args.run_time().as_secs()
        ),
    };
    println!(
        "migration: {guest}; {link}; TCG guest, {} CPUs; run took {:.0} s",
        std::thread::available_parallelism().map_or(0, usize::from),
        elapsed.as_secs_f64()
    );
    println!(
        "baseline: raw TCP stream desktop -> server, {} MiB in {raw_secs:.2} s = {raw_mbit:.0} Mbit/s of payload; \
         link counters {:.1} MiB",
        RAW_STREAM_BYTES as u64 / MIB,
        mib(raw_bytes)
    );
    println!();
    println!("| RAM | method | way | MiB on link until VM runs at destination | MiB on link in all | s until VM runs at destination | s until source not needed |");
    println!("|---:|---|---|---:|---:|---:|---|");
    for row in rows {
        for (way, m) in [(Way::Out, &row.out), (Way::Back, &row.back)] {
            let (total, release) = match m.to_release {
                Some(d) => (format!("{:.1}", mib(m.bytes_total)), format!("{:.2}", d.as_secs_f64())),
                None if args.jettison_window().is_zero() => (
                    format!("{:.1} (when it ran; its fetches while it stays are below)", mib(m.bytes_total)),
                    "never while consolidated: desktop serves pages on demand".to_owned(),
                ),
                None => (
                    format!("{:.1} (after {} s running)", mib(m.bytes_total), args.jettison_window().as_secs()),
                    "never while consolidated: desktop serves pages on demand".to_owned(),
                ),
            };
            let way = match way {
                Way::Out => "out",
                Way::Back => "back",
            };
            println!(
                "| {} MiB | {} | {way} | {:.1} | {total} | {:.2} | {release} |",
                row.ram_mib,
                row.method,
                mib(m.bytes_to_run),
                m.to_run.as_secs_f64()
            );
        }
    }
    println!(
        "| 4 GiB | paper: full live migration (Xen 3.4, 813 Mbit/s) | out | - | {:.1} ({PAPER_FULL_GIB} GiB) | - | {PAPER_FULL_SECS} |",
        PAPER_FULL_GIB * 1024.0
    );
    println!("| 4 GiB | paper: Jettison consolidation (813 Mbit/s) | out | - | - | {PAPER_CONSOLIDATION_SECS} | never while consolidated |");
    println!(
        "| 4 GiB | paper: Jettison reintegration (813 Mbit/s) | back | - | {PAPER_REINTEGRATION_MIB} (memory) | \
         {PAPER_REINTEGRATION_SECS} | - |"
    );
    println!();
    match args.guest {
        GuestKind::Small => println!("While on the server, between the moves, the guest wrote random data to a tmpfs:"),
        GuestKind::Desktop => println!(
            "While on the server, between the moves, the guest ran as an idle desktop; then the guest agent found \
             Xorg, xfce4-session and firefox-esr running and the screen showed the session:"
        ),
    }
    println!();
    println!("| RAM | method | on the server | s | MiB on link meanwhile |");
    println!("|---:|---|---|---:|---:|");
    for row in rows {
        println!(
            "| {} MiB | {} | {} | {:.2} | {:.2} |",
            row.ram_mib,
            row.method,
            row.stay.what,
            row.stay.took.as_secs_f64(),
            mib(row.stay.link_bytes)
        );
    }
    println!();
    if args.guest == GuestKind::Desktop {
        println!(
            "The desktop guest's disk is shared storage (one qcow2 overlay per method, over the checkpoint's disk, \
             seen by both namespaces), as QEMU live migration is usually run: no disk block crosses the link for \
             any method. Jettison's way back sends the dirty memory set only; the real daemons also fetch disk \
             blocks on demand through cownetdisk and send dirty blocks back (see the desktop_guest test's figures). \
             \"Runs at the destination\" is the guest agent's first answer there (qemu-ga must execute in the \
             guest): a sync request waits on the destination's agent channel from the start of the move \
             (renewed after 5 s without an answer), so it is answered as soon as the guest runs qemu-ga there."
        );
        return;
    }
    if !args.sizes().contains(&4096) {
        println!(
            "4 GiB not run this time: it is in the default sizes (under TCG its guest fills {} MiB at boot, about \
             4 minutes for the size; /dev/shm needs about 12 GiB free for the checkpoint and two RAM files).",
            4096 * args.fill_percent / 100
        );
    }
    println!(
        "Jettison's way back moves memory only: the test guest has no disk in this benchmark, so no dirty \
         blocks travel (a desktop's would, in the same set format)."
    );
}
