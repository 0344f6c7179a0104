//! Server side: the copy-on-write networked disk. An NBD server in front of
//! the slice store (`jettison-slice-store`), fetching the blocks a
//! consolidated VM has not touched yet from the desktop's diskserv.
//!
//! # Why NBD
//!
//! The paper's cownetdisk was a blktap driver for Xen. NBD is the userspace
//! block interface QEMU speaks natively (`-drive
//! file=nbd+unix:///?socket=…`), as do the kernel's `nbd` module and
//! XCP-ng's tapdisk, so the same server serves a VM under any of them and
//! can be tested with stock tools (`qemu-io`, `nbdcopy`, `nbdinfo`).
//!
//! # How a disk is served
//!
//! - [`Disk`]: the VM's disk as two slices and their bitmaps
//!   (`<state-dir>/<vm>/`) over diskserv. A read of blocks not here
//!   fetches them, all those one request needs in one fetch, into the
//!   fetched slice. The first write to a block promotes it to the dirty
//!   slice: a whole block without any fetch, a partial one after fetching
//!   it once. A flush (`NBD_CMD_FLUSH`, or a write with FUA) makes the
//!   dirty slice and its bitmap durable. The blocks come from diskserv
//!   through a reconnecting client that asks the wake hook (Wake-on-LAN)
//!   before every fetch.
//! - [`NbdServer`]: listeners on a Unix socket and/or TCP, a thread per
//!   connection (blocking I/O: a disk has few clients), and a
//!   [`StopHandle`] for a clean shutdown that lets requests in flight
//!   finish, then flushes.
//! - [`protocol`]: the NBD messages, whose module doc summarises the
//!   specification and says what this server answers to each option and
//!   command.
//! - [`DiskStats`]: counters, written every second (when they change) to
//!   `<state-dir>/<vm>.stats` as JSON, with a one-line
//!   [`DiskStats::summary`] for `jettison status`.
#![warn(missing_docs)]

mod connection;
mod disk;
mod error;
mod handshake;
pub mod protocol;
mod server;
mod source;
mod stats;
mod transmission;

pub use disk::{Disk, DiskConfig, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
pub use error::{ConnectionError, CownetdiskError, ProtocolError};
pub use event_loop::StopHandle;
pub use handshake::negotiate_bytes;
pub use server::{Listen, NbdServer};
pub use stats::{DiskStats, RequestCounts};
