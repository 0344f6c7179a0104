//! Errors of the slice store.
//!
//! Each variant names the operation that failed and carries its context (the
//! path, the unit, the byte offset in hex); the underlying cause is attached as
//! the error source, never repeated in the message. Messages that a person will
//! read after a crash or a reboot also say what to do.

use std::io;
use std::path::PathBuf;

/// Result type of this crate.
pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the slice store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The unit size or total size given to a constructor cannot describe a store.
    #[error("checking the store geometry (unit size {unit_size}, size {size:#x}): {reason}")]
    CheckGeometry {
        /// Unit size that was asked for.
        unit_size: u32,
        /// Size in bytes that was asked for.
        size: u64,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Reading the machine's boot id failed.
    #[error("reading the boot id from {path}; the kernel must provide it (is /proc mounted?)")]
    ReadBootId {
        /// Where the boot id was read from.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// The boot id file did not hold a UUID.
    #[error("parsing the boot id {text:?} read from {path}: not a UUID")]
    ParseBootId {
        /// Where the boot id was read from.
        path: PathBuf,
        /// What it held.
        text: String,
    },

    /// A store that must exist (to hand its writes back) is not there.
    #[error(
        "no slice store in {path} (its dirty.bitmap is missing): the slices were never made here, or were deleted"
    )]
    Missing {
        /// The directory.
        path: PathBuf,
    },

    /// Creating the store directory failed.
    #[error("creating the store directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Another process holds the store directory.
    #[error("locking the store directory {path}: another process has it open; stop that process first")]
    LockStore {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Creating a slice or bitmap file failed.
    #[error("creating {path}")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Opening an existing slice or bitmap file failed.
    #[error("opening {path}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// An existing slice file does not have the size of the store.
    #[error(
        "checking the slice {path}: it holds {found:#x} bytes but the store size is {expected:#x}; \
         this directory belongs to another disk or VM, give the store an empty directory"
    )]
    CheckSlice {
        /// The slice file.
        path: PathBuf,
        /// Its length.
        found: u64,
        /// The store size.
        expected: u64,
    },

    /// Reading a bitmap file's header or bits failed at the I/O level.
    #[error("reading the bitmap {path}")]
    ReadBitmap {
        /// The bitmap file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// A bitmap file is not a bitmap of this store.
    #[error(
        "checking the bitmap {path}: it is not a valid bitmap of this store; \
         move the store directory aside (its dirty units cannot be trusted) and start afresh"
    )]
    CheckBitmap {
        /// The bitmap file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },

    /// After a reboot, the durable copy of a bitmap could not be read.
    #[error(
        "recovering after a reboot from the flushed copy {path}; without it the units \
         written before the reboot cannot be trusted: move the store directory aside and start afresh"
    )]
    ReadFlushedCopy {
        /// The flushed copy.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// After a reboot, the durable copy of a bitmap was damaged.
    #[error(
        "recovering after a reboot from the flushed copy {path}: it is damaged; \
         move the store directory aside and start afresh"
    )]
    RecoverBitmap {
        /// The flushed copy.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },

    /// Mapping a bitmap file into memory failed.
    #[error("mapping the bitmap {path} into memory")]
    MapBitmap {
        /// The bitmap file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Writing a bitmap back to disk (msync) failed.
    #[error("syncing the bitmap {path} to disk")]
    SyncBitmap {
        /// The bitmap file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Writing the durable copy of a bitmap failed.
    #[error("writing the flushed copy {path}; the previous copy is still in place")]
    WriteFlushedCopy {
        /// The file being written.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Reading a unit from a slice failed.
    #[error("reading unit {unit} at offset {offset:#x} of {path}")]
    ReadUnit {
        /// The slice file.
        path: PathBuf,
        /// The unit.
        unit: u64,
        /// Its byte offset in the slice.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Punching a hole where a discarded unit was in a slice failed.
    #[error("punching a hole for discarded unit {unit} at offset {offset:#x} of {path}")]
    PunchUnit {
        /// The slice file.
        path: PathBuf,
        /// The unit.
        unit: u64,
        /// Its byte offset in the slice.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Writing a unit to a slice failed.
    #[error("writing unit {unit} at offset {offset:#x} of {path}")]
    WriteUnit {
        /// The slice file.
        path: PathBuf,
        /// The unit.
        unit: u64,
        /// Its byte offset in the slice.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Making a slice's data durable (fdatasync) failed.
    #[error("syncing the slice {path} to disk")]
    SyncSlice {
        /// The slice file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Reading a file to find its zero units failed.
    #[error("scanning {path} for zero units at offset {offset:#x}")]
    ScanFile {
        /// The file scanned.
        path: PathBuf,
        /// Where the read or seek failed.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// A unit number is beyond the end of the store (a caller bug).
    #[error("addressing unit {unit}: the store has {unit_count} units")]
    UnitOutOfRange {
        /// The unit asked for.
        unit: u64,
        /// Number of units in the store.
        unit_count: u64,
    },

    /// A unit buffer does not have the unit's length (a caller bug).
    #[error("passing a buffer of {len} bytes for unit {unit}, which holds {expected} bytes")]
    UnitLength {
        /// The unit.
        unit: u64,
        /// Length of the buffer given.
        len: usize,
        /// Length of the unit (shorter than the unit size for a partial last unit).
        expected: u32,
    },

    /// A byte request reaches beyond the end of the store.
    #[error("accessing {len:#x} bytes at offset {offset:#x}: beyond the end of the store ({size:#x} bytes)")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Size of the store.
        size: u64,
    },

    /// The remote source failed to deliver units.
    #[error("fetching {count} units from the source, the first being unit {first}")]
    Fetch {
        /// First unit asked for.
        first: u64,
        /// Number of units asked for.
        count: usize,
        /// Cause, as the source reported it.
        #[source]
        source: SourceError,
    },

    /// The remote source answered, but not with what was asked.
    #[error("checking the source's reply for unit {unit}")]
    CheckFetchReply {
        /// The unit concerned.
        unit: u64,
        /// What is wrong.
        #[source]
        source: ReplyError,
    },
}

/// What is wrong with a bitmap file or its flushed copy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the bitmap magic.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first eight bytes of the file.
        found: [u8; 8],
    },
    /// The format version is not one this build reads.
    #[error("format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The state field holds no known state.
    #[error("unknown state value {found}")]
    BadState {
        /// Value in the file.
        found: u32,
    },
    /// The header claims more units than any store may have.
    #[error("header claims {found} units, more than the limit of {max}")]
    CountTooLarge {
        /// Count in the header.
        found: u64,
        /// Largest count accepted.
        max: u64,
    },
    /// The unit size differs from the store's.
    #[error("unit size {found}, the store uses {expected}")]
    UnitSizeMismatch {
        /// Unit size in the file.
        found: u32,
        /// Unit size of the store.
        expected: u32,
    },
    /// The unit count differs from the store's.
    #[error("{found} units, the store has {expected}")]
    UnitCountMismatch {
        /// Count in the file.
        found: u64,
        /// Count of the store.
        expected: u64,
    },
    /// The file length does not match its header.
    #[error("file holds {found} bytes, expected {expected}")]
    LengthMismatch {
        /// Length of the file.
        found: u64,
        /// Length implied by the header.
        expected: u64,
    },
    /// A flushed copy was not marked clean when written.
    #[error("not marked clean")]
    NotClean,
    /// The checksum of the bits does not match the header.
    #[error("checksum {computed:#010x} of the bits, the header says {stored:#010x}")]
    ChecksumMismatch {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bits as read.
        computed: u32,
    },
}

/// What is wrong with a [`UnitSource`](crate::UnitSource)'s reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// A requested unit is not in the reply.
    #[error("the unit is missing from the reply")]
    Missing,
    /// The reply holds a unit that was not requested.
    #[error("the unit was not requested")]
    NotRequested,
    /// The reply holds the same unit twice.
    #[error("the unit is in the reply twice")]
    Duplicate,
    /// The unit's data has the wrong length.
    #[error("{found} bytes of data, the unit holds {expected}")]
    Length {
        /// Length received.
        found: usize,
        /// Length of the unit.
        expected: u32,
    },
}

/// The error a [`UnitSource`](crate::UnitSource) reports; it wraps whatever the
/// source's own failure was (network, remote wake-up, protocol).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError(Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    /// Wraps a source's failure; a `String` or `&str` also works.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(cause.into())
    }
}
