//! Feeds a frame body to `Hello::decode_body`, as a memserv or diskserv
//! reads the payload of the client's first handshake message. Must hold: no
//! panic, no allocation past the frame limit; a hello that decodes keeps
//! the limits (an export name of 1 to 255 bytes) and re-encodes to a body
//! that decodes to the same hello.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::{Message, MAX_NAME};
use wire::Hello;

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = Hello::decode_body(data) else { return };
    assert!(!hello.export.is_empty() && hello.export.len() <= MAX_NAME);
    assert_eq!(Hello::decode_body(&hello.encode_body()).expect("a decoded hello re-decodes"), hello);
});
