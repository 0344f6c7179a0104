//! `jettison memserv`: the desktop's page server.

use std::net::SocketAddr;
use std::path::PathBuf;

use image_server::ServeConfig;
use wire::{Service, SharedKey};

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
    /// The shared key made by `jettison pair`.
    #[arg(long, default_value = "/etc/jettison/jettison.key")]
    key: PathBuf,
    /// Unix socket on which every request is reported (for the power policy).
    #[arg(long)]
    events: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let key = SharedKey::load(&args.key)?;
    let config =
        ServeConfig { listen: args.listen, key, service: Service::Memory, export: args.vm, events: args.events };
    let server = memserv::bind(&args.ram, config)?;
    println!("memserv: serving {} on {}", args.ram.display(), server.local_addr()?);
    serve_until_signal(server, wait_for_signal)
}
