//! `jettison diskserv`: the desktop's disk block server.

use std::net::SocketAddr;
use std::path::PathBuf;

use image_server::ServeConfig;
use wire::Service;

use crate::signals::{block_stop_signals, serve_until_signal};
use crate::CmdResult;

/// Arguments of `jettison diskserv`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name (the export cownetdisk asks for).
    #[arg(long)]
    vm: String,
    /// The stopped VM's raw disk image (a file or a block device).
    #[arg(long)]
    image: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7411")]
    listen: SocketAddr,
    /// This host's key and its enrolled peers.
    #[command(flatten)]
    keys: crate::cmd_pair::KeyFiles,
    /// Unix socket on which every request is reported (for the power policy).
    #[arg(long)]
    events: Option<PathBuf>,
    /// Block size in bytes: runs of all-zero blocks travel as markers.
    #[arg(long, default_value_t = diskserv::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let credentials = args.keys.load()?;
    let config = ServeConfig {
        listen: args.listen,
        credentials,
        service: Service::Disk,
        export: args.vm,
        events: args.events,
        fence: None,
    };
    let server = diskserv::bind(&args.image, config, args.block_size)?;
    println!("diskserv: serving {} on {}", args.image.display(), server.local_addr()?);
    serve_until_signal(server, wait_for_signal)
}
