//! Sending VMs home on the server's initiative: when the VMs here claim
//! more memory than the server has for them (the one that grew most beyond
//! its estimate goes), and when a VM fetches from its desktop faster than
//! the configured rate (it is no longer idle; its desktop must be awake
//! anyway, so it had better run there).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::key::VmKey;

/// Fetch totals of one VM over the rate window.
#[derive(Debug, Default)]
pub struct FetchRate {
    samples: VecDeque<(Instant, u64)>,
}

impl FetchRate {
    /// Adds the VM's fetch total at `now`, keeping `window` of history, and
    /// returns the rate in bytes/s once the samples span the window.
    pub fn push(&mut self, now: Instant, total: u64, window: Duration) -> Option<f64> {
        self.samples.push_back((now, total));
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= window) {
            self.samples.pop_front();
        }
        let (first_at, first) = *self.samples.front()?;
        let span = now.duration_since(first_at);
        if span < window {
            return None;
        }
        Some(total.saturating_sub(first) as f64 / span.as_secs_f64())
    }
}

/// Per-VM fetch rates.
#[derive(Debug, Default)]
pub struct FetchRates {
    vms: BTreeMap<VmKey, FetchRate>,
}

impl FetchRates {
    /// The rate of `vm` with its total now (see [`FetchRate::push`]).
    pub fn push(&mut self, vm: &VmKey, now: Instant, total: u64, window: Duration) -> Option<f64> {
        self.vms.entry(vm.clone()).or_default().push(now, total, window)
    }

    /// Forgets VMs not in `present`.
    pub fn retain(&mut self, present: &[VmKey]) {
        self.vms.retain(|vm, _| present.contains(vm));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_needs_a_full_window_and_forgets_old_samples() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut rate = FetchRate::default();
        assert_eq!(rate.push(t0, 0, window), None);
        assert_eq!(rate.push(t0 + Duration::from_secs(5), 50, window), None);
        assert_eq!(rate.push(t0 + Duration::from_secs(10), 100, window), Some(10.0));
        // The burst of 1000 bytes in the last 10 s shows; the quiet start is gone.
        let r = rate.push(t0 + Duration::from_secs(20), 1100, window).unwrap();
        assert!((r - 100.0).abs() < 1e-9, "{r}");
        assert_eq!(rate.samples.len(), 2);
    }
}
