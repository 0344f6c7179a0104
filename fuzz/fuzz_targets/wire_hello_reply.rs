//! Feeds a frame body to `HelloReply::decode_body`, as memtap and
//! cownetdisk read the payload of the server's handshake answer. Must hold:
//! no panic, no allocation past the frame limit; a reply that decodes keeps
//! the limits (a power-of-two unit, a refusal of at most `MAX_DETAIL`
//! bytes) and re-encodes to a body that decodes to the same reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::{Message, MAX_DETAIL};
use wire::HelloReply;

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = HelloReply::decode_body(data) else { return };
    match &reply {
        HelloReply::Welcome(welcome) => assert!(welcome.unit.is_power_of_two()),
        HelloReply::Refused(text) => assert!(text.len() <= MAX_DETAIL),
    }
    assert_eq!(HelloReply::decode_body(&reply.encode_body()).expect("a decoded reply re-decodes"), reply);
});
