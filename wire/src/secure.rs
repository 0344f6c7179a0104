//! The encrypted layer under the frames: a Noise `IX` handshake in which each
//! end proves its own static key, then length-prefixed ChaCha20-Poly1305
//! records.
//!
//! In `IX` the client sends its ephemeral and static public keys in the first
//! message and the server answers with its own, so neither end needs to know
//! in advance which key sits at which address (a desktop's server may move,
//! a server serves many desktops). Each end then looks the other's key up in
//! its enrolled peers ([`crate::Credentials`]). The first message, and with
//! it the client's hello (a service and a VM's name), travels in the clear;
//! nothing else does, and the answer can only be read by the holder of the
//! client's private key.
//!
//! Everything here is sans-I/O: bytes in, bytes out. The blocking client
//! ([`crate::client`]) and the event-loop server (in `image-server`) drive the
//! same code, so both ends agree by construction.

use crate::error::WireError;
use crate::key::{HostKey, PublicKey};
use crate::protocol::MAX_RECORD;

/// Noise protocol name: static keys exchanged in the handshake, X25519,
/// ChaCha20-Poly1305, BLAKE2s.
const NOISE_PARAMS: &str = "Noise_IX_25519_ChaChaPoly_BLAKE2s";
/// Authentication tag added to every Noise message.
const TAG_LEN: usize = 16;
/// Largest plaintext that fits one record.
const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// Size of a record's length prefix.
const RECORD_HEADER_LEN: usize = 2;

/// Which end of the handshake a state is for.
#[derive(Clone, Copy)]
enum Role {
    Initiator,
    Responder,
}

fn handshake_state(key: &HostKey, prologue: &[u8], role: Role) -> Result<snow::HandshakeState, WireError> {
    let params = NOISE_PARAMS.parse().expect("NOISE_PARAMS is a valid Noise protocol name");
    let builder = snow::Builder::new(params).local_private_key(key.bytes()).prologue(prologue);
    match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .map_err(WireError::Crypto)
}

/// The client's half of the handshake.
#[derive(Debug)]
pub struct Initiator {
    state: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake bound to `prologue` (the client's preamble).
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the Noise library refuses its parameters.
    pub fn new(key: &HostKey, prologue: &[u8]) -> Result<Self, WireError> {
        Ok(Initiator { state: handshake_state(key, prologue, Role::Initiator)? })
    }

    /// Handshake message 1 carrying `payload`, with its length prefix.
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the payload does not fit a Noise message.
    pub fn first_message(&mut self, payload: &[u8]) -> Result<Vec<u8>, WireError> {
        write_prefixed(|buf| self.state.write_message(payload, buf))
    }

    /// Reads handshake message 2 (without its prefix) and returns its
    /// payload, the transport and the server's proven static key.
    ///
    /// # Errors
    /// [`WireError::AuthFailed`] when the message does not decrypt: the
    /// server refused this host's key, or the message was altered.
    pub fn finish(mut self, message: &[u8]) -> Result<(Vec<u8>, Transport, PublicKey), WireError> {
        let mut payload = vec![0u8; MAX_RECORD];
        let n = self.state.read_message(message, &mut payload).map_err(|_| WireError::AuthFailed)?;
        payload.truncate(n);
        let remote = remote_static(&self.state)?;
        let noise = self.state.into_transport_mode().map_err(WireError::Crypto)?;
        Ok((payload, Transport { noise }, remote))
    }
}

/// What a server sends in place of handshake message 2 when message 1 did
/// not decrypt: a clear, length-prefixed record too short to be a Noise
/// message. Any client then fails to decrypt it as message 2 and reports
/// [`WireError::AuthFailed`], instead of a connection that merely closed.
/// (It proves nothing; anyone can send it. It only names the likely cause.)
pub fn auth_failed_record() -> Vec<u8> {
    const TEXT: &[u8] = b"JTAUTHFAIL";
    let mut out = (TEXT.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(TEXT);
    out
}

/// The server's half of the handshake.
#[derive(Debug)]
pub struct Responder {
    state: snow::HandshakeState,
}

impl Responder {
    /// Starts a handshake bound to `prologue` (the client's preamble).
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the Noise library refuses its parameters.
    pub fn new(key: &HostKey, prologue: &[u8]) -> Result<Self, WireError> {
        Ok(Responder { state: handshake_state(key, prologue, Role::Responder)? })
    }

    /// Reads handshake message 1 (without its prefix) and returns its
    /// payload and the static key the client claims. The claim is proven
    /// only once the client's first transport record opens: only the
    /// holder of that key's private half can seal it.
    ///
    /// # Errors
    /// [`WireError::AuthFailed`] when it is not a Noise message of this
    /// pattern: the client is not a Jettison peer of this version.
    pub fn read_first(&mut self, message: &[u8]) -> Result<(Vec<u8>, PublicKey), WireError> {
        let mut payload = vec![0u8; MAX_RECORD];
        let n = self.state.read_message(message, &mut payload).map_err(|_| WireError::AuthFailed)?;
        payload.truncate(n);
        Ok((payload, remote_static(&self.state)?))
    }

    /// Handshake message 2 carrying `payload`, with its length prefix, and
    /// the transport.
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the payload does not fit a Noise message.
    pub fn reply(mut self, payload: &[u8]) -> Result<(Vec<u8>, Transport), WireError> {
        let msg = write_prefixed(|buf| self.state.write_message(payload, buf))?;
        let noise = self.state.into_transport_mode().map_err(WireError::Crypto)?;
        Ok((msg, Transport { noise }))
    }
}

fn remote_static(state: &snow::HandshakeState) -> Result<PublicKey, WireError> {
    state.get_remote_static().and_then(PublicKey::from_slice).ok_or(WireError::AuthFailed)
}

fn write_prefixed(write: impl FnOnce(&mut [u8]) -> Result<usize, snow::Error>) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; RECORD_HEADER_LEN + MAX_RECORD];
    let n = write(&mut out[RECORD_HEADER_LEN..]).map_err(WireError::Crypto)?;
    out[..RECORD_HEADER_LEN].copy_from_slice(&(n as u16).to_le_bytes());
    out.truncate(RECORD_HEADER_LEN + n);
    Ok(out)
}

/// An established encrypted channel: seals plaintext into records and opens
/// records into plaintext.
pub struct Transport {
    noise: snow::TransportState,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport { .. }")
    }
}

impl Transport {
    /// Encrypts `plaintext` as one or more records appended to `out`.
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the nonce space is exhausted (2^64 records).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        for piece in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
            let start = out.len();
            out.resize(start + RECORD_HEADER_LEN + piece.len() + TAG_LEN, 0);
            let n =
                self.noise.write_message(piece, &mut out[start + RECORD_HEADER_LEN..]).map_err(WireError::Crypto)?;
            out[start..start + RECORD_HEADER_LEN].copy_from_slice(&(n as u16).to_le_bytes());
            out.truncate(start + RECORD_HEADER_LEN + n);
        }
        Ok(())
    }

    /// Decrypts one record's ciphertext (without its prefix).
    ///
    /// # Errors
    /// [`WireError::AuthFailed`] when the record was altered, replayed or
    /// reordered; the connection must end.
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut plain = vec![0u8; record.len()];
        let n = self.noise.read_message(record, &mut plain).map_err(|_| WireError::AuthFailed)?;
        plain.truncate(n);
        Ok(plain)
    }
}

/// Splits `u16 LE length + message` units (handshake messages and records)
/// out of a byte stream that arrives in pieces.
#[derive(Debug, Default)]
pub struct RecordReader {
    buf: Vec<u8>,
    start: usize,
}

impl RecordReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes `n` raw bytes (the preamble) if they have arrived.
    pub fn take_raw(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.buf.len() - self.start < n {
            return None;
        }
        let out = self.buf[self.start..self.start + n].to_vec();
        self.advance(n);
        Some(out)
    }

    /// The next whole record, if it has arrived.
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        let avail = &self.buf[self.start..];
        if avail.len() < RECORD_HEADER_LEN {
            return None;
        }
        let len = u16::from_le_bytes([avail[0], avail[1]]) as usize;
        if avail.len() < RECORD_HEADER_LEN + len {
            return None;
        }
        let out = avail[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len].to_vec();
        self.advance(RECORD_HEADER_LEN + len);
        Some(out)
    }

    fn advance(&mut self, n: usize) {
        self.start += n;
        // Compact once the consumed prefix dominates, so the buffer stays small.
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(client_key: &HostKey, server_key: &HostKey) -> Result<(Transport, Transport), WireError> {
        let prologue = b"JTSN\x02\x00\x00\x00";
        let mut i = Initiator::new(client_key, prologue)?;
        let mut r = Responder::new(server_key, prologue)?;
        let m1 = i.first_message(b"hello")?;
        let mut rr = RecordReader::new();
        rr.push(&m1);
        let (hello, client_static) = r.read_first(&rr.next_record().unwrap())?;
        assert_eq!(hello, b"hello");
        assert_eq!(client_static, client_key.public());
        let (m2, server) = r.reply(b"welcome")?;
        rr.push(&m2);
        let (payload, client, server_static) = i.finish(&rr.next_record().unwrap())?;
        assert_eq!(payload, b"welcome");
        assert_eq!(server_static, server_key.public());
        Ok((client, server))
    }

    #[test]
    fn handshake_and_large_transfer() {
        let (mut c, mut s) = pair(&HostKey::generate(), &HostKey::generate()).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        c.seal(&big, &mut wire).unwrap();
        assert!(!wire.windows(8).any(|w| w == &big[1000..1008]), "plaintext visible on the wire");
        let mut rr = RecordReader::new();
        let mut got = Vec::new();
        for piece in wire.chunks(777) {
            rr.push(piece);
            while let Some(rec) = rr.next_record() {
                got.extend(s.open(&rec).unwrap());
            }
        }
        assert_eq!(got, big);
    }

    #[test]
    fn a_claimed_key_without_its_private_half_opens_nothing() {
        // In IX the first message carries the client's static key in the
        // clear: a thief can put a victim's public key there. The server
        // then answers, but only the victim's private key reads the answer.
        let (server_key, victim, thief) = (HostKey::generate(), HostKey::generate(), HostKey::generate());
        let prologue = b"JTSN";
        let mut forger = Initiator::new(&thief, prologue).unwrap();
        let mut r = Responder::new(&server_key, prologue).unwrap();
        let mut rr = RecordReader::new();
        rr.push(&forger.first_message(b"hello").unwrap());
        let mut m1 = rr.next_record().unwrap();
        m1[32..64].copy_from_slice(&hex::decode(victim.public().to_string()).unwrap());
        let (hello, claimed) = r.read_first(&m1).unwrap();
        assert_eq!((hello.as_slice(), claimed), (b"hello".as_slice(), victim.public()));
        let (m2, _server) = r.reply(b"welcome").unwrap();
        rr.push(&m2);
        let err = forger.finish(&rr.next_record().unwrap()).unwrap_err();
        assert!(matches!(err, WireError::AuthFailed), "{err}");
    }

    #[test]
    fn altered_record_fails() {
        let (mut c, mut s) = pair(&HostKey::generate(), &HostKey::generate()).unwrap();
        let mut wire = Vec::new();
        c.seal(b"page data", &mut wire).unwrap();
        wire[5] ^= 1;
        let mut rr = RecordReader::new();
        rr.push(&wire);
        assert!(matches!(s.open(&rr.next_record().unwrap()), Err(WireError::AuthFailed)));
    }
}
