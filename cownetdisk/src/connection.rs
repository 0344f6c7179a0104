//! One NBD client's connection, on a thread of its own: the handshake, the
//! transmission, then one log line saying how it ended. Blocking I/O and a
//! thread per connection keep each connection's code straight-line; NBD
//! clients of one VM's disk are few (QEMU opens one, `nbdcopy` four).

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::disk::Disk;
use crate::error::ConnectionError;
use crate::handshake::{negotiate, Export, Negotiated};
use crate::stats::Counters;
use crate::transmission::{self, Ended};

/// Bound on each read during the handshake, so that a client that connects
/// and says nothing does not keep a thread for ever. None afterwards: a VM
/// whose disk is idle sends nothing for hours.
const HANDSHAKE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Input buffer: many request headers per system call.
const READ_BUFFER: usize = 128 * 1024;
/// Output buffer: many replies per system call.
const WRITE_BUFFER: usize = 256 * 1024;

/// A client's socket.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A TCP client.
    Tcp(TcpStream),
    /// A client on the Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Another handle on the same socket.
    pub(crate) fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Shuts down one or both directions, waking a thread blocked on them.
    pub(crate) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// How a connection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Aborted,
    Transmission(Ended),
}

/// Serves the client `peer` on `stream` until it leaves or breaks the
/// protocol, then logs how it ended. `stopping` tells a connection cut by
/// the server's shutdown from one that failed.
pub(crate) fn serve(stream: Stream, peer: &str, disk: &Disk, stopping: &AtomicBool, served: &AtomicBool) {
    tracing::info!(peer, vm = disk.name(), "client connected");
    match run(stream, peer, disk, served) {
        Ok(End::Aborted) => tracing::info!(peer, "client ended the handshake (NBD_OPT_ABORT)"),
        Ok(End::Transmission(Ended::Disconnected)) => tracing::info!(peer, "client disconnected (NBD_CMD_DISC)"),
        Ok(End::Transmission(Ended::HungUp)) if stopping.load(Ordering::SeqCst) => {
            tracing::info!(peer, "connection closed: cownetdisk is stopping");
        }
        Ok(End::Transmission(Ended::HungUp)) => tracing::info!(peer, "client closed the connection"),
        Err(e @ ConnectionError::Io { .. }) if stopping.load(Ordering::SeqCst) => {
            tracing::debug!("connection cut by shutdown: {}", wire::chain(&e));
        }
        Err(e @ ConnectionError::Io { .. }) => tracing::info!("{}", wire::chain(&e)),
        Err(e) => {
            Counters::add(&disk.counters().dropped_connections, 1);
            tracing::warn!("{}", wire::chain(&e));
        }
    }
}

fn run(stream: Stream, peer: &str, disk: &Disk, served: &AtomicBool) -> Result<End, ConnectionError> {
    let io = |during| move |source| ConnectionError::Io { peer: peer.to_owned(), during, source };
    stream.set_read_timeout(Some(HANDSHAKE_READ_TIMEOUT)).map_err(io("setting the handshake time limit"))?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, stream.try_clone().map_err(io("cloning the socket"))?);
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let export = Export { name: disk.name().to_owned(), size: disk.size(), block_sizes: disk.block_sizes() };
    if negotiate(&mut reader, &mut writer, &export, peer)? == Negotiated::Aborted {
        return Ok(End::Aborted);
    }
    reader.get_ref().set_read_timeout(None).map_err(io("clearing the handshake time limit"))?;
    transmission::serve(&mut reader, &mut writer, disk, peer, served).map(End::Transmission)
}
