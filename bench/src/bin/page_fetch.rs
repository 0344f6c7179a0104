//! Page-fetch benchmark (issue 2): how fast memtap delivers a consolidated
//! VM's pages from memserv over loopback, printed beside the limits it sits
//! between, all measured in the same run on the same bytes.
//!
//! The image is `--mib` MiB of pseudo-random bytes, so no page is all zero:
//! zero pages travel as few-byte markers and would flatter every figure.
//! The desktop side always reads it from the page cache: the file is
//! written, synced and read once before anything is timed.
//!
//! What each row is, and why it is there:
//!
//! - **Raw TCP stream** (the link's limit): the image sent over a plain
//!   `std::net` connection on 127.0.0.1 in 1 MiB writes, median of five
//!   (the row also shows the slowest and fastest copy).
//!   Every "x raw TCP" ratio divides by this figure.
//! - **Raw TCP ping-pong** (the floor for any page-at-a-time protocol): a
//!   16-byte request answered with one 4 KiB page of the image, for the same
//!   random pages the fault rows touch: no framing, no encryption, no FUSE.
//!   Every "x TCP RTT" ratio divides by its p50.
//! - **Local page cache** (a page that is already on this machine): the
//!   image mapped and read in order, copying each page to a buffer so the
//!   work matches the memtap rows; and the first touch of each random page
//!   through a mapping of that page alone, so the kernel's fault-around
//!   cannot have mapped it already: one minor fault per sample.
//! - **Wire alone**: `Client::read` of the image in 4 KiB and in 1 MiB
//!   ranges, one request at a time: memserv, the protocol and the Noise
//!   encryption without FUSE, which separates their cost from FUSE's.
//! - **memtap**: a fresh memserv and a fresh mount (fresh slices, empty page
//!   cache) for each row. Sequential: the mapped `vm1.ram` copied page by
//!   page with the paper's 20-page pivot window and with none. Random: the
//!   first touch of the same random pages as the baselines, through the
//!   same one-page mappings as the local row, with window 0 (every touch is
//!   a remote fault) and window 20, whose touches are also split into
//!   prefetch hits (a FUSE round trip, no wire) and misses (a fetch of the
//!   page and its window).
//!
//! Every wire and memtap row starts its own memserv, as a consolidation
//! does, so each pays for memserv's first touches of its own mapping alike.
//!
//! By default every thread of the run is pinned to one CPU (`--cpu`,
//! default 0; `--no-pin` to let the scheduler spread them). On a small VM a
//! wake-up across CPUs can cost tens of microseconds or almost nothing
//! depending on where the scheduler happened to put the two threads, and
//! that lottery, not the code, then decides the latency rows. Pinned, the
//! rows measure the work each path does; unpinned, the work plus the
//! machine's cross-CPU wake-ups.
//!
//! Throughput is in MB/s (10^6 bytes per second). A latency row's MB/s is
//! its pages back to back (4 KiB times samples over their summed time).
//! Latencies are per page, in microseconds. Needs root and FUSE; without
//! them it prints a `SKIPPED` line and exits 0.
//!
//! `cargo run --release -p bench --bin page_fetch [-- --mib 256 --samples 2000]`

use std::error::Error;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::link::{raw_tcp_ping_pong, raw_tcp_stream};
use bench::measure::{mb_per_s, micros, timed, CpuPinning, Latency};
use clap::Parser;
use memmap2::{Mmap, MmapOptions};
use memtap::{MemtapError, Mount, RamFileConfig, RamStats};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;
use tests::TestKeys;
use tests::{fuse_available, skip, DesktopServer};
use wire::{ByteRange, Chunk};

/// The page size everything is measured in.
const PAGE: usize = 4096;
/// The VM's name: memtap serves `vm1.ram`.
const VM: &str = "vm1";
/// One MiB: the raw stream's write size and the wire's large read.
const MIB: usize = 1 << 20;
/// Copies of the image over raw TCP; the median is the link's figure.
const STREAM_COPIES: usize = 5;
/// The paper's pivot window, memtap's default.
const PAPER_WINDOW: u64 = memtap::prefetch::DEFAULT_PIVOT_WINDOW;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Page-fetch throughput and per-fault latency through memtap, beside raw
/// TCP and the local page cache.
#[derive(Debug, Parser)]
struct Args {
    /// Size of the VM image in MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Random distinct pages touched in each latency row.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Seed of the image's bytes and of the random page order.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    #[command(flatten)]
    placement: CpuPinning,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(why) = fuse_available() {
        skip(format!("page_fetch needs a FUSE mount: {why}"));
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("page_fetch failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// One line of the results table.
#[derive(Debug)]
struct Row {
    method: String,
    mb_per_s: f64,
    latency: Option<Latency>,
}

impl Row {
    fn throughput(method: impl Into<String>, bytes: usize, elapsed: Duration) -> Row {
        Row { method: method.into(), mb_per_s: mb_per_s(bytes as u64, elapsed), latency: None }
    }

    /// A row of per-page samples; its MB/s is the pages back to back.
    fn latency(method: impl Into<String>, samples: &[Duration]) -> BenchResult<Row> {
        let latency = Latency::of(samples).ok_or("no latency samples")?;
        Ok(Row {
            method: method.into(),
            mb_per_s: mb_per_s((latency.count * PAGE) as u64, latency.total),
            latency: Some(latency),
        })
    }
}

/// memtap's counters after one run, for the stats section.
#[derive(Debug)]
struct RunStats {
    method: String,
    stats: RamStats,
}

/// What every measurement reads: the desktop's image, warm in the page
/// cache, and the random pages the latency rows touch.
#[derive(Debug)]
struct Setup {
    path: PathBuf,
    image: Mmap,
    pages: Vec<usize>,
    key: TestKeys,
}

fn run(args: &Args) -> BenchResult<()> {
    if args.mib == 0 {
        return Err("--mib must be at least 1".into());
    }
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    // Before any thread starts, so that all inherit it.
    args.placement.apply()?;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let path = write_image(dir.path(), args.mib, args.seed)?;
    let image = map_whole(&path)?;
    // Warm: the desktop side reads from the page cache in every row.
    black_box(image.chunks_exact(PAGE).fold(0u8, |acc, page| acc ^ page[0]));
    let pages = random_pages(image.len() / PAGE, args.samples, args.seed);
    let setup = Setup { path, image, pages, key: TestKeys::new() };

    let mut rows = link_rows(&setup)?;
    rows.extend(local_rows(&setup)?);
    rows.extend(wire_rows(&setup)?);
    let mut stats = Vec::new();
    rows.extend(memtap_sequential_rows(&setup, &mut stats)?);
    rows.extend(memtap_fault_rows(&setup, &mut stats)?);
    print_report(args, cpus, &rows, &stats, started.elapsed());
    Ok(())
}

/// Baseline A, the link: the raw TCP stream (first row: every ratio's
/// denominator) and the raw ping-pong (the first latency row: the round
/// trip the fault rows are compared to).
fn link_rows(setup: &Setup) -> BenchResult<Vec<Row>> {
    let image = &setup.image;
    let mut streams = (0..STREAM_COPIES).map(|_| raw_tcp_stream(image)).collect::<Result<Vec<_>, _>>()?;
    streams.sort_unstable();
    let rate = |d: &Duration| mb_per_s(image.len() as u64, *d);
    let (fastest, slowest) = (streams.first().map_or(0.0, rate), streams.last().map_or(0.0, rate));
    let method = format!("raw TCP stream, 1 MiB writes, median of {STREAM_COPIES} ({slowest:.0}-{fastest:.0})");
    Ok(vec![
        Row::throughput(method, image.len(), streams[STREAM_COPIES / 2]),
        Row::latency("raw TCP ping-pong, 16 B -> 4 KiB", &raw_tcp_ping_pong(image, &setup.pages)?)?,
    ])
}

/// Baseline B, pages already on this machine: a fresh mapping of the
/// image, read in order and touched at random.
fn local_rows(setup: &Setup) -> BenchResult<Vec<Row>> {
    let local = map_whole(&setup.path)?;
    let sequential = Row::throughput("local page cache, sequential copy", local.len(), copy_pages(&local));
    drop(local);
    let touches = first_touches(&File::open(&setup.path)?, &setup.pages, || 0)?;
    Ok(vec![sequential, Row::latency("local page cache, random first touch", &elapsed_of(&touches, |_| true))?])
}

/// The wire without FUSE, each read size from a fresh memserv as memtap gets.
fn wire_rows(setup: &Setup) -> BenchResult<Vec<Row>> {
    let small = wire_reads(setup, PAGE)?;
    let large: Duration = wire_reads(setup, MIB)?.iter().sum();
    Ok(vec![
        Row::latency("wire alone, 4 KiB reads", &small)?,
        Row::throughput("wire alone, 1 MiB reads", setup.image.len(), large),
    ])
}

/// memtap read in order, with the paper's window and with none.
fn memtap_sequential_rows(setup: &Setup, stats: &mut Vec<RunStats>) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for window in [PAPER_WINDOW, 0] {
        let method = format!("memtap sequential, window {window}");
        let run = MemtapRun::start(setup, window)?;
        let elapsed = copy_pages(run.ram());
        let counters = run.stats();
        if *run.ram() != *setup.image {
            return Err(format!("{method}: vm1.ram differs from the desktop's image").into());
        }
        run.close()?;
        rows.push(Row::throughput(&method, setup.image.len(), elapsed));
        stats.push(RunStats { method, stats: counters });
    }
    Ok(rows)
}

/// memtap's first touches of the random pages: window 0, where each is a
/// remote fault, and the paper's window, split into prefetch hits (a FUSE
/// round trip without the wire) and misses (which bring their window).
fn memtap_fault_rows(setup: &Setup, stats: &mut Vec<RunStats>) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for window in [0, PAPER_WINDOW] {
        let method = format!("memtap random fault, window {window}");
        let run = MemtapRun::start(setup, window)?;
        let touches = first_touches(run.file(), &setup.pages, || run.stats().prefetch_hits)?;
        let counters = run.stats();
        for &page in &setup.pages {
            let range = page * PAGE..(page + 1) * PAGE;
            if run.ram()[range.clone()] != setup.image[range] {
                return Err(format!("{method}: page {page} of vm1.ram differs from the desktop's").into());
            }
        }
        run.close()?;
        rows.push(Row::latency(&method, &elapsed_of(&touches, |_| true))?);
        if window > 0 {
            for (part, hit) in [("prefetch hits only", true), ("misses only", false)] {
                let part_samples = elapsed_of(&touches, |t| t.counted == hit);
                if !part_samples.is_empty() {
                    rows.push(Row::latency(format!("{method}, {part}"), &part_samples)?);
                }
            }
        }
        stats.push(RunStats { method, stats: counters });
    }
    Ok(rows)
}

/// Writes `mib` MiB of pseudo-random bytes and syncs them, so that no
/// writeback runs during the measurements.
fn write_image(dir: &Path, mib: usize, seed: u64) -> BenchResult<PathBuf> {
    let path = dir.join("desktop-vm1.ram");
    let mut file = File::create(&path)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chunk = vec![0u8; MIB];
    for _ in 0..mib {
        rng.fill_bytes(&mut chunk);
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(path)
}

/// Maps a whole file read-only: a fresh mapping, none of its pages mapped yet.
fn map_whole(path: &Path) -> BenchResult<Mmap> {
    let file = File::open(path)?;
    // SAFETY: read-only view of a file only this process uses; nobody
    // truncates it while mapped.
    Ok(unsafe { Mmap::map(&file) }?)
}

/// `count` distinct page numbers below `pages` in random order (all of them
/// if `count` is larger).
fn random_pages(pages: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    rand::seq::index::sample(&mut rng, pages, count.min(pages)).into_vec()
}

/// Copies every page of `map` in order into a buffer; the time taken.
fn copy_pages(map: &[u8]) -> Duration {
    let mut buf = vec![0u8; PAGE];
    let ((), elapsed) = timed(|| {
        for page in map.chunks_exact(PAGE) {
            buf.copy_from_slice(page);
            black_box(&mut buf);
        }
    });
    elapsed
}

/// One first touch of a page.
#[derive(Debug, Clone, Copy)]
struct Touch {
    elapsed: Duration,
    /// Whether `counter` moved during the touch (for memtap: a prefetch hit).
    counted: bool,
}

/// The first touch (one byte read) of each page in `pages`, each through a
/// mapping of that page alone: the kernel maps pages around a fault that
/// are already cached ("fault-around"), which would make later touches of a
/// whole mapping free. `counter` is read before and after each touch, untimed,
/// to classify it; mapping and unmapping are not timed either.
fn first_touches(file: &File, pages: &[usize], counter: impl Fn() -> u64) -> BenchResult<Vec<Touch>> {
    let mut touches = Vec::with_capacity(pages.len());
    for &page in pages {
        // SAFETY: a read-only view of one page of the image (or of memtap's
        // file for it); nobody truncates either while it is mapped.
        let map = unsafe { MmapOptions::new().offset((page * PAGE) as u64).len(PAGE).map(file) }?;
        let before = counter();
        let (byte, elapsed) = timed(|| black_box(map[0]));
        black_box(byte);
        touches.push(Touch { elapsed, counted: counter() != before });
    }
    Ok(touches)
}

/// The times of the touches `keep` selects.
fn elapsed_of(touches: &[Touch], keep: impl Fn(&Touch) -> bool) -> Vec<Duration> {
    touches.iter().filter(|t| keep(t)).map(|t| t.elapsed).collect()
}

/// Reads the whole image through one wire connection to a fresh memserv
/// serving the image, one request of `range_len` bytes at a time; each
/// request's time (the check of the answer against the image is not timed).
fn wire_reads(setup: &Setup, range_len: usize) -> BenchResult<Vec<Duration>> {
    let image = &setup.image;
    let server = DesktopServer::memserv(&setup.path, VM, &setup.key, "127.0.0.1:0");
    let remote = server.remote(VM, &setup.key);
    let mut client = remote.connect()?;
    let mut samples = Vec::with_capacity(image.len().div_ceil(range_len));
    for (i, want) in image.chunks(range_len).enumerate() {
        let range = ByteRange::new((i * range_len) as u64, u32::try_from(want.len())?);
        let (chunks, elapsed) = timed(|| client.read(&[range]));
        check_chunks(&chunks?, want, range.offset)?;
        samples.push(elapsed);
    }
    Ok(samples)
}

/// Checks that `chunks` carry exactly `want`, as bytes: the image has no
/// zero page, so a zero marker is wrong too.
fn check_chunks(chunks: &[Chunk], want: &[u8], offset: u64) -> BenchResult<()> {
    let mut got = Vec::with_capacity(want.len());
    for chunk in chunks {
        match chunk {
            Chunk::Bytes { data, .. } => got.extend_from_slice(data),
            Chunk::Zero { offset, .. } => return Err(format!("memserv sent a zero marker at {offset:#x}").into()),
        }
    }
    if got != want {
        return Err(format!("memserv's answer at {offset:#x} differs from the image").into());
    }
    Ok(())
}

/// A fresh memserv and memtap mount of the image with `vm1.ram` open and
/// mapped. Releases them in the order the kernel needs (mapping and file
/// first, else the unmount is refused as busy), on error paths too.
#[derive(Debug)]
struct MemtapRun {
    map: Option<Mmap>,
    file: Option<File>,
    mount: Option<Mount>,
    // Dropped after the mount: memtap's connections close before memserv stops.
    _server: DesktopServer,
    // Dropped last: holds the mountpoint and the slices.
    _dir: TempDir,
}

impl MemtapRun {
    fn start(setup: &Setup, window: u64) -> BenchResult<MemtapRun> {
        let key = &setup.key;
        let dir = tempfile::tempdir()?;
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint)?;
        let server = DesktopServer::memserv(&setup.path, VM, key, "127.0.0.1:0");
        let mut config = RamFileConfig::new(VM, dir.path().join("slices"), server.remote(VM, key));
        config.pivot_window = window;
        let mount = Mount::start(&mountpoint, vec![config])?;
        let mut run = MemtapRun { map: None, file: None, mount: Some(mount), _server: server, _dir: dir };
        let file = File::open(mountpoint.join(format!("{VM}.ram")))?;
        // SAFETY: a read-only view of memtap's file, which never changes
        // size while mounted.
        run.map = Some(unsafe { Mmap::map(&file) }?);
        run.file = Some(file);
        Ok(run)
    }

    /// The VM's RAM, mapped whole.
    fn ram(&self) -> &[u8] {
        self.map.as_deref().expect("mapped from start until close")
    }

    /// `vm1.ram`, open.
    fn file(&self) -> &File {
        self.file.as_ref().expect("open from start until close")
    }

    /// memtap's counters for the VM now.
    fn stats(&self) -> RamStats {
        self.mount.as_ref().and_then(|m| m.vms().first()).map(|vm| vm.stats()).unwrap_or_default()
    }

    /// Unmounts cleanly, reporting a refused unmount.
    fn close(mut self) -> Result<(), MemtapError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), MemtapError> {
        self.map = None;
        self.file = None;
        self.mount.take().map_or(Ok(()), Mount::unmount)
    }
}

impl Drop for MemtapRun {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("page_fetch: memtap unmount: {}", wire::chain(&e));
        }
    }
}

/// Prints the table, the ratios in words, and memtap's counters.
fn print_report(args: &Args, cpus: usize, rows: &[Row], stats: &[RunStats], took: Duration) {
    let tcp = rows.first().map_or(0.0, |r| r.mb_per_s);
    let placement = args.placement.describe();
    let rtt = rows.iter().find_map(|r| r.latency).map_or(Duration::ZERO, |l| l.p50);
    println!(
        "page_fetch: {} MiB image, {} random pages, seed {}, {cpus} CPUs, {placement}, loopback; MB/s = 10^6 B/s; run took {:.1} s",
        args.mib,
        rows.iter().find_map(|r| r.latency).map_or(0, |l| l.count),
        args.seed,
        took.as_secs_f64()
    );
    println!();
    println!("| method | MB/s | x raw TCP | p50 us | p99 us | p50 x TCP RTT |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let (p50, p99, vs_rtt) = match row.latency {
            Some(l) => (
                format!("{:.1}", micros(l.p50)),
                format!("{:.1}", micros(l.p99)),
                format!("{:.2}", l.p50.as_secs_f64() / rtt.as_secs_f64()),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!("| {} | {:.1} | {:.3} | {p50} | {p99} | {vs_rtt} |", row.method, row.mb_per_s, row.mb_per_s / tcp);
    }
    println!();
    for row in rows.iter().filter(|r| r.method.starts_with("memtap") || r.method.starts_with("wire")) {
        print!("{}: {:.1} MB/s = {:.3} x raw TCP", row.method, row.mb_per_s, row.mb_per_s / tcp);
        match row.latency {
            Some(l) => println!(
                "; p50 {:.1} us = {:.1} x raw TCP round trip",
                micros(l.p50),
                l.p50.as_secs_f64() / rtt.as_secs_f64()
            ),
            None => println!(),
        }
    }
    println!();
    println!("memtap counters per row:");
    for run in stats {
        let s = &run.stats;
        let looked_up = s.prefetch_hits + s.prefetch_misses;
        let hit_rate = if looked_up == 0 { 0.0 } else { 100.0 * s.prefetch_hits as f64 / looked_up as f64 };
        println!(
            "  {}: {} faults in {} reads, {} remote fetches, {} pages fetched, prefetch {} hits / {} misses ({hit_rate:.1}% hit rate)",
            run.method, s.faults, s.read_requests, s.remote_fetches, s.pages_fetched, s.prefetch_hits, s.prefetch_misses
        );
    }
}
