//! The server daemon (`jettison server`): hosts consolidated VMs.
//!
//! For each VM a desktop sends, it checks there is room for the VM's
//! expected working set ([`capacity`]), mounts a memtap file for its RAM and
//! serves a cownetdisk export for its disk, both fetching from the
//! desktop on demand, and runs the VM in QEMU from the desktop's descriptor
//! ([`hosted`]). It sends a VM home when its desktop asks, and asks a
//! desktop to take its VM back when the server runs short of memory or the
//! VM pulls state faster than an idle VM would ([`watch`]). It splits its
//! power across the VMs it hosts and reports each one's net saving
//! ([`energy`]). In a fleet of servers it registers in etcd with its room
//! and load ([`fleet`]).
#![warn(missing_docs)]

pub mod capacity;
pub mod config;
pub mod daemon;
pub mod energy;
mod error;
pub mod fence;
pub mod fleet;
pub mod hosted;
mod key;
mod machine;
mod metrics;
pub mod rapl;
pub mod storage;
pub mod traces;
pub mod watch;

pub use config::ServerConfig;
pub use daemon::ServerDaemon;
pub use error::ServerError;
pub use key::VmKey;
