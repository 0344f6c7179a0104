//! Feeds a stream of 28-byte NBD request headers, as a client sends them
//! during transmission, to `Request::decode`, then to `Request::command`
//! and `Request::fits` as cownetdisk checks each against its export. Must
//! hold: no panic; a header that decodes re-encodes to the same 28 bytes; a
//! command accepted carries only the flags it allows; a request that fits
//! ends inside the export.
#![no_main]

use cownetdisk::protocol::{Request, REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

/// The export's size: 16 MiB.
const SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    for raw in data.chunks_exact(REQUEST_LEN) {
        let raw: &[u8; REQUEST_LEN] = raw.try_into().expect("REQUEST_LEN bytes");
        let Ok(request) = Request::decode(raw) else { return };
        assert_eq!(&request.encode(), raw);
        if let Ok(command) = request.command() {
            assert_eq!(request.flags & !command.allowed_flags(), 0);
            assert_eq!(command.code(), request.kind);
        }
        if request.fits(SIZE) {
            assert!(request.offset + u64::from(request.length) <= SIZE);
        }
    }
});
