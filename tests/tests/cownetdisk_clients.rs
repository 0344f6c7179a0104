//! cownetdisk in front of diskserv on loopback, driven by real NBD clients
//! (`nbdinfo`, `nbdcopy`, `qemu-io`) and by hand-made requests: every byte
//! reads as the desktop's image; writes read back and never reach the
//! desktop; whole-block writes fetch nothing and a partial write fetches
//! its block once; flushed writes survive `kill -9`; bad requests get error
//! replies or lose only their own connection.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cownetdisk::protocol::{
    ClientFlags, ClientOption, Command as NbdCommand, ErrorCode, ExportQuery, Greeting, OptionReply, OptionReplyHeader,
    ReplyType, Request, SimpleReply, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, GREETING_LEN, INFO_BLOCK_SIZE, MAX_PAYLOAD,
    OPTION_REPLY_HEADER_LEN, SIMPLE_REPLY_LEN,
};
use cownetdisk::DiskStats;
use tests::TestKeys;
use tests::{jettison_binary, skip, Cownetdisk, DesktopServer};
use wire::protocol::Preamble;

const BLOCK: usize = 4096;
const BLOCKS: usize = 4096;
const SIZE: usize = BLOCK * BLOCKS; // 16 MiB

/// Whether block `b` of the desktop image is all zeros: every 9th block,
/// and blocks 1000..1100.
fn is_zero_block(b: usize) -> bool {
    b % 9 == 0 || (1000..1100).contains(&b)
}

/// The desktop's disk image: block `b` holds bytes derived from `b` (never
/// zero), except the zero blocks.
fn desktop_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; SIZE];
    for (b, block) in bytes.chunks_mut(BLOCK).enumerate() {
        if !is_zero_block(b) {
            for (i, byte) in block.iter_mut().enumerate() {
                *byte = ((b * 31 + i * 7) % 251) as u8 + 1;
            }
        }
    }
    let path = dir.join("desktop-vm1.raw");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// diskserv on a thread of the test process; stopped on drop.
/// A desktop image served by diskserv, with cownetdisk in front of it, all
/// under one temporary directory. Fields drop in order: servers first, the
/// directory last.
struct Fixture {
    nbd: Cownetdisk,
    diskserv: DesktopServer,
    key: TestKeys,
    bytes: Vec<u8>,
    image: PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (image, bytes) = desktop_image(dir.path());
        let key = TestKeys::new();
        let diskserv = DesktopServer::diskserv(&image, "vm1", &key, "127.0.0.1:0", BLOCK as u32);
        let nbd = Cownetdisk::start(&dir.path().join("state"), &dir.path().join("nbd.sock"), &diskserv, "vm1", &key);
        Fixture { nbd, diskserv, key, bytes, image, dir }
    }

    /// Asserts that the desktop's image still holds exactly what it did.
    fn assert_image_unchanged(&self) {
        assert!(std::fs::read(&self.image).unwrap() == self.bytes, "the desktop's image changed");
    }
}

/// The first of `tools` that is not installed, as a skip reason.
fn missing(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).exists()))
        .map(|tool| format!("{tool} is not installed (apt-get install qemu-utils libnbd-bin)"))
}

/// Runs a client tool, bounded by `timeout(1)` so that a server bug fails
/// the test instead of hanging it; returns stdout and stderr together.
fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout").arg("300").arg(program).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed ({}):\n{text}", out.status);
    text
}

/// Runs `qemu-io -f raw` with `commands` on `uri`; fails on any failed
/// command or pattern mismatch (qemu-io may exit 0 after those).
fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(uri);
    let text = run_tool("qemu-io", &args);
    assert!(!text.contains("Pattern verification failed"), "qemu-io {commands:?}:\n{text}");
    assert!(!text.to_lowercase().contains("failed"), "qemu-io {commands:?}:\n{text}");
    text
}

/// An NBD client made by hand, to send requests no polite tool sends.
struct RawClient {
    stream: TcpStream,
    next_cookie: u64,
}

impl RawClient {
    /// Connects and negotiates with NBD_OPT_GO.
    fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).unwrap();
        // A bound on every read, so that a server bug fails the test.
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut greeting = [0; GREETING_LEN];
        stream.read_exact(&mut greeting).unwrap();
        Greeting::decode(&greeting).unwrap();
        stream.write_all(&ClientFlags::new(true, true).encode()).unwrap();
        let go = ClientOption::Go(ExportQuery { name: "vm1".into(), requests: vec![INFO_BLOCK_SIZE] });
        stream.write_all(&go.encode()).unwrap();
        loop {
            let mut header = [0; OPTION_REPLY_HEADER_LEN];
            stream.read_exact(&mut header).unwrap();
            let header = OptionReplyHeader::decode(&header).unwrap();
            let mut data = vec![0; header.len as usize];
            stream.read_exact(&mut data).unwrap();
            let reply = OptionReply::decode(&header, &data).unwrap();
            assert!(!reply.kind.is_error(), "NBD_OPT_GO refused: {reply:?}");
            if reply.kind == ReplyType::Ack {
                return RawClient { stream, next_cookie: 1 };
            }
        }
    }

    /// Sends a request (and a write's payload); returns its cookie.
    fn send(&mut self, command: u16, flags: u16, offset: u64, length: u32, payload: &[u8]) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let request = Request { flags, kind: command, cookie, offset, length };
        self.stream.write_all(&request.encode()).unwrap();
        self.stream.write_all(payload).unwrap();
        cookie
    }

    /// Reads the next simple reply and checks its cookie.
    fn reply(&mut self, cookie: u64) -> SimpleReply {
        let mut header = [0; SIMPLE_REPLY_LEN];
        self.stream.read_exact(&mut header).unwrap();
        let reply = SimpleReply::decode(&header).unwrap();
        assert_eq!(reply.cookie, cookie);
        reply
    }

    /// Sends a request without payload and returns its reply's error.
    fn request(&mut self, command: NbdCommand, flags: u16, offset: u64, length: u32) -> Option<ErrorCode> {
        let cookie = self.send(command.code(), flags, offset, length, &[]);
        self.reply(cookie).error
    }

    /// Reads `len` bytes at `offset`, which must succeed.
    fn read(&mut self, offset: u64, len: usize) -> Vec<u8> {
        let cookie = self.send(NbdCommand::Read.code(), 0, offset, len as u32, &[]);
        assert_eq!(self.reply(cookie).error, None, "read of {len} bytes at {offset:#x}");
        let mut data = vec![0; len];
        self.stream.read_exact(&mut data).unwrap();
        data
    }

    /// Whether the server has closed the connection.
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

#[test]
fn every_byte_read_through_nbd_equals_the_desktop_image() {
    if let Some(why) = missing(&["nbdinfo", "nbdcopy"]) {
        return skip(why);
    }
    let fx = Fixture::start();
    let size = run_tool("nbdinfo", &["--size", &fx.nbd.tcp_uri()]);
    assert_eq!(size.trim(), SIZE.to_string());
    let info = run_tool("nbdinfo", &[&fx.nbd.unix_uri()]);
    assert!(info.contains("block_size_preferred: 4096") && info.contains("can_multi_conn: true"), "{info}");

    let out = fx.dir.path().join("out.raw");
    run_tool("nbdcopy", &[&fx.nbd.unix_uri(), out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == fx.bytes, "the bytes read through NBD differ from the image");
    let s = fx.nbd.stats();
    let data_blocks = (0..BLOCKS).filter(|&b| !is_zero_block(b)).count() as u64;
    assert_eq!(s.blocks_fetched, BLOCKS as u64, "every block fetched once: {s:?}");
    assert_eq!(s.bytes_fetched, data_blocks * BLOCK as u64, "zero blocks travel as markers: {s:?}");
    assert_eq!((s.dirty_blocks, s.whole_block_writes, s.error_replies), (0, 0, 0), "{s:?}");
    assert!(s.connections >= 3, "nbdcopy uses several connections (CAN_MULTI_CONN): {s:?}");
    fx.assert_image_unchanged();
}

#[test]
fn writes_are_read_back_and_the_desktop_image_is_unchanged() {
    if let Some(why) = missing(&["qemu-io"]) {
        return skip(why);
    }
    let fx = Fixture::start();
    qemu_io(
        &fx.nbd.unix_uri(),
        &[
            "write -P 0xab 4096 8192",
            "read -P 0xab 4096 8192",
            "write -P 0x5a 100000 3000",
            "read -P 0x5a 100000 3000",
            "write -z 1048576 65536",
            "read -P 0 1048576 65536",
        ],
    );
    // Another connection, over TCP, sees the same data.
    qemu_io(&fx.nbd.tcp_uri(), &["read -P 0xab 4096 8192", "read -P 0x5a 100000 3000"]);

    let mut expected = fx.bytes.clone();
    expected[4096..12288].fill(0xab);
    expected[100_000..103_000].fill(0x5a);
    expected[1_048_576..1_114_112].fill(0);
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    assert!(client.read(0, 110_000) == expected[..110_000], "bytes around the writes differ");
    assert!(client.read(1_040_000, 80_000) == expected[1_040_000..1_120_000], "bytes around the zeroes differ");
    let s = fx.nbd.stats();
    assert_eq!(s.requests.write_zeroes, 1, "qemu-io write -z sends NBD_CMD_WRITE_ZEROES: {s:?}");
    fx.assert_image_unchanged();
}

#[test]
fn whole_block_writes_fetch_nothing_and_a_partial_write_fetches_its_block_once() {
    if let Some(why) = missing(&["qemu-io"]) {
        return skip(why);
    }
    let fx = Fixture::start();
    let uri = fx.nbd.unix_uri();

    // 16 aligned whole blocks: promoted without any fetch.
    qemu_io(&uri, &["write -P 0x11 65536 65536"]);
    let s = fx.nbd.stats();
    assert_eq!((s.fetch_calls, s.blocks_fetched, s.partial_write_fetches), (0, 0, 0), "{s:?}");
    assert_eq!((s.whole_block_writes, s.dirty_blocks), (16, 16), "{s:?}");

    // 100 bytes inside block 48: fetched once, then promoted.
    qemu_io(&uri, &["write -P 0x22 200000 100"]);
    let s = fx.nbd.stats();
    assert_eq!((s.fetch_calls, s.blocks_fetched, s.partial_write_fetches, s.dirty_blocks), (1, 1, 1, 17), "{s:?}");

    // More bytes of block 48: it is dirty already, nothing is fetched.
    qemu_io(&uri, &["write -P 0x33 200200 50"]);
    let s = fx.nbd.stats();
    assert_eq!((s.fetch_calls, s.blocks_fetched, s.partial_write_fetches, s.dirty_blocks), (1, 1, 1, 17), "{s:?}");

    // An unaligned write over blocks 73..=75: head and tail fetched in one
    // call, the middle block promoted whole.
    qemu_io(&uri, &["write -P 0x44 300000 10000"]);
    let s = fx.nbd.stats();
    assert_eq!((s.fetch_calls, s.blocks_fetched, s.partial_write_fetches), (2, 3, 3), "{s:?}");
    assert_eq!((s.whole_block_writes, s.dirty_blocks), (17, 20), "{s:?}");

    let mut expected = fx.bytes.clone();
    expected[65536..131_072].fill(0x11);
    expected[200_000..200_100].fill(0x22);
    expected[200_200..200_250].fill(0x33);
    expected[300_000..310_000].fill(0x44);
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    assert!(client.read(0, 320_000) == expected[..320_000], "the blocks around the writes differ");
    fx.assert_image_unchanged();
}

/// A daemon process, killed (SIGKILL) on drop if still running.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `jettison cownetdisk` and waits for its socket.
    fn cownetdisk(jettison: &Path, fx: &Fixture, keys: &tests::keys::KeyFiles, socket: &Path, log: PathBuf) -> Daemon {
        let state = fx.dir.path().join("state-process");
        let args = [
            "cownetdisk",
            "--vm",
            "vm1",
            "--desktop",
            &fx.diskserv.addr,
            "--state-dir",
            state.to_str().unwrap(),
            "--unix",
            socket.to_str().unwrap(),
        ];
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(jettison)
            .args(args)
            .args(keys.args())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, log };
        // Not a timing threshold: a bound on waiting for the socket, far
        // beyond what starting takes, so that a broken start fails.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !socket.exists() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("cownetdisk exited ({status}):\n{}", daemon.log());
            }
            assert!(Instant::now() < deadline, "cownetdisk made no socket:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9, and wait for the process to be gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn flushed_writes_survive_kill_9_and_a_restart() {
    if let Some(why) = missing(&["qemu-io", "nbdcopy"]) {
        return skip(why);
    }
    let jettison = jettison_binary();
    let fx = Fixture::start();
    let (_, key) = fx.key.write(fx.dir.path());
    let socket = fx.dir.path().join("process.sock");
    let uri = format!("nbd+unix:///?socket={}", socket.display());

    let mut daemon = Daemon::cownetdisk(&jettison, &fx, &key, &socket, fx.dir.path().join("first.log"));
    qemu_io(&uri, &["write -P 0xcd 1048576 12288", "write -P 0xce 2000000 100", "flush"]);
    daemon.kill();
    std::fs::remove_file(&socket).unwrap(); // so that the wait below sees the new one

    let _daemon = Daemon::cownetdisk(&jettison, &fx, &key, &socket, fx.dir.path().join("second.log"));
    qemu_io(&uri, &["read -P 0xcd 1048576 12288", "read -P 0xce 2000000 100"]);
    let mut expected = fx.bytes.clone();
    expected[1_048_576..1_060_864].fill(0xcd);
    expected[2_000_000..2_000_100].fill(0xce);
    let out = fx.dir.path().join("after.raw");
    run_tool("nbdcopy", &[&uri, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == expected, "after the restart the disk differs from what was written");
    fx.assert_image_unchanged();
}

#[test]
fn a_request_with_a_bad_magic_ends_only_its_own_connection() {
    let fx = Fixture::start();
    let mut bystander = RawClient::connect(fx.nbd.tcp_addr());
    let mut offender = RawClient::connect(fx.nbd.tcp_addr());
    let mut garbage = Request::new(NbdCommand::Read, 0, 1, 0, 4096).encode();
    garbage[..4].copy_from_slice(b"GET ");
    offender.stream.write_all(&garbage).unwrap();
    assert!(offender.is_closed(), "a request with a bad magic must end its connection");

    assert!(bystander.read(8192, 4096) == fx.bytes[8192..12288], "the other client is still served");
    let mut newcomer = RawClient::connect(fx.nbd.tcp_addr());
    assert!(newcomer.read(0, 4096) == fx.bytes[..4096], "new clients are still served");
    assert_eq!(fx.nbd.stats().dropped_connections, 1);
}

#[test]
fn requests_past_the_end_are_refused_and_the_connection_stays_up() {
    let fx = Fixture::start();
    let size = SIZE as u64;
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    assert_eq!(client.request(NbdCommand::Read, 0, size - 4096, 8192), Some(ErrorCode::Inval));
    assert_eq!(client.request(NbdCommand::Read, 0, u64::MAX - 1, 4096), Some(ErrorCode::Inval), "offset overflow");
    let cookie = client.send(NbdCommand::Write.code(), 0, size - 100, 200, &[0xEE; 200]);
    assert_eq!(client.reply(cookie).error, Some(ErrorCode::NoSpc), "a write past the end is ENOSPC");
    assert_eq!(client.request(NbdCommand::WriteZeroes, 0, size, 4096), Some(ErrorCode::NoSpc));
    assert_eq!(client.request(NbdCommand::Trim, 0, size - 4096, 8192), Some(ErrorCode::Inval));

    // Nothing was written, and the connection still works.
    assert!(client.read(size - 4096, 4096) == fx.bytes[SIZE - 4096..], "the last block changed");
    let s = fx.nbd.stats();
    assert_eq!((s.error_replies, s.dirty_blocks, s.dropped_connections), (5, 0, 0), "{s:?}");
}

#[test]
fn bad_values_get_einval_and_an_oversized_write_closes_only_its_connection() {
    let fx = Fixture::start();
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    assert_eq!(client.request(NbdCommand::Read, 0, 0, MAX_PAYLOAD + 1), Some(ErrorCode::Inval), "too long a read");
    assert_eq!(client.request(NbdCommand::WriteZeroes, 0, 0, MAX_PAYLOAD + 1), Some(ErrorCode::Inval));
    for unknown in [5, 7, 0xff] {
        let cookie = client.send(unknown, 0, 0, 4096, &[]);
        assert_eq!(client.reply(cookie).error, Some(ErrorCode::Inval), "unknown command {unknown}");
    }
    assert_eq!(client.request(NbdCommand::Read, CMD_FLAG_NO_HOLE, 0, 512), Some(ErrorCode::Inval), "bad flag");
    assert_eq!(client.request(NbdCommand::Flush, 0, 4096, 0), Some(ErrorCode::Inval), "flush with an offset");
    // A write with a bad flag: refused, and its payload skipped in step.
    let cookie = client.send(NbdCommand::Write.code(), 1 << 2, 0, 4096, &[0xEE; 4096]);
    assert_eq!(client.reply(cookie).error, Some(ErrorCode::Inval));
    // FUA is accepted on every command; TRIM is a hint that changes nothing.
    assert_eq!(client.request(NbdCommand::Flush, CMD_FLAG_FUA, 0, 0), None);
    assert_eq!(client.request(NbdCommand::Trim, CMD_FLAG_FUA, 0, 8192), None);
    assert!(client.read(0, 8192) == fx.bytes[..8192], "a refused write or a trim changed data");

    // A write longer than the maximum: EINVAL, then the server hangs up
    // rather than read a payload that large.
    let cookie = client.send(NbdCommand::Write.code(), 0, 0, MAX_PAYLOAD + 1, &[]);
    assert_eq!(client.reply(cookie).error, Some(ErrorCode::Inval));
    assert!(client.is_closed(), "an oversized write must end its connection");
    let mut other = RawClient::connect(fx.nbd.tcp_addr());
    assert!(other.read(4096, 4096) == fx.bytes[4096..8192]);
    let s = fx.nbd.stats();
    assert_eq!((s.dropped_connections, s.requests.unknown, s.dirty_blocks), (1, 3, 0), "{s:?}");
}

/// This process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    tests::proc_kib(&status, "VmRSS").unwrap() / 1024
}

#[test]
fn writes_announced_without_their_data_cost_no_memory_and_others_are_served() {
    let fx = Fixture::start();
    let before = rss_mib();
    // Eight writes of the largest size, announced by their 28-byte headers
    // alone: the server must not set aside their 256 MiB before the data comes.
    let mut stalled: Vec<RawClient> = (0..8).map(|_| RawClient::connect(fx.nbd.tcp_addr())).collect();
    for client in &mut stalled {
        client.send(NbdCommand::Write.code(), 0, 0, MAX_PAYLOAD, &[]);
    }
    let mut other = RawClient::connect(fx.nbd.tcp_addr());
    assert!(other.read(4096, 4096) == fx.bytes[4096..8192], "another client is served meanwhile");
    let during = rss_mib();
    assert!(during < before + 64, "announced writes took memory: {before} MiB before, {during} MiB with them");
    drop(stalled);
    assert!(other.read(0, 4096) == fx.bytes[..4096]);
}

#[test]
fn idle_connections_that_never_ask_do_not_lock_out_a_client_that_does() {
    if let Some(why) = missing(&["qemu-io"]) {
        return skip(why);
    }
    let fx = Fixture::start();
    // As many connections as the server takes, half negotiated, half not
    // even that, none sending a request.
    let negotiated: Vec<RawClient> = (0..32).map(|_| RawClient::connect(fx.nbd.tcp_addr())).collect();
    let silent: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(fx.nbd.tcp_addr()).unwrap()).collect();
    qemu_io(&fx.nbd.tcp_uri(), &["write -P 0x33 0 4096", "read -P 0x33 0 4096"]);
    qemu_io(&fx.nbd.unix_uri(), &["read -P 0x33 0 4096"]);
    drop((negotiated, silent));
}

#[test]
fn garbage_sent_to_diskserv_does_not_stop_it() {
    let fx = Fixture::start();
    let mut s = TcpStream::connect(&fx.diskserv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&Preamble::client().encode()).unwrap();
    s.write_all(&[0xff; 300]).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.len() <= 8, "diskserv answered garbage with more than its preamble: {answer:?}");

    // cownetdisk still fetches blocks it has not seen.
    let before = fx.nbd.stats().blocks_fetched;
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    assert!(client.read(5_000_000, 20_000) == fx.bytes[5_000_000..5_020_000]);
    assert!(fx.nbd.stats().blocks_fetched > before, "the read did not reach diskserv");
}

#[test]
fn the_stats_file_holds_the_counters_when_cownetdisk_stops() {
    let mut fx = Fixture::start();
    let mut client = RawClient::connect(fx.nbd.tcp_addr());
    client.read(0, 65536);
    let cookie = client.send(NbdCommand::Write.code(), CMD_FLAG_FUA, 8192, 4096, &[1; 4096]);
    assert_eq!(client.reply(cookie).error, None);
    drop(client);
    fx.nbd.stop();
    let path = fx.dir.path().join("state").join("vm1.stats");
    let written: DiskStats = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written, fx.nbd.stats());
    assert_eq!((written.requests.read, written.requests.write, written.dirty_blocks), (1, 1, 1), "{written:?}");
    assert!(written.summary().starts_with("vm1: 16 MiB disk in 4096-byte blocks, 1 reads"), "{}", written.summary());
}

/// Counts the wake-ups asked for.
#[derive(Debug, Default)]
struct CountingWake(std::sync::atomic::AtomicU64);

impl wire::WakeHook for CountingWake {
    fn wake(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn every_remote_fetch_asks_the_wake_hook_first() {
    let dir = tempfile::tempdir().unwrap();
    let (image, bytes) = desktop_image(dir.path());
    let key = TestKeys::new();
    let diskserv = DesktopServer::diskserv(&image, "vm1", &key, "127.0.0.1:0", BLOCK as u32);
    let wake = std::sync::Arc::new(CountingWake::default());
    let config = cownetdisk::DiskConfig::new("vm1", dir.path().join("state"), diskserv.remote("vm1", &key));
    let disk = cownetdisk::Disk::open(config, wake.clone()).unwrap();
    let connect_wakes = wake.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(connect_wakes >= 1, "connecting to diskserv did not ask the wake hook");
    let mut buf = vec![0u8; BLOCK];
    for block in [7usize, 100, 2000] {
        disk.read((block * BLOCK) as u64, &mut buf).unwrap();
        assert_eq!(buf, bytes[block * BLOCK..(block + 1) * BLOCK]);
    }
    // A block already on the server needs no fetch, and so no wake-up.
    disk.read(7 * BLOCK as u64, &mut buf).unwrap();
    let stats = disk.stats();
    let wakes = wake.0.load(std::sync::atomic::Ordering::SeqCst) - connect_wakes;
    assert_eq!(stats.fetch_calls, 3, "{stats:?}");
    assert_eq!(wakes, stats.fetch_calls, "each fetch asks the wake hook exactly once");
}
