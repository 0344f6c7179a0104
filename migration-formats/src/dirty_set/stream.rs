//! Writing and reading a dirty set as a stream, one unit at a time: neither
//! side ever holds more than one unit's data.

use std::fmt;
use std::io::{self, Read, Write};

use super::error::{Part, StreamError};
use super::format::{
    decode_record_head, encode_record_head, record_crc, DirtySetHeader, Layout, Trailer, TransferId, HEADER_LEN,
    RECORD_CRC_LEN, RECORD_HEAD_LEN, TRAILER_LEN,
};

/// What one record of a dirty set says about its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitChange<'a> {
    /// The unit's new content, exactly the unit's length.
    Data(&'a [u8]),
    /// The unit was discarded on the server (the guest freed it): the image
    /// gets a hole there, which reads as zeros. Format version 2 on.
    Discard,
}

/// What a finished [`DirtySetWriter`] sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Records sent: units with data and discarded units.
    pub units: u64,
    /// Of those, discarded units.
    pub discarded: u64,
    /// Bytes of unit data sent.
    pub data_bytes: u64,
    /// Bytes of the whole set: header, records and trailer.
    pub stream_bytes: u64,
}

/// Writes a dirty set: the header at once, a record per
/// [`write_unit`](Self::write_unit), the trailer at [`finish`](Self::finish).
///
/// It checks every unit against the rules of the format (increasing, in range,
/// of the unit's length, no more than announced), so that it cannot produce a
/// set that a [`DirtySetReader`] refuses. Each record is written in three
/// parts: give it a buffered `out`.
pub struct DirtySetWriter<W: Write> {
    out: W,
    layout: Layout,
    stream_crc: crc32fast::Hasher,
    written: u64,
    discarded: u64,
    previous: Option<u64>,
    data_bytes: u64,
    stream_bytes: u64,
}

impl<W: Write> DirtySetWriter<W> {
    /// Checks `header` and writes it to `out`.
    ///
    /// # Errors
    ///
    /// [`StreamError::UnitSize`] or [`StreamError::CountTooLarge`] for a header
    /// no reader accepts; [`StreamError::Write`].
    pub fn new(out: W, header: DirtySetHeader) -> Result<Self, StreamError> {
        let layout = Layout::new(header)?;
        let mut writer = Self {
            out,
            layout,
            stream_crc: crc32fast::Hasher::new(),
            written: 0,
            discarded: 0,
            previous: None,
            data_bytes: 0,
            stream_bytes: 0,
        };
        writer.put(Part::Header, &header.encode())?;
        Ok(writer)
    }

    /// The header written.
    pub fn header(&self) -> &DirtySetHeader {
        self.layout.header()
    }

    /// Writes the record of `unit`, whose new content is `data`.
    ///
    /// # Errors
    ///
    /// [`StreamError::TooManyUnits`], [`StreamError::UnitOutOfRange`],
    /// [`StreamError::UnitOutOfOrder`] or [`StreamError::RecordLength`] for a
    /// unit that breaks the rules (nothing is written then);
    /// [`StreamError::Write`].
    pub fn write_unit(&mut self, unit: u64, data: &[u8]) -> Result<(), StreamError> {
        let index = self.written;
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.layout.check_record(index, self.previous, unit, len)?;
        if data.is_empty() {
            // Accepted above as a discard; data of no length is a caller's slip.
            let expected = self.layout.header().unit_len(unit);
            return Err(StreamError::RecordLength { index, unit, found: 0, expected });
        }
        self.write_record(index, unit, data)
    }

    /// Writes the record of a discarded `unit`: the image gets a hole there.
    ///
    /// # Errors
    ///
    /// [`StreamError::TooManyUnits`], [`StreamError::UnitOutOfRange`] or
    /// [`StreamError::UnitOutOfOrder`] for a unit that breaks the rules
    /// (nothing is written then); [`StreamError::Write`].
    pub fn write_discard(&mut self, unit: u64) -> Result<(), StreamError> {
        let index = self.written;
        self.layout.check_record(index, self.previous, unit, 0)?;
        self.write_record(index, unit, &[])?;
        self.discarded += 1;
        Ok(())
    }

    /// Writes a record the layout accepted: head, data (none for a discard)
    /// and checksum.
    fn write_record(&mut self, index: u64, unit: u64, data: &[u8]) -> Result<(), StreamError> {
        // At most the unit size: the layout checked it.
        let len = data.len() as u32;
        let head = encode_record_head(unit, len);
        let crc = record_crc(&head, data);
        self.put(Part::RecordHead { index }, &head)?;
        let part = Part::RecordData { index, unit };
        self.put(part, data)?;
        self.put(part, &crc.to_le_bytes())?;
        self.written += 1;
        self.previous = Some(unit);
        self.data_bytes += u64::from(len);
        Ok(())
    }

    /// Writes the trailer, flushes `out` and gives it back.
    ///
    /// # Errors
    ///
    /// [`StreamError::TooFewUnits`] if fewer units were written than the header
    /// announced (no trailer is written then); [`StreamError::Write`].
    pub fn finish(mut self) -> Result<(W, ExportSummary), StreamError> {
        let header = *self.layout.header();
        if self.written != header.unit_count {
            return Err(StreamError::TooFewUnits { written: self.written, count: header.unit_count });
        }
        let trailer =
            Trailer { unit_count: self.written, data_bytes: self.data_bytes, transfer_id: header.transfer_id };
        self.put(Part::Trailer, &trailer.encode(self.stream_crc.clone()))?;
        self.out.flush().map_err(|source| StreamError::Write { part: Part::Trailer, source })?;
        let summary = ExportSummary {
            transfer_id: header.transfer_id,
            units: self.written,
            discarded: self.discarded,
            data_bytes: self.data_bytes,
            stream_bytes: self.stream_bytes,
        };
        Ok((self.out, summary))
    }

    fn put(&mut self, part: Part, bytes: &[u8]) -> Result<(), StreamError> {
        self.out.write_all(bytes).map_err(|source| StreamError::Write { part, source })?;
        self.stream_crc.update(bytes);
        self.stream_bytes += bytes.len() as u64;
        Ok(())
    }
}

impl<W: Write> fmt::Debug for DirtySetWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirtySetWriter")
            .field("header", self.layout.header())
            .field("written", &self.written)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

/// Where a [`DirtySetReader`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Records,
    Done,
    Failed,
}

/// Reads a dirty set and verifies it as it goes: the header when created,
/// each record before handing it out, the trailer after the last record.
///
/// A record is handed out only once its checksum matched, but the set as a
/// whole is verified only when [`next_unit`](Self::next_unit) has returned
/// `None`: a consumer that must not act on a partial set (as the desktop must
/// not) keeps the units aside until then. It reads exactly the set's bytes
/// and nothing after the trailer, in small reads: give it a buffered `input`.
pub struct DirtySetReader<R> {
    input: R,
    layout: Layout,
    stream_crc: crc32fast::Hasher,
    read: u64,
    previous: Option<u64>,
    data_bytes: u64,
    /// The last record's data; never longer than one unit.
    buf: Vec<u8>,
    state: ReadState,
}

impl<R: Read> DirtySetReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    ///
    /// [`StreamError::Truncated`] or [`StreamError::Read`] if the header does
    /// not arrive; [`StreamError::BadMagic`], [`StreamError::UnsupportedVersion`],
    /// [`StreamError::HeaderChecksum`], [`StreamError::UnitSize`],
    /// [`StreamError::CountTooLarge`] if it is not a valid header.
    pub fn new(mut input: R) -> Result<Self, StreamError> {
        let mut bytes = [0; HEADER_LEN];
        read_part(&mut input, Part::Header, &mut bytes)?;
        let layout = DirtySetHeader::decode(&bytes)?;
        let mut stream_crc = crc32fast::Hasher::new();
        stream_crc.update(&bytes);
        Ok(Self {
            input,
            layout,
            stream_crc,
            read: 0,
            previous: None,
            data_bytes: 0,
            buf: Vec::new(),
            state: ReadState::Records,
        })
    }

    /// The header, checked.
    pub fn header(&self) -> &DirtySetHeader {
        self.layout.header()
    }

    /// The set's format version, [`OLDEST_VERSION`](super::OLDEST_VERSION)
    /// to [`VERSION`](super::VERSION); a writer always writes the latter.
    pub fn version(&self) -> u32 {
        self.layout.version()
    }

    /// Number of records read and verified so far.
    pub fn units_read(&self) -> u64 {
        self.read
    }

    /// Sum of the lengths of the records read so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The next unit and what changed in it, or `None` once the trailer has
    /// been read and the whole set verified.
    ///
    /// # Errors
    ///
    /// [`StreamError::Truncated`] or [`StreamError::Read`] if the stream breaks
    /// off; for wrong bytes, the variant naming the rule that was broken
    /// ([`StreamError::UnitOutOfOrder`], [`StreamError::RecordChecksum`],
    /// [`StreamError::StreamChecksum`], ...). After an error the reader only
    /// answers [`StreamError::AlreadyFailed`].
    pub fn next_unit(&mut self) -> Result<Option<(u64, UnitChange<'_>)>, StreamError> {
        match self.state {
            ReadState::Done => return Ok(None),
            ReadState::Failed => return Err(StreamError::AlreadyFailed),
            ReadState::Records => {}
        }
        self.state = ReadState::Failed;
        if self.read == self.layout.header().unit_count {
            self.read_trailer()?;
            self.state = ReadState::Done;
            return Ok(None);
        }
        let unit = self.read_record()?;
        self.state = ReadState::Records;
        // Only a discard record has no data (a unit is never empty).
        let change = if self.buf.is_empty() { UnitChange::Discard } else { UnitChange::Data(&self.buf) };
        Ok(Some((unit, change)))
    }

    /// Gives back the input, positioned just after what was read.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// Reads and verifies the next record into `buf`; returns its unit.
    fn read_record(&mut self) -> Result<u64, StreamError> {
        let index = self.read;
        let mut head = [0; RECORD_HEAD_LEN];
        read_part(&mut self.input, Part::RecordHead { index }, &mut head)?;
        let (unit, len) = decode_record_head(&head);
        // The size cap: `len` is the unit's length, at most MAX_UNIT_SIZE,
        // before a byte of data is read or allocated.
        self.layout.check_record(index, self.previous, unit, len)?;
        let part = Part::RecordData { index, unit };
        self.buf.resize(len as usize, 0);
        read_part(&mut self.input, part, &mut self.buf)?;
        let mut stored = [0; RECORD_CRC_LEN];
        read_part(&mut self.input, part, &mut stored)?;
        let stored = u32::from_le_bytes(stored);
        let computed = record_crc(&head, &self.buf);
        if stored != computed {
            return Err(StreamError::RecordChecksum { index, unit, stored, computed });
        }
        self.stream_crc.update(&head);
        self.stream_crc.update(&self.buf);
        self.stream_crc.update(&stored.to_le_bytes());
        self.read += 1;
        self.previous = Some(unit);
        self.data_bytes += u64::from(len);
        Ok(unit)
    }

    fn read_trailer(&mut self) -> Result<(), StreamError> {
        let mut bytes = [0; TRAILER_LEN];
        read_part(&mut self.input, Part::Trailer, &mut bytes)?;
        let header = self.layout.header();
        let expected =
            Trailer { unit_count: header.unit_count, data_bytes: self.data_bytes, transfer_id: header.transfer_id };
        expected.check(&bytes, self.stream_crc.clone())
    }
}

impl<R> fmt::Debug for DirtySetReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirtySetReader")
            .field("header", self.layout.header())
            .field("read", &self.read)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Fills `buf` from `input`; an early end is [`StreamError::Truncated`].
fn read_part(input: &mut impl Read, part: Part, buf: &mut [u8]) -> Result<(), StreamError> {
    input.read_exact(buf).map_err(|source| match source.kind() {
        io::ErrorKind::UnexpectedEof => StreamError::Truncated { part },
        _ => StreamError::Read { part, source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TransferId = TransferId::from_bytes([9; 16]);

    fn header(unit_count: u64) -> DirtySetHeader {
        DirtySetHeader { unit_size: 16, image_size: 5 * 16 + 3, unit_count, transfer_id: ID }
    }

    /// A set of these units; an empty `Vec` stands for a discard.
    fn set(units: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut writer = DirtySetWriter::new(Vec::new(), header(units.len() as u64)).unwrap();
        for (unit, data) in units {
            if data.is_empty() {
                writer.write_discard(*unit).unwrap();
            } else {
                writer.write_unit(*unit, data).unwrap();
            }
        }
        let (bytes, summary) = writer.finish().unwrap();
        assert_eq!(summary.stream_bytes, bytes.len() as u64);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, StreamError> {
        let mut reader = DirtySetReader::new(bytes)?;
        let mut units = Vec::new();
        while let Some((unit, change)) = reader.next_unit()? {
            units.push((unit, data_of(change)));
        }
        Ok(units)
    }

    /// The data of a record, empty for a discard.
    fn data_of(change: UnitChange<'_>) -> Vec<u8> {
        match change {
            UnitChange::Data(data) => data.to_vec(),
            UnitChange::Discard => Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_reads_nothing_after_the_trailer() {
        let units = vec![(0, vec![1; 16]), (2, vec![2; 16]), (5, vec![3; 3])];
        let mut bytes = set(&units);
        let len = bytes.len();
        assert_eq!(len, HEADER_LEN + 2 * (12 + 16 + 4) + (12 + 3 + 4) + TRAILER_LEN);
        bytes.extend_from_slice(b"next message");
        let mut reader = DirtySetReader::new(&bytes[..]).unwrap();
        let mut read = Vec::new();
        while let Some((unit, change)) = reader.next_unit().unwrap() {
            read.push((unit, data_of(change)));
        }
        assert_eq!(read, units);
        assert_eq!(reader.next_unit().unwrap(), None, "stays finished");
        assert_eq!(reader.into_inner(), b"next message");
        assert_eq!(read_all(&set(&[])).unwrap(), []);
    }

    #[test]
    fn discard_records_round_trip_without_data() {
        let units = vec![(0, vec![1; 16]), (1, vec![]), (2, vec![]), (5, vec![])];
        let bytes = set(&units);
        assert_eq!(bytes.len(), HEADER_LEN + (12 + 16 + 4) + 3 * (12 + 4) + TRAILER_LEN);
        assert_eq!(read_all(&bytes).unwrap(), units);
        let mut writer = DirtySetWriter::new(Vec::new(), header(2)).unwrap();
        writer.write_discard(3).unwrap();
        assert!(matches!(writer.write_discard(3), Err(StreamError::UnitOutOfOrder { .. })));
        assert!(matches!(writer.write_unit(4, &[]), Err(StreamError::RecordLength { found: 0, expected: 16, .. })));
        writer.write_unit(4, &[9; 16]).unwrap();
        let (_, summary) = writer.finish().unwrap();
        assert_eq!((summary.units, summary.discarded, summary.data_bytes), (2, 1, 16));
    }

    #[test]
    fn writer_refuses_units_that_break_the_rules() {
        let mut writer = DirtySetWriter::new(Vec::new(), header(2)).unwrap();
        writer.write_unit(1, &[0; 16]).unwrap();
        assert!(matches!(writer.write_unit(1, &[0; 16]), Err(StreamError::UnitOutOfOrder { .. })));
        assert!(matches!(writer.write_unit(0, &[0; 16]), Err(StreamError::UnitOutOfOrder { .. })));
        assert!(matches!(writer.write_unit(5, &[0; 16]), Err(StreamError::RecordLength { expected: 3, .. })));
        assert!(matches!(writer.write_unit(6, &[0; 16]), Err(StreamError::UnitOutOfRange { .. })));
        assert!(matches!(writer.finish(), Err(StreamError::TooFewUnits { written: 1, count: 2 })));
        let mut writer = DirtySetWriter::new(Vec::new(), header(1)).unwrap();
        writer.write_unit(0, &[0; 16]).unwrap();
        assert!(matches!(writer.write_unit(1, &[0; 16]), Err(StreamError::TooManyUnits { .. })));
        let huge = DirtySetHeader { unit_size: super::super::MAX_UNIT_SIZE * 2, ..header(0) };
        assert!(matches!(DirtySetWriter::new(Vec::new(), huge), Err(StreamError::UnitSize { .. })));
    }

    #[test]
    fn every_cut_is_truncated_and_every_flip_is_refused() {
        let good = set(&[(1, vec![7; 16]), (2, vec![]), (5, vec![8; 3])]);
        for cut in 0..good.len() {
            let error = read_all(&good[..cut]).unwrap_err();
            assert!(matches!(error, StreamError::Truncated { .. }), "cut at {cut}: {error}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            let error = read_all(&bad).unwrap_err();
            assert!(!error.is_incomplete(), "flip at {at} looked like a cut: {error}");
        }
    }

    #[test]
    fn a_damaged_length_is_refused_before_any_data_is_read() {
        let mut bad = set(&[(1, vec![7; 16])]);
        bad[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = DirtySetReader::new(&bad[..]).unwrap();
        assert!(matches!(reader.next_unit(), Err(StreamError::RecordLength { found: u32::MAX, .. })));
        assert!(reader.buf.capacity() == 0, "nothing allocated");
        assert!(matches!(reader.next_unit(), Err(StreamError::AlreadyFailed)));
    }
}
