//! The server daemon against hostile and racing peers, through its real
//! control port on loopback: every bad value is refused with an error
//! naming the field, and the daemon goes on serving the next request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure is the test failing

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bincode::Encode;
use daemon_protocol::{Control, ControlHello, Firmware, MachineProfile, ReserveRequest};
use identifiers::HostName;
use server_daemon::{ServerConfig, ServerDaemon};
use wire::protocol::Message;
use wire::{Channel, Credentials, HostKey, Peers, PublicKey, WireError};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The desktops enrolled at the test server.
const DESKTOPS: [&str; 2] = ["desk1", "desk2"];

/// A server daemon on a free loopback port, with its own directories, and
/// the keys of the desktops enrolled there.
struct Server {
    addr: SocketAddr,
    public: PublicKey,
    peers_dir: PathBuf,
    desktops: BTreeMap<&'static str, Credentials>,
    daemon: Arc<ServerDaemon>,
    _dir: tempfile::TempDir,
}

fn host(name: &str) -> HostName {
    name.parse().unwrap()
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key = HostKey::generate();
        let key_file = dir.path().join("host.key");
        key.save(&key_file).unwrap();
        let peers_dir = dir.path().join("peers");
        let mut desktops = BTreeMap::new();
        for name in DESKTOPS {
            let desktop = HostKey::generate();
            Peers::enroll(&peers_dir, &host(name), desktop.public()).unwrap();
            desktops.insert(name, Server::trusting(desktop, key.public()));
        }
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let text = format!(
            "name = \"server1\"\nlisten = \"{addr}\"\nhost_key = \"{}\"\npeers = \"{}\"\nstate_dir = \"{}\"\n\
             run_dir = \"{}\"\nbridge = \"br-none\"\nkernel = \"/none\"\ninitrd = \"/none\"\ncapacity_mib = 1024\n\
             accel = \"tcg\"\n",
            key_file.display(),
            peers_dir.display(),
            dir.path().join("state").display(),
            dir.path().join("run").display(),
        );
        let config_file = dir.path().join("server.toml");
        std::fs::write(&config_file, text).unwrap();
        let daemon = ServerDaemon::new(ServerConfig::load(&config_file).unwrap()).unwrap();
        let serving = Arc::clone(&daemon);
        std::thread::spawn(move || serving.run(|| ()).expect("the server daemon serves"));
        let server = Server { addr, public: key.public(), peers_dir, desktops, daemon, _dir: dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server daemon never listened on {addr}");
    }

    /// A host holding `key` that has enrolled the server (`server`).
    fn trusting(key: HostKey, server: PublicKey) -> Credentials {
        let mut peers = Peers::new();
        peers.insert(host("server1"), server, std::path::Path::new("test")).unwrap();
        Credentials::new(key, peers)
    }

    /// A control connection with `credentials` that said `hello` (raw bytes).
    fn connect_with(&self, credentials: &Credentials, hello: &[u8]) -> Result<(Channel, Control), WireError> {
        let (channel, answer) = Channel::connect(&self.addr.to_string(), credentials, None, hello, TIMEOUT)?;
        Ok((channel, Control::decode_body(&answer).unwrap()))
    }

    /// A control connection with desk1's key that said `hello` (raw bytes).
    fn connect_raw(&self, hello: &[u8]) -> (Channel, Control) {
        self.connect_with(&self.desktops["desk1"], hello).unwrap()
    }

    /// A control connection as desktop `name`, with its own key.
    fn desktop(&self, name: &str) -> Channel {
        let hello = ControlHello::Desktop(host(name)).encode_body();
        let (channel, answer) = self.connect_with(&self.desktops[name], &hello).unwrap();
        assert!(matches!(answer, Control::Welcome(_)), "{answer:?}");
        channel
    }
}

fn ask(channel: &mut Channel, body: &[u8]) -> Control {
    channel.send(body).unwrap();
    Control::decode_body(&channel.recv().unwrap()).unwrap()
}

fn refusal(answer: Control) -> String {
    match answer {
        Control::Failed(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What a hostile peer can put on the wire: the messages' layout with plain
/// text where the protocol has checked types (bincode: variant index, then
/// the fields in order).
fn raw(message: impl Encode) -> Vec<u8> {
    let config = bincode::config::standard().with_little_endian().with_variable_int_encoding();
    bincode::encode_to_vec(message, config).unwrap()
}

const RESERVE: u32 = 2;
const CONSOLIDATE: u32 = 4;

fn profile() -> MachineProfile {
    MachineProfile {
        memory_mib: 256,
        vcpus: 1,
        cpu_model: "max".parse().unwrap(),
        firmware: Firmware::Bios,
        display: false,
    }
}

fn reserve(vm: &str) -> Vec<u8> {
    let request =
        ReserveRequest { vm: vm.parse().unwrap(), profile: profile(), disk_bytes: 1 << 20, extra_disk_bytes: vec![] };
    Control::Reserve(request).encode_body()
}

const BIOS: u32 = 0;
const KERNEL: u32 = 2;

/// A raw `Reserve` of a BIOS VM with this RAM size and CPU model.
fn raw_reserve(vm: &str, memory_mib: u64, cpu_model: &str) -> Vec<u8> {
    raw((RESERVE, vm, memory_mib, 1u32, cpu_model, BIOS, false, 0u64, Vec::<u64>::new()))
}

/// A raw `Reserve` of a VM booting the hosts' kernel with these arguments.
fn raw_kernel_reserve(kernel_args: &str) -> Vec<u8> {
    raw((
        RESERVE,
        "vm1",
        256u64,
        1u32,
        "max",
        KERNEL,
        [0u8; 32],
        [0u8; 32],
        kernel_args,
        false,
        0u64,
        Vec::<u64>::new(),
    ))
}

/// A raw `Consolidate` with `vm_mac` and the descriptor's announced size as given.
fn raw_consolidate_sized(vm: &str, vm_mac: &str, descriptor_bytes: u64) -> Vec<u8> {
    let addr: SocketAddr = "127.0.0.1:7410".parse().unwrap();
    let crc = crc32fast::hash(&[1u8; 16]);
    raw((CONSOLIDATE, vm, Some("02:00:00:00:00:02"), addr, addr, addr, vm_mac, descriptor_bytes, crc, Vec::<u8>::new()))
}

fn raw_consolidate(vm: &str, vm_mac: &str) -> Vec<u8> {
    raw_consolidate_sized(vm, vm_mac, 16)
}

#[test]
fn hostile_values_are_refused_naming_the_field_and_the_server_serves_on() {
    let server = Server::start();
    let mut channel = server.desktop("desk1");
    let cases = [
        (raw_reserve("../x", 256, "max"), "vm: \"../x\" is not a valid VM name"),
        (raw_reserve(&"a".repeat(64), 256, "max"), "is not a valid VM name"),
        (raw_reserve("vm1", 0, "max"), "memory_mib"),
        (raw_reserve("vm1", 256, "max,+vmx"), "not a valid CPU model"),
        (raw_reserve("vm1", 256, "Pentium9000"), "does not know CPU model \"Pentium9000\""),
        (raw((RESERVE, "vm1", 256u64, 1u32, "max", BIOS, false, 0u64, vec![1u64; 8])), "at most 8 disks"),
        (raw_kernel_reserve("quiet\ninit=/bin/sh"), "kernel argument"),
        (raw_kernel_reserve("quiet"), "cannot read its kernel /none"),
        (raw_consolidate("vm1", "52:54:00:00:00:01,romfile=/etc/shadow"), "vm_mac: \"52:54:00:00:00:01,romfile"),
        (raw_consolidate("vm1", "01:00:5e:00:00:01"), "vm_mac must be a unicast address"),
        (raw_consolidate("../../etc", "02:00:00:00:00:01"), "vm: \"../../etc\""),
        (raw_consolidate_sized("vm1", "02:00:00:00:00:01", 1 << 40), "descriptor_bytes must be 1 byte to 64 MiB"),
    ];
    for (body, expected) in cases {
        let why = refusal(ask(&mut channel, &body));
        assert!(why.contains(expected), "expected {expected:?} in {why:?}");
        // The same connection still serves.
        assert!(matches!(ask(&mut channel, &Control::Status.encode_body()), Control::StatusReply(_)));
    }
    // A Consolidate that decodes is followed by its descriptor stream, read
    // whole whatever the answer: here too short, then right but unreserved.
    for (stream, expected) in [(vec![1u8; 15], "15 bytes arrived of 16"), (vec![1u8; 16], "has no reservation")] {
        channel.send(&raw_consolidate("vm1", "02:00:00:00:00:01")).unwrap();
        daemon_protocol::send_stream(&mut channel, &stream).unwrap();
        let why = refusal(Control::decode_body(&channel.recv().unwrap()).unwrap());
        assert!(why.contains(expected), "expected {expected:?} in {why:?}");
        assert!(matches!(ask(&mut channel, &Control::Status.encode_body()), Control::StatusReply(_)));
    }
    // A hostile desktop name is refused at the hello.
    let (_, answer) = server.connect_raw(&raw((0u32, "../../etc")));
    assert!(refusal(answer).contains("not a valid host name"));
    // The command line's hello may ask for status, never move a VM.
    let (mut tool, _) = server.connect_raw(&ControlHello::Tool.encode_body());
    assert!(refusal(ask(&mut tool, &reserve("vm1"))).contains("only a desktop daemon"));
    // And a fresh, honest desktop is served at once.
    let mut honest = server.desktop("desk2");
    assert!(matches!(ask(&mut honest, &reserve("vm1")), Control::Reserved { .. }));
}

#[test]
fn a_desktop_is_who_its_key_says_and_only_enrolled_keys_are_let_in() {
    let server = Server::start();
    // desk1's key claiming to be desk2 is refused at the hello: it could
    // otherwise act on desk2's VMs.
    let (mut posing, answer) = server.connect_raw(&ControlHello::Desktop(host("desk2")).encode_body());
    let why = refusal(answer);
    assert!(why.contains("enrolled here as desk1 says it is desk2"), "{why}");
    // Nothing it sends after is acted on: the server has closed it.
    let _ = posing.send(&reserve("vm1"));
    assert!(posing.recv().is_err(), "a refused hello's connection must end");
    // A key nobody enrolled: the client is told, the server serves on.
    let stranger = Server::trusting(HostKey::generate(), server.public);
    let err = server.connect_with(&stranger, &ControlHello::Desktop(host("desk3")).encode_body()).unwrap_err();
    assert!(matches!(err, WireError::AuthFailed), "{err}");
    assert!(matches!(ask(&mut server.desktop("desk1"), &reserve("vm1")), Control::Reserved { .. }));
    // Enrolled while the daemon runs, desk3 is let in at the next reload
    // (what SIGHUP does), and not before.
    let desk3 = HostKey::generate();
    Peers::enroll(&server.peers_dir, &host("desk3"), desk3.public()).unwrap();
    let desk3 = Server::trusting(desk3, server.public);
    let hello = ControlHello::Desktop(host("desk3")).encode_body();
    assert!(matches!(server.connect_with(&desk3, &hello), Err(WireError::AuthFailed)));
    assert_eq!(server.daemon.credentials().reload_peers().unwrap(), 3);
    let (mut channel, answer) = server.connect_with(&desk3, &hello).unwrap();
    assert!(matches!(answer, Control::Welcome(_)), "{answer:?}");
    assert!(matches!(ask(&mut channel, &reserve("vm3")), Control::Reserved { .. }));
}

#[test]
fn two_reservations_of_one_vm_race_and_exactly_one_wins() {
    let server = Arc::new(Server::start());
    for round in 0..5 {
        let vm = format!("vm{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (server, barrier, vm) = (Arc::clone(&server), Arc::clone(&barrier), vm.clone());
                std::thread::spawn(move || {
                    let mut channel = server.desktop("desk1");
                    barrier.wait();
                    let answer = ask(&mut channel, &reserve(&vm));
                    (channel, answer)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect();
        let won: Vec<_> = racers.iter().filter(|(_, a)| matches!(a, Control::Reserved { .. })).collect();
        assert_eq!(won.len(), 1, "round {round}: {:?}", racers.iter().map(|(_, a)| a).collect::<Vec<_>>());
        let lost = racers.iter().find(|(_, a)| !matches!(a, Control::Reserved { .. })).unwrap();
        assert!(refusal(lost.1.clone()).contains("already being consolidated"));
        // Another desktop cannot take the name while it is reserved.
        let mut other = server.desktop("desk2");
        assert!(refusal(ask(&mut other, &reserve(&vm))).contains("VM names must differ on one server"));
        // The loser's connection ending leaves the winner's reservation alone;
        // the winner's ending frees the VM for the next desktop connection.
        let (mut winner, mut loser): (Vec<_>, Vec<_>) =
            racers.into_iter().partition(|(_, a)| matches!(a, Control::Reserved { .. }));
        drop(loser.pop());
        let mut again = server.desktop("desk1");
        assert!(refusal(ask(&mut again, &reserve(&vm))).contains("already being consolidated"));
        drop(winner.pop());
        std::thread::sleep(Duration::from_millis(200));
        assert!(matches!(ask(&mut again, &reserve(&vm)), Control::Reserved { .. }));
    }
}
