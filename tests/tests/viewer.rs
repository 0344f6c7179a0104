//! The VM's screen at the desk, as its user sees it: `jettison view`
//! opens the real remote-viewer (virt-viewer) full screen in the desk's
//! X session (Xvfb here), and that X screen then shows the guest's own
//! picture (its test pattern, `jt.screen=1`, all four quadrants), read
//! back from the X server.
//!
//! Root only (namespaces, taps, FUSE); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tests::office::{wait_for_count_above, BootDisk, Office, OfficeSpec, VM};
use tests::xvfb::Xvfb;
use tests::BOOT_TIMEOUT;

/// How long the viewer may take to show the guest's picture.
const SHOWN_WITHIN: Duration = Duration::from_secs(120);

/// Ends the viewer when the test ends, passed or not.
struct Viewer(Child);

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn jettison_view_shows_the_vms_screen_full_screen_at_the_desk() {
    if !Command::new("sh").args(["-c", "command -v remote-viewer"]).status().is_ok_and(|s| s.success()) {
        return tests::skip("remote-viewer is not installed (scripts/install-deps installs virt-viewer)");
    }
    // A desk's monitor the size of the guest's screen (1280x800): without a
    // window manager (Xvfb has none) remote-viewer shows the guest 1:1.
    let xvfb = match Xvfb::start_sized("1280x800") {
        Ok(xvfb) => xvfb,
        Err(why) => return tests::skip(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = OfficeSpec { boot_disk: Some(BootDisk { firmware: "bios", format: "qcow2" }), ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    wait_for_count_above(&office.desktop_serial(), 0, BOOT_TIMEOUT);
    assert!(!xvfb.screen().unwrap().shows_test_pattern(), "the desk shows the guest before any viewer runs");

    let socket = office.desktop_socket();
    let viewer = Command::new(tests::jettison_binary())
        .args(["view", VM, "--full-screen", "--socket", socket.to_str().unwrap()])
        .env("DISPLAY", &xvfb.display)
        .spawn()
        .unwrap();
    let mut viewer = Viewer(viewer);
    let deadline = Instant::now() + SHOWN_WITHIN;
    loop {
        let screen = xvfb.screen().unwrap();
        if screen.shows_test_pattern() {
            eprintln!(
                "the desk ({}x{}) shows the guest's test pattern through remote-viewer",
                screen.width, screen.height
            );
            break;
        }
        if let Ok(Some(status)) = viewer.0.try_wait() {
            panic!("jettison view ended ({status}) before the desk showed the guest\n{}", office.logs());
        }
        if Instant::now() > deadline {
            let last = std::env::temp_dir().join("jettison-viewer-desk.ppm");
            let mut ppm = format!("P6\n{} {}\n255\n", screen.width, screen.height).into_bytes();
            ppm.extend(screen.pixels.iter().flatten());
            std::fs::write(&last, ppm).unwrap();
            panic!("the desk never showed the guest's screen (it shows {})\n{}", last.display(), office.logs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
