//! A headless X server (Xvfb) for the tests of the user's idle time and
//! the warning: input through xdotool (XTEST, which the server counts as
//! the user's), and a watch on the windows that appear and go.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{AtomEnum, ChangeWindowAttributesAux, ConnectionExt as _, EventMask};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// A headless X server on a display number no one else uses; killed on drop.
#[derive(Debug)]
pub struct Xvfb {
    /// Its display, e.g. ":93".
    pub display: String,
    number: u32,
    child: Option<Child>,
    lock: PathBuf,
    /// The Xauthority file with its cookie, if it admits only clients
    /// that have it (as a user's X server does).
    pub xauthority: Option<PathBuf>,
    /// Its screen's size, `WIDTHxHEIGHT`.
    size: String,
}

fn spawn(display: &str, size: &str, xauthority: Option<&Path>) -> Result<Child, String> {
    let mut command = Command::new("Xvfb");
    // -noreset: the server must not reset when a probe disconnects.
    command.args([display, "-screen", "0", &format!("{size}x24"), "-nolisten", "tcp", "-noreset"]);
    if let Some(file) = xauthority {
        command.arg("-auth").arg(file);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("cannot start Xvfb: {e}"))
}

/// Writes an Xauthority file as `xauth add` does: one `FamilyLocal`
/// record for this host and display `number` with a random
/// MIT-MAGIC-COOKIE-1.
fn write_cookie(file: &Path, number: u32) -> Result<(), String> {
    let hostname = std::fs::read("/proc/sys/kernel/hostname").map_err(|e| format!("hostname: {e}"))?;
    let cookie: [u8; 16] = rand::random();
    let mut bytes = 256u16.to_be_bytes().to_vec();
    let number = number.to_string();
    for field in [hostname.trim_ascii_end(), number.as_bytes(), b"MIT-MAGIC-COOKIE-1", &cookie] {
        bytes.extend_from_slice(&(field.len() as u16).to_be_bytes());
        bytes.extend_from_slice(field);
    }
    std::fs::write(file, bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

impl Xvfb {
    /// Starts Xvfb (640x480) and waits until it answers, or says why it
    /// cannot (Xvfb or xdotool missing: `scripts/install-deps` installs both).
    ///
    /// # Errors
    /// Why not, for [`crate::skip`].
    pub fn start() -> Result<Xvfb, String> {
        Self::start_as(false, "640x480")
    }

    /// As [`Xvfb::start`], with a screen of `size` (`WIDTHxHEIGHT`), as a
    /// desk's monitor has.
    ///
    /// # Errors
    /// As [`Xvfb::start`].
    pub fn start_sized(size: &str) -> Result<Xvfb, String> {
        Self::start_as(false, size)
    }

    /// As [`Xvfb::start`], admitting only clients with the cookie in its
    /// [`Xvfb::xauthority`] file, as a user's X server does.
    ///
    /// # Errors
    /// As [`Xvfb::start`].
    pub fn start_with_cookie() -> Result<Xvfb, String> {
        Self::start_as(true, "640x480")
    }

    fn start_as(with_cookie: bool, size: &str) -> Result<Xvfb, String> {
        if !on_path("Xvfb") || !on_path("xdotool") {
            return Err("Xvfb or xdotool is not installed (run scripts/install-deps)".into());
        }
        for n in 90..190u32 {
            if Path::new(&format!("/tmp/.X{n}-lock")).exists() {
                continue;
            }
            // Our own lock makes the choice unique among concurrent tests
            // before Xvfb writes its lock.
            let lock = PathBuf::from(format!("/tmp/jettison-xvfb-{n}.lock"));
            if OpenOptions::new().write(true).create_new(true).open(&lock).is_err() {
                continue;
            }
            let display = format!(":{n}");
            let xauthority = with_cookie.then(|| PathBuf::from(format!("/tmp/jettison-xvfb-{n}.xauthority")));
            if let Some(file) = &xauthority {
                write_cookie(file, n)?;
            }
            let child = spawn(&display, size, xauthority.as_deref())?;
            let mut xvfb = Xvfb { display, number: n, child: Some(child), lock, xauthority, size: size.to_owned() };
            if xvfb.answers() {
                return Ok(xvfb);
            }
            drop(xvfb); // lost a race for the display: try the next
        }
        Err("no free X display between :90 and :189".into())
    }

    /// Waits until the server answers; false if it died first.
    fn answers(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.connect().is_ok() {
                return true;
            }
            if self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stops the server and keeps its display number for [`Xvfb::restart`]
    /// (as a user's X server is gone before the login and after a logout).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM, not SIGKILL: Xvfb then removes its lock and socket.
            // SAFETY: kill has no memory preconditions; the pid is our child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(format!("/tmp/.X{}-lock", self.number));
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
    }

    /// Starts the server again on its display, once stopped.
    ///
    /// # Panics
    /// It does not answer.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "Xvfb {} runs already", self.display);
        self.child = Some(spawn(&self.display, &self.size, self.xauthority.as_deref()).expect("Xvfb starts again"));
        assert!(self.answers(), "Xvfb {} does not answer after a restart", self.display);
    }

    /// A client connection with the cookie, if the server has one, and its screen.
    ///
    /// # Errors
    /// The server does not answer or refuses.
    pub fn connect(&self) -> Result<(RustConnection, usize), x11rb::errors::ConnectError> {
        activity_monitor::connect_x11(&self.display, self.xauthority.as_deref())
    }

    /// What the whole screen shows now (the root window, as a person at
    /// the desk sees it).
    ///
    /// # Errors
    /// The server does not answer, or sends no 24- or 32-bit image.
    pub fn screen(&self) -> Result<crate::screen::Screenshot, String> {
        use x11rb::protocol::xproto::ImageFormat;
        let (conn, screen) = self.connect().map_err(|e| format!("{}: {e}", self.display))?;
        let root = &conn.setup().roots[screen];
        let (width, height) = (root.width_in_pixels, root.height_in_pixels);
        let image = conn
            .get_image(ImageFormat::Z_PIXMAP, root.root, 0, 0, width, height, !0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let (width, height) = (usize::from(width), usize::from(height));
        if image.depth < 24 || image.data.len() < width * height * 4 {
            return Err(format!("a {}-bit image of {} bytes from {}", image.depth, image.data.len(), self.display));
        }
        // Xvfb's 24-bit visual: 32 bits a pixel, blue first (little endian).
        let pixels = image.data.chunks_exact(4).take(width * height).map(|p| [p[2], p[1], p[0]]).collect();
        Ok(crate::screen::Screenshot { width, height, pixels })
    }

    /// Runs xdotool with `args` on this display (with the cookie, if the
    /// server has one), panicking if it fails.
    pub fn xdotool(&self, args: &[&str]) {
        let mut command = Command::new("xdotool");
        command.args(args).env("DISPLAY", &self.display);
        if let Some(file) = &self.xauthority {
            command.env("XAUTHORITY", file);
        }
        let status = command.status().unwrap_or_else(|e| panic!("cannot run xdotool: {e}"));
        assert!(status.success(), "xdotool {args:?} failed on {}", self.display);
    }

    /// Moves the pointer to (x, y) with xdotool (XTEST: real server input).
    pub fn move_pointer(&self, x: u32, y: u32) {
        self.xdotool(&["mousemove", &x.to_string(), &y.to_string()]);
    }

    /// A watch on the top-level windows of this display, from now on.
    pub fn watch_windows(&self) -> WindowWatch {
        WindowWatch::new(self.connect().expect("the Xvfb answers"))
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // In case it died before it could clean up, stop removes its files
        // too: the number is ours (our lock) until the lock goes.
        self.stop();
        if let Some(file) = &self.xauthority {
            let _ = std::fs::remove_file(file);
        }
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The X server's own account of the top-level windows mapped and
/// destroyed: events queue from the moment the watch starts, so a window
/// that comes and goes quickly is never missed.
pub struct WindowWatch {
    conn: RustConnection,
}

impl std::fmt::Debug for WindowWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowWatch").finish_non_exhaustive()
    }
}

impl WindowWatch {
    fn new((conn, screen): (RustConnection, usize)) -> WindowWatch {
        let root = conn.setup().roots[screen].root;
        let aux = ChangeWindowAttributesAux::new().event_mask(EventMask::SUBSTRUCTURE_NOTIFY);
        conn.change_window_attributes(root, &aux).expect("a request").check().expect("the root's events");
        WindowWatch { conn }
    }

    /// Waits for a window titled `title` to be mapped; returns its id, or
    /// panics with `what` after `timeout`.
    pub fn wait_for_mapped(&self, title: &str, timeout: Duration, what: &str) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(event) = self.conn.poll_for_event().expect("the Xvfb answers") {
                if let Event::MapNotify(e) = event {
                    if self.title(e.window).as_deref() == Some(title) {
                        return e.window;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{what}: no window {title:?} in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `window` to be unmapped or destroyed, or panics with `what`.
    pub fn wait_for_gone(&self, window: u32, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(event) = self.conn.poll_for_event().expect("the Xvfb answers") {
                match event {
                    Event::UnmapNotify(e) if e.window == window => return,
                    Event::DestroyNotify(e) if e.window == window => return,
                    _ => {}
                }
            }
            assert!(Instant::now() < deadline, "{what}: window {window:#x} still there after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `window`'s `WM_NAME`, if it still exists and has one.
    pub fn title(&self, window: u32) -> Option<String> {
        let reply =
            self.conn.get_property(false, window, AtomEnum::WM_NAME, AtomEnum::STRING, 0, 256).ok()?.reply().ok()?;
        Some(String::from_utf8_lossy(&reply.value).into_owned())
    }
}

/// A user at the desk: moves the pointer (XTEST, through xdotool) every
/// 300 ms until dropped, so the X server counts the user as active.
#[derive(Debug)]
pub struct User {
    here: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl User {
    /// The user starts working on `xvfb`'s display.
    pub fn arrives(xvfb: &Xvfb) -> User {
        use std::sync::atomic::Ordering;
        let here = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let display = xvfb.display.clone();
        let xauthority = xvfb.xauthority.clone().unwrap_or_default();
        let still = std::sync::Arc::clone(&here);
        let thread = std::thread::spawn(move || {
            let mut x = 10;
            while still.load(Ordering::Relaxed) {
                x = if x == 10 { 200 } else { 10 };
                let _ = Command::new("xdotool")
                    .args(["mousemove", &x.to_string(), "100"])
                    .env("DISPLAY", &display)
                    .env("XAUTHORITY", &xauthority)
                    .status();
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        User { here, thread: Some(thread) }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        self.here.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
