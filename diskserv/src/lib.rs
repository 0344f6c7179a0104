//! Desktop side: serves blocks of a consolidated VM's disk image to the
//! server's cownetdisk, read-only, over the same authenticated protocol and
//! serving loop as memserv (`jettison-image-server`, service `Disk`).
//!
//! While a VM is consolidated, its disk image on the desktop is the
//! checkpoint it returns to and the source of every block the server has
//! not fetched yet. diskserv opens it read-only and answers block requests
//! with positional reads; it never writes it. Unlike memserv it does not map
//! the file: a disk image can be far larger than the address space worth
//! reserving, the server reads a few MiB of it while the VM idles, and
//! `pread` on a page-cached file costs the same copy as reading a mapping
//! without the risk of a fault (SIGBUS) if the file is truncated under us.
//!
//! The *block size* is the granularity of the wire protocol's zero markers:
//! a run of all-zero blocks travels as a few bytes. It need not match
//! cownetdisk's block size (its slice unit), but matching them (the default,
//! 4096) means a zero marker covers exactly the blocks cownetdisk stores.
#![warn(missing_docs)]

mod disk_image;
mod error;

pub use disk_image::{DiskImage, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
pub use error::DiskservError;

use std::path::Path;
use std::sync::Arc;

use image_server::{ServeConfig, Server};
use wire::Service;

/// Opens the disk image at `image` read-only and binds a server for it with
/// `config`, reporting zero runs in units of `block_size` bytes. Call
/// [`Server::run`] on the result.
///
/// # Errors
/// [`DiskservError::Service`] when `config` does not offer the disk service;
/// otherwise [`DiskservError`] naming the image or the address that failed.
pub fn bind(image: &Path, config: ServeConfig, block_size: u32) -> Result<Server, DiskservError> {
    if config.service != Service::Disk {
        return Err(DiskservError::Service { found: config.service });
    }
    let image = DiskImage::open(image, block_size)?;
    Server::bind(config, Arc::new(image)).map_err(DiskservError::Serve)
}

/// Serves the disk image at `image` too, read-only, on `server` (bound by
/// [`bind`]) to peers whose hello names export `name`: a VM's further disk
/// beside its first, on the same port (see `daemon_protocol::disk_export`).
///
/// # Errors
/// [`DiskservError`] naming the image; [`DiskservError::Serve`] when `name`
/// is already served.
pub fn add_disk(server: &mut Server, name: String, image: &Path, block_size: u32) -> Result<(), DiskservError> {
    let image = DiskImage::open(image, block_size)?;
    server.add_export(name, Arc::new(image)).map_err(DiskservError::Serve)
}
