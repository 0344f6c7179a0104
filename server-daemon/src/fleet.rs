//! This server in a fleet (`[fleet]`): its record in etcd, kept alive
//! under a lease, with its room and its load as the watcher last measured
//! it. Without `[fleet]` none of this runs.
//!
//! The load is measured by the watcher every few seconds ([`LoadMeter`]):
//! memory is what the hosted VMs' working sets claim (the figure the
//! capacity check uses), CPU and fetch rates are the change of the VMs'
//! CPU time and fetched bytes since the last tick. The registration runs
//! on a thread of its own, so an etcd that does not answer never slows the
//! watcher or a move; the record then simply expires with its lease.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleet_registry::{Capacity, Claimed, EtcdClient, LeaseId, Load, Registration, ServerRecord};

use crate::config::{FleetConfig, ServerConfig};
use crate::energy::VmSample;
use crate::key::VmKey;

/// How long one request to an etcd member may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's load from the watcher's samples of its VMs.
#[derive(Debug, Default)]
pub struct LoadMeter {
    /// Each VM's last CPU time and fetch total.
    last: BTreeMap<VmKey, (Option<Duration>, u64)>,
    last_at: Option<Instant>,
    load: Load,
}

impl LoadMeter {
    /// Takes the samples of the running VMs at `now`.
    pub fn tick(&mut self, now: Instant, samples: &[VmSample]) {
        let elapsed = self.last_at.map(|at| now.duration_since(at).as_secs_f64()).filter(|&s| s > 0.0);
        let (mut cpu, mut fetched) = (0.0, 0u64);
        for sample in samples {
            if let Some((last_cpu, last_fetched)) = self.last.get(&sample.key) {
                if let (Some(now_cpu), Some(last_cpu)) = (sample.cpu, last_cpu) {
                    cpu += now_cpu.saturating_sub(*last_cpu).as_secs_f64();
                }
                fetched += sample.fetched_bytes.saturating_sub(*last_fetched);
            }
        }
        self.last = samples.iter().map(|s| (s.key.clone(), (s.cpu, s.fetched_bytes))).collect();
        self.last_at = Some(now);
        let memory: u64 = samples.iter().map(|s| s.memory_bytes).sum();
        self.load = Load {
            memory_mib: memory as f64 / (1024.0 * 1024.0),
            cpus: elapsed.map_or(0.0, |s| cpu / s),
            fetch_mib_per_sec: elapsed.map_or(0.0, |s| fetched as f64 / (1024.0 * 1024.0) / s),
            vms: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        };
    }

    /// The load at the last tick.
    pub fn load(&self) -> Load {
        self.load
    }
}

/// The server's part in a fleet: its registration and its load.
#[derive(Debug)]
pub struct Fleet {
    registration: Mutex<Registration>,
    /// The record without its load (filled at each refresh).
    record: ServerRecord,
    /// Written by the watcher, read by the registration.
    meter: Mutex<LoadMeter>,
    /// Set by [`Fleet::withdraw`], under the registration's lock: no
    /// refresh after it puts the record back.
    withdrawn: AtomicBool,
    /// Its drain mark as last read ([`fleet_registry::drain`]).
    draining: AtomicBool,
    /// The registration's lease and when its last renewal that worked was
    /// sent, copied after each refresh (the watchdog must not wait for a
    /// refresh that hangs on an absent etcd).
    renewal: Mutex<Option<(LeaseId, Instant)>>,
    /// The lease's TTL.
    ttl: Duration,
    /// The VMs this server holds in etcd: the lease each claim is under,
    /// and its fencing token.
    claims: Mutex<BTreeMap<VmKey, (LeaseId, u64)>>,
    /// VMs an earlier daemon left running, whose claims this one takes
    /// over once its lease is live ([`Fleet::adopt`]).
    adopted: Mutex<std::collections::BTreeSet<VmKey>>,
    /// Reads the drain mark.
    client: EtcdClient,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("a fleet lock was poisoned: a thread panicked holding it")
}

impl Fleet {
    /// The fleet part of `config`'s server, as `[fleet]` describes it.
    pub fn new(config: &ServerConfig, fleet: &FleetConfig) -> Fleet {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let record = ServerRecord {
            name: config.name.clone(),
            address: fleet.advertise.unwrap_or(config.listen),
            capacity: Capacity {
                memory_mib: config.capacity_mib as f64,
                cpus: cpus as f64,
                network_mib_per_sec: fleet.network_mib_per_sec,
            },
            load: Load::default(),
            draining: false,
        };
        let client = fleet.etcd.client(ETCD_TIMEOUT);
        let registration =
            Registration::new(fleet.etcd.client(ETCD_TIMEOUT), Duration::from_secs(fleet.lease_ttl_secs));
        Fleet {
            registration: Mutex::new(registration),
            record,
            meter: Mutex::new(LoadMeter::default()),
            withdrawn: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            client,
            renewal: Mutex::new(None),
            ttl: Duration::from_secs(fleet.lease_ttl_secs),
            claims: Mutex::new(BTreeMap::new()),
            adopted: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// The watcher's samples of the running VMs at `now`.
    pub fn tick(&self, now: Instant, samples: &[VmSample]) {
        lock(&self.meter).tick(now, samples);
    }

    /// Whether this server is being drained (`jettison drain`), as last read.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Reads this server's drain mark; an etcd that does not answer
    /// leaves the last reading.
    fn read_drain_mark(&self) {
        match fleet_registry::is_draining(&self.client, &self.record.name) {
            Ok(now) => {
                if self.draining.swap(now, Ordering::SeqCst) != now {
                    if now {
                        tracing::warn!(
                            "this server is being drained: it takes no new VM and asks its VMs' desktops to move \
                             them (`jettison drain --undo {}` ends it)",
                            self.record.name
                        );
                    } else {
                        tracing::info!("the drain of this server has ended: it takes VMs again");
                    }
                }
            }
            Err(e) => tracing::debug!("cannot read the drain mark: {}", wire::chain(&e)),
        }
    }

    /// Registers and refreshes the record until the process ends or
    /// [`Fleet::withdraw`], reading the drain mark before each refresh,
    /// logging each failure once and each recovery. The record's count of
    /// VMs is `held()` at the time of writing (the VMs hosted, moving or
    /// reserved), so that a drained server says it is empty only once it
    /// is: the watcher's figures may be a tick old.
    pub fn register(&self, held: impl Fn() -> u32) {
        let every = lock(&self.registration).refresh_every();
        let mut failing = false;
        loop {
            self.read_drain_mark();
            let load = Load { vms: held(), ..lock(&self.meter).load() };
            let record = ServerRecord { load, draining: self.draining(), ..self.record.clone() };
            let mut registration = lock(&self.registration);
            if self.withdrawn.load(Ordering::SeqCst) {
                return;
            }
            let refreshed = registration.refresh(&record);
            *lock(&self.renewal) = registration.lease();
            drop(registration);
            match refreshed {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(key = %record.key(), "registered in the fleet again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(
                        "cannot register in the fleet ({}); desktops will not choose this server until it can",
                        wire::chain(&e)
                    );
                }
                Err(_) => {}
            }
            std::thread::sleep(every);
        }
    }

    /// The lease, if renewed within half its TTL: it cannot have expired
    /// before another half has passed.
    fn live_lease(&self) -> Option<LeaseId> {
        lock(&self.renewal).filter(|&(_, sent)| self.fresh(sent)).map(|(lease, _)| lease)
    }

    /// Whether a renewal sent at `sent` keeps the lease alive for at least
    /// another half TTL.
    fn fresh(&self, sent: Instant) -> bool {
        sent.elapsed() < self.ttl / 2
    }

    /// Claims `key` in etcd for a new stay here ([`fleet_registry::claim`]);
    /// returns the stay's fencing token.
    ///
    /// # Errors
    /// [`ClaimError`]: the lease is not live, another server holds the VM,
    /// or etcd does not answer.
    pub fn claim(&self, key: &VmKey) -> Result<u64, ClaimError> {
        let lease = self.live_lease().ok_or(ClaimError::NoLease { ttl_secs: self.ttl.as_secs() })?;
        let claimed = fleet_registry::claim_vm(&self.client, &key.desktop, &key.vm, &self.record.name, lease)
            .map_err(|e| ClaimError::Etcd(Box::new(e)))?;
        match claimed {
            Claimed::Token(token) => {
                lock(&self.claims).insert(key.clone(), (lease, token));
                tracing::info!(desktop = %key.desktop, vm = %key.vm, token, "holds the VM in etcd");
                Ok(token)
            }
            Claimed::HeldBy(server) => Err(ClaimError::HeldBy(server)),
            Claimed::Gone => Err(ClaimError::HeldBy(String::from("nobody (it vanished as it was claimed)"))),
        }
    }

    /// A VM an earlier daemon left running: its claim is taken over under
    /// this daemon's lease at the first [`Fleet::fence`] with a live lease;
    /// frozen until then, lost if the claim is gone.
    pub fn adopt(&self, key: &VmKey) {
        lock(&self.adopted).insert(key.clone());
    }

    /// Takes over this server's claim of `key` under the current lease (a
    /// restarted daemon taking its VMs over); false when the claim is gone
    /// or another's, or etcd cannot say: the VM must then stay frozen.
    fn reclaim(&self, key: &VmKey) -> bool {
        let Some(lease) = self.live_lease() else { return false };
        match fleet_registry::reclaim_vm(&self.client, &key.desktop, &key.vm, &self.record.name, lease) {
            Ok(Claimed::Token(token)) => {
                lock(&self.claims).insert(key.clone(), (lease, token));
                true
            }
            Ok(other) => {
                tracing::warn!(desktop = %key.desktop, vm = %key.vm, "its claim in etcd is lost ({other:?})");
                false
            }
            Err(e) => {
                tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot take its claim in etcd over: {}", wire::chain(&e));
                false
            }
        }
    }

    /// Gives up the claim of `key` (it went home, or never came).
    pub fn release(&self, key: &VmKey) {
        let Some((_, token)) = lock(&self.claims).remove(key) else { return };
        if let Err(e) = fleet_registry::release_vm(&self.client, &key.desktop, &key.vm, token) {
            tracing::warn!(desktop = %key.desktop, vm = %key.vm, "cannot release its claim in etcd ({}); it ends with the lease", wire::chain(&e));
        }
    }

    /// Whether `key`'s QEMU may run now ([`Fence`]).
    pub fn fence(&self, key: &VmKey) -> Fence {
        if lock(&self.adopted).contains(key) {
            if self.live_lease().is_none() {
                return Fence::Freeze;
            }
            lock(&self.adopted).remove(key);
            if !self.reclaim(key) {
                return Fence::Lost;
            }
        }
        let Some((lease, _)) = lock(&self.claims).get(key).copied() else { return Fence::Lost };
        match *lock(&self.renewal) {
            Some((now, sent)) if now == lease => {
                if self.fresh(sent) {
                    Fence::Run
                } else {
                    Fence::Freeze
                }
            }
            // The claim's lease is gone (a new one, or none).
            _ => Fence::Lost,
        }
    }

    /// Takes the record out of the registry at once (a clean stop); a
    /// crash leaves it to expire with its lease.
    pub fn withdraw(&self) {
        let mut registration = lock(&self.registration);
        self.withdrawn.store(true, Ordering::SeqCst);
        if let Err(e) = registration.withdraw() {
            tracing::warn!("cannot withdraw from the fleet ({}); the record expires with its lease", wire::chain(&e));
        }
    }
}

/// What the fence allows a hosted VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Its claim is held under a lease renewed within half its TTL.
    Run,
    /// The lease was not renewed for half its TTL: frozen until it is.
    Freeze,
    /// Its claim is gone (the lease expired, or it was never held): frozen
    /// for good; only its desktop asking for it back thaws it, to stop it
    /// and send it home.
    Lost,
}

/// Why a VM cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The lease is not live.
    #[error(
        "this server has not renewed its lease in etcd within {} s: it takes no VM until it can (is etcd reachable?)",
        ttl_secs / 2
    )]
    NoLease {
        /// The lease's TTL.
        ttl_secs: u64,
    },
    /// Another server holds it.
    #[error("server {0} holds it in etcd: it runs there")]
    HeldBy(String),
    /// etcd does not answer.
    #[error("cannot claim it in etcd")]
    Etcd(#[source] Box<fleet_registry::EtcdError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(vm: &str, cpu_ms: u64, fetched: u64, memory: u64) -> VmSample {
        VmSample {
            key: VmKey { desktop: "desk".parse().unwrap(), vm: vm.parse().unwrap() },
            cpu: Some(Duration::from_millis(cpu_ms)),
            memory_bytes: memory,
            fetched_bytes: fetched,
            desktop_sleeps: true,
        }
    }

    #[test]
    fn the_load_is_memory_held_and_rates_since_the_last_tick() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::default();
        meter.tick(t0, &[sample("a", 1000, 0, 100 << 20)]);
        assert_eq!(meter.load(), Load { memory_mib: 100.0, cpus: 0.0, fetch_mib_per_sec: 0.0, vms: 1 });
        // In 2 s, a used 1 s of CPU and fetched 4 MiB; b arrived (no rate yet).
        meter.tick(
            t0 + Duration::from_secs(2),
            &[sample("a", 2000, 4 << 20, 100 << 20), sample("b", 500, 1 << 20, 50 << 20)],
        );
        let load = meter.load();
        assert_eq!((load.memory_mib, load.vms), (150.0, 2));
        assert!((load.cpus - 0.5).abs() < 1e-9 && (load.fetch_mib_per_sec - 2.0).abs() < 1e-9, "{load:?}");
        // Every VM gone: nothing held.
        meter.tick(t0 + Duration::from_secs(4), &[]);
        assert_eq!(meter.load(), Load::default());
    }
}
