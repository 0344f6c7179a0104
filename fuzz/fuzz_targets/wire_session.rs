//! Drives `wire::ServerSession` (memserv's and diskserv's connection state
//! machine) through a real handshake with the fuzz key, then feeds it what
//! an authenticated client sends: the hello is the input's choice, and so
//! is the plaintext after it, which the client side seals into records
//! (`Transport::seal`) before it reaches the session in pieces of
//! input-chosen lengths; with bit 0 of the first byte set, the bytes after
//! the handshake go in raw instead, as from someone on the path. Requests
//! that come out are answered from a 64 KiB image. Input: mode byte, hello
//! length byte, the hello body, then piece lengths as in `split_lens` and
//! the stream. Must hold: no panic, no allocation past the frame limit; a
//! hello body is handed out exactly when `Hello::decode_body` takes it;
//! requests handed out keep their limits; an error closes the session.
#![no_main]

use image_server::respond::answer;
use jettison_fuzz::{credentials, key, pieces, split_lens, MemImage};
use libfuzzer_sys::fuzz_target;
use wire::protocol::{Message, Preamble, PreambleStatus, MAX_RANGES, PREAMBLE_LEN};
use wire::secure::{Initiator, RecordReader};
use wire::{Event, Hello, HelloReply, Request, ServerSession, Welcome};

fuzz_target!(|data: &[u8]| {
    let [mode, hello_len, rest @ ..] = data else { return };
    let Some(hello_body) = rest.get(..usize::from(*hello_len)) else { return };
    let (lens, stream) = split_lens(&rest[usize::from(*hello_len)..]);

    let key = key();
    let preamble = Preamble::client().encode();
    let mut initiator = Initiator::new(&key, &preamble).expect("the Noise parameters are valid");
    let message1 = initiator.first_message(hello_body).expect("255 bytes fit a handshake message");
    let mut session = ServerSession::new(credentials(), "fuzz");
    let mut out = Vec::new();
    session.receive(&preamble);
    session.receive(&message1);
    let hello = match session.poll(&mut out) {
        Ok(Some(Event::Hello(hello))) => hello,
        Err(_) => {
            assert!(Hello::decode_body(hello_body).is_err(), "a valid hello was refused");
            return;
        }
        other => panic!("the first event of an authenticated client is its hello, not {other:?}"),
    };
    assert_eq!(Hello::decode_body(hello_body).expect("the session took it"), hello);
    let welcome = HelloReply::Welcome(Welcome { size: MemImage::SIZE, unit: MemImage::UNIT });
    session.answer_hello(&welcome, &mut out).expect("a welcome is sealed");

    let mut records = RecordReader::new();
    records.push(&out);
    let raw = records.take_raw(PREAMBLE_LEN).expect("the server sent its preamble");
    let theirs = Preamble::decode(&raw.try_into().expect("PREAMBLE_LEN bytes")).expect("a server preamble");
    assert!(matches!(theirs.status(), Ok(PreambleStatus::Accepted)));
    let message2 = records.next_record().expect("the server sent message 2");
    let (payload, mut transport, _) = initiator.finish(&message2).expect("message 2 authenticates");
    assert_eq!(HelloReply::decode_body(&payload).expect("a welcome"), welcome);

    let wire_bytes = if mode & 1 == 1 {
        stream.to_vec()
    } else {
        let mut sealed = Vec::new();
        for piece in pieces(stream, lens) {
            transport.seal(piece, &mut sealed).expect("a record is sealed");
        }
        sealed
    };
    for piece in pieces(&wire_bytes, lens) {
        session.receive(piece);
        loop {
            out.clear();
            match session.poll(&mut out) {
                Ok(Some(Event::Request(request))) => {
                    let Request::Read { id, ranges } = &request;
                    assert!(ranges.len() <= MAX_RANGES);
                    session.send(&answer(&MemImage, *id, ranges), &mut out).expect("an answer is sealed");
                }
                Ok(Some(Event::Hello(_))) => panic!("a second hello"),
                Ok(None) => break,
                Err(_) => {
                    assert!(session.is_closed());
                    return;
                }
            }
        }
    }
});
