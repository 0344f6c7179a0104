//! A VM's name.

use std::str::FromStr;

use crate::{checked_string, InvalidIdentifier};

/// A VM's name: 1 to [`VmName::MAX_LEN`] ASCII letters, digits, `-` or
/// `_`. It is safe as a file name and fits a tap device's name
/// (`jt-<name>`, within Linux's 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmName(String);

impl VmName {
    /// The longest name.
    pub const MAX_LEN: usize = 12;

    /// The VM's tap device on either host.
    pub fn tap_name(&self) -> String {
        format!("jt-{}", self.0)
    }
}

impl FromStr for VmName {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = !text.is_empty()
            && text.len() <= VmName::MAX_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(InvalidIdentifier::new(
                "VM name",
                text,
                "write 1 to 12 letters, digits, - or _ (it names a directory and the tap device jt-<name>)",
            ));
        }
        Ok(VmName(text.to_owned()))
    }
}

checked_string!(VmName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass_and_hostile_ones_do_not() {
        for good in ["vm1", "a", "Desk_VM-12ab"] {
            assert_eq!(good.parse::<VmName>().unwrap().as_str(), good);
        }
        for bad in ["", "../x", "..", ".", "a/b", "vm 1", "vm1\n", "a-very-long-vm-name", "vm1,romfile=x", "é"] {
            let error = bad.parse::<VmName>().unwrap_err();
            assert!(error.to_string().contains("VM name"), "{error}");
        }
        assert_eq!("vm1".parse::<VmName>().unwrap().tap_name(), "jt-vm1");
        assert!("abcdefghijkl".parse::<VmName>().unwrap().tap_name().len() <= 15);
    }

    #[test]
    fn the_wire_and_the_config_check_the_same_rule() {
        let config = bincode::config::standard();
        let good = bincode::encode_to_vec("vm1", config).unwrap();
        let (name, _): (VmName, _) = bincode::decode_from_slice(&good, config).unwrap();
        assert_eq!(name.as_str(), "vm1");
        let bad = bincode::encode_to_vec("../x", config).unwrap();
        let error = bincode::decode_from_slice::<VmName, _>(&bad, config).unwrap_err();
        assert!(error.to_string().contains("not a valid VM name"), "{error}");
        assert!(serde_json::from_str::<VmName>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"vm1\"");
    }
}
