//! The `GET /metrics` responder: HTTP/1.0 and 1.1, one request per
//! connection, on a thread of its own.
//!
//! A client has [`REQUEST_TIME`] to send a request head of at most
//! [`MAX_REQUEST_BYTES`]; clients are answered one after another, so a
//! slow one delays other scrapes by at most that time and never the daemon.
//! Answers: 200 with the page for `GET /metrics` (a query string is
//! ignored), 404 for another path, 405 for another method, 400 for a
//! malformed or oversized request, 408 for one that did not arrive in time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The largest request head read; a longer one gets 400.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// How long a client has to send its request head, and to take the answer.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address cannot be bound.
    #[error("cannot serve metrics on {addr} (metrics_listen): another program may hold the port, or the address is not this host's")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The thread cannot be made.
    #[error("cannot start the metrics thread")]
    Thread(#[source] io::Error),
}

/// Serves `render()`'s page on `GET /metrics` at `addr` from a new thread,
/// for the life of the process; returns the bound address (`addr` with
/// port 0 picks a free one).
///
/// # Errors
/// [`MetricsError::Bind`] or [`MetricsError::Thread`].
pub fn spawn<F>(addr: SocketAddr, render: F) -> Result<SocketAddr, MetricsError>
where
    F: Fn() -> String + Send + 'static,
{
    let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &render) {
                            tracing::debug!("a metrics client went away: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics endpoint {bound}: accept failed: {e}");
                        // Out of descriptors, most likely: give them time to come back.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(MetricsError::Thread)?;
    Ok(bound)
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Error(Status),
}

/// An error status and the line of text sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
}

impl Status {
    fn line(self) -> (&'static str, &'static str) {
        match self {
            Status::BadRequest => ("400 Bad Request", "not an HTTP/1.x request this endpoint reads\n"),
            Status::NotFound => ("404 Not Found", "the metrics are at /metrics\n"),
            Status::MethodNotAllowed => ("405 Method Not Allowed", "only GET /metrics is served\n"),
            Status::Timeout => ("408 Request Timeout", "the request did not arrive in time\n"),
        }
    }
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIME))?;
    let route = match read_head(&mut stream)? {
        Head::Complete(head) => route(&head),
        Head::TooLong => Route::Error(Status::BadRequest),
        Head::TooSlow => Route::Error(Status::Timeout),
        Head::Closed => return Ok(()),
    };
    let (status, content_type, body, allow) = match route {
        Route::Metrics => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(), ""),
        Route::Error(status) => {
            let (line, text) = status.line();
            let allow = if status == Status::MethodNotAllowed { "Allow: GET\r\n" } else { "" };
            (line, "text/plain; charset=utf-8", text.to_owned(), allow)
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    // Closing with unread bytes (the rest of an oversized request) would
    // reset the connection and could lose the answer at the client: end
    // our side, then read briefly what is still coming.
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER))?;
    let _ = io::copy(&mut (&mut stream).take(LINGER_BYTES), &mut io::sink());
    Ok(())
}

/// How long, and how many bytes, a client's surplus is read after the answer.
const LINGER: Duration = Duration::from_millis(200);
const LINGER_BYTES: u64 = 64 * 1024;

/// How reading a request head ended.
enum Head {
    Complete(Vec<u8>),
    TooLong,
    TooSlow,
    Closed,
}

/// Reads up to the blank line that ends a request head, within the limits.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() >= MAX_REQUEST_BYTES {
            return Ok(Head::TooLong);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TooSlow);
        }
        stream.set_read_timeout(Some(left))?;
        let room = (MAX_REQUEST_BYTES - head.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(Head::TooSlow)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Where the head ends (before its blank line), CRLF or bare LF.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// The route of a request head: its request line `METHOD TARGET HTTP/1.x`.
fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else { return Route::Error(Status::BadRequest) };
    let line = head.lines().next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else { return Route::Error(Status::BadRequest) };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Route::Error(Status::BadRequest);
    }
    if method != "GET" {
        return Route::Error(Status::MethodNotAllowed);
    }
    match target.split_once('?').map_or(target, |(path, _)| path) {
        "/metrics" => Route::Metrics,
        _ => Route::Error(Status::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1"), Route::Error(Status::NotFound));
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::Error(Status::MethodNotAllowed));
        for bad in [&b"GET /metrics"[..], b"GET /metrics HTTP/2", b"GET  /metrics HTTP/1.1", b"\xff\xfe", b""] {
            assert_eq!(route(bad), Route::Error(Status::BadRequest), "{bad:?}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nA: b\r\n\r\n"), Some(20));
    }

    #[test]
    fn a_scrape_gets_the_page_and_bad_requests_their_status() {
        let addr = spawn("127.0.0.1:0".parse().unwrap(), || "jt_up 1\n".to_owned()).unwrap();
        let page = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("Content-Type: text/plain; version=0.0.4") && page.contains("Content-Length: 8\r\n"));
        assert!(page.ends_with("\r\n\r\njt_up 1\n"), "{page}");
        assert!(ask(addr, b"hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(ask(addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let refused = ask(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 405 ") && refused.contains("Allow: GET"), "{refused}");
        let long = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_REQUEST_BYTES]].concat();
        assert!(ask(addr, &long).starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn a_silent_client_is_dropped_in_time_and_scrapes_go_on() {
        let addr = spawn("127.0.0.1:0".parse().unwrap(), || "jt_up 1\n".to_owned()).unwrap();
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.write_all(b"GET /metr").unwrap();
        assert!(ask(addr, b"GET /metrics HTTP/1.0\r\n\r\n").ends_with("jt_up 1\n"));
        let waited = started.elapsed();
        assert!(waited < REQUEST_TIME + Duration::from_secs(1), "the next scrape waited {waited:?}");
        let mut answer = String::new();
        silent.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }

    #[test]
    fn a_taken_address_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = spawn(addr, String::new).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()) && err.contains("metrics_listen"), "{err}");
    }
}
