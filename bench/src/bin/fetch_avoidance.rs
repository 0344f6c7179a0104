//! Fetch avoidance benchmark (issue 4, item 5): how many of the pages a
//! consolidated guest touches on the server are never fetched from the
//! desktop, because the desktop knew them to be zero.
//!
//! The paper patched its Linux guest so that pages about to be overwritten
//! whole (fresh allocations, zeroed anyway) were not fetched: 9.06 MiB of
//! a 165.63 MiB working set. Jettison-rs patches nothing. It has the zero
//! map (holes and all-zero pages of the desktop's RAM file, taken at
//! consolidation and served by memtap without a fetch) and virtio-balloon
//! free page reporting (the guest reports what it frees, QEMU punches it
//! out of the RAM file, so it joins the zero map). This measures each.
//!
//! Why it is built so:
//!
//! - **A guest that used memory and gave it back.** `jt.fill` keeps
//!   `--fill-mib` of random data (the guest's live state); `jt.free` writes
//!   `--free-mib` more and frees it, as a closed application would. Without
//!   reporting that memory is free in the guest but still random data in
//!   the RAM file; with reporting it should be holes.
//! - **A guest that reuses it on the server.** `jt.later` makes the guest
//!   write `--later-mib` of new data after `--later-secs` of counting (in
//!   counter ticks, so it happens after the move, on memtap): the kernel
//!   hands out free pages, and each first touch is a FUSE read that memtap
//!   answers from the zero map or by a fetch. That is the case the paper's
//!   patch was for: pages whose old content nobody needs.
//! - **Two boots, three configurations.** One boot with the balloon off and
//!   one with it on, each checkpointed after `--report-secs` of idling (the
//!   guest reports free memory about 2 s after it is freed). The first is
//!   resumed on memtap twice, (a) without a zero map and (b) with it; the
//!   second once, (c) with its zero map. `--init-on-free` adds (d): a boot
//!   with the guest's `init_on_free=1` and no balloon, with its zero map.
//! - **Counted by memtap**: pages it served as zero from the zero map
//!   (never fetched), pages it received from memserv (faulting and
//!   prefetched, zero markers included) and their page data.
//!
//! Needs root, FUSE, QEMU and the test guest; without them it prints a
//! `SKIPPED` line and exits 0. QEMUs, mounts, daemons and files (in
//! `/dev/shm`) are removed by drop guards, also on an error.
//!
//! `cargo run --release -p bench --bin fetch_avoidance [-- --ram-mib 256,1024 --init-on-free]`

use std::error::Error;
use std::fs;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser;
use memtap::{Mount, RamFileConfig, RamStats, PAGE_SIZE};
use migration_formats::zero_map;
use qemu_driver::{resume, save_device_state, GuestImage, VmSpec};
use tests::TestKeys;
use tests::{fuse_available, guest, skip, DesktopServer, BOOT_TIMEOUT, COUNT_TIMEOUT};

/// The VM's name: memserv's export and memtap's `vm1.ram`.
const VM: &str = "vm1";
/// One MiB.
const MIB: f64 = 1048576.0;
/// The guest's counter ticks per second (`sleep 0.2` between counts).
const COUNTS_PER_SEC: u64 = 5;
/// The paper's working set of an idle desktop VM, in MiB (mean).
const PAPER_WORKING_SET_MIB: f64 = 165.63;
/// What the paper's guest kernel patch saved of it, in MiB.
const PAPER_SAVED_MIB: f64 = 9.06;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Pages never fetched thanks to the zero map, with and without
/// virtio-balloon free page reporting, beside the paper's guest patch.
#[derive(Debug, Parser)]
struct Args {
    /// Guest RAM sizes in MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [256u64])]
    ram_mib: Vec<u64>,
    /// Random data the guest keeps in RAM (`jt.fill`).
    #[arg(long, default_value_t = 64)]
    fill_mib: u64,
    /// Random data the guest writes and frees again before it idles
    /// (`jt.free`).
    #[arg(long, default_value_t = 96)]
    free_mib: u64,
    /// Random data the guest writes on the server (`jt.later`).
    #[arg(long, default_value_t = 96)]
    later_mib: u64,
    /// Seconds of counting after which the guest writes `--later-mib`; must
    /// be well past `--report-secs`, so that it happens on the server.
    #[arg(long, default_value_t = 12)]
    later_secs: u64,
    /// Seconds the guest idles on the desktop before it is checkpointed,
    /// for free page reporting to run.
    #[arg(long, default_value_t = 5)]
    report_secs: u64,
    /// Adds configuration (d): the guest zeroes pages as it frees them
    /// (`init_on_free=1`), no balloon, zero map on.
    #[arg(long)]
    init_on_free: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let guest = match preflight() {
        Ok(guest) => guest,
        Err(why) => {
            skip(format!("fetch_avoidance: {why}"));
            return ExitCode::SUCCESS;
        }
    };
    match run(&args, &guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fetch_avoidance failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The test guest, or why this machine cannot run the benchmark.
fn preflight() -> Result<GuestImage, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (FUSE mounts for memtap)".into());
    }
    fuse_available()?;
    guest()
}

/// How the guest is booted on the desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    /// No balloon device: freed memory stays in the RAM file.
    Plain,
    /// The profile's default: virtio-balloon with free page reporting.
    Reporting,
    /// No balloon, but the guest zeroes what it frees (`init_on_free=1`).
    InitOnFree,
}

impl Boot {
    fn name(self) -> &'static str {
        match self {
            Boot::Plain => "no reporting",
            Boot::Reporting => "free page reporting",
            Boot::InitOnFree => "init_on_free=1, no reporting",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Boot::Plain => "plain",
            Boot::Reporting => "reporting",
            Boot::InitOnFree => "init-on-free",
        }
    }
}

/// One way of resuming a checkpoint on memtap.
#[derive(Debug, Clone, Copy)]
struct Config {
    label: &'static str,
    boot: Boot,
    zero_map: bool,
}

const CONFIGS: [Config; 4] = [
    Config { label: "(a) no zero map, no reporting", boot: Boot::Plain, zero_map: false },
    Config { label: "(b) zero map only", boot: Boot::Plain, zero_map: true },
    Config { label: "(c) zero map + free page reporting", boot: Boot::Reporting, zero_map: true },
    Config { label: "(d) zero map + guest init_on_free=1", boot: Boot::InitOnFree, zero_map: true },
];

/// A guest stopped on the desktop: its RAM file, descriptor and zero map.
struct Checkpoint {
    boot: Boot,
    ram_mib: u64,
    kernel_args: String,
    ram: PathBuf,
    state: PathBuf,
    count: u64,
    zeros: Vec<Range<u64>>,
    zero_pages: u64,
    /// Pages of the RAM file with no storage behind them (holes).
    hole_pages: u64,
}

impl Checkpoint {
    fn spec(&self, guest: &GuestImage, ram: &Path, run_dir: PathBuf) -> VmSpec {
        VmSpec::new(guest, ram, run_dir)
            .memory_mib(self.ram_mib)
            .kernel_args(&self.kernel_args)
            .free_page_reporting(self.boot == Boot::Reporting)
    }
}

/// One configuration's result on memtap.
struct Row {
    ram_mib: u64,
    config: Config,
    zero_map_pages: u64,
    /// memtap's counters once the guest had counted past the checkpoint.
    at_resume: RamStats,
    /// memtap's counters after the guest wrote `--later-mib` and counted on.
    at_end: RamStats,
    /// QEMU's complaints about discarding reported pages on memtap's file.
    discard_errors: usize,
}

fn run(args: &Args, guest: &GuestImage) -> BenchResult<()> {
    if args.later_secs <= args.report_secs + 3 {
        return Err("--later-secs must be at least --report-secs + 4, so the guest writes after the move".into());
    }
    let started = Instant::now();
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let mut checkpoints = Vec::new();
    let mut rows = Vec::new();
    for &ram_mib in &args.ram_mib {
        if args.fill_mib + args.free_mib.max(args.later_mib) + 64 > ram_mib {
            return Err(format!(
                "a {ram_mib} MiB guest cannot hold --fill-mib plus --free-mib or --later-mib and its kernel"
            )
            .into());
        }
        let boots: &[Boot] = if args.init_on_free {
            &[Boot::Plain, Boot::Reporting, Boot::InitOnFree]
        } else {
            &[Boot::Plain, Boot::Reporting]
        };
        for &boot in boots {
            // Removed when this size is done, also on an error.
            let dir = tempfile::Builder::new().prefix("jt-fetch-avoidance-").tempdir_in(&base)?;
            let cp = checkpoint(args, guest, dir.path(), ram_mib, boot)?;
            println!(
                "  {ram_mib} MiB, {}: zero map {:.1} MiB ({:.1} MiB of it holes) at count {}",
                boot.name(),
                pages_mib(cp.zero_pages),
                pages_mib(cp.hole_pages),
                cp.count
            );
            for config in CONFIGS.iter().filter(|c| c.boot == boot) {
                let row = on_memtap(args, guest, dir.path(), &cp, *config)?;
                println!(
                    "  {ram_mib} MiB, {}: {} touched, {} served as zero, {} fetched",
                    config.label, row.at_end.faults, row.at_end.zero_pages_served, row.at_end.pages_fetched
                );
                rows.push(row);
            }
            checkpoints.push((cp.ram_mib, cp.boot, cp.zero_pages, cp.hole_pages));
            drop(dir);
        }
    }
    print_report(args, &checkpoints, &rows, started.elapsed());
    Ok(())
}

fn pages_mib(pages: u64) -> f64 {
    (pages * PAGE_SIZE) as f64 / MIB
}

/// Boots the guest on the desktop, lets it fill, free and idle, stops it,
/// saves its descriptor and maps the zero pages of its RAM file.
fn checkpoint(args: &Args, guest: &GuestImage, dir: &Path, ram_mib: u64, boot: Boot) -> BenchResult<Checkpoint> {
    let mut kernel_args =
        format!("jt.fill={} jt.free={} jt.later={}:{}", args.fill_mib, args.free_mib, args.later_secs, args.later_mib);
    if boot == Boot::InitOnFree {
        kernel_args.push_str(" init_on_free=1");
    }
    let mut cp = Checkpoint {
        boot,
        ram_mib,
        kernel_args,
        ram: dir.join("desktop.ram"),
        state: dir.join("desktop.state"),
        count: 0,
        zeros: Vec::new(),
        zero_pages: 0,
        hole_pages: 0,
    };
    let spec = cp.spec(guest, &cp.ram, dir.join(format!("{}-desktop", boot.tag())));
    let mut qemu = spec.spawn()?;
    let booting = Instant::now();
    let written = Duration::from_secs((args.fill_mib + args.free_mib) / 4);
    qemu.wait_for_line("JTFREED", BOOT_TIMEOUT + written)?;
    qemu.wait_for_line("JTREADY", COUNT_TIMEOUT)?;
    println!("  {ram_mib} MiB, {}: booted, filled and freed in {:.1} s", boot.name(), booting.elapsed().as_secs_f64());
    qemu.wait_for_count_above(1, COUNT_TIMEOUT)?;
    sleep(Duration::from_secs(args.report_secs));
    let mut qmp = qemu.connect_qmp()?;
    save_device_state(&mut qmp, &cp.state)?;
    let log = qemu.serial().read()?;
    if log.contains("JTLATER") {
        return Err(format!(
            "the guest wrote its later data on the desktop already (slow boot?); raise --later-secs above {}",
            args.later_secs
        )
        .into());
    }
    cp.count = qemu.serial().counts()?.last().copied().ok_or("no JTCOUNT before the checkpoint")?;
    if cp.count >= args.later_secs * COUNTS_PER_SEC {
        return Err(format!("checkpointed at count {}, past the later write; raise --later-secs", cp.count).into());
    }
    drop((qmp, qemu));
    cp.zeros = zero_map::scan_file(&cp.ram, PAGE_SIZE as u32)?;
    cp.zero_pages = cp.zeros.iter().map(|r| r.end - r.start).sum();
    let meta = fs::metadata(&cp.ram)?;
    let pages = meta.len() / PAGE_SIZE;
    cp.hole_pages = pages.saturating_sub(meta.blocks() * 512 / PAGE_SIZE);
    Ok(cp)
}

/// Resumes the checkpoint on memtap (memserv serving the desktop's RAM
/// file) and counts what memtap served and fetched until the guest has
/// written its later data.
fn on_memtap(args: &Args, guest: &GuestImage, dir: &Path, cp: &Checkpoint, config: Config) -> BenchResult<Row> {
    let tag = format!("{}-{}", cp.boot.tag(), if config.zero_map { "zero-map" } else { "no-zero-map" });
    let key = TestKeys::new();
    // Declared before the mount and QEMU, so dropped after them.
    let memserv = DesktopServer::memserv(&cp.ram, VM, &key, "127.0.0.1:0");
    let mountpoint = dir.join(format!("{tag}-memtap"));
    fs::create_dir_all(&mountpoint)?;
    let mut vm = RamFileConfig::new(VM, dir.join(format!("{tag}-slices")), memserv.remote(VM, &key));
    if config.zero_map {
        vm.zero_pages = cp.zeros.clone();
    }
    let zero_map_pages = vm.zero_pages.iter().map(|r| r.end - r.start).sum();
    let mount = Mount::start(&mountpoint, vec![vm])?;
    let spec = cp.spec(guest, &mountpoint.join(format!("{VM}.ram")), dir.join(format!("{tag}-server")));
    let (mut qemu, qmp) = resume(spec, &cp.state)?;
    qemu.wait_for_count_above(cp.count, COUNT_TIMEOUT)?;
    let at_resume = mount.vms()[0].stats();
    let writing = Duration::from_secs(args.later_secs + args.later_mib);
    qemu.wait_for_line("JTLATER", COUNT_TIMEOUT + writing)?;
    let after = qemu.serial().counts()?.last().copied().unwrap_or(0);
    qemu.wait_for_count_above(after + 2, COUNT_TIMEOUT)?;
    let at_end = mount.vms()[0].stats();
    drop((qmp, qemu));
    let discard_errors = fs::read_to_string(dir.join(format!("{tag}-server")).join("qemu.log"))
        .map(|log| log.lines().filter(|l| l.contains("discard") || l.contains("fallocate")).count())
        .unwrap_or(0);
    mount.unmount()?;
    drop(memserv);
    fs::remove_dir_all(dir.join(format!("{tag}-slices")))?;
    Ok(Row { ram_mib: cp.ram_mib, config, zero_map_pages, at_resume, at_end, discard_errors })
}

fn print_report(args: &Args, checkpoints: &[(u64, Boot, u64, u64)], rows: &[Row], elapsed: Duration) {
    println!();
    println!(
        "fetch_avoidance: guest keeps {} MiB of random data, writes and frees {} MiB more, idles {} s on the \
         desktop, is resumed on memtap and writes {} MiB of new data there after {} s of counting; TCG guest, \
         {} CPUs; run took {:.0} s",
        args.fill_mib,
        args.free_mib,
        args.report_secs,
        args.later_mib,
        args.later_secs,
        std::thread::available_parallelism().map_or(0, usize::from),
        elapsed.as_secs_f64()
    );
    println!();
    println!("RAM file at consolidation:");
    println!();
    println!("| RAM | guest | zero map (MiB) | of it holes (MiB) |");
    println!("|---:|---|---:|---:|");
    for (ram_mib, boot, zero, holes) in checkpoints {
        println!("| {ram_mib} MiB | {} | {:.1} | {:.1} |", boot.name(), pages_mib(*zero), pages_mib(*holes));
    }
    println!();
    println!("On memtap, from resume until the guest wrote its new data (MiB = pages x 4 KiB):");
    println!();
    println!(
        "| RAM | configuration | zero map (MiB) | touched (MiB) | served as zero, never fetched (MiB) | \
         fetched from memserv (MiB, pages) | of it page data (MiB) | saved (% of touched) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let s = &row.at_end;
        let saved = if s.faults == 0 { 0.0 } else { 100.0 * s.zero_pages_served as f64 / s.faults as f64 };
        println!(
            "| {} MiB | {} | {:.1} | {:.1} | {:.2} | {:.1} ({}) | {:.1} | {saved:.1}% |",
            row.ram_mib,
            row.config.label,
            pages_mib(row.zero_map_pages),
            pages_mib(s.faults),
            pages_mib(s.zero_pages_served),
            pages_mib(s.pages_fetched),
            s.pages_fetched,
            s.bytes_fetched as f64 / MIB,
        );
    }
    println!(
        "| 4 GiB | paper: guest kernel patch (Xen 3.4, Linux 2.6) | - | {PAPER_WORKING_SET_MIB} | {PAPER_SAVED_MIB} | \
         - | - | {:.1}% |",
        100.0 * PAPER_SAVED_MIB / PAPER_WORKING_SET_MIB
    );
    println!();
    println!("Of which until the guest counted on memtap (before the new data):");
    println!();
    println!("| RAM | configuration | touched (MiB) | served as zero (MiB) | fetched (MiB) |");
    println!("|---:|---|---:|---:|---:|");
    for row in rows {
        let s = &row.at_resume;
        println!(
            "| {} MiB | {} | {:.1} | {:.2} | {:.1} |",
            row.ram_mib,
            row.config.label,
            pages_mib(s.faults),
            pages_mib(s.zero_pages_served),
            pages_mib(s.pages_fetched)
        );
    }
    let complaints: usize = rows.iter().map(|r| r.discard_errors).sum();
    if complaints > 0 {
        println!();
        println!(
            "NOTE: QEMU logged {complaints} discard/fallocate errors on memtap's file: pages the guest reported \
             while consolidated are not discarded there (memtap has no fallocate)."
        );
    }
    println!();
    println!(
        "touched = pages the guest read through memtap's FUSE file (its first touches); served as zero = answered \
         from the zero map without a request; fetched = pages memserv sent (faulting and prefetched, zero markers \
         included), page data = their non-zero bytes. The paper's figures are the mean over idle 4 GiB desktop VMs."
    );
}
