//! Feeds a plaintext stream, in pieces of input-chosen lengths, to
//! `wire::protocol::FrameReader`, as the records of a connection deliver it.
//! Must hold: no panic; no body longer than `MAX_FRAME`; the frames taken
//! out, framed again, are exactly the bytes consumed, and what is pending
//! is the rest; an error only for a header that announces more than
//! `MAX_FRAME`.
#![no_main]

use jettison_fuzz::{pieces, split_lens};
use libfuzzer_sys::fuzz_target;
use wire::protocol::{frame, FrameReader, FRAME_HEADER_LEN, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let (lens, stream) = split_lens(data);
    let mut reader = FrameReader::new();
    let mut pushed = 0;
    let mut rebuilt = Vec::new();
    for piece in pieces(stream, lens) {
        reader.push(piece);
        pushed += piece.len();
        loop {
            match reader.next_body() {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_FRAME);
                    rebuilt.extend_from_slice(&frame(&body));
                }
                Ok(None) => break,
                Err(_) => {
                    let header: [u8; FRAME_HEADER_LEN] =
                        stream[rebuilt.len()..rebuilt.len() + FRAME_HEADER_LEN].try_into().expect("a header");
                    assert!(u32::from_le_bytes(header) as usize > MAX_FRAME);
                    return;
                }
            }
        }
        assert_eq!(rebuilt, stream[..rebuilt.len()]);
        assert_eq!(reader.pending(), pushed - rebuilt.len());
    }
});
