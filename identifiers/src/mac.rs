//! An Ethernet address.

use std::fmt;
use std::str::FromStr;

use crate::InvalidIdentifier;

/// A 48-bit Ethernet address, printed as `aa:bb:cc:dd:ee:ff`. Being six
/// bytes, it can only ever print as six hex pairs, whatever text it was
/// read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Whether this is one station's address (the group bit of the first
    /// byte clear, and not all zeros): what a NIC may have.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }

    /// This address, if it is one station's, else an error naming `what`
    /// ("the VM's MAC").
    ///
    /// # Errors
    /// [`InvalidIdentifier`] for a group (multicast, broadcast) or all-zero address.
    pub fn unicast(self) -> Result<Mac, InvalidIdentifier> {
        if self.is_unicast() {
            Ok(self)
        } else {
            Err(InvalidIdentifier::new(
                "NIC address",
                &self.to_string(),
                "a NIC needs a unicast address: the first byte even and not all zeros (e.g. 02:4a:54:00:00:01)",
            ))
        }
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = InvalidIdentifier;

    /// Six hex pairs separated by `:` or `-` (`aa:bb:cc:dd:ee:ff`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIdentifier::new("MAC address", text, "write six hex pairs as aa:bb:cc:dd:ee:ff");
        let separator = if text.contains('-') { '-' } else { ':' };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(separator);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(bytes))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::deserialize_text(deserializer)
    }
}

/// On the wire a MAC travels as its text, so that the decoder, not the
/// encoder, is where a bad one is refused.
impl bincode::Encode for Mac {
    fn encode<E: bincode::enc::Encoder>(&self, encoder: &mut E) -> Result<(), bincode::error::EncodeError> {
        self.to_string().encode(encoder)
    }
}

impl<C> bincode::Decode<C> for Mac {
    fn decode<D: bincode::de::Decoder<Context = C>>(decoder: &mut D) -> Result<Self, bincode::error::DecodeError> {
        crate::decode_text(decoder)
    }
}
bincode::impl_borrow_decode!(Mac);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_admins_write_and_nothing_else() {
        let mac: Mac = "02:4A:54:00:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x4a, 0x54, 0, 0, 1]);
        assert_eq!(mac.to_string(), "02:4a:54:00:00:01");
        assert_eq!("02-4a-54-00-00-01".parse::<Mac>().unwrap(), mac);
        for bad in [
            "52:54:00:00:00:01,romfile=/etc/shadow",
            "52:54:00:00:00",
            "52:54:00:00:00:01:02",
            "5:54:00:00:00:01",
            "+5:54:00:00:00:01",
            "",
            "gg:54:00:00:00:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_station_addresses_are_unicast() {
        assert!("02:00:00:00:00:01".parse::<Mac>().unwrap().unicast().is_ok());
        for group in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"] {
            let error = group.parse::<Mac>().unwrap().unicast().unwrap_err();
            assert!(error.to_string().contains("unicast"), "{error}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errs_and_a_mac_round_trips(text in ".{0,40}", bytes in proptest::array::uniform6(0u8..)) {
            let _ = text.parse::<Mac>();
            let mac = Mac(bytes);
            proptest::prop_assert_eq!(mac.to_string().parse::<Mac>().unwrap(), mac);
        }
    }
}
