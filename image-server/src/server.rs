//! The event loop: one mio thread serving TCP peers and local event
//! listeners.
//!
//! Tokens: [`LISTENER`] for new TCP peers, [`EVENT_LISTENER`] for new local
//! listeners, [`STOP`] for the stop waker; connections get tokens from
//! [`FIRST_CONNECTION`] on. A peer that breaks the protocol loses its own
//! connection only; the loop itself ends only when stopped or when polling
//! fails.
//!
//! # Peers that have not proved themselves
//!
//! The Noise handshake's first message can be recorded and replayed by
//! anyone on the LAN (or forged with any enrolled peer's public key), and a
//! TCP connection costs nothing to open, so a peer counts as *proven* only
//! once its first request decrypts: that takes the private key of an
//! enrolled server and a completed handshake. Until then:
//!
//! - a peer that has not sent its hello within [`HELLO_DEADLINE`] is closed;
//! - at most [`MAX_UNPROVEN`] unproven peers are kept, at most
//!   [`MAX_UNPROVEN_PER_SOURCE`] from one address: a newcomer over either
//!   cap replaces the oldest unproven peer (of its address, else of all), so
//!   a legitimate client is always let in and served at once;
//! - when the process runs out of file descriptors, the oldest unproven
//!   peer is closed to make room, and accepting resumes on a timer if
//!   there is none (the listener is edge-triggered and would not wake the
//!   loop again);
//! - nothing is reported on the event socket: `connected` and every other
//!   event describe proven peers only, so a replayed handshake never counts
//!   as activity for the power policy.

use std::collections::HashMap;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_loop::StopHandle;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};
use wire::{chain, Credentials, Event, HelloReply, Request, ServerSession, Service, Welcome};

use crate::error::ServeError;
use crate::events::{EventKind, RequestEvent};
use crate::image::Image;
use crate::respond::answer;

/// New TCP peers.
const LISTENER: Token = Token(0);
/// New local event listeners.
const EVENT_LISTENER: Token = Token(1);
/// The stop waker.
const STOP: Token = Token(2);
/// The first token given to a connection.
const FIRST_CONNECTION: usize = 16;
/// Stop reading a peer's requests while this much output waits to be sent.
const OUTPUT_HIGH_WATER: usize = 8 * 1024 * 1024;
/// Bytes read from a proven peer's socket at a time.
const READ_BUFFER: usize = 256 * 1024;
/// Bytes read at a time from a peer that has not proved itself: enough for
/// a handshake, and cheap to hold for many.
const UNPROVEN_READ_BUFFER: usize = 4 * 1024;
/// Drop an event listener that has this much unread output.
const LISTENER_BACKLOG_LIMIT: usize = 1024 * 1024;
/// How long a new peer has to send its hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// Most peers kept before their first request (see the module doc).
pub const MAX_UNPROVEN: usize = 64;
/// Most unproven peers kept from one address.
pub const MAX_UNPROVEN_PER_SOURCE: usize = 8;
/// How soon accepting is tried again after the process ran out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a daemon serves and where.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// TCP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// This desktop's key and the servers it serves (its enrolled peers).
    pub credentials: std::sync::Arc<Credentials>,
    /// The service offered.
    pub service: Service,
    /// The export's name (the VM's name); [`Server::add_export`] adds
    /// more (a VM's further disks).
    pub export: String,
    /// Unix socket for the local event stream, if any.
    pub events: Option<PathBuf>,
    /// In a fleet, the stay's fencing token: a hello presenting another is
    /// refused (a server that no longer holds the VM gets nothing).
    pub fence: Option<u64>,
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    config: ServeConfig,
    /// The exports by name: the first is `config.export`'s.
    exports: Vec<(String, Arc<dyn Image>)>,
    poll: Poll,
    listener: TcpListener,
    event_listener: Option<UnixListener>,
    stop: StopHandle,
}

impl Server {
    /// Binds the TCP listener and the event socket.
    ///
    /// # Errors
    /// [`ServeError::Bind`] or [`ServeError::EventSocket`] naming what could
    /// not be created.
    pub fn bind(config: ServeConfig, image: Arc<dyn Image>) -> Result<Self, ServeError> {
        let poll = Poll::new().map_err(ServeError::Poll)?;
        let mut listener =
            TcpListener::bind(config.listen).map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(ServeError::Poll)?;
        let event_listener = match &config.events {
            Some(path) => {
                let socket_err = |source| ServeError::EventSocket { path: path.clone(), source };
                // A socket file left by a daemon that died is stale: replace it.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path).map_err(socket_err)?;
                }
                let mut l = UnixListener::bind(path).map_err(socket_err)?;
                poll.registry().register(&mut l, EVENT_LISTENER, Interest::READABLE).map_err(ServeError::Poll)?;
                Some(l)
            }
            None => None,
        };
        let stop = StopHandle::new(poll.registry(), STOP).map_err(ServeError::Poll)?;
        let exports = vec![(config.export.clone(), image)];
        Ok(Server { config, exports, poll, listener, event_listener, stop })
    }

    /// Serves `image` too, to peers whose hello names `name` (a VM's
    /// further disk beside its first, on the same port). Names are matched
    /// whole against those given here, never parsed.
    ///
    /// # Errors
    /// [`ServeError::ExportTwice`] when `name` is already served.
    pub fn add_export(&mut self, name: String, image: Arc<dyn Image>) -> Result<(), ServeError> {
        if self.exports.iter().any(|(served, _)| *served == name) {
            return Err(ServeError::ExportTwice { name });
        }
        self.exports.push((name, image));
        Ok(())
    }

    /// The address actually listened on.
    ///
    /// # Errors
    /// The socket's error, which does not happen on a bound listener.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops the loop.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until stopped.
    ///
    /// # Errors
    /// [`ServeError::Poll`] if the operating system's poll fails.
    pub fn run(mut self) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(256);
        let mut conns: HashMap<Token, Conn> = HashMap::new();
        let mut next_token = FIRST_CONNECTION;
        let mut accept_retry: Option<Instant> = None;
        tracing::info!(
            listen = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            export = %self.config.export,
            exports = self.exports.len(),
            service = %self.config.service,
            size = self.exports[0].1.size(),
            "serving"
        );
        while !self.stop.is_stopped() {
            let timeout = next_wake(&conns, accept_retry).map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == IoErrorKind::Interrupted {
                    continue;
                }
                return Err(ServeError::Poll(e));
            }
            close_late_peers(&mut conns, &self.poll);
            if accept_retry.is_some_and(|at| at <= Instant::now()) {
                accept_retry = self.accept_peers(&mut conns, &mut next_token);
            }
            for event in events.iter() {
                match event.token() {
                    STOP => {}
                    LISTENER => accept_retry = self.accept_peers(&mut conns, &mut next_token),
                    EVENT_LISTENER => self.accept_listeners(&mut conns, &mut next_token),
                    token => {
                        let done = match conns.get_mut(&token) {
                            Some(Conn::Peer(peer)) => {
                                let mut ctx = Context {
                                    registry: self.poll.registry(),
                                    config: &self.config,
                                    exports: &self.exports,
                                    notes: Vec::new(),
                                };
                                let done = peer.handle(&mut ctx);
                                let notes = ctx.notes;
                                broadcast(&mut conns, &notes);
                                done
                            }
                            Some(Conn::Listener(l)) => l.flush(),
                            None => false,
                        };
                        if done {
                            if let Some(mut conn) = conns.remove(&token) {
                                conn.deregister(&self.poll);
                            }
                        }
                    }
                }
            }
        }
        tracing::info!(export = %self.config.export, "stopped");
        Ok(())
    }

    /// Accepts every waiting peer, making room as the module doc says.
    /// Returns when to try again if the process ran out of descriptors with
    /// nothing left to close.
    fn accept_peers(&mut self, conns: &mut HashMap<Token, Conn>, next_token: &mut usize) -> Option<Instant> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, addr)) => {
                    make_room_for(conns, addr.ip(), &self.poll);
                    let token = Token(*next_token);
                    *next_token += 1;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE) {
                        tracing::warn!(%addr, "cannot watch new connection: {e}");
                        continue;
                    }
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
                    }
                    let session = ServerSession::new(std::sync::Arc::clone(&self.config.credentials), addr.to_string());
                    conns.insert(token, Conn::Peer(Box::new(PeerConn::new(stream, token, addr, session))));
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(e) if is_out_of_descriptors(&e) => {
                    if close_oldest_unproven(conns, None, &self.poll) {
                        continue;
                    }
                    tracing::warn!("accept failed: {e}; trying again in {} ms", ACCEPT_RETRY.as_millis());
                    return Some(Instant::now() + ACCEPT_RETRY);
                }
                Err(e) => {
                    // A connection reset before it was accepted and the like:
                    // log and keep serving the others.
                    tracing::warn!("accept failed: {e}");
                    return Some(Instant::now() + ACCEPT_RETRY);
                }
            }
        }
    }

    fn accept_listeners(&mut self, conns: &mut HashMap<Token, Conn>, next_token: &mut usize) {
        let Some(listener) = &self.event_listener else { return };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let token = Token(*next_token);
                    *next_token += 1;
                    if self.poll.registry().register(&mut stream, token, Interest::WRITABLE).is_ok() {
                        conns.insert(token, Conn::Listener(ListenerConn { stream, out: Vec::new() }));
                    }
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => return,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("accept on the event socket failed: {e}");
                    return;
                }
            }
        }
    }
}

/// What a peer's handler needs from the server, and the events it produced.
struct Context<'a> {
    registry: &'a Registry,
    config: &'a ServeConfig,
    exports: &'a [(String, Arc<dyn Image>)],
    notes: Vec<RequestEvent>,
}

impl Context<'_> {
    /// Records an event of a peer of export `export` (an index into
    /// `exports`; the first export's name before a hello).
    fn note(&mut self, kind: EventKind, export: Option<usize>, peer: &str, ranges: u32, bytes: u64) {
        let service = self.config.service.to_string();
        let name = &self.exports[export.unwrap_or(0)].0;
        self.notes.push(RequestEvent::now(kind, &service, name, peer, ranges, bytes));
    }
}

/// Sends events to every local listener, dropping those that fell behind.
fn broadcast(conns: &mut HashMap<Token, Conn>, notes: &[RequestEvent]) {
    if notes.is_empty() {
        return;
    }
    let lines: Vec<u8> = notes.iter().flat_map(RequestEvent::to_line).collect();
    for conn in conns.values_mut() {
        if let Conn::Listener(l) = conn {
            if l.out.len() < LISTENER_BACKLOG_LIMIT {
                l.out.extend_from_slice(&lines);
            } else {
                l.out.clear();
                l.out.extend_from_slice(b"{\"kind\":\"overflow\"}\n");
            }
            l.flush();
        }
    }
}

/// The earliest moment the loop must wake without an event: a hello
/// deadline or an accept retry.
fn next_wake(conns: &HashMap<Token, Conn>, accept_retry: Option<Instant>) -> Option<Instant> {
    let deadlines = conns.values().filter_map(|conn| match conn {
        Conn::Peer(p) => p.hello_deadline(),
        Conn::Listener(_) => None,
    });
    deadlines.chain(accept_retry).min()
}

/// Closes the peers that did not say hello in time.
fn close_late_peers(conns: &mut HashMap<Token, Conn>, poll: &Poll) {
    let now = Instant::now();
    let late: Vec<Token> = conns
        .iter()
        .filter_map(|(token, conn)| match conn {
            Conn::Peer(p) if p.hello_deadline().is_some_and(|at| at <= now) => Some(*token),
            _ => None,
        })
        .collect();
    for token in late {
        close_unproven(conns, token, poll, "sent no hello in time");
    }
}

/// Removes the unproven peer `token` and stops watching it; `why` goes to
/// the debug log (an attack makes many of these).
fn close_unproven(conns: &mut HashMap<Token, Conn>, token: Token, poll: &Poll, why: &str) {
    if let Some(mut conn) = conns.remove(&token) {
        if let Conn::Peer(p) = &conn {
            tracing::debug!(peer = %p.peer, "closing a peer that {why}");
        }
        conn.deregister(poll);
    }
}

/// Before a peer from `source` joins: if the unproven peers are at either
/// cap, closes the oldest one (from `source` for its own cap).
fn make_room_for(conns: &mut HashMap<Token, Conn>, source: IpAddr, poll: &Poll) {
    let (mut all, mut from_source) = (0, 0);
    for conn in conns.values() {
        if let Conn::Peer(p) = conn {
            if !p.proven {
                all += 1;
                from_source += usize::from(p.source == source);
            }
        }
    }
    if from_source >= MAX_UNPROVEN_PER_SOURCE {
        close_oldest_unproven(conns, Some(source), poll);
    } else if all >= MAX_UNPROVEN {
        close_oldest_unproven(conns, None, poll);
    }
}

/// Closes the oldest unproven peer (from `source`, if given); returns
/// whether there was one.
fn close_oldest_unproven(conns: &mut HashMap<Token, Conn>, source: Option<IpAddr>, poll: &Poll) -> bool {
    let oldest = conns
        .iter()
        .filter_map(|(token, conn)| match conn {
            Conn::Peer(p) if !p.proven && source.is_none_or(|s| s == p.source) => Some((p.accepted_at, *token)),
            _ => None,
        })
        .min();
    let Some((_, token)) = oldest else { return false };
    close_unproven(conns, token, poll, "is the oldest to have sent no request, to make room");
    true
}

/// Whether an accept failed because the process or system has no
/// descriptor left.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A connection the loop owns.
enum Conn {
    Peer(Box<PeerConn>),
    Listener(ListenerConn),
}

impl Conn {
    fn deregister(&mut self, poll: &Poll) {
        let result = match self {
            Conn::Peer(p) => poll.registry().deregister(&mut p.stream),
            Conn::Listener(l) => poll.registry().deregister(&mut l.stream),
        };
        if let Err(e) = result {
            tracing::debug!("deregister failed: {e}");
        }
    }
}

/// A local event listener: we only write to it.
struct ListenerConn {
    stream: UnixStream,
    out: Vec<u8>,
}

impl ListenerConn {
    /// Writes what it can; returns whether the listener is gone.
    fn flush(&mut self) -> bool {
        match write_some(&mut self.stream, &mut self.out) {
            Ok(()) => false,
            Err(_) => true,
        }
    }
}

/// A TCP peer (memtap or cownetdisk).
struct PeerConn {
    stream: TcpStream,
    token: Token,
    peer: String,
    source: IpAddr,
    accepted_at: Instant,
    session: ServerSession,
    out: Vec<u8>,
    /// Its hello arrived (valid or not).
    said_hello: bool,
    /// The export it was welcomed to (an index into the server's exports).
    export: Option<usize>,
    /// A request of it decrypted: it completed the handshake.
    proven: bool,
    writable_interest: bool,
    /// Reused for every socket read: small until the peer is proven.
    read_buf: Vec<u8>,
}

impl PeerConn {
    fn new(stream: TcpStream, token: Token, addr: SocketAddr, session: ServerSession) -> Self {
        PeerConn {
            stream,
            token,
            peer: addr.to_string(),
            source: addr.ip(),
            accepted_at: Instant::now(),
            session,
            out: Vec::new(),
            said_hello: false,
            export: None,
            proven: false,
            writable_interest: false,
            read_buf: vec![0; UNPROVEN_READ_BUFFER],
        }
    }

    /// When it must have said hello by, if it has not yet.
    fn hello_deadline(&self) -> Option<Instant> {
        (!self.said_hello).then_some(self.accepted_at + HELLO_DEADLINE)
    }

    /// Reads, answers and writes as far as possible. Returns whether the
    /// connection is finished.
    fn handle(&mut self, ctx: &mut Context<'_>) -> bool {
        let done = self.pump(ctx);
        if done && self.proven {
            ctx.note(EventKind::Disconnected, self.export, &self.peer, 0, 0);
        }
        done
    }

    fn pump(&mut self, ctx: &mut Context<'_>) -> bool {
        loop {
            // Answer what has arrived, unless the peer is not reading our answers.
            while self.out.len() < OUTPUT_HIGH_WATER {
                match self.session.poll(&mut self.out) {
                    Ok(Some(event)) => self.on_event(event, ctx),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, "closing connection: {}", chain(&e));
                        break;
                    }
                }
            }
            if write_some(&mut self.stream, &mut self.out).is_err() {
                return true;
            }
            if self.session.is_closed() {
                // Flush what is left (a refusal, a version answer) and go.
                return self.out.is_empty() || !self.want_writable(ctx.registry);
            }
            if self.out.len() >= OUTPUT_HIGH_WATER {
                return !self.want_writable(ctx.registry);
            }
            match read_some(&mut self.stream, &mut self.read_buf) {
                Ok(Some(n)) => self.session.receive(&self.read_buf[..n]),
                Ok(None) => return !self.want_writable(ctx.registry),
                Err(()) => return true,
            }
        }
    }

    /// Registers interest in writability while output is pending; returns
    /// false if the registration failed (the connection is then dropped).
    fn want_writable(&mut self, registry: &Registry) -> bool {
        let want = !self.out.is_empty();
        if want == self.writable_interest {
            return true;
        }
        self.writable_interest = want;
        let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        registry.reregister(&mut self.stream, self.token, interest).is_ok()
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<'_>) {
        match event {
            Event::Hello(hello) => {
                self.said_hello = true;
                let export = ctx.exports.iter().position(|(name, _)| *name == hello.export);
                let reply = match export {
                    _ if hello.service != ctx.config.service => {
                        HelloReply::Refused(format!("this daemon serves {}, not {}", ctx.config.service, hello.service))
                    }
                    _ if ctx.config.fence.is_some_and(|fence| fence != hello.fence) => HelloReply::Refused(format!(
                        "fencing token {} is not this stay's ({}): the server presenting it no longer holds the VM \
                         in etcd",
                        hello.fence,
                        ctx.config.fence.unwrap_or_default()
                    )),
                    None => HelloReply::Refused(format!(
                        "this daemon serves {:?}, not {:?}",
                        ctx.exports.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", "),
                        hello.export
                    )),
                    Some(i) => {
                        let image = &ctx.exports[i].1;
                        HelloReply::Welcome(Welcome { size: image.size(), unit: image.unit() })
                    }
                };
                if let HelloReply::Refused(reason) = &reply {
                    tracing::warn!(peer = %self.peer, "refused: {reason}");
                }
                let welcomed = if matches!(reply, HelloReply::Welcome(_)) { export } else { None };
                if let Err(e) = self.session.answer_hello(&reply, &mut self.out) {
                    tracing::warn!(peer = %self.peer, "handshake failed: {}", chain(&e));
                    return;
                }
                // Not yet `connected`: a replayed hello gets this far too.
                self.export = welcomed;
            }
            Event::Request(Request::Read { id, ranges }) => {
                let Some(export) = self.export else {
                    // The session passes requests only after a welcome.
                    tracing::warn!(peer = %self.peer, "a request before a welcome: ignored");
                    return;
                };
                if !self.proven {
                    // Its request decrypted: it holds the private key of
                    // the enrolled server it claimed to be.
                    self.proven = true;
                    self.read_buf.resize(READ_BUFFER, 0);
                    ctx.note(EventKind::Connected, self.export, &self.peer, 0, 0);
                }
                let response = answer(ctx.exports[export].1.as_ref(), id, &ranges);
                let bytes = ranges.iter().map(|r| u64::from(r.len)).sum();
                let kind = match &response {
                    wire::Response::Data { .. } => EventKind::Request,
                    wire::Response::Error { kind, detail, .. } => {
                        tracing::warn!(peer = %self.peer, id, "bad request: {kind}: {detail}");
                        EventKind::Rejected
                    }
                };
                ctx.note(kind, self.export, &self.peer, ranges.len() as u32, bytes);
                if let Err(e) = self.session.send(&response, &mut self.out) {
                    tracing::warn!(peer = %self.peer, "cannot encrypt reply: {}", chain(&e));
                }
            }
        }
    }
}

/// Reads once into `buf`: `Some(n)` bytes, `None` when it would block,
/// `Err` when the peer is gone.
fn read_some(stream: &mut impl Read, buf: &mut [u8]) -> Result<Option<usize>, ()> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(()),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == IoErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        }
    }
}

/// Writes as much of `out` as the socket takes, removing it from `out`.
fn write_some(stream: &mut impl Write, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut written = 0;
    while written < out.len() {
        match stream.write(&out[written..]) {
            Ok(0) => return Err(std::io::Error::from(IoErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    out.drain(..written);
    Ok(())
}
