//! Density (issue 14, point 4): as many idle partial VMs on one server as
//! this machine allows, what each costs the server against its working
//! set, and N moves at once over one capped link, Jettison's against QEMU's.
//!
//! One office (`tests::office`) with `--vms` desktops, each in its own
//! network namespace with its own `jettison desktop` daemon and VM (the
//! small busybox guest, `--fill-mib` of random data in its RAM, a 64 MiB
//! ext4 disk), and one `jettison server`; everything is driven with the
//! real `jettison` command, as a user would. The server's link (its `eth0`
//! and the LAN's port towards it) is capped with `tc` at `--rate-mbit` each
//! way: every byte between the desktops and the server crosses it.
//!
//! 1. **Idle density.** Every VM is consolidated (one after another, each as
//!    soon as its desktop daemon finds it idle: consolidations at once race
//!    for the server's SPICE console ports today), a client on the LAN sends each a
//!    line every `--ping-secs` (an always-on application), and after
//!    `--idle-secs` the server's memory for each VM is read: its QEMU's PSS
//!    without the RAM file's pages (those are counted once, as the RAM
//!    file's page cache) and its anonymous memory, of which the largest
//!    executable anonymous mapping is TCG's translation cache; its storage
//!    process (memtap and cownetdisk) PSS, of which memtap's prefetch cache
//!    (its `<vm>.stats`); the page cache of its RAM file (memtap's FUSE file)
//!    and of its slice files (`fincore`). The baseline is the VM's working
//!    set: pages fetched × 4 KiB plus disk blocks fetched × block size, from
//!    `jettison status --daemon` of the server. CPU per idle VM is its QEMU's
//!    and storage process's user and system time over the idle window.
//! 2. **N moves at once.** All N reintegrated at once (`jettison
//!    reintegrate`, concurrently), then one consolidated again, idle as long,
//!    and reintegrated alone; against N QEMU precopy migrations at once of
//!    guests booted the same way (same image, RAM and fill, headless, no
//!    NIC: QEMU's own migration needs no daemon) from the desktops to the
//!    server over the same capped link, and one alone. Bytes are the
//!    server's `eth0` counters; the paper's figures (8 full migrations of
//!    4 GiB VMs at once took 253 s, one 38.59 s, at 813 Mbit/s) are printed
//!    beside them. For the memory figures' own baseline, the precopied VMs'
//!    QEMU PSS on the server is printed too: what a fully migrated VM costs.
//!
//! Needs root (namespaces, taps, `tc`), FUSE, QEMU, the test guest and the
//! `jettison-qemu` user; without them it prints a `SKIPPED` line and exits
//! 0. The office's drop stops every daemon, QEMU and mount it made, and
//! the precopy QEMUs and their RAM files go with their guards, also on a
//! failure.
//!
//! `cargo run --release -p bench --bin density -- --vms 10 [--memory-mib 256 --fill-mib 64 --idle-secs 60 --rate-mbit 1000 --ping-secs 10]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bench::capped_link::{cap_egress, device_bytes};
use bench::precopy::{self, Precopied};
use bench::proc_figures::{cpu_ticks, files_under, mappings, page_cache_bytes, rollup, ticks_per_second};
use clap::Parser;
use qemu_driver::{GuestImage, QemuProcess, Qmp, VmSpec};
use remote_wakeup::netns::run_in;
use serde_json::Value;
use tests::office::{wait_for_count_above, LineClient, Office, OfficeDesktop, OfficeSpec, MAX_DESKTOPS};
use tests::{skip, BOOT_TIMEOUT, COUNT_TIMEOUT};

/// The paper's 8 full live migrations at once (4 GiB VMs, 813 Mbit/s), s.
const PAPER_EIGHT_SECS: f64 = 253.0;
/// The paper's one full live migration of the same VM, s.
const PAPER_ONE_SECS: f64 = 38.59;
/// The memory goal per VM: at most this many times its working set.
const GOAL_RATIO: f64 = 1.2;
/// One MiB.
const MIB: f64 = 1024.0 * 1024.0;
/// How long one move may take before the run gives up.
const MOVE_TIMEOUT: Duration = Duration::from_secs(900);
/// Where the precopy destinations listen on the server, plus their index.
const PRECOPY_PORT: u16 = 4500;
/// The server's address on the office LAN.
const SERVER_IP: &str = "10.77.0.1";

/// N idle partial VMs on one server: memory and CPU per VM against its
/// working set; N moves at once against QEMU precopy.
#[derive(Debug, Parser)]
struct Args {
    /// Desktops, each with one VM, all consolidated to the one server.
    #[arg(long, default_value_t = 10)]
    vms: usize,
    /// Each guest's RAM, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    /// RAM each guest fills with random data at boot (a used desktop), MiB.
    #[arg(long, default_value_t = 64)]
    fill_mib: u64,
    /// Seconds every VM stays idle on the server before it is measured
    /// (the CPU window), and the lone VM before its lone reintegration.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// The cap on the server's link, each way, Mbit/s.
    #[arg(long, default_value_t = 1000)]
    rate_mbit: u64,
    /// A client on the LAN sends each VM a line this often, s (0: none).
    #[arg(long, default_value_t = 10)]
    ping_secs: u64,
}

/// One consolidated VM's cost to the server, bytes (CPU in % of a core).
#[derive(Debug, Default, Clone)]
struct VmCost {
    vm: String,
    working_set: u64,
    /// QEMU's PSS without its RAM file mapping.
    qemu_own: u64,
    qemu_anon: u64,
    /// The resident part of TCG's translation cache.
    tcg_cache: u64,
    storage: u64,
    prefetch_cache: u64,
    ram_file_cache: u64,
    slice_cache: u64,
    cpu_percent: f64,
}

impl VmCost {
    /// Everything the server holds for the VM.
    fn total(&self) -> u64 {
        self.qemu_own + self.storage + self.ram_file_cache + self.slice_cache
    }

    fn ratio(&self) -> f64 {
        self.total() as f64 / self.working_set.max(1) as f64
    }
}

/// Moves measured at once: each one's seconds, the wall time until all
/// were done, and the bytes on the server's link meanwhile.
#[derive(Debug, Default)]
struct Batch {
    each_secs: Vec<f64>,
    wall_secs: f64,
    link_bytes: u64,
    /// What the moves' own counters say they sent, bytes.
    sent_bytes: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=MAX_DESKTOPS).contains(&args.vms) {
        eprintln!("density: --vms must be 1 to {MAX_DESKTOPS} (the office's address plan)");
        return ExitCode::FAILURE;
    }
    let guest = match tests::guest() {
        Ok(guest) => guest,
        Err(why) => {
            skip(format!("density: {why}"));
            return ExitCode::SUCCESS;
        }
    };
    let started = Instant::now();
    let dir = match tempfile::Builder::new().prefix("jt-density-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("density: cannot make a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = OfficeSpec {
        desktops: args.vms,
        memory_mib: args.memory_mib,
        fill_mib: args.fill_mib,
        capacity_mib: args.vms as u64 * args.memory_mib + 1024,
        ..OfficeSpec::default()
    };
    let mut office = match Office::build(dir.path(), &spec) {
        Ok(office) => office,
        Err(why) => {
            skip(format!("density: {why}"));
            return ExitCode::SUCCESS;
        }
    };
    match run(&args, &guest, &mut office) {
        Ok(report) => {
            print!("{report}");
            println!("run took {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("density failed: {why}\n{}", office.logs());
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, guest: &GuestImage, office: &mut Office) -> Result<String, String> {
    let n = args.vms;
    // The server's link, both ways: what it sends, and what the LAN's
    // port towards it sends it.
    let capped = cap_egress(office.host(1), "eth0", args.rate_mbit)
        .and_then(|()| cap_egress(office.lan_bridge(), "port1", args.rate_mbit));
    if let Err(why) = &capped {
        println!("NOTE: {why}; every move below is UNCAPPED (veth speed)");
    }
    office.start_server();
    let booting = Instant::now();
    for i in 0..n {
        office.start_desktop_at(i);
    }
    // Booting N TCG guests at once on a shared machine takes its time.
    let boot_timeout = BOOT_TIMEOUT + Duration::from_secs(30 * n as u64);
    for i in 0..n {
        wait_for_count_above(&office.desktop_serial_at(i), 0, boot_timeout);
    }
    println!("{n} VMs booted on their desktops in {:.0} s", booting.elapsed().as_secs_f64());
    let _clients: Vec<LineClient> = match args.ping_secs {
        0 => Vec::new(),
        secs => (0..n)
            .map(|i| {
                let service = format!("{}:7000", OfficeDesktop::nth(i).vm_ip());
                LineClient::connect(office.host(2), &service, Duration::from_secs(secs))
            })
            .collect(),
    };

    // One after another: consolidations at once race for the server's
    // SPICE ports (two QEMUs given 5900; the second fails to start).
    let out = (0..n)
        .map(|i| {
            let answer = office.consolidate_when_idle_at(i, MOVE_TIMEOUT);
            let secs = answer["total_secs"].as_f64().ok_or(format!("no total_secs in {answer}"))?;
            Ok((secs, answer["descriptor_bytes"].as_u64().unwrap_or(0)))
        })
        .collect::<Result<Vec<_>, String>>()?;
    println!("{n} VMs consolidated; idling {} s on the server", args.idle_secs);
    let costs = idle_costs(office, n, Duration::from_secs(args.idle_secs))?;
    let daemon_pss = office.server_daemon_pid().map(rollup).transpose()?.map_or(0, |r| r.pss_kib << 10);
    // Printed now, so that a failure of the moves below keeps it.
    print!("{}", memory_report(args, capped.is_ok(), &costs, daemon_pss, &out));

    let link = || device_bytes(office.host(1), "eth0");
    let back_all = reintegrate_batch(office, &(0..n).collect::<Vec<_>>(), &link)?;
    println!("{n} VMs reintegrated at once in {:.1} s", back_all.wall_secs);
    office.consolidate_when_idle_at(0, MOVE_TIMEOUT);
    sleep(Duration::from_secs(args.idle_secs));
    let back_one = reintegrate_batch(office, &[0], &link)?;
    println!("one VM reintegrated alone in {:.1} s", back_one.wall_secs);

    let shm = tempfile::Builder::new()
        .prefix("jt-density-precopy-")
        .tempdir_in("/dev/shm")
        .map_err(|e| format!("cannot make a directory in /dev/shm for the precopy RAM files: {e}"))?;
    let (pre_all, pre_one, full_pss) = precopy_batches(args, guest, office, shm.path(), &link)?;

    Ok(moves_report(args, capped.is_ok(), [&back_all, &back_one, &pre_all, &pre_one], &full_pss))
}

/// Runs `job(i)` for each of `n` VMs on threads of its own, all at once;
/// each one's answer, in order.
fn at_once<T: Send>(n: usize, job: impl Fn(usize) -> Result<T, String> + Sync) -> Result<Vec<T>, String> {
    let job = &job;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n).map(|i| scope.spawn(move || job(i))).collect();
        threads.into_iter().map(|t| t.join().map_err(|_| "a move's thread panicked".to_owned())?).collect()
    })
}

/// The pid in `file`, if that process runs.
fn pid_in(file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let pid: u32 = text.trim().parse().map_err(|e| format!("{} holds no pid: {e}", file.display()))?;
    match Path::new(&format!("/proc/{pid}")).exists() {
        true => Ok(pid),
        false => Err(format!("process {pid} of {} is gone", file.display())),
    }
}

/// `path` as process `pid` sees it (its mount namespace holds the FUSE mount).
fn seen_by(pid: u32, path: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{}", path.display()))
}

/// Lets the `n` consolidated VMs idle for `window`, then reads what each
/// costs the server.
fn idle_costs(office: &Office, n: usize, window: Duration) -> Result<Vec<VmCost>, String> {
    let pids: Vec<(u32, u32)> = (0..n)
        .map(|i| {
            let run = office.server_vm_run_at(i);
            Ok((pid_in(&run.join("qemu/qemu.pid"))?, pid_in(&run.join("storage.pid"))?))
        })
        .collect::<Result<_, String>>()?;
    let ticks = |pids: &[(u32, u32)]| -> Result<Vec<u64>, String> {
        pids.iter().map(|&(qemu, storage)| Ok(cpu_ticks(qemu)? + cpu_ticks(storage)?)).collect()
    };
    let before = ticks(&pids)?;
    let start = Instant::now();
    sleep(window);
    let after = ticks(&pids)?;
    let secs = start.elapsed().as_secs_f64();
    let server = office.server_socket();
    let status = office.jettison_json(&["status", "--daemon", server.to_str().ok_or("a non-UTF-8 path")?]);
    let mut costs = Vec::new();
    for (i, &(qemu, storage)) in pids.iter().enumerate() {
        let desktop = OfficeDesktop::nth(i);
        let entry = status["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|v| v["vm"] == desktop.vm.as_str()))
            .ok_or(format!("the server's status has no {}: {status}", desktop.vm))?;
        let cpu = (after[i] - before[i]) as f64 / ticks_per_second() as f64 / secs * 100.0;
        costs.push(vm_cost(office, i, &entry["on_server"], qemu, storage, cpu)?);
    }
    Ok(costs)
}

/// What VM `i` costs the server now; `on_server` is its entry in the
/// server's status.
fn vm_cost(office: &Office, i: usize, on_server: &Value, qemu: u32, storage: u32, cpu: f64) -> Result<VmCost, String> {
    let desktop = OfficeDesktop::nth(i);
    let pages = on_server["memory"]["pages_fetched"].as_u64().ok_or(format!("no pages_fetched in {on_server}"))?;
    let disk = &on_server["disk"];
    let blocks = disk["blocks_fetched"].as_u64().unwrap_or(0) * disk["block_bytes"].as_u64().unwrap_or(0);
    let ram_name = format!("{}.ram", desktop.vm);
    let maps = mappings(qemu)?;
    let ram_mapped: u64 = maps.iter().filter(|m| m.path.ends_with(&ram_name)).map(|m| m.pss_kib).sum();
    // TCG's translation cache: QEMU's one large executable anonymous mapping.
    let tcg = maps.iter().filter(|m| m.path.is_empty() && m.perms.contains('x')).map(|m| m.rss_kib).max();
    let qemu_rollup = rollup(qemu)?;
    let ram_dir = office.server_vm_run_at(i).join("ram");
    let stats_file = seen_by(storage, &ram_dir.join(format!("{}.stats", desktop.vm)));
    let stats: Value = std::fs::read(&stats_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read memtap's counters {}: {e}", stats_file.display()))?;
    let state = office.server_vm_state_at(i);
    let slices: Vec<PathBuf> =
        files_under(&state.join("memory")).into_iter().chain(files_under(&state.join("disk"))).collect();
    Ok(VmCost {
        vm: desktop.vm,
        working_set: pages * 4096 + blocks,
        qemu_own: (qemu_rollup.pss_kib - ram_mapped.min(qemu_rollup.pss_kib)) << 10,
        qemu_anon: qemu_rollup.anon_kib << 10,
        tcg_cache: tcg.unwrap_or(0) << 10,
        storage: rollup(storage)?.pss_kib << 10,
        prefetch_cache: stats["cached_pages"].as_u64().unwrap_or(0) * 4096,
        ram_file_cache: page_cache_bytes(&[seen_by(storage, &ram_dir.join(&ram_name))])?,
        slice_cache: page_cache_bytes(&slices)?,
        cpu_percent: cpu,
    })
}

/// Reintegrates the VMs of desktops `which` at once with `jettison
/// reintegrate`; `link` reads the server link's byte counter.
fn reintegrate_batch(
    office: &Office,
    which: &[usize],
    link: &dyn Fn() -> Result<u64, String>,
) -> Result<Batch, String> {
    let before = link()?;
    let start = Instant::now();
    let answers = at_once(which.len(), |k| {
        let i = which[k];
        let socket = office.desktop_socket_at(i);
        let vm = OfficeDesktop::nth(i).vm;
        let answer =
            office.jettison_json(&["reintegrate", &vm, "--socket", socket.to_str().ok_or("a non-UTF-8 path")?]);
        let secs = answer["total_secs"].as_f64().ok_or(format!("no total_secs in {answer}"))?;
        Ok((secs, answer["bytes"].as_u64().unwrap_or(0)))
    })?;
    let wall_secs = start.elapsed().as_secs_f64();
    Ok(Batch {
        each_secs: answers.iter().map(|a| a.0).collect(),
        wall_secs,
        link_bytes: link()? - before,
        sent_bytes: answers.iter().map(|a| a.1).sum(),
    })
}

/// A guest booted for QEMU's own migration, and its destination.
struct PrecopyPair {
    source: (QemuProcess, Qmp),
    dest: (QemuProcess, Qmp),
    uri: String,
}

/// N + 1 guests booted as the desktops' are (same image, RAM and fill),
/// one per desktop and one more on the first; one migrated alone to the
/// server, then N at once. Returns both batches and the PSS of each of the
/// N precopied VMs' QEMU on the server.
fn precopy_batches(
    args: &Args,
    guest: &GuestImage,
    office: &Office,
    shm: &Path,
    link: &dyn Fn() -> Result<u64, String>,
) -> Result<(Batch, Batch, Vec<u64>), String> {
    let n = args.vms;
    let boot = |k: usize| -> Result<PrecopyPair, String> {
        let ns = office.desktop_host(k % n);
        let spec = VmSpec::new(guest, shm.join(format!("source{k}.ram")), shm.join(format!("source{k}")))
            .memory_mib(args.memory_mib)
            .kernel_args(&format!("jt.fill={}", args.fill_mib));
        let mut source = run_in(Some(ns), || spec.spawn()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let spec = VmSpec::new(guest, shm.join(format!("dest{k}.ram")), shm.join(format!("dest{k}")))
            .memory_mib(args.memory_mib)
            .incoming_defer();
        let mut dest =
            run_in(Some(office.host(1)), || spec.spawn()).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let mut dest_qmp = dest.connect_qmp().map_err(|e| e.to_string())?;
        let uri = format!("tcp:{SERVER_IP}:{}", PRECOPY_PORT + k as u16);
        precopy::listen(&mut dest_qmp, &uri)?;
        // N + 1 TCG guests filling their RAM at once, beside the N idle
        // ones at home: the slowest boot here.
        let boot_timeout = BOOT_TIMEOUT + Duration::from_secs(60 * n as u64);
        source.wait_for_count_above(3, boot_timeout).map_err(|e| e.to_string())?;
        let qmp = source.connect_qmp().map_err(|e| e.to_string())?;
        Ok(PrecopyPair { source: (source, qmp), dest: (dest, dest_qmp), uri })
    };
    let pairs = at_once(n + 1, boot)?;
    println!("{} guests booted for QEMU precopy", n + 1);
    // Idle as the consolidated ones were before they moved.
    sleep(Duration::from_secs(5));
    let mut pairs: Vec<std::sync::Mutex<PrecopyPair>> = pairs.into_iter().map(std::sync::Mutex::new).collect();
    let lone = pairs.pop().expect("n + 1 pairs");
    let migrate_batch = |pairs: &[std::sync::Mutex<PrecopyPair>]| -> Result<Batch, String> {
        let before = link()?;
        let start = Instant::now();
        let done: Vec<Precopied> = at_once(pairs.len(), |k| {
            let mut pair = pairs[k].lock().map_err(|_| "a precopy pair's lock is poisoned".to_owned())?;
            let uri = pair.uri.clone();
            precopy::migrate(&mut pair.source.1, &uri, MOVE_TIMEOUT)
        })?;
        Ok(Batch {
            each_secs: done.iter().map(|d| d.secs).collect(),
            wall_secs: start.elapsed().as_secs_f64(),
            link_bytes: link()? - before,
            sent_bytes: done.iter().map(|d| d.transferred).sum(),
        })
    };
    let one = migrate_batch(std::slice::from_ref(&lone))?;
    drop(lone);
    println!("one guest precopied alone in {:.1} s", one.wall_secs);
    let all = migrate_batch(&pairs)?;
    println!("{n} guests precopied at once in {:.1} s", all.wall_secs);
    // The migrated VMs run on the server now: what one costs it there.
    let mut full_pss = Vec::new();
    for pair in &mut pairs {
        let pair = pair.get_mut().map_err(|_| "a precopy pair's lock is poisoned".to_owned())?;
        pair.dest.0.wait_for_count_above(0, COUNT_TIMEOUT).map_err(|e| e.to_string())?;
        full_pss.push(rollup(pair.dest.0.pid())?.pss_kib << 10);
    }
    Ok((all, one, full_pss))
}

/// Mean of `values` (0 for none).
fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, count) = values.into_iter().fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    sum / count.max(1) as f64
}

/// MiB in `bytes`.
fn m(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// What the link was, in words.
fn link_words(args: &Args, capped: bool) -> String {
    match capped {
        true => format!("the server's link capped by tc tbf at {} Mbit/s each way", args.rate_mbit),
        false => "the server's link UNCAPPED (tc failed)".to_owned(),
    }
}

/// The idle VMs' cost to the server, a row each and their mean, against
/// their working sets; `out` is each consolidation's seconds and
/// descriptor bytes.
fn memory_report(args: &Args, capped: bool, costs: &[VmCost], daemon_pss: u64, out: &[(f64, u64)]) -> String {
    let n = args.vms;
    let link = link_words(args, capped);
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!(
        "\ndensity: {n} desktops, each one VM ({} MiB RAM, {} MiB of it filled with random data, 64 MiB disk), \
         one server; TCG; {link}; {} CPUs on this host; MiB = 2^20 B",
        args.memory_mib,
        args.fill_mib,
        std::thread::available_parallelism().map_or(0, usize::from),
    ));
    line(format!(
        "consolidated one after another: {:.1} s each on average (descriptor {:.0} KiB); then {} s idle on the server{}",
        mean(out.iter().map(|o| o.0)),
        mean(out.iter().map(|o| o.1 as f64 / 1024.0)),
        args.idle_secs,
        match args.ping_secs {
            0 => String::new(),
            s => format!(", a client sending each VM a line every {s} s"),
        }
    ));
    line(String::new());
    line("Server memory per idle VM against its working set (MiB; CPU over the idle window):".to_owned());
    line(String::new());
    line(
        "| VM | working set | QEMU PSS without RAM file | of which TCG code cache | QEMU anon | storage PSS | \
         of which prefetch cache | RAM file page cache | slice page cache | total | total / working set | CPU % of a core |"
            .to_owned(),
    );
    line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned());
    let row = |c: &VmCost| {
        format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} |",
            c.vm,
            m(c.working_set),
            m(c.qemu_own),
            m(c.tcg_cache),
            m(c.qemu_anon),
            m(c.storage),
            m(c.prefetch_cache),
            m(c.ram_file_cache),
            m(c.slice_cache),
            m(c.total()),
            c.ratio(),
            c.cpu_percent
        )
    };
    for c in costs {
        line(row(c));
    }
    let avg = |f: fn(&VmCost) -> u64| mean(costs.iter().map(|c| f(c) as f64)) as u64;
    let average = VmCost {
        vm: "**mean**".to_owned(),
        working_set: avg(|c| c.working_set),
        qemu_own: avg(|c| c.qemu_own),
        qemu_anon: avg(|c| c.qemu_anon),
        tcg_cache: avg(|c| c.tcg_cache),
        storage: avg(|c| c.storage),
        prefetch_cache: avg(|c| c.prefetch_cache),
        ram_file_cache: avg(|c| c.ram_file_cache),
        slice_cache: avg(|c| c.slice_cache),
        cpu_percent: mean(costs.iter().map(|c| c.cpu_percent)),
    };
    line(row(&average));
    line(String::new());
    line(format!(
        "baseline: the goal is total <= {GOAL_RATIO} x working set (mean {:.1} MiB here: {:.1} MiB); the server \
         daemon's own PSS is {:.1} MiB for all {n} ({:.1} per VM, not in the rows)",
        m(average.working_set),
        m(average.working_set) * GOAL_RATIO,
        m(daemon_pss),
        m(daemon_pss) / n as f64,
    ));
    let parts = [
        ("QEMU without its RAM file", average.qemu_own),
        ("the storage process", average.storage),
        ("the RAM file's page cache", average.ram_file_cache),
        ("the slices' page cache", average.slice_cache),
    ];
    let (name, biggest) = parts.iter().max_by_key(|p| p.1).copied().unwrap_or(("nothing", 0));
    line(format!(
        "dominates: {name}, {:.1} of {:.1} MiB per VM ({:.0}%); TCG's code cache is {:.1} MiB of QEMU's; ratio {:.2} \
         against the goal's {GOAL_RATIO}",
        m(biggest),
        m(average.total()),
        biggest as f64 * 100.0 / average.total().max(1) as f64,
        m(average.tcg_cache),
        average.ratio(),
    ));
    text
}

/// The moves, N at once against one alone (`batches`: Jettison's N and
/// one, QEMU precopy's N and one), beside the paper's; `full_pss` is each
/// precopied VM's QEMU PSS on the server.
fn moves_report(args: &Args, capped: bool, batches: [&Batch; 4], full_pss: &[u64]) -> String {
    let n = args.vms;
    let [back_all, back_one, pre_all, pre_one] = batches;
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!(
        "a VM fully migrated by QEMU precopy costs the server {:.1} MiB (its QEMU's PSS, RAM file included, mean of {})",
        m(mean(full_pss.iter().map(|&b| b as f64)) as u64),
        full_pss.len(),
    ));
    line(String::new());
    line(format!("{n} moves at once against one alone, over {}:", link_words(args, capped)));
    line(String::new());
    line("| move | VMs at once | MiB on the server's link | MiB the moves counted | s until all done | s per move, mean | s per move, max |".to_owned());
    line("|---|---:|---:|---:|---:|---:|---:|".to_owned());
    let batch_row = |name: &str, b: &Batch| {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            b.each_secs.len(),
            m(b.link_bytes),
            m(b.sent_bytes),
            b.wall_secs,
            mean(b.each_secs.iter().copied()),
            b.each_secs.iter().copied().fold(0.0, f64::max)
        )
    };
    line(batch_row("Jettison reintegration (`jettison reintegrate`)", back_all));
    line(batch_row("Jettison reintegration (`jettison reintegrate`)", back_one));
    line(batch_row("QEMU precopy, desktop to server", pre_all));
    line(batch_row("QEMU precopy, desktop to server", pre_one));
    line(format!("| paper: full live migration, 4 GiB VMs, 813 Mbit/s | 8 | - | - | {PAPER_EIGHT_SECS} | - | - |"));
    line(format!("| paper: full live migration, 4 GiB VMs, 813 Mbit/s | 1 | - | - | {PAPER_ONE_SECS} | - | - |"));
    line(format!(
        "N at once against one: Jettison {:.1}x the time, QEMU precopy {:.1}x, the paper's full migration {:.1}x (8 against 1)",
        back_all.wall_secs / back_one.wall_secs.max(1e-9),
        pre_all.wall_secs / pre_one.wall_secs.max(1e-9),
        PAPER_EIGHT_SECS / PAPER_ONE_SECS
    ));
    text
}
