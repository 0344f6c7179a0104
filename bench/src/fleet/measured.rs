//! The figures the fleet simulator draws on, in one table, each with where
//! it comes from: this project's measurements (`bench/RESULTS.md`, the
//! recorded traces in `bench/traces/`) where there is one, the paper's
//! where there is none, marked so.

use std::path::{Path, PathBuf};

/// Bytes in a MiB.
pub const MIB: f64 = 1_048_576.0;
/// Bytes in a GiB.
pub const GIB: f64 = 1_073_741_824.0;

/// The paper's figures the simulator is compared with (Bila et al.,
/// EuroSys 2012, section 6), or takes where this project measured none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperFigures {
    /// Effective throughput between its desktops and server, bits/s.
    pub link_bits_per_sec: f64,
    /// Bytes of every full migration in its simulation, each way: exactly
    /// the VM's 4 GiB.
    pub full_migration_bytes: f64,
    /// Mean idle working set of its 4 GiB desktop VMs, MiB.
    pub working_set_mean_mib: f64,
    /// Its standard deviation, MiB.
    pub working_set_sd_mib: f64,
    /// Partial VMs one 16 GiB server holds.
    pub partial_vms_per_server: u32,
    /// Full (4 GiB) VMs one 16 GiB server holds.
    pub full_vms_per_server: u32,
    /// Partial migration's energy savings against full migration's, at 10
    /// and at 500 desktops (5 min timeout), percent.
    pub partial_over_full_energy_percent: (f64, f64),
    /// Full migration's mean reintegration latency at 100 desktops, s.
    pub full_latency_secs_at_100: f64,
    /// Full migration's network utilisation at 100 desktops, percent.
    pub full_network_percent_at_100: f64,
    /// Share of a weekday the VMs spend on the server with a 5 min
    /// timeout, percent.
    pub on_server_percent: f64,
    /// Savings per desktop per year, USD: partial, full.
    pub usd_per_desktop_year: (f64, f64),
    /// The electricity price of its cost figures, USD per kWh.
    pub usd_per_kwh: f64,
}

/// The paper's figures.
pub const PAPER: PaperFigures = PaperFigures {
    link_bits_per_sec: 813.44e6,
    full_migration_bytes: 4.0 * GIB,
    working_set_mean_mib: 165.63,
    working_set_sd_mib: 91.38,
    partial_vms_per_server: 98,
    full_vms_per_server: 4,
    partial_over_full_energy_percent: (85.0, 104.0),
    full_latency_secs_at_100: 151.0,
    full_network_percent_at_100: 65.0,
    on_server_percent: 76.0,
    usd_per_desktop_year: (37.35, 33.95),
    usd_per_kwh: 0.1058,
};

/// The figures of this project's own measurements the simulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredFigures {
    /// Payload throughput of the shared link, bits/s.
    pub link_bits_per_sec: f64,
    /// The desktop VMs' RAM, bytes.
    pub vm_ram_bytes: f64,
    /// Bytes a full (QEMU precopy) migration of a 4 GiB VM puts on the
    /// link, out to the server.
    pub full_out_bytes: f64,
    /// The time it took, seconds.
    pub full_out_secs: f64,
    /// Bytes of the full migration back to the desktop.
    pub full_back_bytes: f64,
    /// The time it took, seconds.
    pub full_back_secs: f64,
    /// Bytes of a partial consolidation: the descriptor.
    pub consolidation_bytes: f64,
    /// The consolidation's time, seconds.
    pub consolidation_secs: f64,
    /// Memory the VM fetched on demand in its stay: the distinct pages its
    /// faults' pivot windows span, bytes. It is also what the VM holds on
    /// the server.
    pub working_set_bytes: f64,
    /// Disk blocks it fetched, bytes.
    pub working_set_disk_bytes: f64,
    /// Bytes of a reintegration: dirty memory and disk and the stream.
    pub reintegration_bytes: f64,
    /// The reintegration's time, seconds.
    pub reintegration_secs: f64,
    /// The spread of working sets and dirty state from stay to stay, as a
    /// coefficient of variation (standard deviation over mean).
    pub spread_cv: f64,
    /// Memory of one consolidation server, bytes.
    pub server_memory_bytes: f64,
    /// The recorded fetch trace of a desktop's stay, replayed for the
    /// desktop's energy while its VM is away.
    pub desktop_trace: PathBuf,
}

impl MeasuredFigures {
    /// The figures as `bench/RESULTS.md` records them on 2026-12-01.
    pub fn ours() -> MeasuredFigures {
        MeasuredFigures {
            link_bits_per_sec: 950e6,
            vm_ram_bytes: 4.0 * GIB,
            full_out_bytes: 2614.6 * MIB,
            full_out_secs: 27.81,
            full_back_bytes: 2647.6 * MIB,
            full_back_secs: 24.41,
            consolidation_bytes: 4_969_481.0,
            consolidation_secs: 2.49,
            working_set_bytes: 143_233.0 * 4096.0,
            working_set_disk_bytes: 0.09 * MIB,
            reintegration_bytes: 137_157_887.0,
            reintegration_secs: 2.75,
            spread_cv: PAPER.working_set_sd_mib / PAPER.working_set_mean_mib,
            server_memory_bytes: 16.0 * GIB,
            desktop_trace: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/traces/desktop-guest-5min.csv.gz")),
        }
    }

    /// The time a transfer of `bytes` takes on the whole link, seconds.
    pub fn wire_secs(&self, bytes: f64) -> f64 {
        bytes * 8.0 / self.link_bits_per_sec
    }

    /// The part of a measured move's time that is not its bytes crossing
    /// the link (stopping the VM, saving, starting, the protocol's own
    /// pace): the measured time less the bytes at the link's rate, never
    /// below zero. It is paid whatever else shares the link.
    pub fn fixed_secs(&self, bytes: f64, measured_secs: f64) -> f64 {
        (measured_secs - self.wire_secs(bytes)).max(0.0)
    }

    /// Partial VMs of the median working set one server holds.
    pub fn partial_vms_per_server(&self) -> u32 {
        (self.server_memory_bytes / (self.working_set_bytes + self.working_set_disk_bytes)).floor() as u32
    }

    /// Full VMs one server holds.
    pub fn full_vms_per_server(&self) -> u32 {
        (self.server_memory_bytes / self.vm_ram_bytes).floor() as u32
    }

    /// The desktop's trace as printed: from the workspace when it is in
    /// this crate.
    fn trace_name(&self) -> PathBuf {
        self.desktop_trace
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .map_or_else(|_| self.desktop_trace.clone(), |inside| Path::new("bench").join(inside))
    }

    /// The table printed before the results: figure, value, source.
    pub fn rows(&self) -> Vec<[String; 3]> {
        let mib = |bytes: f64| format!("{:.1} MiB", bytes / MIB);
        let link_source = format!(
            "ours: raw TCP payload on the 1000 Mbit/s link of the migration benchmark (RESULTS.md, Migration against QEMU's own); paper {:.2} Mbit/s",
            PAPER.link_bits_per_sec / 1e6
        );
        let full_source = format!(
            "ours: QEMU precopy of the 4 GiB guest, 60% filled (RESULTS.md, Migration); paper simulated {} each way",
            mib(PAPER.full_migration_bytes)
        );
        let row = |name: &str, value: String, source: &str| [name.to_owned(), value, source.to_owned()];
        vec![
            row(
                "shared link",
                format!("{:.0} Mbit/s", self.link_bits_per_sec / 1e6),
                &link_source,
            ),
            row("VM RAM", mib(self.vm_ram_bytes), "paper's desktops (4 GiB); the migration benchmark's largest guest"),
            row(
                "full migration out",
                format!("{} in {:.2} s", mib(self.full_out_bytes), self.full_out_secs),
                &full_source,
            ),
            row(
                "full migration back",
                format!("{} in {:.2} s", mib(self.full_back_bytes), self.full_back_secs),
                "ours: the same, back to the desktop",
            ),
            row(
                "partial consolidation",
                format!("{:.0} bytes in {:.2} s", self.consolidation_bytes, self.consolidation_secs),
                "ours: the Debian desktop guest's descriptor (RESULTS.md, The Debian desktop guest)",
            ),
            row(
                "working set fetched / held",
                format!("{} memory + {} disk (median)", mib(self.working_set_bytes), mib(self.working_set_disk_bytes)),
                "ours: the desktop guest's trace, 143,233 distinct pages its pivot windows span (the fixed memtap fetches each once), 23 blocks; paper 165.63 MiB mean",
            ),
            row(
                "reintegration",
                format!("{:.0} bytes in {:.2} s (median)", self.reintegration_bytes, self.reintegration_secs),
                "ours: the desktop guest, 122 MiB dirty memory + 3.5 MiB disk; paper 114.68 + 6.81 MiB in 4.11 s",
            ),
            row(
                "spread between stays",
                format!("lognormal, cv {:.2}", self.spread_cv),
                "paper's (working set sd 91.38 / mean 165.63 MiB): we recorded one desktop stay, not a distribution",
            ),
            row(
                "server",
                format!(
                    "{} memory, {} full or {} partial VMs",
                    mib(self.server_memory_bytes),
                    self.full_vms_per_server(),
                    self.partial_vms_per_server()
                ),
                "paper's server (16 GiB, 150.7 W idle: power::server::ServerProfile::PAPER); VMs per server from our working set",
            ),
            row(
                "desktop while its VM is away",
                format!("{}, fixed 6 s wait, Table 1", self.trace_name().display()),
                "ours for the trace's 5.7 min, then power::trace's first-touch model (derived from the paper's savings); power::simulate replays it",
            ),
        ]
    }
}
