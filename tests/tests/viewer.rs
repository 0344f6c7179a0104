//! The VM's screen at the desk, as its user sees it: `jettison view
//! --follow` opens the real remote-viewer (virt-viewer) in the desk's X
//! session (Xvfb here), and that X screen then shows the guest's own
//! picture (its test pattern, `jt.screen=1`, all four quadrants), read
//! back from the X server: from the desktop, then from the server's
//! ticketed console once the VM is consolidated, then from the desktop
//! again after reintegration, with nothing done at the desk.
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

/// The command line of the remote-viewer that runs now, if one does.
fn viewer_command_line() -> Option<String> {
    let out = Command::new("pgrep").args(["-a", "-x", "remote-viewer"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Waits until the desk shows the guest's picture through a remote-viewer
/// whose command line holds `connection` (the local SPICE socket, or the
/// connection file for the server's console), saving the screen if not.
fn wait_until_shown(xvfb: &Xvfb, viewer: &mut Viewer, connection: &str, office: &Office, what: &str) {
    let deadline = Instant::now() + SHOWN_WITHIN;
    loop {
        let screen = xvfb.screen().unwrap();
        let line = viewer_command_line().unwrap_or_default();
        if screen.shows_test_pattern() && line.contains(connection) {
            eprintln!("{what}: the desk ({}x{}) shows the guest through `{line}`", screen.width, screen.height);
            return;
        }
        if let Ok(Some(status)) = viewer.0.try_wait() {
            panic!("jettison view ended ({status}) before {what}\n{}", office.logs());
        }
        if Instant::now() > deadline {
            let last = std::env::temp_dir().join("jettison-viewer-desk.ppm");
            let mut ppm = format!("P6\n{} {}\n255\n", screen.width, screen.height).into_bytes();
            ppm.extend(screen.pixels.iter().flatten());
            std::fs::write(&last, ppm).unwrap();
            panic!("{what}: never seen (the desk shows {}; viewer `{line}`)\n{}", last.display(), office.logs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn jettison_view_follows_the_vms_screen_from_the_desk_to_the_server_and_back() {
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
    assert_eq!(viewer_command_line(), None, "another remote-viewer runs on this machine");

    // As the desk's session would run it (from the desktop's network: the
    // server's console is on the office LAN); the X socket is a file.
    let socket = office.desktop_socket();
    let viewer = Command::new("ip")
        .args(["netns", "exec", office.host(0)])
        .arg(tests::jettison_binary())
        .args(["view", VM, "--full-screen", "--follow", "--socket", socket.to_str().unwrap()])
        .env("DISPLAY", &xvfb.display)
        .spawn()
        .unwrap();
    let mut viewer = Viewer(viewer);
    wait_until_shown(&xvfb, &mut viewer, "spice+unix://", &office, "at the desk");

    // Consolidated: the same command now shows the server's console (its
    // connection file holds the ticket), with nothing done by the user.
    office.consolidate_when_idle(Duration::from_secs(180));
    wait_until_shown(&xvfb, &mut viewer, "jettison-view-", &office, "on the server");

    // Back home: the desk shows it from the desktop again.
    let back = office.jettison_json(&["reintegrate", VM, "--socket", socket.to_str().unwrap()]);
    eprintln!("reintegrated: {back}");
    wait_until_shown(&xvfb, &mut viewer, "spice+unix://", &office, "at the desk again");
}
