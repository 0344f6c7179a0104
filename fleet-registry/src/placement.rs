//! Which server takes a VM: a pure function of the servers' registered
//! room and load and the VM's expected demand.
//!
//! Three rules, in this order:
//!
//! 1. **No hot spots.** A server is not chosen if, with the VM, any of its
//!    resources (memory for working sets, CPU, network for fetches) would
//!    be above the high-water mark ([`Policy::high_water`], a fraction of
//!    the resource). Memory beyond 100% never fits, whatever the mark.
//! 2. **Pack.** A server that already hosts VMs is preferred to one that
//!    hosts none, so that a spare server stays spare and can sleep; an
//!    empty server is woken only when no busy one can take the VM.
//! 3. **Fill evenly.** Among the servers of the preferred kind, the one
//!    with the highest *balanced fill* after placement is chosen:
//!    `mean(u) - spread(u)`, where `u` are the server's per-resource
//!    utilisations and `spread` is their standard deviation. The mean
//!    term packs (the most-loaded server that still fits wins); the spread
//!    term keeps the resources even, so a memory-heavy VM goes where
//!    memory is the least-used resource and no resource runs out while the
//!    others sit idle.
//!
//! ## Why the spread and not the papers' skewness
//!
//! Seeds 000 and 003 (Xiao et al.'s scheme) measure unevenness as
//! *skewness*, `sqrt(sum((u_i / mean(u) - 1)^2))`. It divides by the mean,
//! so it is scale-free: a nearly idle server at (1%, 0.1%, 0%) is as
//! "skewed" as a loaded one at (90%, 9%, 0%), and a server with nothing on
//! it has no defined skewness at all. For placement that is the wrong way
//! round: unevenness matters in proportion to the capacity it strands, and
//! a server that is nearly empty strands nothing. The standard deviation of
//! the utilisations is in the same unit as the utilisations, so it can be
//! weighed against the fill directly (one percentage point of spread
//! costs as much as one point of mean fill), it is zero for an empty
//! server, and it ranks loaded servers the same way skewness does when
//! their means are equal (skewness is the spread divided by the mean,
//! times `sqrt(n)`).

use std::fmt;

use crate::record::{Capacity, Load, ServerRecord};

/// The resources the policy keeps even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Memory for working sets.
    Memory,
    /// CPU time.
    Cpu,
    /// Network for fetches from desktops.
    Network,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Memory => "memory",
            Resource::Cpu => "CPU",
            Resource::Network => "network",
        })
    }
}

/// What a VM is expected to need on a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Its working set, MiB.
    pub memory_mib: f64,
    /// CPUs it keeps busy.
    pub cpus: f64,
    /// What it fetches from its desktop, MiB/s.
    pub fetch_mib_per_sec: f64,
}

impl Demand {
    /// An idle desktop VM as the paper measured them: the median working
    /// set (157.87 MiB), and the mean memory moved to the server over a
    /// stay (242.23 MiB) spread over the 67-minute idle periods it
    /// reported, as the fetch rate; `cpus`: what its CPU may be (the idle
    /// check's limit it passed). A desktop knows no better before the VM
    /// has been on a server: the server's own estimate comes from its
    /// history of the VM, at the reservation.
    pub fn idle_vm(cpus: f64) -> Demand {
        Demand { memory_mib: 157.87, cpus, fetch_mib_per_sec: 242.23 / (67.0 * 60.0) }
    }
}

/// The policy's one setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The fraction of any resource above which a server is a hot spot
    /// (0.9: 90%).
    pub high_water: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { high_water: 0.9 }
    }
}

/// Why a server was not chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Unsuitable {
    /// With the VM, `resource` would be at `utilisation` (a fraction),
    /// above the high-water mark `high_water`.
    HotSpot {
        /// The resource.
        resource: Resource,
        /// Its utilisation with the VM.
        utilisation: f64,
        /// The mark.
        high_water: f64,
    },
    /// It is being drained (`jettison drain`).
    Draining,
}

impl fmt::Display for Unsuitable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsuitable::HotSpot { resource, utilisation, high_water } => write!(
                f,
                "its {resource} would be {:.0}% used with the VM, above the {:.0}% high-water mark",
                utilisation * 100.0,
                high_water * 100.0
            ),
            Unsuitable::Draining => f.write_str("it is being drained (`jettison drain --undo` ends that)"),
        }
    }
}

/// No server can take the VM: each one and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "no server of the fleet can take a VM expected to need {:.1} MiB: {}; the VM stays on its desktop \
     (add a server to the fleet or raise its capacity)",
    demand.memory_mib,
    if reasons.is_empty() { "none is registered".to_owned() }
    else { reasons.iter().map(|(name, why)| format!("{name}: {why}")).collect::<Vec<_>>().join("; ") }
)]
pub struct NoServer {
    /// The VM's demand.
    pub demand: Demand,
    /// Each server considered and why it was not chosen.
    pub reasons: Vec<(String, Unsuitable)>,
}

/// Per-resource utilisation of `capacity` under `load` plus `demand`.
fn utilisation(capacity: &Capacity, load: &Load, demand: &Demand) -> [(Resource, f64); 3] {
    [
        (Resource::Memory, (load.memory_mib + demand.memory_mib) / capacity.memory_mib),
        (Resource::Cpu, (load.cpus + demand.cpus) / capacity.cpus),
        (Resource::Network, (load.fetch_mib_per_sec + demand.fetch_mib_per_sec) / capacity.network_mib_per_sec),
    ]
}

/// The standard deviation of `u`: how uneven the resources' use is, in
/// the utilisations' own unit (see the module doc for why not skewness).
pub fn spread(u: &[f64]) -> f64 {
    if u.is_empty() {
        return 0.0;
    }
    let n = u.len() as f64;
    let mean = u.iter().sum::<f64>() / n;
    (u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// How well a server is filled, evenly, with utilisations `u`: their mean
/// minus their spread. Higher is better.
pub fn balanced_fill(u: &[f64]) -> f64 {
    if u.is_empty() {
        return 0.0;
    }
    u.iter().sum::<f64>() / u.len() as f64 - spread(u)
}

impl Policy {
    /// Whether `server` can take `demand`, and its balanced fill with it.
    ///
    /// # Errors
    /// [`Unsuitable`] with the first resource over the mark.
    pub fn judge(&self, server: &ServerRecord, demand: &Demand) -> Result<f64, Unsuitable> {
        if server.draining {
            return Err(Unsuitable::Draining);
        }
        let u = utilisation(&server.capacity, &server.load, demand);
        for (resource, utilisation) in u {
            let limit = if resource == Resource::Memory { self.high_water.min(1.0) } else { self.high_water };
            if utilisation > limit {
                return Err(Unsuitable::HotSpot { resource, utilisation, high_water: limit });
            }
        }
        Ok(balanced_fill(&u.map(|(_, x)| x)))
    }

    /// The server to take `demand` among `servers` (see the module doc).
    ///
    /// # Errors
    /// [`NoServer`] with each server's reason.
    pub fn choose<'a>(&self, servers: &'a [ServerRecord], demand: &Demand) -> Result<&'a ServerRecord, NoServer> {
        let mut reasons = Vec::new();
        let mut best: Option<(bool, f64, &ServerRecord)> = None;
        for server in servers {
            match self.judge(server, demand) {
                Ok(fill) => {
                    let busy = server.load.vms > 0;
                    let better = match best {
                        None => true,
                        // Busy before empty; then the fuller, evenly; the
                        // name breaks ties, so every desktop agrees.
                        Some((b_busy, b_fill, b_server)) => (busy, fill, std::cmp::Reverse(&server.name))
                            .partial_cmp(&(b_busy, b_fill, std::cmp::Reverse(&b_server.name)))
                            .is_some_and(|o| o.is_gt()),
                    };
                    if better {
                        best = Some((busy, fill, server));
                    }
                }
                Err(why) => reasons.push((server.name.to_string(), why)),
            }
        }
        best.map(|(_, _, server)| server).ok_or(NoServer { demand: *demand, reasons })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, capacity_mib: f64, load: (f64, f64, f64), vms: u32) -> ServerRecord {
        ServerRecord {
            name: name.parse().unwrap(),
            address: "10.0.0.1:7400".parse().unwrap(),
            capacity: Capacity { memory_mib: capacity_mib, cpus: 4.0, network_mib_per_sec: 100.0 },
            load: Load { memory_mib: load.0, cpus: load.1, fetch_mib_per_sec: load.2, vms },
            draining: false,
        }
    }

    const SMALL: Demand = Demand { memory_mib: 160.0, cpus: 0.05, fetch_mib_per_sec: 0.1 };

    fn chosen(servers: &[ServerRecord], demand: &Demand) -> String {
        Policy::default().choose(servers, demand).unwrap().name.to_string()
    }

    #[test]
    fn packs_onto_the_most_loaded_server_that_fits() {
        let servers = [server("a", 4096.0, (1000.0, 1.0, 10.0), 5), server("b", 4096.0, (2000.0, 2.0, 20.0), 10)];
        assert_eq!(chosen(&servers, &SMALL), "b");
    }

    #[test]
    fn a_spare_server_stays_spare_while_a_busy_one_has_room() {
        // The empty server is bigger and would be evenly filled, but waking
        // it costs a server's idle power.
        let servers = [server("spare", 16384.0, (0.0, 0.0, 0.0), 0), server("busy", 4096.0, (500.0, 0.5, 5.0), 3)];
        assert_eq!(chosen(&servers, &SMALL), "busy");
        // Once the busy one is full, the spare one is woken.
        let full = [server("spare", 16384.0, (0.0, 0.0, 0.0), 0), server("busy", 4096.0, (3600.0, 0.5, 5.0), 20)];
        assert_eq!(chosen(&full, &SMALL), "spare");
    }

    #[test]
    fn a_draining_server_is_never_chosen() {
        let mut busy = server("busy", 4096.0, (1000.0, 1.0, 10.0), 5);
        busy.draining = true;
        let servers = [busy.clone(), server("spare", 4096.0, (0.0, 0.0, 0.0), 0)];
        assert_eq!(chosen(&servers, &SMALL), "spare", "packing would pick busy");
        let err = Policy::default().choose(&[busy], &SMALL).unwrap_err();
        assert_eq!(err.reasons, vec![("busy".to_owned(), Unsuitable::Draining)]);
        assert!(err.to_string().contains("busy: it is being drained"), "{err}");
    }

    #[test]
    fn a_server_above_the_high_water_mark_is_never_chosen() {
        // "cpu" is the fullest but its CPU would be at 95%.
        let servers = [server("cpu", 4096.0, (2000.0, 3.75, 10.0), 8), server("calm", 4096.0, (500.0, 0.5, 5.0), 2)];
        assert_eq!(chosen(&servers, &SMALL), "calm");
        // Memory over the mark too, and a network hot spot.
        let servers = [server("mem", 4096.0, (3600.0, 0.5, 5.0), 8), server("net", 4096.0, (500.0, 0.5, 95.0), 2)];
        let err = Policy::default().choose(&servers, &SMALL).unwrap_err();
        assert_eq!(err.reasons.len(), 2);
        let text = err.to_string();
        assert!(text.contains("mem: its memory would be 92% used") && text.contains("net: its network"), "{text}");
        assert!(text.contains("160.0 MiB") && text.contains("stays on its desktop"), "{text}");
    }

    #[test]
    fn memory_never_overcommits_whatever_the_mark() {
        let lax = Policy { high_water: 1.5 };
        let servers = [server("a", 1024.0, (900.0, 0.0, 0.0), 4)];
        assert!(matches!(
            lax.choose(&servers, &SMALL).unwrap_err().reasons[0].1,
            Unsuitable::HotSpot { resource: Resource::Memory, .. }
        ));
    }

    #[test]
    fn fills_resources_evenly() {
        // Both servers end at the same mean utilisation with the VM; a
        // memory-heavy VM goes where memory is the least-used resource.
        let heavy = Demand { memory_mib: 1024.0, cpus: 0.0, fetch_mib_per_sec: 0.0 };
        let mem_full = server("memfull", 4096.0, (2048.0, 1.0, 25.0), 4);
        let cpu_busy = server("cpubusy", 4096.0, (0.0, 2.0, 50.0), 4);
        let u = |s: &ServerRecord| utilisation(&s.capacity, &s.load, &heavy).map(|(_, x)| x);
        let mean = |u: [f64; 3]| u.iter().sum::<f64>() / 3.0;
        assert!((mean(u(&mem_full)) - mean(u(&cpu_busy))).abs() < 1e-9, "equal means: only evenness decides");
        assert!(spread(&u(&cpu_busy)) < spread(&u(&mem_full)));
        assert_eq!(chosen(&[mem_full, cpu_busy], &heavy), "cpubusy");
    }

    #[test]
    fn the_spread_is_zero_when_even_and_for_an_empty_server() {
        assert_eq!(spread(&[0.0, 0.0, 0.0]), 0.0);
        assert_eq!(spread(&[0.5, 0.5, 0.5]), 0.0);
        assert!((spread(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!((balanced_fill(&[0.6, 0.2, 0.4]) - (0.4 - (0.08f64 / 3.0).sqrt())).abs() < 1e-12);
    }

    #[test]
    fn no_server_is_a_clear_refusal_and_ties_go_by_name() {
        let err = Policy::default().choose(&[], &SMALL).unwrap_err();
        assert!(err.to_string().contains("none is registered"), "{err}");
        let twins = [server("b", 4096.0, (100.0, 0.1, 1.0), 1), server("a", 4096.0, (100.0, 0.1, 1.0), 1)];
        assert_eq!(chosen(&twins, &SMALL), "a");
    }
}
