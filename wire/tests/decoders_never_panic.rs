//! Property tests: every decoder that reads bytes from a peer rejects
//! arbitrary input with an error and never panics, and every valid message
//! survives being cut into arbitrary pieces.

use proptest::prelude::*;
use wire::protocol::{frame, FrameReader, Message, Preamble, PREAMBLE_LEN};
use wire::{ByteRange, Chunk, Credentials, Hello, HelloReply, Request, Response, ServerSession};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn message_decoders_reject_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Hello::decode_body(&bytes);
        let _ = HelloReply::decode_body(&bytes);
        let _ = Request::decode_body(&bytes);
        let _ = Response::decode_body(&bytes);
        if let Ok(raw) = <[u8; PREAMBLE_LEN]>::try_from(&bytes[..bytes.len().min(PREAMBLE_LEN)]) {
            let _ = Preamble::decode(&raw).map(|p| p.status());
        }
    }

    #[test]
    fn frame_reader_survives_garbage(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
        let mut reader = FrameReader::new();
        for piece in &pieces {
            reader.push(piece);
            while let Ok(Some(body)) = reader.next_body() {
                let _ = Request::decode_body(&body);
            }
        }
    }

    #[test]
    fn server_session_survives_garbage(
        prefix_valid in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut session = ServerSession::new(std::sync::Arc::new(Credentials::mutual(&"a".parse().unwrap(), &"b".parse().unwrap()).0), "fuzz");
        let mut out = Vec::new();
        if prefix_valid {
            session.receive(&Preamble::client().encode());
        }
        session.receive(&bytes);
        for _ in 0..8 {
            match session.poll(&mut out) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn valid_requests_survive_any_split(
        id in any::<u64>(),
        ranges in proptest::collection::vec((any::<u64>(), 1u32..), 0..40),
        cut in 1usize..64,
    ) {
        let req = Request::read(id, ranges.into_iter().map(|(o, l)| ByteRange::new(o, l)).collect());
        let wire = frame(&req.encode_body());
        let mut reader = FrameReader::new();
        let mut got = None;
        for piece in wire.chunks(cut) {
            reader.push(piece);
            if let Some(body) = reader.next_body().unwrap() {
                got = Some(Request::decode_body(&body).unwrap());
            }
        }
        prop_assert_eq!(got, Some(req));
    }

    #[test]
    fn responses_round_trip(id in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..9000), zero_len in 1u32..) {
        let resp = Response::data(id, vec![
            Chunk::Bytes { offset: 0, data: data.clone() },
            Chunk::Zero { offset: data.len() as u64, len: zero_len },
        ]);
        prop_assert_eq!(Response::decode_body(&resp.encode_body()).unwrap(), resp);
    }
}
