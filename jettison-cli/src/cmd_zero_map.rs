//! `jettison zero-map`: lists the pages of a stopped VM's RAM file that are
//! zero, so the server never fetches them.

use std::path::PathBuf;

use migration_formats::ZeroMap;

use crate::CmdResult;

/// Arguments of `jettison zero-map`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stopped VM's RAM file.
    #[arg(long)]
    ram: PathBuf,
    /// Where to write the map (give it to memtap with --zero-map VM=FILE).
    #[arg(long)]
    out: PathBuf,
}

/// Scans the RAM file and writes its zero map.
pub fn run(args: Args) -> CmdResult {
    let map = ZeroMap::scan(&args.ram, memtap::PAGE_SIZE as u32)?;
    map.save(&args.out)?;
    println!(
        "{}: {} of {} pages are zero ({:.1}%), map written to {}",
        args.ram.display(),
        map.zero_units(),
        map.units,
        100.0 * map.zero_units() as f64 / map.units.max(1) as f64,
        args.out.display()
    );
    Ok(())
}
