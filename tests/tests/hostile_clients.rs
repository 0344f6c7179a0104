//! memserv (the shared image server) against peers that never prove
//! themselves: idle connections from many addresses until the process has
//! no descriptor left, a peer that never says hello, and a handshake with
//! no request after it. Each time a legitimate client is served at once,
//! memory goes back to its level, and nothing counts as activity.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::TestKeys;

use image_server::events::{subscribe, EventKind};
use image_server::server::{HELLO_DEADLINE, MAX_UNPROVEN_PER_SOURCE};
use wire::{ByteRange, Chunk, Client, Hello, Service};

const PAGES: usize = 64;
/// The descriptors memserv may have: fewer than the unproven peers it keeps.
const NOFILE: u32 = 40;

/// `jettison memserv` in its own process, with `NOFILE` descriptors at most.
struct Memserv {
    child: Child,
    addr: SocketAddr,
    key: TestKeys,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl Memserv {
    fn start() -> Memserv {
        let dir = tempfile::tempdir().unwrap();
        let ram = dir.path().join("vm1.ram");
        let bytes: Vec<u8> = (0..PAGES * 4096).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&ram, bytes).unwrap();
        let key = TestKeys::new();
        let (desktop_files, _) = key.write(dir.path());
        let events = dir.path().join("events.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}:{NOFILE}"))
            .arg(tests::jettison_binary())
            .args(["memserv", "--vm", "vm1", "--listen"])
            .arg(addr.to_string())
            .arg("--ram")
            .arg(&ram)
            .args(desktop_files.args())
            .arg("--events")
            .arg(&events)
            .stdout(Stdio::null())
            .spawn()
            .expect("prlimit (util-linux) and the jettison binary run");
        let server = Memserv { child, addr, key, events, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() || !server.events.exists() {
            assert!(Instant::now() < deadline, "memserv never listened on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// A legitimate client reads page 3 and gets its bytes.
    fn serve_one_read(&self) {
        let hello = Hello::new(Service::Memory, "vm1");
        let mut client =
            Client::connect(&self.addr.to_string(), &self.key.server(), None, &hello, Duration::from_secs(5))
                .expect("a legitimate client is let in");
        let chunks = client.read(&[ByteRange::new(3 * 4096, 4096)]).expect("and served");
        let Chunk::Bytes { data, .. } = &chunks[0] else { panic!("page 3 is not zero") };
        assert_eq!(data[0], (3 * 4096 % 251) as u8 + 1);
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        // prlimit execs jettison in place: the child's pid is memserv's.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        tests::proc_kib(&status, "VmRSS").unwrap()
    }
}

impl Drop for Memserv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from the loopback address `source`.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stream = TcpStream::from(fd);
    let sockaddr = |addr: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = to else { panic!("an IPv4 address") };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    for (call, addr) in [("bind", SocketAddrV4::new(source, 0)), ("connect", to)] {
        let raw = sockaddr(addr);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let ptr = std::ptr::addr_of!(raw).cast::<libc::sockaddr>();
        // SAFETY: ptr points at a sockaddr_in of len bytes that lives across the call.
        let rc = unsafe {
            if call == "bind" {
                libc::bind(fd, ptr, len)
            } else {
                libc::connect(fd, ptr, len)
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(stream)
}

#[test]
fn idle_connections_from_many_addresses_cost_nothing_and_a_client_is_served_at_once() {
    let memserv = Memserv::start();
    memserv.serve_one_read();
    let before = memserv.rss_kib();
    // Ten addresses, more connections than memserv has descriptors: it
    // runs out, closes the oldest unproven peers to make room, and keeps
    // accepting.
    let mut attackers = Vec::new();
    for round in 0..3 {
        for source in 2..12u8 {
            for _ in 0..MAX_UNPROVEN_PER_SOURCE {
                if let Ok(stream) = connect_from(Ipv4Addr::new(127, 0, 0, source), memserv.addr) {
                    attackers.push(stream);
                }
            }
        }
        assert!(attackers.len() > (round + 1) * NOFILE as usize, "the attack opened {} connections", attackers.len());
        memserv.serve_one_read();
    }
    drop(attackers);
    memserv.serve_one_read();
    let after = memserv.rss_kib();
    assert!(after <= before + 2048, "memserv grew from {before} KiB to {after} KiB");
}

#[test]
fn a_peer_that_says_nothing_is_closed_after_the_hello_deadline() {
    let memserv = Memserv::start();
    let mut silent = TcpStream::connect(memserv.addr).unwrap();
    silent.set_read_timeout(Some(HELLO_DEADLINE * 3)).unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    // memserv's preamble may come first; then the end of the stream.
    loop {
        match silent.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("memserv kept a silent peer for {} s ({got} bytes): {e}", (HELLO_DEADLINE * 3).as_secs()),
        }
    }
    memserv.serve_one_read();
}

#[test]
fn a_handshake_without_a_request_is_no_activity() {
    let memserv = Memserv::start();
    let mut events = subscribe(&memserv.events).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Replaying a recorded first handshake message gets a peer this far at
    // most: welcomed, without the session key a request needs.
    let hello = Hello::new(Service::Memory, "vm1");
    for _ in 0..5 {
        let idle =
            Client::connect(&memserv.addr.to_string(), &memserv.key.server(), None, &hello, Duration::from_secs(5))
                .unwrap();
        drop(idle);
    }
    memserv.serve_one_read();
    let first = events.next().unwrap().unwrap();
    assert_eq!(first.kind, EventKind::Connected, "{first:?}");
    assert_eq!(events.next().unwrap().unwrap().kind, EventKind::Request);
    assert_eq!(events.next().unwrap().unwrap().kind, EventKind::Disconnected);
}
