//! The fetch trace: every request memtap and cownetdisk send to a VM's
//! desktop while the VM is on the server, with when it was asked and when
//! it was answered. One file per stay, written by the VM's storage process
//! and kept by the server daemon with the VM's history.
//!
//! It is the input of the energy model (`energy --trace`): each request is
//! a moment the desktop had to be awake, so the gaps between requests are
//! the desktop's sleep opportunities.
//!
//! The format and its rules are in [`format`]; [`TraceWriter`] appends to
//! a file, [`read`] and [`parse`] read one back.
#![warn(missing_docs)]

pub mod format;
mod reader;
mod writer;

pub use format::{boottime_ns, Cause, Device, Fetch, Totals, FORMAT_VERSION, MAGIC};
pub use reader::{merge_runs, parse, read, Trace, TraceError};
pub use writer::{TraceWriter, DEFAULT_MAX_BYTES};
