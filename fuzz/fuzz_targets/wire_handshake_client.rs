//! Feeds what a server sends to a client that has sent its preamble and
//! Noise IX message 1 (the steps of `wire::Channel::connect`, which
//! needs a TCP socket): the server's clear preamble through
//! `RecordReader::take_raw` and `Preamble::decode`/`status`, then message
//! 2 through `RecordReader::next_record` and `Initiator::finish`, then its
//! payload through `HelloReply::decode_body`. Must hold: no panic; nothing
//! but a message made with the client's fresh ephemeral key authenticates.
#![no_main]

use jettison_fuzz::key;
use libfuzzer_sys::fuzz_target;
use wire::protocol::{Message, Preamble, PreambleStatus, PREAMBLE_LEN};
use wire::secure::{Initiator, RecordReader};
use wire::{Hello, HelloReply, Service};

fuzz_target!(|data: &[u8]| {
    let preamble = Preamble::client().encode();
    let mut initiator = Initiator::new(&key(), &preamble).expect("the Noise parameters are valid");
    let hello = Hello::new(Service::Memory, "vm1");
    initiator.first_message(&hello.encode_body()).expect("a hello fits a handshake message");
    let mut records = RecordReader::new();
    records.push(data);
    let Some(raw) = records.take_raw(PREAMBLE_LEN) else { return };
    let Ok(theirs) = Preamble::decode(&raw.try_into().expect("PREAMBLE_LEN bytes")) else { return };
    if !matches!(theirs.status(), Ok(PreambleStatus::Accepted)) {
        return;
    }
    let Some(message) = records.next_record() else { return };
    if let Ok((payload, _transport, _server_key)) = initiator.finish(&message) {
        let _ = HelloReply::decode_body(&payload);
    }
});
