//! One HTTP/1.1 `POST` of a JSON body, the whole of what etcd's JSON
//! gateway needs: a fresh connection per request (`Connection: close`), a
//! timeout on every socket operation and one on the whole answer (so a
//! peer that trickles a byte at a time cannot hold a daemon's thread), and
//! an answer read to at most [`MAX_ANSWER`] bytes whatever its
//! `Content-Length` or chunk sizes claim.
//!
//! A connection per request costs a handshake on loopback or a LAN every
//! few seconds, and buys a client with no pool to go stale when an etcd
//! member restarts.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest answer read (head and body): a registry of a thousand
/// servers is about 500 KiB.
pub const MAX_ANSWER: usize = 4 << 20;
/// The longest header line read.
const MAX_LINE: usize = 8 << 10;

/// What went wrong with one request to one endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, sending or reading failed (including a timeout).
    #[error("{step}")]
    Io {
        /// The step: "connect", "send the request", "read the answer".
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The answer is not HTTP/1.x as expected.
    #[error("the answer is not HTTP/1.1: {0}")]
    Malformed(String),
    /// The answer is larger than [`MAX_ANSWER`].
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
}

/// An answer: the status code and the body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Posts `body` (JSON) to `path` at `addr`; connecting, sending and the
/// whole answer may take at most `timeout` each.
///
/// # Errors
/// [`HttpError`] saying which step failed.
pub fn post(addr: SocketAddr, path: &str, body: &[u8], timeout: Duration) -> Result<Answer, HttpError> {
    let io = |step| move |source| HttpError::Io { step, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io("connect"))?;
    stream.set_read_timeout(Some(timeout)).map_err(io("connect"))?;
    stream.set_write_timeout(Some(timeout)).map_err(io("connect"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).map_err(io("send the request"))?;
    read_answer(BufReader::new(Deadline { stream, until: Instant::now() + timeout }))
}

/// A stream whose reads all end by `until`.
struct Deadline {
    stream: TcpStream,
    until: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the answer took longer than the timeout"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Reads an HTTP/1.1 answer of at most [`MAX_ANSWER`] bytes from `reader`
/// (public for the fuzz target: this is where a peer's bytes arrive).
///
/// # Errors
/// [`HttpError`] saying what is wrong with the answer.
pub fn read_answer(reader: impl BufRead) -> Result<Answer, HttpError> {
    let mut reader = reader.take(MAX_ANSWER as u64 + 1);
    let answer = read_within(&mut reader);
    // Whatever the headers said, an answer that ran into the limit is too large.
    if reader.limit() == 0 {
        return Err(HttpError::TooLarge);
    }
    answer
}

/// Reads an answer from `reader`.
fn read_within(mut reader: impl BufRead) -> Result<Answer, HttpError> {
    let status_line = read_line(&mut reader)?;
    let mut words = status_line.split(' ');
    let (version, code) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {status_line:?}")));
    }
    let status = code.parse().map_err(|_| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| HttpError::Malformed(format!("Content-Length {value:?}")))?;
            // A claim beyond the limit is refused before anything is read.
            if n > MAX_ANSWER {
                return Err(HttpError::TooLarge);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(&mut reader)?;
            let size = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {size_line:?}")))?;
            if size == 0 {
                break;
            }
            if body.len().saturating_add(size) > MAX_ANSWER {
                return Err(HttpError::TooLarge);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).map_err(read_error)?;
            read_line(&mut reader)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body).map_err(read_error)?;
    } else {
        reader.read_to_end(&mut body).map_err(read_error)?;
    }
    Ok(Answer { status, body })
}

fn read_error(source: io::Error) -> HttpError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        HttpError::Malformed("the answer ends early".to_owned())
    } else {
        HttpError::Io { step: "read the answer", source }
    }
}

/// One line without its CRLF, at most [`MAX_LINE`] bytes.
fn read_line(reader: &mut impl BufRead) -> Result<String, HttpError> {
    let mut line = Vec::new();
    reader.take(MAX_LINE as u64).read_until(b'\n', &mut line).map_err(read_error)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() >= MAX_LINE {
            HttpError::Malformed(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            HttpError::Malformed("the answer ends early".to_owned())
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("a header line is not UTF-8".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &[u8]) -> Result<Answer, HttpError> {
        read_answer(BufReader::new(text))
    }

    #[test]
    fn reads_sized_chunked_and_closed_bodies() {
        let sized = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((sized.status, sized.body.as_slice()), (200, &b"{}"[..]));
        let chunked =
            answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(chunked.body, b"{\"a\":1}");
        let closed = answer(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((closed.status, closed.body.as_slice()), (404, &b"nope"[..]));
    }

    #[test]
    fn a_trickling_peer_is_cut_off_at_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // A byte every 50 ms, each well within the timeout, for 3 s.
            for _ in 0..60 {
                if stream.write_all(b"H").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let err = post(addr, "/v3/kv/range", b"{}", Duration::from_millis(400)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(matches!(err, HttpError::Io { step: "read the answer", .. }), "{err:?}");
        drop(peer);
    }

    #[test]
    fn lies_and_floods_are_refused() {
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_ANSWER + 1);
        assert!(matches!(answer(huge.as_bytes()), Err(HttpError::TooLarge)));
        let short = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}");
        assert!(matches!(short, Err(HttpError::Malformed(ref m)) if m.contains("ends early")), "{short:?}");
        let chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_ANSWER + 1);
        assert!(matches!(answer(chunk.as_bytes()), Err(HttpError::TooLarge)));
        let mut flood = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        flood.resize(MAX_ANSWER + 100, b'x');
        assert!(matches!(answer(&flood), Err(HttpError::TooLarge)));
        let long_line = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "y".repeat(MAX_LINE));
        assert!(matches!(answer(long_line.as_bytes()), Err(HttpError::Malformed(_))));
        assert!(matches!(answer(b"SSH-2.0-OpenSSH\r\n"), Err(HttpError::Malformed(_))));
    }
}
