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

use daemon_protocol::local::{self, LocalRequest};
use daemon_protocol::{Control, ControlHello, HostedStatus, ReserveRequest, CONTROL_TIMEOUT};
use remote_wakeup::{Registry, WakeTarget};
use wire::protocol::Message;
use wire::{Channel, NoWake, SharedKey, WakeHook, WireError};

use crate::capacity::{self, History, Tenant};
use crate::config::ServerConfig;
use crate::hosted::HostedVm;
use crate::watch::FetchRates;

/// How often the watcher looks at the VMs.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How long before the server asks a desktop again to take its VM back.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(60);

type Vms = BTreeMap<String, Arc<Mutex<HostedVm>>>;

/// The running server daemon.
#[derive(Debug)]
pub struct ServerDaemon {
    config: ServerConfig,
    key: SharedKey,
    vms: Mutex<Vms>,
    reservations: Mutex<BTreeMap<String, u64>>,
    history: Mutex<History>,
    wakers: Registry,
    asked: Mutex<BTreeMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("a server daemon lock was poisoned: a thread panicked holding it")
}

impl ServerDaemon {
    /// Reads the key, makes the directories, and clears what a daemon that
    /// died left in the run directory (memtap mounts whose process is gone).
    /// Slices in the state directory are kept.
    ///
    /// # Errors
    /// A text naming the file or directory at fault.
    pub fn new(config: ServerConfig) -> Result<Arc<ServerDaemon>, String> {
        let key = SharedKey::load(&config.key).map_err(|e| wire::chain(&e))?;
        for dir in [&config.state_dir, &config.run_dir] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        clear_stale_run_dir(&config.run_dir.join("vms"));
        let orphans = list_dir(&config.state_dir.join("vms"));
        if !orphans.is_empty() {
            tracing::warn!(
                "slices of VMs an earlier run hosted are kept in {}: {}",
                config.state_dir.join("vms").display(),
                orphans.join(", ")
            );
        }
        let history = History::load(&config.state_dir.join("history.json"));
        Ok(Arc::new(ServerDaemon {
            config,
            key,
            vms: Mutex::new(BTreeMap::new()),
            reservations: Mutex::new(BTreeMap::new()),
            history: Mutex::new(history),
            wakers: Registry::new(),
            asked: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Serves desktops and the local socket until the process ends.
    ///
    /// # Errors
    /// A text when the listening sockets cannot be made.
    pub fn run(self: Arc<Self>) -> Result<(), String> {
        let listener = TcpListener::bind(self.config.listen)
            .map_err(|e| format!("cannot listen on {} ({e}): is another server daemon running?", self.config.listen))?;
        let local = local::bind(&self.config.control_socket())?;
        let me = Arc::clone(&self);
        std::thread::spawn(move || {
            local::serve(local, move |request, _| match request {
                LocalRequest::Status => Ok(serde_json::to_value(me.status()).expect("statuses serialise")),
                _ => Err("this is the server; run consolidate and reintegrate on the VM's desktop".to_owned()),
            })
        });
        let me = Arc::clone(&self);
        std::thread::spawn(move || me.watch());
        tracing::info!(listen = %self.config.listen, capacity_mib = self.config.capacity_mib, "server daemon ready");
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

    /// One control connection, to its end.
    fn handle(self: &Arc<Self>, stream: TcpStream) {
        let mut hello = None;
        let name = self.config.name.clone();
        let channel =
            Channel::accept(stream, &self.key, CONTROL_TIMEOUT, |payload| match ControlHello::decode_body(payload) {
                Ok(h) => {
                    hello = Some(h);
                    Control::Welcome(name).encode_body()
                }
                Err(e) => Control::Failed(format!("not a control hello: {e}")).encode_body(),
            });
        let mut channel = match channel {
            Ok(c) if hello.is_some() => c,
            Ok(c) => return tracing::warn!(peer = %c.peer(), "a peer sent a bad hello"),
            Err(e) => return tracing::warn!("a control connection failed: {}", wire::chain(&e)),
        };
        // Long steps (QEMU starting, a reintegration) must not time out the
        // wait for the next request.
        let _ = channel.set_read_timeout(None);
        let mut reservation = Reservation { daemon: self, vm: None };
        loop {
            let body = match channel.recv() {
                Ok(body) => body,
                Err(WireError::Closed { .. }) => return,
                Err(e) => return tracing::warn!(peer = %channel.peer(), "{}", wire::chain(&e)),
            };
            let reply = match Control::decode_body(&body) {
                Err(e) => Control::Failed(format!("the server cannot read that request: {e}")),
                Ok(Control::Reserve(request)) => match self.reserve(&request) {
                    Ok(bytes) => {
                        reservation.set(request.vm);
                        Control::Reserved(bytes)
                    }
                    Err(e) => Control::Failed(e),
                },
                Ok(Control::Consolidate(request)) if reservation.vm.as_deref() != Some(request.vm.as_str()) => {
                    Control::Failed(format!("{} has no reservation on this connection; send Reserve first", request.vm))
                }
                Ok(Control::Consolidate(request)) => {
                    let started = Instant::now();
                    match self.host(&request) {
                        Ok(()) => {
                            reservation.vm = None;
                            lock(&self.reservations).remove(&request.vm);
                            Control::Running(started.elapsed().as_millis() as u64)
                        }
                        Err(e) => Control::Failed(e),
                    }
                }
                Ok(Control::Reintegrate(vm)) => match self.send_home(&vm, &mut channel) {
                    Ok(()) => continue,
                    Err(e) => Control::Failed(e),
                },
                Ok(Control::Reintegrated(vm)) => {
                    self.forget(&vm);
                    Control::Done
                }
                Ok(Control::Status) => Control::StatusReply(self.status()),
                Ok(other) => Control::Failed(format!("the server does not take {} requests", other.kind())),
            };
            if let Err(e) = channel.send(&reply.encode_body()) {
                return tracing::warn!(peer = %channel.peer(), "{}", wire::chain(&e));
            }
        }
    }

    /// Ends every hosted VM's QEMU and unmounts its memtap, for a clean
    /// exit; the slices stay on disk.
    pub fn shutdown(&self) {
        let vms = std::mem::take(&mut *lock(&self.vms));
        drop(vms);
    }

    /// The capacity check for a VM that wants to come.
    fn reserve(&self, request: &ReserveRequest) -> Result<u64, String> {
        let vm = &request.vm;
        if lock(&self.vms).contains_key(vm) {
            return Err(format!("{vm} is already on this server; reintegrate it first"));
        }
        let (expected, from_history) = lock(&self.history).expected(vm);
        let mut reservations = lock(&self.reservations);
        let mut tenants = self.tenants();
        tenants.extend(reservations.iter().filter(|(r, _)| *r != vm).map(|(r, &b)| Tenant {
            vm: r.clone(),
            expected: b,
            resident: 0,
        }));
        capacity::check(self.config.capacity_mib << 20, &tenants, vm, expected, from_history)?;
        reservations.insert(vm.clone(), expected);
        tracing::info!(vm = %vm, expected_mib = expected >> 20, from_history, "reserved");
        Ok(expected)
    }

    /// Brings a consolidated VM up.
    fn host(&self, request: &daemon_protocol::ConsolidateRequest) -> Result<(), String> {
        let wake: Arc<dyn WakeHook> = match &request.desktop_mac {
            None => Arc::new(NoWake),
            Some(mac) => {
                let mac = mac.parse().map_err(|e| format!("the desktop's MAC {mac:?}: {e}"))?;
                let probe =
                    request.memserv.parse().map_err(|e| format!("memserv address {:?}: {e}", request.memserv))?;
                let mut desktop = WakeTarget::new(&request.desktop, mac, self.config.wake_broadcast, probe);
                desktop.raw_interface = self.config.wake_interface.clone();
                self.wakers.add(desktop)
            }
        };
        let expected = lock(&self.reservations).get(&request.vm).copied().unwrap_or(capacity::PAPER_MEDIAN_BYTES);
        let vm = HostedVm::start(&self.config, &self.key, request, wake, expected)?;
        tracing::info!(vm = %request.vm, desktop = %request.desktop, "running on the server");
        lock(&self.vms).insert(request.vm.clone(), Arc::new(Mutex::new(vm)));
        Ok(())
    }

    /// Stops `vm` and sends it home on `channel`.
    fn send_home(&self, vm: &str, channel: &mut Channel) -> Result<(), String> {
        let hosted = lock(&self.vms).get(vm).cloned().ok_or_else(|| format!("{vm} is not on this server"))?;
        let mut hosted = lock(&hosted);
        let started = Instant::now();
        hosted.stop()?;
        let header = hosted.send_home(channel)?;
        tracing::info!(
            vm = %vm,
            dirty_pages = header.dirty_pages,
            dirty_blocks = header.dirty_blocks,
            bytes = header.total_bytes(),
            secs = started.elapsed().as_secs_f64(),
            "sent home"
        );
        Ok(())
    }

    /// Drops `vm` once it runs at home, keeping its working set in the history.
    fn forget(&self, vm: &str) {
        let Some(hosted) = lock(&self.vms).remove(vm) else { return };
        lock(&self.asked).remove(vm);
        let hosted = match Arc::try_unwrap(hosted) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return tracing::warn!(vm = %vm, "still in use; its files stay until the next restart"),
        };
        if let Err(e) = lock(&self.history).record(vm, hosted.resident()) {
            tracing::warn!("{e}");
        }
        hosted.discard();
        tracing::info!(vm = %vm, "back on its desktop; slices deleted");
    }

    /// The VMs here, for the capacity check.
    fn tenants(&self) -> Vec<Tenant> {
        let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
        vms.iter()
            .filter_map(|vm| {
                vm.try_lock().ok().map(|v| Tenant {
                    vm: v.name().to_owned(),
                    expected: v.expected(),
                    resident: v.resident(),
                })
            })
            .collect()
    }

    /// Every VM's status.
    pub fn status(&self) -> Vec<HostedStatus> {
        let vms: Vec<_> = lock(&self.vms).iter().map(|(n, v)| (n.clone(), Arc::clone(v))).collect();
        vms.iter()
            .map(|(name, vm)| match vm.try_lock() {
                Ok(mut vm) => {
                    vm.poll();
                    let power = self.wakers.get(vm.desktop()).map(|w| w.status().state.to_string());
                    vm.status(power.unwrap_or_else(|| "awake (never sleeps)".to_owned()))
                }
                Err(_) => {
                    HostedStatus { vm: name.clone(), state: "busy (moving)".to_owned(), ..HostedStatus::default() }
                }
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
            let vms: Vec<_> = lock(&self.vms).values().cloned().collect();
            let mut tenants = Vec::new();
            let mut present = Vec::new();
            for vm in &vms {
                let Ok(mut vm) = vm.try_lock() else { continue };
                vm.poll();
                present.push(vm.name().to_owned());
                if !vm.is_running() {
                    continue;
                }
                tenants.push(Tenant { vm: vm.name().to_owned(), expected: vm.expected(), resident: vm.resident() });
                // A VM pulls its working set in its first seconds here:
                // the rate counts from one window after its arrival.
                let rate =
                    if vm.age() < window { None } else { rates.push(vm.name(), Instant::now(), vm.fetched(), window) };
                if let (Some(rate), Some(limit)) = (rate, self.config.max_fetch_mib_per_sec) {
                    if rate > limit * 1024.0 * 1024.0 {
                        let reason = format!(
                            "it fetched {:.1} MiB/s from its desktop over the last {} s (limit {limit} MiB/s): it is not idle",
                            rate / (1024.0 * 1024.0),
                            window.as_secs()
                        );
                        self.ask_home(vm.name(), vm.desktop_control(), reason);
                    }
                }
            }
            let names: Vec<&str> = present.iter().map(String::as_str).collect();
            rates.retain(&names);
            let capacity = self.config.capacity_mib << 20;
            if let Some(victim) = capacity::evict(capacity, &tenants) {
                let control = vms.iter().find_map(|v| {
                    v.try_lock().ok().filter(|v| v.name() == victim.vm).map(|v| v.desktop_control().to_owned())
                });
                if let Some(control) = control {
                    let reason = format!(
                        "the server is short of memory and {} grew most beyond its estimate ({} MiB held, {} MiB expected)",
                        victim.vm,
                        victim.resident >> 20,
                        victim.expected >> 20
                    );
                    self.ask_home(&victim.vm, &control, reason);
                }
            }
        }
    }

    /// Asks `vm`'s desktop daemon at `control` to take it back (at most once
    /// a minute), on a thread of its own.
    fn ask_home(self: &Arc<Self>, vm: &str, control: &str, reason: String) {
        {
            let mut asked = lock(&self.asked);
            if asked.get(vm).is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER) {
                return;
            }
            asked.insert(vm.to_owned(), Instant::now());
        }
        tracing::info!(vm = %vm, "asking its desktop to take it back: {reason}");
        let (me, vm, control) = (Arc::clone(self), vm.to_owned(), control.to_owned());
        std::thread::spawn(move || {
            let hello = ControlHello::Server(me.config.name.clone()).encode_body();
            let asked = Channel::connect(&control, &me.key, &hello, CONTROL_TIMEOUT).and_then(|(mut channel, _)| {
                channel.send(&Control::PleaseReintegrate { vm: vm.clone(), reason }.encode_body())?;
                channel.recv()
            });
            if let Err(e) = asked {
                tracing::warn!(vm = %vm, "its desktop did not take the request: {}", wire::chain(&e));
            }
        });
    }
}

/// A reservation made on one connection, released when the connection ends
/// without consolidating.
struct Reservation<'a> {
    daemon: &'a ServerDaemon,
    vm: Option<String>,
}

impl Reservation<'_> {
    fn set(&mut self, vm: String) {
        if let Some(old) = self.vm.replace(vm) {
            if self.vm.as_deref() != Some(old.as_str()) {
                lock(&self.daemon.reservations).remove(&old);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(vm) = &self.vm {
            lock(&self.daemon.reservations).remove(vm);
        }
    }
}

/// Detaches memtap mounts a dead daemon left under `dir` and removes its
/// run files; nothing there is state worth keeping.
fn clear_stale_run_dir(dir: &std::path::Path) {
    for vm in list_dir(dir) {
        let mount = dir.join(&vm).join("ram");
        let _ = std::process::Command::new("umount").arg("-l").arg(&mount).output();
        if let Err(e) = std::fs::remove_dir_all(dir.join(&vm)) {
            tracing::warn!("cannot clear {}: {e}", dir.join(&vm).display());
        }
    }
}

fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let names: BTreeSet<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.into_iter().collect()
}
