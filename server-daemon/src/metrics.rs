//! The server daemon's Prometheus metrics (`metrics_listen`): its moves,
//! each hosted VM's fetches and dirty state, and the desktops' wakes.
//!
//! A VM's series exist while the server hosts it and start from zero at
//! each stay (Prometheus' `rate` and `increase` take that as a counter
//! reset). The energy series are the server's ledger ([`crate::energy`]):
//! each VM's share of the server and its desktop's saving as the server
//! estimates it; the desktop's own ledger (`jettison power`) measures the
//! latter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use daemon_protocol::local::{ServerEnergy, VmEnergy};
use daemon_protocol::HostedStatus;
use metrics_endpoint::{Exposition, Histogram, Kind, MOVE_SECONDS_BOUNDS};
use remote_wakeup::WakeState;

/// What one hosted VM shows: its status and its storage's counters.
#[derive(Debug, Clone)]
pub(crate) struct VmFigures {
    pub status: HostedStatus,
    pub memory: memtap::RamStats,
    pub disk: cownetdisk::DiskStats,
}

/// The daemon's own counters, since it started.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    consolidations: Histogram,
    reintegrations: Histogram,
    sent_home_bytes: AtomicU64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            consolidations: Histogram::new(MOVE_SECONDS_BOUNDS),
            reintegrations: Histogram::new(MOVE_SECONDS_BOUNDS),
            sent_home_bytes: AtomicU64::new(0),
        }
    }
}

impl ServerMetrics {
    /// A VM came and runs here; bringing it up took `took`.
    pub(crate) fn hosted(&self, took: Duration) {
        self.consolidations.observe(took);
    }

    /// A VM went home with `bytes` of descriptor and dirty sets; stopping
    /// and sending it took `took`.
    pub(crate) fn sent_home(&self, took: Duration, bytes: u64) {
        self.reintegrations.observe(took);
        self.sent_home_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The page for a scrape.
    pub(crate) fn page(
        &self,
        vms: &[VmFigures],
        desktops: &[remote_wakeup::DesktopStatus],
        energy: &ServerEnergy,
    ) -> String {
        let mut page = Exposition::new();
        page.family(
            "jettison_server_consolidation_seconds",
            Kind::Histogram,
            "VMs that came to this server (the count), by the time from the desktop's request to the VM running here.",
        )
        .histogram(&[], &self.consolidations.snapshot());
        page.family(
            "jettison_server_reintegration_seconds",
            Kind::Histogram,
            "VMs sent home (the count), by the time to stop them and send their descriptor and dirty sets.",
        )
        .histogram(&[], &self.reintegrations.snapshot());
        page.family(
            "jettison_server_sent_home_bytes_total",
            Kind::Counter,
            "Bytes sent to desktops at reintegration: descriptors and dirty pages and blocks.",
        )
        .sample(&[], self.sent_home_bytes.load(Ordering::Relaxed) as f64);
        vm_figures(&mut page, vms);
        desktop_figures(&mut page, desktops);
        energy_figures(&mut page, energy);
        page.into_text()
    }
}

/// A family read from each of a list: name, kind, help, and its value for one.
type Family<T> = (&'static str, Kind, &'static str, fn(&T) -> f64);

/// Each hosted VM's series, labelled with its desktop and name.
fn vm_figures(page: &mut Exposition, vms: &[VmFigures]) {
    let families: [Family<VmFigures>; 10] = [
        (
            "jettison_vm_pages_fetched_total",
            Kind::Counter,
            "Memory pages fetched from the desktop in this stay, prefetched ones included.",
            |v| v.memory.pages_fetched as f64,
        ),
        ("jettison_vm_zero_pages_served_total", Kind::Counter, "Faults answered as zero pages without a fetch.", |v| {
            v.memory.zero_pages_served as f64
        }),
        ("jettison_vm_prefetch_hits_total", Kind::Counter, "Faults answered from the prefetch cache.", |v| {
            v.memory.prefetch_hits as f64
        }),
        ("jettison_vm_prefetch_misses_total", Kind::Counter, "Faults that had to fetch from the desktop.", |v| {
            v.memory.prefetch_misses as f64
        }),
        (
            "jettison_vm_dirty_pages",
            Kind::Gauge,
            "Memory pages the VM has written here that memtap holds (written back from the page cache so far; reintegration writes back the rest first).",
            |v| v.memory.dirty_pages as f64,
        ),
        (
            "jettison_vm_discarded_pages",
            Kind::Gauge,
            "Memory pages the guest freed and reported (holes QEMU punched in memtap's RAM file): never fetched, holding no space here, sent home as holes.",
            |v| v.memory.discarded_pages as f64,
        ),
        (
            "jettison_vm_blocks_fetched_total",
            Kind::Counter,
            "Disk blocks (4 KiB) fetched from the desktop in this stay.",
            |v| v.disk.blocks_fetched as f64,
        ),
        (
            "jettison_vm_dirty_blocks",
            Kind::Gauge,
            "Disk blocks the VM has written here (what reintegration sends back).",
            |v| v.disk.dirty_blocks as f64,
        ),
        ("jettison_vm_expected_bytes", Kind::Gauge, "The working set the capacity check expected of the VM.", |v| {
            v.status.expected_bytes as f64
        }),
        ("jettison_vm_seconds", Kind::Gauge, "Seconds since the VM started on this server.", |v| {
            v.status.seconds as f64
        }),
    ];
    for (name, kind, help, value) in families {
        page.family(name, kind, help);
        for vm in vms {
            page.sample(&labels(vm), value(vm));
        }
    }
    page.family(
        "jettison_vm_fetched_bytes_total",
        Kind::Counter,
        "Bytes of page and block data received from the desktop in this stay (zero runs travel as markers and are not counted).",
    );
    for vm in vms {
        let [desktop, name] = labels(vm);
        page.sample(&[desktop, name, ("device", "memory")], vm.memory.bytes_fetched as f64);
        page.sample(&[desktop, name, ("device", "disk")], vm.disk.bytes_fetched as f64);
    }
    page.family(
        "jettison_vm_fetch_latency_seconds",
        Kind::Histogram,
        "Memory faults that went to the desktop, by how long they waited for its answer (waking it included).",
    );
    for vm in vms {
        page.histogram(&labels(vm), &vm.memory.fetch_latency);
    }
}

fn labels(vm: &VmFigures) -> [(&'static str, &str); 2] {
    [("desktop", vm.status.desktop.as_str()), ("vm", vm.status.vm.as_str())]
}

/// The wakes of each desktop this server wakes before fetching.
fn desktop_figures(page: &mut Exposition, desktops: &[remote_wakeup::DesktopStatus]) {
    let families: [Family<remote_wakeup::DesktopStatus>; 4] = [
        (
            "jettison_desktop_wakes_total",
            Kind::Counter,
            "Wake-on-LAN wakes of the desktop before a fetch (rounds that sent magic packets).",
            |d| d.stats.wakes as f64,
        ),
        (
            "jettison_desktop_failed_wakes_total",
            Kind::Counter,
            "Wakes that gave up: the desktop did not answer.",
            |d| d.stats.failed_wakes as f64,
        ),
        (
            "jettison_desktop_wake_seconds_total",
            Kind::Counter,
            "Time spent waiting for the desktop to wake, summed over wakes.",
            |d| d.stats.total_wait_ms as f64 / 1000.0,
        ),
        (
            "jettison_desktop_asleep",
            Kind::Gauge,
            "1 while the server believes the desktop sleeps (its last probe failed), else 0.",
            |d| f64::from(u8::from(d.state == WakeState::Asleep)),
        ),
    ];
    for (name, kind, help, value) in families {
        page.family(name, kind, help);
        for desktop in desktops {
            page.sample(&[("desktop", desktop.name.as_str())], value(desktop));
        }
    }
}

/// The energy ledger: the server's break-even count, and each VM's share,
/// its desktop's estimated saving and the difference.
fn energy_figures(page: &mut Exposition, energy: &ServerEnergy) {
    page.family(
        "jettison_server_break_even_vms",
        Kind::Gauge,
        "VMs that must share the server before each one's share of its idle power is below what its desktop saves asleep.",
    )
    .sample(&[], f64::from(energy.break_even_vms));
    page.family(
        "jettison_vm_server_joules",
        Kind::Gauge,
        "The VM's share of the server in this stay: active (by CPU time), idle (by memory) and network (by bytes).",
    );
    for vm in &energy.vms {
        let [desktop, name] = energy_labels(vm);
        page.sample(&[desktop, name, ("part", "active")], vm.active_joules);
        page.sample(&[desktop, name, ("part", "idle")], vm.idle_joules);
        page.sample(&[desktop, name, ("part", "network")], vm.network_joules);
    }
    let families: [Family<VmEnergy>; 3] = [
        (
            "jettison_vm_cpu_seconds",
            Kind::Gauge,
            "CPU seconds of the VM's QEMU and storage process in this stay.",
            |v| v.cpu_secs,
        ),
        (
            "jettison_vm_desktop_saved_joules",
            Kind::Gauge,
            "What the VM's desktop saved in this stay against staying idle, as the server estimates it.",
            |v| v.desktop_saved_joules,
        ),
        (
            "jettison_vm_net_saved_joules",
            Kind::Gauge,
            "The desktop's saving minus the VM's share of the server and network; negative while it costs more.",
            |v| v.net_joules,
        ),
    ];
    for (name, kind, help, value) in families {
        page.family(name, kind, help);
        for vm in &energy.vms {
            page.sample(&energy_labels(vm), value(vm));
        }
    }
}

fn energy_labels(vm: &VmEnergy) -> [(&'static str, &str); 2] {
    [("desktop", vm.desktop.as_str()), ("vm", vm.vm.as_str())]
}
