//! The monitor's decision, as a pure state machine fed the time and the
//! idle source's answer.
//!
//! ```text
//! Active --idle >= idle threshold--> Warning --warning over, no input--> Consolidated
//!   ^                                   |                                     |
//!   +------------ input (cancel) -------+                                   input
//!   |                                                                         v
//!   +---------------- reintegration done ----------------------------- Reintegrating
//! ```
//!
//! "Input since t" is read off the idle time: the last input was at
//! `now - idle_for`, so there was input since `t` if that is after `t`. This
//! holds for every source, whatever its clock, as long as it answers in the
//! same units as time passes.
//!
//! Idle time in `Active` counts from the later of the last input and the
//! moment the machine became active (start, a cancelled warning, a finished
//! reintegration, a failed consolidation), so each of those earns the user a
//! full idle period before the next warning.

use std::fmt;
use std::time::{Duration, Instant};

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    /// Time without input before the warning (the paper's 15 s).
    pub idle: Duration,
    /// How long the warning lasts before consolidation (the paper's 5 s).
    pub warn: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig { idle: Duration::from_secs(15), warn: Duration::from_secs(5) }
    }
}

/// Where the monitor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorState {
    /// The user is (or may be) at the desktop; the VM runs here.
    Active {
        /// When this state began; idle time counts from no earlier.
        since: Instant,
    },
    /// Idle long enough; the user has been warned.
    Warning {
        /// When the warning began.
        since: Instant,
    },
    /// Consolidation was asked for; the VM is (being moved) on the server.
    Consolidated {
        /// When consolidation was asked for: input after it brings the VM back.
        since: Instant,
    },
    /// Reintegration was asked for and has not finished.
    Reintegrating {
        /// When it was asked for.
        since: Instant,
    },
}

impl MonitorState {
    /// The state's name as logs print it.
    pub fn name(&self) -> &'static str {
        match self {
            MonitorState::Active { .. } => "active",
            MonitorState::Warning { .. } => "warning",
            MonitorState::Consolidated { .. } => "consolidated",
            MonitorState::Reintegrating { .. } => "reintegrating",
        }
    }
}

impl fmt::Display for MonitorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the machine asks its owner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Warn the user: consolidation in `remaining` unless there is input.
    Warn {
        /// How long the user has been idle.
        idle: Duration,
        /// Time left before consolidation.
        remaining: Duration,
    },
    /// The user is back during the warning: withdraw it.
    CancelWarning,
    /// Consolidate the VM; report with [`IdleMachine::consolidation_done`].
    Consolidate,
    /// Bring the VM back; report with [`IdleMachine::reintegration_done`].
    Reintegrate,
}

/// The activity monitor's state machine: no clock, no I/O.
#[derive(Debug, Clone)]
pub struct IdleMachine {
    config: MachineConfig,
    state: MonitorState,
}

impl IdleMachine {
    /// A machine in `Active` from `now`.
    pub fn new(config: MachineConfig, now: Instant) -> IdleMachine {
        IdleMachine { config, state: MonitorState::Active { since: now } }
    }

    /// A machine in `Consolidated` from `now`: the VMs were already on the
    /// server when it started (a daemon restart while the user was away),
    /// so the user's next input brings them back.
    pub fn consolidated(config: MachineConfig, now: Instant) -> IdleMachine {
        IdleMachine { config, state: MonitorState::Consolidated { since: now } }
    }

    /// The state now.
    pub fn state(&self) -> MonitorState {
        self.state
    }

    /// The thresholds.
    pub fn config(&self) -> MachineConfig {
        self.config
    }

    /// Feeds one observation: at `now` the source says the user has been
    /// idle for `idle_for`. Returns what to do, if anything.
    pub fn observe(&mut self, now: Instant, idle_for: Duration) -> Option<Step> {
        let last_input = now.checked_sub(idle_for);
        // An idle time reaching past the clock's origin is input long ago.
        let input_since = |t: Instant| last_input.is_some_and(|at| at > t);
        match self.state {
            MonitorState::Active { since } => {
                let idle = idle_for.min(now.saturating_duration_since(since));
                if idle < self.config.idle {
                    return None;
                }
                self.state = MonitorState::Warning { since: now };
                Some(Step::Warn { idle, remaining: self.config.warn })
            }
            MonitorState::Warning { since } => {
                if input_since(since) {
                    self.state = MonitorState::Active { since: now };
                    Some(Step::CancelWarning)
                } else if now.saturating_duration_since(since) >= self.config.warn {
                    self.state = MonitorState::Consolidated { since: now };
                    Some(Step::Consolidate)
                } else {
                    None
                }
            }
            MonitorState::Consolidated { since } => {
                if !input_since(since) {
                    return None;
                }
                self.state = MonitorState::Reintegrating { since: now };
                Some(Step::Reintegrate)
            }
            MonitorState::Reintegrating { .. } => None,
        }
    }

    /// The consolidation asked for finished at `now`: if it failed, the VM
    /// is still here and the user gets a full idle period before the next try.
    pub fn consolidation_done(&mut self, now: Instant, ok: bool) {
        if matches!(self.state, MonitorState::Consolidated { .. }) && !ok {
            self.state = MonitorState::Active { since: now };
        }
    }

    /// The user cancelled the warning on it (a click or a key on the
    /// warning, which the idle source may not count as input): back to
    /// `Active` for a full idle period. Returns whether a warning was shown.
    pub fn cancel(&mut self, now: Instant) -> bool {
        let warned = matches!(self.state, MonitorState::Warning { .. });
        if warned {
            self.state = MonitorState::Active { since: now };
        }
        warned
    }

    /// Nothing the machine moved is away any more (brought back by hand, by
    /// the server, or from a checkpoint): back to `Active` for a full idle
    /// period, so that a VM brought back is not sent off again at once.
    pub fn reset(&mut self, now: Instant) {
        if matches!(self.state, MonitorState::Consolidated { .. }) {
            self.state = MonitorState::Active { since: now };
        }
    }

    /// The reintegration asked for finished at `now`: the VM is back and the
    /// user active; if it failed, the VM is still away and the next input
    /// tries again.
    pub fn reintegration_done(&mut self, now: Instant, ok: bool) {
        if matches!(self.state, MonitorState::Reintegrating { .. }) {
            self.state =
                if ok { MonitorState::Active { since: now } } else { MonitorState::Consolidated { since: now } };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// A machine with the paper's thresholds, and a source whose last input
    /// is set by the test: `idle(t)` is what it would answer at `t`.
    struct Sim {
        t0: Instant,
        machine: IdleMachine,
        last_input: Duration,
    }

    impl Sim {
        fn new() -> Sim {
            let t0 = Instant::now();
            Sim { t0, machine: IdleMachine::new(MachineConfig::default(), t0), last_input: Duration::ZERO }
        }

        fn input_at(&mut self, at: Duration) {
            self.last_input = at;
        }

        fn at(&mut self, at: Duration) -> Option<Step> {
            self.machine.observe(self.t0 + at, at.saturating_sub(self.last_input))
        }

        /// Polls every 250 ms over `[from, to)`, collecting the steps.
        fn run(&mut self, from: Duration, to: Duration) -> Vec<(Duration, Step)> {
            let mut steps = Vec::new();
            let mut t = from;
            while t < to {
                if let Some(step) = self.at(t) {
                    steps.push((t, step));
                }
                t += ms(250);
            }
            steps
        }

        fn state(&self) -> &'static str {
            self.machine.state().name()
        }
    }

    #[test]
    fn active_user_is_never_warned() {
        let mut sim = Sim::new();
        for s in 0..120 {
            sim.input_at(secs(s));
            assert_eq!(sim.at(secs(s) + ms(500)), None);
        }
        assert_eq!(sim.state(), "active");
    }

    #[test]
    fn warns_after_the_idle_threshold_then_consolidates_after_the_warning() {
        let mut sim = Sim::new();
        let steps = sim.run(Duration::ZERO, secs(30));
        assert_eq!(
            steps,
            vec![(secs(15), Step::Warn { idle: secs(15), remaining: secs(5) }), (secs(20), Step::Consolidate)]
        );
        assert_eq!(sim.state(), "consolidated");
    }

    #[test]
    fn idle_counts_from_start_even_if_the_source_says_more() {
        // The user left long before the monitor started: still a full period.
        let mut sim = Sim::new();
        assert_eq!(sim.machine.observe(sim.t0 + secs(1), secs(3600)), None);
        assert!(matches!(sim.machine.observe(sim.t0 + secs(15), secs(3614)), Some(Step::Warn { .. })));
    }

    #[test]
    fn input_during_the_warning_cancels_it() {
        let mut sim = Sim::new();
        assert!(matches!(sim.at(secs(15)), Some(Step::Warn { .. })));
        assert_eq!(sim.at(secs(17)), None);
        sim.input_at(secs(18));
        assert_eq!(sim.at(secs(18) + ms(100)), Some(Step::CancelWarning));
        assert_eq!(sim.state(), "active");
        // A full idle period again before the next warning, not 5 s.
        assert_eq!(sim.run(secs(19), secs(33)), vec![]);
        assert!(matches!(sim.at(secs(33) + ms(100)), Some(Step::Warn { .. })));
    }

    #[test]
    fn input_just_before_the_deadline_still_cancels() {
        let mut sim = Sim::new();
        sim.at(secs(15));
        sim.input_at(secs(20) - ms(1));
        assert_eq!(sim.at(secs(20)), Some(Step::CancelWarning));
    }

    #[test]
    fn a_late_poll_consolidates_once() {
        let mut sim = Sim::new();
        sim.at(secs(15));
        assert_eq!(sim.at(secs(40)), Some(Step::Consolidate));
        assert_eq!(sim.at(secs(41)), None);
        assert_eq!(sim.at(secs(400)), None);
    }

    #[test]
    fn input_while_consolidated_reintegrates_once() {
        let mut sim = Sim::new();
        sim.run(Duration::ZERO, secs(21));
        sim.machine.consolidation_done(sim.t0 + secs(23), true);
        assert_eq!(sim.state(), "consolidated");
        assert_eq!(sim.run(secs(21), secs(100)), vec![]);
        sim.input_at(secs(100));
        assert_eq!(sim.at(secs(100) + ms(200)), Some(Step::Reintegrate));
        assert_eq!(sim.state(), "reintegrating");
        sim.input_at(secs(101));
        assert_eq!(sim.at(secs(101) + ms(200)), None, "reintegration is asked for once");
        sim.machine.reintegration_done(sim.t0 + secs(105), true);
        assert_eq!(sim.state(), "active");
        // Reintegration earns a full idle period.
        assert_eq!(sim.run(secs(105), secs(120)), vec![]);
        assert!(matches!(sim.at(secs(120)), Some(Step::Warn { .. })));
    }

    #[test]
    fn input_during_consolidation_reintegrates_when_it_finishes() {
        let mut sim = Sim::new();
        sim.run(Duration::ZERO, secs(21)); // consolidation asked at 20 s
        sim.input_at(secs(22)); // while the consolidation command runs
        sim.machine.consolidation_done(sim.t0 + secs(25), true);
        assert_eq!(sim.at(secs(25)), Some(Step::Reintegrate));
    }

    #[test]
    fn a_cancel_on_the_warning_earns_a_full_period_without_input() {
        let mut sim = Sim::new();
        assert!(matches!(sim.at(secs(15)), Some(Step::Warn { .. })));
        assert!(sim.machine.cancel(sim.t0 + secs(16)));
        assert_eq!(sim.state(), "active");
        // No input at all (the idle time keeps growing), yet no consolidation
        // at the old deadline and no warning before a full period.
        assert_eq!(sim.run(secs(16), secs(31)), vec![]);
        assert!(matches!(sim.at(secs(31)), Some(Step::Warn { .. })));
    }

    #[test]
    fn a_cancel_outside_the_warning_changes_nothing() {
        let mut sim = Sim::new();
        assert!(!sim.machine.cancel(sim.t0 + secs(1)));
        sim.run(Duration::ZERO, secs(21));
        assert_eq!(sim.state(), "consolidated");
        assert!(!sim.machine.cancel(sim.t0 + secs(22)));
        assert_eq!(sim.state(), "consolidated");
    }

    #[test]
    fn a_reset_while_consolidated_earns_a_full_period() {
        let mut sim = Sim::new();
        sim.run(Duration::ZERO, secs(21));
        sim.machine.reset(sim.t0 + secs(30));
        assert_eq!(sim.state(), "active");
        assert_eq!(sim.run(secs(30), secs(45)), vec![]);
        assert!(matches!(sim.at(secs(45)), Some(Step::Warn { .. })));
    }

    #[test]
    fn a_machine_started_consolidated_reintegrates_at_the_first_input() {
        let t0 = Instant::now();
        let mut machine = IdleMachine::consolidated(MachineConfig::default(), t0);
        assert_eq!(machine.observe(t0 + secs(5), secs(3600)), None);
        assert_eq!(machine.observe(t0 + secs(9), secs(1)), Some(Step::Reintegrate));
    }

    #[test]
    fn failed_consolidation_returns_to_active_for_a_full_period() {
        let mut sim = Sim::new();
        sim.run(Duration::ZERO, secs(21));
        sim.machine.consolidation_done(sim.t0 + secs(21), false);
        assert_eq!(sim.state(), "active");
        assert_eq!(sim.run(secs(21), secs(36)), vec![]);
        assert!(matches!(sim.at(secs(36)), Some(Step::Warn { .. })));
    }

    #[test]
    fn failed_reintegration_waits_for_the_next_input() {
        let mut sim = Sim::new();
        sim.run(Duration::ZERO, secs(21));
        sim.input_at(secs(30));
        assert_eq!(sim.at(secs(30)), Some(Step::Reintegrate));
        sim.machine.reintegration_done(sim.t0 + secs(31), false);
        assert_eq!(sim.state(), "consolidated");
        assert_eq!(sim.at(secs(32)), None);
        sim.input_at(secs(40));
        assert_eq!(sim.at(secs(40)), Some(Step::Reintegrate));
    }

    #[test]
    fn done_reports_out_of_turn_are_ignored() {
        let mut sim = Sim::new();
        sim.machine.reintegration_done(sim.t0 + secs(1), true);
        sim.machine.consolidation_done(sim.t0 + secs(1), false);
        assert_eq!(sim.machine.state(), MonitorState::Active { since: sim.t0 });
    }

    #[test]
    fn custom_thresholds() {
        let t0 = Instant::now();
        let mut m = IdleMachine::new(MachineConfig { idle: secs(2), warn: secs(1) }, t0);
        assert_eq!(m.observe(t0 + ms(1999), ms(1999)), None);
        assert_eq!(m.observe(t0 + secs(2), secs(2)), Some(Step::Warn { idle: secs(2), remaining: secs(1) }));
        assert_eq!(m.observe(t0 + secs(3), secs(3)), Some(Step::Consolidate));
    }
}
