//! Turning a read request into a response: checking it against the
//! protocol's limits and the image's size, and marking all-zero units.

use wire::protocol::{Response, MAX_REQUEST_BYTES};
use wire::{ByteRange, Chunk, ErrorKind};

use crate::image::Image;

/// Answers a read of `ranges` from `image`: the data, or an error reply
/// naming what was wrong. Never fails: a bad request is the peer's problem,
/// reported back to it.
pub fn answer(image: &dyn Image, id: u64, ranges: &[ByteRange]) -> Response {
    if let Err((kind, detail)) = check(image.size(), ranges) {
        return Response::error(id, kind, detail);
    }
    let mut chunks = Vec::new();
    for range in ranges {
        if let Err(e) = read_range(image, *range, &mut chunks) {
            return Response::error(id, ErrorKind::Io, format!("reading {:#x}+{:#x}: {e}", range.offset, range.len));
        }
    }
    Response::data(id, chunks)
}

/// Checks a request's ranges against the limits and the image's size.
fn check(size: u64, ranges: &[ByteRange]) -> Result<(), (ErrorKind, String)> {
    let mut total: u64 = 0;
    for r in ranges {
        if r.len == 0 {
            return Err((ErrorKind::TooLarge, format!("empty range at {:#x}", r.offset)));
        }
        match r.end() {
            Some(end) if end <= size => {}
            _ => {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("range {:#x}+{:#x} ends past the image size {size:#x}", r.offset, r.len),
                ))
            }
        }
        total += u64::from(r.len);
    }
    if total > MAX_REQUEST_BYTES as u64 {
        return Err((ErrorKind::TooLarge, format!("{total} bytes asked for, the limit is {MAX_REQUEST_BYTES}")));
    }
    Ok(())
}

/// Appends chunks covering `range`: one piece per unit-aligned stretch,
/// adjacent data merged into one `Bytes`, adjacent zero pieces into one
/// `Zero`. Only pieces of `range` merge: a range that starts where the one
/// before it ends still gets chunks of its own, as the client expects.
fn read_range(image: &dyn Image, range: ByteRange, chunks: &mut Vec<Chunk>) -> std::io::Result<()> {
    let unit = u64::from(image.unit());
    let end = range.offset + u64::from(range.len);
    let mut data = vec![0u8; range.len as usize];
    image.read_at(range.offset, &mut data)?;
    let first = chunks.len();
    let mut at = range.offset;
    while at < end {
        let piece_end = ((at / unit) + 1).saturating_mul(unit).min(end);
        let piece = &data[(at - range.offset) as usize..(piece_end - range.offset) as usize];
        let len = piece_end - at;
        let is_zero = piece.iter().all(|&b| b == 0);
        let last = if chunks.len() > first { chunks.last_mut() } else { None };
        match (last, is_zero) {
            (Some(Chunk::Zero { offset, len: zlen }), true) if *offset + u64::from(*zlen) == at => {
                *zlen += len as u32;
            }
            (Some(Chunk::Bytes { offset, data: bytes }), false) if *offset + bytes.len() as u64 == at => {
                bytes.extend_from_slice(piece);
            }
            (_, true) => chunks.push(Chunk::Zero { offset: at, len: len as u32 }),
            (_, false) => chunks.push(Chunk::Bytes { offset: at, data: piece.to_vec() }),
        }
        at = piece_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::client::chunks_cover;

    #[derive(Debug)]
    struct Mem(Vec<u8>);
    impl Image for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn unit(&self) -> u32 {
            4096
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    fn image() -> Mem {
        // pages: 0 data, 1 zero, 2 zero, 3 data
        let mut v = vec![0u8; 4 * 4096];
        v[10] = 1;
        v[3 * 4096 + 5] = 2;
        Mem(v)
    }

    #[test]
    fn zero_pages_become_markers_and_data_is_merged() {
        let img = image();
        let ranges = [ByteRange::new(0, 4 * 4096)];
        let Response::Data { chunks, .. } = answer(&img, 1, &ranges) else { panic!("not data") };
        assert!(chunks_cover(&chunks, &ranges));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1], Chunk::Zero { offset: 4096, len: 8192 });
        let Chunk::Bytes { data, .. } = &chunks[2] else { panic!("page 3 is data") };
        assert_eq!(data[5], 2);
    }

    #[test]
    fn unaligned_ranges_are_covered_exactly() {
        let img = image();
        let ranges = [ByteRange::new(4000, 5000), ByteRange::new(3 * 4096 + 1, 10)];
        let Response::Data { chunks, .. } = answer(&img, 2, &ranges) else { panic!("not data") };
        assert!(chunks_cover(&chunks, &ranges));
    }

    #[test]
    fn adjacent_ranges_get_chunks_of_their_own() {
        // Found by the fuzz target wire_request: a range that starts where
        // the one before it ends got its data merged into the chunk of the
        // range before, which the client refuses as not covering its ranges.
        let img = image();
        for ranges in
            [[ByteRange::new(0, 48), ByteRange::new(48, 100)], [ByteRange::new(4096, 4096), ByteRange::new(8192, 4096)]]
        {
            let Response::Data { chunks, .. } = answer(&img, 7, &ranges) else { panic!("not data") };
            assert!(chunks_cover(&chunks, &ranges), "{ranges:?}: {chunks:?}");
        }
    }

    #[test]
    fn bad_requests_get_error_replies() {
        let img = image();
        let past = answer(&img, 3, &[ByteRange::new(4 * 4096 - 1, 2)]);
        assert!(matches!(past, Response::Error { id: 3, kind: ErrorKind::OutOfRange, .. }));
        let wrap = answer(&img, 4, &[ByteRange::new(u64::MAX, 2)]);
        assert!(matches!(wrap, Response::Error { kind: ErrorKind::OutOfRange, .. }));
        let empty = answer(&img, 5, &[ByteRange::new(0, 0)]);
        assert!(matches!(empty, Response::Error { kind: ErrorKind::TooLarge, .. }));
        let big = Mem(vec![0; MAX_REQUEST_BYTES + 4096]);
        let many = answer(&big, 6, &[ByteRange::new(0, MAX_REQUEST_BYTES as u32), ByteRange::new(0, 1)]);
        assert!(matches!(many, Response::Error { kind: ErrorKind::TooLarge, .. }));
    }
}
