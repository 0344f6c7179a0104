//! Feeds a key and a value (split at the first NUL) to
//! `ServerRecord::from_entry`, as a desktop reads the fleet's registry from
//! etcd. Must hold: no panic; a record that checks out has the key's name,
//! a dialable address and finite figures, and reads back the same from its
//! own serialisation.
#![no_main]

use fleet_registry::ServerRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(record) = ServerRecord::from_entry(key, value) else { return };
    assert_eq!(record.key().as_bytes(), key);
    assert!(!record.address.ip().is_unspecified() && record.address.port() != 0);
    assert!(record.capacity.memory_mib > 0.0 && record.capacity.memory_mib.is_finite());
    assert!(record.load.memory_mib >= 0.0 && record.load.memory_mib.is_finite());
    let again = serde_json::to_vec(&record).expect("a checked record serialises");
    assert_eq!(ServerRecord::from_entry(key, &again).as_ref(), Ok(&record));
});
