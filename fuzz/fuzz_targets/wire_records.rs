//! Feeds a connection's raw byte stream, in pieces of input-chosen lengths,
//! to `wire::secure::RecordReader`: first the 8-byte preamble
//! (`take_raw`), then `u16 LE length + message` units (`next_record`), as
//! both ends of a channel read handshake messages and records. Must hold:
//! no panic; the preamble and the records taken out, their length prefixes
//! put back, are exactly the bytes received, in order.
#![no_main]

use jettison_fuzz::{pieces, split_lens};
use libfuzzer_sys::fuzz_target;
use wire::protocol::PREAMBLE_LEN;
use wire::secure::RecordReader;

fuzz_target!(|data: &[u8]| {
    let (lens, stream) = split_lens(data);
    let mut reader = RecordReader::new();
    let mut rebuilt = Vec::new();
    let mut preamble_taken = false;
    for piece in pieces(stream, lens) {
        reader.push(piece);
        if !preamble_taken {
            match reader.take_raw(PREAMBLE_LEN) {
                Some(raw) => {
                    assert_eq!(raw.len(), PREAMBLE_LEN);
                    rebuilt.extend_from_slice(&raw);
                    preamble_taken = true;
                }
                None => continue,
            }
        }
        while let Some(record) = reader.next_record() {
            let len = u16::try_from(record.len()).expect("a record's length fits its u16 prefix");
            rebuilt.extend_from_slice(&len.to_le_bytes());
            rebuilt.extend_from_slice(&record);
        }
        assert_eq!(rebuilt, stream[..rebuilt.len()]);
    }
});
