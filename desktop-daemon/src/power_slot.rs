//! The desktop daemon's one power session at a time: started when the
//! desktop has nothing left to run (every VM is off or on the server, one
//! at least on the server), stopped before a VM must run here again, and
//! shown by `jettison status`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use daemon_protocol::local::{DesktopPower, DesktopPowerState};
use identifiers::VmName;
use power::LedgerFiles;
use wire::Service;

use crate::config::DesktopConfig;
use crate::local_vm::events_socket;
use crate::microsleep::{self, MicrosleepError};
use crate::power_config::{PowerConfig, SleepChoice};
use crate::power_session::{
    Phase, PowerSession, Progress, SessionError, SessionSettings, SleepWith, DEFAULT_SERVE_SECS,
};

/// The file in a VM's state directory that keeps the gaps the adaptive
/// wait learned in its stays.
pub(crate) const LEARNED_GAPS_FILE: &str = "wait-gaps.json";

/// The session, if any, and what the last one did.
#[derive(Debug, Default)]
struct Inner {
    session: Option<PowerSession>,
    /// Why the last start was refused (the NIC would not wake the desktop).
    refused: Option<String>,
    /// The last session's figures, once it ended.
    last: Option<Progress>,
}

/// The daemon's power session slot; inert without `[power]`.
#[derive(Debug)]
pub(crate) struct PowerSlot {
    desktop: DesktopConfig,
    inner: Mutex<Inner>,
}

impl PowerSlot {
    /// The slot for `desktop`'s `[power]`.
    pub(crate) fn new(desktop: &DesktopConfig) -> PowerSlot {
        PowerSlot { desktop: desktop.clone(), inner: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("the power slot lock was poisoned: a thread panicked holding it")
    }

    /// Starts a session if some VMs are `away` (and nothing runs here)
    /// and none runs; stops the running one if none is away.
    pub(crate) fn follow(&self, away: &[VmName]) {
        let Some(config) = &self.desktop.power else { return };
        let mut inner = self.lock();
        if away.is_empty() {
            // A refusal is news only while the desktop would sleep.
            inner.refused = None;
            return stop(&mut inner);
        }
        if inner.session.is_some() {
            return;
        }
        match self.settings(config, away).and_then(PowerSession::start) {
            Ok(session) => {
                tracing::info!(
                    backend = session.backend(),
                    ledger = %session.ledger_dir().display(),
                    "no VM runs here: the desktop sleeps after {} s without a request from the server",
                    config.wait_secs
                );
                inner.refused = None;
                inner.session = Some(session);
            }
            Err(e) => {
                let text = wire::chain(&e);
                if matches!(e, SessionError::Setup(MicrosleepError::NicCannotWake { .. })) {
                    tracing::error!("{text}; the desktop stays awake while its VMs are away");
                } else {
                    tracing::error!("cannot start the power session ({text}); the desktop stays awake");
                }
                inner.refused = Some(text);
            }
        }
    }

    /// Stops the session (the desktop awake, the ledger written), if one runs.
    pub(crate) fn stop(&self) {
        stop(&mut self.lock());
    }

    /// Whether the desktop is (as good as) asleep: a daemon of a real S3
    /// would not be running now, so what fails to reach the server then
    /// is no sign of the server's health.
    pub(crate) fn asleep(&self) -> bool {
        self.lock()
            .session
            .as_ref()
            .is_some_and(|session| matches!(session.progress().phase, Phase::Asleep | Phase::Resuming))
    }

    /// The power part of `jettison status`; none without `[power]`.
    pub(crate) fn status(&self) -> Option<DesktopPower> {
        let config = self.desktop.power.as_ref()?;
        let inner = self.lock();
        let (state, progress) = match (&inner.session, &inner.refused) {
            (Some(session), _) => {
                let progress = session.progress();
                let state = match progress.phase {
                    Phase::Awake => DesktopPowerState::Awake,
                    Phase::Suspending => DesktopPowerState::Suspending,
                    Phase::Asleep => DesktopPowerState::Asleep,
                    Phase::Resuming => DesktopPowerState::Resuming,
                };
                (state, progress)
            }
            (None, Some(_)) => (DesktopPowerState::Refused, inner.last.unwrap_or_default()),
            (None, None) => (DesktopPowerState::NotSleeping, inner.last.unwrap_or_default()),
        };
        let ledger_dir = self.ledger_dir(config);
        let total = match LedgerFiles::read(&ledger_dir) {
            Ok(summary) => summary.and_then(|summary| summary.total),
            Err(e) => {
                tracing::warn!("power status: {}", wire::chain(&e));
                None
            }
        };
        Some(DesktopPower {
            state,
            refused: inner.refused.clone(),
            sleeps: progress.sleeps,
            wakes: progress.wakes,
            asleep_secs: total.map_or(0.0, |t| t.secs.asleep),
            saved_joules: total.map_or(0.0, |t| t.saved_joules),
            saved_percent: total.map_or(0.0, |t| t.saved_percent),
            ledger_dir,
        })
    }

    fn ledger_dir(&self, config: &PowerConfig) -> PathBuf {
        config.ledger_dir(&self.desktop.state_dir)
    }

    /// The session's settings: every VM's memserv and diskserv events, and
    /// the gaps learned in earlier stays of the VMs `away`.
    fn settings(&self, config: &PowerConfig, away: &[VmName]) -> Result<SessionSettings, SessionError> {
        let profile = config.profile().map_err(|reason| SessionError::Config { reason })?;
        let sleep = match config.sleep {
            // A desktop whose NIC does not wake it never comes back, and
            // its VM freezes on the server at the next page it needs.
            SleepChoice::System => SleepWith::System(microsleep::check_nic(config.interface.as_deref())?),
            SleepChoice::EmulatedS3 => {
                let mac = self.desktop.mac.ok_or(SessionError::Config { reason: "no mac".to_owned() })?;
                SleepWith::Emulated(config.emulated(mac, &profile).map_err(|reason| SessionError::Config { reason })?)
            }
        };
        let events = self
            .desktop
            .vms
            .iter()
            .flat_map(|vm| {
                let dir = self.desktop.run_dir.join(vm.name.as_str());
                [Service::Memory, Service::Disk].map(|service| events_socket(&dir, service))
            })
            .collect();
        Ok(SessionSettings {
            policy: config.policy.build(profile, config.wait_secs)?,
            serve_secs: DEFAULT_SERVE_SECS,
            sleep,
            ledger_dir: self.ledger_dir(config),
            events,
            learned: away.iter().map(|vm| learned_gaps_file(&self.desktop.state_dir, vm)).collect(),
        })
    }
}

/// Where the wait's learned gaps of `vm` are kept: `<state_dir>/<vm>/wait-gaps.json`.
fn learned_gaps_file(state_dir: &Path, vm: &VmName) -> PathBuf {
    state_dir.join(vm.as_str()).join(LEARNED_GAPS_FILE)
}

/// Stops `inner`'s session, keeping its figures.
fn stop(inner: &mut Inner) {
    let Some(session) = inner.session.take() else { return };
    let (progress, report) = session.stop();
    inner.last = Some(progress);
    match report {
        Ok(report) => tracing::info!(
            sleeps = progress.sleeps,
            wakes = progress.wakes,
            asleep_secs = report.secs.asleep,
            "power session over: {:.1}% of the idle desktop's energy saved",
            report.saved_percent
        ),
        Err(e) => tracing::error!("the power session ended badly: {}", wire::chain(&e)),
    }
}
