//! The copy-on-write engine shared by memtap (guest RAM over FUSE, 4 KiB pages)
//! and cownetdisk (a disk over NBD, blocks of 4 KiB or 64 KiB): two sparse
//! slices with bitmaps in front of a remote source.
//!
//! # Why two slices
//!
//! A consolidated VM runs on the server while its memory and disk stay on the
//! sleeping desktop. Each unit (page or block) the VM touches is either still
//! only at the desktop (*absent*), copied here unchanged (*fetched*), changed
//! here (*dirty*), known to be zero and never worth fetching (*zero*, from
//! the descriptor's zero map), or given up by the VM (*discarded*: the guest
//! freed it, so it reads as zeros, holds no space, and goes home as a hole). Keeping fetched and dirty units in separate
//! files makes reintegration cheap and safe: only the dirty slice goes back to
//! the desktop, the fetched slice is a cache that can be thrown away or
//! refetched, and a dirty unit can never be mistaken for the desktop's copy.
//!
//! # Layers
//!
//! - [`PersistentBitmap`]: one bit per unit in a `MAP_SHARED` file, with a
//!   durable copy written at each flush.
//! - [`SliceStore`]: whole-unit operations over `fetched.slice`,
//!   `dirty.slice` and their bitmaps, the discarded bitmap, plus the
//!   in-memory known-zero map.
//! - [`request::split`] and [`Overlay`]: byte requests split into an unaligned
//!   head, whole units and an unaligned tail; absent units fetched from a
//!   [`UnitSource`] in one call per request; whole-unit writes promoted to
//!   dirty without a fetch; discards of whole units without a fetch.
//! - [`export_dirty_set`]: the dirty slice and the discarded units written
//!   out as a dirty set, the
//!   format of `migration-formats` that the desktop stages, verifies and
//!   only then applies to its image (without this engine).
//!
//! # Write order
//!
//! As in nbdkit's cow filter: a unit's data is written before its bit is set,
//! and a flush syncs the data before it makes the bits durable. A crash between
//! the two loses a little work; it never makes a bit claim data that is not
//! there.
//!
//! # Crash model
//!
//! - *The process dies* (SIGKILL, panic, OOM): nothing is lost. Slice writes
//!   and bit stores both sit in the page cache, which outlives the process;
//!   reopening the store finds every unit that was written, flushed or not.
//! - *The machine reboots*: the page cache is gone. Each bitmap records the
//!   kernel's boot id when opened; finding another boot id on reopen, it trusts
//!   its live file only if it was closed cleanly (CRC-checked), and otherwise
//!   restores its last flushed copy. Dirty units written after the last
//!   [`SliceStore::flush`] are dropped (and logged): exactly the writes an NBD
//!   client or a FUSE `fsync` was never told were durable.
//!
//! [`BootId`] can be given explicitly ([`SliceStore::open_with_boot_id`]) so
//! that tests can pretend the machine rebooted.
//!
//! # Example
//!
//! ```
//! use slice_store::{Overlay, SliceStore, SourceError, UnitSource};
//!
//! /// Stands in for memserv or diskserv: unit `n` holds the byte `n`.
//! struct Numbered;
//!
//! impl UnitSource for Numbered {
//!     fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
//!         Ok(units.iter().map(|&unit| (unit, vec![unit as u8; 4096])).collect())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SliceStore::open(dir.path(), 4096, 16 * 4096)?;
//! store.mark_zero_ranges(std::iter::once(8..16))?; // from the descriptor's zero map
//! let device = Overlay::new(store, Numbered);
//!
//! // The end of unit 2 and the start of unit 3: both fetched in one call.
//! let mut buf = [0; 100];
//! device.read(3 * 4096 - 50, &mut buf)?;
//! assert_eq!((buf[0], buf[99]), (2, 3));
//!
//! // A whole unit is written without a fetch; flushed, it survives a reboot.
//! device.write(0, &[7; 4096])?;
//! device.flush()?;
//! assert_eq!(device.stats().fetch_calls, 1);
//! assert_eq!(device.store().dirty_units().collect::<Vec<_>>(), [0]);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod bitmap;
mod bootid;
mod error;
mod export;
mod overlay;
pub mod request;
mod slice;
mod stats;
mod store;

pub use bitmap::{PersistentBitmap, Recovery};
pub use bootid::BootId;
pub use error::{FormatError, ReplyError, SourceError, StoreError};
pub use export::{export_dirty_set, exported_len, ExportError};
pub use overlay::{Overlay, UnitSource};
pub use stats::OverlayStats;
pub use store::{SliceStore, UnitState, Units};
