//! Request-arrival traces: what a consolidated VM asks of its sleeping
//! desktop, as a list of arrival times, and a seeded generator of them.
//!
//! # The generator's model: periodic activities, first touch
//!
//! A consolidated VM asks its desktop for a page only the first time it
//! touches it: once fetched the page stays on the server, and touching it
//! again costs the desktop nothing. What wakes the desktop is therefore not
//! how often the guest does something, but how often it touches a page it
//! has not touched since the consolidation. The generator models that and
//! nothing else:
//!
//! - **The working set.** Right after it starts on the server the guest
//!   touches what it runs on (kernel, scheduler, its processes' stacks and
//!   heaps): [`TraceConfig::working_set_faults`] requests spread over the
//!   first [`TraceConfig::working_set_secs`].
//! - **Periodic activities.** A desktop guest runs timers of several
//!   periods (a clock tick, a keepalive, a mail poll, a cron job). Each
//!   [`Activity`] fires every [`Activity::period_secs`] from a random phase,
//!   and each firing touches each page of its footprint
//!   ([`Activity::footprint_pages`]) with probability
//!   [`TraceConfig::touch_probability`]: a handler's branches and the data
//!   it meets differ from one firing to the next. Only the touched pages not
//!   yet on the server become requests, one burst per firing. So an activity
//!   reaches the desktop at its first firing, then with fewer and fewer
//!   pages: after `n` firings a page is still absent with probability
//!   `(1 - q)^n`, and the expected number of firings that fetch anything is
//!   `F(k) = sum over n >= 0 of 1 - (1 - q (1 - q)^n)^k`, about
//!   `log2 k + 1.3` for `q = 1/2`.
//! - **Drift.** A footprint does not stay fixed for ever: freed pages are
//!   reused, caches turn over. Pages of the footprints are replaced by pages
//!   not on the server at [`TraceConfig::drift_pages_per_hour`] (a Poisson
//!   process, every footprint page equally likely); the next firing that
//!   touches a replaced page fetches it. Once the footprints are covered,
//!   drift is all that reaches the desktop, about a burst per drifted page.
//!
//! The requests of one firing follow each other with exponential gaps of
//! mean [`TraceConfig::fault_gap_mean_secs`]: a fault served, the guest runs
//! on to the next.
//!
//! The model this replaces sent a 60 s timer's 50-150 requests to the
//! desktop at every firing for the whole idle period, as if no page ever
//! stayed on the server. At a wake a minute no wait policy can save more
//! than about a third of the desktop's energy with Table 1: that trace, not
//! the policy, kept the benchmark at 31-33% against the paper's 78% and 91%.
//!
//! # Where the parameters come from
//!
//! The paper publishes no trace, but its savings bound how often its
//! desktops can have woken. With Table 1 in Eq. 2, one wake costs, against
//! sleeping through the same time, the suspend (`P_o t_o` = 904 J), the
//! resume (`P_r t_r` = 1,044 J) and about 7 s awake (`t_w` = 6 s and the
//! burst) at `P_i`, 430 J, less the 47 J those 24 s asleep would have cost:
//! 2,332 J. Over an idle period `T` the desktop is also awake for `A_0`
//! after the consolidation (Figure 8: migration at 1:57, first microsleep
//! at 4:21, so `A_0` = 144 s), asleep at `P_s` otherwise, and resumes once
//! for the user. A saving `s` leaves `(1 - s) P_i (T + t_r)` joules, so the
//! wakes the paper's figures allow number
//!
//! `N(T) = [(1 - s) P_i (T + t_r) - P_i A_0 - (P_o t_o + P_r t_r) - P_s (T - A_0 - t_o)] / 2,332 J`
//!
//! | idle period | paper's saving | wakes allowed |
//! |---|---|---|
//! | under 10 min | 7-16% (Figure 7) | 8.5-9.9 by 10 min |
//! | 67 min | 78% | 15.5 |
//! | 308 min | 91% | 23.9: 8.4 in the 241 min after the 67th, 2.1 an hour |
//!
//! That is the shape of first touch: about a wake a minute at first
//! (Figure 3's common 60 s gaps), then fewer and fewer. The defaults
//! ([`TraceConfig::paper_like`]) are worked out from this table, in this
//! order, with `F(k)` above, not fitted to the benchmark's output:
//!
//! - `working_set_faults` = 2,000 over `working_set_secs` = 138 s: the
//!   paper's mean working set, 165.63 MiB, is 42,400 pages, about 2,100
//!   faults with its 20-page prefetch window; Figure 8 fetches its batches
//!   between the migration and the first microsleep, `A_0` less `t_w`.
//! - `touch_probability` = 1/2. The energy figures cannot tell it apart from
//!   the footprints (only the number of firings it takes to cover a
//!   footprint, `F(k)`, about `ln k / -ln(1 - q)`, reaches the energy); a
//!   firing touching half its footprint is the neutral choice, and the
//!   footprints follow from it.
//! - A 60 s activity of 1,024 pages (4 MiB). By 10 minutes the paper allows
//!   8.5-9.9 wakes, more than the 7.6 firings a 60 s timer has between
//!   `A_0` and 10 minutes: it must fetch at nearly every firing of the first
//!   ten minutes, about 10 firings with the 2.4 inside `A_0`. `F(1024)` =
//!   10.3: 7.1 fetching firings between `A_0` and 10 minutes, 0.9 after.
//! - A 15 min activity of 32 pages. By 67 minutes the 60 s activity has
//!   cost 7.9 wakes and drift (below) 1.9, leaving 15.5 - 7.9 - 1.9 = 5.7,
//!   more than the 4.3 firings a 15 min timer has in that time: it fetches
//!   at every one of them and is not done. `F(32)` = 5.4: 4.0 fetching
//!   firings by 67 minutes, 1.2 after.
//! - `drift_pages_per_hour` = 1.8. After 67 minutes the paper's 91% leaves
//!   2.1 wakes an hour; the 15 min activity's last pages take 0.3 of them
//!   (1.2 in four hours), drift the rest, a burst per drifted page.
//! - A 1 s activity of 32 pages and a 5 s one of 64: covered within `A_0`,
//!   while the desktop is awake anyway, so the energy figures do not bound
//!   them; they are there because a desktop has them, for the short gaps an
//!   adaptive policy sees, and because drift lands in them too.
//! - `fault_gap_mean_secs` = 30 ms: a fault served over the LAN and the
//!   guest's run to the next. With the bursts above about 99% of gaps are
//!   under 1 s, as the paper measured (99.23%).
//!
//! The model then expects 7.9 wakes by 10 minutes (the most a 60 s timer
//! and the first firings of the others give: the paper's 10-minute figure
//! is for periods under 10 minutes, shorter ones included), 13.8 by 67 (with
//! the consolidation's own burst, about 15 bursts) and 2.1 an hour after.
//!
//! # Streams
//!
//! Every draw comes from generators seeded from [`TraceConfig::seed`], so a
//! seed names a trace; the working set, the drift and each activity draw
//! from streams of their own, so a shorter trace of a seed is the start of
//! a longer one.

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

    /// When each burst starts: a burst is a run of arrivals each less than
    /// `separation_secs` after the one before. With the separation set to a
    /// fixed wait time `t_w`, each burst after the first is (give or take
    /// the time spent serving) one wake of the desktop.
    pub fn burst_starts(&self, separation_secs: f64) -> Vec<f64> {
        let mut starts = Vec::new();
        let mut last: Option<f64> = None;
        for &at in &self.arrivals {
            if last.is_none_or(|last| at - last >= separation_secs) {
                starts.push(at);
            }
            last = Some(at);
        }
        starts
    }
}

/// One periodic activity of the guest: a timer and the pages its handler
/// may touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// Time between firings, seconds; the first firing is at a random
    /// phase in `[0, period_secs)`.
    pub period_secs: f64,
    /// Pages the activity may touch when it fires.
    pub footprint_pages: u32,
}

/// The periodic activities of an idle desktop guest, as
/// [`TraceConfig::paper_like`] has them (why these, in the module doc).
pub const DESKTOP_ACTIVITIES: [Activity; 4] = [
    // A clock tick, the compositor's frame timer.
    Activity { period_secs: 1.0, footprint_pages: 32 },
    // An IM keepalive, a socket's poll.
    Activity { period_secs: 5.0, footprint_pages: 64 },
    // A mail poll, the minute's housekeeping (Figure 3's 60 s gaps).
    Activity { period_secs: 60.0, footprint_pages: 1024 },
    // A cron job, an update check.
    Activity { period_secs: 900.0, footprint_pages: 32 },
];

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Seed of the random generator.
    pub seed: u64,
    /// Length of the idle period, seconds.
    pub duration_secs: f64,
    /// Requests right after consolidation (the guest's working set).
    pub working_set_faults: u32,
    /// Time over which the working set is fetched, seconds: its requests
    /// follow each other with exponential gaps of mean
    /// `working_set_secs / working_set_faults`.
    pub working_set_secs: f64,
    /// The guest's periodic activities; one with a period that is not
    /// positive and finite never fires.
    pub activities: Vec<Activity>,
    /// Probability that a firing touches a given page of its activity's
    /// footprint, in `[0, 1]` (clamped; not a number counts as 0).
    pub touch_probability: f64,
    /// Footprint pages replaced by pages not on the server, per hour, over
    /// all activities; 0 for none.
    pub drift_pages_per_hour: f64,
    /// Mean gap between the requests of one burst, seconds.
    pub fault_gap_mean_secs: f64,
}

impl TraceConfig {
    /// The model described in the module doc, with the parameters derived
    /// there, over `duration_secs`.
    pub fn paper_like(seed: u64, duration_secs: f64) -> TraceConfig {
        TraceConfig {
            seed,
            duration_secs,
            working_set_faults: 2000,
            working_set_secs: 138.0,
            activities: DESKTOP_ACTIVITIES.to_vec(),
            touch_probability: 0.5,
            drift_pages_per_hour: 1.8,
            fault_gap_mean_secs: 0.03,
        }
    }
}

/// Generates a trace from `config`; the same config gives the same trace,
/// and the same config over a shorter duration gives its start.
pub fn generate(config: &TraceConfig) -> RequestTrace {
    // One stream per part of the model, so that how long one part draws
    // (the drift until the end of the period) moves no other.
    let mut seeds = StdRng::seed_from_u64(config.seed);
    let mut working_set = StdRng::seed_from_u64(seeds.gen());
    let mut drift = StdRng::seed_from_u64(seeds.gen());
    let gap_mean = config.fault_gap_mean_secs.max(0.0);
    let touch = if config.touch_probability.is_nan() { 0.0 } else { config.touch_probability.clamp(0.0, 1.0) };
    let mut arrivals = Vec::new();

    let working_set_gap = if config.working_set_faults > 0 {
        config.working_set_secs.max(0.0) / f64::from(config.working_set_faults)
    } else {
        0.0
    };
    let mut at = 0.0;
    for i in 0..config.working_set_faults {
        if i > 0 {
            at += exponential(&mut working_set, working_set_gap);
        }
        arrivals.push(at);
    }

    let fires = |activity: &Activity| activity.period_secs.is_finite() && activity.period_secs > 0.0;
    let footprints: Vec<u32> =
        config.activities.iter().map(|activity| if fires(activity) { activity.footprint_pages } else { 0 }).collect();
    let drifts = drift_events(&mut drift, config, &footprints);
    for (activity, drifts) in config.activities.iter().zip(drifts) {
        // Drawn for every activity, firing or not, so that each keeps its
        // stream whatever the others are.
        let mut rng = StdRng::seed_from_u64(seeds.gen());
        if !fires(activity) {
            continue;
        }
        // Whether each page of the footprint is on the server.
        let mut on_server = vec![false; activity.footprint_pages as usize];
        let mut drifts = drifts.into_iter().peekable();
        let mut firing = rng.gen_range(0.0..activity.period_secs);
        while firing < config.duration_secs {
            while let Some((_, page)) = drifts.next_if(|&(drifted_at, _)| drifted_at <= firing) {
                on_server[page] = false;
            }
            let mut fault_at = firing;
            let mut faults = 0_u32;
            for present in on_server.iter_mut() {
                // Drawn for every page, fetched or not: what a firing
                // touches does not depend on what the server has.
                if rng.gen_bool(touch) && !*present {
                    *present = true;
                    if faults > 0 {
                        fault_at += exponential(&mut rng, gap_mean);
                    }
                    faults += 1;
                    arrivals.push(fault_at);
                }
            }
            firing += activity.period_secs;
        }
    }
    RequestTrace::new(config.duration_secs, arrivals)
}

/// The drift over the idle period: per activity, when which page of its
/// footprint (`footprints[i]` pages) was replaced, ascending.
fn drift_events(rng: &mut StdRng, config: &TraceConfig, footprints: &[u32]) -> Vec<Vec<(f64, usize)>> {
    let mut events = vec![Vec::new(); footprints.len()];
    let total: u64 = footprints.iter().map(|&pages| u64::from(pages)).sum();
    let rate = config.drift_pages_per_hour;
    if total == 0 || !rate.is_finite() || rate <= 0.0 {
        return events;
    }
    let mean_secs = 3600.0 / rate;
    let mut at = exponential(rng, mean_secs);
    while at < config.duration_secs {
        let mut page = rng.gen_range(0..total);
        for (&pages, events) in footprints.iter().zip(events.iter_mut()) {
            let pages = u64::from(pages);
            if page < pages {
                events.push((at, page as usize));
                break;
            }
            page -= pages;
        }
        at += exponential(rng, mean_secs);
    }
    events
}

/// An exponential draw with the given mean.
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.gen();
    -mean * (1.0 - u).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One activity alone, nothing else in the trace.
    fn alone(activity: Activity, touch_probability: f64, drift_pages_per_hour: f64, hours: f64) -> TraceConfig {
        TraceConfig {
            seed: 1,
            duration_secs: hours * 3600.0,
            working_set_faults: 0,
            working_set_secs: 0.0,
            activities: vec![activity],
            touch_probability,
            drift_pages_per_hour,
            fault_gap_mean_secs: 0.03,
        }
    }

    const MINUTELY: Activity = Activity { period_secs: 60.0, footprint_pages: 256 };

    #[test]
    fn a_shorter_trace_is_the_start_of_a_longer_one() {
        let long = generate(&TraceConfig::paper_like(3, 308.0 * 60.0));
        for minutes in [10.0, 67.0] {
            let short = generate(&TraceConfig::paper_like(3, minutes * 60.0));
            let start: Vec<f64> = long.arrivals.iter().copied().filter(|&at| at < minutes * 60.0).collect();
            assert_eq!(short.arrivals, start, "{minutes} min");
        }
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = generate(&TraceConfig::paper_like(7, 600.0));
        assert_eq!(a, generate(&TraceConfig::paper_like(7, 600.0)));
        assert_ne!(a, generate(&TraceConfig::paper_like(8, 600.0)));
    }

    #[test]
    fn an_activity_touching_all_its_pages_reaches_the_desktop_once() {
        let trace = generate(&alone(MINUTELY, 1.0, 0.0, 5.0));
        assert_eq!(trace.arrivals.len(), 256, "each page fetched once");
        assert_eq!(trace.burst_starts(30.0).len(), 1, "at the first firing only");
        assert!(trace.arrivals[0] < 60.0);
    }

    #[test]
    fn an_activity_touching_half_its_pages_fetches_each_once_in_shrinking_bursts() {
        for seed in 1..=5 {
            let trace = generate(&TraceConfig { seed, ..alone(MINUTELY, 0.5, 0.0, 5.0) });
            assert_eq!(trace.arrivals.len(), 256, "seed {seed}: each page fetched once, then never again");
            let starts = trace.burst_starts(30.0);
            assert!(starts.len() > 3, "seed {seed}: a firing touches only some of the pages");
            let sizes: Vec<usize> = starts
                .iter()
                .map(|&start| trace.arrivals.iter().filter(|&&at| at >= start && at < start + 30.0).count())
                .collect();
            // The first firing fetches about half, each later one about
            // half of what is left.
            assert!(sizes[1..].iter().all(|&size| size < sizes[0]), "seed {seed}: {sizes:?}");
            assert!(sizes[3..].iter().sum::<usize>() < sizes[0] / 2, "seed {seed}: {sizes:?}");
            // Covered long before the period ends: the last hours are quiet.
            assert!(*trace.arrivals.last().unwrap() < 3600.0, "seed {seed}");
        }
    }

    #[test]
    fn drift_reaches_the_desktop_at_its_rate() {
        let hours = 100.0;
        let trace = generate(&alone(MINUTELY, 1.0, 2.0, hours));
        // After the first firing every request is a drifted page, fetched
        // at the next firing.
        let after_first = trace.arrivals.iter().filter(|&&at| at >= 60.0).count() as f64;
        assert!((150.0..=250.0).contains(&after_first), "{after_first} drifted pages in {hours} h at 2 an hour");
        let bursts = trace.burst_starts(30.0).len() as f64 - 1.0;
        assert!(bursts <= after_first && bursts >= 0.9 * after_first, "{bursts} bursts of {after_first} pages");
    }

    /// The shape the paper's savings allow (module doc): about 15 bursts in
    /// the first 67 minutes, about 2 an hour after, a rate that falls.
    #[test]
    fn matches_the_papers_burstiness() {
        let seeds = 1..=10_u64;
        let (mut early, mut late_per_hour) = (0.0, 0.0);
        for seed in seeds.clone() {
            let trace = generate(&TraceConfig::paper_like(seed, 308.0 * 60.0));
            assert!(trace.fraction_of_gaps_below(1.0) >= 0.98, "{}", trace.fraction_of_gaps_below(1.0));
            let starts = trace.burst_starts(crate::DEFAULT_WAIT_SECS);
            let in_first_67 = starts.iter().filter(|&&at| at < 67.0 * 60.0).count() as f64;
            let per_hour_after = (starts.len() as f64 - in_first_67) / (241.0 / 60.0);
            let in_first_10 = starts.iter().filter(|&&at| at < 10.0 * 60.0).count() as f64;
            assert!(in_first_10 > 2.0 * per_hour_after / 6.0, "seed {seed}: the rate falls");
            assert!(in_first_67 / (67.0 / 60.0) > 2.0 * per_hour_after, "seed {seed}: the rate falls");
            early += in_first_67;
            late_per_hour += per_hour_after;
        }
        let n = seeds.count() as f64;
        let (early, late_per_hour) = (early / n, late_per_hour / n);
        assert!((12.0..=18.0).contains(&early), "{early} bursts in the first 67 minutes");
        assert!((1.0..=3.0).contains(&late_per_hour), "{late_per_hour} bursts an hour after");
    }

    #[test]
    fn new_sorts_and_drops_outsiders() {
        let trace = RequestTrace::new(10.0, vec![5.0, 1.0, -1.0, 10.0, f64::NAN, 3.0]);
        assert_eq!(trace.arrivals, vec![1.0, 3.0, 5.0]);
        assert_eq!(trace.fraction_of_gaps_below(3.0), 1.0);
        assert_eq!(trace.burst_starts(2.0), vec![1.0, 3.0, 5.0]);
        assert_eq!(trace.burst_starts(2.5), vec![1.0]);
    }
}
