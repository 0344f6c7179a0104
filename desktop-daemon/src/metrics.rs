//! The desktop daemon's Prometheus metrics (`metrics_listen`): each VM's
//! moves, their durations, the bytes each way and the dirty pages and
//! blocks that came back.
//!
//! Counted since the daemon started. The pages and blocks the server
//! fetches while a VM is there are counted by the server daemon
//! (`jettison_vm_pages_fetched_total`), which sees every fetch. The
//! desktop's own sleep (`[power]`) is given as gauges of the current stay
//! on the server, or the last one: its ledger starts again at each stay.
//! The activity monitor (`[activity]`) gives the user's idle time and
//! whether the user counts as away.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use daemon_protocol::local::{
    ConsolidateReport, DesktopActivity, DesktopActivityState, DesktopPower, DesktopPowerState, ReintegrateReport,
};
use identifiers::VmName;
use metrics_endpoint::{Exposition, Histogram, Kind, MOVE_SECONDS_BOUNDS};

/// One VM's counters.
#[derive(Debug)]
struct VmMetrics {
    consolidations: Histogram,
    reintegrations: Histogram,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    pages_back: AtomicU64,
    blocks_back: AtomicU64,
}

impl Default for VmMetrics {
    fn default() -> Self {
        VmMetrics {
            consolidations: Histogram::new(MOVE_SECONDS_BOUNDS),
            reintegrations: Histogram::new(MOVE_SECONDS_BOUNDS),
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            pages_back: AtomicU64::new(0),
            blocks_back: AtomicU64::new(0),
        }
    }
}

/// A family of every VM's `T`: name, help, and where `T` is in a VM's counters.
type Family<T> = (&'static str, &'static str, fn(&VmMetrics) -> &T);

/// Every VM's counters.
#[derive(Debug)]
pub(crate) struct DesktopMetrics {
    vms: BTreeMap<VmName, VmMetrics>,
}

impl DesktopMetrics {
    /// Zero counters for `vms`.
    pub(crate) fn new<'a>(vms: impl IntoIterator<Item = &'a VmName>) -> Self {
        DesktopMetrics { vms: vms.into_iter().map(|vm| (vm.clone(), VmMetrics::default())).collect() }
    }

    /// Counts a consolidation.
    pub(crate) fn consolidated(&self, report: &ConsolidateReport) {
        if let Some(vm) = self.vms.get(&report.vm) {
            vm.consolidations.observe(Duration::from_secs_f64(report.total_secs.max(0.0)));
            vm.sent_bytes.fetch_add(report.descriptor_bytes, Ordering::Relaxed);
        }
    }

    /// Counts a reintegration (from the server or its checkpoint).
    pub(crate) fn reintegrated(&self, report: &ReintegrateReport) {
        if let Some(vm) = self.vms.get(&report.vm) {
            vm.reintegrations.observe(Duration::from_secs_f64(report.total_secs.max(0.0)));
            vm.received_bytes.fetch_add(report.bytes, Ordering::Relaxed);
            vm.pages_back.fetch_add(report.dirty_pages, Ordering::Relaxed);
            vm.blocks_back.fetch_add(report.dirty_blocks, Ordering::Relaxed);
        }
    }

    /// The page for a scrape; `on_server` says where each VM is now
    /// (`None`: moving, left out); `sleep` is the desktop's sleep, if it
    /// has a `[power]` section; `activity` its activity monitor, if it has
    /// an `[activity]` section.
    pub(crate) fn page(
        &self,
        on_server: impl Fn(&VmName) -> Option<bool>,
        sleep: Option<DesktopPower>,
        activity: Option<DesktopActivity>,
    ) -> String {
        let mut page = Exposition::new();
        let histograms: [Family<Histogram>; 2] = [
            (
                "jettison_consolidation_seconds",
                "Consolidations of the VM (the count), by the time from the request to the VM running on the server.",
                |m| &m.consolidations,
            ),
            (
                "jettison_reintegration_seconds",
                "Reintegrations of the VM (the count; a recovery from the server's checkpoint included), by the time \
                 from the request to the VM running here.",
                |m| &m.reintegrations,
            ),
        ];
        for (name, help, histogram) in histograms {
            page.family(name, Kind::Histogram, help);
            for (vm, metrics) in &self.vms {
                page.histogram(&[("vm", vm.as_str())], &histogram(metrics).snapshot());
            }
        }
        let counters: [Family<AtomicU64>; 4] = [
            (
                "jettison_sent_bytes_total",
                "Descriptor bytes sent to the server at consolidation (the pages and blocks it fetches later are in \
                 the server's jettison_vm_fetched_bytes_total).",
                |m| &m.sent_bytes,
            ),
            ("jettison_received_bytes_total", "Bytes received at reintegration: descriptor and dirty sets.", |m| {
                &m.received_bytes
            }),
            ("jettison_reintegrated_pages_total", "Dirty memory pages written back into the RAM file.", |m| {
                &m.pages_back
            }),
            ("jettison_reintegrated_blocks_total", "Dirty disk blocks written back into the disk image.", |m| {
                &m.blocks_back
            }),
        ];
        for (name, help, counter) in counters {
            page.family(name, Kind::Counter, help);
            for (vm, metrics) in &self.vms {
                page.sample(&[("vm", vm.as_str())], counter(metrics).load(Ordering::Relaxed) as f64);
            }
        }
        page.family("jettison_vm_on_server", Kind::Gauge, "1 while the VM is consolidated on the server, else 0.");
        for vm in self.vms.keys() {
            if let Some(away) = on_server(vm) {
                page.sample(&[("vm", vm.as_str())], f64::from(u8::from(away)));
            }
        }
        if let Some(sleep) = sleep {
            let asleep = matches!(sleep.state, DesktopPowerState::Suspending | DesktopPowerState::Asleep);
            let gauges: [(&str, &str, f64); 5] = [
                (
                    "jettison_desktop_asleep",
                    "1 while the desktop is suspending or asleep, else 0.",
                    f64::from(u8::from(asleep)),
                ),
                (
                    "jettison_desktop_sleeps",
                    "Times the desktop fell asleep in the current (or last) stay of its VMs on the server.",
                    sleep.sleeps as f64,
                ),
                ("jettison_desktop_wakes", "Times a request woke the desktop in that stay.", sleep.wakes as f64),
                (
                    "jettison_desktop_asleep_seconds",
                    "Seconds asleep in that stay (its ledger, as of its last state change).",
                    sleep.asleep_secs,
                ),
                (
                    "jettison_desktop_saved_joules",
                    "Energy saved in that stay against staying idle, joules (its ledger).",
                    sleep.saved_joules,
                ),
            ];
            for (name, help, value) in gauges {
                page.family(name, Kind::Gauge, help);
                page.sample(&[], value);
            }
        }
        if let Some(activity) = activity {
            let away = matches!(activity.state, DesktopActivityState::Away | DesktopActivityState::Returning);
            page.family(
                "jettison_desktop_user_away",
                Kind::Gauge,
                "1 while the activity monitor has moved VMs for an absent user and waits for the return, else 0.",
            );
            page.sample(&[], f64::from(u8::from(away)));
            if let Some(idle) = activity.idle_secs {
                page.family(
                    "jettison_desktop_user_idle_seconds",
                    Kind::Gauge,
                    "Seconds since the user's last keyboard or pointer input, as the idle source last said.",
                );
                page.sample(&[], idle);
            }
        }
        page.into_text()
    }
}
