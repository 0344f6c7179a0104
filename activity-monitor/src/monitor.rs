//! The monitor's loop: polls an idle source, feeds the state machine, and
//! carries out its steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::actions::Actions;
use crate::idle::{chain, IdleError, IdleSource};
use crate::machine::{IdleMachine, MachineConfig, MonitorState, Step};

/// Why the monitor stopped.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The idle source failed.
    #[error("reading the idle time from {source_name} failed")]
    Idle {
        /// The source's name.
        source_name: String,
        /// Its error.
        #[source]
        source: IdleError,
    },
}

/// An idle source, a state machine and the actions, run together.
#[derive(Debug)]
pub struct Monitor<S, A> {
    source: S,
    actions: A,
    machine: IdleMachine,
}

impl<S: IdleSource, A: Actions> Monitor<S, A> {
    /// A monitor starting in `Active` now.
    pub fn new(source: S, actions: A, config: MachineConfig) -> Monitor<S, A> {
        Monitor { source, actions, machine: IdleMachine::new(config, Instant::now()) }
    }

    /// The state now.
    pub fn state(&self) -> MonitorState {
        self.machine.state()
    }

    /// Polls once and carries out what the machine asks for.
    ///
    /// # Errors
    /// The idle source failed.
    pub fn poll_once(&mut self) -> Result<(), MonitorError> {
        let idle =
            self.source.idle_for().map_err(|source| MonitorError::Idle { source_name: self.source.name(), source })?;
        let Some(step) = self.machine.observe(Instant::now(), idle) else { return Ok(()) };
        tracing::debug!("activity-monitor: idle {idle:?}: {step:?}");
        match step {
            Step::Warn { idle, remaining } => self.actions.warn(idle, remaining),
            Step::CancelWarning => self.actions.cancel_warning(),
            Step::Consolidate => {
                let result = self.actions.consolidate();
                if let Err(e) = &result {
                    tracing::error!("activity-monitor: consolidation failed: {}", chain(e));
                }
                self.machine.consolidation_done(Instant::now(), result.is_ok());
            }
            Step::Reintegrate => {
                let result = self.actions.reintegrate();
                if let Err(e) = &result {
                    tracing::error!("activity-monitor: reintegration failed (next input retries): {}", chain(e));
                }
                self.machine.reintegration_done(Instant::now(), result.is_ok());
            }
        }
        Ok(())
    }

    /// Polls at the source's interval until `stop` is set.
    ///
    /// # Errors
    /// The idle source failed.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), MonitorError> {
        let interval = self.source.poll_interval();
        while !stop.load(Ordering::Relaxed) {
            self.poll_once()?;
            sleep_unless_stopped(interval, stop);
        }
        Ok(())
    }

    /// The source and the actions back.
    pub fn into_parts(self) -> (S, A) {
        (self.source, self.actions)
    }
}

/// Sleeps `total` in short steps so that a stop is seen within 50 ms.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(step));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::actions::ActionError;

    /// Answers scripted idle times, one per poll.
    struct Scripted(VecDeque<Duration>);

    impl IdleSource for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn idle_for(&mut self) -> Result<Duration, IdleError> {
            self.0.pop_front().ok_or(IdleError::NoDisplay)
        }
    }

    #[derive(Default)]
    struct Recorded(Vec<&'static str>);

    impl Actions for Recorded {
        fn warn(&mut self, _: Duration, _: Duration) {
            self.0.push("warn");
        }
        fn cancel_warning(&mut self) {
            self.0.push("cancel");
        }
        fn consolidate(&mut self) -> Result<(), ActionError> {
            self.0.push("consolidate");
            Ok(())
        }
        fn reintegrate(&mut self) -> Result<(), ActionError> {
            self.0.push("reintegrate");
            Ok(())
        }
    }

    #[test]
    fn zero_thresholds_go_through_every_step() {
        // Thresholds of zero make the real clock irrelevant: one poll per step.
        let hour = Duration::from_secs(3600);
        let script = [hour, hour, hour, Duration::ZERO];
        let config = MachineConfig { idle: Duration::ZERO, warn: Duration::ZERO };
        let mut monitor = Monitor::new(Scripted(script.into()), Recorded::default(), config);
        for _ in 0..4 {
            monitor.poll_once().unwrap();
        }
        // The machine's "since" for consolidation is at most now, so input
        // reported as 0 s ago is after it.
        let (_, actions) = monitor.into_parts();
        assert_eq!(actions.0, ["warn", "consolidate", "reintegrate"]);
    }

    #[test]
    fn run_returns_when_stopped() {
        let script = std::iter::repeat_n(Duration::ZERO, 1000).collect();
        let mut monitor = Monitor::new(Scripted(script), Recorded::default(), MachineConfig::default());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            monitor.run(&stop).unwrap();
        });
        assert_eq!(monitor.state().name(), "active");
    }

    #[test]
    fn a_failing_source_stops_the_monitor_with_its_name() {
        let mut monitor = Monitor::new(Scripted(VecDeque::new()), Recorded::default(), MachineConfig::default());
        let err = monitor.run(&AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("scripted"), "{err}");
    }
}
