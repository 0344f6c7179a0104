//! Splitting a byte request into unit pieces, as a front end (FUSE, NBD) needs.
//!
//! The store works in whole units; clients ask for bytes. A request
//! `(offset, len)` becomes an unaligned *head* (the end of its first unit), an
//! aligned *body* of whole units, and an unaligned *tail* (the start of its last
//! unit). Any of the three may be missing; a request inside one unit is a single
//! partial piece.
//!
//! The splitter knows only the unit size. The last unit of a store whose size is
//! not a multiple of the unit size is shorter; a piece that covers it entirely is
//! whole for the store even though it is shorter than a unit, which
//! [`Piece::is_whole`] tells when given the unit's real length.

use std::num::NonZeroU32;
use std::ops::Range;

/// The part of one unit that a request touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The unit.
    pub unit: u64,
    /// First byte touched, from the start of the unit.
    pub offset_in_unit: u32,
    /// Number of bytes touched; never zero.
    pub len: u32,
}

impl Piece {
    /// Whether the piece covers its whole unit, `unit_len` being the unit's
    /// length (the unit size, or less for a partial last unit).
    pub fn is_whole(&self, unit_len: u32) -> bool {
        self.offset_in_unit == 0 && self.len == unit_len
    }

    /// The bytes of the unit that the piece touches.
    pub fn range_in_unit(&self) -> Range<usize> {
        let start = self.offset_in_unit as usize;
        start..start + self.len as usize
    }
}

/// Splits `len` bytes at `offset` into pieces of units of `unit_size` bytes, in
/// order. The request must not wrap around `u64::MAX` (the pieces stop there).
pub fn split(offset: u64, len: u64, unit_size: NonZeroU32) -> Pieces {
    Pieces { next: offset, end: offset.saturating_add(len), unit_size: u64::from(unit_size.get()) }
}

/// The pieces of a request, head first; made by [`split`].
#[derive(Clone, Debug)]
pub struct Pieces {
    next: u64,
    end: u64,
    unit_size: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.next >= self.end {
            return None;
        }
        let unit = self.next / self.unit_size;
        let offset_in_unit = self.next % self.unit_size;
        let len = (self.unit_size - offset_in_unit).min(self.end - self.next);
        self.next += len;
        // Both are below the unit size, which is a u32.
        Some(Piece { unit, offset_in_unit: offset_in_unit as u32, len: len as u32 })
    }
}

impl std::iter::FusedIterator for Pieces {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(offset: u64, len: u64, unit_size: u32) -> Vec<(u64, u32, u32)> {
        split(offset, len, NonZeroU32::new(unit_size).unwrap()).map(|p| (p.unit, p.offset_in_unit, p.len)).collect()
    }

    #[test]
    fn splits_into_head_body_and_tail() {
        assert_eq!(pieces(4000, 10000, 4096), [(0, 4000, 96), (1, 0, 4096), (2, 0, 4096), (3, 0, 1712)]);
    }

    #[test]
    fn an_aligned_request_is_all_body() {
        assert_eq!(pieces(8192, 8192, 4096), [(2, 0, 4096), (3, 0, 4096)]);
    }

    #[test]
    fn a_request_inside_one_unit_is_one_piece() {
        assert_eq!(pieces(4100, 10, 4096), [(1, 4, 10)]);
    }

    #[test]
    fn an_empty_request_has_no_piece() {
        assert_eq!(pieces(123, 0, 4096), []);
    }

    #[test]
    fn whole_means_covering_the_units_real_length() {
        let piece = Piece { unit: 2, offset_in_unit: 0, len: 1808 };
        assert!(piece.is_whole(1808));
        assert!(!piece.is_whole(4096));
        assert!(!Piece { offset_in_unit: 1, len: 1807, ..piece }.is_whole(1808));
        assert_eq!(piece.range_in_unit(), 0..1808);
    }

    proptest! {
        #[test]
        fn pieces_tile_the_request_with_only_head_and_tail_partial(
            offset in 0u64..1 << 40,
            len in 0u64..1 << 20,
            unit_size in prop_oneof![Just(1u32), Just(512), Just(4096), Just(65536), 1u32..10_000],
        ) {
            let unit = u64::from(unit_size);
            let all: Vec<Piece> = split(offset, len, NonZeroU32::new(unit_size).unwrap()).collect();
            let mut at = offset;
            for (i, piece) in all.iter().enumerate() {
                // Contiguous, in order, inside its unit, never empty.
                prop_assert_eq!(piece.unit * unit + u64::from(piece.offset_in_unit), at);
                prop_assert!(piece.len > 0);
                prop_assert!(u64::from(piece.offset_in_unit) + u64::from(piece.len) <= unit);
                let whole = piece.is_whole(unit_size);
                if i != 0 && i + 1 != all.len() {
                    prop_assert!(whole, "middle piece {:?} is partial", piece);
                }
                if i != 0 {
                    prop_assert_eq!(piece.offset_in_unit, 0);
                }
                if i + 1 != all.len() {
                    prop_assert_eq!(u64::from(piece.offset_in_unit + piece.len), unit);
                }
                at += u64::from(piece.len);
            }
            // Covers exactly the request.
            prop_assert_eq!(at, offset + len);
        }
    }
}
