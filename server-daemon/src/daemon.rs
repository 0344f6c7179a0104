//! The server daemon: takes control connections from desktops, hosts their
//! VMs, answers `jettison status`, and watches memory and fetch rates.
//!
//! One thread per control connection; the VM table is locked only to find
//! or change an entry, and each VM has its own lock for the long steps
//! (starting QEMU, sending a VM home), so a status request never waits for
//! a transfer (it reports the VM as busy instead).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use daemon_protocol::local::{self, LocalRequest, Report, ServerStatus};
use daemon_protocol::{
    ConsolidateRequest, Control, ControlHello, HostedStatus, MachineProfile, ReserveRequest, CONTROL_TIMEOUT,
};
use identifiers::VmName;
use remote_wakeup::DesktopStatus;
use wire::protocol::Message;
use wire::{Channel, Credentials, WireError};

use crate::capacity::{self, History, Tenant};
use crate::config::ServerConfig;
use crate::energy::{ServerLedger, VmSample};
use crate::error::ServerError;
use crate::fence::FenceTable;
use crate::fleet::Fleet;
use crate::hosted::{state_dir, Arrival, HostedVm};
use crate::key::VmKey;
use crate::machine;
use crate::metrics::{ServerMetrics, VmFigures};
use crate::storage::WakeSpec;
use crate::watch::FetchRates;
use remote_wakeup::DesktopWaker;

/// How often the watcher looks at the VMs.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How long `jettison save-all` waits for the VMs to go home.
pub const SEND_ALL_HOME_WITHIN: Duration = Duration::from_secs(90);
/// How long before the server asks a desktop again to take its VM back.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(60);

type Vms = BTreeMap<VmKey, Arc<Mutex<HostedVm>>>;

/// A reservation: the bytes expected, the machine to run, its number of
/// disks, and the connection that holds it.
#[derive(Debug, Clone)]
struct Reserved {
    expected: u64,
    profile: MachineProfile,
    /// 1 to `MAX_DISKS`, as the decoder checked.
    disks: usize,
    connection: u64,
    /// The console (SPICE) port its QEMU will listen on, taken at the
    /// reservation so that two consolidations at once never get the same.
    console_port: u16,
    /// In a fleet, the stay's fencing token.
    fence: Option<u64>,
}

/// The running server daemon.
#[derive(Debug)]
pub struct ServerDaemon {
    config: ServerConfig,
    credentials: Arc<Credentials>,
    vms: Mutex<Vms>,
    /// Locked before `vms` when both are held, so that a VM is always in
    /// one of the two while it moves from reserved to hosted.
    reservations: Mutex<BTreeMap<VmKey, Reserved>>,
    history: Mutex<History>,
    /// The program run as each VM's storage process (this one).
    storage_program: std::path::PathBuf,
    asked: Mutex<BTreeMap<VmKey, Instant>>,
    /// In a fleet, the hosted VMs' QEMUs under the fence ([`crate::fence`]).
    fence: FenceTable,
    connections: std::sync::atomic::AtomicU64,
    /// The accelerator VMs run with here.
    accel: qemu_driver::Accel,
    /// The CPU models this host's QEMU knows.
    cpu_models: Vec<String>,
    /// Moves counted for the metrics endpoint.
    metrics: ServerMetrics,
    /// The server's power split across its VMs. Locked last: nothing
    /// waits for another lock while holding it.
    energy: Mutex<ServerLedger>,
    /// The figures of each VM a checkpoint holds, as read just before it
    /// (under TCG a checkpoint can hold a VM as long as its desktop takes
    /// to wake): status and metrics answer with them meanwhile, not with
    /// "moving".
    checkpointing: Mutex<BTreeMap<VmKey, (VmFigures, Option<DesktopStatus>)>>,
    /// Its registration in a fleet (`[fleet]`); none: a single server.
    fleet: Option<Arc<Fleet>>,
}

/// A hosted VM's figures for status and metrics, as it last polled them.
fn figures_of(vm: &HostedVm) -> (VmFigures, Option<DesktopStatus>) {
    let (memory, disk) = vm.counters().clone();
    (VmFigures { status: vm.status(), memory, disk }, vm.desktop_power().cloned())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("a server daemon lock was poisoned: a thread panicked holding it")
}

impl ServerDaemon {
    /// This host's key and enrolled desktops (shared with every hosted VM's
    /// fetches, so a reload of the peers applies to them too).
    pub fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials)
    }

    /// Has every hosted VM's storage process read the enrolled peers again
    /// (after [`Credentials::reload_peers`] of [`ServerDaemon::credentials`]),
    /// so that a key enrolled or removed applies to their fetches too.
    pub fn reload_storage_peers(&self) {
        let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
        for vm in vms {
            let Some(vm) = local::lock_for_status(&vm) else { continue };
            if let Err(e) = vm.reload_peers() {
                tracing::error!("SIGHUP: {}", wire::chain(&e));
            }
        }
    }

    /// Reads the key, makes the directories, takes over the VMs an earlier
    /// daemon left running (their QEMU and storage process), and clears
    /// what else it left in the run directory. Slices in the state
    /// directory are kept.
    ///
    /// # Errors
    /// [`ServerError::LoadKey`], [`ServerError::CreateDir`], or
    /// [`ServerError::NoQemu`].
    pub fn new(config: ServerConfig) -> Result<Arc<ServerDaemon>, ServerError> {
        let credentials = Credentials::load(&config.host_key, &config.peers)
            .map_err(|source| ServerError::LoadKey { source: Box::new(source) })?;
        if credentials.peer_count() == 0 {
            tracing::warn!(
                "no desktop is enrolled in {}: none can move a VM here until one is \
                 (`jettison enroll DESKTOP-NAME KEY`, then `systemctl reload jettison-server`)",
                config.peers.display()
            );
        }
        for dir in [&config.state_dir, &config.run_dir] {
            std::fs::create_dir_all(dir).map_err(|source| ServerError::CreateDir { path: dir.clone(), source })?;
        }
        let vms = take_over(&config);
        clear_stale_run_dir(&config.run_dir.join("vms"), &vms);
        let orphans: Vec<String> = list_dir(&config.state_dir.join("vms"))
            .into_iter()
            .flat_map(|desktop| {
                let vms = &vms;
                list_dir(&config.state_dir.join("vms").join(&desktop))
                    .into_iter()
                    .filter(|vm| !vms.keys().any(|k| k.desktop.as_str() == desktop && k.vm.as_str() == vm))
                    .map(|vm| format!("{desktop}/{vm}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                "slices of VMs an earlier run hosted are kept in {}: {}",
                config.state_dir.join("vms").display(),
                orphans.join(", ")
            );
        }
        let storage_program = std::env::current_exe()
            .map_err(|source| ServerError::CreateDir { path: "/proc/self/exe".into(), source })?;
        let history = History::load(&config.state_dir.join("history.json"));
        let accel = config.accel.resolve().expect("checked at load");
        let cpu_models = qemu_driver::cpu_models().map_err(|source| ServerError::NoQemu(Box::new(source)))?;
        let energy =
            ServerLedger::new(&config.energy, &config.state_dir, std::path::Path::new(crate::rapl::POWERCAP_DIR))?;
        let fleet = config.fleet.as_ref().map(|fleet| Arc::new(Fleet::new(&config, fleet)));
        // In a fleet, what an earlier daemon left running stays under the
        // fence: frozen until this daemon's lease takes its claim over.
        let fence = FenceTable::default();
        if let Some(fleet) = &fleet {
            for (key, vm) in &vms {
                if let Some(pid) = vm.qemu_pid() {
                    fleet.adopt(key);
                    fence.track(key, pid);
                }
            }
        }
        Ok(Arc::new(ServerDaemon {
            fence,
            fleet,
            energy: Mutex::new(energy),
            accel,
            cpu_models,
            config,
            credentials: Arc::new(credentials),
            vms: Mutex::new(vms.into_iter().map(|(key, vm)| (key, Arc::new(Mutex::new(vm)))).collect()),
            reservations: Mutex::new(BTreeMap::new()),
            checkpointing: Mutex::new(BTreeMap::new()),
            history: Mutex::new(history),
            storage_program,
            asked: Mutex::new(BTreeMap::new()),
            connections: std::sync::atomic::AtomicU64::new(0),
            metrics: ServerMetrics::default(),
        }))
    }

    /// Serves desktops, the local socket and the metrics endpoint (if
    /// configured) until the process ends; calls `ready` once all listen.
    ///
    /// # Errors
    /// [`ServerError::Listen`], [`ServerError::LocalSocket`] or [`ServerError::Metrics`].
    pub fn run(self: Arc<Self>, ready: impl FnOnce()) -> Result<(), ServerError> {
        let listener = TcpListener::bind(self.config.listen)
            .map_err(|source| ServerError::Listen { addr: self.config.listen, source })?;
        let (access, warning) = self.config.socket_access().map_err(ServerError::SocketGroup)?;
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let local = local::bind(&self.config.control_socket(), &access).map_err(ServerError::LocalSocket)?;
        let me = Arc::clone(&self);
        std::thread::spawn(move || {
            local::serve(local, access, move |request, _| match request {
                LocalRequest::Status => Ok(Report::ServerStatus(ServerStatus {
                    server: me.config.name.clone(),
                    vms: me.status(true),
                    energy: Some(lock(&me.energy).report(Instant::now())),
                })),
                LocalRequest::Screenshot { vm, png } => {
                    me.screenshot(&vm, png).map(|file| Report::Screenshot { file }).map_err(|e| wire::chain(&e).into())
                }
                LocalRequest::SaveAll => Ok(me.send_all_home(SEND_ALL_HOME_WITHIN)),
                _ => {
                    Err(String::from("this is the server; run consolidate and reintegrate on the VM's desktop").into())
                }
            })
        });
        if let Some(addr) = self.config.metrics_listen {
            let me = Arc::clone(&self);
            let bound = metrics_endpoint::spawn(addr, move || me.metrics_page()).map_err(ServerError::Metrics)?;
            tracing::info!(%bound, "metrics on GET /metrics");
        }
        let me = Arc::clone(&self);
        std::thread::spawn(move || me.watch());
        if let Some(fleet) = &self.fleet {
            let (registering, me) = (Arc::clone(fleet), Arc::clone(&self));
            std::thread::spawn(move || registering.register(|| me.held_vms()));
            let (fencing, me) = (Arc::clone(fleet), Arc::clone(&self));
            std::thread::spawn(move || me.fence.watch(&fencing));
        }
        match self.config.qemu_user() {
            Some(user) => {
                tracing::info!(user = user.name(), uid = user.uid(), "QEMU drops to qemu_user once a VM is set up")
            }
            None => tracing::warn!(
                "QEMU runs as root: set qemu_user (e.g. jettison-qemu) in the configuration to confine it"
            ),
        }
        tracing::info!(listen = %self.config.listen, capacity_mib = self.config.capacity_mib, "server daemon ready");
        ready();
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    let me = Arc::clone(&self);
                    std::thread::spawn(move || me.handle(stream));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
        Ok(())
    }

    /// In a fleet, gives up `key`'s claim in etcd.
    fn release_claim(&self, key: &VmKey) {
        if let Some(fleet) = &self.fleet {
            fleet.release(key);
        }
    }

    /// The VMs this server holds: hosted (running, stopped or moving) or
    /// reserved.
    fn held_vms(&self) -> u32 {
        // One lock at a time: `reserve` holds `reservations` while it takes
        // `vms`, so holding `vms` while taking `reservations` could deadlock.
        let reserved = lock(&self.reservations).len();
        let hosted = lock(&self.vms).len();
        u32::try_from(reserved + hosted).unwrap_or(u32::MAX)
    }

    /// One control connection, to its end.
    fn handle(self: &Arc<Self>, stream: TcpStream) {
        let mut hello = None;
        let name = self.config.name.clone();
        let channel = Channel::accept(stream, &self.credentials, CONTROL_TIMEOUT, |peer, payload| {
            match ControlHello::decode_body(payload) {
                // A desktop speaks for itself only: its key decides
                // which desktop it is, whatever name it gives.
                Ok(ControlHello::Desktop(claimed)) if claimed != *peer => Control::Failed(format!(
                    "the key enrolled here as {peer} says it is {claimed}: enroll each desktop under the \
                         name in its desktop.toml"
                ))
                .encode_body(),
                Ok(h) => {
                    hello = Some(h);
                    Control::Welcome(name).encode_body()
                }
                Err(e) => Control::Failed(format!("not a control hello: {}", wire::chain(&e))).encode_body(),
            }
        });
        let (mut channel, hello) = match (channel, hello) {
            (Ok(c), Some(hello)) => (c, hello),
            (Ok(c), None) => return tracing::warn!(peer = %c.peer(), "a peer sent a bad hello"),
            (Err(e), _) => return tracing::warn!("a control connection failed: {}", wire::chain(&e)),
        };
        // Long steps (QEMU starting, a reintegration) must not time out the
        // wait for the next request.
        let _ = channel.set_read_timeout(None);
        let connection = self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reservation = Reservation { daemon: self, key: None, connection };
        loop {
            let body = match channel.recv() {
                Ok(body) => body,
                Err(WireError::Closed { .. }) => return,
                Err(e) => return tracing::warn!(peer = %channel.peer(), "{}", wire::chain(&e)),
            };
            let request = match Control::decode_body(&body) {
                Ok(request) => request,
                Err(e) => {
                    let text = format!("the server cannot read that request: {}", wire::chain(&e));
                    tracing::warn!(peer = %channel.peer(), "{text}");
                    if let Err(e) = channel.send(&Control::Failed(text).encode_body()) {
                        return tracing::warn!(peer = %channel.peer(), "{}", wire::chain(&e));
                    }
                    continue;
                }
            };
            let reply = match request {
                Control::Status => Ok(Control::StatusReply(self.status(false))),
                Control::StatusExact => Ok(Control::StatusReply(self.status(true))),
                Control::Reserve(request) => desktop_key(&hello, "Reserve", request.vm.clone())
                    .and_then(|key| self.reserve(&mut reservation, key, &request))
                    .map(|(expected, fence)| Control::Reserved { expected, fence }),
                Control::Consolidate(request) => {
                    // The descriptor follows as a stream: read it whole
                    // whatever the answer, so the connection stays in step.
                    let descriptor =
                        daemon_protocol::receive_stream(&mut channel, request.descriptor_bytes, request.descriptor_crc);
                    desktop_key(&hello, "Consolidate", request.vm.clone())
                        .and_then(|key| {
                            let descriptor =
                                descriptor.map_err(|source| ServerError::Descriptor { key: key.clone(), source })?;
                            self.host(&mut reservation, key, &request, &descriptor)
                        })
                        .map(Control::Running)
                }
                Control::Reintegrate(vm) => {
                    match desktop_key(&hello, "Reintegrate", vm).and_then(|key| self.send_home(&key, &mut channel)) {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                Control::Recover(vm) => {
                    match desktop_key(&hello, "Recover", vm).and_then(|key| self.send_checkpoint(&key, &mut channel)) {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                Control::Reintegrated(vm) => desktop_key(&hello, "Reintegrated", vm).map(|key| {
                    self.forget(&key);
                    Control::Done
                }),
                other => Ok(Control::Failed(format!("the server does not take {} requests", other.kind()))),
            };
            let reply = reply.unwrap_or_else(|e| {
                tracing::warn!(peer = %channel.peer(), "refused: {}", wire::chain(&e));
                match e {
                    ServerError::NoRoom { .. } | ServerError::Draining { .. } => Control::NoRoom(wire::chain(&e)),
                    _ => Control::Failed(wire::chain(&e)),
                }
            });
            if let Err(e) = channel.send(&reply.encode_body()) {
                return tracing::warn!(peer = %channel.peer(), "{}", wire::chain(&e));
            }
        }
    }

    /// For a clean exit (a restart, an upgrade): every hosted VM's QEMU
    /// and storage process run on, and the next daemon takes them over
    /// ([`HostedVm::take_over`]); its guest notices nothing. A host that
    /// shuts down sends them home first ([`ServerDaemon::send_all_home`],
    /// `jettison save-all`). In a fleet, its record leaves the registry at
    /// once, and with it its lease and every VM's claim: its QEMUs are
    /// frozen first, and their desktops take them back from the next
    /// daemon.
    pub fn shutdown(&self) {
        if let Some(fleet) = &self.fleet {
            // The lease goes with the record, and every claim under it.
            self.fence.freeze_all();
            fleet.withdraw();
        }
        let vms = std::mem::take(&mut *lock(&self.vms));
        for (key, vm) in vms {
            match Arc::try_unwrap(vm).map(|vm| vm.into_inner().unwrap_or_else(|p| p.into_inner())) {
                Ok(vm) if vm.is_running() => {
                    tracing::info!(desktop = %key.desktop, vm = %key.vm, "left running for the next start of the daemon");
                    vm.leave_running();
                }
                Ok(_) => {}
                // Held by a thread that is moving it: the process ends
                // under it, and what runs is taken over at the next start.
                Err(_) => tracing::warn!(desktop = %key.desktop, vm = %key.vm, "busy (moving) as the daemon stops"),
            }
        }
    }

    /// Sends every running VM home (its desktop is asked to reintegrate
    /// it, as for memory pressure) and waits up to `within` for them to
    /// leave: what a host shutdown runs (`jettison save-all`), so that no
    /// guest loses its state with the host. Says which went home and which
    /// did not (their desktops resume them from their checkpoints).
    pub fn send_all_home(self: &Arc<Self>, within: Duration) -> Report {
        let running: Vec<(VmKey, std::net::SocketAddr, Option<DesktopWaker>)> = lock(&self.vms)
            .values()
            .filter_map(|vm| {
                local::lock_for_status(vm)
                    .filter(|vm| vm.is_running())
                    .map(|vm| (vm.key().clone(), vm.desktop_control(), vm.desktop_waker()))
            })
            .collect();
        // Asked all at once; a desktop that does not take the request (it
        // is gone, or its daemon is down) is not waited for.
        let leaving: Vec<VmKey> = std::thread::scope(|scope| {
            let asks: Vec<_> = running
                .iter()
                .map(|(key, control, waker)| {
                    let ask = scope.spawn(|| {
                        wake(key, waker.as_ref());
                        self.request_home(key, *control, "the server host shuts down".into())
                    });
                    (key, ask)
                })
                .collect();
            asks.into_iter()
                .filter_map(|(key, ask)| match ask.join() {
                    Ok(Ok(())) => Some(key.clone()),
                    Ok(Err(e)) => {
                        tracing::warn!(desktop = %key.desktop, vm = %key.vm, "its desktop did not take the request: {}", wire::chain(&e));
                        None
                    }
                    Err(_) => None,
                })
                .collect()
        });
        let deadline = Instant::now() + within;
        let still_here = |key: &VmKey| {
            lock(&self.vms).get(key).cloned().is_some_and(|vm| vm.try_lock().map_or(true, |vm| vm.is_running()))
        };
        while leaving.iter().any(still_here) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
        }
        let (gone, stayed): (Vec<VmKey>, Vec<VmKey>) =
            running.into_iter().map(|(key, _, _)| key).partition(|key| !still_here(key));
        if !stayed.is_empty() {
            let left: Vec<String> = stayed.iter().map(VmKey::to_string).collect();
            tracing::warn!(
                "VMs that did not go home: {} (their desktops resume them from their checkpoints)",
                left.join(", ")
            );
        }
        let names = |keys: Vec<VmKey>| keys.into_iter().map(|key| key.to_string()).collect();
        Report::SentHome { home: names(gone), stayed: names(stayed) }
    }

    /// The capacity check for a VM that wants to come, and in a fleet its
    /// claim in etcd; returns the working set expected and the stay's
    /// fencing token (in a fleet). The reservation is
    /// `reservation`'s (one per connection) until the VM is hosted or the
    /// connection ends.
    fn reserve(
        &self,
        reservation: &mut Reservation<'_>,
        key: VmKey,
        request: &ReserveRequest,
    ) -> Result<(u64, Option<u64>), ServerError> {
        if let Some(why) = machine::refusal(&self.config, self.accel, &self.cpu_models, &request.profile) {
            return Err(ServerError::CannotRun { key, why });
        }
        if self.fleet.as_ref().is_some_and(|fleet| fleet.draining()) {
            return Err(ServerError::Draining { key, server: self.config.name.clone() });
        }
        let (expected, from_history) = lock(&self.history).expected(&key.to_string());
        let mut reservations = lock(&self.reservations);
        if reservation.key.as_ref() != Some(&key) && reservations.contains_key(&key) {
            return Err(ServerError::AlreadyReserved { key });
        }
        let hosted: Vec<VmKey> = lock(&self.vms).keys().cloned().collect();
        if hosted.contains(&key) {
            return Err(ServerError::AlreadyHosted { key });
        }
        let same_name =
            hosted.iter().chain(reservations.keys()).find(|other| other.vm == key.vm && other.desktop != key.desktop);
        if let Some(other) = same_name {
            return Err(ServerError::NameInUse { key, other: other.clone() });
        }
        let mut tenants = self.tenants();
        tenants.extend(reservations.iter().filter(|(r, _)| **r != key).map(|(r, b)| Tenant {
            key: r.clone(),
            expected: b.expected,
            resident: 0,
        }));
        capacity::check(self.config.capacity_mib << 20, &tenants, expected, from_history)
            .map_err(|source| ServerError::NoRoom { key: key.clone(), source: Box::new(source) })?;
        let others = tenants.iter().map(Tenant::claim).sum();
        lock(&self.energy)
            .check(&key, expected, others)
            .map_err(|source| ServerError::Unprofitable { key: key.clone(), source: Box::new(source) })?;
        // In a fleet the VM is claimed in etcd before its desktop stops it:
        // a VM another server holds is refused.
        let token = match &self.fleet {
            Some(fleet) => Some(
                fleet
                    .claim(&key)
                    .map_err(|source| ServerError::Claim { key: key.clone(), source: Box::new(source) })?,
            ),
            None => None,
        };
        if let Some(old) = reservation.key.replace(key.clone()) {
            if old != key {
                reservations.remove(&old);
                self.release_claim(&old);
            }
        }
        let profile = request.profile.clone();
        let disks = request.disk_count();
        let console_port = self.free_console_port(&reservations, &key);
        let connection = reservation.connection;
        reservations.insert(key.clone(), Reserved { expected, profile, disks, connection, console_port, fence: token });
        tracing::info!(desktop = %key.desktop, vm = %key.vm, ram_bytes = request.profile.ram_bytes(), disks, expected_mib = expected >> 20, from_history, token, "reserved");
        Ok((expected, token))
    }

    /// Brings a consolidated VM up; returns the milliseconds it took.
    fn host(
        &self,
        reservation: &mut Reservation<'_>,
        key: VmKey,
        request: &ConsolidateRequest,
        descriptor: &[u8],
    ) -> Result<u64, ServerError> {
        let started = Instant::now();
        if reservation.key.as_ref() != Some(&key) {
            return Err(ServerError::NotReserved { key });
        }
        let mac_user = lock(&self.vms)
            .iter()
            .find(|(_, vm)| vm.try_lock().is_ok_and(|vm| vm.mac() == request.vm_mac))
            .map(|(other, _)| other.clone());
        if let Some(other) = mac_user {
            return Err(ServerError::MacInUse { key, mac: request.vm_mac, other });
        }
        let wake = request.desktop_mac.map(|mac| WakeSpec {
            mac,
            broadcast: self.config.wake_broadcast,
            interface: self.config.wake_interface.clone(),
        });
        let reserved =
            lock(&self.reservations).get(&key).cloned().ok_or_else(|| ServerError::NotReserved { key: key.clone() })?;
        let console_port = reserved.console_port;
        let vm = HostedVm::start(
            &self.config,
            &self.storage_program,
            key.clone(),
            Arrival {
                request,
                descriptor,
                profile: &reserved.profile,
                disks: reserved.disks,
                accel: self.accel,
                console_port,
                fence: reserved.fence,
            },
            wake,
            reserved.expected,
        )?;
        self.metrics.hosted(started.elapsed());
        // Its desktop sleeps if the server can wake it.
        lock(&self.energy).arrived(&key, request.desktop_mac.is_some(), started);
        tracing::info!(desktop = %key.desktop, vm = %key.vm, "running on the server");
        if let (Some(_), Some(pid)) = (&self.fleet, vm.qemu_pid()) {
            self.fence.track(&key, pid);
        }
        // Hosted first, then unreserved: a VM is always in one of the two.
        lock(&self.vms).insert(key.clone(), Arc::new(Mutex::new(vm)));
        reservation.release();
        Ok(started.elapsed().as_millis() as u64)
    }

    /// Writes what hosted VM `vm`'s screen shows to a file in its run
    /// directory, and returns the file.
    fn screenshot(&self, vm: &VmName, png: bool) -> Result<std::path::PathBuf, ServerError> {
        let hosted = lock(&self.vms).iter().find(|(key, _)| &key.vm == vm).map(|(_, v)| Arc::clone(v));
        let hosted = hosted.ok_or_else(|| ServerError::NoSuchVm { vm: vm.clone() })?;
        let mut hosted = lock(&hosted);
        hosted.screenshot(png)
    }

    /// The first console port that no hosted VM uses and no reservation
    /// but `key`'s holds (`reservations` is the locked map).
    fn free_console_port(&self, reservations: &BTreeMap<VmKey, Reserved>, key: &VmKey) -> u16 {
        // A VM on its way home may be held for a moment; its QEMU still
        // has its port until it ends.
        let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
        let used: Vec<u16> = vms
            .iter()
            .filter_map(|vm| local::lock_for_status(vm).and_then(|vm| vm.console_port()))
            .chain(reservations.iter().filter(|(other, _)| *other != key).map(|(_, r)| r.console_port))
            .collect();
        let base = self.config.console_port_base;
        (base..base.saturating_add(self.config.console_ports)).find(|p| !used.contains(p)).unwrap_or(base)
    }

    /// Stops `key`'s VM and sends it home on `channel`.
    fn send_home(&self, key: &VmKey, channel: &mut Channel) -> Result<(), ServerError> {
        let hosted = lock(&self.vms).get(key).cloned().ok_or_else(|| ServerError::NotHosted { key: key.clone() })?;
        let mut hosted = lock(&hosted);
        let started = Instant::now();
        // Its desktop asks for it, so it runs nowhere else: thawed if the
        // fence froze it, and stopped through QMP at once.
        self.fence.untrack(key);
        hosted.stop()?;
        let header = hosted.send_home(channel)?;
        self.metrics.sent_home(started.elapsed(), header.total_bytes());
        lock(&self.energy).sent_home(key, header.total_bytes());
        tracing::info!(
            desktop = %key.desktop, vm = %key.vm,
            dirty_pages = header.dirty_pages,
            dirty_blocks = header.dirty_blocks,
            bytes = header.total_bytes(),
            secs = started.elapsed().as_secs_f64(),
            "sent home"
        );
        Ok(())
    }

    /// Sends the last checkpoint of `key`'s VM home, for a VM this server
    /// lost: its QEMU died, or the server restarted since it came.
    fn send_checkpoint(&self, key: &VmKey, channel: &mut Channel) -> Result<(), ServerError> {
        let hosted = lock(&self.vms).get(key).cloned();
        let _held = match &hosted {
            Some(vm) => {
                let vm = lock(vm);
                if vm.is_running() {
                    return Err(ServerError::RunsHere { key: key.clone() });
                }
                Some(vm)
            }
            None => None,
        };
        let (header, manifest) = crate::hosted::send_checkpoint(key, &state_dir(&self.config, key), channel)?;
        tracing::info!(
            desktop = %key.desktop, vm = %key.vm,
            taken_at = manifest.taken_at,
            dirty_pages = header.dirty_pages,
            dirty_blocks = header.dirty_blocks,
            "sent home from its last checkpoint"
        );
        Ok(())
    }

    /// Drops `key`'s VM once it runs at home, keeping its working set and
    /// its stay's fetch trace in the history ([`crate::traces`]). A VM
    /// recovered from a checkpoint after a restart of this daemon is not
    /// hosted: its trace is kept and its files deleted all the same.
    fn forget(&self, key: &VmKey) {
        let state = state_dir(&self.config, key);
        self.fence.untrack(key);
        self.release_claim(key);
        let Some(hosted) = lock(&self.vms).remove(key) else {
            if state.exists() {
                crate::traces::keep(&self.config.state_dir, key, &state);
                match std::fs::remove_dir_all(&state) {
                    Ok(()) => {
                        tracing::info!(desktop = %key.desktop, vm = %key.vm, "back on its desktop from a checkpoint; slices deleted")
                    }
                    Err(e) => {
                        tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot remove {}: {e}", state.display())
                    }
                }
            }
            return;
        };
        lock(&self.asked).remove(key);
        match lock(&self.energy).close(key, Instant::now()) {
            Ok(Some(stay)) => tracing::info!(
                desktop = %key.desktop, vm = %key.vm,
                server_kj = stay.energy.server_joules / 1000.0,
                desktop_saved_kj = stay.energy.desktop_saved_joules / 1000.0,
                net_kj = stay.energy.net_joules / 1000.0,
                "energy of its stay"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("{}", wire::chain(&e)),
        }
        let hosted = match Arc::try_unwrap(hosted) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => {
                return tracing::warn!(desktop = %key.desktop, vm = %key.vm, "still in use; its files stay until the next restart")
            }
        };
        if let Err(e) = lock(&self.history).record(&key.to_string(), hosted.resident()) {
            tracing::warn!("{}", wire::chain(&e));
        }
        crate::traces::keep(&self.config.state_dir, key, &state);
        hosted.discard();
        tracing::info!(desktop = %key.desktop, vm = %key.vm, "back on its desktop; slices deleted");
    }

    /// The VMs here, for the capacity check.
    fn tenants(&self) -> Vec<Tenant> {
        let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
        vms.iter()
            .filter_map(|vm| {
                vm.try_lock().ok().map(|v| Tenant {
                    key: v.key().clone(),
                    expected: v.expected(),
                    resident: v.resident(),
                })
            })
            .collect()
    }

    /// The metrics page: the moves so far, each hosted VM's figures (read
    /// now), the desktops' wakes and the energy ledger.
    fn metrics_page(&self) -> String {
        let vms: Vec<_> = lock(&self.vms).iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        let figures: Vec<(VmFigures, Option<DesktopStatus>)> = vms
            .iter()
            .filter_map(|(key, vm)| match local::lock_for_status(vm) {
                Some(mut vm) => {
                    vm.poll();
                    Some(figures_of(&vm))
                }
                // A VM that is moving is left out of this scrape.
                None => lock(&self.checkpointing).get(key).cloned(),
            })
            .collect();
        let desktops = desktop_power(figures.iter().filter_map(|(_, desktop)| desktop.clone()));
        let figures: Vec<VmFigures> = figures.into_iter().map(|(figures, _)| figures).collect();
        let energy = lock(&self.energy).report(Instant::now());
        self.metrics.page(&figures, &desktops, &energy)
    }

    /// Every VM's status; with `exact`, each running guest's page cache
    /// is written back first (see [`HostedVm::write_back`]).
    pub fn status(&self, exact: bool) -> Vec<HostedStatus> {
        let vms: Vec<_> = lock(&self.vms).iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        vms.iter()
            .map(|(key, vm)| match local::lock_for_status(vm) {
                Some(mut vm) => {
                    if exact {
                        if let Err(e) = vm.write_back() {
                            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot write its page cache back for an exact status: {}", wire::chain(&e));
                        }
                    }
                    vm.poll();
                    let mut status = vm.status();
                    // Its desktop may not know: it asks for it back on seeing this.
                    if self.fence.lost(key) && status.state == daemon_protocol::HostedState::Running {
                        status.state = daemon_protocol::HostedState::Stopped;
                    }
                    status
                }
                None => lock(&self.checkpointing).get(key).map_or_else(
                    || HostedStatus::moving(key.vm.clone(), key.desktop.clone()),
                    |(figures, _)| figures.status.clone(),
                ),
            })
            .collect()
    }

    /// Every [`WATCH_EVERY`]: notice dead QEMUs, send home the VM that grew
    /// most when memory is short, and any VM fetching too fast.
    fn watch(self: Arc<Self>) {
        let mut rates = FetchRates::default();
        let window = Duration::from_secs(self.config.fetch_window_secs.max(1));
        loop {
            std::thread::sleep(WATCH_EVERY);
            let draining = self.fleet.as_ref().is_some_and(|fleet| fleet.draining());
            let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
            let mut tenants = Vec::new();
            let mut present = Vec::new();
            let mut samples = Vec::new();
            for vm in &vms {
                let Ok(mut vm) = vm.try_lock() else { continue };
                vm.poll();
                present.push(vm.key().clone());
                if !vm.is_running() {
                    continue;
                }
                // A frozen QEMU answers no QMP command: no checkpoint then.
                if !self.fence.frozen(vm.key())
                    && vm.checkpoint_due(Duration::from_secs(self.config.checkpoint_every_secs))
                {
                    tracing::info!(desktop = %vm.key().desktop, vm = %vm.key().vm, "taking a checkpoint");
                    // Polled at the top of this round.
                    lock(&self.checkpointing).insert(vm.key().clone(), figures_of(&vm));
                    let taken = vm.checkpoint();
                    lock(&self.checkpointing).remove(vm.key());
                    match taken {
                        Ok(taken) => tracing::info!(
                            desktop = %vm.key().desktop, vm = %vm.key().vm,
                            pause_ms = taken.pause_ms,
                            dirty_pages = taken.dirty_pages,
                            dirty_blocks = taken.dirty_blocks,
                            "checkpoint taken"
                        ),
                        Err(e) => tracing::error!("{}", wire::chain(&e)),
                    }
                }
                if vm.guest_powered_off() {
                    // Its disk writes and its "off" belong at home.
                    self.ask_to_leave(&vm, Leave::Home, "its guest powered off".to_owned());
                    continue;
                }
                if draining {
                    let reason = format!("the server {} is being drained", self.config.name);
                    self.ask_to_leave(&vm, Leave::ToAnotherServer, reason);
                }
                let tenant = Tenant { key: vm.key().clone(), expected: vm.expected(), resident: vm.resident() };
                samples.push(VmSample {
                    key: tenant.key.clone(),
                    cpu: vm.cpu_time(),
                    memory_bytes: tenant.claim(),
                    fetched_bytes: vm.fetched(),
                    desktop_sleeps: vm.desktop_power().is_some(),
                });
                tenants.push(tenant);
                // A VM pulls its working set in its first seconds here:
                // the rate counts from one window after its arrival, and
                // only what the guest asked for (not the push).
                let rate = if vm.age() < window {
                    None
                } else {
                    rates.push(vm.key(), Instant::now(), vm.fetched_on_demand(), window)
                };
                if let (Some(rate), Some(limit)) = (rate, self.config.max_fetch_mib_per_sec) {
                    if rate > limit * 1024.0 * 1024.0 {
                        let reason = format!(
                            "it fetched {:.1} MiB/s from its desktop over the last {} s (limit {limit} MiB/s): it is not idle",
                            rate / (1024.0 * 1024.0),
                            window.as_secs()
                        );
                        self.ask_to_leave(&vm, Leave::Home, reason);
                    }
                }
            }
            rates.retain(&present);
            lock(&self.energy).tick(Instant::now(), &samples);
            if let Some(fleet) = &self.fleet {
                fleet.tick(Instant::now(), &samples);
            }
            let capacity = self.config.capacity_mib << 20;
            if let Some(victim) = capacity::evict(capacity, &tenants) {
                let held = vms.iter().find_map(|v| v.try_lock().ok().filter(|v| v.key() == &victim.key));
                if let Some(vm) = held {
                    let reason = format!(
                        "the server is short of memory and {} grew most beyond its estimate ({} MiB held, {} MiB expected)",
                        victim.key,
                        victim.resident >> 20,
                        victim.expected >> 20
                    );
                    // In a fleet another server may have room for it.
                    let leave = if self.fleet.is_some() { Leave::ToAnotherServer } else { Leave::Home };
                    self.ask_to_leave(&vm, leave, reason);
                }
            }
        }
    }

    /// Asks `vm`'s desktop daemon at `control` to take it back, or to move
    /// it to another server (at most once a minute), on a thread of its own.
    fn ask_to_leave(self: &Arc<Self>, vm: &HostedVm, leave: Leave, reason: String) {
        let key = vm.key();
        {
            let mut asked = lock(&self.asked);
            if asked.get(key).is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER) {
                return;
            }
            asked.insert(key.clone(), Instant::now());
        }
        let (control, waker) = (vm.desktop_control(), vm.desktop_waker());
        let (me, vm) = (Arc::clone(self), key.clone());
        std::thread::spawn(move || {
            wake(&vm, waker.as_ref());
            let asked = match leave {
                Leave::Home => me.request_home(&vm, control, reason),
                Leave::ToAnotherServer => me.request_move(&vm, control, reason),
            };
            if let Err(e) = asked {
                tracing::warn!(desktop = %vm.desktop, vm = %vm.vm, "its desktop did not take the request: {}", wire::chain(&e));
            }
        });
    }

    /// Sends `PleaseReintegrate` for `key` to its desktop daemon at
    /// `control` and waits for its answer.
    fn request_home(&self, key: &VmKey, control: std::net::SocketAddr, reason: String) -> Result<(), ServerError> {
        tracing::info!(desktop = %key.desktop, vm = %key.vm, "asking its desktop to take it back: {reason}");
        self.request(key, control, Control::PleaseReintegrate { vm: key.vm.clone(), reason })
    }

    /// Sends `PleaseMove` for `key` to its desktop daemon at `control` and
    /// waits for its answer.
    fn request_move(&self, key: &VmKey, control: std::net::SocketAddr, reason: String) -> Result<(), ServerError> {
        tracing::info!(desktop = %key.desktop, vm = %key.vm, "asking its desktop to move it to another server: {reason}");
        self.request(key, control, Control::PleaseMove { vm: key.vm.clone(), reason })
    }

    /// Sends `request` to `key`'s desktop daemon at `control`; its answer
    /// `Failed` is an error.
    fn request(&self, key: &VmKey, control: std::net::SocketAddr, request: Control) -> Result<(), ServerError> {
        let failed = |source| ServerError::AskDesktop { key: key.clone(), source: Box::new(source) };
        let hello = ControlHello::Server(self.config.name.clone()).encode_body();
        let (mut channel, _) =
            Channel::connect(&control.to_string(), &self.credentials, Some(&key.desktop), &hello, CONTROL_TIMEOUT)
                .map_err(failed)?;
        channel.send(&request.encode_body()).map_err(failed)?;
        let answer = channel.recv().map_err(failed)?;
        match Control::decode_body(&answer) {
            Ok(Control::Failed(why)) => Err(ServerError::DesktopRefused { key: key.clone(), why }),
            _ => Ok(()),
        }
    }
}

/// Wakes `key`'s desktop with `waker` (none: it never sleeps) before a
/// request to it; a wake that fails is logged, and the request tried anyway.
fn wake(key: &VmKey, waker: Option<&DesktopWaker>) {
    if let Some(Err(e)) = waker.map(DesktopWaker::wake_up) {
        tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot wake its desktop to ask it: {}", wire::chain(&e));
    }
}

/// Where a VM the server wants gone should go.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Home to its desktop (it is not idle, or its guest powered off).
    Home,
    /// To another server of the fleet, through its desktop (a drain, or
    /// memory pressure): home only when no other server has room.
    ToAnotherServer,
}

/// The key of `vm` for `request`, which only a desktop may make: the
/// desktop is the one `hello` named.
fn desktop_key(hello: &ControlHello, request: &'static str, vm: VmName) -> Result<VmKey, ServerError> {
    let peer = match hello {
        ControlHello::Desktop(desktop) => return Ok(VmKey { desktop: desktop.clone(), vm }),
        ControlHello::Server(name) => format!("server {name}"),
        ControlHello::Tool => "the command line".to_owned(),
    };
    Err(ServerError::NotADesktop { request, peer })
}

/// A reservation made on one connection, released when the connection ends
/// without consolidating. It removes only its own entry: another
/// connection's reservation of the same VM is never touched.
struct Reservation<'a> {
    daemon: &'a ServerDaemon,
    key: Option<VmKey>,
    connection: u64,
}

impl Reservation<'_> {
    /// Gives up the reservation (the VM is hosted now, or the connection ends).
    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            let mut reservations = lock(&self.daemon.reservations);
            if reservations.get(&key).is_some_and(|r| r.connection == self.connection) {
                reservations.remove(&key);
                // Never hosted: its claim goes too.
                if !lock(&self.daemon.vms).contains_key(&key) {
                    self.daemon.release_claim(&key);
                }
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// The VMs an earlier daemon left running, found from their records in
/// the state directory (see [`HostedVm::take_over`]).
fn take_over(config: &ServerConfig) -> BTreeMap<VmKey, HostedVm> {
    let vms = config.state_dir.join("vms");
    let mut found = BTreeMap::new();
    for desktop in list_dir(&vms) {
        for vm in list_dir(&vms.join(&desktop)) {
            // Names that do not parse are an earlier stay's leftovers
            // (`vm1.orphaned-<time>`), not VMs.
            let (Ok(desktop), Ok(vm)) = (desktop.parse(), vm.parse()) else { continue };
            let key = VmKey { desktop, vm };
            if let Some(hosted) = HostedVm::take_over(config, key.clone()) {
                found.insert(key, hosted);
            }
        }
    }
    found
}

/// Removes what a dead daemon left in the run directory `dir` for VMs
/// that are not `running` (taken over): memtap mounts whose process is
/// gone, sockets, logs. Nothing there is state worth keeping.
fn clear_stale_run_dir(dir: &std::path::Path, running: &BTreeMap<VmKey, HostedVm>) {
    for desktop in list_dir(dir) {
        for vm in list_dir(&dir.join(&desktop)) {
            if running.keys().any(|key| key.desktop.as_str() == desktop && key.vm.as_str() == vm) {
                continue;
            }
            let run = dir.join(&desktop).join(&vm);
            // A QEMU or storage process a daemon killed mid-arrival left
            // behind: nothing will take it over.
            drop(qemu_driver::QemuProcess::attach_in(&run.join("qemu")));
            if let Some(mut storage) = crate::storage::VmStorage::attach(&run) {
                if let Err(e) = storage.shut() {
                    tracing::warn!("{}: {}", run.display(), wire::chain(&e));
                }
            }
            let _ = std::process::Command::new("umount").arg("-l").arg(run.join("ram")).output();
            if let Err(e) = std::fs::remove_dir_all(&run) {
                tracing::warn!("cannot clear {}: {e}", run.display());
            }
        }
    }
}

/// One status per desktop from its VMs' storage processes (each wakes its
/// desktop on its own): wakes added up; waking if any is waking, else
/// asleep if any saw it asleep.
fn desktop_power(seen: impl Iterator<Item = DesktopStatus>) -> Vec<DesktopStatus> {
    let mut desktops: BTreeMap<String, DesktopStatus> = BTreeMap::new();
    for status in seen {
        match desktops.get_mut(&status.name) {
            None => {
                desktops.insert(status.name.clone(), status);
            }
            Some(merged) => {
                use remote_wakeup::WakeState::{Asleep, Waking};
                merged.state = match (merged.state, status.state) {
                    (Waking, _) | (_, Waking) => Waking,
                    (Asleep, _) | (_, Asleep) => Asleep,
                    (state, _) => state,
                };
                let (a, b) = (&mut merged.stats, status.stats);
                a.wakes += b.wakes;
                a.failed_wakes += b.failed_wakes;
                a.magic_packets += b.magic_packets;
                a.joined += b.joined;
                a.total_wait_ms += b.total_wait_ms;
            }
        }
    }
    desktops.into_values().collect()
}

fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let names: BTreeSet<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use remote_wakeup::{WakeState, WakeStats};

    fn seen(name: &str, state: WakeState, wakes: u64) -> DesktopStatus {
        DesktopStatus {
            name: name.to_owned(),
            mac: "02:00:00:00:00:01".to_owned(),
            probe: "10.0.0.2:7410".to_owned(),
            state,
            stats: WakeStats { wakes, ..WakeStats::default() },
        }
    }

    #[test]
    fn reservations_held_at_once_get_different_console_ports() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("host.key");
        wire::HostKey::generate().save(&key_file).unwrap();
        std::fs::create_dir(dir.path().join("peers")).unwrap();
        let text = format!(
            "name = \"server1\"\nlisten = \"127.0.0.1:0\"\nhost_key = \"{}\"\npeers = \"{}\"\n\
             state_dir = \"{}\"\nrun_dir = \"{}\"\nbridge = \"br-none\"\nkernel = \"/none\"\ninitrd = \"/none\"\n\
             capacity_mib = 4096\naccel = \"tcg\"\n",
            key_file.display(),
            dir.path().join("peers").display(),
            dir.path().join("state").display(),
            dir.path().join("run").display(),
        );
        let config_file = dir.path().join("server.toml");
        std::fs::write(&config_file, text).unwrap();
        let daemon = ServerDaemon::new(ServerConfig::load(&config_file).unwrap()).unwrap();
        let profile = MachineProfile {
            memory_mib: 256,
            vcpus: 1,
            cpu_model: "max".parse().unwrap(),
            firmware: daemon_protocol::Firmware::Bios,
            display: true,
        };
        // Two desktops consolidating at once: each holds its reservation
        // until its VM is up, and neither VM is hosted yet.
        let mut held: Vec<Reservation<'_>> =
            (0..2).map(|connection| Reservation { daemon: &daemon, key: None, connection }).collect();
        for (reservation, (desktop, vm)) in held.iter_mut().zip([("desk1", "vm1"), ("desk2", "vm2")]) {
            let key = VmKey { desktop: desktop.parse().unwrap(), vm: vm.parse().unwrap() };
            let request = ReserveRequest {
                vm: key.vm.clone(),
                profile: profile.clone(),
                disk_bytes: 1 << 20,
                extra_disk_bytes: vec![],
            };
            daemon.reserve(reservation, key, &request).unwrap();
        }
        let ports: Vec<u16> = lock(&daemon.reservations).values().map(|r| r.console_port).collect();
        assert_eq!(ports.len(), 2);
        assert_ne!(ports[0], ports[1], "two VMs coming at once were given one console port");
        drop(held);
        assert!(lock(&daemon.reservations).is_empty());
    }

    #[test]
    fn one_desktops_vms_add_up_to_one_status() {
        let merged = desktop_power(
            [
                seen("desk1", WakeState::Awake, 2),
                seen("desk2", WakeState::Awake, 1),
                seen("desk1", WakeState::Asleep, 3),
            ]
            .into_iter(),
        );
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].name.as_str(), merged[0].state, merged[0].stats.wakes), ("desk1", WakeState::Asleep, 5));
        assert_eq!((merged[1].name.as_str(), merged[1].state, merged[1].stats.wakes), ("desk2", WakeState::Awake, 1));
        let waking = desktop_power([seen("d", WakeState::Asleep, 0), seen("d", WakeState::Waking, 0)].into_iter());
        assert_eq!(waking[0].state, WakeState::Waking);
    }
}
