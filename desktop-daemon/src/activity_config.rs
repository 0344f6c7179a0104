//! The `[activity]` section of `desktop.toml`: the activity monitor that
//! runs inside the desktop daemon, watching the user at the desk. Without
//! the section (or with `enabled = false`) the daemon moves VMs only when
//! asked (`jettison consolidate`, `jettison reintegrate`).
//!
//! ```toml
//! [activity]
//! enabled = true                      # the default once the section is there
//! source = "auto"                     # x11, logind, evdev, or auto (x11 unless Xwayland, else evdev, else logind)
//! display = ":0"                      # the user's X display (the default), for x11 and the warning
//! xauthority = "/var/run/lightdm/root/:0" # a cookie root may read (omit: $XAUTHORITY, ~/.Xauthority,
//!                                     # or the session's `xhost +SI:localuser:root`)
//! session = "2"                       # logind: the session (omit: seat0's active session)
//! input_dir = "/dev/input"            # evdev: the devices (the default)
//! idle_secs = 15                      # no keyboard or pointer input this long: warn (the paper's 15)
//! warn_secs = 5                       # the warning lasts this long, then the VMs move (the paper's 5)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use activity_monitor::{IdleSourceKind, MachineConfig, SourceOptions, DEFAULT_INPUT_DIR};
use serde::Deserialize;

/// Longest idle threshold accepted: a day.
pub const MAX_IDLE_SECS: u64 = 86_400;
/// Longest warning accepted: an hour.
pub const MAX_WARN_SECS: u64 = 3_600;

/// Where the user's idle time is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceChoice {
    /// X11 if the display answers and is not Xwayland, else evdev, else
    /// logind; a later X session is taken up when it appears.
    #[default]
    Auto,
    /// The X server's screensaver extension (`display`).
    X11,
    /// logind's idle hint for the session.
    Logind,
    /// The input devices under `input_dir`.
    Evdev,
}

impl SourceChoice {
    /// The activity monitor's kind.
    pub fn kind(self) -> IdleSourceKind {
        match self {
            SourceChoice::Auto => IdleSourceKind::Auto,
            SourceChoice::X11 => IdleSourceKind::X11,
            SourceChoice::Logind => IdleSourceKind::Logind,
            SourceChoice::Evdev => IdleSourceKind::Evdev,
        }
    }
}

/// The `[activity]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityConfig {
    /// Whether the monitor runs (the section's presence says yes).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where idleness is read.
    #[serde(default)]
    pub source: SourceChoice,
    /// The user's X display: the x11 source's, and where the warning shows.
    #[serde(default = "default_display")]
    pub display: String,
    /// The Xauthority file with that display's cookie; none: `$XAUTHORITY`,
    /// else root's `~/.Xauthority`.
    #[serde(default)]
    pub xauthority: Option<PathBuf>,
    /// logind: the session; none: seat0's active session, looked up each
    /// time the source is opened.
    #[serde(default)]
    pub session: Option<String>,
    /// evdev: the input device directory.
    #[serde(default = "default_input_dir")]
    pub input_dir: PathBuf,
    /// Seconds without input before the warning.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Seconds the warning lasts before the VMs move.
    #[serde(default = "default_warn")]
    pub warn_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_display() -> String {
    ":0".to_owned()
}

fn default_input_dir() -> PathBuf {
    PathBuf::from(DEFAULT_INPUT_DIR)
}

fn default_idle() -> u64 {
    15
}

fn default_warn() -> u64 {
    5
}

impl ActivityConfig {
    /// Checks every key: the error names it and says what to write.
    ///
    /// # Errors
    /// The reason, as the configuration loader reports it.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_IDLE_SECS).contains(&self.idle_secs) {
            return Err(format!(
                "[activity] idle_secs = {}: write the seconds without keyboard or pointer input before the \
                 warning, 1 to {MAX_IDLE_SECS} (the paper's 15)",
                self.idle_secs
            ));
        }
        if !(1..=MAX_WARN_SECS).contains(&self.warn_secs) {
            return Err(format!(
                "[activity] warn_secs = {}: write how long the warning lasts before the VMs move, 1 to \
                 {MAX_WARN_SECS} (the paper's 5)",
                self.warn_secs
            ));
        }
        if !valid_display(&self.display) {
            return Err(format!(
                "[activity] display = {:?}: write an X display, e.g. \":0\" (the user's session)",
                self.display
            ));
        }
        if let Some(file) = &self.xauthority {
            if !file.is_absolute() {
                return Err(format!(
                    "[activity] xauthority = {:?}: write an absolute path, e.g. \"/var/run/lightdm/root/:0\"",
                    file.display()
                ));
            }
        }
        if self.session.is_some() && !matches!(self.source, SourceChoice::Logind | SourceChoice::Auto) {
            return Err("[activity] session only applies to source = \"logind\" or \"auto\": remove it".to_owned());
        }
        if let Some(session) = &self.session {
            if session.is_empty() || !session.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!(
                    "[activity] session = {session:?}: write a logind session id, e.g. \"2\" (loginctl list-sessions)"
                ));
            }
        }
        if self.input_dir != default_input_dir() && !matches!(self.source, SourceChoice::Evdev | SourceChoice::Auto) {
            return Err("[activity] input_dir only applies to source = \"evdev\" or \"auto\": remove it".to_owned());
        }
        Ok(())
    }

    /// The state machine's thresholds.
    pub fn machine(&self) -> MachineConfig {
        MachineConfig { idle: Duration::from_secs(self.idle_secs), warn: Duration::from_secs(self.warn_secs) }
    }

    /// Where each source looks; `session` is the logind session to use.
    pub fn source_options(&self, session: Option<String>) -> SourceOptions {
        SourceOptions {
            display: Some(self.display.clone()),
            xauthority: self.xauthority.clone(),
            session,
            input_dir: self.input_dir.clone(),
        }
    }
}

/// `[host]:number[.screen]`, as X names displays.
fn valid_display(display: &str) -> bool {
    let Some((host, rest)) = display.rsplit_once(':') else { return false };
    let (number, screen) = rest.split_once('.').unwrap_or((rest, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    let host_ok = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    host_ok && digits(number) && digits(screen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ActivityConfig {
        toml::from_str(text).expect("an [activity] section")
    }

    #[test]
    fn an_empty_section_is_the_papers_monitor_on_display_0() {
        let activity = parse("");
        assert!(activity.enabled);
        assert_eq!(activity.source, SourceChoice::Auto);
        assert_eq!(activity.display, ":0");
        assert_eq!(activity.machine(), MachineConfig::default(), "15 s, then a 5 s warning");
        activity.check().expect("the defaults are valid");
        let options = activity.source_options(None);
        assert_eq!(options.display.as_deref(), Some(":0"));
        assert_eq!(options.input_dir, PathBuf::from("/dev/input"));
    }

    #[test]
    fn each_mistake_is_named_with_what_to_write() {
        let cases = [
            ("idle_secs = 0", "idle_secs = 0: write"),
            ("idle_secs = 100000", "idle_secs = 100000"),
            ("warn_secs = 0", "warn_secs = 0: write"),
            ("display = \"0\"", "display = \"0\": write an X display"),
            ("display = \":0 -auth x\"", "display = \":0 -auth x\""),
            ("xauthority = \"Xauthority\"", "xauthority = \"Xauthority\": write an absolute path"),
            ("source = \"x11\"\nsession = \"2\"", "session only applies"),
            ("session = \"2; rm\"", "session = \"2; rm\""),
            ("source = \"logind\"\ninput_dir = \"/tmp\"", "input_dir only applies"),
        ];
        for (text, expected) in cases {
            let error = parse(text).check().expect_err(text);
            assert!(error.contains(expected) && error.contains("[activity]"), "{text}: {error}");
        }
        assert!(toml::from_str::<ActivityConfig>("source = \"wayland\"").is_err());
        assert!(toml::from_str::<ActivityConfig>("idle = 15").is_err(), "an unknown key is refused");
        for good in [":0", ":1.0", "localhost:10", "unix:2"] {
            assert!(valid_display(good), "{good}");
        }
    }
}
