//! The fixed layouts of a dirty set (header, record head, trailer) and the
//! rules a record must follow; the tables are in the [module doc](super).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use super::error::StreamError;

/// First eight bytes of a dirty set.
const HEADER_MAGIC: [u8; 8] = *b"JTDIRTY1";
/// First eight bytes of a dirty set's trailer.
const TRAILER_MAGIC: [u8; 8] = *b"JTDIRTYE";

/// The format version this build writes: 2, which added discard records.
pub const VERSION: u32 = 2;

/// The oldest format version this build reads: 1, which has data records only.
pub const OLDEST_VERSION: u32 = 1;

/// The first version whose records may be discards.
const DISCARD_VERSION: u32 = 2;

/// Largest unit size a dirty set may have: 1 MiB, sixteen times the largest
/// block cownetdisk uses. A reader never holds more than one unit in memory.
pub const MAX_UNIT_SIZE: u32 = 1 << 20;

/// Where the kernel's random bytes are read for a [`TransferId`].
const RANDOM_SOURCE: &str = "/dev/urandom";

const H_VERSION: usize = 8;
const H_UNIT_SIZE: usize = 12;
const H_IMAGE_SIZE: usize = 16;
const H_COUNT: usize = 24;
const H_TRANSFER_ID: usize = 32;
const H_CRC: usize = 48;
/// Length of the header.
pub(super) const HEADER_LEN: usize = H_CRC + 4;

/// Length of a record's head: unit number and data length.
pub(super) const RECORD_HEAD_LEN: usize = 8 + 4;
/// Length of a record's checksum, after its data.
pub(super) const RECORD_CRC_LEN: usize = 4;

const T_COUNT: usize = 8;
const T_DATA_BYTES: usize = 16;
const T_TRANSFER_ID: usize = 24;
const T_CRC: usize = 40;
/// Length of the trailer.
pub(super) const TRAILER_LEN: usize = T_CRC + 4;

// These layouts are the format: moving a field must break the build.
const _: () = assert!(HEADER_LEN == 52);
const _: () = assert!(H_TRANSFER_ID + 16 == H_CRC);
const _: () = assert!(RECORD_HEAD_LEN == 12);
const _: () = assert!(TRAILER_LEN == 44);
const _: () = assert!(T_TRANSFER_ID + 16 == T_CRC);

/// A random 16-byte name for one transfer of a dirty set. It ties the trailer
/// to the header, names the staged files on the desktop, and lets both sides
/// log which transfer they mean.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferId([u8; 16]);

impl TransferId {
    /// A transfer id of the given bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A fresh id from the kernel's random source (`/dev/urandom`).
    ///
    /// # Errors
    ///
    /// The I/O error if the random source cannot be read.
    pub fn random() -> io::Result<Self> {
        let mut bytes = [0; 16];
        File::open(RANDOM_SOURCE)?.read_exact(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Parses the 32 lowercase hex digits that [`Display`](fmt::Display) writes.
    pub(super) fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            // Two ASCII hex digits, checked above.
            let digits = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

/// The header of a dirty set: what it is for and how many units follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtySetHeader {
    /// Bytes per unit (4096 for memory pages).
    pub unit_size: u32,
    /// Size in bytes of the image the units belong to.
    pub image_size: u64,
    /// Number of unit records that follow.
    pub unit_count: u64,
    /// Names this transfer.
    pub transfer_id: TransferId,
}

impl DirtySetHeader {
    /// Byte offset of `unit` in the image.
    pub fn offset(&self, unit: u64) -> u64 {
        unit * u64::from(self.unit_size)
    }

    /// The header's bytes, checksum included.
    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[..H_VERSION].copy_from_slice(&HEADER_MAGIC);
        bytes[H_VERSION..H_UNIT_SIZE].copy_from_slice(&VERSION.to_le_bytes());
        bytes[H_UNIT_SIZE..H_IMAGE_SIZE].copy_from_slice(&self.unit_size.to_le_bytes());
        bytes[H_IMAGE_SIZE..H_COUNT].copy_from_slice(&self.image_size.to_le_bytes());
        bytes[H_COUNT..H_TRANSFER_ID].copy_from_slice(&self.unit_count.to_le_bytes());
        bytes[H_TRANSFER_ID..H_CRC].copy_from_slice(self.transfer_id.as_bytes());
        let crc = crc32fast::hash(&bytes[..H_CRC]);
        bytes[H_CRC..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Length of `unit`: the unit size, or less for a partial last unit.
    /// `unit` must be below the image's number of units.
    pub fn unit_len(&self, unit: u64) -> u32 {
        let unit_size = u64::from(self.unit_size);
        // At most the unit size, a u32.
        (self.image_size - unit * unit_size).min(unit_size) as u32
    }

    /// Decodes and checks a header: magic, version, checksum, then the limits
    /// of [`Layout::new`].
    pub(super) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Layout, StreamError> {
        let magic: [u8; 8] = field(bytes, 0);
        if magic != HEADER_MAGIC {
            return Err(StreamError::BadMagic { part: super::Part::Header, found: magic });
        }
        let version = u32::from_le_bytes(field(bytes, H_VERSION));
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(StreamError::UnsupportedVersion { found: version, oldest: OLDEST_VERSION, newest: VERSION });
        }
        let stored = u32::from_le_bytes(field(bytes, H_CRC));
        let computed = crc32fast::hash(&bytes[..H_CRC]);
        if stored != computed {
            return Err(StreamError::HeaderChecksum { stored, computed });
        }
        let header = Self {
            unit_size: u32::from_le_bytes(field(bytes, H_UNIT_SIZE)),
            image_size: u64::from_le_bytes(field(bytes, H_IMAGE_SIZE)),
            unit_count: u64::from_le_bytes(field(bytes, H_COUNT)),
            transfer_id: TransferId(field(bytes, H_TRANSFER_ID)),
        };
        Layout::with_version(header, version)
    }
}

/// A header whose limits were checked, and the rules its records must follow.
/// Both the writer and the reader check records here, so that a writer cannot
/// produce a set that a reader refuses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    header: DirtySetHeader,
    /// Units in the image, the last one possibly partial.
    unit_total: u64,
    /// The set's format version, which says whether records may be discards.
    version: u32,
}

impl Layout {
    /// Checks the unit size limit and that the count fits the image, for a
    /// set of this build's [`VERSION`].
    pub(super) fn new(header: DirtySetHeader) -> Result<Self, StreamError> {
        Self::with_version(header, VERSION)
    }

    /// As [`new`](Self::new), for a set of format `version` (checked by the caller).
    fn with_version(header: DirtySetHeader, version: u32) -> Result<Self, StreamError> {
        if header.unit_size == 0 || header.unit_size > MAX_UNIT_SIZE {
            return Err(StreamError::UnitSize { found: header.unit_size, max: MAX_UNIT_SIZE });
        }
        let unit_total = header.image_size.div_ceil(u64::from(header.unit_size));
        if header.unit_count > unit_total {
            return Err(StreamError::CountTooLarge {
                found: header.unit_count,
                image_size: header.image_size,
                unit_total,
            });
        }
        Ok(Self { header, unit_total, version })
    }

    /// The checked header.
    pub(super) fn header(&self) -> &DirtySetHeader {
        &self.header
    }

    /// The set's format version.
    pub(super) fn version(&self) -> u32 {
        self.version
    }

    /// Checks record number `index` (from 0), which claims `len` bytes for
    /// `unit`, `previous` being the unit of the record before it. A `len` of
    /// zero is a discard record, from version 2 on.
    pub(super) fn check_record(
        &self,
        index: u64,
        previous: Option<u64>,
        unit: u64,
        len: u32,
    ) -> Result<(), StreamError> {
        if index >= self.header.unit_count {
            return Err(StreamError::TooManyUnits { index, unit, count: self.header.unit_count });
        }
        if unit >= self.unit_total {
            return Err(StreamError::UnitOutOfRange { index, unit, unit_total: self.unit_total });
        }
        if let Some(previous) = previous.filter(|&previous| previous >= unit) {
            return Err(StreamError::UnitOutOfOrder { index, unit, previous });
        }
        let expected = self.header.unit_len(unit);
        let discard = len == 0 && self.version >= DISCARD_VERSION;
        if len != expected && !discard {
            return Err(StreamError::RecordLength { index, unit, found: len, expected });
        }
        Ok(())
    }
}

/// Bytes of a whole dirty set whose records carry units of these lengths
/// (in the order written, 0 for a discard record): header, records and
/// trailer.
pub fn encoded_len(unit_lens: impl IntoIterator<Item = u32>) -> u64 {
    let records: u64 =
        unit_lens.into_iter().map(|len| (RECORD_HEAD_LEN + RECORD_CRC_LEN) as u64 + u64::from(len)).sum();
    (HEADER_LEN + TRAILER_LEN) as u64 + records
}

/// The head of a record.
pub(super) fn encode_record_head(unit: u64, len: u32) -> [u8; RECORD_HEAD_LEN] {
    let mut bytes = [0; RECORD_HEAD_LEN];
    bytes[..8].copy_from_slice(&unit.to_le_bytes());
    bytes[8..].copy_from_slice(&len.to_le_bytes());
    bytes
}

/// The unit number and data length in a record's head.
pub(super) fn decode_record_head(bytes: &[u8; RECORD_HEAD_LEN]) -> (u64, u32) {
    (u64::from_le_bytes(field(bytes, 0)), u32::from_le_bytes(field(bytes, 8)))
}

/// The checksum a record ends with.
pub(super) fn record_crc(head: &[u8; RECORD_HEAD_LEN], data: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.update(data);
    crc.finalize()
}

/// What the trailer says about the records before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Trailer {
    pub(super) unit_count: u64,
    pub(super) data_bytes: u64,
    pub(super) transfer_id: TransferId,
}

impl Trailer {
    /// The trailer's bytes; `stream_crc` has seen every byte before the
    /// trailer and is fed the trailer's own fields here.
    pub(super) fn encode(&self, mut stream_crc: crc32fast::Hasher) -> [u8; TRAILER_LEN] {
        let mut bytes = [0; TRAILER_LEN];
        bytes[..T_COUNT].copy_from_slice(&TRAILER_MAGIC);
        bytes[T_COUNT..T_DATA_BYTES].copy_from_slice(&self.unit_count.to_le_bytes());
        bytes[T_DATA_BYTES..T_TRANSFER_ID].copy_from_slice(&self.data_bytes.to_le_bytes());
        bytes[T_TRANSFER_ID..T_CRC].copy_from_slice(self.transfer_id.as_bytes());
        stream_crc.update(&bytes[..T_CRC]);
        bytes[T_CRC..].copy_from_slice(&stream_crc.finalize().to_le_bytes());
        bytes
    }

    /// Checks `bytes` against the trailer `self` expects; `stream_crc` has seen
    /// every byte before the trailer.
    pub(super) fn check(
        &self,
        bytes: &[u8; TRAILER_LEN],
        mut stream_crc: crc32fast::Hasher,
    ) -> Result<(), StreamError> {
        let magic: [u8; 8] = field(bytes, 0);
        if magic != TRAILER_MAGIC {
            return Err(StreamError::BadMagic { part: super::Part::Trailer, found: magic });
        }
        let found = u64::from_le_bytes(field(bytes, T_COUNT));
        if found != self.unit_count {
            return Err(StreamError::TrailerCount { found, expected: self.unit_count });
        }
        let found = u64::from_le_bytes(field(bytes, T_DATA_BYTES));
        if found != self.data_bytes {
            return Err(StreamError::TrailerDataBytes { found, expected: self.data_bytes });
        }
        let found = TransferId(field(bytes, T_TRANSFER_ID));
        if found != self.transfer_id {
            return Err(StreamError::TrailerTransferId { found, expected: self.transfer_id });
        }
        stream_crc.update(&bytes[..T_CRC]);
        let computed = stream_crc.finalize();
        let stored = u32::from_le_bytes(field(bytes, T_CRC));
        if stored != computed {
            return Err(StreamError::StreamChecksum { stored, computed });
        }
        Ok(())
    }
}

/// The `N` bytes of `bytes` starting at `at`.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DirtySetHeader {
        DirtySetHeader {
            unit_size: 4096,
            image_size: 10 * 4096 + 100,
            unit_count: 3,
            transfer_id: TransferId::from_bytes(*b"0123456789abcdef"),
        }
    }

    #[test]
    fn header_round_trips_with_the_documented_layout() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..8], b"JTDIRTY1");
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(bytes[12..16], 4096u32.to_le_bytes());
        assert_eq!(bytes[16..24], (10 * 4096 + 100u64).to_le_bytes());
        assert_eq!(bytes[24..32], 3u64.to_le_bytes());
        assert_eq!(&bytes[32..48], b"0123456789abcdef");
        assert_eq!(bytes[48..], crc32fast::hash(&bytes[..48]).to_le_bytes());
        assert_eq!(*DirtySetHeader::decode(&bytes).unwrap().header(), sample());
    }

    #[test]
    fn header_rejects_magic_version_checksum_and_limits() {
        let good = sample().encode();
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(DirtySetHeader::decode(&bad), Err(StreamError::BadMagic { .. })));
        for version in [0, 3] {
            let bad = with_version(&good, version);
            assert!(matches!(
                DirtySetHeader::decode(&bad),
                Err(StreamError::UnsupportedVersion { found, oldest: 1, newest: 2 }) if found == version
            ));
        }
        let mut bad = good;
        bad[40] ^= 1;
        assert!(matches!(DirtySetHeader::decode(&bad), Err(StreamError::HeaderChecksum { .. })));
        for unit_size in [0, MAX_UNIT_SIZE + 1] {
            let bytes = DirtySetHeader { unit_size, ..sample() }.encode();
            assert!(matches!(DirtySetHeader::decode(&bytes), Err(StreamError::UnitSize { .. })), "{unit_size}");
        }
        // 11 units in the image (the last partial), so 12 cannot be dirty.
        let bytes = DirtySetHeader { unit_count: 12, ..sample() }.encode();
        assert!(matches!(DirtySetHeader::decode(&bytes), Err(StreamError::CountTooLarge { unit_total: 11, .. })));
        let bytes = DirtySetHeader { unit_count: 11, ..sample() }.encode();
        assert!(DirtySetHeader::decode(&bytes).is_ok());
    }

    /// `header` with its version field set to `version`, checksum redone.
    fn with_version(header: &[u8; HEADER_LEN], version: u32) -> [u8; HEADER_LEN] {
        let mut bytes = *header;
        bytes[H_VERSION..H_UNIT_SIZE].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..H_CRC]);
        bytes[H_CRC..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn version_1_is_read_without_discard_records() {
        let old = DirtySetHeader::decode(&with_version(&sample().encode(), 1)).unwrap();
        assert_eq!(*old.header(), sample());
        assert!(old.check_record(0, None, 0, 4096).is_ok());
        assert!(matches!(old.check_record(0, None, 0, 0), Err(StreamError::RecordLength { found: 0, .. })));
        let new = DirtySetHeader::decode(&sample().encode()).unwrap();
        assert!(new.check_record(0, None, 0, 0).is_ok(), "a discard");
        assert!(new.check_record(1, Some(0), 10, 0).is_ok(), "a discard of the partial last unit");
    }

    #[test]
    fn records_must_increase_stay_in_range_and_have_the_unit_length() {
        let layout = Layout::new(sample()).unwrap();
        assert!(layout.check_record(0, None, 0, 4096).is_ok());
        assert!(layout.check_record(1, Some(0), 10, 100).is_ok(), "the partial last unit");
        assert!(matches!(layout.check_record(1, Some(0), 10, 4096), Err(StreamError::RecordLength { .. })));
        assert!(matches!(layout.check_record(1, Some(3), 3, 4096), Err(StreamError::UnitOutOfOrder { .. })));
        assert!(matches!(layout.check_record(1, Some(4), 3, 4096), Err(StreamError::UnitOutOfOrder { .. })));
        assert!(matches!(layout.check_record(1, Some(4), 11, 0), Err(StreamError::UnitOutOfRange { .. })));
        assert!(matches!(layout.check_record(3, Some(4), 5, 4096), Err(StreamError::TooManyUnits { .. })));
        assert_eq!(sample().offset(10), 10 * 4096);
    }

    #[test]
    fn trailer_checks_every_field() {
        let trailer = Trailer { unit_count: 3, data_bytes: 8292, transfer_id: sample().transfer_id };
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"everything before");
        let good = trailer.encode(crc.clone());
        assert!(trailer.check(&good, crc.clone()).is_ok());
        for at in 0..TRAILER_LEN {
            let mut bad = good;
            bad[at] ^= 0x10;
            assert!(trailer.check(&bad, crc.clone()).is_err(), "accepted a flip at {at}");
        }
        let mut other = crc32fast::Hasher::new();
        other.update(b"something else");
        assert!(matches!(trailer.check(&good, other), Err(StreamError::StreamChecksum { .. })));
    }

    #[test]
    fn transfer_ids_print_and_parse_as_hex() {
        let id = TransferId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(TransferId::parse_hex(&id.to_string()), Some(id));
        assert_eq!(TransferId::parse_hex("AB"), None);
        assert_eq!(TransferId::parse_hex(&"AB".repeat(16)), None, "uppercase is not what Display writes");
        assert_ne!(TransferId::random().unwrap(), TransferId::random().unwrap());
    }
}
