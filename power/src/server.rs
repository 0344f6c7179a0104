//! The server's share: the consolidation server's energy split across the
//! VMs it hosts, after seed 001 (Stoess, Lang and Bellosa's per-VM energy
//! accounting).
//!
//! # Why split it so
//!
//! Seed 001 breaks a device's energy into *idle* consumption, which the
//! device draws whether or not anyone uses it, and *active* consumption,
//! which its clients cause by using it. The server here is the device and
//! the hosted VMs are its clients:
//!
//! - **Active** energy (what the server draws above idle) is charged by CPU
//!   time: the VM's QEMU and its storage process (memtap and cownetdisk),
//!   the work the server does on the VM's behalf. Modelled from a profile,
//!   a CPU-second costs `(busy_watts - idle_watts) / cpus` joules (power
//!   linear in utilisation); measured (RAPL), the interval's joules above
//!   the idle floor are split in proportion to each VM's share of the
//!   host's busy CPU time, so work of other processes is not charged to
//!   the VMs.
//! - **Idle** energy is charged by memory: memory is what a partial VM
//!   occupies while it does nothing, and what limits how many fit. Each VM
//!   pays `idle_watts` times its share of the hosted VMs' memory.
//! - **Network** energy is charged by the bytes moved for the VM (fetched
//!   from its desktop and sent back), at a cost per byte.
//!
//! The idle split is why a lone VM never pays off: with the paper's
//! 150.7 W server, one VM pays all of it, more than any desktop saves by
//! sleeping (59.45 W for Table 1). [`ServerProfile::break_even_vms`] says
//! how many must share the server before each one's idle share is below
//! what its desktop saves.
//!
//! Like the rest of this crate the arithmetic reads no clock and no file:
//! the server daemon samples CPU times, memory, bytes and (where it has
//! it) RAPL, and hands the figures of each interval to [`split`].

use serde::{Deserialize, Serialize};

use crate::{PowerError, PowerProfile};

/// Bytes a link of one Gbit/s moves in a second.
const BYTES_PER_GBIT: f64 = 1e9 / 8.0;

/// The server's power: idle and at full load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerProfile {
    /// Power with nothing to do, watts.
    pub idle_watts: f64,
    /// Power with every CPU busy, watts.
    pub busy_watts: f64,
}

impl ServerProfile {
    /// The paper's server (a Sun Fire X2250, two quad-core Xeons): 150.7 W
    /// idle, as measured there. The paper gives no full-load figure;
    /// 250 W is an assumption for a two-socket server of that class (two
    /// 80 W processors above their idle draw), to be replaced by a
    /// measurement of the real server.
    pub const PAPER: ServerProfile = ServerProfile { idle_watts: 150.70, busy_watts: 250.0 };

    /// Checks both powers are positive and finite and that full load draws
    /// at least idle power; `origin` names the profile in the error.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidField`] or [`PowerError::BusyBelowIdle`].
    pub fn validate(&self, origin: &str) -> Result<(), PowerError> {
        for (field, value) in [("idle_watts", self.idle_watts), ("busy_watts", self.busy_watts)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(PowerError::InvalidField { origin: origin.to_owned(), field, value });
            }
        }
        if self.busy_watts < self.idle_watts {
            return Err(PowerError::BusyBelowIdle {
                origin: origin.to_owned(),
                idle_watts: self.idle_watts,
                busy_watts: self.busy_watts,
            });
        }
        Ok(())
    }

    /// The joules one CPU-second costs above idle on a host of `cpus`
    /// CPUs: `(busy_watts - idle_watts) / cpus`.
    pub fn joules_per_cpu_second(&self, cpus: usize) -> f64 {
        (self.busy_watts - self.idle_watts) / cpus.max(1) as f64
    }

    /// How many VMs must share the server before each pays off: the
    /// smallest `n` with `idle_watts / n` below what a desktop of
    /// `desktop` saves while asleep (`P_i - P_s`). Their CPU and network
    /// shares come on top, so it is a lower bound. 3 for the paper's
    /// 150.7 W and Table 1 (150.7 / 59.45 = 2.53).
    pub fn break_even_vms(&self, desktop: &PowerProfile) -> u32 {
        let saving = desktop.idle_watts - desktop.sleep_watts;
        if saving <= 0.0 {
            return u32::MAX;
        }
        // Saturating float-to-int conversion; a huge ratio means "never".
        ((self.idle_watts / saving).floor() as u32).saturating_add(1)
    }
}

impl Default for ServerProfile {
    /// [`ServerProfile::PAPER`].
    fn default() -> ServerProfile {
        ServerProfile::PAPER
    }
}

/// The joules per byte of a network that draws `watts_per_gbit` watts for
/// each Gbit/s it carries.
pub fn joules_per_byte(watts_per_gbit: f64) -> f64 {
    watts_per_gbit / BYTES_PER_GBIT
}

/// What one VM used over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VmUsage {
    /// CPU seconds of its QEMU and its storage process.
    pub cpu_secs: f64,
    /// Memory it holds (or is expected to hold) on the server, bytes.
    pub memory_bytes: u64,
    /// Bytes moved between the server and its desktop.
    pub network_bytes: u64,
}

/// Where the interval's active energy comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActiveEnergy {
    /// Modelled from a profile: each CPU-second costs this many joules
    /// ([`ServerProfile::joules_per_cpu_second`]).
    PerCpuSecond(f64),
    /// Measured (RAPL): the interval's joules above the idle floor, and the
    /// busy CPU seconds of the whole host they paid for.
    Measured {
        /// Joules above idle.
        joules: f64,
        /// The host's busy CPU seconds in the interval.
        host_cpu_secs: f64,
    },
}

/// One interval of the server, to split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The idle energy of the interval: idle power times its length, joules.
    pub idle_joules: f64,
    /// Its active energy.
    pub active: ActiveEnergy,
    /// What a byte on the network costs, joules.
    pub network_joules_per_byte: f64,
}

/// A VM's share of the server, joules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerShare {
    /// Of the energy above idle, by CPU time.
    pub active_joules: f64,
    /// Of the idle energy, by memory.
    pub idle_joules: f64,
    /// Of the network's, by bytes.
    pub network_joules: f64,
}

impl ServerShare {
    /// The three together.
    pub fn total(&self) -> f64 {
        self.active_joules + self.idle_joules + self.network_joules
    }

    /// Adds `other` to this one.
    pub fn add(&mut self, other: &ServerShare) {
        self.active_joules += other.active_joules;
        self.idle_joules += other.idle_joules;
        self.network_joules += other.network_joules;
    }
}

/// Splits `interval` across the VMs that used it: one share per entry of
/// `vms`, in order. The idle energy goes by memory (equally when none
/// holds any); measured active energy goes by each VM's part of the
/// host's busy CPU time (never more than all of it, even if the host's
/// count lags the VMs').
pub fn split(interval: &Interval, vms: &[VmUsage]) -> Vec<ServerShare> {
    let memory: u64 = vms.iter().map(|vm| vm.memory_bytes).sum();
    let cpu: f64 = vms.iter().map(|vm| vm.cpu_secs).sum();
    vms.iter()
        .map(|vm| {
            let active_joules = match interval.active {
                ActiveEnergy::PerCpuSecond(joules) => vm.cpu_secs * joules,
                ActiveEnergy::Measured { joules, host_cpu_secs } => {
                    let busy = host_cpu_secs.max(cpu);
                    if busy > 0.0 {
                        joules * vm.cpu_secs / busy
                    } else {
                        0.0
                    }
                }
            };
            let idle_joules = if memory > 0 {
                interval.idle_joules * vm.memory_bytes as f64 / memory as f64
            } else {
                interval.idle_joules / vms.len() as f64
            };
            let network_joules = vm.network_bytes as f64 * interval.network_joules_per_byte;
            ServerShare { active_joules, idle_joules, network_joules }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_papers_server_pays_off_from_three_vms() {
        let server = ServerProfile::PAPER;
        assert_eq!(server.break_even_vms(&PowerProfile::TABLE_1), 3);
        // At 2 VMs each pays 75.35 W of idle, more than the 59.45 W saved.
        assert!(server.idle_watts / 2.0 > PowerProfile::TABLE_1.idle_watts - PowerProfile::TABLE_1.sleep_watts);
        let small = ServerProfile { idle_watts: 50.0, busy_watts: 80.0 };
        assert_eq!(small.break_even_vms(&PowerProfile::TABLE_1), 1);
        let exact = ServerProfile { idle_watts: 2.0 * 59.45, busy_watts: 200.0 };
        assert_eq!(exact.break_even_vms(&PowerProfile::TABLE_1), 3, "at exactly 2 shares it only breaks even");
    }

    #[test]
    fn idle_goes_by_memory_active_by_cpu_network_by_bytes() {
        // 10 s of a 100 W idle, 300 W busy server with 4 CPUs:
        // 1000 J idle; a CPU-second costs (300 - 100) / 4 = 50 J.
        let server = ServerProfile { idle_watts: 100.0, busy_watts: 300.0 };
        let interval = Interval {
            idle_joules: server.idle_watts * 10.0,
            active: ActiveEnergy::PerCpuSecond(server.joules_per_cpu_second(4)),
            network_joules_per_byte: joules_per_byte(8.0),
        };
        let vms = [
            VmUsage { cpu_secs: 2.0, memory_bytes: 300 * MIB, network_bytes: 125_000_000 },
            VmUsage { cpu_secs: 0.5, memory_bytes: 100 * MIB, network_bytes: 0 },
        ];
        let shares = split(&interval, &vms);
        // Idle: 3/4 and 1/4 of 1000 J.
        assert!(close(shares[0].idle_joules, 750.0) && close(shares[1].idle_joules, 250.0));
        // Active: 2 s and 0.5 s at 50 J.
        assert!(close(shares[0].active_joules, 100.0) && close(shares[1].active_joules, 25.0));
        // 125 MB is a second of a Gbit/s link: at 8 W per Gbit/s, 8 J.
        assert!(close(shares[0].network_joules, 8.0) && close(shares[1].network_joules, 0.0));
        assert!(close(shares[0].total(), 858.0));
    }

    #[test]
    fn measured_active_energy_goes_by_the_vms_part_of_the_host() {
        // 60 J above idle while the host was busy 4 CPU-seconds, 3 of them
        // the two VMs': they pay 45 J, 2:1.
        let interval = Interval {
            idle_joules: 0.0,
            active: ActiveEnergy::Measured { joules: 60.0, host_cpu_secs: 4.0 },
            network_joules_per_byte: 0.0,
        };
        let vms = [
            VmUsage { cpu_secs: 2.0, memory_bytes: MIB, network_bytes: 0 },
            VmUsage { cpu_secs: 1.0, memory_bytes: MIB, network_bytes: 0 },
        ];
        let shares = split(&interval, &vms);
        assert!(close(shares[0].active_joules, 30.0) && close(shares[1].active_joules, 15.0));
        // A host count that lags the VMs' never charges more than the whole.
        let lagging = Interval { active: ActiveEnergy::Measured { joules: 60.0, host_cpu_secs: 1.0 }, ..interval };
        let total: f64 = split(&lagging, &vms).iter().map(|s| s.active_joules).sum();
        assert!(close(total, 60.0));
    }

    #[test]
    fn vms_holding_nothing_share_idle_equally() {
        let interval =
            Interval { idle_joules: 90.0, active: ActiveEnergy::PerCpuSecond(1.0), network_joules_per_byte: 0.0 };
        let shares = split(&interval, &[VmUsage::default(); 3]);
        assert!(shares.iter().all(|s| close(s.idle_joules, 30.0)));
        assert!(split(&interval, &[]).is_empty());
    }

    #[test]
    fn a_profile_must_be_positive_and_busy_at_least_idle() {
        ServerProfile::PAPER.validate("t").unwrap();
        let zero = ServerProfile { idle_watts: 0.0, busy_watts: 1.0 };
        assert!(matches!(zero.validate("t"), Err(PowerError::InvalidField { field: "idle_watts", .. })));
        let low = ServerProfile { idle_watts: 150.0, busy_watts: 100.0 };
        let err = low.validate("server.toml [energy]").unwrap_err().to_string();
        assert!(err.contains("server.toml [energy]") && err.contains("busy_watts 100"), "{err}");
    }
}
