//! The desktop power daemon across network namespaces: the real
//! `jettison power` runs in the desktop's namespace beside the real
//! `jettison memserv`, listening to memserv's event socket, with the
//! emulated S3 back-end. With no request for t_w it puts the desktop to
//! sleep (memserv stopped, address gone); a read from the server's namespace
//! through a `RemoteImage` whose wake hook is remote-wakeup's
//! `DesktopWaker` sends a magic packet, the daemon's listener resumes the
//! desktop, and the page is served; after t_w it sleeps again. The daemon's
//! `ledger.json` then counts the wake and the time asleep.
//!
//! Root only (namespaces, veth, a bridge, AF_PACKET); skipped with a reason
//! elsewhere. The office (a desktop and a server on a bridge) is the one of
//! `wake_netns.rs`, built with the shared `tests::netns` helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remote_wakeup::{netns, DesktopWaker, Mac, WakeTarget};
use tests::netns::office::{BROADCAST, DESKTOP_CIDR, DESKTOP_MAC, MEMSERV, SERVER_CIDR};
use tests::netns::{Daemon, EmulatedPower, Host, Lan};
use tests::skip;
use tests::TestKeys;
use wire::{ByteRange, Chunk, Hello, RemoteConfig, RemoteImage, Service, WakeHook};

const PAGE: usize = 4096;
const PAGES: usize = 64;
/// Bound on anything that should happen within seconds.
const WAIT: Duration = Duration::from_secs(60);

/// Polls `done` every 50 ms until it holds or `WAIT` passes; whether it held.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether memserv answers a TCP handshake from the server's namespace.
fn memserv_answers(server_ns: &str) -> bool {
    let probe: SocketAddr = MEMSERV.parse().unwrap();
    netns::run_in(Some(server_ns), || TcpStream::connect_timeout(&probe, Duration::from_millis(300))).unwrap().is_ok()
}

#[test]
fn the_power_daemon_sleeps_after_t_w_a_remote_read_wakes_it_and_it_sleeps_again() {
    if let Err(why) = tests::netns::available() {
        return skip(why);
    }
    let dir = tempfile::tempdir().unwrap();
    let mac: Mac = DESKTOP_MAC.parse().unwrap();
    let lan = Lan::build(&[
        Host { role: "desktop", cidr: DESKTOP_CIDR, mac: Some(DESKTOP_MAC) },
        Host { role: "server", cidr: SERVER_CIDR, mac: None },
    ]);
    let (desktop_ns, server_ns) = (lan.host(0), lan.host(1));

    // The desktop's RAM: page p filled with bytes derived from p.
    let bytes: Vec<u8> = (0..PAGES * PAGE).map(|i| ((i / PAGE * 7 + i) % 251) as u8 + 1).collect();
    let ram = dir.path().join("vm1.ram");
    std::fs::File::create(&ram).unwrap().write_all_at(&bytes, 0).unwrap();
    let key = TestKeys::new();
    let (key_path, _) = key.write(dir.path());
    let events = dir.path().join("memserv.events");

    let memserv = Daemon::memserv(desktop_ns, server_ns, dir.path(), &ram, &key_path, &events);

    // The server's reader, connected while the desktop is awake.
    let broadcast: IpAddr = BROADCAST.parse().unwrap();
    let mut config = WakeTarget::new("desktop1", mac, broadcast, MEMSERV.parse().unwrap());
    config.probe_timeout = Duration::from_millis(300);
    let waker = Arc::new(DesktopWaker::new(config));
    let mut remote = RemoteConfig::new(MEMSERV, key.server(), Hello::new(Service::Memory, "vm1"));
    remote.timeout = Duration::from_secs(2);
    remote.max_backoff = Duration::from_millis(200);
    remote.give_up_after = Some(WAIT);
    let hook = Arc::clone(&waker) as Arc<dyn WakeHook>;
    let image = netns::run_in(Some(server_ns), || RemoteImage::connect(remote, hook)).unwrap().unwrap();

    let state_dir = dir.path().join("power");
    let mut power = EmulatedPower {
        events: vec![&events],
        stop_pids: vec![memserv.pid()],
        state_dir: &state_dir,
        policy: "fixed",
        wait_secs: 2.0,
        profile: None,
        serve_secs: None,
        transition_secs: Some((0.5, 1.0)),
    }
    .spawn(desktop_ns, &dir.path().join("power.log"));

    // No request for t_w: the daemon puts the desktop to sleep, and memserv
    // stops answering.
    let asleep = wait_for(|| !memserv_answers(server_ns));
    assert!(asleep, "the daemon did not put the desktop to sleep; see {}/power.log", dir.path().display());

    // A read wakes it and is served.
    let range = ByteRange::new((5 * PAGE) as u64, (2 * PAGE) as u32);
    let chunks = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(server_ns).unwrap();
            image.read(&[range]).unwrap()
        })
        .join()
        .unwrap()
    });
    let mut got = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Bytes { data, .. } => got.extend_from_slice(&data),
            Chunk::Zero { len, .. } => got.resize(got.len() + len as usize, 0),
        }
    }
    assert!(got == bytes[5 * PAGE..7 * PAGE], "pages 5..7 differ from the RAM file");
    let stats = waker.stats();
    assert!(stats.wakes >= 1 && stats.failed_wakes == 0, "{stats:?}");

    // With no further request, the daemon puts the desktop to sleep again.
    let asleep_again = wait_for(|| !memserv_answers(server_ns));
    assert!(asleep_again, "the desktop did not sleep again; see {}/power.log", dir.path().display());

    // Stopped with SIGTERM, the daemon leaves its ledger.
    assert!(power.terminate(), "jettison power failed; see {}/power.log", dir.path().display());
    // Read as JSON (the `LedgerSummary` fields), as a script would.
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("ledger.json")).unwrap()).unwrap();
    eprintln!("ledger: {ledger}");
    let total = &ledger["total"];
    assert!(total["wakes"].as_u64().unwrap() >= 1, "{total}");
    assert!(total["secs"]["asleep"].as_f64().unwrap() > 0.0, "{total}");
    assert!(state_dir.join("power.svg").exists());
    drop(memserv);
}
