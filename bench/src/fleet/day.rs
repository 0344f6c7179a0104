//! A user's weekday at the desktop, seeded: when they are at it and when
//! they are away, in the shape of the paper's Figure 1 (nights, lunch,
//! breaks through the day).
//!
//! # The model
//!
//! - **Arrival** and **departure**: normal around 9:00 (sd 20 min) and
//!   17:15 (sd 45 min), kept within 7:00-11:00 and 15:00-21:00. An office
//!   arrives together, which is what makes the morning's boot storm; the
//!   paper's lab had flexible hours and laptops used at home in the evening,
//!   so its traces had less of a storm and fewer sleep opportunities (its
//!   own words, section 6).
//! - **Lunch**: starts normal around 12:15 (sd 15 min); lasts a lognormal
//!   time of median 40 min (sigma 0.3), kept within 15-90 min. The paper
//!   names lunch the most correlated idle period of its traces.
//! - **Through the day**: work bouts of exponential length (mean 10 min)
//!   alternate with breaks of Pareto length (30 s minimum, shape 1, at
//!   most 3 h): most breaks are short (half under a minute), a few are
//!   meetings (one in twenty over 10 minutes). Heavy tails are
//!   what studies of desktop idleness report; the parameters are ours,
//!   chosen so that the share of the day a desktop is idle past a 5 minute
//!   timeout lands near the paper's published 76%, and the simulator prints
//!   its own figure beside that one. No trace of the paper's users is
//!   public, so they are not fitted to one.
//!
//! A day runs from 4:00 to 4:00 the next morning ([`DAY_START_SECS`] to
//! [`DAY_END_SECS`]): nobody is at work then, so every day begins and ends
//! in the night's idle period (the first idle period is the end of the
//! previous night, the last one the start of the next).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seconds in an hour.
const HOUR: f64 = 3600.0;
/// Seconds in a minute.
const MINUTE: f64 = 60.0;
/// Mean of a work bout between two breaks, seconds.
const BOUT_MEAN_SECS: f64 = 10.0 * MINUTE;
/// The shortest break, seconds (the Pareto's scale).
const BREAK_MIN_SECS: f64 = 30.0;
/// The Pareto's shape: the smaller, the heavier the tail.
const BREAK_SHAPE: f64 = 1.0;
/// The longest break, seconds.
const BREAK_MAX_SECS: f64 = 3.0 * HOUR;
/// When the simulated day starts, seconds after midnight (4:00).
pub const DAY_START_SECS: f64 = 4.0 * HOUR;
/// When it ends: 4:00 the next morning.
pub const DAY_END_SECS: f64 = 28.0 * HOUR;

/// A span of a day the user is away from the desktop, seconds after
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdlePeriod {
    /// The user's last input.
    pub start_secs: f64,
    /// The user's return (or [`DAY_END_SECS`] for the night).
    pub end_secs: f64,
}

impl IdlePeriod {
    /// How long the user is away, seconds.
    pub fn secs(&self) -> f64 {
        self.end_secs - self.start_secs
    }
}

/// One user's weekday: the idle periods in order, disjoint, the first
/// starting at [`DAY_START_SECS`] and the last ending at [`DAY_END_SECS`].
#[derive(Debug, Clone, PartialEq)]
pub struct UserDay {
    /// The idle periods.
    pub idle: Vec<IdlePeriod>,
}

impl UserDay {
    /// A desktop whose user never leaves it: one idle period of no length
    /// at each end of the day.
    #[cfg(test)]
    pub(crate) fn never_idle() -> UserDay {
        UserDay {
            idle: vec![
                IdlePeriod { start_secs: DAY_START_SECS, end_secs: DAY_START_SECS },
                IdlePeriod { start_secs: DAY_END_SECS, end_secs: DAY_END_SECS },
            ],
        }
    }

    /// Seconds of the day the user is away for longer than `timeout_secs`,
    /// counted from the end of the timeout: what a VM could spend on the
    /// server.
    pub fn idle_past(&self, timeout_secs: f64) -> f64 {
        self.idle.iter().map(|period| (period.secs() - timeout_secs).max(0.0)).sum()
    }

    /// Whether the user is at the desktop at `secs`.
    pub fn active_at(&self, secs: f64) -> bool {
        !self.idle.iter().any(|period| period.start_secs <= secs && secs < period.end_secs)
    }
}

/// The seeded generator of [`UserDay`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayModel {
    /// The seed of the fleet; each desktop draws from a stream of its own.
    pub seed: u64,
}

impl DayModel {
    /// The day of desktop `desktop`: the same for the same seed and index,
    /// whatever the size of the fleet.
    pub fn day(&self, desktop: usize) -> UserDay {
        let mut rng = desktop_rng(self.seed, desktop, 0);
        let arrival = normal(&mut rng, 9.0 * HOUR, 20.0 * MINUTE).clamp(7.0 * HOUR, 11.0 * HOUR);
        let departure = normal(&mut rng, 17.25 * HOUR, 45.0 * MINUTE).clamp(15.0 * HOUR, 21.0 * HOUR);
        let lunch_start = normal(&mut rng, 12.25 * HOUR, 15.0 * MINUTE);
        let lunch_secs = (40.0 * MINUTE * (0.3 * normal(&mut rng, 0.0, 1.0)).exp()).clamp(15.0 * MINUTE, 90.0 * MINUTE);

        let mut idle = vec![IdlePeriod { start_secs: DAY_START_SECS, end_secs: arrival }];
        let mut at = arrival;
        let mut lunch_taken = false;
        while at < departure {
            // A work bout, then a break (or lunch, if it is time).
            let bout = -BOUT_MEAN_SECS * (1.0 - rng.gen::<f64>()).ln();
            at += bout;
            if at >= departure {
                break;
            }
            let (start, length) = if !lunch_taken && at >= lunch_start {
                lunch_taken = true;
                (at, lunch_secs)
            } else {
                let pareto = BREAK_MIN_SECS * (1.0 - rng.gen::<f64>()).powf(-1.0 / BREAK_SHAPE);
                (at, pareto.min(BREAK_MAX_SECS))
            };
            let end = (start + length).min(departure);
            push_merged(&mut idle, IdlePeriod { start_secs: start, end_secs: end });
            at = end;
        }
        push_merged(&mut idle, IdlePeriod { start_secs: departure, end_secs: DAY_END_SECS });
        UserDay { idle }
    }
}

/// Appends `period`, merged into the last one when they touch.
fn push_merged(idle: &mut Vec<IdlePeriod>, period: IdlePeriod) {
    match idle.last_mut() {
        Some(last) if last.end_secs >= period.start_secs => last.end_secs = last.end_secs.max(period.end_secs),
        _ => idle.push(period),
    }
}

/// The random stream `stream` of desktop `desktop` under `seed`.
pub fn desktop_rng(seed: u64, desktop: usize, stream: u64) -> StdRng {
    // Distinct (seed, desktop, stream) triples give distinct seeds; StdRng
    // expands each through its own mixing, so neighbours are unrelated.
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((desktop as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    StdRng::seed_from_u64(mixed)
}

/// A normal draw (Box-Muller).
pub fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_disjoint_ordered_and_spans_the_night() {
        for desktop in 0..200 {
            let day = DayModel { seed: 7 }.day(desktop);
            let (first, last) = (day.idle[0], day.idle[day.idle.len() - 1]);
            assert_eq!(first.start_secs, DAY_START_SECS);
            assert_eq!(last.end_secs, DAY_END_SECS);
            for pair in day.idle.windows(2) {
                assert!(pair[0].end_secs < pair[1].start_secs, "desktop {desktop}: {pair:?}");
            }
            assert!(day.idle.iter().all(|period| period.secs() >= 0.0));
            // Away at the end of the night.
            assert!(!day.active_at(DAY_END_SECS - 1.0));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_another_seed_another() {
        let model = DayModel { seed: 3 };
        assert_eq!(model.day(5), model.day(5));
        assert_ne!(model.day(5), DayModel { seed: 4 }.day(5));
        assert_ne!(model.day(5), model.day(6));
    }

    #[test]
    fn most_of_the_day_is_idle_past_five_minutes_like_the_papers_76_percent() {
        let model = DayModel { seed: 1 };
        let share: f64 = (0..500).map(|d| model.day(d).idle_past(300.0)).sum::<f64>() / (500.0 * 24.0 * HOUR);
        assert!(share > 0.65 && share < 0.85, "{share}");
    }
}
