//! The activity monitor's idle sources against real input: an X server
//! (Xvfb) whose pointer xdotool moves, a uinput keyboard read through evdev,
//! and logind where one runs; and the monitor end to end through
//! `jettison activity` under Xvfb.
//!
//! No test asserts a timing threshold beyond ordering: idle time grows while
//! nothing happens and drops after input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use activity_monitor::{warning_lines, EvdevSource, IdleError, IdleSource, LogindSource, X11Source, X11Warning};
use tests::xvfb::Xvfb;
use tests::{jettison_binary, skip, skip_absent_here};
use wire::chain;

/// The check every idle source passes: its idle time grows while nothing
/// happens and drops after `input`.
fn idle_grows_then_drops_after(source: &mut dyn IdleSource, input: impl FnOnce()) {
    let name = source.name();
    let first = source.idle_for().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let grown = source.idle_for().unwrap();
    assert!(grown > first, "{name}: idle time should grow without input: {first:?} then {grown:?}");
    input();
    std::thread::sleep(Duration::from_millis(100)); // the kernel or server delivers the event
    let after = source.idle_for().unwrap();
    assert!(after < grown, "{name}: input should reset the idle time: {grown:?} then {after:?}");
}

#[test]
fn x11_idle_time_grows_without_input_and_drops_after_pointer_motion() {
    let xvfb = match Xvfb::start() {
        Ok(x) => x,
        Err(reason) => return skip(reason),
    };
    let mut source = X11Source::connect(Some(&xvfb.display)).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(source.name(), format!("x11 {}", xvfb.display));
    assert!(!source.is_xwayland(), "Xvfb is no Xwayland");
    idle_grows_then_drops_after(&mut source, || xvfb.move_pointer(17, 23));
}

/// The warning window on a real X server: it appears titled as scripts and
/// tests look for it, takes the keyboard focus from the user's window, a
/// key sent to it cancels, and withdrawing it gives the focus back.
#[test]
fn the_warning_window_takes_the_keys_and_gives_the_focus_back() {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{ConnectionExt as _, CreateWindowAux, InputFocus, WindowClass};

    let xvfb = match Xvfb::start() {
        Ok(x) => x,
        Err(reason) => return skip(reason),
    };
    let windows = xvfb.watch_windows();
    // The user's document: a window of its own with the focus.
    let (conn, screen) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let document = conn.generate_id().unwrap();
    conn.create_window(0, document, root, 0, 0, 200, 100, 0, WindowClass::INPUT_OUTPUT, 0, &CreateWindowAux::new())
        .unwrap();
    conn.map_window(document).unwrap();
    conn.set_input_focus(InputFocus::PARENT, document, x11rb::CURRENT_TIME).unwrap();
    let focus = |conn: &x11rb::rust_connection::RustConnection| conn.get_input_focus().unwrap().reply().unwrap().focus;
    assert_eq!(focus(&conn), document);

    let mut warning = X11Warning::connect(&xvfb.display, None).unwrap_or_else(|e| panic!("{}", chain(&e)));
    warning.show(&warning_lines(Duration::from_secs(5), &["vm1".to_owned()])).unwrap();
    let window = warning.window().expect("shown");
    assert_eq!(windows.wait_for_mapped(activity_monitor::WARNING_TITLE, Duration::from_secs(30), "no window"), window);
    assert_eq!(focus(&conn), window, "the warning takes the keys");
    assert!(!warning.cancelled().unwrap(), "nothing pressed yet");
    xvfb.xdotool(&["key", "--window", &window.to_string(), "Escape"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !warning.cancelled().unwrap() {
        assert!(Instant::now() < deadline, "the key on the warning never reached it");
        std::thread::sleep(Duration::from_millis(50));
    }
    warning.withdraw();
    windows.wait_for_gone(window, Duration::from_secs(30), "the warning stayed");
    assert_eq!(focus(&conn), document, "the user's window has the focus back");
}

/// A virtual keyboard made through /dev/uinput; destroyed on drop.
struct UinputKeyboard {
    file: std::fs::File,
}

mod uinput {
    //! The uinput ioctls (linux/uinput.h), spelled out.
    pub const fn io(nr: u64) -> u64 {
        ((b'U' as u64) << 8) | nr
    }
    pub const fn iow(nr: u64, size: usize) -> u64 {
        (1 << 30) | ((size as u64) << 16) | ((b'U' as u64) << 8) | nr
    }
    pub const UI_DEV_CREATE: u64 = io(1);
    pub const UI_DEV_DESTROY: u64 = io(2);
    pub const UI_DEV_SETUP: u64 = iow(3, std::mem::size_of::<Setup>());
    pub const UI_SET_EVBIT: u64 = iow(100, 4);
    pub const UI_SET_KEYBIT: u64 = iow(101, 4);
    pub const EV_SYN: u16 = 0;
    pub const EV_KEY: u16 = 1;
    pub const KEY_A: u16 = 30;

    /// `struct uinput_setup`.
    #[repr(C)]
    pub struct Setup {
        pub bustype: u16,
        pub vendor: u16,
        pub product: u16,
        pub version: u16,
        pub name: [u8; 80],
        pub ff_effects_max: u32,
    }
    const _: () = assert!(std::mem::size_of::<Setup>() == 92);
}

impl UinputKeyboard {
    fn create() -> Result<UinputKeyboard, String> {
        let file = OpenOptions::new()
            .write(true)
            .open("/dev/uinput")
            .map_err(|e| format!("cannot open /dev/uinput ({e}); run as root"))?;
        let fd = file.as_raw_fd();
        let ioctl_int = |request: u64, arg: libc::c_int| {
            // SAFETY: fd is open; these requests take an int by value.
            let rc = unsafe { libc::ioctl(fd, request as libc::Ioctl, arg) };
            if rc < 0 {
                Err(format!("uinput ioctl {request:#x}: {}", std::io::Error::last_os_error()))
            } else {
                Ok(())
            }
        };
        ioctl_int(uinput::UI_SET_EVBIT, libc::c_int::from(uinput::EV_KEY))?;
        ioctl_int(uinput::UI_SET_KEYBIT, libc::c_int::from(uinput::KEY_A))?;
        let mut setup = uinput::Setup {
            bustype: 0x06, /* BUS_VIRTUAL */
            vendor: 1,
            product: 1,
            version: 1,
            name: [0; 80],
            ff_effects_max: 0,
        };
        let name = b"jettison test keyboard";
        setup.name[..name.len()].copy_from_slice(name);
        // SAFETY: fd is open and `setup` is a valid struct uinput_setup that outlives the call.
        if unsafe { libc::ioctl(fd, uinput::UI_DEV_SETUP as libc::Ioctl, &setup) } < 0 {
            return Err(format!("UI_DEV_SETUP: {}", std::io::Error::last_os_error()));
        }
        ioctl_int(uinput::UI_DEV_CREATE, 0)?;
        // udev needs a moment to create the event node.
        std::thread::sleep(Duration::from_millis(500));
        Ok(UinputKeyboard { file })
    }

    /// Presses and releases KEY_A.
    fn tap(&mut self) {
        let mut bytes = Vec::new();
        for (kind, code, value) in [
            (uinput::EV_KEY, uinput::KEY_A, 1),
            (uinput::EV_SYN, 0, 0),
            (uinput::EV_KEY, uinput::KEY_A, 0),
            (uinput::EV_SYN, 0, 0),
        ] {
            bytes.extend_from_slice(&[0u8; 16]); // timeval: the kernel stamps it
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&code.to_ne_bytes());
            bytes.extend_from_slice(&i32::to_ne_bytes(value));
        }
        self.file.write_all(&bytes).unwrap();
    }
}

impl Drop for UinputKeyboard {
    fn drop(&mut self) {
        // SAFETY: fd is open; UI_DEV_DESTROY takes no argument.
        unsafe { libc::ioctl(self.file.as_raw_fd(), uinput::UI_DEV_DESTROY as libc::Ioctl) };
    }
}

#[test]
fn evdev_sees_a_key_from_a_uinput_keyboard() {
    if !Path::new("/dev/uinput").exists() {
        return skip_absent_here(
            "no /dev/uinput: this kernel has no uinput (modprobe uinput), so no virtual keyboard can be made",
        );
    }
    let mut keyboard = match UinputKeyboard::create() {
        Ok(k) => k,
        Err(reason) => return skip(reason),
    };
    let mut source = EvdevSource::open(Path::new("/dev/input")).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(source.devices().count() > 0);
    idle_grows_then_drops_after(&mut source, || keyboard.tap());
}

#[test]
fn logind_reports_the_session_idle_time() {
    let mut source = match LogindSource::connect(None) {
        Ok(s) => s,
        Err(e @ (IdleError::NoLogind { .. } | IdleError::LogindSession { .. } | IdleError::LoginctlSpawn { .. })) => {
            return skip_absent_here(e);
        }
        Err(e) => panic!("logind answered something unexpected: {e}"),
    };
    let first = source.idle_for().unwrap();
    let second = source.idle_for().unwrap();
    // Either active (zero) throughout, or idle and not going backwards.
    assert!(second >= first || second.is_zero(), "{first:?} then {second:?}");
}

/// Reads the monitor's stdout on a thread, so the test can wait for lines.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("monitor: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The monitor process, killed if the test fails before stopping it.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_file(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `jettison activity` on an Xvfb display with commands that write marker files.
struct RunningMonitor {
    child: KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
    consolidated: PathBuf,
    reintegrated: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningMonitor {
    fn start(xvfb: &Xvfb, idle_secs: u32, warn_secs: u32) -> RunningMonitor {
        let dir = tempfile::tempdir().unwrap();
        let consolidated = dir.path().join("consolidated");
        let reintegrated = dir.path().join("reintegrated");
        let mut child = Command::new(jettison_binary())
            .args(["activity", "--vm", "vm1", "--idle-source", "x11", "--display", &xvfb.display])
            .args(["--idle-secs", &idle_secs.to_string(), "--warn-secs", &warn_secs.to_string()])
            .arg("--on-consolidate")
            .arg(format!("echo \"$JETTISON_VM\" > '{}'", consolidated.display()))
            .arg("--on-reintegrate")
            .arg(format!("echo \"$JETTISON_VM\" > '{}'", reintegrated.display()))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        RunningMonitor { child: KillOnDrop(Some(child)), lines, consolidated, reintegrated, _dir: dir }
    }

    /// Waits for a stdout line starting with `prefix`.
    fn wait_for_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?} within {within:?}: {e}"),
            }
        }
    }

    /// Stops it with SIGTERM; asserts a clean exit; returns the rest of its output.
    fn stop(mut self) -> Vec<String> {
        let mut child = self.child.0.take().unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our live child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "jettison activity should stop cleanly on SIGTERM: {status}");
        self.lines.iter().collect() // until the monitor's stdout closes
    }
}

#[test]
fn monitor_consolidates_when_idle_and_reintegrates_on_pointer_motion() {
    let xvfb = match Xvfb::start() {
        Ok(x) => x,
        Err(reason) => return skip(reason),
    };
    let monitor = RunningMonitor::start(&xvfb, 2, 1);
    let warning = monitor.wait_for_line("activity-monitor: idle for", Duration::from_secs(30));
    assert_eq!(warning, "activity-monitor: idle for 2 s; consolidating vm1 in 1 s unless there is input");

    assert!(wait_for_file(&monitor.consolidated, Duration::from_secs(30)), "no consolidation after the warning");
    assert_eq!(std::fs::read_to_string(&monitor.consolidated).unwrap(), "vm1\n");
    assert!(!monitor.reintegrated.exists(), "reintegrated without input");

    xvfb.move_pointer(101, 57);
    assert!(wait_for_file(&monitor.reintegrated, Duration::from_secs(15)), "no reintegration after pointer motion");

    let rest = monitor.stop();
    assert_eq!(rest.last().map(String::as_str), Some("activity-monitor: stopped"), "{rest:?}");
}

#[test]
fn pointer_motion_during_the_warning_cancels_consolidation() {
    let xvfb = match Xvfb::start() {
        Ok(x) => x,
        Err(reason) => return skip(reason),
    };
    // A warning long enough that the motion surely lands inside it.
    let monitor = RunningMonitor::start(&xvfb, 2, 30);
    monitor.wait_for_line("activity-monitor: idle for 2 s; consolidating vm1 in 30 s", Duration::from_secs(30));
    xvfb.move_pointer(33, 44);
    monitor.wait_for_line("activity-monitor: input: vm1 stays here", Duration::from_secs(10));
    assert!(!monitor.consolidated.exists(), "consolidated although the user moved the pointer");
    monitor.stop();
}
