//! The shared key that authenticates desktop and server to each other.
//!
//! `jettison pair` makes one; the same file goes to the desktop and the
//! server (or its hex text into both config files). It is 32 random bytes
//! written as 64 hex digits and a newline, readable by its owner only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rand::RngCore;

use crate::error::WireError;

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

/// A 32-byte pre-shared key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey([u8; KEY_LEN]);

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

impl SharedKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SharedKey(bytes)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (surrounding white space is ignored).
    ///
    /// # Errors
    /// [`WireError::BadKey`] naming `origin` when the text is not a key.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, WireError> {
        let bytes = hex::decode(text.trim()).map_err(|_| WireError::BadKey { origin: origin.to_owned() })?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| WireError::BadKey { origin: origin.to_owned() })?;
        Ok(SharedKey(bytes))
    }

    /// Writes the key to a new file readable by its owner only, making its
    /// directory first if needed (mode 0755, as `/etc/jettison` is).
    ///
    /// # Errors
    /// [`WireError::KeyExists`] if the file exists, [`WireError::KeyWrite`]
    /// if it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), WireError> {
        let fail = |source| WireError::KeyWrite { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(fail)?;
        }
        let created = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        let mut f = match created {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(WireError::KeyExists { path: path.to_owned() })
            }
            other => other.map_err(fail)?,
        };
        writeln!(f, "{}", self.to_hex()).map_err(fail)?;
        f.sync_all().map_err(fail)
    }

    /// Reads a key file written by [`SharedKey::save`].
    ///
    /// # Errors
    /// [`WireError::KeyFile`] if it cannot be read, [`WireError::KeyExposed`]
    /// if others may read it, [`WireError::BadKey`] if it holds no key.
    pub fn load(path: &Path) -> Result<Self, WireError> {
        let fail = |source| WireError::KeyFile { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(fail)?;
        if meta.mode() & 0o077 != 0 {
            return Err(WireError::KeyExposed { path: path.to_owned(), mode: meta.mode() & 0o777 });
        }
        let text = std::fs::read_to_string(path).map_err(fail)?;
        Self::from_hex(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jettison.key");
        let key = SharedKey::generate();
        key.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(SharedKey::load(&path).unwrap(), key);
        assert!(key.save(&path).is_err(), "overwrote an existing key");
        assert_eq!(format!("{key:?}"), "SharedKey(..)");
    }

    #[test]
    fn rejects_bad_text_and_exposed_files() {
        assert!(SharedKey::from_hex("abc", "t").is_err());
        assert!(SharedKey::from_hex(&"zz".repeat(32), "t").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, SharedKey::generate().to_hex()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(matches!(SharedKey::load(&path), Err(WireError::KeyExposed { .. })));
        let missing = SharedKey::load(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("jettison pair"), "{missing}");
    }
}
