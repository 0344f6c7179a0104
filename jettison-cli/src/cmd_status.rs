//! `jettison status`: what each consolidated VM has fetched and dirtied, in
//! memory (memtap's `<vm>.stats` files) and on disk (cownetdisk's).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

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
    /// Print JSON (`{"memory": [...], "disks": [...]}`) for scripts.
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
    if memory.is_none() && disks.is_none() {
        return Err(format!(
            "neither {} nor {} exists: is memtap or cownetdisk running on this server? (--memtap, --disks)",
            args.memtap.display(),
            args.disks.display()
        )
        .into());
    }
    let (memory, disks) = (memory.unwrap_or_default(), disks.unwrap_or_default());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "memory": memory, "disks": disks }))?);
        return Ok(());
    }
    if memory.is_empty() && disks.is_empty() {
        println!("no VM is consolidated on this server");
    }
    for s in &memory {
        println!("memory {}", s.summary());
    }
    for s in &disks {
        println!("disk   {}", s.summary());
    }
    Ok(())
}
