//! Errors of the wire layer.

use std::path::PathBuf;

use crate::protocol::ErrorKind;

/// Why bytes from a peer are not a valid preamble, frame or message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The first bytes are not "JTSN".
    #[error("bad magic {found:02x?}: the peer does not speak the Jettison protocol")]
    BadMagic {
        /// The four bytes received.
        found: [u8; 4],
    },
    /// The server's preamble status is not one this version defines.
    #[error("unknown preamble status {0}")]
    UnknownStatus(u16),
    /// A frame header announces more than the protocol allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes", max = crate::protocol::MAX_FRAME)]
    FrameTooLarge {
        /// The announced length.
        len: u64,
    },
    /// The body is not a valid bincode message (truncated, unknown variant,
    /// a length past the limit).
    #[error("malformed message")]
    Bincode(#[source] bincode::error::DecodeError),
    /// A field decoded but its value breaks its type's rule (a checked
    /// name, a MAC); the text names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    /// The body decoded but bytes were left over.
    #[error("{extra} unexpected bytes after the message")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// A field breaks one of the protocol's limits.
    #[error("message out of limits: {0}")]
    Limit(&'static str),
}

/// Why talking to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: is the desktop awake and its daemon running?")]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed (or timed out).
    #[error("connection to {peer} failed")]
    Io {
        /// The peer.
        peer: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection.
    #[error("{peer} closed the connection")]
    Closed {
        /// The peer.
        peer: String,
    },
    /// The peer sent bytes that do not decode.
    #[error("protocol violation from {peer}")]
    Decode {
        /// The peer.
        peer: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The peers speak different versions.
    #[error("{peer} speaks protocol version {theirs}, this build speaks {ours}: upgrade one side")]
    VersionRefused {
        /// The peer.
        peer: String,
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A Noise message did not decrypt: the peer does not know this host's
    /// key, or the stream was tampered with.
    #[error("authentication failed: the peer does not accept this host's key (enroll it there: `jettison pair` prints it, `jettison enroll NAME KEY` on the peer adds it) or the stream was altered")]
    AuthFailed,
    /// The peer proved a key that is not enrolled here.
    #[error("{peer} holds key {key}, which is not enrolled here: if that host is one of ours, run `jettison enroll ITS-NAME {key}` here (and `systemctl reload` the daemon)")]
    UnknownPeer {
        /// The peer's address.
        peer: String,
        /// The key it proved.
        key: crate::key::PublicKey,
    },
    /// The peer is enrolled, but under another name than the one expected.
    #[error("{peer} is enrolled here as {found}, not {expected}: check the address configured for {expected}")]
    WrongPeer {
        /// The peer's address.
        peer: String,
        /// The name expected at that address.
        expected: identifiers::HostName,
        /// The name its key is enrolled under.
        found: identifiers::HostName,
    },
    /// The Noise library refused an operation.
    #[error("encryption error")]
    Crypto(#[source] snow::Error),
    /// The server does not serve the export asked for.
    #[error("{peer} refused export {export:?}: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// The export asked for.
        export: String,
        /// The server's reason.
        reason: String,
    },
    /// The server answered a request with an error.
    #[error("{peer} failed request {id}: {kind}: {detail}")]
    Remote {
        /// The peer.
        peer: String,
        /// The request's id.
        id: u64,
        /// The kind of failure.
        kind: ErrorKind,
        /// The server's detail text.
        detail: String,
    },
    /// The server answered another request than the one awaited.
    #[error("{peer} answered request {got} while {want} was awaited")]
    OutOfOrder {
        /// The peer.
        peer: String,
        /// The id awaited.
        want: u64,
        /// The id received.
        got: u64,
    },
    /// The server's data does not cover the ranges asked for.
    #[error("{peer} answered request {id} with data that does not match the ranges asked for")]
    Mismatch {
        /// The peer.
        peer: String,
        /// The request's id.
        id: u64,
    },
    /// The fetch was given up because its VM is being ended (see
    /// [`Cancel`](crate::Cancel)).
    #[error("stopped waiting for {addr} (export {export:?}): the VM is being ended")]
    Cancelled {
        /// The address the fetch was waiting for.
        addr: String,
        /// The export asked for.
        export: String,
    },
    /// The key file cannot be read.
    #[error("host key file {}: make this host's key with `jettison pair --key {}`", path.display(), path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A new key would replace an existing one.
    #[error("host key file {} already exists: this host has its key (its public half is enrolled on its peers); to rotate it, move it aside first and enroll the new public key on every peer", path.display())]
    KeyExists {
        /// The key file.
        path: PathBuf,
    },
    /// A new key file cannot be written.
    #[error("cannot write key file {}: is the directory writable (run as root for /etc/jettison)?", path.display())]
    KeyWrite {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file may be read by others.
    #[error("key file {} has mode {mode:o}: others may read it; run `chmod 600 {}`", path.display(), path.display())]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is not a key.
    #[error("{origin} does not hold a key (64 hex digits, as `jettison pair` prints)")]
    BadKey {
        /// Where the text came from.
        origin: String,
    },
    /// The peers directory or one of its files cannot be used.
    #[error("peers {}: {why} (the directory holds one NAME.pub per enrolled peer; `jettison enroll` writes them)", path.display())]
    PeersFile {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// One key is enrolled under two names.
    #[error("{}: key {key} is enrolled as {first} and as {second}: a key belongs to one host; remove one", path.display())]
    KeyTwice {
        /// The file that enrolls it a second time.
        path: PathBuf,
        /// The key, in hex.
        key: String,
        /// The name it was enrolled under first.
        first: identifiers::HostName,
        /// The other name.
        second: identifiers::HostName,
    },
}

/// Formats an error and its whole chain of causes on one line:
/// `outer: cause: root cause`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
