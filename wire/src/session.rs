//! The server's side of one connection as a sans-I/O state machine, for
//! event loops: feed it the bytes that arrived, take the bytes to send.

use crate::error::{DecodeError, WireError};
use std::sync::Arc;

use identifiers::HostName;

use crate::key::Credentials;
use crate::protocol::{
    frame, FrameReader, Hello, HelloReply, Message, Preamble, PreambleStatus, Request, Response, PREAMBLE_LEN, VERSION,
};
use crate::secure::{RecordReader, Responder, Transport};

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting for the client's preamble.
    Preamble,
    /// Preamble accepted, waiting for Noise message 1.
    Handshake(Responder),
    /// Hello received; waiting for the owner's [`ServerSession::answer_hello`].
    Hello(Responder),
    /// Encrypted requests flow.
    Open(Transport),
    /// Done: the connection should be closed once `out` is sent.
    Closed,
}

/// Something the owner of a session must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The client authenticated and asks for an export: answer with
    /// [`ServerSession::answer_hello`].
    Hello(Hello),
    /// A request to answer with [`ServerSession::send`].
    Request(Request),
}

/// One server-side connection, without its socket.
#[derive(Debug)]
pub struct ServerSession {
    credentials: Arc<Credentials>,
    peer: String,
    peer_name: Option<HostName>,
    records: RecordReader,
    frames: FrameReader,
    phase: Phase,
}

impl ServerSession {
    /// A new connection from `peer` (used in error messages), which must
    /// prove a key enrolled in `credentials`.
    pub fn new(credentials: Arc<Credentials>, peer: impl Into<String>) -> Self {
        ServerSession {
            credentials,
            peer: peer.into(),
            peer_name: None,
            records: RecordReader::new(),
            frames: FrameReader::new(),
            phase: Phase::Preamble,
        }
    }

    /// The name the client's key is enrolled under, once its hello arrived
    /// (proven once its first request opens).
    pub fn peer_name(&self) -> Option<&HostName> {
        self.peer_name.as_ref()
    }

    /// Adds bytes received from the socket.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.records.push(bytes);
    }

    /// Whether the session has ended (send what is in `out`, then close).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Advances on the bytes received so far; may append bytes to send to
    /// `out`. Returns the next event, or `None` when more bytes are needed.
    ///
    /// # Errors
    /// A [`WireError`] when the peer broke the protocol or failed to
    /// authenticate; the session is then closed.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<Event>, WireError> {
        let result = self.step(out);
        if result.is_err() {
            self.phase = Phase::Closed;
        }
        result
    }

    fn step(&mut self, out: &mut Vec<u8>) -> Result<Option<Event>, WireError> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Closed) {
                Phase::Preamble => {
                    let Some(raw) = self.records.take_raw(PREAMBLE_LEN) else {
                        self.phase = Phase::Preamble;
                        return Ok(None);
                    };
                    let raw: [u8; PREAMBLE_LEN] = raw.try_into().expect("take_raw returned PREAMBLE_LEN bytes");
                    let theirs = Preamble::decode(&raw).map_err(|source| self.decode_error(source))?;
                    if theirs.version != VERSION {
                        out.extend_from_slice(&Preamble::server(PreambleStatus::VersionRefused).encode());
                        return Err(WireError::VersionRefused {
                            peer: self.peer.clone(),
                            ours: VERSION,
                            theirs: theirs.version,
                        });
                    }
                    out.extend_from_slice(&Preamble::server(PreambleStatus::Accepted).encode());
                    self.phase = Phase::Handshake(Responder::new(self.credentials.key(), &raw)?);
                }
                Phase::Handshake(mut responder) => {
                    let Some(msg) = self.records.next_record() else {
                        self.phase = Phase::Handshake(responder);
                        return Ok(None);
                    };
                    let checked = responder.read_first(&msg).and_then(|(payload, key)| {
                        Ok((payload, crate::channel::enrolled_name(&self.credentials, &self.peer, key)?))
                    });
                    let (payload, name) = match checked {
                        Ok(checked) => checked,
                        Err(e) => {
                            // Tell the client why, so that it does not take
                            // a refused key for a dropped connection.
                            out.extend_from_slice(&crate::secure::auth_failed_record());
                            return Err(e);
                        }
                    };
                    self.peer_name = Some(name);
                    let hello = Hello::decode_body(&payload).map_err(|source| self.decode_error(source))?;
                    self.phase = Phase::Hello(responder);
                    return Ok(Some(Event::Hello(hello)));
                }
                Phase::Hello(responder) => {
                    // The owner has not answered the hello yet.
                    self.phase = Phase::Hello(responder);
                    return Ok(None);
                }
                Phase::Open(mut transport) => {
                    let body = match self.frames.next_body() {
                        Ok(Some(body)) => Some(body),
                        Ok(None) => None,
                        Err(source) => return Err(self.decode_error(source)),
                    };
                    if let Some(body) = body {
                        self.phase = Phase::Open(transport);
                        let req = Request::decode_body(&body).map_err(|source| self.decode_error(source))?;
                        return Ok(Some(Event::Request(req)));
                    }
                    let Some(record) = self.records.next_record() else {
                        self.phase = Phase::Open(transport);
                        return Ok(None);
                    };
                    let plain = transport.open(&record)?;
                    self.frames.push(&plain);
                    self.phase = Phase::Open(transport);
                }
                Phase::Closed => return Ok(None),
            }
        }
    }

    /// Answers the client's [`Hello`]; a refusal closes the session after
    /// the reply is sent.
    ///
    /// # Errors
    /// [`WireError::Crypto`] if the reply cannot be encrypted.
    pub fn answer_hello(&mut self, reply: &HelloReply, out: &mut Vec<u8>) -> Result<(), WireError> {
        let Phase::Hello(responder) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return Ok(());
        };
        let (msg, transport) = responder.reply(&reply.encode_body())?;
        out.extend_from_slice(&msg);
        if matches!(reply, HelloReply::Welcome(_)) {
            self.phase = Phase::Open(transport);
        }
        Ok(())
    }

    /// Encrypts a response into `out`.
    ///
    /// # Errors
    /// [`WireError::Crypto`] if it cannot be encrypted; nothing is sent when
    /// the session is not open.
    pub fn send(&mut self, response: &Response, out: &mut Vec<u8>) -> Result<(), WireError> {
        if let Phase::Open(transport) = &mut self.phase {
            transport.seal(&frame(&response.encode_body()), out)?;
        }
        Ok(())
    }

    fn decode_error(&self, source: DecodeError) -> WireError {
        WireError::Decode { peer: self.peer.clone(), source }
    }
}
