//! Disk I/O benchmark (issue 3, item 6): what a consolidated VM's disk
//! costs through cownetdisk, printed beside the servers and links it
//! stands in for, all measured in the same run on the same bytes by the
//! same NBD client ([`bench::nbd`]).
//!
//! The image is `--mib` MiB of pseudo-random bytes, so no block is all
//! zero: zero runs travel from diskserv as few-byte markers and would
//! flatter every cold figure. Both the desktop's image and qemu-nbd's copy
//! of it are written, synced and left in the page cache before anything is
//! timed. They are written 4 KiB at a time, as cownetdisk fills its slices
//! (one `pwrite` per block), so that every file either server uses sits in
//! the page cache in the same shape: the page cache keeps the large folios
//! a file was written in, and a copy written in one 256 MiB write made
//! qemu-nbd's 4 KiB writes about twice as slow, a property of the setup
//! rather than of qemu-nbd.
//!
//! What each row is, and why its baseline is the one it is compared to:
//!
//! - **qemu-nbd** (the real peer of a warm cownetdisk): `qemu-nbd -f raw
//!   --cache=writeback` serving a copy of the image from local disk (it is
//!   written to) on a Unix socket, as a child process. It stands for the
//!   disk of a VM that was never migrated, reached over the same protocol
//!   (a VM on cownetdisk reaches its disk through QEMU's NBD client too),
//!   so "x qemu-nbd" is the price of cownetdisk's slices and bitmaps once
//!   every block is here.
//! - **cownetdisk warm**: diskserv on 127.0.0.1 and cownetdisk on a Unix
//!   socket, threads of this process, after one untimed read of the whole
//!   image through cownetdisk (which fetches every block and checks every
//!   byte). Its counters are printed per row: a warm row fetches nothing.
//! - Both servers get the same four patterns at each `--depth`, reads
//!   first (they check the image's bytes, which the writes change):
//!   4 KiB random reads and writes (aligned, uniformly over the image, the
//!   same offsets for both servers: IOPS, per-request p50/p99), and 1 MiB
//!   sequential reads and writes (MB/s), each for `--seconds`. After each
//!   write row an untimed `NBD_CMD_FLUSH` puts the data on disk, so the
//!   next row does not inherit the writeback; its time is printed.
//! - **cownetdisk cold** (the price of fetching): a fresh state directory
//!   for every row, so every block read is fetched from diskserv. The
//!   whole image read in order in 1 MiB requests is compared to the **raw
//!   TCP stream** (the image sent over a plain `std::net` connection on
//!   the same loopback in 1 MiB writes, median of five; the row shows the
//!   slowest and fastest): the most the link carries. 4 KiB random reads
//!   of distinct blocks (each a remote fetch), for `--seconds` or until
//!   every block has been read, are compared
//!   to the **raw TCP ping-pong** (a 16-byte request answered with a 4 KiB
//!   block of the image, the same blocks in the same order): the least a
//!   block-at-a-time fetch can cost on this link.
//!
//! The client keeps `--depth` requests in flight on one connection (NBD
//! allows many; cownetdisk answers one connection's requests in order,
//! qemu-nbd as they complete). Latency is per request, from queued to fully
//! answered, so at depth > 1 it includes the wait behind the requests
//! ahead. Every 16th read reply is compared with the image in every row
//! (both servers alike); the warm-up and a second pass after each cold
//! sequential row compare every byte.
//!
//! By default every thread of the run, and qemu-nbd, which inherits it, is
//! pinned to one CPU (`--cpu`, default 0; `--no-pin` to let the scheduler
//! spread them), as in `page_fetch`: on a small VM a wake-up across CPUs
//! costs tens of microseconds or nothing depending on where the scheduler
//! put the two threads, and that lottery would decide the latency rows.
//! Pinned, neither server can use a second core, so depth measures the
//! batching of requests and replies, not parallel work.
//!
//! Before every timed row the file system holding the images and slices is
//! synced (`syncfs`, untimed): otherwise the kernel writes back an earlier
//! row's data (the warm-up's 256 MiB of fetched slice, say) 30 s later, in
//! the middle of whatever row is running then. A row's own writes stay in
//! the page cache, as they would for a VM.
//!
//! The header says how much CPU time other processes used during the run
//! (CPU-seconds per second): on a shared machine a test running at the
//! same time moves every figure, and a run where that is not near 0 should
//! be measured again.
//!
//! MB/s is 10^6 bytes per second. Without `qemu-nbd` on the PATH it prints
//! a `SKIPPED` line and exits 0.
//!
//! `cargo run --release -p bench --bin disk_io [-- --mib 256 --seconds 3 --depth 1,16]`

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::link::{raw_tcp_ping_pong, raw_tcp_stream};
use bench::measure::{mb_per_s, micros, timed, CpuAccount, CpuPinning, Latency};
use bench::nbd::{Budget, NbdClient, NbdClientError, Op, Run};
use clap::Parser;
use cownetdisk::{Disk, DiskConfig, DiskStats, Listen, NbdServer};
use image_server::ServeConfig;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tempfile::TempDir;
use tests::skip;
use tests::TestKeys;
use wire::{Hello, NoWake, RemoteConfig, Service};

/// The block size of every small request, of cownetdisk's slices and of
/// diskserv's zero markers.
const BLOCK: usize = 4096;
/// The size of every large request.
const MIB: usize = 1 << 20;
/// The VM's name: the NBD export and diskserv's export.
const VM: &str = "vm1";
/// Copies of the image over raw TCP; the median is the link's figure.
const STREAM_COPIES: usize = 5;
/// Most blocks the raw ping-pong asks for.
const PING_PONG_SAMPLES: usize = 20_000;
/// In timed rows, one read reply in this many is compared with the image.
const CHECK_EVERY: u64 = 16;
/// How long qemu-nbd may take to accept its first client.
const QEMU_NBD_START: Duration = Duration::from_secs(10);

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// 4 KiB random and 1 MiB sequential I/O through cownetdisk, warm beside
/// qemu-nbd and cold beside raw TCP.
#[derive(Debug, Parser)]
struct Args {
    /// Size of the disk image in MiB.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Seconds each timed row sends requests for (a cold sequential row
    /// reads the whole image instead).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Requests kept in flight on the connection; every row is measured
    /// at each depth given.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    depth: Vec<usize>,
    /// Seed of the image's bytes and of the random offsets.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    #[command(flatten)]
    placement: CpuPinning,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !on_path("qemu-nbd") {
        skip("disk_io needs qemu-nbd as its baseline (apt-get install qemu-utils)");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disk_io failed: {}", wire::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Whether `program` is an executable file on the PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
}

/// One of the four I/O patterns both servers are measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    RandomRead,
    SequentialRead,
    RandomWrite,
    SequentialWrite,
}

impl Pattern {
    /// In the order they run: reads first, while the disk still holds the
    /// image they are checked against.
    const ALL: [Pattern; 4] =
        [Pattern::RandomRead, Pattern::SequentialRead, Pattern::RandomWrite, Pattern::SequentialWrite];

    fn name(self) -> &'static str {
        match self {
            Pattern::RandomRead => "4 KiB random read",
            Pattern::SequentialRead => "1 MiB sequential read",
            Pattern::RandomWrite => "4 KiB random write",
            Pattern::SequentialWrite => "1 MiB sequential write",
        }
    }

    fn is_random(self) -> bool {
        matches!(self, Pattern::RandomRead | Pattern::RandomWrite)
    }

    fn is_write(self) -> bool {
        matches!(self, Pattern::RandomWrite | Pattern::SequentialWrite)
    }

    fn request_len(self) -> usize {
        if self.is_random() {
            BLOCK
        } else {
            MIB
        }
    }
}

/// What every measurement reads and writes.
#[derive(Debug)]
struct Setup {
    /// The desktop's image (diskserv's), synced.
    path: PathBuf,
    /// Its bytes, to check reads against.
    image: Vec<u8>,
    /// What the write rows write: other pseudo-random bytes, no zero block.
    payload: Vec<u8>,
    /// Every block number in one random order: the cold random rows and
    /// the ping-pong read them in this order.
    shuffled: Vec<usize>,
    key: TestKeys,
    row_time: Duration,
    depths: Vec<usize>,
    seed: u64,
    // Last: holds the image, qemu-nbd's copy, the sockets and the slices.
    dir: TempDir,
}

/// One line of the results table.
#[derive(Debug)]
struct Row {
    method: String,
    depth: Option<usize>,
    iops: Option<f64>,
    mb_per_s: f64,
    /// Printed for per-request rows (the random ones and the ping-pong).
    latency: Option<Latency>,
    /// How it compares with its baseline; `None` for a baseline.
    versus: Option<Versus>,
}

/// A row's figures over its baseline's.
#[derive(Debug, Clone, Copy)]
struct Versus {
    /// This row's MB/s (so also IOPS) over the baseline's.
    ratio: f64,
    /// The baseline's name.
    baseline: &'static str,
    /// The baseline's median latency, if it has one.
    baseline_p50: Option<Duration>,
}

impl Row {
    fn of_run(method: String, depth: usize, run: &Run, per_request: bool) -> Row {
        Row {
            method,
            depth: Some(depth),
            iops: Some(run.latencies.len() as f64 / run.elapsed.as_secs_f64()),
            mb_per_s: mb_per_s(run.bytes, run.elapsed),
            latency: if per_request { Latency::of(&run.latencies) } else { None },
            versus: None,
        }
    }

    fn versus(mut self, baseline: &Row, name: &'static str) -> Row {
        self.versus = Some(Versus {
            ratio: self.mb_per_s / baseline.mb_per_s,
            baseline: name,
            baseline_p50: baseline.latency.map(|l| l.p50),
        });
        self
    }
}

/// cownetdisk's counters around one row, and anything else worth a line.
#[derive(Debug, Default)]
struct Notes {
    lines: Vec<String>,
}

impl Notes {
    fn counters(&mut self, method: &str, before: &DiskStats, after: &DiskStats) {
        self.lines.push(format!(
            "{method}: {} reads, {} writes, {} blocks fetched in {} diskserv requests ({} in all), \
             {} whole-block writes, {} partial-write fetches, {} dirty blocks",
            after.requests.read - before.requests.read,
            after.requests.write - before.requests.write,
            after.blocks_fetched - before.blocks_fetched,
            after.remote_requests - before.remote_requests,
            after.blocks_fetched,
            after.whole_block_writes - before.whole_block_writes,
            after.partial_write_fetches - before.partial_write_fetches,
            after.dirty_blocks,
        ));
    }
}

fn run(args: &Args) -> BenchResult<()> {
    if args.mib == 0 || args.depth.contains(&0) || !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err("--mib, --seconds and every --depth must be above zero".into());
    }
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    // Before any thread or child starts, so that all inherit it.
    args.placement.apply()?;
    let started = Instant::now();
    let cpu_time = CpuAccount::start()?;
    let setup = make_setup(args)?;
    let mut notes = Notes::default();
    let (stream, ping_pong) = link_rows(&setup)?;
    let qemu = qemu_nbd_rows(&setup, &mut notes)?;
    let diskserv = Diskserv::start(&setup.path, &setup.key)?;
    let warm = cownetdisk_warm_rows(&setup, &diskserv, &mut notes)?;
    let cold_sequential = cold_sequential_rows(&setup, &diskserv, &stream, &mut notes)?;
    let cold_random = cold_random_rows(&setup, &diskserv, &ping_pong, &mut notes)?;
    drop(diskserv);
    let mut rows = vec![stream, ping_pong];
    for (baseline, row) in qemu.into_iter().zip(warm) {
        let row = row.versus(&baseline, "qemu-nbd");
        rows.extend([baseline, row]);
    }
    rows.extend(cold_sequential.into_iter().chain(cold_random));
    drop(setup);
    let others = cpu_time.others_per_second()?;
    print_report(args, Machine { cpus, others }, &rows, &notes, started.elapsed());
    Ok(())
}

fn make_setup(args: &Args) -> BenchResult<Setup> {
    let dir = tempfile::tempdir()?;
    let image = random_bytes(args.mib * MIB, args.seed);
    let path = dir.path().join("desktop-vm1.raw");
    write_synced(&path, &image)?;
    let blocks = image.len() / BLOCK;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    Ok(Setup {
        path,
        payload: random_bytes(MIB, !args.seed),
        shuffled: rand::seq::index::sample(&mut rng, blocks, blocks).into_vec(),
        image,
        key: TestKeys::new(),
        row_time: Duration::from_secs_f64(args.seconds),
        depths: args.depth.clone(),
        seed: args.seed,
        dir,
    })
}

/// `len` pseudo-random bytes (with overwhelming odds, no zero block).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Writes `bytes` to `path` one 4 KiB block at a time, as cownetdisk
/// fills its slices, and syncs them, so that no writeback runs during the
/// measurements.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    for block in bytes.chunks(BLOCK) {
        file.write_all(block)?;
    }
    file.sync_all()
}

/// Writes back every dirty page of the file system holding `dir`, so that
/// the row about to start does not pay for an earlier one's writeback (the
/// kernel's flusher would start on it 30 s later, in the middle of some
/// other row).
fn settle(dir: &Path) -> std::io::Result<()> {
    let dir = File::open(dir)?;
    // SAFETY: syncfs only uses the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The link's baselines: the raw TCP stream and the raw ping-pong.
fn link_rows(setup: &Setup) -> BenchResult<(Row, Row)> {
    let image = &setup.image;
    let mut streams = (0..STREAM_COPIES).map(|_| raw_tcp_stream(image)).collect::<Result<Vec<_>, _>>()?;
    streams.sort_unstable();
    let rate = |d: &Duration| mb_per_s(image.len() as u64, *d);
    let (fastest, slowest) = (streams.first().map_or(0.0, rate), streams.last().map_or(0.0, rate));
    let stream = Row {
        method: format!("raw TCP stream, 1 MiB writes, median of {STREAM_COPIES} ({slowest:.0}-{fastest:.0})"),
        depth: None,
        iops: None,
        mb_per_s: rate(&streams[STREAM_COPIES / 2]),
        latency: None,
        versus: None,
    };
    let pages = &setup.shuffled[..setup.shuffled.len().min(PING_PONG_SAMPLES)];
    let samples = raw_tcp_ping_pong(image, pages)?;
    let latency = Latency::of(&samples).ok_or("no ping-pong samples")?;
    let ping_pong = Row {
        method: "raw TCP ping-pong, 16 B -> 4 KiB".into(),
        depth: Some(1),
        iops: Some(latency.count as f64 / latency.total.as_secs_f64()),
        mb_per_s: mb_per_s((latency.count * BLOCK) as u64, latency.total),
        latency: Some(latency),
        versus: None,
    };
    Ok((stream, ping_pong))
}

/// The four patterns at every depth through qemu-nbd serving a copy of
/// the image.
fn qemu_nbd_rows(setup: &Setup, notes: &mut Notes) -> BenchResult<Vec<Row>> {
    let copy = setup.dir.path().join("qemu-nbd-vm1.raw");
    write_synced(&copy, &setup.image)?;
    let server = QemuNbd::start(&copy, &setup.dir.path().join("qemu-nbd.sock"))?;
    let mut client = server.connect()?;
    let rows = pattern_rows(setup, &mut client, "qemu-nbd", notes, &|| None);
    drop(client);
    drop(server);
    std::fs::remove_file(&copy)?;
    rows
}

/// The four patterns at every depth through cownetdisk, once every block
/// is here.
fn cownetdisk_warm_rows(setup: &Setup, diskserv: &Diskserv, notes: &mut Notes) -> BenchResult<Vec<Row>> {
    let server = CownetdiskRun::start(setup, diskserv, "warm")?;
    let mut client = NbdClient::connect(&server.socket, VM)?;
    let (checked, took) = timed(|| read_all_checked(&mut client, &setup.image));
    checked?;
    let stats = server.disk.stats();
    notes.lines.push(format!(
        "cownetdisk warm-up: the whole image read and checked in {:.2} s, {} blocks fetched in {} diskserv requests",
        took.as_secs_f64(),
        stats.blocks_fetched,
        stats.remote_requests
    ));
    pattern_rows(setup, &mut client, "cownetdisk warm", notes, &|| Some(server.disk.stats()))
}

/// Runs every pattern at every depth on `client`, flushing after each
/// write row; `stats` gives the server's counters, if it has any.
fn pattern_rows(
    setup: &Setup,
    client: &mut NbdClient,
    server: &str,
    notes: &mut Notes,
    stats: &dyn Fn() -> Option<DiskStats>,
) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for pattern in Pattern::ALL {
        for &depth in &setup.depths {
            let method = format!("{server}, {}", pattern.name());
            settle(setup.dir.path())?;
            let before = stats();
            let run = run_pattern(setup, client, pattern, depth)?;
            if let (Some(before), Some(after)) = (before, stats()) {
                notes.counters(&format!("{method}, depth {depth}"), &before, &after);
            }
            rows.push(Row::of_run(method, depth, &run, pattern.is_random()));
        }
        if pattern.is_write() {
            let (flushed, took) = timed(|| client.flush());
            flushed?;
            notes.lines.push(format!(
                "{server}: flush after the {} rows took {:.1} ms",
                pattern.name(),
                took.as_secs_f64() * 1e3
            ));
        }
    }
    Ok(rows)
}

/// One timed row: `pattern` at `depth` for the row time.
fn run_pattern(setup: &Setup, client: &mut NbdClient, pattern: Pattern, depth: usize) -> Result<Run, NbdClientError> {
    let len = pattern.request_len();
    let op = if pattern.is_write() { Op::Write { data: &setup.payload[..len] } } else { Op::Read { len: len as u32 } };
    let budget = Budget { requests: usize::MAX, time: setup.row_time };
    let size = setup.image.len() as u64;
    if pattern.is_random() {
        // The same offsets for every server at a given depth.
        let mut rng = StdRng::seed_from_u64(setup.seed ^ depth as u64);
        let blocks = size / BLOCK as u64;
        let next = move || rng.gen_range(0..blocks) * BLOCK as u64;
        client.run(op, depth, budget, next, sampled_check(&setup.image))
    } else {
        client.run(op, depth, budget, sequential(len, size), sampled_check(&setup.image))
    }
}

/// Offsets 0, `step`, 2 `step`, … wrapping at `size`.
fn sequential(step: usize, size: u64) -> impl FnMut() -> u64 {
    let mut at = 0;
    move || {
        let offset = at;
        at = (at + step as u64) % size;
        offset
    }
}

/// A check of read replies that compares one in [`CHECK_EVERY`] with the
/// image.
fn sampled_check(image: &[u8]) -> impl FnMut(u64, &[u8]) -> Result<(), String> + '_ {
    let mut replies = 0u64;
    move |offset, data| {
        replies += 1;
        if replies % CHECK_EVERY == 0 {
            compare(image, offset, data)
        } else {
            Ok(())
        }
    }
}

fn compare(image: &[u8], offset: u64, data: &[u8]) -> Result<(), String> {
    let want = image.get(offset as usize..offset as usize + data.len()).ok_or("a read past the image")?;
    if want != data {
        return Err("the data differs from the image".into());
    }
    Ok(())
}

/// Reads the whole image in order, 1 MiB at a time, comparing every byte.
fn read_all_checked(client: &mut NbdClient, image: &[u8]) -> Result<Run, NbdClientError> {
    let budget = Budget { requests: image.len() / MIB, time: Duration::MAX };
    let next = sequential(MIB, image.len() as u64);
    client.run(Op::Read { len: MIB as u32 }, 1, budget, next, |offset, data| compare(image, offset, data))
}

/// The whole image read in order through a cownetdisk with no block yet,
/// at each depth, against the raw TCP stream; then read again, checking
/// every byte, which must fetch nothing.
fn cold_sequential_rows(setup: &Setup, diskserv: &Diskserv, stream: &Row, notes: &mut Notes) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for &depth in &setup.depths {
        let method = "cownetdisk cold, 1 MiB sequential read".to_owned();
        let server = CownetdiskRun::start(setup, diskserv, &format!("cold-seq-{depth}"))?;
        let mut client = NbdClient::connect(&server.socket, VM)?;
        let budget = Budget { requests: setup.image.len() / MIB, time: Duration::MAX };
        let next = sequential(MIB, setup.image.len() as u64);
        settle(setup.dir.path())?;
        let before = server.disk.stats();
        let run = client.run(Op::Read { len: MIB as u32 }, depth, budget, next, sampled_check(&setup.image))?;
        let after = server.disk.stats();
        notes.counters(&format!("{method}, depth {depth}"), &before, &after);
        read_all_checked(&mut client, &setup.image)?;
        let again = server.disk.stats().blocks_fetched - after.blocks_fetched;
        if again != 0 {
            return Err(format!("{method}: the checking pass fetched {again} blocks again").into());
        }
        rows.push(Row::of_run(method, depth, &run, false).versus(stream, "raw TCP stream"));
    }
    Ok(rows)
}

/// Distinct random blocks read through a cownetdisk with no block yet, at
/// each depth, each a remote fetch, against the raw ping-pong of the same
/// blocks.
fn cold_random_rows(setup: &Setup, diskserv: &Diskserv, ping_pong: &Row, notes: &mut Notes) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for &depth in &setup.depths {
        let method = "cownetdisk cold, 4 KiB random read".to_owned();
        let server = CownetdiskRun::start(setup, diskserv, &format!("cold-random-{depth}"))?;
        let mut client = NbdClient::connect(&server.socket, VM)?;
        let budget = Budget { requests: setup.shuffled.len(), time: setup.row_time };
        let mut blocks = setup.shuffled.iter();
        let next = || (*blocks.next().expect("the budget stops at the last block") * BLOCK) as u64;
        settle(setup.dir.path())?;
        let before = server.disk.stats();
        let run = client.run(Op::Read { len: BLOCK as u32 }, depth, budget, next, sampled_check(&setup.image))?;
        notes.counters(&format!("{method}, depth {depth}"), &before, &server.disk.stats());
        rows.push(Row::of_run(method, depth, &run, true).versus(ping_pong, "raw TCP ping-pong"));
    }
    Ok(rows)
}

/// qemu-nbd serving one raw image on a Unix socket, as a child process;
/// killed on drop.
#[derive(Debug)]
struct QemuNbd {
    child: Child,
    socket: PathBuf,
}

impl QemuNbd {
    fn start(image: &Path, socket: &Path) -> BenchResult<QemuNbd> {
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", VM, "--cache=writeback", "--persistent", "--shared=4", "-k"])
            .arg(socket)
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start qemu-nbd: {e}"))?;
        Ok(QemuNbd { child, socket: socket.to_owned() })
    }

    /// A client of the export, once qemu-nbd listens.
    fn connect(&self) -> BenchResult<NbdClient> {
        let deadline = Instant::now() + QEMU_NBD_START;
        loop {
            match NbdClient::connect(&self.socket, VM) {
                Ok(client) => return Ok(client),
                Err(NbdClientError::Connect { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("qemu-nbd did not serve {VM}: {}", wire::chain(&e)).into()),
            }
        }
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("disk_io: cannot kill qemu-nbd: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("disk_io: waiting for qemu-nbd: {e}");
        }
    }
}

/// `qemu-nbd --version`'s first line, for the report.
fn qemu_nbd_version() -> String {
    Command::new("qemu-nbd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "qemu-nbd, version unknown".into())
}

/// diskserv serving the desktop's image on 127.0.0.1, on a thread of this
/// process; stopped on drop.
#[derive(Debug)]
struct Diskserv {
    addr: String,
    stop: image_server::StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Diskserv {
    fn start(image: &Path, key: &TestKeys) -> BenchResult<Diskserv> {
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse()?,
            credentials: key.desktop(),
            service: Service::Disk,
            export: VM.into(),
            events: None,
            fence: None,
        };
        let server = diskserv::bind(image, config, BLOCK as u32)?;
        let addr = server.local_addr()?.to_string();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || {
            if let Err(e) = server.run() {
                eprintln!("disk_io: diskserv: {}", wire::chain(&e));
            }
        });
        Ok(Diskserv { addr, stop, thread: Some(thread) })
    }

    /// How cownetdisk reaches it, with short retry pauses.
    fn remote(&self, key: &TestKeys) -> RemoteConfig {
        let hello = Hello::new(Service::Disk, VM);
        let mut remote = RemoteConfig::new(&self.addr, key.server(), hello);
        remote.timeout = Duration::from_secs(5);
        remote.max_backoff = Duration::from_millis(200);
        remote
    }
}

impl Drop for Diskserv {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("disk_io: diskserv's thread panicked");
            }
        }
    }
}

/// cownetdisk with a fresh state directory (`<tmp>/<name>/`) on a Unix
/// socket, on threads of this process; stopped (and flushed) on drop.
#[derive(Debug)]
struct CownetdiskRun {
    socket: PathBuf,
    disk: Arc<Disk>,
    stop: cownetdisk::StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CownetdiskRun {
    fn start(setup: &Setup, diskserv: &Diskserv, name: &str) -> BenchResult<CownetdiskRun> {
        let state = setup.dir.path().join(name);
        let config = DiskConfig::new(VM, &state, diskserv.remote(&setup.key));
        let disk = Arc::new(Disk::open(config, Arc::new(NoWake))?);
        let socket = setup.dir.path().join(format!("{name}.sock"));
        let listen = Listen { unix: Some(socket.clone()), tcp: None };
        let server = NbdServer::bind(Arc::clone(&disk), &listen)?;
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || {
            if let Err(e) = server.run() {
                eprintln!("disk_io: cownetdisk: {}", wire::chain(&e));
            }
        });
        Ok(CownetdiskRun { socket, disk, stop, thread: Some(thread) })
    }
}

impl Drop for CownetdiskRun {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("disk_io: cownetdisk's thread panicked");
            }
        }
    }
}

/// What the header says about the machine during the run.
#[derive(Debug, Clone, Copy)]
struct Machine {
    cpus: usize,
    /// CPU-seconds per second used by other processes during the run.
    others: f64,
}

/// Prints the table, the ratios in words, and the notes.
fn print_report(args: &Args, machine: Machine, rows: &[Row], notes: &Notes, took: Duration) {
    let placement = args.placement.describe();
    let depths: Vec<String> = args.depth.iter().map(ToString::to_string).collect();
    println!(
        "disk_io: {} MiB image, {:.1} s per row, depths {}, seed {}, {} CPUs, {placement}, loopback, {}; \
         MB/s = 10^6 B/s; run took {:.1} s; other processes and kernel threads used {:.2} CPU-s/s meanwhile",
        args.mib,
        args.seconds,
        depths.join(","),
        args.seed,
        machine.cpus,
        qemu_nbd_version(),
        took.as_secs_f64(),
        machine.others,
    );
    println!();
    println!("| method | depth | IOPS | MB/s | p50 us | p99 us | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let ratio = match row.versus {
            Some(v) => format!("{:.3} x {}", v.ratio, v.baseline),
            None => "baseline".into(),
        };
        println!(
            "| {} | {} | {} | {:.1} | {} | {} | {ratio} |",
            row.method,
            or_dash(row.depth.map(|d| d.to_string())),
            or_dash(row.iops.map(|i| format!("{i:.0}"))),
            row.mb_per_s,
            or_dash(row.latency.map(|l| format!("{:.1}", micros(l.p50)))),
            or_dash(row.latency.map(|l| format!("{:.1}", micros(l.p99)))),
        );
    }
    println!();
    print_ratios(rows);
    println!();
    for line in &notes.lines {
        println!("{line}");
    }
}

/// Each compared row's ratio in words, with its p50 beside its baseline's.
fn print_ratios(rows: &[Row]) {
    for row in rows {
        let Some(versus) = row.versus else { continue };
        let depth = row.depth.map_or(String::new(), |d| format!(", depth {d}"));
        print!("{}{depth}: {:.3} x {}", row.method, versus.ratio, versus.baseline);
        match (row.latency, versus.baseline_p50) {
            (Some(l), Some(b)) => println!(
                "; p50 {:.1} us vs {:.1} us ({:.2} x)",
                micros(l.p50),
                micros(b),
                l.p50.as_secs_f64() / b.as_secs_f64()
            ),
            _ => println!(),
        }
    }
}
