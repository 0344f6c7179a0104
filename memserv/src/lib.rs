//! Desktop side: serves pages of a stopped VM's RAM file to memtap.
//!
//! While a VM is consolidated its RAM file on the desktop is the checkpoint
//! the VM will return to, and the source of every page the server has not
//! yet fetched. memserv maps it read-only and answers page requests through
//! the shared serving loop of `jettison-image-server`; it never writes it.
#![warn(missing_docs)]

mod error;
mod ram_file;

pub use error::MemservError;
pub use ram_file::{RamFile, PAGE_SIZE};

use std::sync::Arc;

use image_server::{ServeConfig, Server};

/// Opens `ram` and binds a server for it with `config` (whose service must
/// be memory). Call [`Server::run`] on the result.
///
/// # Errors
/// [`MemservError`] naming the RAM file or the address that failed.
pub fn bind(ram: &std::path::Path, config: ServeConfig) -> Result<Server, MemservError> {
    let image = RamFile::open(ram)?;
    Server::bind(config, Arc::new(image)).map_err(MemservError::Serve)
}
