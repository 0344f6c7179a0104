//! The Jettison wire protocol, version 4: how a server (memtap, cownetdisk)
//! reads byte ranges of an image (a VM's RAM file, a disk image) that lives on
//! a desktop (memserv, diskserv).
//!
//! This module doc is the specification; a peer can be written from it alone.
//!
//! # Layers
//!
//! ```text
//!  +-----------------------------------------------+
//!  | messages: Hello, Welcome, Refused, Request,   |  bincode 2 (standard config:
//!  | Response                                      |  little-endian, varint ints)
//!  +-----------------------------------------------+
//!  | frames: u32 LE length + body (<= MAX_FRAME)   |  plaintext stream
//!  +-----------------------------------------------+
//!  | records: u16 LE length + Noise ciphertext     |  ChaCha20-Poly1305, <= 65535 B
//!  +-----------------------------------------------+
//!  | preamble (8 B, clear) + Noise IX handshake    |  TCP
//!  +-----------------------------------------------+
//! ```
//!
//! # Connection flow
//!
//! ```mermaid
//! sequenceDiagram
//!     participant C as client (memtap / cownetdisk)
//!     participant S as server (memserv / diskserv)
//!     C->>S: preamble "JTSN", version u16 LE, flags u16 = 0
//!     S->>C: preamble "JTSN", version S speaks, status u16 (0 ok, 1 version refused)
//!     Note over C,S: status != 0: both close. Otherwise the client's preamble is the Noise prologue.
//!     C->>S: Noise IX msg 1 (-> e, s), payload Hello (in the clear)
//!     Note over S: C's static key not enrolled here: the clear record "JTAUTHFAIL" instead of msg 2, and close; the client reports an authentication error
//!     S->>C: Noise IX msg 2 (<- e, ee, se, s, es), payload Welcome or Refused
//!     Note over C: S's static key not enrolled here (or not as the expected host): close
//!     loop any number, pipelined
//!         C->>S: Request::Read { id, ranges }
//!         S->>C: Response::Data { id, chunks } or Response::Error { id, .. }
//!     end
//! ```
//!
//! Handshake messages travel as `u16 LE length + Noise message`. After the
//! handshake everything is a *record*: `u16 LE length + ciphertext`, at most
//! [`MAX_RECORD`] bytes of ciphertext (Noise's limit). The plaintext of the
//! records, concatenated, is a stream of *frames*: `u32 LE length + bincode
//! body`, the length at most [`MAX_FRAME`]. A frame may span records.
//!
//! # Authentication and encryption
//!
//! Each host has its own static X25519 key (made by `jettison pair`), and
//! each end keeps the public keys of the peers it trusts, by name (written
//! by `jettison enroll`; see [`crate::key`]). The Noise pattern `IX` sends
//! the client's static key in the first message and the server's in the
//! second, and mixes both into the session keys: only the holder of the
//! client's private key can read message 2 or seal a record, and only the
//! holder of the server's can have written message 2. Each end looks the
//! other's key up among its peers and closes on a stranger. Message 1 is in
//! the clear (a public key and the hello: a service and an export name); a
//! replay of it gets an answer nobody can read. A server therefore counts a
//! client as proven only once its first record opens. Fresh ephemeral keys
//! give forward secrecy. Transport messages are ChaCha20-Poly1305 with
//! implicit nonces, so a replayed, reordered or altered record fails to
//! decrypt and ends the connection.
//!
//! # Version rule
//!
//! The version travels in the first bytes the client sends, in clear, so that
//! a future version may change even the cryptography. The server answers with
//! the one version it accepts ([`VERSION`]) and status 1 when they differ.
//! Messages of one version never change shape; a new field is a new version.
//!
//! # Requests
//!
//! A [`Request::Read`] names up to [`MAX_RANGES`] byte ranges of the image,
//! together at most [`MAX_REQUEST_BYTES`], each inside the image's size. The
//! server answers each request with one [`Response`] carrying the same `id`;
//! it answers in the order the requests arrived. A [`Response::Data`] holds,
//! for each range in order, chunks that cover it exactly: [`Chunk::Bytes`]
//! with data, or [`Chunk::Zero`] for a run of whole units (the unit size is
//! in [`Welcome`]) that are all zero, so that free memory costs a few bytes
//! on the wire instead of 4096 per page.
//!
//! A bad request (a range past the end, too many ranges, too many bytes) gets
//! a [`Response::Error`] and the connection stays up. A frame that does not
//! decode is a protocol violation: the server closes that connection (it can
//! no longer trust the stream's framing) and keeps serving the others.
//!
//! # Limits
//!
//! | what | limit |
//! |---|---|
//! | frame body | [`MAX_FRAME`] bytes |
//! | record ciphertext | [`MAX_RECORD`] bytes |
//! | ranges in a request | [`MAX_RANGES`] |
//! | bytes asked for in a request | [`MAX_REQUEST_BYTES`] |
//! | export name | [`MAX_NAME`] bytes of UTF-8 |
//! | error detail text | [`MAX_DETAIL`] bytes |

use bincode::{Decode, Encode};

use crate::error::DecodeError;

/// The magic at the start of both preambles.
pub const MAGIC: [u8; 4] = *b"JTSN";
/// The protocol version this build speaks: 5 since a server may ask a
/// desktop to move a VM to another server of the fleet (the control
/// message `PleaseMove`, for `jettison drain`), which a desktop of version 4
/// could not read; 4 since a memory dirty set may
/// carry discard records (dirty set format 2, for memory the guest freed on
/// the server), which a desktop of version 3 would refuse only at
/// reintegration, with the VM already stopped: the preamble refuses the
/// pair at its first connection instead; 3 since a VM may have several
/// disks (the daemons' control messages changed shape, and a diskserv
/// serves one export per disk: `<vm>` for the first, `<vm>.<n>` for the
/// others); 2 since each host proves its own key (Noise `IX`); version 1
/// shared one office key (`NNpsk0`).
pub const VERSION: u16 = 5;
/// Size of a preamble on the wire.
pub const PREAMBLE_LEN: usize = 8;
/// Largest frame body, in bytes.
pub const MAX_FRAME: usize = MAX_REQUEST_BYTES + 64 * 1024;
/// Largest Noise message (handshake or record ciphertext), in bytes.
pub const MAX_RECORD: usize = 65535;
/// Most ranges in one request.
pub const MAX_RANGES: usize = 1024;
/// Most bytes one request may ask for.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Longest export name.
pub const MAX_NAME: usize = 255;
/// Longest error detail text.
pub const MAX_DETAIL: usize = 1024;
/// Size of a frame header (the body length).
pub const FRAME_HEADER_LEN: usize = 4;
const _: () = assert!(FRAME_HEADER_LEN == std::mem::size_of::<u32>());
const _: () = assert!(MAX_FRAME <= u32::MAX as usize);

/// The clear-text first 8 bytes of each side.
///
/// Layout (little-endian): magic `b"JTSN"`, version `u16`, and a `u16` that
/// is flags (zero) from the client and a [`PreambleStatus`] from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The protocol version the sender speaks.
    pub version: u16,
    /// Flags from a client (must be 0), a [`PreambleStatus`] from a server.
    pub word: u16,
}

/// What the server says of the client's preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum PreambleStatus {
    /// The version is accepted; the Noise handshake follows.
    Accepted = 0,
    /// The version is not the server's; it closes.
    VersionRefused = 1,
}

impl Preamble {
    /// The preamble a client of this build sends.
    pub fn client() -> Self {
        Preamble { version: VERSION, word: 0 }
    }

    /// The preamble a server of this build answers with.
    pub fn server(status: PreambleStatus) -> Self {
        Preamble { version: VERSION, word: status as u16 }
    }

    /// Encodes to the 8 bytes on the wire.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.word.to_le_bytes());
        out
    }

    /// Decodes the 8 bytes on the wire.
    ///
    /// # Errors
    /// [`DecodeError::BadMagic`] when the peer does not speak this protocol.
    pub fn decode(bytes: &[u8; PREAMBLE_LEN]) -> Result<Self, DecodeError> {
        if bytes[..4] != MAGIC {
            return Err(DecodeError::BadMagic { found: [bytes[0], bytes[1], bytes[2], bytes[3]] });
        }
        Ok(Preamble {
            version: u16::from_le_bytes([bytes[4], bytes[5]]),
            word: u16::from_le_bytes([bytes[6], bytes[7]]),
        })
    }

    /// The server's status word, read as a [`PreambleStatus`].
    ///
    /// # Errors
    /// [`DecodeError::UnknownStatus`] for a value this version does not define.
    pub fn status(&self) -> Result<PreambleStatus, DecodeError> {
        match self.word {
            0 => Ok(PreambleStatus::Accepted),
            1 => Ok(PreambleStatus::VersionRefused),
            other => Err(DecodeError::UnknownStatus(other)),
        }
    }
}

/// Which kind of image the client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Service {
    /// A VM's RAM file (memserv).
    Memory,
    /// A VM's disk image (diskserv).
    Disk,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Memory => "memory",
            Service::Disk => "disk",
        })
    }
}

/// The client's first message, inside Noise handshake message 1.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// The kind of image wanted.
    pub service: Service,
    /// The export's name: the VM's name (for a disk, the VM's name for its
    /// first disk, `<vm>.<n>` for disk `n` of the others).
    pub export: String,
    /// In a fleet, the fencing token of the stay the client serves (the
    /// revision of its server's claim of the VM in etcd): a desktop serves
    /// only the stay's token. 0 outside a fleet.
    pub fence: u64,
}

impl Hello {
    /// A hello for `export` of `service`, with no fencing token.
    pub fn new(service: Service, export: impl Into<String>) -> Hello {
        Hello { service, export: export.into(), fence: 0 }
    }

    /// The same with the stay's fencing token.
    pub fn with_fence(self, fence: Option<u64>) -> Hello {
        Hello { fence: fence.unwrap_or(0), ..self }
    }
}

/// The server's acceptance, inside Noise handshake message 2.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Welcome {
    /// Size of the image in bytes.
    pub size: u64,
    /// The unit (page or block size) at which zero runs are reported.
    pub unit: u32,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum HelloReply {
    /// The export exists and is served.
    Welcome(Welcome),
    /// The export is not served here; the text says why.
    Refused(String),
}

/// A byte range of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes (not zero).
    pub len: u32,
}

impl ByteRange {
    /// A range of `len` bytes from `offset`.
    pub fn new(offset: u64, len: u32) -> Self {
        ByteRange { offset, len }
    }

    /// One past the last byte, or `None` if that overflows.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.len))
    }
}

/// A message from client to server after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// Read these ranges.
    Read {
        /// Chosen by the client, echoed in the response.
        id: u64,
        /// The ranges, answered in this order.
        ranges: Vec<ByteRange>,
    },
}

impl Request {
    /// A read of `ranges`, tagged `id`.
    pub fn read(id: u64, ranges: Vec<ByteRange>) -> Self {
        Request::Read { id, ranges }
    }

    /// The request's id.
    pub fn id(&self) -> u64 {
        match self {
            Request::Read { id, .. } => *id,
        }
    }
}

/// Part of the data answering a range.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Chunk {
    /// These bytes, from `offset`.
    Bytes {
        /// Image offset of the first byte.
        offset: u64,
        /// The data.
        data: Vec<u8>,
    },
    /// `len` bytes from `offset` are all zero.
    Zero {
        /// Image offset of the first byte.
        offset: u64,
        /// Number of zero bytes.
        len: u32,
    },
}

impl Chunk {
    /// Image offset of the chunk's first byte.
    pub fn offset(&self) -> u64 {
        match self {
            Chunk::Bytes { offset, .. } | Chunk::Zero { offset, .. } => *offset,
        }
    }

    /// Number of image bytes the chunk covers.
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Bytes { data, .. } => data.len() as u64,
            Chunk::Zero { len, .. } => u64::from(*len),
        }
    }

    /// Whether the chunk covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ErrorKind {
    /// A range lies (partly) past the end of the image.
    OutOfRange,
    /// Too many ranges or bytes in one request, or an empty range.
    TooLarge,
    /// The server could not read its image.
    Io,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::OutOfRange => "range out of the image",
            ErrorKind::TooLarge => "request too large",
            ErrorKind::Io => "server I/O error",
        })
    }
}

/// A message from server to client after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    /// The data for request `id`.
    Data {
        /// The request's id.
        id: u64,
        /// Chunks covering the request's ranges, in order.
        chunks: Vec<Chunk>,
    },
    /// Request `id` failed; the connection stays usable.
    Error {
        /// The request's id.
        id: u64,
        /// The kind of failure.
        kind: ErrorKind,
        /// Human-readable detail (at most [`MAX_DETAIL`] bytes).
        detail: String,
    },
}

impl Response {
    /// Data answering request `id`.
    pub fn data(id: u64, chunks: Vec<Chunk>) -> Self {
        Response::Data { id, chunks }
    }

    /// A failure of request `id`; `detail` is cut to [`MAX_DETAIL`] bytes.
    pub fn error(id: u64, kind: ErrorKind, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Response::Error { id, kind, detail }
    }

    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        match self {
            Response::Data { id, .. } | Response::Error { id, .. } => *id,
        }
    }
}

/// A message that can be a frame body: encoded with bincode and checked
/// against the protocol's limits when decoded.
pub trait Message: Encode + Decode<()> + Sized {
    /// Checks the limits bincode alone cannot express.
    ///
    /// # Errors
    /// [`DecodeError::Limit`] naming the limit broken.
    fn validate(&self) -> Result<(), DecodeError>;

    /// Encodes into a frame body.
    fn encode_body(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("encoding to a Vec cannot fail: no size limit is set on encode")
    }

    /// Decodes a frame body, rejecting trailing bytes and broken limits.
    ///
    /// # Errors
    /// [`DecodeError`] saying what is wrong with the bytes.
    fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() > MAX_FRAME {
            return Err(DecodeError::FrameTooLarge { len: body.len() as u64 });
        }
        let (msg, used): (Self, usize) = bincode::decode_from_slice(body, config()).map_err(|e| match e {
            bincode::error::DecodeError::OtherString(why) => DecodeError::Invalid(why),
            other => DecodeError::Bincode(other),
        })?;
        if used != body.len() {
            return Err(DecodeError::TrailingBytes { extra: body.len() - used });
        }
        msg.validate()?;
        Ok(msg)
    }
}

/// bincode's configuration for every message: little-endian, variable-length
/// integers, and a decode limit so a hostile length prefix cannot make the
/// decoder allocate more than a frame.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
> {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<MAX_FRAME>()
}

impl Message for Hello {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.export.is_empty() || self.export.len() > MAX_NAME {
            return Err(DecodeError::Limit("export name must be 1 to 255 bytes"));
        }
        Ok(())
    }
}

impl Message for HelloReply {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            HelloReply::Welcome(w) if w.unit == 0 || !w.unit.is_power_of_two() => {
                Err(DecodeError::Limit("unit must be a power of two"))
            }
            HelloReply::Refused(text) if text.len() > MAX_DETAIL => {
                Err(DecodeError::Limit("refusal text longer than MAX_DETAIL"))
            }
            _ => Ok(()),
        }
    }
}

impl Message for Request {
    fn validate(&self) -> Result<(), DecodeError> {
        let Request::Read { ranges, .. } = self;
        if ranges.len() > MAX_RANGES {
            return Err(DecodeError::Limit("more than MAX_RANGES ranges"));
        }
        Ok(())
    }
}

impl Message for Response {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Response::Error { detail, .. } if detail.len() > MAX_DETAIL => {
                Err(DecodeError::Limit("error detail longer than MAX_DETAIL"))
            }
            _ => Ok(()),
        }
    }
}

/// Prefixes a body with its frame header.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits frames out of a plaintext byte stream that arrives in pieces.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends plaintext received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, if one has fully arrived.
    ///
    /// # Errors
    /// [`DecodeError::FrameTooLarge`] when the header announces more than
    /// [`MAX_FRAME`]; the stream cannot be resynchronised after that.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buf[..FRAME_HEADER_LEN]);
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(DecodeError::FrameTooLarge { len: len as u64 });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buf.drain(..FRAME_HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msg: M) {
        let body = msg.encode_body();
        assert_eq!(M::decode_body(&body).unwrap(), msg);
    }

    #[test]
    fn preamble_round_trips_and_rejects_bad_magic() {
        let p = Preamble::server(PreambleStatus::VersionRefused);
        let bytes = p.encode();
        assert_eq!(&bytes[..4], b"JTSN");
        let back = Preamble::decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.status().unwrap(), PreambleStatus::VersionRefused);
        let mut bad = bytes;
        bad[0] = b'X';
        assert!(matches!(Preamble::decode(&bad), Err(DecodeError::BadMagic { .. })));
        let unknown = Preamble { version: 1, word: 7 };
        assert!(matches!(unknown.status(), Err(DecodeError::UnknownStatus(7))));
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Hello::new(Service::Memory, "vm1"));
        round_trip(Hello::new(Service::Disk, "d"));
        round_trip(HelloReply::Welcome(Welcome { size: 1 << 30, unit: 4096 }));
        round_trip(HelloReply::Refused("no such VM".into()));
        round_trip(Request::read(7, vec![ByteRange::new(0, 4096), ByteRange::new(8192, 1)]));
        round_trip(Response::data(
            7,
            vec![Chunk::Bytes { offset: 0, data: vec![1, 2, 3] }, Chunk::Zero { offset: 3, len: 4096 }],
        ));
        for kind in [ErrorKind::OutOfRange, ErrorKind::TooLarge, ErrorKind::Io] {
            round_trip(Response::error(9, kind, "detail"));
        }
    }

    #[test]
    fn unknown_variants_are_rejected() {
        // A Request whose variant tag is 5: no such variant.
        let mut body = Request::read(1, vec![]).encode_body();
        body[0] = 5;
        assert!(matches!(Request::decode_body(&body), Err(DecodeError::Bincode(_))));
        let mut body = Hello::new(Service::Memory, "x").encode_body();
        body[0] = 2; // Service has two variants
        assert!(Hello::decode_body(&body).is_err());
        let mut body = Response::error(1, ErrorKind::Io, "x").encode_body();
        body[2] = 9; // ErrorKind tag after variant tag and id
        assert!(Response::decode_body(&body).is_err());
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let long = "x".repeat(MAX_NAME + 1);
        let body = Hello::new(Service::Memory, long).encode_body();
        assert!(matches!(Hello::decode_body(&body), Err(DecodeError::Limit(_))));
        let body = Hello::new(Service::Memory, String::new()).encode_body();
        assert!(matches!(Hello::decode_body(&body), Err(DecodeError::Limit(_))));
        let body = HelloReply::Welcome(Welcome { size: 1, unit: 3000 }).encode_body();
        assert!(matches!(HelloReply::decode_body(&body), Err(DecodeError::Limit(_))));
        let ranges = vec![ByteRange::new(0, 1); MAX_RANGES + 1];
        let body = Request::read(1, ranges).encode_body();
        assert!(matches!(Request::decode_body(&body), Err(DecodeError::Limit(_))));
        let body = Response::Error { id: 1, kind: ErrorKind::Io, detail: "y".repeat(MAX_DETAIL + 1) }.encode_body();
        assert!(matches!(Response::decode_body(&body), Err(DecodeError::Limit(_))));
    }

    #[test]
    fn error_detail_is_cut_at_a_char_boundary() {
        let r = Response::error(1, ErrorKind::Io, "é".repeat(MAX_DETAIL));
        let Response::Error { detail, .. } = r else { panic!("not an error") };
        assert!(detail.len() <= MAX_DETAIL);
    }

    #[test]
    fn truncated_and_trailing_bodies_are_rejected() {
        let body = Request::read(1, vec![ByteRange::new(4096, 4096)]).encode_body();
        for cut in 0..body.len() {
            assert!(Request::decode_body(&body[..cut]).is_err(), "accepted a body cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(matches!(Request::decode_body(&long), Err(DecodeError::TrailingBytes { extra: 1 })));
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // Data chunk claiming a 2^60-byte vector.
        let mut body = vec![0u8, 1, 1, 0, 0];
        body.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(Response::decode_body(&body).is_err());
    }

    #[test]
    fn frame_reader_reassembles_split_frames() {
        let a = frame(b"hello");
        let b = frame(b"");
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        let mut r = FrameReader::new();
        for byte in &stream {
            r.push(std::slice::from_ref(byte));
        }
        assert_eq!(r.next_body().unwrap().unwrap(), b"hello");
        assert_eq!(r.next_body().unwrap().unwrap(), b"");
        assert_eq!(r.next_body().unwrap(), None);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn frame_reader_rejects_oversized_header() {
        let mut r = FrameReader::new();
        r.push(&((MAX_FRAME as u32) + 1).to_le_bytes());
        assert!(matches!(r.next_body(), Err(DecodeError::FrameTooLarge { .. })));
    }
}
