//! Choosing the idle source: the one asked for, or the best that answers.
//!
//! Auto-selection prefers the X server (it sees exactly the input of the
//! user's session, including remote desktops), then logind (it knows the
//! session without device access), then the raw input devices (they work
//! anywhere, on a console or under Wayland, but need read access and see
//! every seat's input).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::evdev::{EvdevSource, DEFAULT_INPUT_DIR};
use crate::idle::{chain, IdleError, IdleSource};
use crate::logind::LogindSource;
use crate::x11::X11Source;

/// Which idle source to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleSourceKind {
    /// The first that answers: X11, logind, evdev.
    #[default]
    Auto,
    /// The input devices.
    Evdev,
    /// The X server's screensaver extension.
    X11,
    /// logind's idle hint.
    Logind,
}

impl IdleSourceKind {
    /// The name the command line takes.
    pub fn name(self) -> &'static str {
        match self {
            IdleSourceKind::Auto => "auto",
            IdleSourceKind::Evdev => "evdev",
            IdleSourceKind::X11 => "x11",
            IdleSourceKind::Logind => "logind",
        }
    }
}

impl fmt::Display for IdleSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An idle source name that is not one of them.
#[derive(Debug, thiserror::Error)]
#[error("unknown idle source {0:?}: expected auto, evdev, x11 or logind")]
pub struct UnknownSource(String);

impl FromStr for IdleSourceKind {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [IdleSourceKind::Auto, IdleSourceKind::Evdev, IdleSourceKind::X11, IdleSourceKind::Logind]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// Where each source looks.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The X display (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// The Xauthority file with the display's cookie (`None`: `$XAUTHORITY`,
    /// else `~/.Xauthority`).
    pub xauthority: Option<PathBuf>,
    /// The logind session (`None`: `$XDG_SESSION_ID`, else the caller's).
    pub session: Option<String>,
    /// The input device directory.
    pub input_dir: PathBuf,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions { display: None, xauthority: None, session: None, input_dir: PathBuf::from(DEFAULT_INPUT_DIR) }
    }
}

/// Opens the source `kind`, or for [`IdleSourceKind::Auto`] the first of
/// X11, logind and evdev that answers.
///
/// # Errors
/// The chosen source's error; for auto, [`IdleError::NoSource`] naming each
/// source tried and why it failed.
pub fn open_source(kind: IdleSourceKind, options: &SourceOptions) -> Result<Box<dyn IdleSource>, IdleError> {
    match kind {
        IdleSourceKind::X11 => {
            Ok(Box::new(X11Source::connect_with(options.display.as_deref(), options.xauthority.as_deref())?))
        }
        IdleSourceKind::Logind => Ok(Box::new(LogindSource::connect(options.session.as_deref())?)),
        IdleSourceKind::Evdev => Ok(Box::new(EvdevSource::open(&options.input_dir)?)),
        IdleSourceKind::Auto => {
            let mut tried = Vec::new();
            for kind in [IdleSourceKind::X11, IdleSourceKind::Logind, IdleSourceKind::Evdev] {
                let name = kind.name();
                match open_source(kind, options) {
                    Ok(source) => {
                        tracing::info!("idle source: {} (auto)", source.name());
                        return Ok(source);
                    }
                    Err(e) => {
                        tracing::debug!("idle source {name} unavailable: {e}");
                        tried.push(format!("{name} ({})", chain(&e)));
                    }
                }
            }
            Err(IdleError::NoSource { tried: tried.join("; ") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [IdleSourceKind::Auto, IdleSourceKind::Evdev, IdleSourceKind::X11, IdleSourceKind::Logind] {
            assert_eq!(kind.to_string().parse::<IdleSourceKind>().unwrap(), kind);
        }
        assert!("wayland".parse::<IdleSourceKind>().unwrap_err().to_string().contains("wayland"));
    }

    #[test]
    fn auto_names_every_source_it_tried() {
        let dir = tempfile::tempdir().unwrap();
        let options = SourceOptions {
            display: Some(":999".into()),
            xauthority: None,
            session: Some("no-such-session".into()),
            input_dir: dir.path().to_owned(),
        };
        match open_source(IdleSourceKind::Auto, &options) {
            // Some source answered anyway (a logind with that session?): fine.
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("x11 (") && msg.contains("logind (") && msg.contains("evdev ("), "{msg}");
            }
        }
    }
}
