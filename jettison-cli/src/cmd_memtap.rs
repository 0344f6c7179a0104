//! `jettison memtap`: the server's FUSE filesystem of consolidated VMs' RAM.

use std::path::PathBuf;

use memtap::{Mount, RamFileConfig};
use migration_formats::ZeroMap;
use wire::{Hello, RemoteConfig, Service};

use crate::signals::block_stop_signals;
use crate::wake_args::WakeArgs;
use crate::CmdResult;

/// Arguments of `jettison memtap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to mount (must exist).
    #[arg(long, default_value = "/run/jettison/memtap")]
    mount: PathBuf,
    /// A consolidated VM and its desktop's memserv, as NAME=HOST:PORT; repeat for more VMs.
    #[arg(long = "vm", value_parser = parse_vm, required = true)]
    vms: Vec<(String, String)>,
    /// A VM's desktop MAC for Wake-on-LAN, as NAME=MAC; without it that desktop is taken as always awake.
    #[arg(long = "wake-mac", value_parser = parse_pair)]
    wake_macs: Vec<(String, String)>,
    #[command(flatten)]
    wake: WakeArgs,
    /// A VM's zero map (from `jettison zero-map` on the desktop), as NAME=FILE.
    #[arg(long = "zero-map", value_parser = parse_pair)]
    zero_maps: Vec<(String, String)>,
    /// Where the VMs' fetched and dirty slices live (one directory per VM).
    #[arg(long, default_value = "/var/lib/jettison/slices")]
    state_dir: PathBuf,
    /// This host's key and its enrolled peers.
    #[command(flatten)]
    keys: crate::cmd_pair::KeyFiles,
    /// Pages fetched around each faulting page.
    #[arg(long, default_value_t = memtap::prefetch::DEFAULT_PIVOT_WINDOW)]
    pivot_window: u64,
    /// Size of each VM's prefetch cache, in MiB.
    #[arg(long, default_value_t = (memtap::prefetch::DEFAULT_CACHE_BYTES >> 20) as u64)]
    cache_mib: u64,
    /// Record every request a VM sends to memserv in a fetch trace (appended to), as NAME=FILE; one file per VM.
    #[arg(long = "trace", value_parser = parse_pair)]
    traces: Vec<(String, String)>,
}

/// `NAME=HOST:PORT` for `--vm`: a VM name and memserv's address, checked
/// when parsed (an address without a port would be retried for ever).
fn parse_vm(text: &str) -> Result<(String, String), String> {
    let (name, addr) = parse_pair(text)?;
    name.parse::<identifiers::VmName>().map_err(|e| e.to_string())?;
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok((name, addr)),
        _ => Err(format!("{addr:?} is not memserv's HOST:PORT (for example {name}=desktop1:7410)")),
    }
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE (for example vm1=desktop1:7410)")),
    }
}

/// Mounts and serves until SIGINT or SIGTERM, then flushes and unmounts.
pub fn run(args: Args) -> CmdResult {
    let wait_for_signal = block_stop_signals()?;
    let credentials = args.keys.load()?;
    for (option, pairs) in [("--zero-map", &args.zero_maps), ("--wake-mac", &args.wake_macs), ("--trace", &args.traces)]
    {
        if let Some((name, _)) = pairs.iter().find(|(name, _)| !args.vms.iter().any(|(vm, _)| vm == name)) {
            return Err(format!("{option} names VM {name:?}, which no --vm names").into());
        }
    }
    let mut configs = Vec::new();
    let mut traces = Vec::new();
    for (name, addr) in &args.vms {
        let hello = Hello::new(Service::Memory, name.clone());
        let remote = RemoteConfig::new(addr, std::sync::Arc::clone(&credentials), hello);
        let mut config = RamFileConfig::new(name, args.state_dir.join(name), remote);
        let mac = args.wake_macs.iter().find(|(vm, _)| vm == name).map(|(_, mac)| mac.as_str());
        config.wake = args.wake.hook(name, mac, addr)?;
        config.pivot_window = args.pivot_window;
        config.cache_bytes = (args.cache_mib as usize) << 20;
        if let Some((_, file)) = args.traces.iter().find(|(vm, _)| vm == name) {
            let trace = fetch_trace::TraceWriter::open(std::path::Path::new(file))
                .map_err(|e| format!("cannot open the fetch trace {file}: {e}"))?;
            let trace = std::sync::Arc::new(trace);
            config.trace = Some(std::sync::Arc::clone(&trace));
            traces.push((name.clone(), trace));
        }
        if let Some((_, file)) = args.zero_maps.iter().find(|(vm, _)| vm == name) {
            let map = ZeroMap::load(std::path::Path::new(file))?;
            if u64::from(map.unit_size) != memtap::PAGE_SIZE {
                return Err(format!("zero map {file} is in {}-byte units; memtap needs 4096", map.unit_size).into());
            }
            config.zero_pages = map.ranges;
            config.zero_map_pages = Some(map.units);
        }
        configs.push(config);
    }
    // Connecting waits, retrying through the wake hook, for a desktop that
    // does not answer; a stop signal meanwhile ends the command at once
    // (nothing is mounted yet), instead of after the desktop comes back.
    let (events, happened) = std::sync::mpsc::channel();
    let signals = events.clone();
    std::thread::spawn(move || {
        let _ = signals.send(Happened::Signal(wait_for_signal()));
    });
    let mountpoint = args.mount.clone();
    std::thread::spawn(move || {
        let _ = events.send(Happened::Started(Mount::start(&mountpoint, configs)));
    });
    let mount = match happened.recv()? {
        Happened::Signal(signal) => {
            let signal = signal.map(|s| s.to_string()).unwrap_or_else(|| "a signal".into());
            tracing::info!("{signal} while connecting to memserv: stopping; nothing was mounted");
            // Unless the mount came up in the same instant.
            if let Ok(Happened::Started(Ok(mount))) = happened.try_recv() {
                mount.unmount()?;
            }
            return Ok(());
        }
        Happened::Started(mount) => mount?,
    };
    println!("memtap: mounted at {}", args.mount.display());
    if let Happened::Signal(Some(signal)) = happened.recv()? {
        tracing::info!("{signal}: flushing and unmounting");
    }
    let stats: Vec<memtap::RamStats> = mount.vms().iter().map(|vm| vm.stats()).collect();
    mount.unmount()?;
    for (name, trace) in traces {
        let Some(stats) = stats.iter().find(|s| s.vm == name) else { continue };
        let totals = fetch_trace::Totals {
            memory_requests: stats.remote_fetches,
            memory_units: stats.pages_fetched,
            ..fetch_trace::Totals::default()
        };
        trace.close(totals).map_err(|e| format!("cannot close {}: {e}", trace.path().display()))?;
    }
    Ok(())
}

/// What the command waits for.
enum Happened {
    /// A stop signal arrived.
    Signal(Option<nix::sys::signal::Signal>),
    /// memtap connected to every memserv and mounted, or failed.
    Started(Result<Mount, memtap::MemtapError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_needs_a_name_and_memservs_port() {
        assert_eq!(parse_vm("vm1=desk1:7410").unwrap(), ("vm1".into(), "desk1:7410".into()));
        assert!(parse_vm("vm1=desk1").unwrap_err().contains("HOST:PORT"));
        assert!(parse_vm("vm1=desk1:0").is_err());
        assert!(parse_vm("vm1=:7410").is_err());
        assert!(parse_vm("../x=desk1:7410").unwrap_err().contains("VM name"));
    }

    #[test]
    fn pairs_need_name_and_value() {
        assert_eq!(parse_pair("vm1=10.0.0.2:7410").unwrap(), ("vm1".into(), "10.0.0.2:7410".into()));
        assert!(parse_pair("vm1").is_err());
        assert!(parse_pair("=x:1").is_err());
        assert!(parse_pair("vm1=").is_err());
    }
}
