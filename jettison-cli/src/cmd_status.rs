//! `jettison status`: what each consolidated VM has fetched and dirtied.

use std::path::{Path, PathBuf};

use memtap::Stats;

use crate::CmdResult;

/// Arguments of `jettison status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// memtap's mount point.
    #[arg(long, default_value = "/run/jettison/memtap")]
    memtap: PathBuf,
    /// Print JSON, one object per VM in an array, for scripts.
    #[arg(long)]
    json: bool,
}

/// Reads every `<vm>.stats` under the mount point.
pub fn read_all(mountpoint: &Path) -> std::io::Result<Vec<Stats>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(mountpoint)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "stats") {
            let bytes = std::fs::read(&path)?;
            let stats = serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
            })?;
            all.push(stats);
        }
    }
    all.sort_by(|a: &Stats, b: &Stats| a.vm.cmp(&b.vm));
    Ok(all)
}

/// Prints one line (or one JSON object) per VM.
pub fn run(args: Args) -> CmdResult {
    let all = read_all(&args.memtap)
        .map_err(|e| format!("cannot read memtap's mount {}: is memtap running there? ({e})", args.memtap.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() {
        println!("no VM is consolidated on this server");
    } else {
        for s in &all {
            println!("{}", s.summary());
        }
    }
    Ok(())
}
