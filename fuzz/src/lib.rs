//! What the fuzz targets share: the key both ends of a fuzzed connection
//! hold (each end enrolls it, so the one key plays both hosts), a small image to answer requests from, and a way to cut an input
//! into the pieces a socket would deliver.

use std::io;

use std::sync::Arc;

use wire::{Credentials, HostKey, Peers};

/// The key of every fuzzed connection; fixed, so that a seed made with it
/// (a client's first handshake message) still authenticates in a later run.
pub fn key() -> HostKey {
    HostKey::from_hex(&"4a".repeat(32), "the fuzz key").expect("64 hex digits are a key")
}

/// [`key`], with its own public key enrolled as peer `fuzz`.
pub fn credentials() -> Arc<Credentials> {
    let mut peers = Peers::new();
    let name = "fuzz".parse().expect("a valid host name");
    peers.insert(name, key().public(), std::path::Path::new("fuzz")).expect("one key in an empty set");
    Arc::new(Credentials::new(key(), peers))
}

/// A read-only image of [`MemImage::SIZE`] bytes whose content is computed,
/// not stored: every third unit is zero, the others hold a pattern, so that
/// answers mix data and zero markers.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemImage;

impl MemImage {
    /// Size of the image.
    pub const SIZE: u64 = 64 * 1024;
    /// Its unit, a page.
    pub const UNIT: u32 = 4096;

    /// The byte at `offset`.
    pub fn byte(offset: u64) -> u8 {
        if (offset / u64::from(Self::UNIT)) % 3 == 1 {
            0
        } else {
            (offset % 251) as u8 | 1
        }
    }
}

impl image_server::Image for MemImage {
    fn size(&self) -> u64 {
        Self::SIZE
    }

    fn unit(&self) -> u32 {
        Self::UNIT
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (at, byte) in (offset..).zip(buf.iter_mut()) {
            *byte = Self::byte(at);
        }
        Ok(())
    }
}

/// Cuts `data` into pieces whose lengths cycle through `lens` (a zero
/// length counts as one), as reads from a socket would return it.
pub fn pieces<'a>(data: &'a [u8], lens: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut next = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = lens.get(next % lens.len().max(1)).map_or(rest.len(), |&n| usize::from(n).max(1));
        next += 1;
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        Some(piece)
    })
}

/// Splits `data` after its first byte, which says how many of the bytes
/// after it are piece lengths (at most 8); returns the lengths and the rest.
pub fn split_lens(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&count, rest)) = data.split_first() else { return (&[], &[]) };
    let count = usize::from(count % 9).min(rest.len());
    rest.split_at(count)
}
