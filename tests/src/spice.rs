//! A SPICE client's first steps, enough to learn whether a SPICE server
//! takes a ticket: the link handshake of the main channel, the ticket
//! encrypted with the server's RSA key (OAEP, SHA-1, as the protocol
//! says), and the server's verdict. What a real viewer (remote-viewer)
//! does before it shows anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

/// "REDQ", the magic of every link message.
const MAGIC: u32 = u32::from_le_bytes(*b"REDQ");
/// The main channel.
const CHANNEL_MAIN: u8 = 1;
/// Bytes of the server's public key in its link reply.
const PUBKEY_BYTES: usize = 162;
/// The verdict that lets the client in.
const LINK_OK: u32 = 0;

/// Whether the SPICE server at `addr` accepts `ticket`: `Ok(true)` when it
/// lets the client in, `Ok(false)` when it refuses the ticket.
///
/// # Errors
/// A text saying which step failed (no server, not SPICE).
pub fn ticket_accepted(addr: SocketAddr, ticket: &str) -> Result<bool, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to SPICE at {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    // SpiceLinkHeader, then SpiceLinkMess with no capabilities: the server
    // then expects the encrypted ticket right after its reply.
    let mut link = Vec::new();
    for word in [MAGIC, 2, 2, 18] {
        link.extend(word.to_le_bytes());
    }
    link.extend(0u32.to_le_bytes()); // connection id: a new session
    link.extend([CHANNEL_MAIN, 0]); // channel type and id
    for word in [0u32, 0, 18] {
        link.extend(word.to_le_bytes()); // no common or channel caps; caps offset
    }
    stream.write_all(&link).map_err(|e| format!("cannot send the link message: {e}"))?;

    let header = read_words(&mut stream, 4)?;
    if header[0] != MAGIC {
        return Err(format!("{addr} is not a SPICE server (magic {:#x})", header[0]));
    }
    let mut reply = vec![0u8; header[3] as usize];
    stream.read_exact(&mut reply).map_err(|e| format!("cannot read the link reply: {e}"))?;
    let error = u32::from_le_bytes(reply[..4].try_into().map_err(|_| "a short link reply")?);
    if error != LINK_OK || reply.len() < 4 + PUBKEY_BYTES {
        return Err(format!("the server refused the link (error {error})"));
    }
    let key = RsaPublicKey::from_public_key_der(&reply[4..4 + PUBKEY_BYTES])
        .map_err(|e| format!("the server's public key does not parse: {e}"))?;
    let mut secret = ticket.as_bytes().to_vec();
    secret.push(0);
    let encrypted = key
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &secret)
        .map_err(|e| format!("cannot encrypt the ticket: {e}"))?;
    stream.write_all(&encrypted).map_err(|e| format!("cannot send the ticket: {e}"))?;
    let verdict = read_words(&mut stream, 1)?;
    Ok(verdict[0] == LINK_OK)
}

fn read_words(stream: &mut TcpStream, n: usize) -> Result<Vec<u32>, String> {
    let mut bytes = vec![0u8; 4 * n];
    stream.read_exact(&mut bytes).map_err(|e| format!("the SPICE server closed the link: {e}"))?;
    Ok(bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}
