//! Feeds what an NBD server sends to the client-side decoders of
//! `cownetdisk::protocol` (the bench's NBD client and the tests use them):
//! the greeting, option replies (header, data, and `NBD_REP_INFO` data as
//! `Info`), then either an `NBD_OPT_EXPORT_NAME` answer or simple reply
//! headers, as the input's first byte chooses. Must hold: no panic; every
//! fixed-layout message that decodes re-encodes to the same bytes.
#![no_main]

use cownetdisk::protocol::{
    ExportNameReply, Greeting, Info, OptionReply, OptionReplyHeader, ReplyType, SimpleReply, GREETING_LEN,
    OPTION_REPLY_HEADER_LEN, SIMPLE_REPLY_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let Some(greeting) = data.get(..GREETING_LEN) else { return };
    let greeting: &[u8; GREETING_LEN] = greeting.try_into().expect("GREETING_LEN bytes");
    if let Ok(decoded) = Greeting::decode(greeting) {
        assert_eq!(&decoded.encode(), greeting);
    }
    let mut rest = &data[GREETING_LEN..];
    while let Some(head) = rest.get(..OPTION_REPLY_HEADER_LEN) {
        let Ok(header) = OptionReplyHeader::decode(head.try_into().expect("OPTION_REPLY_HEADER_LEN bytes")) else {
            break;
        };
        let Some(body) = rest.get(OPTION_REPLY_HEADER_LEN..OPTION_REPLY_HEADER_LEN + header.len as usize) else {
            return;
        };
        let reply = OptionReply::decode(&header, body).expect("data of the announced length");
        assert_eq!(reply.encode(), rest[..OPTION_REPLY_HEADER_LEN + body.len()]);
        if reply.kind == ReplyType::Info {
            if let Ok(info) = Info::decode(&reply.data) {
                assert_eq!(info.encode(), reply.data);
            }
        }
        rest = &rest[OPTION_REPLY_HEADER_LEN + body.len()..];
    }
    if mode & 1 == 0 {
        if let Ok(reply) = ExportNameReply::decode(rest) {
            assert_eq!(reply.encode(rest.len() == 10), rest);
        }
        return;
    }
    for raw in rest.chunks_exact(SIMPLE_REPLY_LEN) {
        let raw: &[u8; SIMPLE_REPLY_LEN] = raw.try_into().expect("SIMPLE_REPLY_LEN bytes");
        let Ok(reply) = SimpleReply::decode(raw) else { return };
        assert_eq!(&reply.encode(), raw);
    }
});
