//! Wake-on-LAN for consolidated desktops: the server's [`DesktopWaker`] wakes
//! a sleeping desktop before memtap or cownetdisk fetch state from it, and
//! the desktop's [`EmulatedS3`] (for tests) sleeps like a real one and is
//! woken only by a real magic packet.
//!
//! # Why it is built this way
//!
//! - **A hook before every fetch.** `wire::RemoteImage` calls
//!   [`wire::WakeHook::wake`] before every fetch attempt and before
//!   each retry. Most calls find the desktop awake, so the waker keeps a
//!   "last seen awake" time valid for a short while (1 s by default): within
//!   it, `wake` is a lock and a clock read.
//! - **Coalescing.** A guest faulting on several vCPUs, plus cownetdisk,
//!   call the hook at the same moment for the same desktop. One caller (the
//!   leader) sends the magic packets and probes; the others wait on a
//!   condition variable for its outcome. Without this each caller would send
//!   its own packets and the counters would say nothing about real wakes.
//! - **A TCP probe, not ping.** What the server needs is memserv or diskserv
//!   answering, not the kernel: a desktop resuming from S3 answers ICMP
//!   before its daemons run, and ICMP is often filtered. A TCP connect to the
//!   service's port succeeds exactly when the desktop can serve, needs no
//!   raw socket, and costs the desktop one accept (the probe closes before
//!   the handshake, so it is no request and does not keep the desktop up).
//! - **Packets.** The magic packet (6 × `0xff`, then the MAC 16 times) goes
//!   out as a UDP broadcast to port 9 through `wol-rs`, which crosses routers
//!   that forward directed broadcasts; optionally also as a raw Ethernet
//!   frame with EtherType `0x0842` on a named interface, for NICs whose
//!   firmware only looks at that. It is re-sent with back-off until the
//!   probe succeeds or the give-up time passes.
//!
//! The emulated S3 lives here rather than in activity-monitor because it is
//! the other end of this crate's protocol: its listener must recognise
//! exactly what [`magic`] builds, and the unit tests check both together.
#![warn(missing_docs)]

mod emulated_s3;
mod error;
pub mod magic;
pub mod netns;
mod nic;
mod packet_socket;
mod registry;
mod waker;

pub use emulated_s3::{EmulatedS3, S3Config, S3State, S3Stats};
pub use error::WakeError;
pub use magic::{Mac, MagicKind};
pub use nic::{check_wakes_on_magic_packet, NicWakeError};
pub use packet_socket::PacketSocket;
pub use registry::Registry;
pub use waker::{DesktopStatus, DesktopWaker, WakeOutcome, WakeState, WakeStats, WakeTarget};
