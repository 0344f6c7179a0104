//! The desktop side: a dirty set staged whole and verified beside the image,
//! then written into it, restartable after a crash. The order of writes and
//! syncs, and why it keeps the checkpoint usable, is in the [module doc](super).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, Flock, FlockArg};

use super::error::{DirtySetError, ImageState, Part, StreamError};
use super::format::{DirtySetHeader, TransferId};
use super::stream::{DirtySetReader, DirtySetWriter, UnitChange};
use durable_file::{parent_dir, sync_dir};

/// Suffix of a set still arriving: never trusted, removed by the next call.
const PARTIAL: &str = "partial";
/// Suffix of a set that arrived whole and verified: the journal mark that it
/// must be applied before the VM starts.
const VERIFIED: &str = "verified";
/// Buffer for reading and writing staged sets.
const STAGING_BUFFER: usize = 256 * 1024;

/// Where dirty sets are applied on the desktop: the image (RAM file or disk
/// image), its unit size, and the staging directory that holds sets until they
/// are applied. The directory may be shared by several images.
///
/// The VM must not run on the image while a set is applied, and
/// [`resume_pending`](Self::resume_pending) must have succeeded before it starts.
#[derive(Clone, Debug)]
pub struct ApplyTarget {
    image: PathBuf,
    unit_size: u32,
    staging_dir: PathBuf,
}

/// What an apply wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplySummary {
    /// The transfer applied.
    pub transfer_id: TransferId,
    /// Units changed in the image: written, or discarded.
    pub units: u64,
    /// Of those, units discarded: punched as holes.
    pub discarded: u64,
    /// Bytes written into the image.
    pub data_bytes: u64,
    /// Whether this finished an apply that a crash (or an error) interrupted.
    pub resumed: bool,
}

/// A set that arrived whole, verified, and is durable in the staging
/// directory, not yet written into the image. [`commit`](Self::commit) writes
/// it; if it is dropped instead (or the process dies), the set stays on disk
/// and [`ApplyTarget::resume_pending`] applies it.
#[derive(Debug)]
#[must_use = "a staged set is applied by commit, or by resume_pending before the VM starts"]
pub struct StagedSet {
    image: LockedImage,
    path: PathBuf,
    header: DirtySetHeader,
}

impl ApplyTarget {
    /// The target `image`, cut in units of `unit_size` bytes (4096 for a RAM
    /// file), with sets staged in `staging_dir` (created if need be).
    pub fn new(image: impl Into<PathBuf>, unit_size: u32, staging_dir: impl Into<PathBuf>) -> Self {
        Self { image: image.into(), unit_size, staging_dir: staging_dir.into() }
    }

    /// The image.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// Receives the set from `input` and applies it: [`stage`](Self::stage),
    /// then [`StagedSet::commit`].
    ///
    /// # Errors
    ///
    /// As those two. Any error of the staging leaves the image unchanged and no
    /// staged file behind.
    pub fn apply(&self, input: impl Read) -> Result<ApplySummary, DirtySetError> {
        self.stage(input)?.commit()
    }

    /// Receives the whole set from `input` into the staging directory,
    /// verifying every record and the trailer, and checking the set is for an
    /// image of this size and unit size. The image is not written.
    ///
    /// Only once all of it has arrived and verified is it synced and renamed to
    /// its `.verified` name; on any error the incomplete copy is removed. (A
    /// copy left by a process that died here is removed by the next call.)
    ///
    /// # Errors
    ///
    /// [`DirtySetError::OpenImage`], [`DirtySetError::LockImage`];
    /// [`DirtySetError::Incomplete`] if the stream breaks off and
    /// [`DirtySetError::Rejected`] if it carries wrong bytes, both saying how
    /// many units had arrived; [`DirtySetError::WrongImage`];
    /// [`DirtySetError::Pending`] if a verified set still waits for
    /// [`resume_pending`](Self::resume_pending); [`DirtySetError::ListStaging`],
    /// [`DirtySetError::WriteStaging`], [`DirtySetError::CopyToStaging`].
    pub fn stage(&self, input: impl Read) -> Result<StagedSet, DirtySetError> {
        let image = LockedImage::open(self)?;
        let mut reader = DirtySetReader::new(input).map_err(|source| image.receive_error(0, None, source))?;
        let header = *reader.header();
        image.check(&header, ImageState::Unchanged)?;
        create_dir_durably(&self.staging_dir).map_err(|source| image.list_error(source))?;
        if let Some(path) = image.pending()?.into_iter().next() {
            return Err(DirtySetError::Pending { image: self.image.clone(), path });
        }

        let partial = image.staged_path(header.transfer_id, PARTIAL);
        let mut cleanup = RemoveOnDrop(Some(partial.clone()));
        let staging_error = |path: &Path, source| DirtySetError::WriteStaging {
            path: path.to_owned(),
            image: self.image.clone(),
            source,
        };
        let copy_error =
            |source| DirtySetError::CopyToStaging { path: partial.clone(), image: self.image.clone(), source };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|source| staging_error(&partial, source))?;
        let mut copy =
            DirtySetWriter::new(BufWriter::with_capacity(STAGING_BUFFER, file), header).map_err(copy_error)?;
        loop {
            match reader.next_unit() {
                Ok(Some((unit, UnitChange::Data(data)))) => copy.write_unit(unit, data).map_err(copy_error)?,
                Ok(Some((unit, UnitChange::Discard))) => copy.write_discard(unit).map_err(copy_error)?,
                Ok(None) => break,
                Err(source) => {
                    return Err(image.receive_error(reader.units_read(), Some(header.unit_count), source));
                }
            }
        }
        let (buffered, _) = copy.finish().map_err(copy_error)?;
        let file = buffered.into_inner().map_err(|error| staging_error(&partial, error.into_error()))?;
        file.sync_all().map_err(|source| staging_error(&partial, source))?;
        drop(file);

        // The journal mark: from here on the set is to be applied.
        let verified = image.staged_path(header.transfer_id, VERIFIED);
        fs::rename(&partial, &verified).map_err(|source| staging_error(&partial, source))?;
        cleanup.0 = Some(verified.clone());
        sync_dir(&self.staging_dir).map_err(|source| staging_error(&verified, source))?;
        cleanup.0 = None;
        tracing::info!(
            image = %self.image.display(),
            transfer = %header.transfer_id,
            units = header.unit_count,
            staged = %verified.display(),
            "staged dirty set"
        );
        Ok(StagedSet { image, path: verified, header })
    }

    /// Applies a verified set that an interrupted apply left in the staging
    /// directory, if there is one, and says what it wrote. Call it before
    /// starting the VM, every time: it also removes incomplete copies.
    ///
    /// Writing the units again is safe whatever part of them had reached the
    /// image: each is written whole, with the content it had in the set.
    ///
    /// # Errors
    ///
    /// [`DirtySetError::SeveralPending`] if more than one set waits;
    /// otherwise as [`StagedSet::commit`], with
    /// [`ImageState::MaybePartlyUpdated`] where they report the image's state.
    pub fn resume_pending(&self) -> Result<Option<ApplySummary>, DirtySetError> {
        let image = LockedImage::open(self)?;
        let pending = image.pending()?;
        match pending.as_slice() {
            [] => Ok(None),
            [staged] => {
                tracing::warn!(
                    image = %self.image.display(),
                    staged = %staged.display(),
                    "an apply of a dirty set was interrupted; applying it again"
                );
                image.commit(staged, true).map(Some)
            }
            several => Err(DirtySetError::SeveralPending {
                image: self.image.clone(),
                dir: self.staging_dir.clone(),
                count: several.len(),
            }),
        }
    }
}

impl StagedSet {
    /// The staged file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The set's header.
    pub fn header(&self) -> &DirtySetHeader {
        &self.header
    }

    /// Writes the staged set into the image: verifies the staged file again,
    /// writes each unit at its offset, fsyncs the image, then removes the staged
    /// file and fsyncs the staging directory.
    ///
    /// # Errors
    ///
    /// [`DirtySetError::CheckStaged`] if the staged file no longer verifies
    /// (then, if nothing was written yet, it is removed: the image is the old
    /// checkpoint); [`DirtySetError::WrongImage`] if the image changed size;
    /// [`DirtySetError::WriteImage`] or [`DirtySetError::SyncImage`], after
    /// which the set is kept for [`ApplyTarget::resume_pending`];
    /// [`DirtySetError::RemoveStaged`].
    pub fn commit(self) -> Result<ApplySummary, DirtySetError> {
        self.image.commit(&self.path, false)
    }
}

/// The image, open for writing and locked (`flock`) for as long as this lives.
#[derive(Debug)]
struct LockedImage {
    /// As the caller named it, for messages.
    path: PathBuf,
    file: Flock<File>,
    unit_size: u32,
    staging_dir: PathBuf,
    /// Starts the names of this image's staged files: its file name and a
    /// CRC-32 of its canonical path, so that images sharing a staging
    /// directory never see each other's sets.
    key: String,
}

impl LockedImage {
    fn open(target: &ApplyTarget) -> Result<Self, DirtySetError> {
        let path = target.image.clone();
        let open_error = |source| DirtySetError::OpenImage { image: path.clone(), source };
        let canonical = fs::canonicalize(&path).map_err(open_error)?;
        let file = OpenOptions::new().read(true).write(true).open(&canonical).map_err(open_error)?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| DirtySetError::LockImage { image: path.clone(), source: io::Error::from(errno) })?;
        let name = canonical.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let key = format!("{name}-{:08x}", crc32fast::hash(canonical.as_os_str().as_bytes()));
        Ok(Self { path, file, unit_size: target.unit_size, staging_dir: target.staging_dir.clone(), key })
    }

    /// Checks that a set with `header` is for this image.
    fn check(&self, header: &DirtySetHeader, image_state: ImageState) -> Result<(), DirtySetError> {
        let image_size =
            self.file.metadata().map_err(|source| DirtySetError::OpenImage { image: self.path.clone(), source })?.len();
        if header.unit_size == self.unit_size && header.image_size == image_size {
            return Ok(());
        }
        Err(DirtySetError::WrongImage {
            image: self.path.clone(),
            transfer_id: header.transfer_id,
            set_unit_size: header.unit_size,
            set_image_size: header.image_size,
            unit_size: self.unit_size,
            image_size,
            image_state,
        })
    }

    /// `KEY.ID.SUFFIX` in the staging directory.
    fn staged_path(&self, transfer_id: TransferId, suffix: &str) -> PathBuf {
        self.staging_dir.join(format!("{}.{transfer_id}.{suffix}", self.key))
    }

    /// This image's verified sets, in name order, after removing its partial
    /// ones (which no live process writes: the lock is ours).
    fn pending(&self) -> Result<Vec<PathBuf>, DirtySetError> {
        let entries = match fs::read_dir(&self.staging_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.list_error(error)),
        };
        let prefix = format!("{}.", self.key);
        let mut verified = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| self.list_error(source))?;
            let name = entry.file_name();
            let Some((id, suffix)) =
                name.to_str().and_then(|name| name.strip_prefix(&prefix)).and_then(|rest| rest.split_once('.'))
            else {
                continue;
            };
            if TransferId::parse_hex(id).is_none() {
                continue;
            }
            match suffix {
                VERIFIED => verified.push(entry.path()),
                PARTIAL => {
                    tracing::warn!(staged = %entry.path().display(), "removing an incomplete staged dirty set");
                    fs::remove_file(entry.path()).map_err(|source| self.list_error(source))?;
                }
                _ => {}
            }
        }
        verified.sort();
        Ok(verified)
    }

    /// Applies the verified set at `staged`; `resumed` if an earlier apply may
    /// have been interrupted.
    fn commit(&self, staged: &Path, resumed: bool) -> Result<ApplySummary, DirtySetError> {
        let before = if resumed { ImageState::MaybePartlyUpdated } else { ImageState::Unchanged };
        // Pass 1: the whole staged file verifies, before the image is touched.
        if let Err(error) = self.verify_staged(staged, before) {
            if before == ImageState::Unchanged {
                // Nothing was written: the old checkpoint stands, and a set that
                // cannot be applied must not block the next one.
                discard(staged);
            }
            return Err(error);
        }

        // Pass 2: write each unit, still verifying as the file is read again.
        let mut reader = self.open_staged(staged).map_err(|source| self.check_staged_error(staged, before, source))?;
        let header = *reader.header();
        let mut state = before;
        let mut discarded = 0;
        loop {
            let (unit, change) = match reader.next_unit() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(source) => return Err(self.check_staged_error(staged, state, source)),
            };
            let offset = header.offset(unit);
            state = ImageState::MaybePartlyUpdated;
            let written = match change {
                UnitChange::Data(data) => self.file.write_all_at(data, offset),
                UnitChange::Discard => {
                    discarded += 1;
                    self.punch(offset, header.unit_len(unit))
                }
            };
            written.map_err(|source| DirtySetError::WriteImage {
                image: self.path.clone(),
                unit,
                offset,
                staged: staged.to_owned(),
                source,
            })?;
        }
        self.file.sync_all().map_err(|source| DirtySetError::SyncImage {
            image: self.path.clone(),
            staged: staged.to_owned(),
            source,
        })?;

        // The image is durable: only now may the journal mark go, durably.
        let remove_error =
            |source| DirtySetError::RemoveStaged { path: staged.to_owned(), image: self.path.clone(), source };
        fs::remove_file(staged).map_err(remove_error)?;
        sync_dir(&self.staging_dir).map_err(remove_error)?;
        let summary = ApplySummary {
            transfer_id: header.transfer_id,
            units: reader.units_read(),
            discarded,
            data_bytes: reader.data_bytes(),
            resumed,
        };
        tracing::info!(
            image = %self.path.display(),
            transfer = %summary.transfer_id,
            units = summary.units,
            discarded = summary.discarded,
            bytes = summary.data_bytes,
            resumed,
            "applied dirty set"
        );
        Ok(summary)
    }

    /// Makes the `len` bytes at `offset` a hole, which reads as zeros and
    /// holds no disk space; on a file system that cannot punch holes, writes
    /// the zeros instead. Either is idempotent, as a resumed apply needs.
    fn punch(&self, offset: u64, len: u32) -> io::Result<()> {
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        // Within the image, whose size fits an off_t.
        match fallocate(self.file.as_raw_fd(), mode, offset as nix::libc::off_t, nix::libc::off_t::from(len)) {
            Ok(()) => Ok(()),
            Err(Errno::EOPNOTSUPP) => self.file.write_all_at(&vec![0; len as usize], offset),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    /// Reads the staged set through to its trailer, checking it fits the image.
    fn verify_staged(&self, staged: &Path, image_state: ImageState) -> Result<(), DirtySetError> {
        let check_error = |source| self.check_staged_error(staged, image_state, source);
        let mut reader = self.open_staged(staged).map_err(check_error)?;
        self.check(reader.header(), image_state)?;
        while reader.next_unit().map_err(check_error)?.is_some() {}
        Ok(())
    }

    fn open_staged(&self, staged: &Path) -> Result<DirtySetReader<BufReader<File>>, StreamError> {
        let file = File::open(staged).map_err(|source| StreamError::Read { part: Part::Header, source })?;
        DirtySetReader::new(BufReader::with_capacity(STAGING_BUFFER, file))
    }

    fn check_staged_error(&self, staged: &Path, image_state: ImageState, source: StreamError) -> DirtySetError {
        DirtySetError::CheckStaged { path: staged.to_owned(), image: self.path.clone(), image_state, source }
    }

    /// The error for a set that did not arrive whole (`Incomplete`) or
    /// carried wrong bytes (`Rejected`).
    fn receive_error(&self, arrived: u64, expected: Option<u64>, source: StreamError) -> DirtySetError {
        let image = self.path.clone();
        if source.is_incomplete() {
            DirtySetError::Incomplete { image, arrived, expected, source }
        } else {
            DirtySetError::Rejected { image, arrived, expected, source }
        }
    }

    fn list_error(&self, source: io::Error) -> DirtySetError {
        DirtySetError::ListStaging { image: self.path.clone(), dir: self.staging_dir.clone(), source }
    }
}

/// Creates `dir` and any missing parents, syncing each new entry into its
/// parent: a verified set must not vanish in a power cut with its directory.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    create_dir_durably(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another process created it; it synced the parent or will.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(error),
    }
    sync_dir(parent)
}

/// Removes the file it names when dropped, unless emptied first: what an
/// error (or a panic) leaves of a staged set that cannot be trusted.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            discard(&path);
        }
    }
}

/// Removes a staged set that cannot be used, logging a failure: the error
/// being reported already says what matters, and the image is unchanged.
fn discard(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(
            staged = %path.display(),
            error = &error as &dyn std::error::Error,
            "could not remove a staged dirty set that cannot be used"
        ),
    }
}
