//! The crate's one error type.

use std::path::PathBuf;

use crate::PowerState;

/// What can go wrong loading a profile, configuring a policy or feeding the
/// ledger.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The profile file could not be read.
    #[error("reading power profile {path}")]
    ReadProfile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The profile file is not a valid JSON profile.
    #[error("parsing power profile {path}")]
    ParseProfile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A field of a profile is zero, negative, infinite or NaN.
    #[error("power profile {origin}: field `{field}` is {value}, must be positive and finite")]
    InvalidField {
        /// Where the profile came from (a path, or "built-in").
        origin: String,
        /// The field's name as written in the file.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// Sleeping draws as much as idling or more, so no sleep ever pays.
    #[error("power profile {origin}: sleep_watts {sleep_watts} must be below idle_watts {idle_watts}")]
    SleepNotCheaper {
        /// Where the profile came from.
        origin: String,
        /// Idle power.
        idle_watts: f64,
        /// Sleep power.
        sleep_watts: f64,
    },
    /// A wait time or policy parameter is negative or not finite.
    #[error("microsleep policy: {what} is {value}, must be finite and not negative")]
    InvalidPolicy {
        /// The parameter.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A time is NaN or infinite.
    #[error("{what}: time {at} s is not finite")]
    InvalidTime {
        /// The operation.
        what: &'static str,
        /// The time given.
        at: f64,
    },
    /// A transition is older than the one before it.
    #[error("energy ledger: entering {state} at {at} s, before the previous transition at {previous} s")]
    TimeWentBackwards {
        /// The state being entered (or the state open when ending).
        state: PowerState,
        /// The time given.
        at: f64,
        /// The previous transition's time.
        previous: f64,
    },
    /// A transition or end with no consolidation begun.
    #[error("energy ledger: {operation} at {at} s with no consolidation begun")]
    NotConsolidated {
        /// `enter` or `end`.
        operation: &'static str,
        /// The time given.
        at: f64,
    },
    /// A consolidation begun while another is still open.
    #[error("energy ledger: consolidation begun at {at} s while the one begun at {open_since} s is open")]
    AlreadyConsolidated {
        /// The time given.
        at: f64,
        /// When the open one began.
        open_since: f64,
    },
    /// A server profile whose full-load power is below its idle power.
    #[error("server power profile {origin}: busy_watts {busy_watts} must be at least idle_watts {idle_watts}")]
    BusyBelowIdle {
        /// Where the profile came from.
        origin: String,
        /// Idle power.
        idle_watts: f64,
        /// Full-load power.
        busy_watts: f64,
    },
}
