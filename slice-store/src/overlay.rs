//! Byte-range reads and writes over a [`SliceStore`], fetching absent units
//! from a remote [`UnitSource`]: the copy-on-write device that memtap serves
//! over FUSE and cownetdisk over NBD.
//!
//! A read splits its range into unit pieces ([`crate::request`]), serves each
//! piece the store holds (dirty, fetched or known zero), and fetches *all* the
//! absent ones in a single call to the source, which it stores as fetched.
//!
//! A write never fetches what it overwrites: a whole unit goes straight to the
//! dirty slice. A partial unit is read, modified and written to the dirty slice
//! (read-modify-write); if it is absent it is fetched first, the head and tail
//! of one request together in one call.
//!
//! A discard (a punched hole) is a write of zeros that keeps nothing: whole
//! units become discarded without a fetch, and the partial head and tail are
//! written with zeros as a write would.

use std::fmt;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{ReplyError, Result, SourceError, StoreError};
use crate::request::{split, Piece};
use crate::stats::{add, Counters, OverlayStats};
use crate::store::{SliceStore, UnitState};

/// Where absent units come from (memserv or diskserv across the network, or a
/// cache in front of them).
///
/// The trait is object safe: an `Overlay<Box<dyn UnitSource + Send + Sync>>`
/// works, and so do references, `Rc` and `Arc`.
pub trait UnitSource {
    /// Returns the source's content of each of `units`, which are distinct and
    /// in increasing order, as `(unit, data)` pairs in any order. Each `data`
    /// must be exactly the unit's length ([`SliceStore::unit_len`]: the unit
    /// size, or less for a partial last unit); every unit asked for must be
    /// there, and no other.
    ///
    /// # Errors
    ///
    /// Whatever stopped the source, wrapped in a [`SourceError`].
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError>;
}

impl<T: UnitSource + ?Sized> UnitSource for &T {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        (**self).fetch(units)
    }
}

impl<T: UnitSource + ?Sized> UnitSource for Box<T> {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        (**self).fetch(units)
    }
}

impl<T: UnitSource + ?Sized> UnitSource for Rc<T> {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        (**self).fetch(units)
    }
}

impl<T: UnitSource + ?Sized> UnitSource for Arc<T> {
    fn fetch(&self, units: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, SourceError> {
        (**self).fetch(units)
    }
}

/// Number of locks that writes to a unit take, chosen by unit number modulo
/// this; enough that unrelated writes seldom wait on each other.
const WRITE_STRIPES: usize = 64;

/// A copy-on-write view of a remote device, in bytes. `Send + Sync` when its
/// source is: any number of threads may read and write at once.
pub struct Overlay<S> {
    store: Arc<SliceStore>,
    source: S,
    counters: Counters,
    /// Writes to unit `u` hold `stripes[u % WRITE_STRIPES]`, so that two partial
    /// writes to one unit never read-modify-write it at the same time.
    stripes: [Mutex<()>; WRITE_STRIPES],
}

impl<S: UnitSource> Overlay<S> {
    /// Serves `store`, fetching what it lacks from `source`. The store may be
    /// shared (an `Arc`), for instance with a source that prefetches only what
    /// the store lacks.
    pub fn new(store: impl Into<Arc<SliceStore>>, source: S) -> Self {
        Self {
            store: store.into(),
            source,
            counters: Counters::default(),
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &SliceStore {
        &self.store
    }

    /// The source of absent units.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Gives back the store and the source. The store closes when its last
    /// `Arc` goes; [`Arc::try_unwrap`] then [`SliceStore::close`] to see errors.
    pub fn into_parts(self) -> (Arc<SliceStore>, S) {
        (self.store, self.source)
    }

    /// Size of the device in bytes.
    pub fn size(&self) -> u64 {
        self.store.size()
    }

    /// What the overlay has done so far.
    pub fn stats(&self) -> OverlayStats {
        self.counters.snapshot(&self.store)
    }

    /// Makes the writes so far survive a reboot; see [`SliceStore::flush`].
    ///
    /// # Errors
    ///
    /// As [`SliceStore::flush`].
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    /// Fills `buf` with the device's bytes at `offset`.
    ///
    /// Concurrency: this takes no unit lock. A read racing a write of the same
    /// bytes may return old or new content (or, within a unit, some of each);
    /// two reads of one absent unit at once may both fetch it, and both store
    /// the same content. A unit that becomes dirty while its fetch is in flight
    /// is served from the fetched data, as if the read had come first.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`] if the range passes the end; [`StoreError::Fetch`] or
    /// [`StoreError::CheckFetchReply`] if the source fails; store I/O errors.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        add(&self.counters.reads, 1);
        let mut missing = Vec::new();
        let mut scratch = Vec::new();
        let mut at = 0;
        for piece in split(offset, buf.len() as u64, self.unit_size()) {
            let target = &mut buf[at..at + piece.len as usize];
            let unit_len = self.store.unit_len(piece.unit)?;
            let state = if piece.is_whole(unit_len) {
                self.store.read_unit(piece.unit, target)?
            } else {
                scratch.resize(unit_len as usize, 0);
                let state = self.store.read_unit(piece.unit, &mut scratch)?;
                if state != UnitState::Absent {
                    target.copy_from_slice(&scratch[piece.range_in_unit()]);
                }
                state
            };
            match state {
                UnitState::Absent => missing.push((piece, at)),
                UnitState::Zero => add(&self.counters.zero_units_served, 1),
                UnitState::Fetched | UnitState::Dirty | UnitState::Discarded => {}
            }
            at += piece.len as usize;
        }
        let units: Vec<u64> = missing.iter().map(|(piece, _)| piece.unit).collect();
        let fetched = self.fetch(&units)?;
        for ((piece, at), data) in missing.iter().zip(&fetched) {
            buf[*at..*at + piece.len as usize].copy_from_slice(&data[piece.range_in_unit()]);
        }
        Ok(())
    }

    /// Writes `data` to the device at `offset`. Whole units are promoted to
    /// dirty without a fetch; partial ones are read-modify-written, fetched
    /// first if absent. Survives a crash of the process at once, a reboot after
    /// the next [`flush`](Self::flush).
    ///
    /// Concurrency: writes to one unit are serialised, so concurrent writes to
    /// disjoint bytes of one unit all land. Writes that overlap land in some
    /// order. A partial write to an absent unit holds that unit's write lock
    /// while the source fetches it. A failed write may have written some of
    /// its units.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`] if the range passes the end; [`StoreError::Fetch`] or
    /// [`StoreError::CheckFetchReply`] if a needed fetch fails; store I/O errors.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        add(&self.counters.writes, 1);
        let mut partial = Vec::new();
        let mut at = 0;
        for piece in split(offset, data.len() as u64, self.unit_size()) {
            let source = &data[at..at + piece.len as usize];
            if piece.is_whole(self.store.unit_len(piece.unit)?) {
                let _unit = self.lock_stripe(stripe_of(piece.unit));
                self.store.write_dirty(piece.unit, source)?;
                add(&self.counters.whole_unit_promotions, 1);
            } else {
                partial.push((piece, source));
            }
            at += piece.len as usize;
        }
        self.write_partial(&partial)
    }

    /// Discards `len` bytes at `offset`, as a punched hole: they read as zeros
    /// afterwards. Whole units become discarded ([`SliceStore::discard_units`]:
    /// no fetch, no space, sent home as a hole); the bytes of a partial unit
    /// at either end are written with zeros, as [`write`](Self::write) would,
    /// which fetches that unit first if it is absent. Survives a crash of the
    /// process at once, a reboot after the next [`flush`](Self::flush).
    ///
    /// Concurrency: the units' write locks are held while their bits change,
    /// so a discard and a write of one unit land in some order, whole.
    ///
    /// # Errors
    ///
    /// [`StoreError::OutOfRange`] if the range passes the end; as
    /// [`write`](Self::write) for the partial units; [`StoreError::PunchUnit`].
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        add(&self.counters.discards, 1);
        let mut whole = None::<std::ops::Range<u64>>;
        let mut partial = Vec::new();
        for piece in split(offset, len, self.unit_size()) {
            if piece.is_whole(self.store.unit_len(piece.unit)?) {
                // Whole units are contiguous: only the head and tail are not whole.
                let start = whole.map_or(piece.unit, |range| range.start);
                whole = Some(start..piece.unit + 1);
            } else {
                partial.push(piece);
            }
        }
        if let Some(units) = whole {
            // Any WRITE_STRIPES consecutive units take every stripe there is.
            let _units = self.lock_units(&units.clone().take(WRITE_STRIPES).collect::<Vec<_>>());
            self.store.discard_units(units)?;
        }
        let zeros = vec![0; self.unit_size().get() as usize];
        let pieces: Vec<(Piece, &[u8])> =
            partial.into_iter().map(|piece| (piece, &zeros[..piece.len as usize])).collect();
        self.write_partial(&pieces)
    }

    /// Read-modify-writes the (at most two: head and tail) partial pieces of a
    /// write, fetching the absent ones in one call, under their unit locks.
    fn write_partial(&self, pieces: &[(Piece, &[u8])]) -> Result<()> {
        let units: Vec<u64> = pieces.iter().map(|(piece, _)| piece.unit).collect();
        let _units = self.lock_units(&units);
        let mut bases = Vec::with_capacity(pieces.len());
        let mut absent = Vec::new();
        for (index, (piece, _)) in pieces.iter().enumerate() {
            let mut base = vec![0; self.store.unit_len(piece.unit)? as usize];
            if self.store.read_unit(piece.unit, &mut base)? == UnitState::Absent {
                absent.push(index);
            }
            bases.push(base);
        }
        let absent_units: Vec<u64> = absent.iter().map(|&index| pieces[index].0.unit).collect();
        let fetched = self.fetch(&absent_units)?;
        add(&self.counters.partial_write_fetches, absent_units.len() as u64);
        for (index, data) in absent.into_iter().zip(fetched) {
            bases[index] = data;
        }
        for ((piece, source), mut base) in pieces.iter().zip(bases) {
            base[piece.range_in_unit()].copy_from_slice(source);
            self.store.write_dirty(piece.unit, &base)?;
        }
        Ok(())
    }

    /// Fetches `units` (distinct, increasing) in one call to the source, checks
    /// the whole reply, then stores each unit as fetched, and returns their data
    /// in the order of `units`. Does nothing for no unit.
    fn fetch(&self, units: &[u64]) -> Result<Vec<Vec<u8>>> {
        let [first, ..] = units else {
            return Ok(Vec::new());
        };
        add(&self.counters.fetch_calls, 1);
        let reply = self.source.fetch(units).map_err(|source| StoreError::Fetch {
            first: *first,
            count: units.len(),
            source,
        })?;
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; units.len()];
        for (unit, data) in reply {
            let reject = |source| StoreError::CheckFetchReply { unit, source };
            let index = units.binary_search(&unit).map_err(|_| reject(ReplyError::NotRequested))?;
            let expected = self.store.unit_len(unit)?;
            if data.len() != expected as usize {
                return Err(reject(ReplyError::Length { found: data.len(), expected }));
            }
            if slots[index].replace(data).is_some() {
                return Err(reject(ReplyError::Duplicate));
            }
        }
        let fetched = units
            .iter()
            .zip(slots)
            .map(|(&unit, slot)| slot.ok_or(StoreError::CheckFetchReply { unit, source: ReplyError::Missing }))
            .collect::<Result<Vec<_>>>()?;
        for (&unit, data) in units.iter().zip(&fetched) {
            self.store.store_fetched(unit, data)?;
        }
        add(&self.counters.units_fetched, units.len() as u64);
        Ok(fetched)
    }

    /// Takes the write locks of `units`, in stripe order so that two writers
    /// can never wait on each other in a cycle.
    fn lock_units(&self, units: &[u64]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = units.iter().map(|&unit| stripe_of(unit)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|stripe| self.lock_stripe(stripe)).collect()
    }

    fn lock_stripe(&self, stripe: usize) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a panic elsewhere cannot leave it inconsistent.
        self.stripes[stripe].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.store.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, size }),
        }
    }

    fn unit_size(&self) -> NonZeroU32 {
        self.store.unit_size()
    }
}

impl<S> fmt::Debug for Overlay<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay").field("store", &self.store).field("counters", &self.counters).finish_non_exhaustive()
    }
}

/// The write lock of `unit`.
fn stripe_of(unit: u64) -> usize {
    // Below WRITE_STRIPES, so it fits.
    (unit % WRITE_STRIPES as u64) as usize
}
