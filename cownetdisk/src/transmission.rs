//! The transmission phase of one NBD connection: requests in, simple
//! replies out, in order, until the client disconnects.
//!
//! Requests are handled one after the other on the connection's thread; a
//! client that pipelines gets its replies in order, which NBD allows.
//! Replies are buffered and sent when no further request is already
//! waiting in the input buffer, so a burst of pipelined requests costs one
//! write per burst, not one per request.
//!
//! Bad input never ends the daemon and rarely the connection: a bad value
//! gets an error reply and the next request is read. Only what breaks the
//! framing closes the connection: a bad magic (nothing after it can be
//! trusted to be a request header), and a write longer than
//! [`MAX_PAYLOAD`], whose payload the server will not buffer and cannot
//! skip safely (if the length is garbage, so is whatever "payload" follows);
//! it is answered `NBD_EINVAL` first, then the connection is closed.
//!
//! Memory: a write's buffer grows as its payload arrives ([`PAYLOAD_STEP`]
//! at a time), so a header that announces 32 MiB and sends nothing costs
//! one step, not 32 MiB; what all connections hold at once for payloads and
//! read data is capped at [`MAX_HELD`] (a request over it gets `NBD_ENOMEM`,
//! its payload read and dropped to stay in step); and a connection keeps at
//! most [`KEEP_BUFFER`] between requests.
//!
//! Ordering: other connections may write the same blocks at the same time.
//! The overlay serialises writes to one block and every connection sees the
//! same slices, so an answered write is visible to every later read on any
//! connection and a flush covers every answered write (`CAN_MULTI_CONN`).
//! Two requests in flight at once on different connections to the same
//! bytes are unordered, as on any disk.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::disk::Disk;
use crate::error::{ConnectionError, CownetdiskError};
use crate::protocol::{Command, ErrorCode, Request, SimpleReply, MAX_PAYLOAD, REQUEST_LEN};
use crate::stats::Counters;

/// Bytes of a write's payload read from the socket at a time.
pub const PAYLOAD_STEP: usize = 1 << 20;
/// Most bytes of write payloads and read data all connections of this
/// process hold at once.
pub const MAX_HELD: usize = 256 << 20;
/// Most buffer a connection keeps between requests.
pub const KEEP_BUFFER: usize = 1 << 20;

/// Bytes held now by every connection (see [`MAX_HELD`]).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A share of [`MAX_HELD`], given back when dropped.
struct Held(usize);

impl Held {
    /// `bytes` of the budget, if that many are left.
    fn take(bytes: usize) -> Option<Held> {
        let mut held = Held(0);
        held.grow(bytes).then_some(held)
    }

    /// Adds `bytes` to this share, if that many are left.
    fn grow(&mut self, bytes: usize) -> bool {
        let before = HELD.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > MAX_HELD {
            HELD.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        self.0 += bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// How a transmission ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client sent `NBD_CMD_DISC`.
    Disconnected,
    /// The client closed the connection between two requests.
    HungUp,
}

/// Serves requests from `reader` on `disk`, replying on `writer`; sets
/// `served` once a request arrives.
///
/// # Errors
/// [`ConnectionError`] when the socket fails, a request breaks the framing
/// (bad magic), or a write is longer than [`MAX_PAYLOAD`].
pub(crate) fn serve<R: Read>(
    reader: &mut BufReader<R>,
    writer: &mut impl Write,
    disk: &Disk,
    peer: &str,
    served: &AtomicBool,
) -> Result<Ended, ConnectionError> {
    let mut connection = Transmission { writer, disk, peer, payload: Vec::new() };
    loop {
        let mut header = [0; REQUEST_LEN];
        if !read_header(reader, &mut header).map_err(connection.io("reading a request"))? {
            connection.writer.flush().map_err(connection.io("sending replies"))?;
            return Ok(Ended::HungUp);
        }
        served.store(true, Ordering::Release);
        let request =
            Request::decode(&header).map_err(|source| ConnectionError::Protocol { peer: peer.to_owned(), source })?;
        let held = if request.kind == Command::Write.code() {
            match connection.receive_payload(reader, &request)? {
                Some(held) => Some(held),
                None => continue,
            }
        } else {
            None
        };
        let step = connection.handle(&request)?;
        drop(held);
        connection.shrink();
        if step == Step::Disconnect {
            connection.writer.flush().map_err(connection.io("sending replies"))?;
            return Ok(Ended::Disconnected);
        }
        if reader.buffer().is_empty() {
            connection.writer.flush().map_err(connection.io("sending replies"))?;
        }
    }
}

/// Whether to go on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    Disconnect,
}

/// One connection's transmission state.
struct Transmission<'a, W> {
    writer: &'a mut W,
    disk: &'a Disk,
    peer: &'a str,
    /// A write's payload, or a read's data; reused between requests.
    payload: Vec<u8>,
}

impl<W: Write> Transmission<'_, W> {
    fn io(&self, during: &'static str) -> impl FnOnce(std::io::Error) -> ConnectionError + '_ {
        move |source| ConnectionError::Io { peer: self.peer.to_owned(), during, source }
    }

    fn counters(&self) -> &Counters {
        self.disk.counters()
    }

    /// Reads a write's payload into `self.payload` as it arrives, and
    /// returns its share of the budget. If the budget is spent, reads and
    /// drops the payload, answers `NBD_ENOMEM` and returns `None`. If it is
    /// longer than the maximum, answers `NBD_EINVAL` and ends the connection.
    fn receive_payload<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        request: &Request,
    ) -> Result<Option<Held>, ConnectionError> {
        if request.length > MAX_PAYLOAD {
            self.counters().count_request(Some(Command::Write));
            self.reply(request.cookie, Err(ErrorCode::Inval))?;
            self.writer.flush().map_err(self.io("sending replies"))?;
            return Err(ConnectionError::WriteTooLarge {
                peer: self.peer.to_owned(),
                length: request.length,
                max: MAX_PAYLOAD,
            });
        }
        // The budget is charged as the data arrives: a header alone holds
        // nothing, of memory or of the budget.
        let len = request.length as usize;
        let mut held = Held(0);
        self.payload.clear();
        while self.payload.len() < len {
            let start = self.payload.len();
            let step = (len - start).min(PAYLOAD_STEP);
            if !held.grow(step) {
                let rest = (len - start) as u64;
                std::io::copy(&mut reader.by_ref().take(rest), &mut std::io::sink())
                    .map_err(self.io("skipping a write's payload"))?;
                self.counters().count_request(Some(Command::Write));
                tracing::warn!(
                    peer = self.peer,
                    cookie = request.cookie,
                    "{MAX_HELD} bytes of requests are held: answering ENOMEM"
                );
                self.reply(request.cookie, Err(ErrorCode::NoMem))?;
                return Ok(None);
            }
            self.payload.resize(start + step, 0);
            reader.read_exact(&mut self.payload[start..]).map_err(self.io("reading a write's payload"))?;
        }
        Ok(Some(held))
    }

    /// Gives back a large buffer between requests.
    fn shrink(&mut self) {
        if self.payload.capacity() > KEEP_BUFFER {
            self.payload = Vec::new();
        }
    }

    /// Carries out one request and replies to it (except to a disconnect).
    fn handle(&mut self, request: &Request) -> Result<Step, ConnectionError> {
        let command = match request.command() {
            Ok(command) => command,
            Err(e) => {
                let known = Command::from_code(request.kind).ok();
                self.counters().count_request(known);
                tracing::warn!(peer = self.peer, cookie = request.cookie, "{e}: answering EINVAL");
                self.reply(request.cookie, Err(ErrorCode::Inval))?;
                return Ok(Step::Continue);
            }
        };
        self.counters().count_request(Some(command));
        let result = match command {
            Command::Disc => return Ok(Step::Disconnect),
            Command::Read => return self.read(request).map(|()| Step::Continue),
            Command::Write => self.write(request),
            Command::Flush if request.offset != 0 || request.length != 0 => {
                Err(self.refuse(request, ErrorCode::Inval, "NBD_CMD_FLUSH with a nonzero offset or length"))
            }
            Command::Flush => self.disk.flush().map_err(|e| self.failed(e)),
            // A hint the spec lets a server ignore. Doing nothing keeps the
            // blocks as they are: marking them dirty or zero would grow what
            // reintegration sends back, and the slices never forget a block.
            Command::Trim if !request.fits(self.disk.size()) => {
                Err(self.refuse(request, ErrorCode::Inval, "NBD_CMD_TRIM past the end"))
            }
            Command::Trim => Ok(()),
            Command::WriteZeroes => self.write_zeroes(request),
        };
        self.reply(request.cookie, result)?;
        Ok(Step::Continue)
    }

    fn read(&mut self, request: &Request) -> Result<(), ConnectionError> {
        if request.length > MAX_PAYLOAD {
            let e = self.refuse(request, ErrorCode::Inval, "NBD_CMD_READ longer than the maximum block size");
            return self.reply(request.cookie, Err(e));
        }
        if !request.fits(self.disk.size()) {
            let e = self.refuse(request, ErrorCode::Inval, "NBD_CMD_READ past the end");
            return self.reply(request.cookie, Err(e));
        }
        let Some(_held) = Held::take(request.length as usize) else {
            let e = self.refuse(request, ErrorCode::NoMem, "too many bytes of requests are held");
            return self.reply(request.cookie, Err(e));
        };
        let mut data = std::mem::take(&mut self.payload);
        data.resize(request.length as usize, 0);
        let result = self.disk.read(request.offset, &mut data).map_err(|e| self.failed(e));
        let sent = match result {
            Ok(()) => {
                Counters::add(&self.counters().bytes_read, data.len() as u64);
                self.send_data(request.cookie, &data)
            }
            Err(code) => self.reply(request.cookie, Err(code)),
        };
        self.payload = data;
        sent
    }

    /// Queues a successful read's reply header and data.
    fn send_data(&mut self, cookie: u64, data: &[u8]) -> Result<(), ConnectionError> {
        self.reply(cookie, Ok(()))?;
        self.writer.write_all(data).map_err(self.io("sending read data"))
    }

    fn write(&self, request: &Request) -> Result<(), ErrorCode> {
        if !request.fits(self.disk.size()) {
            return Err(self.refuse(request, ErrorCode::NoSpc, "NBD_CMD_WRITE past the end"));
        }
        self.disk.write(request.offset, &self.payload).map_err(|e| self.failed(e))?;
        Counters::add(&self.counters().bytes_written, self.payload.len() as u64);
        self.flush_if_fua(request)
    }

    fn write_zeroes(&self, request: &Request) -> Result<(), ErrorCode> {
        if request.length > MAX_PAYLOAD {
            return Err(self.refuse(
                request,
                ErrorCode::Inval,
                "NBD_CMD_WRITE_ZEROES longer than the maximum block size",
            ));
        }
        if !request.fits(self.disk.size()) {
            return Err(self.refuse(request, ErrorCode::NoSpc, "NBD_CMD_WRITE_ZEROES past the end"));
        }
        self.disk.write_zeroes(request.offset, u64::from(request.length)).map_err(|e| self.failed(e))?;
        Counters::add(&self.counters().bytes_zeroed, u64::from(request.length));
        self.flush_if_fua(request)
    }

    /// With FUA, the reply waits until the write is durable.
    fn flush_if_fua(&self, request: &Request) -> Result<(), ErrorCode> {
        if request.fua() {
            self.disk.flush().map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Logs a request refused for its values and returns the error code.
    fn refuse(&self, request: &Request, code: ErrorCode, why: &str) -> ErrorCode {
        tracing::warn!(
            peer = self.peer,
            cookie = request.cookie,
            offset = format_args!("{:#x}", request.offset),
            length = request.length,
            size = self.disk.size(),
            "{why}: answering {code:?}"
        );
        code
    }

    /// Logs a request the disk failed to carry out; the client gets EIO.
    fn failed(&self, error: CownetdiskError) -> ErrorCode {
        tracing::error!(peer = self.peer, error = &error as &dyn std::error::Error, "answering EIO");
        ErrorCode::Io
    }

    /// Queues the reply header to request `cookie`.
    fn reply(&mut self, cookie: u64, result: Result<(), ErrorCode>) -> Result<(), ConnectionError> {
        let reply = match result {
            Ok(()) => SimpleReply::ok(cookie),
            Err(code) => {
                Counters::add(&self.counters().error_replies, 1);
                SimpleReply::error(cookie, code)
            }
        };
        self.writer.write_all(&reply.encode()).map_err(self.io("sending a reply"))
    }
}

/// Fills `header` from `reader`: `Ok(false)` if the client closed the
/// connection before its first byte (a clean end), an error if it closed
/// in the middle.
fn read_header(reader: &mut impl Read, header: &mut [u8; REQUEST_LEN]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < REQUEST_LEN {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
