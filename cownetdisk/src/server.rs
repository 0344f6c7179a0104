//! The listening side: a Unix socket and/or a TCP listener, polled with mio
//! beside a stop waker; a thread per accepted connection; the stats file
//! refreshed every second; and a clean shutdown that lets requests in
//! flight finish, then flushes.
//!
//! Tokens: [`TCP`] and [`UNIX`] for the listeners, [`STOP`] for the waker.
//! The poll also times out every [`STATS_INTERVAL`] to refresh the stats.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_loop::StopHandle;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};

use crate::connection::{self, Stream};
use crate::disk::Disk;
use crate::error::CownetdiskError;
use crate::stats::{Counters, DiskStats};

/// New TCP clients.
const TCP: Token = Token(0);
/// New clients on the Unix socket.
const UNIX: Token = Token(1);
/// The stop waker.
const STOP: Token = Token(2);
/// How often the stats file is refreshed (when something changed).
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed at accept. A VM's disk has
/// one QEMU and the odd tool.
const MAX_CONNECTIONS: usize = 64;
/// How long a shutdown waits for connections, once to let requests in
/// flight finish, once more after cutting the sockets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where to listen; at least one must be given.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// A Unix socket path (a stale socket file there is replaced).
    pub unix: Option<PathBuf>,
    /// A TCP address (port 0 picks one).
    pub tcp: Option<SocketAddr>,
}

/// An NBD server of one disk, bound and not yet running.
#[derive(Debug)]
pub struct NbdServer {
    disk: Arc<Disk>,
    poll: Poll,
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    stop: StopHandle,
    live: Arc<Live>,
    next_id: u64,
}

impl NbdServer {
    /// Binds the listeners for `disk`.
    ///
    /// # Errors
    /// [`CownetdiskError::NoListener`] when `listen` names nothing;
    /// [`CownetdiskError::ListenTcp`], [`CownetdiskError::ListenUnix`] or
    /// [`CownetdiskError::Poll`] naming what could not be set up.
    pub fn bind(disk: Arc<Disk>, listen: &Listen) -> Result<Self, CownetdiskError> {
        if listen.unix.is_none() && listen.tcp.is_none() {
            return Err(CownetdiskError::NoListener);
        }
        let poll = Poll::new().map_err(CownetdiskError::Poll)?;
        let tcp = match listen.tcp {
            Some(addr) => {
                let mut listener =
                    TcpListener::bind(addr).map_err(|source| CownetdiskError::ListenTcp { addr, source })?;
                poll.registry().register(&mut listener, TCP, Interest::READABLE).map_err(CownetdiskError::Poll)?;
                Some(listener)
            }
            None => None,
        };
        let unix = match &listen.unix {
            Some(path) => {
                let unix_err = |source| CownetdiskError::ListenUnix { path: path.clone(), source };
                // A socket file left by a daemon that died is stale: replace it.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path).map_err(unix_err)?;
                }
                let mut listener = UnixListener::bind(path).map_err(unix_err)?;
                poll.registry().register(&mut listener, UNIX, Interest::READABLE).map_err(CownetdiskError::Poll)?;
                Some((listener, path.clone()))
            }
            None => None,
        };
        let stop = StopHandle::new(poll.registry(), STOP).map_err(CownetdiskError::Poll)?;
        Ok(NbdServer { disk, poll, tcp, unix, stop, live: Arc::default(), next_id: 1 })
    }

    /// The TCP address listened on, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The Unix socket listened on, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, path)| path.as_path())
    }

    /// The disk served.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// A handle that stops the server.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until stopped, then lets requests in flight finish, closes
    /// the connections, flushes the disk and writes the stats file.
    ///
    /// # Errors
    /// [`CownetdiskError::Poll`] if the operating system's poll fails (the
    /// shutdown still happens), [`CownetdiskError::Io`] if the final flush
    /// fails.
    pub fn run(mut self) -> Result<(), CownetdiskError> {
        tracing::info!(
            vm = self.disk.name(),
            size = self.disk.size(),
            tcp = ?self.tcp_addr(),
            unix = ?self.unix_path(),
            "serving NBD"
        );
        let served = self.serve_until_stopped();
        let shut = self.shut_down();
        served.and(shut)
    }

    fn serve_until_stopped(&mut self) -> Result<(), CownetdiskError> {
        let mut events = Events::with_capacity(16);
        let mut published: Option<DiskStats> = None;
        let mut refreshed = Instant::now();
        while !self.stop.is_stopped() {
            if let Err(e) = self.poll.poll(&mut events, Some(STATS_INTERVAL)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(CownetdiskError::Poll(e));
            }
            for event in events.iter() {
                for (stream, peer) in self.accept(event.token()) {
                    self.start(stream, peer);
                }
            }
            if refreshed.elapsed() >= STATS_INTERVAL {
                self.refresh_stats(&mut published);
                refreshed = Instant::now();
            }
        }
        Ok(())
    }

    /// Accepts every client waiting on the listener of `token`.
    fn accept(&self, token: Token) -> Vec<(Stream, String)> {
        let mut accepted = Vec::new();
        loop {
            let result = match (token, &self.tcp, &self.unix) {
                (TCP, Some(listener), _) => listener.accept().and_then(|(stream, addr)| {
                    let stream = std::net::TcpStream::from(stream);
                    stream.set_nonblocking(false)?;
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
                    }
                    Ok((Stream::Tcp(stream), addr.to_string()))
                }),
                (UNIX, _, Some((listener, path))) => listener.accept().and_then(|(stream, _)| {
                    let stream = std::os::unix::net::UnixStream::from(stream);
                    stream.set_nonblocking(false)?;
                    Ok((Stream::Unix(stream), format!("unix:{}", path.display())))
                }),
                _ => return accepted,
            };
            match result {
                Ok(client) => accepted.push(client),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return accepted,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!("accept failed: {e}");
                    return accepted;
                }
            }
        }
    }

    /// Starts a thread serving `stream`.
    fn start(&mut self, stream: Stream, peer: String) {
        let served = Arc::new(AtomicBool::new(false));
        let id = self.next_id;
        self.next_id += 1;
        let peer = format!("{peer}#{id}");
        {
            let mut live = self.live.lock();
            if live.len() >= MAX_CONNECTIONS && !close_oldest_unserved(&live) {
                tracing::warn!(peer, "refusing a connection: {MAX_CONNECTIONS} are open and each has been served");
                return;
            }
            match stream.try_clone() {
                Ok(handle) => {
                    live.insert(id, LiveConn { stream: handle, accepted: Instant::now(), served: Arc::clone(&served) })
                }
                Err(e) => {
                    tracing::warn!(peer, "refusing a connection: cannot clone its socket: {e}");
                    return;
                }
            };
        }
        Counters::add(&self.disk.counters().connections, 1);
        let registration = Registration { live: Arc::clone(&self.live), id };
        let disk = Arc::clone(&self.disk);
        let stopping = self.stop.flag();
        let spawned = std::thread::Builder::new().name(format!("nbd-{id}")).spawn(move || {
            // Dropped in this order so that, once the connection is gone
            // from the live set, it no longer holds the disk.
            let registration = registration;
            let disk = disk;
            connection::serve(stream, &peer, &disk, &stopping, &served);
            drop(disk);
            drop(registration);
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for a connection: {e}");
        }
    }

    /// Rewrites the stats file if anything changed since it was last written.
    fn refresh_stats(&self, published: &mut Option<DiskStats>) {
        let stats = self.disk.stats();
        if published.as_ref() == Some(&stats) {
            return;
        }
        match stats.write_atomically(self.disk.stats_path()) {
            Ok(()) => *published = Some(stats),
            Err(e) => {
                tracing::warn!(path = %self.disk.stats_path().display(), "cannot write the stats file: {e}");
                // Tried again when the stats change, not at every poll.
                *published = Some(stats);
            }
        }
    }

    /// Ends every connection, then flushes the disk and writes the stats.
    ///
    /// Requests in flight finish first: shutting down only the reading side
    /// of each socket lets a connection answer what it has read, then see
    /// the end of its input. A connection still busy after the grace period
    /// (waiting on a diskserv that does not come back, or on a client that
    /// does not read) is cut; one that still does not end is left behind:
    /// it can no longer answer anyone, so nothing it writes was promised.
    fn shut_down(&self) -> Result<(), CownetdiskError> {
        self.stop.stop();
        let open = self.live.lock().len();
        if open > 0 {
            tracing::info!(vm = self.disk.name(), "stopping: letting {open} connections finish their requests");
        }
        self.live.shutdown_all(Shutdown::Read);
        let mut left = self.live.wait_until_empty(SHUTDOWN_GRACE);
        if left > 0 {
            tracing::warn!(
                vm = self.disk.name(),
                "{left} connections still busy after {SHUTDOWN_GRACE:?}: cutting them"
            );
            self.live.shutdown_all(Shutdown::Both);
            left = self.live.wait_until_empty(SHUTDOWN_GRACE);
        }
        if left > 0 {
            tracing::warn!(vm = self.disk.name(), "{left} connections did not end; flushing without them");
        }
        if let Some((_, path)) = &self.unix {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove the socket: {e}");
            }
        }
        let flushed = self.disk.flush();
        match self.disk.publish_stats() {
            Ok(stats) => tracing::info!("stopped: {}", stats.summary()),
            Err(e) => tracing::warn!("{}", wire::chain(&e)),
        }
        flushed
    }
}

/// An open connection, as the server sees it from outside its thread.
#[derive(Debug)]
struct LiveConn {
    /// Its socket, so that a shutdown can reach it.
    stream: Stream,
    /// When it was accepted.
    accepted: Instant,
    /// Whether it has sent a request after negotiating (set by its thread).
    served: Arc<AtomicBool>,
}

/// When every connection slot is taken: closes the oldest connection that
/// has not sent a request since it connected (one that only negotiated, or
/// not even that), so that a client that does work is let in. Its thread
/// sees the closed socket and leaves the live set. Returns whether there
/// was one.
fn close_oldest_unserved(live: &HashMap<u64, LiveConn>) -> bool {
    let oldest = live.values().filter(|c| !c.served.load(Ordering::Acquire)).min_by_key(|c| c.accepted);
    let Some(conn) = oldest else { return false };
    tracing::info!("closing the oldest connection that has sent no request, to make room");
    if let Err(e) = conn.stream.shutdown(Shutdown::Both) {
        tracing::debug!("shutting down a connection: {e}");
    }
    // A shut-down connection stays in the map until its thread leaves;
    // marking it served keeps the next newcomer from picking it again.
    conn.served.store(true, Ordering::Release);
    true
}

/// The open connections, so that a shutdown can reach them.
#[derive(Debug, Default)]
struct Live {
    streams: Mutex<HashMap<u64, LiveConn>>,
    ended: Condvar,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, LiveConn>> {
        // Every critical section is one map operation: a panic cannot leave
        // the map half-changed.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shutdown_all(&self, how: Shutdown) {
        for conn in self.lock().values() {
            if let Err(e) = conn.stream.shutdown(how) {
                tracing::debug!("shutting down a connection: {e}");
            }
        }
    }

    /// Waits up to `grace` for every connection to end; returns how many
    /// are left.
    fn wait_until_empty(&self, grace: Duration) -> usize {
        let live = self.lock();
        let (live, _) = self
            .ended
            .wait_timeout_while(live, grace, |streams| !streams.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        live.len()
    }
}

/// A connection's place in [`Live`]; leaving it on drop (even on a panic)
/// tells a waiting shutdown.
struct Registration {
    live: Arc<Live>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
        self.live.ended.notify_all();
    }
}
