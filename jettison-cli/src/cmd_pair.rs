//! `jettison pair`: makes the shared key.

use std::path::PathBuf;

use wire::SharedKey;

use crate::CmdResult;

/// Arguments of `jettison pair`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the key (mode 0600); copy the same file to the other host.
    #[arg(long, default_value = "/etc/jettison/jettison.key")]
    out: PathBuf,
}

/// Writes a fresh key to `args.out`.
pub fn run(args: Args) -> CmdResult {
    SharedKey::generate().save(&args.out)?;
    println!("wrote {}: copy it to the same path on the other host (desktop and server)", args.out.display());
    Ok(())
}
