//! Feeds everything an NBD client sends during the handshake (its flags,
//! then options) to cownetdisk's handshake through `negotiate_bytes`, for an
//! export `vm1` of 16 MiB; the end of the input is a client that hung up.
//! Must hold: no panic, no allocation past the option limit; the server
//! sends its greeting, then only well-formed option replies, ended by an
//! `NBD_OPT_EXPORT_NAME` answer when the client chose the export that way.
#![no_main]

use cownetdisk::negotiate_bytes;
use cownetdisk::protocol::{
    ExportNameReply, Greeting, OptionReply, OptionReplyHeader, GREETING_LEN, OPTION_REPLY_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut output = Vec::new();
    let _ = negotiate_bytes(data, &mut output, "vm1", 16 << 20);
    let greeting = output.get(..GREETING_LEN).expect("the greeting is sent first");
    assert_eq!(Greeting::decode(greeting.try_into().expect("GREETING_LEN bytes")), Ok(Greeting::server()));
    let mut rest = &output[GREETING_LEN..];
    while let Some(head) = rest.get(..OPTION_REPLY_HEADER_LEN) {
        let Ok(header) = OptionReplyHeader::decode(head.try_into().expect("OPTION_REPLY_HEADER_LEN bytes")) else {
            break;
        };
        let end = OPTION_REPLY_HEADER_LEN + header.len as usize;
        let data = rest.get(OPTION_REPLY_HEADER_LEN..end).expect("a reply's data follows its header");
        OptionReply::decode(&header, data).expect("the server's replies decode");
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        ExportNameReply::decode(rest).expect("only an NBD_OPT_EXPORT_NAME answer follows the option replies");
    }
});
