//! The fleet simulator (issue 14, point 5): an office of desktops over a
//! weekday, their VMs moved to a consolidation server by full or partial
//! migration over one shared GigE link, in the manner of the paper's
//! section 6 (Figures 10 and 11), with this project's own measured sizes
//! and times instead of the paper's.
//!
//! - [`measured`]: every figure the simulator draws on, in one table, with
//!   its source (ours, or the paper's where we measured none).
//! - [`day`]: the users' days (nights, lunch, heavy-tailed breaks), seeded.
//! - [`shared_link`]: the link, fair-shared by the transfers on it.
//! - [`stay`]: the desktop's saving while its VM is away, by stay length,
//!   from the power crate's simulated desktop.
//! - [`sim`]: the day, event by event, and what it gave.
//!
//! Nothing reads a clock: the same seed gives the same figures.

pub mod day;
pub mod measured;
pub mod shared_link;
pub mod sim;
pub mod stay;

pub use sim::{Fleet, FleetError, FleetReport, RunConfig, Scheme};
