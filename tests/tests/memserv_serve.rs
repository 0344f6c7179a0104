//! memserv on loopback with real TCP clients: data, zero markers, bad
//! requests, hostile peers, events, and the RAM file left untouched.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use image_server::events::{subscribe, EventKind};
use image_server::ServeConfig;
use tests::TestKeys;
use tests::{serve_config, DesktopServer};
use wire::protocol::Preamble;
use wire::{ByteRange, Chunk, Client, ErrorKind, Hello, Request, Response, Service, WireError};

const PAGES: usize = 64;

/// A RAM file: even pages hold a pattern, odd pages are zero, page 7 is a hole.
fn ram_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; PAGES * 4096];
    for page in (0..PAGES).step_by(2) {
        for (i, b) in bytes[page * 4096..(page + 1) * 4096].iter_mut().enumerate() {
            *b = ((page * 31 + i * 7) % 251) as u8 + 1;
        }
    }
    let path = dir.join("vm1.ram");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// memserv for export vm1 with its event socket, and what a client needs.
struct Running {
    addr: String,
    key: TestKeys,
    events: std::path::PathBuf,
    _server: DesktopServer,
}

fn start(dir: &Path, ram: &Path) -> Running {
    let key = TestKeys::new();
    let events = dir.join("events.sock");
    let mut config = serve_config(Service::Memory, "vm1", &key, "127.0.0.1:0");
    config.events = Some(events.clone());
    let server = DesktopServer::memserv_with(ram, config);
    Running { addr: server.addr.clone(), key, events, _server: server }
}

fn hello() -> Hello {
    Hello::new(Service::Memory, "vm1")
}

fn assemble(chunks: &[Chunk], base: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0xAAu8; len];
    for c in chunks {
        let at = (c.offset() - base) as usize;
        match c {
            Chunk::Bytes { data, .. } => out[at..at + data.len()].copy_from_slice(data),
            Chunk::Zero { len, .. } => out[at..at + *len as usize].fill(0),
        }
    }
    out
}

#[test]
fn serves_every_byte_and_marks_zero_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, bytes) = ram_file(dir.path());
    let before = std::fs::read(&ram).unwrap();
    let srv = start(dir.path(), &ram);
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    assert_eq!(c.welcome().size, bytes.len() as u64);
    assert_eq!(c.welcome().unit, 4096);

    let whole = [ByteRange::new(0, bytes.len() as u32)];
    let chunks = c.read(&whole).unwrap();
    assert_eq!(assemble(&chunks, 0, bytes.len()), bytes);
    let zero_bytes: u64 = chunks.iter().filter(|c| matches!(c, Chunk::Zero { .. })).map(Chunk::len).sum();
    assert_eq!(zero_bytes, (PAGES as u64 / 2) * 4096, "every odd page is sent as a zero marker");
    let wire_bytes: u64 = chunks.iter().filter(|c| matches!(c, Chunk::Bytes { .. })).map(Chunk::len).sum();
    assert_eq!(wire_bytes, (PAGES as u64 / 2) * 4096);

    // Many ranges in one request, unaligned ones too.
    let ranges = [ByteRange::new(4096 * 2 + 17, 100), ByteRange::new(4096 * 9 - 5, 10), ByteRange::new(0, 1)];
    let chunks = c.read(&ranges).unwrap();
    let mut at = 0;
    for r in ranges {
        let piece: Vec<Chunk> =
            chunks.iter().filter(|ch| ch.offset() >= r.offset && ch.offset() < r.end().unwrap()).cloned().collect();
        assert_eq!(assemble(&piece, r.offset, r.len as usize), bytes[r.offset as usize..r.end().unwrap() as usize]);
        at += piece.len();
    }
    assert_eq!(at, chunks.len());
    drop(c);
    drop(srv);
    assert_eq!(std::fs::read(&ram).unwrap(), before, "memserv changed the RAM file");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, bytes) = ram_file(dir.path());
    let srv = start(dir.path(), &ram);
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    for id in 0..PAGES as u64 {
        c.send(&Request::read(id, vec![ByteRange::new(id * 4096, 4096)])).unwrap();
    }
    for id in 0..PAGES as u64 {
        let Response::Data { id: got, chunks } = c.recv().unwrap() else { panic!("error reply") };
        assert_eq!(got, id);
        assert_eq!(assemble(&chunks, id * 4096, 4096), bytes[id as usize * 4096..(id as usize + 1) * 4096]);
    }
}

#[test]
fn bad_requests_get_error_replies_and_the_connection_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, bytes) = ram_file(dir.path());
    let srv = start(dir.path(), &ram);
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    let err = c.read(&[ByteRange::new(bytes.len() as u64 - 10, 4096)]).unwrap_err();
    assert!(matches!(err, WireError::Remote { kind: ErrorKind::OutOfRange, .. }), "{err}");
    let err = c.read(&[ByteRange::new(0, 0)]).unwrap_err();
    assert!(matches!(err, WireError::Remote { kind: ErrorKind::TooLarge, .. }), "{err}");
    // Same connection still works.
    let chunks = c.read(&[ByteRange::new(0, 4096)]).unwrap();
    assert_eq!(assemble(&chunks, 0, 4096), bytes[..4096]);
}

#[test]
fn hostile_peers_do_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, _) = ram_file(dir.path());
    let srv = start(dir.path(), &ram);

    // Garbage instead of a preamble.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "answered garbage with {buf:?}");

    // A valid preamble, then garbage where the Noise message should be.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.write_all(&Preamble::client().encode()).unwrap();
    s.write_all(&[5, 0, 1, 2, 3, 4, 5]).unwrap();
    let mut buf = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(
        buf.len(),
        8 + wire::secure::auth_failed_record().len(),
        "the preamble answer and the clear auth-failed record, then closed"
    );
    assert!(buf.ends_with(b"JTAUTHFAIL"), "{buf:?}");

    // A wrong version gets the server's version and is closed.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    let mut p = Preamble::client().encode();
    p[4] = 99;
    s.write_all(&p).unwrap();
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer).unwrap();
    let answer = Preamble::decode(&answer).unwrap();
    assert_eq!(answer.version, wire::protocol::VERSION);
    assert_eq!(answer.word, 1, "status is VersionRefused");

    // A client with another key: see a_client_whose_key_is_not_enrolled_is_told_it_is_the_key.

    // Another export or service is refused with the reason.
    let other = Hello::new(Service::Memory, "vm2");
    let err = Client::connect(&srv.addr, &srv.key.server(), None, &other, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, WireError::Refused { .. }), "{err}");
    let disk = Hello::new(Service::Disk, "vm1");
    assert!(matches!(
        Client::connect(&srv.addr, &srv.key.server(), None, &disk, Duration::from_secs(5)),
        Err(WireError::Refused { .. })
    ));

    // And a good client is still served.
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    assert!(c.read(&[ByteRange::new(0, 4096)]).is_ok());
}

/// In a fleet, memserv serves only the stay's fencing token: a server that
/// presents another (one that lost the VM's claim in etcd, or none) gets
/// nothing, not even the RAM's size.
#[test]
fn only_the_stays_fencing_token_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, _) = ram_file(dir.path());
    let key = TestKeys::new();
    let config = ServeConfig { fence: Some(56), ..serve_config(Service::Memory, "vm1", &key, "127.0.0.1:0") };
    let server = DesktopServer::memserv_with(&ram, config);
    let connect = |fence| {
        let hello = Hello::new(Service::Memory, "vm1").with_fence(fence);
        Client::connect(&server.addr, &key.server(), None, &hello, Duration::from_secs(5))
    };
    for stale in [Some(55), None, Some(57)] {
        let refused = connect(stale).unwrap_err();
        assert!(
            matches!(&refused, WireError::Refused { reason, .. } if reason.contains("fencing token") && reason.contains("(56)")),
            "{stale:?}: {refused}"
        );
    }
    let mut client = connect(Some(56)).unwrap();
    assert!(client.read(&[ByteRange::new(0, 4096)]).is_ok());
}

#[test]
fn every_request_is_reported_on_the_event_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, _) = ram_file(dir.path());
    let srv = start(dir.path(), &ram);
    let mut events = subscribe(&srv.events).unwrap();
    // Give the loop a moment to accept the listener before traffic starts.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    c.read(&[ByteRange::new(0, 8192), ByteRange::new(4096 * 10, 4096)]).unwrap();
    let _ = c.read(&[ByteRange::new(u64::MAX - 1, 1)]);
    drop(c);
    let got: Vec<_> = events.by_ref().take(4).map(Result::unwrap).collect();
    assert_eq!(got[0].kind, EventKind::Connected);
    assert_eq!(got[1].kind, EventKind::Request);
    assert_eq!((got[1].ranges, got[1].bytes), (2, 12288));
    assert_eq!(got[1].export, "vm1");
    assert_eq!(got[1].service, "memory");
    assert_eq!(got[2].kind, EventKind::Rejected);
    assert_eq!(got[3].kind, EventKind::Disconnected);
}

#[test]
fn missing_ram_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials: TestKeys::new().desktop(),
        service: Service::Memory,
        export: "vm1".into(),
        events: None,
        fence: None,
    };
    let err = memserv::bind(&dir.path().join("nope.ram"), config).unwrap_err();
    let text = wire::chain(&err);
    assert!(text.contains("nope.ram") && text.contains("is the VM stopped"), "{text}");
}

#[test]
fn a_client_whose_key_is_not_enrolled_is_told_it_is_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ram, _) = ram_file(dir.path());
    let srv = start(dir.path(), &ram);
    // A stranger, another office's server, and a desktop (as a thief of a
    // desktop's key would be): none is an enrolled server here.
    for credentials in [TestKeys::stranger(), TestKeys::new().server(), srv.key.desktop()] {
        let err = Client::connect(&srv.addr, &credentials, None, &hello(), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, WireError::AuthFailed), "a key not enrolled looked like {err:?}");
        assert!(err.to_string().contains("does not accept this host's key"), "{err}");
    }
    // And the right key is served as before.
    let mut c = Client::connect(&srv.addr, &srv.key.server(), None, &hello(), Duration::from_secs(5)).unwrap();
    c.read(&[ByteRange::new(0, 4096)]).unwrap();
}
