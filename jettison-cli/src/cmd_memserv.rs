//! `jettison memserv`: the desktop's page server.

use std::net::SocketAddr;
use std::path::PathBuf;

use image_server::ServeConfig;
use wire::Service;

use crate::signals::{block_stop_signals, serve_until_signal};
use crate::CmdResult;

/// Arguments of `jettison memserv`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's name (the export memtap asks for).
    #[arg(long)]
    vm: String,
    /// The stopped VM's RAM file (its memory-backend-file).
    #[arg(long)]
    ram: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7410")]
    listen: SocketAddr,
    /// This host's key and its enrolled peers.
    #[command(flatten)]
    keys: crate::cmd_pair::KeyFiles,
    /// Unix socket on which every request is reported (for the power policy).
    #[arg(long)]
    events: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let credentials = args.keys.load()?;
    let config = ServeConfig {
        listen: args.listen,
        credentials,
        service: Service::Memory,
        export: args.vm,
        events: args.events,
        fence: None,
    };
    let server = memserv::bind(&args.ram, config)?;
    println!("memserv: serving {} on {}", args.ram.display(), server.local_addr()?);
    serve_until_signal(server, wait_for_signal)
}
