//! `jettison status`: what each consolidated VM has fetched and dirtied, in
//! memory (memtap's `<vm>.stats` files) and on disk (cownetdisk's), and
//! with `--power` the energy a desktop's power daemon (`jettison power`)
//! saved.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use jettison_power::{LedgerFiles, LedgerSummary, CHART_FILE, LEDGER_FILE};

use crate::CmdResult;

/// Arguments of `jettison status`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    let memory: Option<Vec<memtap::Stats>> =
        read_stats(&args.memtap).map_err(|e| format!("cannot read memtap's mount {}: {e}", args.memtap.display()))?;
    let disks: Option<Vec<cownetdisk::Stats>> = read_stats(&args.disks)
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
