//! Handing the writes back: the *dirty set*, a stream of the units a VM
//! dirtied on the server, and its staged, restartable apply on the desktop.
//!
//! At reintegration the server sends back only what the consolidated VM
//! changed: the dirty slice of a slice store (disk blocks
//! from cownetdisk, and the same way the memory pages memtap saw written),
//! and the units it discarded (memory the guest freed and reported, which
//! QEMU punched out of memtap's RAM file): the desktop punches those as
//! holes in its image rather than receiving pages of zeros, so its RAM file
//! keeps its holes and the next consolidation's zero map finds them. The
//! desktop's RAM file and disk image are its checkpoint, and the rule this module
//! enforces is that the checkpoint stays usable whatever happens to the transfer:
//! nothing is written into the image before the whole set has arrived, been
//! verified and been made durable beside it.
//!
//! # Flow
//!
//! ```mermaid
//! sequenceDiagram
//!     participant S as server (memtap, cownetdisk)
//!     participant D as desktop
//!     Note over S: stop the VM, fsync, SliceStore::flush
//!     S->>D: header (unit size, image size, unit count, transfer id)
//!     S->>D: one record per dirty or discarded unit, in increasing unit order
//!     S->>D: trailer (count, data bytes, transfer id, stream CRC)
//!     Note over D: stage: verify each record as it arrives, copy it to KEY.ID.partial
//!     Note over D: fsync the copy, rename it KEY.ID.verified, fsync the directory
//!     Note over D: commit: verify the staged copy again, pwrite its units into the image
//!     Note over D: fsync the image, unlink KEY.ID.verified, fsync the directory
//!     Note over D: only now may the VM start
//! ```
//!
//! The server side is a [`DirtySetWriter`] fed unit by unit (the slice
//! store's `export_dirty_set` does that for its dirty slice; [`encoded_len`]
//! says beforehand how long the set will be);
//! the desktop side is an [`ApplyTarget`]: [`ApplyTarget::apply`], or its two
//! halves [`ApplyTarget::stage`] and [`StagedSet::commit`], and
//! [`ApplyTarget::resume_pending`], which must run before the VM starts.
//! [`DirtySetReader`] reads and verifies a set on its own.
//!
//! # Format, version 2
//!
//! All integers are little-endian. A set is a header, `count` records and a
//! trailer; nothing else, and a reader never reads past the trailer, so a set can
//! travel on a connection that carries more after it.
//!
//! Header, 52 bytes:
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! |      0 |    8 | magic `JTDIRTY1`                                   |
//! |      8 |    4 | format version, 2 (1 is still read)                |
//! |     12 |    4 | unit size in bytes, 1 to [`MAX_UNIT_SIZE`]         |
//! |     16 |    8 | image size in bytes                                |
//! |     24 |    8 | `count`: number of records                         |
//! |     32 |   16 | transfer id, random, names this transfer           |
//! |     48 |    4 | CRC-32 of bytes 0..48                              |
//!
//! Record, `12 + len + 4` bytes, one per dirty or discarded unit:
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! |      0 |    8 | unit number                                        |
//! |      8 |    4 | `len`: data length in bytes; 0 for a discard       |
//! |     12 |  len | the unit's new content                             |
//! | 12+len |    4 | CRC-32 of the record's bytes before it             |
//!
//! A *discard record* (`len` 0, 16 bytes) says the unit was discarded on the
//! server: the desktop punches a hole there (`fallocate` `PUNCH_HOLE`), which
//! reads as zeros, or writes zeros where the file system cannot punch.
//!
//! Trailer, 44 bytes:
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! |      0 |    8 | magic `JTDIRTYE`                                   |
//! |      8 |    8 | number of records, equal to the header's `count`   |
//! |     16 |    8 | sum of the records' `len`                          |
//! |     24 |   16 | transfer id, equal to the header's                 |
//! |     40 |    4 | CRC-32 of every byte of the set before this field  |
//!
//! Rules, each checked by the reader before it reads further:
//!
//! - The version is 1 or 2; a reader refuses any other, naming the versions
//!   it reads (a later version may change every layout after the version
//!   field). A writer writes 2. Version 1 is version 2 without discard
//!   records: sets staged by an older build are still applied.
//! - `count` is at most the number of units of the image (`image size / unit
//!   size`, rounded up).
//! - Unit numbers strictly increase (so no unit appears twice) and are below
//!   that number of units.
//! - `len` is the unit's length: the unit size, or less for a partial last unit;
//!   or, from version 2 on, 0 for a discard.
//!   It is checked before any data is read, so a damaged length can never make
//!   a reader allocate or read more than one unit, at most [`MAX_UNIT_SIZE`].
//!
//! ## Why CRC-32 is enough
//!
//! The checksums guard *integrity*, not authenticity: a set travels inside the
//! project's authenticated, encrypted channel, whose AEAD tag rejects any change
//! in transit, and an attacker who can write the desktop's staging directory can
//! write the image itself. What is left to catch is a stream that breaks off
//! (caught by structure: `count`, the trailer, its magic, not by a checksum), a
//! framing or producer bug, and damage to the staged copy on the desktop's disk
//! between staging and a resume after a crash. The per-record CRC-32 binds the
//! unit number, length and data together; it detects every error burst of up to
//! 32 bits, every error of up to 3 bits in a 4 KiB page's record, every error of
//! up to 2 bits in a record of any size up to the limit, and lets other damage
//! through with a probability of about 2^-32 per damaged record, on top of the
//! disk's own ECC. The stream CRC in the trailer also covers the header and the
//! order of the records. A cryptographic hash would add nothing against these
//! faults and would cost, without SHA extensions, a few hundred milliseconds per
//! hundred MiB, twice per apply (stage, then the re-check at commit), against a
//! reintegration budget of about four seconds; crc32fast runs at memory speed.
//!
//! # Staging and commit on the desktop
//!
//! The staging directory may be shared by several images (a VM's RAM file and
//! its disk image): staged files are named `KEY.ID.partial` and `KEY.ID.verified`,
//! where `ID` is the transfer id in hex and `KEY` is the image's file name and a
//! CRC-32 of its canonical path, so that each image only ever sees its own sets.
//! Every operation holds an exclusive `flock` on the image for its duration,
//! against a second apply; the VM itself must not be running on the image.
//!
//! Order of writes and syncs, and what a crash at each point leaves (in italics):
//!
//! 1. **Stage** ([`ApplyTarget::stage`]). Read the header; check it against the
//!    image (size, unit size). Create the staging directory if need be, syncing
//!    its parent. Remove this image's stale `.partial` files; refuse if one of
//!    its `.verified` sets is pending.
//! 2. Verify each record as it arrives and append it to `KEY.ID.partial`.
//! 3. Verify the trailer; fsync `KEY.ID.partial`. *A crash in steps 1 to 3
//!    leaves at most a `.partial` file: never applied, removed by the next call;
//!    an error removes it at once.*
//! 4. Rename it to `KEY.ID.verified` and fsync the directory: this is the
//!    journal mark. *From here a crash leaves a verified set that
//!    [`ApplyTarget::resume_pending`] applies.*
//! 5. **Commit** ([`StagedSet::commit`]). Read the whole `.verified` file back
//!    and verify it again, still without touching the image.
//! 6. `pwrite` each unit at `unit × unit size` in the image, or punch its hole.
//!    *A crash in steps 6 to 8 leaves the image partly updated and the verified
//!    set on disk: resumed.*
//! 7. fsync the image.
//! 8. Unlink `KEY.ID.verified`, fsync the directory. *After this, the updated
//!    image and nothing pending.*
//!
//! So, from the point of view of the VM that starts on the image, it is either
//! the old checkpoint (a crash before step 4, or any error in steps 1 to 5), or
//! the checkpoint plus every unit of the set: a crash in steps 6 to 8 leaves a
//! verified set on disk, and [`ApplyTarget::resume_pending`], which must run
//! before the VM starts, writes every unit of it again. Writing a unit twice
//! gives the same bytes (and punching a hole twice the same hole), so the
//! re-apply is idempotent, whatever subset of the writes had reached the
//! disk. Step 8 must be durable before the VM starts:
//! a `.verified` file reappearing after the VM has written to the image would
//! be applied again over newer data, which is why failing to remove it is an
//! error ([`DirtySetError::RemoveStaged`]).
//!
//! Step 5 re-verifies what step 2 verified: the staged copy is read back from
//! disk (after a crash, from a disk the set may have sat on for a reboot), and it
//! costs one sequential read of the set and a CRC at memory speed.
//!
//! On the server, flush the slice store (after stopping the VM and, for
//! memtap, after its FUSE writeback and fsync) before exporting: the export reads what the store holds, and a flush makes the
//! server's copy durable too, so that a transfer that fails can be sent again
//! from the same units even after the server reboots.

mod apply;
mod error;
mod format;
mod stream;

pub use apply::{ApplySummary, ApplyTarget, StagedSet};
pub use error::{DirtySetError, ImageState, Part, StreamError};
pub use format::{encoded_len, DirtySetHeader, TransferId, MAX_UNIT_SIZE, OLDEST_VERSION, VERSION};
pub use stream::{DirtySetReader, DirtySetWriter, ExportSummary, UnitChange};
