//! A power session: the microsleep loop ([`power::daemon::run`]) on a
//! thread, fed by the event sockets of memserv and diskserv, from the
//! moment the desktop has nothing left to run until it must run a VM
//! again. The desktop daemon starts one when its last local VM is
//! consolidated and stops it before any reintegration or local start;
//! `jettison power` runs one until SIGTERM.
//!
//! Stopping joins every thread and writes the ledger: a session that
//! returns from [`PowerSession::stop`] has left the desktop awake (an
//! emulated S3 is resumed) and its figures on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use power::daemon::{self, Clock, DaemonError, Sleeper};
use power::{EnergyReport, FilesError, LedgerFiles, MicrosleepPolicy, PowerState, SleepMachine};

use crate::microsleep::{
    self, BootClock, EmulatedSettings, EmulatedSleeper, MicrosleepError, SystemSleeper, WakingNic,
};

/// Seconds of serving power each request counts for in the ledger, unless set.
pub const DEFAULT_SERVE_SECS: f64 = 1.0;

/// The sleep back-end of a session.
#[derive(Debug, Clone)]
pub enum SleepWith {
    /// This machine's S3, once its NIC is known to wake it
    /// ([`microsleep::check_nic`]).
    System(WakingNic),
    /// The emulated S3 of the tests.
    Emulated(EmulatedSettings),
}

/// Everything a session needs.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// When to sleep.
    pub policy: MicrosleepPolicy,
    /// Seconds of serving power each request counts for in the ledger.
    pub serve_secs: f64,
    /// How to sleep.
    pub sleep: SleepWith,
    /// Where `ledger.json` and `power.svg` go.
    pub ledger_dir: PathBuf,
    /// The event sockets to follow (they may not exist yet).
    pub events: Vec<PathBuf>,
    /// The learned-gaps file of each VM whose requests the session
    /// follows: the policy starts from what they hold and leaves what it
    /// learned in each (see [`power::load_gaps`]). None for `jettison power`.
    pub learned: Vec<PathBuf>,
}

/// Why a session could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The `[power]` section no longer holds (a profile file removed since the daemon started).
    #[error("power session: [power] in the configuration: {reason}")]
    Config {
        /// What is wrong and what to write.
        reason: String,
    },
    /// The back-end, the NIC check or a reader.
    #[error("power session: setting up")]
    Setup(#[from] MicrosleepError),
    /// The ledger's directory.
    #[error("power session: the ledger")]
    Ledger(#[from] FilesError),
    /// The policy refused the clock's first reading.
    #[error("power session: starting the sleep machine")]
    Machine(#[from] power::PowerError),
    /// The loop's thread could not start.
    #[error("power session: starting its thread")]
    Thread(#[source] std::io::Error),
    /// The loop stopped on an error.
    #[error("power session: the loop")]
    Loop(#[from] DaemonError),
    /// The loop panicked.
    #[error("power session: the loop panicked (a bug: see the log)")]
    Panicked,
}

/// Where the desktop is in its sleep cycle, as the session last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Awake: waiting for t_w or serving.
    #[default]
    Awake,
    /// Going to sleep.
    Suspending,
    /// Asleep.
    Asleep,
    /// Waking up.
    Resuming,
}

/// What a session has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Where the desktop is now.
    pub phase: Phase,
    /// Times it fell asleep.
    pub sleeps: u64,
    /// Times it woke before the session ended (a request for a page or a block).
    pub wakes: u64,
}

type Shared = Arc<Mutex<Progress>>;

fn lock(progress: &Shared) -> MutexGuard<'_, Progress> {
    progress.lock().expect("a power progress lock was poisoned: a thread panicked holding it")
}

/// A running session.
#[derive(Debug)]
pub struct PowerSession {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Result<EnergyReport, DaemonError>, Vec<f64>)>,
    learned: Vec<PathBuf>,
    readers: Vec<JoinHandle<()>>,
    progress: Shared,
    ledger_dir: PathBuf,
    backend: String,
}

impl PowerSession {
    /// Starts the back-end, one reader per event socket and the loop.
    ///
    /// # Errors
    /// [`SessionError`].
    pub fn start(settings: SessionSettings) -> Result<PowerSession, SessionError> {
        let sleeper: Box<dyn Sleeper + Send> = match &settings.sleep {
            SleepWith::System(nic) => {
                tracing::info!(interface = nic.name(), "the NIC wakes this desktop on a magic packet");
                Box::new(SystemSleeper::new(*settings.policy.profile()))
            }
            SleepWith::Emulated(emulated) => Box::new(EmulatedSleeper::start(emulated)?),
        };
        let backend = sleeper.name();
        let files = LedgerFiles::open(&settings.ledger_dir)?;
        let clock = BootClock::start();
        let mut policy = settings.policy;
        policy.learn_from(load_learned(&settings.learned));
        if !settings.learned.is_empty() {
            tracing::info!(
                gaps = policy.history().len(),
                wait_secs = policy.wait_secs(),
                "the wait starts from the gaps this desktop's VMs showed in earlier stays"
            );
        }
        let mut machine = SleepMachine::start(policy, settings.serve_secs, clock.now())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        for path in &settings.events {
            match microsleep::spawn_event_reader(path, tx.clone(), clock, Arc::clone(&stop)) {
                Ok(reader) => readers.push(reader),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    readers.into_iter().for_each(|r: JoinHandle<()>| drop(r.join()));
                    return Err(e.into());
                }
            }
        }
        drop(tx);
        let progress = Shared::default();
        let mut observed = Observed { inner: sleeper, progress: Arc::clone(&progress) };
        let loop_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("power-session".into())
            .spawn(move || {
                let report = daemon::run(&mut machine, &rx, &mut observed, &clock, &files, &loop_stop);
                (report, machine.policy().learned_gaps())
            })
            .map_err(SessionError::Thread);
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                readers.into_iter().for_each(|r| drop(r.join()));
                return Err(e);
            }
        };
        Ok(PowerSession {
            stop,
            thread,
            learned: settings.learned,
            readers,
            progress,
            ledger_dir: settings.ledger_dir,
            backend,
        })
    }

    /// The back-end's name, for the log.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The ledger's directory.
    pub fn ledger_dir(&self) -> &std::path::Path {
        &self.ledger_dir
    }

    /// What the session has done so far.
    pub fn progress(&self) -> Progress {
        *lock(&self.progress)
    }

    /// Stops the loop (waking the desktop if it sleeps), joins every
    /// thread, leaves the gaps the policy learned in each learned-gaps
    /// file, and returns what the session did and its report, also
    /// written to the ledger, or why the loop failed
    /// ([`SessionError::Loop`] or [`SessionError::Panicked`]).
    pub fn stop(self) -> (Progress, Result<EnergyReport, SessionError>) {
        self.stop.store(true, Ordering::Relaxed);
        let result = match self.thread.join() {
            Ok((report, gaps)) => {
                for file in &self.learned {
                    if let Err(e) = power::save_gaps(file, &gaps) {
                        tracing::warn!("{}; the VM's next stay starts from fewer gaps", wire::chain(&e));
                    }
                }
                report.map_err(SessionError::from)
            }
            Err(_) => Err(SessionError::Panicked),
        };
        for reader in self.readers {
            let _ = reader.join();
        }
        let mut progress = *lock(&self.progress);
        progress.phase = Phase::Awake;
        (progress, result)
    }
}

/// A back-end whose transitions are counted for [`Progress`].
struct Observed {
    inner: Box<dyn Sleeper + Send>,
    progress: Shared,
}

impl Sleeper for Observed {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn sleep(
        &mut self,
        clock: &dyn Clock,
        stop: &AtomicBool,
        report: &mut dyn FnMut(PowerState, f64),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        lock(&self.progress).phase = Phase::Suspending;
        let progress = Arc::clone(&self.progress);
        let result = self.inner.sleep(clock, stop, &mut |state, at| {
            {
                let mut progress = lock(&progress);
                match state {
                    PowerState::Asleep => {
                        progress.sleeps += 1;
                        progress.phase = Phase::Asleep;
                    }
                    PowerState::Resuming => {
                        progress.wakes += 1;
                        progress.phase = Phase::Resuming;
                    }
                    _ => {}
                }
            }
            report(state, at);
        });
        let mut progress = lock(&self.progress);
        // Stopped while asleep: the session's end wakes it, not a request.
        if !stop.load(Ordering::Relaxed) || progress.phase != Phase::Asleep {
            progress.phase = Phase::Awake;
        }
        result
    }

    fn failed(&mut self, error: &DaemonError) {
        self.inner.failed(error);
    }
}

/// The gaps in `files`, one after the other (several VMs away share the
/// desktop's sleep, so the session learns from all of them); a file that
/// cannot be read is left out with a warning, and the policy then starts
/// from less.
fn load_learned(files: &[PathBuf]) -> Vec<f64> {
    let mut gaps = Vec::new();
    for file in files {
        match power::load_gaps(file) {
            Ok(more) => gaps.extend(more),
            Err(e) => tracing::warn!("{}; starting without it", wire::chain(&e)),
        }
    }
    gaps
}
