//! `jettison dirty-set`: hands a VM's writes back by hand. On the server,
//! `export` writes the dirty units of a stopped VM's slices to a file; on
//! the desktop, `apply` merges such a file into the image only once all of
//! it has arrived and verified, and `resume` finishes an apply that a crash
//! interrupted. (Reintegration does the same over the wire.)

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use jettison_slice_store::dirty_set::{export, ApplyTarget};
use jettison_slice_store::SliceStore;

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
        /// The image to update (the VM's disk image or RAM file).
        #[arg(long)]
        image: PathBuf,
        /// Unit size of the set.
        #[arg(long, default_value_t = 4096)]
        unit: u32,
        /// Where the set is staged before it is applied.
        #[arg(long)]
        staging: PathBuf,
        /// The set, as written by `export`.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Desktop: finish an apply that a crash interrupted (run before the VM starts).
    Resume {
        /// The image.
        #[arg(long)]
        image: PathBuf,
        /// Unit size of the set.
        #[arg(long, default_value_t = 4096)]
        unit: u32,
        /// The staging directory given to `apply`.
        #[arg(long)]
        staging: PathBuf,
    },
}

/// Runs the chosen action.
pub fn run(args: Args) -> CmdResult {
    match args.action {
        Action::Export { slices, unit, size, out } => {
            let store = SliceStore::open(&slices, unit, size)?;
            store.flush()?;
            let file = File::create(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let mut writer = BufWriter::new(file);
            let summary = export(&store, &mut writer)?;
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
        Action::Apply { image, unit, staging, input } => {
            let file = File::open(&input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
            let summary = ApplyTarget::new(&image, unit, &staging).apply(BufReader::new(file))?;
            println!("applied {} units ({} bytes) to {}", summary.units, summary.data_bytes, image.display());
        }
        Action::Resume { image, unit, staging } => match ApplyTarget::new(&image, unit, &staging).resume_pending()? {
            Some(s) => println!("finished an interrupted apply: {} units written to {}", s.units, image.display()),
            None => println!("nothing pending for {}", image.display()),
        },
    }
    Ok(())
}
