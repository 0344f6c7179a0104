//! Writes the seed corpus, `seeds/<target>/<name>`, by encoding valid values
//! with the project's own encoders: a start for the fuzzer past magics,
//! checksums and the Noise key. Run from `fuzz/`:
//! `cargo run --example seeds`. The files are committed; rerunning changes
//! only the handshake seeds (fresh ephemeral keys) and the bitmap's.

use std::fs;
use std::path::Path;

use cownetdisk::protocol::{
    BlockSizes, ClientFlags, ClientOption, Command, ErrorCode, ExportNameReply, ExportQuery, Greeting, Info,
    OptionReply, ReplyType, Request as NbdRequest, SimpleReply, INFO_BLOCK_SIZE, INFO_EXPORT, MAX_PAYLOAD, OPT_GO,
    OPT_INFO, OPT_STRUCTURED_REPLY, TRANSMISSION_FLAGS,
};
use daemon_protocol::local::{LocalReply, LocalRequest, Report};
use daemon_protocol::protocol::{ConsolidateRequest, HostedState, HostedStatus, ReserveRequest, ReturnHeader};
use daemon_protocol::{Control, ControlHello, Firmware, MachineProfile};
use fleet_registry::{Capacity, Load, ServerRecord};
use jettison_fuzz::key;
use migration_formats::dirty_set::{DirtySetHeader, TransferId};
use migration_formats::{DirtySetWriter, ZeroMap};
use slice_store::{BootId, PersistentBitmap};
use wire::protocol::{frame, Message, Preamble, PreambleStatus};
use wire::secure::{auth_failed_record, Initiator};
use wire::{ByteRange, Chunk, ErrorKind, Hello, HelloReply, Request, Response, Service, Welcome};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).expect("the seeds directory");
    fs::write(dir.join(name), bytes).expect("a seed file");
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn hello() -> Hello {
    Hello::new(Service::Memory, "vm1")
}

fn request() -> Request {
    Request::read(7, vec![ByteRange::new(0, 8192), ByteRange::new(12288, 100)])
}

fn wire_seeds() {
    write("wire_preamble", "client", &Preamble::client().encode());
    write("wire_preamble", "refused", &Preamble::server(PreambleStatus::VersionRefused).encode());
    write("wire_frames", "two", &cat(&[&[0], &frame(&request().encode_body()), &frame(b"")]));
    write("wire_frames", "split", &cat(&[&[3, 1, 5, 64], &frame(&request().encode_body())]));
    let record = cat(&[&5u16.to_le_bytes(), b"hello"]);
    write("wire_records", "preamble_record", &cat(&[&[0], &Preamble::client().encode(), &record, &record]));
    write("wire_hello", "memory", &hello().encode_body());
    write("wire_hello", "disk", &Hello::new(Service::Disk, "desk-vm_2").encode_body());
    write("wire_hello_reply", "welcome", &HelloReply::Welcome(Welcome { size: 1 << 30, unit: 4096 }).encode_body());
    write("wire_hello_reply", "refused", &HelloReply::Refused("no such VM".into()).encode_body());
    write("wire_request", "two_ranges", &request().encode_body());
    write("wire_request", "past_end", &Request::read(1, vec![ByteRange::new(65530, 100)]).encode_body());
    let chunks = vec![
        Chunk::Bytes { offset: 0, data: vec![1; 4096] },
        Chunk::Zero { offset: 4096, len: 4096 },
        Chunk::Bytes { offset: 12288, data: vec![2; 100] },
    ];
    let mut ranges = vec![2u8];
    for range in [ByteRange::new(0, 8192), ByteRange::new(12288, 100)] {
        ranges.extend_from_slice(&range.offset.to_le_bytes());
        ranges.extend_from_slice(&range.len.to_le_bytes());
    }
    write("wire_response", "data", &cat(&[&ranges, &Response::data(7, chunks).encode_body()]));
    write("wire_response", "error", &cat(&[&[0], &Response::error(9, ErrorKind::OutOfRange, "past").encode_body()]));

    let preamble = Preamble::client().encode();
    let mut initiator = Initiator::new(&key(), &preamble).expect("the Noise parameters are valid");
    let message1 = initiator.first_message(&hello().encode_body()).expect("a hello fits");
    let requests = frame(&request().encode_body());
    write("wire_handshake_server", "hello", &cat(&[&[0], &preamble, &message1, &requests]));
    write("wire_handshake_server", "old_version", &cat(&[&[0], &Preamble { version: 0, word: 0 }.encode()]));
    let server = Preamble::server(PreambleStatus::Accepted).encode();
    write("wire_handshake_client", "auth_failed", &cat(&[&server, &auth_failed_record()]));
    write("wire_handshake_client", "refused", &Preamble::server(PreambleStatus::VersionRefused).encode());
    let body = hello().encode_body();
    let session = |mode: u8, stream: &[u8]| cat(&[&[mode, body.len() as u8], &body, &[0], stream]);
    let two = cat(&[&requests, &frame(&Request::read(8, vec![ByteRange::new(4096, 1)]).encode_body())]);
    write("wire_session", "requests", &session(0, &two));
    write("wire_session", "split", &cat(&[&[0, body.len() as u8], &body, &[2, 3, 200], &two]));
    write("wire_session", "raw", &session(1, &two));
}

fn profile() -> MachineProfile {
    MachineProfile {
        memory_mib: 256,
        vcpus: 2,
        cpu_model: "Skylake-Client-v4".parse().expect("a CPU model"),
        firmware: Firmware::Kernel {
            kernel_sha256: [1; 32],
            initrd_sha256: [2; 32],
            args: "jt.fill=64".parse().expect("kernel arguments"),
        },
        display: true,
    }
}

fn zero_map() -> ZeroMap {
    ZeroMap { unit_size: 4096, units: 65536, ranges: vec![0..3, 10..11, 50..65536] }
}

fn control_seeds() {
    write("control_hello", "desktop", &ControlHello::Desktop("desk1".parse().expect("a host")).encode_body());
    write("control_hello", "tool", &ControlHello::Tool.encode_body());
    let vm = "vm1".parse().expect("a VM name");
    let reserve = ReserveRequest {
        vm: "vm1".parse().expect("a VM name"),
        profile: profile(),
        disk_bytes: 1 << 30,
        extra_disk_bytes: vec![1 << 20],
    };
    let consolidate = ConsolidateRequest {
        vm: "vm1".parse().expect("a VM name"),
        desktop_mac: Some("02:00:00:00:00:02".parse().expect("a MAC")),
        desktop_control: "10.0.0.2:7400".parse().expect("an address"),
        memserv: "10.0.0.2:7410".parse().expect("an address"),
        diskserv: "[fd00::2]:7411".parse().expect("an address"),
        vm_mac: "02:4a:54:00:00:50".parse().expect("a MAC"),
        descriptor_bytes: 4 << 20,
        descriptor_crc: 7,
        zero_map: zero_map().encode(),
    };
    let header = ReturnHeader {
        descriptor_bytes: 900_000,
        descriptor_crc: 9,
        memory_set_bytes: 96,
        disk_set_bytes: 96,
        dirty_pages: 0,
        dirty_blocks: 0,
        disk_count: 1,
        fence: 0,
    };
    let mut status = HostedStatus::moving("vm1".parse().expect("a VM name"), "desk1".parse().expect("a host"));
    status.state = HostedState::Lost("QEMU died".into());
    let messages = [
        ("welcome", Control::Welcome("server".parse().expect("a host"))),
        ("failed", Control::Failed("no room".into())),
        ("no-room", Control::NoRoom("no room for desk1/vm1".into())),
        ("reserve", Control::Reserve(reserve.clone())),
        ("reserved", Control::Reserved { expected: 7, fence: Some(56) }),
        ("consolidate", Control::Consolidate(Box::new(consolidate.clone()))),
        ("returning", Control::Returning(header)),
        ("data", Control::Data(vec![5; 100])),
        ("end", Control::End),
        ("status_reply", Control::StatusReply(vec![status])),
        ("please_reintegrate", Control::PleaseReintegrate { vm, reason: "server full".into() }),
        (
            "please_move",
            Control::PleaseMove { vm: "vm1".parse().expect("a VM name"), reason: "server1 is being drained".into() },
        ),
    ];
    for (name, message) in &messages {
        write("control_message", name, &message.encode_body());
    }
    // descriptor_metadata: a byte choosing the message, then its body
    // without the variant tag.
    let uefi = ReserveRequest { profile: MachineProfile { firmware: Firmware::Uefi, ..profile() }, ..reserve.clone() };
    for (which, name, message) in [
        (0u8, "reserve_kernel", Control::Reserve(reserve)),
        (0, "reserve_uefi", Control::Reserve(uefi)),
        (1, "consolidate", Control::Consolidate(Box::new(consolidate))),
        (2, "returning", Control::Returning(header)),
    ] {
        write("descriptor_metadata", name, &cat(&[&[which], &message.encode_body()[1..]]));
    }
    let request = LocalRequest::Consolidate { vm: "vm1".parse().expect("a VM name"), force: true };
    write("local_socket", "request", &serde_json::to_vec(&request).expect("JSON"));
    let reply = LocalReply::Done { result: Report::Saved { vms: vec!["vm1".parse().expect("a VM name")] } };
    write("local_socket", "reply", &serde_json::to_vec(&reply).expect("JSON"));
    let progress = LocalReply::Progress { what: "vm1".into(), done: 1, total: 2 };
    write("local_socket", "progress", &serde_json::to_vec(&progress).expect("JSON"));
}

fn nbd_seeds() {
    let flags = ClientFlags::new(true, true).encode();
    let query = |name: &str| ExportQuery { name: name.into(), requests: vec![INFO_EXPORT, INFO_BLOCK_SIZE] };
    let go = ClientOption::Go(query(""));
    write("nbd_handshake", "go", &cat(&[&flags, &go.encode()]));
    let options = [
        ClientOption::Unsupported(OPT_STRUCTURED_REPLY).encode(),
        ClientOption::List.encode(),
        ClientOption::Info(query("vm1")).encode(),
        ClientOption::Info(query("vm2")).encode(),
        ClientOption::Abort.encode(),
    ];
    write("nbd_handshake", "haggle", &cat(&[&flags, &options.concat()]));
    let export_name = ClientOption::ExportName("vm1".into()).encode();
    write("nbd_handshake", "export_name", &cat(&[&ClientFlags::new(true, false).encode(), &export_name]));
    for (name, option) in [
        ("go", go),
        ("info", ClientOption::Info(query("vm1"))),
        ("list", ClientOption::List),
        ("export_name", ClientOption::ExportName("vm1".into())),
        ("unsupported", ClientOption::Unsupported(OPT_STRUCTURED_REPLY)),
    ] {
        write("nbd_option", name, &option.encode());
    }
    let requests = [
        NbdRequest::new(Command::Read, 0, 1, 0, 4096),
        NbdRequest::new(Command::Write, 1, 2, 4096, 512),
        NbdRequest::new(Command::WriteZeroes, 3, 3, 0, 1 << 20),
        NbdRequest::new(Command::Flush, 0, 4, 0, 0),
        NbdRequest::new(Command::Trim, 0, 5, 16 << 20, 1),
        NbdRequest::new(Command::Disc, 0, 6, 0, 0),
    ];
    write("nbd_request", "each_command", &requests.iter().flat_map(NbdRequest::encode).collect::<Vec<u8>>());
    let sizes = BlockSizes::new(1, 4096, MAX_PAYLOAD).expect("valid block sizes");
    let replies = [
        OptionReply::info(OPT_GO, &Info::Export { size: 16 << 20, flags: TRANSMISSION_FLAGS }),
        OptionReply::info(OPT_GO, &Info::BlockSize(sizes)),
        OptionReply::error(OPT_INFO, ReplyType::ErrUnknown, "no export"),
        OptionReply::server("vm1"),
        OptionReply::ack(OPT_GO),
    ];
    let replies: Vec<u8> = replies.iter().flat_map(OptionReply::encode).collect();
    let greeting = Greeting::server().encode();
    let export = ExportNameReply::new(16 << 20, TRANSMISSION_FLAGS);
    write("nbd_replies", "options", &cat(&[&[0], &greeting, &replies, &export.encode(true)]));
    write("nbd_replies", "padded", &cat(&[&[0], &greeting, &export.encode(false)]));
    let simple = [SimpleReply::ok(1), SimpleReply::error(2, ErrorCode::Inval), SimpleReply::error(3, ErrorCode::NoSpc)];
    let simple: Vec<u8> = simple.iter().flat_map(SimpleReply::encode).collect();
    write("nbd_replies", "simple", &cat(&[&[1], &greeting, &replies, &simple]));
}

fn format_seeds() {
    write("zero_map", "three_runs", &zero_map().encode());
    write("zero_map", "empty", &ZeroMap { unit_size: 512, units: 0, ranges: Vec::new() }.encode());
    for (name, unit_size, image_size, units) in
        [("pages", 16u32, 100u64, vec![0u64, 2, 6]), ("none", 4096, 1 << 20, vec![]), ("one_byte", 1, 9, vec![8])]
    {
        let header = DirtySetHeader {
            unit_size,
            image_size,
            unit_count: units.len() as u64,
            transfer_id: TransferId::from_bytes(*b"0123456789abcdef"),
        };
        let mut writer = DirtySetWriter::new(Vec::new(), header).expect("a valid header");
        for unit in units {
            let len = (image_size - unit * u64::from(unit_size)).min(u64::from(unit_size)) as usize;
            writer.write_unit(unit, &vec![unit as u8 + 1; len]).expect("a valid unit");
        }
        write("dirty_set", name, &writer.finish().expect("every unit written").0);
    }

    // A bitmap of 100 units with two set, closed after a flush, and its
    // flushed copy: flags 3 (the header's boot id, a copy present).
    let dir = std::env::temp_dir().join(format!("jettison-fuzz-seeds-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("seed.bitmap");
    let boot = BootId::from_bytes([0x66; 16]);
    let mut bitmap = PersistentBitmap::create(&path, 4096, 100, boot).expect("a bitmap");
    bitmap.set(3).expect("a unit inside");
    bitmap.flush().expect("a flush");
    bitmap.set(97).expect("a unit inside");
    drop(bitmap);
    let live = fs::read(&path).expect("the bitmap");
    let copy = fs::read(dir.join("seed.bitmap.flushed")).expect("its flushed copy");
    for (name, flags) in [("crash", 3u8), ("reboot", 2)] {
        write("bitmap", name, &cat(&[&[flags], &(live.len() as u16).to_le_bytes(), &live, &copy]));
    }
    fs::remove_dir_all(&dir).expect("removing the temporary directory");

    let target = remote_wakeup::Mac([2, 0x4a, 0x54, 0, 0, 0x50]);
    let source = remote_wakeup::Mac([2, 0, 0, 0, 0, 2]);
    write("wol_frame", "ethernet", &remote_wakeup::magic::ethernet_frame(source, target));
    let mut udp = remote_wakeup::magic::ethernet_frame(source, target)[..12].to_vec();
    udp.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = remote_wakeup::magic::payload(target);
    let total = (20 + 8 + payload.len()) as u16;
    udp.extend_from_slice(&[0x45, 0]);
    udp.extend_from_slice(&total.to_be_bytes());
    udp.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 255]);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&9u16.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    write("wol_frame", "udp", &udp);
}

fn fleet_seeds() {
    let record = ServerRecord {
        name: "server1".parse().expect("a host name"),
        address: "10.0.0.1:7400".parse().expect("an address"),
        capacity: Capacity { memory_mib: 8192.0, cpus: 8.0, network_mib_per_sec: 110.0 },
        load: Load { memory_mib: 300.0, cpus: 0.4, fetch_mib_per_sec: 0.1, vms: 2 },
        draining: false,
    };
    let value = serde_json::to_vec(&record).expect("a record serialises");
    write("fleet_record", "one_server", &cat(&[record.key().as_bytes(), &[0], &value]));
    // etcd's gateway answers as it does (etcd 3.4): a streamed keepalive,
    // and an error with its length.
    write(
        "fleet_http_answer",
        "chunked",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
          1a\r\n{\"result\":{\"TTL\":\"10\",\"ID\"\r\n7\r\n:\"7\"}}\n\r\n0\r\n\r\n",
    );
    let error = br#"{"error":"etcdserver: requested lease not found","code":5,"message":"x"}"#;
    let head = format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n", error.len());
    write("fleet_http_answer", "sized", &cat(&[head.as_bytes(), error]));
}

fn main() {
    wire_seeds();
    control_seeds();
    nbd_seeds();
    format_seeds();
    fleet_seeds();
}
