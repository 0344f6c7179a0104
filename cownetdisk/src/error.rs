//! Errors of cownetdisk: bringing a disk up or serving it
//! ([`CownetdiskError`]), one client connection ending badly
//! ([`ConnectionError`]), and NBD bytes that do not decode
//! ([`ProtocolError`]).

use std::path::PathBuf;

use crate::protocol::Command;

/// Why cownetdisk could not bring up, serve or flush a disk.
#[derive(Debug, thiserror::Error)]
pub enum CownetdiskError {
    /// diskserv could not be reached or refused the VM.
    #[error("cownetdisk: cannot reach diskserv for VM {vm}")]
    Remote {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: wire::WireError,
    },
    /// The block size cannot be a slice unit.
    #[error(
        "cownetdisk: block size {block_size} of VM {vm} is not a power of two from {} to {}",
        crate::disk::MIN_BLOCK_SIZE,
        crate::disk::MAX_BLOCK_SIZE
    )]
    BlockSize {
        /// The VM.
        vm: String,
        /// The block size asked for.
        block_size: u32,
    },
    /// The slices could not be opened.
    #[error("cownetdisk: cannot open the slices of VM {vm} in {}", dir.display())]
    Slices {
        /// The VM.
        vm: String,
        /// The slice directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: slice_store::StoreError,
    },
    /// Reading, writing or flushing the disk failed.
    #[error("cownetdisk: {operation} on the disk of VM {vm} at {offset:#x} failed")]
    Io {
        /// The VM.
        vm: String,
        /// What was being done: "read", "write", "write zeroes", "flush".
        operation: &'static str,
        /// The byte offset (0 for a flush).
        offset: u64,
        /// The cause.
        #[source]
        source: slice_store::StoreError,
    },
    /// The stats file could not be written.
    #[error("cownetdisk: cannot write the stats file {}", path.display())]
    WriteStats {
        /// The stats file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Neither a Unix socket nor a TCP address was given.
    #[error("cownetdisk: nowhere to listen: give a Unix socket path, a TCP address, or both")]
    NoListener,
    /// The TCP address could not be bound.
    #[error("cownetdisk: cannot listen on {addr}: is another daemon using the port?")]
    ListenTcp {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Unix socket could not be created.
    #[error("cownetdisk: cannot create the socket {}: does its directory exist and is it writable?", path.display())]
    ListenUnix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The accept loop's poll failed.
    #[error("cownetdisk: the accept loop failed")]
    Poll(#[source] std::io::Error),
}

/// Why a client's connection ended other than by the client's own choice.
/// The server logs it and goes on serving the others.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed or the client hung up in the middle of a message.
    #[error("{peer}: connection lost while {during}")]
    Io {
        /// The client.
        peer: String,
        /// What the server was doing.
        during: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client sent bytes that break the protocol's framing; the stream
    /// cannot be resynchronised, so the connection is closed.
    #[error("{peer}: closing the connection: the client broke the NBD protocol; the stream cannot be resynchronised")]
    Protocol {
        /// The client.
        peer: String,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// The client did not offer fixed newstyle negotiation.
    #[error("{peer}: the client does not speak fixed newstyle negotiation (client flags {flags:#x})")]
    NotFixedNewstyle {
        /// The client.
        peer: String,
        /// The flags it sent.
        flags: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named an export this server does not have; the
    /// protocol has no error reply for it, so the server hangs up.
    #[error("{peer}: asked for export {name:?}, this server exports {export:?} (or the default export)")]
    UnknownExport {
        /// The client.
        peer: String,
        /// The name asked for.
        name: String,
        /// The export served.
        export: String,
    },
    /// The client sent more options than a real client needs.
    #[error("{peer}: more than {limit} options in one handshake: closing as a denial of service")]
    TooManyOptions {
        /// The client.
        peer: String,
        /// The limit.
        limit: usize,
    },
    /// A write's payload is larger than the advertised maximum; the server
    /// answered `NBD_EINVAL` and closes rather than read or skip it.
    #[error("{peer}: write of {length} bytes, the maximum is {max}: answered EINVAL, closing as its payload cannot be skipped safely")]
    WriteTooLarge {
        /// The client.
        peer: String,
        /// The length asked for.
        length: u32,
        /// The advertised maximum.
        max: u32,
    },
}

/// NBD bytes that do not decode: a bad magic, an unknown value, a wrong
/// length. Each names the field concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A magic number is wrong: the peer does not speak NBD, or the stream
    /// lost its framing.
    #[error("bad {what} magic {found:#x}")]
    BadMagic {
        /// Which magic.
        what: &'static str,
        /// The value found.
        found: u64,
    },
    /// The server's handshake flags hold bits this build does not know.
    #[error("unknown handshake flags {0:#06x}")]
    UnknownHandshakeFlags(u16),
    /// The client's flags hold bits this server did not offer.
    #[error("unknown client flags {0:#010x}")]
    UnknownClientFlags(u32),
    /// A request names a command this server does not implement.
    #[error("unknown command {0}")]
    UnknownCommand(u16),
    /// A request carries flags not valid for its command.
    #[error("command flags {flags:#06x} are not valid for {command}")]
    BadCommandFlags {
        /// The command.
        command: Command,
        /// The flags sent.
        flags: u16,
    },
    /// An option reply type this build does not know.
    #[error("unknown option reply type {0:#x}")]
    UnknownReplyType(u32),
    /// A reply's error value is not one the protocol defines.
    #[error("unknown error value {0}")]
    UnknownErrorCode(u32),
    /// An information type this build does not decode.
    #[error("unknown information type {0}")]
    UnknownInfo(u16),
    /// A message or field has the wrong length.
    #[error("{what}: {len} bytes, {expected}")]
    BadLength {
        /// The message or field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// An export name is not a valid NBD string.
    #[error("export name: {0}")]
    BadName(&'static str),
    /// Block size constraints break the protocol's rules.
    #[error("block sizes {minimum}/{preferred}/{maximum}: {reason}")]
    BadBlockSizes {
        /// Minimum block size.
        minimum: u32,
        /// Preferred block size.
        preferred: u32,
        /// Maximum block size.
        maximum: u32,
        /// The rule broken.
        reason: &'static str,
    },
}
