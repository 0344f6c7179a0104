//! A user's VM outlives its daemons, as a desktop virtualisation user
//! expects: restarting `jettison desktop` (an upgrade, a config change)
//! leaves the guest running and the next daemon takes its QEMU over;
//! restarting `jettison server` leaves a consolidated VM running there
//! (its QEMU and its storage process) and the next daemon takes both over;
//! a server host's shutdown (`jettison save-all` on the server) sends it
//! home; a desktop host's shutdown (`jettison save-all`, then the daemon's
//! stop) saves the VM and the next start resumes it where it was. The
//! guest's counter must never go back, and the VM must still move.
//!
//! Root only (namespaces, taps, FUSE); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::path::Path;
use std::time::Duration;

use tests::office::{first_count, last_count, wait_for_count_above, LineClient, Office, OfficeSpec};
use tests::{skip, BOOT_TIMEOUT, COUNT_TIMEOUT};

/// How long the test client waits for a reply.
const REPLY: Duration = Duration::from_secs(120);

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
    assert!(tests::runs_under_seccomp_filter(qemu), "the desktop's QEMU runs without its sandbox");
    tests::assert_runs_as_qemu_user(qemu, "desktop");

    // A reload (SIGHUP, `systemctl reload`) checks the file again and ends
    // nothing; a broken file is named and the running daemon goes on.
    office.reload_desktop();
    wait_for_log(&office, "desktop", "SIGHUP: the configuration is valid");
    // It reads the enrolled peers again: the office's server, one key.
    wait_for_log(&office, "desktop", "SIGHUP: the enrolled peers were read again: 1 key");
    let config = dir.path().join("desktop.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("memory_mib = ", "memory_mib = -")).unwrap();
    office.reload_desktop();
    wait_for_log(&office, "desktop", "SIGHUP: the configuration would not load");
    std::fs::write(&config, good).unwrap();
    assert!(office.list_line().contains("running"), "the daemon still serves: {}", office.list_line());

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
    let server_qemu = office.server_qemu_pid().expect("QEMU runs the VM on the server");
    assert!(tests::runs_under_seccomp_filter(server_qemu), "the server's QEMU runs without its sandbox");
    tests::assert_runs_as_qemu_user(server_qemu, "server");
    office.stop_desktop();
    office.start_desktop();
    let still_there = wait_for_count_above(&server_serial, there, COUNT_TIMEOUT);
    eprintln!("on the server across a desktop daemon restart: {left_at} -> {there} -> {still_there}");

    // A server daemon restart: the same QEMU and storage process, the
    // guest counting on through it, and the next daemon serving it.
    let storage = storage_pid(&office);
    office.stop_server();
    assert_eq!(office.server_qemu_pid(), Some(server_qemu), "the server's QEMU outlives its daemon");
    assert_eq!(storage_pid(&office), storage, "the VM's storage process outlives the daemon");
    let stopped_at = last_count(&server_serial).unwrap();
    office.start_server();
    assert_eq!(office.server_qemu_pid(), Some(server_qemu), "the new server daemon takes the same QEMU over");
    assert!(office.log("server").contains("took over its running QEMU and storage"), "{}", office.logs());
    let over = wait_for_count_above(&server_serial, stopped_at, COUNT_TIMEOUT);
    // A reload reaches the VM's storage process too (its fetches use the
    // enrolled peers): a failure there would be logged as a SIGHUP error.
    office.reload_server();
    wait_for_log(&office, "server", "SIGHUP: the configuration is valid");
    assert!(!office.log("server").contains("ERROR"), "{}", office.logs());
    let hosted = office.jettison_json(&["status", "--daemon", office.server_socket().to_str().unwrap()]);
    assert_eq!(hosted["vms"][0]["on_server"]["state"], "running", "{hosted}");
    eprintln!("server daemon restarted: counter {stopped_at} -> {over}, QEMU pid {server_qemu} kept");

    // The server host shuts down: `save-all` there sends the VM home,
    // running; nothing is lost.
    let gone_at = last_count(&server_serial).unwrap();
    let out = office.jettison(&["save-all", "--socket", office.server_socket().to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("sent home: desktop/vm1"), "save-all: {said}\n{}", office.logs());
    office.wait_until_home(Duration::from_secs(60), "the VM went home when the server host shut down");
    let home = wait_for_count_above(&office.desktop_serial(), gone_at, COUNT_TIMEOUT);
    assert!(office.log("server").contains("the server host shuts down"), "{}", office.logs());
    assert_eq!(storage_pid(&office), None, "the storage process ended with the VM's stay");
    eprintln!("server host shut down: the VM went home, counter {gone_at} -> {home}");

    // A desktop host shutdown: saved, the daemon stopped, QEMU gone; the
    // next start resumes it from its checkpoint where it was.
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

#[test]
fn a_vm_that_cannot_start_says_why_in_qemus_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut office = match Office::build(dir.path(), &OfficeSpec::default()) {
        Ok(office) => office,
        Err(why) => return skip(why),
    };
    // A kernel file that is no kernel: the configuration is sound, QEMU refuses.
    let bad = dir.path().join("not-a-kernel");
    std::fs::write(&bad, "not a kernel\n").unwrap();
    let config = dir.path().join("desktop.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("kernel = ") { format!("kernel = \"{}\"", bad.display()) } else { l.to_owned() })
        .collect();
    std::fs::write(&config, text.join("\n")).unwrap();
    office.start_server();
    office.start_desktop();
    // The daemon answers `list` once it has tried to start its VMs (its
    // socket accepts connections earlier, while it starts them).
    let line = office.list_line();
    // QEMU's own last words, e.g. "qemu: linux kernel too old to load a ram disk".
    let qemu_log = std::fs::read_to_string(dir.path().join("desktop/run/vm1/qemu.log")).unwrap();
    let said = qemu_log.lines().rev().find(|l| l.starts_with("qemu")).expect("QEMU said why").trim().to_owned();
    assert!(line.contains("stopped") && line.contains(&said), "jettison list: {line}\n{}", office.logs());
    let status = office.jettison_json(&["status", "--daemon", office.desktop_socket().to_str().unwrap()]);
    let error = status["vms"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("cannot boot it") && error.contains(&said), "{status}");
    assert!(office.log("desktop").contains(&said), "{}", office.logs());
    // And `start` says the same, at once.
    let out = office.jettison(&["start", "vm1", "--socket", office.desktop_socket().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&said), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Stopping the server daemon while its guest waits for pages from a
/// desktop that is gone (its daemon down, the host off) must not hang: it
/// exits at once, leaving the guest waiting in its QEMU and storage
/// process; once both daemons are back, the guest gets its pages, runs on,
/// on the server, and still comes home. (Seen in CI: a server daemon that
/// retried such a fetch for ever and never exited.)
#[test]
fn a_server_daemon_stops_while_its_guest_waits_for_a_desktop_that_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut office, client, there)) = guest_waiting_for_its_absent_desktop(dir.path(), &OfficeSpec::default())
    else {
        return;
    };
    let server_serial = office.server_serial();
    let qemu = office.server_qemu_pid().expect("QEMU runs the VM on the server");
    office.stop_server();
    assert!(office.log("server").contains("left running for the next start"), "{}", office.logs());
    assert_eq!(office.server_qemu_pid(), Some(qemu), "the waiting guest's QEMU outlives the daemon");
    assert!(storage_pid(&office).is_some(), "the waiting guest's storage process outlives the daemon");

    // The server daemon comes back first, its guest still stuck in the
    // fetch (under TCG the waiting vCPU holds QEMU's main loop, so QMP
    // does not answer): it is ready at once, serves, and counts the VM as
    // running; it reaches QEMU once the guest can go on.
    office.start_server();
    let hosted = office.jettison_json(&["status", "--daemon", office.server_socket().to_str().unwrap()]);
    assert_eq!(hosted["vms"][0]["on_server"]["state"], "running", "{hosted}");
    // Then the desktop: it serves its pages again, and the guest, on the
    // server all along, goes on.
    office.start_desktop();
    let waited_at = last_count(&server_serial).unwrap();
    let going = wait_for_count_above(&server_serial, waited_at, COUNT_TIMEOUT);
    assert_eq!(office.server_qemu_pid(), Some(qemu), "the same QEMU runs the guest");
    let _ = client.finish();
    let out = office.jettison_json(&["reintegrate", "vm1", "--socket", office.desktop_socket().to_str().unwrap()]);
    let home = wait_for_count_above(&office.desktop_serial(), going, COUNT_TIMEOUT);
    eprintln!("server stopped with its desktop gone; the VM counted {there}, waited at {waited_at}, went on to {going} on the server, and came home at {home}: {out}");
}

#[test]
fn a_checkpoint_held_up_by_a_guest_waiting_for_its_desktop_leaves_its_figures_in_the_servers_status() {
    let dir = tempfile::tempdir().unwrap();
    let spec = OfficeSpec { checkpoint_every_secs: Some(5), ..OfficeSpec::default() };
    // Under TCG the guest's vCPU, waiting in the fetch, holds QEMU's main
    // loop, so the next checkpoint waits too, holding the VM.
    let Some((mut office, client, there)) = guest_waiting_for_its_absent_desktop(dir.path(), &spec) else { return };
    let server_serial = office.server_serial();
    let checkpoints = |what: &str| office.log("server").matches(what).count();
    let deadline = std::time::Instant::now() + COUNT_TIMEOUT;
    while checkpoints("taking a checkpoint") <= checkpoints("checkpoint taken") {
        assert!(std::time::Instant::now() < deadline, "no checkpoint started\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Meanwhile the server reports it as running, with its figures.
    let hosted = office.jettison_json(&["status", "--daemon", office.server_socket().to_str().unwrap()]);
    let on_server = &hosted["vms"][0]["on_server"];
    assert_eq!(on_server["state"], "running", "{hosted}");
    assert!(on_server["memory"]["pages_fetched"].as_u64() > Some(0), "{hosted}");
    let metrics = office.scrape(1);
    assert!(metrics.value("jettison_vm_pages_fetched_total{desktop=\"desktop\",vm=\"vm1\"}") > 0.0);
    assert!(
        checkpoints("taking a checkpoint") > checkpoints("checkpoint taken"),
        "the checkpoint ended while the status was read: the test proves nothing\n{}",
        office.logs()
    );
    // The desktop comes back: the guest and the checkpoint go on.
    office.start_desktop();
    let waited_at = last_count(&server_serial).unwrap();
    let going = wait_for_count_above(&server_serial, waited_at, COUNT_TIMEOUT);
    wait_for_log(&office, "server", "checkpoint taken");
    let _ = client.finish();
    office.jettison_json(&["reintegrate", "vm1", "--socket", office.desktop_socket().to_str().unwrap()]);
    let home = wait_for_count_above(&office.desktop_serial(), going, COUNT_TIMEOUT);
    eprintln!(
        "the VM counted {there} on the server, waited at {waited_at} through a checkpoint, and came home at {home}"
    );
}

/// The office of `spec` with its VM consolidated once idle, then the
/// desktop daemon stopped and the guest reading what it had left alone
/// (pages only the desktop has), so that it waits in a fetch; with the
/// client and the count the guest had reached on the server. None where
/// the office cannot run (skipped with the reason).
fn guest_waiting_for_its_absent_desktop(dir: &Path, spec: &OfficeSpec) -> Option<(Office, LineClient, u64)> {
    let mut office = Office::started(dir, spec)?;
    let client = office.connect_client(Duration::from_secs(1));
    client.wait_for(2, REPLY);
    office.consolidate_when_idle(Duration::from_secs(180));
    let there = wait_for_count_above(&office.server_serial(), 0, COUNT_TIMEOUT);
    office.stop_desktop();
    client.send("readall");
    let deadline = std::time::Instant::now() + COUNT_TIMEOUT;
    while !office.log("server").contains("fetch failed; retrying") {
        assert!(std::time::Instant::now() < deadline, "the guest never waited for its desktop\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    Some((office, client, there))
}

/// The pid of the VM's storage process on the server, if it runs.
fn storage_pid(office: &Office) -> Option<u32> {
    let pid_file = office.server_vm_run().join("storage.pid");
    let pid: u32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Waits until `which` daemon's log holds `text`.
fn wait_for_log(office: &Office, which: &str, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !office.log(which).contains(text) {
        assert!(std::time::Instant::now() < deadline, "no {text:?} in the {which} log\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}
