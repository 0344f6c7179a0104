//! A small NBD client, so that every NBD server a benchmark compares
//! (cownetdisk, qemu-nbd) is driven by the same code: fixed newstyle
//! negotiation with `NBD_OPT_GO`, simple replies, and requests pipelined up
//! to a chosen depth on one connection.
//!
//! It speaks through cownetdisk's codec (`cownetdisk::protocol`), whose
//! module doc is the summary of the NBD specification; only the
//! transmission loop is here. Replies are matched to requests by cookie,
//! since a server may answer in any order: qemu-nbd answers each request
//! when it completes, cownetdisk answers one connection's requests in
//! order.
//!
//! Requests are queued in a write buffer and sent together each time the
//! pipeline is topped up, so a depth of 16 costs one system call per
//! refill, not one per request; a request's latency runs from when it was
//! queued to when its whole reply has been read.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cownetdisk::protocol::{
    ClientFlags, ClientOption, Command, ErrorCode, ExportQuery, Greeting, Info, OptionReply, OptionReplyHeader,
    ReplyType, Request, SimpleReply, GREETING_LEN, INFO_EXPORT, OPTION_REPLY_HEADER_LEN, SIMPLE_REPLY_LEN,
};
use cownetdisk::ProtocolError;

/// Bound on every read from the server, so that a server that stops
/// answering fails the benchmark instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Input buffer: reply headers and small reads without a system call each.
const READ_BUFFER: usize = 256 * 1024;
/// Output buffer: a refill's request headers (and small writes' payloads)
/// in one system call.
const WRITE_BUFFER: usize = 256 * 1024;

/// What went wrong talking to an NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdClientError {
    /// The Unix socket could not be reached.
    #[error("cannot connect to the NBD server at {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket failed.
    #[error("NBD connection failed while {during}")]
    Io {
        /// What the client was doing.
        during: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server sent something that is not NBD as cownetdisk's codec
    /// knows it.
    #[error("bad message from the NBD server while {during}")]
    Protocol {
        /// What the client was doing.
        during: &'static str,
        /// The cause.
        #[source]
        source: ProtocolError,
    },
    /// The server refused `NBD_OPT_GO`.
    #[error("the NBD server refused export {export:?}: {kind:?} {message:?}")]
    Refused {
        /// The export asked for.
        export: String,
        /// The error reply's type.
        kind: ReplyType,
        /// The server's message.
        message: String,
    },
    /// `NBD_OPT_GO` was acknowledged without `NBD_INFO_EXPORT`.
    #[error("the NBD server did not say the size of export {export:?}")]
    NoSize {
        /// The export asked for.
        export: String,
    },
    /// A request was answered with an error.
    #[error("{command} at offset {offset:#x} failed: {error:?}")]
    Failed {
        /// The request's command.
        command: Command,
        /// The request's offset.
        offset: u64,
        /// The server's error.
        error: ErrorCode,
    },
    /// A reply's cookie matches no request in flight.
    #[error("reply to cookie {0}, which no request in flight has")]
    UnknownCookie(u64),
    /// The caller's check of a read's data failed.
    #[error("read of {len} bytes at offset {offset:#x}: {why}")]
    BadData {
        /// The read's offset.
        offset: u64,
        /// The read's length.
        len: usize,
        /// What the check found.
        why: String,
    },
}

/// What every request of one run does.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Read `len` bytes.
    Read {
        /// Bytes per request.
        len: u32,
    },
    /// Write `data` (its length is the request's).
    Write {
        /// The payload of every request.
        data: &'a [u8],
    },
}

impl Op<'_> {
    fn len(&self) -> u32 {
        match self {
            Op::Read { len } => *len,
            Op::Write { data } => u32::try_from(data.len()).expect("a write payload under 4 GiB"),
        }
    }

    fn command(&self) -> Command {
        match self {
            Op::Read { .. } => Command::Read,
            Op::Write { .. } => Command::Write,
        }
    }
}

/// When a run stops sending: at whichever limit comes first. Requests
/// already in flight are still answered and counted.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most requests sent.
    pub requests: usize,
    /// Longest time spent sending.
    pub time: Duration,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Run {
    /// Each request's time from queued to fully answered, in reply order.
    pub latencies: Vec<Duration>,
    /// From the first request queued to the last reply read.
    pub elapsed: Duration,
    /// Bytes read or written.
    pub bytes: u64,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    offset: u64,
    queued: Instant,
}

/// One transmission-phase connection to an NBD server's export.
#[derive(Debug)]
pub struct NbdClient {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    size: u64,
    next_cookie: u64,
    in_flight: HashMap<u64, InFlight>,
    data: Vec<u8>,
}

impl NbdClient {
    /// Connects to the Unix socket at `path` and negotiates `export` with
    /// `NBD_OPT_GO`, leaving out the handshake's zero padding.
    ///
    /// # Errors
    /// [`NbdClientError`] naming the step that failed.
    pub fn connect(path: &Path, export: &str) -> Result<NbdClient, NbdClientError> {
        let stream =
            UnixStream::connect(path).map_err(|source| NbdClientError::Connect { path: path.to_owned(), source })?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io("setting the read time limit"))?;
        let writer = BufWriter::with_capacity(WRITE_BUFFER, stream.try_clone().map_err(io("cloning the socket"))?);
        let mut client = NbdClient {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            writer,
            size: 0,
            next_cookie: 1,
            in_flight: HashMap::new(),
            data: Vec::new(),
        };
        client.size = client.negotiate(export)?;
        Ok(client)
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Greeting, flags and `NBD_OPT_GO`; the export's size.
    fn negotiate(&mut self, export: &str) -> Result<u64, NbdClientError> {
        let mut greeting = [0; GREETING_LEN];
        self.reader.read_exact(&mut greeting).map_err(io("reading the greeting"))?;
        Greeting::decode(&greeting).map_err(protocol("reading the greeting"))?;
        let go = ClientOption::Go(ExportQuery { name: export.to_owned(), requests: vec![] });
        self.writer.write_all(&ClientFlags::new(true, true).encode()).map_err(io("sending the client flags"))?;
        self.writer.write_all(&go.encode()).map_err(io("sending NBD_OPT_GO"))?;
        self.writer.flush().map_err(io("sending NBD_OPT_GO"))?;
        let mut size = None;
        loop {
            let reply = self.option_reply()?;
            if reply.kind.is_error() {
                let message = String::from_utf8_lossy(&reply.data).into_owned();
                return Err(NbdClientError::Refused { export: export.to_owned(), kind: reply.kind, message });
            }
            match reply.kind {
                ReplyType::Ack => return size.ok_or_else(|| NbdClientError::NoSize { export: export.to_owned() }),
                // Other information (block sizes, a name) is not needed.
                ReplyType::Info if reply.data.starts_with(&INFO_EXPORT.to_be_bytes()) => {
                    if let Info::Export { size: bytes, .. } =
                        Info::decode(&reply.data).map_err(protocol("reading NBD_INFO_EXPORT"))?
                    {
                        size = Some(bytes);
                    }
                }
                _ => {}
            }
        }
    }

    fn option_reply(&mut self) -> Result<OptionReply, NbdClientError> {
        let during = "reading the answer to NBD_OPT_GO";
        let mut header = [0; OPTION_REPLY_HEADER_LEN];
        self.reader.read_exact(&mut header).map_err(io(during))?;
        let header = OptionReplyHeader::decode(&header).map_err(protocol(during))?;
        let mut data = vec![0; header.len as usize];
        self.reader.read_exact(&mut data).map_err(io(during))?;
        OptionReply::decode(&header, &data).map_err(protocol(during))
    }

    /// Sends `op` at the offsets `next_offset` gives, keeping `depth`
    /// requests in flight until `budget` runs out, and waits for every
    /// answer. Each read's data is passed to `check` with its offset (untimed
    /// for that request, but before the next refill).
    ///
    /// # Errors
    /// The socket's, the server's or `check`'s error; the connection is
    /// then out of step and should be dropped.
    pub fn run(
        &mut self,
        op: Op<'_>,
        depth: usize,
        budget: Budget,
        mut next_offset: impl FnMut() -> u64,
        mut check: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<Run, NbdClientError> {
        let len = op.len();
        let mut latencies = Vec::new();
        let mut sent = 0;
        let start = Instant::now();
        loop {
            while self.in_flight.len() < depth.max(1) && sent < budget.requests && start.elapsed() < budget.time {
                self.queue(op, next_offset(), len)?;
                sent += 1;
            }
            if self.in_flight.is_empty() {
                break;
            }
            self.writer.flush().map_err(io("sending requests"))?;
            let (offset, queued) = self.receive(op.command(), len)?;
            latencies.push(queued.elapsed());
            if let Op::Read { .. } = op {
                check(offset, &self.data).map_err(|why| NbdClientError::BadData { offset, len: len as usize, why })?;
            }
        }
        let elapsed = start.elapsed();
        Ok(Run { bytes: latencies.len() as u64 * u64::from(len), latencies, elapsed })
    }

    /// Sends `NBD_CMD_FLUSH` and waits for its answer.
    ///
    /// # Errors
    /// The socket's or the server's error.
    pub fn flush(&mut self) -> Result<(), NbdClientError> {
        let cookie = self.cookie();
        let request = Request::new(Command::Flush, 0, cookie, 0, 0);
        self.in_flight.insert(cookie, InFlight { offset: 0, queued: Instant::now() });
        self.writer.write_all(&request.encode()).map_err(io("sending NBD_CMD_FLUSH"))?;
        self.writer.flush().map_err(io("sending NBD_CMD_FLUSH"))?;
        self.receive(Command::Flush, 0).map(|_| ())
    }

    fn cookie(&mut self) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        cookie
    }

    /// Queues one request (and a write's payload) in the write buffer.
    fn queue(&mut self, op: Op<'_>, offset: u64, len: u32) -> Result<(), NbdClientError> {
        let cookie = self.cookie();
        let request = Request::new(op.command(), 0, cookie, offset, len);
        self.in_flight.insert(cookie, InFlight { offset, queued: Instant::now() });
        self.writer.write_all(&request.encode()).map_err(io("sending a request"))?;
        if let Op::Write { data } = op {
            self.writer.write_all(data).map_err(io("sending a write's payload"))?;
        }
        Ok(())
    }

    /// Reads the next reply, and a read's data into `self.data`; the
    /// offset and queueing time of the request it answers.
    fn receive(&mut self, command: Command, len: u32) -> Result<(u64, Instant), NbdClientError> {
        let mut header = [0; SIMPLE_REPLY_LEN];
        self.reader.read_exact(&mut header).map_err(io("reading a reply"))?;
        let reply = SimpleReply::decode(&header).map_err(protocol("reading a reply"))?;
        let request = self.in_flight.remove(&reply.cookie).ok_or(NbdClientError::UnknownCookie(reply.cookie))?;
        if let Some(error) = reply.error {
            return Err(NbdClientError::Failed { command, offset: request.offset, error });
        }
        if command == Command::Read {
            self.data.resize(len as usize, 0);
            self.reader.read_exact(&mut self.data).map_err(io("reading a read's data"))?;
        }
        Ok((request.offset, request.queued))
    }
}

impl Drop for NbdClient {
    /// Says goodbye with `NBD_CMD_DISC` if the connection is in step.
    fn drop(&mut self) {
        if self.in_flight.is_empty() {
            let request = Request::new(Command::Disc, 0, self.next_cookie, 0, 0);
            // The server may be gone already; closing the socket is enough.
            let _ = self.writer.write_all(&request.encode()).and_then(|()| self.writer.flush());
        }
    }
}

fn io(during: &'static str) -> impl FnOnce(std::io::Error) -> NbdClientError {
    move |source| NbdClientError::Io { during, source }
}

fn protocol(during: &'static str) -> impl FnOnce(ProtocolError) -> NbdClientError {
    move |source| NbdClientError::Protocol { during, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cownetdisk::protocol::{
        BlockSizes, OptionHeader, CLIENT_FLAGS_LEN, OPTION_HEADER_LEN, OPT_GO, REQUEST_LEN, TRANSMISSION_FLAGS,
    };
    use std::os::unix::net::UnixListener;

    const SIZE: u64 = 1 << 20;

    /// The byte at `offset` of the fake server's export.
    fn byte_at(offset: u64) -> u8 {
        (offset % 251) as u8
    }

    fn read_request(stream: &mut UnixStream) -> Request {
        let mut header = [0; REQUEST_LEN];
        stream.read_exact(&mut header).unwrap();
        Request::decode(&header).unwrap()
    }

    fn answer_read(stream: &mut UnixStream, request: &Request) {
        stream.write_all(&SimpleReply::ok(request.cookie).encode()).unwrap();
        let data: Vec<u8> = (0..u64::from(request.length)).map(|i| byte_at(request.offset + i)).collect();
        stream.write_all(&data).unwrap();
    }

    /// A server that negotiates (sending block sizes before the export's
    /// size, which the client must skip), answers reads two at a time in
    /// reverse order, and fails the flush that follows.
    fn fake_server(listener: UnixListener, pairs: usize) {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(&Greeting::server().encode()).unwrap();
        let mut flags = [0; CLIENT_FLAGS_LEN];
        stream.read_exact(&mut flags).unwrap();
        let mut header = [0; OPTION_HEADER_LEN];
        stream.read_exact(&mut header).unwrap();
        let header = OptionHeader::decode(&header).unwrap();
        let mut data = vec![0; header.len as usize];
        stream.read_exact(&mut data).unwrap();
        assert!(matches!(ClientOption::decode(&header, &data).unwrap(), ClientOption::Go(q) if q.name == "vm1"));
        let sizes = BlockSizes::new(1, 4096, 1 << 25).unwrap();
        stream.write_all(&OptionReply::info(OPT_GO, &Info::BlockSize(sizes)).encode()).unwrap();
        let export = Info::Export { size: SIZE, flags: TRANSMISSION_FLAGS };
        stream.write_all(&OptionReply::info(OPT_GO, &export).encode()).unwrap();
        stream.write_all(&OptionReply::ack(OPT_GO).encode()).unwrap();
        for _ in 0..pairs {
            let (first, second) = (read_request(&mut stream), read_request(&mut stream));
            answer_read(&mut stream, &second);
            answer_read(&mut stream, &first);
        }
        let flush = read_request(&mut stream);
        assert_eq!(flush.command().unwrap(), Command::Flush);
        stream.write_all(&SimpleReply::error(flush.cookie, ErrorCode::Io).encode()).unwrap();
    }

    #[test]
    fn replies_out_of_order_are_matched_by_cookie_and_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nbd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || fake_server(listener, 2));
        let mut client = NbdClient::connect(&path, "vm1").unwrap();
        assert_eq!(client.size(), SIZE);
        let mut offsets = [4096, 8192, 12288, 40000].into_iter();
        let mut checked = Vec::new();
        let budget = Budget { requests: 4, time: Duration::from_secs(60) };
        let run = client
            .run(
                Op::Read { len: 512 },
                2,
                budget,
                || offsets.next().unwrap(),
                |offset, data| {
                    checked.push(offset);
                    let want: Vec<u8> = (0..data.len() as u64).map(|i| byte_at(offset + i)).collect();
                    if data == want {
                        Ok(())
                    } else {
                        Err("wrong data".into())
                    }
                },
            )
            .unwrap();
        assert_eq!((run.latencies.len(), run.bytes), (4, 2048));
        assert_eq!(checked, [8192, 4096, 40000, 12288], "the fake server answers each pair backwards");
        assert!(matches!(
            client.flush(),
            Err(NbdClientError::Failed { command: Command::Flush, error: ErrorCode::Io, .. })
        ));
        server.join().unwrap();
    }
}
