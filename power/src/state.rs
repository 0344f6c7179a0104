//! The desktop's power states while its VM is consolidated.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the desktop is doing, each with its own power draw in
/// [`PowerProfile`](crate::PowerProfile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Awake with nothing to do: waiting `t_w` for the next request.
    Idle,
    /// Entering S3.
    Suspending,
    /// In S3.
    Asleep,
    /// Leaving S3 after a Wake-on-LAN packet (or the user's return).
    Resuming,
    /// Answering a memserv or diskserv request (the paper's "network" power).
    Serving,
}

impl PowerState {
    /// Every state, in the order reports print them.
    pub const ALL: [PowerState; 5] =
        [PowerState::Idle, PowerState::Suspending, PowerState::Asleep, PowerState::Resuming, PowerState::Serving];

    /// The state's name as logs and reports print it.
    pub fn name(self) -> &'static str {
        match self {
            PowerState::Idle => "idle",
            PowerState::Suspending => "suspending",
            PowerState::Asleep => "asleep",
            PowerState::Resuming => "resuming",
            PowerState::Serving => "serving",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_serde_name() {
        for state in PowerState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
        }
    }
}
