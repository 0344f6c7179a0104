//! Feeds what a client sends before it has authenticated (the clear
//! preamble, then Noise IX message 1, then anything) to
//! `wire::ServerSession`, the state machine of memserv's and diskserv's
//! connections, in pieces of input-chosen lengths. The session holds the
//! fuzz key, so a seed made with that key gets through message 1 and the
//! fuzzer can work on what follows it. Must hold: no panic; an error closes
//! the session; whatever the server sent starts with a server preamble; a
//! hello handed out keeps its limits.
#![no_main]

use image_server::respond::answer;
use jettison_fuzz::{credentials, pieces, split_lens, MemImage};
use libfuzzer_sys::fuzz_target;
use wire::protocol::{Preamble, MAX_NAME, PREAMBLE_LEN};
use wire::{Event, HelloReply, Request, ServerSession, Welcome};

fuzz_target!(|data: &[u8]| {
    let (lens, stream) = split_lens(data);
    let mut session = ServerSession::new(credentials(), "fuzz");
    let mut out = Vec::new();
    'pieces: for piece in pieces(stream, lens) {
        session.receive(piece);
        loop {
            match session.poll(&mut out) {
                Ok(Some(Event::Hello(hello))) => {
                    assert!(!hello.export.is_empty() && hello.export.len() <= MAX_NAME);
                    let welcome = HelloReply::Welcome(Welcome { size: MemImage::SIZE, unit: MemImage::UNIT });
                    session.answer_hello(&welcome, &mut out).expect("a welcome is sealed");
                }
                Ok(Some(Event::Request(request))) => {
                    let Request::Read { id, ranges } = &request;
                    session.send(&answer(&MemImage, *id, ranges), &mut out).expect("an answer is sealed");
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(session.is_closed());
                    break 'pieces;
                }
            }
        }
    }
    if let Some(raw) = out.get(..PREAMBLE_LEN) {
        let preamble = Preamble::decode(raw.try_into().expect("PREAMBLE_LEN bytes")).expect("a server preamble");
        assert!(preamble.status().is_ok());
    }
});
