//! Feeds a frame body to `ControlHello::decode_body`, as the server daemon
//! and a desktop daemon read the first handshake payload of a control
//! connection. Must hold: no panic, no allocation past the frame limit; a
//! hello that decodes names a valid host and re-encodes to a body that
//! decodes to the same hello.
#![no_main]

use daemon_protocol::{ControlHello, HostName};
use libfuzzer_sys::fuzz_target;
use wire::protocol::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = ControlHello::decode_body(data) else { return };
    if let ControlHello::Desktop(host) | ControlHello::Server(host) = &hello {
        assert!(host.as_str().parse::<HostName>().is_ok());
    }
    assert_eq!(ControlHello::decode_body(&hello.encode_body()).expect("a decoded hello re-decodes"), hello);
});
