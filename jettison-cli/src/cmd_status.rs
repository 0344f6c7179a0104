//! `jettison status`: where each VM runs and what it has moved, from a
//! daemon (`--daemon`: the desktop's or the server's local socket), or read
//! from standalone memtap and cownetdisk state (`<vm>.stats` files), and
//! with `--power` the energy a desktop's power daemon (`jettison power`)
//! saved.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use daemon_protocol::local::{call, DesktopPower, DesktopPowerState, DesktopStatus, LocalRequest, Report, VmLocation};
use daemon_protocol::HostedStatus;
use power::{LedgerFiles, LedgerSummary, CHART_FILE, LEDGER_FILE};

use crate::CmdResult;

/// Arguments of `jettison status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ask a daemon: the desktop's (`/run/jettison/desktop.sock`) or the server's (`/run/jettison/server.sock`).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// memtap's mount point.
    #[arg(long, default_value = "/run/jettison/memtap")]
    memtap: PathBuf,
    /// cownetdisk's state directory.
    #[arg(long, default_value = "/var/lib/jettison/disks")]
    disks: PathBuf,
    /// A desktop power daemon's state directory (`jettison power --state-dir`).
    #[arg(long)]
    power: Option<PathBuf>,
    /// Print JSON (`{"memory": [...], "disks": [...], "power": {...}}`) for scripts.
    #[arg(long)]
    json: bool,
}

/// Reads every `*.stats` file directly in `dir`, sorted by file name;
/// `None` when the directory does not exist.
fn read_stats<T: DeserializeOwned>(dir: &Path) -> std::io::Result<Option<Vec<T>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "stats") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut all = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let stats = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        all.push(stats);
    }
    Ok(Some(all))
}

/// Prints one line per VM and device (or one JSON object).
pub fn run(args: Args) -> CmdResult {
    if let Some(socket) = &args.daemon {
        match call(socket, &LocalRequest::Status, |_| {})? {
            Report::DesktopStatus(status) if args.json => println!("{}", serde_json::to_string_pretty(&status)?),
            Report::ServerStatus(status) if args.json => println!("{}", serde_json::to_string_pretty(&status)?),
            Report::DesktopStatus(status) => print_desktop_status(&status),
            Report::ServerStatus(status) if status.vms.is_empty() => println!("no VM is consolidated on this server"),
            Report::ServerStatus(status) => {
                for vm in &status.vms {
                    println!("{} (from {}): {}", vm.vm, vm.desktop, hosted_line(vm));
                }
            }
            other => return Err(format!("the daemon answered a status request with a {}", other.kind()).into()),
        }
        return Ok(());
    }
    let memory: Option<Vec<memtap::RamStats>> =
        read_stats(&args.memtap).map_err(|e| format!("cannot read memtap's mount {}: {e}", args.memtap.display()))?;
    let disks: Option<Vec<cownetdisk::DiskStats>> = read_stats(&args.disks)
        .map_err(|e| format!("cannot read cownetdisk's state directory {}: {e}", args.disks.display()))?;
    let power = match &args.power {
        Some(dir) => LedgerFiles::read(dir)?,
        None => None,
    };
    if memory.is_none() && disks.is_none() && power.is_none() {
        let power_dir = args.power.as_ref().map(|dir| format!(" nor {}", dir.display())).unwrap_or_default();
        return Err(format!(
            "neither {} nor {}{power_dir} exists: is memtap or cownetdisk running on this server? (--memtap, --disks, --power)",
            args.memtap.display(),
            args.disks.display()
        )
        .into());
    }
    let (memory, disks) = (memory.unwrap_or_default(), disks.unwrap_or_default());
    if args.json {
        let mut json = serde_json::json!({ "memory": memory, "disks": disks });
        if let Some(power) = &power {
            json["power"] = serde_json::to_value(power)?;
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if memory.is_empty() && disks.is_empty() && power.is_none() {
        println!("no VM is consolidated on this server");
    }
    if let Some(power) = &power {
        println!("{}", power_line(power));
    }
    for s in &memory {
        println!("memory {}", s.summary());
    }
    for s in &disks {
        println!("disk   {}", s.summary());
    }
    Ok(())
}

/// The desktop's energy in one line: its total over every consolidation.
fn power_line(power: &LedgerSummary) -> String {
    let Some(total) = power.total else {
        return format!("power desktop: no consolidation yet ({LEDGER_FILE}, chart {CHART_FILE})");
    };
    format!(
        "power desktop: {:.1} min consolidated, {} wakes, {:.0} kJ used vs {:.0} kJ idle: {:.1}% saved ({LEDGER_FILE}, chart {CHART_FILE})",
        total.wall_secs / 60.0,
        total.wakes,
        total.joules / 1000.0,
        total.idle_baseline_joules / 1000.0,
        total.saved_percent
    )
}

/// One hosted VM's figures for people.
fn hosted_line(s: &HostedStatus) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let pages = |n: u64| mib(n * 4096);
    let power = if s.desktop_power.is_empty() { s.desktop.as_str() } else { s.desktop_power.as_str() };
    format!(
        "{:.1} MiB fetched ({:.1} MiB never fetched: zero), {:.1} MiB dirty, disk {:.1} MiB fetched {:.1} MiB \
         dirty, expected {:.1} MiB; {} for {} s; desktop {power}",
        pages(s.pages_fetched),
        pages(s.zero_pages_served),
        pages(s.dirty_pages),
        pages(s.blocks_fetched),
        pages(s.dirty_blocks),
        mib(s.expected_bytes),
        s.state,
        s.seconds,
    )
}

/// The desktop daemon's status for people: one line per VM.
fn print_desktop_status(status: &DesktopStatus) {
    if let Some(err) = &status.server_error {
        println!("server {}: unreachable ({err})", status.server);
    }
    for vm in &status.vms {
        let name = &vm.vm;
        match (vm.on, &vm.server) {
            (VmLocation::Desktop, _) if vm.running_here => println!("{name}: runs on this desktop"),
            (VmLocation::Desktop, _) => println!("{name}: on this desktop, not running"),
            (VmLocation::Server, Some(server)) => println!("{name}: on the server: {}", hosted_line(server)),
            (VmLocation::Server, None) => println!("{name}: on the server (no details: the server did not answer)"),
            (VmLocation::Moving, _) => println!("{name}: moving"),
            (VmLocation::Off, _) => println!("{name}: off (jettison start {name})"),
            (VmLocation::Saved, _) => println!("{name}: saved to its checkpoint (resumed at the next daemon start)"),
        }
        if let Some(error) = &vm.error {
            println!("{name}: last failure: {error}");
        }
    }
    if let Some(power) = &status.power {
        println!("{}", desktop_power_line(power));
    }
}

/// The desktop's own sleep in one line (`[power]` in its configuration).
fn desktop_power_line(power: &DesktopPower) -> String {
    let state = match power.state {
        DesktopPowerState::NotSleeping => "awake (a VM runs here, or none is away)",
        DesktopPowerState::Awake => "awake between requests",
        DesktopPowerState::Suspending => "suspending",
        DesktopPowerState::Asleep => "asleep",
        DesktopPowerState::Resuming => "resuming",
        DesktopPowerState::Refused => "refuses to sleep",
    };
    let refused = power.refused.as_ref().map(|why| format!(": {why}")).unwrap_or_default();
    format!(
        "power: {state}{refused}; {} sleeps, {} wakes, {:.1} min asleep, {:.1} kJ saved ({:.1}%) (ledger in {})",
        power.sleeps,
        power.wakes,
        power.asleep_secs / 60.0,
        power.saved_joules / 1000.0,
        power.saved_percent,
        power.ledger_dir.display()
    )
}
