//! Feeds bytes to `ZeroMap::decode`, as the server daemon reads the zero
//! map that comes with a consolidation (and `ZeroMap::load` a saved one).
//! Must hold: no panic, no allocation before the length is checked against
//! the header; a map that decodes has a power-of-two unit and runs that are
//! non-empty, increasing and inside the unit count, and re-encodes to
//! exactly the input (the format has one encoding per map).
#![no_main]

use libfuzzer_sys::fuzz_target;
use migration_formats::ZeroMap;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = ZeroMap::decode(data) else { return };
    assert!(map.unit_size.is_power_of_two());
    let mut previous_end = 0;
    for range in &map.ranges {
        assert!(range.start < range.end && range.end <= map.units && range.start >= previous_end);
        previous_end = range.end;
    }
    assert!(map.zero_units() <= map.units);
    assert_eq!(map.encode(), data);
});
