//! The machine's boot id, which tells a process crash from a reboot.
//!
//! Linux draws a random UUID at every boot. A bitmap records the boot id of the
//! process that last opened it: if the id is still the same, only that process
//! died and the page cache (which holds every store into the shared mapping)
//! survived; if it changed, the machine rebooted and only what was synced is on
//! disk.

use std::fmt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Where Linux publishes the boot id.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// A boot id: 16 bytes, shown as a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BootId([u8; 16]);

impl BootId {
    /// The boot id of the running system.
    ///
    /// # Errors
    ///
    /// [`StoreError::ReadBootId`] if `/proc/sys/kernel/random/boot_id` cannot be read,
    /// [`StoreError::ParseBootId`] if it does not hold a UUID.
    pub fn current() -> Result<Self> {
        let path = Path::new(BOOT_ID_PATH);
        let text =
            std::fs::read_to_string(path).map_err(|source| StoreError::ReadBootId { path: path.to_owned(), source })?;
        Self::parse(&text).ok_or_else(|| StoreError::ParseBootId { path: path.to_owned(), text })
    }

    /// A boot id from its 16 bytes; tests use it to pretend the machine rebooted.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the kernel's text form: 32 hex digits, dashes anywhere, a trailing newline.
    fn parse(text: &str) -> Option<Self> {
        let digits: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
        if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut bytes = [0; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_form_and_prints_it_back() {
        let text = "3f1e2a9c-5b7d-4c11-9e0f-0123456789ab\n";
        let id = BootId::parse(text).unwrap();
        assert_eq!(id.as_bytes()[0], 0x3f);
        assert_eq!(id.as_bytes()[15], 0xab);
        assert_eq!(id.to_string(), text.trim());
    }

    #[test]
    fn refuses_text_that_is_not_a_uuid() {
        for text in ["", "xyz", "3f1e2a9c-5b7d-4c11-9e0f-0123456789", "+f1e2a9c5b7d4c119e0f0123456789ab"] {
            assert_eq!(BootId::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_the_running_systems_id() {
        let first = BootId::current().unwrap();
        assert_eq!(BootId::current().unwrap(), first);
    }
}
