//! What a desktop saves while its VM is on the server, against staying
//! idle, as a function of the stay's length: the power crate's simulated
//! desktop ([`power::simulate::simulate`]) replaying the requests the VM
//! sends it, through the microsleep policy, with Table 1.
//!
//! The simulator needs this for thousands of stays of every length, so the
//! curve is computed once at a grid of lengths and read between them by
//! linear interpolation (between grid points the desktop mostly sleeps,
//! and its energy grows about linearly).
//!
//! - **Full migration**: no request ever reaches the desktop (its VM is
//!   whole on the server); it suspends at once (wait 0) and sleeps until
//!   the user returns.
//! - **Partial migration**: the desktop guest's recorded stay
//!   (`bench/traces/desktop-guest-5min.csv.gz`, every memory and disk
//!   request at the time it was asked) for its 5.7 minutes, then the
//!   requests of [`power::trace`]'s first-touch model from there on (the
//!   recording stops there; the model's parameters are derived from the
//!   paper's savings, so from that point the figure rests on the paper),
//!   with the paper's fixed 6 s wait.

use power::simulate::{simulate, SimConfig};
use power::trace::{generate, RequestTrace, TraceConfig};
use power::{MicrosleepPolicy, PowerError, PowerProfile};

/// Saved energy against staying idle, by stay length.
#[derive(Debug, Clone, PartialEq)]
pub struct StayEnergy {
    /// `(stay seconds, joules saved)`, ascending in seconds.
    points: Vec<(f64, f64)>,
    /// Idle power of the profile, for the share saved.
    idle_watts: f64,
    /// Resume time of the profile: every stay ends with one.
    resume_secs: f64,
}

/// The stay lengths the curve is computed at, seconds: fine where the
/// desktop's requests change fast (the first 20 minutes), coarse later.
pub fn stay_grid(longest_secs: f64) -> Vec<f64> {
    let mut grid = vec![1.0, 5.0, 10.0, 20.0];
    let mut at = 30.0;
    while at <= longest_secs {
        grid.push(at);
        at += if at < 1200.0 {
            30.0
        } else if at < 7200.0 {
            120.0
        } else {
            900.0
        };
    }
    if grid.last().is_some_and(|&last| last < longest_secs) {
        grid.push(longest_secs);
    }
    grid
}

impl StayEnergy {
    /// The curve of a desktop that receives `arrivals` (seconds from the
    /// start of the stay) and waits `wait_secs` after each before sleeping,
    /// over stays of every length in `grid`.
    ///
    /// # Errors
    ///
    /// [`PowerError`] for a wait the policy refuses or a non-finite time.
    pub fn from_arrivals(
        profile: PowerProfile,
        wait_secs: f64,
        arrivals: &[f64],
        grid: &[f64],
    ) -> Result<StayEnergy, PowerError> {
        let mut points = Vec::with_capacity(grid.len());
        for &secs in grid {
            let mut policy = MicrosleepPolicy::fixed(profile, wait_secs)?;
            let cut: Vec<f64> = arrivals.iter().copied().take_while(|&at| at < secs).collect();
            let (report, _) = simulate(&RequestTrace::new(secs, cut), &mut policy, SimConfig::default())?;
            points.push((secs, report.energy.idle_baseline_joules - report.energy.joules));
        }
        Ok(StayEnergy { points, idle_watts: profile.idle_watts, resume_secs: profile.resume_secs })
    }

    /// Joules saved by a stay of `secs` against staying idle through it
    /// (and through the resume at its end).
    pub fn saved_joules(&self, secs: f64) -> f64 {
        let Some(&(first_secs, first_joules)) = self.points.first() else {
            return 0.0;
        };
        if secs <= first_secs {
            return first_joules * secs.max(0.0) / first_secs;
        }
        let after = self.points.partition_point(|&(at, _)| at <= secs);
        // Past the last point: carry on along the last segment's slope.
        let (i, j) = if after >= self.points.len() {
            (self.points.len() - 2, self.points.len() - 1)
        } else {
            (after - 1, after)
        };
        let ((x0, y0), (x1, y1)) = (self.points[i], self.points[j]);
        y0 + (y1 - y0) * (secs - x0) / (x1 - x0)
    }

    /// The share of the idle energy a stay of `secs` saves, percent.
    pub fn saved_percent(&self, secs: f64) -> f64 {
        100.0 * self.saved_joules(secs) / (self.idle_watts * (secs + self.resume_secs))
    }
}

/// The requests of the partial migration's desktop: `recorded` (seconds
/// from the start of the stay) up to `recorded_secs`, then the first-touch
/// model's requests of seed `seed` after that, up to `longest_secs`.
pub fn recorded_then_model(recorded: &[f64], recorded_secs: f64, seed: u64, longest_secs: f64) -> Vec<f64> {
    let model = generate(&TraceConfig::paper_like(seed, longest_secs));
    let mut arrivals: Vec<f64> = recorded.iter().copied().filter(|&at| at < recorded_secs).collect();
    arrivals.extend(model.arrivals.into_iter().filter(|&at| at >= recorded_secs));
    arrivals.sort_by(f64::total_cmp);
    arrivals
}

/// Request times of a recorded fetch trace, seconds from its start, and
/// the length of the stay it covers (its close, else its last request).
pub fn recorded_arrivals(trace: &fetch_trace::Trace) -> (Vec<f64>, f64) {
    let start = trace.started_boottime_ns;
    let secs = |ns: u64| ns.saturating_sub(start) as f64 / 1e9;
    let mut arrivals: Vec<f64> = trace.fetches.iter().map(|f| secs(f.asked_ns)).collect();
    arrivals.sort_by(f64::total_cmp);
    let last = arrivals.last().copied().unwrap_or(0.0);
    let stay = trace.totals.map_or(last, |t| secs(t.closed_boottime_ns).max(last));
    (arrivals, stay)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_desktop_nobody_wakes_saves_more_the_longer_it_sleeps() {
        let curve = StayEnergy::from_arrivals(PowerProfile::TABLE_1, 0.0, &[], &stay_grid(4.0 * 3600.0)).unwrap();
        // Suspend and resume cost more than 20 s of idling saves...
        assert!(curve.saved_joules(20.0) < 0.0);
        // ...and pay off past the break-even length (32.22 s).
        assert!(curve.saved_joules(60.0) > 0.0);
        let mut last = f64::NEG_INFINITY;
        for minutes in [1.0, 5.0, 10.0, 67.0, 308.0] {
            let saved = curve.saved_joules(minutes * 60.0);
            assert!(saved > last, "{minutes} min");
            last = saved;
        }
        assert!(curve.saved_percent(308.0 * 60.0) > 95.0);
    }

    #[test]
    fn requests_cost_the_desktop_energy() {
        let grid = stay_grid(3600.0);
        let quiet = StayEnergy::from_arrivals(PowerProfile::TABLE_1, 6.0, &[], &grid).unwrap();
        let arrivals: Vec<f64> = (0..60).map(|minute| f64::from(minute) * 60.0).collect();
        let busy = StayEnergy::from_arrivals(PowerProfile::TABLE_1, 6.0, &arrivals, &grid).unwrap();
        for secs in [600.0, 1800.0, 3600.0, 7200.0] {
            assert!(busy.saved_joules(secs) < quiet.saved_joules(secs), "{secs} s");
        }
    }

    #[test]
    fn interpolation_meets_the_grid_points() {
        let grid = stay_grid(7200.0);
        let curve = StayEnergy::from_arrivals(PowerProfile::TABLE_1, 0.0, &[], &grid).unwrap();
        for &(secs, joules) in &curve.points {
            assert!((curve.saved_joules(secs) - joules).abs() < 1e-6);
        }
        let (a, b) = (curve.saved_joules(600.0), curve.saved_joules(630.0));
        let middle = curve.saved_joules(615.0);
        assert!((middle - (a + b) / 2.0).abs() < 1e-6);
    }
}
