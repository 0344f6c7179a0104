//! The X server's idle time, from the MIT-SCREEN-SAVER extension.
//!
//! `XScreenSaverQueryInfo` answers `ms_since_user_input`: the server's own
//! count since the last keyboard or pointer event of any client's device,
//! which is exactly the question, with no device access needed.

use std::path::Path;
use std::time::Duration;

use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::screensaver::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

use crate::idle::{IdleError, IdleSource};

/// Idle time from an X server's screensaver extension.
pub struct X11Source {
    conn: RustConnection,
    root: u32,
    display: String,
}

impl std::fmt::Debug for X11Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Source").field("display", &self.display).field("root", &self.root).finish()
    }
}

impl X11Source {
    /// Connects to `display` (e.g. ":0"), or to `$DISPLAY` if `None`, and
    /// checks that the screensaver extension answers.
    ///
    /// # Errors
    /// No display, no connection, no extension, or the first query fails.
    pub fn connect(display: Option<&str>) -> Result<X11Source, IdleError> {
        Self::connect_with(display, None)
    }

    /// As [`connect`](Self::connect), with the cookie from `xauthority`
    /// (the session's file, e.g. `/run/user/1000/gdm/Xauthority`) where
    /// given: the desktop daemon is not a client of the session.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with(display: Option<&str>, xauthority: Option<&Path>) -> Result<X11Source, IdleError> {
        let display = match display {
            Some(d) => d.to_owned(),
            None => std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()).ok_or(IdleError::NoDisplay)?,
        };
        let (conn, screen) = crate::xauth::connect_x11(&display, xauthority)
            .map_err(|source| IdleError::X11Connect { display: display.clone(), source })?;
        let root = match conn.setup().roots.get(screen) {
            Some(s) => s.root,
            None => return Err(IdleError::X11NoScreen { display, screen }),
        };
        let present = conn
            .extension_information(screensaver::X11_EXTENSION_NAME)
            .map_err(|e| IdleError::X11Query { display: display.clone(), source: e.into() })?
            .is_some();
        if !present {
            return Err(IdleError::X11NoScreensaver { display });
        }
        let mut source = X11Source { conn, root, display };
        source.idle_for()?;
        Ok(source)
    }

    /// The display connected to.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Whether the server is Xwayland (it offers the `XWAYLAND`
    /// extension). Its idle time counts only input to X clients, not to
    /// the session's Wayland clients, so it is no measure of the user.
    pub fn is_xwayland(&self) -> bool {
        self.conn.extension_information("XWAYLAND").ok().flatten().is_some()
    }
}

impl IdleSource for X11Source {
    fn name(&self) -> String {
        format!("x11 {}", self.display)
    }

    fn idle_for(&mut self) -> Result<Duration, IdleError> {
        let query = |conn: &RustConnection| conn.screensaver_query_info(self.root)?.reply();
        let reply =
            query(&self.conn).map_err(|source| IdleError::X11Query { display: self.display.clone(), source })?;
        Ok(Duration::from_millis(u64::from(reply.ms_since_user_input)))
    }
}
