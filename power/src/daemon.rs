//! The desktop power daemon's loop: request events in, suspends out, the
//! ledger on disk.
//!
//! # Why it is built this way
//!
//! - **The decision is [`SleepMachine`]'s**; this loop only feeds it the
//!   time and the events and acts on what it says, so everything that can
//!   be wrong about *when* to sleep is tested without a clock.
//! - **The clock and the sleep back-end are traits** ([`Clock`],
//!   [`Sleeper`]), so this crate stays free of the kernel and of the other
//!   crates: the command line plugs in `CLOCK_BOOTTIME` (it keeps counting
//!   while the machine is suspended, unlike `Instant`) and a real or
//!   emulated S3; tests plug in fakes.
//! - **Events arrive on a channel** ([`Arrival`]), from one reader thread per
//!   event socket the caller starts: the loop blocks on the channel until
//!   the machine's next deadline, so an idle desktop costs no wake-ups but
//!   the stop flag's tick.
//! - **The ledger is written on every state change and at stop**
//!   ([`LedgerFiles`]), atomically, so `jettison status` never reads half a
//!   file and a crash loses at most the time since the last change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::files::{FilesError, LedgerFiles};
use crate::machine::{Decision, SleepMachine};
use crate::{EnergyReport, PowerError, PowerState};

/// A clock in seconds that keeps counting while the machine is suspended.
pub trait Clock {
    /// Seconds since the clock's origin.
    fn now(&self) -> f64;
}

/// A way to put the desktop to sleep and learn when it is awake again.
pub trait Sleeper {
    /// The back-end's name as logs print it.
    fn name(&self) -> String;

    /// Suspends the desktop and returns once it is awake again (or `stop`
    /// was set while it slept). Calls `report(state, at)` as the desktop
    /// enters [`PowerState::Asleep`] and [`PowerState::Resuming`],
    /// with `at` read from `clock` (or reconstructed on it, for a back-end
    /// that only learns the times after the resume). The caller records
    /// Suspending before and Serving after.
    ///
    /// # Errors
    ///
    /// The back-end could not suspend; the error says what to do.
    fn sleep(
        &mut self,
        clock: &dyn Clock,
        stop: &AtomicBool,
        report: &mut dyn FnMut(PowerState, f64),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// A suspend failed ([`DaemonError::Sleep`]): the desktop is idle
    /// again and the loop goes on, trying again after another `t_w`
    /// without a request (a daemon keeps serving; the refusal may be a
    /// user's inhibitor that ends). The back-end says so in its log.
    fn failed(&mut self, error: &DaemonError);
}

/// What a reader thread sends the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrival {
    /// A request (or connection) at this clock reading.
    Request(f64),
}

/// How long the loop blocks at most before looking at the stop flag.
const TICK: Duration = Duration::from_millis(200);

/// Why the daemon stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The machine or the ledger rejected a time (a clock went backwards).
    #[error("power daemon: ledger update")]
    Ledger(#[from] PowerError),
    /// The ledger files could not be written.
    #[error("power daemon: writing the ledger")]
    Files(#[from] FilesError),
    /// The sleep back-end failed.
    #[error("power daemon: suspending with {backend}")]
    Sleep {
        /// The back-end's name.
        backend: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs `machine` until `stop` is set (the caller keeps it, for what its
/// policy learned): requests from `events`, suspends
/// through `sleeper`, the ledger written to `files` on each change. Returns
/// the consolidation's report, written at stop too and appended to the log
/// of stays ([`LedgerFiles::finish`]).
///
/// # Errors
///
/// [`DaemonError`]; the ledger is written (best effort) before returning it.
pub fn run(
    machine: &mut SleepMachine,
    events: &Receiver<Arrival>,
    sleeper: &mut dyn Sleeper,
    clock: &dyn Clock,
    files: &LedgerFiles,
    stop: &AtomicBool,
) -> Result<EnergyReport, DaemonError> {
    let result = serve(machine, events, sleeper, clock, files, stop);
    let report = machine.stop(clock.now());
    let written = save(machine, clock, files);
    let report = result.and(report.map_err(DaemonError::from))?;
    written?;
    files.finish(&report)?;
    Ok(report)
}

fn serve(
    machine: &mut SleepMachine,
    events: &Receiver<Arrival>,
    sleeper: &mut dyn Sleeper,
    clock: &dyn Clock,
    files: &LedgerFiles,
    stop: &AtomicBool,
) -> Result<(), DaemonError> {
    save(machine, clock, files)?;
    let mut last_state = machine.state();
    while !stop.load(Ordering::Relaxed) {
        match machine.poll(clock.now())? {
            Decision::Sleep => match sleep_once(machine, sleeper, clock, files, stop) {
                Err(error @ DaemonError::Sleep { .. }) => sleeper.failed(&error),
                other => other?,
            },
            Decision::WaitUntil(at) => {
                let wait = Duration::from_secs_f64((at - clock.now()).clamp(0.0, TICK.as_secs_f64()));
                match events.recv_timeout(wait) {
                    Ok(Arrival::Request(at)) => machine.on_request(at)?,
                    Err(RecvTimeoutError::Timeout) => {}
                    // No reader left: nothing can keep the desktop awake.
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
                }
            }
            Decision::Asleep => std::thread::sleep(TICK),
        }
        if machine.state() != last_state {
            last_state = machine.state();
            save(machine, clock, files)?;
        }
    }
    Ok(())
}

/// Writes the ledger files as of now; an open consolidation's chart runs
/// to now.
fn save(machine: &SleepMachine, clock: &dyn Clock, files: &LedgerFiles) -> Result<(), FilesError> {
    let now = clock.now();
    let mut trace = machine.power_trace();
    if let Some(&(at, watts)) = trace.last() {
        if machine.is_open() && now > at {
            trace.push((now, watts));
        }
    }
    files.write(&machine.summary(now), &trace)
}

/// One suspend: Suspending now, Asleep and Resuming as the back-end says,
/// Serving once it returns; the files written at each step.
fn sleep_once(
    machine: &mut SleepMachine,
    sleeper: &mut dyn Sleeper,
    clock: &dyn Clock,
    files: &LedgerFiles,
    stop: &AtomicBool,
) -> Result<(), DaemonError> {
    machine.enter(PowerState::Suspending, clock.now())?;
    save(machine, clock, files)?;
    let mut failure = None;
    let slept = sleeper.sleep(clock, stop, &mut |state, at| {
        if failure.is_none() {
            let step = machine.enter(state, at).map_err(DaemonError::from);
            failure = step.and_then(|()| save(machine, clock, files).map_err(DaemonError::from)).err();
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let now = clock.now();
    if let Err(source) = slept {
        // It did not sleep: back to idle, and wait t_w again before retrying.
        machine.enter(PowerState::Idle, now)?;
        save(machine, clock, files)?;
        return Err(DaemonError::Sleep { backend: sleeper.name(), source });
    }
    if !stop.load(Ordering::Relaxed) {
        machine.enter(PowerState::Serving, now)?;
        save(machine, clock, files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::mpsc;

    use super::*;
    use crate::{LedgerSummary, MicrosleepPolicy, PowerProfile};

    /// A clock the fake sleeper advances.
    struct FakeClock(Cell<f64>);

    impl Clock for FakeClock {
        fn now(&self) -> f64 {
            self.0.get()
        }
    }

    /// Sleeps 100 s per suspend in fake time and stops the daemon after
    /// `rounds` suspends.
    struct FakeSleeper<'a> {
        clock: &'a FakeClock,
        rounds: u32,
    }

    impl Sleeper for FakeSleeper<'_> {
        fn name(&self) -> String {
            "fake".into()
        }

        fn sleep(
            &mut self,
            _clock: &dyn Clock,
            stop: &AtomicBool,
            report: &mut dyn FnMut(PowerState, f64),
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let t = self.clock.0.get();
            report(PowerState::Asleep, t + 1.0);
            report(PowerState::Resuming, t + 100.0);
            self.clock.0.set(t + 101.0);
            self.rounds -= 1;
            if self.rounds == 0 {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(())
        }

        fn failed(&mut self, error: &DaemonError) {
            panic!("the fake cannot fail: {error}");
        }
    }

    #[test]
    fn sleeps_after_t_w_and_writes_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let files = LedgerFiles::open(dir.path()).unwrap();
        // The wait is zero, so the fake time never needs to advance between polls.
        let policy = MicrosleepPolicy::fixed(PowerProfile::TABLE_1, 0.0).unwrap();
        let mut machine = SleepMachine::start(policy, 0.0, 0.0).unwrap();
        let clock = FakeClock(Cell::new(0.0));
        let (tx, rx) = mpsc::channel();
        tx.send(Arrival::Request(0.0)).unwrap();
        let mut sleeper = FakeSleeper { clock: &clock, rounds: 2 };
        let stop = AtomicBool::new(false);
        let report = run(&mut machine, &rx, &mut sleeper, &clock, &files, &stop).unwrap();
        assert_eq!(report.wakes, 2);
        assert_eq!(report.secs.asleep, 198.0);
        let summary: LedgerSummary =
            serde_json::from_slice(&std::fs::read(dir.path().join("ledger.json")).unwrap()).unwrap();
        assert_eq!(summary.total.unwrap().wakes, 2);
        let svg = std::fs::read_to_string(dir.path().join("power.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
    }

    /// Refuses every suspend, one fake second each, and stops the daemon
    /// after `rounds` refusals.
    struct Refuser<'a> {
        clock: &'a FakeClock,
        stop: &'a AtomicBool,
        rounds: u32,
    }

    impl Sleeper for Refuser<'_> {
        fn name(&self) -> String {
            "refuser".into()
        }

        fn sleep(
            &mut self,
            _clock: &dyn Clock,
            _stop: &AtomicBool,
            _report: &mut dyn FnMut(PowerState, f64),
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.clock.0.set(self.clock.0.get() + 1.0);
            Err("inhibited".into())
        }

        fn failed(&mut self, error: &DaemonError) {
            assert_eq!(error.to_string(), "power daemon: suspending with refuser");
            self.rounds -= 1;
            if self.rounds == 0 {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_refused_suspend_leaves_the_desktop_idle_and_the_daemon_running() {
        let dir = tempfile::tempdir().unwrap();
        let files = LedgerFiles::open(dir.path()).unwrap();
        let policy = MicrosleepPolicy::fixed(PowerProfile::TABLE_1, 0.0).unwrap();
        let mut machine = SleepMachine::start(policy, 0.0, 0.0).unwrap();
        let clock = FakeClock(Cell::new(0.0));
        let (_tx, rx) = mpsc::channel();
        let stop = AtomicBool::new(false);
        let mut refuser = Refuser { clock: &clock, stop: &stop, rounds: 3 };
        let report = run(&mut machine, &rx, &mut refuser, &clock, &files, &stop).unwrap();
        assert_eq!(report.wakes, 0);
        assert_eq!(report.secs.asleep, 0.0);
        assert_eq!(report.secs.suspending, 3.0);
    }
}
