//! The energy side of Jettison: what the desktop's power states cost, when it
//! should go back to sleep between remote requests, and how much energy a
//! consolidation saved against leaving the desktop idle.
//!
//! # Why this is a crate of its own
//!
//! Consolidation only pays if the desktop sleeps, and sleeping only pays if
//! each sleep is long enough to repay the suspend and resume it costs. The
//! same arithmetic is needed in three places: the desktop's microsleep policy
//! (live), `jettison status` (a report of what was saved), and the energy
//! benchmark (a trace replayed offline). Keeping it here, free of I/O and of
//! clocks, lets all three agree and lets the policy be tested on traces.
//!
//! # Layers
//!
//! - [`PowerProfile`]: the desktop's power in each state and the time its
//!   transitions take (the paper's Table 1 by default), its break-even sleep
//!   length `t_b` (Eq. 3) and the waste of a too-short microsleep.
//! - [`GapHistory`] and [`MicrosleepPolicy`]: the wait time `t_w` the desktop
//!   stays awake after the last memserv/diskserv request, fixed (6 s) or
//!   adaptive (the `t_w` that minimises Eq. 4 over the gaps seen so far),
//!   which [`load_gaps`] and [`save_gaps`] keep per VM across its stays.
//! - [`PowerState`] and [`EnergyLedger`]: timestamped state transitions
//!   integrated with the profile's power, per consolidation and in total,
//!   against the baseline of staying idle; [`svg::power_chart`] draws the
//!   power over time like the paper's Figure 8.
//! - [`SleepMachine`]: the live decision (when to suspend) as a pure,
//!   clock-injected state machine feeding the ledger; [`daemon::run`] is the
//!   desktop power daemon's loop around it, with the clock and the sleep
//!   back-end as traits so that this crate needs neither the kernel nor the
//!   other crates; [`LedgerFiles`] keeps every stay (`stays.jsonl`, appended),
//!   `ledger.json` (all of them and their total) and `power.svg`.
//! - [`server`]: the consolidation server's side, its power split across
//!   the VMs it hosts (active by CPU time, idle by memory, network by
//!   bytes) and how many VMs must share it before each pays off.
//! - [`trace`] and [`simulate`]: a seeded request-arrival trace generator
//!   (periodic activities that reach the desktop only for pages not yet on
//!   the server) and a simulated desktop that replays a trace through a
//!   policy and a ledger.
//!
//! Times are `f64` seconds from an origin the caller chooses (the start of
//! the consolidation in a trace, a monotonic clock's reading live): the
//! ledger and the policy only ever subtract them.
//!
//! # Example
//!
//! ```
//! use power::{PowerState, EnergyLedger, PowerProfile};
//!
//! # fn main() -> Result<(), power::PowerError> {
//! let profile = PowerProfile::default(); // the paper's Table 1
//! assert_eq!(format!("{:.2}", profile.break_even_secs()), "32.22");
//!
//! let mut ledger = EnergyLedger::new(profile);
//! ledger.begin(PowerState::Suspending, 0.0)?;
//! ledger.enter(PowerState::Asleep, 8.38)?;
//! ledger.enter(PowerState::Resuming, 3600.0)?;
//! let report = ledger.end(3608.58)?;
//! assert!(report.saved_percent > 90.0);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod daemon;
mod error;
mod files;
mod gaps;
mod learned;
mod ledger;
mod machine;
mod policy;
mod profile;
pub mod server;
pub mod simulate;
mod state;
pub mod svg;
pub mod trace;

pub use error::PowerError;
pub use files::{FilesError, LedgerFiles, Stay, CHART_FILE, LEDGER_FILE, OPEN_STAY_FILE, STAYS_FILE};
pub use gaps::GapHistory;
pub use learned::{load_gaps, save_gaps, LearnedError, MAX_LEARNED_BYTES};
pub use ledger::{EnergyLedger, EnergyReport, LedgerSummary, PowerStep, StateSecs};
pub use machine::{Decision, SleepMachine};
pub use policy::{AdaptiveConfig, MicrosleepPolicy, WaitMode, DEFAULT_WAIT_SECS};
pub use profile::PowerProfile;
pub use state::PowerState;
