//! Moving a VM to the server (DESIGN.md section 3, consolidation).
//!
//! Idle check first (unless forced), then the server's capacity check
//! (`Reserve`), and only then anything the user could notice: the VM stops,
//! its descriptor is saved as the checkpoint, its zero pages are listed,
//! memserv and diskserv start, and the server gets the lot. If the server
//! cannot run it, the VM resumes here from the checkpoint it just saved.
//!
//! In a fleet (`[fleet]`), the server is chosen first: the registered
//! servers whose key is enrolled here, by the placement policy
//! ([`fleet_registry::placement`]); the VM's placement remembers the one
//! chosen, so that its way home, the heartbeat and a failover talk to it.

use std::time::{Duration, Instant};

use daemon_protocol::local::ConsolidateReport;
use daemon_protocol::{ConsolidateRequest, Control, ControlHello, ReserveRequest, CONTROL_TIMEOUT};
use fleet_registry::Demand;
use identifiers::{HostName, VmName};
use migration_formats::ZeroMap;
use qemu_driver::{dirty_rate, judge, IdleVerdict, QemuError, Resumed};
use wire::protocol::Message;
use wire::{Channel, Credentials};

use crate::config::DesktopConfig;
use crate::error::DesktopError;
use crate::local_vm::{now_secs, FleetServer, LocalVm, Placement};

/// How long a connection to the server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request to an etcd member may take.
pub(crate) const ETCD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long QEMU measures the dirty-page rate.
const DIRTY_RATE_PERIOD: Duration = Duration::from_secs(1);

/// What the desktop's steps need.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The desktop's configuration.
    pub config: &'a DesktopConfig,
    /// This host's key and its enrolled servers.
    pub credentials: &'a std::sync::Arc<Credentials>,
    /// A fleet server not to choose: the one a VM is leaving (it is being
    /// drained, or short of memory).
    pub avoid: Option<&'a HostName>,
}

impl Context<'_> {
    /// Opens a control connection to `at`, the fleet server holding a VM
    /// (which must present the key enrolled under its name), or to the
    /// configured `server` when none.
    ///
    /// # Errors
    /// The server cannot be reached, refused us, or is not a server daemon.
    pub fn connect(&self, at: Option<&FleetServer>) -> Result<Channel, DesktopError> {
        let hello = ControlHello::Desktop(self.config.name.clone()).encode_body();
        let address = at.map_or_else(|| self.config.server.clone(), |server| server.address.to_string());
        let expect = at.map(|server| &server.name);
        let (mut channel, answer) = Channel::connect(&address, self.credentials, expect, &hello, CONNECT_TIMEOUT)
            .map_err(|e| DesktopError::ServerUnreachable(Box::new(e)))?;
        match Control::decode_body(&answer) {
            Ok(Control::Welcome(_)) => {}
            Ok(Control::Failed(why)) => return Err(DesktopError::ServerRefusedHello(why)),
            _ => return Err(DesktopError::NotAServer(address)),
        }
        channel.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(|e| DesktopError::ServerConnection(Box::new(e)))?;
        Ok(channel)
    }

    /// The server of the fleet to take `vm`, or none without `[fleet]`
    /// (the configured `server` then takes it). Registered servers whose
    /// key is not enrolled here are skipped, and so are unusable records,
    /// each with its reason in the log, and the server to avoid.
    ///
    /// # Errors
    /// [`DesktopError::FleetRegistry`] when etcd cannot be read,
    /// [`DesktopError::NoFleetServer`] when no server can take the VM.
    pub fn choose_server(&self, vm: &VmName, log: &mut dyn FnMut(String)) -> Result<Option<FleetServer>, DesktopError> {
        let Some(fleet) = &self.config.fleet else { return Ok(None) };
        let policy = fleet.policy().expect("checked at load");
        let client = fleet.etcd.client(ETCD_TIMEOUT);
        let (records, bad) = fleet_registry::registered_servers(&client)
            .map_err(|e| DesktopError::FleetRegistry { vm: vm.clone(), source: Box::new(e) })?;
        for why in bad {
            tracing::warn!(vm = %vm, "{why}");
        }
        let (trusted, untrusted): (Vec<_>, Vec<_>) = records
            .into_iter()
            .filter(|record| Some(&record.name) != self.avoid)
            .partition(|record| self.credentials.is_peer(&record.name));
        for record in untrusted {
            tracing::warn!(
                vm = %vm,
                server = %record.name,
                "skipping a registered server whose key is not enrolled here \
                 (`jettison enroll {} KEY` if it belongs to the office)",
                record.name
            );
        }
        // At most what the idle check let through (percent of one core).
        let demand = Demand::idle_vm(self.config.idle.max_cpu_percent / 100.0);
        let chosen = policy
            .choose(&trusted, &demand)
            .map_err(|e| DesktopError::NoFleetServer { vm: vm.clone(), source: Box::new(e) })?;
        let line = format!(
            "the fleet's placement chose {} at {} ({} VM(s), {:.0} of {:.0} MiB held; {} server(s) considered)",
            chosen.name,
            chosen.address,
            chosen.load.vms,
            chosen.load.memory_mib,
            chosen.capacity.memory_mib,
            trusted.len()
        );
        tracing::info!(vm = %vm, "{line}");
        log(line);
        Ok(Some(FleetServer { name: chosen.name.clone(), address: chosen.address }))
    }
}

/// Sends `request` and waits for the answer.
///
/// # Errors
/// The connection fails or the answer does not decode.
pub fn ask(channel: &mut Channel, request: &Control) -> Result<Control, DesktopError> {
    channel.send(&request.encode_body()).map_err(|e| DesktopError::ServerConnection(Box::new(e)))?;
    let body = channel.recv().map_err(|e| DesktopError::ServerConnection(Box::new(e)))?;
    Control::decode_body(&body).map_err(|e| DesktopError::ServerUnreadable(Box::new(e)))
}

/// Sends `request` followed by `stream` (`Data`... `End`), and returns the answer.
fn send_with_stream(channel: &mut Channel, request: &Control, stream: &[u8]) -> Result<Control, DesktopError> {
    channel.send(&request.encode_body()).map_err(|e| DesktopError::ServerConnection(Box::new(e)))?;
    daemon_protocol::send_stream(channel, stream).map_err(DesktopError::SendStream)?;
    let body = channel.recv().map_err(|e| DesktopError::ServerConnection(Box::new(e)))?;
    Control::decode_body(&body).map_err(|e| DesktopError::ServerUnreadable(Box::new(e)))
}

/// Consolidates `vm`; `log` gets a line per step. Returns the report.
///
/// # Errors
/// Why it was refused or failed; the VM then runs on the desktop (or, for
/// [`DesktopError::HandOverUnknown`], where the heartbeat finds it).
pub fn consolidate(
    ctx: Context<'_>,
    vm: &mut LocalVm,
    force: bool,
    log: &mut dyn FnMut(String),
) -> Result<ConsolidateReport, DesktopError> {
    let name = vm.name().clone();
    match vm.placement() {
        Placement::Desktop => {}
        Placement::Server { .. } => return Err(DesktopError::AlreadyOnServer { vm: name }),
        Placement::Off | Placement::Saved => return Err(DesktopError::NotRunning { vm: name }),
    }
    let started = Instant::now();
    if force {
        log(format!("{name}: not checking whether it is idle (--force)"));
    } else {
        let qmp = vm.qmp().ok_or_else(|| DesktopError::NotRunning { vm: name.clone() })?;
        let dirty = match dirty_rate(qmp, DIRTY_RATE_PERIOD) {
            Ok(dirty) => dirty,
            // A measurement that does not end in time says the VM or the
            // host is too busy to tell: a refusal to try again, as a busy
            // VM gets.
            Err(source @ QemuError::Timeout { .. }) => {
                return Err(DesktopError::NotIdle {
                    why: format!(
                        "{name}: its dirty rate could not be measured ({}); the VM or this host is busy: try again \
                         when it is quiet, or use --force",
                        wire::chain(&source)
                    ),
                })
            }
            Err(source) => {
                return Err(DesktopError::Qemu { vm: name, action: "measure its dirty rate", source: Box::new(source) })
            }
        };
        match judge(name.as_str(), vm.window(), dirty, &ctx.config.idle) {
            IdleVerdict::Idle(measured) => log(format!("{name} is idle: {measured}")),
            IdleVerdict::Busy(why) => return Err(DesktopError::NotIdle { why }),
        }
    }
    if !vm.is_running() {
        return Err(DesktopError::NotRunning { vm: name });
    }

    let server = ctx.choose_server(&name, log)?;
    let mut channel = ctx.connect(server.as_ref())?;
    let disk_sizes = vm.disk_sizes()?;
    let (&disk_bytes, extra) =
        disk_sizes.split_first().expect("a checked configuration names a disk, and disk_sizes has one per disk");
    let reserve = Control::Reserve(ReserveRequest {
        vm: name.clone(),
        profile: vm.profile()?,
        disk_bytes,
        extra_disk_bytes: extra.to_vec(),
    });
    let (expected, fence) = match ask(&mut channel, &reserve)? {
        Control::Reserved { expected, fence } => (expected, fence),
        Control::Failed(why) => return Err(DesktopError::Refused(why)),
        Control::NoRoom(why) => return Err(DesktopError::NoRoom(why)),
        other => return Err(DesktopError::UnexpectedAnswer { request: "Reserve", got: other.kind() }),
    };
    log(format!("the server has room ({:.1} MiB expected)", expected as f64 / (1024.0 * 1024.0)));

    let stop_at = Instant::now();
    let descriptor_bytes = vm.stop_and_save()?;
    log(format!("{name} stopped; descriptor {descriptor_bytes} bytes"));
    let (server_ms, zero_pages) = match hand_over(ctx, vm, server, fence, &mut channel) {
        Ok(done) => done,
        Err(HandOver::Unknown(e)) => {
            return Err(DesktopError::HandOverUnknown { vm: name, source: Box::new(e) });
        }
        Err(HandOver::Refused(e)) => {
            let why = wire::chain(&e);
            log(format!("the server could not take {name}: {why}; resuming it here"));
            let checkpoint = vm.checkpoint();
            vm.stop_serving();
            vm.resume_from(&checkpoint, Resumed::WhereItStopped)?;
            return Err(DesktopError::ResumedHere { vm: name, why });
        }
    };
    log(format!("{name} runs on the server"));
    Ok(ConsolidateReport {
        vm: name,
        descriptor_bytes,
        zero_pages,
        expected_bytes: expected,
        downtime_secs: stop_at.elapsed().as_secs_f64(),
        total_secs: started.elapsed().as_secs_f64(),
        server_ms,
    })
}

/// Why a hand-over did not finish.
#[derive(Debug)]
enum HandOver {
    /// The server does not run the VM: it must resume here.
    Refused(DesktopError),
    /// The connection broke after the request went out: the server may run
    /// it; the heartbeat finds out.
    Unknown(DesktopError),
}

/// The part after the VM stopped: checkpoint served, placement recorded,
/// the server given the VM. Returns the server's start time in ms and the
/// number of zero pages.
fn hand_over(
    ctx: Context<'_>,
    vm: &mut LocalVm,
    server: Option<FleetServer>,
    fence: Option<u64>,
    channel: &mut Channel,
) -> Result<(u64, u64), HandOver> {
    let name = vm.name().clone();
    let zero_map = ZeroMap::scan(vm.ram_file(), 4096)
        .map_err(|source| HandOver::Refused(DesktopError::ZeroMap { vm: name.clone(), source: Box::new(source) }))?;
    let descriptor = std::fs::read(vm.checkpoint()).map_err(|source| {
        HandOver::Refused(DesktopError::File { vm: name.clone(), action: "read", path: vm.checkpoint(), source })
    })?;
    vm.serve(ctx.config.serve_ip, ctx.credentials, fence).map_err(HandOver::Refused)?;
    vm.set_placement(Placement::Server { since: now_secs(), fleet: server, fence }).map_err(HandOver::Refused)?;
    let ip = ctx.config.serve_ip;
    let request = ConsolidateRequest {
        vm: name,
        desktop_mac: ctx.config.mac,
        desktop_control: ctx.config.control_listen,
        memserv: std::net::SocketAddr::new(ip, vm.config().memserv_port),
        diskserv: std::net::SocketAddr::new(ip, vm.config().diskserv_port),
        vm_mac: vm.config().mac,
        descriptor_bytes: descriptor.len() as u64,
        descriptor_crc: crc32fast::hash(&descriptor),
        zero_map: zero_map.encode(),
    };
    let zero_pages = zero_map.zero_units();
    let answer = send_with_stream(channel, &Control::Consolidate(Box::new(request)), &descriptor);
    let refused = |vm: &mut LocalVm, why: DesktopError| {
        vm.set_placement(Placement::Desktop).map_err(HandOver::Refused)?;
        Err(HandOver::Refused(why))
    };
    match answer {
        Ok(Control::Running(ms)) => Ok((ms, zero_pages)),
        Ok(Control::Failed(why)) => refused(vm, DesktopError::Refused(why)),
        Ok(other) => refused(vm, DesktopError::UnexpectedAnswer { request: "Consolidate", got: other.kind() }),
        // The server may or may not have the VM running; asking it would
        // need the connection we just lost. Resuming here too could run the
        // VM twice, so the placement stays "server" and the heartbeat
        // decides (it resumes here if the server does not have it).
        Err(e) => Err(HandOver::Unknown(e)),
    }
}
