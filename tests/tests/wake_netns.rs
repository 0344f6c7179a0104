//! Wake-on-LAN across network namespaces: an office LAN (a bridge in its
//! own namespace) joining a desktop and a server. The desktop runs the real
//! `jettison memserv` and sleeps in emulated S3 (daemons stopped, address
//! gone, a raw socket listening for magic packets). The server reads pages
//! through a `RemoteImage` whose wake hook is remote-wakeup's
//! `DesktopWaker`: the read sends a magic packet, the desktop's listener
//! hears a valid one for its MAC and resumes, and the page is served.
//!
//! Root only (namespaces, veth, a bridge, AF_PACKET); skipped with a reason
//! elsewhere. Every namespace is made here with a unique name and deleted by
//! a guard, whatever happens.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use memmap2::MmapOptions;
use memtap::{Mount, RamFileConfig};
use migration_formats::zero_map;
use qemu_driver::{resume, save_device_state, VmSpec};
use remote_wakeup::{netns, DesktopWaker, EmulatedS3, Mac, S3Config, S3State, WakeTarget};
use tests::netns::office::{BROADCAST, DESKTOP_CIDR, MEMSERV, SERVER_CIDR};
use tests::netns::{Daemon, Host, Lan};
use tests::TestKeys;
use tests::{fuse_available, jettison_binary, skip, BOOT_TIMEOUT, COUNT_TIMEOUT};
use wire::{ByteRange, Chunk, Hello, RemoteConfig, RemoteImage, Service, WakeHook};

const PAGE: usize = 4096;
const PAGES: usize = 256;
const DESKTOP_MAC: Mac = Mac([0x02, 0x4a, 0x57, 0x00, 0x00, 0x02]);
/// Bound on anything that should happen within seconds.
const WAIT: Duration = Duration::from_secs(60);

/// The office: the desktop and the server on a bridge, both as `eth0` on
/// 10.77.0.0/24.
#[derive(Debug)]
struct Office {
    lan: Lan,
}

impl Office {
    fn build() -> Office {
        let mac = DESKTOP_MAC.to_string();
        let desktop = Host { role: "desktop", cidr: DESKTOP_CIDR, mac: Some(&mac) };
        let server = Host { role: "server", cidr: SERVER_CIDR, mac: None };
        Office { lan: Lan::build(&[desktop, server]) }
    }

    fn desktop(&self) -> &str {
        self.lan.host(0)
    }

    fn server(&self) -> &str {
        self.lan.host(1)
    }
}

/// The desktop's RAM file: page p filled with bytes derived from p.
fn desktop_ram(dir: &Path) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..PAGES * PAGE).map(|i| ((i / PAGE * 7 + i) % 251) as u8 + 1).collect();
    let path = dir.join("vm1.ram");
    std::fs::File::create(&path).unwrap().write_all_at(&bytes, 0).unwrap();
    (path, bytes)
}

/// Everything a scenario needs; torn down in reverse order (the desktop
/// resumed, memserv killed, then the namespaces deleted).
struct Scenario {
    s3: EmulatedS3,
    waker: Arc<DesktopWaker>,
    remote: RemoteConfig,
    bytes: Vec<u8>,
    events: PathBuf,
    _memserv: Daemon,
    office: Office,
    dir: tempfile::TempDir,
}

impl Scenario {
    fn start(raw_frames: bool) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let (ram, bytes) = desktop_ram(dir.path());
        Scenario::start_with(raw_frames, dir, &ram, bytes)
    }

    /// As [`Scenario::start`], memserv serving `ram` (whose contents are
    /// `bytes`, if the test compares them) in `dir`.
    fn start_with(raw_frames: bool, dir: tempfile::TempDir, ram: &Path, bytes: Vec<u8>) -> Scenario {
        let office = Office::build();
        let key = TestKeys::new();
        let (key_path, _) = key.write(dir.path());
        let events = dir.path().join("memserv.events");
        let memserv = Daemon::memserv(office.desktop(), office.server(), dir.path(), ram, &key_path, &events);
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", memserv.pid())).unwrap();
        assert_eq!(comm.trim(), "jettison", "the child is memserv itself, not a wrapper");

        let s3 = EmulatedS3::start(S3Config {
            netns: Some(office.desktop().to_owned()),
            interface: "eth0".into(),
            address: DESKTOP_CIDR.into(),
            mac: DESKTOP_MAC,
            pids: vec![memserv.pid()],
            suspend_time: Duration::from_millis(500),
            resume_time: Duration::from_secs(1),
        })
        .unwrap();

        let broadcast: IpAddr = BROADCAST.parse().unwrap();
        let mut config = WakeTarget::new("desktop1", DESKTOP_MAC, broadcast, MEMSERV.parse().unwrap());
        config.probe_timeout = Duration::from_millis(300);
        if raw_frames {
            config.raw_interface = Some("eth0".into());
        }
        let waker = Arc::new(DesktopWaker::new(config));

        let mut remote = RemoteConfig::new(MEMSERV, key.server(), Hello::new(Service::Memory, "vm1"));
        remote.timeout = Duration::from_secs(2);
        remote.max_backoff = Duration::from_millis(200);
        remote.give_up_after = Some(WAIT);
        Scenario { s3, waker, remote, bytes, events, _memserv: memserv, office, dir }
    }

    /// The waker as the hook memtap and cownetdisk are given.
    fn hook(&self) -> Arc<dyn WakeHook> {
        Arc::clone(&self.waker) as Arc<dyn WakeHook>
    }

    /// The desktop's RAM as the server reads it, connected from the
    /// server's namespace.
    fn remote_image(&self) -> RemoteImage {
        let remote = self.remote.clone();
        netns::run_in(Some(self.office.server()), || RemoteImage::connect(remote, self.hook())).unwrap().unwrap()
    }

    /// Reads `pages` of `image` from the server's namespace (the calling
    /// thread enters it for good) and checks every byte.
    fn read_and_check(&self, image: &RemoteImage, pages: std::ops::Range<usize>) {
        netns::enter(self.office.server()).unwrap();
        let range = ByteRange::new((pages.start * PAGE) as u64, (pages.len() * PAGE) as u32);
        let chunks = image.read(&[range]).unwrap();
        let mut got = Vec::new();
        for chunk in chunks {
            match chunk {
                Chunk::Bytes { data, .. } => got.extend_from_slice(&data),
                Chunk::Zero { len, .. } => got.resize(got.len() + len as usize, 0),
            }
        }
        assert!(got == self.bytes[pages.start * PAGE..pages.end * PAGE], "pages {pages:?} differ from the RAM file");
    }

    /// Reads `pages` on a thread of its own (it enters the server's
    /// namespace, which the calling thread must not).
    fn read_on_server(&self, image: &RemoteImage, pages: std::ops::Range<usize>) {
        std::thread::scope(|s| s.spawn(|| self.read_and_check(image, pages)).join().unwrap());
    }

    fn wait_for_sleep(&self, suspends: u64) {
        let asleep = self.s3.wait_until(WAIT, |state, stats| state == S3State::Asleep && stats.suspends == suspends);
        assert!(asleep, "the desktop did not fall asleep (state {}, {:?})", self.s3.state(), self.s3.stats());
    }

    /// The listener heard exactly the magic packets the waker sent, and no
    /// suspend or resume step failed.
    fn check_packets_and_errors(&self) {
        eprintln!("server: {:?}; desktop: {:?}", self.waker.status(), self.s3.stats());
        let sent = self.waker.stats().magic_packets;
        let heard = self.s3.wait_until(WAIT, |_, stats| stats.magic_packets >= sent);
        assert!(heard, "the desktop heard {:?} of {sent} magic packets", self.s3.stats());
        assert_eq!(self.s3.stats().magic_packets, sent);
        assert_eq!(self.s3.last_error(), None);
    }
}

#[test]
fn concurrent_reads_of_a_sleeping_desktop_wake_it_once() {
    if let Err(why) = tests::netns::available() {
        return skip(why);
    }
    let scenario = Scenario::start(false);
    let image = scenario.remote_image();
    scenario.s3.suspend();
    scenario.wait_for_sleep(1);

    const READERS: usize = 4;
    let barrier = Barrier::new(READERS);
    std::thread::scope(|s| {
        for reader in 0..READERS {
            let (scenario, barrier, image) = (&scenario, &barrier, &image);
            s.spawn(move || {
                barrier.wait();
                scenario.read_and_check(image, reader * 16..reader * 16 + 16);
            });
        }
    });

    let wakes = scenario.waker.stats();
    assert_eq!(wakes.wakes, 1, "one wake for {READERS} concurrent readers: {wakes:?}");
    assert_eq!(wakes.failed_wakes, 0);
    assert!(wakes.magic_packets >= 1);
    assert_eq!(scenario.s3.stats().resumes, 1);
    assert_eq!(scenario.s3.state(), S3State::On);
    scenario.check_packets_and_errors();
}

#[test]
fn desktop_sleeps_after_t_w_without_requests_and_each_later_read_wakes_it() {
    if let Err(why) = tests::netns::available() {
        return skip(why);
    }
    let mut scenario = Scenario::start(true);
    let image = scenario.remote_image();
    let t_w = Duration::from_secs(2);
    let events = scenario.events.clone();
    scenario.s3.suspend_when_idle(&events, t_w).unwrap();

    for round in 1..=2u64 {
        scenario.wait_for_sleep(round);
        scenario.read_on_server(&image, 0..PAGES);
        let stats = scenario.waker.stats();
        assert_eq!(stats.wakes, round, "{stats:?}");
        assert_eq!(scenario.s3.stats().resumes, round);
        // Each wake sends the UDP datagram and the raw 0x0842 frame.
        assert_eq!(stats.magic_packets % 2, 0, "{stats:?}");
    }
    assert_eq!(scenario.waker.stats().failed_wakes, 0);
    scenario.check_packets_and_errors();
}

#[test]
fn a_memtap_page_fault_on_a_sleeping_desktop_wakes_it_and_is_served() {
    if let Err(why) = tests::netns::available().and_then(|()| fuse_available()) {
        return skip(why);
    }
    let mut scenario = Scenario::start(false);
    let mnt = scenario.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut config = RamFileConfig::new("vm1", scenario.dir.path().join("slices"), scenario.remote.clone());
    config.wake = scenario.hook();
    // memtap's FUSE and fetch threads are started from a thread in the
    // server's namespace, so they fetch from there.
    let mount = netns::run_in(Some(scenario.office.server()), || Mount::start(&mnt, vec![config])).unwrap().unwrap();
    let events = scenario.events.clone();
    scenario.s3.suspend_when_idle(&events, Duration::from_secs(2)).unwrap();

    let file = std::fs::File::open(mnt.join("vm1.ram")).unwrap();
    // SAFETY: a read-only view of the test's own memtap file.
    let map = unsafe { MmapOptions::new().map(&file) }.unwrap();
    // Pages far apart, so that neither is in the other's prefetch window.
    for (round, page) in [(1u64, 10usize), (2, 200)] {
        scenario.wait_for_sleep(round);
        assert!(map[page * PAGE..(page + 1) * PAGE] == scenario.bytes[page * PAGE..(page + 1) * PAGE], "page {page}");
        assert_eq!(scenario.waker.stats().wakes, round);
        assert_eq!(scenario.s3.stats().resumes, round);
    }
    let stats: memtap::RamStats = serde_json::from_slice(&std::fs::read(mnt.join("vm1.stats")).unwrap()).unwrap();
    assert!(stats.remote_fetches >= 2, "{stats:?}");
    drop(map);
    drop(file);
    mount.unmount().unwrap();
    scenario.check_packets_and_errors();
}

#[test]
fn the_wake_command_wakes_a_sleeping_desktop_and_says_how_long() {
    if let Err(why) = tests::netns::available() {
        return skip(why);
    }
    let scenario = Scenario::start(false);
    scenario.s3.suspend();
    scenario.wait_for_sleep(1);
    let out = Command::new("ip")
        .args(["netns", "exec", scenario.office.server()])
        .arg(jettison_binary())
        .args(["wake", "--name", "desktop1", "--mac", &DESKTOP_MAC.to_string(), "--broadcast", BROADCAST])
        .args(["--interface", "eth0", "--raw", "--probe", MEMSERV, "--timeout", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "jettison wake failed: {}", String::from_utf8_lossy(&out.stderr));
    // "wake: desktop1 (02:4a:..) answered on 10.77.0.2:7410 after 1.1 s and 2 magic packet(s)"
    assert!(stdout.contains(&format!("desktop1 ({DESKTOP_MAC}) answered on {MEMSERV} after")), "{stdout}");
    let packets: u64 = stdout
        .split(" and ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {stdout:?}"));
    assert!(packets >= 2 && packets % 2 == 0, "each round is a UDP datagram and a raw frame: {stdout}");
    assert!(scenario.s3.wait_until(WAIT, |_, stats| stats.magic_packets >= packets));
    assert_eq!(scenario.s3.stats().magic_packets, packets);
    assert_eq!(scenario.s3.stats().resumes, 1);
    assert_eq!(scenario.s3.state(), S3State::On);
}

#[test]
fn a_guest_on_memtap_wakes_its_sleeping_desktop_and_runs_on() {
    let guest = match tests::guest() {
        Ok(g) => g,
        Err(why) => return skip(why),
    };
    if let Err(why) = tests::netns::available().and_then(|()| fuse_available()) {
        return skip(why);
    }
    const RAM_MIB: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let desktop_ram = dir.path().join("desktop-vm1.ram");
    let state = dir.path().join("vm1.state");

    // On the desktop: boot, count, stop and save the descriptor.
    let count_at_stop = {
        let mut desktop =
            VmSpec::new(&guest, &desktop_ram, dir.path().join("desktop-run")).memory_mib(RAM_MIB).spawn().unwrap();
        desktop.wait_for_line("JTREADY", BOOT_TIMEOUT).unwrap();
        desktop.wait_for_count_above(3, COUNT_TIMEOUT).unwrap();
        let mut qmp = desktop.connect_qmp().unwrap();
        save_device_state(&mut qmp, &state).unwrap();
        *desktop.serial().counts().unwrap().last().unwrap()
    };
    let zeros = zero_map::scan_file(&desktop_ram, memtap::PAGE_SIZE as u32).unwrap();

    // The desktop serves its RAM from its namespace, then falls asleep.
    let scenario = Scenario::start_with(false, dir, &desktop_ram, Vec::new());
    let mnt = scenario.dir.path().join("memtap");
    std::fs::create_dir(&mnt).unwrap();
    let mut config = RamFileConfig::new("vm1", scenario.dir.path().join("slices"), scenario.remote.clone());
    config.zero_pages = zeros;
    config.wake = scenario.hook();
    let mount = netns::run_in(Some(scenario.office.server()), || Mount::start(&mnt, vec![config])).unwrap().unwrap();
    scenario.s3.suspend();
    scenario.wait_for_sleep(1);

    // On the server: the guest resumes on memtap; its first fault wakes the
    // desktop.
    {
        let spec = VmSpec::new(&guest, mnt.join("vm1.ram"), scenario.dir.path().join("server-run")).memory_mib(RAM_MIB);
        let (mut server, qmp) = resume(spec, &state).unwrap();
        let reached = server.wait_for_count_above(count_at_stop + 5, COUNT_TIMEOUT).unwrap();
        eprintln!("counter went on from {count_at_stop} to {reached} after waking the desktop");
        let stats = mount.vms()[0].stats();
        eprintln!("{}", stats.summary());
        assert!(stats.remote_fetches > 0, "the guest never fetched from the desktop: {stats:?}");
        drop(qmp);
        // QEMU is killed here, before memtap unmounts.
    }
    assert_eq!(scenario.waker.stats().wakes, 1, "{:?}", scenario.waker.stats());
    assert_eq!(scenario.s3.stats().resumes, 1);
    mount.unmount().unwrap();
    scenario.check_packets_and_errors();
}
