//! The `jettison` binary as a user runs it: pairing, status output, and
//! error messages that name the thing and what to do.
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::process::{Command, Output};

fn jettison(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jettison")).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Gives a host under `dir` its key and enrolls one peer: returns the
/// `--host-key` and `--peers` options naming them.
fn host_files(dir: &std::path::Path) -> [String; 4] {
    let key = dir.join("host.key");
    let peers = dir.join("peers");
    assert!(jettison(&["pair", "--key", key.to_str().unwrap()]).status.success());
    let peer = jettison(&["pair", "--key", dir.join("peer.key").to_str().unwrap()]);
    let peer_key = String::from_utf8_lossy(&peer.stdout).trim().to_owned();
    assert!(jettison(&["enroll", "server", &peer_key, "--peers", peers.to_str().unwrap()]).status.success());
    ["--host-key".into(), key.to_str().unwrap().into(), "--peers".into(), peers.to_str().unwrap().into()]
}

#[test]
fn pair_makes_a_private_key_once_and_enroll_trusts_a_peer_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh host has no /etc/jettison: the directory is made.
    let key = dir.path().join("etc/jettison/host.key");
    let out = jettison(&["pair", "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(key.parent().unwrap()).unwrap().mode() & 0o777, 0o755);
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 64, "stdout is the public key alone: {public}");
    assert_ne!(public, std::fs::read_to_string(&key).unwrap().trim(), "the public key is not the private one");
    assert!(text(&out).contains(&format!("jettison enroll THIS-HOST-NAME {public}")), "{}", text(&out));
    // Run again, it keeps the key and prints the same public key.
    let again = jettison(&["pair", "--key", key.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), public);
    assert!(text(&again).contains("already has its key"), "{}", text(&again));

    let peers = dir.path().join("etc/jettison/peers");
    let enroll = |name: &str, key: &str| jettison(&["enroll", name, key, "--peers", peers.to_str().unwrap()]);
    let out = enroll("desk1", &public);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(peers.join("desk1.pub")).unwrap().trim(), public);
    let out = enroll("desk2", &public);
    assert!(!out.status.success() && text(&out).contains("enrolled as desk1 and as desk2"), "{}", text(&out));
    let out = enroll("../etc", &public);
    assert!(!out.status.success() && text(&out).contains("not a valid host name"), "{}", text(&out));
    let out = enroll("desk3", "beef");
    assert!(!out.status.success() && text(&out).contains("KEY argument does not hold a key"), "{}", text(&out));
}

#[test]
fn status_prints_a_line_per_vm_and_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let stats = memtap::RamStats {
        vm: "vm1".into(),
        ram_bytes: 256 << 20,
        faults: 1086,
        read_requests: 1086,
        remote_fetches: 258,
        pages_fetched: 4030,
        bytes_fetched: 4030 * 4096,
        prefetch_hits: 815,
        prefetch_misses: 258,
        dirty_pages: 7,
        discarded_pages: 3,
        ..memtap::RamStats::default()
    };
    std::fs::write(dir.path().join("vm1.stats"), serde_json::to_vec(&stats).unwrap()).unwrap();
    std::fs::write(dir.path().join("vm1.ram"), b"").unwrap();
    let no_disks = dir.path().join("no-disks");
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--memtap", dir.path().to_str().unwrap(), "--disks", no_disks.to_str().unwrap()];
        args.extend_from_slice(extra);
        jettison(&args)
    };
    let out = status(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        line.trim(),
        "vm1: on the server: 15.7 MiB of 256.0 MiB RAM fetched (4030 pages), 0 zero pages served without a fetch, \
         0.0 MiB dirty (7 pages), 3 pages freed by the guest (discarded); running"
    );
    let out = status(&["--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    tests::check_status_schema(&parsed, None);
    assert_eq!((parsed["schema_version"].as_u64(), parsed["source"].as_str()), (Some(1), Some("standalone")));
    let memory = &parsed["vms"][0]["on_server"]["memory"];
    assert_eq!(memory["pages_fetched"], 4030, "{parsed}");
    assert_eq!(memory["fetched_mib"], 4030.0 * 4096.0 / 1048576.0, "{parsed}");
    assert_eq!(memory["dirty_pages"], 7, "{parsed}");
    assert_eq!(memory["discarded_pages"], 3, "{parsed}");
    assert_eq!(parsed["vms"][0]["on_server"]["disk"], serde_json::Value::Null, "{parsed}");
}

#[test]
fn failures_have_distinct_exit_statuses_and_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("desktop.sock");
    let json_error = |args: &[&str], status: i32, kind: &str| {
        let out = jettison(args);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", text(&out));
        let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out)));
        tests::check_status_schema(&parsed, Some("error"));
        assert_eq!(parsed["error"]["kind"], kind, "{parsed}");
        parsed["error"]["message"].as_str().unwrap().to_owned()
    };
    let said = json_error(&["status", "--daemon", socket.to_str().unwrap(), "--json"], 4, "unreachable");
    assert!(said.contains("desktop.sock") && said.contains("jettison desktop"), "{said}");
    json_error(&["consolidate", "vm1", "--socket", socket.to_str().unwrap(), "--json"], 4, "unreachable");
    let said = json_error(&["status", "--bogus", "--json"], 2, "usage");
    assert!(said.contains("--bogus"), "{said}");
    json_error(&["consolidate", "../vm", "--json"], 2, "usage");
    // Without --json: the same statuses, the text on stderr.
    let out = jettison(&["status", "--daemon", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon"));
    let config = dir.path().join("desktop.toml");
    std::fs::write(&config, "name = \"d\"\nno_such_setting = 1\n").unwrap();
    let out = jettison(&["desktop", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("desktop.toml"), "{}", text(&out));
    // The statuses are in the manual.
    let help = String::from_utf8_lossy(&jettison(&["status", "--help"]).stdout).into_owned();
    assert!(help.contains("5 the VM is not idle") && help.contains("6 no room on the server"), "{help}");
}

#[test]
fn errors_name_the_thing_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere");
    let out = jettison(&["status", "--memtap", nowhere.to_str().unwrap(), "--disks", nowhere.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is memtap or cownetdisk running"), "{}", text(&out));

    let serve = |keys: &[&str], ram: &str| {
        let mut args = vec!["memserv", "--vm", "vm1", "--ram", ram, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(keys);
        jettison(&args)
    };
    let missing_key = dir.path().join("none.key");
    let out = serve(&["--host-key", missing_key.to_str().unwrap()], "/nonexistent");
    assert!(!out.status.success());
    assert!(text(&out).contains("jettison pair --key"), "{}", text(&out));
    // An install of the release with one office key is told how to move on.
    let out = serve(&["--key", missing_key.to_str().unwrap()], "/nonexistent");
    assert!(!out.status.success());
    assert!(text(&out).contains("one office key shared by every host is no longer used"), "{}", text(&out));

    let files = host_files(&dir.path().join("host"));
    let keys: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = serve(&keys, "/nonexistent/vm1.ram");
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("/nonexistent/vm1.ram") && t.contains("is the VM stopped"), "{t}");

    let out = jettison(&["memtap", "--vm", "vm1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("NAME=VALUE"), "{}", text(&out));

    let memtap = |extra: &[&str]| {
        let mut args = vec!["memtap"];
        args.extend_from_slice(&keys);
        args.extend_from_slice(extra);
        jettison(&args)
    };
    let out = memtap(&["--vm", "vm1=127.0.0.1:1", "--wake-mac", "vm2=02:00:00:00:00:01"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--wake-mac names VM \"vm2\", which no --vm names"), "{}", text(&out));
    let out = memtap(&["--vm", "vm1=127.0.0.1:1", "--wake-mac", "vm1=not-a-mac"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--wake-mac for vm1"), "{}", text(&out));
}

#[test]
fn memtap_stops_on_sigterm_while_memserv_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let keys = host_files(dir.path());
    let mut args = vec!["memtap", "--vm", "vm1=desk1"];
    args.extend(keys.iter().map(String::as_str));
    let out = jettison(&args);
    assert!(!out.status.success() && text(&out).contains("HOST:PORT"), "an address without a port: {}", text(&out));
    // Nothing listens on port 1: memtap retries the connection for ever.
    let mut memtap = Command::new(env!("CARGO_BIN_EXE_jettison"))
        .arg("memtap")
        .args(&keys)
        .args(["--vm", "vm1=127.0.0.1:1", "--mount"])
        .arg(dir.path().join("mnt"))
        .arg("--state-dir")
        .arg(dir.path().join("slices"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(memtap.try_wait().unwrap().is_none(), "memtap gave up by itself");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(memtap.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    // A bound only so that a hang fails the test instead of stalling it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = memtap.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "memtap ignored SIGTERM while connecting");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut memtap.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("while connecting to memserv"), "{log}");
}

#[test]
fn dirty_set_export_then_apply_changes_exactly_the_dirty_blocks() {
    use slice_store::SliceStore;
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 4096u64;
    let image = dir.path().join("disk.img");
    let base: Vec<u8> = (0..size).map(|i| (i % 249) as u8).collect();
    std::fs::write(&image, &base).unwrap();
    let slices = dir.path().join("slices");
    {
        let store = SliceStore::open(&slices, 4096, size).unwrap();
        store.write_dirty(3, &[0xAA; 4096]).unwrap();
        store.write_dirty(63, &[0xBB; 4096]).unwrap();
        store.flush().unwrap();
    }
    let set = dir.path().join("vm1.dirty");
    let size_arg = size.to_string();
    let out = jettison(&[
        "dirty-set",
        "export",
        "--slices",
        slices.to_str().unwrap(),
        "--size",
        &size_arg,
        "--out",
        set.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exported 2 dirty units"), "{}", text(&out));
    // Slices that are not there are an error naming them, never an empty set.
    let nowhere = dir.path().join("no-slices");
    let args = ["dirty-set", "export", "--slices", nowhere.to_str().unwrap(), "--size", &size_arg, "--out"];
    let out = jettison(&[&args[..], &[dir.path().join("none.dirty").to_str().unwrap()]].concat());
    assert!(!out.status.success() && text(&out).contains("no slice store in"), "{}", text(&out));
    assert!(!nowhere.exists(), "export created a slice store");

    // A truncated copy is refused and leaves the image as it was.
    let cut = dir.path().join("cut.dirty");
    let bytes = std::fs::read(&set).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let staging = dir.path().join("staging");
    let apply = |input: &std::path::Path| {
        jettison(&[
            "dirty-set",
            "apply",
            "--image",
            image.to_str().unwrap(),
            "--staging",
            staging.to_str().unwrap(),
            "--in",
            input.to_str().unwrap(),
        ])
    };
    let out = apply(&cut);
    assert!(!out.status.success());
    assert!(text(&out).contains("not changed"), "{}", text(&out));
    assert_eq!(std::fs::read(&image).unwrap(), base);

    let out = apply(&set);
    assert!(out.status.success(), "{}", text(&out));
    let mut want = base.clone();
    want[3 * 4096..4 * 4096].fill(0xAA);
    want[63 * 4096..].fill(0xBB);
    assert_eq!(std::fs::read(&image).unwrap(), want);
}

#[test]
fn status_shows_the_power_ledger_beside_memory_and_disks() {
    use power::{EnergyLedger, PowerProfile, PowerState};
    let dir = tempfile::tempdir().unwrap();
    let power = dir.path().join("power");
    std::fs::create_dir(&power).unwrap();
    let p = PowerProfile::TABLE_1;
    let mut ledger = EnergyLedger::new(p);
    ledger.begin(PowerState::Idle, 0.0).unwrap();
    ledger.enter(PowerState::Suspending, 6.0).unwrap();
    ledger.enter(PowerState::Asleep, 6.0 + p.suspend_secs).unwrap();
    ledger.enter(PowerState::Resuming, 3000.0).unwrap();
    ledger.enter(PowerState::Serving, 3000.0 + p.resume_secs).unwrap();
    let summary = ledger.summary(3020.0);
    std::fs::write(power.join("ledger.json"), serde_json::to_vec(&summary).unwrap()).unwrap();
    let nowhere = dir.path().join("nowhere");
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--memtap", nowhere.to_str().unwrap(), "--disks", nowhere.to_str().unwrap()];
        args.extend_from_slice(&["--power", power.to_str().unwrap()]);
        args.extend_from_slice(extra);
        jettison(&args)
    };
    let out = status(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let total = summary.total.unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "power: 3020 s consolidated over 1 consolidations, 1 wakes, {:.1} kJ used against {:.1} kJ idle: {:.1}% saved \
         (ledger.json, chart power.svg)",
        total.joules / 1000.0,
        total.idle_baseline_joules / 1000.0,
        total.saved_percent
    );
    assert_eq!(line.lines().last().unwrap(), expected, "{line}");
    let out = status(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    tests::check_status_schema(&parsed, None);
    let energy = &parsed["power"];
    assert_eq!((energy["consolidations"].as_u64(), energy["wakes"].as_u64()), (Some(1), Some(1)), "{parsed}");
    // serde_json's Value rounds the last bit of some floats.
    assert!((energy["saved_percent"].as_f64().unwrap() - total.saved_percent).abs() < 1e-9);
    assert!((energy["consolidated_secs"].as_f64().unwrap() - total.wall_secs).abs() < 1e-9);
    assert_eq!(parsed["vms"], serde_json::json!([]));

    // A missing power directory is like a missing memtap mount: an error
    // only when every source is missing.
    let out = jettison(&[
        "status",
        "--memtap",
        nowhere.to_str().unwrap(),
        "--disks",
        nowhere.to_str().unwrap(),
        "--power",
        nowhere.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--power"), "{}", text(&out));
    std::fs::write(power.join("ledger.json"), b"not json").unwrap();
    let out = status(&[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("ledger.json"), "{}", text(&out));
}

#[test]
fn power_names_an_event_socket_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("memserv.events");
    let state = dir.path().join("power");
    let out = jettison(&[
        "power",
        "--events",
        socket.to_str().unwrap(),
        "--sleep",
        "emulated-s3",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    // Checked before the back-end starts: no emulated S3 options are needed to learn this.
    assert!(text(&out).contains("memserv.events") && text(&out).contains("--events"), "{}", text(&out));
}

#[test]
fn the_desktop_daemon_refuses_each_kind_of_configuration_mistake_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("vm1.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let qcow2 = dir.path().join("vm2.qcow2");
    let made = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&qcow2).arg("1M").status().unwrap();
    assert!(made.success());
    let base = format!(
        "name = \"desk\"\nhost_key = \"{d}/host.key\"\nserver = \"127.0.0.1:1\"\ncontrol_listen = \"127.0.0.1:7400\"\n\
         serve_ip = \"127.0.0.1\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nbridge = \"br0\"\naccel = \"tcg\"\n",
        d = dir.path().display()
    );
    let vm = format!(
        "[[vm]]\nname = \"vm1\"\nmemory_mib = 256\ndisk = \"{}\"\nmac = \"02:00:00:00:00:01\"\nmemserv_port = 7410\n\
         diskserv_port = 7411\n",
        disk.display()
    );
    let cases = [
        (vm.replace("02:00:00:00:00:01", "01:00:5e:00:00:01"), "needs a unicast address"),
        (vm.replace("02:00:00:00:00:01", "02:00:00:00:00:01,romfile=/x"), "not a valid MAC address"),
        (vm.replace("7411", "7410"), "diskserv_port = 7410 is already a memserv_port"),
        (vm.replace("vm1.img", "missing.img"), "missing.img"),
        (
            vm.replace(&disk.display().to_string(), &qcow2.display().to_string()),
            "is a qcow2 image but disk_format is raw",
        ),
        (vm.replace("memory_mib = 256", "memory_mib = 8"), "memory_mib = 8: write 64 to"),
        (vm.replace("memory_mib = 256", "memory_mib = 256\nvcpus = 999"), "vcpus = 999: write 1 to 256"),
        (format!("cpu_model = \"NoSuchCPU\"\n{vm}"), "not a CPU model this QEMU knows"),
        (vm.replace("memory_mib = 256", "memory_mib = 256\nfirmware = \"kernel\""), "names no kernel"),
        (format!("{vm}[power]\n"), "add mac = \"...\" (this desktop's NIC)"),
        (format!("mac = \"02:00:00:00:00:02\"\n{vm}[power]\nwait_secs = -1.0\n"), "[power] wait_secs = -1"),
        (format!("mac = \"02:00:00:00:00:02\"\n{vm}[power]\nsleep = \"emulated-s3\"\n"), "needs interface"),
    ];
    for (i, (vm_text, expected)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("desktop-{i}.toml"));
        std::fs::write(&config, format!("{base}{vm_text}")).unwrap();
        // A sound file would still stop at the missing key: nothing here can start a daemon.
        let out = jettison(&["desktop", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success(), "case {i} was accepted");
        assert!(text(&out).contains(expected), "case {i}: expected {expected:?} in {}", text(&out));
        assert!(text(&out).contains(&format!("desktop-{i}.toml")), "case {i} does not name the file: {}", text(&out));
    }
}

#[test]
fn console_carries_the_serial_console_both_ways_until_ctrl_close_bracket() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("vm1")).unwrap();
    // QEMU's side of the console: a Unix socket server, as -chardev socket,server=on makes.
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("vm1/console.sock")).unwrap();
    let guest = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"JTCOUNT 7\r\n").unwrap();
        let mut typed = Vec::new();
        stream.read_to_end(&mut typed).unwrap();
        typed
    });
    let mut console = Command::new(env!("CARGO_BIN_EXE_jettison"))
        .args(["console", "vm1", "--run-dir", dir.path().to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(console.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "JTCOUNT 7\r\n");
    let mut stdin = console.stdin.take().unwrap();
    // One write (atomic on a pipe): what comes after Ctrl-] (0x1d) is never sent.
    stdin.write_all(b"ls /\r\x1dnever sent").unwrap();
    let status = console.wait().unwrap();
    assert!(status.success());
    assert_eq!(guest.join().unwrap(), b"ls /\r", "the console sends what was typed, up to Ctrl-]");
    let missing = jettison(&["console", "vm2", "--run-dir", dir.path().to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("is it running on this desktop?"), "{}", text(&missing));
}

#[test]
fn power_refuses_to_sleep_a_desktop_whose_nic_will_not_wake_it() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback has no device that could wake the machine; the check comes
    // before anything else (the event socket here does not even exist).
    let events = dir.path().join("memserv.events");
    let out = jettison(&[
        "power",
        "--events",
        events.to_str().unwrap(),
        "--sleep",
        "system",
        "--interface",
        "lo",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("refusing to sleep") && said.contains("lo has no power/wakeup"), "{said}");
}
