//! `jettison drain SERVER`: empties a server of a fleet, for maintenance or
//! to let it sleep. The command marks the server in etcd
//! ([`fleet_registry::drain`]) and waits while the server's VMs leave:
//! each desktop takes its VM home with what it changed, then consolidates
//! it on another server, or keeps it when none has room. The mark holds
//! (across restarts of the server) until `jettison drain --undo SERVER`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon_protocol::config_file::{self, ConfigFileError};
use fleet_registry::{registered_servers, DrainMark, EtcdClient, EtcdEndpoints, EtcdError, ServerRecord};
use identifiers::HostName;

use crate::CmdResult;

/// Where the command looks for a `[fleet]` section, in order.
const CONFIGS: [&str; 2] = ["/etc/jettison/server.toml", "/etc/jettison/desktop.toml"];
/// How long one request to an etcd member may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the command reads the server's record while it waits.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `jettison drain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server to drain, by its name in the fleet.
    server: HostName,
    /// End the drain: the server takes VMs again.
    #[arg(long)]
    undo: bool,
    /// A configuration whose [fleet] section names the etcd cluster (the
    /// server's or a desktop's); default: /etc/jettison/server.toml, else
    /// /etc/jettison/desktop.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds to wait for its VMs to leave (0: mark it and return).
    #[arg(long, default_value_t = 600)]
    wait: u64,
}

/// Why a drain failed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// No configuration to read the etcd cluster from.
    #[error("no configuration names the fleet's etcd: none of {} exists; give --config FILE", CONFIGS.join(", "))]
    NoConfig,
    /// The configuration cannot be read.
    #[error("the configuration naming the fleet's etcd")]
    Config(#[from] ConfigFileError),
    /// The configuration has no `[fleet]`.
    #[error("{} has no [fleet] section: drains are for a fleet of servers (with one server, `jettison save-all --socket /run/jettison/server.sock` on it sends its VMs home)", path.display())]
    NotAFleet {
        /// The file.
        path: PathBuf,
    },
    /// etcd does not answer or refused.
    #[error("cannot {action} the drain mark of {server} in etcd")]
    Etcd {
        /// What the command was doing.
        action: &'static str,
        /// The server.
        server: HostName,
        /// What failed.
        #[source]
        source: EtcdError,
    },
    /// The VMs did not all leave in time.
    #[error(
        "{server} still hosts {vms} VM(s) after {secs} s: their desktops may be asleep, off or unable to reach \
         etcd (see the server's log, `journalctl -u jettison-server`); the mark holds, so they move as soon as \
         their desktops answer"
    )]
    StillHosting {
        /// The server.
        server: HostName,
        /// VMs it registers.
        vms: u32,
        /// How long the command waited.
        secs: u64,
    },
    /// The server did not show the mark in time.
    #[error(
        "{server} has not {what} within {secs} s: is its daemon running, with [fleet] in its server.toml, and can \
         it reach etcd? The mark holds: it drains once it reads it"
    )]
    NotSeen {
        /// The server.
        server: HostName,
        /// "registered", "read the mark".
        what: &'static str,
        /// How long the command waited.
        secs: u64,
    },
}

/// The `[fleet]` part of a server's or a desktop's configuration: its
/// other keys are not read here.
#[derive(Debug, serde::Deserialize)]
struct FleetOnly {
    fleet: Option<EtcdOnly>,
}

#[derive(Debug, serde::Deserialize)]
struct EtcdOnly {
    etcd: EtcdEndpoints,
}

/// The etcd members named by `config`, or by the first default file.
fn etcd_of(config: Option<&Path>) -> Result<EtcdEndpoints, DrainError> {
    let path = match config {
        Some(path) => path.to_owned(),
        None => CONFIGS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or(DrainError::NoConfig)?,
    };
    let read: FleetOnly = config_file::load(&path, |_| Ok(()))?;
    read.fleet.map(|fleet| fleet.etcd).ok_or(DrainError::NotAFleet { path })
}

/// `server`'s record, if it is registered now.
fn record_of(client: &EtcdClient, server: &HostName) -> Result<Option<ServerRecord>, DrainError> {
    let (records, _) = registered_servers(client).map_err(|source| DrainError::Etcd {
        action: "read the registry for",
        server: server.clone(),
        source,
    })?;
    Ok(records.into_iter().find(|r| r.name == *server))
}

/// Marks the server (or, with `--undo`, unmarks it), then waits for it to
/// be empty.
pub fn run(args: Args) -> CmdResult {
    let client = etcd_of(args.config.as_deref())?.client(ETCD_TIMEOUT);
    let server = &args.server;
    if args.undo {
        fleet_registry::unmark_draining(&client, server).map_err(|source| DrainError::Etcd {
            action: "delete",
            server: server.clone(),
            source,
        })?;
        println!(
            "drain: {server} is no longer drained; it takes VMs again once it reads that (within its lease's third)"
        );
        return Ok(());
    }
    let by = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned());
    let since_unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    fleet_registry::mark_draining(&client, server, &DrainMark { by, since_unix_secs })
        .map_err(|source| DrainError::Etcd { action: "write", server: server.clone(), source })?;
    println!("drain: {server} is marked as being drained: it takes no new VM, and its VMs move to other servers");
    if args.wait == 0 {
        return Ok(());
    }
    wait_until_empty(&client, server, Duration::from_secs(args.wait))?;
    println!("drain: {server} hosts no VM; it takes none until `jettison drain --undo {server}`");
    Ok(())
}

/// Waits up to `limit` for `server`'s record to show the drain and no VM,
/// printing each change of its count.
fn wait_until_empty(client: &EtcdClient, server: &HostName, limit: Duration) -> Result<(), DrainError> {
    let started = Instant::now();
    let mut last: Option<(bool, u32)> = None;
    loop {
        let record = record_of(client, server)?;
        let now = record.as_ref().map(|r| (r.draining, r.load.vms));
        if now != last {
            match now {
                None => println!("drain: {server} is not registered now (stopped, or cut off from etcd)"),
                Some((false, _)) => println!("drain: waiting for {server} to read the mark"),
                Some((true, vms)) if vms > 0 => println!("drain: {server} hosts {vms} VM(s)"),
                Some((true, _)) => return Ok(()),
            }
            last = now;
        }
        if started.elapsed() >= limit {
            let secs = limit.as_secs();
            return Err(match now {
                None => DrainError::NotSeen { server: server.clone(), what: "registered", secs },
                Some((false, _)) => DrainError::NotSeen { server: server.clone(), what: "read the mark", secs },
                Some((true, vms)) => DrainError::StillHosting { server: server.clone(), vms, secs },
            });
        }
        std::thread::sleep(POLL_EVERY);
    }
}
