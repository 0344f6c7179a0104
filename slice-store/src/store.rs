//! Whole-unit operations over the two slices and their bitmaps.
//!
//! A store directory holds:
//!
//! | file               | what                                                     |
//! |--------------------|----------------------------------------------------------|
//! | `fetched.slice`    | units copied from the remote source, unchanged           |
//! | `fetched.bitmap`   | which units `fetched.slice` holds                        |
//! | `dirty.slice`      | units written locally                                    |
//! | `dirty.bitmap`     | which units `dirty.slice` holds                          |
//! | `discarded.bitmap` | which units were discarded (content no longer wanted)    |
//! | `*.flushed`        | durable copies of the bitmaps (see [`PersistentBitmap`]) |
//! | `lock`             | held (`flock`) by the process that has the store open    |
//!
//! Each slice is a sparse file as large as the store: only units that were
//! stored take disk space. Every operation here is on whole units; splitting
//! byte requests is the front end's job ([`crate::request`], [`crate::Overlay`]).
//!
//! # Discarded units
//!
//! A client that no longer needs a unit's content (the guest's free page
//! reporting, which QEMU turns into a punched hole in its RAM file) discards
//! it: the unit reads as zeros from then on, is never fetched, holds no disk
//! space in either slice, and goes home as a hole to punch rather than as
//! data. Writing it again makes it dirty. A store made before discarded
//! units existed has no `discarded.bitmap`; opening it creates an empty one.
//!
//! Discarding clears a unit's fetched bit (which only ever spares a fetch)
//! and sets its discarded bit, which a later write clears; its dirty bit
//! stays set over the punched hole, and the state order of [`UnitState`]
//! (discarded before dirty) is what keeps that right. After a reboot, a
//! discard or a write since the last flush may be undone: a unit discarded
//! after the flush then reads as its flushed content or as zeros (either is
//! a state the client went through), and one written again after being
//! discarded reads as discarded.
//!
//! # Write order
//!
//! A unit's data is written to its slice *before* its bit is set, and a flush
//! takes a snapshot of the bits, syncs the slice's data, and only then makes
//! the snapshot durable. A crash anywhere in between can lose a little work (a
//! unit written but not marked), never claim data that is not there.
//!
//! # Concurrency
//!
//! `SliceStore` is `Send + Sync`: slices use positional I/O through `&self`,
//! and the three bitmaps and the known-zero map sit behind one mutex. The critical sections are a few
//! bit operations (or a memory copy of the bits when flushing); no I/O is done
//! while the mutex is held, so a mutex costs less than per-bit atomics would in
//! code and in reasoning. Dirty bits are only ever set, never cleared, so a
//! state read under the lock stays true afterwards, except that a unit may
//! become dirty or discarded, and a discarded one dirty.
//! Two operations on the *same* unit at the same time (a read racing a write, or
//! two writes) are not ordered: the reader may see either content. Callers that
//! read-modify-write a unit must serialise on that unit themselves, as
//! [`crate::Overlay`] does.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitvec::order::Lsb0;
use bitvec::vec::BitVec;
use nix::fcntl::{Flock, FlockArg};

use crate::bitmap::{PersistentBitmap, Recovery};
use crate::bootid::BootId;
use crate::error::{Result, StoreError};
use crate::slice::Slice;
use durable_file::sync_dir;

/// What the store knows about one unit. When several apply, the first listed
/// in [`SliceStore::read_unit`] wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnitState {
    /// Discarded by the client: reads as zeros, never fetched, and goes home
    /// as a hole. Ranks first, as a discard supersedes any earlier content.
    Discarded,
    /// Not here: it must be fetched from the remote source.
    Absent,
    /// In the fetched slice, as the source had it.
    Fetched,
    /// In the dirty slice, written locally.
    Dirty,
    /// Known to be all zeros; never fetched.
    Zero,
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discarded => "discarded",
            Self::Absent => "absent",
            Self::Fetched => "fetched",
            Self::Dirty => "dirty",
            Self::Zero => "zero",
        })
    }
}

/// The two slices and their bitmaps in one directory, plus the in-memory map of
/// units known to be zero. See the module doc for the layout and the rules.
pub struct SliceStore {
    dir: PathBuf,
    unit_size: NonZeroU32,
    size: u64,
    unit_count: u64,
    recovery: Recovery,
    fetched: Slice,
    dirty: Slice,
    bits: Mutex<Bits>,
    /// Serialises flushes, which share the bitmaps' temporary files.
    flush_lock: Mutex<()>,
    closed: bool,
    /// Held until the bitmaps above are closed: fields drop in order.
    _dir_lock: Flock<File>,
}

/// The bitmaps, behind the store's mutex.
#[derive(Debug)]
struct Bits {
    fetched: PersistentBitmap,
    dirty: PersistentBitmap,
    discarded: PersistentBitmap,
    /// Units whose discarded bit hides a set dirty bit, so that the dirty
    /// count is of units in the dirty state.
    dirty_discarded: u64,
    /// Units known to be zero; set by the caller at each open, never persisted.
    zero: BitVec<usize, Lsb0>,
}

impl Bits {
    fn new(fetched: PersistentBitmap, dirty: PersistentBitmap, discarded: PersistentBitmap, zero_len: usize) -> Self {
        let mut dirty_discarded = 0;
        let mut next = 0;
        while let Some(unit) = discarded.next_one(next) {
            dirty_discarded += u64::from(dirty.get(unit));
            next = unit + 1;
        }
        Self { fetched, dirty, discarded, dirty_discarded, zero: BitVec::repeat(false, zero_len) }
    }

    /// Sets `unit`'s discarded bit and clears its fetched one (the fetched
    /// copy is about to be punched; a fetched bit only spares a fetch, so
    /// clearing one is always safe), keeping the count.
    fn discard(&mut self, unit: u64) -> Result<()> {
        if self.discarded.set(unit)? {
            self.dirty_discarded += u64::from(self.dirty.get(unit));
        }
        self.fetched.clear(unit)?;
        Ok(())
    }

    /// Sets `unit`'s dirty bit, then clears its discarded bit (a discarded
    /// bit, while set, hides the dirty one), keeping the counts.
    fn set_dirty(&mut self, unit: u64) -> Result<()> {
        let was_dirty = !self.dirty.set(unit)?;
        if self.discarded.clear(unit)? {
            self.dirty_discarded -= u64::from(was_dirty);
        }
        Ok(())
    }

    fn state(&self, unit: u64) -> UnitState {
        if self.discarded.get(unit) {
            UnitState::Discarded
        } else if self.dirty.get(unit) {
            UnitState::Dirty
        } else if self.fetched.get(unit) {
            UnitState::Fetched
        } else if usize::try_from(unit).is_ok_and(|index| self.zero.get(index).is_some_and(|bit| *bit)) {
            UnitState::Zero
        } else {
            UnitState::Absent
        }
    }
}

impl SliceStore {
    /// Opens the store in `dir`, creating the directory and its files if need
    /// be; an existing store keeps its fetched and dirty units (this is the
    /// crash recovery path, see [`PersistentBitmap`]).
    ///
    /// `size` need not be a multiple of `unit_size`: the last unit is then shorter.
    ///
    /// # Errors
    ///
    /// [`StoreError::CheckGeometry`] for a zero unit size or too many units;
    /// [`StoreError::LockStore`] if another process has the store open;
    /// [`StoreError::CheckSlice`] or [`StoreError::CheckBitmap`] if the directory holds a
    /// store of another size or unit size; any error of [`BootId::current`] and
    /// [`PersistentBitmap::open`]; I/O errors with the path concerned.
    pub fn open(dir: impl AsRef<Path>, unit_size: u32, size: u64) -> Result<Self> {
        Self::open_with_boot_id(dir, unit_size, size, BootId::current()?)
    }

    /// [`open`](Self::open) a store that must already exist: the one whose
    /// dirty units are about to be handed back. Never creates one, so a
    /// missing or deleted store is an error rather than an empty set.
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] naming the directory; else as [`open`](Self::open).
    pub fn open_existing(dir: impl AsRef<Path>, unit_size: u32, size: u64) -> Result<Self> {
        let dir = dir.as_ref();
        let bitmap = dir.join("dirty.bitmap");
        let exists = bitmap.try_exists().map_err(|source| StoreError::OpenFile { path: bitmap, source })?;
        if !exists {
            return Err(StoreError::Missing { path: dir.to_owned() });
        }
        Self::open(dir, unit_size, size)
    }

    /// [`open`](Self::open) with the boot id given rather than read from the
    /// kernel; a different id than the store last saw makes it recover as after
    /// a reboot, which is what tests use it for.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with_boot_id(dir: impl AsRef<Path>, unit_size: u32, size: u64, boot_id: BootId) -> Result<Self> {
        let dir = dir.as_ref();
        let unit_size = NonZeroU32::new(unit_size).ok_or(StoreError::CheckGeometry {
            unit_size,
            size,
            reason: "the unit size must not be zero",
        })?;
        let unit_count = size.div_ceil(u64::from(unit_size.get()));
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let dir_lock = lock_dir(dir)?;
        let geometry = Geometry { dir, unit_size: unit_size.get(), unit_count, size, boot_id };
        let (fetched, fetched_bits) = geometry.open_half("fetched")?;
        let (dirty, dirty_bits) = geometry.open_half("dirty")?;
        let discarded_bits = geometry.open_bitmap("discarded")?;
        let recovery = dirty_bits.recovery();
        tracing::info!(
            dir = %dir.display(),
            fetched = %fetched_bits.recovery(),
            dirty = %recovery,
            discarded = %discarded_bits.recovery(),
            fetched_units = fetched_bits.count_ones(),
            dirty_units = dirty_bits.count_ones(),
            discarded_units = discarded_bits.count_ones(),
            "opened slice store"
        );
        let zero_len = fetched_bits.unit_count() as usize;
        Ok(Self {
            dir: dir.to_owned(),
            unit_size,
            size,
            unit_count,
            recovery,
            fetched,
            dirty,
            bits: Mutex::new(Bits::new(fetched_bits, dirty_bits, discarded_bits, zero_len)),
            flush_lock: Mutex::new(()),
            closed: false,
            _dir_lock: dir_lock,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Size of a unit in bytes.
    pub fn unit_size(&self) -> NonZeroU32 {
        self.unit_size
    }

    /// Size of the store in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of units, the last one possibly partial.
    pub fn unit_count(&self) -> u64 {
        self.unit_count
    }

    /// How the dirty units were recovered when the store was opened. After a
    /// [`Recovery::Reboot`], units written after the last [`flush`](Self::flush)
    /// are gone. (Lost fetched units only cost a new fetch, so they are not
    /// reported here.)
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Length of `unit` in bytes: the unit size, or less for a partial last unit.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] if `unit` is past the end.
    pub fn unit_len(&self, unit: u64) -> Result<u32> {
        if unit >= self.unit_count {
            return Err(StoreError::UnitOutOfRange { unit, unit_count: self.unit_count });
        }
        let unit_size = u64::from(self.unit_size.get());
        // At most the unit size, a u32.
        Ok((self.size - unit * unit_size).min(unit_size) as u32)
    }

    /// The state of `unit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] if `unit` is past the end.
    pub fn state(&self, unit: u64) -> Result<UnitState> {
        self.unit_len(unit)?;
        Ok(self.bits().state(unit))
    }

    /// Reads `unit` into `buf`, which must be [`unit_len`](Self::unit_len)
    /// bytes long, and says where it came from: zeros for a discarded unit,
    /// then the dirty slice, then the fetched slice, then zeros for a
    /// known-zero unit. For an absent unit, `buf` is left untouched.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`], [`StoreError::UnitLength`], [`StoreError::ReadUnit`].
    pub fn read_unit(&self, unit: u64, buf: &mut [u8]) -> Result<UnitState> {
        let offset = self.check_buffer(unit, buf.len())?;
        let state = self.bits().state(unit);
        match state {
            UnitState::Dirty => self.dirty.read(unit, offset, buf)?,
            UnitState::Fetched => self.fetched.read(unit, offset, buf)?,
            UnitState::Discarded | UnitState::Zero => buf.fill(0),
            UnitState::Absent => {}
        }
        Ok(state)
    }

    /// Stores `data`, the source's content of `unit`, in the fetched slice:
    /// the data first, then the bit. A discarded unit is left as it is: the
    /// source's copy is older than the discard (a fetch that crossed it).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`], [`StoreError::UnitLength`], [`StoreError::WriteUnit`].
    pub fn store_fetched(&self, unit: u64, data: &[u8]) -> Result<()> {
        let offset = self.check_buffer(unit, data.len())?;
        // A discard racing this fetch after the check only leaves the copy
        // taking space in the fetched slice: its discarded bit still wins.
        if self.bits().discarded.get(unit) {
            return Ok(());
        }
        self.fetched.write(unit, offset, data)?;
        self.bits().fetched.set(unit)?;
        Ok(())
    }

    /// Writes `data` as the new content of `unit` in the dirty slice (promoting
    /// the unit to dirty, a discarded one too): the data first, then the bit.
    /// Survives a crash of this process at once, a reboot after the next
    /// [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`], [`StoreError::UnitLength`], [`StoreError::WriteUnit`].
    pub fn write_dirty(&self, unit: u64, data: &[u8]) -> Result<()> {
        let offset = self.check_buffer(unit, data.len())?;
        self.dirty.write(unit, offset, data)?;
        self.bits().set_dirty(unit)
    }

    /// Discards the units in `units` (unit numbers, not bytes): their content
    /// is no longer wanted. From now on they read as zeros and are never
    /// fetched, and reintegration sends them as holes; the bits first, then
    /// holes punched in both slices to give their disk space back. Writing
    /// one again makes it dirty. Survives a crash of this process at once, a
    /// reboot after the next [`flush`](Self::flush).
    ///
    /// A discard racing a write of the same unit may leave it either way;
    /// callers serialise them per unit, as [`crate::Overlay`] does.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] for a range that reaches past the end
    /// (then nothing is discarded); [`StoreError::PunchUnit`] if a slice
    /// refuses the hole (the units are discarded all the same).
    pub fn discard_units(&self, units: Range<u64>) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let last = units.end - 1;
        self.unit_len(last)?;
        {
            let mut bits = self.bits();
            for unit in units.clone() {
                bits.discard(unit)?;
            }
        }
        let unit_size = u64::from(self.unit_size.get());
        let offset = units.start * unit_size;
        let len = self.size.min(units.end * unit_size) - offset;
        for slice in [&self.dirty, &self.fetched] {
            slice.punch(units.start, offset, len)?;
        }
        Ok(())
    }

    /// Records that `unit` is all zeros at the source, so it is never fetched.
    /// Not persisted: set it again after each open.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] if `unit` is past the end.
    pub fn set_known_zero(&self, unit: u64) -> Result<()> {
        self.mark_zero_ranges(std::iter::once(unit..unit.saturating_add(1)))
    }

    /// Records that the units in each range (unit numbers, not bytes) are all
    /// zeros at the source. Not persisted: set them again after each open.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnitOutOfRange`] for a range that reaches past the end; the
    /// ranges before it are recorded.
    pub fn mark_zero_ranges(&self, ranges: impl IntoIterator<Item = Range<u64>>) -> Result<()> {
        for range in ranges {
            if range.is_empty() {
                continue;
            }
            if range.end > self.unit_count {
                return Err(StoreError::UnitOutOfRange { unit: range.end - 1, unit_count: self.unit_count });
            }
            // Below the unit count, which fits a usize (the bitmaps checked it).
            self.bits().zero[range.start as usize..range.end as usize].fill(true);
        }
        Ok(())
    }

    /// Makes every dirty unit written and every unit discarded so far survive
    /// a reboot.
    ///
    /// The order matters: (1) take a snapshot of the dirty and discarded bits,
    /// each dirty bit having been set after its data was written; (2) fdatasync
    /// the dirty slice, so the data of every bit in the snapshot is on disk;
    /// (3) make the dirty snapshot the durable copy of its bitmap, then (4) the
    /// discarded one: a crash between the two leaves a unit written again
    /// after a discard still discarded, the state before the flush. Bits
    /// changed during the flush are left for the next one. Fetched units are
    /// made durable by [`close`](Self::close) only: after a reboot, those
    /// fetched since are fetched again.
    ///
    /// # Errors
    ///
    /// [`StoreError::SyncSlice`] or [`StoreError::WriteFlushedCopy`]; the previous flush
    /// then still holds.
    pub fn flush(&self) -> Result<()> {
        let _one_at_a_time = lock(&self.flush_lock);
        let (dirty, discarded) = {
            let bits = self.bits();
            (bits.dirty.snapshot(), bits.discarded.snapshot())
        };
        self.dirty.sync()?;
        if let Some(snapshot) = dirty {
            snapshot.persist()?;
            self.bits().dirty.mark_persisted(snapshot.generation);
        }
        if let Some(snapshot) = discarded {
            snapshot.persist()?;
            self.bits().discarded.mark_persisted(snapshot.generation);
        }
        Ok(())
    }

    /// The dirty units (not discarded) in increasing order, for
    /// reintegration. Units that change state during the iteration may or
    /// may not be seen.
    pub fn dirty_units(&self) -> Units<'_> {
        Units { store: self, next: 0, state: UnitState::Dirty }
    }

    /// The discarded units in increasing order, for reintegration. Units
    /// that change state during the iteration may or may not be seen.
    pub fn discarded_units(&self) -> Units<'_> {
        Units { store: self, next: 0, state: UnitState::Discarded }
    }

    /// Number of units in the fetched slice (some may be dirty too; a
    /// discard takes its units out).
    pub fn fetched_count(&self) -> u64 {
        self.bits().fetched.count_ones()
    }

    /// Number of dirty units, not counting discarded ones.
    pub fn dirty_count(&self) -> u64 {
        let bits = self.bits();
        bits.dirty.count_ones() - bits.dirty_discarded
    }

    /// Number of discarded units.
    pub fn discarded_count(&self) -> u64 {
        self.bits().discarded.count_ones()
    }

    /// Syncs both slices, then closes the three bitmaps cleanly. Dropping the store
    /// does the same and logs a failure.
    ///
    /// # Errors
    ///
    /// [`StoreError::SyncSlice`], [`StoreError::SyncBitmap`], [`StoreError::WriteFlushedCopy`];
    /// a bitmap whose slice could not be synced is left marked open, so that
    /// after a reboot its last flushed copy is used.
    pub fn close(mut self) -> Result<()> {
        self.shut()
    }

    fn shut(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let bits = self.bits.get_mut().unwrap_or_else(PoisonError::into_inner);
        let fetched = close_half(&self.fetched, &mut bits.fetched);
        let dirty = close_half(&self.dirty, &mut bits.dirty);
        let discarded = bits.discarded.finish();
        fetched.and(dirty).and(discarded)
    }

    /// Checks that a buffer of `len` bytes is exactly `unit`; returns its offset.
    fn check_buffer(&self, unit: u64, len: usize) -> Result<u64> {
        let expected = self.unit_len(unit)?;
        if len != expected as usize {
            return Err(StoreError::UnitLength { unit, len, expected });
        }
        Ok(unit * u64::from(self.unit_size.get()))
    }

    fn bits(&self) -> MutexGuard<'_, Bits> {
        lock(&self.bits)
    }
}

impl Drop for SliceStore {
    fn drop(&mut self) {
        if let Err(error) = self.shut() {
            tracing::warn!(
                dir = %self.dir.display(),
                error = &error as &dyn std::error::Error,
                "closing the slice store failed; after a reboot the last flush will be used"
            );
        }
    }
}

impl fmt::Debug for SliceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SliceStore")
            .field("dir", &self.dir)
            .field("unit_size", &self.unit_size)
            .field("size", &self.size)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

/// The units of a store in one state, dirty or discarded, in increasing
/// order; made by [`SliceStore::dirty_units`] and
/// [`SliceStore::discarded_units`].
#[derive(Debug)]
pub struct Units<'a> {
    store: &'a SliceStore,
    next: u64,
    /// [`UnitState::Dirty`] or [`UnitState::Discarded`].
    state: UnitState,
}

impl Iterator for Units<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let bits = self.store.bits();
        let bitmap = if self.state == UnitState::Discarded { &bits.discarded } else { &bits.dirty };
        loop {
            let unit = bitmap.next_one(self.next)?;
            self.next = unit + 1;
            if bits.state(unit) == self.state {
                return Some(unit);
            }
        }
    }
}

/// What is needed to open one slice and its bitmap.
struct Geometry<'a> {
    dir: &'a Path,
    unit_size: u32,
    unit_count: u64,
    size: u64,
    boot_id: BootId,
}

impl Geometry<'_> {
    /// Opens `<name>.slice` and `<name>.bitmap`, or creates both if the bitmap
    /// does not exist yet.
    fn open_half(&self, name: &str) -> Result<(Slice, PersistentBitmap)> {
        let slice_path = self.dir.join(format!("{name}.slice"));
        let bitmap_path = self.dir.join(format!("{name}.bitmap"));
        if exists(&bitmap_path)? {
            let slice = Slice::open(&slice_path, self.size)?;
            // After a process crash, data the dead process wrote may be only in
            // the page cache, while the bits that claim it are about to be
            // trusted; sync it before anything can mark those bits clean.
            slice.sync()?;
            let bitmap = PersistentBitmap::open(&bitmap_path, self.unit_size, self.unit_count, self.boot_id)?;
            return Ok((slice, bitmap));
        }
        // The slice first, durably: a bitmap never exists without its slice.
        // Any slice left by an earlier attempt is emptied, as no bit claims it.
        let slice = Slice::create(&slice_path, self.size)?;
        sync_dir(self.dir).map_err(|source| StoreError::CreateFile { path: slice_path, source })?;
        let bitmap = PersistentBitmap::create(&bitmap_path, self.unit_size, self.unit_count, self.boot_id)?;
        Ok((slice, bitmap))
    }

    /// Opens `<name>.bitmap`, a bitmap with no slice, or creates it empty if
    /// it does not exist yet (as in a store made before it was).
    fn open_bitmap(&self, name: &str) -> Result<PersistentBitmap> {
        let path = self.dir.join(format!("{name}.bitmap"));
        if exists(&path)? {
            PersistentBitmap::open(&path, self.unit_size, self.unit_count, self.boot_id)
        } else {
            PersistentBitmap::create(&path, self.unit_size, self.unit_count, self.boot_id)
        }
    }
}

/// Whether the file at `path` exists.
fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|source| StoreError::OpenFile { path: path.to_owned(), source })
}

/// Syncs a slice's data, then closes its bitmap cleanly; if the data could not
/// be synced, the bitmap must not claim it, so it is left marked open.
fn close_half(slice: &Slice, bitmap: &mut PersistentBitmap) -> Result<()> {
    if let Err(error) = slice.sync() {
        bitmap.leave_open();
        return Err(error);
    }
    bitmap.finish()
}

/// Takes the lock file of the store directory, so that two processes never
/// open the same store (the kernel releases it when the process dies).
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::CreateFile { path: path.clone(), source })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| StoreError::LockStore { path, source: io::Error::from(errno) })
}

/// Locks `mutex`, ignoring poisoning: every critical section of this module is
/// a few bit operations or a copy that leave the bits consistent even if a
/// panic interrupts them, so a poisoned lock still guards valid data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
