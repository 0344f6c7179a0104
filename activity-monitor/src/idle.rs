//! What every idle source answers, and how each can fail.

use std::path::PathBuf;
use std::time::Duration;

/// A source of the user's idle time: how long since the last keyboard or
/// pointer input.
///
/// Polled: the monitor asks every [`poll_interval`](IdleSource::poll_interval).
pub trait IdleSource: Send {
    /// The source's name as logs print it ("x11 :0", "evdev (3 devices)").
    fn name(&self) -> String;

    /// Time since the last user input. A source that started after the last
    /// input counts from its own start.
    ///
    /// # Errors
    /// The source can no longer be read (the X server went away, logind
    /// stopped answering, every input device vanished).
    fn idle_for(&mut self) -> Result<Duration, IdleError>;

    /// How often the monitor should ask; a source whose question is costly
    /// (a process per query) asks less often.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(250)
    }
}

/// Why an idle source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    /// `$DISPLAY` is not set and no display was named.
    #[error("x11: $DISPLAY is not set (start the monitor in the user's X session or pass the display)")]
    NoDisplay,
    /// Connecting to the X server failed.
    #[error("x11: cannot connect to display {display:?} (is the X server running and is XAUTHORITY right?)")]
    X11Connect {
        /// The display asked for.
        display: String,
        /// The connection error.
        #[source]
        source: x11rb::errors::ConnectError,
    },
    /// The display names a screen the server does not have.
    #[error("x11: display {display:?} has no screen {screen} (name an existing screen, e.g. \":0.0\")")]
    X11NoScreen {
        /// The display.
        display: String,
        /// The screen asked for.
        screen: usize,
    },
    /// The X server lacks the MIT-SCREEN-SAVER extension.
    #[error("x11: display {display:?} has no MIT-SCREEN-SAVER extension (enable it in the X server's configuration)")]
    X11NoScreensaver {
        /// The display.
        display: String,
    },
    /// Asking the X server for the idle time failed.
    #[error("x11: querying the screensaver idle time on display {display:?} failed")]
    X11Query {
        /// The display.
        display: String,
        /// The protocol or connection error.
        #[source]
        source: x11rb::errors::ReplyError,
    },
    /// `loginctl` could not be run.
    #[error("logind: cannot run {program} (install systemd's loginctl)")]
    LoginctlSpawn {
        /// The program run.
        program: String,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// No logind answers on the system bus.
    #[error("no logind on the system bus: {message} (the desktop must run systemd-logind or elogind)")]
    NoLogind {
        /// What loginctl said.
        message: String,
    },
    /// logind answered but not for this session.
    #[error("logind: session {session:?} cannot be queried: {message} (pass the session id of the user's seat)")]
    LogindSession {
        /// The session asked for.
        session: String,
        /// What loginctl said.
        message: String,
    },
    /// loginctl's answer was not the properties asked for.
    #[error("logind: unexpected answer for session {session:?}: {output:?}")]
    LogindParse {
        /// The session.
        session: String,
        /// What loginctl printed.
        output: String,
    },
    /// The input device directory could not be listed.
    #[error("evdev: cannot list {dir}")]
    InputDir {
        /// The directory (normally /dev/input).
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No device there reports keys or pointer motion.
    #[error("evdev: no input device with keys or pointer motion under {dir}{detail}")]
    NoInputDevices {
        /// The directory searched.
        dir: PathBuf,
        /// Why devices were passed over (permissions), if any were.
        detail: String,
    },
    /// Reading an input device failed.
    #[error("evdev: reading {device} failed")]
    InputRead {
        /// The device.
        device: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Auto-selection found no source that works.
    #[error("no idle source works here; tried {tried}")]
    NoSource {
        /// Each source tried and why it failed.
        tried: String,
    },
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl<T: IdleSource + ?Sized> IdleSource for Box<T> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn idle_for(&mut self) -> Result<Duration, IdleError> {
        (**self).idle_for()
    }

    fn poll_interval(&self) -> Duration {
        (**self).poll_interval()
    }
}
