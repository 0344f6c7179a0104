//! The server's side of the wire: a blocking client of memserv or diskserv.
//!
//! [`Client`] is one authenticated connection. [`RemoteImage`] is what memtap
//! and cownetdisk hold: connections to one export that are re-made when the
//! desktop vanishes (it sleeps, it reboots, the link drops), calling the
//! [`WakeHook`] before every attempt, so a guest that needs a page simply
//! waits until the desktop is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cancel::Cancel;
use crate::channel::Channel;
use crate::error::WireError;
use crate::key::Credentials;
use crate::protocol::{ByteRange, Chunk, Hello, HelloReply, Message, Request, Response, Welcome};
use identifiers::HostName;

/// One authenticated connection to an export.
#[derive(Debug)]
pub struct Client {
    channel: Channel,
    welcome: Welcome,
    next_id: u64,
}

impl Client {
    /// Connects to `addr`, authenticates with `credentials` (the server must
    /// be enrolled, as `expect` when given) and asks for `hello`'s export.
    /// `timeout` bounds the connect and every later read.
    ///
    /// # Errors
    /// [`WireError::Connect`] when nobody answers, [`WireError::AuthFailed`],
    /// [`WireError::UnknownPeer`] or [`WireError::WrongPeer`] when a key is
    /// not enrolled, [`WireError::Refused`] for an unknown export.
    pub fn connect(
        addr: &str,
        credentials: &Credentials,
        expect: Option<&HostName>,
        hello: &Hello,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        let (channel, answer) = Channel::connect(addr, credentials, expect, &hello.encode_body(), timeout)?;
        let welcome = match HelloReply::decode_body(&answer).map_err(|source| channel.decode_error(source))? {
            HelloReply::Welcome(w) => w,
            HelloReply::Refused(reason) => {
                return Err(WireError::Refused {
                    peer: channel.peer().to_owned(),
                    export: hello.export.clone(),
                    reason,
                })
            }
        };
        Ok(Client { channel, welcome, next_id: 1 })
    }

    /// What the server said of the export.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a request without waiting for its answer (pipelining).
    ///
    /// # Errors
    /// [`WireError::Io`] when the socket fails.
    pub fn send(&mut self, request: &Request) -> Result<(), WireError> {
        self.channel.send(&request.encode_body())
    }

    /// Waits for the next response.
    ///
    /// # Errors
    /// [`WireError::Io`] on a socket error or time-out, [`WireError::Closed`]
    /// when the server hung up, [`WireError::Decode`] on a bad frame.
    pub fn recv(&mut self) -> Result<Response, WireError> {
        let body = self.channel.recv()?;
        Response::decode_body(&body).map_err(|source| self.channel.decode_error(source))
    }

    /// Reads `ranges` and waits for the data.
    ///
    /// # Errors
    /// [`WireError::Remote`] when the server refused the request (the
    /// connection stays usable), otherwise as [`Client::recv`].
    pub fn read(&mut self, ranges: &[ByteRange]) -> Result<Vec<Chunk>, WireError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Request::read(id, ranges.to_vec()))?;
        match self.recv()? {
            Response::Data { id: got, chunks } if got == id => {
                if !chunks_cover(&chunks, ranges) {
                    return Err(WireError::Mismatch { peer: self.channel.peer().to_owned(), id });
                }
                Ok(chunks)
            }
            Response::Error { id: got, kind, detail } if got == id => {
                Err(WireError::Remote { peer: self.channel.peer().to_owned(), id, kind, detail })
            }
            other => Err(WireError::OutOfOrder { peer: self.channel.peer().to_owned(), want: id, got: other.id() }),
        }
    }
}

/// Whether `chunks` cover `ranges` exactly, in order.
pub fn chunks_cover(chunks: &[Chunk], ranges: &[ByteRange]) -> bool {
    let mut chunks = chunks.iter();
    for range in ranges {
        let Some(end) = range.end() else { return false };
        let mut at = range.offset;
        while at < end {
            match chunks.next() {
                Some(c) if c.offset() == at && !c.is_empty() && c.len() <= end - at => at += c.len(),
                _ => return false,
            }
        }
    }
    chunks.next().is_none()
}

/// Asked before every fetch from a desktop: makes sure it is awake.
///
/// The remote-wakeup daemon implements it with Wake-on-LAN; [`NoWake`] is
/// for desktops that never sleep.
pub trait WakeHook: Send + Sync + std::fmt::Debug {
    /// Returns once the desktop should answer. Called again before each
    /// retry after a failed fetch.
    fn wake(&self);
}

/// A [`WakeHook`] for a desktop that is always awake.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWake;

impl WakeHook for NoWake {
    fn wake(&self) {}
}

/// Where an export is and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `host:port` of memserv or diskserv.
    pub addr: String,
    /// This host's key and its enrolled peers.
    pub credentials: Arc<Credentials>,
    /// The name the desktop at `addr` must be enrolled under (`None`: any
    /// enrolled peer).
    pub peer: Option<HostName>,
    /// The export asked for.
    pub hello: Hello,
    /// Bound on connect and on each read; a desktop that falls asleep
    /// mid-request is noticed after this long.
    pub timeout: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// Give up after this long without success; `None` retries for ever
    /// (the guest waits).
    pub give_up_after: Option<Duration>,
    /// Ends the retries at once when cancelled (the VM is being ended).
    pub cancel: Cancel,
}

impl RemoteConfig {
    /// Defaults: any enrolled peer, 10 s timeout, back-off up to 2 s, never
    /// give up, a token of its own (never cancelled unless a clone is taken).
    pub fn new(addr: impl Into<String>, credentials: Arc<Credentials>, hello: Hello) -> Self {
        RemoteConfig {
            addr: addr.into(),
            credentials,
            peer: None,
            hello,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(2),
            give_up_after: None,
            cancel: Cancel::new(),
        }
    }

    /// One connection to the export, without retries.
    ///
    /// # Errors
    /// Those of [`Client::connect`].
    pub fn connect(&self) -> Result<Client, WireError> {
        Client::connect(&self.addr, &self.credentials, self.peer.as_ref(), &self.hello, self.timeout)
    }
}

/// An export on a desktop, read through re-made connections.
#[derive(Debug)]
pub struct RemoteImage {
    config: RemoteConfig,
    wake: std::sync::Arc<dyn WakeHook>,
    idle: Mutex<Vec<Client>>,
    welcome: Welcome,
}

impl RemoteImage {
    /// Connects once (through the wake hook, with retries) to learn the
    /// export's size.
    ///
    /// # Errors
    /// As [`RemoteImage::read`].
    pub fn connect(config: RemoteConfig, wake: std::sync::Arc<dyn WakeHook>) -> Result<Self, WireError> {
        let client = retry(&config, wake.as_ref(), |c| c.connect())?;
        let welcome = client.welcome().clone();
        Ok(RemoteImage { config, wake, idle: Mutex::new(vec![client]), welcome })
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.welcome.size
    }

    /// The export's unit (page or block size).
    pub fn unit(&self) -> u32 {
        self.welcome.unit
    }

    /// Reads `ranges`, waking the desktop first and retrying through lost
    /// connections until it answers.
    ///
    /// # Errors
    /// [`WireError::Remote`] at once when the server refuses the request
    /// (retrying cannot help) and [`WireError::Refused`] at once; other
    /// errors, [`WireError::AuthFailed`] among them (retried every
    /// [`AUTH_RETRY`] and logged as such), only after `give_up_after`.
    pub fn read(&self, ranges: &[ByteRange]) -> Result<Vec<Chunk>, WireError> {
        retry(&self.config, self.wake.as_ref(), |config| {
            let pooled = self.idle.lock().expect("pool lock poisoned: a thread panicked holding it").pop();
            let mut client = match pooled {
                Some(c) => c,
                None => config.connect()?,
            };
            let result = client.read(ranges);
            if result.is_ok() || matches!(result, Err(WireError::Remote { .. })) {
                self.idle.lock().expect("pool lock poisoned: a thread panicked holding it").push(client);
            }
            result
        })
    }
}

/// How long to wait before trying again after an authentication failure.
pub const AUTH_RETRY: Duration = Duration::from_secs(30);

/// Whether retrying can help after `err`.
fn is_transient(err: &WireError) -> bool {
    matches!(
        err,
        WireError::Connect { .. } | WireError::Io { .. } | WireError::Closed { .. } | WireError::Decode { .. }
    )
}

/// Runs `attempt` after waking the desktop, again after each transient
/// failure, with doubling pauses, until `config.cancel` is cancelled.
fn retry<T>(
    config: &RemoteConfig,
    wake: &dyn WakeHook,
    mut attempt: impl FnMut(&RemoteConfig) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    let cancelled = || WireError::Cancelled { addr: config.addr.clone(), export: config.hello.export.clone() };
    loop {
        if config.cancel.is_cancelled() {
            return Err(cancelled());
        }
        wake.wake();
        match attempt(config) {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) || is_a_key_problem(&e) => {
                if config.give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(e);
                }
                let (addr, export) = (&config.addr, &config.hello.export);
                let wait = if is_a_key_problem(&e) {
                    // Logged as what it is, and retried slowly: a key is fixed
                    // by a person enrolling it, not by hammering.
                    tracing::error!(%addr, %export, "{e}; retrying in {} s", AUTH_RETRY.as_secs());
                    AUTH_RETRY
                } else {
                    tracing::warn!(%addr, %export, error = %crate::error::chain(&e), "fetch failed; retrying in {pause:?}");
                    let wait = pause;
                    pause = (pause * 2).min(config.max_backoff);
                    wait
                };
                if !config.cancel.sleep(wait) {
                    return Err(cancelled());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` is a key one end does not accept: a person must enroll it.
fn is_a_key_problem(e: &WireError) -> bool {
    matches!(e, WireError::AuthFailed | WireError::UnknownPeer { .. } | WireError::WrongPeer { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_cover_checks() {
        let ranges = [ByteRange::new(0, 8192), ByteRange::new(100, 1)];
        let good = [
            Chunk::Zero { offset: 0, len: 4096 },
            Chunk::Bytes { offset: 4096, data: vec![1; 4096] },
            Chunk::Bytes { offset: 100, data: vec![7] },
        ];
        assert!(chunks_cover(&good, &ranges));
        assert!(!chunks_cover(&good[..2], &ranges));
        let gap = [Chunk::Zero { offset: 0, len: 4096 }, Chunk::Bytes { offset: 4097, data: vec![1; 4095] }];
        assert!(!chunks_cover(&gap, &ranges[..1]));
        let overrun = [Chunk::Zero { offset: 0, len: 9000 }];
        assert!(!chunks_cover(&overrun, &ranges[..1]));
    }

    #[test]
    fn a_cancel_ends_a_retry_that_would_wait_for_ever() {
        // A port nothing listens on: every attempt is refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let hello = Hello::new(crate::Service::Memory, "vm1");
        let (credentials, _) = Credentials::mutual(&"server".parse().unwrap(), &"desktop".parse().unwrap());
        let config = RemoteConfig::new(addr.clone(), Arc::new(credentials), hello);
        let cancel = config.cancel.clone();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        });
        let result = retry(&config, &NoWake, |c| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            c.connect()
        });
        canceller.join().unwrap();
        match result {
            Err(WireError::Cancelled { addr: got, export }) => assert_eq!((got, export.as_str()), (addr, "vm1")),
            other => panic!("expected Cancelled, got {other:?}"),
        }
        assert!(attempts.into_inner() >= 2, "it retried until cancelled");
    }
}
