//! The link's own limits, measured with nothing but `std::net` on
//! loopback, so that a protocol's figures can be divided by what the same
//! link carries without it: a stream of large writes (the most any protocol
//! can move) and a one-page ping-pong (the least a page-at-a-time request
//! can cost).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::measure::timed;

/// The page size of the ping-pong's answers.
pub const PAGE: usize = 4096;
/// Size of each write of the stream and of the receiver's reads.
pub const STREAM_WRITE: usize = 1 << 20;
/// Size of a ping-pong request (a page number and padding).
pub const REQUEST_LEN: usize = 16;

/// Sends `image` over a plain TCP connection on loopback in 1 MiB writes;
/// the time from the first write until the receiver has the last byte.
///
/// # Errors
/// Any socket error, or a receiver that got another number of bytes.
pub fn raw_tcp_stream(image: &[u8]) -> std::io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let sender = TcpStream::connect(listener.local_addr()?)?;
    std::thread::scope(|scope| {
        // Owned here, so that an early return hangs up and ends the receiver.
        let mut sender = sender;
        let receiver = scope.spawn(move || -> std::io::Result<(usize, Instant)> {
            let (mut stream, _) = listener.accept()?;
            let mut buf = vec![0u8; STREAM_WRITE];
            let mut received = 0;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return Ok((received, Instant::now())),
                    Ok(n) => received += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        let start = Instant::now();
        for chunk in image.chunks(STREAM_WRITE) {
            sender.write_all(chunk)?;
        }
        sender.shutdown(Shutdown::Write)?;
        let (received, end) = receiver.join().expect("the raw TCP receiver panicked")?;
        if received != image.len() {
            return Err(std::io::Error::other(format!("raw TCP receiver got {received} of {} bytes", image.len())));
        }
        Ok(end - start)
    })
}

/// Asks a plain TCP server on loopback for each page of `pages` (page
/// numbers in `image`) with a 16-byte request and waits for its 4 KiB
/// answer; each round trip's time.
///
/// # Errors
/// Any socket error, a page past the image, or a wrong answer.
pub fn raw_tcp_ping_pong(image: &[u8], pages: &[usize]) -> std::io::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    client.set_nodelay(true)?;
    std::thread::scope(|scope| {
        // Owned here, so that any return hangs up and ends the server thread.
        let mut client = client;
        scope.spawn(move || -> std::io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut request = [0u8; REQUEST_LEN];
            loop {
                match stream.read_exact(&mut request) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                let page = u64::from_le_bytes(request[..8].try_into().expect("an 8-byte slice")) as usize;
                let data = image
                    .get(page * PAGE..(page + 1) * PAGE)
                    .ok_or_else(|| std::io::Error::other(format!("page {page} is past the image")))?;
                stream.write_all(data)?;
            }
        });
        let mut reply = vec![0u8; PAGE];
        let mut samples = Vec::with_capacity(pages.len());
        for &page in pages {
            let mut request = [0u8; REQUEST_LEN];
            request[..8].copy_from_slice(&(page as u64).to_le_bytes());
            let (sent, elapsed) = timed(|| client.write_all(&request).and_then(|()| client.read_exact(&mut reply)));
            sent?;
            if reply[..] != image[page * PAGE..(page + 1) * PAGE] {
                return Err(std::io::Error::other(format!("raw TCP server answered page {page} wrongly")));
            }
            samples.push(elapsed);
        }
        Ok(samples)
    })
}
