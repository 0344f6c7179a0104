//! A byte stream over control messages: the bulk of a reintegration.
//!
//! The server writes the descriptor and the two dirty sets into a
//! [`ChunkWriter`], which sends them as [`Control::Data`] messages of up to
//! [`MAX_CHUNK`] bytes and a final [`Control::End`]. The desktop reads them
//! back through a [`ChunkReader`], an ordinary `Read` that the dirty-set
//! stager consumes as it would a file. The formats inside carry their own
//! checks (dirty sets their CRCs and trailers, the descriptor the CRC in
//! [`ReturnHeader`](crate::ReturnHeader)); this layer only keeps the order.

use std::io::{self, Read, Write};

use wire::protocol::Message;
use wire::Channel;

use crate::protocol::{Control, MAX_CHUNK};

/// Sends what is written to it as `Data` messages.
#[derive(Debug)]
pub struct ChunkWriter<'a> {
    channel: &'a mut Channel,
    buf: Vec<u8>,
    sent: u64,
}

impl<'a> ChunkWriter<'a> {
    /// A writer on `channel`.
    pub fn new(channel: &'a mut Channel) -> Self {
        ChunkWriter { channel, buf: Vec::with_capacity(MAX_CHUNK), sent: 0 }
    }

    /// Sends what is buffered and the `End` message; returns the stream's length.
    ///
    /// # Errors
    /// The channel's error, as an I/O error.
    pub fn finish(mut self) -> io::Result<u64> {
        self.send_buffered()?;
        self.channel.send(&Control::End.encode_body()).map_err(io::Error::other)?;
        Ok(self.sent)
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_CHUNK));
        self.sent += chunk.len() as u64;
        self.channel.send(&Control::Data(chunk).encode_body()).map_err(io::Error::other)
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the `Data` messages of a stream until its `End`.
pub struct ChunkReader<'a> {
    channel: &'a mut Channel,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
    received: u64,
    progress: Box<dyn FnMut(u64) + 'a>,
}

impl std::fmt::Debug for ChunkReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader").field("received", &self.received).field("ended", &self.ended).finish()
    }
}

impl<'a> ChunkReader<'a> {
    /// A reader on `channel` that calls `progress` with the bytes received
    /// so far after every chunk.
    pub fn new(channel: &'a mut Channel, progress: impl FnMut(u64) + 'a) -> Self {
        ChunkReader { channel, chunk: Vec::new(), at: 0, ended: false, received: 0, progress: Box::new(progress) }
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            let body = self.channel.recv().map_err(io::Error::other)?;
            match Control::decode_body(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Control::Data(chunk) => {
                    self.received += chunk.len() as u64;
                    (self.progress)(self.received);
                    self.chunk = chunk;
                    self.at = 0;
                }
                Control::End => self.ended = true,
                Control::Failed(why) => return Err(io::Error::other(format!("the sender gave up: {why}"))),
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected data or its end, got {}", other.kind()),
                    ))
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Sends `bytes` as one stream (`Data`... `End`); returns its length.
///
/// # Errors
/// The channel's error, as an I/O error.
pub fn send_stream(channel: &mut Channel, bytes: &[u8]) -> io::Result<u64> {
    let mut writer = ChunkWriter::new(channel);
    writer.write_all(bytes)?;
    writer.finish()
}

/// Receives one whole stream that its sender announced as `len` bytes with
/// CRC-32 `crc`, reading it to its `End` even when it is not what was
/// announced, so that the connection stays in step.
///
/// # Errors
/// The channel's error; `InvalidData` when the stream's length or CRC
/// differ from the announcement.
pub fn receive_stream(channel: &mut Channel, len: u64, crc: u32) -> io::Result<Vec<u8>> {
    let mut reader = ChunkReader::new(channel, |_| {});
    // The announcement was checked against the protocol's limits.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(64 << 20));
    reader.by_ref().take(len).read_to_end(&mut bytes)?;
    let extra = io::copy(&mut reader, &mut io::sink())?;
    if bytes.len() as u64 != len || extra != 0 {
        let got = bytes.len() as u64 + extra;
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{got} bytes arrived of {len} announced")));
    }
    if crc32fast::hash(&bytes) != crc {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the CRC differs from the one announced"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;
    use wire::Credentials;

    fn channels() -> (Channel, Channel) {
        let (desktop, server) = Credentials::mutual(&"desk1".parse().unwrap(), &"server".parse().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            Channel::accept(stream, &server, Duration::from_secs(5), |_, _| Vec::new()).unwrap()
        });
        let (client, _) = Channel::connect(&addr, &desktop, None, b"", Duration::from_secs(5)).unwrap();
        (client, server.join().unwrap())
    }

    #[test]
    fn a_stream_crosses_in_chunks_and_ends() {
        let (mut a, mut b) = channels();
        let data: Vec<u8> = (0..3 * MAX_CHUNK + 123).map(|i| (i % 251) as u8).collect();
        let sender = {
            let data = data.clone();
            std::thread::spawn(move || {
                let mut w = ChunkWriter::new(&mut a);
                w.write_all(&data).unwrap();
                w.finish().unwrap()
            })
        };
        let mut seen = Vec::new();
        let mut reader = ChunkReader::new(&mut b, |n| seen.push(n));
        let mut got = vec![0u8; data.len()];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "the stream ends where the data does");
        drop(reader);
        assert_eq!(got, data);
        assert_eq!(sender.join().unwrap(), data.len() as u64);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen.last(), Some(&(data.len() as u64)));
    }

    #[test]
    fn extra_data_and_wrong_messages_are_errors() {
        let (mut a, mut b) = channels();
        let mut w = ChunkWriter::new(&mut a);
        w.write_all(b"abc").unwrap();
        w.finish().unwrap();
        let mut reader = ChunkReader::new(&mut b, |_| {});
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"c", "one byte was left");

        let (mut a, mut b) = channels();
        a.send(&Control::Done.encode_body()).unwrap();
        let mut reader = ChunkReader::new(&mut b, |_| {});
        let err = reader.read(&mut two).unwrap_err();
        assert!(err.to_string().contains("expected data or its end, got Done"), "{err}");
    }
}
