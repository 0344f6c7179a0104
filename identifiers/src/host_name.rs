//! A host's name (a desktop or a server).

use std::str::FromStr;

use crate::{checked_string, InvalidIdentifier};

/// A desktop's or a server's name: 1 to [`HostName::MAX_LEN`] ASCII
/// letters, digits, `-`, `_` or `.`, starting with a letter or digit (so
/// never `.` or `..`). Safe as a file name; a DNS name fits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(String);

impl HostName {
    /// The longest name.
    pub const MAX_LEN: usize = 63;
}

impl FromStr for HostName {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = text.len() <= HostName::MAX_LEN
            && text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(InvalidIdentifier::new(
                "host name",
                text,
                "write 1 to 63 letters, digits, -, _ or ., starting with a letter or digit",
            ));
        }
        Ok(HostName(text.to_owned()))
    }
}

checked_string!(HostName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass_and_hostile_ones_do_not() {
        for good in ["desk1", "server.office.example", "a"] {
            assert_eq!(good.parse::<HostName>().unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "../etc", "-x", "a/b", "a b", &"x".repeat(64)] {
            assert!(bad.parse::<HostName>().is_err(), "{bad:?}");
        }
    }
}
