//! The fleet over one weekday: every desktop's VM moves to the server when
//! its user has been idle for the timeout and back when the user returns,
//! by full or partial migration, over one shared link; events in time
//! order.
//!
//! # A desktop's VM
//!
//! ```text
//!         timeout expires               transfer + fixed part
//!   Home ----------------> Consolidating ---------------------> Away
//!    ^  ^                        | user returns (abort)           | user returns
//!    |  +------------------------+                                v
//!    |         transfer + fixed part                          Resuming (t_r)
//!    +------------------------------------ Reintegrating <--------+
//! ```
//!
//! - **Full**: the VM's memory crosses the link each way (our QEMU
//!   precopy's bytes, see [`MeasuredFigures`]); the desktop sleeps while it
//!   is away and nothing wakes it.
//! - **Partial**: the descriptor crosses at consolidation, then the
//!   working set follows as one bulk transfer (as the paper's simulation
//!   did: it loads the link more than the real on-demand fetches, against
//!   partial migration); the desktop sleeps between the VM's requests
//!   ([`StayEnergy`]); back, only the dirty state crosses.
//! - Every move is its bytes on the shared link, fair-shared with the
//!   other moves in the same direction ([`SharedLink`]; the link is full
//!   duplex), then a fixed part (the measured time less its bytes at the
//!   link's rate). A consolidation the user interrupts is abandoned: its
//!   bytes so far count, it saved nothing and the desktop was awake through
//!   it. A timeout that expires while the VM is still coming home starts
//!   the next consolidation as soon as it is home.
//! - The desktop resumes when the user returns (the stay's cost includes
//!   it); the reintegration latency is from the end of the resume, as the
//!   paper's 4.11 s excludes S3.
//!
//! # Energy
//!
//! Against the same desktop never migrating (idle power whenever its user
//! is away): a stay saves what [`StayEnergy`] says for its length, and
//! each move costs the difference between serving and idle power for as
//! long as it keeps the desktop busy. The day runs from 4:00 to 4:00
//! ([`DAY_START_SECS`]): every VM is away at 4:00 (it left the evening
//! before) and the night's stay is counted once, as the evening's part and
//! the morning's together, as on a run of identical days.
//!
//! # Servers
//!
//! Sized for the demand: the most memory the VMs of users idle past the
//! timeout need at any moment (full: the VM's RAM; partial: the working
//! set it fetches), in servers of the measured memory, as the paper counts
//! them (16 GiB / memory per VM). It depends on the users' days and the
//! timeout only, not on what the link managed to move. They draw the
//! paper's server's idle power all day.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use power::server::ServerProfile;
use power::PowerProfile;

use super::day::{desktop_rng, normal, DayModel, UserDay, DAY_END_SECS, DAY_START_SECS};
use super::measured::MeasuredFigures;
use super::shared_link::{SharedLink, TransferId};
use super::stay::{recorded_arrivals, recorded_then_model, stay_grid, StayEnergy};
use crate::recorded::{read_trace, RecordedTraceError};

/// Joules in a kWh.
const JOULES_PER_KWH: f64 = 3.6e6;
/// Seconds in the simulated day.
const DAY_SECS: f64 = DAY_END_SECS - DAY_START_SECS;

/// How a VM moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// The whole VM, each way (live migration).
    Full,
    /// Jettison: the descriptor out, the working set on demand, the dirty
    /// state back.
    Partial,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Full => "full",
            Scheme::Partial => "partial",
        })
    }
}

/// What stays fixed across runs: the figures, the desktop's power and its
/// energy while its VM is away, under each scheme.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The measured figures.
    pub measured: MeasuredFigures,
    /// The desktop's power profile.
    pub desktop: PowerProfile,
    /// The server's power profile.
    pub server: ServerProfile,
    /// The desktop's saving over a stay, full migration.
    pub full_stay: StayEnergy,
    /// The desktop's saving over a stay, partial migration.
    pub partial_stay: StayEnergy,
}

/// Why the fleet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The desktop's recorded trace could not be read.
    #[error("reading the desktop's recorded stay")]
    ReadTrace(#[source] RecordedTraceError),
    /// The desktop's energy over a stay could not be simulated.
    #[error("simulating the desktop over a stay")]
    SimulateStay(#[source] power::PowerError),
}

impl Fleet {
    /// The fleet of `measured`, with the partial migration's desktop
    /// replaying the recorded trace `measured.desktop_trace` and the
    /// first-touch model of seed `seed` after it.
    ///
    /// # Errors
    ///
    /// [`FleetError`]: the trace cannot be read, or the desktop cannot be
    /// simulated (a profile the policy refuses).
    pub fn build(measured: MeasuredFigures, seed: u64) -> Result<Fleet, FleetError> {
        let trace = read_trace(&measured.desktop_trace).map_err(FleetError::ReadTrace)?;
        let (recorded, recorded_secs) = recorded_arrivals(&trace);
        let arrivals = recorded_then_model(&recorded, recorded_secs, seed, DAY_SECS);
        Fleet::with_partial_arrivals(measured, &arrivals)
    }

    /// The fleet of `measured`, the partial migration's desktop receiving
    /// `arrivals` (seconds from the start of each stay).
    ///
    /// # Errors
    ///
    /// [`FleetError::SimulateStay`] for a profile the policy refuses.
    pub fn with_partial_arrivals(measured: MeasuredFigures, arrivals: &[f64]) -> Result<Fleet, FleetError> {
        let desktop = PowerProfile::TABLE_1;
        let grid = stay_grid(DAY_SECS);
        let full_stay = StayEnergy::from_arrivals(desktop, 0.0, &[], &grid).map_err(FleetError::SimulateStay)?;
        let partial_stay = StayEnergy::from_arrivals(desktop, power::DEFAULT_WAIT_SECS, arrivals, &grid)
            .map_err(FleetError::SimulateStay)?;
        Ok(Fleet { measured, desktop, server: ServerProfile::PAPER, full_stay, partial_stay })
    }
}

/// One run: how many desktops, how long a timeout, which seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunConfig {
    /// Desktops in the office.
    pub desktops: usize,
    /// User idleness before a VM moves, seconds.
    pub idle_timeout_secs: f64,
    /// Seed of the users' days and the sizes drawn.
    pub seed: u64,
}

/// What one run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetReport {
    /// The scheme.
    pub scheme: Scheme,
    /// The run.
    pub config: RunConfig,
    /// Consolidations completed.
    pub consolidations: u64,
    /// Consolidations the user's return interrupted.
    pub aborted: u64,
    /// Reintegrations completed.
    pub reintegrations: u64,
    /// Bytes on the link, both directions.
    pub network_bytes: f64,
    /// Those bytes as a share of what one direction of the link carries in
    /// the day, percent (the paper's utilisation).
    pub network_percent: f64,
    /// Mean reintegration latency (from the desktop's resume to the VM
    /// running on it), seconds.
    pub mean_reintegration_secs: f64,
    /// The longest.
    pub max_reintegration_secs: f64,
    /// Mean consolidation time (completed ones), seconds.
    pub mean_consolidation_secs: f64,
    /// Share of the desktops' day their VMs spent on the server, percent.
    pub on_server_percent: f64,
    /// Energy the desktops saved against never migrating, kWh.
    pub desktop_saved_kwh: f64,
    /// Servers needed.
    pub servers: u32,
    /// Their energy over the day, kWh.
    pub server_kwh: f64,
}

impl FleetReport {
    /// Savings per desktop per year at `usd_per_kwh`, every day a weekday
    /// as the paper annualised them: desktops' savings alone, and net of
    /// the servers' energy.
    pub fn usd_per_desktop_year(&self, usd_per_kwh: f64) -> (f64, f64) {
        let per = |kwh: f64| kwh * 365.0 * usd_per_kwh / self.config.desktops.max(1) as f64;
        (per(self.desktop_saved_kwh), per(self.desktop_saved_kwh - self.server_kwh))
    }
}

/// The sizes one stay would move, drawn with the user's day.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StaySizes {
    /// Working set fetched and held on the server, bytes.
    working_set_bytes: f64,
    /// Dirty state sent back, bytes.
    reintegration_bytes: f64,
}

/// Where a desktop's VM is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Home,
    /// Moving out since `since`; on the link while `transfer` is some.
    Consolidating {
        since: f64,
        transfer: Option<TransferId>,
    },
    /// On the server since `since`.
    Away {
        since: f64,
    },
    /// The user is back; the desktop resumes.
    Resuming,
    /// Moving home since `since`; on the link while `transfer` is some.
    Reintegrating {
        since: f64,
        transfer: Option<TransferId>,
    },
}

#[derive(Debug, Clone)]
struct Desktop {
    day: UserDay,
    sizes: Vec<StaySizes>,
    place: Place,
    /// Bumped when a move is abandoned, so its pending events are stale.
    epoch: u64,
    /// The idle period whose timeout expired while the VM was not home.
    pending: Option<usize>,
    /// The idle period of the current or last stay (its sizes).
    period: usize,
    /// The partial VM's working set on the link.
    working_set: Option<TransferId>,
    /// The morning's part of the night's stay, seconds.
    morning_secs: f64,
    saved_joules: f64,
    away_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EventKind {
    IdleTimeout { period: usize },
    UserReturns { period: usize },
    ResumeDone,
    FixedPartDone { epoch: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    at: f64,
    seq: u64,
    desktop: usize,
    kind: EventKind,
}

impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Event) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Event) -> std::cmp::Ordering {
        self.at.total_cmp(&other.at).then(self.seq.cmp(&other.seq))
    }
}

/// The direction a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    ToServer,
    ToDesktop,
}

/// What a transfer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Move,
    WorkingSet,
}

/// The state of one run.
#[derive(Debug)]
struct Run<'a> {
    fleet: &'a Fleet,
    scheme: Scheme,
    timeout: f64,
    desktops: Vec<Desktop>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    to_server: SharedLink,
    to_desktop: SharedLink,
    owners: HashMap<(Direction, TransferId), (usize, Purpose)>,
    consolidation_secs: Vec<f64>,
    reintegration_secs: Vec<f64>,
    aborted: u64,
}

impl Fleet {
    /// The desktops of `days`, with the sizes each of their idle periods
    /// would move, drawn under `seed`.
    fn desktops(&self, days: &[UserDay], seed: u64) -> Vec<Desktop> {
        let sigma = (1.0 + self.measured.spread_cv.powi(2)).ln().sqrt();
        days.iter()
            .enumerate()
            .map(|(index, day)| {
                let mut rng = desktop_rng(seed, index, 1);
                let mut draw = |median: f64| median * (sigma * normal(&mut rng, 0.0, 1.0)).exp();
                let sizes = day
                    .idle
                    .iter()
                    .map(|_| StaySizes {
                        working_set_bytes: draw(self.measured.working_set_bytes) + self.measured.working_set_disk_bytes,
                        reintegration_bytes: draw(self.measured.reintegration_bytes),
                    })
                    .collect();
                // A user idle at 4:00 left the evening before: the VM is away.
                let away_at_start = day.idle.first().is_some_and(|first| first.end_secs > DAY_START_SECS);
                Desktop {
                    day: day.clone(),
                    sizes,
                    place: if away_at_start { Place::Away { since: DAY_START_SECS } } else { Place::Home },
                    epoch: 0,
                    pending: None,
                    period: 0,
                    working_set: None,
                    morning_secs: 0.0,
                    saved_joules: 0.0,
                    away_secs: 0.0,
                }
            })
            .collect()
    }

    /// Servers the demand needs: the most memory the VMs of users idle past
    /// the timeout hold at once, in servers of the measured memory (none
    /// when no user is ever idle that long).
    fn servers_needed(&self, scheme: Scheme, desktops: &[Desktop], timeout: f64) -> u32 {
        let mut changes: Vec<(f64, f64)> = Vec::new();
        for desktop in desktops {
            for (period, sizes) in desktop.day.idle.iter().zip(&desktop.sizes) {
                let from =
                    if period.start_secs <= DAY_START_SECS { DAY_START_SECS } else { period.start_secs + timeout };
                if from < period.end_secs {
                    let bytes = match scheme {
                        Scheme::Full => self.measured.vm_ram_bytes,
                        Scheme::Partial => sizes.working_set_bytes,
                    };
                    changes.push((from, bytes));
                    changes.push((period.end_secs, -bytes));
                }
            }
        }
        // Departures before arrivals at the same instant.
        changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let (mut held, mut peak) = (0.0_f64, 0.0_f64);
        for (_, bytes) in changes {
            held += bytes;
            peak = peak.max(held);
        }
        let per_server = match scheme {
            Scheme::Full => f64::from(self.measured.full_vms_per_server()) * self.measured.vm_ram_bytes,
            Scheme::Partial => self.measured.server_memory_bytes,
        };
        (peak / per_server).ceil() as u32
    }

    /// Simulates the day of `config` under `scheme`, the users' days drawn
    /// by [`DayModel`] under the run's seed.
    pub fn run(&self, scheme: Scheme, config: RunConfig) -> FleetReport {
        let model = DayModel { seed: config.seed };
        let days: Vec<UserDay> = (0..config.desktops).map(|index| model.day(index)).collect();
        self.run_days(scheme, config, &days)
    }

    /// Simulates `days` (one per desktop; `config.desktops` is not read)
    /// under `scheme`.
    pub fn run_days(&self, scheme: Scheme, config: RunConfig, days: &[UserDay]) -> FleetReport {
        let config = RunConfig { desktops: days.len(), ..config };
        let desktops = self.desktops(days, config.seed);
        let servers = self.servers_needed(scheme, &desktops, config.idle_timeout_secs);
        let mut run = Run {
            fleet: self,
            scheme,
            timeout: config.idle_timeout_secs,
            desktops,
            events: BinaryHeap::new(),
            seq: 0,
            to_server: SharedLink::new(self.measured.link_bits_per_sec),
            to_desktop: SharedLink::new(self.measured.link_bits_per_sec),
            owners: HashMap::new(),
            consolidation_secs: Vec::new(),
            reintegration_secs: Vec::new(),
            aborted: 0,
        };
        run.to_server.advance(DAY_START_SECS);
        run.to_desktop.advance(DAY_START_SECS);
        run.schedule_users();
        run.run_until(DAY_END_SECS);
        run.report(config, servers)
    }
}

impl Run<'_> {
    fn push(&mut self, at: f64, desktop: usize, kind: EventKind) {
        self.seq += 1;
        self.events.push(Reverse(Event { at, seq: self.seq, desktop, kind }));
    }

    fn schedule_users(&mut self) {
        for index in 0..self.desktops.len() {
            let periods = self.desktops[index].day.idle.clone();
            for (period, idle) in periods.iter().enumerate() {
                // The first period's VM is already away; the last runs past the day.
                if period > 0 && idle.start_secs + self.timeout < idle.end_secs {
                    self.push(idle.start_secs + self.timeout, index, EventKind::IdleTimeout { period });
                }
                if idle.end_secs < DAY_END_SECS && idle.end_secs > DAY_START_SECS {
                    self.push(idle.end_secs, index, EventKind::UserReturns { period });
                }
            }
        }
    }

    fn link(&mut self, direction: Direction) -> &mut SharedLink {
        match direction {
            Direction::ToServer => &mut self.to_server,
            Direction::ToDesktop => &mut self.to_desktop,
        }
    }

    fn start_transfer(
        &mut self,
        now: f64,
        direction: Direction,
        bytes: f64,
        owner: usize,
        purpose: Purpose,
    ) -> TransferId {
        let id = self.link(direction).start(now, bytes);
        self.owners.insert((direction, id), (owner, purpose));
        id
    }

    fn cancel_transfer(&mut self, now: f64, direction: Direction, id: TransferId) {
        self.link(direction).cancel(now, id);
        self.owners.remove(&(direction, id));
    }

    /// The next link completion, either direction.
    fn next_link_completion(&self) -> Option<(f64, Direction)> {
        let to_server = self.to_server.next_completion().map(|(at, _)| (at, Direction::ToServer));
        let to_desktop = self.to_desktop.next_completion().map(|(at, _)| (at, Direction::ToDesktop));
        match (to_server, to_desktop) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn run_until(&mut self, end: f64) {
        loop {
            let link = self.next_link_completion();
            let event_at = self.events.peek().map(|Reverse(event)| event.at);
            match (link, event_at) {
                (Some((at, direction)), event) if at < end && event.is_none_or(|e| at <= e) => {
                    self.to_server.advance(at);
                    self.to_desktop.advance(at);
                    let done = self.link(direction).take_completed();
                    for id in done {
                        if let Some((owner, purpose)) = self.owners.remove(&(direction, id)) {
                            self.transfer_done(at, owner, purpose);
                        }
                    }
                }
                (_, Some(at)) if at < end => {
                    let Some(Reverse(event)) = self.events.pop() else { break };
                    self.to_server.advance(at);
                    self.to_desktop.advance(at);
                    self.handle(event);
                }
                _ => break,
            }
        }
        self.to_server.advance(end);
        self.to_desktop.advance(end);
        self.close_day(end);
    }

    fn handle(&mut self, event: Event) {
        let (now, index) = (event.at, event.desktop);
        match event.kind {
            EventKind::IdleTimeout { period } => match self.desktops[index].place {
                Place::Home => self.consolidate(now, index, period),
                Place::Resuming | Place::Reintegrating { .. } => self.desktops[index].pending = Some(period),
                Place::Consolidating { .. } | Place::Away { .. } => {}
            },
            EventKind::UserReturns { period } => self.user_returns(now, index, period),
            EventKind::ResumeDone => {
                if self.desktops[index].place == Place::Resuming {
                    self.reintegrate(now, index);
                }
            }
            EventKind::FixedPartDone { epoch } => {
                if self.desktops[index].epoch == epoch {
                    self.move_done(now, index);
                }
            }
        }
    }

    fn consolidate(&mut self, now: f64, index: usize, period: usize) {
        let measured = &self.fleet.measured;
        let bytes = match self.scheme {
            Scheme::Full => measured.full_out_bytes,
            Scheme::Partial => measured.consolidation_bytes,
        };
        let id = self.start_transfer(now, Direction::ToServer, bytes, index, Purpose::Move);
        let desktop = &mut self.desktops[index];
        desktop.period = period;
        desktop.pending = None;
        desktop.place = Place::Consolidating { since: now, transfer: Some(id) };
    }

    fn reintegrate(&mut self, now: f64, index: usize) {
        let bytes = match self.scheme {
            Scheme::Full => self.fleet.measured.full_back_bytes,
            Scheme::Partial => self.desktops[index].sizes[self.desktops[index].period].reintegration_bytes,
        };
        let id = self.start_transfer(now, Direction::ToDesktop, bytes, index, Purpose::Move);
        self.desktops[index].place = Place::Reintegrating { since: now, transfer: Some(id) };
    }

    /// A move's bytes have crossed: its fixed part follows.
    fn transfer_done(&mut self, now: f64, index: usize, purpose: Purpose) {
        let measured = &self.fleet.measured;
        let desktop = &mut self.desktops[index];
        if purpose == Purpose::WorkingSet {
            desktop.working_set = None;
            return;
        }
        let fixed = match (desktop.place, self.scheme) {
            (Place::Consolidating { since, .. }, Scheme::Full) => {
                desktop.place = Place::Consolidating { since, transfer: None };
                measured.fixed_secs(measured.full_out_bytes, measured.full_out_secs)
            }
            (Place::Consolidating { since, .. }, Scheme::Partial) => {
                desktop.place = Place::Consolidating { since, transfer: None };
                measured.fixed_secs(measured.consolidation_bytes, measured.consolidation_secs)
            }
            (Place::Reintegrating { since, .. }, Scheme::Full) => {
                desktop.place = Place::Reintegrating { since, transfer: None };
                measured.fixed_secs(measured.full_back_bytes, measured.full_back_secs)
            }
            (Place::Reintegrating { since, .. }, Scheme::Partial) => {
                desktop.place = Place::Reintegrating { since, transfer: None };
                measured.fixed_secs(measured.reintegration_bytes, measured.reintegration_secs)
            }
            _ => return,
        };
        let epoch = desktop.epoch;
        self.push(now + fixed, index, EventKind::FixedPartDone { epoch });
    }

    /// A move has completed, bytes and fixed part.
    fn move_done(&mut self, now: f64, index: usize) {
        let busy_watts = self.busy_watts();
        match self.desktops[index].place {
            Place::Consolidating { since, transfer: None } => {
                self.consolidation_secs.push(now - since);
                self.desktops[index].saved_joules -= busy_watts * (now - since);
                self.desktops[index].place = Place::Away { since: now };
                if self.scheme == Scheme::Partial {
                    let desktop = &self.desktops[index];
                    let bytes = desktop.sizes[desktop.period].working_set_bytes;
                    let id = self.start_transfer(now, Direction::ToServer, bytes, index, Purpose::WorkingSet);
                    self.desktops[index].working_set = Some(id);
                }
            }
            Place::Reintegrating { since, transfer: None } => {
                self.reintegration_secs.push(now - since);
                let desktop = &mut self.desktops[index];
                desktop.saved_joules -= busy_watts * (now - since);
                desktop.place = Place::Home;
                if let Some(period) = desktop.pending.take() {
                    self.consolidate(now, index, period);
                }
            }
            _ => {}
        }
    }

    fn user_returns(&mut self, now: f64, index: usize, period: usize) {
        let busy_watts = self.busy_watts();
        let resume_secs = self.fleet.desktop.resume_secs;
        if self.desktops[index].pending == Some(period) {
            self.desktops[index].pending = None;
        }
        match self.desktops[index].place {
            Place::Consolidating { since, transfer } => {
                if let Some(id) = transfer {
                    self.cancel_transfer(now, Direction::ToServer, id);
                }
                self.aborted += 1;
                let desktop = &mut self.desktops[index];
                desktop.epoch += 1;
                desktop.saved_joules -= busy_watts * (now - since);
                desktop.place = Place::Home;
            }
            Place::Away { since } => {
                if let Some(id) = self.desktops[index].working_set.take() {
                    self.cancel_transfer(now, Direction::ToServer, id);
                }
                let stay = now - since;
                let saved = if since <= DAY_START_SECS { 0.0 } else { self.stay_curve().saved_joules(stay) };
                let desktop = &mut self.desktops[index];
                if since <= DAY_START_SECS {
                    // The night's stay: counted whole at the end of the day.
                    desktop.morning_secs = stay;
                }
                desktop.saved_joules += saved;
                desktop.away_secs += stay;
                desktop.place = Place::Resuming;
                self.push(now + resume_secs, index, EventKind::ResumeDone);
            }
            Place::Home | Place::Resuming | Place::Reintegrating { .. } => {}
        }
    }

    /// At the end of the day: the night's stay, counted once, and any move
    /// still under way charged for its time so far.
    fn close_day(&mut self, end: f64) {
        let busy_watts = self.busy_watts();
        let curve = match self.scheme {
            Scheme::Full => &self.fleet.full_stay,
            Scheme::Partial => &self.fleet.partial_stay,
        };
        for desktop in &mut self.desktops {
            let evening = match desktop.place {
                Place::Away { since } => end - since,
                Place::Consolidating { since, .. } | Place::Reintegrating { since, .. } => {
                    desktop.saved_joules -= busy_watts * (end - since);
                    0.0
                }
                Place::Home | Place::Resuming => 0.0,
            };
            desktop.away_secs += evening;
            if evening + desktop.morning_secs > 0.0 {
                desktop.saved_joules += curve.saved_joules(evening + desktop.morning_secs);
            }
        }
    }

    fn stay_curve(&self) -> &StayEnergy {
        match self.scheme {
            Scheme::Full => &self.fleet.full_stay,
            Scheme::Partial => &self.fleet.partial_stay,
        }
    }

    /// What a move costs the desktop over idling, watts.
    fn busy_watts(&self) -> f64 {
        self.fleet.desktop.serving_watts - self.fleet.desktop.idle_watts
    }

    fn report(&self, config: RunConfig, servers: u32) -> FleetReport {
        let mean =
            |values: &[f64]| if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
        let network_bytes = self.to_server.bytes_moved() + self.to_desktop.bytes_moved();
        let desktops = self.desktops.len().max(1) as f64;
        let server_kwh = f64::from(servers) * self.fleet.server.idle_watts * DAY_SECS / JOULES_PER_KWH;
        FleetReport {
            scheme: self.scheme,
            config,
            consolidations: self.consolidation_secs.len() as u64,
            aborted: self.aborted,
            reintegrations: self.reintegration_secs.len() as u64,
            network_bytes,
            network_percent: 100.0 * network_bytes / (self.to_server.bytes_per_sec() * DAY_SECS),
            mean_reintegration_secs: mean(&self.reintegration_secs),
            max_reintegration_secs: self.reintegration_secs.iter().copied().fold(0.0, f64::max),
            mean_consolidation_secs: mean(&self.consolidation_secs),
            on_server_percent: 100.0 * self.desktops.iter().map(|d| d.away_secs).sum::<f64>() / (desktops * DAY_SECS),
            desktop_saved_kwh: self.desktops.iter().map(|d| d.saved_joules).sum::<f64>() / JOULES_PER_KWH,
            servers,
            server_kwh,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One fleet for all tests (its stay curves take a moment): the
    /// partial desktop woken by a request a minute for the first 10
    /// minutes of a stay, then left alone.
    fn fleet() -> &'static Fleet {
        static FLEET: OnceLock<Fleet> = OnceLock::new();
        FLEET.get_or_init(|| {
            let arrivals: Vec<f64> = (0..10).map(|minute| f64::from(minute) * 60.0).collect();
            Fleet::with_partial_arrivals(MeasuredFigures::ours(), &arrivals).unwrap()
        })
    }

    fn config(desktops: usize, timeout_minutes: f64) -> RunConfig {
        RunConfig { desktops, idle_timeout_secs: timeout_minutes * 60.0, seed: 11 }
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        for scheme in [Scheme::Full, Scheme::Partial] {
            let a = fleet().run(scheme, config(30, 5.0));
            let b = fleet().run(scheme, config(30, 5.0));
            assert_eq!(a, b);
            let other = fleet().run(scheme, RunConfig { seed: 12, ..config(30, 5.0) });
            assert_ne!(a, other);
        }
    }

    #[test]
    fn a_desktop_never_idle_never_migrates() {
        for scheme in [Scheme::Full, Scheme::Partial] {
            let report = fleet().run_days(scheme, config(1, 1.0), &[UserDay::never_idle()]);
            assert_eq!((report.consolidations, report.aborted, report.reintegrations), (0, 0, 0), "{scheme}");
            assert_eq!(report.network_bytes, 0.0);
            assert_eq!(report.desktop_saved_kwh, 0.0);
            assert_eq!(report.on_server_percent, 0.0);
            assert_eq!((report.servers, report.server_kwh), (0, 0.0));
        }
    }

    #[test]
    fn a_lone_partial_desktop_moves_its_measured_bytes() {
        // Away all night, back at 9:00 for an hour, idle 10:00-11:00 (the
        // 1 minute timeout moves it at 10:01), then at work until 4:00.
        let hour = 3600.0;
        let day = UserDay {
            idle: vec![
                super::super::day::IdlePeriod { start_secs: DAY_START_SECS, end_secs: 9.0 * hour },
                super::super::day::IdlePeriod { start_secs: 10.0 * hour, end_secs: 11.0 * hour },
                super::super::day::IdlePeriod { start_secs: DAY_END_SECS, end_secs: DAY_END_SECS },
            ],
        };
        let report = fleet().run_days(Scheme::Partial, config(1, 1.0), &[day]);
        assert_eq!((report.consolidations, report.aborted, report.reintegrations), (1, 0, 2));
        let m = &fleet().measured;
        // Alone on the link, a move takes exactly its measured time.
        assert!((report.mean_consolidation_secs - m.consolidation_secs).abs() < 1e-6);
        assert!(report.network_bytes > m.consolidation_bytes + 2.0 * m.reintegration_bytes / 10.0);
        assert!(report.desktop_saved_kwh > 0.0);
    }

    #[test]
    fn a_full_migration_alone_takes_its_measured_time_and_a_storm_takes_longer() {
        let alone = fleet().run(Scheme::Full, config(1, 5.0));
        let m = &fleet().measured;
        assert!((alone.mean_reintegration_secs - m.full_back_secs).abs() < 1e-6, "{}", alone.mean_reintegration_secs);
        let office = fleet().run(Scheme::Full, config(100, 5.0));
        assert!(office.mean_reintegration_secs > alone.mean_reintegration_secs);
        assert!(office.max_reintegration_secs > 2.0 * m.full_back_secs, "{}", office.max_reintegration_secs);
    }

    #[test]
    fn more_desktops_never_need_fewer_servers() {
        for scheme in [Scheme::Full, Scheme::Partial] {
            let mut last = 0;
            for desktops in [1, 5, 10, 40, 80, 160] {
                let servers = fleet().run(scheme, config(desktops, 5.0)).servers;
                assert!(servers >= last, "{scheme}: {desktops} desktops need {servers}, fewer desktops {last}");
                last = servers;
            }
        }
    }

    #[test]
    fn partial_migration_moves_a_fraction_of_full_migrations_bytes() {
        let full = fleet().run(Scheme::Full, config(50, 5.0));
        let partial = fleet().run(Scheme::Partial, config(50, 5.0));
        assert!(partial.network_bytes < full.network_bytes / 2.0);
        assert!(partial.mean_reintegration_secs < full.mean_reintegration_secs / 10.0);
        assert!(partial.servers < full.servers);
    }
}
