//! Room on the server: each VM's expected working set, and the check that
//! a new VM fits beside the ones already here.
//!
//! A VM's expectation is what it used the last times it was consolidated
//! here (its *history*: the largest working set seen, pages fetched plus
//! pages dirtied), or, for a VM never seen, the median the paper measured
//! on its users' desktops. A hosted VM counts as the larger of its
//! expectation and what it holds now, so one that grew is not undercounted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ServerError;
use crate::key::VmKey;

/// The paper's median working set of an idle desktop VM (157.87 MiB).
pub const PAPER_MEDIAN_BYTES: u64 = 157_870 * 1024 * 1024 / 1000;

const MIB: f64 = 1024.0 * 1024.0;

/// Each VM's largest working set seen (keyed `desktop/vm`), kept in a JSON file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    bytes: BTreeMap<String, u64>,
}

impl History {
    /// Loads `path`; a missing file is an empty history, an unreadable one
    /// too (with a warning: the paper's median is a safe fallback).
    pub fn load(path: &Path) -> History {
        let bytes = match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring an unreadable working-set history: {e}");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        History { path: path.to_owned(), bytes }
    }

    /// What `vm` is expected to need, and whether that comes from its history.
    pub fn expected(&self, vm: &str) -> (u64, bool) {
        match self.bytes.get(vm) {
            Some(&b) => (b, true),
            None => (PAPER_MEDIAN_BYTES, false),
        }
    }

    /// Records that `vm` used `bytes` this time, keeping the largest.
    ///
    /// # Errors
    /// [`ServerError::SaveHistory`] naming the file.
    pub fn record(&mut self, vm: &str, bytes: u64) -> Result<(), ServerError> {
        let entry = self.bytes.entry(vm.to_owned()).or_insert(0);
        *entry = (*entry).max(bytes);
        let text = serde_json::to_vec_pretty(&self.bytes).expect("a map of numbers serialises");
        durable_file::replace_file(&self.path, &[&text])
            .map_err(|source| ServerError::SaveHistory { path: self.path.clone(), source })
    }
}

/// One VM already on the server, as the capacity check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The VM.
    pub key: VmKey,
    /// Bytes it is expected to need.
    pub expected: u64,
    /// Bytes it holds now (fetched and dirtied).
    pub resident: u64,
}

impl Tenant {
    /// What it counts for: its expectation or its holding, the larger.
    pub fn claim(&self) -> u64 {
        self.expected.max(self.resident)
    }
}

/// Why a VM does not fit: the figures, for the refusal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{tenants} VM(s) claim {used:.1} MiB of its {capacity:.1} MiB, and it is expected to need {expected:.1} MiB \
     ({}); send a VM home, or raise capacity_mib on the server if it has the memory",
    if *from_history { "its largest working set here before" } else { "the paper's median; it has no history here" },
    used = *used as f64 / MIB,
    capacity = *capacity as f64 / MIB,
    expected = *expected as f64 / MIB
)]
pub struct NoRoom {
    /// VMs here.
    pub tenants: usize,
    /// Bytes they claim.
    pub used: u64,
    /// Bytes the server has for working sets.
    pub capacity: u64,
    /// Bytes the new VM is expected to need.
    pub expected: u64,
    /// Whether that expectation comes from its history.
    pub from_history: bool,
}

/// Whether a VM expected to need `expected` bytes (`from_history` says
/// where that figure comes from) fits beside `tenants` in `capacity` bytes.
///
/// # Errors
/// [`NoRoom`] with the figures.
pub fn check(capacity: u64, tenants: &[Tenant], expected: u64, from_history: bool) -> Result<(), NoRoom> {
    let used: u64 = tenants.iter().map(Tenant::claim).sum();
    if used.saturating_add(expected) <= capacity {
        return Ok(());
    }
    Err(NoRoom { tenants: tenants.len(), used, capacity, expected, from_history })
}

/// When the tenants claim more than `capacity`: the one that grew most
/// beyond its expectation, to send home.
pub fn evict(capacity: u64, tenants: &[Tenant]) -> Option<&Tenant> {
    let used: u64 = tenants.iter().map(Tenant::claim).sum();
    if used <= capacity {
        return None;
    }
    tenants.iter().max_by_key(|t| t.resident.saturating_sub(t.expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(vm: &str, expected_mib: u64, resident_mib: u64) -> Tenant {
        let key = VmKey { desktop: "desk1".parse().unwrap(), vm: vm.parse().unwrap() };
        Tenant { key, expected: expected_mib << 20, resident: resident_mib << 20 }
    }

    #[test]
    fn the_papers_median_stands_in_for_an_unknown_vm() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::load(&dir.path().join("history.json"));
        assert_eq!(history.expected("vm1"), (PAPER_MEDIAN_BYTES, false));
        assert!((PAPER_MEDIAN_BYTES as f64 / MIB - 157.87).abs() < 0.01);
        history.record("vm1", 50 << 20).unwrap();
        history.record("vm1", 40 << 20).unwrap();
        let reloaded = History::load(&dir.path().join("history.json"));
        assert_eq!(reloaded.expected("vm1"), (50 << 20, true), "the largest is kept, across restarts");
    }

    #[test]
    fn a_vm_fits_or_is_refused_with_the_figures() {
        let tenants = [tenant("a", 100, 20), tenant("b", 50, 120)];
        // a claims 100, b 120: 220 used.
        assert!(check(400 << 20, &tenants, 150 << 20, true).is_ok());
        let err = check(300 << 20, &tenants, PAPER_MEDIAN_BYTES, false).unwrap_err().to_string();
        assert!(err.contains("220.0 MiB of its 300.0 MiB"), "{err}");
        assert!(err.contains("157.9 MiB (the paper's median"), "{err}");
    }

    #[test]
    fn eviction_picks_the_vm_that_grew_most() {
        let tenants = [tenant("a", 100, 130), tenant("b", 50, 120), tenant("c", 10, 0)];
        assert_eq!(evict(1000 << 20, &tenants), None);
        assert_eq!(evict(200 << 20, &tenants).map(|t| t.key.vm.as_str()), Some("b"));
    }
}
