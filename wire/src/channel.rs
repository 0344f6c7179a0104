//! A blocking, authenticated, framed connection: both ends of it.
//!
//! The image client ([`crate::Client`]) and the control connection between a
//! desktop daemon and the server daemon share everything below the message
//! they carry: the clear preamble with the version, the Noise handshake
//! whose first two messages carry a payload each way (the client's hello and
//! the server's answer), then frames of at most
//! [`MAX_FRAME`](crate::protocol::MAX_FRAME) bytes in encrypted records.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{DecodeError, WireError};
use identifiers::HostName;

use crate::key::{Credentials, PublicKey};
use crate::protocol::{frame, FrameReader, Preamble, PreambleStatus, PREAMBLE_LEN};
use crate::secure::{Initiator, RecordReader, Responder, Transport};

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 64 * 1024;

/// An established channel: sends and receives frame bodies.
#[derive(Debug)]
pub struct Channel {
    stream: TcpStream,
    peer: String,
    peer_name: HostName,
    transport: Transport,
    records: RecordReader,
    frames: FrameReader,
    read_buf: Vec<u8>,
}

impl Channel {
    /// Connects to `addr`, proves this host's key from `credentials` and
    /// sends `hello` in the first handshake message; returns the channel and
    /// the payload of the server's answer. The server must prove a key
    /// enrolled here, under the name `expect` when one is given. `timeout`
    /// bounds the connect and every later read.
    ///
    /// # Errors
    /// [`WireError::Connect`] when nobody answers, [`WireError::VersionRefused`]
    /// when the peer speaks another version, [`WireError::AuthFailed`] when
    /// the server does not accept this host's key, [`WireError::UnknownPeer`]
    /// or [`WireError::WrongPeer`] when this host does not accept the server's.
    pub fn connect(
        addr: &str,
        credentials: &Credentials,
        expect: Option<&HostName>,
        hello: &[u8],
        timeout: Duration,
    ) -> Result<(Channel, Vec<u8>), WireError> {
        let connect_err = |source| WireError::Connect { addr: addr.to_owned(), source };
        let sockaddr = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(std::io::Error::other("the address resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sockaddr, timeout).map_err(connect_err)?;
        let mut conn = Handshaking::new(stream, addr.to_owned(), timeout)?;
        let preamble = Preamble::client().encode();
        conn.write_all(&preamble)?;
        let theirs = conn.read_preamble()?;
        match theirs.status().map_err(|source| conn.decode_error(source))? {
            PreambleStatus::Accepted => {}
            PreambleStatus::VersionRefused => {
                return Err(WireError::VersionRefused {
                    peer: conn.peer,
                    ours: Preamble::client().version,
                    theirs: theirs.version,
                })
            }
        }
        let mut initiator = Initiator::new(credentials.key(), &preamble)?;
        conn.write_all(&initiator.first_message(hello)?)?;
        let msg2 = conn.read_record()?;
        let (answer, transport, server_key) = initiator.finish(&msg2)?;
        let name = enrolled_name(credentials, &conn.peer, server_key)?;
        match expect {
            Some(expected) if *expected != name => {
                Err(WireError::WrongPeer { peer: conn.peer, expected: expected.clone(), found: name })
            }
            _ => Ok((conn.established(transport, name), answer)),
        }
    }

    /// Takes the server's side of a connection `accept(2)` returned: checks
    /// the version, runs the handshake with this host's key, and answers the
    /// client's hello with what `answer` makes of it and of the name the
    /// client's key is enrolled under. `timeout` bounds every read.
    ///
    /// The client's key is proven only by its first frame (which only the
    /// holder of the key can seal): act on requests, not on the hello.
    ///
    /// # Errors
    /// [`WireError::Decode`] for a peer that does not speak this protocol,
    /// [`WireError::VersionRefused`] (after telling the peer),
    /// [`WireError::UnknownPeer`] for a key not enrolled here (after telling
    /// the peer its key was refused).
    pub fn accept(
        stream: TcpStream,
        credentials: &Credentials,
        timeout: Duration,
        answer: impl FnOnce(&HostName, &[u8]) -> Vec<u8>,
    ) -> Result<Channel, WireError> {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "an unknown peer".to_owned());
        let mut conn = Handshaking::new(stream, peer, timeout)?;
        let theirs = conn.read_preamble()?;
        if theirs.version != Preamble::client().version {
            conn.write_all(&Preamble::server(PreambleStatus::VersionRefused).encode())?;
            return Err(WireError::VersionRefused {
                peer: conn.peer,
                ours: Preamble::client().version,
                theirs: theirs.version,
            });
        }
        conn.write_all(&Preamble::server(PreambleStatus::Accepted).encode())?;
        let mut responder = Responder::new(credentials.key(), &theirs.encode())?;
        let msg1 = conn.read_record()?;
        let checked = responder
            .read_first(&msg1)
            .and_then(|(hello, client_key)| Ok((hello, enrolled_name(credentials, &conn.peer, client_key)?)));
        let (hello, name) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // Tell the client why (see `auth_failed_record`); it may be gone.
                let _ = conn.write_all(&crate::secure::auth_failed_record());
                return Err(e);
            }
        };
        let (msg2, transport) = responder.reply(&answer(&name, &hello))?;
        conn.write_all(&msg2)?;
        Ok(conn.established(transport, name))
    }

    /// Who is at the other end (its address).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The name the other end's key is enrolled under here.
    pub fn peer_name(&self) -> &HostName {
        &self.peer_name
    }

    /// Bounds every later read (`None`: wait for ever).
    ///
    /// # Errors
    /// [`WireError::Io`] from the socket.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), WireError> {
        self.stream.set_read_timeout(timeout).map_err(|source| self.io_error(source))
    }

    /// Sends one frame body.
    ///
    /// # Errors
    /// [`WireError::Io`] when the socket fails.
    pub fn send(&mut self, body: &[u8]) -> Result<(), WireError> {
        let mut out = Vec::with_capacity(body.len() + body.len() / 1024 + 64);
        self.transport.seal(&frame(body), &mut out)?;
        self.stream.write_all(&out).map_err(|source| WireError::Io { peer: self.peer.clone(), source })
    }

    /// Waits for the next frame body.
    ///
    /// # Errors
    /// [`WireError::Io`] on a socket error or time-out, [`WireError::Closed`]
    /// when the peer hung up, [`WireError::Decode`] on a bad frame header,
    /// [`WireError::AuthFailed`] on an altered record.
    pub fn recv(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            let body =
                self.frames.next_body().map_err(|source| WireError::Decode { peer: self.peer.clone(), source })?;
            if let Some(body) = body {
                return Ok(body);
            }
            if let Some(record) = self.records.next_record() {
                let plain = self.transport.open(&record)?;
                self.frames.push(&plain);
                continue;
            }
            fill(&mut self.stream, &mut self.records, &self.peer, &mut self.read_buf)?;
        }
    }

    /// A [`WireError::Decode`] naming this peer.
    pub fn decode_error(&self, source: DecodeError) -> WireError {
        WireError::Decode { peer: self.peer.clone(), source }
    }

    fn io_error(&self, source: std::io::Error) -> WireError {
        WireError::Io { peer: self.peer.clone(), source }
    }
}

/// Reads what the socket has into `records`, through `buf` (reused by the
/// caller so that no read allocates or zeroes memory).
fn fill(stream: &mut TcpStream, records: &mut RecordReader, peer: &str, buf: &mut [u8]) -> Result<(), WireError> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(WireError::Closed { peer: peer.to_owned() }),
            Ok(n) => {
                records.push(&buf[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(WireError::Io { peer: peer.to_owned(), source }),
        }
    }
}

/// A connection during its clear-text and handshake phase.
struct Handshaking {
    stream: TcpStream,
    peer: String,
    records: RecordReader,
    read_buf: Vec<u8>,
}

impl Handshaking {
    fn new(stream: TcpStream, peer: String, timeout: Duration) -> Result<Self, WireError> {
        let io_err = |source| WireError::Io { peer: peer.clone(), source };
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(Handshaking { stream, peer, records: RecordReader::new(), read_buf: vec![0; READ_BUFFER] })
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(bytes).map_err(|source| WireError::Io { peer: self.peer.clone(), source })
    }

    fn read_preamble(&mut self) -> Result<Preamble, WireError> {
        let raw = loop {
            if let Some(raw) = self.records.take_raw(PREAMBLE_LEN) {
                break raw;
            }
            fill(&mut self.stream, &mut self.records, &self.peer, &mut self.read_buf)?;
        };
        let raw: [u8; PREAMBLE_LEN] = raw.try_into().expect("take_raw returned PREAMBLE_LEN bytes");
        Preamble::decode(&raw).map_err(|source| self.decode_error(source))
    }

    fn read_record(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(record) = self.records.next_record() {
                return Ok(record);
            }
            fill(&mut self.stream, &mut self.records, &self.peer, &mut self.read_buf)?;
        }
    }

    fn decode_error(&self, source: DecodeError) -> WireError {
        WireError::Decode { peer: self.peer.clone(), source }
    }

    fn established(self, transport: Transport, peer_name: HostName) -> Channel {
        Channel {
            stream: self.stream,
            peer: self.peer,
            peer_name,
            transport,
            records: self.records,
            frames: FrameReader::new(),
            read_buf: self.read_buf,
        }
    }
}

/// The name `key` is enrolled under in `credentials`.
///
/// # Errors
/// [`WireError::UnknownPeer`] naming `peer` when it is not enrolled.
pub(crate) fn enrolled_name(credentials: &Credentials, peer: &str, key: PublicKey) -> Result<HostName, WireError> {
    credentials.peer_name(&key).ok_or_else(|| WireError::UnknownPeer { peer: peer.to_owned(), key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// What each end of a test connection ended with.
    type Ends = (Result<(Channel, Vec<u8>), WireError>, Result<Channel, WireError>);

    fn pair(client: &Credentials, server: Credentials, expect: Option<&HostName>) -> Ends {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            Channel::accept(stream, &server, Duration::from_secs(5), |name, hello| {
                let mut answer = format!("hi {name}: ").into_bytes();
                answer.extend_from_slice(hello);
                answer
            })
        });
        let client = Channel::connect(&addr, client, expect, b"hello", Duration::from_secs(5));
        (client, server.join().unwrap())
    }

    #[test]
    fn hello_and_frames_cross_both_ways() {
        let (desktop, server) = Credentials::mutual(&name("desktop"), &name("server"));
        let (client, server) = pair(&desktop, server, Some(&name("server")));
        let (mut client, answer) = client.unwrap();
        let mut server = server.unwrap();
        assert_eq!(answer, b"hi desktop: hello");
        assert_eq!(client.peer_name().as_str(), "server");
        assert_eq!(server.peer_name().as_str(), "desktop");
        let big = vec![7u8; 300_000];
        client.send(&big).unwrap();
        client.send(b"").unwrap();
        assert_eq!(server.recv().unwrap(), big);
        assert_eq!(server.recv().unwrap(), b"");
        server.send(b"back").unwrap();
        assert_eq!(client.recv().unwrap(), b"back");
        drop(server);
        assert!(matches!(client.recv(), Err(WireError::Closed { .. })));
    }

    #[test]
    fn a_key_not_enrolled_fails_on_both_ends() {
        let (_, server) = Credentials::mutual(&name("desktop"), &name("server"));
        let stranger = trusting(&server, "server");
        let (client, server) = pair(&stranger, server, None);
        assert!(matches!(server, Err(WireError::UnknownPeer { .. })), "{server:?}");
        assert!(
            matches!(client, Err(WireError::AuthFailed)),
            "the client is told, not just cut off: {:?}",
            client.as_ref().err()
        );
    }

    #[test]
    fn a_server_not_enrolled_or_under_another_name_is_refused_by_the_client() {
        let (desktop, server) = Credentials::mutual(&name("desktop"), &name("server"));
        let (client, _) = pair(&desktop, server, Some(&name("server2")));
        let err = client.unwrap_err();
        assert!(matches!(err, WireError::WrongPeer { .. }), "{err}");
        assert!(err.to_string().contains("enrolled here as server, not server2"), "{err}");
        let (desktop, _) = Credentials::mutual(&name("desktop"), &name("server"));
        let impostor = trusting(&desktop, "desktop");
        let (client, _) = pair(&desktop, impostor, None);
        assert!(matches!(client, Err(WireError::UnknownPeer { .. })), "{:?}", client.err());
    }

    fn name(text: &str) -> HostName {
        text.parse().unwrap()
    }

    /// A host with a fresh key that trusts `peer` as `peer_name`, and is
    /// itself enrolled nowhere.
    fn trusting(peer: &Credentials, peer_name: &str) -> Credentials {
        let mut peers = crate::Peers::new();
        peers.insert(name(peer_name), peer.public(), std::path::Path::new("test")).unwrap();
        Credentials::new(crate::HostKey::generate(), peers)
    }
}
