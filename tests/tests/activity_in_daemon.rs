//! The desktop daemon watches the user itself: with `[activity]` in
//! `desktop.toml`, `jettison desktop` reads the user's idle time from the
//! X server (Xvfb here, input through xdotool), shows its warning as a
//! window on the user's display, consolidates the idle VM when the warning
//! runs out, and brings it back when the user moves the pointer; a click
//! or a key on the warning keeps the VM here.
//!
//! Root only (namespaces, taps, FUSE) and Xvfb with xdotool
//! (`scripts/install-deps`); skipped with a reason elsewhere (a failure
//! under CI). No timing threshold is asserted: each step waits for the
//! state it expects, within a bound only a broken daemon reaches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::time::{Duration, Instant};

use activity_monitor::WARNING_TITLE;
use tests::office::{Office, OfficeSpec, VM};
use tests::xvfb::{User, Xvfb};

/// Bound on a change that should come within seconds (a freshly booted
/// TCG guest may be too busy to move for a while: the monitor tries again
/// after each idle period).
const WAIT: Duration = Duration::from_secs(300);

fn xvfb() -> Option<Xvfb> {
    started(Xvfb::start())
}

fn started(xvfb: Result<Xvfb, String>) -> Option<Xvfb> {
    match xvfb {
        Ok(xvfb) => Some(xvfb),
        Err(why) => {
            tests::skip(why);
            None
        }
    }
}

/// The desktop's status until `done` holds of it (checked against the
/// status schema each time), or the panic.
fn wait_for_status(office: &Office, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let socket = office.desktop_socket();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = office.jettison_json(&["status", "--daemon", socket.to_str().unwrap()]);
        tests::check_status_schema(&status, None);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status}\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_daemon_warns_the_idle_user_moves_the_vm_and_brings_it_back_when_the_user_returns() {
    let Some(xvfb) = xvfb() else { return };
    let windows = xvfb.watch_windows();
    let dir = tempfile::tempdir().unwrap();
    let activity = format!("source = \"x11\"\ndisplay = \"{}\"\nidle_secs = 3\nwarn_secs = 3", xvfb.display);
    let spec = OfficeSpec { activity: Some(activity), ..OfficeSpec::default() };
    // The user works while the desktop boots: a TCG guest starved of CPU
    // on a loaded machine could pass for idle and move before it counts.
    let user = User::arrives(&xvfb);
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    drop(user);

    // Nobody touches the display: the warning appears on it, then the VM moves.
    let warning = windows.wait_for_mapped(WARNING_TITLE, WAIT, "no warning on the idle user's display");
    let away = wait_for_status(&office, "the idle user's VM never moved", |s| {
        s["vms"][0]["location"] == "server" && s["activity"]["state"] == "away"
    });
    eprintln!("away: {}", away["activity"]);
    windows.wait_for_gone(warning, WAIT, "the warning stayed after the move");
    let activity = &away["activity"];
    assert_eq!(activity["source"], format!("x11 {}", xvfb.display), "{activity}");
    assert_eq!(activity["moved"], serde_json::json!([VM]), "{activity}");
    assert_eq!(activity["warning_window"], true, "{activity}");
    assert!(activity["idle_since"].is_u64() && activity["idle_secs"].is_number(), "{activity}");
    assert_eq!((activity["idle_limit_secs"].as_u64(), activity["warn_secs"].as_u64()), (Some(3), Some(3)));
    let socket = office.desktop_socket();
    let out = office.jettison(&["status", "--daemon", socket.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("activity: the user is away; moved vm1"), "{said}");
    // Host 0 of the office is the desktop.
    assert_eq!(office.scrape(0).value("jettison_desktop_user_away"), 1.0);

    // The user comes back and works: the VM comes home and stays.
    let user = User::arrives(&xvfb);
    office.wait_until_home(WAIT, "the user came back but the VM did not");
    let back = wait_for_status(&office, "the monitor never saw the user back", |s| {
        s["activity"]["state"] == "watching" && s["activity"]["moved"] == serde_json::json!([])
    });
    eprintln!("back: {}", back["activity"]);
    assert_eq!(back["vms"][0]["location"], "desktop", "{back}");
    let page = office.scrape(0);
    assert_eq!(page.value("jettison_desktop_user_away"), 0.0);
    assert!(page.value("jettison_desktop_user_idle_seconds") >= 0.0);
    drop(user);
    let log = office.log("desktop");
    assert!(log.contains("the user is away: moved to the server"), "{log}");
    assert!(log.contains("the user is back: home again"), "{log}");
}

#[test]
fn a_key_or_a_click_on_the_warning_keeps_the_vm_on_the_desktop() {
    // An X server that admits only clients with its cookie, as a user's
    // session does: the daemon reads it from the file named in xauthority.
    let Some(xvfb) = started(Xvfb::start_with_cookie()) else { return };
    let cookie = xvfb.xauthority.clone().unwrap();
    let empty = tempfile::NamedTempFile::new().unwrap();
    assert!(activity_monitor::connect_x11(&xvfb.display, Some(empty.path())).is_err(), "no cookie, no entry");
    let windows = xvfb.watch_windows();
    let dir = tempfile::tempdir().unwrap();
    // A warning that outlasts the test: only a cancel can end it.
    let activity = format!(
        "source = \"x11\"\ndisplay = \"{}\"\nxauthority = \"{}\"\nidle_secs = 2\nwarn_secs = 3600",
        xvfb.display,
        cookie.display()
    );
    let spec = OfficeSpec { activity: Some(activity), ..OfficeSpec::default() };
    // The user works while the desktop boots: a TCG guest starved of CPU
    // on a loaded machine could pass for idle and move before it counts.
    let user = User::arrives(&xvfb);
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    drop(user);

    // A key sent to the warning alone (XSendEvent: the X server's idle
    // counter does not see it, so only the window's own cancel can act).
    let first = windows.wait_for_mapped(WARNING_TITLE, WAIT, "no warning on the idle user's display");
    let warned = wait_for_status(&office, "the status never said warned", |s| s["activity"]["state"] == "warned");
    assert_eq!(warned["vms"][0]["location"], "desktop", "{warned}");
    xvfb.xdotool(&["key", "--window", &first.to_string(), "Escape"]);
    windows.wait_for_gone(first, WAIT, "a key on the warning did not take it away");
    let log = office.log("desktop");
    assert!(log.contains("the user cancelled the move on the warning"), "{log}");

    // A full idle period later it warns again; a real click on it (at the
    // screen's centre, where it shows) cancels that one too.
    let second = windows.wait_for_mapped(WARNING_TITLE, WAIT, "no second warning after a full idle period");
    xvfb.xdotool(&["mousemove", "320", "240", "click", "1"]);
    windows.wait_for_gone(second, WAIT, "a click on the warning did not take it away");

    let status = wait_for_status(&office, "the status shows no cancel", |s| s["activity"]["state"] != "warned");
    assert_eq!(status["vms"][0]["location"], "desktop", "{status}");
    assert_eq!(status["activity"]["moved"], serde_json::json!([]), "{status}");
    let log = office.log("desktop");
    assert!(!log.contains("moved to the server"), "{log}");
}

#[test]
fn the_whole_loop_runs_in_one_daemon_idle_move_sleep_and_back_at_the_users_return() {
    let Some(xvfb) = xvfb() else { return };
    let windows = xvfb.watch_windows();
    let dir = tempfile::tempdir().unwrap();
    let (interface, address) = tests::office::DESKTOP_LAN;
    let power = format!(
        "sleep = \"emulated-s3\"\nwait_secs = 2.0\ninterface = \"{interface}\"\naddress = \"{address}\"\n\
         suspend_secs = 1.0\nresume_secs = 1.0"
    );
    let activity = format!("source = \"x11\"\ndisplay = \"{}\"\nidle_secs = 3\nwarn_secs = 3", xvfb.display);
    // Asleep the desktop reaches no server: the failover must wait long.
    let spec = OfficeSpec { power: Some(power), activity: Some(activity), failover_secs: 600, ..OfficeSpec::default() };
    // The user works while the desktop boots: a TCG guest starved of CPU
    // on a loaded machine could pass for idle and move before it counts.
    let user = User::arrives(&xvfb);
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    drop(user);

    windows.wait_for_mapped(WARNING_TITLE, WAIT, "no warning on the idle user's display");
    let asleep = wait_for_status(&office, "the desktop never slept with its VM away", |s| {
        s["activity"]["state"] == "away" && s["sleep"]["sleeps"].as_u64() >= Some(1)
    });
    eprintln!("asleep: {} {}", asleep["activity"], asleep["sleep"]);

    // The user returns to a sleeping desktop: the session ends, the VM comes home.
    let user = User::arrives(&xvfb);
    office.wait_until_home(WAIT, "the user came back but the VM did not");
    let back = wait_for_status(&office, "the desktop still sleeps with the user back", |s| {
        s["activity"]["state"] == "watching" && s["sleep"]["state"] == "not_sleeping"
    });
    eprintln!("back: {} {}", back["activity"], back["sleep"]);
    drop(user);
    let log = office.log("desktop");
    assert!(log.contains("power session over"), "{log}");
    assert!(log.contains("the user is back: home again"), "{log}");
}

#[test]
fn before_the_user_logs_in_the_monitor_waits_for_the_display_and_then_watches_it() {
    let Some(mut xvfb) = xvfb() else { return };
    // No X server yet, as at boot before the login screen's session.
    xvfb.stop();
    let dir = tempfile::tempdir().unwrap();
    // auto, with no input devices for evdev: X11, else evdev, else logind.
    let no_devices = dir.path().join("no-input-devices");
    std::fs::create_dir(&no_devices).unwrap();
    let activity = format!(
        "source = \"auto\"\ndisplay = \"{}\"\ninput_dir = \"{}\"\nidle_secs = 2\nwarn_secs = 3600",
        xvfb.display,
        no_devices.display()
    );
    let spec = OfficeSpec { activity: Some(activity), ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    // Where a logind answers for seat0 it stands in until the display comes.
    let waiting = wait_for_status(&office, "no word of the missing display", |s| {
        let activity = &s["activity"];
        (activity["state"] == "no_source" && activity["source_error"].is_string())
            || activity["source"].as_str().is_some_and(|source| source.starts_with("logind"))
    });
    if let Some(why) = waiting["activity"]["source_error"].as_str() {
        assert!(why.contains(&format!("x11 (x11: cannot connect to display {:?}", xvfb.display)), "{waiting}");
        assert!(why.contains("evdev (") && why.contains("logind ("), "{waiting}");
    }
    assert_eq!(waiting["vms"][0]["location"], "desktop", "{waiting}");

    // The user logs in: the monitor takes the display up (auto prefers it)
    // and warns on it.
    xvfb.restart();
    let windows = xvfb.watch_windows();
    let warning = windows.wait_for_mapped(WARNING_TITLE, WAIT, "no warning once the display came");
    let watching = wait_for_status(&office, "the status does not name the display", |s| {
        s["activity"]["source"] == format!("x11 {}", xvfb.display) && s["activity"]["warning_window"] == true
    });
    eprintln!("watching: {}", watching["activity"]);
    xvfb.xdotool(&["key", "--window", &warning.to_string(), "Escape"]);
    windows.wait_for_gone(warning, WAIT, "a key on the warning did not take it away");
}
