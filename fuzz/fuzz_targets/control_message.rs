//! Feeds a frame body to `Control::decode_body`, as both daemons read every
//! control message after the handshake (and `ChunkReader` each piece of a
//! reintegration's stream), then does what a receiver does with it at once:
//! its kind for logs, the sizes a `Returning` announces added up, a hosted
//! VM's state displayed. Must hold: no panic, no allocation past the frame
//! limit; a message that decodes keeps the protocol's limits and re-encodes
//! to a body that decodes to the same message.
#![no_main]

use daemon_protocol::protocol::{MAX_CHUNK, MAX_TEXT};
use daemon_protocol::Control;
use libfuzzer_sys::fuzz_target;
use wire::protocol::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Control::decode_body(data) else { return };
    let _ = message.kind();
    match &message {
        Control::Failed(text)
        | Control::NoRoom(text)
        | Control::PleaseReintegrate { reason: text, .. }
        | Control::PleaseMove { reason: text, .. } => {
            assert!(text.len() <= MAX_TEXT)
        }
        Control::Data(chunk) => assert!(chunk.len() <= MAX_CHUNK),
        Control::Returning(header) => {
            let _ = header.total_bytes();
        }
        Control::StatusReply(vms) => {
            for vm in vms {
                let _ = vm.state.to_string();
            }
        }
        _ => {}
    }
    assert_eq!(Control::decode_body(&message.encode_body()).expect("a decoded message re-decodes"), message);
});
