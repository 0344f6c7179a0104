//! Errors of memserv.

use std::path::PathBuf;

/// Why memserv cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum MemservError {
    /// The RAM file cannot be opened or mapped.
    #[error("memserv: cannot map {}: is the VM stopped and the path its memory-backend-file?", path.display())]
    Map {
        /// The RAM file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The RAM file is empty.
    #[error("memserv: {} is empty: it is not a VM's RAM file", path.display())]
    Empty {
        /// The RAM file.
        path: PathBuf,
    },
    /// The serving loop could not start.
    #[error("memserv: cannot start serving")]
    Serve(#[source] image_server::ServeError),
}
