//! Network presence across a move: a TCG guest serves a TCP line service
//! on the office LAN through a tap on the desktop's bridge; a client on a
//! third host holds one connection to it. The VM is stopped, its device
//! state saved with `x-ignore-shared`, QEMU killed, and the VM resumed on
//! the server over the same RAM file, through a tap on the server's bridge
//! with the same MAC, and announced (`announce-self`). The client's
//! connection must carry on: every line answered exactly once, the
//! service's counter continuous (its state moved with the VM).
//!
//! Root only (namespaces, veth, bridges, taps); skipped with a reason
//! elsewhere. Namespaces, taps and QEMUs are owned by guards and go away
//! whatever happens.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jettison_qemu::{resume, save_device_state, VmSpec};
use jettison_tests::netns::office::{DESKTOP_CIDR, SERVER_CIDR};
use jettison_tests::netns::{available, Host, Lan};
use jettison_tests::vmnet::{bridge_host, Nic, Tap};
use jettison_tests::{guest, skip, BOOT_TIMEOUT};
use remote_wakeup::netns;
use serde_json::json;

const RAM_MIB: u64 = 256;
const CLIENT_CIDR: &str = "10.77.0.3/24";
const VM_CIDR: &str = "10.77.0.50/24";
const VM_SERVICE: &str = "10.77.0.50:7000";
const VM_MAC: &str = "02:4a:54:00:00:50";
const TAP: &str = "vm0";
/// Pause between the client's lines.
const PACE: Duration = Duration::from_millis(300);
/// Exchanges wanted on each host.
const EXCHANGES_PER_HOST: usize = 5;
/// Bound on anything that should happen within a minute (a reply, even
/// through the move, with TCP's retransmission back-off).
const WAIT: Duration = Duration::from_secs(90);

/// One line sent and its reply.
#[derive(Debug)]
struct Exchange {
    sent: Instant,
    answered: Instant,
    reply: String,
}

/// What the client saw: its exchanges, and the error that ended the
/// connection if one did.
#[derive(Debug)]
struct ClientLog {
    exchanges: Vec<Exchange>,
    broken: Option<String>,
}

/// Sends "line <k>" every [`PACE`] on `stream` and waits for each reply,
/// until `stop` is set or the connection fails; `count` follows the number
/// of exchanges for the main thread.
fn client(stream: TcpStream, stop: &AtomicBool, count: &AtomicUsize) -> ClientLog {
    let mut log = ClientLog { exchanges: Vec::new(), broken: None };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        if let Err(e) = writer.write_all(format!("line {k}\n").as_bytes()) {
            log.broken = Some(format!("sending line {k}: {e}"));
            break;
        }
        let mut reply = String::new();
        match reader.read_line(&mut reply) {
            Ok(0) => {
                log.broken = Some(format!("the service closed the connection after line {k}"));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                log.broken = Some(format!("waiting for the reply to line {k}: {e}"));
                break;
            }
        }
        log.exchanges.push(Exchange { sent, answered: Instant::now(), reply: reply.trim_end().to_owned() });
        count.store(log.exchanges.len(), Ordering::SeqCst);
        k += 1;
        std::thread::sleep(PACE.saturating_sub(sent.elapsed()));
    }
    log
}

/// Waits until the client has recorded `n` exchanges, by polling its
/// shared count, or until it has ended (its log then says why).
fn wait_for_exchanges(count: &AtomicUsize, n: usize, client: &JoinHandle<ClientLog>, what: &str) {
    let deadline = Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < n && !client.is_finished() {
        assert!(Instant::now() < deadline, "fewer than {n} exchanges {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_connection_survives_a_move_between_hosts() {
    if let Err(why) = available() {
        return skip(why);
    }
    let guest = match guest() {
        Ok(g) => g,
        Err(why) => return skip(why),
    };
    let dir = tempfile::tempdir().unwrap();
    let ram = dir.path().join("vm1.ram");
    let state = dir.path().join("vm1.state");

    let lan = Lan::build(&[
        Host { role: "desktop", cidr: DESKTOP_CIDR, mac: None },
        Host { role: "server", cidr: SERVER_CIDR, mac: None },
        Host { role: "client", cidr: CLIENT_CIDR, mac: None },
    ]);
    let (desktop, server, client_ns) = (lan.host(0), lan.host(1), lan.host(2));
    bridge_host(desktop, DESKTOP_CIDR);
    bridge_host(server, SERVER_CIDR);
    let nic = Nic::new(VM_MAC);
    let spec = |run: &str, tap: &Tap| {
        VmSpec::new(&guest, &ram, dir.path().join(run))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.net={VM_CIDR} jt.serve=7000"))
            .extra_args(nic.qemu_args(tap))
    };

    // On the desktop: boot with the NIC on the desktop's bridge.
    let desktop_tap = Tap::create(desktop, TAP);
    let desktop_spec = spec("desktop-run", &desktop_tap);
    let mut vm = netns::run_in(Some(desktop), || desktop_spec.spawn()).unwrap().unwrap();
    vm.wait_for_line("JTSERVE", BOOT_TIMEOUT).unwrap();
    vm.wait_for_line("JTREADY", BOOT_TIMEOUT).unwrap();

    // The client connects from its own host; the service may take a moment
    // to listen after the guest says it started it.
    let addr: SocketAddr = VM_SERVICE.parse().unwrap();
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        match netns::run_in(Some(client_ns), || TcpStream::connect_timeout(&addr, Duration::from_secs(2))).unwrap() {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {VM_SERVICE}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let client_thread = {
        let stop = Arc::clone(&stop);
        let count = Arc::clone(&count);
        std::thread::spawn(move || client(stream, &stop, &count))
    };

    wait_for_exchanges(&count, EXCHANGES_PER_HOST, &client_thread, "on the desktop");
    assert!(desktop_tap.bridge_learned(VM_MAC), "the desktop's bridge never saw {VM_MAC} on its tap");
    // The move: stop and save, kill the desktop's QEMU and tap, resume on
    // the server's side with the same MAC, announce it.
    let moving = Instant::now();
    let mut qmp = vm.connect_qmp().unwrap();
    let bytes = save_device_state(&mut qmp, &state).unwrap();
    drop(qmp);
    drop(vm);
    drop(desktop_tap);
    let stopped_at = count.load(Ordering::SeqCst);
    let server_tap = Tap::create(server, TAP);
    let server_spec = spec("server-run", &server_tap);
    let (vm, mut qmp) = netns::run_in(Some(server), || resume(server_spec, &state)).unwrap().unwrap();
    qmp.execute("announce-self", Some(json!({ "initial": 50, "max": 550, "rounds": 5, "step": 100 }))).unwrap();
    let resumed = Instant::now();
    eprintln!(
        "moved in {:.2} s (descriptor {bytes} bytes), {stopped_at} exchanges on the desktop",
        (resumed - moving).as_secs_f64()
    );

    wait_for_exchanges(&count, stopped_at + EXCHANGES_PER_HOST + 1, &client_thread, "after the move to the server");
    stop.store(true, Ordering::SeqCst);
    let log = client_thread.join().unwrap();
    // The replies came from the server's side: its bridge saw the VM's MAC
    // on its tap.
    assert!(server_tap.bridge_learned(VM_MAC), "the server's bridge never saw {VM_MAC} on its tap");
    drop(qmp);
    drop(vm);
    drop(server_tap);

    if let Some(broken) = &log.broken {
        panic!("the client's connection broke: {broken} (after {} exchanges)", log.exchanges.len());
    }
    // Every line got exactly one reply, in order, with the service's
    // counter going on without a gap or a repeat.
    // The service counts lines over the VM's life; this is its first client.
    for (k, exchange) in log.exchanges.iter().enumerate() {
        let want = format!("echo {} line {k}", k + 1);
        assert_eq!(exchange.reply, want, "reply {k} of {}", log.exchanges.len());
    }
    let on_desktop = log.exchanges.iter().filter(|e| e.answered < moving).count();
    let on_server = log.exchanges.iter().filter(|e| e.sent > resumed).count();
    let silence = log.exchanges.windows(2).map(|pair| pair[1].answered - pair[0].answered).max().unwrap_or_default();
    let slowest = log.exchanges.iter().map(|e| e.answered - e.sent).max().unwrap_or_default();
    eprintln!(
        "{} exchanges on one connection: {on_desktop} answered on the desktop, {on_server} sent after the resume \
         on the server; longest time without a reply {:.2} s, slowest reply {:.2} s",
        log.exchanges.len(),
        silence.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert!(on_desktop >= EXCHANGES_PER_HOST, "only {on_desktop} exchanges on the desktop");
    assert!(on_server >= EXCHANGES_PER_HOST, "only {on_server} exchanges on the server");
}
