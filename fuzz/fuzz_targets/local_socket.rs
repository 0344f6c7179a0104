//! Feeds a line of the local control socket to `serde_json::from_slice` as
//! a `LocalRequest` (what a daemon reads from the `jettison` command) and
//! as a `LocalReply` (what the command reads from a daemon). Must hold: no
//! panic; names in them are checked identifiers; what decodes re-encodes to
//! JSON that decodes to the same value.
#![no_main]

use daemon_protocol::local::{LocalReply, LocalRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<LocalRequest>(data) {
        let text = serde_json::to_vec(&request).expect("a request serialises");
        assert_eq!(serde_json::from_slice::<LocalRequest>(&text).expect("a decoded request re-decodes"), request);
    }
    if let Ok(reply) = serde_json::from_slice::<LocalReply>(data) {
        let text = serde_json::to_vec(&reply).expect("a reply serialises");
        let back = serde_json::from_slice::<LocalReply>(&text).expect("a decoded reply re-decodes");
        // Floats in reports may not survive the text form bit for bit
        // (NaN is not JSON); compare the text instead.
        assert_eq!(serde_json::to_vec(&back).expect("a reply serialises"), text);
    }
});
