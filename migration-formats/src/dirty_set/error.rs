//! Errors of the dirty set: [`StreamError`] says what is wrong with a stream
//! and where, [`DirtySetError`] says which operation failed, on which image or
//! file, and what state the image is in.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::format::TransferId;

/// A place in a dirty set stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The header.
    Header,
    /// The unit number and length of record `index` (counted from 0).
    RecordHead {
        /// Which record.
        index: u64,
    },
    /// The data or checksum of record `index`, which is for `unit`.
    RecordData {
        /// Which record.
        index: u64,
        /// The unit it carries.
        unit: u64,
    },
    /// The trailer.
    Trailer,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header => f.write_str("the header"),
            Self::RecordHead { index } => write!(f, "the head of record #{index}"),
            Self::RecordData { index, unit } => write!(f, "record #{index} (unit {unit})"),
            Self::Trailer => f.write_str("the trailer"),
        }
    }
}

/// What is wrong with a dirty set stream, or with the units given to a
/// [`DirtySetWriter`](super::DirtySetWriter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream ended before the set did.
    #[error("the stream ended in {part}")]
    Truncated {
        /// Where it ended.
        part: Part,
    },
    /// Reading the stream failed.
    #[error("reading {part}")]
    Read {
        /// What was being read.
        part: Part,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing the stream failed.
    #[error("writing {part}")]
    Write {
        /// What was being written.
        part: Part,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The header or trailer does not start with its magic.
    #[error("bad magic {found:02x?} in {part}: not a Jettison dirty set")]
    BadMagic {
        /// The header or the trailer.
        part: Part,
        /// The eight bytes found.
        found: [u8; 8],
    },
    /// The format version is not one this build reads.
    #[error(
        "format version {found}, this build reads versions {oldest} to {newest}: \
         the peer runs another release of jettison; update the older side"
    )]
    UnsupportedVersion {
        /// Version in the header.
        found: u32,
        /// Oldest version this build reads.
        oldest: u32,
        /// Newest version this build reads (and the one it writes).
        newest: u32,
    },
    /// The header's checksum does not match its bytes.
    #[error("header checksum {computed:#010x}, the header says {stored:#010x}")]
    HeaderChecksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the header as read.
        computed: u32,
    },
    /// The unit size is zero or above [`MAX_UNIT_SIZE`](super::MAX_UNIT_SIZE).
    #[error("unit size {found} is zero or above the limit of {max} bytes")]
    UnitSize {
        /// Unit size in the header.
        found: u32,
        /// Largest unit size accepted.
        max: u32,
    },
    /// The header announces more units than the image has.
    #[error("the header announces {found} units, but an image of {image_size:#x} bytes has only {unit_total}")]
    CountTooLarge {
        /// Count in the header.
        found: u64,
        /// Image size in the header.
        image_size: u64,
        /// Units in such an image.
        unit_total: u64,
    },
    /// A record's unit is past the end of the image.
    #[error("record #{index} is for unit {unit}, past the end of the image ({unit_total} units)")]
    UnitOutOfRange {
        /// Which record.
        index: u64,
        /// The unit it claims.
        unit: u64,
        /// Units in the image.
        unit_total: u64,
    },
    /// A record's unit does not come after the previous record's.
    #[error("record #{index} is for unit {unit}, not after unit {previous} of the record before; units must increase")]
    UnitOutOfOrder {
        /// Which record.
        index: u64,
        /// The unit it claims.
        unit: u64,
        /// The unit of the record before.
        previous: u64,
    },
    /// A record's data length is not its unit's length.
    #[error("record #{index} for unit {unit} claims {found} bytes of data, the unit holds {expected}")]
    RecordLength {
        /// Which record.
        index: u64,
        /// Its unit.
        unit: u64,
        /// Length in the record (saturated at `u32::MAX` for a writer's buffer).
        found: u32,
        /// The unit's length.
        expected: u32,
    },
    /// A record's checksum does not match its bytes.
    #[error("record #{index} for unit {unit}: checksum {computed:#010x} of its bytes, the record says {stored:#010x}")]
    RecordChecksum {
        /// Which record.
        index: u64,
        /// Its unit.
        unit: u64,
        /// Checksum in the record.
        stored: u32,
        /// Checksum of the record as read.
        computed: u32,
    },
    /// A writer was given more units than its header announced.
    #[error("record #{index} for unit {unit} is one more than the {count} units the header announced")]
    TooManyUnits {
        /// Which record.
        index: u64,
        /// Its unit.
        unit: u64,
        /// Count in the header.
        count: u64,
    },
    /// A writer was finished before it was given all the units its header announced.
    #[error("{written} units were written, the header announced {count}")]
    TooFewUnits {
        /// Units written.
        written: u64,
        /// Count in the header.
        count: u64,
    },
    /// The trailer's count differs from the header's.
    #[error("the trailer counts {found} units, the header announced {expected}")]
    TrailerCount {
        /// Count in the trailer.
        found: u64,
        /// Count in the header.
        expected: u64,
    },
    /// The trailer's data byte count differs from the records'.
    #[error("the trailer counts {found} data bytes, the records held {expected}")]
    TrailerDataBytes {
        /// Count in the trailer.
        found: u64,
        /// Sum of the records' lengths.
        expected: u64,
    },
    /// The trailer belongs to another transfer.
    #[error("the trailer is of transfer {found}, the header of transfer {expected}")]
    TrailerTransferId {
        /// Id in the trailer.
        found: TransferId,
        /// Id in the header.
        expected: TransferId,
    },
    /// The checksum of the whole stream does not match.
    #[error("stream checksum {computed:#010x}, the trailer says {stored:#010x}")]
    StreamChecksum {
        /// Checksum in the trailer.
        stored: u32,
        /// Checksum of the stream as read.
        computed: u32,
    },
    /// The reader was used again after it reported an error.
    #[error("the reader already failed; a dirty set cannot be resumed mid-stream")]
    AlreadyFailed,
}

impl StreamError {
    /// Whether the stream broke off (ended early, or the connection failed)
    /// rather than carried wrong bytes.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Self::Truncated { .. } | Self::Read { .. })
    }
}

/// What a failed operation left the image in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Not a byte of the image was written.
    Unchanged,
    /// An apply was interrupted (by a crash, or by this error after it had
    /// started writing), so the image may hold part of the set.
    MaybePartlyUpdated,
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unchanged => "the image was not changed",
            Self::MaybePartlyUpdated => {
                "an interrupted apply may have partly updated the image, so the VM must not start on it: \
                 remove the staged set and reintegrate again from the server's dirty slice"
            }
        })
    }
}

/// Everything that can go wrong sending or applying a dirty set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirtySetError {
    /// Opening the image (or finding its size or canonical path) failed.
    #[error("opening the image {image} to apply a dirty set to it")]
    OpenImage {
        /// The image.
        image: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Another process holds the image's lock.
    #[error("locking the image {image}: another process is applying a dirty set to it")]
    LockImage {
        /// The image.
        image: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// The stream broke off before the whole set arrived.
    #[error(
        "dirty set for {image} is incomplete: {}; the image was not changed",
        arrival(*.arrived, *.expected, "its header did not arrive whole")
    )]
    Incomplete {
        /// The image.
        image: PathBuf,
        /// Units that arrived and verified.
        arrived: u64,
        /// Units the header announced, if the header arrived.
        expected: Option<u64>,
        /// Where it broke off.
        #[source]
        source: StreamError,
    },

    /// The stream carried wrong bytes: damaged, out of order, or not a dirty set.
    #[error(
        "dirty set for {image} was rejected ({}); the image was not changed",
        arrival(*.arrived, *.expected, "its header was refused")
    )]
    Rejected {
        /// The image.
        image: PathBuf,
        /// Units that arrived and verified before the wrong bytes.
        arrived: u64,
        /// Units the header announced, if the header was accepted.
        expected: Option<u64>,
        /// What was wrong.
        #[source]
        source: StreamError,
    },

    /// The set is for an image of another size or unit size.
    #[error(
        "dirty set {transfer_id} does not fit {image}: it is for {set_image_size:#x} bytes in units of \
         {set_unit_size}, the image holds {image_size:#x} bytes in units of {unit_size}; {image_state}"
    )]
    WrongImage {
        /// The image.
        image: PathBuf,
        /// The transfer.
        transfer_id: TransferId,
        /// Unit size in the set.
        set_unit_size: u32,
        /// Image size in the set.
        set_image_size: u64,
        /// Unit size the caller gave for the image.
        unit_size: u32,
        /// Size of the image file.
        image_size: u64,
        /// What the image holds now.
        image_state: ImageState,
    },

    /// Listing or cleaning the staging directory failed.
    #[error("looking for staged dirty sets of {image} in {dir}")]
    ListStaging {
        /// The image.
        image: PathBuf,
        /// The staging directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// A verified set is waiting to be applied; a new one would race it.
    #[error(
        "a verified dirty set {path} is waiting to be applied to {image}; call resume_pending before staging another"
    )]
    Pending {
        /// The image.
        image: PathBuf,
        /// The waiting set.
        path: PathBuf,
    },

    /// More than one verified set waits for the image, which the API never leaves.
    #[error(
        "{count} verified dirty sets wait to be applied to {image} in {dir}, and which is newer is unknown; \
         the VM must not start on the image: remove them and reintegrate again from the server's dirty slice"
    )]
    SeveralPending {
        /// The image.
        image: PathBuf,
        /// The staging directory.
        dir: PathBuf,
        /// How many wait.
        count: usize,
    },

    /// Creating, syncing or renaming the staging file failed.
    #[error("writing the staging file {path} for {image}; the image was not changed")]
    WriteStaging {
        /// The staging file.
        path: PathBuf,
        /// The image.
        image: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Copying the arriving set into the staging file failed.
    #[error("copying the dirty set for {image} into {path}; the image was not changed")]
    CopyToStaging {
        /// The staging file.
        path: PathBuf,
        /// The image.
        image: PathBuf,
        /// Cause.
        #[source]
        source: StreamError,
    },

    /// The staged set could not be opened or did not verify when read back.
    #[error("re-reading the staged dirty set {path} to apply it to {image}; {image_state}")]
    CheckStaged {
        /// The staged set.
        path: PathBuf,
        /// The image.
        image: PathBuf,
        /// What the image holds now.
        image_state: ImageState,
        /// What was wrong.
        #[source]
        source: StreamError,
    },

    /// Writing a unit into the image failed.
    #[error(
        "writing unit {unit} (or punching its hole) at offset {offset:#x} of {image}; the verified set {staged} is kept: \
         resume_pending finishes applying it, and the VM must not start before it has"
    )]
    WriteImage {
        /// The image.
        image: PathBuf,
        /// The unit.
        unit: u64,
        /// Its byte offset.
        offset: u64,
        /// The verified set, still to apply.
        staged: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Making the image's new content durable failed.
    #[error(
        "syncing {image} to disk; the verified set {staged} is kept: \
         resume_pending finishes applying it, and the VM must not start before it has"
    )]
    SyncImage {
        /// The image.
        image: PathBuf,
        /// The verified set, still to apply.
        staged: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// Removing the applied set (or making the removal durable) failed.
    #[error(
        "removing the applied dirty set {path}; {image} is complete and durable, but the VM must not start \
         until the set is gone, or a later resume_pending would apply it again over newer writes"
    )]
    RemoveStaged {
        /// The applied set.
        path: PathBuf,
        /// The image.
        image: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// "37 of 120 units arrived", or `no_header` if the header was not accepted.
fn arrival(arrived: u64, expected: Option<u64>, no_header: &str) -> String {
    match expected {
        Some(expected) => format!("{arrived} of {expected} units arrived"),
        None => no_header.to_owned(),
    }
}
