//! Kernel arguments a VM's profile adds to its command line.

use std::str::FromStr;

use identifiers::InvalidIdentifier;

/// Extra kernel arguments (the test guest's `jt.*`): printable ASCII, at
/// most [`KernelArgs::MAX_LEN`] bytes. They reach QEMU as the one argument
/// of `-append`, never through a shell, and go to the guest's kernel only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs(String);

impl KernelArgs {
    /// The longest argument string.
    pub const MAX_LEN: usize = 1024;
}

impl FromStr for KernelArgs {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > KernelArgs::MAX_LEN || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(InvalidIdentifier::new(
                "kernel argument string",
                text,
                "write at most 1024 printable ASCII characters on one line",
            ));
        }
        Ok(KernelArgs(text.to_owned()))
    }
}

identifiers::checked_string!(KernelArgs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_printable_line_only() {
        assert_eq!("jt.fill=64 quiet".parse::<KernelArgs>().unwrap().as_str(), "jt.fill=64 quiet");
        assert!("".parse::<KernelArgs>().is_ok());
        assert!("a\nb".parse::<KernelArgs>().is_err());
        assert!("a\0b".parse::<KernelArgs>().is_err());
        assert!("x".repeat(1025).parse::<KernelArgs>().is_err());
    }
}
