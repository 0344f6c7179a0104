//! The on-screen warning in the user's X session: a small window of our
//! own, drawn with the X server's core protocol, that says the desktop is
//! about to move and cancels the move when clicked or typed at.
//!
//! Why a window of our own and not a desktop notification: the desktop
//! daemon runs as root outside the session, so it has no session bus to
//! send a notification on (and a notification daemon may not be running,
//! or may hide it); the X server it already reads idle time from is the
//! one channel it has into the session. The window is override-redirect
//! (no window manager decorates, moves or hides it), centred, on top, and
//! takes the keyboard focus while shown, so the key that cancels the move
//! is not typed into the user's document. It uses the core font `fixed`,
//! which every X server has built in, so it needs no font package.
//!
//! Any real input also cancels the warning through the idle time; the
//! window's own cancel matters where the idle source is coarser than X
//! (logind's hint) and for input the idle counter does not see.

use std::path::Path;
use std::time::Duration;

use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, InputFocus, PropMode,
    Rectangle, StackMode, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use crate::idle::IdleError;

/// The window's title (`WM_NAME`), which tests and scripts search for.
pub const WARNING_TITLE: &str = "Jettison: moving your desktop";
/// The window's class (`WM_CLASS`, instance and class).
pub const WARNING_CLASS: &str = "jettison-warning";

const WIDTH: u16 = 460;
const HEIGHT: u16 = 110;
const MARGIN: i16 = 16;
const LINE: i16 = 20;

/// An X connection that can show the warning.
pub struct X11Warning {
    conn: RustConnection,
    root: u32,
    screen_size: (u16, u16),
    black: u32,
    white: u32,
    display: String,
    shown: Option<Shown>,
}

/// The window while it is shown.
struct Shown {
    window: u32,
    gc: u32,
    font: u32,
    lines: Vec<String>,
    /// Who had the keyboard focus before the warning took it.
    focus: Option<(u32, InputFocus)>,
}

impl std::fmt::Debug for X11Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Warning").field("display", &self.display).field("shown", &self.shown.is_some()).finish()
    }
}

fn query(display: &str) -> impl Fn(x11rb::errors::ConnectionError) -> IdleError + '_ {
    move |e| IdleError::X11Query { display: display.to_owned(), source: e.into() }
}

impl X11Warning {
    /// Connects to `display` with the cookie in `xauthority`, if given.
    ///
    /// # Errors
    /// The display cannot be reached or refuses the connection.
    pub fn connect(display: &str, xauthority: Option<&Path>) -> Result<X11Warning, IdleError> {
        let (conn, screen) = crate::xauth::connect_x11(display, xauthority)
            .map_err(|source| IdleError::X11Connect { display: display.to_owned(), source })?;
        let Some(s) = conn.setup().roots.get(screen) else {
            return Err(IdleError::X11NoScreen { display: display.to_owned(), screen });
        };
        let (root, screen_size, black, white) =
            (s.root, (s.width_in_pixels, s.height_in_pixels), s.black_pixel, s.white_pixel);
        Ok(X11Warning { conn, root, screen_size, black, white, display: display.to_owned(), shown: None })
    }

    /// Shows the warning with `lines` of text, or redraws it with new ones
    /// if it is shown already.
    ///
    /// # Errors
    /// The X server went away or refused a request.
    pub fn show(&mut self, lines: &[String]) -> Result<(), IdleError> {
        if let Some(shown) = &mut self.shown {
            if shown.lines != lines {
                shown.lines = lines.to_vec();
                self.draw()?;
            }
            return Ok(());
        }
        let err = query(&self.display);
        let window = self.new_id()?;
        let gc = self.new_id()?;
        let font = self.new_id()?;
        let x = (self.screen_size.0.saturating_sub(WIDTH) / 2) as i16;
        let y = (self.screen_size.1.saturating_sub(HEIGHT) / 2) as i16;
        let aux = CreateWindowAux::new()
            .background_pixel(self.white)
            .border_pixel(self.black)
            .override_redirect(1)
            .event_mask(EventMask::EXPOSURE | EventMask::BUTTON_PRESS | EventMask::KEY_PRESS);
        self.conn
            .create_window(0, window, self.root, x, y, WIDTH, HEIGHT, 3, WindowClass::INPUT_OUTPUT, 0, &aux)
            .map_err(&err)?;
        self.conn
            .change_property8(PropMode::REPLACE, window, AtomEnum::WM_NAME, AtomEnum::STRING, WARNING_TITLE.as_bytes())
            .map_err(&err)?;
        let class = format!("{WARNING_CLASS}\0{WARNING_CLASS}\0");
        self.conn
            .change_property8(PropMode::REPLACE, window, AtomEnum::WM_CLASS, AtomEnum::STRING, class.as_bytes())
            .map_err(&err)?;
        self.conn.open_font(font, b"fixed").map_err(&err)?;
        self.conn
            .create_gc(gc, window, &CreateGCAux::new().foreground(self.black).background(self.white).font(font))
            .map_err(&err)?;
        self.conn.map_window(window).map_err(&err)?;
        self.conn.configure_window(window, &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE)).map_err(&err)?;
        // The keys that cancel go to the warning, not to the user's
        // document, which gets the focus back when the warning goes.
        let focus = self.conn.get_input_focus().map_err(&err)?.reply().ok().map(|f| (f.focus, f.revert_to));
        self.shown = Some(Shown { window, gc, font, lines: lines.to_vec(), focus });
        self.draw()?;
        // Mapped above, so viewable now (no window manager redirects an
        // override-redirect window); if refused anyway, a click still cancels.
        let _ = self.conn.set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME);
        self.conn.flush().map_err(&err)?;
        Ok(())
    }

    fn new_id(&self) -> Result<u32, IdleError> {
        use x11rb::errors::{ConnectionError, ReplyError, ReplyOrIdError};
        self.conn.generate_id().map_err(|e| {
            let source = match e {
                ReplyOrIdError::ConnectionError(e) => ReplyError::ConnectionError(e),
                ReplyOrIdError::X11Error(e) => ReplyError::X11Error(e),
                ReplyOrIdError::IdsExhausted => ReplyError::ConnectionError(ConnectionError::UnknownError),
            };
            IdleError::X11Query { display: self.display.clone(), source }
        })
    }

    /// Whether a warning is shown.
    pub fn is_shown(&self) -> bool {
        self.shown.is_some()
    }

    /// The warning's window, while it is shown.
    pub fn window(&self) -> Option<u32> {
        self.shown.as_ref().map(|s| s.window)
    }

    /// Handles what the X server sent: redraws on exposure, and says
    /// whether the user clicked on the warning or pressed a key in it.
    ///
    /// # Errors
    /// The X server went away.
    pub fn cancelled(&mut self) -> Result<bool, IdleError> {
        let mut cancelled = false;
        let mut redraw = false;
        while let Some(event) = self.conn.poll_for_event().map_err(query(&self.display))? {
            let ours = |w: u32| self.shown.as_ref().is_some_and(|s| s.window == w);
            match event {
                Event::ButtonPress(e) if ours(e.event) => cancelled = true,
                Event::KeyPress(e) if ours(e.event) => cancelled = true,
                Event::Expose(e) if ours(e.window) => redraw = true,
                _ => {}
            }
        }
        if redraw && !cancelled {
            self.draw()?;
        }
        Ok(cancelled)
    }

    /// Takes the warning off the screen, if it is shown.
    pub fn withdraw(&mut self) {
        let Some(shown) = self.shown.take() else { return };
        let ours =
            self.conn.get_input_focus().ok().and_then(|c| c.reply().ok()).is_some_and(|f| f.focus == shown.window);
        if let (true, Some((window, revert_to))) = (ours, shown.focus) {
            // A window gone since answers with an error event, which is ignored.
            let _ = self.conn.set_input_focus(revert_to, window, x11rb::CURRENT_TIME);
        }
        let _ = self.conn.free_gc(shown.gc);
        let _ = self.conn.close_font(shown.font);
        let _ = self.conn.destroy_window(shown.window);
        if let Err(e) = self.conn.flush() {
            tracing::debug!(display = %self.display, "withdrawing the warning: {e}");
        }
    }

    fn draw(&self) -> Result<(), IdleError> {
        let Some(shown) = &self.shown else { return Ok(()) };
        let err = query(&self.display);
        let area = Rectangle { x: 0, y: 0, width: WIDTH, height: HEIGHT };
        self.conn.clear_area(false, shown.window, area.x, area.y, area.width, area.height).map_err(&err)?;
        for (i, line) in shown.lines.iter().enumerate() {
            // image_text8 takes at most 255 bytes; the lines are short.
            let text: Vec<u8> = line.bytes().filter(u8::is_ascii).take(255).collect();
            let y = MARGIN + LINE * (i as i16 + 1);
            self.conn.image_text8(shown.window, shown.gc, MARGIN, y, &text).map_err(&err)?;
        }
        self.conn.flush().map_err(&err)?;
        Ok(())
    }
}

impl Drop for X11Warning {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The warning's text: what happens, when, and how to stop it.
pub fn warning_lines(remaining: Duration, vms: &[String]) -> Vec<String> {
    let what = if vms.is_empty() { "your desktop".to_owned() } else { vms.join(", ") };
    vec![
        "You seem to be away.".to_owned(),
        format!("To save energy, {what} will move to the server in {} s.", remaining.as_secs()),
        String::new(),
        "Click here or press any key to stay.".to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_says_what_moves_when_and_how_to_stay() {
        let lines = warning_lines(Duration::from_secs(5), &["vm1".to_owned()]);
        assert!(lines[1].contains("vm1") && lines[1].contains("in 5 s"), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("press any key")));
        assert!(warning_lines(Duration::ZERO, &[])[1].contains("your desktop"));
    }
}
