//! The NBD protocol as cownetdisk speaks it: the fixed newstyle handshake
//! and the transmission phase with simple replies, from the NBD project's
//! `doc/proto.md`. This module doc is the summary a peer needs; every
//! number on the wire is **big-endian** (network order), as NBD specifies.
//!
//! # Handshake
//!
//! ```mermaid
//! sequenceDiagram
//!     participant C as client (QEMU, qemu-io, nbdcopy)
//!     participant S as cownetdisk
//!     S->>C: "NBDMAGIC" u64, "IHAVEOPT" u64, handshake flags u16 (FIXED_NEWSTYLE | NO_ZEROES)
//!     C->>S: client flags u32 (FIXED_NEWSTYLE, optionally NO_ZEROES)
//!     Note over C,S: an unknown client flag, or no FIXED_NEWSTYLE: the server closes
//!     loop options, one at a time
//!         C->>S: "IHAVEOPT" u64, option u32, data length u32, data
//!         S->>C: replies: 0x3e889045565a9 u64, option u32, reply type u32, data length u32, data
//!         Note over C,S: zero or more INFO / SERVER replies, then ACK or an error reply
//!     end
//!     alt NBD_OPT_GO answered with NBD_REP_ACK
//!         Note over C,S: transmission
//!     else NBD_OPT_EXPORT_NAME of the export
//!         S->>C: size u64, transmission flags u16, 124 zero bytes unless NO_ZEROES was agreed
//!         Note over C,S: transmission
//!     else NBD_OPT_ABORT
//!         S->>C: NBD_REP_ACK, then both close
//!     end
//! ```
//!
//! What this server answers:
//!
//! | option | answer |
//! |---|---|
//! | `NBD_OPT_EXPORT_NAME` (1) | the export's size and flags; an unknown name ends the connection (this option cannot carry an error) |
//! | `NBD_OPT_ABORT` (2) | `NBD_REP_ACK`, then close |
//! | `NBD_OPT_LIST` (3) | one `NBD_REP_SERVER` (the VM's name), `NBD_REP_ACK`; `NBD_REP_ERR_INVALID` if it carries data |
//! | `NBD_OPT_INFO` (6), `NBD_OPT_GO` (7) | `NBD_REP_INFO` with `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE`, then `NBD_REP_ACK`; `NBD_REP_ERR_UNKNOWN` for another name; GO then enters transmission |
//! | anything else, including `NBD_OPT_STRUCTURED_REPLY` (8), `NBD_OPT_STARTTLS` (5), meta contexts, extended headers | `NBD_REP_ERR_UNSUP`: simple replies only, no TLS |
//!
//! The export is the VM's name; the empty name (NBD's "default export")
//! means the same export, so that `nbd+unix:///?socket=…` works.
//!
//! `NBD_INFO_EXPORT` is `type u16 = 0, size u64, transmission flags u16`;
//! `NBD_INFO_BLOCK_SIZE` is `type u16 = 3, minimum u32, preferred u32,
//! maximum u32`. This server sends minimum 1 (any alignment works: partial
//! blocks are read-modify-written), preferred = its block size (aligned
//! whole blocks are written without fetching anything), maximum =
//! [`MAX_PAYLOAD`].
//!
//! # Transmission
//!
//! ```mermaid
//! sequenceDiagram
//!     participant C as client
//!     participant S as cownetdisk
//!     loop requests, possibly pipelined
//!         C->>S: 0x25609513 u32, command flags u16, type u16, cookie u64, offset u64, length u32 [+ length bytes for WRITE]
//!         S->>C: 0x67446698 u32, error u32, cookie u64 [+ length bytes for a READ whose error is 0]
//!     end
//!     C->>S: NBD_CMD_DISC (no reply), then the server closes
//! ```
//!
//! Transmission flags sent ([`TRANSMISSION_FLAGS`]): `HAS_FLAGS`,
//! `SEND_FLUSH`, `SEND_FUA`, `SEND_TRIM`, `SEND_WRITE_ZEROES` and
//! `CAN_MULTI_CONN`: every connection reads and writes the same slices, and
//! a flush makes every write already answered on any connection durable.
//!
//! | command | flags accepted | errors |
//! |---|---|---|
//! | `READ` (0) | FUA (ignored) | `EINVAL`: past the end, or longer than [`MAX_PAYLOAD`]; `EIO`: the slices or diskserv failed |
//! | `WRITE` (1) | FUA (flush before replying) | `ENOSPC`: past the end; `EINVAL`: longer than [`MAX_PAYLOAD`], and the server then closes (it will not read a payload that large); `EIO` |
//! | `DISC` (2) | FUA (ignored) | none: no reply, the server closes |
//! | `FLUSH` (3) | FUA (ignored) | `EINVAL` if offset or length is not zero; `EIO` |
//! | `TRIM` (4) | FUA (ignored) | `EINVAL` past the end; otherwise success, data unchanged (a hint) |
//! | `WRITE_ZEROES` (6) | FUA, NO_HOLE | `ENOSPC` past the end; `EINVAL` longer than [`MAX_PAYLOAD`]; `EIO` |
//! | any other | | `EINVAL`, and the connection stays up (no payload is assumed) |
//!
//! A flag not listed for a command gets `EINVAL` (a `WRITE`'s payload is
//! read first, so the stream stays in step). A request whose magic is
//! wrong ends its connection: with no magic to trust, the stream cannot be
//! resynchronised. Other connections are not affected.
//!
//! # Version rule
//!
//! NBD has no version number. The server's handshake flags and the client's
//! flags are the negotiation: a client flag the server did not offer ends
//! the connection (the spec says the server MUST drop it). Every later
//! feature is an option the server may decline with `NBD_REP_ERR_UNSUP`,
//! which is how this server declines structured replies.
//!
//! # Limits
//!
//! | what | limit |
//! |---|---|
//! | export name | [`MAX_NAME`] bytes of UTF-8, no NUL |
//! | option data | [`MAX_OPTION_DATA`] bytes; larger data is read and dropped in pieces and answered `NBD_REP_ERR_TOO_BIG` |
//! | READ, WRITE, WRITE_ZEROES length | [`MAX_PAYLOAD`] bytes (32 MiB, the spec's interoperable maximum) |
//! | TRIM length | the export size |

use crate::error::ProtocolError;

/// "NBDMAGIC": the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": after NBD_MAGIC in the greeting, and before every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: the server speaks fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can leave out the 124 zero bytes.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle negotiation.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: leave out the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` (and `NO_HOLE`) is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: connections share one cache; a flush on one covers all.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// The transmission flags cownetdisk sends for its export.
pub const TRANSMISSION_FLAGS: u16 =
    FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_CAN_MULTI_CONN;

/// Option: choose the export and start transmission (cannot fail cleanly).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the session.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade to TLS (declined here).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and start transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies (declined here).
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Information type: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command flag: reply only once the command's writes are durable.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag of `WRITE_ZEROES`: do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Longest export name, in bytes.
pub const MAX_NAME: usize = 4096;
/// Most option data the server reads; larger options are drained and refused.
pub const MAX_OPTION_DATA: u32 = 16 * 1024;
/// Longest READ, WRITE or WRITE_ZEROES: the advertised maximum block size.
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Length of the zero padding after an `NBD_OPT_EXPORT_NAME` answer.
pub const EXPORT_NAME_PADDING: usize = 124;

/// Bytes of the server's greeting: NBD_MAGIC, IHAVEOPT, handshake flags.
pub const GREETING_LEN: usize = 2 * size_of::<u64>() + size_of::<u16>();
/// Bytes of the client's flags.
pub const CLIENT_FLAGS_LEN: usize = size_of::<u32>();
/// Bytes of an option header: IHAVEOPT, option, data length.
pub const OPTION_HEADER_LEN: usize = size_of::<u64>() + 2 * size_of::<u32>();
/// Bytes of an option reply header: magic, option, reply type, data length.
pub const OPTION_REPLY_HEADER_LEN: usize = size_of::<u64>() + 3 * size_of::<u32>();
/// Bytes of the `NBD_OPT_EXPORT_NAME` answer before any padding.
pub const EXPORT_NAME_REPLY_LEN: usize = size_of::<u64>() + size_of::<u16>();
/// Bytes of a request header: magic, flags, type, cookie, offset, length.
pub const REQUEST_LEN: usize = size_of::<u32>() + 2 * size_of::<u16>() + 2 * size_of::<u64>() + size_of::<u32>();
/// Bytes of a simple reply header: magic, error, cookie.
pub const SIMPLE_REPLY_LEN: usize = 2 * size_of::<u32>() + size_of::<u64>();
const _: () = assert!(GREETING_LEN == 18);
const _: () = assert!(CLIENT_FLAGS_LEN == 4);
const _: () = assert!(OPTION_HEADER_LEN == 16);
const _: () = assert!(OPTION_REPLY_HEADER_LEN == 20);
const _: () = assert!(EXPORT_NAME_REPLY_LEN == 10);
const _: () = assert!(REQUEST_LEN == 28);
const _: () = assert!(SIMPLE_REPLY_LEN == 16);
const _: () = assert!(MAX_OPTION_DATA as usize >= size_of::<u32>() + MAX_NAME + size_of::<u16>());

/// Reads big-endian fields off the front of a message, failing on a short
/// one and, at [`Fields::finish`], on a long one.
struct Fields<'a> {
    what: &'static str,
    len: usize,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Fields { what, len: bytes.len(), rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError::BadLength { what: self.what, len: self.len, expected: "too short" });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("take returned 2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("take returned 4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("take returned 8 bytes")))
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::BadLength { what: self.what, len: self.len, expected: "trailing bytes" })
        }
    }
}

/// Checks `bytes` as an NBD string (an export name) and returns it.
fn name_from(bytes: &[u8]) -> Result<String, ProtocolError> {
    if bytes.len() > MAX_NAME {
        return Err(ProtocolError::BadName("longer than 4096 bytes"));
    }
    let name = std::str::from_utf8(bytes).map_err(|_| ProtocolError::BadName("not UTF-8"))?;
    if name.contains('\0') {
        return Err(ProtocolError::BadName("contains NUL"));
    }
    Ok(name.to_owned())
}

/// The server's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Handshake flags.
    pub flags: u16,
}

impl Greeting {
    /// The greeting cownetdisk sends: fixed newstyle, zeroes optional.
    pub fn server() -> Self {
        Greeting { flags: FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES }
    }

    /// The 18 bytes on the wire.
    pub fn encode(&self) -> [u8; GREETING_LEN] {
        let mut out = [0; GREETING_LEN];
        out[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
        out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[16..18].copy_from_slice(&self.flags.to_be_bytes());
        out
    }

    /// Decodes a greeting.
    ///
    /// # Errors
    /// [`ProtocolError::BadMagic`] when the peer is no newstyle NBD server;
    /// [`ProtocolError::UnknownHandshakeFlags`] for flags this build does
    /// not know.
    pub fn decode(bytes: &[u8; GREETING_LEN]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("greeting", bytes);
        let magic = f.u64()?;
        if magic != NBD_MAGIC {
            return Err(ProtocolError::BadMagic { what: "greeting", found: magic });
        }
        let magic = f.u64()?;
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadMagic { what: "newstyle greeting", found: magic });
        }
        let flags = f.u16()?;
        if flags & !(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
            return Err(ProtocolError::UnknownHandshakeFlags(flags));
        }
        f.finish()?;
        Ok(Greeting { flags })
    }
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle negotiation.
    pub fixed_newstyle: bool,
    /// The 124 zero bytes after `NBD_OPT_EXPORT_NAME` are left out.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// Flags with the two defined bits as given.
    pub fn new(fixed_newstyle: bool, no_zeroes: bool) -> Self {
        ClientFlags { fixed_newstyle, no_zeroes }
    }

    /// The 4 bytes on the wire.
    pub fn encode(&self) -> [u8; CLIENT_FLAGS_LEN] {
        let mut bits = 0;
        if self.fixed_newstyle {
            bits |= FLAG_C_FIXED_NEWSTYLE;
        }
        if self.no_zeroes {
            bits |= FLAG_C_NO_ZEROES;
        }
        bits.to_be_bytes()
    }

    /// Decodes the client's flags.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownClientFlags`] for any bit the greeting did
    /// not offer; the server must then drop the connection.
    pub fn decode(bytes: &[u8; CLIENT_FLAGS_LEN]) -> Result<Self, ProtocolError> {
        let bits = u32::from_be_bytes(*bytes);
        if bits & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(ProtocolError::UnknownClientFlags(bits));
        }
        Ok(ClientFlags { fixed_newstyle: bits & FLAG_C_FIXED_NEWSTYLE != 0, no_zeroes: bits & FLAG_C_NO_ZEROES != 0 })
    }

    /// The raw bits, for logs.
    pub fn bits(&self) -> u32 {
        u32::from_be_bytes(self.encode())
    }
}

/// The fixed part of an option: which option and how much data follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option.
    pub option: u32,
    /// Bytes of data that follow.
    pub len: u32,
}

impl OptionHeader {
    /// A header announcing `len` bytes of data for `option`.
    pub fn new(option: u32, len: u32) -> Self {
        OptionHeader { option, len }
    }

    /// The 16 bytes on the wire.
    pub fn encode(&self) -> [u8; OPTION_HEADER_LEN] {
        let mut out = [0; OPTION_HEADER_LEN];
        out[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..16].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Decodes an option header.
    ///
    /// # Errors
    /// [`ProtocolError::BadMagic`] when it does not start with IHAVEOPT.
    pub fn decode(bytes: &[u8; OPTION_HEADER_LEN]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("option header", bytes);
        let magic = f.u64()?;
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadMagic { what: "option", found: magic });
        }
        let header = OptionHeader { option: f.u32()?, len: f.u32()? };
        f.finish()?;
        Ok(header)
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export and the
/// information wanted about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    /// The export's name ("" for the default export).
    pub name: String,
    /// Information types asked for (`NBD_INFO_*`); unknown ones are ignored.
    pub requests: Vec<u16>,
}

/// An option from the client, header and data together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`: this export, and straight to transmission.
    ExportName(String),
    /// `NBD_OPT_ABORT`: end the session.
    Abort,
    /// `NBD_OPT_LIST`: which exports are there?
    List,
    /// `NBD_OPT_INFO`: describe an export.
    Info(ExportQuery),
    /// `NBD_OPT_GO`: describe an export and start transmission.
    Go(ExportQuery),
    /// Any other option; its data is not kept. Answered with
    /// `NBD_REP_ERR_UNSUP`.
    Unsupported(u32),
}

impl ClientOption {
    /// The option's code.
    pub fn code(&self) -> u32 {
        match self {
            ClientOption::ExportName(_) => OPT_EXPORT_NAME,
            ClientOption::Abort => OPT_ABORT,
            ClientOption::List => OPT_LIST,
            ClientOption::Info(_) => OPT_INFO,
            ClientOption::Go(_) => OPT_GO,
            ClientOption::Unsupported(code) => *code,
        }
    }

    /// Header and data as the client sends them.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        match self {
            ClientOption::ExportName(name) => data.extend_from_slice(name.as_bytes()),
            ClientOption::Info(query) | ClientOption::Go(query) => {
                data.extend_from_slice(&(query.name.len() as u32).to_be_bytes());
                data.extend_from_slice(query.name.as_bytes());
                data.extend_from_slice(&(query.requests.len() as u16).to_be_bytes());
                for request in &query.requests {
                    data.extend_from_slice(&request.to_be_bytes());
                }
            }
            ClientOption::Abort | ClientOption::List | ClientOption::Unsupported(_) => {}
        }
        let mut out = OptionHeader::new(self.code(), data.len() as u32).encode().to_vec();
        out.extend_from_slice(&data);
        out
    }

    /// Decodes the option announced by `header` from its `data`.
    ///
    /// # Errors
    /// [`ProtocolError::BadLength`] when `data` does not have the length
    /// the header announced or its fields do not add up, and
    /// [`ProtocolError::BadName`] for a bad export name; the server answers
    /// both with `NBD_REP_ERR_INVALID`.
    pub fn decode(header: &OptionHeader, data: &[u8]) -> Result<Self, ProtocolError> {
        if data.len() != header.len as usize {
            return Err(ProtocolError::BadLength {
                what: "option data",
                len: data.len(),
                expected: "the length in its header",
            });
        }
        match header.option {
            OPT_EXPORT_NAME => Ok(ClientOption::ExportName(name_from(data)?)),
            // The spec asks servers to ignore data sent with an abort.
            OPT_ABORT => Ok(ClientOption::Abort),
            OPT_LIST if data.is_empty() => Ok(ClientOption::List),
            OPT_LIST => Err(ProtocolError::BadLength { what: "NBD_OPT_LIST data", len: data.len(), expected: "none" }),
            OPT_INFO => Ok(ClientOption::Info(decode_query(data)?)),
            OPT_GO => Ok(ClientOption::Go(decode_query(data)?)),
            other => Ok(ClientOption::Unsupported(other)),
        }
    }
}

/// Decodes the data of `NBD_OPT_INFO` or `NBD_OPT_GO`.
fn decode_query(data: &[u8]) -> Result<ExportQuery, ProtocolError> {
    let mut f = Fields::new("NBD_OPT_INFO/GO data", data);
    let name_len = f.u32()? as usize;
    // The name must leave room for the request count.
    if name_len > f.remaining().saturating_sub(size_of::<u16>()) {
        return Err(ProtocolError::BadLength {
            what: "NBD_OPT_INFO/GO name",
            len: name_len,
            expected: "at most the option data length - 6",
        });
    }
    let name = name_from(f.take(name_len)?)?;
    let count = f.u16()?;
    let requests = (0..count).map(|_| f.u16()).collect::<Result<Vec<u16>, _>>()?;
    f.finish()?;
    Ok(ExportQuery { name, requests })
}

/// The type of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyType {
    /// `NBD_REP_ACK`: the option succeeded; the last reply to it.
    Ack,
    /// `NBD_REP_SERVER`: an export, in answer to `NBD_OPT_LIST`.
    Server,
    /// `NBD_REP_INFO`: one piece of information about an export.
    Info,
    /// `NBD_REP_ERR_UNSUP`: the option is not supported.
    ErrUnsup,
    /// `NBD_REP_ERR_INVALID`: the option's data is invalid.
    ErrInvalid,
    /// `NBD_REP_ERR_UNKNOWN`: no such export.
    ErrUnknown,
    /// `NBD_REP_ERR_TOO_BIG`: the option's data is too large.
    ErrTooBig,
}

/// Bit 31: the reply type is an error.
const REP_ERROR: u32 = 1 << 31;

impl ReplyType {
    /// The reply type's code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ReplyType::Ack => 1,
            ReplyType::Server => 2,
            ReplyType::Info => 3,
            ReplyType::ErrUnsup => REP_ERROR | 1,
            ReplyType::ErrInvalid => REP_ERROR | 3,
            ReplyType::ErrUnknown => REP_ERROR | 6,
            ReplyType::ErrTooBig => REP_ERROR | 9,
        }
    }

    /// The reply type of `code`.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownReplyType`] for a code this build does not use.
    pub fn from_code(code: u32) -> Result<Self, ProtocolError> {
        [
            ReplyType::Ack,
            ReplyType::Server,
            ReplyType::Info,
            ReplyType::ErrUnsup,
            ReplyType::ErrInvalid,
            ReplyType::ErrUnknown,
            ReplyType::ErrTooBig,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
        .ok_or(ProtocolError::UnknownReplyType(code))
    }

    /// Whether this reply reports an error.
    pub fn is_error(self) -> bool {
        self.code() & REP_ERROR != 0
    }
}

/// The fixed part of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option answered.
    pub option: u32,
    /// The reply type.
    pub kind: ReplyType,
    /// Bytes of data that follow.
    pub len: u32,
}

impl OptionReplyHeader {
    /// Decodes a reply header (the client's side; used by tests and tools).
    ///
    /// # Errors
    /// [`ProtocolError::BadMagic`], [`ProtocolError::UnknownReplyType`].
    pub fn decode(bytes: &[u8; OPTION_REPLY_HEADER_LEN]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("option reply header", bytes);
        let magic = f.u64()?;
        if magic != OPTION_REPLY_MAGIC {
            return Err(ProtocolError::BadMagic { what: "option reply", found: magic });
        }
        let header = OptionReplyHeader { option: f.u32()?, kind: ReplyType::from_code(f.u32()?)?, len: f.u32()? };
        f.finish()?;
        Ok(header)
    }
}

/// One reply to an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionReply {
    /// The option answered.
    pub option: u32,
    /// The reply type.
    pub kind: ReplyType,
    /// The reply's data (a name, an information item, an error message).
    pub data: Vec<u8>,
}

impl OptionReply {
    /// `NBD_REP_ACK` to `option`.
    pub fn ack(option: u32) -> Self {
        OptionReply { option, kind: ReplyType::Ack, data: Vec::new() }
    }

    /// `NBD_REP_SERVER` naming export `name`, in answer to `NBD_OPT_LIST`.
    pub fn server(name: &str) -> Self {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        OptionReply { option: OPT_LIST, kind: ReplyType::Server, data }
    }

    /// `NBD_REP_INFO` carrying `info`, in answer to `option`.
    pub fn info(option: u32, info: &Info) -> Self {
        OptionReply { option, kind: ReplyType::Info, data: info.encode() }
    }

    /// An error reply of type `kind` to `option`, with a message for people.
    pub fn error(option: u32, kind: ReplyType, message: &str) -> Self {
        OptionReply { option, kind, data: message.as_bytes().to_vec() }
    }

    /// Header and data as the server sends them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OPTION_REPLY_HEADER_LEN + self.data.len());
        out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.option.to_be_bytes());
        out.extend_from_slice(&self.kind.code().to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Puts together the reply announced by `header` from its `data`.
    ///
    /// # Errors
    /// [`ProtocolError::BadLength`] when `data` does not have the length
    /// the header announced.
    pub fn decode(header: &OptionReplyHeader, data: &[u8]) -> Result<Self, ProtocolError> {
        if data.len() != header.len as usize {
            return Err(ProtocolError::BadLength {
                what: "option reply data",
                len: data.len(),
                expected: "the length in its header",
            });
        }
        Ok(OptionReply { option: header.option, kind: header.kind, data: data.to_vec() })
    }
}

/// Block size constraints, as `NBD_INFO_BLOCK_SIZE` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Smallest length and alignment a request may use.
    pub minimum: u32,
    /// Length and alignment that avoid a read-modify-write.
    pub preferred: u32,
    /// Largest length of one request.
    pub maximum: u32,
}

impl BlockSizes {
    /// Checked constraints, by the spec's rules: the minimum a power of two
    /// up to 64 KiB; the preferred a power of two at least the minimum and
    /// 512; the maximum a multiple of the minimum (or `u32::MAX`) and at
    /// least the preferred.
    ///
    /// # Errors
    /// [`ProtocolError::BadBlockSizes`] naming the rule broken.
    pub fn new(minimum: u32, preferred: u32, maximum: u32) -> Result<Self, ProtocolError> {
        let bad = |reason| Err(ProtocolError::BadBlockSizes { minimum, preferred, maximum, reason });
        if !minimum.is_power_of_two() || minimum > 1 << 16 {
            return bad("the minimum must be a power of two up to 65536");
        }
        if !preferred.is_power_of_two() || preferred < minimum.max(512) {
            return bad("the preferred size must be a power of two, at least the minimum and 512");
        }
        if maximum != u32::MAX && maximum % minimum != 0 {
            return bad("the maximum must be a multiple of the minimum");
        }
        if maximum < preferred {
            return bad("the maximum must be at least the preferred size");
        }
        Ok(BlockSizes { minimum, preferred, maximum })
    }
}

/// One piece of information about an export (`NBD_REP_INFO` data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Size in bytes.
        size: u64,
        /// Transmission flags.
        flags: u16,
    },
    /// `NBD_INFO_BLOCK_SIZE`.
    BlockSize(BlockSizes),
}

impl Info {
    /// Type and payload, as the data of an `NBD_REP_INFO`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Info::Export { size, flags } => {
                out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
            }
            Info::BlockSize(sizes) => {
                out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                for value in [sizes.minimum, sizes.preferred, sizes.maximum] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        out
    }

    /// Decodes the data of an `NBD_REP_INFO`.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownInfo`] for a type other than export and
    /// block size; [`ProtocolError::BadLength`] for a payload of the wrong
    /// length; [`ProtocolError::BadBlockSizes`] for constraints that break
    /// the spec's rules.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("NBD_REP_INFO data", data);
        let info = match f.u16()? {
            INFO_EXPORT => Info::Export { size: f.u64()?, flags: f.u16()? },
            INFO_BLOCK_SIZE => Info::BlockSize(BlockSizes::new(f.u32()?, f.u32()?, f.u32()?)?),
            other => return Err(ProtocolError::UnknownInfo(other)),
        };
        f.finish()?;
        Ok(info)
    }
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size and transmission flags, then
/// 124 zero bytes unless the client set `NBD_FLAG_C_NO_ZEROES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportNameReply {
    /// Size of the export in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
}

impl ExportNameReply {
    /// The export's size and flags.
    pub fn new(size: u64, flags: u16) -> Self {
        ExportNameReply { size, flags }
    }

    /// The bytes on the wire: 10, or 134 with the padding.
    pub fn encode(&self, no_zeroes: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(EXPORT_NAME_REPLY_LEN + EXPORT_NAME_PADDING);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        if !no_zeroes {
            out.resize(EXPORT_NAME_REPLY_LEN + EXPORT_NAME_PADDING, 0);
        }
        out
    }

    /// Decodes the answer, with or without padding.
    ///
    /// # Errors
    /// [`ProtocolError::BadLength`] for any length but 10 or 134, or
    /// padding that is not zero.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("NBD_OPT_EXPORT_NAME reply", bytes);
        let reply = ExportNameReply { size: f.u64()?, flags: f.u16()? };
        if f.remaining() == EXPORT_NAME_PADDING && f.take(EXPORT_NAME_PADDING)?.iter().any(|&b| b != 0) {
            return Err(ProtocolError::BadLength {
                what: "NBD_OPT_EXPORT_NAME padding",
                len: EXPORT_NAME_PADDING,
                expected: "all zero",
            });
        }
        f.finish()?;
        Ok(reply)
    }
}

/// A transmission-phase command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`: the payload follows the request.
    Write,
    /// `NBD_CMD_DISC`: the client is leaving; no reply.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
}

impl Command {
    /// Every command this server implements.
    pub const ALL: [Command; 6] =
        [Command::Read, Command::Write, Command::Disc, Command::Flush, Command::Trim, Command::WriteZeroes];

    /// The command's type on the wire.
    pub fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disc => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::WriteZeroes => 6,
        }
    }

    /// The command of `code`.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownCommand`] for a type this server does not
    /// implement (`NBD_CMD_CACHE`, `NBD_CMD_BLOCK_STATUS`, …).
    pub fn from_code(code: u16) -> Result<Self, ProtocolError> {
        Command::ALL.into_iter().find(|c| c.code() == code).ok_or(ProtocolError::UnknownCommand(code))
    }

    /// The command flags valid with it: FUA on every command (the spec
    /// says a server advertising FUA accepts it everywhere), NO_HOLE on
    /// WRITE_ZEROES.
    pub fn allowed_flags(self) -> u16 {
        match self {
            Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
            _ => CMD_FLAG_FUA,
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Read => "NBD_CMD_READ",
            Command::Write => "NBD_CMD_WRITE",
            Command::Disc => "NBD_CMD_DISC",
            Command::Flush => "NBD_CMD_FLUSH",
            Command::Trim => "NBD_CMD_TRIM",
            Command::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
        })
    }
}

/// A request header. The command type is kept raw so that a request of an
/// unknown type can still be answered (with `NBD_EINVAL`) by its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// The command's type; see [`Request::command`].
    pub kind: u16,
    /// Chosen by the client, echoed in the reply.
    pub cookie: u64,
    /// First byte concerned.
    pub offset: u64,
    /// Bytes concerned (and, for a write, the payload's length).
    pub length: u32,
}

impl Request {
    /// A request for `command`.
    pub fn new(command: Command, flags: u16, cookie: u64, offset: u64, length: u32) -> Self {
        Request { flags, kind: command.code(), cookie, offset, length }
    }

    /// The 28 bytes on the wire (a write's payload follows separately).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0; REQUEST_LEN];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.kind.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Decodes a request header.
    ///
    /// # Errors
    /// [`ProtocolError::BadMagic`]: the stream lost its framing.
    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("request", bytes);
        let magic = f.u32()?;
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic { what: "request", found: u64::from(magic) });
        }
        let request = Request { flags: f.u16()?, kind: f.u16()?, cookie: f.u64()?, offset: f.u64()?, length: f.u32()? };
        f.finish()?;
        Ok(request)
    }

    /// The command, checked together with its flags.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownCommand`], or [`ProtocolError::BadCommandFlags`]
    /// for a flag not valid with the command.
    pub fn command(&self) -> Result<Command, ProtocolError> {
        let command = Command::from_code(self.kind)?;
        if self.flags & !command.allowed_flags() != 0 {
            return Err(ProtocolError::BadCommandFlags { command, flags: self.flags });
        }
        Ok(command)
    }

    /// Whether the FUA flag is set.
    pub fn fua(&self) -> bool {
        self.flags & CMD_FLAG_FUA != 0
    }

    /// Whether `offset + length` stays within `size` (without overflowing).
    pub fn fits(&self, size: u64) -> bool {
        self.offset.checked_add(u64::from(self.length)).is_some_and(|end| end <= size)
    }
}

/// An error value in a reply (`NBD_E*`); the numbers are Linux errno's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `NBD_EPERM`: the export is read-only.
    Perm,
    /// `NBD_EIO`: the storage failed.
    Io,
    /// `NBD_ENOMEM`.
    NoMem,
    /// `NBD_EINVAL`: a bad request.
    Inval,
    /// `NBD_ENOSPC`: a write past the end.
    NoSpc,
    /// `NBD_EOVERFLOW`.
    Overflow,
    /// `NBD_ENOTSUP`.
    NotSup,
    /// `NBD_ESHUTDOWN`: the server is shutting down.
    Shutdown,
}

impl ErrorCode {
    const ALL: [ErrorCode; 8] = [
        ErrorCode::Perm,
        ErrorCode::Io,
        ErrorCode::NoMem,
        ErrorCode::Inval,
        ErrorCode::NoSpc,
        ErrorCode::Overflow,
        ErrorCode::NotSup,
        ErrorCode::Shutdown,
    ];

    /// The value on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Perm => 1,
            ErrorCode::Io => 5,
            ErrorCode::NoMem => 12,
            ErrorCode::Inval => 22,
            ErrorCode::NoSpc => 28,
            ErrorCode::Overflow => 75,
            ErrorCode::NotSup => 95,
            ErrorCode::Shutdown => 108,
        }
    }

    /// The error of `code`.
    ///
    /// # Errors
    /// [`ProtocolError::UnknownErrorCode`] for a value NBD does not define.
    pub fn from_code(code: u32) -> Result<Self, ProtocolError> {
        ErrorCode::ALL.into_iter().find(|e| e.code() == code).ok_or(ProtocolError::UnknownErrorCode(code))
    }
}

/// A simple reply header (a successful read's data follows separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// The error, or `None` for success.
    pub error: Option<ErrorCode>,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Success of the request `cookie`.
    pub fn ok(cookie: u64) -> Self {
        SimpleReply { error: None, cookie }
    }

    /// Failure of the request `cookie`.
    pub fn error(cookie: u64, error: ErrorCode) -> Self {
        SimpleReply { error: Some(error), cookie }
    }

    /// The 16 bytes on the wire.
    pub fn encode(&self) -> [u8; SIMPLE_REPLY_LEN] {
        let mut out = [0; SIMPLE_REPLY_LEN];
        out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&self.error.map_or(0, ErrorCode::code).to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out
    }

    /// Decodes a simple reply header.
    ///
    /// # Errors
    /// [`ProtocolError::BadMagic`], [`ProtocolError::UnknownErrorCode`].
    pub fn decode(bytes: &[u8; SIMPLE_REPLY_LEN]) -> Result<Self, ProtocolError> {
        let mut f = Fields::new("simple reply", bytes);
        let magic = f.u32()?;
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(ProtocolError::BadMagic { what: "simple reply", found: u64::from(magic) });
        }
        let error = match f.u32()? {
            0 => None,
            code => Some(ErrorCode::from_code(code)?),
        };
        let reply = SimpleReply { error, cookie: f.u64()? };
        f.finish()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_option(bytes: &[u8]) -> (OptionHeader, &[u8]) {
        let header = OptionHeader::decode(bytes[..OPTION_HEADER_LEN].try_into().unwrap()).unwrap();
        (header, &bytes[OPTION_HEADER_LEN..])
    }

    fn round_trip_option(option: ClientOption) {
        let bytes = option.encode();
        let (header, data) = split_option(&bytes);
        assert_eq!(header.option, option.code());
        assert_eq!(ClientOption::decode(&header, data).unwrap(), option);
    }

    fn round_trip_reply(reply: OptionReply) {
        let bytes = reply.encode();
        let header = OptionReplyHeader::decode(bytes[..OPTION_REPLY_HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(OptionReply::decode(&header, &bytes[OPTION_REPLY_HEADER_LEN..]).unwrap(), reply);
    }

    #[test]
    fn the_greeting_round_trips_and_has_the_specified_bytes() {
        let bytes = Greeting::server().encode();
        assert_eq!(&bytes[..8], b"NBDMAGIC");
        assert_eq!(&bytes[8..16], b"IHAVEOPT");
        assert_eq!(bytes[16..], [0, 3]);
        assert_eq!(Greeting::decode(&bytes).unwrap(), Greeting::server());
    }

    #[test]
    fn a_bad_greeting_is_rejected() {
        let good = Greeting::server().encode();
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(Greeting::decode(&bad), Err(ProtocolError::BadMagic { what: "greeting", .. })));
        let mut oldstyle = good;
        oldstyle[8..16].copy_from_slice(&0x0000_4202_8186_1253_u64.to_be_bytes());
        assert!(matches!(Greeting::decode(&oldstyle), Err(ProtocolError::BadMagic { .. })));
        let mut flags = good;
        flags[17] = 0x04;
        assert_eq!(Greeting::decode(&flags), Err(ProtocolError::UnknownHandshakeFlags(4)));
    }

    #[test]
    fn client_flags_round_trip_and_unknown_bits_are_rejected() {
        for (fixed, no_zeroes) in [(false, false), (true, false), (false, true), (true, true)] {
            let flags = ClientFlags::new(fixed, no_zeroes);
            assert_eq!(ClientFlags::decode(&flags.encode()).unwrap(), flags);
        }
        assert_eq!(ClientFlags::new(true, true).bits(), 3);
        assert_eq!(ClientFlags::decode(&4u32.to_be_bytes()), Err(ProtocolError::UnknownClientFlags(4)));
        assert_eq!(ClientFlags::decode(&(1u32 << 31).to_be_bytes()), Err(ProtocolError::UnknownClientFlags(1 << 31)));
    }

    #[test]
    fn every_option_round_trips() {
        round_trip_option(ClientOption::ExportName("vm1".into()));
        round_trip_option(ClientOption::ExportName(String::new()));
        round_trip_option(ClientOption::Abort);
        round_trip_option(ClientOption::List);
        let query = ExportQuery { name: "vm1".into(), requests: vec![INFO_EXPORT, INFO_BLOCK_SIZE, 77] };
        round_trip_option(ClientOption::Info(query.clone()));
        round_trip_option(ClientOption::Go(query));
        round_trip_option(ClientOption::Go(ExportQuery { name: String::new(), requests: vec![] }));
        round_trip_option(ClientOption::Unsupported(OPT_STRUCTURED_REPLY));
        round_trip_option(ClientOption::Unsupported(0xdead));
    }

    #[test]
    fn bad_options_are_rejected() {
        let bytes = OptionHeader::new(OPT_GO, 0).encode();
        let mut bad = bytes;
        bad[7] ^= 1;
        assert!(matches!(OptionHeader::decode(&bad), Err(ProtocolError::BadMagic { what: "option", .. })));

        // Data shorter or longer than the header says.
        let header = OptionHeader::new(OPT_EXPORT_NAME, 5);
        assert!(matches!(ClientOption::decode(&header, b"vm1"), Err(ProtocolError::BadLength { .. })));
        // LIST with data.
        let header = OptionHeader::new(OPT_LIST, 1);
        assert!(matches!(ClientOption::decode(&header, b"x"), Err(ProtocolError::BadLength { .. })));
        // Names: not UTF-8, with NUL, too long.
        for (name, why) in [(&b"\xff\xfe"[..], "not UTF-8"), (&b"a\0b"[..], "contains NUL")] {
            let header = OptionHeader::new(OPT_EXPORT_NAME, name.len() as u32);
            assert_eq!(ClientOption::decode(&header, name), Err(ProtocolError::BadName(why)));
        }
        let long = vec![b'a'; MAX_NAME + 1];
        let header = OptionHeader::new(OPT_EXPORT_NAME, long.len() as u32);
        assert!(matches!(ClientOption::decode(&header, &long), Err(ProtocolError::BadName(_))));
        // GO whose name length runs past the data, or whose request list is cut short or too long.
        let go = ClientOption::Go(ExportQuery { name: "vm1".into(), requests: vec![INFO_BLOCK_SIZE] }).encode();
        let (_, data) = split_option(&go);
        let mut past = data.to_vec();
        past[3] = 200;
        let header = OptionHeader::new(OPT_GO, past.len() as u32);
        assert!(matches!(ClientOption::decode(&header, &past), Err(ProtocolError::BadLength { .. })));
        let cut = &data[..data.len() - 1];
        let header = OptionHeader::new(OPT_GO, cut.len() as u32);
        assert!(matches!(ClientOption::decode(&header, cut), Err(ProtocolError::BadLength { .. })));
        let mut long = data.to_vec();
        long.push(0);
        let header = OptionHeader::new(OPT_GO, long.len() as u32);
        assert!(matches!(ClientOption::decode(&header, &long), Err(ProtocolError::BadLength { .. })));
    }

    #[test]
    fn every_option_reply_round_trips() {
        round_trip_reply(OptionReply::ack(OPT_GO));
        round_trip_reply(OptionReply::server("vm1"));
        round_trip_reply(OptionReply::info(OPT_INFO, &Info::Export { size: 1 << 30, flags: TRANSMISSION_FLAGS }));
        for kind in [ReplyType::ErrUnsup, ReplyType::ErrInvalid, ReplyType::ErrUnknown, ReplyType::ErrTooBig] {
            assert!(kind.is_error());
            round_trip_reply(OptionReply::error(OPT_STRUCTURED_REPLY, kind, "no"));
        }
        assert!(!ReplyType::Info.is_error());
        let bytes = OptionReply::server("vm1").encode();
        assert_eq!(bytes[..8], OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(bytes[OPTION_REPLY_HEADER_LEN..], [0, 0, 0, 3, b'v', b'm', b'1']);
    }

    #[test]
    fn bad_option_replies_are_rejected() {
        let good: [u8; OPTION_REPLY_HEADER_LEN] =
            OptionReply::ack(OPT_GO).encode()[..OPTION_REPLY_HEADER_LEN].try_into().unwrap();
        let mut bad = good;
        bad[0] = 1;
        assert!(matches!(OptionReplyHeader::decode(&bad), Err(ProtocolError::BadMagic { .. })));
        let mut unknown = good;
        unknown[12..16].copy_from_slice(&(REP_ERROR | 2).to_be_bytes());
        assert_eq!(OptionReplyHeader::decode(&unknown), Err(ProtocolError::UnknownReplyType(REP_ERROR | 2)));
        let header = OptionReplyHeader::decode(&good).unwrap();
        assert!(matches!(OptionReply::decode(&header, b"x"), Err(ProtocolError::BadLength { .. })));
    }

    #[test]
    fn information_round_trips_and_bad_values_are_rejected() {
        let sizes = BlockSizes::new(1, 4096, MAX_PAYLOAD).unwrap();
        for info in [Info::Export { size: 12345, flags: TRANSMISSION_FLAGS }, Info::BlockSize(sizes)] {
            assert_eq!(Info::decode(&info.encode()).unwrap(), info);
        }
        assert_eq!(Info::BlockSize(sizes).encode().len(), 14, "the spec fixes NBD_INFO_BLOCK_SIZE at 14 bytes");
        assert_eq!(Info::Export { size: 0, flags: 0 }.encode().len(), 12);
        assert_eq!(Info::decode(&[0, 1, 0, 0]), Err(ProtocolError::UnknownInfo(1)));
        let mut short = Info::Export { size: 1, flags: 1 }.encode();
        short.pop();
        assert!(matches!(Info::decode(&short), Err(ProtocolError::BadLength { .. })));
        for (min, preferred, max) in [(3, 4096, 8192), (1 << 17, 1 << 17, 1 << 20), (1, 256, 4096), (1, 4096, 2048)] {
            assert!(matches!(BlockSizes::new(min, preferred, max), Err(ProtocolError::BadBlockSizes { .. })));
        }
        assert!(matches!(BlockSizes::new(512, 4096, 4097), Err(ProtocolError::BadBlockSizes { .. })));
        assert!(BlockSizes::new(512, 4096, u32::MAX).is_ok());
        let mut bad = Info::BlockSize(sizes).encode();
        bad[5] = 3; // minimum 3
        assert!(matches!(Info::decode(&bad), Err(ProtocolError::BadBlockSizes { .. })));
    }

    #[test]
    fn the_export_name_reply_round_trips_with_and_without_padding() {
        let reply = ExportNameReply::new(16 << 20, TRANSMISSION_FLAGS);
        let padded = reply.encode(false);
        assert_eq!(padded.len(), EXPORT_NAME_REPLY_LEN + EXPORT_NAME_PADDING);
        assert_eq!(ExportNameReply::decode(&padded).unwrap(), reply);
        let bare = reply.encode(true);
        assert_eq!(bare.len(), EXPORT_NAME_REPLY_LEN);
        assert_eq!(ExportNameReply::decode(&bare).unwrap(), reply);
        let mut dirty = padded.clone();
        dirty[20] = 1;
        assert!(ExportNameReply::decode(&dirty).is_err());
        assert!(ExportNameReply::decode(&padded[..50]).is_err());
    }

    #[test]
    fn requests_round_trip_and_bad_values_are_rejected() {
        for command in Command::ALL {
            let request = Request::new(command, command.allowed_flags(), 0x0102_0304_0506_0708, 1 << 40, 4096);
            let bytes = request.encode();
            assert_eq!(bytes[..4], [0x25, 0x60, 0x95, 0x13]);
            let back = Request::decode(&bytes).unwrap();
            assert_eq!(back, request);
            assert_eq!(back.command().unwrap(), command);
            assert_eq!(Command::from_code(command.code()).unwrap(), command);
        }
        let mut bad = Request::new(Command::Read, 0, 1, 0, 512).encode();
        bad[3] = 0x14;
        assert_eq!(Request::decode(&bad), Err(ProtocolError::BadMagic { what: "request", found: 0x2560_9514 }));
        for unknown in [5, 7, 8, 9, 0xffff] {
            let request = Request { flags: 0, kind: unknown, cookie: 1, offset: 0, length: 0 };
            assert_eq!(request.command(), Err(ProtocolError::UnknownCommand(unknown)));
        }
        let no_hole_read = Request::new(Command::Read, CMD_FLAG_NO_HOLE, 1, 0, 512);
        assert!(matches!(no_hole_read.command(), Err(ProtocolError::BadCommandFlags { .. })));
        let df_read = Request::new(Command::Read, 1 << 2, 1, 0, 512);
        assert!(matches!(df_read.command(), Err(ProtocolError::BadCommandFlags { .. })));
        assert!(Request::new(Command::Flush, CMD_FLAG_FUA, 1, 0, 0).command().is_ok());
    }

    #[test]
    fn requests_know_whether_they_fit_the_export() {
        let size = 16 << 20;
        assert!(Request::new(Command::Read, 0, 1, size - 4096, 4096).fits(size));
        assert!(!Request::new(Command::Read, 0, 1, size - 4096, 4097).fits(size));
        assert!(!Request::new(Command::Read, 0, 1, u64::MAX, 2).fits(size), "overflow is past the end");
        assert!(Request::new(Command::Read, 0, 1, size, 0).fits(size));
    }

    #[test]
    fn simple_replies_round_trip_and_bad_values_are_rejected() {
        let ok = SimpleReply::ok(42);
        assert_eq!(SimpleReply::decode(&ok.encode()).unwrap(), ok);
        for error in ErrorCode::ALL {
            let reply = SimpleReply::error(7, error);
            assert_eq!(SimpleReply::decode(&reply.encode()).unwrap(), reply);
        }
        assert_eq!(SimpleReply::error(1, ErrorCode::Inval).encode()[4..8], [0, 0, 0, 22]);
        let mut bad = ok.encode();
        bad[0] = 0;
        assert!(matches!(SimpleReply::decode(&bad), Err(ProtocolError::BadMagic { .. })));
        let mut unknown = ok.encode();
        unknown[7] = 99;
        assert_eq!(SimpleReply::decode(&unknown), Err(ProtocolError::UnknownErrorCode(99)));
    }
}
