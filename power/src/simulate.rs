//! A simulated desktop: a request trace replayed through a microsleep
//! policy and an energy ledger.
//!
//! # The desktop's behaviour
//!
//! ```text
//!             request                 t_w passes, no request
//!   Serving ------------> Idle ------------------------------> Suspending
//!      ^                                                          |  t_o
//!      |  t_r                request                              v
//!   Resuming <--------------------------------------------------- Asleep
//! ```
//!
//! - The consolidation itself counts as the last request at time 0: the
//!   desktop starts awake and idle, and sleeps after `t_w`.
//! - A request is served for [`SimConfig::serve_secs`] at serving power;
//!   requests that arrive while the desktop is busy (serving, resuming)
//!   queue and are served one after another.
//! - `t_w` counts from the end of the last service, and is asked of the
//!   policy after each request (the adaptive policy changes it).
//! - A request arriving while the desktop is asleep wakes it: it resumes
//!   for `t_r`, then serves. One arriving while it is suspending cannot
//!   stop the suspend: it waits for the suspend to finish and for a whole
//!   resume, and is counted as *delayed by a suspend*.
//! - When the user returns (the end of the trace) a sleeping desktop
//!   resumes too (finishing a suspend first): that cost belongs to the
//!   consolidation, and the idle baseline covers the same, longer, time.

use serde::{Deserialize, Serialize};

use crate::trace::RequestTrace;
use crate::{EnergyLedger, EnergyReport, MicrosleepPolicy, PowerError, PowerState};

/// Parameters of the simulated desktop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Time to serve one request, seconds.
    pub serve_secs: f64,
}

impl Default for SimConfig {
    /// 10 ms per request: a page and its prefetch window over a LAN.
    fn default() -> SimConfig {
        SimConfig { serve_secs: 0.01 }
    }
}

/// What one replay cost and how the requests fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// The policy's name.
    pub policy: String,
    /// Requests replayed.
    pub requests: u64,
    /// Resumes, the final one for the user's return included. Every
    /// suspend ends in one, so this is also the number of sleeps.
    pub wakes: u64,
    /// Resumes a request caused: `wakes` but the user's return. The
    /// server's Wake-on-LAN counts these.
    pub woken_by_requests: u64,
    /// Requests that waited for a resume: they arrived while the desktop
    /// was suspending, asleep or resuming.
    pub waited_for_wake: u64,
    /// Requests that arrived during a suspend and waited for it and a resume.
    pub delayed_by_suspend: u64,
    /// Sum over requests of the time from arrival to the start of service
    /// (waiting for a resume, a suspend or queued requests), seconds.
    pub total_delay_secs: f64,
    /// The longest such wait, seconds.
    pub max_delay_secs: f64,
    /// The wait time the policy had chosen by the end, seconds.
    pub final_wait_secs: f64,
    /// The energy account of the consolidation.
    pub energy: EnergyReport,
}

/// Replays `trace` through `policy` on a desktop with the policy's
/// profile; returns the report and the ledger (for its power trace).
///
/// # Errors
///
/// Only if the trace holds a non-finite time, which [`RequestTrace::new`]
/// never lets in.
pub fn simulate(
    trace: &RequestTrace,
    policy: &mut MicrosleepPolicy,
    config: SimConfig,
) -> Result<(SimReport, EnergyLedger), PowerError> {
    let profile = *policy.profile();
    let mut ledger = EnergyLedger::new(profile);
    let mut report = SimReport {
        policy: policy.name(),
        requests: 0,
        wakes: 0,
        woken_by_requests: 0,
        waited_for_wake: 0,
        delayed_by_suspend: 0,
        total_delay_secs: 0.0,
        max_delay_secs: 0.0,
        final_wait_secs: 0.0,
        energy: EnergyReport::default(),
    };

    ledger.begin(PowerState::Idle, 0.0)?;
    policy.on_request(0.0)?;
    // When the desktop is done with the work it has (serving or resuming).
    let mut free_at = 0.0_f64;
    let mut sleep_at = free_at + policy.wait_secs();
    // The last suspend, start and end: requests arriving in it are delayed
    // by a suspend; those arriving before the resume that followed it ends
    // waited for a wake.
    let mut suspend = (f64::NAN, f64::NAN);
    let mut awake_again = f64::NAN;

    for &arrival in &trace.arrivals {
        if arrival >= sleep_at {
            free_at = sleep_then_wake(&mut ledger, sleep_at, arrival)?;
            report.woken_by_requests += 1;
            suspend = (sleep_at, sleep_at + profile.suspend_secs);
            awake_again = free_at;
        }
        if arrival >= suspend.0 && arrival < suspend.1 {
            report.delayed_by_suspend += 1;
        }
        if arrival >= suspend.0 && arrival < awake_again {
            report.waited_for_wake += 1;
        }
        let start = arrival.max(free_at);
        let delay = start - arrival;
        report.requests += 1;
        report.total_delay_secs += delay;
        report.max_delay_secs = report.max_delay_secs.max(delay);
        ledger.enter(PowerState::Serving, start)?;
        free_at = start + config.serve_secs;
        ledger.enter(PowerState::Idle, free_at)?;
        policy.on_request(arrival)?;
        sleep_at = free_at + policy.wait_secs();
    }

    let end = if sleep_at <= trace.duration_secs {
        // Asleep (or suspending) when the user returns: wake for them.
        sleep_then_wake(&mut ledger, sleep_at, trace.duration_secs)?
    } else {
        trace.duration_secs.max(free_at)
    };
    report.energy = ledger.end(end)?;
    report.wakes = report.energy.wakes;
    report.final_wait_secs = policy.wait_secs();
    Ok((report, ledger))
}

/// The desktop suspends at `sleep_at` and is woken by something arriving at
/// `wake_at`; returns when it is awake again.
fn sleep_then_wake(ledger: &mut EnergyLedger, sleep_at: f64, wake_at: f64) -> Result<f64, PowerError> {
    let profile = *ledger.profile();
    ledger.enter(PowerState::Suspending, sleep_at)?;
    let suspended = sleep_at + profile.suspend_secs;
    let resume_at = if wake_at < suspended {
        suspended
    } else {
        ledger.enter(PowerState::Asleep, suspended)?;
        wake_at
    };
    ledger.enter(PowerState::Resuming, resume_at)?;
    Ok(resume_at + profile.resume_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdaptiveConfig, PowerProfile};

    fn fixed(wait: f64) -> MicrosleepPolicy {
        MicrosleepPolicy::fixed(PowerProfile::TABLE_1, wait).unwrap()
    }

    #[test]
    fn no_requests_one_sleep_and_the_final_wake() {
        let p = PowerProfile::TABLE_1;
        let trace = RequestTrace::new(600.0, vec![]);
        let (report, _) = simulate(&trace, &mut fixed(6.0), SimConfig::default()).unwrap();
        assert_eq!(report.wakes, 1);
        let e = report.energy;
        assert!((e.secs.idle - 6.0).abs() < 1e-9);
        assert!((e.secs.suspending - p.suspend_secs).abs() < 1e-9);
        assert!((e.secs.asleep - (600.0 - 6.0 - p.suspend_secs)).abs() < 1e-9);
        assert!((e.wall_secs - (600.0 + p.resume_secs)).abs() < 1e-9);
        assert!(e.saved_percent > 80.0);
    }

    #[test]
    fn a_request_during_a_suspend_waits_for_it_and_a_resume() {
        let p = PowerProfile::TABLE_1;
        let trace = RequestTrace::new(100.0, vec![10.0]);
        let (report, ledger) = simulate(&trace, &mut fixed(6.0), SimConfig::default()).unwrap();
        assert_eq!(report.delayed_by_suspend, 1);
        assert_eq!(report.waited_for_wake, 1);
        assert_eq!(report.woken_by_requests, 1);
        let expected = 6.0 + p.suspend_secs + p.resume_secs - 10.0;
        assert!((report.total_delay_secs - expected).abs() < 1e-9);
        // Woken for the request, then for the user.
        assert_eq!(report.wakes, 2);
        let states: Vec<_> = ledger.steps().iter().map(|step| step.state).collect();
        assert_eq!(
            &states[..5],
            &[PowerState::Idle, PowerState::Suspending, PowerState::Resuming, PowerState::Serving, PowerState::Idle]
        );
    }

    #[test]
    fn queued_requests_are_served_before_sleeping_even_with_zero_wait() {
        let trace = RequestTrace::new(100.0, vec![1.0, 1.001, 1.002]);
        let (report, ledger) = simulate(&trace, &mut fixed(0.0), SimConfig::default()).unwrap();
        // The burst lands in the first suspend: one wake serves all three.
        // Then one more sleep, and the wake for the user.
        assert_eq!(report.wakes, 2);
        assert_eq!((report.woken_by_requests, report.waited_for_wake), (1, 3));
        assert_eq!(report.delayed_by_suspend, 3);
        let serving = ledger.steps().iter().filter(|step| step.state == PowerState::Serving).count();
        assert_eq!(serving, 1, "served back to back");
    }

    /// A request that wakes the desktop from sleep, and one that comes
    /// while it resumes, waited for a wake; neither met a suspend.
    #[test]
    fn requests_during_a_sleep_or_a_resume_wait_for_the_wake() {
        let p = PowerProfile::TABLE_1;
        let woke = 6.0 + p.suspend_secs + 20.0;
        let trace = RequestTrace::new(200.0, vec![1.0, woke, woke + 1.0, woke + p.resume_secs + 1.0]);
        let (report, _) = simulate(&trace, &mut fixed(6.0), SimConfig::default()).unwrap();
        assert_eq!((report.requests, report.waited_for_wake, report.delayed_by_suspend), (4, 2, 0));
        // Woken by the request, then again for the user's return.
        assert_eq!((report.woken_by_requests, report.wakes), (1, 2));
    }

    #[test]
    fn energy_adds_up_to_the_ledger() {
        let trace = crate::trace::generate(&crate::trace::TraceConfig::paper_like(3, 1800.0));
        let (report, ledger) = simulate(&trace, &mut fixed(6.0), SimConfig::default()).unwrap();
        let total = ledger.summary(0.0).total.unwrap();
        assert_eq!(total, report.energy);
        assert_eq!(report.requests as usize, trace.arrivals.len());
        assert!((report.energy.secs.serving - 0.01 * report.requests as f64).abs() < 1e-6);
    }

    /// On a first-touch trace the guest reaches the desktop less and less
    /// often, so wakes per hour fall and the saving grows with the idle
    /// period (the shape of the paper's Figure 7), for either policy.
    #[test]
    fn savings_grow_with_the_idle_period_on_first_touch_traces() {
        use crate::trace::{generate, TraceConfig};
        let policy = |adaptive: bool| {
            if adaptive {
                MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, AdaptiveConfig::default()).unwrap()
            } else {
                fixed(6.0)
            }
        };
        for adaptive in [false, true] {
            let (mut saved, mut wakes_per_hour) = (f64::NEG_INFINITY, f64::INFINITY);
            for minutes in [10.0, 67.0, 308.0] {
                let trace = generate(&TraceConfig::paper_like(2, minutes * 60.0));
                let mut policy = policy(adaptive);
                let (report, _) = simulate(&trace, &mut policy, SimConfig::default()).unwrap();
                let rate = report.wakes as f64 / (minutes / 60.0);
                assert!(report.energy.saved_percent > saved, "{} at {minutes} min", report.policy);
                assert!(rate < wakes_per_hour, "{} at {minutes} min", report.policy);
                (saved, wakes_per_hour) = (report.energy.saved_percent, rate);
            }
        }
    }

    /// Bursts whose requests pause 7-9 s: a fixed 6 s wait suspends just
    /// before each next request, every time; the adaptive policy learns to
    /// wait the pauses out and sleeps only between bursts.
    #[test]
    fn adaptive_beats_fixed_6_s_when_pauses_are_7_to_9_s() {
        let mut arrivals = Vec::new();
        let mut at = 0.0;
        for burst in 0..40 {
            for i in 0..10 {
                arrivals.push(at);
                // A deterministic spread over 7-9 s.
                at += 7.0 + ((burst * 10 + i) % 9) as f64 * 0.25;
            }
            at += 300.0;
        }
        let trace = RequestTrace::new(at, arrivals);
        let config = AdaptiveConfig { min_gaps: 20, ..AdaptiveConfig::default() };
        let mut adaptive = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        let (learned, _) = simulate(&trace, &mut adaptive, SimConfig::default()).unwrap();
        let (six, _) = simulate(&trace, &mut fixed(6.0), SimConfig::default()).unwrap();

        assert!(learned.final_wait_secs > 9.0 && learned.final_wait_secs < 10.0, "{}", learned.final_wait_secs);
        assert!(learned.energy.joules < six.energy.joules, "{} vs {}", learned.energy.joules, six.energy.joules);
        assert!(learned.wakes < six.wakes / 3, "{} vs {}", learned.wakes, six.wakes);
        assert!(learned.total_delay_secs < six.total_delay_secs);
    }
}
