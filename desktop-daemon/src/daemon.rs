//! The desktop daemon: starts the VMs, takes the `jettison` command's
//! requests on a local socket and the server's on the control port, samples
//! the VMs' activity, and keeps a heartbeat on the server for each VM that
//! is there.
//!
//! The heartbeat is the failure path of DESIGN.md section 3: if the server
//! says it lost a VM (its QEMU died), or cannot be reached for
//! `failover_after_secs`, the VM resumes here from its checkpoint, and the
//! log says what was lost. If the server holds a VM stopped half way home
//! (a reintegration broke off), the heartbeat brings it home.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use daemon_protocol::local::{
    self, DesktopStatus, DesktopVmStatus, LocalReply, LocalRequest, Refusal, Report, ViewTarget, VmLocation,
};
use daemon_protocol::{Control, ControlHello, HostedState, HostedStatus, CONTROL_TIMEOUT};
use identifiers::{HostName, VmName};
use qemu_driver::Resumed;
use wire::protocol::Message;
use wire::{Channel, Credentials};

use crate::activity::{ActivitySlot, Desk};
use crate::config::DesktopConfig;
use crate::consolidate::{ask, consolidate, Context, ETCD_TIMEOUT};
use crate::error::DesktopError;
use crate::local_vm::{now_secs, FleetServer, LocalVm, Placement};
use crate::metrics::DesktopMetrics;
use crate::power_slot::PowerSlot;
use crate::reintegrate::{finish_pending, reintegrate, Checkpoint, ReturnFrom};

/// How often the VMs' CPU and I/O are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often the server is asked about the VMs it hosts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

type Vm = Arc<Mutex<LocalVm>>;

fn lock(vm: &Vm) -> MutexGuard<'_, LocalVm> {
    vm.lock().expect("a VM lock was poisoned: a thread panicked holding it")
}

/// The running desktop daemon.
#[derive(Debug)]
pub struct DesktopDaemon {
    config: DesktopConfig,
    credentials: Arc<Credentials>,
    vms: BTreeMap<VmName, Vm>,
    /// Moves counted for the metrics endpoint.
    metrics: DesktopMetrics,
    /// The desktop's sleep while nothing runs here (`[power]`).
    power: PowerSlot,
    /// The activity monitor (`[activity]`).
    activity: ActivitySlot,
}

impl DesktopDaemon {
    /// Reads the key, opens every VM's state and finishes any
    /// reintegration a crash interrupted.
    ///
    /// # Errors
    /// The file or VM at fault.
    pub fn new(config: DesktopConfig) -> Result<Arc<DesktopDaemon>, DesktopError> {
        let credentials = Credentials::load(&config.host_key, &config.peers)
            .map_err(|source| DesktopError::LoadKey { source: Box::new(source) })?;
        if credentials.peer_count() == 0 {
            tracing::warn!(
                "no server is enrolled in {}: none can host this desktop's VMs until one is \
                 (`jettison enroll SERVER-NAME KEY`, then `systemctl reload jettison-desktop`)",
                config.peers.display()
            );
        }
        let mut vms = BTreeMap::new();
        for vm in &config.vms {
            let local = LocalVm::new(&config, vm)?;
            let finish = |disks: &[&std::path::Path]| {
                finish_pending(&Checkpoint::of(&local, disks))
                    .map_err(|source| DesktopError::FinishPending { vm: vm.name.clone(), source: Box::new(source) })
            };
            let images: Vec<std::path::PathBuf> = vm.disks().into_iter().map(|disk| disk.path).collect();
            let images: Vec<&std::path::Path> = images.iter().map(|image| image.as_path()).collect();
            if Checkpoint::of(&local, &images).has_pending() {
                // Through writable views for qcow2 disks, closed (flushed) after.
                let disks = local.raw_disks(qemu_driver::ViewAccess::ReadWrite)?;
                finish(&disks.iter().map(|disk| disk.path()).collect::<Vec<_>>())?;
                crate::local_vm::close_disks(&vm.name, disks)?;
            } else {
                finish(&images)?;
            }
            vms.insert(vm.name.clone(), Arc::new(Mutex::new(local)));
        }
        let metrics = DesktopMetrics::new(vms.keys());
        let power = PowerSlot::new(&config);
        let activity = ActivitySlot::new(config.activity.as_ref());
        Ok(Arc::new(DesktopDaemon { config, credentials: Arc::new(credentials), vms, metrics, power, activity }))
    }

    /// This host's key and enrolled servers (shared with its memserv and
    /// diskserv, so a reload of the peers applies to them too).
    pub fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials)
    }

    fn context(&self) -> Context<'_> {
        Context { config: &self.config, credentials: &self.credentials, avoid: None }
    }

    fn vm(&self, name: &VmName) -> Result<&Vm, DesktopError> {
        self.vms.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.vms.keys().map(VmName::as_str).collect();
            DesktopError::NoSuchVm { vm: name.clone(), known: known.join(", ") }
        })
    }

    /// Starts the VMs (booting those here, serving the checkpoints of those
    /// on the server) and serves until the process ends; calls `ready` once
    /// it listens and its VMs are started.
    ///
    /// # Errors
    /// [`DesktopError::Listen`], [`DesktopError::LocalSocket`] or [`DesktopError::Metrics`].
    pub fn run(self: Arc<Self>, ready: impl FnOnce()) -> Result<(), DesktopError> {
        let control = TcpListener::bind(self.config.control_listen)
            .map_err(|source| DesktopError::Listen { addr: self.config.control_listen, source })?;
        let (access, warning) = self.config.socket_access().map_err(DesktopError::SocketGroup)?;
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        match self.config.qemu_user() {
            Some(user) => {
                tracing::info!(user = user.name(), uid = user.uid(), "QEMU drops to qemu_user once a VM is set up")
            }
            None => tracing::warn!(
                "QEMU runs as root: set qemu_user (e.g. jettison-qemu) in the configuration to confine it"
            ),
        }
        let socket = local::bind(&self.config.control_socket(), &access).map_err(DesktopError::LocalSocket)?;
        for (name, vm) in &self.vms {
            let mut vm = lock(vm);
            let started = match vm.placement() {
                Placement::Desktop => vm.boot(),
                Placement::Off => Ok(()),
                Placement::Saved => resume_saved(&mut vm),
                Placement::Server { .. } => {
                    let fence = vm.placement().fence();
                    vm.serve(self.config.serve_ip, &self.credentials, fence)
                }
            };
            if let Err(e) = started {
                tracing::error!(vm = %name, "cannot start: {}", wire::chain(&e));
            }
        }
        if let Some(addr) = self.config.metrics_listen {
            let me = Arc::clone(&self);
            let bound = metrics_endpoint::spawn(addr, move || me.metrics_page()).map_err(DesktopError::Metrics)?;
            tracing::info!(%bound, "metrics on GET /metrics");
        }
        self.follow_power();
        let me = Arc::clone(&self);
        std::thread::spawn(move || local::serve(socket, access, move |request, send| me.local_request(request, send)));
        let me = Arc::clone(&self);
        std::thread::spawn(move || me.sample());
        let me = Arc::clone(&self);
        std::thread::spawn(move || me.heartbeat());
        if self.activity.enabled() {
            let away = self
                .vms
                .iter()
                .filter(|(_, vm)| matches!(lock(vm).placement(), Placement::Server { .. }))
                .map(|(name, _)| name.clone())
                .collect();
            let me = Arc::clone(&self);
            std::thread::spawn(move || me.activity.run(&*me, away));
        }
        tracing::info!(vms = self.vms.len(), server = %self.config.server, "desktop daemon ready");
        ready();
        for stream in control.incoming() {
            match stream {
                Ok(stream) => {
                    let me = Arc::clone(&self);
                    std::thread::spawn(move || me.server_request(stream));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
        Ok(())
    }

    /// Starts the power session when nothing runs here and a VM is on the
    /// server, stops it otherwise.
    fn follow_power(&self) {
        let (mut away, mut running) = (Vec::new(), false);
        for (name, vm) in &self.vms {
            let vm = lock(vm);
            running |= vm.is_running();
            if matches!(vm.placement(), Placement::Server { .. }) {
                away.push(name.clone());
            }
        }
        // No VM lock is held here: stopping a session joins its threads.
        self.power.follow(if running { &[] } else { &away });
    }

    /// A request from the `jettison` command.
    fn local_request(&self, request: LocalRequest, send: &mut dyn FnMut(LocalReply)) -> Result<Report, Refusal> {
        let moves =
            !matches!(request, LocalRequest::Status | LocalRequest::View { .. } | LocalRequest::Screenshot { .. });
        let by_hand = match &request {
            LocalRequest::Reintegrate { vm, .. } | LocalRequest::Start { vm } => Some(vm.clone()),
            _ => None,
        };
        if by_hand.is_some() {
            // A VM is about to run here: the desktop stays awake from now.
            self.power.stop();
        }
        let done = match request {
            LocalRequest::Status => Ok(Report::DesktopStatus(self.status())),
            LocalRequest::Consolidate { vm, force } => self.vm(&vm).and_then(|vm| {
                let report =
                    consolidate(self.context(), &mut lock(vm), force, &mut |line| send(LocalReply::Log { line }))?;
                self.metrics.consolidated(&report);
                Ok(Report::Consolidated(report))
            }),
            LocalRequest::Reintegrate { vm, recover } => {
                let from = if recover { ReturnFrom::ServerCheckpoint } else { ReturnFrom::Server };
                self.vm(&vm).and_then(|vm| self.bring_back(&mut lock(vm), from, send).map(Report::Reintegrated))
            }
            LocalRequest::Start { vm } => self.vm(&vm).and_then(|vm| start(&mut lock(vm))),
            LocalRequest::Shutdown { vm, timeout_secs } => self.vm(&vm).and_then(|vm| {
                let mut vm = lock(vm);
                here(&vm)?;
                vm.shutdown_guest(Duration::from_secs(timeout_secs))?;
                Ok(vm_state(&vm))
            }),
            LocalRequest::Destroy { vm } => self.vm(&vm).and_then(|vm| {
                let mut vm = lock(vm);
                here(&vm)?;
                vm.destroy()?;
                Ok(vm_state(&vm))
            }),
            LocalRequest::SaveAll => Ok(self.save_all()),
            LocalRequest::View { vm } => self.vm(&vm).and_then(|vm| self.view(&lock(vm))).map(Report::View),
            LocalRequest::Screenshot { vm, png } => {
                self.vm(&vm).and_then(|vm| lock(vm).screenshot(png)).map(|file| Report::Screenshot { file })
            }
        };
        if moves {
            self.follow_power();
        }
        if let (Some(vm), Ok(_)) = (&by_hand, &done) {
            // The user wants it here: the monitor does not send it off again
            // before the user has been at the desk.
            self.activity.held_by_hand(vm);
        }
        done.map_err(|e| Refusal { kind: e.failure_kind(), message: wire::chain(&e) })
    }

    /// Saves every VM running here to its checkpoint (a host shutdown).
    fn save_all(&self) -> Report {
        let mut saved = Vec::new();
        for (name, vm) in &self.vms {
            let mut vm = lock(vm);
            if vm.placement() != &Placement::Desktop || !vm.is_running() {
                continue;
            }
            match vm.stop_and_save().and_then(|bytes| vm.set_placement(Placement::Saved).map(|()| bytes)) {
                Ok(bytes) => {
                    tracing::info!(vm = %name, bytes, "saved to its checkpoint; resumed when the daemon starts");
                    saved.push(name.clone());
                }
                Err(e) => tracing::error!(vm = %name, "cannot save it: {}", wire::chain(&e)),
            }
        }
        Report::Saved { vms: saved }
    }

    /// Where `vm`'s screen can be seen now.
    fn view(&self, vm: &LocalVm) -> Result<ViewTarget, DesktopError> {
        let name = vm.name().clone();
        if !vm.config().display {
            return Err(DesktopError::NoDisplay { vm: name });
        }
        if !matches!(vm.placement(), Placement::Server { .. }) {
            let socket = vm.spice_socket().ok_or_else(|| DesktopError::NoDisplay { vm: name.clone() })?;
            return Ok(ViewTarget::Local { uri: format!("spice+unix://{}", socket.display()) });
        }
        let server = vm.placement().fleet_server();
        let hosted = self.server_status(false, server)?;
        let console = self.hosted_here(&hosted, &name).and_then(|h| h.console.clone());
        let console = console.ok_or(DesktopError::NoRemoteConsole { vm: name })?;
        let host = match server {
            Some(server) => server.address.ip().to_string(),
            None => {
                self.config.server.rsplit_once(':').map_or(self.config.server.as_str(), |(host, _)| host).to_owned()
            }
        };
        Ok(ViewTarget::Remote { host, port: console.port, ticket: console.ticket })
    }

    /// A request from the server: take a VM back.
    fn server_request(self: Arc<Self>, stream: TcpStream) {
        let name = self.config.name.clone();
        let mut welcomed = false;
        let accepted =
            Channel::accept(stream, &self.credentials, CONTROL_TIMEOUT, |peer, hello| match ControlHello::decode_body(
                hello,
            ) {
                Ok(ControlHello::Server(server)) if server == *peer => {
                    welcomed = true;
                    Control::Welcome(name).encode_body()
                }
                Ok(ControlHello::Server(server)) => Control::Failed(format!(
                    "the key enrolled here as {peer} says it is {server}: enroll each server under its own name"
                ))
                .encode_body(),
                _ => Control::Failed("only a server daemon talks to this port".to_owned()).encode_body(),
            });
        let mut channel = match accepted {
            Ok(channel) if welcomed => channel,
            // Refused in the answer; nothing it sends after is read.
            Ok(channel) => {
                return tracing::warn!(peer = %channel.peer(), server = %channel.peer_name(), "refused a bad control hello")
            }
            Err(e) => return tracing::warn!("a control connection failed: {}", wire::chain(&e)),
        };
        let (vm, reason, then) = match channel.recv().map(|body| Control::decode_body(&body)) {
            Ok(Ok(Control::PleaseReintegrate { vm, reason })) => (vm, reason, AfterHome::Stay),
            Ok(Ok(Control::PleaseMove { vm, reason })) => (vm, reason, AfterHome::MoveOn),
            Ok(Ok(other)) => {
                let answer = Control::Failed(format!("the desktop does not take {} requests", other.kind()));
                return drop(channel.send(&answer.encode_body()));
            }
            Ok(Err(e)) => {
                let answer = Control::Failed(format!("cannot read that request: {}", wire::chain(&e)));
                return drop(channel.send(&answer.encode_body()));
            }
            Err(e) => return tracing::warn!("{}", wire::chain(&e)),
        };
        let server = channel.peer_name().clone();
        let answer = match self.vm(&vm) {
            // In a fleet, only the server holding the VM may send it
            // home (a VM that is moving is not waited for: a VM that
            // moves needs no asking; [`DesktopDaemon::leave_server`]
            // checks again once it holds the VM).
            Ok(held) if held.try_lock().is_ok_and(|vm| !vm.placement().is_on(Some(&server))) => {
                Control::Failed(format!("{vm} is not on server {server}"))
            }
            Ok(_) => {
                tracing::info!(vm = %vm, %server, "the server asks us to take it {}: {reason}", then.what());
                let me = Arc::clone(&self);
                std::thread::spawn(move || me.leave_server(&vm, Some(&server), &reason, then));
                Control::Done
            }
            Err(e) => Control::Failed(wire::chain(&e)),
        };
        let _ = channel.send(&answer.encode_body());
    }

    /// Reintegrates `vm` (see [`reintegrate`]) and counts it for the metrics.
    fn bring_back(
        &self,
        vm: &mut LocalVm,
        from: ReturnFrom,
        send: &mut dyn FnMut(LocalReply),
    ) -> Result<daemon_protocol::local::ReintegrateReport, DesktopError> {
        let report = reintegrate(self.context(), vm, from, send)?;
        self.metrics.reintegrated(&report);
        Ok(report)
    }

    /// The metrics page: each VM's moves, and where it is now.
    fn metrics_page(&self) -> String {
        let on_server = |name: &VmName| {
            let vm = local::lock_for_status(self.vms.get(name)?)?;
            Some(matches!(vm.placement(), Placement::Server { .. }))
        };
        self.metrics.page(on_server, self.power.status(), self.activity.status())
    }

    /// Brings `name` home from `server` (whichever holds it if none), and
    /// with [`AfterHome::MoveOn`] out again to another server of the fleet.
    /// Nothing when the VM has meanwhile left that server.
    fn leave_server(&self, name: &VmName, server: Option<&HostName>, why: &str, then: AfterHome) {
        self.power.stop();
        if let Ok(vm) = self.vm(name) {
            let mut vm = lock(vm);
            if vm.placement().is_on(server) {
                self.bring_home_awake(&mut vm, why);
                if let (AfterHome::MoveOn, Some(server), Some(_)) = (then, server, &self.config.fleet) {
                    if vm.is_running() {
                        self.move_on(&mut vm, server);
                    }
                }
            }
        }
        self.follow_power();
    }

    /// Consolidates `vm`, just brought home from `left`, on another server
    /// of the fleet: it was idle there, so without the idle check. When no
    /// other server has room it stays here.
    fn move_on(&self, vm: &mut LocalVm, left: &HostName) {
        let ctx = Context { avoid: Some(left), ..self.context() };
        let name = vm.name().clone();
        match consolidate(ctx, vm, true, &mut |line| tracing::debug!(vm = %name, "{line}")) {
            Ok(report) => {
                tracing::info!(vm = %name, from = %left, total_secs = report.total_secs, "moved to another server");
                self.metrics.consolidated(&report);
            }
            Err(e @ (DesktopError::NoRoom(_) | DesktopError::NoFleetServer { .. })) => {
                tracing::warn!(vm = %name, "no other server has room: it stays on the desktop ({})", wire::chain(&e))
            }
            Err(e) => tracing::error!(vm = %name, "could not move it to another server: {}", wire::chain(&e)),
        }
    }

    /// Reintegrates `vm` on the daemon's own initiative, logging the outcome.
    fn bring_home_awake(&self, vm: &mut LocalVm, why: &str) {
        let name = vm.name().clone();
        match self.bring_back(vm, ReturnFrom::Server, &mut |_| {}) {
            Ok(report) => tracing::info!(vm = %name, bytes = report.bytes, "back on the desktop ({why})"),
            Err(e) => tracing::error!(vm = %name, "could not bring it home ({why}): {}", wire::chain(&e)),
        }
    }

    /// Samples the VMs running here, for the idleness check.
    fn sample(&self) {
        loop {
            for vm in self.vms.values() {
                if let Ok(mut vm) = vm.try_lock() {
                    vm.sample();
                }
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    /// Watches each server holding VMs of this desktop (the configured
    /// one, and in a fleet those the placement chose) for the VMs it hosts.
    fn heartbeat(&self) {
        let mut unreachable_since: BTreeMap<Option<FleetServer>, Instant> = BTreeMap::new();
        loop {
            std::thread::sleep(HEARTBEAT_EVERY);
            if self.power.asleep() {
                // Asleep, the desktop reaches nobody, as a real S3 would
                // not run this loop at all: that is no failure of the server.
                unreachable_since.clear();
                continue;
            }
            let mut away: BTreeMap<Option<FleetServer>, Vec<VmName>> = BTreeMap::new();
            for (name, vm) in &self.vms {
                let Ok(vm) = vm.try_lock() else { continue };
                if matches!(vm.placement(), Placement::Server { .. }) {
                    away.entry(vm.placement().fleet_server().cloned()).or_default().push(name.clone());
                }
            }
            unreachable_since.retain(|server, _| away.contains_key(server));
            for (server, names) in &away {
                let label = server.as_ref().map_or_else(|| "the server".to_owned(), |s| format!("server {}", s.name));
                let hosted = match self.server_status(false, server.as_ref()) {
                    Ok(hosted) => {
                        unreachable_since.remove(server);
                        hosted
                    }
                    Err(e) => {
                        let since = *unreachable_since.entry(server.clone()).or_insert_with(Instant::now);
                        let limit = Duration::from_secs(self.config.failover_after_secs);
                        let e = wire::chain(&e);
                        if since.elapsed() < limit {
                            tracing::warn!("{label} does not answer ({e}); waiting up to {} s", limit.as_secs());
                            continue;
                        }
                        for name in names {
                            let why = format!("{label} has not answered for {} s ({e})", limit.as_secs());
                            self.fail_over(name, &why, false);
                        }
                        unreachable_since.remove(server);
                        continue;
                    }
                };
                for name in names {
                    match self.hosted_here(&hosted, name).map(|h| &h.state) {
                        None => {
                            self.fail_over(name, &format!("{label} does not have it (it restarted or lost it)"), true)
                        }
                        Some(state @ HostedState::Lost(_)) => self.fail_over(name, &state.to_string(), true),
                        Some(HostedState::Stopped) => self.leave_server(
                            name,
                            server.as_ref().map(|s| &s.name),
                            "a reintegration broke off",
                            AfterHome::Stay,
                        ),
                        Some(HostedState::Running | HostedState::Moving) => {}
                    }
                }
            }
        }
    }

    /// The server's view of `vm` of this desktop, among every VM it hosts.
    fn hosted_here<'a>(&self, hosted: &'a [HostedStatus], vm: &VmName) -> Option<&'a HostedStatus> {
        hosted.iter().find(|h| &h.vm == vm && h.desktop == self.config.name)
    }

    /// The view of its VMs of `at`, a fleet server, or of the configured
    /// server when none; `exact` for a person's status (the server writes
    /// its guests' page caches back first, see [`Control::StatusExact`]).
    fn server_status(&self, exact: bool, at: Option<&FleetServer>) -> Result<Vec<HostedStatus>, DesktopError> {
        let mut channel = self.context().connect(at)?;
        let request = if exact { Control::StatusExact } else { Control::Status };
        match ask(&mut channel, &request)? {
            Control::StatusReply(vms) => Ok(vms),
            other => Err(DesktopError::UnexpectedAnswer { request: "Status", got: other.kind() }),
        }
    }

    /// Brings `name` back after the server lost it: from the server's last
    /// checkpoint of it when the server `answers` and has one (only the
    /// work after that checkpoint is lost), else from the desktop's own
    /// checkpoint of consolidation.
    fn fail_over(&self, name: &VmName, why: &str, answers: bool) {
        self.power.stop();
        self.fail_over_awake(name, why, answers);
        self.follow_power();
    }

    fn fail_over_awake(&self, name: &VmName, why: &str, answers: bool) {
        let Ok(vm) = self.vm(name) else { return };
        let mut vm = lock(vm);
        let Placement::Server { since, .. } = *vm.placement() else { return };
        if !answers && !self.free_in_fleet(name, why) {
            return;
        }
        if answers {
            match self.bring_back(&mut vm, ReturnFrom::ServerCheckpoint, &mut |_| ()) {
                Ok(back) => {
                    return tracing::warn!(
                        vm = %name,
                        dirty_pages = back.dirty_pages,
                        dirty_blocks = back.dirty_blocks,
                        "{why}: recovered from the server's last checkpoint of it; only what it did on the server \
                         after that checkpoint is lost"
                    )
                }
                Err(e) => tracing::warn!(
                    vm = %name,
                    "{why}, and it cannot come from the server's checkpoint ({}): resuming it from the desktop's",
                    wire::chain(&e)
                ),
            }
        }
        let checkpoint = vm.checkpoint();
        vm.stop_serving();
        match vm.resume_from(&checkpoint, Resumed::FromOlderState).and_then(|()| vm.set_placement(Placement::Desktop)) {
            Ok(()) => tracing::error!(
                vm = %name,
                lost_secs = now_secs().saturating_sub(since),
                "{why}: resumed from its checkpoint of consolidation; what it did on the server in the last {} s \
                 is lost here (the server keeps its dirty slices under its state_dir/vms/{name}; see the README on \
                 why they cannot be brought back)",
                now_secs().saturating_sub(since)
            ),
            Err(e) => {
                tracing::error!(vm = %name, "{why}, and resuming it from its checkpoint failed: {}", wire::chain(&e))
            }
        }
    }

    /// Whether `name` may resume here after its server stopped answering:
    /// always outside a fleet; in a fleet only when no server holds it in
    /// etcd ([`fleet_registry::claim`]): a server that holds it still runs
    /// it, or will have frozen it before its lease ends, and the desktop
    /// resumes it once the lease has ended. etcd that cannot be read says
    /// nothing, so the VM is not resumed then either.
    fn free_in_fleet(&self, name: &VmName, why: &str) -> bool {
        let Some(fleet) = &self.config.fleet else { return true };
        let client = fleet.etcd.client(ETCD_TIMEOUT);
        match fleet_registry::holder(&client, &self.config.name, name) {
            Ok(None) => true,
            Ok(Some(server)) => {
                tracing::warn!(
                    vm = %name,
                    "{why}, but server {server} still holds it in etcd: not resuming it here, where it would run \
                     twice (a server cut off from etcd freezes its VMs before its lease ends; once the lease has \
                     ended this desktop resumes it)"
                );
                false
            }
            Err(e) => {
                tracing::warn!(
                    vm = %name,
                    "{why}, and etcd cannot say whether a server holds it ({}): not resuming it here, to never run \
                     it twice",
                    wire::chain(&e)
                );
                false
            }
        }
    }

    /// Stops serving checkpoints, for a clean exit, and leaves every VM's
    /// QEMU running: the next daemon takes them over (a restart or upgrade
    /// never touches a running guest). A host shutdown saves them first
    /// (`jettison save-all`, run by the jettison-desktop-save unit). A VM
    /// on the server stays there.
    pub fn shutdown(&self) {
        self.power.stop();
        for vm in self.vms.values() {
            lock(vm).leave_running();
        }
    }

    /// `jettison status` on the desktop.
    fn status(&self) -> DesktopStatus {
        let hosted = self.server_status(true, None);
        // In a fleet, each server holding a VM is asked once.
        let mut fleet: BTreeMap<FleetServer, Option<Vec<HostedStatus>>> = BTreeMap::new();
        let vms = self
            .vms
            .iter()
            .map(|(name, vm)| {
                let (on, since, running_here, error, at) = match local::lock_for_status(vm) {
                    Some(vm) => {
                        let since = match vm.placement() {
                            Placement::Server { since, .. } => Some(*since),
                            _ => None,
                        };
                        let at = vm.placement().fleet_server().cloned();
                        (location(&vm), since, vm.is_running(), vm.start_error().map(str::to_owned), at)
                    }
                    None => (VmLocation::Moving, None, false, None, None),
                };
                let hosted = match at {
                    Some(at) => {
                        fleet.entry(at).or_insert_with_key(|at| self.server_status(true, Some(at)).ok()).as_deref()
                    }
                    None => hosted.as_deref().ok(),
                };
                let server = hosted.and_then(|h| self.hosted_here(h, name)).cloned();
                DesktopVmStatus { vm: name.clone(), on, since, running_here, error, server }
            })
            .collect();
        DesktopStatus {
            desktop: self.config.name.clone(),
            server: self.config.server.clone(),
            server_reachable: hosted.is_ok(),
            server_error: hosted.err().map(|e| wire::chain(&e)),
            vms,
            power: self.power.status(),
            activity: self.activity.status().map(Box::new),
        }
    }
}

/// What the activity monitor asks of the daemon: the same consolidation
/// and reintegration as the `jettison` command's, called in-process.
impl Desk for DesktopDaemon {
    fn here(&self) -> Vec<VmName> {
        // Quiet by the sampled CPU and I/O: a VM at work is not worth a
        // warning (its dirty rate is measured at the move itself).
        let unmeasured = qemu_driver::DirtyRate { mib_per_sec: 0.0, period: Duration::ZERO };
        let quiet = |vm: &LocalVm| {
            matches!(
                qemu_driver::judge(vm.name().as_str(), vm.window(), unmeasured, &self.config.idle),
                qemu_driver::IdleVerdict::Idle(_)
            )
        };
        self.vms
            .iter()
            .filter(|(_, vm)| {
                vm.try_lock().is_ok_and(|vm| *vm.placement() == Placement::Desktop && vm.is_running() && quiet(&vm))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn on_server(&self, name: &VmName) -> Option<bool> {
        let Some(vm) = self.vms.get(name) else { return Some(false) };
        vm.try_lock().ok().map(|vm| matches!(vm.placement(), Placement::Server { .. }))
    }

    fn consolidate(&self, name: &VmName) -> Result<(), String> {
        let vm = self.vm(name).map_err(|e| wire::chain(&e))?;
        // A command holding the VM is moving it: that VM is left alone.
        let Ok(mut vm) = vm.try_lock() else { return Err("a command is moving it".to_owned()) };
        let done = consolidate(self.context(), &mut vm, false, &mut |line| tracing::debug!(vm = %name, "{line}"));
        drop(vm);
        let report = done.map_err(|e| wire::chain(&e))?;
        // What `jettison consolidate` would have printed: nobody asked, so the log has it.
        tracing::info!(
            vm = %name,
            total_secs = report.total_secs,
            downtime_secs = report.downtime_secs,
            descriptor_bytes = report.descriptor_bytes,
            zero_pages = report.zero_pages,
            "consolidated for the activity monitor"
        );
        self.metrics.consolidated(&report);
        self.follow_power();
        Ok(())
    }

    fn reintegrate(&self, name: &VmName) -> Result<bool, String> {
        let vm = self.vm(name).map_err(|e| wire::chain(&e))?;
        self.power.stop();
        let done = {
            let mut vm = lock(vm);
            if matches!(vm.placement(), Placement::Server { .. }) {
                self.bring_back(&mut vm, ReturnFrom::Server, &mut |_| {}).map(|_| true)
            } else {
                Ok(false)
            }
        };
        self.follow_power();
        done.map_err(|e| wire::chain(&e))
    }
}

/// What a VM a server sends away does once home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterHome {
    /// It stays (`PleaseReintegrate`: it is not idle, its guest powered
    /// off, a reintegration broke off).
    Stay,
    /// It moves on to another server of the fleet (`PleaseMove`).
    MoveOn,
}

impl AfterHome {
    /// For the log: "back" or "to another server".
    fn what(self) -> &'static str {
        match self {
            AfterHome::Stay => "back",
            AfterHome::MoveOn => "to another server",
        }
    }
}

/// Where `vm` is, for the command.
fn location(vm: &LocalVm) -> VmLocation {
    match vm.placement() {
        Placement::Desktop => VmLocation::Desktop,
        Placement::Off => VmLocation::Off,
        Placement::Saved => VmLocation::Saved,
        Placement::Server { .. } => VmLocation::Server,
    }
}

fn vm_state(vm: &LocalVm) -> Report {
    Report::VmState { vm: vm.name().clone(), on: location(vm) }
}

/// Refuses a request that needs the VM here.
fn here(vm: &LocalVm) -> Result<(), DesktopError> {
    match vm.placement() {
        Placement::Server { .. } => Err(DesktopError::OnServer { vm: vm.name().clone() }),
        _ => Ok(()),
    }
}

/// `jettison start`: boots a VM that is off, resumes a saved one.
fn start(vm: &mut LocalVm) -> Result<Report, DesktopError> {
    here(vm)?;
    match vm.placement() {
        Placement::Saved => resume_saved(vm)?,
        _ => {
            vm.boot()?;
            vm.set_placement(Placement::Desktop)?;
        }
    }
    Ok(vm_state(vm))
}

/// Resumes a VM saved at a host shutdown from its checkpoint.
fn resume_saved(vm: &mut LocalVm) -> Result<(), DesktopError> {
    let checkpoint = vm.checkpoint();
    vm.resume_from(&checkpoint, Resumed::WhereItStopped)?;
    vm.set_placement(Placement::Desktop)?;
    tracing::info!(vm = %vm.name(), "resumed from the checkpoint it was saved to at shutdown");
    Ok(())
}
