//! Connecting to an X server as another user's client: with the cookie
//! from a named Xauthority file, not from this process's `$XAUTHORITY`.
//!
//! The desktop daemon runs as root under systemd, outside the user's
//! session, and is multi-threaded: it cannot set `$XAUTHORITY` for x11rb
//! to read. So it reads the session's file itself (the format is a list
//! of `family, address, display number, name, data` records, each field
//! but the family a big-endian `u16` length and its bytes) and hands the
//! `MIT-MAGIC-COOKIE-1` for the display to x11rb.

use std::path::Path;

use x11rb::reexports::x11rb_protocol::parse_display::parse_display;
use x11rb::rust_connection::{DefaultStream, RustConnection};

/// Largest Xauthority file read: a real one holds a few records.
const MAX_XAUTHORITY_BYTES: u64 = 1 << 20;
/// The only authorisation X servers of today hand out.
const MIT_MAGIC_COOKIE: &[u8] = b"MIT-MAGIC-COOKIE-1";
/// `FamilyLocal` and `FamilyWild` of Xauth.h.
const FAMILY_LOCAL: u16 = 256;
const FAMILY_WILD: u16 = 65535;

/// One record of an Xauthority file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    family: u16,
    address: Vec<u8>,
    number: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
}

/// The records of an Xauthority file's bytes; a truncated tail is ignored,
/// as libXau does.
fn records(mut bytes: &[u8]) -> Vec<Record> {
    fn u16_be(bytes: &mut &[u8]) -> Option<u16> {
        let (head, rest) = bytes.split_first_chunk::<2>()?;
        *bytes = rest;
        Some(u16::from_be_bytes(*head))
    }
    fn field(bytes: &mut &[u8]) -> Option<Vec<u8>> {
        let len = usize::from(u16_be(bytes)?);
        if bytes.len() < len {
            return None;
        }
        let (head, rest) = bytes.split_at(len);
        *bytes = rest;
        Some(head.to_vec())
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let record = (|| {
            Some(Record {
                family: u16_be(&mut bytes)?,
                address: field(&mut bytes)?,
                number: field(&mut bytes)?,
                name: field(&mut bytes)?,
                data: field(&mut bytes)?,
            })
        })();
        match record {
            Some(record) => out.push(record),
            None => break,
        }
    }
    out
}

/// The cookie for display `number` on this host (`hostname`) in `records`:
/// a local record for this host or a wildcard one, as Xlib picks.
fn cookie(records: &[Record], hostname: &[u8], number: u16) -> Option<Vec<u8>> {
    let number = number.to_string();
    records
        .iter()
        .find(|r| {
            let host_matches = r.family == FAMILY_WILD || (r.family == FAMILY_LOCAL && r.address == hostname);
            host_matches && (r.number.is_empty() || r.number == number.as_bytes()) && r.name == MIT_MAGIC_COOKIE
        })
        .map(|r| r.data.clone())
}

/// Connects to `display` with the cookie in `xauthority`, or as x11rb does
/// (`$XAUTHORITY`, `~/.Xauthority`) without one. Returns the connection
/// and its screen.
///
/// # Errors
/// The display cannot be parsed or reached, the file cannot be read, or
/// the server refuses the connection.
pub fn connect_x11(
    display: &str,
    xauthority: Option<&Path>,
) -> Result<(RustConnection, usize), x11rb::errors::ConnectError> {
    let Some(file) = xauthority else { return x11rb::connect(Some(display)) };
    let parsed = parse_display(Some(display))?;
    let bytes = read_capped(file)?;
    let hostname = std::fs::read("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname = hostname.trim_ascii_end();
    let data = cookie(&records(&bytes), hostname, parsed.display);
    let (name, data) = match data {
        Some(data) => (MIT_MAGIC_COOKIE.to_vec(), data),
        None => (Vec::new(), Vec::new()),
    };
    let mut error = None;
    for address in parsed.connect_instruction() {
        match DefaultStream::connect(&address) {
            Ok((stream, _)) => {
                let screen = usize::from(parsed.screen);
                let conn = RustConnection::connect_to_stream_with_auth_info(stream, screen, name, data)?;
                return Ok((conn, screen));
            }
            Err(e) => error = Some(e),
        }
    }
    let unknown = x11rb::errors::ConnectError::DisplayParsingError(x11rb::errors::DisplayParsingError::Unknown);
    Err(error.map_or(unknown, x11rb::errors::ConnectError::IoError))
}

fn read_capped(file: &Path) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?.take(MAX_XAUTHORITY_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(family: u16, address: &[u8], number: &[u8], name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = family.to_be_bytes().to_vec();
        for field in [address, number, name, data] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    #[test]
    fn picks_this_hosts_cookie_for_the_display() {
        let mut file = record(FAMILY_LOCAL, b"other", b"0", MIT_MAGIC_COOKIE, b"not-this");
        file.extend(record(FAMILY_LOCAL, b"desk1", b"1", MIT_MAGIC_COOKIE, b"wrong-display"));
        file.extend(record(FAMILY_LOCAL, b"desk1", b"0", b"XDM-AUTHORIZATION-1", b"wrong-kind"));
        file.extend(record(FAMILY_LOCAL, b"desk1", b"0", MIT_MAGIC_COOKIE, b"this"));
        let parsed = records(&file);
        assert_eq!(parsed.len(), 4);
        assert_eq!(cookie(&parsed, b"desk1", 0), Some(b"this".to_vec()));
        assert_eq!(cookie(&parsed, b"desk1", 1), Some(b"wrong-display".to_vec()));
        assert_eq!(cookie(&parsed, b"desk2", 0), None);
    }

    #[test]
    fn a_wildcard_record_matches_any_host_and_a_truncated_tail_is_ignored() {
        let mut file = record(FAMILY_WILD, b"", b"0", MIT_MAGIC_COOKIE, b"gdm");
        file.extend_from_slice(&[1, 0, 0, 9, b'x']);
        let parsed = records(&file);
        assert_eq!(parsed.len(), 1);
        assert_eq!(cookie(&parsed, b"anything", 0), Some(b"gdm".to_vec()));
    }
}
