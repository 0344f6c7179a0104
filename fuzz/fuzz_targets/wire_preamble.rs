//! Feeds the first 8 bytes a peer sends, either side's clear preamble, to
//! `wire::protocol::Preamble::decode` and to its status word. Must hold: no
//! panic; a preamble that decodes re-encodes to the same 8 bytes, and a
//! status that decodes is the word a server of that status sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::{Preamble, PREAMBLE_LEN};

fuzz_target!(|data: &[u8]| {
    let Some(raw) = data.get(..PREAMBLE_LEN) else { return };
    let raw: [u8; PREAMBLE_LEN] = raw.try_into().expect("PREAMBLE_LEN bytes");
    let Ok(preamble) = Preamble::decode(&raw) else { return };
    assert_eq!(preamble.encode(), raw);
    if let Ok(status) = preamble.status() {
        assert_eq!(Preamble::server(status).word, preamble.word);
    }
});
