//! `jettison dirty-set`: hands a VM's writes back by hand. On the server,
//! `export` writes the dirty units of a stopped VM's slices to a file; on
//! the desktop, `apply` merges such a file into the image only once all of
//! it has arrived and verified, and `resume` finishes an apply that a crash
//! interrupted. (Reintegration does the same over the wire.)

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use migration_formats::dirty_set::ApplyTarget;
use slice_store::export_dirty_set;
use slice_store::SliceStore;

use crate::CmdResult;

/// Arguments of `jettison dirty-set`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Server: write the dirty units of a VM's slices (its disk or memory) to a file.
    Export {
        /// The VM's slice directory (cownetdisk's or memtap's state dir for this VM).
        #[arg(long)]
        slices: PathBuf,
        /// Unit size of the slices (the block or page size).
        #[arg(long, default_value_t = 4096)]
        unit: u32,
        /// Size of the image the slices stand for, in bytes.
        #[arg(long)]
        size: u64,
        /// Where to write the set.
        #[arg(long)]
        out: PathBuf,
    },
    /// Desktop: merge a set into the image, only after all of it has arrived and verified.
    Apply {
        #[command(flatten)]
        target: Target,
        /// The set, as written by `export`.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Desktop: finish an apply that a crash interrupted (run before the VM starts).
    Resume {
        #[command(flatten)]
        target: Target,
    },
}

/// The desktop image a set is applied to.
#[derive(Debug, clap::Args)]
struct Target {
    /// The image to update (the VM's disk image or RAM file).
    #[arg(long)]
    image: PathBuf,
    /// Unit size of the set.
    #[arg(long, default_value_t = 4096)]
    unit: u32,
    /// Where the set is staged before it is applied.
    #[arg(long)]
    staging: PathBuf,
}

impl Target {
    fn apply_target(&self) -> ApplyTarget {
        ApplyTarget::new(&self.image, self.unit, &self.staging)
    }
}

/// Runs the chosen action.
pub fn run(args: Args) -> CmdResult {
    match args.action {
        Action::Export { slices, unit, size, out } => {
            let store = SliceStore::open_existing(&slices, unit, size)?;
            store.flush()?;
            let file = File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let mut writer = BufWriter::new(file);
            let summary = export_dirty_set(&store, &mut writer)?;
            writer.flush()?;
            writer.get_ref().sync_all()?;
            println!(
                "exported {} dirty units ({} bytes of data, {} bytes in all) to {}",
                summary.units,
                summary.data_bytes,
                summary.stream_bytes,
                out.display()
            );
        }
        Action::Apply { target, input } => {
            let file = File::open(&input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
            let summary = target.apply_target().apply(BufReader::new(file))?;
            println!("applied {} units ({} bytes) to {}", summary.units, summary.data_bytes, target.image.display());
        }
        Action::Resume { target } => match target.apply_target().resume_pending()? {
            Some(s) => {
                println!("finished an interrupted apply: {} units written to {}", s.units, target.image.display())
            }
            None => println!("nothing pending for {}", target.image.display()),
        },
    }
    Ok(())
}
