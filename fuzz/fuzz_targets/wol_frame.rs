//! Feeds an Ethernet frame heard on the wire to
//! `remote_wakeup::magic::recognise`, as the emulated sleeping desktop
//! looks for its Wake-on-LAN magic packet; the MAC looked for is the
//! frame's last six bytes (where a magic packet that ends the frame has its
//! last copy), so the fuzzer can reach a match. Must hold: no panic; a
//! frame recognised carries the magic packet for that MAC, as an Ethernet
//! payload or as the data of a UDP datagram to port 9 or 7.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remote_wakeup::magic::{payload, recognise, starts_with_magic, MagicKind, WOL_UDP_PORTS};
use remote_wakeup::Mac;

fuzz_target!(|data: &[u8]| {
    let Some(tail) = data.len().checked_sub(6).map(|at| &data[at..]) else { return };
    let mac = Mac(tail.try_into().expect("6 bytes"));
    match recognise(data, mac) {
        Some(MagicKind::Ethernet) => assert!(starts_with_magic(&data[14..], mac)),
        Some(MagicKind::Udp(port)) => {
            assert!(WOL_UDP_PORTS.contains(&port));
            assert!(data.windows(payload(mac).len()).any(|w| w == payload(mac)));
        }
        None => {}
    }
});
