//! The one shape of `jettison status --json`, whichever answers: the
//! desktop daemon, the server daemon, or the standalone memtap and
//! cownetdisk state (`<vm>.stats` files). `docs/status.schema.json` is its
//! JSON Schema; a script checks `schema_version` and reads the rest.
//!
//! Version rule: a field is added without a new version when scripts that
//! ignore it keep working; renaming, removing or changing the meaning or
//! unit of a field makes a new version. Counts are exact integers (pages
//! and blocks are 4 KiB); sizes are also given in MiB and times in seconds.

use serde::Serialize;

use daemon_protocol::local::{DesktopActivity, DesktopPower, DesktopStatus, ServerEnergy, ServerStatus, VmLocation};
use daemon_protocol::{HostedState, HostedStatus};
use power::LedgerSummary;

/// The version this command writes.
pub const STATUS_SCHEMA_VERSION: u32 = 1;

/// Bytes in a page, and in a block of the daemons' disks.
const UNIT: u64 = 4096;

/// `jettison status --json`.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    /// [`STATUS_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Who answered.
    pub source: Source,
    /// The daemon's host name; none for the standalone state.
    pub host: Option<String>,
    /// A desktop's server and whether it answered; none elsewhere.
    pub server: Option<ServerLink>,
    /// The VMs.
    pub vms: Vec<VmStatus>,
    /// The desktop's energy (`--power`), if asked.
    pub power: Option<PowerStatus>,
    /// The desktop daemon's own sleep while its VMs are away (`[power]` in
    /// desktop.toml); none elsewhere or without that section.
    pub sleep: Option<DesktopPower>,
    /// The desktop daemon's activity monitor (`[activity]` in
    /// desktop.toml); none elsewhere or without that section.
    pub activity: Option<DesktopActivity>,
    /// The server daemon's energy ledger (`[energy]` in server.toml): each
    /// VM's share of the server against its desktop's saving; none
    /// elsewhere.
    pub server_energy: Option<ServerEnergy>,
}

/// Who answered.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The desktop daemon.
    Desktop,
    /// The server daemon.
    Server,
    /// memtap's and cownetdisk's `<vm>.stats` files.
    Standalone,
}

/// A desktop's server.
#[derive(Debug, Serialize)]
pub struct ServerLink {
    /// `host:port`.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
}

/// One VM.
#[derive(Debug, Serialize)]
pub struct VmStatus {
    /// Its name.
    pub vm: String,
    /// Its desktop, where known.
    pub desktop: Option<String>,
    /// Where it is.
    pub location: Location,
    /// Whether QEMU runs it where it is.
    pub running: bool,
    /// When it left for the server, seconds since the epoch.
    pub since: Option<u64>,
    /// Why it failed to start or was lost, in QEMU's or the daemon's words.
    pub error: Option<String>,
    /// Its figures on the server, where it is there and they were read.
    pub on_server: Option<OnServer>,
}

/// Where a VM is.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// On its desktop.
    Desktop,
    /// On the server.
    Server,
    /// Being moved now.
    Moving,
    /// On its desktop, powered off.
    Off,
    /// On its desktop, saved to its checkpoint until the daemon starts.
    Saved,
}

/// A VM's figures on the server.
#[derive(Debug, Serialize)]
pub struct OnServer {
    /// `running`, `stopped` (half way home), `moving` or `lost`.
    pub state: &'static str,
    /// Seconds since it started there; none standalone.
    pub seconds: Option<u64>,
    /// Its RAM, MiB.
    pub ram_mib: f64,
    /// The working set the capacity check expected, MiB; none standalone.
    pub expected_mib: Option<f64>,
    /// The desktop's power state as the server sees it; none standalone.
    pub desktop_power: Option<String>,
    /// Memory.
    pub memory: MemoryFigures,
    /// Disk; none when no cownetdisk state was found for it.
    pub disk: Option<DiskFigures>,
}

/// Memory pages moved for a VM on the server.
#[derive(Debug, Serialize)]
pub struct MemoryFigures {
    /// Pages fetched from the desktop (prefetched ones included).
    pub pages_fetched: u64,
    /// The same in MiB.
    pub fetched_mib: f64,
    /// Pages the consolidation's zero map marked zero (never fetched);
    /// none standalone.
    pub zero_pages: Option<u64>,
    /// The same in MiB.
    pub zero_mib: Option<f64>,
    /// Faults answered as zero pages without a fetch.
    pub zero_pages_served: u64,
    /// Pages the guest has written on the server: from a daemon, exact as
    /// of the status (the server writes the guest's page cache back to
    /// memtap first); standalone, what memtap holds (written back so far).
    pub dirty_pages: u64,
    /// The same in MiB.
    pub dirty_mib: f64,
    /// Pages the guest freed and reported on the server: discarded, never
    /// fetched, sent home as holes.
    pub discarded_pages: u64,
}

/// Disk blocks moved for a VM on the server.
#[derive(Debug, Serialize)]
pub struct DiskFigures {
    /// Blocks fetched from the desktop.
    pub blocks_fetched: u64,
    /// The same in MiB.
    pub fetched_mib: f64,
    /// Blocks the guest wrote.
    pub dirty_blocks: u64,
    /// The same in MiB.
    pub dirty_mib: f64,
    /// Bytes in a block.
    pub block_bytes: u64,
}

/// A desktop's energy over every consolidation, from `jettison power`'s ledger.
#[derive(Debug, Serialize)]
pub struct PowerStatus {
    /// Consolidations in the ledger.
    pub consolidations: usize,
    /// Seconds consolidated in all.
    pub consolidated_secs: f64,
    /// Wakes.
    pub wakes: u64,
    /// Energy used, kJ.
    pub used_kj: f64,
    /// Energy the desktop would have used idle, kJ.
    pub idle_kj: f64,
    /// Energy saved, percent of the idle figure.
    pub saved_percent: f64,
}

/// `units` of `unit_bytes` in MiB.
fn mib(units: u64, unit_bytes: u64) -> f64 {
    (units * unit_bytes) as f64 / (1024.0 * 1024.0)
}

impl StatusDocument {
    /// The desktop daemon's answer.
    pub fn desktop(status: &DesktopStatus) -> Self {
        let vms = status
            .vms
            .iter()
            .map(|vm| VmStatus {
                vm: vm.vm.to_string(),
                desktop: Some(status.desktop.to_string()),
                location: match vm.on {
                    VmLocation::Desktop => Location::Desktop,
                    VmLocation::Server => Location::Server,
                    VmLocation::Moving => Location::Moving,
                    VmLocation::Off => Location::Off,
                    VmLocation::Saved => Location::Saved,
                },
                running: vm.running_here || vm.server.as_ref().is_some_and(|s| s.state == HostedState::Running),
                since: vm.since,
                error: vm.error.clone().or_else(|| vm.server.as_ref().and_then(lost_reason)),
                on_server: vm.server.as_ref().map(hosted),
            })
            .collect();
        StatusDocument {
            schema_version: STATUS_SCHEMA_VERSION,
            source: Source::Desktop,
            host: Some(status.desktop.to_string()),
            server: Some(ServerLink {
                address: status.server.clone(),
                reachable: status.server_reachable,
                error: status.server_error.clone(),
            }),
            vms,
            power: None,
            sleep: status.power.clone(),
            activity: status.activity.as_deref().cloned(),
            server_energy: None,
        }
    }

    /// The server daemon's answer.
    pub fn server(status: &ServerStatus) -> Self {
        let vms = status
            .vms
            .iter()
            .map(|vm| VmStatus {
                vm: vm.vm.to_string(),
                desktop: Some(vm.desktop.to_string()),
                location: if vm.state == HostedState::Moving { Location::Moving } else { Location::Server },
                running: vm.state == HostedState::Running,
                since: None,
                error: lost_reason(vm),
                on_server: Some(hosted(vm)),
            })
            .collect();
        StatusDocument {
            schema_version: STATUS_SCHEMA_VERSION,
            source: Source::Server,
            host: Some(status.server.to_string()),
            server: None,
            vms,
            power: None,
            sleep: None,
            activity: None,
            server_energy: status.energy.clone(),
        }
    }

    /// The standalone memtap and cownetdisk state, matched by VM name.
    pub fn standalone(memory: &[memtap::RamStats], disks: &[cownetdisk::DiskStats]) -> Self {
        let mut names: Vec<&str> =
            memory.iter().map(|m| m.vm.as_str()).chain(disks.iter().map(|d| d.vm.as_str())).collect();
        names.sort_unstable();
        names.dedup();
        let vms = names
            .into_iter()
            .map(|name| {
                let ram = memory.iter().find(|m| m.vm == name);
                let disk = disks.iter().find(|d| d.vm == name);
                VmStatus {
                    vm: name.to_owned(),
                    desktop: None,
                    location: Location::Server,
                    running: true,
                    since: None,
                    error: None,
                    on_server: Some(OnServer {
                        state: "running",
                        seconds: None,
                        ram_mib: ram.map_or(0.0, |m| m.ram_bytes as f64 / (1024.0 * 1024.0)),
                        expected_mib: None,
                        desktop_power: None,
                        memory: MemoryFigures {
                            pages_fetched: ram.map_or(0, |m| m.pages_fetched),
                            fetched_mib: mib(ram.map_or(0, |m| m.pages_fetched), UNIT),
                            zero_pages: None,
                            zero_mib: None,
                            zero_pages_served: ram.map_or(0, |m| m.zero_pages_served),
                            dirty_pages: ram.map_or(0, |m| m.dirty_pages),
                            dirty_mib: mib(ram.map_or(0, |m| m.dirty_pages), UNIT),
                            discarded_pages: ram.map_or(0, |m| m.discarded_pages),
                        },
                        disk: disk.map(|d| disk_figures(d.blocks_fetched, d.dirty_blocks, u64::from(d.block_size))),
                    }),
                }
            })
            .collect();
        StatusDocument {
            schema_version: STATUS_SCHEMA_VERSION,
            source: Source::Standalone,
            host: None,
            server: None,
            vms,
            power: None,
            sleep: None,
            activity: None,
            server_energy: None,
        }
    }

    /// Adds the desktop's energy ledger.
    pub fn with_power(mut self, ledger: Option<&LedgerSummary>) -> Self {
        self.power = ledger.and_then(|l| {
            l.total.as_ref().map(|t| PowerStatus {
                consolidations: l.consolidations.len(),
                consolidated_secs: t.wall_secs,
                wakes: t.wakes,
                used_kj: t.joules / 1000.0,
                idle_kj: t.idle_baseline_joules / 1000.0,
                saved_percent: t.saved_percent,
            })
        });
        self
    }
}

fn lost_reason(vm: &HostedStatus) -> Option<String> {
    match &vm.state {
        HostedState::Lost(why) => Some(why.clone()),
        _ => None,
    }
}

fn disk_figures(fetched: u64, dirty: u64, block: u64) -> DiskFigures {
    DiskFigures {
        blocks_fetched: fetched,
        fetched_mib: mib(fetched, block),
        dirty_blocks: dirty,
        dirty_mib: mib(dirty, block),
        block_bytes: block,
    }
}

fn hosted(s: &HostedStatus) -> OnServer {
    OnServer {
        state: match s.state {
            HostedState::Running => "running",
            HostedState::Stopped => "stopped",
            HostedState::Moving => "moving",
            HostedState::Lost(_) => "lost",
        },
        seconds: Some(s.seconds),
        ram_mib: s.ram_bytes as f64 / (1024.0 * 1024.0),
        expected_mib: Some(s.expected_bytes as f64 / (1024.0 * 1024.0)),
        desktop_power: (!s.desktop_power.is_empty()).then(|| s.desktop_power.clone()),
        memory: MemoryFigures {
            pages_fetched: s.pages_fetched,
            fetched_mib: mib(s.pages_fetched, UNIT),
            zero_pages: Some(s.zero_pages),
            zero_mib: Some(mib(s.zero_pages, UNIT)),
            zero_pages_served: s.zero_pages_served,
            dirty_pages: s.dirty_pages,
            dirty_mib: mib(s.dirty_pages, UNIT),
            discarded_pages: s.discarded_pages,
        },
        disk: Some(disk_figures(s.blocks_fetched, s.dirty_blocks, UNIT)),
    }
}
