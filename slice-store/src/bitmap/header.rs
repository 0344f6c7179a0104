//! The fixed header at the start of every bitmap file and of its flushed copy.
//!
//! | offset | size | field                                            |
//! |-------:|-----:|--------------------------------------------------|
//! |      0 |    8 | magic `JTSLBMP1`                                 |
//! |      8 |    4 | format version, 1                                |
//! |     12 |    4 | unit size in bytes                               |
//! |     16 |    8 | unit count (number of bits)                      |
//! |     24 |   16 | boot id of the last process that opened the file |
//! |     40 |    4 | state: 1 open, 2 clean                           |
//! |     44 |    4 | CRC-32 (IEEE) of the bit bytes, valid when clean |
//!
//! All integers are little-endian. The bits follow at offset 48, one per unit,
//! least significant bit first; bits past the unit count in the last byte are zero.
//! The file length is exactly `48 + ceil(count / 8)`, and the count is capped at
//! [`MAX_UNITS`] so that a damaged header cannot make a reader map or read an
//! absurd amount of memory. A reader refuses any other version.

use crate::bootid::BootId;
use crate::error::FormatError;

/// First eight bytes of every bitmap file.
const MAGIC: [u8; 8] = *b"JTSLBMP1";
/// The only format version this build reads and writes.
const VERSION: u32 = 1;

/// Largest unit count a bitmap may have: a 4 GiB bitmap, enough for 128 TiB in 4 KiB units.
pub(crate) const MAX_UNITS: u64 = 1 << 35;

const VERSION_AT: usize = 8;
const UNIT_SIZE_AT: usize = 12;
const COUNT_AT: usize = 16;
const BOOT_ID_AT: usize = 24;
const STATE_AT: usize = 40;
const CRC_AT: usize = 44;

/// Length of the header; the bits start right after it.
pub(crate) const HEADER_LEN: usize = CRC_AT + 4;
// The layout above is the on-disk format: moving a field must break the build.
const _: () = assert!(HEADER_LEN == 48);
const _: () = assert!(BOOT_ID_AT + 16 == STATE_AT);

/// Length of a whole bitmap file with `unit_count` bits.
pub(crate) const fn file_len(unit_count: u64) -> u64 {
    HEADER_LEN as u64 + unit_count.div_ceil(8)
}

/// Whether the bits were completely written when the header was last written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A process has the file open and may be setting bits; the CRC means nothing.
    Open,
    /// The bits were synced and the CRC covers them.
    Clean,
}

impl State {
    const fn to_u32(self) -> u32 {
        match self {
            Self::Open => 1,
            Self::Clean => 2,
        }
    }

    const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Open),
            2 => Some(Self::Clean),
            _ => None,
        }
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) unit_size: u32,
    pub(crate) unit_count: u64,
    pub(crate) boot_id: BootId,
    pub(crate) state: State,
    pub(crate) crc: u32,
}

impl Header {
    /// The on-disk bytes of this header.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[..VERSION_AT].copy_from_slice(&MAGIC);
        bytes[VERSION_AT..UNIT_SIZE_AT].copy_from_slice(&VERSION.to_le_bytes());
        bytes[UNIT_SIZE_AT..COUNT_AT].copy_from_slice(&self.unit_size.to_le_bytes());
        bytes[COUNT_AT..BOOT_ID_AT].copy_from_slice(&self.unit_count.to_le_bytes());
        bytes[BOOT_ID_AT..STATE_AT].copy_from_slice(self.boot_id.as_bytes());
        bytes[STATE_AT..CRC_AT].copy_from_slice(&self.state.to_u32().to_le_bytes());
        bytes[CRC_AT..].copy_from_slice(&self.crc.to_le_bytes());
        bytes
    }

    /// Decodes a header, checking magic, version, state and the unit count cap.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, FormatError> {
        let magic: [u8; 8] = field(bytes, 0);
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(field(bytes, VERSION_AT));
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { found: version, supported: VERSION });
        }
        let unit_count = u64::from_le_bytes(field(bytes, COUNT_AT));
        if unit_count > MAX_UNITS {
            return Err(FormatError::CountTooLarge { found: unit_count, max: MAX_UNITS });
        }
        let state = u32::from_le_bytes(field(bytes, STATE_AT));
        Ok(Self {
            unit_size: u32::from_le_bytes(field(bytes, UNIT_SIZE_AT)),
            unit_count,
            boot_id: BootId::from_bytes(field(bytes, BOOT_ID_AT)),
            state: State::from_u32(state).ok_or(FormatError::BadState { found: state })?,
            crc: u32::from_le_bytes(field(bytes, CRC_AT)),
        })
    }
}

/// The `N` bytes of `bytes` starting at `at`.
fn field<const N: usize>(bytes: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            unit_size: 4096,
            unit_count: 12345,
            boot_id: BootId::from_bytes([7; 16]),
            state: State::Clean,
            crc: 0xdead_beef,
        }
    }

    #[test]
    fn round_trips() {
        let header = sample();
        assert_eq!(Header::decode(&header.encode()), Ok(header));
        let open = Header { state: State::Open, ..header };
        assert_eq!(Header::decode(&open.encode()), Ok(open));
    }

    #[test]
    fn is_little_endian_at_fixed_offsets() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..8], b"JTSLBMP1");
        assert_eq!(bytes[8..12], [1, 0, 0, 0]);
        assert_eq!(bytes[12..16], [0, 0x10, 0, 0]);
        assert_eq!(bytes[40..44], [2, 0, 0, 0]);
        assert_eq!(bytes[44..48], [0xef, 0xbe, 0xad, 0xde]);
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = sample().encode();
        bytes[0] = b'X';
        assert!(matches!(Header::decode(&bytes), Err(FormatError::BadMagic { .. })));
    }

    #[test]
    fn rejects_other_versions() {
        let mut bytes = sample().encode();
        bytes[8] = 2;
        assert_eq!(Header::decode(&bytes), Err(FormatError::UnsupportedVersion { found: 2, supported: 1 }));
    }

    #[test]
    fn rejects_unknown_states() {
        for state in [0u32, 3, u32::MAX] {
            let mut bytes = sample().encode();
            bytes[40..44].copy_from_slice(&state.to_le_bytes());
            assert_eq!(Header::decode(&bytes), Err(FormatError::BadState { found: state }));
        }
    }

    #[test]
    fn rejects_absurd_counts() {
        let header = Header { unit_count: MAX_UNITS + 1, ..sample() };
        assert!(matches!(Header::decode(&header.encode()), Err(FormatError::CountTooLarge { .. })));
    }

    #[test]
    fn file_length_rounds_bits_up_to_bytes() {
        assert_eq!(file_len(0), 48);
        assert_eq!(file_len(1), 49);
        assert_eq!(file_len(8), 49);
        assert_eq!(file_len(9), 50);
    }
}
