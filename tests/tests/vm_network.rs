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

use std::time::{Duration, Instant};

use qemu_driver::{announce, resume, save_device_state, VmSpec};
use remote_wakeup::netns;
use tests::netns::office::{DESKTOP_CIDR, SERVER_CIDR};
use tests::netns::{available, Host, Lan};
use tests::office::{Exchange, LineClient, CLIENT_CIDR, VM_MAC, VM_SERVICE};
use tests::vmnet::{bridge_host, Nic, NsTap};
use tests::{guest, skip, BOOT_TIMEOUT};

const RAM_MIB: u64 = 256;
const VM_CIDR: &str = "10.77.0.50/24";
const TAP: &str = "vm0";
/// Pause between the client's lines.
const PACE: Duration = Duration::from_millis(300);
/// Exchanges wanted on each host.
const EXCHANGES_PER_HOST: usize = 5;
/// Bound on anything that should happen within a minute (a reply, even
/// through the move, with TCP's retransmission back-off).
const WAIT: Duration = Duration::from_secs(90);

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
    let spec = |run: &str, tap: &NsTap| {
        VmSpec::new(&guest, &ram, dir.path().join(run))
            .memory_mib(RAM_MIB)
            .kernel_args(&format!("jt.net={VM_CIDR} jt.serve=7000"))
            .extra_args(nic.qemu_args(tap))
    };

    // On the desktop: boot with the NIC on the desktop's bridge.
    let desktop_tap = NsTap::create(desktop, TAP);
    let desktop_spec = spec("desktop-run", &desktop_tap);
    let mut vm = netns::run_in(Some(desktop), || desktop_spec.spawn()).unwrap().unwrap();
    vm.wait_for_line("JTSERVE", BOOT_TIMEOUT).unwrap();
    vm.wait_for_line("JTREADY", BOOT_TIMEOUT).unwrap();

    // The client connects from its own host.
    let client = LineClient::connect(client_ns, VM_SERVICE, PACE);
    client.wait_for(EXCHANGES_PER_HOST, WAIT);
    assert!(desktop_tap.bridge_learned(VM_MAC), "the desktop's bridge never saw {VM_MAC} on its tap");
    // The move: stop and save, kill the desktop's QEMU and tap, resume on
    // the server's side with the same MAC, announce it.
    let moving = Instant::now();
    let mut qmp = vm.connect_qmp().unwrap();
    let bytes = save_device_state(&mut qmp, &state).unwrap();
    drop(qmp);
    drop(vm);
    drop(desktop_tap);
    let stopped_at = client.count();
    let server_tap = NsTap::create(server, TAP);
    let server_spec = spec("server-run", &server_tap);
    let (vm, mut qmp) = netns::run_in(Some(server), || resume(server_spec, &state)).unwrap().unwrap();
    announce(&mut qmp).unwrap();
    let resumed = Instant::now();
    eprintln!(
        "moved in {:.2} s (descriptor {bytes} bytes), {stopped_at} exchanges on the desktop",
        (resumed - moving).as_secs_f64()
    );

    client.wait_for(stopped_at + EXCHANGES_PER_HOST + 1, WAIT);
    let (log, broken) = client.finish();
    // The replies came from the server's side: its bridge saw the VM's MAC
    // on its tap.
    assert!(server_tap.bridge_learned(VM_MAC), "the server's bridge never saw {VM_MAC} on its tap");
    drop(qmp);
    drop(vm);
    drop(server_tap);

    if let Some(broken) = &broken {
        panic!("the client's connection broke: {broken} (after {} exchanges)", log.len());
    }
    // Every line got exactly one reply, in order, with the service's
    // counter going on without a gap or a repeat.
    // The service counts lines over the VM's life; this is its first client.
    for (k, exchange) in log.iter().enumerate() {
        let want = format!("echo {} ping {}", k + 1, k + 1);
        assert_eq!(exchange.reply, want, "reply {k} of {}", log.len());
    }
    let answered = |e: &Exchange| e.at + e.took;
    let on_desktop = log.iter().filter(|e| answered(e) < moving).count();
    let on_server = log.iter().filter(|e| e.at > resumed).count();
    let silence = log.windows(2).map(|pair| answered(&pair[1]) - answered(&pair[0])).max().unwrap_or_default();
    let slowest = log.iter().map(|e| e.took).max().unwrap_or_default();
    eprintln!(
        "{} exchanges on one connection: {on_desktop} answered on the desktop, {on_server} sent after the resume \
         on the server; longest time without a reply {:.2} s, slowest reply {:.2} s",
        log.len(),
        silence.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert!(on_desktop >= EXCHANGES_PER_HOST, "only {on_desktop} exchanges on the desktop");
    assert!(on_server >= EXCHANGES_PER_HOST, "only {on_server} exchanges on the server");
}
