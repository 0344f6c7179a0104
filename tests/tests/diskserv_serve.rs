//! diskserv on loopback with real clients: every block of the image, zero
//! runs as markers at the chosen block size, the disk service only, the
//! event stream, the image left untouched, and a VM's several disks on one
//! port, each under its own export.
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_server::events::{subscribe, EventKind};
use image_server::ServeConfig;
use tests::TestKeys;
use tests::{serve_config, DesktopServer};
use wire::{ByteRange, Chunk, Client, Hello, Service, WireError};

const BLOCK: usize = 65536;
const BLOCKS: usize = 24;

/// A disk image whose every third block is zero, the rest patterned.
fn disk_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; BLOCKS * BLOCK];
    for (i, b) in bytes.iter_mut().enumerate() {
        if (i / BLOCK) % 3 != 0 {
            *b = ((i / 7) % 253) as u8 + 1;
        }
    }
    let path = dir.join("vm1.raw");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// diskserv for export vm1 with its event socket, and what a client needs.
struct Running {
    addr: String,
    key: TestKeys,
    events: PathBuf,
    _server: DesktopServer,
}

fn config(key: &TestKeys, service: Service, events: Option<PathBuf>) -> ServeConfig {
    ServeConfig { events, ..serve_config(service, "vm1", key, "127.0.0.1:0") }
}

fn start(dir: &Path, image: &Path) -> Running {
    let key = TestKeys::new();
    let events = dir.join("events.sock");
    let server = DesktopServer::diskserv_with(image, config(&key, Service::Disk, Some(events.clone())), BLOCK as u32);
    Running { addr: server.addr.clone(), key, events, _server: server }
}

fn hello(service: Service) -> Hello {
    Hello::new(service, "vm1")
}

#[test]
fn serves_every_block_with_zero_runs_as_markers() {
    let dir = tempfile::tempdir().unwrap();
    let (image, bytes) = disk_image(dir.path());
    let before = std::fs::read(&image).unwrap();
    let srv = start(dir.path(), &image);
    let mut c =
        Client::connect(&srv.addr, &srv.key.server(), None, &hello(Service::Disk), Duration::from_secs(5)).unwrap();
    assert_eq!((c.welcome().size, c.welcome().unit), (bytes.len() as u64, BLOCK as u32));

    let mut got = vec![0xAAu8; bytes.len()];
    let mut zero_bytes = 0;
    for chunk in c.read(&[ByteRange::new(0, bytes.len() as u32)]).unwrap() {
        let at = chunk.offset() as usize;
        match chunk {
            Chunk::Bytes { data, .. } => got[at..at + data.len()].copy_from_slice(&data),
            Chunk::Zero { len, .. } => {
                got[at..at + len as usize].fill(0);
                zero_bytes += len as usize;
            }
        }
    }
    assert!(got == bytes, "served bytes differ from the image");
    assert_eq!(zero_bytes, BLOCKS / 3 * BLOCK, "every zero block travels as a marker");
    drop(c);
    drop(srv);
    assert_eq!(std::fs::read(&image).unwrap(), before, "diskserv changed the image");
}

#[test]
fn only_the_disk_service_is_offered_and_requests_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = disk_image(dir.path());
    let srv = start(dir.path(), &image);
    let mut events = subscribe(&srv.events).unwrap();
    // Give the loop a moment to accept the listener before traffic starts.
    std::thread::sleep(Duration::from_millis(200));
    let err = Client::connect(&srv.addr, &srv.key.server(), None, &hello(Service::Memory), Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(err, WireError::Refused { .. }), "{err}");
    let mut c =
        Client::connect(&srv.addr, &srv.key.server(), None, &hello(Service::Disk), Duration::from_secs(5)).unwrap();
    c.read(&[ByteRange::new(BLOCK as u64, 4096)]).unwrap();
    let got: Vec<_> = events.by_ref().take(2).map(Result::unwrap).collect();
    assert_eq!(got[0].kind, EventKind::Connected);
    assert_eq!((got[1].kind, got[1].service.as_str(), got[1].bytes), (EventKind::Request, "disk", 4096));
}

#[test]
fn a_wrong_service_or_missing_image_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = disk_image(dir.path());
    let key = TestKeys::new();
    let err = diskserv::bind(&image, config(&key, Service::Memory, None), 4096).unwrap_err();
    assert!(matches!(err, diskserv::DiskservError::Service { .. }), "{err}");
    let err = diskserv::bind(&dir.path().join("gone.raw"), config(&key, Service::Disk, None), 4096).unwrap_err();
    let text = wire::chain(&err);
    assert!(text.contains("gone.raw") && text.contains("is the VM stopped"), "{text}");
    let mut server = diskserv::bind(&image, config(&key, Service::Disk, None), 4096).unwrap();
    let err = diskserv::add_disk(&mut server, "vm1".into(), &image, 4096).unwrap_err();
    assert!(wire::chain(&err).contains("export \"vm1\" is already served"), "{}", wire::chain(&err));
}

#[test]
fn a_vms_disks_are_served_on_one_port_each_under_its_export_and_no_other_name() {
    let dir = tempfile::tempdir().unwrap();
    let (first, bytes) = disk_image(dir.path());
    let second = dir.path().join("vm1-data.raw");
    std::fs::write(&second, vec![0x5au8; 3 * BLOCK]).unwrap();
    let key = TestKeys::new();
    // The desktop daemon names them with daemon_protocol::disk_export.
    let more = [("vm1.1".to_owned(), second.as_path())];
    let server = DesktopServer::diskserv_disks(&first, &more, config(&key, Service::Disk, None), BLOCK as u32);
    let connect = |export: &str| {
        let hello = Hello::new(Service::Disk, export);
        Client::connect(&server.addr, &key.server(), None, &hello, Duration::from_secs(5))
    };
    let mut disk1 = connect("vm1").unwrap();
    let mut disk2 = connect("vm1.1").unwrap();
    assert_eq!(disk1.welcome().size, bytes.len() as u64, "the VM's name is its first disk");
    assert_eq!(disk2.welcome().size, 3 * BLOCK as u64, "vm1.1 is its second");
    let read = |client: &mut Client| match client.read(&[ByteRange::new(BLOCK as u64, 16)]).unwrap().remove(0) {
        Chunk::Bytes { data, .. } => data,
        Chunk::Zero { len, .. } => vec![0; len as usize],
    };
    assert_eq!(read(&mut disk1), bytes[BLOCK..BLOCK + 16]);
    assert_eq!(read(&mut disk2), vec![0x5a; 16]);
    // Names are matched whole, never parsed: no third disk, no path, no other VM.
    for export in ["vm1.2", "vm1.01", "vm1.1/../vm1", "vm1-data.raw", "vm2", "vm1."] {
        let err = connect(export).unwrap_err();
        assert!(matches!(err, WireError::Refused { .. }), "{export}: {err}");
    }
}
