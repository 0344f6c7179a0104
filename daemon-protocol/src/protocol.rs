//! The control protocol, version 5 (the wire preamble's version covers it:
//! version 2 has each host prove its own key, and `NoRoom` and `StatusExact`;
//! version 3 gives a VM up to [`MAX_DISKS`] disks: `Reserve` carries the
//! further disks' sizes and `Returning` the number of disk dirty sets;
//! version 4 sends dirty sets of format 2, whose memory set may carry
//! discard records, and `HostedStatus` counts discarded pages; version 5
//! has `PleaseMove`, and carries a fleet stay's fencing token in `Reserved`
//! and `Returning`).
//!
//! # Transport
//!
//! A [`wire::Channel`]: clear preamble, Noise `IX` in which each host
//! proves its own enrolled key, then frames. The client's first handshake
//! payload is a [`ControlHello`]; the answer is a [`Control::Welcome`] or a
//! [`Control::Failed`]. A desktop's hello names it, and the name must be the
//! one its key is enrolled under at the server: the server knows every VM by
//! (desktop, VM name), so two desktops may each have a `vm1`, and a
//! desktop's requests only ever reach its own VMs. Every later frame body is one [`Control`], encoded
//! with bincode 2 (little-endian, variable-length integers) and decoded with
//! the wire's frame limit ([`MAX_FRAME`]) and the limits below.
//!
//! # Consolidation (desktop daemon → server daemon)
//!
//! ```mermaid
//! sequenceDiagram
//!     participant D as desktop daemon
//!     participant S as server daemon
//!     D->>S: Reserve (VM, its machine profile, its disks' sizes)
//!     Note over S: the profile is one this server can run; capacity check against the expected working set
//!     S->>D: Reserved (estimate, fencing token in a fleet), NoRoom (the capacity check's figures) or Failed (why)
//!     Note over D: stop the VM, save the descriptor, scan the zero map, start memserv and diskserv
//!     D->>S: Consolidate (descriptor size and CRC, zero map, where memserv and diskserv are)
//!     Note over S: one cownetdisk disk per reserved disk, each fetching from diskserv's export for it
//!     D->>S: Data ... End (the descriptor, as one byte stream)
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
//!     S->>D: Data ... (descriptor, memory dirty set, one disk dirty set per disk in order, as one byte stream)
//!     S->>D: End
//!     Note over D: stage all, verify, then apply; resume the VM
//!     D->>S: Reintegrated (VM)
//!     Note over S: delete the VM's slices
//!     S->>D: Done
//! ```
//!
//! A VM has 1 to [`MAX_DISKS`] disks, in the order its guest sees them;
//! the reservation says how many (`disk_bytes` is the first's size,
//! `extra_disk_bytes` the others'). One diskserv per VM serves them all, on
//! one port: its export (the wire `Hello`'s) for the first disk is the VM's
//! name, for disk `n` (from 1) `<vm>.<n>` (see [`disk_export`]), which no VM
//! name can be. The server builds those names from the checked VM name and
//! the reserved count, and a desktop's diskserv answers only the names it
//! made itself: no export name from a peer is parsed or joined to a path.
//!
//! If the connection breaks before `Reintegrated`, the server keeps the
//! stopped VM's descriptor and slices and a later `Reintegrate` sends them
//! again; the desktop applies nothing it has not received whole.
//!
//! # Other requests
//!
//! - `Status` → `StatusReply`: the server's VMs, any client; `StatusExact`
//!   the same after writing back each running guest's page cache, so that
//!   its dirty pages are exact.
//! - `PleaseReintegrate` (server daemon → desktop daemon) → `Done`: the
//!   server wants a VM gone (memory pressure, or the VM fetches faster than
//!   the configured rate); the desktop then runs a reintegration as above.
//! - `PleaseMove` (server daemon → desktop daemon) → `Done`: the server
//!   wants a VM on another server of the fleet (it is being drained, or it
//!   is short of memory and this VM grew most); the desktop reintegrates
//!   it, then consolidates it again on a server the placement chooses
//!   other than this one, or keeps it when none has room.
//!
//! Any request may be answered `Failed` with a text for the user; the
//! connection stays usable.
//!
//! # Checked at the decoder
//!
//! Every value from a peer is a checked type by the time anyone uses it,
//! and a message that breaks a rule is refused with an error naming the
//! field:
//!
//! - VM names are [`VmName`]s (1 to 12 letters, digits, `-`, `_`), host
//!   names [`HostName`]s, MACs [`Mac`]s (six bytes; the VM's and the
//!   desktop's must be unicast), kernel arguments [`KernelArgs`] (printable
//!   ASCII, at most [`KernelArgs::MAX_LEN`] bytes).
//! - Addresses a server connects to (`memserv`, `diskserv`,
//!   `desktop_control`) are socket addresses with a port, not unspecified,
//!   multicast or broadcast.
//! - A profile's `memory_mib` is 1 to [`MAX_MEMORY_MIB`], its `vcpus` 1 to
//!   [`MAX_VCPUS`], its CPU model a [`CpuModel`]; disk sizes at most
//!   [`MAX_DISK_BYTES`], and at most [`MAX_DISKS`] disks in a reservation
//!   or a `Returning`, at least one; a descriptor 1 byte to
//!   [`MAX_DESCRIPTOR`]; the sizes a `Returning` announces add up to a
//!   `u64`; texts at most [`MAX_TEXT`]; a `Data` chunk at most
//!   [`MAX_CHUNK`] bytes.
//!
//! Names and MACs travel as text (bincode strings) so that it is the
//! decoder that refuses a bad one, whatever the sender's code.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bincode::de::Decoder;
use bincode::{Decode, Encode};
use identifiers::{HostName, Mac, VmName};
use wire::protocol::{Message, MAX_FRAME};
use wire::DecodeError;

pub use crate::kernel_args::KernelArgs;
pub use crate::machine::{CpuModel, Firmware, MachineProfile, MAX_VCPUS};

/// Longest free text (a refusal, a reason).
pub const MAX_TEXT: usize = 4096;
/// Largest RAM a VM may have, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Largest RAM size in bytes.
pub const MAX_RAM_BYTES: u64 = MAX_MEMORY_MIB << 20;
/// Largest disk size in bytes (64 TiB).
pub const MAX_DISK_BYTES: u64 = 64 << 40;
/// Most disks a VM may have (virtio-blk devices `vda` to `vdh`).
pub const MAX_DISKS: usize = 8;
/// Largest descriptor: QEMU's device state without RAM, plus the RAM a
/// device holds outside guest RAM (video RAM, firmware flash: UEFI's is
/// 4 MiB). It travels as a stream of `Data` chunks.
pub const MAX_DESCRIPTOR: u64 = 64 << 20;
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
    Desktop(HostName),
    /// The server daemon.
    Server(HostName),
    /// The command line (status only).
    Tool,
}

/// What a desktop asks before it stops its VM.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct ReserveRequest {
    /// The VM's name.
    pub vm: VmName,
    /// Its virtual hardware, which the server will run as it is.
    pub profile: MachineProfile,
    /// Its first disk's size in bytes (the guest-visible size).
    pub disk_bytes: u64,
    /// Its further disks' sizes, in the order the guest sees them (at most
    /// [`MAX_DISKS`] - 1).
    pub extra_disk_bytes: Vec<u64>,
}

impl ReserveRequest {
    /// How many disks the VM has: 1 to [`MAX_DISKS`] once decoded.
    pub fn disk_count(&self) -> usize {
        1 + self.extra_disk_bytes.len()
    }
}

/// The diskserv export (the wire `Hello`'s `export`) of disk `index` of
/// `vm`: the VM's name for its first disk (index 0), `<vm>.<index>` for the
/// others. No VM name contains a dot, so no export of one VM is the name of
/// another VM; the same name names the disk's slices on the server.
pub fn disk_export(vm: &VmName, index: usize) -> String {
    if index == 0 {
        vm.to_string()
    } else {
        format!("{vm}.{index}")
    }
}

/// Everything the server needs to run the VM, sent once it is stopped.
/// The desktop is the one that said hello on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct ConsolidateRequest {
    /// The VM's name.
    pub vm: VmName,
    /// The desktop's MAC, for Wake-on-LAN (none: it never sleeps).
    pub desktop_mac: Option<Mac>,
    /// Where the desktop daemon takes `PleaseReintegrate`.
    pub desktop_control: SocketAddr,
    /// Where memserv serves the VM's RAM.
    pub memserv: SocketAddr,
    /// Where diskserv serves the VM's disk.
    pub diskserv: SocketAddr,
    /// The VM's NIC MAC, kept on every host.
    pub vm_mac: Mac,
    /// Bytes of the saved device state (QEMU's migration stream with
    /// `x-ignore-shared`), which follows this message as a stream.
    pub descriptor_bytes: u64,
    /// CRC-32 of the device state.
    pub descriptor_crc: u32,
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
    /// Bytes of the disk dirty sets, last: one set per disk, in order.
    pub disk_set_bytes: u64,
    /// Pages the VM dirtied on the server.
    pub dirty_pages: u64,
    /// Disk blocks it dirtied, on all its disks.
    pub dirty_blocks: u64,
    /// How many disk dirty sets follow the memory set: the VM's disks, 1
    /// to [`MAX_DISKS`].
    pub disk_count: u32,
    /// The stay's fencing token (0 outside a fleet): the desktop takes back
    /// only the dirty state of the stay it consolidated.
    pub fence: u64,
}

impl ReturnHeader {
    /// Bytes in the whole stream.
    pub fn total_bytes(&self) -> u64 {
        self.descriptor_bytes + self.memory_set_bytes + self.disk_set_bytes
    }
}

/// Where a hosted VM is in its stay on the server.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostedState {
    /// QEMU runs it.
    Running,
    /// Stopped and flushed, waiting to go home (a reintegration broke off).
    Stopped,
    /// Being started or sent home right now; its figures are not read.
    Moving,
    /// QEMU died on the server; the text says how.
    Lost(String),
}

impl std::fmt::Display for HostedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostedState::Running => f.write_str("running"),
            HostedState::Stopped => f.write_str("stopped, waiting to go home"),
            HostedState::Moving => f.write_str("moving"),
            HostedState::Lost(why) => write!(f, "lost: {why}"),
        }
    }
}

/// How to look at a consolidated VM's screen: its SPICE server on the
/// server host, behind a ticket made for this stay.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct ConsoleAccess {
    /// The TCP port.
    pub port: u16,
    /// The ticket (the password a SPICE viewer asks for).
    pub ticket: String,
}

/// One VM on the server, as `Status` reports it (`jettison status` shows
/// it in its status document, `docs/status.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct HostedStatus {
    /// The VM's name.
    pub vm: VmName,
    /// Its desktop.
    pub desktop: HostName,
    /// Where it is in its stay.
    pub state: HostedState,
    /// Seconds since it started on the server.
    pub seconds: u64,
    /// RAM size in bytes.
    pub ram_bytes: u64,
    /// Pages fetched from the desktop.
    pub pages_fetched: u64,
    /// Pages served as zero without a fetch.
    pub zero_pages_served: u64,
    /// Pages the consolidation's zero map marked zero: never fetched.
    pub zero_pages: u64,
    /// Pages dirtied on the server.
    pub dirty_pages: u64,
    /// Pages the guest freed and reported on the server (discarded: never
    /// fetched, sent home as holes).
    pub discarded_pages: u64,
    /// Disk blocks fetched from the desktop, all its disks together.
    pub blocks_fetched: u64,
    /// Disk blocks dirtied on the server, all its disks together.
    pub dirty_blocks: u64,
    /// The working set the server expects of it, in bytes.
    pub expected_bytes: u64,
    /// The desktop's power state as the server sees it (`awake`, `asleep`,
    /// `waking`, or `never sleeps`).
    pub desktop_power: String,
    /// Its remote console, while it runs there with a display.
    pub console: Option<ConsoleAccess>,
}

impl HostedStatus {
    /// A VM whose figures cannot be read now.
    pub fn moving(vm: VmName, desktop: HostName) -> Self {
        HostedStatus {
            vm,
            desktop,
            state: HostedState::Moving,
            seconds: 0,
            ram_bytes: 0,
            pages_fetched: 0,
            zero_pages_served: 0,
            zero_pages: 0,
            dirty_pages: 0,
            discarded_pages: 0,
            blocks_fetched: 0,
            dirty_blocks: 0,
            expected_bytes: 0,
            desktop_power: String::new(),
            console: None,
        }
    }
}

/// Every control message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Control {
    /// The answer to a [`ControlHello`]: who the peer is.
    Welcome(HostName),
    /// A request failed or was refused; the text says why and what to do.
    Failed(String),
    /// Desktop: may this VM come?
    Reserve(ReserveRequest),
    /// Server: yes.
    Reserved {
        /// The working set expected, in bytes.
        expected: u64,
        /// In a fleet, the stay's fencing token: the revision of the
        /// server's claim of the VM in etcd. The desktop's memserv and
        /// diskserv serve only a client presenting it, and it takes back
        /// only dirty state marked with it.
        fence: Option<u64>,
    },
    /// Desktop: here it is.
    Consolidate(Box<ConsolidateRequest>),
    /// Server: the VM runs here now; milliseconds from request to `cont`.
    Running(u64),
    /// Desktop: give the VM back.
    Reintegrate(VmName),
    /// Server: here it comes.
    Returning(ReturnHeader),
    /// A piece of the byte stream that follows `Returning`.
    Data(Vec<u8>),
    /// The end of that stream.
    End,
    /// Desktop: applied and running; forget the VM.
    Reintegrated(VmName),
    /// Done as asked.
    Done,
    /// Anyone: what runs on the server?
    Status,
    /// Server: this.
    StatusReply(Vec<HostedStatus>),
    /// Server → desktop: take the VM back; the text says why.
    PleaseReintegrate {
        /// The VM.
        vm: VmName,
        /// Why (memory pressure, fetch rate).
        reason: String,
    },
    /// Desktop: the server lost the VM (its QEMU died, or the server
    /// restarted); send its last checkpoint home, as `Returning` and the
    /// stream after it.
    Recover(VmName),
    /// Server: a `Reserve` refused because the capacity check found no
    /// room; the text gives the figures and what to change. Apart from
    /// `Failed` so that the command can tell "no room" from other refusals.
    NoRoom(String),
    /// Anyone: as `Status`, after each running VM's guest writes still in
    /// the page cache are written back to memtap, so that its dirty pages
    /// are exact (for a person's `jettison status`; the heartbeat asks
    /// `Status`, which costs no writeback).
    StatusExact,
    /// Server → desktop: move the VM to another server of the fleet (home
    /// first, then out again; home only when no other server has room);
    /// the text says why.
    PleaseMove {
        /// The VM.
        vm: VmName,
        /// Why (a drain, memory pressure).
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
            Control::Reserved { .. } => "Reserved",
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
            Control::Recover(_) => "Recover",
            Control::NoRoom(_) => "NoRoom",
            Control::StatusExact => "StatusExact",
            Control::PleaseMove { .. } => "PleaseMove",
        }
    }
}

fn text_ok(text: &str) -> Result<(), DecodeError> {
    if text.len() > MAX_TEXT {
        return Err(DecodeError::Limit("a text must be at most 4096 bytes"));
    }
    Ok(())
}

/// An address the server will connect to: a port, and an address that
/// names one host.
fn peer_address_ok(addr: &SocketAddr, field: &'static str) -> Result<(), DecodeError> {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(DecodeError::Limit(field));
    }
    Ok(())
}

/// Decodes one field, naming it in the error.
fn field<T: Decode<C>, C, D: Decoder<Context = C>>(
    decoder: &mut D,
    name: &str,
) -> Result<T, bincode::error::DecodeError> {
    T::decode(decoder).map_err(|e| {
        let why = match e {
            bincode::error::DecodeError::OtherString(why) => why,
            other => other.to_string(),
        };
        bincode::error::DecodeError::OtherString(format!("{name}: {why}"))
    })
}

impl<C> Decode<C> for ReserveRequest {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        Ok(ReserveRequest {
            vm: field(d, "vm")?,
            profile: field(d, "profile")?,
            disk_bytes: field(d, "disk_bytes")?,
            extra_disk_bytes: field(d, "extra_disk_bytes")?,
        })
    }
}
bincode::impl_borrow_decode!(ReserveRequest);

impl<C> Decode<C> for ConsolidateRequest {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        Ok(ConsolidateRequest {
            vm: field(d, "vm")?,
            desktop_mac: field(d, "desktop_mac")?,
            desktop_control: field(d, "desktop_control")?,
            memserv: field(d, "memserv")?,
            diskserv: field(d, "diskserv")?,
            vm_mac: field(d, "vm_mac")?,
            descriptor_bytes: field(d, "descriptor_bytes")?,
            descriptor_crc: field(d, "descriptor_crc")?,
            zero_map: field(d, "zero_map")?,
        })
    }
}
bincode::impl_borrow_decode!(ConsolidateRequest);

impl Message for ControlHello {
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl ReserveRequest {
    fn validate(&self) -> Result<(), DecodeError> {
        let profile = &self.profile;
        if profile.memory_mib == 0 || profile.memory_mib > MAX_MEMORY_MIB {
            return Err(DecodeError::Limit("profile.memory_mib must be 1 to 1048576"));
        }
        if profile.vcpus == 0 || profile.vcpus > MAX_VCPUS {
            return Err(DecodeError::Limit("profile.vcpus must be 1 to 256"));
        }
        if self.disk_bytes > MAX_DISK_BYTES {
            return Err(DecodeError::Limit("disk_bytes must be at most 64 TiB"));
        }
        if self.disk_count() > MAX_DISKS {
            return Err(DecodeError::Limit("extra_disk_bytes: a VM has at most 8 disks"));
        }
        if self.extra_disk_bytes.iter().any(|&bytes| bytes > MAX_DISK_BYTES) {
            return Err(DecodeError::Limit("extra_disk_bytes must each be at most 64 TiB"));
        }
        Ok(())
    }
}

impl ConsolidateRequest {
    fn validate(&self) -> Result<(), DecodeError> {
        if !self.vm_mac.is_unicast() {
            return Err(DecodeError::Limit("vm_mac must be a unicast address"));
        }
        if self.desktop_mac.is_some_and(|mac| !mac.is_unicast()) {
            return Err(DecodeError::Limit("desktop_mac must be a unicast address"));
        }
        peer_address_ok(&self.desktop_control, "desktop_control must be a host's address with a port")?;
        peer_address_ok(&self.memserv, "memserv must be a host's address with a port")?;
        peer_address_ok(&self.diskserv, "diskserv must be a host's address with a port")?;
        if self.descriptor_bytes == 0 || self.descriptor_bytes > MAX_DESCRIPTOR {
            return Err(DecodeError::Limit("descriptor_bytes must be 1 byte to 64 MiB"));
        }
        Ok(())
    }
}

impl ReturnHeader {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.descriptor_bytes == 0 || self.descriptor_bytes > MAX_DESCRIPTOR {
            return Err(DecodeError::Limit("descriptor_bytes must be 1 byte to 64 MiB"));
        }
        if self
            .descriptor_bytes
            .checked_add(self.memory_set_bytes)
            .and_then(|n| n.checked_add(self.disk_set_bytes))
            .is_none()
        {
            return Err(DecodeError::Limit(
                "descriptor_bytes, memory_set_bytes and disk_set_bytes must add up to a u64",
            ));
        }
        if self.disk_count == 0 || self.disk_count as usize > MAX_DISKS {
            return Err(DecodeError::Limit("disk_count must be 1 to 8"));
        }
        Ok(())
    }
}

impl Message for Control {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Control::Failed(text) | Control::NoRoom(text) => text_ok(text),
            Control::Reserve(r) => r.validate(),
            Control::Consolidate(c) => c.validate(),
            Control::Returning(header) => header.validate(),
            Control::Data(chunk) if chunk.len() > MAX_CHUNK => Err(DecodeError::Limit("a data chunk over 1 MiB")),
            Control::StatusReply(vms) => vms.iter().try_for_each(|v| {
                if let HostedState::Lost(why) = &v.state {
                    text_ok(why)?;
                }
                text_ok(&v.desktop_power)?;
                v.console.as_ref().map_or(Ok(()), |c| text_ok(&c.ticket))
            }),
            Control::PleaseReintegrate { reason, .. } | Control::PleaseMove { reason, .. } => text_ok(reason),
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
            vm: "vm1".parse().unwrap(),
            desktop_mac: Some("02:00:00:00:00:02".parse().unwrap()),
            desktop_control: "10.0.0.2:7400".parse().unwrap(),
            memserv: "10.0.0.2:7410".parse().unwrap(),
            diskserv: "10.0.0.2:7411".parse().unwrap(),
            vm_mac: "02:4a:54:00:00:50".parse().unwrap(),
            descriptor_bytes: 3,
            descriptor_crc: 7,
            zero_map: vec![4, 5],
        }
    }

    fn profile() -> MachineProfile {
        MachineProfile {
            memory_mib: 256,
            vcpus: 2,
            cpu_model: "Skylake-Client-v4".parse().unwrap(),
            firmware: Firmware::Kernel {
                kernel_sha256: [1; 32],
                initrd_sha256: [2; 32],
                args: "jt.fill=64".parse().unwrap(),
            },
            display: true,
        }
    }

    /// The error text a decoder gives for `msg`, whole chain.
    fn refusal(msg: &Control) -> String {
        wire::chain(&Control::decode_body(&msg.encode_body()).unwrap_err())
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
            disk_count: 2,
            fence: 0,
        };
        let mut status = HostedStatus::moving("vm1".parse().unwrap(), "desk1".parse().unwrap());
        status.state = HostedState::Lost("QEMU died".into());
        status.pages_fetched = 10;
        status.console = Some(ConsoleAccess { port: 5930, ticket: "secret".into() });
        let vm: VmName = "vm1".parse().unwrap();
        for msg in [
            Control::Welcome("server".parse().unwrap()),
            Control::Failed("no room".into()),
            Control::NoRoom("no room for desk1/vm1".into()),
            Control::Reserve(ReserveRequest {
                vm: vm.clone(),
                profile: profile(),
                disk_bytes: 2,
                extra_disk_bytes: vec![],
            }),
            Control::Reserve(ReserveRequest {
                vm: vm.clone(),
                profile: MachineProfile { firmware: Firmware::Uefi, display: false, ..profile() },
                disk_bytes: 2,
                extra_disk_bytes: vec![3, 4],
            }),
            Control::Reserved { expected: 7, fence: Some(56) },
            Control::Consolidate(Box::new(consolidate())),
            Control::Running(12),
            Control::Reintegrate(vm.clone()),
            Control::Returning(header),
            Control::Data(vec![0; 1000]),
            Control::End,
            Control::Reintegrated(vm.clone()),
            Control::Done,
            Control::Status,
            Control::StatusExact,
            Control::StatusReply(vec![status]),
            Control::PleaseReintegrate { vm: vm.clone(), reason: "server full".into() },
            Control::PleaseMove { vm: vm.clone(), reason: "server1 is being drained".into() },
            Control::Recover(vm),
        ] {
            round_trip(msg);
        }
        assert_eq!(header.total_bytes(), 195);
        assert_eq!(Control::Data(vec![0; 1000]).kind(), "Data");
        let hello = ControlHello::Desktop("desk1".parse().unwrap());
        assert_eq!(ControlHello::decode_body(&hello.encode_body()).unwrap(), hello);
    }

    #[test]
    fn limits_are_enforced_and_name_the_field() {
        assert!(Control::decode_body(&Control::Data(vec![0; MAX_CHUNK + 1]).encode_body()).is_err());
        type Spoil = fn(&mut ConsolidateRequest);
        let cases: [(Spoil, &str); 8] = [
            (|c| c.descriptor_bytes = MAX_DESCRIPTOR + 1, "descriptor_bytes"),
            (|c| c.vm_mac = "01:00:5e:00:00:01".parse().unwrap(), "vm_mac"),
            (|c| c.vm_mac = Mac::default(), "vm_mac"),
            (|c| c.desktop_mac = Some(Mac::BROADCAST), "desktop_mac"),
            (|c| c.memserv = "0.0.0.0:7410".parse().unwrap(), "memserv"),
            (|c| c.diskserv = "10.0.0.2:0".parse().unwrap(), "diskserv"),
            (|c| c.desktop_control = "224.0.0.1:7400".parse().unwrap(), "desktop_control"),
            (|c| c.descriptor_bytes = 0, "descriptor_bytes"),
        ];
        for (spoil, field) in cases {
            let mut c = consolidate();
            spoil(&mut c);
            let error = refusal(&Control::Consolidate(Box::new(c)));
            assert!(error.contains(field), "{field}: {error}");
        }
        let reserve = |memory_mib, vcpus, disk_bytes| {
            let profile = MachineProfile { memory_mib, vcpus, ..profile() };
            refusal(&Control::Reserve(ReserveRequest {
                vm: "vm1".parse().unwrap(),
                profile,
                disk_bytes,
                extra_disk_bytes: vec![],
            }))
        };
        assert!(reserve(0, 1, 1).contains("memory_mib"));
        assert!(reserve(MAX_MEMORY_MIB + 1, 1, 1).contains("memory_mib"));
        assert!(reserve(256, 0, 1).contains("vcpus"));
        assert!(reserve(256, MAX_VCPUS + 1, 1).contains("vcpus"));
        assert!(reserve(256, 1, MAX_DISK_BYTES + 1).contains("disk_bytes"));
        let disks = |extra_disk_bytes: Vec<u64>| {
            let request =
                ReserveRequest { vm: "vm1".parse().unwrap(), profile: profile(), disk_bytes: 1, extra_disk_bytes };
            Control::decode_body(&Control::Reserve(request).encode_body()).map_err(|e| wire::chain(&e))
        };
        assert!(disks(vec![1; MAX_DISKS - 1]).is_ok(), "8 disks are fine");
        assert!(disks(vec![1; MAX_DISKS]).unwrap_err().contains("at most 8 disks"));
        assert!(disks(vec![1, MAX_DISK_BYTES + 1]).unwrap_err().contains("extra_disk_bytes"));
        let mut body = Control::Done.encode_body();
        body.push(0);
        assert!(Control::decode_body(&body).is_err(), "trailing bytes");
        assert!(Control::decode_body(&[200]).is_err(), "unknown variant");
    }

    #[test]
    fn a_returning_header_keeps_its_sizes_within_limits() {
        // Found by the fuzz targets control_message and descriptor_metadata:
        // sizes whose sum overflows made `total_bytes`, which the desktop
        // calls at once, panic (debug) or wrap (release).
        let header = ReturnHeader {
            descriptor_bytes: 3,
            descriptor_crc: 9,
            memory_set_bytes: u64::MAX,
            disk_set_bytes: 96,
            dirty_pages: 0,
            dirty_blocks: 0,
            disk_count: 1,
            fence: 0,
        };
        assert!(refusal(&Control::Returning(header)).contains("set_bytes"));
        for disk_count in [0, MAX_DISKS as u32 + 1] {
            let header = ReturnHeader { memory_set_bytes: 96, disk_count, ..header };
            assert!(refusal(&Control::Returning(header)).contains("disk_count"), "{disk_count}");
        }
        for descriptor_bytes in [0, MAX_DESCRIPTOR + 1] {
            let error = refusal(&Control::Returning(ReturnHeader { descriptor_bytes, memory_set_bytes: 96, ..header }));
            assert!(error.contains("descriptor_bytes"), "{error}");
        }
    }

    /// The same layout as the real messages, with plain strings where they
    /// have checked types: what a hostile peer can put on the wire.
    #[derive(Encode)]
    enum RawControl {
        _Welcome(String),
        _Failed(String),
        Reserve { vm: String, memory_mib: u64, vcpus: u32, cpu_model: String },
    }

    fn bincode_config() -> impl bincode::config::Config {
        bincode::config::standard().with_little_endian().with_variable_int_encoding()
    }

    #[test]
    fn disk_exports_name_the_first_disk_as_the_vm_and_no_other_vm() {
        let vm: VmName = "vm1".parse().unwrap();
        assert_eq!(disk_export(&vm, 0), "vm1");
        assert_eq!(disk_export(&vm, 1), "vm1.1");
        assert_eq!(disk_export(&vm, 7), "vm1.7");
        assert!(disk_export(&vm, 1).parse::<VmName>().is_err(), "no VM is called like a further disk");
    }

    #[test]
    fn hostile_names_are_refused_by_the_decoder_naming_the_field() {
        for vm in ["../x", "", "a-very-long-vm-name", "vm1,romfile=/etc/shadow"] {
            let raw = RawControl::Reserve { vm: vm.into(), memory_mib: 1, vcpus: 1, cpu_model: "max".into() };
            let body = bincode::encode_to_vec(raw, bincode_config()).unwrap();
            let error = wire::chain(&Control::decode_body(&body).unwrap_err());
            assert!(error.contains("vm: ") && error.contains("not a valid VM name"), "{error}");
        }
        let raw = RawControl::Reserve { vm: "vm1".into(), memory_mib: 1, vcpus: 1, cpu_model: "max,+vmx".into() };
        let body = bincode::encode_to_vec(raw, bincode_config()).unwrap();
        let error = wire::chain(&Control::decode_body(&body).unwrap_err());
        assert!(error.contains("profile: ") && error.contains("not a valid CPU model"), "{error}");
        let hostile = bincode::encode_to_vec((0u32, "../../etc"), bincode_config()).unwrap();
        let error = wire::chain(&ControlHello::decode_body(&hostile).unwrap_err());
        assert!(error.contains("not a valid host name"), "{error}");
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
