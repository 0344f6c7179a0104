//! A user's VM outlives its daemons, as a desktop virtualisation user
//! expects: restarting `jettison desktop` (an upgrade, a config change)
//! leaves the guest running and the next daemon takes its QEMU over;
//! stopping `jettison server` sends a consolidated VM home instead of
//! killing it; a host shutdown (`jettison save-all`, then the daemon's
//! stop) saves the VM and the next start resumes it where it was. The
//! guest's counter must never go back, and the VM must still move.
//!
//! Root only (namespaces, taps, FUSE); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::time::Duration;

use tests::office::{first_count, last_count, wait_for_count_above, Office, OfficeSpec};
use tests::{skip, BOOT_TIMEOUT, COUNT_TIMEOUT};

#[test]
fn daemon_restarts_and_a_host_shutdown_never_set_the_guest_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut office = match Office::build(dir.path(), &OfficeSpec::default()) {
        Ok(office) => office,
        Err(why) => return skip(why),
    };
    office.start_server();
    office.start_desktop();
    let serial = office.desktop_serial();
    let booted = wait_for_count_above(&serial, 0, BOOT_TIMEOUT);
    let qemu = office.desktop_qemu_pid().expect("QEMU runs the VM");

    // A desktop daemon restart: the same QEMU, the counter going on.
    office.stop_desktop();
    let during = wait_for_count_above(&serial, booted, COUNT_TIMEOUT);
    assert_eq!(office.desktop_qemu_pid(), Some(qemu), "QEMU outlives the daemon");
    office.start_desktop();
    assert_eq!(office.desktop_qemu_pid(), Some(qemu), "the new daemon takes the same QEMU over");
    assert!(office.list_line().contains("running"), "{}", office.list_line());
    assert!(office.log("desktop").contains("took over its running QEMU"), "{}", office.logs());
    let after = wait_for_count_above(&serial, during, COUNT_TIMEOUT);
    eprintln!("desktop daemon restarted: counter {booted} -> {during} -> {after}, QEMU pid {qemu} kept");

    // Still movable; a desktop daemon restart while it is on the server
    // leaves it there, running, and it comes home afterwards.
    office.consolidate_when_idle(Duration::from_secs(180));
    let left_at = last_count(&serial).unwrap();
    let server_serial = office.server_serial();
    let there = wait_for_count_above(&server_serial, left_at, COUNT_TIMEOUT);
    office.stop_desktop();
    office.start_desktop();
    let still_there = wait_for_count_above(&server_serial, there, COUNT_TIMEOUT);
    eprintln!("on the server across a desktop daemon restart: {left_at} -> {there} -> {still_there}");

    // A server daemon stop sends the VM home, running: nothing is lost.
    office.stop_server();
    office.wait_until_home(Duration::from_secs(60), "the VM went home when the server stopped");
    let gone_at = last_count(&server_serial).unwrap();
    let home = wait_for_count_above(&office.desktop_serial(), gone_at, COUNT_TIMEOUT);
    assert!(office.log("server").contains("the server daemon is stopping"), "{}", office.logs());
    eprintln!("server stopped: the VM went home, counter {gone_at} -> {home}");

    // A host shutdown: saved, the daemon stopped, QEMU gone; the next
    // start resumes it from its checkpoint where it was.
    office.start_server();
    let out = office.jettison(&["save-all", "--socket", office.desktop_socket().to_str().unwrap()]);
    assert!(out.status.success(), "save-all: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    let saved_at = last_count(&office.desktop_serial()).unwrap();
    office.stop_desktop();
    assert_eq!(office.desktop_qemu_pid(), None, "a saved VM's QEMU has ended");
    office.start_desktop();
    let resumed = wait_for_count_above(&office.desktop_serial(), saved_at, COUNT_TIMEOUT);
    let first = first_count(&office.desktop_serial()).unwrap();
    assert!(
        first > saved_at.saturating_sub(2),
        "resumed where it was, not rebooted: first count {first} after {saved_at}"
    );
    eprintln!("host shutdown and start: saved at {saved_at}, resumed at {first}, now {resumed}");

    // And it still moves.
    office.consolidate_when_idle(Duration::from_secs(180));
    let out = office.jettison_json(&["reintegrate", "vm1", "--socket", office.desktop_socket().to_str().unwrap()]);
    eprintln!("moved again: {out}");
}
