//! Errors of diskserv.

use std::path::PathBuf;

/// Why diskserv cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum DiskservError {
    /// The disk image cannot be opened or measured.
    #[error("diskserv: cannot open {}: is the VM stopped and this its disk image?", path.display())]
    Open {
        /// The disk image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk image has no bytes.
    #[error("diskserv: {} is empty: it is not a VM's disk image", path.display())]
    Empty {
        /// The disk image.
        path: PathBuf,
    },
    /// The block size cannot be a zero-marker unit.
    #[error(
        "diskserv: block size {block_size} is not a power of two from {} to {}",
        crate::MIN_BLOCK_SIZE,
        crate::MAX_BLOCK_SIZE
    )]
    BlockSize {
        /// The block size asked for.
        block_size: u32,
    },
    /// The serving configuration offers another service.
    #[error("diskserv: serves the disk service, but the configuration offers the {found} service")]
    Service {
        /// The service in the configuration.
        found: wire::Service,
    },
    /// The serving loop could not start.
    #[error("diskserv: cannot start serving")]
    Serve(#[source] image_server::ServeError),
}
