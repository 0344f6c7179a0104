//! The user's own desktop VM, as an office runs it: it boots from its own
//! qcow2 disk through the firmware, has a screen, USB input and a sound
//! card, moves to the server and back with them (its clock set after each
//! move), is reachable there through a ticketed SPICE console, reboots and
//! powers off like a PC, and its qcow2 image is sound after the round trip.
//! All through the real daemons and the `jettison` command, in network
//! namespaces, under TCG.
//!
//! Root only (namespaces, taps, FUSE); skipped with a reason elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_driver::GuestAgent;
use tests::office::{last_count, wait_for_count_above, BootDisk, Office, OfficeSpec, DESKTOP_TEXT, VM};
use tests::screen::Screenshot;
use tests::{BOOT_TIMEOUT, COUNT_TIMEOUT};

const PACE: Duration = Duration::from_secs(1);
const REPLY: Duration = Duration::from_secs(120);

fn office(dir: &Path, firmware: &'static str, format: &'static str) -> Option<Office> {
    office_of(dir, OfficeSpec { boot_disk: Some(BootDisk { firmware, format }), ..OfficeSpec::default() })
}

fn office_of(dir: &Path, spec: OfficeSpec) -> Option<Office> {
    let office = Office::started(dir, &OfficeSpec { fill_mib: 32, ..spec })?;
    wait_for_line(&office.desktop_serial(), "JTSCREEN ", BOOT_TIMEOUT, &office);
    Some(office)
}

fn wait_for_line(serial: &Path, prefix: &str, timeout: Duration, office: &Office) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(serial).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return line.trim_end().to_owned();
        }
        assert!(Instant::now() < deadline, "no {prefix:?} line in {}\n{}", serial.display(), office.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A screenshot through `socket`'s daemon, checked to show the guest's pattern.
fn screen_shows_pattern(office: &Office, socket: &Path, name: &str, dir: &Path) {
    let file = dir.join(format!("{name}.ppm"));
    let out = office.jettison(&["screenshot", VM, file.to_str().unwrap(), "--socket", socket.to_str().unwrap()]);
    assert!(out.status.success(), "screenshot {name}: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    let shot = Screenshot::read_ppm(&file).unwrap();
    assert!(
        shot.shows_test_pattern(),
        "{name}: the screen ({}x{}) does not show the guest's pattern",
        shot.width,
        shot.height
    );
    eprintln!("{name}: {}x{} screen shows the guest's pattern", shot.width, shot.height);
}

#[test]
fn a_firmware_booted_qcow2_vm_with_a_screen_moves_and_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    // A qcow2 overlay over a base image: the base must never be written.
    let Some(office) = office(dir.path(), "bios", "qcow2-backed") else { return };
    let base = dir.path().join(tests::BACKING_IMAGE);
    let base_before = std::fs::read(&base).unwrap();
    let desktop = office.desktop_socket();
    screen_shows_pattern(&office, &desktop, "on the desktop", dir.path());
    let client = office.connect_client(PACE);
    client.wait_for(2, REPLY);
    let saved = client.command("save before", REPLY);
    assert!(saved.starts_with("saved "), "{saved}");

    // Put the guest's clock an hour behind: the move must set it right.
    let agent_socket = office.desktop_agent_socket();
    let mut agent = GuestAgent::connect(&agent_socket).expect("the guest runs qemu-ga");
    assert_sound_card_answers(&mut agent, "on the desktop");
    agent.set_time_to(host_nanos() - 3_600_000_000_000).unwrap();
    assert!(host_nanos().abs_diff(agent.time().unwrap()) > 3_500_000_000_000);
    drop(agent);
    let out = office.consolidate_when_idle(Duration::from_secs(180));
    eprintln!("consolidated: {out}");
    let left_at = last_count(&office.desktop_serial()).unwrap();
    let server_agent = office.server_agent_socket();
    wait_until_clock_set(&server_agent, &office, "server");
    let mut agent = GuestAgent::connect(&server_agent).expect("the guest runs qemu-ga");
    assert_sound_card_answers(&mut agent, "on the server");
    // Put it an hour behind again: coming home must set it right too.
    agent.set_time_to(host_nanos() - 3_600_000_000_000).unwrap();
    drop(agent);
    wait_for_count_above(&office.server_serial(), left_at, COUNT_TIMEOUT);
    screen_shows_pattern(&office, &office.server_socket(), "on the server", dir.path());

    // The remote console: the ticket `jettison view` hands out opens it; another does not.
    let out = office.jettison(&["view", VM, "--print", "--socket", desktop.to_str().unwrap()]);
    assert!(out.status.success(), "view --print: {}", String::from_utf8_lossy(&out.stderr));
    let file = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |key: &str| file.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
    let addr: SocketAddr = format!("{}:{}", field("host"), field("port")).parse().unwrap();
    let ticket = field("password");
    let check = |ticket: String| {
        remote_wakeup::netns::run_in(Some(office.host(2)), move || tests::spice::ticket_accepted(addr, &ticket))
            .unwrap()
            .unwrap()
    };
    assert!(check(ticket.clone()), "the console refused its own ticket");
    assert!(!check(format!("{ticket}x")), "the console took a wrong ticket");
    assert!(!check(String::new()), "the console took an empty ticket");

    // The guest writes its disk on the server; it comes home with it.
    let saved = client.command("save onserver", REPLY);
    assert!(saved.starts_with("saved "), "{saved}");
    let at = last_count(&office.server_serial()).unwrap();
    let back = office.jettison_json(&["reintegrate", VM, "--socket", desktop.to_str().unwrap()]);
    eprintln!("reintegrated: {back}");
    assert!(back["dirty_blocks"].as_u64().unwrap() > 0, "{back}");
    wait_for_count_above(&office.desktop_serial(), at, COUNT_TIMEOUT);
    wait_until_clock_set(&agent_socket, &office, "desktop");
    screen_shows_pattern(&office, &desktop, "after reintegration", dir.path());
    let cat = client.command("cat onserver", REPLY);
    assert!(cat.starts_with("cat ") && !cat.ends_with("missing"), "{cat}");
    let cat = client.command("cat desktop-only", REPLY);
    assert!(cat.contains(DESKTOP_TEXT), "{cat}");
    let (exchanges, broke) = client.finish();
    assert!(broke.is_none(), "the client's connection broke: {broke:?}");
    eprintln!("{} exchanges on one connection", exchanges.len());

    // Power off through its power button (ACPI), check the image, start it again.
    let out = office.jettison(&["shutdown", VM, "--timeout", "120", "--socket", desktop.to_str().unwrap()]);
    assert!(out.status.success(), "shutdown: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    assert!(office.list_line().contains("off"), "{}", office.list_line());
    let check = Command::new("qemu-img").arg("check").arg(&office.disk).output().unwrap();
    assert!(check.status.success(), "qemu-img check: {}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("No errors were found"));
    assert!(std::fs::read(&base).unwrap() == base_before, "the backing file below the VM's qcow2 was written");
    let info = Command::new("qemu-img").args(["info", "-U"]).arg(&office.disk).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains(&format!("backing file: {}", base.display())), "the overlay lost its backing file: {info}");
    let out = office.jettison(&["start", VM, "--socket", desktop.to_str().unwrap()]);
    assert!(out.status.success(), "start: {}", String::from_utf8_lossy(&out.stderr));
    let again = Instant::now();
    wait_for_count_above(&office.desktop_serial(), 0, BOOT_TIMEOUT);
    eprintln!("started again, counting after {:.1} s", again.elapsed().as_secs_f64());
}

#[test]
fn a_uefi_booted_vm_moves_and_comes_back_with_its_screen_and_variable_store() {
    let dir = tempfile::tempdir().unwrap();
    let Some(office) = office(dir.path(), "uefi", "raw") else { return };
    let vars = dir.path().join("desktop/state").join(VM).join("efivars.fd");
    assert!(vars.is_file(), "the VM has no variable store of its own at {}", vars.display());
    let desktop = office.desktop_socket();
    screen_shows_pattern(&office, &desktop, "UEFI, on the desktop", dir.path());
    office.consolidate_when_idle(Duration::from_secs(240));
    let left_at = last_count(&office.desktop_serial()).unwrap();
    wait_for_count_above(&office.server_serial(), left_at, COUNT_TIMEOUT);
    screen_shows_pattern(&office, &office.server_socket(), "UEFI, on the server", dir.path());
    let server_agent = office.server_agent_socket();
    wait_until_clock_set(&server_agent, &office, "server");
    let mut agent = GuestAgent::connect(&server_agent).expect("the guest runs qemu-ga");
    assert_sound_card_answers(&mut agent, "UEFI, on the server");
    // The USB keyboard and tablet, as the guest's input layer knows them.
    let inputs = agent.run("cat", &["/proc/bus/input/devices"]).unwrap();
    for device in ["QEMU USB Keyboard", "QEMU USB Tablet"] {
        assert!(inputs.contains(device), "UEFI, on the server: no {device} in the guest:\n{inputs}");
    }
    drop(agent);
    let at = last_count(&office.server_serial()).unwrap();
    let back = office.jettison_json(&["reintegrate", VM, "--socket", desktop.to_str().unwrap()]);
    eprintln!("reintegrated: {back}");
    wait_for_count_above(&office.desktop_serial(), at, COUNT_TIMEOUT);
    screen_shows_pattern(&office, &desktop, "UEFI, after reintegration", dir.path());
    assert!(vars.is_file(), "the variable store went away");
}

#[test]
fn reboot_and_poweroff_inside_the_guest_behave_like_a_pc_on_either_host() {
    let dir = tempfile::tempdir().unwrap();
    // Two vCPUs and a CPU model named for the office, as a desktop VM has.
    let boot_disk = Some(BootDisk { firmware: "bios", format: "raw" });
    let spec = OfficeSpec { boot_disk, vcpus: 2, cpu_model: Some("Nehalem"), ..OfficeSpec::default() };
    let Some(office) = office_of(dir.path(), spec) else { return };
    let desktop = office.desktop_socket();
    let serial = office.desktop_serial();
    let pid = office.desktop_qemu_pid().unwrap();
    let agent_socket = office.desktop_agent_socket();
    let mut agent = GuestAgent::connect(&agent_socket).expect("the guest runs qemu-ga");
    assert_eq!(agent.run("nproc", &[]).unwrap().trim(), "2", "the guest's vCPUs");
    let cpuinfo = agent.run("cat", &["/proc/cpuinfo"]).unwrap();
    assert!(cpuinfo.contains("Nehalem"), "the guest's CPU is not the office's model:\n{cpuinfo}");
    drop(agent);

    // A reboot on the desktop: the same QEMU boots the guest again; the log keeps both boots.
    let client = office.connect_client(PACE);
    let reply = client.command("reboot", REPLY);
    assert!(reply.starts_with("rebooting"), "{reply}");
    drop(client.finish());
    wait_until(
        || std::fs::read_to_string(&serial).unwrap_or_default().matches("JTSCREEN ").count() >= 2,
        "a second boot",
        &office,
    );
    assert_eq!(office.desktop_qemu_pid(), Some(pid), "a reboot keeps the VM's QEMU");
    assert!(office.list_line().contains("running"), "{}", office.list_line());

    // A reboot on the server: it comes up again there, and still goes home.
    office.consolidate_when_idle(Duration::from_secs(240));
    let server_serial = office.server_serial();
    wait_for_count_above(&server_serial, 0, COUNT_TIMEOUT);
    let client = office.connect_client(PACE);
    let reply = client.command("reboot", REPLY);
    assert!(reply.starts_with("rebooting"), "{reply}");
    drop(client.finish());
    wait_until(
        || {
            std::fs::read_to_string(&server_serial).unwrap_or_default().matches("JTSCREEN ").count() >= 1
                && std::fs::read_to_string(&server_serial).unwrap_or_default().contains("JTREADY")
        },
        "a boot on the server",
        &office,
    );
    let status = office.jettison_json(&["status", "--daemon", desktop.to_str().unwrap()]);
    assert_eq!(status["vms"][0]["location"], "server", "{status}");
    // The server runs the same machine: the office's model, both vCPUs.
    let server_qemu = office.server_qemu_pid().expect("QEMU runs the VM on the server");
    let line = std::fs::read(format!("/proc/{server_qemu}/cmdline")).unwrap();
    let line: Vec<String> = line.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert!(line.windows(2).any(|w| w == ["-cpu", "Nehalem"]), "{line:?}");
    assert!(line.windows(2).any(|w| w == ["-smp", "2"]), "{line:?}");

    // A poweroff inside the guest on the server: it goes home (with its disk
    // writes) and stays off there; `start` boots it.
    wait_for_count_above(&server_serial, 0, COUNT_TIMEOUT);
    let client = office.connect_client(PACE);
    let reply = client.command("poweroff", REPLY);
    assert!(reply.starts_with("powering-off"), "{reply}");
    drop(client.finish());
    wait_until(
        || office.list_line().contains("off"),
        "the VM to be home and off after its guest powered off on the server",
        &office,
    );
    assert!(office.log("server").contains("its guest powered off"), "{}", office.logs());
    start_again(&office);

    // The desk's viewer (`jettison view --follow`, here with a stand-in
    // remote-viewer that holds the screen's socket until QEMU closes it).
    let (mut follow, opened) = follow_the_screen(&office, dir.path());
    wait_until(|| opened().len() == 1, "the viewer to open the screen", &office);

    // A poweroff inside the guest on the desktop: the same.
    let client = office.connect_client(PACE);
    let reply = client.command("poweroff", REPLY);
    assert!(reply.starts_with("powering-off"), "{reply}");
    drop(client.finish());
    wait_until(|| office.list_line().contains("off"), "the VM to be off after its guest powered off", &office);
    assert_eq!(office.desktop_qemu_pid(), None, "QEMU ended");
    assert!(follow.try_wait().unwrap().is_none(), "view --follow gave up when the VM went off");
    start_again(&office);
    // Started again: the desk shows it again, by itself.
    wait_until(|| opened().len() == 2, "the viewer to open the screen again after start", &office);
    assert!(opened().iter().all(|args| args.ends_with("spice.sock")), "{:?}", opened());
    follow.kill().unwrap();
    follow.wait().unwrap();

    // Its serial console, interactive, through `jettison console`.
    let run_dir = dir.path().join("desktop/run");
    let mut console = Command::new(tests::jettison_binary())
        .args(["console", VM, "--run-dir", run_dir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(console.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("JTCOUNT") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut lines, &mut line).unwrap() > 0, "the console ended");
    }
    std::io::Write::write_all(&mut console.stdin.take().unwrap(), b"\x1d").unwrap();
    assert!(console.wait().unwrap().success(), "console did not leave on Ctrl-]");
    eprintln!("the serial console showed {}", line.trim());

    // `destroy` pulls the plug: QEMU gone at once, the VM off.
    let out = office.jettison(&["destroy", VM, "--socket", desktop.to_str().unwrap()]);
    assert!(out.status.success(), "destroy: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    assert!(office.list_line().contains("off"), "{}", office.list_line());
    assert_eq!(office.desktop_qemu_pid(), None, "destroy ended QEMU");

    // The first QEMU run's serial log, with both of its boots, is kept
    // beside the later runs' (rotated, not truncated).
    let kept = (1..=5)
        .map(|n| serial.with_extension(format!("log.{n}")))
        .find(|log| std::fs::read_to_string(log).unwrap_or_default().matches("JTSCREEN ").count() >= 2);
    assert!(kept.is_some(), "no earlier run's serial log keeps the first run's two boots");
    eprintln!("the first run's serial log was kept as {}", kept.unwrap().display());
}

/// Runs `jettison view VM --follow` on the desktop's socket with a
/// stand-in `remote-viewer` first on its PATH, which records its arguments
/// and holds a connection to the screen's socket until QEMU closes it (as
/// the real viewer ends when its SPICE server goes away). Returns the
/// process and what reads the arguments of each viewer opened so far.
fn follow_the_screen(office: &Office, dir: &Path) -> (std::process::Child, impl Fn() -> Vec<String>) {
    let bin = dir.join("viewer-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("viewers.log");
    let stub = bin.join("remote-viewer");
    std::fs::write(
        &stub,
        format!(
            "#!/usr/bin/python3\nimport socket, sys\nopen({log:?}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n\
             s = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[-1].removeprefix('spice+unix://'))\n\
             while s.recv(4096):\n    pass\n",
            log = log.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let follow = Command::new(tests::jettison_binary())
        .args(["view", VM, "--follow", "--socket", office.desktop_socket().to_str().unwrap()])
        .env("PATH", path)
        .spawn()
        .unwrap();
    let opened = move || std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_owned).collect();
    (follow, opened)
}

/// `jettison start`, and the guest counting again.
fn start_again(office: &Office) {
    let out = office.jettison(&["start", VM, "--socket", office.desktop_socket().to_str().unwrap()]);
    assert!(out.status.success(), "start: {}\n{}", String::from_utf8_lossy(&out.stderr), office.logs());
    wait_until(
        || std::fs::read_to_string(office.desktop_serial()).unwrap_or_default().contains("JTCOUNT"),
        "the guest to count after start",
        office,
    );
}

fn host_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The guest's sound card, seen from inside the guest: the ICH9 HD Audio
/// controller at 00:1b.0. Its configuration space is read from the device
/// itself (not from what the guest's kernel remembers of it), so after a
/// move this is the QEMU of the host the VM now runs on answering.
fn assert_sound_card_answers(agent: &mut GuestAgent, where_: &str) {
    let config = agent.run("od", &["-An", "-tx1", "-N12", "/sys/bus/pci/devices/0000:00:1b.0/config"]).unwrap();
    let bytes: Vec<&str> = config.split_whitespace().collect();
    // Intel (8086), ICH9 HD Audio (293e); class 04 (multimedia), subclass 03 (audio).
    assert_eq!(&bytes[..4], ["86", "80", "3e", "29"], "{where_}: no ICH9 HD Audio at 00:1b.0: {config}");
    assert_eq!(&bytes[10..12], ["03", "04"], "{where_}: 00:1b.0 is not an audio device: {config}");
    eprintln!("{where_}: the guest's sound card answers at 00:1b.0");
}

/// Waits until `daemon` says it set the guest's clock, then checks through
/// the agent at `socket` (one client at a time: not before) that the guest
/// has the host's time (within 2 s), which only the daemon's
/// guest-set-time after the move gives it.
fn wait_until_clock_set(socket: &Path, office: &Office, daemon: &str) {
    wait_until(|| office.log(daemon).contains("guest clock set through its agent"), "the clock set", office);
    let guest = GuestAgent::connect(socket).and_then(|mut agent| agent.time()).unwrap();
    assert!(guest.abs_diff(host_nanos()) < 2_000_000_000, "the guest's clock is {guest}, the host's {}", host_nanos());
    eprintln!("the guest's clock was set after the move ({daemon})");
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str, office: &Office) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain for {what}\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}
