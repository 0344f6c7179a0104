//! The local event stream: one JSON line per connection and request, sent to
//! every process connected to the daemon's Unix socket.
//!
//! The desktop's power policy listens here to learn when the desktop is
//! needed (it must not sleep while requests arrive, and it measures their
//! inter-arrival times). A listener that does not read is dropped rather
//! than allowed to slow the serving of pages.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A peer authenticated and was welcomed.
    Connected,
    /// A read request was answered.
    Request,
    /// A bad request was answered with an error.
    Rejected,
    /// A peer's connection ended.
    Disconnected,
}

/// One line of the event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// What happened.
    pub kind: EventKind,
    /// "memory" or "disk".
    pub service: String,
    /// The export (VM) name.
    pub export: String,
    /// The peer's address.
    pub peer: String,
    /// Ranges in the request (0 for connection events).
    pub ranges: u32,
    /// Bytes asked for (0 for connection events).
    pub bytes: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl RequestEvent {
    /// An event stamped now.
    pub fn now(kind: EventKind, service: &str, export: &str, peer: &str, ranges: u32, bytes: u64) -> Self {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        RequestEvent {
            kind,
            service: service.to_owned(),
            export: export.to_owned(),
            peer: peer.to_owned(),
            ranges,
            bytes,
            unix_ms,
        }
    }

    /// The event as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a RequestEvent always serialises");
        line.push(b'\n');
        line
    }
}

/// Connects to a daemon's event socket and yields its events as they come.
///
/// # Errors
/// The connect error; each item's error is a read failure or a line that is
/// not an event.
pub fn subscribe(path: &Path) -> std::io::Result<impl Iterator<Item = std::io::Result<RequestEvent>>> {
    let stream = UnixStream::connect(path)?;
    Ok(BufReader::new(stream).lines().map(|line| {
        let line = line?;
        serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }))
}
