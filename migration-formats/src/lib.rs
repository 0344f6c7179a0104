//! The formats a VM's state takes when it moves, without the copy-on-write
//! engine behind them.
//!
//! - [`zero_map`]: which pages of the desktop's RAM file are zeros. It goes
//!   out with the VM at consolidation, so that the server never fetches
//!   them.
//! - [`dirty_set`]: what the VM changed on the server, coming home at
//!   reintegration, and its staged, verified, crash-safe apply to the
//!   desktop's RAM file and disk image.
//!
//! The desktop reads and writes these with this crate alone; the server
//! produces a dirty set from its slice store (`slice-store`'s
//! `export_dirty_set`), which writes it with this crate's
//! [`dirty_set::DirtySetWriter`].
#![warn(missing_docs)]

pub mod dirty_set;
pub mod zero_map;

pub use dirty_set::{ApplyTarget, DirtySetError, DirtySetReader, DirtySetWriter};
pub use zero_map::{ZeroMap, ZeroMapError};
