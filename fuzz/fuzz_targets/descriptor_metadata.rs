//! Feeds the body of the control messages that describe a descriptor and
//! what travels with it to `Control::decode_body`, the input's first byte
//! choosing which: `Reserve` (the machine profile), `Consolidate` (the
//! descriptor's size and CRC, the zero map, the addresses and MACs) or
//! `Returning` (the sizes of the descriptor and dirty sets coming back);
//! then does what the receiver does at once: the server decodes the zero
//! map (`ZeroMap::decode`) and reads the profile's RAM size, the desktop
//! adds up the announced sizes (`ReturnHeader::total_bytes`). Must hold:
//! no panic, no allocation past the limits; what decodes keeps the limits
//! the protocol states and re-encodes to a body that decodes to the same
//! message.
#![no_main]

use daemon_protocol::protocol::{MAX_DESCRIPTOR, MAX_DISKS, MAX_DISK_BYTES, MAX_MEMORY_MIB};
use daemon_protocol::{Control, MAX_VCPUS};
use libfuzzer_sys::fuzz_target;
use migration_formats::ZeroMap;
use wire::protocol::Message;

/// The variant tags of `Reserve`, `Consolidate` and `Returning` in
/// `Control`'s declaration order.
const TAGS: [u8; 3] = [2, 4, 7];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let mut body = vec![TAGS[usize::from(which) % TAGS.len()]];
    body.extend_from_slice(rest);
    let Ok(message) = Control::decode_body(&body) else { return };
    match &message {
        Control::Reserve(reserve) => {
            let profile = &reserve.profile;
            assert!((1..=MAX_MEMORY_MIB).contains(&profile.memory_mib));
            assert!((1..=MAX_VCPUS).contains(&profile.vcpus));
            assert!(reserve.disk_bytes <= MAX_DISK_BYTES);
            assert!(reserve.disk_count() <= MAX_DISKS);
            assert!(reserve.extra_disk_bytes.iter().all(|&bytes| bytes <= MAX_DISK_BYTES));
            let _ = profile.ram_bytes();
            let _ = profile.cpu_model.is_host_dependent();
        }
        Control::Consolidate(request) => {
            assert!((1..=MAX_DESCRIPTOR).contains(&request.descriptor_bytes));
            assert!(request.vm_mac.is_unicast());
            if let Ok(map) = ZeroMap::decode(&request.zero_map) {
                let _ = map.zero_units();
            }
        }
        Control::Returning(header) => {
            let _ = header.total_bytes();
        }
        _ => {}
    }
    assert_eq!(Control::decode_body(&message.encode_body()).expect("a decoded message re-decodes"), message);
});
