//! Feeds one option as a client sends it (16-byte header, then data) to
//! `OptionHeader::decode` and `ClientOption::decode`, as cownetdisk's
//! handshake reads each one. Must hold: no panic; an option that decodes
//! re-encodes (`ClientOption::encode`) to bytes that decode to the same
//! option; export names are UTF-8 without NUL, at most `MAX_NAME` bytes.
#![no_main]

use cownetdisk::protocol::{ClientOption, OptionHeader, MAX_NAME, OPTION_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(head) = data.get(..OPTION_HEADER_LEN) else { return };
    let Ok(header) = OptionHeader::decode(head.try_into().expect("OPTION_HEADER_LEN bytes")) else { return };
    let Ok(option) = ClientOption::decode(&header, &data[OPTION_HEADER_LEN..]) else { return };
    match &option {
        ClientOption::ExportName(name) => assert!(name.len() <= MAX_NAME && !name.contains('\0')),
        ClientOption::Info(query) | ClientOption::Go(query) => {
            assert!(query.name.len() <= MAX_NAME && !query.name.contains('\0'));
        }
        _ => {}
    }
    let bytes = option.encode();
    let header = OptionHeader::decode(bytes[..OPTION_HEADER_LEN].try_into().expect("a header")).expect("re-decodes");
    assert_eq!(ClientOption::decode(&header, &bytes[OPTION_HEADER_LEN..]).expect("re-decodes"), option);
});
