//! The energy ledger: a desktop's time in each power state, integrated with
//! its profile, against the baseline of leaving it idle.
//!
//! The ledger is driven only by timestamped transitions
//! ([`EnergyLedger::begin`], [`EnergyLedger::enter`], [`EnergyLedger::end`]),
//! never by a clock of its own, so the desktop daemon can feed it live and
//! the benchmark can feed it a replayed trace, with the same arithmetic.
//!
//! The baseline is what the paper compares against: the same wall time,
//! from the start of a consolidation to its end, spent at idle power. The
//! desktop only draws serving power because the VM's requests reach it; an
//! idle desktop running the VM itself would have served them locally at
//! about idle power, so the baseline charges none of it.

use serde::{Deserialize, Serialize};

use crate::{PowerError, PowerProfile, PowerState};

/// Seconds spent in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StateSecs {
    /// Awake, waiting for requests.
    pub idle: f64,
    /// Entering S3.
    pub suspending: f64,
    /// In S3.
    pub asleep: f64,
    /// Leaving S3.
    pub resuming: f64,
    /// Serving requests.
    pub serving: f64,
}

impl StateSecs {
    /// The seconds spent in `state`.
    pub fn get(&self, state: PowerState) -> f64 {
        match state {
            PowerState::Idle => self.idle,
            PowerState::Suspending => self.suspending,
            PowerState::Asleep => self.asleep,
            PowerState::Resuming => self.resuming,
            PowerState::Serving => self.serving,
        }
    }

    /// Adds `secs` to `state`.
    pub fn add(&mut self, state: PowerState, secs: f64) {
        let slot = match state {
            PowerState::Idle => &mut self.idle,
            PowerState::Suspending => &mut self.suspending,
            PowerState::Asleep => &mut self.asleep,
            PowerState::Resuming => &mut self.resuming,
            PowerState::Serving => &mut self.serving,
        };
        *slot += secs;
    }

    /// The sum over every state.
    pub fn total(&self) -> f64 {
        PowerState::ALL.iter().map(|&state| self.get(state)).sum()
    }

    /// The energy these times cost under `profile`, joules.
    pub fn joules(&self, profile: &PowerProfile) -> f64 {
        PowerState::ALL.iter().map(|&state| self.get(state) * profile.watts(state)).sum()
    }
}

/// Energy of one consolidation, or of several summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    /// When it began, seconds (the first one's, for a total).
    pub began_secs: f64,
    /// When it ended, seconds (the last one's, for a total).
    pub ended_secs: f64,
    /// Time covered, seconds (summed over consolidations for a total).
    pub wall_secs: f64,
    /// Time in each state.
    pub secs: StateSecs,
    /// Resumes: wake-ups by remote requests, and the one for the user's
    /// return if the consolidation ended asleep.
    pub wakes: u64,
    /// Energy the desktop used, joules.
    pub joules: f64,
    /// Energy it would have used staying idle for the same time, joules.
    pub idle_baseline_joules: f64,
    /// `idle_baseline_joules - joules`; negative when sleeping cost more.
    pub saved_joules: f64,
    /// Saved energy as a percentage of the baseline.
    pub saved_percent: f64,
}

impl EnergyReport {
    fn new(began_secs: f64, ended_secs: f64, secs: StateSecs, wakes: u64, profile: &PowerProfile) -> EnergyReport {
        let wall_secs = secs.total();
        let joules = secs.joules(profile);
        let idle_baseline_joules = wall_secs * profile.idle_watts;
        let saved_joules = idle_baseline_joules - joules;
        let saved_percent = if idle_baseline_joules > 0.0 { 100.0 * saved_joules / idle_baseline_joules } else { 0.0 };
        EnergyReport {
            began_secs,
            ended_secs,
            wall_secs,
            secs,
            wakes,
            joules,
            idle_baseline_joules,
            saved_joules,
            saved_percent,
        }
    }
}

/// Every consolidation's report and their total, for `jettison status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// The profile the energy was computed with.
    pub profile: PowerProfile,
    /// One report per consolidation, the open one (up to its last
    /// transition) last.
    pub consolidations: Vec<EnergyReport>,
    /// Their sum; `None` before the first consolidation.
    pub total: Option<EnergyReport>,
}

impl LedgerSummary {
    /// The summary of `consolidations` (in order) under `profile`, with
    /// their total.
    pub fn of(profile: PowerProfile, consolidations: Vec<EnergyReport>) -> LedgerSummary {
        let total = consolidations.first().map(|first| {
            let mut secs = StateSecs::default();
            let mut wakes = 0;
            for report in &consolidations {
                for state in PowerState::ALL {
                    secs.add(state, report.secs.get(state));
                }
                wakes += report.wakes;
            }
            let ended = consolidations.last().map_or(first.ended_secs, |last| last.ended_secs);
            EnergyReport::new(first.began_secs, ended, secs, wakes, &profile)
        });
        LedgerSummary { profile, consolidations, total }
    }
}

/// One step of the power trace: from `at_secs` the desktop draws `watts`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerStep {
    /// When the step starts, seconds.
    pub at_secs: f64,
    /// The power from then on, watts.
    pub watts: f64,
    /// The state drawing it.
    pub state: PowerState,
}

#[derive(Debug, Clone)]
struct Open {
    began: f64,
    state: PowerState,
    since: f64,
    secs: StateSecs,
    wakes: u64,
}

/// Integrates a desktop's power over its state transitions.
#[derive(Debug, Clone)]
pub struct EnergyLedger {
    profile: PowerProfile,
    open: Option<Open>,
    closed: Vec<EnergyReport>,
    steps: Vec<PowerStep>,
}

impl EnergyLedger {
    /// An empty ledger for a desktop with `profile`.
    pub fn new(profile: PowerProfile) -> EnergyLedger {
        EnergyLedger { profile, open: None, closed: Vec::new(), steps: Vec::new() }
    }

    /// The profile in use.
    pub fn profile(&self) -> &PowerProfile {
        &self.profile
    }

    /// The state of the open consolidation and when it was entered.
    pub fn current(&self) -> Option<(PowerState, f64)> {
        self.open.as_ref().map(|open| (open.state, open.since))
    }

    /// Starts a consolidation at `at_secs` in `state`.
    ///
    /// # Errors
    ///
    /// [`PowerError::AlreadyConsolidated`] if one is open,
    /// [`PowerError::TimeWentBackwards`] if `at_secs` is before the end of
    /// the previous one, [`PowerError::InvalidTime`] if it is not finite.
    pub fn begin(&mut self, state: PowerState, at_secs: f64) -> Result<(), PowerError> {
        finite("energy ledger begin", at_secs)?;
        if let Some(open) = &self.open {
            return Err(PowerError::AlreadyConsolidated { at: at_secs, open_since: open.began });
        }
        if let Some(last) = self.closed.last() {
            if at_secs < last.ended_secs {
                return Err(PowerError::TimeWentBackwards { state, at: at_secs, previous: last.ended_secs });
            }
        }
        self.open = Some(Open { began: at_secs, state, since: at_secs, secs: StateSecs::default(), wakes: 0 });
        self.push_raw_step(at_secs, state);
        Ok(())
    }

    /// The desktop enters `state` at `at_secs`. Entering the state it is
    /// already in changes nothing.
    ///
    /// # Errors
    ///
    /// [`PowerError::NotConsolidated`], [`PowerError::TimeWentBackwards`],
    /// [`PowerError::InvalidTime`].
    pub fn enter(&mut self, state: PowerState, at_secs: f64) -> Result<(), PowerError> {
        finite("energy ledger enter", at_secs)?;
        let open = self.open.as_mut().ok_or(PowerError::NotConsolidated { operation: "enter", at: at_secs })?;
        if at_secs < open.since {
            return Err(PowerError::TimeWentBackwards { state, at: at_secs, previous: open.since });
        }
        if state == open.state {
            return Ok(());
        }
        open.secs.add(open.state, at_secs - open.since);
        if state == PowerState::Resuming {
            open.wakes += 1;
        }
        open.state = state;
        open.since = at_secs;
        self.push_step(at_secs, state);
        Ok(())
    }

    /// Ends the open consolidation at `at_secs` and returns its report.
    ///
    /// # Errors
    ///
    /// [`PowerError::NotConsolidated`], [`PowerError::TimeWentBackwards`],
    /// [`PowerError::InvalidTime`].
    pub fn end(&mut self, at_secs: f64) -> Result<EnergyReport, PowerError> {
        finite("energy ledger end", at_secs)?;
        let open = self.open.as_ref().ok_or(PowerError::NotConsolidated { operation: "end", at: at_secs })?;
        if at_secs < open.since {
            return Err(PowerError::TimeWentBackwards { state: open.state, at: at_secs, previous: open.since });
        }
        let (report, state) = (self.report_of(open, at_secs), open.state);
        self.push_raw_step(at_secs, state);
        self.open = None;
        self.closed.push(report);
        Ok(report)
    }

    /// `open`'s report as if it ended at `at_secs` (no earlier than its
    /// last transition).
    fn report_of(&self, open: &Open, at_secs: f64) -> EnergyReport {
        let at = at_secs.max(open.since);
        let mut secs = open.secs;
        secs.add(open.state, at - open.since);
        EnergyReport::new(open.began, at, secs, open.wakes, &self.profile)
    }

    /// Records a step. A step at the same time as the last one replaces it
    /// (a zero-length state draws nothing), and a step that then repeats
    /// its predecessor's state is merged into it.
    fn push_step(&mut self, at_secs: f64, state: PowerState) {
        if self.steps.last().is_some_and(|last| last.at_secs == at_secs) {
            self.steps.pop();
        }
        if self.steps.last().is_some_and(|last| last.state == state) {
            return;
        }
        self.steps.push(PowerStep { at_secs, watts: self.profile.watts(state), state });
    }

    /// Records a step as is: a consolidation's first, or its closing step
    /// (its last power again, at its end).
    fn push_raw_step(&mut self, at_secs: f64, state: PowerState) {
        self.steps.push(PowerStep { at_secs, watts: self.profile.watts(state), state });
    }

    /// Every consolidation so far (an open one up to `now_secs`), and the
    /// total.
    pub fn summary(&self, now_secs: f64) -> LedgerSummary {
        let mut consolidations = self.closed.clone();
        if let Some(open) = &self.open {
            consolidations.push(self.report_of(open, now_secs));
        }
        LedgerSummary::of(self.profile, consolidations)
    }

    /// The power over time as steps. Each consolidation's last step is at
    /// its end and repeats its last power, so a chart's line stops there.
    pub fn steps(&self) -> &[PowerStep] {
        &self.steps
    }

    /// The power over time as `(seconds, watts)` steps: from each time on,
    /// the desktop draws that power until the next.
    pub fn power_trace(&self) -> Vec<(f64, f64)> {
        self.steps.iter().map(|step| (step.at_secs, step.watts)).collect()
    }
}

fn finite(what: &'static str, at: f64) -> Result<(), PowerError> {
    if at.is_finite() {
        Ok(())
    } else {
        Err(PowerError::InvalidTime { what, at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn integrates_each_state_with_its_power() {
        let p = PowerProfile::TABLE_1;
        let mut ledger = EnergyLedger::new(p);
        ledger.begin(PowerState::Idle, 0.0).unwrap();
        ledger.enter(PowerState::Suspending, 6.0).unwrap();
        ledger.enter(PowerState::Asleep, 6.0 + p.suspend_secs).unwrap();
        ledger.enter(PowerState::Resuming, 100.0).unwrap();
        ledger.enter(PowerState::Serving, 100.0 + p.resume_secs).unwrap();
        let report = ledger.end(110.0).unwrap();
        let expected = 6.0 * p.idle_watts
            + p.suspend_secs * p.suspend_watts
            + (100.0 - 6.0 - p.suspend_secs) * p.sleep_watts
            + p.resume_secs * p.resume_watts
            + (110.0 - 100.0 - p.resume_secs) * p.serving_watts;
        assert!(close(report.joules, expected));
        assert!(close(report.wall_secs, 110.0));
        assert!(close(report.idle_baseline_joules, 110.0 * p.idle_watts));
        assert!(close(report.saved_joules, 110.0 * p.idle_watts - expected));
        assert_eq!(report.wakes, 1);
    }

    #[test]
    fn staying_idle_saves_nothing() {
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        ledger.begin(PowerState::Idle, 10.0).unwrap();
        let report = ledger.end(70.0).unwrap();
        assert!(close(report.saved_joules, 0.0) && close(report.saved_percent, 0.0));
    }

    #[test]
    fn totals_sum_consolidations_and_include_the_open_one() {
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        ledger.begin(PowerState::Asleep, 0.0).unwrap();
        ledger.end(100.0).unwrap();
        ledger.begin(PowerState::Idle, 200.0).unwrap();
        ledger.enter(PowerState::Asleep, 210.0).unwrap();
        let summary = ledger.summary(300.0);
        assert_eq!(summary.consolidations.len(), 2);
        let total = summary.total.unwrap();
        assert!(close(total.wall_secs, 200.0));
        assert!(close(total.secs.asleep, 190.0) && close(total.secs.idle, 10.0));
        let json = serde_json::to_string(&summary).unwrap();
        let back: LedgerSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn rejects_out_of_order_and_unopened_transitions() {
        let mut ledger = EnergyLedger::new(PowerProfile::TABLE_1);
        assert!(matches!(ledger.enter(PowerState::Idle, 0.0), Err(PowerError::NotConsolidated { .. })));
        ledger.begin(PowerState::Idle, 5.0).unwrap();
        assert!(matches!(ledger.begin(PowerState::Idle, 6.0), Err(PowerError::AlreadyConsolidated { .. })));
        assert!(matches!(ledger.enter(PowerState::Asleep, 4.0), Err(PowerError::TimeWentBackwards { .. })));
        assert!(matches!(ledger.enter(PowerState::Asleep, f64::NAN), Err(PowerError::InvalidTime { .. })));
        ledger.end(7.0).unwrap();
        assert!(matches!(ledger.begin(PowerState::Idle, 6.0), Err(PowerError::TimeWentBackwards { .. })));
    }

    #[test]
    fn power_trace_has_a_step_per_transition_and_folds_zero_length_ones() {
        let p = PowerProfile::TABLE_1;
        let mut ledger = EnergyLedger::new(p);
        ledger.begin(PowerState::Idle, 0.0).unwrap();
        ledger.enter(PowerState::Serving, 1.0).unwrap();
        ledger.enter(PowerState::Idle, 1.5).unwrap();
        ledger.enter(PowerState::Serving, 1.5).unwrap(); // zero-length idle
        ledger.enter(PowerState::Serving, 1.7).unwrap(); // same state: nothing
        ledger.end(2.0).unwrap();
        assert_eq!(ledger.power_trace(), vec![(0.0, p.idle_watts), (1.0, p.serving_watts), (2.0, p.serving_watts)]);
    }
}
