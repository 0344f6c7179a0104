//! Request-arrival traces: what a consolidated VM asks of its sleeping
//! desktop, as a list of arrival times, and a seeded generator of them.
//!
//! # The generator's model
//!
//! The paper found that more than 99.23% of remote faults arrive within 1 s
//! of the previous one: faults come in bursts. The generator builds a trace
//! from three sources of bursts, each a run of requests whose gaps are
//! exponential with a mean of [`TraceConfig::intra_gap_mean_secs`] (30 ms),
//! with a rare pause of 1-10 s inside a burst (the guest waiting on the
//! network between two faults); with the defaults about 99.2% of gaps are
//! under 1 s, as in the paper:
//!
//! - the working set fetched just after consolidation (one large burst);
//! - periodic background activity: a timer every
//!   [`TraceConfig::timer_period_secs`] (60 s) whose handler touches
//!   50-150 pages;
//! - occasional larger bursts (mail arriving, a cron job) at random, on
//!   average every [`TraceConfig::burst_interval_mean_secs`].
//!
//! Every draw comes from one `StdRng` seeded with [`TraceConfig::seed`], so
//! a seed names a trace.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Request arrival times over one idle period, ascending, seconds from the
/// start of the consolidation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTrace {
    /// Length of the idle period: the user returns at this time.
    pub duration_secs: f64,
    /// Arrival times, ascending, each in `[0, duration_secs)`.
    pub arrivals: Vec<f64>,
}

impl RequestTrace {
    /// A trace of `arrivals` (sorted here; those outside
    /// `[0, duration_secs)` or not finite dropped).
    pub fn new(duration_secs: f64, mut arrivals: Vec<f64>) -> RequestTrace {
        arrivals.retain(|at| at.is_finite() && *at >= 0.0 && *at < duration_secs);
        arrivals.sort_by(f64::total_cmp);
        RequestTrace { duration_secs, arrivals }
    }

    /// The gaps between consecutive arrivals.
    pub fn gaps(&self) -> impl Iterator<Item = f64> + '_ {
        self.arrivals.windows(2).map(|pair| pair[1] - pair[0])
    }

    /// Fraction of the gaps shorter than `secs`; 0 with fewer than two
    /// arrivals.
    pub fn fraction_of_gaps_below(&self, secs: f64) -> f64 {
        let total = self.arrivals.len().saturating_sub(1);
        if total == 0 {
            return 0.0;
        }
        self.gaps().filter(|&gap| gap < secs).count() as f64 / total as f64
    }
}

/// Parameters of [`generate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceConfig {
    /// Seed of the random generator.
    pub seed: u64,
    /// Length of the idle period, seconds.
    pub duration_secs: f64,
    /// Requests in the burst right after consolidation.
    pub initial_burst_requests: u32,
    /// Period of the background timer, seconds.
    pub timer_period_secs: f64,
    /// Requests per timer firing, drawn uniformly from this inclusive range.
    pub timer_requests: (u32, u32),
    /// Mean time between occasional bursts (a Poisson process), seconds.
    pub burst_interval_mean_secs: f64,
    /// Requests per occasional burst, drawn uniformly from this inclusive
    /// range.
    pub burst_requests: (u32, u32),
    /// Mean gap between requests inside a burst, seconds.
    pub intra_gap_mean_secs: f64,
    /// Probability that a gap inside a burst is a pause instead.
    pub pause_probability: f64,
    /// A pause's length, drawn uniformly from this range, seconds.
    pub pause_secs: (f64, f64),
}

impl TraceConfig {
    /// The model described in the module doc, over `duration_secs`.
    pub fn paper_like(seed: u64, duration_secs: f64) -> TraceConfig {
        TraceConfig {
            seed,
            duration_secs,
            initial_burst_requests: 2000,
            timer_period_secs: 60.0,
            timer_requests: (50, 150),
            burst_interval_mean_secs: 600.0,
            burst_requests: (200, 800),
            intra_gap_mean_secs: 0.03,
            pause_probability: 0.001,
            pause_secs: (1.0, 10.0),
        }
    }
}

/// Generates a trace from `config`; the same config gives the same trace.
pub fn generate(config: &TraceConfig) -> RequestTrace {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut arrivals = Vec::new();
    burst(&mut rng, config, 0.0, config.initial_burst_requests, &mut arrivals);

    if config.timer_period_secs > 0.0 {
        let mut at = rng.gen_range(0.0..config.timer_period_secs);
        while at < config.duration_secs {
            let n = rng.gen_range(config.timer_requests.0..=config.timer_requests.1.max(config.timer_requests.0));
            burst(&mut rng, config, at, n, &mut arrivals);
            at += config.timer_period_secs + rng.gen_range(-0.5..0.5);
        }
    }

    if config.burst_interval_mean_secs > 0.0 {
        let mut at = exponential(&mut rng, config.burst_interval_mean_secs);
        while at < config.duration_secs {
            let n = rng.gen_range(config.burst_requests.0..=config.burst_requests.1.max(config.burst_requests.0));
            burst(&mut rng, config, at, n, &mut arrivals);
            at += exponential(&mut rng, config.burst_interval_mean_secs);
        }
    }
    RequestTrace::new(config.duration_secs, arrivals)
}

/// `n` requests from `start`.
fn burst(rng: &mut StdRng, config: &TraceConfig, start: f64, n: u32, out: &mut Vec<f64>) {
    let mut at = start;
    for i in 0..n {
        if i > 0 {
            at += if rng.gen_bool(config.pause_probability.clamp(0.0, 1.0)) {
                rng.gen_range(config.pause_secs.0..=config.pause_secs.1.max(config.pause_secs.0))
            } else {
                exponential(rng, config.intra_gap_mean_secs)
            };
        }
        out.push(at);
    }
}

/// An exponential draw with the given mean.
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.gen();
    -mean * (1.0 - u).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = generate(&TraceConfig::paper_like(7, 600.0));
        assert_eq!(a, generate(&TraceConfig::paper_like(7, 600.0)));
        assert_ne!(a, generate(&TraceConfig::paper_like(8, 600.0)));
    }

    #[test]
    fn matches_the_papers_burstiness() {
        for minutes in [67.0, 308.0] {
            let trace = generate(&TraceConfig::paper_like(1, minutes * 60.0));
            assert!(trace.fraction_of_gaps_below(1.0) >= 0.99, "{}", trace.fraction_of_gaps_below(1.0));
            assert!(trace.arrivals.windows(2).all(|pair| pair[0] <= pair[1]));
            assert!(trace.arrivals.iter().all(|&at| (0.0..trace.duration_secs).contains(&at)));
            // A timer firing per minute, at least.
            assert!(trace.gaps().filter(|&gap| gap >= 1.0).count() as f64 >= minutes * 0.9);
        }
    }

    #[test]
    fn new_sorts_and_drops_outsiders() {
        let trace = RequestTrace::new(10.0, vec![5.0, 1.0, -1.0, 10.0, f64::NAN, 3.0]);
        assert_eq!(trace.arrivals, vec![1.0, 3.0, 5.0]);
        assert_eq!(trace.fraction_of_gaps_below(3.0), 1.0);
    }
}
