//! `jettison memtap`: the server's FUSE filesystem of consolidated VMs' RAM.

use std::path::PathBuf;

use memtap::{Mount, RamFileConfig};
use migration_formats::ZeroMap;
use wire::{Hello, RemoteConfig, Service, SharedKey};

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
    #[arg(long = "vm", value_parser = parse_pair, required = true)]
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
    /// The shared key made by `jettison pair`.
    #[arg(long, default_value = "/etc/jettison/jettison.key")]
    key: PathBuf,
    /// Pages fetched around each faulting page.
    #[arg(long, default_value_t = memtap::prefetch::DEFAULT_PIVOT_WINDOW)]
    pivot_window: u64,
    /// Size of each VM's prefetch cache, in MiB.
    #[arg(long, default_value_t = (memtap::prefetch::DEFAULT_CACHE_BYTES >> 20) as u64)]
    cache_mib: u64,
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
    let key = SharedKey::load(&args.key)?;
    for (option, pairs) in [("--zero-map", &args.zero_maps), ("--wake-mac", &args.wake_macs)] {
        if let Some((name, _)) = pairs.iter().find(|(name, _)| !args.vms.iter().any(|(vm, _)| vm == name)) {
            return Err(format!("{option} names VM {name:?}, which no --vm names").into());
        }
    }
    let mut configs = Vec::new();
    for (name, addr) in &args.vms {
        let hello = Hello { service: Service::Memory, export: name.clone() };
        let remote = RemoteConfig::new(addr, key.clone(), hello);
        let mut config = RamFileConfig::new(name, args.state_dir.join(name), remote);
        let mac = args.wake_macs.iter().find(|(vm, _)| vm == name).map(|(_, mac)| mac.as_str());
        config.wake = args.wake.hook(name, mac, addr)?;
        config.pivot_window = args.pivot_window;
        config.cache_bytes = (args.cache_mib as usize) << 20;
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
    let mount = Mount::start(&args.mount, configs)?;
    println!("memtap: mounted at {}", args.mount.display());
    if let Some(signal) = wait_for_signal() {
        tracing::info!("{signal}: flushing and unmounting");
    }
    mount.unmount()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_name_and_value() {
        assert_eq!(parse_pair("vm1=10.0.0.2:7410").unwrap(), ("vm1".into(), "10.0.0.2:7410".into()));
        assert!(parse_pair("vm1").is_err());
        assert!(parse_pair("=x:1").is_err());
        assert!(parse_pair("vm1=").is_err());
    }
}
