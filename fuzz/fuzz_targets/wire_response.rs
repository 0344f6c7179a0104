//! Feeds a frame body to `Response::decode_body`, as memtap and cownetdisk
//! read each answer of a desktop, then checks its chunks against the ranges
//! asked for with `wire::client::chunks_cover`, as `Client::read` does. The
//! input's first byte says how many ranges (0 to 15, 12 bytes each:
//! offset u64 LE, length u32 LE) precede the body. Must hold: no panic, no
//! allocation past the frame limit; a response that decodes re-encodes to a
//! body that decodes to the same response; chunks accepted as covering the
//! ranges are non-empty and add up to the ranges' bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::client::chunks_cover;
use wire::protocol::{Message, MAX_DETAIL};
use wire::{ByteRange, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 16);
    let Some(ranges_bytes) = rest.get(..count * 12) else { return };
    let body = &rest[count * 12..];
    let ranges: Vec<ByteRange> = ranges_bytes
        .chunks_exact(12)
        .map(|r| {
            let offset = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
            ByteRange::new(offset, u32::from_le_bytes(r[8..].try_into().expect("4 bytes")))
        })
        .collect();
    let Ok(response) = Response::decode_body(body) else { return };
    assert_eq!(Response::decode_body(&response.encode_body()).expect("a decoded response re-decodes"), response);
    match &response {
        Response::Data { chunks, .. } => {
            if chunks_cover(chunks, &ranges) {
                assert!(chunks.iter().all(|c| !c.is_empty()));
                let covered: u64 = chunks.iter().map(|c| c.len()).sum();
                assert_eq!(covered, ranges.iter().map(|r| u64::from(r.len)).sum::<u64>());
            }
        }
        Response::Error { detail, .. } => assert!(detail.len() <= MAX_DETAIL),
    }
});
