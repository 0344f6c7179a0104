//! The control protocol, version 1 (the wire preamble's version covers it).
//!
//! # Transport
//!
//! A [`wire::Channel`]: clear preamble, Noise `NNpsk0` with the
//! office's shared key, then frames. The client's first handshake payload is
//! a [`ControlHello`]; the answer is a [`Control::Welcome`] or a
//! [`Control::Failed`]. Every later frame body is one [`Control`], encoded
//! with bincode 2 (little-endian, variable-length integers) and decoded with
//! the wire's frame limit ([`MAX_FRAME`]) and the limits below.
//!
//! # Consolidation (desktop daemon → server daemon)
//!
//! ```mermaid
//! sequenceDiagram
//!     participant D as desktop daemon
//!     participant S as server daemon
//!     D->>S: Reserve (VM, RAM size, disk size)
//!     Note over S: capacity check against the VM's expected working set
//!     S->>D: Reserved (estimate) or Failed (why)
//!     Note over D: stop the VM, save the descriptor, scan the zero map, start memserv and diskserv
//!     D->>S: Consolidate (descriptor, zero map, where memserv and diskserv are)
//!     Note over S: memtap file, cownetdisk export, QEMU -incoming, cont, announce the MAC
//!     S->>D: Running or Failed (why; the desktop resumes the VM itself)
//! ```
//!
//! The reservation lives as long as the connection: a desktop that vanishes
//! between the two steps holds no memory on the server.
//!
//! # Reintegration (desktop daemon → server daemon)
//!
//! ```mermaid
//! sequenceDiagram
//!     participant D as desktop daemon
//!     participant S as server daemon
//!     D->>S: Reintegrate (VM)
//!     Note over S: stop the VM, save the descriptor, end QEMU, flush memtap and cownetdisk
//!     S->>D: Returning (sizes, descriptor CRC)
//!     S->>D: Data ... (descriptor, memory dirty set, disk dirty set, as one byte stream)
//!     S->>D: End
//!     Note over D: stage all, verify, then apply; resume the VM
//!     D->>S: Reintegrated (VM)
//!     Note over S: delete the VM's slices
//!     S->>D: Done
//! ```
//!
//! If the connection breaks before `Reintegrated`, the server keeps the
//! stopped VM's descriptor and slices and a later `Reintegrate` sends them
//! again; the desktop applies nothing it has not received whole.
//!
//! # Other requests
//!
//! - `Status` → `StatusReply`: the server's VMs, any client.
//! - `PleaseReintegrate` (server daemon → desktop daemon) → `Done`: the
//!   server wants a VM gone (memory pressure, or the VM fetches faster than
//!   the configured rate); the desktop then runs a reintegration as above.
//!
//! Any request may be answered `Failed` with a text for the user; the
//! connection stays usable.
//!
//! # Limits
//!
//! Names (VM, host) are 1 to [`MAX_NAME`] bytes; texts at most
//! [`MAX_TEXT`]; a `Data` chunk at most [`MAX_CHUNK`] bytes.

use std::time::Duration;

use bincode::{Decode, Encode};
use wire::protocol::{Message, MAX_FRAME};
use wire::DecodeError;

/// Longest VM or host name.
pub const MAX_NAME: usize = 64;
/// Longest free text (a refusal, a reason, an address).
pub const MAX_TEXT: usize = 4096;
/// Largest `Data` chunk.
pub const MAX_CHUNK: usize = 1 << 20;
/// How long either daemon waits for the other's next message. Generous: a
/// reintegration's first answer comes after QEMU has stopped and saved.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

const _: () = assert!(MAX_CHUNK + 1024 < MAX_FRAME);

/// Who opens a control connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ControlHello {
    /// A desktop daemon, by its host name.
    Desktop(String),
    /// The server daemon.
    Server(String),
    /// The command line (status only).
    Tool,
}

/// What a desktop asks before it stops its VM.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReserveRequest {
    /// The VM's name.
    pub vm: String,
    /// Its RAM size in bytes.
    pub ram_bytes: u64,
    /// Its disk size in bytes.
    pub disk_bytes: u64,
}

/// Everything the server needs to run the VM, sent once it is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ConsolidateRequest {
    /// The VM's name.
    pub vm: String,
    /// The desktop's host name.
    pub desktop: String,
    /// The desktop's MAC, for Wake-on-LAN (none: it never sleeps).
    pub desktop_mac: Option<String>,
    /// Where the desktop daemon takes `PleaseReintegrate`, `host:port`.
    pub desktop_control: String,
    /// Where memserv serves the VM's RAM, `host:port`.
    pub memserv: String,
    /// Where diskserv serves the VM's disk, `host:port`.
    pub diskserv: String,
    /// The VM's RAM in MiB.
    pub memory_mib: u64,
    /// The VM's NIC MAC, kept on every host.
    pub vm_mac: String,
    /// Kernel arguments of the VM's profile (the test guest's `jt.*`).
    pub kernel_args: String,
    /// The saved device state (QEMU's migration stream with `x-ignore-shared`).
    pub descriptor: Vec<u8>,
    /// The RAM file's zero pages (`migration_formats::ZeroMap::encode`).
    pub zero_map: Vec<u8>,
}

/// What the server is about to send back for a reintegration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ReturnHeader {
    /// Bytes of the descriptor, first in the stream.
    pub descriptor_bytes: u64,
    /// CRC-32 of the descriptor.
    pub descriptor_crc: u32,
    /// Bytes of the memory dirty set, next.
    pub memory_set_bytes: u64,
    /// Bytes of the disk dirty set, last.
    pub disk_set_bytes: u64,
    /// Pages the VM dirtied on the server.
    pub dirty_pages: u64,
    /// Disk blocks it dirtied.
    pub dirty_blocks: u64,
}

impl ReturnHeader {
    /// Bytes in the whole stream.
    pub fn total_bytes(&self) -> u64 {
        self.descriptor_bytes + self.memory_set_bytes + self.disk_set_bytes
    }
}

/// One VM on the server, as `Status` reports it (and, as JSON, `jettison
/// status --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct HostedStatus {
    /// The VM's name.
    pub vm: String,
    /// Its desktop.
    pub desktop: String,
    /// `running`, `stopped for reintegration`, or what went wrong.
    pub state: String,
    /// Seconds since it started on the server.
    pub seconds: u64,
    /// RAM size in bytes.
    pub ram_bytes: u64,
    /// Pages fetched from the desktop.
    pub pages_fetched: u64,
    /// Pages served as zero without a fetch.
    pub zero_pages_served: u64,
    /// Pages dirtied on the server.
    pub dirty_pages: u64,
    /// Disk blocks fetched from the desktop.
    pub blocks_fetched: u64,
    /// Disk blocks dirtied on the server.
    pub dirty_blocks: u64,
    /// The working set the server expects of it, in bytes.
    pub expected_bytes: u64,
    /// The desktop's power state as the server sees it (`awake`, `asleep`, `waking`).
    pub desktop_power: String,
}

/// Every control message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Control {
    /// The answer to a [`ControlHello`]: who the peer is.
    Welcome(String),
    /// A request failed or was refused; the text says why and what to do.
    Failed(String),
    /// Desktop: may this VM come?
    Reserve(ReserveRequest),
    /// Server: yes, with this many bytes of working set expected.
    Reserved(u64),
    /// Desktop: here it is.
    Consolidate(Box<ConsolidateRequest>),
    /// Server: the VM runs here now; milliseconds from request to `cont`.
    Running(u64),
    /// Desktop: give the VM back.
    Reintegrate(String),
    /// Server: here it comes.
    Returning(ReturnHeader),
    /// A piece of the byte stream that follows `Returning`.
    Data(Vec<u8>),
    /// The end of that stream.
    End,
    /// Desktop: applied and running; forget the VM.
    Reintegrated(String),
    /// Done as asked.
    Done,
    /// Anyone: what runs on the server?
    Status,
    /// Server: this.
    StatusReply(Vec<HostedStatus>),
    /// Server → desktop: take the VM back; the text says why.
    PleaseReintegrate {
        /// The VM.
        vm: String,
        /// Why (memory pressure, fetch rate).
        reason: String,
    },
}

impl Control {
    /// The message's kind, for error texts: never its contents, which may
    /// be a megabyte of data or a descriptor.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::Welcome(_) => "Welcome",
            Control::Failed(_) => "Failed",
            Control::Reserve(_) => "Reserve",
            Control::Reserved(_) => "Reserved",
            Control::Consolidate(_) => "Consolidate",
            Control::Running(_) => "Running",
            Control::Reintegrate(_) => "Reintegrate",
            Control::Returning(_) => "Returning",
            Control::Data(_) => "Data",
            Control::End => "End",
            Control::Reintegrated(_) => "Reintegrated",
            Control::Done => "Done",
            Control::Status => "Status",
            Control::StatusReply(_) => "StatusReply",
            Control::PleaseReintegrate { .. } => "PleaseReintegrate",
        }
    }
}

fn name_ok(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(DecodeError::Limit("a name must be 1 to 64 bytes"));
    }
    Ok(())
}

fn text_ok(text: &str) -> Result<(), DecodeError> {
    if text.len() > MAX_TEXT {
        return Err(DecodeError::Limit("a text must be at most 4096 bytes"));
    }
    Ok(())
}

impl Message for ControlHello {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ControlHello::Desktop(name) | ControlHello::Server(name) => name_ok(name),
            ControlHello::Tool => Ok(()),
        }
    }
}

impl Message for Control {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Control::Welcome(name) | Control::Reintegrate(name) | Control::Reintegrated(name) => name_ok(name),
            Control::Failed(text) => text_ok(text),
            Control::Reserve(r) => name_ok(&r.vm),
            Control::Consolidate(c) => {
                name_ok(&c.vm)?;
                name_ok(&c.desktop)?;
                for text in [&c.desktop_control, &c.memserv, &c.diskserv, &c.vm_mac, &c.kernel_args] {
                    text_ok(text)?;
                }
                if c.memory_mib == 0 {
                    return Err(DecodeError::Limit("a VM needs some memory"));
                }
                Ok(())
            }
            Control::Data(chunk) if chunk.len() > MAX_CHUNK => Err(DecodeError::Limit("a data chunk over 1 MiB")),
            Control::StatusReply(vms) => vms.iter().try_for_each(|v| {
                name_ok(&v.vm)?;
                text_ok(&v.state)
            }),
            Control::PleaseReintegrate { vm, reason } => {
                name_ok(vm)?;
                text_ok(reason)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(msg: Control) {
        let body = msg.encode_body();
        assert_eq!(Control::decode_body(&body).unwrap(), msg);
    }

    fn consolidate() -> ConsolidateRequest {
        ConsolidateRequest {
            vm: "vm1".into(),
            desktop: "desk1".into(),
            desktop_mac: Some("02:00:00:00:00:02".into()),
            desktop_control: "10.0.0.2:7400".into(),
            memserv: "10.0.0.2:7410".into(),
            diskserv: "10.0.0.2:7411".into(),
            memory_mib: 256,
            vm_mac: "02:4a:54:00:00:50".into(),
            kernel_args: "jt.fill=64".into(),
            descriptor: vec![1, 2, 3],
            zero_map: vec![4, 5],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let header = ReturnHeader {
            descriptor_bytes: 3,
            descriptor_crc: 9,
            memory_set_bytes: 96,
            disk_set_bytes: 96,
            dirty_pages: 0,
            dirty_blocks: 0,
        };
        let status = HostedStatus {
            vm: "vm1".into(),
            desktop: "desk1".into(),
            state: "running".into(),
            seconds: 5,
            ram_bytes: 1 << 28,
            pages_fetched: 10,
            zero_pages_served: 2,
            dirty_pages: 3,
            blocks_fetched: 4,
            dirty_blocks: 5,
            expected_bytes: 6,
            desktop_power: "asleep".into(),
        };
        for msg in [
            Control::Welcome("server".into()),
            Control::Failed("no room".into()),
            Control::Reserve(ReserveRequest { vm: "vm1".into(), ram_bytes: 1, disk_bytes: 2 }),
            Control::Reserved(7),
            Control::Consolidate(Box::new(consolidate())),
            Control::Running(12),
            Control::Reintegrate("vm1".into()),
            Control::Returning(header),
            Control::Data(vec![0; 1000]),
            Control::End,
            Control::Reintegrated("vm1".into()),
            Control::Done,
            Control::Status,
            Control::StatusReply(vec![status]),
            Control::PleaseReintegrate { vm: "vm1".into(), reason: "server full".into() },
        ] {
            round_trip(msg);
        }
        assert_eq!(header.total_bytes(), 195);
        assert_eq!(Control::Data(vec![0; 1000]).kind(), "Data");
        let hello = ControlHello::Desktop("desk1".into());
        assert_eq!(ControlHello::decode_body(&hello.encode_body()).unwrap(), hello);
    }

    #[test]
    fn limits_are_enforced() {
        let too_long = "x".repeat(MAX_NAME + 1);
        assert!(Control::decode_body(&Control::Reintegrate(too_long.clone()).encode_body()).is_err());
        assert!(Control::decode_body(&Control::Reintegrate(String::new()).encode_body()).is_err());
        assert!(ControlHello::decode_body(&ControlHello::Desktop(too_long).encode_body()).is_err());
        assert!(Control::decode_body(&Control::Data(vec![0; MAX_CHUNK + 1]).encode_body()).is_err());
        let mut c = consolidate();
        c.memory_mib = 0;
        assert!(Control::decode_body(&Control::Consolidate(Box::new(c)).encode_body()).is_err());
        let mut body = Control::Done.encode_body();
        body.push(0);
        assert!(Control::decode_body(&body).is_err(), "trailing bytes");
        assert!(Control::decode_body(&[200]).is_err(), "unknown variant");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Control::decode_body(&bytes);
            let _ = ControlHello::decode_body(&bytes);
        }
    }
}
