//! A bounded history of the gaps between remote requests, and Eq. 4's
//! expected waste computed over it.
//!
//! # Why a ring and a histogram
//!
//! The adaptive policy re-evaluates Eq. 4 after every request, over a grid
//! of candidate wait times, and a consolidated VM can fault thousands of
//! times a minute. The last `capacity` gaps are kept in a ring (so the
//! history forgets old behaviour at a known rate) and mirrored in a
//! histogram of fixed-width bins, so that one evaluation costs a pass over
//! the bins, not over the gaps. Gaps longer than the horizon share one
//! overflow bin: for any candidate the policy asks about, such a gap is
//! simply "long enough for a sleep to pay".

use std::collections::VecDeque;

use crate::PowerProfile;

/// The last gaps between requests, in bins of [`GapHistory::BIN_SECS`].
#[derive(Debug, Clone)]
pub struct GapHistory {
    capacity: usize,
    recent: VecDeque<f64>,
    /// Counts per bin; the last bin holds every gap at or beyond the horizon.
    bins: Vec<u64>,
}

impl GapHistory {
    /// Width of a histogram bin, seconds: the resolution of the
    /// probabilities in Eq. 4.
    pub const BIN_SECS: f64 = 0.1;

    /// An empty history of at most `capacity` gaps (at least 1), resolving
    /// gaps up to `horizon_secs`.
    pub fn new(capacity: usize, horizon_secs: f64) -> GapHistory {
        let bins = Self::bin_of(horizon_secs.max(Self::BIN_SECS)) + 1;
        GapHistory { capacity: capacity.max(1), recent: VecDeque::new(), bins: vec![0; bins] }
    }

    /// The bin a gap falls in, before clamping to the overflow bin. The
    /// small epsilon keeps a gap of exactly `k * BIN_SECS` in bin `k`.
    fn bin_of(secs: f64) -> usize {
        (secs / Self::BIN_SECS + 1e-9).floor().max(0.0) as usize
    }

    fn bin(&self, secs: f64) -> usize {
        Self::bin_of(secs).min(self.bins.len() - 1)
    }

    /// Records one gap, forgetting the oldest beyond the capacity. Negative
    /// or non-finite gaps are ignored.
    pub fn record(&mut self, gap_secs: f64) {
        if !(gap_secs.is_finite() && gap_secs >= 0.0) {
            return;
        }
        if self.recent.len() == self.capacity {
            if let Some(old) = self.recent.pop_front() {
                let bin = self.bin(old);
                self.bins[bin] -= 1;
            }
        }
        let bin = self.bin(gap_secs);
        self.bins[bin] += 1;
        self.recent.push_back(gap_secs);
    }

    /// The gaps held, oldest first.
    pub fn gaps(&self) -> impl Iterator<Item = f64> + '_ {
        self.recent.iter().copied()
    }

    /// Number of gaps held.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether no gap has been recorded.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Fraction of the held gaps shorter than `secs` (bin resolution).
    pub fn fraction_below(&self, secs: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let below: u64 = self.bins[..self.bin(secs)].iter().sum();
        below as f64 / self.len() as f64
    }

    /// `p(I < t_b + t_w | I > t_w)`: of the gaps long enough for the desktop
    /// to start a sleep after waiting `wait_secs`, the share whose next
    /// request arrives before the sleep has paid for itself. 0 when no gap
    /// that long has been seen.
    pub fn p_wasted(&self, wait_secs: f64, break_even_secs: f64) -> f64 {
        let suffix = self.suffix_counts();
        self.p_wasted_with(&suffix, wait_secs, break_even_secs)
    }

    /// `suffix[k]`: gaps in bin `k` or above.
    fn suffix_counts(&self) -> Vec<u64> {
        let mut suffix = vec![0; self.bins.len() + 1];
        for k in (0..self.bins.len()).rev() {
            suffix[k] = suffix[k + 1] + self.bins[k];
        }
        suffix
    }

    fn p_wasted_with(&self, suffix: &[u64], wait_secs: f64, break_even_secs: f64) -> f64 {
        let slept = suffix[self.bin(wait_secs)];
        if slept == 0 {
            return 0.0;
        }
        let paid = suffix[self.bin(wait_secs + break_even_secs)];
        (slept - paid) as f64 / slept as f64
    }

    /// Eq. 4: `E_waste(t_w) = t_w P_i + p(I < t_b + t_w | I > t_w) E_mu`,
    /// joules, with `E_mu` from [`PowerProfile::wasted_microsleep_joules`].
    pub fn expected_waste(&self, profile: &PowerProfile, wait_secs: f64) -> f64 {
        let suffix = self.suffix_counts();
        self.expected_waste_with(&suffix, profile, wait_secs)
    }

    fn expected_waste_with(&self, suffix: &[u64], profile: &PowerProfile, wait_secs: f64) -> f64 {
        wait_secs * profile.idle_watts
            + self.p_wasted_with(suffix, wait_secs, profile.break_even_secs()) * profile.wasted_microsleep_joules()
    }

    /// The candidate wait time with the least expected waste, and that
    /// waste; the shortest wins a tie. `None` when there are no candidates.
    pub fn best_wait(&self, profile: &PowerProfile, candidates: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
        let suffix = self.suffix_counts();
        let mut best: Option<(f64, f64)> = None;
        for wait in candidates {
            let waste = self.expected_waste_with(&suffix, profile, wait);
            if best.is_none_or(|(_, least)| waste < least) {
                best = Some((wait, waste));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_beyond_capacity() {
        let mut history = GapHistory::new(3, 100.0);
        for gap in [50.0, 50.0, 0.5, 0.5, 0.5] {
            history.record(gap);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.fraction_below(1.0), 1.0);
    }

    #[test]
    fn p_wasted_is_conditional_on_reaching_the_wait() {
        let mut history = GapHistory::new(100, 200.0);
        // Two gaps too short to sleep in, one wasted sleep, one paid sleep.
        for gap in [0.2, 0.3, 10.0, 120.0] {
            history.record(gap);
        }
        let t_b = 32.22;
        assert_eq!(history.p_wasted(6.0, t_b), 0.5);
        assert_eq!(history.p_wasted(0.0, t_b), 0.75);
        assert_eq!(history.p_wasted(130.0, t_b), 0.0);
    }

    #[test]
    fn overflow_gaps_count_as_long() {
        let mut history = GapHistory::new(10, 50.0);
        history.record(1e6);
        assert_eq!(history.p_wasted(6.0, 32.22), 0.0);
        assert_eq!(history.fraction_below(49.0), 0.0);
    }

    #[test]
    fn best_wait_skips_a_run_of_gaps_it_can_outwait() {
        let profile = PowerProfile::TABLE_1;
        let mut history = GapHistory::new(1000, 100.0);
        for i in 0..100 {
            history.record(if i % 10 == 9 { 120.0 } else { 8.0 });
        }
        let grid = (0..=120).map(|step| step as f64 * 0.5);
        let (wait, waste) = history.best_wait(&profile, grid).unwrap();
        assert_eq!(wait, 8.5);
        assert!((waste - 8.5 * profile.idle_watts).abs() < 1e-9);
        assert!(history.expected_waste(&profile, 6.0) > waste);
    }

    #[test]
    fn ignores_nonsense_gaps() {
        let mut history = GapHistory::new(10, 50.0);
        history.record(-1.0);
        history.record(f64::NAN);
        assert!(history.is_empty());
    }
}
