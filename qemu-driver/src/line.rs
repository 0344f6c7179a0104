//! Reading one line from a peer that may never end it: QEMU's QMP socket
//! and the guest agent's channel are written by code the daemon does not
//! trust without limit (a guest owns its agent), so a line longer than the
//! caller's bound is an error, not a reason to grow a buffer for ever.

use std::io::{self, BufRead, Read};

/// Appends to `out` up to and including `delimiter`, as
/// [`BufRead::read_until`] does, but never lets `out` grow past `limit`
/// bytes. Returns how many bytes were appended (0 at end of stream).
///
/// # Errors
/// The reader's errors, and [`io::ErrorKind::InvalidData`] once `out`
/// holds `limit` bytes without the delimiter.
pub(crate) fn read_until_within(
    reader: &mut impl BufRead,
    delimiter: u8,
    out: &mut Vec<u8>,
    limit: usize,
) -> io::Result<usize> {
    let room = limit.saturating_sub(out.len()) as u64;
    let read = reader.by_ref().take(room).read_until(delimiter, out)?;
    if out.len() >= limit && out.last() != Some(&delimiter) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("more than {limit} bytes without a line end")));
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_within_the_limit_is_read_and_a_longer_one_refused() {
        let mut out = Vec::new();
        let mut input: &[u8] = b"{\"return\": {}}\nnext";
        assert_eq!(read_until_within(&mut input, b'\n', &mut out, 64).unwrap(), 15);
        assert_eq!(out, b"{\"return\": {}}\n");
        let endless = vec![b'x'; 10_000];
        let mut out = Vec::new();
        let err = read_until_within(&mut endless.as_slice(), b'\n', &mut out, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(out.len(), 100, "it read no further than the limit");
        // A line split across reads counts what is already held.
        let mut out = vec![b'x'; 90];
        assert!(read_until_within(&mut endless.as_slice(), b'\n', &mut out, 100).is_err());
        let mut out = Vec::new();
        assert_eq!(read_until_within(&mut &b""[..], b'\n', &mut out, 100).unwrap(), 0);
    }
}
