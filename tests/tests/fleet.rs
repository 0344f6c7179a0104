//! A fleet of servers registered in a real 3-member etcd cluster: five
//! network namespaces on one LAN, three running an etcd member each and two
//! running the real `jettison server` with a `[fleet]` section.
//!
//! ```text
//!  lan      br0
//!  etcd1    10.78.0.11  etcd member m0
//!  etcd2    10.78.0.12  etcd member m1
//!  etcd3    10.78.0.13  etcd member m2
//!  server1  10.78.0.1   jettison server (capacity 1024 MiB)
//!  server2  10.78.0.2   jettison server (capacity 2048 MiB)
//! ```
//!
//! Root only (namespaces, a bridge); skipped with a reason elsewhere. etcd
//! comes from Debian's etcd-server (scripts/install-deps): where it is
//! missing the test skips, and under CI (`CI` set) it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_registry::{registered_servers, EtcdClient, ServerRecord};
use tests::etcd::EtcdCluster;
use tests::netns::{Daemon, Host, Lan};
use tests::skip;

/// The registration's lease.
const TTL_SECS: u64 = 4;

const HOSTS: [Host<'static>; 5] = [
    Host { role: "etcd1", cidr: "10.78.0.11/24", mac: None },
    Host { role: "etcd2", cidr: "10.78.0.12/24", mac: None },
    Host { role: "etcd3", cidr: "10.78.0.13/24", mac: None },
    Host { role: "server1", cidr: "10.78.0.1/24", mac: None },
    Host { role: "server2", cidr: "10.78.0.2/24", mac: None },
];

/// Writes `NAME.toml` for a server daemon named `name` listening on `ip`
/// with `capacity_mib`, registering with `fleet` (its `etcd = ...` line),
/// its key made by `jettison pair`.
fn server_config(dir: &Path, name: &str, ip: &str, capacity_mib: u64, fleet: &str) -> std::path::PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(home.join("peers")).unwrap();
    let key = home.join("host.key");
    let paired = std::process::Command::new(tests::jettison_binary())
        .args(["pair".as_ref(), "--key".as_ref(), key.as_os_str()])
        .output()
        .unwrap();
    assert!(paired.status.success(), "jettison pair: {}", String::from_utf8_lossy(&paired.stderr));
    let h = home.display();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nlisten = \"{ip}:7400\"\nhost_key = \"{h}/host.key\"\npeers = \"{h}/peers\"\n\
             state_dir = \"{h}/state\"\nrun_dir = \"{h}/run\"\nbridge = \"br0\"\naccel = \"tcg\"\n\
             capacity_mib = {capacity_mib}\nsocket_group = \"\"\n\n[fleet]\n{fleet}\nlease_ttl_secs = {TTL_SECS}\n"
        ),
    )
    .unwrap();
    path
}

/// The registered servers as read from namespace `ns`, by name; panics on
/// a record the registry should not hold.
fn registered(ns: &str, client: &EtcdClient) -> Vec<ServerRecord> {
    let (good, bad) = remote_wakeup::netns::run_in(Some(ns), || registered_servers(client)).unwrap().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    good
}

/// Waits up to `limit` for the registered names (sorted) to be `names`;
/// returns how long that took.
fn wait_for_names(ns: &str, client: &EtcdClient, names: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now: Vec<String> = registered(ns, client).iter().map(|r| r.name.to_string()).collect();
        if now == names {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "registered {now:?}, expected {names:?} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn servers_register_with_their_room_and_a_dead_one_leaves_within_its_lease() {
    if let Err(why) = tests::netns::available().and_then(|()| tests::etcd::available()) {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::build(&HOSTS);
    let ip = |i: usize| HOSTS[i].cidr.split('/').next().unwrap();
    let members: Vec<(&str, IpAddr)> = (0..3).map(|i| (lan.host(i), ip(i).parse().unwrap())).collect();
    let mut cluster = EtcdCluster::start(dir.path(), &members);
    let fleet = cluster.fleet_line();
    let one = server_config(dir.path(), "server1", ip(3), 1024, &fleet);
    let two = server_config(dir.path(), "server2", ip(4), 2048, &fleet);
    let serve = |ns: &str, config: &Path, log: &str| {
        Daemon::spawn_notifying(
            ns,
            &dir.path().join(log),
            &[OsStr::new("server"), "--config".as_ref(), config.as_os_str()],
        )
    };
    let mut server1 = serve(lan.host(3), &one, "server1.log");
    let mut server2 = serve(lan.host(4), &two, "server2.log");
    let client = EtcdClient::new(cluster.addrs(), Duration::from_secs(1));
    let reader = lan.host(3);

    // Both register, each with its name, address, room and no load.
    wait_for_names(reader, &client, &["server1", "server2"], Duration::from_secs(10));
    let records = registered(reader, &client);
    for (record, (ip, capacity)) in records.iter().zip([(ip(3), 1024.0), (ip(4), 2048.0)]) {
        assert_eq!(record.address, format!("{ip}:7400").parse().unwrap(), "{record:?}");
        assert_eq!(record.capacity.memory_mib, capacity, "{record:?}");
        assert!(record.capacity.cpus >= 1.0 && record.capacity.network_mib_per_sec > 0.0, "{record:?}");
        assert_eq!((record.load.vms, record.load.memory_mib), (0, 0.0), "{record:?}");
    }

    // A member of etcd dies (the first each client tries): the servers
    // keep their records alive beyond the lease through the other two, and
    // reads go on.
    cluster.kill(0);
    std::thread::sleep(Duration::from_secs(TTL_SECS + 2));
    wait_for_names(reader, &client, &["server1", "server2"], Duration::from_secs(1));

    // server2 crashes: etcd drops its record when its lease runs out.
    server2.kill();
    let gone = wait_for_names(reader, &client, &["server1"], Duration::from_secs(TTL_SECS + 4));
    assert!(gone >= Duration::from_secs(1), "a crashed server withdraws nothing: its lease expires ({gone:?})");

    // server1 stops cleanly: it withdraws its record at once.
    assert!(server1.terminate(), "server1 stops cleanly; see {}/server1.log", dir.path().display());
    let gone = wait_for_names(reader, &client, &[], Duration::from_secs(2));
    assert!(gone < Duration::from_secs(TTL_SECS), "withdrawn, not expired ({gone:?})");
    let log = std::fs::read_to_string(dir.path().join("server1.log")).unwrap();
    assert!(!log.contains("cannot register in the fleet"), "the dead member never stopped the registration:\n{log}");
}

#[test]
fn a_desktop_consolidates_to_the_server_the_placement_picks_and_comes_home_from_it() {
    use tests::office::{Office, OfficeSpec, SERVER2, VM};
    let dir = tempfile::tempdir().unwrap();
    // The configured server has room for no VM above the high-water mark
    // (the placement expects the paper's 157.87 MiB): the fleet's second
    // server must take it.
    let spec = OfficeSpec { fleet: true, capacity_mib: 160, ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let socket = office.desktop_socket();
    let socket = socket.to_str().unwrap();

    let out = office.consolidate_when_idle(Duration::from_secs(180));
    eprintln!("consolidated: {out}");
    let placement = std::fs::read_to_string(dir.path().join("desktop/state").join(VM).join("placement.json")).unwrap();
    let placement: serde_json::Value = serde_json::from_str(&placement).unwrap();
    assert_eq!(placement["fleet"]["name"], SERVER2.0, "{placement}");
    assert_eq!(placement["fleet"]["address"], "10.77.0.4:7400", "{placement}");
    let log = office.log("desktop");
    assert!(log.contains("the fleet's placement chose server2"), "{}", office.logs());
    // server2 runs it, and says so in the registry and to the desktop's status.
    assert!(dir.path().join("server2/state/vms/desktop").join(VM).exists(), "{}", office.logs());
    assert!(!dir.path().join("server/state/vms/desktop").join(VM).exists(), "the configured server has it not");
    let status = office.jettison_json(&["status", "--daemon", socket]);
    assert_eq!(status["vms"][0]["location"], "server", "{status}");
    assert_eq!(status["vms"][0]["on_server"]["state"], "running", "status asks the server that holds it: {status}");
    let client = EtcdClient::new(
        ["10.77.0.11:2379", "10.77.0.12:2379", "10.77.0.13:2379"].map(|a| a.parse().unwrap()).to_vec(),
        Duration::from_secs(1),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = registered(office.host(0), &client);
        let server2 = records.iter().find(|r| r.name.as_str() == SERVER2.0).expect("server2 registered");
        if server2.load.vms == 1 && server2.load.memory_mib > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "server2 never registered its VM: {server2:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Home again, from server2.
    let back = office.jettison_json(&["reintegrate", VM, "--socket", socket]);
    eprintln!("reintegrated: {back}");
    office.wait_until_home(Duration::from_secs(60), "the VM comes home from server2");
}

#[test]
fn draining_a_server_moves_its_vm_to_another_and_home_when_none_is_left() {
    use tests::office::{assert_continuous, Office, OfficeSpec, SERVER2, VM};
    let dir = tempfile::tempdir().unwrap();
    // Both servers empty and alike: the placement takes the first by name.
    let spec = OfficeSpec { fleet: true, ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let config = dir.path().join("desktop.toml");
    let config = config.to_str().unwrap();
    let placed_on = || {
        let placement =
            std::fs::read_to_string(dir.path().join("desktop/state").join(VM).join("placement.json")).unwrap();
        let placement: serde_json::Value = serde_json::from_str(&placement).unwrap();
        placement["fleet"]["name"].as_str().map(str::to_owned)
    };
    // The drained server is empty once the VM is home; it lands on the
    // next server a moment later.
    let wait_until_on = |server: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while placed_on().as_deref() != Some(server) {
            assert!(Instant::now() < deadline, "the VM never reached {server}\n{}", office.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let drain = |args: &[&str]| {
        let mut all = vec!["drain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", config]);
        let out = office.jettison_on(0, &all);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "jettison {}: {text}\n{}", all.join(" "), office.logs());
        eprintln!("jettison {}:\n{text}", all.join(" "));
        text
    };
    let client = office.connect_client(Duration::from_secs(1));
    client.wait_for(3, Duration::from_secs(30));

    let out = office.consolidate_when_idle(Duration::from_secs(180));
    eprintln!("consolidated: {out}");
    assert_eq!(placed_on().as_deref(), Some("server"), "{}", office.logs());

    // Drained, the first server's VM moves to the second: home with what it
    // changed, then out again without an idle check.
    let text = drain(&["server", "--wait", "240"]);
    assert!(text.contains("server hosts no VM"), "{text}");
    wait_until_on(SERVER2.0);
    // The placement is written as the VM is handed over; it runs on server2
    // once the desktop says so.
    office.wait_for_log("desktop", "moved to another server", Duration::from_secs(120));
    assert!(dir.path().join("server2/state/vms/desktop").join(VM).exists(), "{}", office.logs());
    assert!(!dir.path().join("server/state/vms/desktop").join(VM).exists(), "{}", office.logs());
    let log = office.log("desktop");
    assert!(log.contains("the server asks us to take it to another server"), "{log}");
    assert!(log.contains("moved to another server"), "{log}");
    assert!(office.log("server").contains("asking its desktop to move it to another server"), "{}", office.logs());

    // With the second drained too, no server is left: it stays home.
    let text = drain(&["server2", "--wait", "240"]);
    assert!(text.contains("server2 hosts no VM"), "{text}");
    office.wait_until_home(Duration::from_secs(60), "the VM comes home when no server is left");
    assert!(office.log("desktop").contains("no other server has room: it stays on the desktop"), "{}", office.logs());
    // A consolidation by hand is refused while both are drained.
    let socket = office.desktop_socket();
    let refused = office.jettison(&["consolidate", VM, "--force", "--socket", socket.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(6), "no room: {}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("being drained"), "{refused:?}");

    // The drains end; the registry says so.
    drain(&["server", "--undo"]);
    drain(&["server2", "--undo"]);
    let client_etcd = EtcdClient::new(
        ["10.77.0.11:2379", "10.77.0.12:2379", "10.77.0.13:2379"].map(|a| a.parse().unwrap()).to_vec(),
        Duration::from_secs(1),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while registered(office.host(0), &client_etcd).iter().any(|r| r.draining) {
        assert!(Instant::now() < deadline, "the servers still say they are drained\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }

    // The guest's service answered every line through both moves.
    let (log, broken) = client.finish();
    assert_eq!(broken, None, "the connection broke\n{}", office.logs());
    assert!(assert_continuous(&log) > 10);
}

#[test]
fn a_vm_that_outgrows_its_fleet_server_moves_to_another() {
    use tests::office::{assert_continuous, Office, OfficeSpec, SERVER2, VM};
    let dir = tempfile::tempdir().unwrap();
    // The first server has room for the paper's median (157.87 MiB, under
    // the 90% high-water mark of 180 MiB) and is the fuller fit, so the
    // placement picks it; the guest (384 MiB) then reads the 170 MiB it
    // filled.
    let spec = OfficeSpec { fleet: true, capacity_mib: 180, memory_mib: 384, fill_mib: 170, ..OfficeSpec::default() };
    let Some(office) = Office::started(dir.path(), &spec) else { return };
    let placed_on = || {
        let placement =
            std::fs::read_to_string(dir.path().join("desktop/state").join(VM).join("placement.json")).unwrap();
        let placement: serde_json::Value = serde_json::from_str(&placement).unwrap();
        placement["fleet"]["name"].as_str().map(str::to_owned)
    };
    let client = office.connect_client(Duration::from_secs(1));
    let socket = office.desktop_socket();
    office.jettison_json(&["consolidate", VM, "--force", "--socket", socket.to_str().unwrap()]);
    assert_eq!(placed_on().as_deref(), Some("server"), "{}", office.logs());

    let read = client.command("readall", Duration::from_secs(120));
    assert!(read.starts_with("readall "), "{read}");
    let deadline = Instant::now() + Duration::from_secs(180);
    while placed_on().as_deref() != Some(SERVER2.0) {
        assert!(Instant::now() < deadline, "the VM never moved to server2\n{}", office.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let server_log = office.log("server");
    assert!(server_log.contains("short of memory") && server_log.contains("grew most"), "{server_log}");
    assert!(server_log.contains("asking its desktop to move it to another server"), "{server_log}");
    office.wait_for_log("desktop", "moved to another server", Duration::from_secs(120));
    client.wait_for(client.count() + 3, Duration::from_secs(120));
    let (log, broken) = client.finish();
    assert!(broken.is_none(), "the client's connection broke: {broken:?}");
    assert_continuous(&log);
}
