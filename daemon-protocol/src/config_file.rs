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
