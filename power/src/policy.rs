//! When the desktop goes back to sleep between remote requests.
//!
//! After the last memserv or diskserv request the desktop stays awake for a
//! wait time `t_w`, then suspends. Too short, and a request that follows
//! soon after costs a whole suspend and resume (and waits for them); too
//! long, and the desktop idles at full idle power. The paper fixed
//! `t_w = 6 s`, the minimiser of its Eq. 4 over its traces:
//!
//! `E_waste(t_w) = t_w P_i + p(I < t_b + t_w | I > t_w) E_mu`
//!
//! where `I` is the gap between consecutive requests, `t_b` the break-even
//! sleep ([`PowerProfile::break_even_secs`]) and `E_mu` the waste of a
//! microsleep cut short ([`PowerProfile::wasted_microsleep_joules`]).
//!
//! The adaptive mode evaluates the same equation, but over the gaps this
//! desktop's VM actually produces while consolidated, so a VM whose bursts
//! pause for 7-9 s (where 6 s sleeps just before the next request every
//! time) learns to wait them out. Until it has seen
//! [`AdaptiveConfig::min_gaps`] gaps it uses the fixed default. What it
//! learned carries over to the VM's next stay ([`MicrosleepPolicy::learn_from`],
//! [`crate::load_gaps`]), so only a VM's first stay starts at the default.
//!
//! Gaps are measured between request arrival times. Live, a request that
//! woke the desktop is seen only after the resume, so its gap includes the
//! resume time; that errs towards longer gaps, i.e. towards sleeping.

use crate::{GapHistory, PowerError, PowerProfile};

/// The paper's wait time, seconds.
pub const DEFAULT_WAIT_SECS: f64 = 6.0;

/// Parameters of the adaptive mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// How many of the latest gaps to learn from.
    pub history: usize,
    /// Gaps needed before the learned wait replaces `initial_wait_secs`.
    pub min_gaps: usize,
    /// The longest wait considered, seconds.
    pub max_wait_secs: f64,
    /// Spacing of the candidate waits `0, step, 2 step, ..., max`, seconds.
    pub step_secs: f64,
    /// The wait used until enough gaps are known, seconds.
    pub initial_wait_secs: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> AdaptiveConfig {
        AdaptiveConfig {
            history: 4096,
            min_gaps: 64,
            max_wait_secs: 60.0,
            step_secs: 0.5,
            initial_wait_secs: DEFAULT_WAIT_SECS,
        }
    }
}

/// How the wait time is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitMode {
    /// Always the same wait, seconds.
    Fixed {
        /// The wait time.
        wait_secs: f64,
    },
    /// Eq. 4 minimised over the gaps seen.
    Adaptive(AdaptiveConfig),
}

/// The microsleep policy of one desktop: fed each request's arrival, it
/// says how long to stay awake after it.
#[derive(Debug, Clone)]
pub struct MicrosleepPolicy {
    profile: PowerProfile,
    mode: WaitMode,
    history: GapHistory,
    last_request: Option<f64>,
    wait_secs: f64,
}

impl MicrosleepPolicy {
    /// A fixed wait of `wait_secs`.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidPolicy`] if `wait_secs` is negative or not finite.
    pub fn fixed(profile: PowerProfile, wait_secs: f64) -> Result<MicrosleepPolicy, PowerError> {
        check("wait_secs", wait_secs)?;
        Ok(Self::with_mode(profile, WaitMode::Fixed { wait_secs }, wait_secs, 4096))
    }

    /// The adaptive mode.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidPolicy`] if a time in `config` is negative or not
    /// finite, or the step is zero.
    pub fn adaptive(profile: PowerProfile, config: AdaptiveConfig) -> Result<MicrosleepPolicy, PowerError> {
        check("max_wait_secs", config.max_wait_secs)?;
        check("initial_wait_secs", config.initial_wait_secs)?;
        check("step_secs", config.step_secs)?;
        if config.step_secs == 0.0 {
            return Err(PowerError::InvalidPolicy { what: "step_secs", value: 0.0 });
        }
        Ok(Self::with_mode(profile, WaitMode::Adaptive(config), config.initial_wait_secs, config.history))
    }

    fn with_mode(profile: PowerProfile, mode: WaitMode, wait_secs: f64, history: usize) -> MicrosleepPolicy {
        // Fixed mode keeps a history too, resolving the adaptive default's
        // range, so that reports can ask Eq. 4 about other waits.
        let max_wait = match mode {
            WaitMode::Fixed { wait_secs } => wait_secs.max(AdaptiveConfig::default().max_wait_secs),
            WaitMode::Adaptive(config) => config.max_wait_secs,
        };
        let horizon = max_wait + profile.break_even_secs() + 1.0;
        MicrosleepPolicy { profile, mode, history: GapHistory::new(history, horizon), last_request: None, wait_secs }
    }

    /// How the wait is chosen.
    pub fn mode(&self) -> WaitMode {
        self.mode
    }

    /// A short name for tables and logs: `fixed 6 s` or `adaptive`.
    pub fn name(&self) -> String {
        match self.mode {
            WaitMode::Fixed { wait_secs } => format!("fixed {wait_secs} s"),
            WaitMode::Adaptive(_) => "adaptive".to_owned(),
        }
    }

    /// The profile the policy reasons with.
    pub fn profile(&self) -> &PowerProfile {
        &self.profile
    }

    /// The gaps learned so far (kept in both modes, for reports).
    pub fn history(&self) -> &GapHistory {
        &self.history
    }

    /// Records a remote request arriving at `at_secs`; in adaptive mode the
    /// wait time is re-chosen. An arrival earlier than the last one (out of
    /// order between two request sources) counts as a zero gap.
    ///
    /// # Errors
    ///
    /// [`PowerError::InvalidTime`] if `at_secs` is not finite.
    pub fn on_request(&mut self, at_secs: f64) -> Result<(), PowerError> {
        if !at_secs.is_finite() {
            return Err(PowerError::InvalidTime { what: "microsleep policy request", at: at_secs });
        }
        if let Some(last) = self.last_request {
            self.history.record((at_secs - last).max(0.0));
        }
        self.last_request = Some(self.last_request.map_or(at_secs, |last| last.max(at_secs)));
        self.choose_wait();
        Ok(())
    }

    /// Starts from the gaps an earlier stay of the same VM learned
    /// ([`crate::load_gaps`]), oldest first, as if they had just been
    /// seen; in adaptive mode the wait is chosen over them once there are
    /// [`AdaptiveConfig::min_gaps`]. Negative or non-finite gaps are
    /// ignored; the next request's gap is measured from that request on.
    pub fn learn_from(&mut self, gaps: impl IntoIterator<Item = f64>) {
        for gap in gaps {
            self.history.record(gap);
        }
        self.choose_wait();
    }

    /// The gaps learned so far, oldest first, for [`crate::save_gaps`].
    pub fn learned_gaps(&self) -> Vec<f64> {
        self.history.gaps().collect()
    }

    /// In adaptive mode with enough gaps, the wait minimising Eq. 4 over them.
    fn choose_wait(&mut self) {
        if let WaitMode::Adaptive(config) = self.mode {
            if self.history.len() >= config.min_gaps {
                let steps = (config.max_wait_secs / config.step_secs).floor() as u64;
                let grid = (0..=steps).map(|k| k as f64 * config.step_secs);
                if let Some((wait, _)) = self.history.best_wait(&self.profile, grid) {
                    self.wait_secs = wait;
                }
            }
        }
    }

    /// The current wait time `t_w`, seconds.
    pub fn wait_secs(&self) -> f64 {
        self.wait_secs
    }

    /// When the desktop should suspend if no further request arrives: the
    /// last request plus `t_w`; `None` before any request.
    pub fn sleep_at(&self) -> Option<f64> {
        self.last_request.map(|last| last + self.wait_secs)
    }

    /// Eq. 4's expected waste of `wait_secs` over the gaps seen, joules.
    pub fn expected_waste(&self, wait_secs: f64) -> f64 {
        self.history.expected_waste(&self.profile, wait_secs)
    }
}

fn check(what: &'static str, value: f64) -> Result<(), PowerError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(PowerError::InvalidPolicy { what, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keeps_its_wait() {
        let mut policy = MicrosleepPolicy::fixed(PowerProfile::TABLE_1, DEFAULT_WAIT_SECS).unwrap();
        for at in [0.0, 0.5, 9.0, 100.0] {
            policy.on_request(at).unwrap();
        }
        assert_eq!(policy.wait_secs(), 6.0);
        assert_eq!(policy.sleep_at(), Some(106.0));
        assert_eq!(policy.history().len(), 3);
        assert_eq!(policy.name(), "fixed 6 s");
    }

    #[test]
    fn adaptive_starts_at_the_default_then_learns() {
        let config = AdaptiveConfig { min_gaps: 10, ..AdaptiveConfig::default() };
        let mut policy = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        let mut at = 0.0;
        for i in 0..9 {
            policy.on_request(at).unwrap();
            at += if i % 3 == 2 { 100.0 } else { 7.4 };
        }
        assert_eq!(policy.wait_secs(), DEFAULT_WAIT_SECS);
        for i in 0..30 {
            policy.on_request(at).unwrap();
            at += if i % 3 == 2 { 100.0 } else { 7.4 };
        }
        // Waiting out the 7.4 s pauses costs less than sleeping into them.
        assert_eq!(policy.wait_secs(), 7.5);
        assert!(policy.expected_waste(7.5) < policy.expected_waste(6.0));
    }

    #[test]
    fn adaptive_sleeps_at_once_when_bursts_are_tight_and_transitions_fast() {
        let fast = PowerProfile::TABLE_1.with_transition_secs(2.0, 2.0);
        let mut policy = MicrosleepPolicy::adaptive(fast, AdaptiveConfig::default()).unwrap();
        let mut at = 0.0;
        for i in 0..500 {
            policy.on_request(at).unwrap();
            at += if i % 100 == 99 { 60.0 } else { 0.05 };
        }
        // Every sub-second gap sits below the first candidate above zero.
        assert_eq!(policy.wait_secs(), 0.5);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(MicrosleepPolicy::fixed(PowerProfile::TABLE_1, -1.0).is_err());
        let zero_step = AdaptiveConfig { step_secs: 0.0, ..AdaptiveConfig::default() };
        assert!(MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, zero_step).is_err());
        let mut policy = MicrosleepPolicy::fixed(PowerProfile::TABLE_1, 6.0).unwrap();
        assert!(policy.on_request(f64::INFINITY).is_err());
    }

    /// A second stay that starts from the first one's gaps waits what the
    /// first learned from its first request on, where a fresh policy
    /// still waits the prior 6 s.
    #[test]
    fn a_later_stay_starts_from_the_gaps_an_earlier_one_learned() {
        let config = AdaptiveConfig { min_gaps: 10, ..AdaptiveConfig::default() };
        let mut first = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        let mut at = 0.0;
        for i in 0..40 {
            first.on_request(at).unwrap();
            at += if i % 3 == 2 { 100.0 } else { 7.4 };
        }
        assert_eq!(first.wait_secs(), 7.5);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wait-gaps.json");
        crate::save_gaps(&file, &first.learned_gaps()).unwrap();

        let mut second = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        second.learn_from(crate::load_gaps(&file).unwrap());
        assert_eq!(second.history().len(), 39);
        assert_eq!(second.wait_secs(), 7.5);
        // Its first request is no gap: nothing from the first stay's last one.
        second.on_request(1e6).unwrap();
        assert_eq!(second.history().len(), 39);
        assert_eq!(second.sleep_at(), Some(1e6 + 7.5));
        let fresh = MicrosleepPolicy::adaptive(PowerProfile::TABLE_1, config).unwrap();
        assert_eq!(fresh.wait_secs(), DEFAULT_WAIT_SECS);
    }
}
