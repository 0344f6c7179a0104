//! Errors of the serving loop.

use std::path::PathBuf;

/// Why a server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TCP listening address could not be bound.
    #[error("cannot listen on {addr}: is another daemon using the port?")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The local event socket could not be created.
    #[error("cannot create event socket {}: does its directory exist and is it writable?", path.display())]
    EventSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An export was added under a name already served.
    #[error("export {name:?} is already served")]
    ExportTwice {
        /// The name.
        name: String,
    },
    /// The event loop's poll failed.
    #[error("event loop failed")]
    Poll(#[source] std::io::Error),
}
