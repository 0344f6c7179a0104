//! What the two daemons say to each other: the desktop daemon asks the
//! server daemon to take a VM (consolidation) and to give it back
//! (reintegration); the server asks a desktop to take its VM back when it
//! runs short of memory or the VM is no longer idle.
//!
//! [`protocol`] is the specification of the messages and their order;
//! [`transfer`] carries the bulk of a reintegration (descriptor and dirty
//! sets) as a byte stream over those messages. Both run on
//! [`wire::Channel`], the same authenticated, encrypted framing as
//! the page and block traffic.
#![warn(missing_docs)]

pub mod config_file;
mod kernel_args;
pub mod local;
pub mod local_access;
mod machine;
pub mod protocol;
pub mod transfer;

pub use identifiers::{HostName, Mac, VmName};
pub use machine::file_sha256;
pub use protocol::{
    disk_export, ConsoleAccess, ConsolidateRequest, Control, ControlHello, CpuModel, Firmware, HostedState,
    HostedStatus, KernelArgs, MachineProfile, ReserveRequest, ReturnHeader, CONTROL_TIMEOUT, MAX_DISKS, MAX_VCPUS,
};
pub use transfer::{receive_stream, send_stream, ChunkReader, ChunkWriter};
