//! The desktop's microsleep decision as a pure state machine.
//!
//! While its VM is consolidated the desktop only serves memserv and diskserv
//! requests. Each request resets the wait timer ([`MicrosleepPolicy`]); once
//! `t_w` has passed with no request, the desktop should suspend. The machine
//! is fed times and events and says what to do ([`Decision`]); it reads no
//! clock and does no I/O, so its tests feed it times instead of sleeping, and
//! the daemon ([`crate::daemon`]) is a thin loop around it.
//!
//! Every transition is also written to an [`EnergyLedger`]: a request makes
//! the desktop [`PowerState::Serving`] for `serve_secs`, then
//! [`PowerState::Idle`] until it sleeps; the back-end's progress moves it
//! through Suspending, Asleep and Resuming, and back to Serving (a resume is
//! always for a request).

use crate::{EnergyLedger, EnergyReport, LedgerSummary, MicrosleepPolicy, PowerError, PowerState, PowerStep};

/// What the daemon should do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Suspend now.
    Sleep,
    /// Nothing until this time (seconds) or the next event.
    WaitUntil(f64),
    /// The desktop is not awake (suspending, asleep, resuming): the back-end
    /// decides what happens next.
    Asleep,
}

/// The desktop's microsleep state machine and its energy ledger.
#[derive(Debug, Clone)]
pub struct SleepMachine {
    policy: MicrosleepPolicy,
    ledger: EnergyLedger,
    serve_secs: f64,
    /// When the desktop last became awake (consolidation start or resume end).
    awake_since: f64,
    /// The end of the current serving window, if serving.
    serving_until: Option<f64>,
}

impl SleepMachine {
    /// Starts a consolidation at `now`: the desktop awake and idle, its wait
    /// timer running from `now`. Each request counts as `serve_secs` of
    /// serving power.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] if `now` is not finite,
    /// [`PowerError::InvalidPolicy`] if `serve_secs` is negative or not finite.
    pub fn start(policy: MicrosleepPolicy, serve_secs: f64, now: f64) -> Result<SleepMachine, PowerError> {
        if !(serve_secs.is_finite() && serve_secs >= 0.0) {
            return Err(PowerError::InvalidPolicy { what: "serve_secs", value: serve_secs });
        }
        let mut ledger = EnergyLedger::new(*policy.profile());
        ledger.begin(PowerState::Idle, now)?;
        Ok(SleepMachine { policy, ledger, serve_secs, awake_since: now, serving_until: None })
    }

    /// The ledger's current state and when it was entered.
    pub fn state(&self) -> PowerState {
        self.ledger.current().map_or(PowerState::Idle, |(state, _)| state)
    }

    /// The policy (its current `t_w`, the gaps it learned).
    pub fn policy(&self) -> &MicrosleepPolicy {
        &self.policy
    }

    /// When the desktop will sleep if no request arrives: `t_w` after the
    /// later of the last request and the last time it became awake (so a
    /// resume without a request still waits `t_w`).
    pub fn sleep_at(&self) -> f64 {
        let from = self.policy.sleep_at().map_or(self.awake_since, |at| at - self.policy.wait_secs());
        from.max(self.awake_since) + self.policy.wait_secs()
    }

    fn awake(&self) -> bool {
        matches!(self.state(), PowerState::Idle | PowerState::Serving)
    }

    /// A memserv or diskserv request arrived at `now`.
    ///
    /// Events can arrive while suspending (the daemons still answer until
    /// the machine is asleep) and, out of order, from two sockets: the
    /// policy learns the gap either way, but the suspend already started is
    /// not cancelled, and the ledger only turns to Serving while awake.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] or [`PowerError::TimeWentBackwards`].
    pub fn on_request(&mut self, now: f64) -> Result<(), PowerError> {
        self.policy.on_request(now)?;
        if self.awake() {
            let now = self.not_before_last(now);
            self.ledger.enter(PowerState::Serving, now)?;
            self.serving_until = Some(now + self.serve_secs);
        }
        Ok(())
    }

    /// `now`, or the last transition's time if `now` is earlier (an event
    /// stamped before the transition the loop already recorded).
    fn not_before_last(&self, now: f64) -> f64 {
        self.ledger.current().map_or(now, |(_, since)| now.max(since))
    }

    /// What to do at `now`: end a finished serving window (ledger Idle) and
    /// say whether to sleep.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] or [`PowerError::TimeWentBackwards`].
    pub fn poll(&mut self, now: f64) -> Result<Decision, PowerError> {
        if !self.awake() {
            return Ok(Decision::Asleep);
        }
        if let Some(until) = self.serving_until {
            if now >= until {
                self.ledger.enter(PowerState::Idle, self.not_before_last(until))?;
                self.serving_until = None;
            }
        }
        let sleep_at = self.sleep_at();
        if now >= sleep_at {
            return Ok(Decision::Sleep);
        }
        Ok(Decision::WaitUntil(self.serving_until.map_or(sleep_at, |until| until.min(sleep_at))))
    }

    /// The back-end reports the desktop entering `state` at `now`
    /// (Suspending, Asleep, Resuming; Serving or Idle once awake again).
    /// Becoming awake restarts the wait timer; a resume is for a request,
    /// so it counts as serving.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] or [`PowerError::TimeWentBackwards`].
    pub fn enter(&mut self, state: PowerState, now: f64) -> Result<(), PowerError> {
        let was_awake = self.awake();
        self.ledger.enter(state, now)?;
        self.serving_until = None;
        if matches!(state, PowerState::Idle | PowerState::Serving) && !was_awake {
            self.awake_since = now;
        }
        if state == PowerState::Serving {
            self.serving_until = Some(now + self.serve_secs);
        }
        Ok(())
    }

    /// Whether the consolidation is still open (not stopped).
    pub fn is_open(&self) -> bool {
        self.ledger.current().is_some()
    }

    /// Every consolidation's report up to `now`.
    pub fn summary(&self, now: f64) -> LedgerSummary {
        self.ledger.summary(now)
    }

    /// The power over time so far.
    pub fn steps(&self) -> &[PowerStep] {
        self.ledger.steps()
    }

    /// The power over time as `(seconds, watts)` steps.
    pub fn power_trace(&self) -> Vec<(f64, f64)> {
        self.ledger.power_trace()
    }

    /// Ends the consolidation at `now` (no earlier than the last
    /// transition). A desktop asleep or suspending then is woken for the
    /// user's return: a resume from `now`, charged the profile's resume
    /// time (the stay ends when it is over), as the simulator charges it.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] or [`PowerError::NotConsolidated`] if it
    /// already ended.
    pub fn stop(&mut self, now: f64) -> Result<EnergyReport, PowerError> {
        let now = self.not_before_last(now);
        if matches!(self.state(), PowerState::Suspending | PowerState::Asleep) {
            self.ledger.enter(PowerState::Resuming, now)?;
            return self.ledger.end(now + self.policy.profile().resume_secs);
        }
        self.ledger.end(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdaptiveConfig, PowerProfile};

    fn fixed(wait: f64) -> SleepMachine {
        SleepMachine::start(MicrosleepPolicy::fixed(PowerProfile::TABLE_1, wait).unwrap(), 0.5, 0.0).unwrap()
    }

    #[test]
    fn sleeps_wait_secs_after_start_without_requests() {
        let mut machine = fixed(6.0);
        assert_eq!(machine.poll(1.0).unwrap(), Decision::WaitUntil(6.0));
        assert_eq!(machine.poll(6.0).unwrap(), Decision::Sleep);
    }

    #[test]
    fn each_request_resets_the_timer_and_serves() {
        let mut machine = fixed(6.0);
        machine.on_request(4.0).unwrap();
        assert_eq!(machine.state(), PowerState::Serving);
        assert_eq!(machine.poll(4.2).unwrap(), Decision::WaitUntil(4.5));
        assert_eq!(machine.poll(4.5).unwrap(), Decision::WaitUntil(10.0));
        assert_eq!(machine.state(), PowerState::Idle);
        machine.on_request(9.0).unwrap();
        assert_eq!(machine.poll(14.9).unwrap(), Decision::WaitUntil(15.0));
        assert_eq!(machine.poll(15.0).unwrap(), Decision::Sleep);
    }

    #[test]
    fn a_full_cycle_counts_one_wake_and_time_asleep() {
        let mut machine = fixed(6.0);
        assert_eq!(machine.poll(6.0).unwrap(), Decision::Sleep);
        machine.enter(PowerState::Suspending, 6.0).unwrap();
        assert_eq!(machine.poll(7.0).unwrap(), Decision::Asleep);
        machine.on_request(7.0).unwrap(); // still answering while suspending
        assert_eq!(machine.state(), PowerState::Suspending);
        machine.enter(PowerState::Asleep, 14.0).unwrap();
        machine.enter(PowerState::Resuming, 100.0).unwrap();
        machine.enter(PowerState::Serving, 108.0).unwrap();
        // The timer runs from the resume, not from the request before it.
        assert_eq!(machine.poll(108.0).unwrap(), Decision::WaitUntil(108.5));
        assert_eq!(machine.poll(113.9).unwrap(), Decision::WaitUntil(114.0));
        assert_eq!(machine.poll(114.0).unwrap(), Decision::Sleep);
        let report = machine.stop(120.0).unwrap();
        assert_eq!(report.wakes, 1);
        assert_eq!(report.secs.asleep, 86.0);
        assert_eq!(report.secs.suspending, 8.0);
        assert!(report.saved_joules > 0.0);
    }

    #[test]
    fn adaptive_policy_moves_the_sleep_time() {
        let config = AdaptiveConfig { min_gaps: 10, ..AdaptiveConfig::default() };
        let policy = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        let mut machine = SleepMachine::start(policy, 0.0, 0.0).unwrap();
        let (mut at, mut last) = (0.0, 0.0);
        for i in 0..40 {
            machine.on_request(at).unwrap();
            last = at;
            assert_ne!(machine.poll(at).unwrap(), Decision::Sleep);
            at += if i % 3 == 2 { 100.0 } else { 7.4 };
        }
        // Learned from 7.4 s pauses: waits 7.5 s, not the default 6 s.
        assert_eq!(machine.policy().wait_secs(), 7.5);
        assert_eq!(machine.poll(last + 6.0).unwrap(), Decision::WaitUntil(last + 7.5));
        assert_eq!(machine.poll(last + 7.5).unwrap(), Decision::Sleep);
    }

    #[test]
    fn out_of_order_events_do_not_break_the_ledger() {
        let mut machine = fixed(6.0);
        machine.on_request(5.0).unwrap();
        machine.on_request(4.0).unwrap();
        assert_eq!(machine.poll(5.5).unwrap(), Decision::WaitUntil(11.0));
        assert!(machine.stop(3.0).is_ok());
    }

    #[test]
    fn rejects_a_bad_serving_time() {
        let policy = MicrosleepPolicy::fixed(PowerProfile::TABLE_1, 6.0).unwrap();
        assert!(SleepMachine::start(policy, f64::NAN, 0.0).is_err());
    }

    #[test]
    fn a_stay_that_ends_asleep_is_charged_the_resume_for_the_user() {
        let mut machine = fixed(6.0);
        assert_eq!(machine.poll(6.0).unwrap(), Decision::Sleep);
        machine.enter(PowerState::Suspending, 6.0).unwrap();
        machine.enter(PowerState::Asleep, 7.0).unwrap();
        let report = machine.stop(100.0).unwrap();
        assert_eq!(report.wakes, 1);
        assert!((report.secs.resuming - PowerProfile::TABLE_1.resume_secs).abs() < 1e-9, "{report:?}");
        assert_eq!(report.ended_secs, 100.0 + PowerProfile::TABLE_1.resume_secs);
    }
}
