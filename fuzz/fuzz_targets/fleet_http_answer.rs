//! Feeds bytes to the fleet's HTTP/1.1 answer reader, as an etcd member (or
//! whatever listens at a configured endpoint) answers a request. Must hold:
//! no panic, and never a body larger than `MAX_ANSWER`, whatever the
//! headers and chunk sizes claim.
#![no_main]

use fleet_registry::http::{read_answer, MAX_ANSWER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = read_answer(data) {
        assert!(answer.body.len() <= MAX_ANSWER);
    }
});
