//! Reading a daemon's configuration file: TOML into the daemon's settings
//! type, each mistake named with the file (and, from the TOML parser, the
//! line and key).

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It cannot be read.
    #[error("cannot read the configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// It is not valid TOML for this daemon.
    #[error("{path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value breaks its rule.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, what is wrong and what to write instead.
        reason: String,
    },
}

/// Where `jettison pair` keeps this host's private key by default.
pub const DEFAULT_HOST_KEY: &str = "/etc/jettison/host.key";
/// Where `jettison enroll` keeps the enrolled peers by default.
pub const DEFAULT_PEERS: &str = "/etc/jettison/peers";

/// The default `host_key` setting, [`DEFAULT_HOST_KEY`].
pub fn default_host_key() -> PathBuf {
    PathBuf::from(DEFAULT_HOST_KEY)
}

/// The default `peers` setting, [`DEFAULT_PEERS`].
pub fn default_peers() -> PathBuf {
    PathBuf::from(DEFAULT_PEERS)
}

/// Refuses the `key` setting of releases that shared one office key among
/// all hosts, saying how to move to per-host keys.
///
/// # Errors
/// The upgrade steps, when `office_key` is set.
pub fn refuse_office_key(office_key: Option<&Path>) -> Result<(), String> {
    match office_key {
        None => Ok(()),
        Some(path) => Err(format!(
            "key = {:?}: one office key shared by every host is no longer used; each host has its own. \
             On every host run `jettison pair` (it makes /etc/jettison/host.key and prints its public key); \
             on the server run `jettison enroll DESKTOP-NAME KEY` for each desktop, and on each desktop \
             `jettison enroll SERVER-NAME KEY` for the server; then replace the `key` line with \
             `host_key = \"{DEFAULT_HOST_KEY}\"` and delete the old key file",
            path.display()
        )),
    }
}

/// Reads the file at `path` as `T`, then runs `check` on it.
///
/// # Errors
/// [`ConfigFileError`] naming the file.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
    let config: T = toml::from_str(&text)
        .map_err(|source| ConfigFileError::Parse { path: path.to_owned(), source: Box::new(source) })?;
    check(&config).map_err(|reason| ConfigFileError::Invalid { path: path.to_owned(), reason })?;
    Ok(config)
}
