//! The desktop's power profile: its draw in each state and how long its
//! transitions take, and the two quantities the microsleep policy derives
//! from them: the break-even sleep length `t_b` (the paper's Eq. 3) and the
//! energy a too-short microsleep wastes (`E_mu` in Eq. 4).
//!
//! A profile file is JSON with the struct's field names, all in seconds and
//! watts, every field required:
//!
//! ```json
//! { "suspend_secs": 8.38, "suspend_watts": 107.90, "resume_secs": 8.58,
//!   "resume_watts": 121.72, "idle_watts": 61.40, "sleep_watts": 1.95,
//!   "serving_watts": 136.63 }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{PowerError, PowerState};

/// Power and transition times of one desktop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerProfile {
    /// Time to enter S3 (`t_o`), seconds.
    pub suspend_secs: f64,
    /// Power while entering S3 (`P_o`), watts.
    pub suspend_watts: f64,
    /// Time to leave S3 (`t_r`), seconds.
    pub resume_secs: f64,
    /// Power while leaving S3 (`P_r`), watts.
    pub resume_watts: f64,
    /// Power awake with nothing to do (`P_i`), watts.
    pub idle_watts: f64,
    /// Power in S3 (`P_s`), watts.
    pub sleep_watts: f64,
    /// Power while serving requests over the network (the paper's
    /// "network" row), watts.
    pub serving_watts: f64,
}

impl PowerProfile {
    /// The paper's Table 1: a Dell Studio XPS 7100.
    pub const TABLE_1: PowerProfile = PowerProfile {
        suspend_secs: 8.38,
        suspend_watts: 107.90,
        resume_secs: 8.58,
        resume_watts: 121.72,
        idle_watts: 61.40,
        sleep_watts: 1.95,
        serving_watts: 136.63,
    };

    /// This profile with other transition times and the same powers (for
    /// asking what a faster suspend and resume would change).
    pub fn with_transition_secs(self, suspend_secs: f64, resume_secs: f64) -> PowerProfile {
        PowerProfile { suspend_secs, resume_secs, ..self }
    }

    /// Loads and validates a JSON profile file.
    ///
    /// # Errors
    ///
    /// [`PowerError::ReadProfile`], [`PowerError::ParseProfile`] (unknown or
    /// missing fields included), or a validation error naming the field and
    /// the file.
    pub fn load(path: &Path) -> Result<PowerProfile, PowerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PowerError::ReadProfile { path: path.to_owned(), source })?;
        let profile: PowerProfile =
            serde_json::from_str(&text).map_err(|source| PowerError::ParseProfile { path: path.to_owned(), source })?;
        profile.validate(&path.display().to_string())?;
        Ok(profile)
    }

    /// Checks every field is positive and finite and that sleeping is
    /// cheaper than idling; `origin` names the profile in the error.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidField`] or [`PowerError::SleepNotCheaper`].
    pub fn validate(&self, origin: &str) -> Result<(), PowerError> {
        let fields = [
            ("suspend_secs", self.suspend_secs),
            ("suspend_watts", self.suspend_watts),
            ("resume_secs", self.resume_secs),
            ("resume_watts", self.resume_watts),
            ("idle_watts", self.idle_watts),
            ("sleep_watts", self.sleep_watts),
            ("serving_watts", self.serving_watts),
        ];
        for (field, value) in fields {
            if !(value.is_finite() && value > 0.0) {
                return Err(PowerError::InvalidField { origin: origin.to_owned(), field, value });
            }
        }
        if self.sleep_watts >= self.idle_watts {
            return Err(PowerError::SleepNotCheaper {
                origin: origin.to_owned(),
                idle_watts: self.idle_watts,
                sleep_watts: self.sleep_watts,
            });
        }
        Ok(())
    }

    /// The power drawn in `state`, watts.
    pub fn watts(&self, state: PowerState) -> f64 {
        match state {
            PowerState::Idle => self.idle_watts,
            PowerState::Suspending => self.suspend_watts,
            PowerState::Asleep => self.sleep_watts,
            PowerState::Resuming => self.resume_watts,
            PowerState::Serving => self.serving_watts,
        }
    }

    /// The break-even sleep length `t_b` of Eq. 3, seconds:
    /// `t_b = (-P_s (t_o + t_r) + P_o t_o + P_r t_r) / (P_i - P_s)`.
    ///
    /// A sleep cycle (suspend, S3, resume) of total length `t_b` costs the
    /// same energy as staying idle for `t_b`: solve
    /// `P_o t_o + P_s (t_b - t_o - t_r) + P_r t_r = P_i t_b`. Shorter cycles
    /// waste energy, longer ones save it. 32.22 s for Table 1.
    pub fn break_even_secs(&self) -> f64 {
        let (t_o, t_r) = (self.suspend_secs, self.resume_secs);
        (-self.sleep_watts * (t_o + t_r) + self.suspend_watts * t_o + self.resume_watts * t_r)
            / (self.idle_watts - self.sleep_watts)
    }

    /// Energy a sleep cycle of total length `cycle_secs` (from the start of
    /// the suspend to the end of the resume) costs beyond staying idle for
    /// the same time, joules; negative when the cycle saves energy.
    ///
    /// From Eq. 3's balance: `(P_i - P_s) (t_b - cycle_secs)`.
    pub fn cycle_waste_joules(&self, cycle_secs: f64) -> f64 {
        (self.idle_watts - self.sleep_watts) * (self.break_even_secs() - cycle_secs)
    }

    /// `E_mu` of Eq. 4: the energy a wasted microsleep cycle costs, joules.
    ///
    /// A microsleep is wasted when the next request arrives before the
    /// cycle has lasted `t_b`. The paper leaves `E_mu` a constant; we take
    /// the worst such cycle, the one whose request arrives as soon as the
    /// suspend begins, so the desktop suspends and immediately resumes:
    /// the suspend and resume energy minus what idling would have drawn
    /// over the same `t_o + t_r` (nothing was saved by sleeping, as the
    /// desktop never stayed in S3):
    /// `E_mu = P_o t_o + P_r t_r - P_i (t_o + t_r)`
    /// `     = (P_i - P_s) (t_b - t_o - t_r)`.
    /// 907 J for Table 1. It overstates the waste of a cycle that does sleep
    /// a while before the request, which biases the adaptive policy towards
    /// waiting a little longer: the cautious side, since a wasted cycle also
    /// delays the request by a whole resume.
    pub fn wasted_microsleep_joules(&self) -> f64 {
        self.cycle_waste_joules(self.suspend_secs + self.resume_secs)
    }

    /// When a suspend and resume that took `before..after` (seconds, on a
    /// clock that counts through S3) was asleep: `(asleep_at, resuming_at)`.
    ///
    /// The suspend and the resume are charged the profile's times, the
    /// rest is asleep. A host's own measure of its time asleep (the gap
    /// between `CLOCK_BOOTTIME` and `CLOCK_MONOTONIC`) also holds the
    /// firmware's part of the resume, which draws resume power, not sleep
    /// power, so it is not used. A round trip shorter than both times is
    /// split between them in their proportion, with no time asleep.
    pub fn round_trip(&self, before: f64, after: f64) -> (f64, f64) {
        let elapsed = (after - before).max(0.0);
        let transitions = self.suspend_secs + self.resume_secs;
        if transitions <= elapsed {
            (before + self.suspend_secs, after - self.resume_secs)
        } else {
            let at = if transitions > 0.0 { before + elapsed * self.suspend_secs / transitions } else { before };
            (at, at)
        }
    }
}

impl Default for PowerProfile {
    /// The paper's Table 1.
    fn default() -> PowerProfile {
        PowerProfile::TABLE_1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_1_break_even_is_32_22_s() {
        assert_eq!(format!("{:.2}", PowerProfile::default().break_even_secs()), "32.22");
    }

    #[test]
    fn a_break_even_cycle_costs_what_idling_costs() {
        let p = PowerProfile::TABLE_1;
        let t_b = p.break_even_secs();
        let cycle = p.suspend_watts * p.suspend_secs
            + p.resume_watts * p.resume_secs
            + p.sleep_watts * (t_b - p.suspend_secs - p.resume_secs);
        assert!((cycle - p.idle_watts * t_b).abs() < 1e-9);
        assert!(p.cycle_waste_joules(t_b).abs() < 1e-9);
        assert!(p.cycle_waste_joules(t_b + 10.0) < 0.0);
    }

    #[test]
    fn wasted_microsleep_is_transitions_minus_idle() {
        let p = PowerProfile::TABLE_1;
        let expected = p.suspend_watts * p.suspend_secs + p.resume_watts * p.resume_secs
            - p.idle_watts * (p.suspend_secs + p.resume_secs);
        assert!((p.wasted_microsleep_joules() - expected).abs() < 1e-9);
        assert_eq!(format!("{:.0}", p.wasted_microsleep_joules()), "907");
    }

    #[test]
    fn faster_transitions_shorten_break_even() {
        let fast = PowerProfile::TABLE_1.with_transition_secs(2.0, 2.0);
        assert_eq!(format!("{:.2}", fast.break_even_secs()), "7.59");
    }

    #[test]
    fn loads_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desktop.json");
        std::fs::write(&path, serde_json::to_string(&PowerProfile::TABLE_1).unwrap()).unwrap();
        assert_eq!(PowerProfile::load(&path).unwrap(), PowerProfile::TABLE_1);
    }

    #[test]
    fn rejects_a_bad_field_naming_it_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        let mut json = serde_json::to_value(PowerProfile::TABLE_1).unwrap();
        json["resume_watts"] = serde_json::json!(-3.0);
        std::fs::write(&path, json.to_string()).unwrap();
        let err = PowerProfile::load(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PowerError::InvalidField { field: "resume_watts", .. }), "{message}");
        assert!(message.contains("bad.json") && message.contains("resume_watts"), "{message}");
    }

    #[test]
    fn rejects_missing_and_unknown_fields_and_non_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"suspend_secs": 1}"#).unwrap();
        assert!(matches!(PowerProfile::load(&path), Err(PowerError::ParseProfile { .. })));
        let mut json = serde_json::to_value(PowerProfile::TABLE_1).unwrap();
        json["turbo_watts"] = serde_json::json!(1.0);
        std::fs::write(&path, json.to_string()).unwrap();
        assert!(matches!(PowerProfile::load(&path), Err(PowerError::ParseProfile { .. })));
        let nan = PowerProfile { idle_watts: f64::NAN, ..PowerProfile::TABLE_1 };
        assert!(matches!(nan.validate("t"), Err(PowerError::InvalidField { field: "idle_watts", .. })));
        let flat = PowerProfile { sleep_watts: 70.0, ..PowerProfile::TABLE_1 };
        assert!(matches!(flat.validate("t"), Err(PowerError::SleepNotCheaper { .. })));
        assert!(matches!(PowerProfile::load(&dir.path().join("missing.json")), Err(PowerError::ReadProfile { .. })));
    }

    #[test]
    fn a_round_trip_charges_the_profiles_transition_times() {
        let p = PowerProfile::TABLE_1;
        let (asleep, resuming) = p.round_trip(10.0, 110.0);
        assert!((asleep - (10.0 + p.suspend_secs)).abs() < 1e-9);
        assert!((resuming - (110.0 - p.resume_secs)).abs() < 1e-9);
        // Too short for both: split in their proportion, nothing asleep.
        let (asleep, resuming) = p.round_trip(0.0, 8.48);
        assert_eq!(asleep, resuming);
        assert!((asleep - 8.48 * p.suspend_secs / (p.suspend_secs + p.resume_secs)).abs() < 1e-9);
    }
}
