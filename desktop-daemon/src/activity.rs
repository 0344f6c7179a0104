//! The activity monitor inside the desktop daemon (`[activity]`): watches
//! the user at the desk, warns in the user's session, moves the VMs that
//! are idle to the server, and brings them back when the user returns.
//!
//! ```text
//! watching --idle >= idle_secs, a VM could move--> warned --warn_secs, no input, no cancel--> away
//!    ^                                               |                                          |
//!    +---------- input, or a click/key on the warning+                                        input
//!    |                                                                                          v
//!    +--------------------------- all moved VMs home ----------------------------------- returning
//! ```
//!
//! The decision is [`activity_monitor::IdleMachine`]'s; this module adds
//! what the daemon knows, in [`Watch`], which is pure (no clock, no I/O)
//! apart from the [`Desk`] and [`Notice`] it is handed, so its tests
//! drive it with a fake desk and made-up times:
//!
//! - **Only idle VMs move.** The warning names the VMs quiet by the CPU
//!   and I/O the daemon samples (none quiet: no warning, and a full idle
//!   period before the next look). At its end each goes through the
//!   daemon's own consolidation, idleness check included (as `jettison
//!   consolidate` without `--force`); one that is busy, or moving already
//!   (a command holds it), stays. If none moved the user gets a full idle
//!   period before the next warning, and while nobody comes, tries that
//!   keep moving nothing (a full server, a VM busy all night) come at
//!   doubling intervals up to [`MAX_BACKOFF`].
//! - **Only what it moved comes back.** At the user's return the monitor
//!   reintegrates the VMs it moved, not those moved by hand: a user who ran
//!   `jettison consolidate` asked for it. (At start, VMs already on the
//!   server count as its own: a daemon restart while the user was away
//!   must not leave them there when the user returns.)
//! - **Manual commands win.** A VM brought back by hand (`jettison
//!   reintegrate` or `start`) is held here until the user has been at the
//!   desk again: the monitor does not send it off at the next idle period
//!   of someone who is not there. A VM the monitor moved that came back
//!   another way (by hand, sent home by the server, resumed from a
//!   checkpoint) drops out of its set; once none is left the user gets a
//!   full idle period again.
//! - **The source may come later.** A system daemon starts before anyone
//!   logs in: while no source answers the monitor says why in `jettison
//!   status` and tries again every [`RETRY`]. With `source = "auto"` a
//!   source other than X11 is replaced by X11 as soon as the display
//!   answers, unless it is Xwayland (see [`open`]).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use activity_monitor::{
    open_source, warning_lines, IdleMachine, IdleSource, IdleSourceKind, MonitorState, Step, X11Source, X11Warning,
};
use daemon_protocol::local::{DesktopActivity, DesktopActivityState};
use identifiers::VmName;

use crate::activity_config::{ActivityConfig, SourceChoice};

/// How often a missing source or display is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// The longest wait between tries that moved nothing, while nobody is
/// at the desk (a full server, a VM busy all night).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What the monitor asks of the daemon.
pub(crate) trait Desk {
    /// The VMs running on the desktop, quiet enough to move by what the
    /// daemon sampled, that no command is moving now.
    fn here(&self) -> Vec<VmName>;
    /// Whether `vm` is on the server; `None` while a command is moving it.
    fn on_server(&self, vm: &VmName) -> Option<bool>;
    /// Consolidates `vm` with the idleness check, unless a command is
    /// moving it.
    ///
    /// # Errors
    /// Why it stays, for the log.
    fn consolidate(&self, vm: &VmName) -> Result<(), String>;
    /// Brings `vm` home if it is on the server (waiting for a command
    /// moving it); `Ok(false)` if it was not there.
    ///
    /// # Errors
    /// Why it is still away, for the log.
    fn reintegrate(&self, vm: &VmName) -> Result<bool, String>;
}

/// The warning on the user's screen.
pub(crate) trait Notice {
    /// Shows (or updates) the warning.
    fn show(&mut self, lines: &[String]);
    /// Takes it away.
    fn withdraw(&mut self);
}

/// The monitor's state beside the machine's: what it moved, what it holds.
#[derive(Debug)]
pub(crate) struct Watch {
    machine: IdleMachine,
    /// The VMs it moved, brought back at the user's return.
    moved: BTreeSet<VmName>,
    /// VMs brought back by hand, and when.
    held: BTreeMap<VmName, Instant>,
    /// The VMs the current warning is about.
    warned: Vec<VmName>,
    /// Tries in a row that moved nothing (the server full, every VM busy),
    /// and when the last one ended.
    failed: (u32, Option<Instant>),
}

impl Watch {
    /// A watch from `now`; `away` are the VMs on the server already.
    pub(crate) fn new(config: &ActivityConfig, now: Instant, away: Vec<VmName>) -> Watch {
        let machine = if away.is_empty() {
            IdleMachine::new(config.machine(), now)
        } else {
            IdleMachine::consolidated(config.machine(), now)
        };
        Watch {
            machine,
            moved: away.into_iter().collect(),
            held: BTreeMap::new(),
            warned: Vec::new(),
            failed: (0, None),
        }
    }

    /// `vm` was brought back by hand at `at`.
    pub(crate) fn hold(&mut self, vm: VmName, at: Instant) {
        self.moved.remove(&vm);
        self.held.insert(vm, at);
    }

    /// The idle source went away (the X server of a session that ended):
    /// a warning running is dropped, so none runs out unseen.
    pub(crate) fn source_lost(&mut self, now: Instant) {
        if self.machine.cancel(now) {
            tracing::info!("the idle source went away during the warning: nothing moves");
        }
    }

    /// The machine's state.
    #[cfg(test)]
    pub(crate) fn state(&self) -> MonitorState {
        self.machine.state()
    }

    /// One observation at `now`: the user has been idle for `idle`, and
    /// `cancelled` says whether they clicked or typed on the warning.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        idle: Duration,
        cancelled: bool,
        desk: &dyn Desk,
        notice: &mut dyn Notice,
    ) {
        let last_input = now.checked_sub(idle);
        // The user was here since the last failed try: start counting again.
        if let (_, Some(at)) = self.failed {
            if last_input.is_some_and(|input| input > at) {
                self.failed = (0, None);
            }
        }
        // A hold lasts until the user's first input after it.
        self.held.retain(|_, at| last_input.is_none_or(|input| input <= *at));
        // What it moved and is home again, another way, is no longer its own.
        self.moved.retain(|vm| desk.on_server(vm) != Some(false));
        if self.moved.is_empty() {
            self.machine.reset(now);
        }
        if cancelled && self.machine.cancel(now) {
            notice.withdraw();
            tracing::info!("the user cancelled the move on the warning: everything stays here");
            return;
        }
        let step = self.machine.observe(now, idle);
        match step {
            Some(Step::Warn { .. }) if self.backing_off(now) => {
                // Tries that moved nothing come at longer and longer
                // intervals while nobody is here: no warning till then.
                self.machine.cancel(now);
            }
            Some(Step::Warn { idle, remaining }) => {
                self.warned = desk.here().into_iter().filter(|vm| !self.held.contains_key(vm)).collect();
                if self.warned.is_empty() {
                    // Nothing could move: no warning, a full period again.
                    self.machine.cancel(now);
                    return;
                }
                tracing::info!(
                    idle_secs = idle.as_secs(),
                    "the user is idle: warning, then moving {} in {} s unless there is input",
                    names(&self.warned),
                    remaining.as_secs()
                );
                notice.show(&warning_lines(remaining, &strings(&self.warned)));
            }
            None => {
                if let MonitorState::Warning { since } = self.machine.state() {
                    let left = self.machine.config().warn.saturating_sub(now.saturating_duration_since(since));
                    // Whole seconds left, rounded up: the countdown ends at 1.
                    let left = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
                    notice.show(&warning_lines(left, &strings(&self.warned)));
                }
            }
            Some(Step::CancelWarning) => {
                notice.withdraw();
                tracing::info!("input during the warning: everything stays here");
            }
            Some(Step::Consolidate) => {
                notice.withdraw();
                for vm in std::mem::take(&mut self.warned) {
                    if self.held.contains_key(&vm) {
                        continue;
                    }
                    match desk.consolidate(&vm) {
                        Ok(()) => {
                            tracing::info!(vm = %vm, "the user is away: moved to the server");
                            self.moved.insert(vm);
                        }
                        Err(why) => tracing::info!(vm = %vm, "the user is away, but it stays here: {why}"),
                    }
                }
                if self.moved.is_empty() {
                    self.failed = (self.failed.0.saturating_add(1), Some(now));
                } else {
                    self.failed = (0, None);
                }
                self.machine.consolidation_done(now, !self.moved.is_empty());
            }
            Some(Step::Reintegrate) => {
                let mut failed = false;
                for vm in self.moved.clone() {
                    match desk.reintegrate(&vm) {
                        Ok(_) => {
                            tracing::info!(vm = %vm, "the user is back: home again");
                            self.moved.remove(&vm);
                        }
                        Err(why) => {
                            failed = true;
                            tracing::error!(vm = %vm, "the user is back, but it cannot come home (the next input tries again): {why}");
                        }
                    }
                }
                self.machine.reintegration_done(now, !failed);
            }
        }
    }

    /// Whether the next try must wait: after `n` tries in a row that moved
    /// nothing, the next comes `idle_secs * 2^(n-1)` (at most
    /// [`MAX_BACKOFF`]) after the last, counted from the full idle period
    /// that follows every failure.
    fn backing_off(&self, now: Instant) -> bool {
        let (n, Some(at)) = self.failed else { return false };
        if n < 2 {
            return false;
        }
        let idle = self.machine.config().idle;
        let wait = idle.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF);
        now.saturating_duration_since(at) < wait
    }

    /// The status, given the source's name and idle time.
    fn status(&self, config: &ActivityConfig, source: &Reading, warning_window: bool) -> DesktopActivity {
        let state = match (&source.name, self.machine.state()) {
            (None, MonitorState::Active { .. } | MonitorState::Warning { .. }) => DesktopActivityState::NoSource,
            (_, MonitorState::Active { .. }) => DesktopActivityState::Watching,
            (_, MonitorState::Warning { .. }) => DesktopActivityState::Warned,
            (_, MonitorState::Consolidated { .. }) => DesktopActivityState::Away,
            (_, MonitorState::Reintegrating { .. }) => DesktopActivityState::Returning,
        };
        let idle_since = source
            .idle
            .and_then(|(at, idle)| at.checked_sub(idle))
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs()));
        DesktopActivity {
            state,
            source: source.name.clone(),
            source_error: source.error.clone(),
            idle_secs: source.idle.map(|(_, idle)| idle.as_secs_f64()),
            idle_since,
            idle_limit_secs: config.idle_secs,
            warn_secs: config.warn_secs,
            warning_window,
            moved: self.moved.iter().cloned().collect(),
            held: self.held.keys().cloned().collect(),
        }
    }
}

fn strings(vms: &[VmName]) -> Vec<String> {
    vms.iter().map(|vm| vm.to_string()).collect()
}

fn names(vms: &[VmName]) -> String {
    strings(vms).join(", ")
}

/// What the source said last.
#[derive(Debug, Default, Clone)]
struct Reading {
    name: Option<String>,
    error: Option<String>,
    /// When it was asked, and the idle time it answered.
    idle: Option<(SystemTime, Duration)>,
}

/// The daemon's side of the monitor: its configuration, the status it
/// publishes, and the manual returns it is told of.
#[derive(Debug)]
pub(crate) struct ActivitySlot {
    config: Option<ActivityConfig>,
    shared: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    status: Option<DesktopActivity>,
    holds: Vec<(VmName, Instant)>,
}

impl ActivitySlot {
    /// The slot for `[activity]`; inert without it or with `enabled = false`.
    pub(crate) fn new(config: Option<&ActivityConfig>) -> ActivitySlot {
        ActivitySlot { config: config.filter(|c| c.enabled).cloned(), shared: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("the activity lock was poisoned: a thread panicked holding it")
    }

    /// Whether the monitor runs.
    pub(crate) fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// `vm` was brought back or started by hand: the monitor leaves it
    /// here until the user has been at the desk.
    pub(crate) fn held_by_hand(&self, vm: &VmName) {
        if self.enabled() {
            self.lock().holds.push((vm.clone(), Instant::now()));
        }
    }

    /// The activity part of `jettison status`; none without `[activity]`.
    pub(crate) fn status(&self) -> Option<DesktopActivity> {
        let config = self.config.as_ref()?;
        let status = self.lock().status.clone();
        Some(status.unwrap_or(DesktopActivity {
            state: DesktopActivityState::NoSource,
            source: None,
            source_error: Some("the monitor is starting".to_owned()),
            idle_secs: None,
            idle_since: None,
            idle_limit_secs: config.idle_secs,
            warn_secs: config.warn_secs,
            warning_window: false,
            moved: Vec::new(),
            held: Vec::new(),
        }))
    }

    /// Runs the monitor for ever (the daemon's thread); returns at once
    /// without `[activity]`.
    pub(crate) fn run(&self, desk: &dyn Desk, away: Vec<VmName>) {
        let Some(config) = &self.config else { return };
        tracing::info!(
            source = config.source.kind().name(),
            display = %config.display,
            "watching the user: a warning after {} s without input, the VMs move {} s later",
            config.idle_secs,
            config.warn_secs
        );
        let mut watch = Watch::new(config, Instant::now(), away);
        let mut source: Option<Box<dyn IdleSource>> = None;
        let mut window = Window::new(config);
        let mut reading = Reading::default();
        let mut last_try: Option<Instant> = None;
        loop {
            let retry_due = last_try.is_none_or(|at| at.elapsed() >= RETRY);
            if retry_due {
                last_try = Some(Instant::now());
                window.connect_if_needed();
                let upgrade = source.is_some() && wants_x11(config, &reading);
                if source.is_none() || upgrade {
                    // Moving up to X11, only X11 is tried: the source in use stays open.
                    match open(config, upgrade) {
                        Ok(opened) => {
                            if source.is_none() || opened.name().starts_with("x11") {
                                tracing::info!(source = %opened.name(), "reading the user's idle time");
                                reading = Reading { name: Some(opened.name()), error: None, idle: None };
                                source = Some(opened);
                            }
                        }
                        Err(e) if source.is_none() => {
                            if reading.error.as_deref() != Some(e.as_str()) {
                                tracing::warn!(
                                    "no idle source answers yet (tried again every {} s): {e}",
                                    RETRY.as_secs()
                                );
                            }
                            reading = Reading { name: None, error: Some(e), idle: None };
                        }
                        Err(_) => {}
                    }
                }
            }
            for (vm, at) in std::mem::take(&mut self.lock().holds) {
                watch.hold(vm, at);
            }
            let idle = match source.as_mut().map(|s| s.idle_for()) {
                Some(Ok(idle)) => {
                    reading.idle = Some((SystemTime::now(), idle));
                    Some(idle)
                }
                Some(Err(e)) => {
                    let e = wire::chain(&e);
                    tracing::warn!("the idle source stopped answering ({e}); looking for one again");
                    reading = Reading { name: None, error: Some(e), idle: None };
                    source = None;
                    window.withdraw();
                    // No warning runs out unseen: a new one comes when a source answers.
                    watch.source_lost(Instant::now());
                    last_try = None;
                    None
                }
                None => None,
            };
            if let Some(idle) = idle {
                let cancelled = window.cancelled();
                watch.tick(Instant::now(), idle, cancelled, desk, &mut window);
            }
            self.lock().status = Some(watch.status(config, &reading, window.connected()));
            let pause = source.as_ref().map_or(Duration::from_millis(250), |s| s.poll_interval());
            std::thread::sleep(pause.min(RETRY));
        }
    }
}

/// Whether `auto` should try to move up to X11.
fn wants_x11(config: &ActivityConfig, reading: &Reading) -> bool {
    config.source == SourceChoice::Auto && reading.name.as_ref().is_some_and(|n| !n.starts_with("x11"))
}

/// Opens the configured source, or only X11 for an `upgrade` of `auto`.
///
/// `auto` in the daemon is X11 unless the display is Xwayland (its idle
/// time misses input to the session's Wayland clients: Debian's GNOME
/// runs on Wayland), else evdev (root reads every keyboard and pointer,
/// exactly), else logind (only as fine as the desktop's own idle delay).
/// logind gets seat0's active session when the file names none: the
/// daemon has no session of its own.
fn open(config: &ActivityConfig, upgrade: bool) -> Result<Box<dyn IdleSource>, String> {
    let kind = config.source.kind();
    if kind == IdleSourceKind::X11 {
        let x11 = X11Source::connect_with(Some(&config.display), config.xauthority.as_deref())
            .map_err(|e| wire::chain(&e))?;
        if x11.is_xwayland() {
            tracing::warn!(
                display = %config.display,
                "source = \"x11\" on Xwayland: its idle time misses input to the session's Wayland clients, so \
                 the user may be taken for idle while typing; source = \"evdev\" (or \"auto\") sees all input"
            );
        }
        return Ok(Box::new(x11));
    }
    if kind != IdleSourceKind::Auto {
        let session = (kind == IdleSourceKind::Logind).then(|| config.session.clone().or_else(active_session));
        let source = open_source(kind, &config.source_options(session.flatten())).map_err(|e| wire::chain(&e))?;
        return Ok(source);
    }
    let mut tried = Vec::new();
    match X11Source::connect_with(Some(&config.display), config.xauthority.as_deref()) {
        Ok(x11) if x11.is_xwayland() => tried.push(format!(
            "x11 ({} is Xwayland, whose idle time misses input to Wayland clients: the warning shows there, \
             the idle time comes from elsewhere)",
            config.display
        )),
        Ok(x11) => return Ok(Box::new(x11)),
        Err(e) => tried.push(format!("x11 ({})", wire::chain(&e))),
    }
    if upgrade {
        return Err(tried.join("; "));
    }
    for kind in [IdleSourceKind::Evdev, IdleSourceKind::Logind] {
        let session = (kind == IdleSourceKind::Logind).then(|| config.session.clone().or_else(active_session));
        match open_source(kind, &config.source_options(session.flatten())) {
            Ok(source) => return Ok(source),
            Err(e) => tried.push(format!("{} ({})", kind.name(), wire::chain(&e))),
        }
    }
    Err(format!("no idle source answers: {}", tried.join("; ")))
}

/// The active session of seat0, from logind.
fn active_session() -> Option<String> {
    let out =
        Command::new("loginctl").args(["show-seat", "seat0", "--property=ActiveSession", "--value"]).output().ok()?;
    let session = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !session.is_empty()).then_some(session)
}

/// The warning window on the user's display, reconnected as needed.
struct Window {
    display: String,
    xauthority: Option<std::path::PathBuf>,
    x11: Option<X11Warning>,
}

impl Window {
    fn new(config: &ActivityConfig) -> Window {
        Window { display: config.display.clone(), xauthority: config.xauthority.clone(), x11: None }
    }

    fn connected(&self) -> bool {
        self.x11.is_some()
    }

    fn connect_if_needed(&mut self) {
        if self.x11.is_none() {
            match X11Warning::connect(&self.display, self.xauthority.as_deref()) {
                Ok(x11) => {
                    tracing::info!(display = %self.display, "the warning will show on the user's display");
                    self.x11 = Some(x11);
                }
                Err(e) => tracing::debug!("no display for the warning yet: {}", wire::chain(&e)),
            }
        }
    }

    fn cancelled(&mut self) -> bool {
        let Some(x11) = &mut self.x11 else { return false };
        match x11.cancelled() {
            Ok(cancelled) => cancelled,
            Err(e) => {
                tracing::warn!("the display of the warning went away: {}", wire::chain(&e));
                self.x11 = None;
                false
            }
        }
    }
}

impl Notice for Window {
    fn show(&mut self, lines: &[String]) {
        let Some(x11) = &mut self.x11 else {
            return tracing::warn!("no display shows the warning: {}", lines.join(" "));
        };
        if let Err(e) = x11.show(lines) {
            tracing::warn!("cannot show the warning: {}", wire::chain(&e));
            self.x11 = None;
        }
    }

    fn withdraw(&mut self) {
        if let Some(x11) = &mut self.x11 {
            x11.withdraw();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn vm(name: &str) -> VmName {
        name.parse().expect("a VM name")
    }

    /// A desk whose VMs move when asked, unless listed as busy or moving.
    #[derive(Default)]
    struct FakeDesk {
        here: RefCell<BTreeSet<VmName>>,
        away: RefCell<BTreeSet<VmName>>,
        busy: BTreeSet<VmName>,
        moving: BTreeSet<VmName>,
        calls: RefCell<Vec<String>>,
    }

    impl FakeDesk {
        fn with(here: &[&str]) -> FakeDesk {
            FakeDesk { here: RefCell::new(here.iter().map(|n| vm(n)).collect()), ..FakeDesk::default() }
        }

        fn home_by_hand(&self, name: &str) {
            self.away.borrow_mut().remove(&vm(name));
            self.here.borrow_mut().insert(vm(name));
        }
    }

    impl Desk for FakeDesk {
        fn here(&self) -> Vec<VmName> {
            self.here.borrow().iter().filter(|vm| !self.moving.contains(*vm)).cloned().collect()
        }
        fn on_server(&self, vm: &VmName) -> Option<bool> {
            if self.moving.contains(vm) {
                return None;
            }
            Some(self.away.borrow().contains(vm))
        }
        fn consolidate(&self, vm: &VmName) -> Result<(), String> {
            self.calls.borrow_mut().push(format!("consolidate {vm}"));
            if self.busy.contains(vm) {
                return Err("not idle".to_owned());
            }
            self.here.borrow_mut().remove(vm);
            self.away.borrow_mut().insert(vm.clone());
            Ok(())
        }
        fn reintegrate(&self, vm: &VmName) -> Result<bool, String> {
            self.calls.borrow_mut().push(format!("reintegrate {vm}"));
            let was = self.away.borrow_mut().remove(vm);
            if was {
                self.here.borrow_mut().insert(vm.clone());
            }
            Ok(was)
        }
    }

    #[derive(Default)]
    struct Screen {
        shown: Option<Vec<String>>,
        shows: usize,
    }

    impl Notice for Screen {
        fn show(&mut self, lines: &[String]) {
            if self.shown.is_none() {
                self.shows += 1;
            }
            self.shown = Some(lines.to_vec());
        }
        fn withdraw(&mut self) {
            self.shown = None;
        }
    }

    /// The paper's thresholds, a user whose last input the test sets, and
    /// a poll every 250 ms.
    struct Sim {
        t0: Instant,
        watch: Watch,
        last_input: Duration,
        screen: Screen,
    }

    impl Sim {
        fn new(away: &[&str]) -> Sim {
            let config: ActivityConfig = toml::from_str("").expect("defaults");
            let t0 = Instant::now();
            let watch = Watch::new(&config, t0, away.iter().map(|n| vm(n)).collect());
            Sim { t0, watch, last_input: Duration::ZERO, screen: Screen::default() }
        }

        fn run(&mut self, desk: &FakeDesk, from: Duration, to: Duration) {
            let mut t = from;
            while t < to {
                self.at(desk, t, false);
                t += Duration::from_millis(250);
            }
        }

        fn at(&mut self, desk: &FakeDesk, t: Duration, cancelled: bool) {
            let idle = t.saturating_sub(self.last_input);
            self.watch.tick(self.t0 + t, idle, cancelled, desk, &mut self.screen);
        }

        fn state(&self) -> &'static str {
            self.watch.state().name()
        }
    }

    #[test]
    fn idle_warns_then_moves_the_idle_vms_and_input_brings_them_back() {
        let desk = FakeDesk::with(&["vm1", "vm2"]);
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(15) + Duration::from_millis(100));
        let shown = sim.screen.shown.clone().expect("the warning shows at 15 s");
        assert!(shown[1].contains("vm1, vm2") && shown[1].contains("in 5 s"), "{shown:?}");
        sim.run(&desk, secs(16), secs(17));
        assert!(sim.screen.shown.as_ref().expect("still shown")[1].contains("in 4 s"), "it counts down");
        sim.run(&desk, secs(17), secs(21));
        assert!(sim.screen.shown.is_none(), "the warning goes before the move");
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1", "consolidate vm2"]);
        assert_eq!(sim.state(), "consolidated");
        sim.last_input = secs(100);
        sim.at(&desk, secs(100) + Duration::from_millis(200), false);
        assert_eq!(desk.calls.borrow()[2..], ["reintegrate vm1", "reintegrate vm2"]);
        assert_eq!(sim.state(), "active");
        assert_eq!(sim.screen.shows, 1);
    }

    #[test]
    fn a_cancel_on_the_warning_moves_nothing_for_a_full_period() {
        let desk = FakeDesk::with(&["vm1"]);
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(16));
        assert!(sim.screen.shown.is_some());
        sim.at(&desk, secs(16), true);
        assert!(sim.screen.shown.is_none(), "the cancel takes the warning away");
        // The user clicked but the source saw no input: still nothing moves.
        sim.run(&desk, secs(16), secs(31));
        assert!(desk.calls.borrow().is_empty(), "{:?}", desk.calls.borrow());
        assert_eq!(sim.screen.shows, 1, "no second warning before a full period");
    }

    #[test]
    fn a_busy_vm_stays_and_the_next_try_waits_a_full_period() {
        let mut desk = FakeDesk::with(&["vm1", "vm2"]);
        desk.busy.insert(vm("vm2"));
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(21));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1", "consolidate vm2"]);
        assert_eq!(sim.watch.moved.iter().cloned().collect::<Vec<_>>(), [vm("vm1")]);
        // All busy: back to watching, a full period before the next warning.
        let mut desk = FakeDesk::with(&["vm1"]);
        desk.busy.insert(vm("vm1"));
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(21));
        assert_eq!(sim.state(), "active");
        sim.run(&desk, secs(21), secs(35));
        assert_eq!(sim.screen.shows, 1);
        sim.run(&desk, secs(35), secs(36));
        assert_eq!(sim.screen.shows, 2);
    }

    #[test]
    fn tries_that_move_nothing_back_off_while_nobody_comes() {
        let mut desk = FakeDesk::with(&["vm1"]);
        desk.busy.insert(vm("vm1"));
        let mut sim = Sim::new(&[]);
        // Over an hour without input: far fewer tries than one per 20 s.
        sim.run(&desk, Duration::ZERO, secs(3600));
        let tries = desk.calls.borrow().len();
        assert!((5..=12).contains(&tries), "{tries} tries: {:?}", desk.calls.borrow());
        // The user comes and goes: a try after one full period again.
        sim.last_input = secs(3600);
        desk.calls.borrow_mut().clear();
        sim.run(&desk, secs(3600), secs(3621));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1"]);
    }

    #[test]
    fn a_warning_is_dropped_when_the_source_goes_away() {
        let desk = FakeDesk::with(&["vm1"]);
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(16));
        assert!(sim.screen.shown.is_some());
        sim.watch.source_lost(sim.t0 + secs(16));
        // Back much later, still without input: a new warning, not a move.
        sim.at(&desk, secs(60), false);
        assert!(desk.calls.borrow().is_empty(), "{:?}", desk.calls.borrow());
        assert_eq!(sim.state(), "warning");
    }

    #[test]
    fn a_moving_vm_is_left_alone_and_no_vm_means_no_warning() {
        let mut desk = FakeDesk::with(&["vm1"]);
        desk.moving.insert(vm("vm1"));
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(40));
        assert!(desk.calls.borrow().is_empty());
        assert_eq!(sim.screen.shows, 0, "nothing could move: no warning");
    }

    #[test]
    fn a_vm_brought_back_by_hand_stays_until_the_user_has_been_here() {
        let desk = FakeDesk::with(&["vm1"]);
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(21));
        assert_eq!(sim.state(), "consolidated");
        // Brought back by hand (over ssh: no input at the desk).
        desk.home_by_hand("vm1");
        sim.watch.hold(vm("vm1"), sim.t0 + secs(30));
        sim.run(&desk, secs(30), secs(120));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1"], "not sent off again");
        assert_eq!(sim.screen.shows, 1);
        // The user comes, then goes: it moves again.
        sim.last_input = secs(120);
        sim.run(&desk, secs(120), secs(141));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1", "consolidate vm1"]);
    }

    #[test]
    fn a_vm_moved_by_hand_is_not_brought_back_but_one_away_at_start_is() {
        let desk = FakeDesk::with(&["vm1"]);
        let mut sim = Sim::new(&[]);
        // Consolidated by hand while the user is here.
        desk.consolidate(&vm("vm1")).expect("moves");
        sim.last_input = secs(10);
        sim.run(&desk, secs(10), secs(12));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1"]);
        // A daemon started while vm1 was away brings it back at the first input.
        let mut sim = Sim::new(&["vm1"]);
        sim.run(&desk, Duration::ZERO, secs(60));
        sim.last_input = secs(60);
        sim.at(&desk, secs(61), false);
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1", "reintegrate vm1"]);
    }

    #[test]
    fn what_came_home_another_way_leaves_the_set_and_earns_a_full_period() {
        let desk = FakeDesk::with(&["vm1"]);
        let mut sim = Sim::new(&[]);
        sim.run(&desk, Duration::ZERO, secs(21));
        desk.home_by_hand("vm1"); // the server sent it home
        sim.at(&desk, secs(30), false);
        assert_eq!(sim.state(), "active");
        assert!(sim.watch.moved.is_empty());
        sim.run(&desk, secs(30), secs(45));
        assert_eq!(sim.screen.shows, 1);
        sim.run(&desk, secs(45), secs(51));
        assert_eq!(*desk.calls.borrow(), ["consolidate vm1", "consolidate vm1"]);
    }

    #[test]
    fn the_status_names_the_state_source_and_idle_since() {
        let config: ActivityConfig = toml::from_str("").expect("defaults");
        let watch = Watch::new(&config, Instant::now(), vec![vm("vm1")]);
        let at = SystemTime::UNIX_EPOCH + secs(1_000_000);
        let reading = Reading { name: Some("x11 :0".to_owned()), error: None, idle: Some((at, secs(40))) };
        let status = watch.status(&config, &reading, true);
        assert_eq!(status.state, DesktopActivityState::Away);
        assert_eq!(status.idle_since, Some(1_000_000 - 40));
        assert_eq!(status.moved, [vm("vm1")]);
        let none = Reading { name: None, error: Some("x11: no display".to_owned()), idle: None };
        let fresh = Watch::new(&config, Instant::now(), Vec::new());
        assert_eq!(fresh.status(&config, &none, false).state, DesktopActivityState::NoSource);
    }
}
