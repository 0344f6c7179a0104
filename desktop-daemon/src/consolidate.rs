//! Moving a VM to the server (DESIGN.md section 3, consolidation).
//!
//! Idle check first (unless forced), then the server's capacity check
//! (`Reserve`), and only then anything the user could notice: the VM stops,
//! its descriptor is saved as the checkpoint, its zero pages are listed,
//! memserv and diskserv start, and the server gets the lot. If the server
//! cannot run it, the VM resumes here from the checkpoint it just saved.

use std::time::{Duration, Instant};

use daemon_protocol::{ConsolidateRequest, Control, ControlHello, ReserveRequest, CONTROL_TIMEOUT};
use migration_formats::ZeroMap;
use qemu_driver::{dirty_rate, judge, IdleVerdict};
use serde_json::json;
use wire::protocol::Message;
use wire::{Channel, SharedKey};

use crate::config::DesktopConfig;
use crate::local_vm::{now_secs, LocalVm, Placement};

/// How long a connection to the server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QEMU measures the dirty-page rate.
const DIRTY_RATE_PERIOD: Duration = Duration::from_secs(1);

/// What the desktop's steps need.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The desktop's configuration.
    pub config: &'a DesktopConfig,
    /// The shared key.
    pub key: &'a SharedKey,
}

impl Context<'_> {
    /// Opens a control connection to the server.
    ///
    /// # Errors
    /// A text saying the server cannot be reached or refused us.
    pub fn connect(&self) -> Result<Channel, String> {
        let hello = ControlHello::Desktop(self.config.name.clone()).encode_body();
        let (mut channel, answer) = Channel::connect(&self.config.server, self.key, &hello, CONNECT_TIMEOUT)
            .map_err(|e| format!("cannot reach the server daemon: {}", wire::chain(&e)))?;
        match Control::decode_body(&answer) {
            Ok(Control::Welcome(_)) => {}
            Ok(Control::Failed(why)) => return Err(format!("the server refused us: {why}")),
            _ => return Err(format!("{} is not a Jettison server daemon", self.config.server)),
        }
        channel.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(channel)
    }
}

/// Sends `request` and waits for the answer.
///
/// # Errors
/// A text when the connection fails or the answer does not decode.
pub fn ask(channel: &mut Channel, request: &Control) -> Result<Control, String> {
    let failed = |e: wire::WireError| format!("the server connection failed: {}", wire::chain(&e));
    channel.send(&request.encode_body()).map_err(failed)?;
    let body = channel.recv().map_err(failed)?;
    Control::decode_body(&body).map_err(|e| format!("the server sent something unreadable: {e}"))
}

/// Consolidates `vm`; `log` gets a line per step. Returns the report.
///
/// # Errors
/// Why it was refused or failed; the VM then runs on the desktop.
pub fn consolidate(
    ctx: Context<'_>,
    vm: &mut LocalVm,
    force: bool,
    log: &mut dyn FnMut(String),
) -> Result<serde_json::Value, String> {
    let name = vm.name().to_owned();
    if vm.placement() != &Placement::Desktop {
        return Err(format!("{name} is already on the server"));
    }
    if !vm.is_running() {
        return Err(format!("{name} is not running on this desktop; nothing to consolidate"));
    }
    let started = Instant::now();
    if force {
        log(format!("{name}: not checking whether it is idle (--force)"));
    } else {
        let qmp = vm.qmp().ok_or_else(|| format!("{name} is not running"))?;
        let dirty =
            dirty_rate(qmp, DIRTY_RATE_PERIOD).map_err(|e| format!("cannot measure {name}'s dirty rate: {e}"))?;
        match judge(&name, vm.window(), dirty, &ctx.config.idle) {
            IdleVerdict::Idle(measured) => log(format!("{name} is idle: {measured}")),
            IdleVerdict::Busy(why) => return Err(why),
        }
    }

    let mut channel = ctx.connect()?;
    let ram_bytes = vm.config().memory_mib << 20;
    let disk_bytes = std::fs::metadata(&vm.config().disk)
        .map_err(|e| format!("cannot read {}: {e}", vm.config().disk.display()))?
        .len();
    let reserve = Control::Reserve(ReserveRequest { vm: name.clone(), ram_bytes, disk_bytes });
    let expected = match ask(&mut channel, &reserve)? {
        Control::Reserved(bytes) => bytes,
        Control::Failed(why) => return Err(why),
        other => return Err(format!("the server answered {} to a reservation", other.kind())),
    };
    log(format!("the server has room ({:.1} MiB expected)", expected as f64 / (1024.0 * 1024.0)));

    let stop_at = Instant::now();
    let descriptor_bytes = vm.stop_and_save()?;
    log(format!("{name} stopped; descriptor {descriptor_bytes} bytes"));
    let (server_ms, zero_pages) = match hand_over(ctx, vm, &mut channel) {
        Ok(done) => done,
        Err(HandOver::Unknown(e)) => return Err(e),
        Err(HandOver::Refused(e)) => {
            log(format!("the server could not take {name}: {e}; resuming it here"));
            let checkpoint = vm.checkpoint();
            vm.stop_serving();
            vm.resume_from(&checkpoint)?;
            return Err(format!("the server could not take {name} ({e}); it runs on the desktop again"));
        }
    };
    log(format!("{name} runs on the server"));
    Ok(json!({
        "vm": name,
        "descriptor_bytes": descriptor_bytes,
        "zero_pages": zero_pages,
        "expected_bytes": expected,
        "downtime_secs": stop_at.elapsed().as_secs_f64(),
        "total_secs": started.elapsed().as_secs_f64(),
        "server_ms": server_ms,
    }))
}

/// Why a hand-over did not finish.
#[derive(Debug)]
enum HandOver {
    /// The server does not run the VM: it must resume here.
    Refused(String),
    /// The connection broke after the request went out: the server may run
    /// it; the heartbeat finds out.
    Unknown(String),
}

/// The part after the VM stopped: checkpoint served, placement recorded,
/// the server given the VM. Returns the server's start time in ms and the
/// number of zero pages.
fn hand_over(ctx: Context<'_>, vm: &mut LocalVm, channel: &mut Channel) -> Result<(u64, u64), HandOver> {
    let name = vm.name().to_owned();
    let zero_map = ZeroMap::scan(vm.ram_file(), 4096)
        .map_err(|e| HandOver::Refused(format!("cannot scan {} for zero pages: {e}", vm.ram_file().display())))?;
    let descriptor = std::fs::read(vm.checkpoint())
        .map_err(|e| HandOver::Refused(format!("cannot read {}: {e}", vm.checkpoint().display())))?;
    vm.serve(ctx.config.serve_ip, ctx.key).map_err(HandOver::Refused)?;
    vm.set_placement(Placement::Server { since: now_secs() }).map_err(HandOver::Refused)?;
    let ip = ctx.config.serve_ip;
    let request = ConsolidateRequest {
        vm: name.clone(),
        desktop: ctx.config.name.clone(),
        desktop_mac: ctx.config.mac.clone(),
        desktop_control: ctx.config.control_listen.to_string(),
        memserv: std::net::SocketAddr::new(ip, vm.config().memserv_port).to_string(),
        diskserv: std::net::SocketAddr::new(ip, vm.config().diskserv_port).to_string(),
        memory_mib: vm.config().memory_mib,
        vm_mac: vm.config().mac.clone(),
        kernel_args: vm.config().kernel_args.clone(),
        descriptor,
        zero_map: zero_map.encode(),
    };
    let zero_pages = zero_map.zero_units();
    let answer = ask(channel, &Control::Consolidate(Box::new(request)));
    let refused = |vm: &mut LocalVm, why: String| {
        vm.set_placement(Placement::Desktop).map_err(HandOver::Refused)?;
        Err(HandOver::Refused(why))
    };
    match answer {
        Ok(Control::Running(ms)) => Ok((ms, zero_pages)),
        Ok(Control::Failed(why)) => refused(vm, why),
        Ok(other) => refused(vm, format!("the server answered {}", other.kind())),
        Err(e) => {
            // The server may or may not have the VM running; asking it
            // would need the connection we just lost. Resuming here too
            // could run the VM twice, so the placement stays "server" and
            // the heartbeat decides (it resumes here if the server does
            // not have it).
            Err(HandOver::Unknown(format!("{e}; the heartbeat will find out where {name} runs")))
        }
    }
}
