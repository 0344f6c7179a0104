//! Feeds a frame body to `Request::decode_body`, as memserv and diskserv
//! read each request of an authenticated client, then answers it from a
//! 64 KiB image with `image_server::respond::answer`, as they do. Must
//! hold: no panic, no allocation past the limits; a request that decodes
//! has at most `MAX_RANGES` ranges and re-encodes to a body that decodes to
//! the same request; its answer is an error reply or data whose chunks
//! cover the ranges exactly, in order (what the client checks), and it
//! decodes on the client's side.
#![no_main]

use image_server::respond::answer;
use jettison_fuzz::MemImage;
use libfuzzer_sys::fuzz_target;
use wire::client::chunks_cover;
use wire::protocol::{Message, MAX_RANGES};
use wire::{Chunk, Request, Response};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Request::decode_body(data) else { return };
    let Request::Read { id, ranges } = &request;
    assert!(ranges.len() <= MAX_RANGES);
    assert_eq!(Request::decode_body(&request.encode_body()).expect("a decoded request re-decodes"), request);
    let response = answer(&MemImage, *id, ranges);
    assert_eq!(response.id(), *id);
    if let Response::Data { chunks, .. } = &response {
        assert!(chunks_cover(chunks, ranges), "the answer does not cover the request: {ranges:?}");
        for chunk in chunks {
            if let Chunk::Bytes { offset, data } = chunk {
                assert!(data.iter().zip(*offset..).all(|(&b, at)| b == MemImage::byte(at)));
            }
        }
    }
    let back = Response::decode_body(&response.encode_body()).expect("the client decodes every answer");
    assert_eq!(back, response);
});
