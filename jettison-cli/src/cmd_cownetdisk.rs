//! `jettison cownetdisk`: the server's copy-on-write NBD disk of one VM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cownetdisk::{Disk, DiskConfig, Listen, NbdServer, StopHandle};
use wire::{Hello, RemoteConfig, Service};

use crate::signals::block_stop_signals;
use crate::wake_args::WakeArgs;
use crate::CmdResult;

/// Arguments of `jettison cownetdisk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desktop's MAC for Wake-on-LAN; without it the desktop is taken as always awake.
    #[arg(long = "wake-mac")]
    wake_mac: Option<String>,
    #[command(flatten)]
    wake: WakeArgs,
    /// The consolidated VM's name (the export asked of diskserv and offered over NBD).
    #[arg(long)]
    vm: String,
    /// The desktop's diskserv, as HOST:PORT.
    #[arg(long)]
    desktop: String,
    /// Where the VM's slices (`<dir>/<vm>/`) and stats (`<dir>/<vm>.stats`) live.
    #[arg(long, default_value = "/var/lib/jettison/disks")]
    state_dir: PathBuf,
    /// This host's key and its enrolled peers.
    #[command(flatten)]
    keys: crate::cmd_pair::KeyFiles,
    /// Serve NBD on this Unix socket (QEMU: `file=nbd+unix:///?socket=PATH`).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Serve NBD on this TCP address (QEMU: `file=nbd://HOST:PORT`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Block size in bytes: the slices' unit; whole aligned blocks are written without a fetch.
    #[arg(long, default_value_t = cownetdisk::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// Record every request to diskserv in this fetch trace (appended to; see the fetch-trace crate).
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// Serves until SIGINT or SIGTERM, then lets requests in flight finish and
/// flushes the dirty slice.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    if args.unix.is_none() && args.listen.is_none() {
        return Err("give --unix PATH, --listen ADDR, or both: where QEMU reaches the disk".into());
    }
    let credentials = args.keys.load()?;
    // Reaching diskserv may take a while (the desktop may be asleep): a
    // signal before the server runs ends the process, which has written
    // nothing yet.
    let stop: Arc<OnceLock<StopHandle>> = Arc::default();
    let stop_for_signal = Arc::clone(&stop);
    std::thread::spawn(move || {
        let signal = wait_for_signal();
        match stop_for_signal.get() {
            Some(handle) => {
                if let Some(signal) = signal {
                    tracing::info!("{signal}: letting requests finish, flushing, stopping");
                }
                handle.stop();
            }
            None => {
                eprintln!("jettison: stopped before the disk was served");
                std::process::exit(1);
            }
        }
    });
    let hello = Hello::new(Service::Disk, args.vm.clone());
    let remote = RemoteConfig::new(&args.desktop, credentials, hello);
    let mut config = DiskConfig::new(&args.vm, &args.state_dir, remote);
    config.block_size = args.block_size;
    let trace = match &args.trace {
        Some(path) => Some(Arc::new(
            fetch_trace::TraceWriter::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        )),
        None => None,
    };
    config.trace = trace.clone();
    let wake = args.wake.hook(&args.vm, args.wake_mac.as_deref(), &args.desktop)?;
    let disk = Arc::new(Disk::open(config, wake)?);
    let server = NbdServer::bind(Arc::clone(&disk), &Listen { unix: args.unix, tcp: args.listen })?;
    if let Some(path) = server.unix_path() {
        println!("cownetdisk: serving VM {} on nbd+unix:///?socket={}", args.vm, path.display());
    }
    if let Some(addr) = server.tcp_addr() {
        println!("cownetdisk: serving VM {} on nbd://{addr}", args.vm);
    }
    stop.set(server.stop_handle()).map_err(|_| "the stop handle was set twice")?;
    server.run()?;
    if let Some(trace) = trace {
        let stats = disk.stats();
        let totals = fetch_trace::Totals {
            disk_requests: stats.remote_requests,
            disk_units: stats.blocks_fetched,
            ..fetch_trace::Totals::default()
        };
        trace.close(totals).map_err(|e| format!("cannot close {}: {e}", trace.path().display()))?;
    }
    Ok(())
}
